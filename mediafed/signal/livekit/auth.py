"""Access-token handling shared by the LiveKit front-end's HTTP and WebSocket endpoints.

LiveKit clients send the token as the ``access_token`` query parameter (JS) or
an ``Authorization: Bearer`` header (Python, Rust SDKs); see livekit/livekit
``pkg/service/auth.go``. Verification itself is :func:`.tokens.verify_token`.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from mediafed.signal.livekit.tokens import Claims, require_room_join, verify_token

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Headers": "Authorization, Content-Type",
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
}


def token_from_request(request: web.Request) -> str:
    """The bearer token of a request: header first, then ``access_token``."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.query.get("access_token", "")


def verify_request(request: web.Request, keys: Mapping[str, str]) -> Claims:
    """The verified claims of a request, or :class:`~mediafed.errors.AuthError`."""
    return verify_token(token_from_request(request), keys)


def verify_join(request: web.Request, keys: Mapping[str, str]) -> tuple[Claims, str]:
    """Claims and room name of a join request, or AuthError saying why not."""
    claims = verify_request(request, keys)
    return claims, require_room_join(claims)
