"""A Rocket.Chat client for what the bridge needs: REST and the DDP realtime API.

REST (https://developer.rocket.chat/apidocs): ``POST /api/v1/login`` gives
``data.{authToken,userId}``, sent back as ``X-Auth-Token``/``X-User-Id``;
``chat.postMessage``, ``rooms.info``, ``users.info``, ``video-conference.{start,cancel,
info,capabilities}``.
Errors come as ``{"success": false, "error": "...", "errorType": "..."}`` (or
``{"status": "error", "message": "..."}`` for authentication).

Realtime: DDP (Meteor's Distributed Data Protocol, spec at
github.com/meteor/meteor/blob/devel/packages/ddp/DDP.md) over ``ws(s)://host/websocket``:
``connect`` -> ``connected``, ``method login [{"resume": token}]`` -> ``result``,
``sub stream-room-messages [rid, false]`` -> ``ready``, then ``changed`` events;
``ping`` is answered with ``pong``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import websockets

from mediafed.errors import AuthError, ConfigError, RemoteProtocolError
from mediafed.rocketchat.config import RocketChatConfig

log = logging.getLogger(__name__)


class RocketChatError(RemoteProtocolError):
    """Rocket.Chat answered with an error (``errorType`` kept when it gave one)."""

    def __init__(self, message: str, *, status: int = 0, error_type: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type


class RocketChatClient:
    """REST client; logs in lazily and again once when the session expires."""

    def __init__(
        self, config: RocketChatConfig, *, session: aiohttp.ClientSession | None = None
    ) -> None:
        if not config.enabled:
            raise ConfigError("Rocket.Chat is not configured; set [rocketchat] url and login")
        self.config = config
        self.base = config.url.rstrip("/")
        self._own_session = session is None
        self._session = session
        self._auth: tuple[str, str] | None = (
            (config.user_id, config.token) if config.token else None
        )
        self._login_lock = asyncio.Lock()

    async def __aenter__(self) -> RocketChatClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.config.timeout_s)
            )
        return self._session

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
        self._session = None

    @property
    def auth_token(self) -> str | None:
        return self._auth[1] if self._auth else None

    @property
    def user_id(self) -> str | None:
        return self._auth[0] if self._auth else None

    async def login(self) -> tuple[str, str]:
        """``POST /api/v1/login``; returns (userId, authToken)."""
        if not self.config.password:
            raise AuthError(
                "Rocket.Chat refused the access token and no password is configured; "
                "create a new personal access token"
            )
        data = await self._request(
            "POST",
            "login",
            json_body={"user": self.config.user, "password": self.config.password},
            authenticated=False,
        )
        inner = data.get("data")
        if not isinstance(inner, dict) or not inner.get("authToken") or not inner.get("userId"):
            raise RocketChatError("Rocket.Chat login answer has no data.authToken/userId")
        self._auth = (str(inner["userId"]), str(inner["authToken"]))
        log.info("- logged in to Rocket.Chat %s as %s", self.base, self.config.user)
        return self._auth

    async def _ensure_login(self) -> None:
        async with self._login_lock:
            if self._auth is None:
                await self.login()

    async def _request(
        self,
        method: str,
        endpoint: str,
        *,
        json_body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        authenticated: bool = True,
        retry_login: bool = True,
    ) -> dict[str, Any]:
        headers: dict[str, str] = {}
        if authenticated:
            await self._ensure_login()
            assert self._auth is not None
            headers = {"X-User-Id": self._auth[0], "X-Auth-Token": self._auth[1]}
        url = f"{self.base}/api/v1/{endpoint}"
        try:
            async with self.session.request(
                method, url, json=json_body, params=params, headers=headers
            ) as response:
                status = response.status
                text = await response.text()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise RocketChatError(
                f"cannot reach Rocket.Chat at {self.base} ({type(exc).__name__}: {exc}); "
                "check rocketchat.url and that the server is up"
            ) from None
        try:
            data = json.loads(text) if text else {}
        except ValueError:
            raise RocketChatError(
                f"Rocket.Chat {endpoint} answered HTTP {status} with non-JSON", status=status
            ) from None
        if not isinstance(data, dict):
            raise RocketChatError(f"Rocket.Chat {endpoint} answered a non-object", status=status)
        if status == 401 and authenticated and retry_login and self.config.password:
            self._auth = None
            return await self._request(
                method, endpoint, json_body=json_body, params=params, retry_login=False
            )
        if status == 401:
            raise AuthError(
                f"Rocket.Chat refused the login for {endpoint}: "
                f"{data.get('message') or data.get('error') or 'unauthorized'}; "
                "check rocketchat.user/password or token/user_id"
            )
        if status >= 400 or data.get("success") is False or data.get("status") == "error":
            raise RocketChatError(
                f"Rocket.Chat {endpoint} failed (HTTP {status}): "
                f"{data.get('error') or data.get('message') or 'unknown error'}",
                status=status,
                error_type=str(data.get("errorType", "")),
            )
        return data

    async def post_message(
        self, room_id: str, text: str, *, alias: str | None = None
    ) -> dict[str, Any]:
        """``chat.postMessage`` into ``room_id``; returns the stored message."""
        body: dict[str, Any] = {"roomId": room_id, "text": text}
        if alias:
            body["alias"] = alias
        data = await self._request("POST", "chat.postMessage", json_body=body)
        message = data.get("message")
        return message if isinstance(message, dict) else {}

    async def room_info(self, room_id: str) -> dict[str, Any]:
        data = await self._request("GET", "rooms.info", params={"roomId": room_id})
        room = data.get("room")
        if not isinstance(room, dict):
            raise RocketChatError("rooms.info answer has no 'room' object")
        return room

    async def user_info(
        self, *, user_id: str | None = None, username: str | None = None
    ) -> dict[str, Any]:
        if (user_id is None) == (username is None):
            raise ValueError("user_info takes exactly one of user_id, username")
        params = {"userId": user_id} if user_id is not None else {"username": str(username)}
        data = await self._request("GET", "users.info", params=params)
        user = data.get("user")
        if not isinstance(user, dict):
            raise RocketChatError("users.info answer has no 'user' object")
        return user

    async def video_conference_capabilities(self) -> dict[str, Any]:
        """``video-conference.capabilities``: ``{providerName, capabilities}`` of the
        workspace's default provider (the one ``video-conference.start`` uses)."""
        data = await self._request("GET", "video-conference.capabilities")
        data.pop("success", None)
        return data

    async def start_video_conference(
        self, room_id: str, *, title: str = "", allow_ringing: bool = False
    ) -> dict[str, Any]:
        """``video-conference.start``: Rocket.Chat's own call in ``room_id`` (its card,
        ringing in a direct room with ``allow_ringing``), made by the default provider;
        returns ``data``: ``{type, callId, rid, providerName}``."""
        body: dict[str, Any] = {"roomId": room_id, "allowRinging": allow_ringing}
        if title:
            body["title"] = title
        data = await self._request("POST", "video-conference.start", json_body=body)
        inner = data.get("data")
        if not isinstance(inner, dict) or not isinstance(inner.get("callId"), str):
            raise RocketChatError("video-conference.start answer has no data.callId")
        return inner

    async def cancel_video_conference(self, call_id: str) -> None:
        """``video-conference.cancel``: stop a direct call that still rings."""
        await self._request("POST", "video-conference.cancel", json_body={"callId": call_id})

    async def video_conference_info(self, call_id: str) -> dict[str, Any]:
        data = await self._request("GET", "video-conference.info", params={"callId": call_id})
        data.pop("success", None)
        return data

    def realtime(self) -> RocketChatRealtime:
        return RocketChatRealtime(self)


class RocketChatRealtime:
    """One DDP connection: connect, resume login, room-message subscriptions."""

    def __init__(self, client: RocketChatClient) -> None:
        self.client = client
        base = client.base
        scheme = "wss" if base.startswith("https://") else "ws"
        self.url = f"{scheme}://{base.split('://', 1)[1]}/websocket"
        self._ws: websockets.ClientConnection | None = None
        self._ids = itertools.count(1)
        self._waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self._connected: asyncio.Future[dict[str, Any]] | None = None
        self.session_id = ""

    async def __aenter__(self) -> RocketChatRealtime:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _send(self, message: Mapping[str, Any]) -> None:
        assert self._ws is not None
        await self._ws.send(json.dumps(message))

    async def connect(self) -> None:
        """Open the socket, do the DDP handshake and log in with the REST token."""
        await self.client._ensure_login()
        try:
            self._ws = await websockets.connect(self.url, open_timeout=self.client.config.timeout_s)
        except (OSError, websockets.WebSocketException, TimeoutError) as exc:
            raise RocketChatError(
                f"cannot open the Rocket.Chat realtime API at {self.url} ({exc})"
            ) from None
        loop = asyncio.get_running_loop()
        self._connected = loop.create_future()
        self._reader = asyncio.create_task(self._read(), name="rocketchat-ddp")
        await self._send({"msg": "connect", "version": "1", "support": ["1"]})
        answer = await asyncio.wait_for(self._connected, self.client.config.timeout_s)
        if answer.get("msg") == "failed":
            raise RocketChatError(
                f"Rocket.Chat realtime API wants DDP version {answer.get('version')}"
            )
        self.session_id = str(answer.get("session", ""))
        result = await self.call("login", {"resume": self.client.auth_token})
        if not isinstance(result, dict) or not result.get("id"):
            raise AuthError("Rocket.Chat realtime login gave no user id")
        log.info("- DDP session %s logged in as %s", self.session_id, result.get("id"))

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        if self._ws is not None:
            await self._ws.close()
            self._ws = None

    async def _read(self) -> None:
        assert self._ws is not None
        error: Exception = RocketChatError("the Rocket.Chat realtime connection closed")
        try:
            async for raw in self._ws:
                try:
                    message = json.loads(raw)
                except ValueError:
                    log.warning("x DDP: non-JSON frame ignored")
                    continue
                if not isinstance(message, dict):
                    continue
                await self._dispatch(message)
        except websockets.WebSocketException as exc:
            error = RocketChatError(f"the Rocket.Chat realtime connection failed: {exc}")
        finally:
            for waiter in self._waiters.values():
                if not waiter.done():
                    waiter.set_exception(error)
            if self._connected is not None and not self._connected.done():
                self._connected.set_exception(error)
            self._messages.put_nowait({"msg": "closed"})

    async def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message.get("msg")
        if kind == "ping":
            reply: dict[str, Any] = {"msg": "pong"}
            if "id" in message:
                reply["id"] = message["id"]
            await self._send(reply)
        elif kind in ("connected", "failed"):
            if self._connected is not None and not self._connected.done():
                self._connected.set_result(message)
        elif kind in ("result", "nosub"):
            waiter = self._waiters.pop(str(message.get("id")), None)
            if waiter is not None and not waiter.done():
                waiter.set_result(message)
        elif kind == "ready":
            for sub_id in message.get("subs", []):
                waiter = self._waiters.pop(str(sub_id), None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(message)
        elif kind == "changed" and message.get("collection") == "stream-room-messages":
            self._messages.put_nowait(message)

    async def _request(self, message: dict[str, Any]) -> dict[str, Any]:
        request_id = str(next(self._ids))
        message["id"] = request_id
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters[request_id] = future
        await self._send(message)
        return await asyncio.wait_for(future, self.client.config.timeout_s)

    async def call(self, method: str, *params: Any) -> Any:
        """A DDP method call; returns ``result`` or raises with the server's ``error``."""
        answer = await self._request({"msg": "method", "method": method, "params": list(params)})
        if "error" in answer:
            error = answer["error"] if isinstance(answer["error"], dict) else {}
            reason = error.get("reason") or error.get("message") or "error"
            if error.get("error") in (403, "403") or method == "login":
                raise AuthError(f"Rocket.Chat realtime {method} refused: {reason}")
            raise RocketChatError(
                f"Rocket.Chat realtime {method} failed: {reason}",
                error_type=str(error.get("errorType", "")),
            )
        return answer.get("result")

    async def subscribe_room_messages(self, room_id: str) -> None:
        answer = await self._request(
            {"msg": "sub", "name": "stream-room-messages", "params": [room_id, False]}
        )
        if answer.get("msg") == "nosub":
            error = answer.get("error") or {}
            reason = error.get("reason") if isinstance(error, dict) else None
            raise RocketChatError(
                f"Rocket.Chat refused the subscription to room {room_id}: {reason or 'nosub'}"
            )

    async def room_messages(self) -> AsyncIterator[dict[str, Any]]:
        """Messages of every subscribed room, until the connection closes."""
        while True:
            event = await self._messages.get()
            if event.get("msg") == "closed":
                return
            fields = event.get("fields") or {}
            for arg in fields.get("args") or []:
                if isinstance(arg, dict):
                    yield arg
