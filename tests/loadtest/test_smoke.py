"""Smoke runs of the load-test tool against real servers on loopback: Janus, LiveKit, mediafed.

Speed is never asserted: only that the tool runs, every subscriber received
media with little loss, and the JSON report carries every field.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loadtest.gopeers import LIVEKIT_SERVER, missing_message
from loadtest.runner import FIELDS

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _run(tmp_path: Path, scenario: str, n: int, target: str) -> dict[str, object]:
    if target == "livekit":
        # Built by scripts/install-test-deps (scripts/test runs it first): fail, never skip.
        assert LIVEKIT_SERVER.binary.exists(), missing_message(LIVEKIT_SERVER)
    out = tmp_path / "report.json"
    cmd = [
        sys.executable, "-m", "loadtest", "--scenario", scenario, "-n", str(n),
        "--duration", "3", "--warmup", "0.5", "--target", target, "--json", str(out),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "CPU us/pkt" in proc.stdout
    report: dict[str, object] = json.loads(out.read_text())
    return report


@pytest.mark.parametrize("target", ["janus", "livekit", "mediafed"])
@pytest.mark.parametrize(
    ("scenario", "n", "subscribers"), [("livestream", 3, 3), ("meeting", 3, 3)]
)
def test_run_moves_media_to_every_subscriber(
    tmp_path: Path, target: str, scenario: str, n: int, subscribers: int
) -> None:
    report = _run(tmp_path, scenario, n, target)
    results = report["results"]
    assert isinstance(results, list) and len(results) == 1
    result = results[0]
    assert set(result) == set(FIELDS)
    assert result["target"] == target
    assert result["subscribers"] == subscribers
    assert result["subscribers_without_media"] == 0
    assert result["forwarded_packets"] > 0
    assert result["cpu_us_per_packet"] is not None and result["cpu_us_per_packet"] > 0
    assert result["cpu_us_per_packet_schedstat"] > 0
    assert result["rss_end_kb"] > 0
    losses = result["loss_per_subscriber"]
    assert len(losses) == subscribers
    assert all(loss < 0.05 for loss in losses.values()), losses
    assert result["latency_samples"] > 0
    assert all(result["latency_ms"][p] is not None for p in ("p50", "p95", "p99", "max"))
    # Kernel arrival stamps and send stamps share one clock: never negative, never absurd.
    assert 0 < result["latency_ms"]["p50"] <= result["latency_ms"]["p99"] < 1000
    assert result["time_to_first_media_ms"]["p50"] is not None
    assert result["client_cpu_percent"] > 0
    # Clients offer what Chrome offers; the server picked among those.
    offered = {"SRTP_AES128_CM_SHA1_80", "SRTP_AEAD_AES_256_GCM", "SRTP_AEAD_AES_128_GCM"}
    assert result["srtp_profiles"] and set(result["srtp_profiles"]) <= offered
    # Every subscriber gets every publisher's audio and video: in a meeting of 3,
    # each subscriber receives 2 publishers x 2 tracks, so more than it sends.
    if scenario == "meeting":
        assert result["forwarded_packets"] > result["sent_packets"]


def test_sigterm_stops_janus_and_the_workers() -> None:
    cmd = [
        sys.executable, "-m", "loadtest", "-v", "--scenario", "livestream", "-n", "2",
        "--duration", "120", "--target", "janus",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    janus_pid = 0
    try:
        for line in proc.stderr:
            if match := re.search(r"janus pid (\d+) up", line):
                janus_pid = int(match.group(1))
            if "pkt/s" in line:  # the measured window has started: media flows
                break
        assert janus_pid, "the tool never reported Janus up"
        worker_pids = _children(proc.pid)
        assert worker_pids, "no client worker processes"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err[-2000:]
    assert "everything started was stopped" in err
    # Helpers such as multiprocessing's resource tracker exit once they see our pipe
    # close, a moment after us: give every process a generous grace period.
    deadline = time.monotonic() + 15
    survivors = [janus_pid, *worker_pids]
    while survivors and time.monotonic() < deadline:
        survivors = [pid for pid in survivors if _alive(pid)]
        time.sleep(0.1)
    assert not survivors, f"processes {survivors} survived the shutdown"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found
