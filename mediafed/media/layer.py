"""One received RTP stream (a layer, an encoding) of a published track.

The first step of forwarding: :meth:`Layer.receive` accounts a plaintext RTP
packet (RFC 3550 statistics, gaps to NACK), keeps it once in the
retransmission cache and hands it to every DownTrack that forwards this layer
(media/downtrack.py). The steady state runs natively when ``media/_forward.c``
is built (the fields live in its ``InStream`` base); this is the reference.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mediafed.media import native
from mediafed.media.rtxcache import RetransmissionCache
from mediafed.media.types import TrackKind
from mediafed.wire import payload as payload_codecs
from mediafed.wire.rtp import HEADER, padding_only, payload_end, payload_offset

if TYPE_CHECKING:
    from mediafed.media.downtrack import DownTrack
    from mediafed.media.track import PublishedTrack
    from mediafed.transport.srtp import PacketBuffer

_fanout = native.fanout
NACK_MAX_TRIES = 5
NACK_MAX_BACKOFF = 2.0
NACK_RETRY_S = 0.05
"""The least time between two NACKs of one packet; once repairs have shown the round
trip to the publisher, 1.25 times that (asking again before the answer could come
only costs the publisher a retransmission it will not send)."""
MAX_MISSING = 256


class Layer(native.InStream):
    """One received RTP stream (an encoding) of a published track.

    The fields the receive path uses (statistics, cache, DownTracks) are
    declared by the ``InStream`` base, native when built (media/native.py).
    """

    __slots__ = (
        "asked",
        "bitrate_bps",
        "expected_prior",
        "last_arrival",
        "last_sr_at",
        "last_sr_ntp",
        "last_sr_rtp",
        "nack_backoff",
        "nacked",
        "octets_at_rate",
        "quality",
        "rate_at",
        "received_prior",
        "repair_rtt_s",
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
        self.nacked = 0
        """Sequence numbers asked of the publisher again (NACK), retries included."""
        self.asked: dict[int, float] = {}
        """Sequence number -> when it was first NACKed, while unrepaired."""
        self.repair_rtt_s = 0.0
        """Smoothed time from a NACK to its repair: the round trip to the publisher."""
        self.nack_backoff = 1.0
        """Karn's backoff: doubles when a first NACK goes unanswered for its spacing (the
        round trip is longer than believed, and retried repairs give no sample), back
        to 1 at the next clean sample."""
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
            measured = int((self.octets - self.octets_at_rate) * 8 / elapsed)
            # smoothed over a few seconds: one keyframe must not look like a new rate
            previous = self.bitrate_bps
            self.bitrate_bps = measured if not previous else (previous + measured) // 2
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
            self.asked.clear()
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
        # the layer's bitrate counts media, not padding
        self._account(seq, ts, 0 if padding_only(view, length) else length, now)
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
        """Receive statistics of one packet (``length``: what counts toward the bitrate)."""
        self.received += 1
        self.last_packet_at = now
        # octets (the bitrate) count new packets and repairs of missing ones, not
        # duplicates: libwebrtc pads with copies of recent packets over RTX
        if self.base_seq < 0:
            self.octets += length
            self.base_seq = seq
            self.highest_seq = seq
            self.last_seq = seq
            self.last_ts = ts
            self.last_transit = now * self.clock_rate - ts
            return
        delta = (seq - self.highest_seq) & 0xFFFF
        if 0 < delta < 0x8000:
            self.octets += length
            if delta > 1 and self.track.nack_enabled:
                self._note_missing(self.highest_seq + 1, delta - 1, now)
            if seq < self.highest_seq:
                self.cycles += 0x10000
            self.highest_seq = seq
            self.last_seq = seq
            self.last_ts = ts
        elif self.missing and self.missing.pop(seq, None) is not None:
            self.octets += length
        # Interarrival jitter (RFC 3550 A.8), in timestamp units.
        transit = now * self.clock_rate - ts
        d = abs(transit - self.last_transit)
        self.last_transit = transit
        self.jitter += (d - self.jitter) / 16.0

    def _note_missing(self, first: int, count: int, now: float) -> None:
        if count > MAX_MISSING:
            # A gap this large is a restart or a long outage, not loss to repair.
            self.missing.clear()
            self.asked.clear()
            self.track.request_keyframe(now)
            return
        for offset in range(count):
            self.missing[(first + offset) & 0xFFFF] = [now - NACK_RETRY_S, 0.0]
        if len(self.missing) > MAX_MISSING:
            for stale in list(self.missing)[: len(self.missing) - MAX_MISSING]:
                del self.missing[stale]
                self.asked.pop(stale, None)

    @property
    def nack_pending(self) -> bool:
        """Packets to NACK, or repairs to time (at the tick after they came, not at
        the next loss, which would read as a long round trip)."""
        return bool(self.missing or self.asked)

    def due_nacks(self, now: float) -> list[int]:
        """Sequence numbers to NACK upstream now (RFC 4585 generic NACK), with retries
        spaced by the round trip that repairs take (learned from them)."""
        asked = self.asked
        missing = self.missing
        if asked:
            for seq in [seq for seq in asked if seq not in missing]:
                sample = now - asked.pop(seq)  # repaired since the last call
                rtt = self.repair_rtt_s
                self.repair_rtt_s = sample if not rtt else 0.8 * rtt + 0.2 * sample
                self.nack_backoff = 1.0
        spacing = max(NACK_RETRY_S, 1.25 * self.repair_rtt_s) * self.nack_backoff
        due = []
        for seq, state in list(missing.items()):
            if state[1] and now - state[0] < spacing:
                continue  # the first NACK goes at once, retries a round trip apart
            if state[1] >= NACK_MAX_TRIES:
                del missing[seq]
                asked.pop(seq, None)
                continue
            if not state[1]:
                asked[seq] = now
            elif asked.pop(seq, None) is not None:
                # Karn: a repair after a retry cannot tell which NACK it answers, and
                # timing it from the first would stretch the spacing it feeds; so
                # no sample, and the next first NACKs wait longer for theirs
                self.nack_backoff = min(NACK_MAX_BACKOFF, 2 * self.nack_backoff)
            state[0] = now
            state[1] += 1
            due.append(seq)
        if len(asked) > MAX_MISSING:
            for stale in list(asked)[: len(asked) - MAX_MISSING]:
                del asked[stale]
        self.nacked += len(due)
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
