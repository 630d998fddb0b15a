"""Who may use the call API: ``Authorization: Bearer <HS256 JWT>``, as LiveKit's
server APIs take it.

The token is signed with an API key pair of this node and carries the grant the
endpoint needs: ``roomCreate`` (create a call), ``roomList`` (list and read
calls and bridges) or ``roomAdmin`` (join links, end a call, change bridges).
"""

from __future__ import annotations

from collections.abc import Mapping

from mediafed.errors import AuthError
from mediafed.signal.livekit.tokens import Claims, verify_token

GRANTS = {"room_create": "roomCreate", "room_list": "roomList", "room_admin": "roomAdmin"}
"""The grants the call API checks: VideoGrant field -> claim name."""


class GrantError(AuthError):
    """A valid token without the grant an endpoint needs (HTTP 403)."""


def authorize(header: str, keys: Mapping[str, str], grant: str) -> Claims:
    """The claims of an ``Authorization`` header value whose token has ``grant``.

    AuthError (HTTP 401) when the token is missing or does not verify;
    GrantError (HTTP 403) when it lacks the grant.
    """
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError(
            "send 'Authorization: Bearer <JWT>' signed with an API key pair of this server "
            "(grants roomCreate, roomList, roomAdmin)"
        )
    if not keys:
        raise AuthError("this server has no API keys configured; add a [keys] entry")
    claims = verify_token(token.strip(), keys)
    if not getattr(claims.video, grant):
        raise GrantError(
            f"the token lacks the {GRANTS[grant]} grant; mint it with "
            "VideoGrant(room_create=True, room_list=True, room_admin=True)"
        )
    return claims
