"""A running mediafed node with the LiveKit front-end and the real room core, for e2e tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import web

from mediafed import server
from mediafed.config import Config, load_config
from mediafed.media import RoomManager
from mediafed.signal.livekit.tokens import VideoGrant, mint_token
from mediafed.worker import Worker

API_KEY = "e2ekey"
API_SECRET = "e2e-secret-" + "x" * 24


@dataclass
class LiveNode:
    config: Config
    rooms: RoomManager
    worker: Worker
    http_port: int
    host: str
    app: web.Application

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.http_port}"

    def token(self, identity: str, room: str = "call", **grant: object) -> str:
        return mint_token(
            API_KEY,
            API_SECRET,
            identity=identity,
            name=identity.title(),
            video=VideoGrant(room_join=True, room=room, **grant),  # type: ignore[arg-type]
        )


@asynccontextmanager
async def live_node(
    node_ip: str,
    *,
    dev: bool = False,
    settings: dict[str, str] | None = None,
    extensions: Sequence[Callable[[RoomManager], server.Extension]] = (),
) -> AsyncIterator[LiveNode]:
    """HTTP on every address of the test namespace; media UDP and candidates on
    ``node_ip``; ``settings`` are more ``MEDIAFED_*`` variables; ``extensions``
    make more front-ends (besides LiveKit's) on the node's rooms."""
    config = load_config(
        dev=dev,
        environ={
            "MEDIAFED_KEYS": f"{API_KEY}: {API_SECRET}",
            # the media socket binds the advertised address: bound to 0.0.0.0 it would
            # answer 127.0.0.2 traffic from 127.0.0.1 and ICE would never pair
            "MEDIAFED_SERVER_BIND": node_ip,
            "MEDIAFED_RTC_UDP_PORT": "0",
            "MEDIAFED_RTC_TCP_PORT": "0",
            "MEDIAFED_RTC_NODE_IP": node_ip,
        }
        | (settings or {}),
    )
    worker = Worker.from_config(config)
    rooms = worker.rooms
    await worker.start()
    app = await server.build_app(
        config,
        extensions=[server.livekit_extension(rooms), *(make(rooms) for make in extensions)],
    )
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "0.0.0.0", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield LiveNode(config, rooms, worker, port, node_ip, app)
    finally:
        await runner.cleanup()
        await worker.stop()
