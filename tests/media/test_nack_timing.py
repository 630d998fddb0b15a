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
    # unanswered a round trip on, later retries back off (Karn); asked
    # NACK_MAX_TRIES times in all, then given up
    sent, t = 2, now + 0.2
    while 400 in layer.missing:
        t += 0.05
        sent += len(layer.due_nacks(t))
    assert sent == layer_module.NACK_MAX_TRIES
    assert layer.nack_backoff == 2.0
    assert 400 not in layer.asked


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


def test_a_long_round_trip_is_learned_through_backoff_on_the_timer() -> None:
    """On the 50 ms timer a 150 ms trip is first retried before its repair comes (no
    sample, by Karn's rule); the first NACKs then wait longer, until a repair comes
    back unambiguous, and the trip is known."""
    layer = _layer()
    now, seq = 10.0, 100
    for _loss in range(6):
        layer._note_missing(seq, 1, now)
        asked_at = now
        while seq in layer.missing:
            layer.due_nacks(now)
            now = round(now + 0.05, 3)
            if now - asked_at >= 0.15:
                layer.missing.pop(seq)  # the first NACK's retransmission arrives
        layer.due_nacks(now)
        seq += 100
        now += 1.0
    assert 0.14 < layer.repair_rtt_s < 0.21
    assert layer.nack_backoff == 1.0


def test_retries_go_alone_so_a_refused_one_cannot_drop_new_losses() -> None:
    """libwebrtc drops the rest of a NACK's list at the first number it refuses (one it
    resent less than a round trip ago): first NACKs travel together, each retry alone."""
    from mediafed.media.peer import MediaPeer
    from mediafed.wire import rtcp

    layer = _layer()
    layer.ssrc = 1234
    layer._note_missing(50, 1, 1.0)
    layer.due_nacks(1.0)  # 50: asked once
    layer._note_missing(60, 2, 1.2)  # 60, 61: new
    due = layer.due_nacks(1.2)
    assert sorted(due) == [50, 60, 61]
    sent: list[bytes] = []
    peer = SimpleNamespace(local_ssrc=99, endpoint=SimpleNamespace(send_rtcp=sent.append))
    out: list[rtcp.RtcpPacket] = []
    MediaPeer._send_nacks(peer, layer, due, out)  # type: ignore[arg-type]
    assert [(p.media_ssrc, p.lost) for p in out] == [(1234, [60, 61])]
    [alone] = [rtcp.parse_rtcp(packet) for packet in sent]
    assert [(p.media_ssrc, p.lost) for p in alone] == [(1234, [50])]
