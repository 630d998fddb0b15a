"""The environment fuzz targets run in, for the smoke runs and the crash replays."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def fuzz_env() -> dict[str, str]:
    """With the ASan + UBSan build of the C extensions when clang and its runtimes are here
    (``fuzz/build_native.py``), else the normal extension."""
    pytest.importorskip("atheris")
    env = dict(os.environ)
    built = subprocess.run(
        [sys.executable, "-m", "fuzz.build_native", "--env"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if built.returncode == 0:
        env.update(line.split("=", 1) for line in built.stdout.splitlines() if "=" in line)
    return env
