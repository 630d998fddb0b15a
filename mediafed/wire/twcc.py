"""Transport-wide congestion control feedback, receiver side (sans-I/O).

A publisher's browser stamps every RTP packet with a transport-wide sequence number
(draft-holmer-rmcat-transport-wide-cc-extensions-01 section 2) and estimates its send
bandwidth from the arrival times we report back in RTPFB FMT 15 feedback (section 3.1).
:class:`TransportCcRecorder` remembers arrivals cheaply per packet and turns them into
feedback packets when the periodic timer asks; time is always passed in.

Like libwebrtc's receive-side proxy, a packet that arrives after it was reported lost makes the
next feedback start again from it, so the sender learns it arrived after all.

The feedback's "SSRC of media source" must be one of the sender's own SSRCs: libwebrtc hands
transport feedback to its congestion controller only through the RTP module that owns that
SSRC, and drops feedback naming any other (SSRC 0 included), so a publisher that never hears
back lowers its estimate until it reaches its floor. Until :attr:`media_ssrc` is set, nothing is
sent; arrivals stay recorded and go out with the first feedback that can name a stream.
"""

from __future__ import annotations

from mediafed.wire.rtcp import TransportCcFeedback

__all__ = ["TransportCcRecorder"]

_RING_BITS = 13
_RING = 1 << _RING_BITS  # packets remembered: ~1.6 s at 5000 packets/s
_MASK = _RING - 1
_TICK_US = 250  # receive delta resolution
_REFERENCE_US = 64_000  # reference time unit
_TICKS_PER_REFERENCE = _REFERENCE_US // _TICK_US
_MAX_FEEDBACK_BYTES = 1200
_FIXED_BYTES = 20 + 3  # RTCP header, SSRCs, base/count/reference/fb count; worst padding
_MAX_STATUS_COUNT = 0xFFFF


def _signed24(value: int) -> int:
    return ((value + (1 << 23)) & 0xFFFFFF) - (1 << 23)


class TransportCcRecorder:
    """Records (transport-wide sequence number, arrival time) and builds feedback.

    ``record`` is on the packet path: a handful of integer operations and two list stores
    into a power-of-two ring indexed by the unwrapped sequence number.
    """

    __slots__ = (
        "_arrivals",
        "_dirty",
        "_feedback_count",
        "_highest",
        "_next_report",
        "_sender_ssrc",
        "_seqs",
        "media_ssrc",
    )

    def __init__(self, sender_ssrc: int, media_ssrc: int = 0) -> None:
        self._sender_ssrc = sender_ssrc
        self.media_ssrc = media_ssrc
        """An SSRC the remote sender uses (its media or RTX stream); 0: none known yet."""
        self._arrivals = [0] * _RING
        self._seqs = [-1] * _RING  # unwrapped sequence number held by each slot
        self._highest = -1  # highest unwrapped sequence number seen; -1: none yet
        self._next_report = 0  # first unwrapped sequence number the next feedback covers
        self._dirty = False
        self._feedback_count = 0

    def record(self, transport_seq: int, arrival_time_us: int) -> None:
        """Remember that the packet with this 16-bit transport-wide sequence number arrived."""
        highest = self._highest
        if highest < 0:
            # Start one wrap up so packets reordered before the first stay non-negative.
            seq = 0x10000 | transport_seq
            self._highest = seq
            self._next_report = seq
        else:
            diff = (transport_seq - highest) & 0xFFFF
            if diff & 0x8000:
                diff -= 0x10000
            seq = highest + diff
            if diff > 0:
                self._highest = seq
            elif highest - seq >= _RING or seq < 0:
                return  # too old to report again
        slot = seq & _MASK
        if self._seqs[slot] == seq:
            return  # duplicate: the first arrival counts
        if seq < self._next_report:
            self._next_report = seq  # reported lost already: report it again
        self._seqs[slot] = seq
        self._arrivals[slot] = arrival_time_us
        self._dirty = True

    def build_feedback(self, now_us: int) -> list[bytes]:
        """Serialized feedback packets covering everything recorded since the last call.

        Each list member is one RTCP packet (a compound member on its own); a new packet is
        started when one would exceed ~1200 bytes or a receive delta would not fit 16 bits.
        ``now_us`` is the caller's clock; the content depends only on recorded arrivals.
        Returns [] when nothing new arrived, or while no :attr:`media_ssrc` is known.
        """
        if not self._dirty or not self.media_ssrc:
            return []
        self._dirty = False
        seqs = self._seqs
        arrivals = self._arrivals
        end = self._highest
        seq = max(self._next_report, end - _RING + 1)
        out: list[bytes] = []
        while seq <= end:
            base = seq
            packets: list[tuple[int, int | None]] = []
            reference = 0
            previous_ticks: int | None = None
            delta_bytes = 0
            while seq <= end and len(packets) < _MAX_STATUS_COUNT:
                slot = seq & _MASK
                if seqs[slot] != seq:
                    packets.append((seq & 0xFFFF, None))
                    seq += 1
                    continue
                arrival = arrivals[slot]
                ticks = arrival // _TICK_US
                if previous_ticks is None:
                    reference = arrival // _REFERENCE_US
                    previous_ticks = reference * _TICKS_PER_REFERENCE
                delta = ticks - previous_ticks
                size = 1 if 0 <= delta <= 0xFF else 2
                if packets and (
                    not -0x8000 <= delta <= 0x7FFF
                    or _FIXED_BYTES + 2 * ((len(packets) + 7) // 7) + delta_bytes + size
                    > _MAX_FEEDBACK_BYTES
                ):
                    break  # this packet starts the next feedback
                packets.append((seq & 0xFFFF, delta * _TICK_US))
                delta_bytes += size
                previous_ticks = ticks
                seq += 1
            feedback = TransportCcFeedback(
                self._sender_ssrc,
                self.media_ssrc,
                base & 0xFFFF,
                _signed24(reference),
                self._feedback_count,
                packets,
            )
            self._feedback_count = (self._feedback_count + 1) & 0xFF
            out.append(feedback.serialize())
        self._next_report = end + 1
        return out
