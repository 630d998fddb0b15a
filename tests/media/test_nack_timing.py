"""NACKs to a publisher are spaced by the round trip their repairs take.

libwebrtc retransmits a packet at most once per round trip: NACKs repeated
faster than that are ignored, and a relay that gives up after a few quick ones
never gets a lost retransmission back on a long path.
"""

from __future__ import annotations

from types import SimpleNamespace

from mediafed.media import layer as layer_module
from mediafed.media.layer import Layer
from mediafed.media.types import TrackKind


def _layer() -> Layer:
    track = SimpleNamespace(clock_rate=90000, kind=TrackKind.VIDEO, nack_enabled=True)
    return Layer(track, rid="q", quality=0)  # type: ignore[arg-type]


def test_retries_wait_for_the_round_trip_that_repairs_take() -> None:
    layer = _layer()
    now = 10.0
    # three losses, each repaired 150 ms after its first NACK: the relay learns the trip
    for first in (100, 200, 300):
        layer._note_missing(first, 1, now)
        assert layer.due_nacks(now) == [first]
        now += 0.15
        layer.missing.pop(first)  # the retransmission arrived
        layer.due_nacks(now)
    assert 0.14 < layer.repair_rtt_s < 0.16
    # a new loss: asked at once, then not again before 1.25 round trips
    layer._note_missing(400, 1, now)
    assert layer.due_nacks(now) == [400]
    assert layer.due_nacks(now + 0.1) == []
    assert layer.due_nacks(now + 0.2) == [400]
    # asked NACK_MAX_TRIES times in all, then given up
    sent, t = 2, now + 0.2
    while layer.due_nacks(t := t + 0.2):
        sent += 1
    assert sent == layer_module.NACK_MAX_TRIES
    assert 400 not in layer.missing and 400 not in layer.asked


def test_without_repairs_yet_retries_are_quick() -> None:
    layer = _layer()
    layer._note_missing(7, 1, 1.0)
    assert layer.due_nacks(1.0) == [7]
    assert layer.due_nacks(1.0 + layer_module.NACK_RETRY_S) == [7]


def test_a_repair_after_a_retry_does_not_stretch_the_spacing() -> None:
    """Karn's rule: which of two NACKs a retransmission answers is unknown, and timing
    it from the first would feed a longer spacing, then longer samples, and so on."""
    layer = _layer()
    now = 10.0
    layer._note_missing(100, 1, now)
    layer.due_nacks(now)
    layer.missing.pop(100)
    layer.due_nacks(now := now + 0.05)
    assert 0.04 < layer.repair_rtt_s < 0.06
    layer._note_missing(200, 1, now)
    assert layer.due_nacks(now) == [200]
    now += 0.1
    assert layer.due_nacks(now) == [200]  # the first was lost
    layer.missing.pop(200)  # repaired 0.3 s after the first NACK
    layer.due_nacks(now + 0.2)
    assert 0.04 < layer.repair_rtt_s < 0.06


def test_a_repair_is_timed_on_the_next_tick_even_with_nothing_else_missing() -> None:
    """The publisher's timer keeps asking the layer after its last repair: a sample
    taken only at the next loss, seconds later, would read as a long round trip."""
    layer = _layer()
    layer._note_missing(100, 1, 10.0)
    layer.due_nacks(10.0)
    layer.missing.pop(100)  # repaired: nothing missing any more
    assert layer.nack_pending
    layer.due_nacks(10.05)
    assert not layer.nack_pending
    assert 0.04 < layer.repair_rtt_s < 0.06
