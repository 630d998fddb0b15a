"""Receive counters of the load subscribers: loss per RFC 3550 A.3, latency percentiles."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from loadtest.report import markdown, ratio_summary, ratios, table, to_json
from loadtest.rtp import RtpSender
from loadtest.runner import FIELDS, RunError, plan_clients
from loadtest.stats import (
    ReceiverStats,
    SsrcCounter,
    loss_fraction,
    percentiles_ms,
    window_loss,
)


def _count(seqs: list[int]) -> SsrcCounter:
    counter = SsrcCounter(seqs[0])
    for seq in seqs:
        counter.add(seq, 100)
    return counter


def test_gaps_count_as_loss() -> None:
    counter = _count([s for s in range(10) if s not in (3, 7)])
    assert (counter.expected, counter.packets, counter.lost) == (10, 8, 2)
    assert counter.bytes == 800


def test_sequence_wrap_is_extended() -> None:
    seqs = [s & 0xFFFF for s in range(65530, 65536 + 6) if s != 65537]
    counter = _count(seqs)
    assert (counter.expected, counter.lost) == (12, 1)


def test_reordering_is_not_loss() -> None:
    counter = _count([100, 102, 101, 103])
    assert counter.lost == 0
    late_first = _count([50, 49, 51])  # an older packet arrives after the first one
    assert (late_first.expected, late_first.lost) == (3, 0)


def test_receiver_stats_per_ssrc_and_latency() -> None:
    stats = ReceiverStats("s1", join_started_s=10.0)
    audio = RtpSender(ssrc=1, payload_type=111, clock_rate=48_000, mid="0")
    video = RtpSender(ssrc=2, payload_type=96, clock_rate=90_000, mid="1")
    for i in range(5):
        sent_ns = 10_000_000_000 + i * 20_000_000
        # Time to first media from the monotonic clock; latency from the arrival stamp.
        audio_packet = audio.build(b"a", i * 960, False, sent_ns)
        stats.on_rtp(audio_packet, sent_ns + 1_000_000, sent_ns, sent_ns + 1_000_000)
        packet = video.build(b"v", i * 3000, True, sent_ns)
        if i != 2:
            stats.on_rtp(packet, 0, sent_ns, sent_ns + 3_000_000)
    assert set(stats.ssrcs) == {1, 2}
    assert (stats.packets, stats.expected, stats.lost) == (9, 10, 1)
    assert stats.time_to_first_media_s == pytest.approx(0.001)
    assert sorted(set(stats.latency_ns)) == [1_000_000, 3_000_000]


def test_window_loss_uses_only_the_window() -> None:
    stats = ReceiverStats("s")
    sender = RtpSender(ssrc=9, payload_type=96, clock_rate=90_000, mid="0")
    packets = [sender.build(b"x", 0, False, 0) for _ in range(20)]
    for p in packets[:5] + packets[6:10]:  # one loss before the window
        stats.on_rtp(p, 0, None, 0)
    before = stats.snapshot()
    for p in packets[10:15] + packets[16:20]:  # one loss in a window of ten
        stats.on_rtp(p, 0, None, 0)
    assert window_loss(before, stats.snapshot()) == pytest.approx(0.1)
    assert loss_fraction(0, 0) == 0.0


def test_percentiles_in_milliseconds() -> None:
    samples = np.arange(1, 101) * 1_000_000  # 1..100 ms
    result = percentiles_ms(samples)
    assert result["p50"] == pytest.approx(50.5)
    assert result["p99"] == pytest.approx(np.percentile(np.arange(1, 101), 99))
    assert result["max"] == pytest.approx(100.0)
    assert percentiles_ms([]) == {"p50": None, "p95": None, "p99": None, "max": None}


def test_scenario_plans() -> None:
    live = plan_clients("livestream", 4)
    assert [p.name for p in live if p.publish] == ["host"]
    assert sum(p.subscribe for p in live) == 4
    meeting = plan_clients("meeting", 3)
    assert all(p.publish == ("microphone", "camera") and p.subscribe for p in meeting)
    screen = plan_clients("screenshare", 2)
    assert screen[0].publish == ("microphone", "camera", "screen_share")
    assert all(p.publish == ("microphone",) for p in plan_clients("audio", 2))
    panel = plan_clients("listeners", 50)
    assert [p.publish for p in panel[:3]] == [("microphone",)] * 3  # speakers hear each other
    assert len(panel) == 53 and all(p.subscribe for p in panel)
    assert not any(p.publish for p in panel[3:])
    with pytest.raises(RunError, match="unknown scenario"):
        plan_clients("party", 2)


def test_report_lists_every_field() -> None:
    from loadtest.runner import TargetResult

    result = TargetResult(
        target="janus",
        scenario="livestream",
        n=2,
        publishers=1,
        subscribers=2,
        window_s=2.0,
        sent_packets=200,
        forwarded_packets=400,
        forwarded_pps=200.0,
        forwarded_bps=1e6,
        server_cpu_s=0.02,
        server_cpu_percent=1.0,
        cpu_us_per_packet=50.0,
        cpu_us_per_packet_schedstat=49.0,
        loss_mean=0.0,
        loss_max=0.0,
        loss_total=0.0,
        latency_ms={"p50": 0.4, "p95": 0.6, "p99": 0.9},
        latency_samples=400,
        rss_baseline_kb=1000,
        rss_joined_kb=3000,
        rss_end_kb=3000,
        rss_per_subscriber_kb=1000.0,
        time_to_first_media_ms={"p50": 40.0, "max": 50.0},
        subscribers_without_media=0,
        loss_per_subscriber={"v0": 0.0, "v1": 0.0},
    )
    mediafed = TargetResult(**{**to_json([result], {})["results"][0], "target": "mediafed"})
    mediafed.cpu_us_per_packet = 20.0
    report = to_json([result, mediafed], {"scenario": "livestream"})
    assert set(report["results"][0]) == set(FIELDS)
    assert report["ratios"] == [
        {
            "target": "mediafed",
            "baseline": "janus",
            "scenario": "livestream",
            "video": "",
            "n": 2,
            "round": 0,
            "cpu_per_packet_ratio": 0.4,
        }
    ]
    lines = table([result, mediafed]).splitlines()
    assert len(lines) == 4 and "CPU us/pkt" in lines[0] and "50.0" in lines[2]
    # A second round pairs within itself; the summary gives each ratio and their median.
    janus2 = TargetResult(**{**asdict(result), "round": 1, "cpu_us_per_packet": 25.0})
    mediafed2 = TargetResult(**{**asdict(mediafed), "round": 1, "cpu_us_per_packet": 15.0})
    mediafed3 = TargetResult(**{**asdict(mediafed), "round": 2, "cpu_us_per_packet": 15.0})
    rows = [result, mediafed, janus2, mediafed2, mediafed3]  # round 2 has no Janus: no ratio
    assert [r["cpu_per_packet_ratio"] for r in ratios(rows)] == [0.4, 0.6]
    assert ratio_summary(rows) == (
        "CPU per packet mediafed/janus, livestream N=2: 0.40 0.60 (median 0.50)"
    )
    # LiveKit is a second baseline: mediafed against both, LiveKit against Janus once.
    livekit = TargetResult(**{**asdict(result), "target": "livekit", "cpu_us_per_packet": 40.0})
    rows = [result, livekit, mediafed]
    assert [(r["target"], r["baseline"], r["cpu_per_packet_ratio"]) for r in ratios(rows)] == [
        ("livekit", "janus", 0.8),
        ("mediafed", "janus", 0.4),
        ("mediafed", "livekit", 0.5),
    ]
    tables = markdown(rows)
    assert tables.startswith("livestream\n")
    assert (
        "| 2 | mediafed | 200 | 20.0 | vs janus: 0.40 (0.40); vs livekit: 0.50 (0.50) |" in tables
    )


def test_saved_reports_render_again(tmp_path: Path) -> None:
    from loadtest.report import from_json, main, write_json
    from loadtest.runner import TargetResult

    base = TargetResult(
        target="janus", scenario="meeting", n=6, publishers=6, subscribers=6, window_s=10.0,
        sent_packets=1000, forwarded_packets=5000, forwarded_pps=500.0, forwarded_bps=4e6,
        server_cpu_s=0.2, server_cpu_percent=2.0, cpu_us_per_packet=40.0,
        cpu_us_per_packet_schedstat=40.0, loss_mean=0.0, loss_max=0.0, loss_total=0.0,
        latency_ms={"p50": 0.2, "p95": 0.4, "p99": 0.5, "max": 3.0}, latency_samples=5000,
        rss_baseline_kb=30_000, rss_joined_kb=36_000, rss_end_kb=36_000,
        rss_per_subscriber_kb=1000.0, time_to_first_media_ms={"p50": 80.0, "max": 90.0},
        subscribers_without_media=0,
    )  # fmt: skip
    runs = [
        base,
        TargetResult(**{**asdict(base), "target": "livekit", "cpu_us_per_packet": 30.0}),
        TargetResult(**{**asdict(base), "target": "mediafed", "cpu_us_per_packet": 10.0}),
    ]
    saved = tmp_path / "meeting.json"
    write_json(saved, runs, {"scenario": "meeting"})
    assert [asdict(r) for r in from_json([saved])] == [asdict(r) for r in runs]
    out = tmp_path / "tables.md"
    assert main([str(saved), "--markdown", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("meeting\n")
    assert "| 6 | mediafed | 500 | 10.0 | vs janus: 0.25 (0.25); vs livekit: 0.33 (0.33) |" in text
    assert "| 0.20 / 0.50 / 3.0 | 1000 KB | 29 MB | 80 ms |" in text
