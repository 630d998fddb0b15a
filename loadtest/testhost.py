"""Client hosts for libwebrtc and pion clients: a second network namespace behind a veth pair.

libwebrtc-based SDKs (Python ``livekit``, native apps) and pion (``lk``) ignore
loopback addresses for ICE, so they cannot meet a server on 127.0.0.x. Inside the
loopback-only test namespace a :class:`TestHost` adds a veth pair from the
198.18.0.0/15 benchmarking range (RFC 2544): the server keeps
``198.18.N.1/24``, the other end moves into a fresh namespace as
``198.18.N.2/24``, and commands run there through ``nsenter``. No default
route exists anywhere, so nothing can leave (REFERENCES.md, "Test hosts for
libwebrtc clients"). The tests' SDK clients (tests/support/netns_hosts.py) and
``loadtest.lk`` use it; ``link`` impairs the host's link (loadtest/impair.py).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from loadtest.impair import LinkImpairment


class TestHostError(RuntimeError):
    """The client namespace could not be made; the message says why."""


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True)


class TestHost:
    """A client namespace linked to the test namespace; use as a context manager."""

    __test__ = False  # not a pytest test class

    def __init__(self, index: int = 0) -> None:
        if os.environ.get("MEDIAFED_IN_NETNS") != "1" and sorted(os.listdir("/sys/class/net")) != [
            "lo"
        ]:
            raise TestHostError(
                "TestHost only works inside the loopback-only test namespace; "
                "run under scripts/in-netns (pytest does this by itself)"
            )
        if not 0 <= index <= 255:
            raise ValueError("index must be 0..255 (it picks 198.18.<index>.0/24)")
        self.index = index
        self.server_ip = f"198.18.{index}.1"
        self.client_ip = f"198.18.{index}.2"
        self._server_if = f"vsrv{index}"
        self._client_if = f"vcli{index}"
        self._holder: subprocess.Popen[bytes] | None = None
        self._link: LinkImpairment | None = None

    @property
    def pid(self) -> int:
        if self._holder is None:
            raise TestHostError("the test host is not started")
        return self._holder.pid

    def start(self) -> TestHost:
        own_ns = os.readlink("/proc/self/ns/net")
        self._holder = subprocess.Popen(["unshare", "-n", "sleep", "infinity"])
        deadline = time.monotonic() + 10
        while True:
            try:
                if os.readlink(f"/proc/{self.pid}/ns/net") != own_ns:
                    break
            except FileNotFoundError:
                pass
            if time.monotonic() > deadline or self._holder.poll() is not None:
                self.close()
                raise TestHostError("could not create the client namespace (unshare -n failed)")
            time.sleep(0.01)
        try:
            _run(
                "ip",
                "link",
                "add",
                self._server_if,
                "type",
                "veth",
                "peer",
                "name",
                self._client_if,
            )
            _run("ip", "addr", "add", f"{self.server_ip}/24", "dev", self._server_if)
            _run("ip", "link", "set", self._server_if, "up")
            _run("ip", "link", "set", self._client_if, "netns", str(self.pid))
            inside = ("nsenter", "-t", str(self.pid), "-n")
            _run(*inside, "ip", "link", "set", "lo", "up")
            _run(*inside, "ip", "addr", "add", f"{self.client_ip}/24", "dev", self._client_if)
            _run(*inside, "ip", "link", "set", self._client_if, "up")
        except subprocess.CalledProcessError as exc:
            self.close()
            raise TestHostError(f"could not set up the veth pair: {exc.stderr.strip()}") from None
        return self

    @property
    def link(self) -> LinkImpairment:
        """Loss, rate limits, blocked UDP and blackholes on this host's link."""
        if self._link is None:
            self._link = LinkImpairment(self.pid, self._client_if, self._server_if)
        return self._link

    def command(self, argv: Sequence[str | Path]) -> list[str]:
        """``argv`` wrapped to run inside the client namespace."""
        return ["nsenter", "-t", str(self.pid), "-n", *(str(a) for a in argv)]

    async def spawn(
        self, argv: Sequence[str | Path], **kwargs: object
    ) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(*self.command(argv), **kwargs)  # type: ignore[arg-type]

    def close(self) -> None:
        # the veth pair disappears with the client namespace
        if self._holder is not None and self._holder.poll() is None:
            self._holder.kill()
            self._holder.wait()
        self._holder = None
        subprocess.run(["ip", "link", "del", self._server_if], capture_output=True)

    def __enter__(self) -> TestHost:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
