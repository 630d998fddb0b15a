"""Connection quality of a participant from loss, jitter and round-trip time (sans-I/O).

A simplified E-model (ITU-T G.107): each stream's window of statistics gives an
R score, 100 less the delay effect (half the round trip plus twice the jitter;
a quarter point per 10 ms up to 160 ms, a point per 10 ms beyond) and the loss
effect (each percent lost costs ``LOSS_WEIGHT`` points: audio suffers more
than video, which NACK repairs). The participant's score is the worst of its
streams, smoothed: it falls fast and recovers slowly, so one bad second is
seen and one good second does not hide a bad link. LiveKit clients get the
score on its three levels (R > 80 excellent, > 40 good, else poor) and as a
MOS; a participant whose transport is down is "lost".

Streams are what the participant sends us (our receive statistics) and what
we send it (its receiver reports, RFC 3550 §6.4, with the round trip from
LSR/DLSR).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

MAX_SCORE = 100.0
MIN_SCORE = 20.0
"""A floor, so a score recovers within seconds once the link does."""
FALL = 0.7
RISE = 0.4
LOSS_WEIGHT = {"audio": 8.0, "video": 4.0}


class Level(Enum):
    EXCELLENT = "excellent"
    GOOD = "good"
    POOR = "poor"
    LOST = "lost"


@dataclass(frozen=True, slots=True)
class StreamWindow:
    """One stream's statistics over the last window."""

    kind: str
    """"audio" or "video"."""
    expected: int
    lost: int
    jitter_ms: float = 0.0
    rtt_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class Quality:
    level: Level
    score: float
    """R, 0..100."""

    @property
    def mos(self) -> float:
        """The mean opinion score (1..4.5) of the R score, as G.107 maps it."""
        r = self.score
        if r <= 0:
            return 1.0
        if r >= 100:
            return 4.5
        return 1.0 + 0.035 * r + 0.000007 * r * (r - 60.0) * (100.0 - r)


def stream_score(window: StreamWindow) -> float:
    """The R score of one stream's window."""
    delay_ms = window.rtt_ms / 2.0 + window.jitter_ms * 2.0
    delay_effect = delay_ms / 40.0 if delay_ms <= 160.0 else (delay_ms - 120.0) / 10.0
    loss_effect = 0.0
    if window.expected > 0:
        loss_percent = 100.0 * max(0, min(window.lost, window.expected)) / window.expected
        loss_effect = loss_percent * LOSS_WEIGHT.get(window.kind, LOSS_WEIGHT["video"])
    return max(0.0, MAX_SCORE - delay_effect - loss_effect)


def level_of(score: float) -> Level:
    if score > 80.0:
        return Level.EXCELLENT
    if score > 40.0:
        return Level.GOOD
    return Level.POOR


class QualityScorer:
    """The smoothed score of one participant, updated once per window."""

    __slots__ = ("connected", "score")

    def __init__(self) -> None:
        self.score = MAX_SCORE
        self.connected = True

    def update(self, windows: list[StreamWindow], *, connected: bool) -> None:
        """A window passed; ``windows`` holds its streams that carried packets."""
        self.connected = connected
        if not connected or not windows:
            return  # nothing was measured: the score stands
        worst = min(stream_score(window) for window in windows)
        factor = FALL if worst < self.score else RISE
        self.score = max(MIN_SCORE, factor * worst + (1.0 - factor) * self.score)

    @property
    def quality(self) -> Quality:
        if not self.connected:
            return Quality(Level.LOST, 0.0)
        return Quality(level_of(self.score), self.score)
