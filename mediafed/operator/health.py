"""``GET /healthz``: the node answers, with its version and, when it runs media,
how many rooms and participants it holds; front-ends add sections of their own
(``HEALTH_SECTIONS_KEY``: the relay links and their state)."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from mediafed import __version__
from mediafed.media import RoomManager

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
