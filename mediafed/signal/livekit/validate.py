"""``/rtc/validate`` and the v1 endpoints mediafed does not serve.

livekit-client asks ``/rtc/validate`` (same query as ``/rtc``) after a failed
WebSocket connection to learn why; it shows the body to the user. Clients
(livekit-client >= 2.17, Python ``livekit`` 1.2) try the single-peer-connection
protocol at ``/rtc/v1`` first and fall back to ``/rtc`` (v0) on HTTP 404 — the
404 must carry ``Access-Control-Allow-Origin: *`` so a browser can read it, and
must not say "requested room does not exist" (that makes clients give up).
See REFERENCES.md, "LiveKit client protocol".
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from aiohttp import web

from mediafed.errors import AuthError
from mediafed.signal.livekit.auth import CORS_HEADERS, verify_join

log = logging.getLogger(__name__)

V1_NOT_SERVED = (
    "mediafed serves the LiveKit signal protocol v0 only (two peer connections); "
    "connect to /rtc instead of /rtc/v1"
)


async def _v1_not_served(request: web.Request) -> web.Response:
    return web.Response(status=404, text=V1_NOT_SERVED, headers=CORS_HEADERS)


async def _preflight(request: web.Request) -> web.Response:
    return web.Response(status=204, headers=CORS_HEADERS)


def add_validate_routes(app: web.Application, keys: Mapping[str, str]) -> None:
    """Serve ``/rtc/validate`` (tokens checked against ``keys``) and the v1 404s."""

    async def validate(request: web.Request) -> web.Response:
        try:
            _claims, room = verify_join(request, keys)
        except AuthError as exc:
            log.info("x validate refused: %s", exc)
            return web.Response(status=401, text=str(exc), headers=CORS_HEADERS)
        log.debug("< validate ok room=%s", room)
        return web.Response(text="success", headers=CORS_HEADERS)

    app.router.add_get("/rtc/validate", validate)
    app.router.add_route("OPTIONS", "/rtc/validate", _preflight)
    for path in ("/rtc/v1", "/rtc/v1/validate"):
        app.router.add_get(path, _v1_not_served)
        app.router.add_route("OPTIONS", path, _preflight)
