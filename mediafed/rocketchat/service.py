"""The call API: calls for external rooms (Rocket.Chat, Matrix), join links, bridges.

HTTP + JSON, documented in OpenAPI 3 (``mediafed/api/openapi.yaml``, served at
``GET /api/v1/openapi.yaml``). Callers authenticate like LiveKit's server APIs:
``Authorization: Bearer <HS256 JWT>`` signed with an API key pair from
``config.keys`` and carrying ``roomCreate``/``roomList``/``roomAdmin`` grants.

A call belongs to one mediafed room; an external room (``rocketchat:<rid>`` or a
Matrix room id of any room version, ``!opaque:server`` or ``!hash``) resolves to
its room through the bridge table, so a Rocket.Chat room and the Matrix room
linked to it share one call. The call of a Matrix room, or of a Rocket.Chat room
linked to one, runs in that Matrix room's MatrixRTC room
(:func:`mediafed.matrix.focus.room_call_alias`), where its Element Call users
and classic callers are. Events of the
room core (participant joined/left, room finished) reach the caller as signed
webhooks (:mod:`mediafed.api.webhooks`); a call started on the Matrix side is
announced in the linked Rocket.Chat room through :mod:`mediafed.rocketchat.client`.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from importlib import resources
from typing import Any, TypeVar
from urllib.parse import urlencode

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mediafed.api.webhooks import WebhookSender
from mediafed.config import Config
from mediafed.errors import AuthError, MediafedError
from mediafed.matrix.focus import room_call_alias
from mediafed.matrix.ids import FORMS, RoomIdError, check_room_id
from mediafed.rocketchat.client import RocketChatClient, RocketChatConfig
from mediafed.store import Bridge, CallRecord, Store, StoreError
from mediafed.tokens import Claims, VideoGrant, mint_token, verify_token

log = logging.getLogger(__name__)

T = TypeVar("T")

RC_ROOM = re.compile(r"^rocketchat:([A-Za-z0-9_.-]{1,64})$")
ROOM_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
JOIN_TTL_DEFAULT_S = 600
"""Join tokens only need to be valid when the client connects; the signaling
front-end hands connected clients fresh tokens (``refresh_token``) after that."""
JOIN_TTL_MAX_S = 24 * 3600
DB_FILE = "mediafed.sqlite3"


class CallError(MediafedError):
    """A call API request that cannot be done (unknown call, bad room id, ...)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _external_kind(external_room: str) -> str:
    """``"rocketchat"`` or ``"matrix"``; CallError saying what was expected otherwise."""
    if RC_ROOM.match(external_room):
        return "rocketchat"
    if external_room.startswith(("!", "#")):
        try:
            check_room_id(external_room)
        except RoomIdError as exc:
            raise CallError(f"external_room: {exc}") from None
        return "matrix"
    raise CallError(
        f"external_room {external_room!r} is neither 'rocketchat:<room id>' nor a Matrix "
        f"room id ({FORMS})"
    )


def room_for_external(external_room: str) -> str:
    """The mediafed room of an unbridged external room's calls: ``rc-<rid>`` for a
    Rocket.Chat room, the MatrixRTC room of a Matrix room (where its Matrix users are)."""
    if _external_kind(external_room) == "matrix":
        return room_call_alias(external_room)
    return f"rc-{external_room.partition(':')[2]}"


def default_bridge_name(external_room: str) -> str:
    """The name ``mediafed bridge link`` gives a link when none is given: ``rc-<rid>``,
    or ``mx-`` and the Matrix room id with what room names cannot hold replaced."""
    if _external_kind(external_room) == "matrix":
        return "mx-" + re.sub(r"[^A-Za-z0-9_.-]", "_", external_room[1:])[:120]
    return f"rc-{external_room.partition(':')[2]}"


def check_matrix_room(matrix_room: str) -> str:
    """A Matrix room id to link (any room version), or CallError saying what to give."""
    try:
        return check_room_id(matrix_room)
    except RoomIdError as exc:
        raise CallError(f"matrix_room: {exc}") from None


class GrantError(AuthError):
    """A valid token without the grant an endpoint needs (HTTP 403)."""


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CreateCall(_Request):
    external_room: str
    external_call_id: str = Field("", max_length=128)
    title: str = Field("", max_length=256)
    webhook_url: str = Field("", max_length=2048)


class JoinCall(_Request):
    identity: str = Field(min_length=1, max_length=128)
    name: str = Field("", max_length=128)
    mic: bool = True
    cam: bool = False
    ttl_s: int = Field(JOIN_TTL_DEFAULT_S, ge=60, le=JOIN_TTL_MAX_S)


class PutBridge(_Request):
    rocketchat_room: str | None = Field(None, min_length=1, max_length=64)
    matrix_room: str | None = Field(None, min_length=3, max_length=512)


class CallService:
    """Calls, their participants and the events that leave mediafed about them.

    The room core calls :meth:`participant_joined`, :meth:`participant_left`
    and :meth:`room_finished`; the Matrix front-end calls
    :meth:`call_started_elsewhere`. Those return at once: the work (database,
    webhooks, Rocket.Chat notice) runs on background tasks, returned for
    callers who want to wait (tests).
    """

    def __init__(
        self,
        config: Config,
        store: Store,
        webhooks: WebhookSender,
        *,
        rocketchat: RocketChatClient | None = None,
        rocketchat_config: RocketChatConfig | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.webhooks = webhooks
        self.rocketchat = rocketchat
        self.rocketchat_config = rocketchat_config or RocketChatConfig()
        self.participants: dict[str, dict[str, str]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._room_locks: dict[str, asyncio.Lock] = {}
        self.on_call_ended: Callable[[str], Coroutine[Any, Any, object]] | None = None
        """Closes the media room of an ended call (set by the composition root)."""

    # -- helpers --------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, T], what: str) -> asyncio.Task[T]:
        task = asyncio.create_task(coro, name=what)
        self._tasks.add(task)

        def done(finished: asyncio.Task[T]) -> None:
            self._tasks.discard(finished)
            if not finished.cancelled() and finished.exception() is not None:
                log.error("x %s failed", what, exc_info=finished.exception())

        task.add_done_callback(done)
        return task

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def public_url(self, request: web.Request | None = None) -> str:
        if self.config.server.public_url:
            return self.config.server.public_url.rstrip("/")
        if request is not None:
            return str(request.url.origin())
        host = self.config.server.bind
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return f"http://{host}:{self.config.server.http_port}"

    def _signing_key(self, call: CallRecord) -> tuple[str, str]:
        if call.api_key in self.config.keys:
            return call.api_key, self.config.keys[call.api_key]
        if not self.config.keys:
            raise CallError("no API keys are configured; add a [keys] entry", status=503)
        key = next(iter(self.config.keys))
        return key, self.config.keys[key]

    async def resolve_room(self, external_room: str) -> str:
        """The mediafed room whose call belongs to ``external_room``.

        A bridge with a Matrix room runs its calls in that Matrix room's MatrixRTC
        room, so Rocket.Chat users meet its Element Call users and classic callers;
        a bridge of a Rocket.Chat room alone, in the bridge's own room."""
        if _external_kind(external_room) == "rocketchat":
            rid = external_room.partition(":")[2]
            bridge = await self.store.find_bridge(rocketchat_room=rid)
        else:
            bridge = await self.store.find_bridge(matrix_room=external_room)
        if bridge is None:
            return room_for_external(external_room)
        if bridge.matrix_room is not None:
            return room_call_alias(bridge.matrix_room)
        return bridge.mediafed_room

    async def bridge_of_room(self, room: str) -> Bridge | None:
        """The bridge whose calls run in mediafed room ``room`` (see :meth:`resolve_room`)."""
        for bridge in await self.store.list_bridges():
            if bridge.matrix_room is not None:
                if room_call_alias(bridge.matrix_room) == room:
                    return bridge
            elif bridge.mediafed_room == room:
                return bridge
        return None

    def call_json(self, call: CallRecord, request: web.Request | None = None) -> dict[str, Any]:
        return {
            "call_id": call.call_id,
            "room": call.room,
            "title": call.title,
            "external_room": call.external_room,
            "external_call_id": call.external_call_id,
            "status": call.status,
            "created_at": call.created_at,
            "ended_at": call.ended_at,
            "join_url": self.invite_url(call, request),
            "participants": [
                {"identity": identity, "name": name}
                for identity, name in sorted(self.participants.get(call.room, {}).items())
            ]
            if call.status == "active"
            else [],
        }

    def invite_url(self, call: CallRecord, request: web.Request | None = None) -> str:
        """A link anyone who has it can open to join as a guest while the call lasts."""
        query = urlencode({"code": call.invite_code})
        return f"{self.public_url(request)}/api/v1/calls/{call.call_id}/invite?{query}"

    # -- calls ----------------------------------------------------------------

    async def create_call(
        self, body: CreateCall, api_key: str, *, now: float | None = None
    ) -> tuple[CallRecord, bool]:
        """The active call of the external room's mediafed room, made if needed."""
        room = await self.resolve_room(body.external_room)
        lock = self._room_locks.setdefault(room, asyncio.Lock())
        async with lock:
            existing = await self.store.active_call(room)
            if existing is not None:
                if body.external_call_id and body.external_call_id != existing.external_call_id:
                    # A newer call of the same room (e.g. Rocket.Chat started a new one
                    # while Matrix users kept this one going): send its events there.
                    await self.store.update_call_target(
                        existing.call_id,
                        external_call_id=body.external_call_id,
                        webhook_url=body.webhook_url or existing.webhook_url,
                        title=body.title or existing.title,
                    )
                    existing = await self.store.get_call(existing.call_id) or existing
                return existing, False
            record = CallRecord(
                call_id=f"CL_{uuid.uuid4().hex[:16]}",
                room=room,
                external_room=body.external_room,
                external_call_id=body.external_call_id,
                title=body.title or room,
                webhook_url=body.webhook_url,
                api_key=api_key,
                invite_code=secrets.token_urlsafe(18),
                status="active",
                created_at=time.time() if now is None else now,
                ended_at=None,
            )
            stored = await self.store.insert_call(record)
        created = stored.call_id == record.call_id
        if created:
            log.info(
                "- call %s created room=%s external=%s", stored.call_id, room, body.external_room
            )
        return stored, created

    async def get_call(self, call_id: str) -> CallRecord:
        call = await self.store.get_call(call_id)
        if call is None:
            raise CallError(f"no call {call_id!r}; list calls with GET /api/v1/calls", 404)
        return call

    def join_token(
        self, call: CallRecord, identity: str, name: str, *, ttl_s: int = JOIN_TTL_DEFAULT_S
    ) -> str:
        key, secret = self._signing_key(call)
        return mint_token(
            key,
            secret,
            identity=identity,
            name=name,
            video=VideoGrant(room_join=True, room=call.room),
            attributes={"mediafed.call_id": call.call_id},
            ttl_s=ttl_s,
        )

    def join_url(self, token: str, *, mic: bool, cam: bool, request: web.Request | None) -> str:
        query = urlencode({"token": token, "mic": int(mic), "cam": int(cam)})
        return f"{self.public_url(request)}/?{query}"

    async def end_call(self, call_id: str, *, reason: str = "ended") -> CallRecord:
        call = await self.get_call(call_id)
        if await self.store.end_call(call_id):
            self.participants.pop(call.room, None)
            log.info("- call %s ended room=%s (%s)", call_id, call.room, reason)
            self._webhook(call, "call_ended")
            if self.on_call_ended is not None:
                self._spawn(self.on_call_ended(call.room), f"close room {call.room}")
        return await self.get_call(call_id)

    def _webhook(self, call: CallRecord, event: str, **extra: str) -> None:
        if not call.webhook_url:
            return
        self.webhooks.send(
            call.webhook_url,
            call.api_key,
            {
                "event": event,
                "call_id": call.call_id,
                "external_call_id": call.external_call_id,
                "room": call.room,
                "timestamp": int(time.time()),
                **extra,
            },
        )

    # -- hooks for the room core and the Matrix front-end ----------------------

    def participant_joined(self, room: str, identity: str, name: str = "") -> asyncio.Task[None]:
        return self._spawn(self._joined(room, identity, name), f"participant_joined {room}")

    async def _joined(self, room: str, identity: str, name: str) -> None:
        call = await self.store.active_call(room)
        if call is None:
            log.debug("- participant %s joined room=%s without a call", identity, room)
            return
        self.participants.setdefault(room, {})[identity] = name
        self._webhook(call, "participant_joined", identity=identity, name=name)

    def participant_left(self, room: str, identity: str, name: str = "") -> asyncio.Task[None]:
        return self._spawn(self._left(room, identity, name), f"participant_left {room}")

    async def _left(self, room: str, identity: str, name: str) -> None:
        call = await self.store.active_call(room)
        if call is None:
            return
        known = self.participants.get(room, {}).pop(identity, None)
        self._webhook(call, "participant_left", identity=identity, name=name or known or "")

    def room_finished(self, room: str) -> asyncio.Task[None]:
        return self._spawn(self._finished(room), f"room_finished {room}")

    async def _finished(self, room: str) -> None:
        call = await self.store.active_call(room)
        self.participants.pop(room, None)
        if call is not None:
            await self.end_call(call.call_id, reason="room finished")

    def call_started_elsewhere(self, room: str, starter_name: str) -> asyncio.Task[bool]:
        """Announce a call started on the Matrix side in the linked Rocket.Chat room.

        The task's result says whether the notice was posted; failures are
        retried with backoff and logged, never raised into the caller.
        """
        return self._spawn(self._announce(room, starter_name), f"announce call {room}")

    async def _announce(self, room: str, starter_name: str) -> bool:
        bridge = await self.bridge_of_room(room)
        if bridge is None or bridge.rocketchat_room is None:
            log.debug("- room=%s has no Rocket.Chat room linked; no notice", room)
            return False
        call = await self.store.active_call(room)
        if call is None:
            if not self.config.keys:
                log.error("x room=%s: no API keys configured; cannot open a call", room)
                return False
            external = bridge.matrix_room or f"rocketchat:{bridge.rocketchat_room}"
            call, _ = await self.create_call(
                CreateCall(external_room=external), next(iter(self.config.keys))
            )
        if self.rocketchat is None:
            log.warning("x room=%s: Rocket.Chat is not configured; notice not posted", room)
            return False
        text = f"{starter_name} started a call — Join: {self.invite_url(call)}"
        attempts = self.rocketchat_config.notice_attempts
        for attempt in range(1, attempts + 1):
            try:
                await self.rocketchat.post_message(bridge.rocketchat_room, text)
            except MediafedError as exc:
                if attempt == attempts:
                    log.error(
                        "x call notice for room=%s to Rocket.Chat room %s failed after "
                        "%d attempts: %s",
                        room,
                        bridge.rocketchat_room,
                        attempts,
                        exc,
                    )
                    return False
                delay = self.rocketchat_config.notice_backoff_s * 2 ** (attempt - 1)
                log.warning(
                    "x call notice for room=%s failed (%s); retry in %.1fs", room, exc, delay
                )
                await asyncio.sleep(delay)
            else:
                log.info(
                    "> call notice room=%s to Rocket.Chat room %s", room, bridge.rocketchat_room
                )
                return True
        return False


CALL_SERVICE_KEY = web.AppKey("mediafed_call_service", CallService)
CLAIMS_KEY = web.RequestKey("mediafed_claims", Claims)


# -- HTTP layer ------------------------------------------------------------------


def _json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _authorize(request: web.Request, grant: str) -> Claims:
    service = request.app[CALL_SERVICE_KEY]
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError(
            "send 'Authorization: Bearer <JWT>' signed with an API key pair of this server "
            "(grants roomCreate, roomList, roomAdmin)"
        )
    if not service.config.keys:
        raise AuthError("this server has no API keys configured; add a [keys] entry")
    claims = verify_token(token.strip(), service.config.keys)
    if not getattr(claims.video, grant):
        camel = {"room_create": "roomCreate", "room_list": "roomList", "room_admin": "roomAdmin"}
        raise GrantError(
            f"the token lacks the {camel[grant]} grant; mint it with "
            "VideoGrant(room_create=True, room_list=True, room_admin=True)"
        )
    return claims


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _endpoint(grant: str | None) -> Callable[[Handler], Handler]:
    def wrap(handler: Handler) -> Handler:
        async def run(request: web.Request) -> web.StreamResponse:
            try:
                if grant is not None:
                    request[CLAIMS_KEY] = _authorize(request, grant)
                return await handler(request)
            except GrantError as exc:
                return _json_error(403, str(exc))
            except AuthError as exc:
                return _json_error(401, str(exc))
            except ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}"
                    for err in exc.errors()
                )
                return _json_error(400, f"invalid request body: {problems}")
            except CallError as exc:
                return _json_error(exc.status, str(exc))
            except StoreError as exc:
                return _json_error(409, str(exc))

        return run

    return wrap


async def _body(request: web.Request) -> Any:
    try:
        return await request.json()
    except (ValueError, UnicodeDecodeError):
        raise CallError("the request body must be JSON (Content-Type: application/json)") from None


@_endpoint("room_create")
async def _create(request: web.Request) -> web.StreamResponse:
    service = request.app[CALL_SERVICE_KEY]
    body = CreateCall.model_validate(await _body(request))
    if body.webhook_url and not body.webhook_url.startswith(("http://", "https://")):
        raise CallError("webhook_url must be an http:// or https:// URL")
    call, created = await service.create_call(body, request[CLAIMS_KEY].api_key)
    payload = {**service.call_json(call, request), "created": created}
    return web.json_response(payload, status=201 if created else 200)


@_endpoint("room_list")
async def _list(request: web.Request) -> web.StreamResponse:
    service = request.app[CALL_SERVICE_KEY]
    status = request.query.get("status")
    if status not in (None, "active", "ended"):
        raise CallError("status must be 'active' or 'ended'")
    calls = await service.store.list_calls(status=status)
    return web.json_response({"calls": [service.call_json(call, request) for call in calls]})


@_endpoint("room_list")
async def _get(request: web.Request) -> web.StreamResponse:
    service = request.app[CALL_SERVICE_KEY]
    call = await service.get_call(request.match_info["call_id"])
    return web.json_response(service.call_json(call, request))


@_endpoint("room_admin")
async def _delete(request: web.Request) -> web.StreamResponse:
    service = request.app[CALL_SERVICE_KEY]
    call = await service.end_call(request.match_info["call_id"], reason="ended through the API")
    return web.json_response(service.call_json(call, request))


@_endpoint("room_admin")
async def _join(request: web.Request) -> web.StreamResponse:
    service = request.app[CALL_SERVICE_KEY]
    call = await service.get_call(request.match_info["call_id"])
    body = JoinCall.model_validate(await _body(request))
    if call.status != "active":
        raise CallError(f"call {call.call_id} has ended; create a new one", 410)
    token = service.join_token(call, body.identity, body.name, ttl_s=body.ttl_s)
    return web.json_response(
        {
            "token": token,
            "join_url": service.join_url(token, mic=body.mic, cam=body.cam, request=request),
            "room": call.room,
            "identity": body.identity,
            "expires_in_s": body.ttl_s,
        }
    )


@_endpoint(None)
async def _invite(request: web.Request) -> web.StreamResponse:
    service = request.app[CALL_SERVICE_KEY]
    call = await service.get_call(request.match_info["call_id"])
    code = request.query.get("code", "")
    if not hmac.compare_digest(code.encode(), call.invite_code.encode()):
        raise AuthError("this invite link is not valid; ask for a new link")
    if call.status != "active":
        raise CallError("this call has ended", 410)
    name = request.query.get("name", "")[:128] or "Guest"
    token = service.join_token(call, f"guest-{secrets.token_hex(4)}", name)
    raise web.HTTPFound(service.join_url(token, mic=True, cam=False, request=request))


@_endpoint("room_list")
async def _bridges(request: web.Request) -> web.StreamResponse:
    service = request.app[CALL_SERVICE_KEY]
    bridges = await service.store.list_bridges()
    return web.json_response({"bridges": [bridge.to_json() for bridge in bridges]})


@_endpoint("room_admin")
async def _put_bridge(request: web.Request) -> web.StreamResponse:
    service = request.app[CALL_SERVICE_KEY]
    room = request.match_info["room"]
    if not ROOM_NAME.match(room):
        raise CallError("room names use letters, digits and . _ : - (at most 128)")
    body = PutBridge.model_validate(await _body(request))
    if body.rocketchat_room is None and body.matrix_room is None:
        raise CallError("give rocketchat_room, matrix_room or both")
    if body.rocketchat_room is not None and not RC_ROOM.match(f"rocketchat:{body.rocketchat_room}"):
        raise CallError("rocketchat_room must be a Rocket.Chat room id (letters, digits)")
    if body.matrix_room is not None:
        check_matrix_room(body.matrix_room)
    bridge = await service.store.put_bridge(
        room, rocketchat_room=body.rocketchat_room, matrix_room=body.matrix_room
    )
    return web.json_response(bridge.to_json())


@_endpoint("room_admin")
async def _delete_bridge(request: web.Request) -> web.StreamResponse:
    service = request.app[CALL_SERVICE_KEY]
    room = request.match_info["room"]
    if not await service.store.delete_bridge(room):
        raise CallError(f"room {room!r} has no bridge; list them with GET /api/v1/bridges", 404)
    return web.json_response({"room": room, "deleted": True})


def openapi_text() -> str:
    return (resources.files("mediafed.api") / "openapi.yaml").read_text(encoding="utf-8")


async def _openapi(request: web.Request) -> web.StreamResponse:
    return web.Response(text=openapi_text(), content_type="application/yaml")


def make_calls_extension(
    *,
    store: Store | None = None,
    rocketchat_config: RocketChatConfig | None = None,
    webhook_options: dict[str, Any] | None = None,
) -> Callable[[web.Application, Config], None]:
    """An extension for :func:`mediafed.server.build_app` with explicit parts.

    ``rocketchat_config`` defaults to ``config.rocketchat`` when the Config has
    that table; ``store`` defaults to SQLite under ``server.data_dir``.
    """

    def setup(app: web.Application, config: Config) -> None:
        db = store or Store(config.server.data_dir / DB_FILE)
        sender = WebhookSender(config.keys, store=db, **(webhook_options or {}))
        rc_config = rocketchat_config
        if rc_config is None:
            configured = getattr(config, "rocketchat", None)
            rc_config = (
                RocketChatConfig.model_validate(configured.model_dump())
                if isinstance(configured, BaseModel)
                else RocketChatConfig()
            )
        client = RocketChatClient(rc_config) if rc_config.enabled else None
        service = CallService(config, db, sender, rocketchat=client, rocketchat_config=rc_config)
        app[CALL_SERVICE_KEY] = service

        async def startup(app: web.Application) -> None:
            await db.open()
            await sender.start()

        async def cleanup(app: web.Application) -> None:
            await service.close()
            await sender.close()
            if client is not None:
                await client.close()
            await db.close()

        app.on_startup.append(startup)
        app.on_cleanup.append(cleanup)
        router = app.router
        router.add_post("/api/v1/calls", _create)
        router.add_get("/api/v1/calls", _list)
        router.add_get("/api/v1/calls/{call_id}", _get)
        router.add_delete("/api/v1/calls/{call_id}", _delete)
        router.add_post("/api/v1/calls/{call_id}/join", _join)
        router.add_get("/api/v1/calls/{call_id}/invite", _invite)
        router.add_get("/api/v1/bridges", _bridges)
        router.add_put("/api/v1/bridges/{room}", _put_bridge)
        router.add_delete("/api/v1/bridges/{room}", _delete_bridge)
        router.add_get("/api/v1/openapi.yaml", _openapi)

    return setup


def setup_calls_api(app: web.Application, config: Config) -> None:
    """Add the call API (routes, database, webhook sender) to ``app``."""
    make_calls_extension()(app, config)
