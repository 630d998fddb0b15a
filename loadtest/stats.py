"""Receive-side counters of the load-test subscribers: packets, bytes, loss, latency.

Loss follows RFC 3550 appendix A.3: expected packets come from the extended
highest sequence number minus the first one seen, so a gap counts as loss and
a duplicate does not hide one. Latency samples are arrival time minus the send
time the publisher put in the payload trailer (one shared CLOCK_MONOTONIC).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SEQ = struct.Struct("!H")
SSRC = struct.Struct("!I")

MAX_LATENCY_SAMPLES = 200_000


class SsrcCounter:
    """Sequence accounting for one incoming SSRC."""

    __slots__ = ("base_ext_seq", "bytes", "max_ext_seq", "packets")

    def __init__(self, seq: int) -> None:
        self.base_ext_seq = seq
        self.max_ext_seq = seq
        self.packets = 0
        self.bytes = 0

    def add(self, seq: int, size: int) -> None:
        # Extend the 16-bit sequence number around max_ext_seq (RFC 3550 A.1).
        delta = (seq - self.max_ext_seq) & 0xFFFF
        if delta < 0x8000:
            self.max_ext_seq += delta
        else:
            ext = self.max_ext_seq - (0x10000 - delta)
            self.base_ext_seq = min(self.base_ext_seq, ext)
        self.packets += 1
        self.bytes += size

    @property
    def expected(self) -> int:
        return self.max_ext_seq - self.base_ext_seq + 1

    @property
    def lost(self) -> int:
        return max(0, self.expected - self.packets)


@dataclass(slots=True)
class ReceiverStats:
    """Everything one subscriber counted. Picklable, so workers send it back whole."""

    name: str
    ssrcs: dict[int, SsrcCounter] = field(default_factory=dict)
    latency_ns: list[int] = field(default_factory=list)
    join_started_s: float = 0.0
    first_media_s: float | None = None

    def on_rtp(self, packet: bytes, now_ns: int, send_time_ns: int | None, arrival_ns: int) -> None:
        """One packet: ``now_ns`` is monotonic (time to first media); latency is
        ``arrival_ns - send_time_ns``, both ``time.time_ns()`` clocks."""
        ssrc = SSRC.unpack_from(packet, 8)[0]
        seq = SEQ.unpack_from(packet, 2)[0]
        counter = self.ssrcs.get(ssrc)
        if counter is None:
            counter = self.ssrcs[ssrc] = SsrcCounter(seq)
            if self.first_media_s is None:
                self.first_media_s = now_ns / 1e9
        counter.add(seq, len(packet))
        if send_time_ns is not None and len(self.latency_ns) < MAX_LATENCY_SAMPLES:
            self.latency_ns.append(arrival_ns - send_time_ns)

    @property
    def packets(self) -> int:
        return sum(c.packets for c in self.ssrcs.values())

    @property
    def bytes(self) -> int:
        return sum(c.bytes for c in self.ssrcs.values())

    @property
    def expected(self) -> int:
        return sum(c.expected for c in self.ssrcs.values())

    @property
    def lost(self) -> int:
        return sum(c.lost for c in self.ssrcs.values())

    @property
    def time_to_first_media_s(self) -> float | None:
        if self.first_media_s is None:
            return None
        return self.first_media_s - self.join_started_s

    def snapshot(self) -> ReceiverSnapshot:
        return ReceiverSnapshot(
            name=self.name,
            packets=self.packets,
            bytes=self.bytes,
            expected=self.expected,
            lost=self.lost,
            latency_count=len(self.latency_ns),
            time_to_first_media_s=self.time_to_first_media_s,
        )


@dataclass(frozen=True, slots=True)
class ReceiverSnapshot:
    """Counters of one subscriber at one instant; two of them give a window."""

    name: str
    packets: int
    bytes: int
    expected: int
    lost: int
    latency_count: int
    time_to_first_media_s: float | None


def loss_fraction(received: int, expected: int) -> float:
    """Lost share of the expected packets (0.0 when nothing was expected)."""
    if expected <= 0:
        return 0.0
    return max(0, expected - received) / expected


def window_loss(before: ReceiverSnapshot, after: ReceiverSnapshot) -> float:
    return loss_fraction(after.packets - before.packets, after.expected - before.expected)


def percentiles_ms(samples_ns: list[int] | np.ndarray[Any, Any]) -> dict[str, float | None]:
    """p50/p95/p99 and the maximum of latency samples in milliseconds (None without samples)."""
    data = np.asarray(samples_ns, dtype=np.float64)
    if data.size == 0:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    p50, p95, p99 = np.percentile(data, [50, 95, 99]) / 1e6
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "max": float(data.max() / 1e6)}
