"""Bandwidth probes toward one subscriber: paced padding the estimator measures.

To learn whether a subscriber's link carries a better simulcast layer before
moving it there, mediafed sends a short cluster of padding-only RTX packets
(RFC 4588 streams libwebrtc accepts padding on; RFC 3550 §5.1 padding) at the
rate the better layer needs, paced in slots of a few milliseconds so no queue
builds unless the link is too narrow. Each carries a transport-wide sequence
number; the subscriber's feedback tells how fast the cluster arrived
(media/bwe.py ``probe_rate``). Sans-I/O: :meth:`Probe.due` says what to send
now, the caller sends it and asks again at :attr:`Probe.next_at`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

PADDING_BYTES = 255
"""The most RFC 3550 padding one packet carries (its last byte is the count)."""
SLOT_S = 0.005
DURATION_S = 0.1
MIN_PACKETS = 8
PROBE_INTERVAL_S = 3.0
"""At most one probe this often per subscriber (each costs a burst of padding)."""
PROBE_BACKOFF_MAX_S = 8.0
"""The longest wait between probes on a link that refused the last ones."""

_HEADER = struct.Struct("!BBHII")
_EXTENSION = struct.Struct("!HHBHx")  # 0xBEDE, one word, (id << 4 | 1), twcc value, pad


@dataclass(frozen=True, slots=True)
class PaddingStream:
    """Where padding goes: an RTX stream of one video DownTrack."""

    payload_type: int
    ssrc: int
    twcc_id: int


class Probe:
    """One cluster: ``rate_bps`` for DURATION_S, in slots of SLOT_S."""

    def __init__(self, cluster: int, rate_bps: float, start: float) -> None:
        self.cluster = cluster
        self.rate_bps = rate_bps
        self.start = start
        self.next_at = start
        per_packet = _HEADER.size + _EXTENSION.size + PADDING_BYTES
        self.total = max(MIN_PACKETS, int(rate_bps * DURATION_S / 8 / per_packet))
        self.sent = 0

    @property
    def done(self) -> bool:
        return self.sent >= self.total

    def due(self, now: float) -> int:
        """How many packets to send now (the pace the rate asks, caught up if late)."""
        if self.done or now < self.next_at:
            return 0
        elapsed = now - self.start + SLOT_S
        owed = min(self.total, int(self.total * min(1.0, elapsed / DURATION_S)))
        count = max(1, owed - self.sent)
        count = min(count, self.total - self.sent)
        self.sent += count
        self.next_at = now + SLOT_S
        return count


def padding_packet(stream: PaddingStream, seq: int, timestamp: int) -> bytes:
    """A padding-only RTP packet on ``stream``: header, the transport-wide extension
    (its value is the send target's to write), then 255 bytes of padding."""
    header = _HEADER.pack(
        0x80 | 0x20 | 0x10, stream.payload_type & 0x7F, seq & 0xFFFF, timestamp, stream.ssrc
    )
    extension = _EXTENSION.pack(0xBEDE, 1, (stream.twcc_id << 4) | 1, 0)
    padding = bytes(PADDING_BYTES - 1) + bytes([PADDING_BYTES])
    return header + extension + padding
