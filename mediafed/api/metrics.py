"""``GET /metrics``: the node's state in the Prometheus text format.

Values are read from the room core when scraped (a collector, not counters
bumped on the packet path), so the forwarding loop pays nothing for them.
"""

from __future__ import annotations

from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from mediafed.media import RoomManager

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class RoomCoreCollector(Collector):
    def __init__(self, rooms: RoomManager) -> None:
        self.rooms = rooms

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        rooms = self.rooms.rooms()
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
        packets = CounterMetricFamily(
            "mediafed_forwarded_packets", "RTP packets forwarded to current subscriptions"
        )
        packets.add_metric([], sum(d.packets_sent for d in downtracks))
        yield packets
        octets = CounterMetricFamily(
            "mediafed_forwarded_bytes", "RTP bytes forwarded to current subscriptions"
        )
        octets.add_metric([], sum(d.octets_sent for d in downtracks))
        yield octets
        retransmitted = CounterMetricFamily(
            "mediafed_retransmitted_packets", "Packets resent after a subscriber's NACK"
        )
        retransmitted.add_metric([], sum(d.retransmitted for d in downtracks))
        yield retransmitted
        udp = CounterMetricFamily(
            "mediafed_udp_datagrams", "Datagrams on the media port", labels=["what"]
        )
        for name, value in self.rooms.mux.counters.items():
            udp.add_metric([name], value)
        yield udp
        auth = CounterMetricFamily(
            "mediafed_srtp_auth_failures",
            "SRTP/SRTCP packets that failed authentication (current endpoints)",
        )
        auth.add_metric(
            [],
            sum(
                peer.endpoint.stats["srtp_auth_failed"]
                for session in sessions
                for peer in {session.publisher, session.subscriber}
            ),
        )
        yield auth


def setup_metrics(app: web.Application, rooms: RoomManager) -> None:
    registry = CollectorRegistry()
    registry.register(RoomCoreCollector(rooms))

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE})

    app.router.add_get("/metrics", metrics)
