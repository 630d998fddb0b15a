"""``/rtc/validate`` and ``/rtc/v1/validate``: why a signal connection failed.

livekit-client asks the validate path of the path it tried (same query) after
a failed WebSocket connection, and shows the body to the user: 401 for a bad
token, 400 for a malformed ``join_request``, ``success`` otherwise. Answers
carry ``Access-Control-Allow-Origin: *`` so a browser page can read them.
See REFERENCES.md, "LiveKit client protocol".
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from aiohttp import web

from mediafed.errors import AuthError, RemoteProtocolError
from mediafed.signal.livekit.auth import CORS_HEADERS, verify_join
from mediafed.signal.livekit.connect import from_join_request, with_join_fields

log = logging.getLogger(__name__)


async def _preflight(request: web.Request) -> web.Response:
    return web.Response(status=204, headers=CORS_HEADERS)


def add_validate_routes(app: web.Application, keys: Mapping[str, str]) -> None:
    """Serve ``/rtc/validate`` and ``/rtc/v1/validate`` (tokens checked against ``keys``)."""

    def check(request: web.Request, single: bool) -> web.Response:
        try:
            _claims, room = verify_join(request, keys)
            if single:
                with_join_fields(_claims, from_join_request(request.query.get("join_request", "")))
        except AuthError as exc:
            log.info("x validate refused: %s", exc)
            return web.Response(status=401, text=str(exc), headers=CORS_HEADERS)
        except RemoteProtocolError as exc:
            log.info("x validate refused: %s", exc)
            return web.Response(status=400, text=str(exc), headers=CORS_HEADERS)
        log.debug("< validate ok room=%s", room)
        return web.Response(text="success", headers=CORS_HEADERS)

    async def validate(request: web.Request) -> web.Response:
        return check(request, single=False)

    async def validate_v1(request: web.Request) -> web.Response:
        return check(request, single=True)

    app.router.add_get("/rtc/validate", validate)
    app.router.add_get("/rtc/v1/validate", validate_v1)
    for path in ("/rtc/validate", "/rtc/v1/validate"):
        app.router.add_route("OPTIONS", path, _preflight)
