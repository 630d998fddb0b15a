"""Composition root: configuration -> objects -> one running node.

The HTTP port carries signaling, the APIs, ``/healthz`` and the web-demo; the
media worker owns the UDP port. Front-ends add their routes through
:func:`build_app`'s ``extensions`` so this module stays the only place that
knows them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path

from aiohttp import web

from mediafed import __version__
from mediafed.config import Config

log = logging.getLogger(__name__)

Extension = Callable[[web.Application, Config], Awaitable[None] | None]
"""Adds routes, startup and cleanup hooks of one front-end to the app."""

CONFIG_KEY = web.AppKey("config", Config)
_extensions: list[Extension] = []


def register_extension(extension: Extension) -> Extension:
    """Declare a front-end; :func:`build_app` applies every one registered."""
    _extensions.append(extension)
    return extension


def static_dir() -> Path | None:
    """Where the built web-demo lives inside the installed package, if built."""
    path = Path(str(resources.files("mediafed") / "static" / "web-demo"))
    return path if (path / "index.html").is_file() else None


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "version": __version__})


async def _index(request: web.Request) -> web.StreamResponse:
    root = static_dir()
    if root is None:
        return web.Response(
            status=503,
            text="the web-demo is not built; run `npm --prefix web-demo ci && "
            "npm --prefix web-demo run build`",
        )
    return web.FileResponse(root / "index.html")


async def build_app(config: Config, extensions: list[Extension] | None = None) -> web.Application:
    app = web.Application(client_max_size=1 << 20)
    app[CONFIG_KEY] = config
    app.router.add_get("/healthz", _healthz)
    for extension in [*_extensions, *(extensions or [])]:
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
    """Run one node until SIGINT/SIGTERM."""
    app = await build_app(config)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.server.bind, config.server.http_port)
    await site.start()
    log.info(
        "- mediafed %s listening on http://%s:%d (media UDP %d)",
        __version__,
        config.server.bind,
        config.server.http_port,
        config.rtc.udp_port,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        log.info("- shutting down")
        await runner.cleanup()
