"""``GET /metrics``: the node's state in the Prometheus text format.

Values are read from the room core when scraped (a collector, not counters
bumped on the packet path), so the forwarding loop pays nothing for them.
Counters only go up, as Prometheus' ``rate()`` requires: what live
subscriptions and connections counted is added to what those that ended
counted (``RoomManager.retired``, ``MediaSocket.media_sent``), native send
path and Python alike.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from mediafed.worker import Worker

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class RoomCoreCollector(Collector):
    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        manager = self.worker.rooms
        rooms = manager.rooms()
        sessions = [session for room in rooms for session in room.sessions.values()]
        yield GaugeMetricFamily("mediafed_rooms", "Rooms on this node", value=len(rooms))
        yield GaugeMetricFamily(
            "mediafed_participants", "Participants on this node", value=len(sessions)
        )
        tracks = GaugeMetricFamily(
            "mediafed_published_tracks", "Published tracks by kind", labels=["kind"]
        )
        by_kind: dict[str, int] = {"audio": 0, "video": 0}
        for room in rooms:
            for track in room.tracks.values():
                by_kind[track.kind.value] = by_kind.get(track.kind.value, 0) + 1
        for kind, count in by_kind.items():
            tracks.add_metric([kind], count)
        yield tracks
        downtracks = [d for session in sessions for d in session.downtracks.values()]
        yield GaugeMetricFamily(
            "mediafed_subscriptions", "Forwarded tracks (DownTracks)", value=len(downtracks)
        )
        retired = manager.retired
        yield _counter(
            "mediafed_forwarded_packets",
            "RTP packets forwarded to subscribers",
            retired["packets_sent"] + sum(d.packets_sent for d in downtracks),
        )
        yield _counter(
            "mediafed_forwarded_bytes",
            "RTP bytes forwarded to subscribers (before SRTP)",
            retired["octets_sent"] + sum(d.octets_sent for d in downtracks),
        )
        yield _counter(
            "mediafed_retransmitted_packets",
            "Packets resent after a subscriber's NACK",
            retired["retransmitted"] + sum(d.retransmitted for d in downtracks),
        )
        mux = self.worker.mux
        sent = mux.media_sent()
        counts = dict(mux.counters)
        # The socket's own sends (STUN, DTLS, RTCP) and the send targets' (media).
        counts["datagrams_out"] += sent["datagrams_out"]
        counts["send_errors"] += sent["send_errors"]
        counts["send_srtp_errors"] = sent["srtp_errors"]
        counts["send_oversize"] = sent["oversize"]
        udp = CounterMetricFamily(
            "mediafed_udp_datagrams",
            "Datagrams on the media port: in, out, dropped (by reason) and errors",
            labels=["what"],
        )
        for name, value in counts.items():
            udp.add_metric([name], value)
        yield udp
        yield _counter(
            "mediafed_media_sent_bytes",
            "SRTP bytes of media sent (after protection, retransmissions included)",
            sent["octets_out"],
        )
        yield GaugeMetricFamily(
            "mediafed_relay_link_connections",
            "Media connections of relay links (each on a UDP port of its own)",
            value=sum(1 for m in self.worker.link_sockets if m.sock is not None),
        )
        yield _counter(
            "mediafed_relay_link_datagrams_in",
            "Datagrams relay links received from the SFUs they join",
            self.worker.link_datagrams_in(),
        )
        drops = CounterMetricFamily(
            "mediafed_limit_drops",
            "What participants sent beyond a limit (mediafed.media.limits), dropped, by kind",
            labels=["kind"],
        )
        for kind, count in sorted(manager.dropped.items()):
            drops.add_metric([kind], count)
        yield drops
        yield _counter(
            "mediafed_srtp_auth_failures",
            "SRTP/SRTCP packets that failed authentication",
            retired["srtp_auth_failed"]
            + sum(
                peer.endpoint.stats["srtp_auth_failed"]
                for session in sessions
                for peer in {session.publisher, session.subscriber}
            ),
        )


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    counter = CounterMetricFamily(name, documentation)
    counter.add_metric([], value)
    return counter


def setup_metrics(app: web.Application, worker: Worker) -> None:
    registry = CollectorRegistry()
    registry.register(RoomCoreCollector(worker))

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE})

    app.router.add_get("/metrics", metrics)
