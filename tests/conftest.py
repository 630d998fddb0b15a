"""Test-wide setup: every test runs inside a loopback-only network namespace.

If pytest was started outside one, it re-executes itself through
``scripts/in-netns`` before collecting anything, so no test can reach an
address other than this machine's loopback and its own test hosts.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mediafed.media import RoomManager
from mediafed.worker import Worker
from tests.support.media import media_config

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


@pytest.fixture
async def worker() -> AsyncIterator[Worker]:
    """A running media worker on 127.0.0.2 (a free UDP port)."""
    running = Worker.from_config(media_config())  # type: ignore[arg-type]
    await running.start()
    yield running
    await running.stop()


@pytest.fixture
def rooms(worker: Worker) -> RoomManager:
    """The rooms of the running ``worker``."""
    return worker.rooms
