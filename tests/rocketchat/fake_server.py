"""A fake Rocket.Chat server (aiohttp) answering the documented REST and DDP JSON.

Rocket.Chat cannot run offline (it needs MongoDB), so its side is tested
against this: ``POST /api/v1/login``, ``chat.postMessage``, ``rooms.info``,
``users.info``, ``video-conference.{start,join,cancel,info,list,providers,
capabilities}`` with the documented success bodies and error shapes
(``{"success": false, "error": "...", "errorType": "invalid-params"}``,
``{"status": "error", "message": "You must be logged in to do this."}``), and the
DDP websocket at ``/websocket`` (``connect``, ``login`` with ``resume``,
``sub stream-room-messages``, ``ping``). Video-conference URLs come from a
provider object standing in for the installed App's provider; as in Rocket.Chat,
``video-conference.start`` asks it for the call before answering, starts a
``direct`` call (ringing, status CALLING) in a ``t: "d"`` room, and only such a
call can be cancelled. The App's public endpoints
(``/api/apps/public/<app id>/<path>``) are served by ``app_endpoint`` when set.
``start_failure`` makes ``video-conference.start`` answer an error.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import WSMsgType, web

VIDEOCONF_CALLING = 0
VIDEOCONF_STARTED = 1
VIDEOCONF_ENDED = 3

AppEndpoint = Callable[[web.Request, str], Awaitable[web.Response]]
"""``(request, path)`` -> the App's answer."""


class Provider(Protocol):
    name: str
    capabilities: dict[str, bool]

    async def generate_url(self, call: dict[str, Any]) -> str: ...

    async def customize_url(
        self, call: dict[str, Any], user: dict[str, Any], options: dict[str, bool]
    ) -> str: ...


def _rc_id() -> str:
    alphabet = "23456789ABCDEFGHJKLMNPQRSTWXYZabcdefghijkmnopqrstuvwxyz"
    return "".join(secrets.choice(alphabet) for _ in range(17))


def _date(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


def _fail(message: str, error_type: str = "invalid-params", status: int = 400) -> web.Response:
    return web.json_response(
        {"success": False, "error": message, "errorType": error_type}, status=status
    )


@dataclass
class FakeRocketChat:
    users: dict[str, str] = field(default_factory=lambda: {"mediafed.bot": "bot-password"})
    """username -> password"""
    rooms: dict[str, dict[str, Any]] = field(default_factory=dict)
    provider: Provider | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)
    calls: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    url: str = ""
    started: list[dict[str, Any]] = field(default_factory=list)
    """The bodies ``video-conference.start`` was given."""
    start_failure: tuple[int, dict[str, Any]] | None = None
    """(HTTP status, body) ``video-conference.start`` answers instead of starting."""
    app_endpoint: AppEndpoint | None = None

    def __post_init__(self) -> None:
        self.user_ids = {name: _rc_id() for name in self.users}
        self.tokens: dict[str, str] = {}  # authToken -> userId
        self._subscribers: list[tuple[web.WebSocketResponse, str, str]] = []
        self._runner: web.AppRunner | None = None
        self._waiters: list[asyncio.Future[None]] = []
        self.port = 0
        self.app = web.Application()
        api = "/api/v1/"
        self.app.router.add_post(api + "login", self._login)
        self.app.router.add_post(api + "chat.postMessage", self._post_message)
        self.app.router.add_get(api + "rooms.info", self._rooms_info)
        self.app.router.add_get(api + "users.info", self._users_info)
        self.app.router.add_post(api + "video-conference.start", self._vc_start)
        self.app.router.add_post(api + "video-conference.join", self._vc_join)
        self.app.router.add_post(api + "video-conference.cancel", self._vc_cancel)
        self.app.router.add_get(api + "video-conference.info", self._vc_info)
        self.app.router.add_get(api + "video-conference.list", self._vc_list)
        self.app.router.add_get(api + "video-conference.providers", self._vc_providers)
        self.app.router.add_get(api + "video-conference.capabilities", self._vc_capabilities)
        self.app.router.add_get("/websocket", self._websocket)
        self.app.router.add_route("*", "/api/apps/public/{app_id}/{path}", self._app_public)

    # -- lifecycle --------------------------------------------------------------

    def add_room(self, name: str, room_type: str = "c") -> str:
        rid = _rc_id()
        self.rooms[rid] = {
            "_id": rid,
            "name": name,
            "fname": name,
            "t": room_type,
            "msgs": 0,
            "usersCount": 1,
            "u": {"_id": "rocket.cat", "username": "rocket.cat"},
            "ts": _date(time.time()),
            "ro": False,
            "default": False,
            "sysMes": True,
            "_updatedAt": _date(time.time()),
        }
        if room_type == "d":
            usernames = sorted({"mediafed.bot", name})
            self.rooms[rid].update(
                usernames=usernames, uids=[self.user_ids.get(u, u) for u in usernames]
            )
        return rid

    async def start(self, port: int = 0) -> str:
        self._runner = web.AppRunner(self.app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port or self.port, reuse_address=True)
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[attr-defined]
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self.port}"
        return self.url

    async def stop(self) -> None:
        for ws, _, _ in list(self._subscribers):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _changed(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    async def wait_until(self, predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
        """Wait until ``predicate()`` holds; it is re-checked on every state change."""

        async def wait() -> None:
            while not predicate():
                waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self._waiters.append(waiter)
                await waiter

        await asyncio.wait_for(wait(), timeout_s)

    def logout_everyone(self) -> None:
        """Forget every auth token (as an admin's "log out all sessions" would)."""
        self.tokens.clear()

    # -- REST -------------------------------------------------------------------

    def _user(self, username: str) -> dict[str, Any]:
        return {
            "_id": self.user_ids[username],
            "username": username,
            "name": username.replace(".", " ").title(),
            "status": "online",
            "active": True,
            "type": "user" if not username.endswith("bot") else "bot",
            "roles": ["user"],
        }

    def _username(self, user_id: str) -> str:
        return next(name for name, uid in self.user_ids.items() if uid == user_id)

    def _authenticated(self, request: web.Request) -> str | None:
        self.requests.append(f"{request.method} {request.path}")
        self._changed()
        user_id = request.headers.get("X-User-Id", "")
        token = request.headers.get("X-Auth-Token", "")
        if token and self.tokens.get(token) == user_id:
            return user_id
        return None

    @staticmethod
    def _unauthorized() -> web.Response:
        return web.json_response(
            {"status": "error", "message": "You must be logged in to do this."}, status=401
        )

    @staticmethod
    async def _json(request: web.Request) -> dict[str, Any] | None:
        try:
            body = await request.json()
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    async def _login(self, request: web.Request) -> web.Response:
        self.requests.append(f"{request.method} {request.path}")
        body = await self._json(request) or {}
        username = body.get("user") or body.get("username")
        if not isinstance(username, str) or self.users.get(username) != body.get("password"):
            return web.json_response(
                {"status": "error", "error": "Unauthorized", "message": "Unauthorized"},
                status=401,
            )
        token = secrets.token_urlsafe(32)
        user_id = self.user_ids[username]
        self.tokens[token] = user_id
        return web.json_response(
            {
                "status": "success",
                "data": {"userId": user_id, "authToken": token, "me": self._user(username)},
            }
        )

    async def _post_message(self, request: web.Request) -> web.Response:
        user_id = self._authenticated(request)
        if user_id is None:
            return self._unauthorized()
        body = await self._json(request)
        if body is None:
            return _fail("Invalid JSON body")
        rid = body.get("roomId") or body.get("channel")
        if not rid:
            return _fail(
                'Body param "roomId" or "channel" is required [error-room-id-param-not-provided]',
                "error-room-id-param-not-provided",
            )
        if rid not in self.rooms:
            return _fail("[invalid-channel]", "invalid-channel")
        message = self._store_message(rid, user_id, str(body.get("text", "")))
        if body.get("alias"):
            message["alias"] = body["alias"]
        await self._broadcast(rid, message)
        return web.json_response(
            {"ts": int(time.time() * 1000), "channel": rid, "message": message, "success": True}
        )

    def _store_message(self, rid: str, user_id: str, text: str, **extra: Any) -> dict[str, Any]:
        username = self._username(user_id)
        now = time.time()
        message = {
            "_id": _rc_id(),
            "rid": rid,
            "msg": text,
            "ts": _date(now),
            "u": {"_id": user_id, "username": username, "name": self._user(username)["name"]},
            "unread": True,
            "mentions": [],
            "channels": [],
            "md": [{"type": "PARAGRAPH", "value": [{"type": "PLAIN_TEXT", "value": text}]}],
            "_updatedAt": _date(now),
            **extra,
        }
        self.messages.append(message)
        self.rooms[rid]["msgs"] += 1
        self._changed()
        return message

    async def _broadcast(self, rid: str, message: dict[str, Any]) -> None:
        for ws, sub_rid, _ in list(self._subscribers):
            if sub_rid == rid and not ws.closed:
                await ws.send_str(
                    json.dumps(
                        {
                            "msg": "changed",
                            "collection": "stream-room-messages",
                            "id": "id",
                            "fields": {"eventName": rid, "args": [message]},
                        }
                    )
                )

    async def _rooms_info(self, request: web.Request) -> web.Response:
        if self._authenticated(request) is None:
            return self._unauthorized()
        rid = request.query.get("roomId")
        room = self.rooms.get(rid or "")
        if room is None:
            return _fail(
                'The required "roomId" or "roomName" param provided does not match any '
                "channel [error-room-not-found]",
                "error-room-not-found",
            )
        return web.json_response({"room": room, "success": True})

    async def _users_info(self, request: web.Request) -> web.Response:
        if self._authenticated(request) is None:
            return self._unauthorized()
        username = request.query.get("username")
        user_id = request.query.get("userId")
        if user_id is not None:
            username = next((n for n, uid in self.user_ids.items() if uid == user_id), None)
        if not username or username not in self.user_ids:
            return _fail("User not found.", "error-invalid-user")
        return web.json_response({"user": self._user(username), "success": True})

    # -- video conferences -------------------------------------------------------

    async def _vc_start(self, request: web.Request) -> web.Response:
        user_id = self._authenticated(request)
        if user_id is None:
            return self._unauthorized()
        body = await self._json(request) or {}
        self.started.append(body)
        self._changed()
        if self.start_failure is not None:
            status, answer = self.start_failure
            return web.json_response(answer, status=status)
        rid = body.get("roomId")
        if not isinstance(rid, str) or not rid:
            return _fail("must have required property 'roomId' [invalid-params]")
        if rid not in self.rooms:
            return _fail("invalid-room", "error-invalid-room")
        if self.provider is None:
            return _fail("no-videoconf-provider-app", "no-videoconf-provider-app")
        username = self._username(user_id)
        call_id = _rc_id()
        creator = {"_id": user_id, "username": username, "name": self._user(username)["name"]}
        direct = self.rooms[rid]["t"] == "d"
        call: dict[str, Any] = {
            "_id": call_id,
            "type": "direct" if direct else "videoconference",
            "rid": rid,
            "users": [],
            "status": VIDEOCONF_CALLING,
            "messages": {},
            "createdBy": creator,
            "createdAt": _date(time.time()),
            "_updatedAt": _date(time.time()),
            "providerName": self.provider.name,
            "title": str(body.get("title") or self.rooms[rid]["name"]),
            "anonymousUsers": 0,
        }
        self.calls[call_id] = call
        try:
            call["url"] = await self.provider.generate_url(
                {k: call[k] for k in ("_id", "type", "rid", "createdBy", "title")}
            )
        except Exception as exc:
            del self.calls[call_id]
            return _fail(f"{exc} [error-videoconf-provider]", "error-videoconf-provider")
        # A direct call rings the other member until someone joins.
        call["status"] = VIDEOCONF_CALLING if direct else VIDEOCONF_STARTED
        call["ringing"] = direct and bool(body.get("allowRinging"))
        message = self._store_message(
            rid,
            user_id,
            "",
            t="videoconf",
            blocks=[{"type": "video_conf", "callId": call_id, "appId": "videoconf-core"}],
        )
        call["messages"]["started"] = message["_id"]
        await self._broadcast(rid, message)
        return web.json_response(
            {
                "data": {
                    "type": call["type"],
                    "callId": call_id,
                    "rid": rid,
                    "providerName": self.provider.name,
                },
                "success": True,
            }
        )

    async def _vc_join(self, request: web.Request) -> web.Response:
        user_id = self._authenticated(request)
        if user_id is None:
            return self._unauthorized()
        body = await self._json(request) or {}
        call = self.calls.get(str(body.get("callId", "")))
        if call is None:
            return _fail("invalid-call", "invalid-params")
        if call["status"] == VIDEOCONF_ENDED:
            return _fail("call-ended", "invalid-params")
        assert self.provider is not None
        state = body.get("state") or {}
        options = {"mic": bool(state.get("mic", False)), "cam": bool(state.get("cam", False))}
        username = self._username(user_id)
        user = {"_id": user_id, "username": username, "name": self._user(username)["name"]}
        url = await self.provider.customize_url(dict(call), user, options)
        return web.json_response({"url": url, "providerName": self.provider.name, "success": True})

    async def _vc_cancel(self, request: web.Request) -> web.Response:
        if self._authenticated(request) is None:
            return self._unauthorized()
        body = await self._json(request) or {}
        call = self.calls.get(str(body.get("callId", "")))
        if call is None or call["type"] != "direct":
            return _fail("invalid-call", "invalid-params")
        if call["status"] != VIDEOCONF_CALLING:
            return _fail("invalid-call-status", "invalid-params")
        call["status"] = VIDEOCONF_ENDED
        call["ringing"] = False
        call["endedAt"] = _date(time.time())
        self._changed()
        return web.json_response({"success": True})

    async def _vc_info(self, request: web.Request) -> web.Response:
        if self._authenticated(request) is None:
            return self._unauthorized()
        call = self.calls.get(request.query.get("callId", ""))
        if call is None:
            return _fail("must have required property 'callId' [invalid-params]")
        return web.json_response({**call, "success": True})

    async def _vc_list(self, request: web.Request) -> web.Response:
        if self._authenticated(request) is None:
            return self._unauthorized()
        rid = request.query.get("roomId")
        if not rid:
            return _fail("must have required property 'roomId' [invalid-params]")
        data = [call for call in self.calls.values() if call["rid"] == rid]
        return web.json_response(
            {"data": data, "offset": 0, "count": len(data), "total": len(data), "success": True}
        )

    async def _vc_providers(self, request: web.Request) -> web.Response:
        if self._authenticated(request) is None:
            return self._unauthorized()
        data = (
            []
            if self.provider is None
            else [{"key": self.provider.name, "label": self.provider.name}]
        )
        return web.json_response({"data": data, "success": True})

    async def _vc_capabilities(self, request: web.Request) -> web.Response:
        if self._authenticated(request) is None:
            return self._unauthorized()
        if self.provider is None:
            return _fail("no-videoconf-provider-app", "no-videoconf-provider-app")
        return web.json_response(
            {
                "providerName": self.provider.name,
                "capabilities": self.provider.capabilities,
                "success": True,
            }
        )

    async def _app_public(self, request: web.Request) -> web.Response:
        if self.app_endpoint is None:
            return web.json_response({"success": False, "error": "App not found"}, status=404)
        return await self.app_endpoint(request, request.match_info["path"])

    # -- DDP ----------------------------------------------------------------------

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(json.dumps({"server_id": "0"}))
        connected = False
        user_id: str | None = None
        session = _rc_id()
        try:
            async for frame in ws:
                if frame.type != WSMsgType.TEXT:
                    continue
                try:
                    message = json.loads(frame.data)
                except ValueError:
                    continue
                kind = message.get("msg")
                if kind == "connect":
                    if message.get("version") != "1":
                        await ws.send_str(json.dumps({"msg": "failed", "version": "1"}))
                        continue
                    connected = True
                    await ws.send_str(json.dumps({"msg": "connected", "session": session}))
                elif not connected:
                    await ws.send_str(
                        json.dumps(
                            {
                                "msg": "error",
                                "reason": "Must connect first",
                                "offendingMessage": message,
                            }
                        )
                    )
                elif kind == "ping":
                    reply = {"msg": "pong", **({"id": message["id"]} if "id" in message else {})}
                    await ws.send_str(json.dumps(reply))
                elif kind == "method" and message.get("method") == "login":
                    user_id = await self._ddp_login(ws, message)
                elif kind == "sub" and message.get("name") == "stream-room-messages":
                    params = message.get("params") or []
                    rid = params[0] if params else ""
                    if user_id is None or rid not in self.rooms:
                        await ws.send_str(
                            json.dumps(
                                {
                                    "msg": "nosub",
                                    "id": message.get("id"),
                                    "error": {
                                        "isClientSafe": True,
                                        "error": "not-allowed",
                                        "reason": "Not allowed",
                                        "message": "Not allowed [not-allowed]",
                                        "errorType": "Meteor.Error",
                                    },
                                }
                            )
                        )
                        continue
                    self._subscribers.append((ws, rid, str(message.get("id"))))
                    await ws.send_str(json.dumps({"msg": "ready", "subs": [message.get("id")]}))
        finally:
            self._subscribers = [s for s in self._subscribers if s[0] is not ws]
        return ws

    async def _ddp_login(self, ws: web.WebSocketResponse, message: dict[str, Any]) -> str | None:
        params = message.get("params") or [{}]
        resume = params[0].get("resume") if isinstance(params[0], dict) else None
        user_id = self.tokens.get(resume or "")
        if user_id is None:
            reason = "You've been logged out by the server. Please log in again."
            await ws.send_str(
                json.dumps(
                    {
                        "msg": "result",
                        "id": message.get("id"),
                        "error": {
                            "isClientSafe": True,
                            "error": 403,
                            "reason": reason,
                            "message": f"{reason} [403]",
                            "errorType": "Meteor.Error",
                        },
                    }
                )
            )
            return None
        expires = int((time.time() + 90 * 86400) * 1000)
        await ws.send_str(
            json.dumps(
                {
                    "msg": "result",
                    "id": message.get("id"),
                    "result": {
                        "id": user_id,
                        "token": resume,
                        "tokenExpires": {"$date": expires},
                        "type": "resume",
                    },
                }
            )
        )
        await ws.send_str(json.dumps({"msg": "updated", "methods": [message.get("id")]}))
        return user_id
