"""A development-only token endpoint for the web-demo's join form.

``GET /dev/token?room=R&name=N[&identity=I]`` answers ``{"token", "identity",
"room"}``: a join token (LiveKit claims, see :mod:`.tokens`) signed with the
first configured key. It exists only when ``[server] dev = true``
(``mediafed serve --dev``); production deployments hand out tokens through
their own service (the Rocket.Chat App, the Matrix focus, ``mediafed token``).
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Mapping

from aiohttp import web

from mediafed.signal.livekit.tokens import VideoGrant, mint_token

log = logging.getLogger(__name__)

MAX_FIELD = 128
DEV_TOKEN_TTL_S = 6 * 3600
_SLUG = re.compile(r"[^a-z0-9]+")


def _bad(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


def _identity_for(name: str) -> str:
    slug = _SLUG.sub("-", name.lower()).strip("-")[:32] or "guest"
    return f"{slug}-{secrets.token_hex(3)}"


def add_dev_token_route(app: web.Application, keys: Mapping[str, str]) -> None:
    """Serve ``GET /dev/token``, tokens signed with the first of ``keys``; only a
    node in dev mode adds it."""

    async def dev_token(request: web.Request) -> web.Response:
        room = request.query.get("room", "").strip()
        name = request.query.get("name", "").strip()
        identity = request.query.get("identity", "").strip()
        if not room:
            return _bad("give a room name: /dev/token?room=NAME&name=YOUR_NAME")
        for label, value in (("room", room), ("name", name), ("identity", identity)):
            if len(value) > MAX_FIELD:
                return _bad(f"{label} is longer than {MAX_FIELD} characters; shorten it")
        if not keys:
            return web.json_response(
                {"error": "no API keys configured; start with --dev or add [keys]"}, status=503
            )
        api_key, secret = next(iter(keys.items()))
        identity = identity or _identity_for(name)
        token = mint_token(
            api_key,
            secret,
            identity=identity,
            name=name or identity,
            video=VideoGrant(room_join=True, room=room, can_update_own_metadata=True),
            ttl_s=DEV_TOKEN_TTL_S,
        )
        log.info("> dev token room=%s identity=%s", room, identity)
        return web.json_response(
            {"token": token, "identity": identity, "room": room},
            headers={"Cache-Control": "no-store"},
        )

    app.router.add_get("/dev/token", dev_token)
