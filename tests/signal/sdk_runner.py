"""Run the Python ``livekit`` SDK client scripts on test hosts and read their events.

``run_client`` runs ``lk_sdk_client.py`` to its end; :class:`ScriptClient`
(``loadtest/sdk_client.py``) runs the publisher and viewer scripts and reads
their JSON lines while they run, for tests that change the network meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from loadtest.sdk_client import PUBLISHER, VIEWER, ScriptClient
from tests.support.netns_hosts import TestHost

__all__ = ["PUBLISHER", "VIEWER", "ScriptClient", "close_to", "run_client"]

CLIENT = Path(__file__).with_name("lk_sdk_client.py")
SIGNAL_IDS = ["v1", "v0", "v1+v0"]
"""Test ids of (first, second) participant on v0: both v1, both v0, one of each."""
EXPECTED = {
    # sender: (camera RGB, screenshare RGB, tone Hz) — see lk_sdk_client.PATTERNS
    "alice": ((220, 40, 40), (40, 200, 60), 440),
    "bob": ((40, 60, 220), (230, 210, 40), 880),
}


async def run_client(
    host: TestHost, url: str, token: str, role: str, *, v0: bool = False
) -> list[dict[str, Any]]:
    """Run one participant; ``v0`` connects with two peer connections (signal v0)."""
    proc = await host.spawn(
        [sys.executable, CLIENT, url, token, role, *(["v0"] if v0 else [])],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 45)
    finally:
        # a failing sibling or a timeout must not leave the client running
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    lines = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    if not any(line["event"] in ("done", "refused") for line in lines):
        raise AssertionError(f"{role} did not finish: {lines[-5:]} {err.decode()[-2000:]}")
    return lines


def close_to(rgb: list[int], expected: tuple[int, int, int]) -> bool:
    return all(abs(a - b) <= 40 for a, b in zip(rgb, expected, strict=True))
