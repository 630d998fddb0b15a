"""One subscriber's copy of a published track: the sending half of forwarding.

A DownTrack builds the subscriber's packet from the publisher's (payload
type, sequence number, timestamp, SSRC, extension ids, VP8 picture ids) and
hands it to its send target, which numbers, protects and sends it. No awaits,
no per-subscriber objects, no logging unless enabled. The steady state runs
natively when ``media/_forward.c`` is built (the fields live in its
``Forwarder`` base); the Python methods here are the reference and handle
every case that needs a decision.

A DownTrack keeps its own sequence, timestamp and picture-id spaces: when it
starts, or switches to another simulcast layer (on that layer's keyframe,
forwarding the current one until then), or its publisher restarts, offsets are
chosen so its output continues without a jump (RFC 3550 §5.1 receivers see
one stream).

Padding-only packets (a libwebrtc publisher probes its uplink with them, on the
media SSRC when it has no RTX) carry nothing a subscriber needs: one that comes
next in sequence is dropped and the next packet takes its number. The offsets
that applied before each such drop are kept (``seq_history``) so late packets
and retransmissions of earlier ones still map to the numbers they were given.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any, NamedTuple

from mediafed.media import native
from mediafed.media.types import TrackKind
from mediafed.wire import payload as payload_codecs
from mediafed.wire.rtp import (
    HEADER,
    SEQ_TS_SSRC,
    U16,
    U32,
    padding_only,
    payload_end,
    payload_offset,
    remap_extension_ids,
)

if TYPE_CHECKING:
    from mediafed.media.layer import Layer
    from mediafed.media.peer import MediaPeer
    from mediafed.media.track import PublishedTrack
    from mediafed.wire.rtcp import ReportBlock


MAX_SPATIAL = 2
"""The top VP9 spatial layer a subscriber can ask for (LiveKit's three qualities)."""
MAX_TEMPORAL = 7
"""The highest VP9 temporal layer id (3 bits): all of them."""
TEMPORAL_WINDOW_S = 1.0
"""How long picture rates per temporal layer are counted before they are used."""
FPS_TOLERANCE = 0.8
"""A temporal layer whose measured rate is this share of the asked frame rate gives it."""


class _Run(NamedTuple):
    """What a subscriber got from one layer between two switches: NACKs for those
    packets are answered from that layer, with the offsets of then."""

    layer: Layer
    start: int
    """The first sequence number sent from it (its keyframe); it ends where the
    current layer's run starts."""
    offsets: tuple[int, int]
    vp8_offsets: tuple[int, int, int]
    history: list[tuple[int, int]]


class DownTrack(native.Forwarder):
    """One subscriber's copy of a published track: its own SSRC, sequence and timestamps.

    The fields the fan-out uses (offsets, SSRC, payload type, counters) are
    declared by the ``Forwarder`` base, native when built (media/native.py).
    """

    __slots__ = (
        "_left",
        "allocated_at",
        "allocated_quality",
        "clock_rate",
        "disabled",
        "layer",
        "max_fps",
        "max_quality",
        "mid",
        "nacked",
        "negotiated",
        "overrun",
        "peer",
        "pending",
        "previous",
        "report",
        "resends",
        "retransmitted",
        "rtt_ms",
        "rtx_payload_type",
        "rtx_seq",
        "rtx_ssrc",
        "run_start",
        "seq_history",
        "spatial_out",
        "spatial_target",
        "sr_sent",
        "started",
        "temporal_fps",
        "temporal_out",
        "temporal_pictures",
        "temporal_since",
        "temporal_target",
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
        self.run_start = 0
        """The first sequence number sent from the current layer (its keyframe)."""
        self.overrun = False
        """The current layer alone is far more than the subscriber's link carries
        (set by its downlink's allocation): a switch down does not wait for the
        next layer's keyframe."""
        self.previous: _Run | None = None
        """The layer forwarded before the last switch."""
        self.pad_floor = -1
        """Input sequence number from which the current ``seq_off`` applies, after
        padding was dropped (-1: none dropped since the last re-anchoring)."""
        self.seq_history: list[tuple[int, int]] = []
        """(input sequence number, offset used before it): one entry per run of dropped
        padding since the last re-anchoring, oldest first."""
        self.vp8 = track.mime_lower == "video/vp8"
        self.svc = track.mime_lower == "video/vp9"
        self.spatial_out = self.spatial_target = MAX_SPATIAL
        """VP9 SVC: the highest spatial layer forwarded, and the one wanted (the
        subscriber's quality: 0 LOW, 1 MEDIUM, 2 HIGH); every layer above is dropped."""
        self.pid_off = self.tl0_off = self.keyidx_off = 0
        self.pid_out = self.tl0_out = self.keyidx_out = 0
        self.max_quality = 2
        self.max_fps = 0
        """The frame rate the subscriber asks for (0: every frame): VP9 temporal layers."""
        self.temporal_out = self.temporal_target = MAX_TEMPORAL
        """VP9 SVC: the highest temporal layer forwarded, and the one wanted."""
        self.temporal_pictures = [0] * (MAX_TEMPORAL + 1)
        self.temporal_since = -1.0
        self.temporal_fps: list[float] = []
        """Measured pictures per second up to each temporal layer (cumulative)."""
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
        self.nacked = 0
        """Sequence numbers the subscriber asked for again (NACK)."""
        self.retransmitted = 0
        self.resends: dict[int, tuple[float, int]] | None = None
        """Output sequence number -> (when last resent, times resent), for the packets
        asked for lately; made on the first NACK."""
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
        if self.svc:
            self._select_spatial(now)
            self._select_temporal(now)
        if (
            self.disabled
            or not self.negotiated
            or self.allocated_quality < 0
            or self.peer.endpoint.srtp is None
        ):
            # (not connected yet: a keyframe now would arrive before the subscriber
            # can take it, and Chromium's encoder sent none for the request made when
            # it connected, so soon after; the session selects again then)
            self._leave_layer()
            return
        cap = min(self.max_quality, self.allocated_quality)
        target = self.track.best_layer(cap, now)
        current = self.layer
        if (
            target is not None
            and current is not None
            and current.quality <= cap < target.quality
            and now - current.last_packet_at < LAYER_STALL_S
        ):
            # the layer within the allocation paused a moment (a publisher sends little
            # of a still picture): going above the allocation would overrun the link
            target = current
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
            and not (self.overrun and target.quality < current.quality)
        ):
            # Switch on the new layer's keyframe; until it comes the current layer
            # goes on, so the subscriber never waits on a frozen picture. Not when
            # the link is far too thin for the current layer: what it sends meanwhile
            # is lost in an overfull queue, and the new layer's keyframe with it.
            self._cancel_switch()
            self.pending = target
            self.switching = True
            target.downtracks.append(self)
            target.keyframe_waiters += 1
            self.track.request_keyframe(now)
            return
        self._leave_layer()
        if current is not None and target.quality < current.quality:
            self._left = None  # left before the next keyframe: what it sent is not repaired
        self.layer = target
        target.downtracks.append(self)
        self.synced = False
        if self.track.kind is TrackKind.VIDEO:
            self.needs_keyframe = True
            target.keyframe_waiters += 1
            self.track.request_keyframe(now)

    def _select_spatial(self, now: float) -> None:
        """VP9 SVC: the spatial layer the subscriber's quality asks for (its allocation
        caps simulcast layers, not these). Down at the next picture, up at the next
        key picture (asked for: in K-SVC an upper layer only restarts from one)."""
        wanted = max(0, min(self.max_quality, MAX_SPATIAL))
        if wanted == self.spatial_target:
            return
        self.spatial_target = wanted
        if wanted > self.spatial_out:
            self.track.request_keyframe(now)

    def _select_temporal(self, now: float) -> None:
        """VP9 SVC: the fewest temporal layers that give the frame rate the subscriber
        asks for, from the picture rates measured (LiveKit: fps in UpdateTrackSettings).
        Applied at the next picture going down, at a switching-up point going up."""
        since = self.temporal_since
        if since < 0 or now - since >= TEMPORAL_WINDOW_S:
            if since >= 0:
                elapsed = now - since
                total = 0
                rates = []
                for count in self.temporal_pictures:
                    total += count
                    rates.append(total / elapsed)
                self.temporal_fps = rates
            self.temporal_pictures = [0] * (MAX_TEMPORAL + 1)
            self.temporal_since = now
        wanted = MAX_TEMPORAL
        if self.max_fps > 0:
            for temporal, rate in enumerate(self.temporal_fps):
                if rate >= self.max_fps * FPS_TOLERANCE:
                    wanted = temporal
                    break
        self.temporal_target = wanted

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
        mark = False
        if self.svc:
            vp9 = payload_codecs.vp9_layer(packet, length)
            if vp9 is not None:
                spatial, temporal, begins, ends, key, switch_up = vp9
                if begins and spatial == 0:  # a picture begins: layers may change
                    self._at_picture(temporal, key, switch_up)
                if spatial > self.spatial_out or temporal > self.temporal_out:
                    if seq == (self.seq_out + 1 - self.seq_off) & 0xFFFF:
                        self._drop_padding(seq)  # numbered around, as padding is
                    return
                # the end of the top layer forwarded ends the picture for this decoder
                mark = ends and spatial == self.spatial_out
        seq_off = self.seq_off
        if packet[0] & 0x20 and padding_only(packet, length):
            if seq == (self.seq_out + 1 - seq_off) & 0xFFFF:
                self._drop_padding(seq)
                return
        elif self.pad_floor >= 0 and _before(seq, self.pad_floor):
            seq_off = _offset_for(seq, seq_off, self.seq_history)  # a late packet
        seq_out = (seq + seq_off) & 0xFFFF
        ts_out = (ts + self.ts_off) & 0xFFFFFFFF
        # The same packet the native fan-out builds (media/_forward.c): header, ids, VP8.
        out = bytearray(packet[:length])
        out[1] = (0x80 if mark else b1 & 0x80) | self.payload_type
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

    def _at_picture(self, temporal: int, key: bool, switch_up: bool) -> None:
        """VP9 SVC, at the first packet of a picture: down at once; up in spatial
        layers at a key picture, in temporal layers at a switching-up point (U) of
        the layer reached, or a key picture."""
        self.temporal_pictures[temporal] += 1  # (3 bits: within MAX_TEMPORAL)
        if key or self.spatial_target < self.spatial_out:
            self.spatial_out = self.spatial_target
        target = self.temporal_target
        if key or target < self.temporal_out:
            self.temporal_out = target
        elif switch_up and self.temporal_out < temporal <= target:
            self.temporal_out = temporal

    def _drop_padding(self, seq: int) -> None:
        """Drop packet ``seq``, the next in order (padding only, or a VP9 spatial layer
        above the subscriber's): later packets are numbered one lower."""
        history = self.seq_history
        if history and history[-1][0] == seq:
            history[-1] = ((seq + 1) & 0xFFFF, history[-1][1])  # the same run goes on
        else:
            history.append(((seq + 1) & 0xFFFF, self.seq_off))
            if len(history) > SEQ_HISTORY:
                del history[0]
        self.seq_off = (self.seq_off - 1) & 0xFFFF
        self.pad_floor = (seq + 1) & 0xFFFF

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
            # what the subscriber got before this point came from that layer
            self.previous = (
                _Run(
                    left,
                    self.run_start,
                    (self.seq_off, self.ts_off),
                    (self.pid_off, self.tl0_off, self.keyidx_off),
                    self.seq_history,
                )
                if left is not None
                else None
            )
        else:
            next_ts = self.ts_out
        self._left = None
        self.run_start = (self.seq_out + 1) & 0xFFFF
        self.seq_off = (self.seq_out + 1 - seq) & 0xFFFF
        self.seq_history = []
        self.pad_floor = -1
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
        """Answer a subscriber's NACK from the cache (RTX when negotiated). Count sent.

        A packet is resent at most RESEND_MAX_TIMES, and not again within a round
        trip (at least RESEND_MIN_GAP_S) of its last resend: libwebrtc asks again
        when the repair is late, and on a full link it is late because it waits in
        the queue, where resending it once more only makes the queue longer.
        """
        self.nacked += len(sequences)
        layer = self.layer
        if layer is None or not self.target.ready:
            return 0
        resends = self.resends
        if resends is None:
            resends = self.resends = {}
        elif len(resends) > RESENDS_KEPT:
            for old in [seq for seq, (at, _) in resends.items() if now - at > RESENDS_FORGET_S]:
                del resends[old]
        gap = max(RESEND_MIN_GAP_S, self.rtt_ms / 1000.0)
        sent = 0
        unrepaired = False
        for seq_out in sequences:
            source, (seq_off, ts_off) = layer, (self.seq_off, self.ts_off)
            history = self.seq_history
            vp8_offsets = None
            if _before(seq_out, self.run_start):
                # sent before the current layer's keyframe: from the layer left then,
                # if it is known; else a keyframe has made it useless since
                previous = self.previous
                if previous is None or _before(seq_out, previous.start):
                    continue
                source, _start, (seq_off, ts_off), vp8_offsets, history = previous
            last = resends.get(seq_out)
            if last is not None and now - last[0] > RESENDS_FORGET_S:
                last = None  # long ago: a packet of an earlier turn of the numbers
            if last is not None and now - last[0] < gap:
                continue
            if last is not None and last[1] >= RESEND_MAX_TIMES:
                unrepaired = unrepaired or source is layer
                continue
            seq_in = _input_seq(seq_out, seq_off, history)
            packet = source.cache.get(seq_in, now)
            if packet is None:
                # (one that has not arrived yet comes when its publisher resends it:
                # asking for it again and again is no reason for a keyframe)
                unrepaired = unrepaired or (source is layer and layer.cache.expired(seq_in, now))
                continue
            resends[seq_out] = (now, 1 if last is None else last[1] + 1)
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
        if unrepaired and self.track.kind is TrackKind.VIDEO:
            # A frame of the current layer the subscriber cannot complete stalls its
            # decoder until libwebrtc gives up on it (3 s): a keyframe ends that sooner.
            self.track.request_keyframe(now)
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
            "nacked": self.nacked,
            "retransmitted": self.retransmitted,
        }


LAYER_STALL_S = 3.0
"""How long a layer within the allocation may be silent before a higher one is taken."""
SEQ_HISTORY = 64
"""Runs of dropped padding remembered per DownTrack (older late packets take the
oldest offset kept)."""


def _before(seq: int, other: int) -> bool:
    """``seq`` comes before ``other`` (RFC 3550 sequence arithmetic)."""
    return 0 < ((other - seq) & 0xFFFF) < 0x8000


def _offset_for(seq: int, seq_off: int, history: list[tuple[int, int]]) -> int:
    """The offset input packet ``seq`` was (or would have been) forwarded with."""
    for since, before in reversed(history):
        if not _before(seq, since):
            break
        seq_off = before
    return seq_off


RESEND_MAX_TIMES = 4
RESEND_MIN_GAP_S = 0.05
RESENDS_KEPT = 512
"""Past this many remembered resends, those older than RESENDS_FORGET_S are dropped."""
RESENDS_FORGET_S = 2.0


def _input_seq(seq_out: int, seq_off: int, history: list[tuple[int, int]]) -> int:
    """The input sequence number of output ``seq_out`` (the inverse of forwarding)."""
    for since, before in reversed(history):
        seq_in = (seq_out - seq_off) & 0xFFFF
        if not _before(seq_in, since):
            return seq_in
        seq_off = before
    return (seq_out - seq_off) & 0xFFFF
