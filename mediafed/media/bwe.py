"""Send-side bandwidth estimation for one subscriber's downlink (sans-I/O).

Every packet mediafed sends a subscriber carries a transport-wide sequence number
(draft-holmer-rmcat-transport-wide-cc-extensions-01); the subscriber's browser
reports when each arrived. From send and arrival times this module estimates
what the path carries, the way Google Congestion Control does
(draft-ietf-rmcat-gcc-02), in three parts:

- delay-based: packets are grouped by send bursts (5 ms); the change of one-way
  delay between groups is accumulated, smoothed and fitted with a line over the
  last 20 groups. A rising trend means queues build up (overuse): the rate drops
  to 85% of what was acknowledged. Otherwise the rate grows, by 8% a second
  while far from the last known capacity and by about one packet per round trip
  near it (AIMD);
- loss-based: more than 10% lost in a window cuts the rate by half the loss,
  though not below 85% of what arrived (losses of packets sent before a cut do
  not count again); under 2% lets it grow;
- probes: a short cluster of packets sent faster than the estimate (padding)
  is measured on arrival; if the path took it, the estimate jumps to what was
  delivered, so a subscriber can be moved up a layer in a second or two rather
  than the half minute multiplicative growth would take.

The estimate is the smaller of the delay-based and loss-based rates. Time is
always passed in (microseconds for packets, seconds for the estimator).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from enum import Enum

BURST_US = 5_000
"""Packets sent within this of a group's first are one group (a frame's packets)."""
TRENDLINE_WINDOW = 20
TRENDLINE_SMOOTHING = 0.9
THRESHOLD_GAIN = 4.0
OVERUSE_TIME_MS = 10.0
THRESHOLD_INITIAL_MS = 12.5
THRESHOLD_MIN_MS = 6.0
THRESHOLD_MAX_MS = 600.0
K_UP = 0.0087
K_DOWN = 0.039
BETA = 0.85
INCREASE_PER_S = 1.08
MIN_BPS = 50_000
MAX_BPS = 50_000_000
START_BPS = 1_000_000
"""Before any feedback: what the allocator may assume (corrected within a second)."""
ACKED_WINDOW_S = 0.5
LOSS_WINDOW_S = 1.0
LOSS_HIGH = 0.10
LOSS_LOW = 0.02
PROBE_MIN_PACKETS = 5
PROBE_MIN_SPAN_US = 5_000
PACKET_BITS = 1200 * 8


class Usage(Enum):
    NORMAL = "normal"
    OVERUSING = "overusing"
    UNDERUSING = "underusing"


@dataclass(frozen=True, slots=True)
class PacketResult:
    """One packet we sent and what the receiver said of it."""

    seq: int
    send_us: int
    size: int
    arrival_us: int | None
    """None: reported lost."""
    probe: int = -1
    """The probe cluster it belonged to, or -1."""


class _Group:
    __slots__ = ("arrival_us", "first_send_us", "send_us", "size")

    def __init__(self, send_us: int, arrival_us: int, size: int) -> None:
        self.first_send_us = send_us
        self.send_us = send_us
        self.arrival_us = arrival_us
        self.size = size


class DelayTrend:
    """Groups arrivals, fits the delay trend and detects overuse (GCC §5.2-5.4)."""

    def __init__(self) -> None:
        self._group: _Group | None = None
        self._previous: _Group | None = None
        self._accumulated_ms = 0.0
        self._smoothed_ms = 0.0
        self._points: deque[tuple[float, float]] = deque(maxlen=TRENDLINE_WINDOW)
        self._first_arrival_ms: float | None = None
        self._deltas = 0
        self.threshold_ms = THRESHOLD_INITIAL_MS
        self._last_threshold_at_ms: float | None = None
        self._overuse_ms = 0.0
        self._overuse_count = 0
        self._previous_trend = 0.0
        self.usage = Usage.NORMAL
        self.trend = 0.0

    def add(self, send_us: int, arrival_us: int, size: int) -> None:
        group = self._group
        if group is None:
            self._group = _Group(send_us, arrival_us, size)
            return
        if send_us < group.first_send_us:
            return  # reordered from an older group: ignored, as GCC does
        if send_us - group.first_send_us <= BURST_US:
            group.send_us = max(group.send_us, send_us)
            group.arrival_us = max(group.arrival_us, arrival_us)
            group.size += size
            return
        previous = self._previous
        if previous is not None:
            send_delta_ms = (group.send_us - previous.send_us) / 1000.0
            arrival_delta_ms = (group.arrival_us - previous.arrival_us) / 1000.0
            self._update(arrival_delta_ms - send_delta_ms, group.arrival_us / 1000.0)
        self._previous = group
        self._group = _Group(send_us, arrival_us, size)

    def _update(self, delay_variation_ms: float, arrival_ms: float) -> None:
        if self._first_arrival_ms is None:
            self._first_arrival_ms = arrival_ms
        self._deltas = min(self._deltas + 1, 1000)
        self._accumulated_ms += delay_variation_ms
        self._smoothed_ms = (
            TRENDLINE_SMOOTHING * self._smoothed_ms
            + (1 - TRENDLINE_SMOOTHING) * self._accumulated_ms
        )
        self._points.append((arrival_ms - self._first_arrival_ms, self._smoothed_ms))
        if len(self._points) == TRENDLINE_WINDOW:
            self.trend = _slope(self._points)
        self._detect(delay_variation_ms, arrival_ms)

    def _detect(self, delta_ms: float, now_ms: float) -> None:
        modified = min(self._deltas, 60) * self.trend * THRESHOLD_GAIN
        if modified > self.threshold_ms:
            self._overuse_ms += max(delta_ms, 0.0) if self._overuse_ms else delta_ms / 2
            self._overuse_count += 1
            if (
                self._overuse_ms > OVERUSE_TIME_MS
                and self._overuse_count > 1
                and self.trend >= self._previous_trend
            ):
                self._overuse_ms = 0.0
                self._overuse_count = 0
                self.usage = Usage.OVERUSING
        elif modified < -self.threshold_ms:
            self._overuse_ms = 0.0
            self._overuse_count = 0
            self.usage = Usage.UNDERUSING
        else:
            self._overuse_ms = 0.0
            self._overuse_count = 0
            self.usage = Usage.NORMAL
        self._previous_trend = self.trend
        self._adapt_threshold(modified, now_ms)

    def _adapt_threshold(self, modified: float, now_ms: float) -> None:
        last = self._last_threshold_at_ms
        self._last_threshold_at_ms = now_ms
        if last is None or abs(modified) > self.threshold_ms + 15.0:
            return  # the first sample, or a spike the threshold must not chase
        k = K_DOWN if abs(modified) < self.threshold_ms else K_UP
        elapsed = min(now_ms - last, 100.0)
        self.threshold_ms += k * (abs(modified) - self.threshold_ms) * elapsed
        self.threshold_ms = min(THRESHOLD_MAX_MS, max(THRESHOLD_MIN_MS, self.threshold_ms))


def _slope(points: deque[tuple[float, float]]) -> float:
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    numerator = sum((x - mean_x) * (y - mean_y) for x, y in points)
    denominator = sum((x - mean_x) ** 2 for x, _ in points)
    return numerator / denominator if denominator else 0.0


class BandwidthEstimator:
    """One subscriber's downlink estimate from its transport-cc feedback."""

    def __init__(self, start_bps: int = START_BPS) -> None:
        self.trend = DelayTrend()
        self.delay_bps = float(start_bps)
        self.loss_bps = float(start_bps)
        self._updated_at: float | None = None
        self._acked: deque[tuple[int, int]] = deque()  # (arrival_us, size)
        self._losses: deque[tuple[float, int, int]] = deque()  # (at, lost, total)
        self._link_bps: float | None = None
        """Where the last overuse happened: growth slows down near it."""
        self._rtt_s = 0.1
        self.loss_fraction = 0.0
        self._loss_decreased_at = -1.0
        self._newest_send_us = 0
        self._loss_cutoff_us = -1
        """Packets sent before the last loss-based decrease no longer count: their
        loss is what that decrease answered."""
        self.has_feedback = False

    @property
    def estimate_bps(self) -> int:
        return int(max(MIN_BPS, min(MAX_BPS, self.delay_bps, self.loss_bps)))

    def acked_bps(self) -> float | None:
        """What the receiver got over the last half second (None: too little to say)."""
        acked = self._acked
        if len(acked) < 2:
            return None
        span_us = acked[-1][0] - acked[0][0]
        if span_us < ACKED_WINDOW_S * 500_000:
            return None
        return sum(size for _, size in list(acked)[1:]) * 8 / (span_us / 1_000_000)

    def on_feedback(self, results: list[PacketResult], now: float, rtt_s: float = 0.0) -> None:
        if rtt_s > 0:
            self._rtt_s = rtt_s
        lost = 0
        received = sorted((r for r in results if r.arrival_us is not None), key=_arrival)
        for result in received:
            assert result.arrival_us is not None
            self.trend.add(result.send_us, result.arrival_us, result.size)
            self._acked.append((result.arrival_us, result.size))
        if results:
            self._newest_send_us = max(self._newest_send_us, max(r.send_us for r in results))
        counted = [r for r in results if r.send_us > self._loss_cutoff_us]
        lost = sum(1 for r in counted if r.arrival_us is None)
        if received:
            self.has_feedback = True
            newest = received[-1].arrival_us or 0
            while self._acked and self._acked[0][0] < newest - ACKED_WINDOW_S * 1_000_000:
                self._acked.popleft()
        self._losses.append((now, lost, len(counted)))
        while self._losses and self._losses[0][0] < now - LOSS_WINDOW_S:
            self._losses.popleft()
        elapsed = 0.0 if self._updated_at is None else min(now - self._updated_at, 1.0)
        self._update_delay_based(now)
        self._update_loss_based(now, elapsed)
        self._probe_results(results)

    def _update_delay_based(self, now: float) -> None:
        elapsed = 0.0 if self._updated_at is None else min(now - self._updated_at, 1.0)
        self._updated_at = now
        acked = self.acked_bps()
        usage = self.trend.usage
        if usage is Usage.OVERUSING:
            if acked is not None:
                target = BETA * acked
                if target < self.delay_bps:
                    self.delay_bps = target
                    self._link_bps = acked
            self.trend.usage = Usage.NORMAL  # one decrease per overuse signal
        elif usage is Usage.NORMAL:
            link = self._link_bps
            before = self.delay_bps
            if link is not None and 0.9 * link < before < 1.5 * link:
                # near the capacity seen last: one more packet per round trip
                increased = before + PACKET_BITS / (self._rtt_s + 0.1) * elapsed
            else:
                increased = before * math.pow(INCREASE_PER_S, elapsed)
            if acked is not None:
                # grow no further than 1.5 times what the path has shown it carries
                # (an estimate a probe raised higher is kept, not pulled down)
                increased = min(increased, max(before, 1.5 * acked + 10_000))
            self.delay_bps = increased
        self.delay_bps = min(MAX_BPS, max(MIN_BPS, self.delay_bps))

    def _update_loss_based(self, now: float, elapsed: float) -> None:
        total = sum(t for _, _, t in self._losses)
        lost = sum(n for _, n, _ in self._losses)
        if total == 0:
            return
        if total >= 20 or lost == 0:
            self.loss_fraction = lost / total
        if self.loss_fraction > LOSS_HIGH:
            if total < 20:
                return  # too few packets since the last decrease to judge it
            # at most once per round trip (and a bit): the next reports still show
            # the loss this decrease answers
            if now - self._loss_decreased_at > self._rtt_s + 0.3:
                self._loss_decreased_at = now
                self._loss_cutoff_us = self._newest_send_us
                self._losses.clear()
                cut = min(self.loss_bps, self.estimate_bps) * (1 - 0.5 * self.loss_fraction)
                # what arrived is what the path carries: a full queue's drops say
                # "no more than this", not "much less"
                acked = self.acked_bps()
                self.loss_bps = max(cut, BETA * acked) if acked is not None else cut
        elif self.loss_fraction < LOSS_LOW:
            grown = self.loss_bps * math.pow(INCREASE_PER_S, elapsed) + 1000 * elapsed
            self.loss_bps = min(max(grown, MIN_BPS), max(self.delay_bps, self.loss_bps))
        self.loss_bps = min(MAX_BPS, max(MIN_BPS, self.loss_bps))

    def _probe_results(self, results: list[PacketResult]) -> None:
        clusters: dict[int, list[PacketResult]] = {}
        for result in results:
            if result.probe >= 0:
                clusters.setdefault(result.probe, []).append(result)
        for packets in clusters.values():
            rate = probe_rate(packets)
            usable = rate is not None and self.trend.usage is not Usage.OVERUSING
            if usable and rate is not None and rate > self.delay_bps:
                self.delay_bps = min(MAX_BPS, 0.95 * rate)
                self.loss_bps = max(self.loss_bps, self.delay_bps)


def probe_rate(packets: list[PacketResult]) -> float | None:
    """What a probe cluster showed the path carries: the smaller of its send and
    receive rates (a path that took it all delivers it as fast as it was sent)."""
    arrived = sorted((p for p in packets if p.arrival_us is not None), key=_arrival)
    if len(arrived) < PROBE_MIN_PACKETS:
        return None
    sent = sorted(packets, key=lambda p: p.send_us)
    send_span = sent[-1].send_us - sent[0].send_us
    first, last = arrived[0].arrival_us or 0, arrived[-1].arrival_us or 0
    receive_span = last - first
    if send_span < PROBE_MIN_SPAN_US or receive_span <= 0:
        return None
    send_bps = sum(p.size for p in sent[:-1]) * 8 / (send_span / 1_000_000)
    receive_bps = sum(p.size for p in arrived[1:]) * 8 / (receive_span / 1_000_000)
    if len(arrived) < 0.8 * len(packets):
        return None  # the path dropped the probe: it says little but "too much"
    return min(send_bps, receive_bps)


def _arrival(result: PacketResult) -> int:
    return result.arrival_us or 0
