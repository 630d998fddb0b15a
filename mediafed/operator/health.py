"""``GET /healthz``: the node answers, with its version and, when it runs media,
how many rooms and participants it holds; front-ends add sections of their own
(``HEALTH_SECTIONS_KEY``: the relay links and their state)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import web

from mediafed import __version__

if TYPE_CHECKING:
    from mediafed.media import RoomManager
    from mediafed.worker import Worker

WORKER_PATH = "/_mediafed/worker"
"""What one worker of a node with several tells its supervisor (its Unix socket only)."""

HEALTH_SECTIONS_KEY = web.AppKey("health_sections", dict[str, Callable[[], object]])
"""Name -> what to show under it (JSON-ready), asked at each request."""


def add_health_route(app: web.Application, rooms: RoomManager | None = None) -> None:
    """Serve ``/healthz`` on ``app``; ``rooms`` when this node runs a media worker."""

    async def healthz(request: web.Request) -> web.Response:
        body: dict[str, object] = {"status": "ok", "version": __version__}
        if rooms is not None:
            body["rooms"] = len(rooms.rooms())
            body["participants"] = sum(room.num_participants for room in rooms.rooms())
        for name, section in request.app.get(HEALTH_SECTIONS_KEY, {}).items():
            body[name] = section()
        return web.json_response(body)

    app.router.add_get("/healthz", healthz)


def add_worker_route(app: web.Application, index: int, worker: Worker) -> None:
    """Serve :data:`WORKER_PATH`: this worker's index, process, ports and rooms
    (name -> participants), polled by the supervisor to place rooms."""

    async def report(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "index": index,
                "pid": os.getpid(),
                "udp_port": worker.udp_port,
                "tcp_port": worker.tcp_port,
                "rooms": {room.name: room.num_participants for room in worker.rooms.rooms()},
            }
        )

    app.router.add_get(WORKER_PATH, report)
