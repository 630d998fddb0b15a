"""Composition root: configuration -> objects -> one running node.

The HTTP port carries signaling, the APIs, ``/healthz`` and the web-demo; the
media worker (:class:`~mediafed.worker.Worker`) owns the UDP port and drives the
rooms. This is the one module that knows every front-end and wires them to the
room core.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path

from aiohttp import web

from mediafed import __version__
from mediafed.config import Config
from mediafed.media import Room, RoomManager, events
from mediafed.tokens import MIN_SECRET_LENGTH
from mediafed.worker import Worker

log = logging.getLogger(__name__)

Extension = Callable[[web.Application, Config], Awaitable[None] | None]
"""Adds the routes, startup and cleanup hooks of one front-end to the app."""

CONFIG_KEY = web.AppKey("config", Config)
ROOMS_KEY = web.AppKey("rooms", RoomManager)


def static_dir() -> Path | None:
    """Where the built web-demo lives inside the installed package, if built."""
    path = Path(str(resources.files("mediafed") / "static" / "web-demo"))
    return path if (path / "index.html").is_file() else None


async def _healthz(request: web.Request) -> web.Response:
    body: dict[str, object] = {"status": "ok", "version": __version__}
    rooms = request.app.get(ROOMS_KEY)
    if rooms is not None:
        body["rooms"] = len(rooms.rooms())
        body["participants"] = sum(room.num_participants for room in rooms.rooms())
    return web.json_response(body)


async def _index(request: web.Request) -> web.StreamResponse:
    root = static_dir()
    if root is None:
        return web.Response(
            status=503,
            text="the web-demo is not built; run `npm --prefix web-demo ci && "
            "npm --prefix web-demo run build`",
        )
    return web.FileResponse(root / "index.html")


def front_ends(rooms: RoomManager) -> list[Extension]:
    """Every front-end of a full node, wired to ``rooms``."""
    from mediafed.api.calls import CALL_SERVICE_KEY, setup_calls_api
    from mediafed.matrix.frontend import setup_matrix
    from mediafed.signal.livekit import setup_livekit

    def livekit(app: web.Application, config: Config) -> None:
        setup_livekit(app, config, rooms)

    def calls(app: web.Application, config: Config) -> None:
        setup_calls_api(app, config)
        service = app[CALL_SERVICE_KEY]

        async def close_room(room: str) -> bool:
            return await rooms.delete(room, "call ended")

        service.on_call_ended = close_room

        def observe(room: Room, event: events.RoomEvent) -> None:
            if isinstance(event, events.ParticipantJoined):
                service.participant_joined(
                    room.name, event.participant.identity, event.participant.name
                )
            elif isinstance(event, events.ParticipantLeft):
                service.participant_left(
                    room.name, event.participant.identity, event.participant.name
                )
            elif isinstance(event, events.RoomClosed):
                service.room_finished(room.name)

        rooms.add_observer(observe)

    def matrix(app: web.Application, config: Config) -> None:
        service = app.get(CALL_SERVICE_KEY)  # set by `calls`, which runs first
        setup_matrix(
            app,
            config,
            config.matrix,
            rooms=rooms,
            on_call_started=service.call_started_elsewhere if service is not None else None,
        )

    return [livekit, calls, matrix]


async def build_app(
    config: Config,
    extensions: list[Extension] | None = None,
    *,
    worker: Worker | None = None,
) -> web.Application:
    """The HTTP application. With ``worker``, the media worker starts and stops with it."""
    app = web.Application(client_max_size=1 << 20)
    app[CONFIG_KEY] = config
    if worker is not None:
        from mediafed.api.metrics import setup_metrics

        app[ROOMS_KEY] = worker.rooms
        media = worker
        setup_metrics(app, worker)

        async def start_media(app: web.Application) -> None:
            await media.start()

        async def stop_media(app: web.Application) -> None:
            await media.stop()

        app.on_startup.append(start_media)
        app.on_cleanup.append(stop_media)
    app.router.add_get("/healthz", _healthz)
    for extension in extensions or []:
        result = extension(app, config)
        if result is not None:
            await result
    root = static_dir()
    app.router.add_get("/", _index)
    if root is not None:
        app.router.add_static("/assets/", root / "assets", show_index=False)
    return app


def install_event_loop_policy() -> None:
    """uvloop wherever it is installed; the plain asyncio loop otherwise."""
    try:
        import uvloop
    except ImportError:
        log.info("- uvloop not installed; using the asyncio event loop")
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def serve(config: Config, *, ready: asyncio.Event | None = None) -> None:
    """Run one node (HTTP + one media worker) until SIGINT/SIGTERM."""
    for key, secret in config.keys.items():
        if len(secret) < MIN_SECRET_LENGTH and not config.server.dev:
            log.warning(
                "x API secret of key %r is %d characters; use %d or more (e.g. `openssl rand "
                "-hex 32`) or anyone who guesses it can mint tokens",
                key,
                len(secret),
                MIN_SECRET_LENGTH,
            )
    worker = Worker.from_config(config)
    app = await build_app(config, front_ends(worker.rooms), worker=worker)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.server.bind, config.server.http_port)
    await site.start()
    log.info(
        "- mediafed %s listening on http://%s:%d (media UDP %d, advertised %s)",
        __version__,
        config.server.bind,
        config.server.http_port,
        worker.udp_port,
        config.advertised_ips(),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    # Everything built so far lives as long as the process: keep the cyclic
    # garbage collector from walking it again and again (pauses on the media path).
    gc.collect()
    gc.freeze()
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        log.info("- shutting down")
        await runner.cleanup()
