"""The media end-to-end tests once more with the native hot path off.

``MEDIAFED_PURE_PYTHON=1`` is read when ``mediafed.transport.native`` is
imported, so the tests run in a child pytest started with it set: the media
socket's Python read loop, ``Layer.receive``, the Python fan-out and
``PySendTarget`` carry the calls whose frames are decoded and checked there
(video colour and frame counter, audio not silent, repair of lost packets,
active speakers, the ``/metrics`` totals). The child inherits this test
namespace, so it reaches nothing more than the tests run here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULES = [
    "tests/media/test_forwarding.py",
    "tests/media/test_loss.py",
    "tests/media/test_single_connection.py",
    "tests/operator/test_metrics.py",
    "tests/signal/test_livekit_speakers.py",
]
# The child checks that the switch took before it runs anything.
RUN_PURE = """
import sys
import pytest
from mediafed.media import native
from mediafed.transport import native as transport_native, target
assert transport_native.native_send_target is None
assert transport_native.SendTarget is target.PySendTarget
assert transport_native.read_datagrams is None and native.receive_rtp is None
assert native.fanout is native.py_fanout and native.Forwarder is native.PyForwarder
assert native.PeerBase is native.PyPeerBase
print("native hot path off", flush=True)
sys.exit(pytest.main(sys.argv[1:]))
"""


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_media_end_to_end_without_the_native_module() -> None:
    env = {**os.environ, "MEDIAFED_PURE_PYTHON": "1"}
    result = subprocess.run(
        [sys.executable, "-c", RUN_PURE, "-q", "-p", "no:cacheprovider", *MODULES],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=570,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-8000:]
    assert output.startswith("native hot path off"), output[:2000]
    summary = output.strip().splitlines()[-1]
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) >= len(MODULES), summary
    assert not re.search(r"failed|error|skipped", summary), summary
