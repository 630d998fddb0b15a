"""The call API's HTTP routes (``/api/v1/calls``, ``/api/v1/bridges``,
``/api/v1/openapi.yaml``) over the :class:`~.service.CallService`.

HTTP + JSON, documented in OpenAPI 3 (``openapi.yaml`` beside this module,
served at ``GET /api/v1/openapi.yaml``). Every error is ``{"error": message}``
with the status that fits: 400 bad body, 401 no or bad token, 403 missing grant
(:mod:`.auth`), 404 unknown call, 409 store conflict, 410 call ended.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from mediafed.errors import AuthError
from mediafed.rocketchat.auth import GrantError, authorize
from mediafed.rocketchat.models import CallError, CreateCall, JoinCall, PutBridge
from mediafed.rocketchat.rooms import RC_ROOM, ROOM_NAME, check_matrix_room
from mediafed.rocketchat.service import CallService
from mediafed.signal.livekit.tokens import Claims
from mediafed.store import StoreError

CALL_SERVICE_KEY = web.AppKey("mediafed_call_service", CallService)
CLAIMS_KEY = web.RequestKey("mediafed_claims", Claims)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _endpoint(grant: str | None) -> Callable[[Handler], Handler]:
    def wrap(handler: Handler) -> Handler:
        async def run(request: web.Request) -> web.StreamResponse:
            try:
                if grant is not None:
                    request[CLAIMS_KEY] = authorize(
                        request.headers.get("Authorization", ""),
                        request.app[CALL_SERVICE_KEY].keys,
                        grant,
                    )
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
    identity = await service.livekit_identity(call, body.identity)
    token = service.join_token(
        call, identity, body.name, ttl_s=body.ttl_s, external_identity=body.identity
    )
    return web.json_response(
        {
            "token": token,
            "join_url": service.join_url(token, mic=body.mic, cam=body.cam, request=request),
            "room": call.room,
            "identity": identity,
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
    guest = f"guest-{secrets.token_hex(4)}"
    identity = await service.livekit_identity(call, guest)
    token = service.join_token(call, identity, name, external_identity=guest)
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
    return (resources.files("mediafed.rocketchat") / "openapi.yaml").read_text(encoding="utf-8")


async def _openapi(request: web.Request) -> web.StreamResponse:
    return web.Response(text=openapi_text(), content_type="application/yaml")


def add_call_routes(app: web.Application, service: CallService) -> None:
    """Serve the call API of ``service`` on ``app``."""
    app[CALL_SERVICE_KEY] = service
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
