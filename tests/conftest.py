"""Test-wide setup: every test runs inside a loopback-only network namespace.

If pytest was started outside one, it re-executes itself through
``scripts/in-netns`` before collecting anything, so no test can reach an
address other than this machine's loopback and its own test hosts.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _only_loopback() -> bool:
    return sorted(os.listdir("/sys/class/net")) == ["lo"]


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("MEDIAFED_IN_NETNS") == "1":
        return
    if _only_loopback():
        return
    # Not isolated yet: start again inside a fresh namespace.
    args = [str(ROOT / "scripts" / "in-netns"), sys.executable, "-m", "pytest", *sys.argv[1:]]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(args[0], args)
