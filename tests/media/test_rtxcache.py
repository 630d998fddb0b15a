"""The retransmission cache serves recent packets and lets old ones go."""

from __future__ import annotations

import pytest

from mediafed.media.rtxcache import RetransmissionCache


def held(cache: RetransmissionCache) -> int:
    return cache.held()


def test_serves_recent_packets_by_sequence_and_refuses_old_or_overwritten() -> None:
    cache = RetransmissionCache(size=8, max_age_s=1.0)
    for seq in range(65530, 65536):
        cache.put(seq, bytes([seq & 0xFF]), now=10.0)
    assert cache.get(65533, now=10.5) == bytes([65533 & 0xFF])
    assert cache.get(65533, now=11.5) is None  # too late to help a jitter buffer
    assert cache.expired(65533, now=11.5) and not cache.expired(65533, now=10.5)
    assert not cache.expired(7, now=11.5)  # never held: its publisher may still resend it
    cache.put(2, b"new", now=10.6)  # 2 & 7 == 65530 & 7: the slot is reused
    assert cache.get(65530, now=10.6) is None
    assert cache.get(2, now=10.6) == b"new"
    with pytest.raises(ValueError):
        RetransmissionCache(size=100)


def test_trim_keeps_about_max_age_of_packets() -> None:
    # A 60 packet/s stream for 10 s into a 1024-slot ring: without trimming the
    # ring would hold 600 packets; trimmed every 50 ms it holds about one second.
    cache = RetransmissionCache(size=1024, max_age_s=1.0)
    now = 0.0
    seq = 60000
    for step in range(600):
        now = step / 60
        cache.put(seq & 0xFFFF, b"x" * 1000, now)
        seq += 1
        if step % 3 == 0:
            cache.trim(now)
    cache.trim(now)
    assert 55 <= held(cache) <= 61
    newest = (seq - 1) & 0xFFFF
    assert cache.get(newest, now) is not None
    assert cache.get((newest - 59) & 0xFFFF, now) is not None
    assert cache.get((newest - 70) & 0xFFFF, now) is None


def test_trim_walks_past_gaps_and_a_stopped_stream() -> None:
    cache = RetransmissionCache(size=16, max_age_s=1.0)
    for seq in (1, 2, 5, 9):  # losses leave empty slots between
        cache.put(seq, b"p", now=0.0)
    cache.put(3, b"late", now=0.9)  # reordered: arrives later than its neighbours
    # The scan stops at the first packet young enough to keep; what lies beyond a
    # late packet waits at most max_age_s longer.
    assert cache.trim(now=1.5) == 2
    assert cache.get(3, now=1.5) == b"late"
    assert cache.trim(now=2.0) == 3
    cache.put(10, b"p", now=2.0)
    assert cache.trim(now=5.0) == 1  # the stream stopped: everything goes
    assert held(cache) == 0
    assert cache.trim(now=5.0) == 0  # and a pass over an empty ring is harmless
    cache.put(4, b"again", now=6.0)
    cache.clear()
    assert cache.get(4, now=6.0) is None and cache.trim(now=6.0) == 0
