"""The public HTTP port of a node with several workers.

Every request reaches one worker over its Unix socket, chosen by what it is
about:

- a LiveKit join (``/rtc``, ``/rtc/v1``, and their ``validate`` probes): the
  worker hosting the room its token names, placed on first sight; the
  WebSocket's frames are relayed both ways, unchanged, until either side closes;
- RoomService: ``ListRooms`` asks every worker and joins their answers,
  ``CreateRoom`` places the room, every other method goes to the room's worker;
- ``/metrics`` sums every worker's samples and adds one gauge set per worker;
  ``/healthz`` lists the workers, their state and rooms;
- everything else (the web-demo, the Matrix appservice and focus, the call API,
  dev tokens) goes to the home worker, which runs those front-ends.

A request that names no room, or whose token does not verify, goes to the home
worker too, which answers it (and its error) as a single-process node would.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import WSMsgType, web
from google.protobuf import json_format
from livekit.protocol import room as room_pb
from prometheus_client import CollectorRegistry, Metric, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from mediafed import __version__
from mediafed.cluster.placement import HOME, Placement
from mediafed.errors import AuthError, DirectoryError
from mediafed.operator.health import WORKER_PATH
from mediafed.operator.metrics import CONTENT_TYPE
from mediafed.operator.twirp_protocol import PREFIX, TwirpError, parse_request, room_of
from mediafed.signal.livekit.auth import verify_request
from mediafed.signal.livekit.tokens import HOME_CLAIM

if TYPE_CHECKING:  # redis is imported only by a node that has [redis] url
    from mediafed.cluster.nodes import NodeDirectory, NodeInfo

log = logging.getLogger(__name__)

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)
WS_HANDSHAKE = frozenset({"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions"})
JOIN_PATHS = ("/rtc", "/rtc/v1")
VALIDATE_PATHS = ("/rtc/validate", "/rtc/v1/validate")
WORKER_TIMEOUT_S = 10.0
MAX_FRAME_BYTES = 1 << 20
"""The largest signaling frame relayed (the workers' own limit is no larger)."""


@dataclass(slots=True)
class WorkerLink:
    """How the supervisor reaches one worker: its Unix socket, and what it knows of it."""

    index: int
    socket_path: str
    session: aiohttp.ClientSession | None = None
    pid: int = 0
    udp_port: int = 0
    tcp_port: int = 0
    restarts: int = 0
    up: bool = False
    health: dict[str, Any] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://worker{self.index}"

    @property
    def name(self) -> str:
        return f"worker {self.index}"

    def client(self) -> aiohttp.ClientSession:
        if self.session is None or self.session.closed:
            self.session = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=self.socket_path),
                auto_decompress=False,
                timeout=aiohttp.ClientTimeout(total=None, connect=WORKER_TIMEOUT_S),
            )
        return self.session

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()


@dataclass(slots=True)
class RemoteNode:
    """Another node of the Redis cluster, reached at its URL."""

    id: str
    base: str
    session: aiohttp.ClientSession

    @property
    def name(self) -> str:
        return f"node {self.id}"

    def client(self) -> aiohttp.ClientSession:
        return self.session


Upstream = WorkerLink | RemoteNode
VIA = "X-Mediafed-Via"
"""Set on requests one node passes to another: the receiver serves them itself."""


def _forwarded_headers(request: web.Request, *, websocket: bool = False) -> dict[str, str]:
    headers = {
        name: value
        for name, value in request.headers.items()
        if name.lower() not in HOP_BY_HOP and not (websocket and name.lower() in WS_HANDSHAKE)
    }
    if request.remote:
        prior = request.headers.get("X-Forwarded-For")
        headers["X-Forwarded-For"] = f"{prior}, {request.remote}" if prior else request.remote
    return headers


def _response_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {name: value for name, value in headers.items() if name.lower() not in HOP_BY_HOP}


class Proxy:
    """Routes the public port's requests to the workers (see the module's text)."""

    def __init__(
        self,
        workers: Sequence[WorkerLink],
        placement: Placement,
        keys: Mapping[str, str],
        *,
        clock: Callable[[], float] = time.monotonic,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        nodes: NodeDirectory | None = None,
    ) -> None:
        self.workers = workers
        self.nodes = nodes
        """Other nodes, with ``[redis] url``; None: this node alone."""
        self._remote: aiohttp.ClientSession | None = None
        self.placement = placement
        self.keys = keys
        self.clock = clock
        self.max_frame_bytes = max_frame_bytes
        self.sockets: set[web.WebSocketResponse] = set()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 20)
        for path in JOIN_PATHS:
            app.router.add_get(path, self.join)
        for path in VALIDATE_PATHS:
            app.router.add_route("*", path, self.validate)
        app.router.add_post(PREFIX + "{method}", self.twirp)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_route("*", "/{tail:.*}", self.home)
        app.on_shutdown.append(self._close_sockets)
        return app

    # ---- placement -----------------------------------------------------------

    async def refresh(self) -> None:
        """Ask every worker what it holds (each second, and before placing a room)."""
        await asyncio.gather(*(self._refresh_one(link) for link in self.workers))

    async def _refresh_one(self, link: WorkerLink) -> None:
        if not link.up:
            return
        try:
            async with link.client().get(
                link.base + WORKER_PATH, timeout=aiohttp.ClientTimeout(total=2)
            ) as response:
                report = await response.json()
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            log.info("x worker %d did not report: %s", link.index, exc)
            return
        rooms = {str(name): int(count) for name, count in report.get("rooms", {}).items()}
        self.placement.report(link.index, rooms, self.clock())

    async def _worker_for_room(self, room: str, *, home: bool = False) -> int:
        worker = self.placement.worker_of(room)
        if worker is None:
            await self.refresh()  # a worker may hold it already (made in-process)
            worker = self.placement.place(room, self.clock(), home=home)
            log.info("- room %s placed on worker %d", room, worker)
        return worker

    def _remote_node(self, node: NodeInfo) -> RemoteNode:
        if self._remote is None or self._remote.closed:
            self._remote = aiohttp.ClientSession(
                auto_decompress=False,
                timeout=aiohttp.ClientTimeout(total=None, connect=WORKER_TIMEOUT_S),
            )
        return RemoteNode(node.id, node.url.rstrip("/"), self._remote)

    async def _upstream(
        self, request: web.Request, room: str, *, home: bool = False, place: bool = True
    ) -> Upstream | None:
        """Where requests about ``room`` go: a worker here or, with Redis, the node
        hosting it; ``place``: choose one for a new room (else None for a room
        nobody hosts)."""
        worker = self.placement.worker_of(room)
        if worker is not None:
            return self.workers[worker]
        if self.nodes is not None and VIA not in request.headers:
            try:
                if place:
                    node: NodeInfo | None = await self.nodes.place(room, here=home)
                else:
                    node = (await self.nodes.nodes()).get(await self.nodes.owner(room) or "")
            except DirectoryError as exc:
                log.warning("x %s; placing room %s on this node", exc, room)
                node = None
            if node is not None and node.id != self.nodes.id:
                return self._remote_node(node)
        if place:
            return self.workers[await self._worker_for_room(room, home=home)]
        await self.refresh()
        worker = self.placement.worker_of(room)
        return None if worker is None else self.workers[worker]

    async def _join_target(self, request: web.Request) -> tuple[Upstream, str]:
        """Where a join or validate request goes, and its room ("" if none)."""
        try:
            claims = verify_request(request, self.keys)
        except AuthError:
            return self.workers[HOME], ""  # the home worker answers why not
        room = claims.video.room if claims.video.room_join else ""
        if not room:
            return self.workers[HOME], ""
        home = claims.raw.get(HOME_CLAIM) is True
        upstream = await self._upstream(request, room, home=home)
        assert upstream is not None
        return upstream, room

    # ---- LiveKit signaling ---------------------------------------------------

    async def join(self, request: web.Request) -> web.StreamResponse:
        link, room = await self._join_target(request)
        local = isinstance(link, WorkerLink)
        release = self.placement.hold(room) if room and local else (lambda: None)
        try:
            return await self._relay_websocket(request, link)
        finally:
            release()

    async def _relay_websocket(self, request: web.Request, link: Upstream) -> web.StreamResponse:
        client = web.WebSocketResponse(
            max_msg_size=self.max_frame_bytes, autoping=True, compress=False
        )
        if not client.can_prepare(request).ok:
            # not a WebSocket request: the worker answers it as a single node would
            return await self._relay_http(request, link)
        url = link.base + request.path_qs
        try:
            upstream = await link.client().ws_connect(
                url,
                headers=self._headers(request, link, websocket=True),
                autoping=True,
                max_msg_size=self.max_frame_bytes,
            )
        except aiohttp.WSServerHandshakeError:
            # The worker refused before the upgrade (a bad token or join request):
            # ask again without it, to pass on its status and reason.
            return await self._relay_http(request, link)
        except aiohttp.ClientError as exc:
            return _unavailable(link, exc)
        try:
            await client.prepare(request)
        except BaseException:
            await upstream.close()
            raise
        self.sockets.add(client)
        try:
            to_worker = asyncio.ensure_future(_pump(client, upstream))
            to_client = asyncio.ensure_future(_pump(upstream, client))
            done, _ = await asyncio.wait(
                {to_worker, to_client}, return_when=asyncio.FIRST_COMPLETED
            )
            if to_client in done:
                # the worker closed (or died): close the client the same way
                code = upstream.close_code or aiohttp.WSCloseCode.GOING_AWAY
                await client.close(code=code, message=b"")
                to_worker.cancel()
            else:
                await upstream.close(code=client.close_code or 1000)
                to_client.cancel()
            await asyncio.gather(to_worker, to_client, return_exceptions=True)
        finally:
            self.sockets.discard(client)
            if not upstream.closed:
                await upstream.close()
        return client

    async def validate(self, request: web.Request) -> web.StreamResponse:
        link, _ = await self._join_target(request)
        return await self._relay_http(request, link)

    # ---- RoomService ---------------------------------------------------------

    async def twirp(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["method"]
        body = await request.read()
        if name == "ListRooms":
            return await self._list_rooms(request, body)
        link: Upstream | None = None
        try:
            message = parse_request(name, body, as_json=request.content_type == "application/json")
        except TwirpError:
            message = None  # the home worker answers the error
        if message is not None and (room := room_of(name, message)):
            link = await self._upstream(request, room, place=name == "CreateRoom")
        # nobody hosts the room: the home worker answers not_found
        return await self._relay_http(request, link or self.workers[HOME], body=body)

    async def _list_rooms(self, request: web.Request, body: bytes) -> web.StreamResponse:
        """Every worker's rooms (and every node's, with Redis), in one answer (the
        first error, if any refuses)."""
        links: list[Upstream] = [link for link in self.workers if link.up]
        if self.nodes is not None and VIA not in request.headers:
            try:
                others = await self.nodes.nodes()
            except DirectoryError as exc:
                log.warning("x ListRooms: %s; this node's rooms only", exc)
                others = {}
            links += [self._remote_node(n) for n in others.values() if n.id != self.nodes.id]
        answers = await asyncio.gather(
            *(self._call(link, request, body) for link in links), return_exceptions=True
        )
        merged = room_pb.ListRoomsResponse()
        as_json = request.content_type == "application/json"
        for answer in answers:
            if isinstance(answer, BaseException):
                log.info("x ListRooms: a worker or node did not answer: %s", answer)
                continue
            status, headers, data = answer
            if status != 200:
                return web.Response(status=status, body=data, headers=_response_headers(headers))
            part = room_pb.ListRoomsResponse()
            if as_json:
                json_format.Parse(data or b"{}", part, ignore_unknown_fields=True)
            else:
                part.ParseFromString(data)
            merged.rooms.extend(part.rooms)
        if as_json:
            return web.Response(
                text=json_format.MessageToJson(merged, preserving_proto_field_name=True),
                content_type="application/json",
            )
        return web.Response(body=merged.SerializeToString(), content_type="application/protobuf")

    # ---- operators -----------------------------------------------------------

    async def metrics(self, request: web.Request) -> web.Response:
        texts = await asyncio.gather(
            *(self._get_text(link, "/metrics") for link in self.workers if link.up)
        )
        registry = CollectorRegistry()
        registry.register(_Summed([text for text in texts if text], self.workers))
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE})

    async def healthz(self, request: web.Request) -> web.Response:
        bodies = await asyncio.gather(
            *(self._get_text(link, "/healthz") for link in self.workers if link.up)
        )
        merged: dict[str, Any] = {}
        for text in bodies:
            if not text:
                continue
            for name, value in json.loads(text).items():
                if name in ("status", "version", "rooms", "participants"):
                    continue
                if isinstance(value, list):
                    merged.setdefault(name, []).extend(value)
                else:
                    merged.setdefault(name, value)
        workers: list[dict[str, Any]] = []
        placed_on = self.placement.rooms_of
        for link in self.workers:
            load = self.placement.loads[link.index]
            workers.append(
                {
                    "index": link.index,
                    "up": link.up,
                    "pid": link.pid,
                    "udp_port": link.udp_port,
                    "tcp_port": link.tcp_port,
                    "restarts": link.restarts,
                    # reported, and placed here but not reported yet (0 participants)
                    "rooms": {
                        name: load.rooms.get(name, 0)
                        for name in sorted(set(load.rooms) | set(placed_on(link.index)))
                    },
                }
            )
        up = all(link.up for link in self.workers)
        if self.nodes is not None:
            try:
                nodes = await self.nodes.nodes()
                merged["node"] = self.nodes.id
                merged["nodes"] = [
                    dataclasses.asdict(n) for n in sorted(nodes.values(), key=lambda n: n.id)
                ]
            except DirectoryError as exc:
                merged["nodes_error"] = str(exc)
                up = False
        body: dict[str, Any] = {
            "status": "ok" if up else "degraded",
            "version": __version__,
            "rooms": sum(len(worker["rooms"]) for worker in workers),
            "participants": sum(load.participants for load in self.placement.loads),
            "workers": workers,
            **merged,
        }
        return web.json_response(body, status=200 if up else 503)

    # ---- the rest: the home worker -------------------------------------------

    async def home(self, request: web.Request) -> web.StreamResponse:
        return await self._relay_http(request, self.workers[HOME])

    # ---- plumbing ------------------------------------------------------------

    def _headers(
        self, request: web.Request, link: Upstream, *, websocket: bool = False
    ) -> dict[str, str]:
        headers = _forwarded_headers(request, websocket=websocket)
        if isinstance(link, RemoteNode) and self.nodes is not None:
            headers[VIA] = self.nodes.id
        return headers

    async def _call(
        self, link: Upstream, request: web.Request, body: bytes
    ) -> tuple[int, Mapping[str, str], bytes]:
        async with link.client().request(
            request.method,
            link.base + request.path_qs,
            headers=self._headers(request, link),
            data=body,
            allow_redirects=False,
        ) as response:
            return response.status, response.headers, await response.read()

    async def _relay_http(
        self, request: web.Request, link: Upstream, *, body: bytes | None = None
    ) -> web.StreamResponse:
        if body is None:
            body = await request.read()
        try:
            status, headers, data = await self._call(link, request, body)
        except aiohttp.ClientError as exc:
            return _unavailable(link, exc)
        return web.Response(status=status, body=data, headers=_response_headers(headers))

    async def _get_text(self, link: WorkerLink, path: str) -> str:
        try:
            async with link.client().get(
                link.base + path, timeout=aiohttp.ClientTimeout(total=5)
            ) as response:
                return await response.text()
        except (TimeoutError, aiohttp.ClientError) as exc:
            log.info("x worker %d %s: %s", link.index, path, exc)
            return ""

    async def _close_sockets(self, app: web.Application) -> None:
        for ws in list(self.sockets):
            await ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"server shutting down")
        if self._remote is not None:
            await self._remote.close()


async def _pump(
    source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    sink: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
) -> None:
    async for message in source:
        if message.type == WSMsgType.BINARY:
            await sink.send_bytes(message.data)
        elif message.type == WSMsgType.TEXT:
            await sink.send_str(message.data)
        else:
            break


def _unavailable(link: Upstream, exc: Exception) -> web.Response:
    log.warning("x %s unreachable: %s", link.name, exc)
    return web.Response(status=503, text=f"{link.name} is unavailable; try again")


class _Summed(Collector):
    """The workers' samples summed by name and labels (each is a count or a gauge of
    what that worker holds), and a few gauges per worker."""

    def __init__(self, texts: Sequence[str], workers: Sequence[WorkerLink]) -> None:
        self.texts = texts
        self.workers = workers

    def collect(self) -> Any:
        families: dict[str, Metric] = {}
        sums: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
        for text in self.texts:
            for family in text_string_to_metric_families(text):
                if family.name not in families:
                    families[family.name] = Metric(family.name, family.documentation, family.type)
                    sums[family.name] = {}
                for sample in family.samples:
                    if sample.name.endswith("_created"):
                        continue  # a timestamp, not a count
                    key = (sample.name, tuple(sorted(sample.labels.items())))
                    sums[family.name][key] = sums[family.name].get(key, 0.0) + sample.value
        for name, metric in families.items():
            for (sample_name, labels), value in sums[name].items():
                metric.add_sample(sample_name, dict(labels), value)
            yield metric
        up = Metric("mediafed_worker_up", "1 while a media worker runs", "gauge")
        restarts = Metric(
            "mediafed_worker_restarts", "Times a media worker was restarted", "counter"
        )
        for link in self.workers:
            worker = {"worker": str(link.index)}
            up.add_sample("mediafed_worker_up", worker, 1.0 if link.up else 0.0)
            restarts.add_sample("mediafed_worker_restarts_total", worker, float(link.restarts))
        yield up
        yield restarts
