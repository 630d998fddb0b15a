"""Connection quality from loss, jitter and round trip (media/quality.py), on LiveKit's scale."""

from __future__ import annotations

import pytest

from mediafed.media.quality import Level, QualityScorer, StreamWindow, level_of, stream_score


def test_a_clean_stream_scores_full_and_each_impairment_costs() -> None:
    assert stream_score(StreamWindow("audio", 250, 0)) == 100.0
    # each percent of audio lost costs 8 points, of video 4 (NACK repairs video)
    assert stream_score(StreamWindow("audio", 100, 5)) == pytest.approx(60.0)
    assert stream_score(StreamWindow("video", 100, 5)) == pytest.approx(80.0)
    # delay: half the round trip plus twice the jitter; gently to 160 ms, steeply after
    assert stream_score(StreamWindow("audio", 100, 0, jitter_ms=10, rtt_ms=100)) == pytest.approx(
        100 - 70 / 40
    )
    assert stream_score(StreamWindow("audio", 100, 0, rtt_ms=600)) == pytest.approx(
        100 - (300 - 120) / 10
    )
    # never below 0, losses beyond what was expected are capped
    assert stream_score(StreamWindow("audio", 10, 50)) == 0.0


def test_levels_follow_the_score() -> None:
    assert [level_of(s) for s in (95, 80.5, 80, 41, 40, 0)] == [
        Level.EXCELLENT,
        Level.EXCELLENT,
        Level.GOOD,
        Level.GOOD,
        Level.POOR,
        Level.POOR,
    ]


def test_the_score_falls_fast_recovers_slowly_and_is_lost_without_a_transport() -> None:
    scorer = QualityScorer()
    assert scorer.quality.level is Level.EXCELLENT
    assert scorer.quality.mos == pytest.approx(4.5)
    scorer.update([StreamWindow("audio", 100, 5)], connected=True)
    assert scorer.quality.score == pytest.approx(0.7 * 60 + 0.3 * 100)  # 70% of the way down
    assert scorer.quality.level is Level.GOOD
    scorer.update([StreamWindow("audio", 100, 12)], connected=True)  # LiveKit: POOR for Opus
    assert scorer.quality.level is Level.POOR
    clean = [StreamWindow("audio", 100, 0), StreamWindow("video", 300, 0)]
    climbed = []
    for _ in range(6):
        scorer.update(clean, connected=True)
        climbed.append(scorer.quality.level)
    assert climbed[0] is not Level.EXCELLENT, "one good window does not hide a bad link"
    assert climbed[-1] is Level.EXCELLENT
    # the worst stream decides
    scorer.update([StreamWindow("video", 300, 0), StreamWindow("audio", 100, 30)], connected=True)
    assert scorer.quality.score < 80
    # no measurement, no change; no transport, lost
    before = scorer.quality.score
    scorer.update([], connected=True)
    assert scorer.quality.score == before
    scorer.update([], connected=False)
    assert scorer.quality.level is Level.LOST
    assert scorer.quality.mos == 1.0
