"""Transport-cc feedback generation (mediafed.wire.twcc), checked by parsing it back."""

from __future__ import annotations

import random

from hypothesis import given, settings, strategies as st

from mediafed.wire.rtcp import TransportCcFeedback, parse_rtcp
from mediafed.wire.twcc import TransportCcRecorder


def decode(
    packets: list[bytes],
) -> tuple[dict[int, list[int]], set[int], list[TransportCcFeedback]]:
    """Reconstruct arrival times per 16-bit sequence number from serialized feedback."""
    arrivals: dict[int, list[int]] = {}
    lost: set[int] = set()
    feedbacks = []
    for data in packets:
        assert len(data) <= 1200
        (fb,) = parse_rtcp(data)
        assert isinstance(fb, TransportCcFeedback)
        feedbacks.append(fb)
        time_us = fb.reference_time * 64_000
        for seq, delta in fb.packets:
            if delta is None:
                lost.add(seq)
            else:
                time_us += delta
                arrivals.setdefault(seq, []).append(time_us)
    return arrivals, lost, feedbacks


def test_losses_reordering_and_wrap_reconstruct_arrival_times() -> None:
    rng = random.Random(7)
    recorder = TransportCcRecorder(sender_ssrc=0x11, media_ssrc=0x22)
    sent = [(65500 + i) & 0xFFFF for i in range(200)]  # wraps past 65535
    dropped = {sent[i] for i in (3, 4, 5, 50, 120, 199 - 1)}
    order = [s for s in sent if s not in dropped]
    # swap some neighbours: reordering on the path
    for i in range(10, len(order) - 1, 17):
        order[i], order[i + 1] = order[i + 1], order[i]
    expected: dict[int, int] = {}
    now = 5_000_000_123
    for seq in order:
        now += rng.randrange(0, 3000)
        recorder.record(seq, now)
        expected[seq] = now
    packets = recorder.build_feedback(now)
    assert packets
    arrivals, lost, feedbacks = decode(packets)
    assert feedbacks[0].base_sequence == sent[0]
    assert (feedbacks[0].sender_ssrc, feedbacks[0].media_ssrc) == (0x11, 0x22)
    assert set(arrivals) == set(expected)
    for seq, times in arrivals.items():
        (time_us,) = times
        assert 0 <= expected[seq] - time_us < 250
    assert lost == dropped
    assert recorder.build_feedback(now + 100_000) == []


def test_duplicates_keep_first_arrival() -> None:
    recorder = TransportCcRecorder(1, media_ssrc=2)
    recorder.record(10, 1_000_000)
    recorder.record(11, 1_002_000)
    recorder.record(11, 1_009_000)
    arrivals, lost, _ = decode(recorder.build_feedback(1_010_000))
    assert arrivals == {10: [1_000_000], 11: [1_002_000]}
    assert not lost


def test_late_packet_reported_again() -> None:
    recorder = TransportCcRecorder(1, media_ssrc=2)
    recorder.record(1, 64_000)
    recorder.record(3, 65_000)
    first = decode(recorder.build_feedback(100_000))
    assert first[1] == {2}
    recorder.record(2, 70_000)  # arrives after it was reported lost
    recorder.record(4, 71_000)
    arrivals, lost, feedbacks = decode(recorder.build_feedback(200_000))
    assert feedbacks[0].base_sequence == 2
    assert arrivals[2] == [70_000] and arrivals[4] == [71_000]
    assert not lost


def test_feedback_count_increments_mod_256() -> None:
    recorder = TransportCcRecorder(1, media_ssrc=2)
    counts = []
    for i in range(300):
        recorder.record(i & 0xFFFF, 1_000_000 + i * 1000)
        (data,) = recorder.build_feedback(1_000_000 + i * 1000)
        (fb,) = parse_rtcp(data)
        assert isinstance(fb, TransportCcFeedback)
        counts.append(fb.feedback_count)
    assert counts == [i & 0xFF for i in range(300)]


def test_splits_large_feedback_under_1200_bytes() -> None:
    recorder = TransportCcRecorder(1, media_ssrc=2)
    now = 10_000_000
    for seq in range(3000):
        now += 70_000 if seq % 2 else 250  # alternate large and small deltas
        recorder.record(seq, now)
    packets = recorder.build_feedback(now)
    assert len(packets) > 1
    arrivals, lost, feedbacks = decode(packets)
    assert not lost
    assert len(arrivals) == 3000
    # consecutive, non-overlapping coverage
    covered = [seq for fb in feedbacks for seq, _ in fb.packets]
    assert covered == list(range(3000))


def test_splits_when_delta_exceeds_16_bits() -> None:
    recorder = TransportCcRecorder(1, media_ssrc=2)
    recorder.record(0, 1_000_000)
    recorder.record(1, 1_000_000 + 20_000_000)  # 20 s later: beyond +-8.19 s
    packets = recorder.build_feedback(30_000_000)
    assert len(packets) == 2
    arrivals, _, _ = decode(packets)
    assert arrivals == {0: [1_000_000], 1: [21_000_000]}


@settings(max_examples=60, deadline=None)
@given(
    events=st.lists(
        st.tuples(st.integers(-10, 40), st.integers(-3000, 30_000), st.booleans()),
        min_size=1,
        max_size=150,
    ),
    start=st.integers(0, 0xFFFF),
    batches=st.integers(1, 5),
)
def test_property_every_arrival_reported(
    events: list[tuple[int, int, bool]], start: int, batches: int
) -> None:
    """Jumps back and forth, jitter, duplicates: each arrival is reported within 250 us."""
    recorder = TransportCcRecorder(1, media_ssrc=2)
    first_arrival: dict[int, int] = {}
    now = 1_000_000_000
    seq = start
    split = max(1, len(events) // batches)
    packets: list[bytes] = []
    for i, (jump, jitter, duplicate) in enumerate(events):
        seq = (seq + jump) & 0xFFFF
        arrival = now + jitter
        now += 1000
        recorder.record(seq, arrival)
        first_arrival.setdefault(seq, arrival)
        if duplicate:
            recorder.record(seq, arrival + 500)
        if (i + 1) % split == 0:
            packets += recorder.build_feedback(now)
    packets += recorder.build_feedback(now)
    arrivals, _, _ = decode(packets)
    assert set(arrivals) == set(first_arrival)
    for s, times in arrivals.items():
        assert all(0 <= first_arrival[s] - t < 250 for t in times)


def test_duplicate_of_reported_packet_is_not_reported_again() -> None:
    recorder = TransportCcRecorder(1, media_ssrc=2)
    recorder.record(1, 1_000_000)
    recorder.record(2, 1_001_000)
    assert recorder.build_feedback(1_100_000)
    recorder.record(2, 1_150_000)  # duplicate after its feedback went out
    assert recorder.build_feedback(1_200_000) == []
    recorder.record(3, 1_210_000)
    _, _, feedbacks = decode(recorder.build_feedback(1_300_000))
    assert [fb.base_sequence for fb in feedbacks] == [3]
    assert [seq for seq, _ in feedbacks[0].packets] == [3]


def test_feedback_waits_for_a_media_ssrc_and_then_reports_what_arrived_before() -> None:
    """libwebrtc drops feedback whose media SSRC is not one of its own (0 included)."""
    recorder = TransportCcRecorder(1)
    recorder.record(100, 1_000_000)
    recorder.record(101, 1_001_000)
    assert recorder.build_feedback(1_050_000) == []
    recorder.media_ssrc = 0xCAFE
    arrivals, lost, feedbacks = decode(recorder.build_feedback(1_100_000))
    assert set(arrivals) == {100, 101}
    assert not lost
    assert [fb.media_ssrc for fb in feedbacks] == [0xCAFE]
