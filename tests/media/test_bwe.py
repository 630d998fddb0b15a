"""Send-side bandwidth estimation (media/bwe.py) against a simulated bottleneck link.

The link is a FIFO queue drained at a capacity in bits per second, with a fixed
propagation delay and a queue limit (tail drop), as a home router's uplink or
a congested Wi-Fi hop behaves. The sender sends at the estimate (as an SFU that
fills what it is allowed with media) and the receiver reports arrivals every 50 ms.
"""

from __future__ import annotations

import random

from mediafed.media.bwe import (
    MIN_BPS,
    BandwidthEstimator,
    PacketResult,
    Usage,
    probe_rate,
)

PACKET = 1200


class Link:
    """A bottleneck: arrivals of packets sent at given times, or None when dropped."""

    def __init__(self, capacity_bps: float, delay_us: int = 20_000, queue_ms: float = 300):
        self.capacity_bps = capacity_bps
        self.delay_us = delay_us
        self.queue_ms = queue_ms
        self._free_at_us = 0.0

    def send(self, send_us: int, size: int, rng: random.Random, loss: float = 0.0) -> int | None:
        start = max(float(send_us), self._free_at_us)
        if start - send_us > self.queue_ms * 1000:
            return None  # the queue is full: tail drop
        if loss and rng.random() < loss:
            return None
        self._free_at_us = start + size * 8 / self.capacity_bps * 1_000_000
        return int(self._free_at_us) + self.delay_us


def run(
    link: Link,
    seconds: float,
    estimator: BandwidthEstimator,
    *,
    start_s: float = 0.0,
    loss: float = 0.0,
    rate_of: object = None,
) -> list[tuple[float, int]]:
    """Send at the estimate for ``seconds``; the estimate every 50 ms."""
    rng = random.Random(3)
    now_us = int(start_s * 1_000_000)
    seq = 0
    pending: list[PacketResult] = []
    history = []
    next_report = now_us + 50_000
    end = now_us + int(seconds * 1_000_000)
    while now_us < end:
        rate = estimator.estimate_bps if rate_of is None else rate_of(now_us)  # type: ignore[operator]
        arrival = link.send(now_us, PACKET, rng, loss)
        pending.append(PacketResult(seq, now_us, PACKET, arrival))
        seq += 1
        now_us += int(PACKET * 8 / rate * 1_000_000)
        if now_us >= next_report:
            # the receiver reports what arrived by now (and, as lost, what never will)
            due = [p for p in pending if p.arrival_us is None or p.arrival_us <= now_us]
            pending = [p for p in pending if p not in due]
            estimator.on_feedback(due, now_us / 1_000_000, rtt_s=2 * link.delay_us / 1e6)
            history.append((now_us / 1_000_000, estimator.estimate_bps))
            next_report += 50_000
    return history


def test_the_estimate_settles_under_a_bottleneck_and_grows_when_it_widens() -> None:
    link = Link(2_000_000)
    estimator = BandwidthEstimator(start_bps=3_000_000)  # starts too high
    history = run(link, 20, estimator)
    settled = [bps for t, bps in history if t > 10]
    assert max(settled) < 2_600_000, "overuse is seen and the rate comes down"
    assert sum(settled) / len(settled) > 1_200_000, "and it keeps using most of the link"
    # the link widens (a congested hop clears): the estimate climbs, by itself
    link.capacity_bps = 6_000_000
    history = run(link, 30, estimator, start_s=20)
    assert history[-1][1] > 3_500_000, history[-20:]


def test_a_narrow_link_pulls_a_high_estimate_down_within_seconds() -> None:
    """A subscriber link capped at 300 kbit/s, the estimate at 1.5 Mbit/s at first."""
    link = Link(300_000, queue_ms=400)
    estimator = BandwidthEstimator(start_bps=1_500_000)
    history = run(link, 10, estimator)
    after = [bps for t, bps in history if t >= 2.0]
    assert max(after) < 450_000, history[:60]
    assert min(after) > 150_000, "it settles near the link, not at the floor"
    assert MIN_BPS < 150_000


def test_heavy_random_loss_brings_the_estimate_down() -> None:
    link = Link(20_000_000)  # no queue: only loss speaks
    clean = BandwidthEstimator(start_bps=1_000_000)
    lossy = BandwidthEstimator(start_bps=1_000_000)
    fixed = 1_000_000.0
    run(link, 5, clean, rate_of=lambda _us: fixed)
    run(Link(20_000_000), 5, lossy, loss=0.25, rate_of=lambda _us: fixed)
    assert lossy.loss_fraction > 0.2
    assert clean.loss_fraction < 0.01
    assert lossy.estimate_bps < 0.7 * clean.estimate_bps


def test_a_probe_cluster_measures_what_the_path_delivers() -> None:
    rng = random.Random(1)
    for capacity, sent_at, expected in (
        (5_000_000, 2_000_000, 2_000_000),
        (1_000_000, 3_000_000, 1_000_000),
    ):
        link = Link(capacity)
        gap = int(PACKET * 8 / sent_at * 1_000_000)
        packets = [
            PacketResult(
                i, 1_000_000 + i * gap, PACKET, link.send(1_000_000 + i * gap, PACKET, rng), 7
            )
            for i in range(20)
        ]
        rate = probe_rate(packets)
        assert rate is not None
        assert abs(rate - expected) < 0.1 * expected, (capacity, sent_at, rate)
    # too few packets arrived: no verdict
    few = [PacketResult(i, i * 1000, PACKET, None if i > 2 else i * 1000 + 5, 1) for i in range(10)]
    assert probe_rate(few) is None


def test_a_probe_lifts_a_low_estimate_at_once() -> None:
    estimator = BandwidthEstimator(start_bps=300_000)
    link = Link(5_000_000)
    rng = random.Random(2)
    gap = int(PACKET * 8 / 2_500_000 * 1_000_000)
    probe = [
        PacketResult(i, 100_000 + i * gap, PACKET, link.send(100_000 + i * gap, PACKET, rng), 1)
        for i in range(30)
    ]
    estimator.on_feedback(probe, 0.2)
    assert estimator.estimate_bps > 2_000_000
    assert estimator.trend.usage is not Usage.OVERUSING
