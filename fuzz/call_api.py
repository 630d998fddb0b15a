"""The call API (``rocketchat/handlers.py``): every route, with request bodies, paths and queries.

The real routes of an app with its SQLite store in build/fuzz/state/; webhooks are
recorded, never sent. Input: ``[control u8][path parameter: u16 length + bytes]
[query: u16 length + bytes]`` then the body. ``control % 9`` picks the route,
``control & 0x10`` sends no valid token. Path parameters ``C0`` and ``K0`` stand for the
id and the invite code of a call the harness made. The answer must be a JSON result, a
redirect (invite) or a 4xx with a JSON error: an exception (a 500) is a crash.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from fuzz import _common

with _common.instrumented(__name__ == "__main__"):
    _common.load_native()
    from mediafed import server
    from mediafed.config import Config
    from mediafed.rocketchat.handlers import CALL_SERVICE_KEY
    from mediafed.signal.livekit.tokens import VideoGrant, mint_token

KEY, SECRET = "apikey", "a-long-enough-api-secret-for-tests-0123456789"
ROUTES = (
    ("POST", "/api/v1/calls"),
    ("GET", "/api/v1/calls"),
    ("GET", "/api/v1/calls/{}"),
    ("DELETE", "/api/v1/calls/{}"),
    ("POST", "/api/v1/calls/{}/join"),
    ("GET", "/api/v1/calls/{}/invite"),
    ("GET", "/api/v1/bridges"),
    ("PUT", "/api/v1/bridges/{}"),
    ("DELETE", "/api/v1/bridges/{}"),
)


class Webhooks:
    """Records what would be sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def send(self, url: str, api_key: str, event: Any) -> str | None:
        json.dumps(event)
        self.sent.append((url, api_key))
        return "id"


class Harness:
    def __init__(self) -> None:
        data_dir = _common.state_dir("call_api")
        config = Config.model_validate(
            {"keys": {KEY: SECRET}, "server": {"data_dir": str(data_dir)}}
        )
        self.app = _common.run_async(
            server.build_app(config, extensions=[server.call_api_extension()])
        )
        self.runner = _common.run_async(_common.start_app(self.app))
        service = self.app[CALL_SERVICE_KEY]
        service.webhooks = Webhooks()  # type: ignore[assignment]
        self.token = mint_token(
            KEY,
            SECRET,
            identity="admin",
            video=VideoGrant(room_create=True, room_list=True, room_admin=True),
        )
        status, body = _common.run_async(
            _common.http(
                self.app,
                "POST",
                "/api/v1/calls",
                self._headers(True),
                json.dumps({"external_room": "rocketchat:fuzzroom"}).encode(),
            )
        )
        assert status in (200, 201), body
        call = json.loads(body)
        self.names = {"C0": call["call_id"], "K0": call["join_url"].rpartition("code=")[2]}

    def _headers(self, authorized: bool) -> dict[str, str]:
        token = self.token if authorized else "not-a-token"
        return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


_harness: Harness | None = None


def harness() -> Harness:
    global _harness
    if _harness is None:
        _harness = Harness()
    return _harness


def test_one_input(data: bytes) -> None:
    if not data:
        return
    h = harness()
    cursor = _common.Cursor(data)
    control = cursor.u8()
    param = cursor.blob().decode("utf-8", "replace")
    query = cursor.blob().decode("utf-8", "replace")
    body = cursor.take(len(cursor))
    method, template = ROUTES[control % len(ROUTES)]
    param = h.names.get(param, param)
    if "{}" in template and not param:
        param = "x"
    path = template.format(quote(param, safe=""))
    if query:
        path += "?" + "&".join(
            quote(k, safe="") + "=" + quote(h.names.get(v, v), safe="")
            for k, _, v in (item.partition("=") for item in query.split("&"))
        )
    try:
        status, answer = _common.run_async(
            _common.http(h.app, method, path, h._headers(not control & 0x10), body)
        )
    except _common.BadRequestLine:
        return
    if status == 302:
        return  # the invite link's redirect to the web client
    if status in (404, 405) and not answer.startswith(b"{"):
        return  # aiohttp's router: no such route or method
    assert status < 500, (status, answer)
    reply = json.loads(answer)
    assert status < 300 or "error" in reply, (status, reply)
    _common.settle(1)
    _common.TRAP.check()


def main() -> None:
    harness()
    _common.run(test_one_input)


if __name__ == "__main__":
    main()
