"""A peer connection as the room core sees it: its transport and the tracks on it.

On a publishing peer, received RTP is matched to a :class:`Layer` by SSRC,
or — for simulcast, where SSRCs are not signaled — by the mid and rid header
extensions on first sight (RFC 8843 §9.2, RFC 8852). RTX packets (RFC 4588)
are unwrapped and fed in as the originals. On a subscribing peer, RTCP from
the subscriber (NACK, PLI, FIR, receiver reports) is routed to its DownTracks.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from mediafed.media import limits, native
from mediafed.media.downtrack import DownTrack
from mediafed.media.layer import Layer
from mediafed.media.track import PublishedTrack
from mediafed.media.types import PeerRole
from mediafed.transport.endpoint import Endpoint, EndpointState
from mediafed.transport.srtp import PacketBuffer, copy_into
from mediafed.wire import rtcp
from mediafed.wire.rtp import (
    U16,
    U32,
    extension_value,
    padding_only,
    payload_end,
    payload_offset,
)
from mediafed.wire.twcc import TransportCcRecorder

if TYPE_CHECKING:
    from mediafed.media.session import Session

log = logging.getLogger(__name__)
remap_and_scan = native.remap_and_scan
SCAN_ONLY = bytes(range(16))
"""An extension id table that rewrites nothing: the scan alone (transport-cc)."""


class MediaPeer(native.PeerBase):
    """Transport + tracks of one peer connection of one session.

    Its ``on_rtp`` (the endpoint handler's, from ``PeerBase``) takes packets of
    streams it knows by SSRC to their layer, natively when built; the rest come
    to :meth:`_on_other_rtp`."""

    def __init__(self, session: Session, role: PeerRole) -> None:
        self.session = session
        self.role = role
        self.label = f"{session.label} {role.value}"
        self.endpoint: Endpoint = session.room.manager.new_endpoint(
            self, self.label, own_port=session.own_port
        )
        self.local_ssrc = session.room.manager.random_ssrc()
        # publishing side
        self.layers_by_ssrc: dict[int, Layer] = {}
        self.rtx_by_ssrc: dict[int, Layer] = {}
        self.tracks_by_mid: dict[str, PublishedTrack] = {}
        self.twcc: TransportCcRecorder | None = None
        self.twcc_id = 0
        self.stray_ssrcs: dict[int, None] = {}
        """SSRCs seen that belong to no track (yet): bounded (media/limits.py)."""
        # subscribing side
        self.downtracks_by_ssrc: dict[int, DownTrack] = {}
        self.remote_ufrag = ""

    # -- EndpointHandler ---------------------------------------------------------
    def _on_other_rtp(self, endpoint: Endpoint, buf: PacketBuffer, length: int, now: float) -> None:
        """A packet of no stream known by its SSRC: RTX, a simulcast encoding on
        first sight (by its mid/rid), a probe, or a stray."""
        view = buf.view
        ssrc = U32.unpack_from(view, 8)[0]
        rtx_layer = self.rtx_by_ssrc.get(ssrc)
        if rtx_layer is not None:
            self._on_rtx(rtx_layer, buf, length, now)
            return
        if padding_only(view, length):
            # A bandwidth probe (libwebrtc sends them before media, on SSRC 0 too):
            # nothing to forward, but its arrival time feeds the sender's estimate.
            self._record_twcc(view, length, SCAN_ONLY, now)
            self._stray(ssrc)
            return
        layer = self._learn_ssrc(view, length, ssrc)
        if layer is None:
            self._record_twcc(view, length, SCAN_ONLY, now)
            if ssrc not in self.rtx_by_ssrc:
                self._stray(ssrc)
            return
        self.stray_ssrcs.pop(ssrc, None)
        # learned: now it is a known stream
        self.on_rtp(endpoint, buf, length, now)

    def on_rtcp(self, endpoint: Endpoint, packet: bytes, now: float) -> None:
        try:
            packets = rtcp.parse_rtcp(packet)
        except rtcp.RtcpError as exc:
            endpoint.report("rtcp", str(exc))
            return
        for item in packets:
            if isinstance(item, rtcp.PictureLossIndication):
                self._keyframe_wanted(item.media_ssrc, now)
            elif isinstance(item, rtcp.FullIntraRequest):
                for ssrc, _seq in item.entries:
                    self._keyframe_wanted(ssrc, now)
            elif isinstance(item, rtcp.GenericNack):
                downtrack = self.downtracks_by_ssrc.get(item.media_ssrc)
                if downtrack is not None:
                    downtrack.retransmit(item.lost, now)
            elif isinstance(item, rtcp.SenderReport):
                layer = self.layers_by_ssrc.get(item.ssrc)
                if layer is not None:
                    layer.last_sr_ntp = item.ntp_timestamp
                    layer.last_sr_rtp = item.rtp_timestamp
                    layer.last_sr_at = now
                self._reception_reports(item.reports, now)
            elif isinstance(item, rtcp.ReceiverReport):
                self._reception_reports(item.reports, now)
            elif isinstance(item, rtcp.Remb):
                if self.downtracks_by_ssrc:
                    self.session.downlink.on_estimate(item.bitrate_bps, now)
            elif isinstance(item, rtcp.TransportCcFeedback):
                # feedback on what we sent this peer (ours to publishers goes out)
                self.session.downlink.on_transport_feedback(item, now)
            elif isinstance(item, rtcp.Bye):
                for ssrc in item.ssrcs:
                    if ssrc in self.layers_by_ssrc:
                        log.info("- %s publisher said BYE for ssrc %d", self.label, ssrc)

    def _reception_reports(self, blocks: list[rtcp.ReportBlock], now: float) -> None:
        for block in blocks:
            downtrack = self.downtracks_by_ssrc.get(block.ssrc)
            if downtrack is not None:
                downtrack.on_report(block, now)

    def on_state(self, endpoint: Endpoint, state: EndpointState) -> None:
        self.session.on_transport_state(self, state)

    def on_channel_message(self, endpoint: Endpoint, label: str, data: bytes) -> None:
        self.session.on_channel_message(self, label, data)

    # -- learning streams --------------------------------------------------------
    def _learn_ssrc(self, view: memoryview, length: int, ssrc: int) -> Layer | None:
        """Find the track of an unsignaled SSRC from its mid/rid extensions (simulcast)."""
        track = None
        mid_ids = {t.mid_id for t in self.tracks_by_mid.values() if t.mid_id}
        for mid_id in mid_ids:
            try:
                value = extension_value(view, length, mid_id)
            except Exception:
                value = None
            if value is not None:
                track = self.tracks_by_mid.get(value.decode("ascii", "replace"))
                break
        if track is None:
            pt = view[1] & 0x7F
            candidates = [
                t
                for t in self.tracks_by_mid.values()
                if t.payload_type == pt or t.rtx_payload_type == pt
            ]
            if len(candidates) == 1:
                track = candidates[0]
        if track is None:
            self.endpoint.report("rtp", f"RTP with unknown SSRC {ssrc}")
            return None
        rid = ""
        repaired = False
        try:
            if track.rid_id:
                value = extension_value(view, length, track.rid_id)
                if value is not None:
                    rid = value.decode("ascii", "replace")
            if not rid and track.rrid_id:
                value = extension_value(view, length, track.rrid_id)
                if value is not None:
                    rid = value.decode("ascii", "replace")
                    repaired = True
        except Exception:
            return None
        if (view[1] & 0x7F) == track.rtx_payload_type and track.rtx_payload_type is not None:
            repaired = True
        if repaired and not rid and len(track.layers) == 1:
            rid = next(iter(track.layers))
        if rid not in track.layers and (track.layers or rid):
            # Only the encodings the offer declared (a=rid), or the one of a track
            # without simulcast: a made-up rid must not make the worker hold a layer.
            self.endpoint.report("rtp", f"RTP with undeclared rid {rid!r}")
            return None
        layer = track.layer(rid)
        if repaired:
            layer.rtx_ssrc = ssrc
            self.rtx_by_ssrc[ssrc] = layer
            return None
        if layer.ssrc:
            # The publisher restarted this encoding: its old stream is over (libsrtp
            # would keep its state, one per SSRC ever seen, and search it per packet).
            self.layers_by_ssrc.pop(layer.ssrc, None)
            srtp = self.endpoint.srtp
            if srtp is not None and layer.ssrc != ssrc:
                srtp.forget_inbound(layer.ssrc)
        layer.set_ssrc(ssrc)
        self.layers_by_ssrc[ssrc] = layer
        log.info("- %s track %s layer %r is ssrc %d", self.label, track.sid, rid, ssrc)
        self.session.room.on_layer_started(track, layer)
        return layer

    def _stray(self, ssrc: int) -> None:
        """An authenticated packet of an SSRC no track has: keep libsrtp's state of a few
        such streams (probes, streams about to be learned), forget the rest."""
        stray = self.stray_ssrcs
        if ssrc in stray:
            return
        if len(stray) < limits.MAX_STRAY_SSRCS:
            stray[ssrc] = None
            return
        srtp = self.endpoint.srtp
        if srtp is not None:
            srtp.forget_inbound(ssrc)
        self.session.room.manager.drop(
            "stray_ssrc",
            self.label,
            f"sends more than {limits.MAX_STRAY_SSRCS} SSRCs that belong to no track",
        )

    def _record_twcc(self, view: memoryview, length: int, table: bytes, now: float) -> None:
        """Note a packet's transport-wide sequence number (rewriting ids through ``table``)."""
        if self.twcc is None:
            return
        twcc_seq, _level = remap_and_scan(view, length, table, self.twcc_id, 0)
        if twcc_seq >= 0:
            self.twcc.record(twcc_seq, int(now * 1_000_000))

    def _on_rtx(self, layer: Layer, buf: PacketBuffer, length: int, now: float) -> None:
        """RFC 4588: rebuild the original packet from an RTX packet and receive it.

        Retransmissions and padding probes carry transport-wide sequence numbers like
        any packet: they are recorded, or the sender would count them as lost."""
        view = buf.view
        track = layer.track
        try:
            start = payload_offset(view, length)
            end = payload_end(view, length)
        except Exception:
            return
        self._record_twcc(view, length, track.ext_table, now)
        if end - start < 2:
            return  # padding-only probe
        original_seq = U16.unpack_from(view, start)[0]
        header = bytearray(view[:start])
        header[0] &= ~0x20 & 0xFF
        header[1] = (header[1] & 0x80) | track.payload_type
        header[2:4] = U16.pack(original_seq)
        header[8:12] = U32.pack(layer.ssrc)
        rebuilt = bytes(header) + bytes(view[start + 2 : end])
        size = copy_into(buf, rebuilt)
        if not track.muted:
            layer.receive(buf, size, now)

    # -- upstream RTCP -----------------------------------------------------------
    def _keyframe_wanted(self, media_ssrc: int, now: float) -> None:
        downtrack = self.downtracks_by_ssrc.get(media_ssrc)
        if downtrack is not None:
            downtrack.track.request_keyframe(now)

    def send_pli(self, track: PublishedTrack) -> None:
        packets = []
        for layer in track.layers.values():
            if layer.ssrc:
                packets.append(rtcp.PictureLossIndication(self.local_ssrc, layer.ssrc))
        if packets:
            self.endpoint.send_rtcp(rtcp.serialize_rtcp(packets))

    def _send_nacks(self, layer: Layer, due: list[int], out: list[rtcp.RtcpPacket]) -> None:
        """First NACKs in this tick's compound; each retry in a packet of its own.

        libwebrtc answers a NACK's numbers in order and drops the rest of the list
        at the first it refuses (one it resent less than a round trip ago, or
        beyond its retransmission budget): a retry at the head of a list would
        take the new losses behind it down with it."""
        fresh = []
        for seq in due:  # all still missing: due_nacks counted this try
            if layer.missing[seq][1] <= 1:
                fresh.append(seq)
            else:
                nack = rtcp.GenericNack(self.local_ssrc, layer.ssrc, [seq])
                self.endpoint.send_rtcp(rtcp.serialize_rtcp([nack]))
        if fresh:
            out.append(rtcp.GenericNack(self.local_ssrc, layer.ssrc, fresh))

    def periodic(self, now: float, *, reports: bool) -> None:
        """Timer work: NACKs and transport-cc feedback upstream; RTCP reports."""
        if self.endpoint.srtp is None:
            return
        out: list[rtcp.RtcpPacket] = []
        for track in self.tracks_by_mid.values():
            track.tick(now, housekeeping=reports)
            for layer in track.layers.values():
                if layer.nack_pending and layer.ssrc:
                    missing = layer.due_nacks(now)
                    if missing:
                        self._send_nacks(layer, missing, out)
        if reports:
            blocks = []
            for track in self.tracks_by_mid.values():
                for layer in track.layers.values():
                    if layer.ssrc and layer.received:
                        fraction, lost, highest, jitter, lsr, _ = layer.report_block()
                        dlsr = int((now - layer.last_sr_at) * 65536) if layer.last_sr_at else 0
                        blocks.append(
                            rtcp.ReportBlock(
                                layer.ssrc, fraction, lost, highest, jitter, lsr, dlsr if lsr else 0
                            )
                        )
            if blocks:
                out.insert(0, rtcp.ReceiverReport(self.local_ssrc, blocks[:31]))
            for downtrack in self.downtracks_by_ssrc.values():
                times = downtrack.sender_report_times(now)
                if times is not None:
                    downtrack.note_sender_report(times[0], now)
                    out.append(
                        rtcp.SenderReport(
                            downtrack.ssrc,
                            times[0],
                            times[1],
                            downtrack.packets_sent & 0xFFFFFFFF,
                            downtrack.octets_sent & 0xFFFFFFFF,
                            [],
                        )
                    )
        for compound in _compounds(out):
            self.endpoint.send_rtcp(compound)
        twcc = self.twcc
        if twcc is not None:
            if twcc.media_ssrc not in self.layers_by_ssrc:
                # Name a stream the publisher still sends (see wire/twcc.py).
                twcc.media_ssrc = next(iter(self.layers_by_ssrc), 0)
            for feedback in twcc.build_feedback(int(now * 1_000_000)):
                self.endpoint.send_rtcp(feedback)

    def close(self) -> None:
        self.endpoint.close()


RTCP_COMPOUND_BYTES = 1200
"""A compound RTCP packet fits one datagram on any path (RFC 3550 §6.1); reports for
many streams are split into several (reduced-size RTCP, RFC 5506, which WebRTC
endpoints negotiate)."""


def _compounds(packets: list[rtcp.RtcpPacket]) -> Iterator[bytes]:
    """``packets`` serialized into compound packets of at most RTCP_COMPOUND_BYTES each."""
    chunk: list[bytes] = []
    size = 0
    for packet in packets:
        data = packet.serialize()
        if chunk and size + len(data) > RTCP_COMPOUND_BYTES:
            yield b"".join(chunk)
            chunk, size = [], 0
        chunk.append(data)
        size += len(data)
    if chunk:
        yield b"".join(chunk)
