"""Published tracks, their received layers, and the per-subscriber DownTracks.

This is the forwarding path. For each received RTP packet, :meth:`Layer.receive`
keeps the plaintext once (retransmission cache) and hands it to every
:class:`DownTrack` that currently forwards that layer; a DownTrack builds the
subscriber's packet (payload type, sequence number, timestamp, SSRC, extension
ids, VP8 picture ids) and hands it to its send target, which numbers,
protects and sends it. No awaits, no per-subscriber objects, no logging unless
enabled. The steady state of both runs natively when ``media/_forward.c`` is
built (Layer and DownTrack keep their fields in its C base classes); the
Python methods here are the reference and handle every case that needs a
decision.

A DownTrack keeps its own sequence, timestamp and picture-id spaces: when it
starts, or switches to another simulcast layer (on that layer's keyframe,
forwarding the current one until then), or its publisher restarts, offsets are
chosen so its output continues without a jump (RFC 3550 §5.1 receivers see
one stream).
"""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING, Any

from mediafed.media import allocation, native
from mediafed.media.rtxcache import RetransmissionCache
from mediafed.media.types import TrackInfo, TrackKind
from mediafed.wire import payload as payload_codecs
from mediafed.wire.rtp import (
    HEADER,
    SEQ_TS_SSRC,
    U16,
    U32,
    payload_end,
    payload_offset,
    remap_extension_ids,
)

if TYPE_CHECKING:
    from mediafed.media.peer import MediaPeer
    from mediafed.transport.srtp import PacketBuffer
    from mediafed.wire.rtcp import ReportBlock

log = logging.getLogger(__name__)

_fanout = native.fanout
KEYFRAME_REQUEST_INTERVAL_S = 0.5
KEYFRAME_RETRY_S = 1.0
NACK_MAX_TRIES = 3
NACK_RETRY_S = 0.05
MAX_MISSING = 256


class Layer(native.InStream):
    """One received RTP stream (an encoding) of a published track.

    The fields the receive path uses (statistics, cache, DownTracks) are
    declared by the ``InStream`` base, native when built (transport/native.py).
    """

    __slots__ = (
        "bitrate_bps",
        "expected_prior",
        "last_arrival",
        "last_sr_at",
        "last_sr_ntp",
        "last_sr_rtp",
        "octets_at_rate",
        "quality",
        "rate_at",
        "received_prior",
        "rid",
        "rtx_ssrc",
        "ssrc",
        "window_expected",
        "window_received",
    )

    def __init__(
        self, track: PublishedTrack, *, rid: str = "", quality: int = 2, cache_s: float = 1.0
    ) -> None:
        self.track = track
        self.rid = rid
        self.quality = quality
        self.ssrc = 0
        self.rtx_ssrc = 0
        self.clock_rate = track.clock_rate
        self.cache = RetransmissionCache(1024 if track.kind is TrackKind.VIDEO else 256, cache_s)
        self.downtracks: list[DownTrack] = []
        self.keyframe_waiters = 0
        self.last_keyframe_at = -1.0
        # Receive statistics (RFC 3550 A.3, A.8).
        self.base_seq = -1
        self.highest_seq = 0
        self.cycles = 0
        self.received = 0
        self.octets = 0
        self.expected_prior = 0
        self.received_prior = 0
        self.jitter = 0.0
        self.last_transit = 0.0
        self.last_seq = 0
        self.last_ts = 0
        self.last_arrival = 0.0
        self.last_packet_at = -1.0
        self.last_sr_ntp = 0
        self.last_sr_rtp = 0
        self.last_sr_at = 0.0
        self.missing: dict[int, list[float]] = {}
        self.level = 127
        self.bitrate_bps = 0
        self.octets_at_rate = 0
        self.rate_at = -1.0
        self.window_expected = 0
        self.window_received = 0

    def measure(self, now: float) -> None:
        """Update ``bitrate_bps`` from the bytes received since the last measure."""
        if self.rate_at < 0:
            self.rate_at = now
            self.octets_at_rate = self.octets
            return
        elapsed = now - self.rate_at
        if elapsed >= 1.0:
            self.bitrate_bps = int((self.octets - self.octets_at_rate) * 8 / elapsed)
            self.rate_at = now
            self.octets_at_rate = self.octets

    def window(self) -> tuple[int, int]:
        """(packets expected, packets lost) since the last call: connection quality's
        view, kept apart from the receiver reports' intervals."""
        if self.base_seq < 0:
            return 0, 0
        expected_total = self.cycles + self.highest_seq - self.base_seq + 1
        expected = expected_total - self.window_expected
        received = self.received - self.window_received
        self.window_expected = expected_total
        self.window_received = self.received
        return expected, max(0, expected - received)

    def receiving(self, now: float) -> bool:
        """Packets arrived in the last second (a publisher may stop a layer)."""
        return self.last_packet_at >= 0 and now - self.last_packet_at < 1.0

    @property
    def active(self) -> bool:
        return self.last_packet_at >= 0

    def set_ssrc(self, ssrc: int) -> None:
        """A (new) SSRC for this layer. A different one means the publisher restarted
        the stream: its sequence and timestamps start over, so statistics reset and
        every DownTrack re-anchors its offsets (on a keyframe for video)."""
        if self.ssrc and ssrc != self.ssrc:
            self.base_seq = -1
            self.cycles = 0
            self.received = 0
            self.expected_prior = 0
            self.received_prior = 0
            self.missing.clear()
            self.cache.clear()
            self.last_sr_at = 0.0
            for downtrack in self.downtracks:
                downtrack.resync()
        self.ssrc = ssrc

    def receive(self, buf: PacketBuffer, length: int, now: float) -> None:
        """The hot path: one plaintext RTP packet of this layer sits in ``buf``.

        The reference for the native ``receive_rtp`` (media/_forward.c)."""
        view = buf.view
        _b0, b1, seq, ts, _ssrc = HEADER.unpack_from(view, 0)
        packet = bytes(view[:length])
        self._account(seq, ts, length, now)
        if not self.cache.put(seq, packet, now):
            return  # a duplicate: subscribers had it (or asked for it and got it)
        keyframe = False
        if self.keyframe_waiters:
            keyframe = self._is_keyframe(packet, length)
            if keyframe:
                self.last_keyframe_at = now
        # for downtrack in self.downtracks: downtrack.forward(...), natively when built
        _fanout(self.downtracks, packet, length, b1, seq, ts, keyframe, now)

    def _is_keyframe(self, packet: bytes, length: int) -> bool:
        try:
            start = payload_offset(packet, length)
            end = payload_end(packet, length)
            return payload_codecs.is_keyframe(self.track.mime_lower, packet, start, end)
        except Exception:
            return False

    def _account(self, seq: int, ts: int, length: int, now: float) -> None:
        self.received += 1
        self.octets += length
        self.last_packet_at = now
        if self.base_seq < 0:
            self.base_seq = seq
            self.highest_seq = seq
            self.last_seq = seq
            self.last_ts = ts
            self.last_transit = now * self.clock_rate - ts
            return
        delta = (seq - self.highest_seq) & 0xFFFF
        if 0 < delta < 0x8000:
            if delta > 1 and self.track.nack_enabled:
                self._note_missing(self.highest_seq + 1, delta - 1, now)
            if seq < self.highest_seq:
                self.cycles += 0x10000
            self.highest_seq = seq
            self.last_seq = seq
            self.last_ts = ts
        elif self.missing:
            self.missing.pop(seq, None)
        # Interarrival jitter (RFC 3550 A.8), in timestamp units.
        transit = now * self.clock_rate - ts
        d = abs(transit - self.last_transit)
        self.last_transit = transit
        self.jitter += (d - self.jitter) / 16.0

    def _note_missing(self, first: int, count: int, now: float) -> None:
        if count > MAX_MISSING:
            # A gap this large is a restart or a long outage, not loss to repair.
            self.missing.clear()
            self.track.request_keyframe(now)
            return
        for offset in range(count):
            self.missing[(first + offset) & 0xFFFF] = [now - NACK_RETRY_S, 0.0]
        if len(self.missing) > MAX_MISSING:
            for stale in list(self.missing)[: len(self.missing) - MAX_MISSING]:
                del self.missing[stale]

    def due_nacks(self, now: float) -> list[int]:
        """Sequence numbers to NACK upstream now (RFC 4585 generic NACK), with retries."""
        due = []
        for seq, state in list(self.missing.items()):
            if now - state[0] < NACK_RETRY_S:
                continue
            if state[1] >= NACK_MAX_TRIES:
                del self.missing[seq]
                continue
            state[0] = now
            state[1] += 1
            due.append(seq)
        return due

    def report_block(self) -> tuple[int, int, int, int, int, int]:
        """(fraction lost, cumulative lost, extended highest seq, jitter, lsr, dlsr-base)."""
        extended = self.cycles + self.highest_seq
        expected = extended - self.base_seq + 1
        lost = max(-0x800000, min(0x7FFFFF, expected - self.received))
        expected_interval = expected - self.expected_prior
        received_interval = self.received - self.received_prior
        self.expected_prior = expected
        self.received_prior = self.received
        lost_interval = expected_interval - received_interval
        fraction = 0
        if expected_interval > 0 and lost_interval > 0:
            fraction = min(255, (lost_interval << 8) // expected_interval)
        lsr = (self.last_sr_ntp >> 16) & 0xFFFFFFFF
        return fraction, lost, extended & 0xFFFFFFFF, int(self.jitter), lsr, 0


class PublishedTrack:
    """A track one participant publishes: its layers, subscribers and keyframe policy."""

    def __init__(
        self,
        info: TrackInfo,
        *,
        publisher: MediaPeer,
        mime: str,
        clock_rate: int,
        payload_type: int,
        rtx_payload_type: int | None,
        fmtp: dict[str, str],
        ext_table: bytes,
        twcc_id: int,
        level_id: int,
        mid_id: int,
        rid_id: int,
        rrid_id: int,
        nack_enabled: bool,
        cache_s: float = 1.0,
    ) -> None:
        self.info = info
        self.sid = info.sid
        self.kind = info.kind
        self.publisher = publisher
        self.mime = mime
        self.mime_lower = mime.lower()
        self.clock_rate = clock_rate
        self.payload_type = payload_type
        self.rtx_payload_type = rtx_payload_type
        self.fmtp = fmtp
        self.ext_table = ext_table
        self.twcc_id = twcc_id
        self.level_id = level_id
        self.mid_id = mid_id
        self.rid_id = rid_id
        self.rrid_id = rrid_id
        self.nack_enabled = nack_enabled
        self.cache_s = cache_s
        self.layers: dict[str, Layer] = {}
        self.downtracks: dict[str, DownTrack] = {}
        self.last_keyframe_request = -1.0
        self.keyframe_pending = False
        self.reported_qualities: tuple[int, ...] | None = None
        self.muted = info.muted
        self.closed = False

    def layer(self, rid: str) -> Layer:
        layer = self.layers.get(rid)
        if layer is None:
            quality = 2
            for info in self.info.layers:
                if info.rid == rid:
                    quality = info.quality
                    break
            else:
                if rid:
                    quality = {"q": 0, "h": 1, "f": 2}.get(rid, 2)
            layer = Layer(self, rid=rid, quality=quality, cache_s=self.cache_s)
            self.layers[rid] = layer
        return layer

    def best_layer(self, max_quality: int = 2, now: float | None = None) -> Layer | None:
        """The highest active layer at or below ``max_quality`` (else the lowest active).

        With ``now``, active means receiving in the last second, else ever received."""
        if now is None:
            active = [layer for layer in self.layers.values() if layer.active]
        else:
            active = [layer for layer in self.layers.values() if layer.receiving(now)]
            if not active:
                active = [layer for layer in self.layers.values() if layer.active]
        if not active:
            active = list(self.layers.values())
        if not active:
            return None
        fitting = [layer for layer in active if layer.quality <= max_quality]
        if fitting:
            return max(fitting, key=lambda layer: layer.quality)
        return min(active, key=lambda layer: layer.quality)

    def request_keyframe(self, now: float) -> None:
        """Ask the publisher for a keyframe (PLI), at most every 500 ms.

        A request inside the interval is not dropped but deferred to its end
        (:meth:`tick`): the subscriber that asked may be the only one waiting.
        """
        if self.kind is not TrackKind.VIDEO or self.closed:
            return
        if now - self.last_keyframe_request < KEYFRAME_REQUEST_INTERVAL_S:
            self.keyframe_pending = True
            return
        self.keyframe_pending = False
        self.last_keyframe_request = now
        self.publisher.send_pli(self)

    def layer_bitrates(self, now: float) -> dict[int, int]:
        """Quality -> bitrate of the layers arriving now: measured, else announced,
        else a default for the quality."""
        announced = {info.quality: info.bitrate_bps for info in self.info.layers}
        rates: dict[int, int] = {}
        for layer in self.layers.values():
            if not layer.receiving(now):
                continue
            rates[layer.quality] = (
                layer.bitrate_bps
                or announced.get(layer.quality, 0)
                or allocation.DEFAULT_LAYER_BPS.get(layer.quality, 500_000)
            )
        # Layers paused because nobody watched them (dynacast) may still be chosen:
        # the publisher resumes them when told they are wanted.
        for quality, bitrate in announced.items():
            rates.setdefault(quality, bitrate or allocation.DEFAULT_LAYER_BPS.get(quality, 500_000))
        return rates

    def wanted_qualities(self) -> tuple[int, ...]:
        """Simulcast qualities someone watches, plus the lowest (kept for a quick start)."""
        known = sorted(
            {info.quality for info in self.info.layers}
            | {layer.quality for layer in self.layers.values()}
        )
        if len(known) < 2:
            return tuple(known)
        wanted = {known[0]}
        for downtrack in self.downtracks.values():
            if not downtrack.negotiated or downtrack.disabled:
                continue
            ceiling = min(downtrack.max_quality, downtrack.allocated_quality)
            fitting = [quality for quality in known if quality <= ceiling]
            wanted.add(fitting[-1] if fitting else known[0])
            if downtrack.pending is not None and downtrack.layer is not None:
                # still receiving this one until the new layer's keyframe: keep it on
                wanted.add(downtrack.layer.quality)
        return tuple(sorted(wanted))

    def tick(self, now: float, *, housekeeping: bool = True) -> None:
        """Timer work: deferred keyframe requests, and asking again for subscribers
        still waiting after a second (the PLI or keyframe may be lost); with
        ``housekeeping`` (once a second) also bitrates and the cache trim."""
        if housekeeping:
            for layer in self.layers.values():
                layer.measure(now)
                layer.cache.trim(now)
        if self.kind is not TrackKind.VIDEO:
            return
        since = now - self.last_keyframe_request
        deferred = self.keyframe_pending and since >= KEYFRAME_REQUEST_INTERVAL_S
        waiting = since >= KEYFRAME_RETRY_S and any(
            layer.keyframe_waiters for layer in self.layers.values()
        )
        if deferred or waiting:
            self.request_keyframe(now)

    def close(self) -> None:
        self.closed = True
        for downtrack in list(self.downtracks.values()):
            downtrack.detach()
        self.downtracks.clear()


class DownTrack(native.Forwarder):
    """One subscriber's copy of a published track: its own SSRC, sequence and timestamps.

    The fields the fan-out uses (offsets, SSRC, payload type, counters) are
    declared by the ``Forwarder`` base, native when built (transport/native.py).
    """

    __slots__ = (
        "_left",
        "allocated_at",
        "allocated_quality",
        "clock_rate",
        "disabled",
        "layer",
        "max_quality",
        "mid",
        "negotiated",
        "peer",
        "pending",
        "previous",
        "report",
        "retransmitted",
        "rtt_ms",
        "rtx_payload_type",
        "rtx_seq",
        "rtx_ssrc",
        "sr_sent",
        "started",
        "track",
    )

    def __init__(
        self,
        track: PublishedTrack,
        peer: MediaPeer,
        *,
        payload_type: int,
        rtx_payload_type: int | None,
    ) -> None:
        self.track = track
        self.peer = peer
        self.target = peer.endpoint.target
        self.ssrc = random.getrandbits(32) or 1
        self.rtx_ssrc = random.getrandbits(32) or 2
        self.payload_type = payload_type
        self.rtx_payload_type = rtx_payload_type
        self.clock_rate = track.clock_rate
        self.mid = ""
        self.layer: Layer | None = None
        self.pending: Layer | None = None
        """The layer this DownTrack moves to on its next keyframe (None: staying)."""
        self.switching = False
        self._left: Layer | None = None
        self.previous: tuple[Layer, int, tuple[int, int], tuple[int, int, int]] | None = None
        """(layer, first sequence number after it, (seq, ts offsets), VP8 offsets) of the
        layer forwarded before the last switch: NACKs for its packets come from it."""
        self.vp8 = track.mime_lower == "video/vp8"
        self.pid_off = self.tl0_off = self.keyidx_off = 0
        self.pid_out = self.tl0_out = self.keyidx_out = 0
        self.max_quality = 2
        self.allocated_quality = 2
        self.allocated_at = -1.0
        self.disabled = False
        self.ext_remap: bytes | None = None
        self.negotiated = False
        self.started = False
        self.synced = False
        self.needs_keyframe = track.kind is TrackKind.VIDEO
        self.seq_off = 0
        self.ts_off = 0
        self.seq_out = random.getrandbits(16)
        self.ts_out = random.getrandbits(32)
        self.time_out = 0.0
        self.packets_sent = 0
        self.octets_sent = 0
        self.rtx_seq = random.getrandbits(16)
        self.retransmitted = 0
        self.report: tuple[int, float] | None = None
        """(fraction lost of 256, jitter in ms) of the subscriber's last report; taken
        by connection quality."""
        self.rtt_ms = 0.0
        self.sr_sent: dict[int, float] = {}
        """Middle 32 bits of the NTP time of our last sender reports -> when sent."""

    # -- control (off the hot path) ---------------------------------------
    def attach(self, now: float) -> None:
        """Start forwarding the best layer (after the subscriber's answer)."""
        self.negotiated = True
        self.select_layer(now)

    def select_layer(self, now: float) -> None:
        if self.disabled or not self.negotiated:
            self._leave_layer()
            return
        target = self.track.best_layer(min(self.max_quality, self.allocated_quality), now)
        if target is None or target is self.layer:
            self._cancel_switch()
            return
        if target is self.pending:
            return
        current = self.layer
        if (
            self.track.kind is TrackKind.VIDEO
            and current is not None
            and not self.needs_keyframe
            and current.receiving(now)
        ):
            # Switch on the new layer's keyframe; until it comes the current layer
            # goes on, so the subscriber never waits on a frozen picture.
            self._cancel_switch()
            self.pending = target
            self.switching = True
            target.downtracks.append(self)
            target.keyframe_waiters += 1
            self.track.request_keyframe(now)
            return
        self._leave_layer()
        self.layer = target
        target.downtracks.append(self)
        self.synced = False
        if self.track.kind is TrackKind.VIDEO:
            self.needs_keyframe = True
            target.keyframe_waiters += 1
            self.track.request_keyframe(now)

    def _cancel_switch(self) -> None:
        pending = self.pending
        if pending is None:
            return
        if self in pending.downtracks:
            pending.downtracks.remove(self)
        pending.keyframe_waiters = max(0, pending.keyframe_waiters - 1)
        self.pending = None
        self.switching = False

    def _complete_switch(self, packet: bytes, length: int, seq: int, ts: int, now: float) -> None:
        """The pending layer's keyframe is here: leave the current layer for it."""
        pending = self.pending
        assert pending is not None
        current = self.layer
        if current is not None and self in current.downtracks:
            current.downtracks.remove(self)
        pending.keyframe_waiters = max(0, pending.keyframe_waiters - 1)
        self._left = current
        self.layer = pending
        self.pending = None
        self.switching = False
        self._continue_from(packet, length, seq, ts, now)

    def _leave_layer(self) -> None:
        self._cancel_switch()
        layer = self.layer
        if layer is None:
            return
        if self in layer.downtracks:
            layer.downtracks.remove(self)
        if self.needs_keyframe and self.track.kind is TrackKind.VIDEO:
            layer.keyframe_waiters = max(0, layer.keyframe_waiters - 1)
        self._left = layer
        self.layer = None

    def set_disabled(self, disabled: bool, now: float) -> None:
        self.disabled = disabled
        self.select_layer(now)

    def detach(self) -> None:
        self._leave_layer()
        self.negotiated = False

    # -- the hot path --------------------------------------------------------
    def forward(
        self, packet: bytes, length: int, b1: int, seq: int, ts: int, keyframe: bool, now: float
    ) -> None:
        if self.switching:
            # in two layers' lists until the new one's keyframe: which one is this?
            pending = self.pending
            ssrc = U32.unpack_from(packet, 8)[0]
            if pending is not None and ssrc == pending.ssrc:
                if not keyframe:
                    return
                self._complete_switch(packet, length, seq, ts, now)
            elif self.layer is None or ssrc != self.layer.ssrc:
                return
        elif self.needs_keyframe:
            if not keyframe:
                return
            self.needs_keyframe = False
            layer = self.layer
            if layer is not None:
                layer.keyframe_waiters = max(0, layer.keyframe_waiters - 1)
            self._continue_from(packet, length, seq, ts, now)
        elif not self.synced:
            self._continue_from(packet, length, seq, ts, now)
        seq_out = (seq + self.seq_off) & 0xFFFF
        ts_out = (ts + self.ts_off) & 0xFFFFFFFF
        # The same packet the native fan-out builds (media/_forward.c): header, ids, VP8.
        out = bytearray(packet[:length])
        out[1] = (b1 & 0x80) | self.payload_type
        SEQ_TS_SSRC.pack_into(out, 2, seq_out, ts_out, self.ssrc)
        if self.ext_remap is not None:
            remap_extension_ids(out, length, self.ext_remap)
        written = self._continue_vp8(out, length) if self.vp8 else None
        if self.target.send_packet(out) < 0:
            return  # not connected yet, or refused: counted by the target
        if (seq_out - self.seq_out) & 0xFFFF < 0x8000:
            # the newest so far (a late packet, repaired upstream, must not move the
            # point the next switch continues from backwards)
            self.seq_out = seq_out
            self.ts_out = ts_out
            self.time_out = now
            if written is not None:
                self.pid_out, self.tl0_out, self.keyidx_out = written
        self.packets_sent += 1
        self.octets_sent += length

    def _continue_vp8(
        self, out: bytearray, length: int, offsets: tuple[int, int, int] | None = None
    ) -> tuple[int, int, int]:
        """Write the continued picture id, TL0PICIDX and KEYIDX into ``out`` (with the
        current offsets, or those given); what was written (the last values where a
        field is absent)."""
        pid_off, tl0_off, keyidx_off = offsets or (self.pid_off, self.tl0_off, self.keyidx_off)
        fields = payload_codecs.vp8_fields(out, length)
        pid, tl0, keyidx = self.pid_out, self.tl0_out, self.keyidx_out
        if fields.pid_at >= 0:
            pid = (fields.pid + pid_off) & (0x7FFF if fields.pid_bits == 15 else 0x7F)
            if fields.pid_bits == 15:
                out[fields.pid_at] = 0x80 | (pid >> 8)
                out[fields.pid_at + 1] = pid & 0xFF
            else:
                out[fields.pid_at] = pid
        if fields.tl0_at >= 0:
            tl0 = (fields.tl0 + tl0_off) & 0xFF
            out[fields.tl0_at] = tl0
        if fields.key_at >= 0:
            keyidx = (fields.keyidx + keyidx_off) & 0x1F
            out[fields.key_at] = (out[fields.key_at] & 0xE0) | keyidx
        return pid, tl0, keyidx

    def _continue_from(self, packet: bytes, length: int, seq: int, ts: int, now: float) -> None:
        """Choose offsets so this packet follows the last one sent without a jump: in
        sequence numbers and timestamps, and for VP8 in picture ids, TL0PICIDX and
        KEYIDX (simulcast layers number their pictures apart; libwebrtc drops a
        frame whose id looks older than one it decoded)."""
        if self.started:
            elapsed = max(now - self.time_out, 0.001)
            next_ts = (self.ts_out + max(1, int(elapsed * self.clock_rate))) & 0xFFFFFFFF
            left = self._left
            if left is not None:
                # what the subscriber got before this point came from that layer
                self.previous = (
                    left,
                    (self.seq_out + 1) & 0xFFFF,
                    (self.seq_off, self.ts_off),
                    (self.pid_off, self.tl0_off, self.keyidx_off),
                )
        else:
            next_ts = self.ts_out
        self._left = None
        self.seq_off = (self.seq_out + 1 - seq) & 0xFFFF
        self.ts_off = (next_ts - ts) & 0xFFFFFFFF
        if self.vp8:
            fields = payload_codecs.vp8_fields(packet, length)
            if self.started:
                self.pid_off = (self.pid_out + 1 - fields.pid) & 0x7FFF
                self.tl0_off = (self.tl0_out + 1 - fields.tl0) & 0xFF
                self.keyidx_off = (self.keyidx_out + 1 - fields.keyidx) & 0x1F
            else:
                self.pid_off = self.tl0_off = self.keyidx_off = 0
        self.started = True
        self.synced = True

    def resync(self) -> None:
        """The input stream restarted: re-anchor offsets on the next usable packet."""
        self.synced = False
        layer = self.layer
        if self.track.kind is TrackKind.VIDEO and not self.needs_keyframe and layer is not None:
            self.needs_keyframe = True
            layer.keyframe_waiters += 1

    # -- repair ----------------------------------------------------------------
    def retransmit(self, sequences: list[int], now: float) -> int:
        """Answer a subscriber's NACK from the cache (RTX when negotiated). Count sent."""
        layer = self.layer
        if layer is None or not self.target.ready:
            return 0
        sent = 0
        for seq_out in sequences:
            source, (seq_off, ts_off) = layer, (self.seq_off, self.ts_off)
            vp8_offsets = None
            previous = self.previous
            if previous is not None and 0 < ((previous[1] - seq_out) & 0xFFFF) < 0x8000:
                # sent before the last switch: it came from the layer left then
                source, _first, (seq_off, ts_off), vp8_offsets = previous
            packet = source.cache.get((seq_out - seq_off) & 0xFFFF, now)
            if packet is None:
                continue
            _b0, b1, _seq, ts, _ssrc = HEADER.unpack_from(packet, 0)
            ts_out = (ts + ts_off) & 0xFFFFFFFF
            original = bytearray(packet)
            if self.vp8:
                self._continue_vp8(original, len(original), vp8_offsets)
            if self.rtx_payload_type is not None:
                out = self._rtx_packet(bytes(original), b1, ts_out, seq_out)
            else:
                out = original
                out[1] = (b1 & 0x80) | self.payload_type
                SEQ_TS_SSRC.pack_into(out, 2, seq_out, ts_out, self.ssrc)
            if self.ext_remap is not None:
                remap_extension_ids(out, len(out), self.ext_remap)
            if self.target.send_packet(out) >= 0:
                sent += 1
        self.retransmitted += sent
        return sent

    def _rtx_packet(self, packet: bytes, b1: int, ts_out: int, seq_out: int) -> bytearray:
        # RFC 4588 §4: RTX payload = original sequence number + original payload.
        start = payload_offset(packet, len(packet))
        end = payload_end(packet, len(packet))
        out = bytearray(packet[:start])
        out[0] &= ~0x20 & 0xFF  # padding is not carried over
        self.rtx_seq = (self.rtx_seq + 1) & 0xFFFF
        out[1] = (b1 & 0x80) | (self.rtx_payload_type or 0)
        SEQ_TS_SSRC.pack_into(out, 2, self.rtx_seq, ts_out, self.rtx_ssrc)
        out += U16.pack(seq_out)
        out += packet[start:end]
        return out

    def note_sender_report(self, ntp: int, now: float) -> None:
        """A sender report with NTP time ``ntp`` goes out now (for the round trip)."""
        sent = self.sr_sent
        if len(sent) >= 4:
            del sent[next(iter(sent))]
        sent[(ntp >> 16) & 0xFFFFFFFF] = now

    def on_report(self, block: ReportBlock, now: float) -> None:
        """The subscriber's reception report on our stream (RFC 3550 §6.4.1): loss and
        jitter, and the round trip from the sender report it echoes (LSR, DLSR)."""
        self.report = (block.fraction_lost, block.jitter * 1000.0 / self.clock_rate)
        sent_at = self.sr_sent.get(block.lsr) if block.lsr else None
        if sent_at is not None:
            rtt = now - sent_at - block.dlsr / 65536.0
            if 0 <= rtt < 10:
                self.rtt_ms = rtt * 1000.0

    def sender_report_times(self, now: float) -> tuple[int, int] | None:
        """(NTP, RTP timestamp) for an SR to the subscriber, from the publisher's SR (lip sync)."""
        layer = self.layer
        if layer is None or not layer.last_sr_at or not self.started:
            return None
        elapsed = now - layer.last_sr_at
        ntp = layer.last_sr_ntp + int(elapsed * (1 << 32))
        rtp = (layer.last_sr_rtp + int(elapsed * self.clock_rate) + self.ts_off) & 0xFFFFFFFF
        return ntp, rtp

    def stats(self) -> dict[str, Any]:
        return {
            "ssrc": self.ssrc,
            "packets": self.packets_sent,
            "octets": self.octets_sent,
            "retransmitted": self.retransmitted,
        }
