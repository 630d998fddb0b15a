"""The ``livekit`` SDK client scripts (a publisher, a viewer) on test hosts, read
as they run: shared by the impaired-link load test and the tests.

``sdk_publisher.py`` publishes a moving-texture camera (simulcast at 1280x720)
and a tone and reports libwebrtc's sending side every second;
``sdk_viewer.py`` watches everything and reports what it decodes every half
second. Each prints JSON lines; :class:`ScriptClient` collects them.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from loadtest.testhost import TestHost

PUBLISHER = Path(__file__).with_name("sdk_publisher.py")
VIEWER = Path(__file__).with_name("sdk_viewer.py")


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

    def longest_gap_ms(self, since: int = 0) -> int:
        """The longest wait between two video frames a viewer script reported after
        its line ``since``."""
        return max(
            (
                v["gap_ms"]
                for line in self.lines[since:]
                if line["event"] == "seen"
                for v in line["video"].values()
            ),
            default=0,
        )

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        self._reader.cancel()
