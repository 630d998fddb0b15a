"""The Janus target: start Debian's Janus with a VideoRoom bound to loopback, and talk to it.

``JanusTarget`` writes a minimal configuration (only the VideoRoom plugin and
the WebSocket transport, on 127.0.0.1, no STUN), starts ``janus`` in its own
process group pinned to the server core, and creates the benchmark room with
a bitrate cap far above the test media (the default 128 kbps cap would make
Janus ask publishers to slow down). ``JanusSession`` speaks the Janus API
over WebSocket (subprotocol ``janus-protocol``, https://janus.conf.meetecho.com/docs/rest.html)
and the VideoRoom plugin's publisher/subscriber requests
(https://janus.conf.meetecho.com/docs/videoroom.html).

Janus 1.1.x skips interfaces flagged IFF_LOOPBACK when gathering ICE
candidates (``janus_ice_setup_local`` in src/ice.c), so in a loopback-only
namespace every offer would fail with "Error gathering candidates". The
Janus process alone gets ``noloopback.c`` (compiled here with gcc) as
LD_PRELOAD, which clears that flag in what ``getifaddrs()`` returns, and
``ice_enforce_list = "lo"`` keeps gathering on loopback.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import json
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

from loadtest.target import PublishResult, RoomPlan, ServerProcess, TargetError

log = logging.getLogger(__name__)

JANUS_BIN = "janus"
JANUS_LIB_DIR = Path("/usr/lib/x86_64-linux-gnu/janus")
PRELOAD_SOURCE = Path(__file__).with_name("noloopback.c")
KEEPALIVE_S = 20.0
REQUEST_TIMEOUT_S = 20.0
VIDEOROOM = "janus.plugin.videoroom"


def kill_group_at_exit(pgid: int) -> None:
    """Last resort if the tool dies before its ``finally`` blocks: kill the server group."""

    def kill() -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)

    atexit.register(kill)


def free_tcp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _jcfg_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value))


def render_jcfg(sections: dict[str, dict[str, object]]) -> str:
    """Janus's libconfig-style ``.jcfg`` text for ``{section: {key: value}}``."""
    out = []
    for name, entries in sections.items():
        out.append(f"{name}: {{")
        out += [f"\t{key} = {_jcfg_value(value)}" for key, value in entries.items()]
        out.append("}")
    return "\n".join(out) + "\n"


def _other_libs(folder: Path, keep: str) -> str:
    """Comma-separated ``.so`` names in ``folder`` except ``keep`` (for ``disable``)."""
    if not folder.is_dir():
        return ""
    names = sorted(p.name for p in folder.glob("*.so") if p.name != keep)
    return ",".join(names)


def write_config(directory: Path, ws_port: int, lib_dir: Path = JANUS_LIB_DIR) -> Path:
    """Write janus.jcfg and the two jcfg files it needs; return janus.jcfg's path."""
    main: dict[str, dict[str, object]] = {
        "general": {
            "configs_folder": str(directory),
            "plugins_folder": str(lib_dir / "plugins"),
            "transports_folder": str(lib_dir / "transports"),
            "events_folder": str(lib_dir / "events"),
            "loggers_folder": str(lib_dir / "loggers"),
            "debug_level": 4,
            "debug_colors": False,
            "server_name": "mediafed-loadtest",
            "session_timeout": 60,
        },
        "media": {
            "ipv6": False,
            "rtp_port_range": "20000-40000",
            "no_media_timer": 5,
        },
        "nat": {
            "nice_debug": False,
            "full_trickle": False,
            "ice_enforce_list": "lo",
            "ignore_mdns": True,
        },
        "plugins": {"disable": _other_libs(lib_dir / "plugins", "libjanus_videoroom.so")},
        "transports": {"disable": _other_libs(lib_dir / "transports", "libjanus_websockets.so")},
        "events": {"broadcast": False, "disable": _other_libs(lib_dir / "events", "")},
        "loggers": {"disable": _other_libs(lib_dir / "loggers", "")},
    }
    websockets_cfg: dict[str, dict[str, object]] = {
        "general": {"json": "compact", "ws": True, "ws_port": ws_port, "ws_ip": "127.0.0.1"},
        "admin": {"admin_ws": False},
    }
    videoroom_cfg: dict[str, dict[str, object]] = {"general": {}}
    path = directory / "janus.jcfg"
    path.write_text(render_jcfg(main))
    (directory / "janus.transport.websockets.jcfg").write_text(render_jcfg(websockets_cfg))
    (directory / "janus.plugin.videoroom.jcfg").write_text(render_jcfg(videoroom_cfg))
    return path


def compile_preload(directory: Path) -> Path:
    """Build noloopback.so from its C source with the system gcc."""
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        raise TargetError("gcc is needed to build the Janus loopback shim: apt-get install gcc")
    output = directory / "libnoloopback.so"
    cmd = [compiler, "-shared", "-fPIC", "-O2", "-Wall", "-o", str(output), str(PRELOAD_SOURCE)]
    result = subprocess.run([*cmd, "-ldl"], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise TargetError(f"building {PRELOAD_SOURCE.name} failed:\n{result.stderr}")
    return output


class JanusTarget(ServerProcess):
    """Janus VideoRoom started from a generated config in a temporary directory."""

    name = "janus"

    def __init__(self, server_cpus: set[int] | None = None, binary: str = JANUS_BIN) -> None:
        self.server_cpus = server_cpus
        self.binary = binary
        self.room_id = 0
        self.url = ""
        super().__init__()
        self._log_path: Path | None = None

    async def start(self, plan: RoomPlan) -> None:
        if shutil.which(self.binary) is None:
            raise TargetError(f"{self.binary!r} not found: apt-get install janus")
        self._dir = tempfile.TemporaryDirectory(prefix="loadtest-janus-")
        directory = Path(self._dir.name)
        port = free_tcp_port()
        config = write_config(directory, port)
        preload = compile_preload(directory)
        self._log_path = directory / "janus.log"
        env = dict(os.environ, LD_PRELOAD=str(preload))
        cpus = self.server_cpus

        def pin() -> None:
            if cpus:
                os.sched_setaffinity(0, cpus)

        with self._log_path.open("wb") as logfile:
            self._proc = await asyncio.create_subprocess_exec(
                self.binary,
                "-C",
                str(config),
                "-F",
                str(directory),
                "-o",
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=pin,
            )
        kill_group_at_exit(self._proc.pid)
        self.url = f"ws://127.0.0.1:{port}"
        await self._wait_ready()
        self.room_id = random.randint(1_000_000, 2**31)
        session = await JanusSession.connect(self.url, self.room_id, "control")
        try:
            await session.create_room(plan)
        finally:
            await session.close()
        log.info("- janus pid %s up at %s, room %s", self._proc.pid, self.url, self.room_id)

    async def _wait_ready(self, timeout_s: float = 20.0) -> None:
        assert self._proc is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            if self._proc.returncode is not None:
                raise TargetError(f"janus exited at start-up:\n{self.log_tail()}")
            try:
                ws = await websockets.connect(self.url, subprotocols=[_SUBPROTOCOL])
            except OSError:
                await asyncio.sleep(0.1)
                continue
            await ws.close()
            return
        raise TargetError(f"janus did not open {self.url} in {timeout_s:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        if self._log_path is None or not self._log_path.exists():
            return "(no janus log)"
        text = self._log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def endpoint(self) -> JanusEndpoint:
        return JanusEndpoint(self.url, self.room_id)


_SUBPROTOCOL: Any = "janus-protocol"


@dataclass(frozen=True, slots=True)
class JanusEndpoint:
    url: str
    room_id: int

    async def open(self, identity: str, room: int = 0) -> JanusSession:
        if room:
            raise TargetError("the janus target makes one room; run --rooms with LiveKit targets")
        return await JanusSession.connect(self.url, self.room_id, identity)


class JanusSession:
    """One Janus API session over WebSocket, with a publisher and/or subscriber handle."""

    def __init__(self, ws: ClientConnection, room_id: int, identity: str) -> None:
        self.ws = ws
        self.room_id = room_id
        self.identity = identity
        self.session_id = 0
        self._pending: dict[str, tuple[asyncio.Future[dict[str, Any]], bool]] = {}
        self._ids = itertools.count(1)
        self._reader = asyncio.create_task(self._read_loop(), name=f"janus-{identity}")
        self._keepalive: asyncio.Task[None] | None = None
        self._subscriber_handle = 0

    @classmethod
    async def connect(cls, url: str, room_id: int, identity: str) -> JanusSession:
        try:
            ws = await websockets.connect(
                url, subprotocols=[_SUBPROTOCOL], max_size=None, open_timeout=REQUEST_TIMEOUT_S
            )
        except OSError as exc:
            raise TargetError(f"cannot reach Janus at {url}: {exc}; is it running?") from exc
        self = cls(ws, room_id, identity)
        reply = await self._call({"janus": "create"}, wait_event=False)
        self.session_id = int(reply["data"]["id"])
        self._keepalive = asyncio.create_task(self._keepalive_loop())
        return self

    # -- Janus API plumbing ---------------------------------------------------

    async def _read_loop(self) -> None:
        try:
            async for raw in self.ws:
                message = json.loads(raw)
                transaction = message.get("transaction")
                kind = message.get("janus")
                waiter = self._pending.get(transaction) if transaction else None
                if waiter is None:
                    if kind in ("hangup", "timeout"):
                        log.warning("x janus %s for %s: %s", kind, self.identity, message)
                    else:
                        log.debug("< janus %s for %s", kind, self.identity)
                    continue
                future, wait_event = waiter
                if kind == "ack" and wait_event:
                    continue
                del self._pending[transaction]
                if not future.done():
                    future.set_result(message)
        except websockets.ConnectionClosed:
            pass
        finally:
            for future, _ in self._pending.values():
                if not future.done():
                    future.set_exception(TargetError("Janus closed the WebSocket"))
            self._pending.clear()

    async def _call(
        self, request: dict[str, Any], wait_event: bool, handle_id: int = 0
    ) -> dict[str, Any]:
        transaction = f"{self.identity}-{next(self._ids)}"
        request = dict(request, transaction=transaction)
        if self.session_id:
            request["session_id"] = self.session_id
        if handle_id:
            request["handle_id"] = handle_id
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[transaction] = (future, wait_event)
        await self.ws.send(json.dumps(request))
        try:
            reply = await asyncio.wait_for(future, REQUEST_TIMEOUT_S)
        except TimeoutError as exc:
            self._pending.pop(transaction, None)
            raise TargetError(
                f"Janus did not answer {request.get('janus')} in {REQUEST_TIMEOUT_S:.0f} s"
            ) from exc
        if reply.get("janus") == "error":
            error = reply.get("error", {})
            raise TargetError(f"Janus refused {request.get('janus')}: {error.get('reason')}")
        return reply

    async def _attach(self) -> int:
        reply = await self._call({"janus": "attach", "plugin": VIDEOROOM}, wait_event=False)
        return int(reply["data"]["id"])

    async def _message(
        self, handle_id: int, body: dict[str, Any], jsep: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        request: dict[str, Any] = {"janus": "message", "body": body}
        if jsep is not None:
            request["jsep"] = jsep
        reply = await self._call(request, wait_event=True, handle_id=handle_id)
        data: dict[str, Any] = reply.get("plugindata", {}).get("data", {})
        if "error" in data:
            raise TargetError(
                f"VideoRoom refused {body.get('request')}: {data['error']} "
                f"(code {data.get('error_code')})"
            )
        return data, reply.get("jsep")

    async def _keepalive_loop(self) -> None:
        while True:
            await asyncio.sleep(KEEPALIVE_S)
            try:
                await self._call({"janus": "keepalive"}, wait_event=False)
            except (TargetError, websockets.ConnectionClosed):
                return

    # -- VideoRoom ----------------------------------------------------------

    async def create_room(self, plan: RoomPlan) -> None:
        handle = await self._attach()
        await self._message(
            handle,
            {
                "request": "create",
                "room": self.room_id,
                "description": plan.name,
                "publishers": max(plan.max_publishers, 1),
                "bitrate": plan.bitrate_cap_bps,
                "audiocodec": "opus",
                "videocodec": "vp8",
                "notify_joining": False,
                "permanent": False,
            },
        )
        await self._call({"janus": "detach"}, wait_event=False, handle_id=handle)

    async def publish(self, offer_sdp: str, sources: tuple[str, ...]) -> PublishResult:
        handle = await self._attach()
        joined, _ = await self._message(
            handle,
            {
                "request": "join",
                "ptype": "publisher",
                "room": self.room_id,
                "display": self.identity,
            },
        )
        feed = joined.get("id")
        if feed is None:
            raise TargetError(f"VideoRoom join gave no publisher id: {joined}")
        _, jsep = await self._message(
            handle,
            {"request": "configure", "audio": True, "video": True},
            {"type": "offer", "sdp": offer_sdp, "trickle": False},
        )
        if jsep is None or jsep.get("type") != "answer":
            raise TargetError("VideoRoom configure returned no SDP answer")
        return PublishResult(answer_sdp=str(jsep["sdp"]), feed=str(feed))

    async def subscribe(self, feeds: tuple[str, ...]) -> str:
        if not feeds:
            raise TargetError("a subscriber needs at least one publisher feed")
        self._subscriber_handle = await self._attach()
        _, jsep = await self._message(
            self._subscriber_handle,
            {
                "request": "join",
                "ptype": "subscriber",
                "room": self.room_id,
                "streams": [{"feed": int(feed)} for feed in feeds],
            },
        )
        if jsep is None or jsep.get("type") != "offer":
            raise TargetError("VideoRoom subscriber join returned no SDP offer")
        return str(jsep["sdp"])

    async def answer_subscription(self, answer_sdp: str) -> None:
        await self._message(
            self._subscriber_handle,
            {"request": "start"},
            {"type": "answer", "sdp": answer_sdp, "trickle": False},
        )

    async def on_remote_candidate(
        self, role: str, sink: Callable[[str | None], Awaitable[None]]
    ) -> None:
        """Janus runs without trickle here: its candidates are all in its SDP."""

    def on_reoffer(self, handler: Callable[[str], str]) -> None:
        """A VideoRoom subscription is negotiated once, with every feed in it."""

    async def close(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
        if self.session_id and self.ws.state == websockets.State.OPEN:
            with contextlib.suppress(TargetError, websockets.ConnectionClosed):
                await self._call({"janus": "destroy"}, wait_event=False)
        await self.ws.close()
        self._reader.cancel()
