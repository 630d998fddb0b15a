"""The mediafed target (``mediafed serve --dev``) and the LiveKit v0 client that joins it.

Signaling follows the LiveKit client protocol v0 (``/rtc``, two peer
connections, binary protobuf ``SignalRequest``/``SignalResponse`` from
``livekit-protocol``; see REFERENCES.md "LiveKit client protocol"): the
server's ``join`` first; with ``subscriber_primary`` the server offers on the
subscriber connection and the client answers echoing the offer ``id``; to
publish, the client sends ``add_track`` per track (``cid`` = the SDP msid
track id), waits for ``track_published``, then offers on the publisher
connection; candidates may also arrive as ``trickle`` messages.

This is the client side only; mediafed's server side lives in
``mediafed.signal.livekit``. The same client joins livekit-server itself
(``loadtest.livekit_server``): one protocol, one client code for both.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import websockets
from jwt.warnings import InsecureKeyLengthWarning
from livekit.protocol import models, rtc
from websockets.asyncio.client import ClientConnection

from loadtest.janus import free_tcp_port, kill_group_at_exit
from loadtest.peer import parse_sdp
from loadtest.target import PublishResult, RoomPlan, ServerProcess, TargetError
from mediafed.signal.livekit.tokens import VideoGrant, mint_token

log = logging.getLogger(__name__)

API_KEY = "devkey"
API_SECRET = "secret"
PROTOCOL_VERSION = 17
REQUEST_TIMEOUT_S = 20.0
SOURCE = {
    "microphone": (models.TrackType.AUDIO, models.TrackSource.MICROPHONE),
    "camera": (models.TrackType.VIDEO, models.TrackSource.CAMERA),
    "screen_share": (models.TrackType.VIDEO, models.TrackSource.SCREEN_SHARE),
}
DIMENSIONS = {"camera": (640, 360), "screen_share": (1280, 720)}


def free_udp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (from the ppid field of /proc/*/stat)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rpartition(")")[2].split()[1])
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


class MediafedTarget(ServerProcess):
    """``mediafed serve --dev`` on free loopback ports, in its own process group."""

    name = "mediafed"

    def __init__(
        self, server_cpus: set[int] | None = None, host: str = "127.0.0.1", workers: int = 1
    ) -> None:
        """``workers`` > 1: a node of that many media workers (``[server] workers``);
        give it every core in ``server_cpus`` (the clients' too)."""
        self.server_cpus = server_cpus
        self.workers = workers
        if workers > 1:
            self.name = f"mediafed-{workers}w"
        self.host = host
        """Where signaling and media listen and what ICE advertises (a test host's
        server address for clients that skip loopback, such as ``lk``)."""
        self.url = ""
        self.room = ""
        super().__init__()
        self._log_path: Path | None = None

    def log_tail(self, lines: int = 30) -> str:
        if self._log_path is None or not self._log_path.exists():
            return "(no mediafed log)"
        return "\n".join(self._log_path.read_text(errors="replace").splitlines()[-lines:])

    def server_cmd(self) -> list[str]:
        return [sys.executable, "-m", "mediafed", "serve", "--dev"]

    async def start(self, plan: RoomPlan) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="loadtest-mediafed-")
        http_port = free_tcp_port()
        env = dict(
            os.environ,
            MEDIAFED_SERVER_HTTP_PORT=str(http_port),
            MEDIAFED_RTC_UDP_PORT=str(free_udp_port()),
            MEDIAFED_RTC_TCP_PORT=str(free_tcp_port()),
            MEDIAFED_SERVER_DATA_DIR=self._dir.name,
            MEDIAFED_SERVER_WORKERS=str(self.workers),
        )
        if self.host != "127.0.0.1":
            env.update(MEDIAFED_SERVER_BIND=self.host, MEDIAFED_RTC_NODE_IP=self.host)
        cpus = self.server_cpus

        def pin() -> None:
            if cpus:
                os.sched_setaffinity(0, cpus)

        log_path = self._log_path = Path(self._dir.name) / "mediafed.log"
        with log_path.open("wb") as logfile:
            self._proc = await asyncio.create_subprocess_exec(
                *self.server_cmd(),
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=pin,
            )
        kill_group_at_exit(self._proc.pid)
        self.url = f"ws://{self.host}:{http_port}"
        self.room = plan.name
        await self.wait_http_ok(self.host, http_port, "/healthz", "mediafed", self.log_tail, 20.0)

    def endpoint(self) -> LiveKitEndpoint:
        return LiveKitEndpoint(self.url, self.room, API_KEY, API_SECRET, "mediafed")

    async def rooms_per_worker(self) -> list[int]:
        """How many rooms each worker hosts (``/healthz``); [] with one worker."""
        if self.workers == 1:
            return []
        http = self.url.replace("ws://", "http://", 1)
        async with aiohttp.ClientSession() as session, session.get(f"{http}/healthz") as answer:
            health = await answer.json()
        return [len(worker["rooms"]) for worker in health["workers"]]

    def server_pids(self) -> list[int]:
        if self._proc is None or self._proc.returncode is not None:
            return []
        return descendants(self._proc.pid)


@dataclass(frozen=True, slots=True)
class LiveKitEndpoint:
    """Where a LiveKit-protocol server is and the key pair its tokens are signed with."""

    url: str
    room: str
    api_key: str = API_KEY
    api_secret: str = API_SECRET
    server: str = "mediafed"
    """The server's name in error messages."""

    async def open(self, identity: str, room: int = 0) -> LiveKitSession:
        name = f"{self.room}-{room}" if room else self.room
        return await LiveKitSession.connect(
            self.url, name, identity, self.api_key, self.api_secret, self.server
        )


CandidateSink = Callable[[str | None], Awaitable[None]]
OfferHandler = Callable[[str], str]


class LiveKitSession:
    """One participant's LiveKit v0 signaling WebSocket."""

    def __init__(
        self, ws: ClientConnection, identity: str, join: rtc.JoinResponse, server: str = "mediafed"
    ) -> None:
        self.ws = ws
        self.identity = identity
        self.join = join
        self.server = server
        self._ids = itertools.count(1)
        self._published: dict[str, asyncio.Future[models.TrackInfo]] = {}
        self._answer: asyncio.Future[rtc.SessionDescription] | None = None
        self._offers: asyncio.Queue[rtc.SessionDescription] = asyncio.Queue()
        self._sinks: dict[int, CandidateSink] = {}
        self._early: dict[int, list[str | None]] = {}
        self._reoffer: OfferHandler | None = None
        self._drain: asyncio.Task[None] | None = None
        self._subscriber_offer_id = 0
        self._reader = asyncio.create_task(self._read_loop(), name=f"lk-{identity}")
        self._pinger = asyncio.create_task(self._ping_loop())

    @classmethod
    async def connect(
        cls,
        url: str,
        room: str,
        identity: str,
        api_key: str = API_KEY,
        api_secret: str = API_SECRET,
        server: str = "mediafed",
    ) -> LiveKitSession:
        with warnings.catch_warnings():
            # The dev secret is short on purpose; PyJWT warns about it on every token.
            warnings.simplefilter("ignore", InsecureKeyLengthWarning)
            token = mint_token(
                api_key, api_secret, identity=identity, video=VideoGrant(room_join=True, room=room)
            )
        query = f"access_token={token}&auto_subscribe=1&protocol={PROTOCOL_VERSION}&sdk=python"
        try:
            ws = await websockets.connect(f"{url}/rtc?{query}", max_size=None)
            first = rtc.SignalResponse.FromString(
                await asyncio.wait_for(ws.recv(decode=False), REQUEST_TIMEOUT_S)
            )
        except websockets.InvalidStatus as exc:
            raise TargetError(
                f"{server} refused the join at {url}/rtc ({exc}); a 404 means this build does "
                f"not serve LiveKit signaling, a 401 that the key pair {api_key!r} is not set"
            ) from exc
        except (OSError, TimeoutError) as exc:
            raise TargetError(f"cannot join {server} at {url}/rtc: {exc}") from exc
        if first.WhichOneof("message") != "join":
            raise TargetError(f"{server} answered the join with {first.WhichOneof('message')}")
        return cls(ws, identity, first.join, server)

    async def _send(self, **fields: Any) -> None:
        await self.ws.send(rtc.SignalRequest(**fields).SerializeToString())

    async def _read_loop(self) -> None:
        try:
            async for raw in self.ws:
                if isinstance(raw, str):
                    continue
                message = rtc.SignalResponse.FromString(raw)
                kind = message.WhichOneof("message")
                log.debug("< %s %s", self.identity, kind)
                if kind == "answer" and self._answer is not None and not self._answer.done():
                    self._answer.set_result(message.answer)
                elif kind == "offer":
                    await self._on_offer(message.offer)
                elif kind == "track_published":
                    future = self._published.get(message.track_published.cid)
                    if future is not None and not future.done():
                        future.set_result(message.track_published.track)
                elif kind == "trickle":
                    await self._on_trickle(message.trickle)
                elif kind == "leave":
                    log.warning("x %s asked %s to leave", self.server, self.identity)
        except websockets.ConnectionClosed:
            pass

    async def _on_offer(self, offer: rtc.SessionDescription) -> None:
        if self._reoffer is None:
            await self._offers.put(offer)
            return
        answer = self._reoffer(offer.sdp)
        await self._send(answer=rtc.SessionDescription(type="answer", sdp=answer, id=offer.id))

    async def _on_trickle(self, trickle: rtc.TrickleRequest) -> None:
        init = json.loads(trickle.candidateInit) if trickle.candidateInit else {}
        # livekit-server sends its last candidate and ``final`` in one message.
        lines: list[str | None] = [init["candidate"]] if init.get("candidate") else []
        if trickle.final:
            lines.append(None)
        sink = self._sinks.get(trickle.target)
        if sink is None:
            self._early.setdefault(trickle.target, []).extend(lines)
            return
        for line in lines:
            await sink(line)

    async def _ping_loop(self) -> None:
        interval = self.join.ping_interval or 5
        while True:
            await asyncio.sleep(interval)
            now_ms = int(time.time() * 1000)
            try:
                await self._send(ping_req=rtc.Ping(timestamp=now_ms))
            except websockets.ConnectionClosed:
                return

    async def on_remote_candidate(self, role: str, sink: CandidateSink) -> None:
        target = rtc.SignalTarget.PUBLISHER if role == "publisher" else rtc.SignalTarget.SUBSCRIBER
        self._sinks[target] = sink
        for line in self._early.pop(target, []):
            await sink(line)

    def on_reoffer(self, handler: OfferHandler) -> None:
        self._reoffer = handler
        if not self._offers.empty():
            # Offers that came while the first one was being answered: answer them in order.
            self._drain = asyncio.create_task(self._answer_queued())

    async def _answer_queued(self) -> None:
        while not self._offers.empty():
            await self._on_offer(self._offers.get_nowait())

    async def publish(self, offer_sdp: str, sources: tuple[str, ...]) -> PublishResult:
        loop = asyncio.get_running_loop()
        sections = parse_sdp(offer_sdp).media
        for source, section in zip(sources, sections, strict=True):
            msid = next(line for line in section.lines if line.startswith("a=msid:"))
            cid = msid.split()[-1]
            kind, track_source = SOURCE[source]
            width, height = DIMENSIONS.get(source, (0, 0))
            self._published[cid] = loop.create_future()
            await self._send(
                add_track=rtc.AddTrackRequest(
                    cid=cid, name=source, type=kind, source=track_source, width=width, height=height
                )
            )
        try:
            await asyncio.wait_for(asyncio.gather(*self._published.values()), REQUEST_TIMEOUT_S)
            self._answer = loop.create_future()
            await self._send(
                offer=rtc.SessionDescription(type="offer", sdp=offer_sdp, id=next(self._ids))
            )
            answer = await asyncio.wait_for(self._answer, REQUEST_TIMEOUT_S)
        except TimeoutError as exc:
            raise TargetError(
                f"{self.server} did not accept the tracks of {self.identity}"
            ) from exc
        return PublishResult(answer_sdp=answer.sdp, feed=self.identity)

    async def subscribe(self, feeds: tuple[str, ...]) -> str:
        # auto_subscribe=1: the server offers every published track by itself.
        try:
            offer = await asyncio.wait_for(self._offers.get(), REQUEST_TIMEOUT_S)
        except TimeoutError as exc:
            raise TargetError(f"{self.server} sent {self.identity} no subscriber offer") from exc
        self._subscriber_offer_id = offer.id
        return offer.sdp

    async def answer_subscription(self, answer_sdp: str) -> None:
        await self._send(
            answer=rtc.SessionDescription(
                type="answer", sdp=answer_sdp, id=self._subscriber_offer_id
            )
        )

    async def close(self) -> None:
        self._pinger.cancel()
        with contextlib.suppress(websockets.ConnectionClosed):
            await self._send(
                leave=rtc.LeaveRequest(reason=models.DisconnectReason.CLIENT_INITIATED)
            )
        await self.ws.close()
        self._reader.cancel()
