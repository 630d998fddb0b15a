"""What a load-test target is: a server to start and measure, and a signaling client for it.

A ``Target`` lives in the tool's main process: it starts the SFU (or attaches
to it), creates the room, names the server processes to measure and stops
everything. Its ``endpoint()`` is a small picklable description that worker
processes turn into one ``SignalSession`` per simulated participant; the
session carries SDP offers and answers, nothing else (media goes through
``loadtest.peer``). Janus VideoRoom lives in ``loadtest.janus``, mediafed's
LiveKit signaling in ``loadtest.livekit_target``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol


async def stop_process_group(proc: asyncio.subprocess.Process, grace_s: float = 10.0) -> None:
    """SIGTERM the server's process group, SIGKILL it if it is still there after ``grace_s``."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), grace_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()


class TargetError(Exception):
    """A target could not be started or refused a request; the message says what to fix."""


class ServerProcess:
    """What every target keeps of its server: one process group, started in a
    temporary directory; stopping ends both."""

    def __init__(self) -> None:
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._proc: asyncio.subprocess.Process | None = None

    def server_pids(self) -> list[int]:
        if self._proc is None or self._proc.returncode is not None:
            return []
        return [self._proc.pid]

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            await stop_process_group(proc)
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    async def wait_http_ok(
        self, host: str, port: int, path: str, what: str, tail: Callable[[], str], timeout_s: float
    ) -> None:
        """Until ``GET path`` answers 200: TargetError (with ``tail()``, the server's
        log) if the server exits first or ``timeout_s`` passes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            if self._proc is None or self._proc.returncode is not None:
                raise TargetError(f"{what} exited at start-up:\n{tail()}")
            try:
                reader, writer = await asyncio.open_connection(host, port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            writer.write(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            status = await reader.readline()
            writer.close()
            if b" 200 " in status:
                return
            await asyncio.sleep(0.1)
        raise TargetError(
            f"{what} did not answer {path} on port {port} in {timeout_s:.0f} s:\n{tail()}"
        )


@dataclass(frozen=True, slots=True)
class RoomPlan:
    """The room a run needs: how many publishers, what bitrate cap."""

    name: str
    max_publishers: int
    bitrate_cap_bps: int = 4_000_000


@dataclass(frozen=True, slots=True)
class PublishResult:
    answer_sdp: str
    feed: str  # how subscribers name this publisher (Janus feed id, LiveKit identity)


class SignalSession(Protocol):
    """One participant's signaling connection (in a worker process)."""

    async def publish(self, offer_sdp: str, sources: tuple[str, ...]) -> PublishResult:
        """Send our offer for the tracks we publish; return the SFU's answer."""
        ...

    async def subscribe(self, feeds: tuple[str, ...]) -> str:
        """Ask for the media of ``feeds``; return the SFU's offer."""
        ...

    async def answer_subscription(self, answer_sdp: str) -> None:
        """Send our answer to the SFU's subscription offer and start the flow."""
        ...

    async def on_remote_candidate(
        self, role: str, sink: Callable[[str | None], Awaitable[None]]
    ) -> None:
        """Feed candidates the SFU trickles for ``role`` ("publisher"/"subscriber") to ``sink``."""
        ...

    def on_reoffer(self, handler: Callable[[str], str]) -> None:
        """Answer later subscription offers (renegotiation) with ``handler(offer) -> answer``."""
        ...

    async def close(self) -> None: ...


class Endpoint(Protocol):
    """Picklable: how a worker process reaches the target."""

    async def open(self, identity: str, room: int = 0) -> SignalSession:
        """A participant joining room ``room`` of the run (0: the one the target made)."""
        ...


class Target(Protocol):
    """A server under test, started and measured by the tool's main process."""

    name: str

    async def start(self, plan: RoomPlan) -> None: ...

    def endpoint(self) -> Endpoint: ...

    def server_pids(self) -> list[int]: ...

    async def stop(self) -> None: ...
