"""Run the Python ``livekit`` SDK client scripts on test hosts and read their events.

``run_client`` runs ``lk_sdk_client.py`` to its end; :class:`ScriptClient` runs any
of the scripts (``lk_sdk_publisher.py``, ``lk_sdk_viewer.py``) and reads its JSON
lines while it runs, for tests that change the network meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from tests.support.netns_hosts import TestHost

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


class ScriptClient:
    """A client script on a test host whose JSON lines are read as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[dict[str, Any]] = []
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(
        cls,
        host: TestHost,
        script: Path,
        url: str,
        token: str,
        *args: str,
        env: dict[str, str] | None = None,
    ) -> ScriptClient:
        proc = await host.spawn(
            [sys.executable, script, url, token, *args],
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env=None if env is None else os.environ | env,
        )
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            if raw.startswith(b"{"):
                self.lines.append(json.loads(raw))

    def last(self, event: str) -> dict[str, Any] | None:
        return next((line for line in reversed(self.lines) if line["event"] == event), None)

    def seen(self) -> tuple[int, int]:
        """(video frames, audio frames) a viewer script decoded so far."""
        line = self.last("seen")
        if line is None:
            return 0, 0
        return sum(v["frames"] for v in line["video"].values()), line["audio"]["frames"]

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        self._reader.cancel()


def close_to(rgb: list[int], expected: tuple[int, int, int]) -> bool:
    return all(abs(a - b) <= 40 for a, b in zip(rgb, expected, strict=True))
