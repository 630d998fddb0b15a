"""LiveKit's own load tester (`lk load-test`'s code) against mediafed: its clients get media.

The Go SDK (pion) joins through a veth test host, since pion skips loopback;
see ``loadtest.lk``. Speed is never asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.gopeers import LK, missing_message

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("codec", ["vp8", "h264"])
def test_lk_load_test_receives_every_track_from_mediafed(tmp_path: Path, codec: str) -> None:
    # Built by scripts/install-test-deps (scripts/test runs it first): fail, never skip.
    assert LK.binary.exists(), missing_message(LK)
    out = tmp_path / "lk.json"
    cmd = [
        sys.executable, "-m", "loadtest.lk", "--target", "mediafed", "--video-publishers", "1",
        "--audio-publishers", "1", "--subscribers", "2", "--duration", "5", "--json", str(out),
        "--", "--video-codec", codec,
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    (result,) = json.loads(out.read_text())["results"]
    # Two subscribers, each given the publisher's audio and video track.
    assert (result["tracks_received"], result["tracks_expected"]) == (4, 4), result["output_tail"]
    assert result["packets"] > 0 and result["errors"] == 0
    assert result["loss_percent"] is not None and result["loss_percent"] < 5
