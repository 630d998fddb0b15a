"""``mediafed serve`` in a process of its own, for tests that kill and restart it.

Bound to every address of the test namespace and advertised on the given test
hosts' server addresses (their clients reach it over their veth links); the
participants of its room are read back through RoomService (Twirp JSON).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from mediafed.signal.livekit.tokens import VideoGrant, mint_token
from tests.support.netns_hosts import TestHost

API_KEY = "relaykey"
API_SECRET = "relay-secret-" + "x" * 24


def _free_port(kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("0.0.0.0", 0))
        port: int = sock.getsockname()[1]
        return port


class Relay:
    """``mediafed serve`` in a process of its own, restartable on the same ports."""

    def __init__(
        self,
        hosts: list[TestHost],
        workdir: Path,
        *,
        room: str,
        workers: int | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        """``workers``: ``[server] workers`` (the default, one per core, when None);
        ``env``: more settings (``MEDIAFED_*``)."""
        self.room = room
        self.http_port = _free_port(socket.SOCK_STREAM)
        self.env = os.environ | {
            "MEDIAFED_KEYS": f"{API_KEY}: {API_SECRET}",
            "MEDIAFED_SERVER_BIND": "0.0.0.0",
            "MEDIAFED_SERVER_HTTP_PORT": str(self.http_port),
            "MEDIAFED_SERVER_DATA_DIR": str(workdir / "data"),
            "MEDIAFED_RTC_UDP_PORT": str(_free_port(socket.SOCK_DGRAM)),
            "MEDIAFED_RTC_TCP_PORT": str(_free_port(socket.SOCK_STREAM)),
            "MEDIAFED_RTC_NODE_IP": ",".join(host.server_ip for host in hosts),
        }
        if workers is not None:
            self.env["MEDIAFED_SERVER_WORKERS"] = str(workers)
        self.env |= env or {}
        self.log_path = workdir / f"mediafed-{self.http_port}.log"
        self.proc: asyncio.subprocess.Process | None = None
        self.url = f"http://127.0.0.2:{self.http_port}"

    async def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "mediafed",
                "serve",
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        async with aiohttp.ClientSession() as http:
            while True:
                if self.proc.returncode is not None or time.monotonic() > deadline:
                    raise AssertionError(f"mediafed serve did not start:\n{self.log()}")
                try:
                    async with http.get(f"{self.url}/healthz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.1)

    def reset_signal_socket(self, host: TestHost) -> None:
        """Reset (RST) the relay's end of ``host``'s HTTP connections, its signaling
        WebSocket among them, as a NAT that forgot them would."""
        killed = subprocess.run(
            ["ss", "-K", "dst", host.client_ip, "sport", f"= :{self.http_port}"],
            capture_output=True,
            text=True,
        )
        assert killed.returncode == 0, killed.stderr
        assert "ESTAB" in killed.stdout, f"no connection was reset: {killed.stdout}"

    async def restart(self) -> None:
        """SIGKILL, then start again on the same ports."""
        self.kill()
        assert self.proc is not None
        await self.proc.wait()
        await self.start()

    async def health(self) -> dict[str, Any]:
        async with aiohttp.ClientSession() as http, http.get(f"{self.url}/healthz") as response:
            body: dict[str, Any] = await response.json()
            return body

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def token(self, identity: str, *, room: str | None = None, **grant: object) -> str:
        return mint_token(
            API_KEY,
            API_SECRET,
            identity=identity,
            video=VideoGrant(room_join=True, room=room or self.room, **grant),  # type: ignore[arg-type]
        )

    async def twirp(self, method: str, body: dict[str, Any], token: str) -> tuple[int, Any]:
        """POST a RoomService call (Twirp JSON): its status and decoded answer."""
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{self.url}/twirp/livekit.RoomService/{method}",
                json=body,
                headers={"Authorization": f"Bearer {token}"},
            ) as response,
        ):
            return response.status, await response.json()

    async def participants(self, room: str | None = None) -> dict[str, str]:
        """Identity -> sid of the room's participants (RoomService, Twirp JSON)."""
        room = room or self.room
        token = self.token("admin", room=room, room_admin=True)
        status, body = await self.twirp("ListParticipants", {"room": room}, token)
        if status != 200:
            return {}
        return {p["identity"]: p["sid"] for p in body.get("participants", [])}


async def until(
    what: str, predicate: Callable[[], bool], timeout_s: float, *relays: Relay
) -> float:
    """Seconds until ``predicate()`` holds; AssertionError with the relays' logs if it
    does not within ``timeout_s``."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not predicate():
        if loop.time() - start > timeout_s:
            logs = "\n".join(relay.log() for relay in relays)
            raise AssertionError(f"{what}: not within {timeout_s} s\n{logs}")
        await asyncio.sleep(0.05)
    return loop.time() - start
