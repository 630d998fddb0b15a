"""``GET /healthz``: the node answers, with its version and, when it runs media,
how many rooms and participants it holds."""

from __future__ import annotations

from aiohttp import web

from mediafed import __version__
from mediafed.media import RoomManager


def add_health_route(app: web.Application, rooms: RoomManager | None = None) -> None:
    """Serve ``/healthz`` on ``app``; ``rooms`` when this node runs a media worker."""

    async def healthz(request: web.Request) -> web.Response:
        body: dict[str, object] = {"status": "ok", "version": __version__}
        if rooms is not None:
            body["rooms"] = len(rooms.rooms())
            body["participants"] = sum(room.num_participants for room in rooms.rooms())
        return web.json_response(body)

    app.router.add_get("/healthz", healthz)
