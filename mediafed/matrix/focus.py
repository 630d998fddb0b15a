"""MatrixRTC focus: the token service Element Call asks before joining a LiveKit SFU.

Compatible with element-hq/lk-jwt-service (``requests.go``, ``handler.go``,
``helper.go``) and MSC4195 (MatrixRTC transport using LiveKit):

- ``POST /sfu/get`` ``{room, openid_token, device_id}`` (legacy): LiveKit
  identity ``@user:server:DEVICE``, room ``unpadded-base64(sha256(JSON
  [room, "m.call#ROOM"]))``;
- ``POST /get_token`` ``{room_id, slot_id, openid_token, member{id,
  claimed_user_id, claimed_device_id}}``: room ``b64(sha256(JSON [room_id,
  slot_id]))``, identity ``b64(sha256(JSON [user, device, member id]))``;
- both answer ``{url, jwt}``; ``/delegate_delayed_leave`` answers 404 (not
  supported); every path answers CORS preflights.

The OpenID token is checked with the user's homeserver (:mod:`.openid`);
errors are Matrix-style ``{"errcode", "error"}`` bodies.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from aiohttp import web

from mediafed.errors import AuthError, ConfigError, MediafedError, RemoteProtocolError
from mediafed.matrix.config import MatrixConfig
from mediafed.matrix.openid import (
    HomeserverNotAllowedError,
    OpenIDError,
    OpenIDVerifier,
    parse_server_name,
)
from mediafed.signal.livekit.tokens import HOME_CLAIM, VideoGrant, mint_token

log = logging.getLogger(__name__)

MAX_ISSUED = 100_000
"""Identities remembered as MatrixRTC clients (the oldest forgotten beyond)."""
RECONNECT_GRACE_S = 3600.0
"""A client keeps reconnecting with its token after it expires (LiveKit refreshes
tokens over the signal connection): it counts as a MatrixRTC client this long after."""


RoomMembers = Callable[[str], Awaitable[Mapping[str, str] | None]]
"""Matrix room id -> its joined members (user id -> display name), or None."""


class RoomNotStartedError(AuthError):
    """A user of another homeserver asked for a call no local user has started here."""

    status = 403
    errcode = "M_FORBIDDEN"


LEGACY_SLOT_ID = "m.call#ROOM"
"""The MatrixRTC slot ``/sfu/get`` implies (lk-jwt-service ``processLegacySFURequest``)."""
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Allow-Headers": (
        "Accept, Content-Type, Content-Length, Accept-Encoding, X-CSRF-Token, Authorization"
    ),
    "Access-Control-Max-Age": "86400",
}
_ATOB_UNSAFE = frozenset("-_")


class FocusRequestError(RemoteProtocolError):
    """A token request whose JSON body lacks or mistypes a field."""

    status = 400
    errcode = "M_BAD_JSON"


class NotJSONError(FocusRequestError):
    errcode = "M_NOT_JSON"


@dataclass(frozen=True, slots=True)
class OpenIDToken:
    access_token: str
    matrix_server_name: str
    token_type: str = "Bearer"


@dataclass(frozen=True, slots=True)
class FocusGrant:
    """What a verified request is entitled to: one LiveKit room, one identity."""

    room: str
    identity: str
    user_id: str
    local: bool = True
    """A user of this relay's homeserver: publishes here. Users of other homeservers
    publish on their own SFU and only subscribe here (MSC4195, multi-SFU)."""


def _go_json(values: Sequence[str]) -> bytes:
    """``json.Marshal([]string{...})`` byte for byte: Go escapes <, >, & and
    U+2028/U+2029 and writes other non-ASCII characters as UTF-8."""
    text = json.dumps(list(values), ensure_ascii=False, separators=(",", ":"))
    for char, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escaped)
    return text.encode("utf-8")


def _hash_b64(values: Sequence[str]) -> str:
    digest = hashlib.sha256(_go_json(values)).digest()
    return base64.b64encode(digest).decode("ascii").rstrip("=")


def livekit_room_alias(matrix_room_id: str, slot_id: str) -> str:
    """The LiveKit room of a MatrixRTC slot (lk-jwt-service ``LiveKitRoomAliasFor``).

    The room id goes in whole, whatever its room version's form
    (``!opaque:server`` or version 12's ``!hash``): it is never split."""
    return _hash_b64([matrix_room_id, slot_id])


def room_call_alias(matrix_room_id: str) -> str:
    """The mediafed room of a Matrix room's room-wide call (slot ``m.call#ROOM``).

    Element Call users (through this focus), classic ``m.call`` callers and the
    calls the call API opens for that Matrix room, or for a Rocket.Chat room
    linked to it, all meet here."""
    return livekit_room_alias(matrix_room_id, LEGACY_SLOT_ID)


def livekit_identity(user_id: str, device_id: str, member_id: str) -> str:
    """The LiveKit identity of a MatrixRTC member (lk-jwt-service ``LiveKitIdentityFor``)."""
    return _hash_b64([user_id, device_id, member_id])


def legacy_identity(user_id: str, device_id: str) -> str:
    """``/sfu/get``'s identity, which Element Call matches to ``sender:device_id``."""
    return f"{user_id}:{device_id}"


def payload_segment(token: str) -> str:
    return token.split(".")[1]


def atob_safe(token: str) -> bool:
    """Whether ``atob()`` (standard base64 only) can read the payload segment."""
    return not (_ATOB_UNSAFE & set(payload_segment(token)))


def mint_focus_token(
    api_key: str,
    api_secret: str,
    grant: FocusGrant,
    *,
    ttl_s: int = 3600,
    now: float | None = None,
) -> str:
    """A join token for one room. :func:`mediafed.signal.livekit.tokens.mint_token` escapes the
    few characters whose base64url form holds ``-``/``_``, so Element Call's
    ``atob()`` can read every payload."""
    video = VideoGrant(
        room_join=True,
        room=grant.room,
        can_publish=grant.local,
        can_subscribe=True,
        can_publish_data=grant.local,
        can_update_own_metadata=True,
        room_create=False,
    )
    return mint_token(
        api_key,
        api_secret,
        identity=grant.identity,
        video=video,
        name=grant.user_id,
        ttl_s=ttl_s,
        now=now,
        extra_claims={HOME_CLAIM: True},
    )


def livekit_ws_url(matrix: MatrixConfig, public_url: str, request: web.Request) -> str:
    """Where Element Call should open the LiveKit WebSocket."""
    if matrix.livekit_url:
        return matrix.livekit_url
    if public_url:
        parts = urlsplit(public_url)
        scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
        return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip()
    secure = forwarded == "https" if forwarded else request.secure
    return f"{'wss' if secure else 'ws'}://{request.host}"


# -- request bodies --


def _object(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise FocusRequestError(f"{what} must be a JSON object")
    return value


def _text(body: Mapping[str, Any], key: str, what: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise FocusRequestError(f"the request body is missing {what} (a non-empty string)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise FocusRequestError(f"{what} is not valid Unicode text") from None
    return value


def _openid_token(body: Mapping[str, Any]) -> OpenIDToken:
    raw = _object(body.get("openid_token"), "`openid_token`")
    access_token = _text(raw, "access_token", "`openid_token.access_token`")
    server_name = _text(raw, "matrix_server_name", "`openid_token.matrix_server_name`")
    token_type = raw.get("token_type", "Bearer")
    if not isinstance(token_type, str):
        raise FocusRequestError("`openid_token.token_type` must be a string")
    return OpenIDToken(access_token, server_name, token_type)


async def _json_body(request: web.Request) -> Mapping[str, Any]:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise NotJSONError("the request body is not JSON; send a JSON object") from None
    return _object(body, "the request body")


# -- the service --


class FocusService:
    """Turns a verified Matrix identity into a LiveKit join token for one room."""

    def __init__(
        self,
        matrix: MatrixConfig,
        verifier: OpenIDVerifier,
        *,
        keys: Mapping[str, str],
        public_url: str = "",
        room_exists: Callable[[str], bool] | None = None,
        room_members: RoomMembers | None = None,
    ) -> None:
        if not keys:
            raise ConfigError(
                "the Matrix focus needs an API key to sign tokens; add one under [keys]"
            )
        api_key = matrix.focus_api_key or next(iter(keys))
        if api_key not in keys:
            raise ConfigError(
                f"[matrix] focus_api_key {api_key!r} is not one of the [keys]; name an existing key"
            )
        self.matrix = matrix
        self.public_url = public_url
        """``[server] public_url``: the base of the LiveKit URL handed out, if set."""
        self.verifier = verifier
        self.room_exists = room_exists
        """Whether a LiveKit room is open here (None: not known, nothing refused)."""
        self.room_members = room_members if matrix.admit_room_members else None
        """The joined members of a Matrix room, as the bridge bot sees them (None: the
        bot is not in it), when ``admit_room_members`` is on."""
        self._api_key = api_key
        self._api_secret = keys[api_key]
        self.issued: dict[str, float] = {}
        """LiveKit identities this focus gave tokens to -> when the last one expires:
        the MatrixRTC clients among a room's participants (:meth:`is_matrixrtc`)."""

    async def verify(self, token: OpenIDToken, matrix_room: str) -> str:
        """The Matrix user id behind ``token``, if its homeserver may use this relay,
        or (``admit_room_members``) the user is joined to ``matrix_room``."""
        parse_server_name(token.matrix_server_name)  # malformed names: 400, not 403
        if self.matrix.homeserver_allowed(token.matrix_server_name):
            return await self.verifier.user_id(token.access_token, token.matrix_server_name)
        if self.room_members is None:
            raise HomeserverNotAllowedError(
                f"homeserver {token.matrix_server_name} may not use this relay; its admin can "
                "ask this relay's operator to add it to [matrix] allowed_homeservers"
            )
        user_id = await self.verifier.user_id(token.access_token, token.matrix_server_name)
        members = await self.room_members(matrix_room)
        if members is None or user_id not in members:
            raise HomeserverNotAllowedError(
                f"{user_id} is not a member of {matrix_room} as this relay's bridge sees it, "
                f"and homeserver {token.matrix_server_name} is not in [matrix] "
                "allowed_homeservers; join the room (with the bridge bot in it) first"
            )
        return user_id

    def admit(self, room: str, user_id: str) -> bool:
        """Whether ``user_id`` is local; a remote user is refused a room no local user
        has started (lk-jwt-service's rule: only local users open calls here)."""
        server = user_id.split(":", 1)[1].lower() if ":" in user_id else ""
        if server == self.matrix.server_name.lower():
            return True
        if self.room_exists is not None and not self.room_exists(room):
            raise RoomNotStartedError(
                f"no user of {self.matrix.server_name} has started this call on this relay; "
                f"{user_id} may join it once one has (users of other homeservers publish on "
                "their own homeserver's SFU and subscribe here)"
            )
        return False

    def mint(self, grant: FocusGrant) -> str:
        ttl_s = self.matrix.token_ttl_s
        issued = self.issued
        issued.pop(grant.identity, None)
        issued[grant.identity] = time.time() + ttl_s
        while len(issued) > MAX_ISSUED:
            del issued[next(iter(issued))]
        return mint_focus_token(self._api_key, self._api_secret, grant, ttl_s=ttl_s)

    def is_matrixrtc(self, identity: str) -> bool:
        """Whether ``identity`` joined with a token of this focus (a MatrixRTC client:
        Element Call, Element X), as opposed to a bridged or SDK participant."""
        return self.issued.get(identity, 0.0) > time.time() - RECONNECT_GRACE_S

    async def legacy_sfu_get(self, body: Mapping[str, Any]) -> FocusGrant:
        # The room id is hashed whole and not checked further, as lk-jwt-service
        # does: any room version's form (`!opaque:server`, version 12's `!hash`)
        # gets its own LiveKit room, and nothing is read out of it.
        room = _text(body, "room", "`room`")
        token = _openid_token(body)
        device_id = _text(body, "device_id", "`device_id`")
        user_id = await self.verify(token, room)
        alias = livekit_room_alias(room, LEGACY_SLOT_ID)
        return FocusGrant(
            room=alias,
            identity=legacy_identity(user_id, device_id),
            user_id=user_id,
            local=self.admit(alias, user_id),
        )

    async def get_token(self, body: Mapping[str, Any]) -> FocusGrant:
        room_id = _text(body, "room_id", "`room_id`")
        slot_id = _text(body, "slot_id", "`slot_id`")
        member = _object(body.get("member"), "`member`")
        member_id = _text(member, "id", "`member.id`")
        claimed_user = _text(member, "claimed_user_id", "`member.claimed_user_id`")
        claimed_device = _text(member, "claimed_device_id", "`member.claimed_device_id`")
        token = _openid_token(body)
        user_id = await self.verify(token, room_id)
        if claimed_user != user_id:
            raise OpenIDError(
                f"member.claimed_user_id {claimed_user} does not match the OpenID token's "
                f"user {user_id}; claim the user the token was issued to"
            )
        alias = livekit_room_alias(room_id, slot_id)
        return FocusGrant(
            room=alias,
            identity=livekit_identity(user_id, claimed_device, member_id),
            user_id=user_id,
            local=self.admit(alias, user_id),
        )


FOCUS_KEY = web.AppKey("matrix_focus", FocusService)


def _error(status: int, errcode: str, message: str) -> web.Response:
    return web.json_response(
        {"errcode": errcode, "error": message}, status=status, headers=CORS_HEADERS
    )


def _token_endpoint(
    kind: str,
    handler: Callable[[FocusService, Mapping[str, Any]], Awaitable[FocusGrant]],
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def endpoint(request: web.Request) -> web.Response:
        service = request.app[FOCUS_KEY]
        try:
            grant = await handler(service, await _json_body(request))
        except MediafedError as exc:
            status = getattr(exc, "status", 400)
            errcode = getattr(exc, "errcode", "M_UNKNOWN")
            log.info("x %s refused (%s %s): %s", kind, status, errcode, exc)
            return _error(status, errcode, str(exc))
        token = service.mint(grant)
        url = livekit_ws_url(service.matrix, service.public_url, request)
        log.info(
            "> %s token user=%s identity=%s room=%s url=%s (%s)",
            kind,
            grant.user_id,
            grant.identity,
            grant.room,
            url,
            "publishes" if grant.local else "remote: subscribes only",
        )
        return web.json_response({"url": url, "jwt": token}, headers=CORS_HEADERS)

    return endpoint


async def _preflight(request: web.Request) -> web.Response:
    return web.Response(status=200, headers=CORS_HEADERS)


async def _delegate_delayed_leave(request: web.Request) -> web.Response:
    return _error(
        404,
        "M_NOT_FOUND",
        "this focus does not take over delayed leave events; keep restarting the delayed "
        "event from the client",
    )


def setup_focus(
    app: web.Application,
    matrix: MatrixConfig,
    *,
    keys: Mapping[str, str],
    public_url: str = "",
    room_exists: Callable[[str], bool] | None = None,
    room_members: RoomMembers | None = None,
) -> None:
    """Add the focus endpoints to ``app``; tokens are signed with one of ``keys``
    (``[matrix] focus_api_key``, else the first). ``room_exists`` tells whether a
    LiveKit room is open (remote users may only join those); ``room_members``
    lists a Matrix room's members (``admit_room_members``)."""
    verifier = OpenIDVerifier(
        verify_tls=matrix.verify_tls,
        overrides=matrix.federation_url_overrides,
        timeout_s=matrix.openid_timeout_s,
    )
    app[FOCUS_KEY] = FocusService(
        matrix,
        verifier,
        keys=keys,
        public_url=public_url,
        room_exists=room_exists,
        room_members=room_members,
    )

    async def close_verifier(app: web.Application) -> None:
        await verifier.close()

    app.on_cleanup.append(close_verifier)
    routes = (
        ("/sfu/get", _token_endpoint("sfu/get", FocusService.legacy_sfu_get)),
        ("/get_token", _token_endpoint("get_token", FocusService.get_token)),
        ("/delegate_delayed_leave", _delegate_delayed_leave),
    )
    for path, handler in routes:
        app.router.add_post(path, handler)
        app.router.add_route("OPTIONS", path, _preflight)


def decode_payload_with_atob_rules(token: str) -> dict[str, Any]:
    """Decode the payload the way a browser's ``atob()`` would (standard alphabet
    only, padding optional); raises ValueError where atob would throw."""
    segment = payload_segment(token)
    try:
        raw = base64.b64decode(segment + "=" * (-len(segment) % 4), validate=True)
    except binascii.Error as exc:
        raise ValueError(f"atob() would reject the payload: {exc}") from None
    claims: dict[str, Any] = json.loads(raw)
    return claims
