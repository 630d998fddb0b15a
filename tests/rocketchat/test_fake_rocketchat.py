"""The fake Rocket.Chat's video-conference REST answers, with a provider backed by mediafed.

The provider here does what the App's provider does (create the room's call,
ask for a per-user join link) through mediafed's real call API, so starting a
call "from the Rocket.Chat UI" (REST ``video-conference.start``/``join``) lands
in a mediafed call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from aiohttp import web
from fake_server import FakeRocketChat

from mediafed import server
from mediafed.config import Config
from mediafed.signal.livekit.tokens import VideoGrant, mint_token, require_room_join, verify_token

KEY, SECRET = "apikey", "a-long-enough-api-secret-for-tests-0123456789"


class MediafedProvider:
    name = "mediafed"
    capabilities = {"mic": True, "cam": True, "title": True}

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session, self.url = session, url

    def _headers(self) -> dict[str, str]:
        grant = VideoGrant(room_create=True, room_list=True, room_admin=True)
        return {"Authorization": f"Bearer {mint_token(KEY, SECRET, identity='rc', video=grant)}"}

    async def _call(self, call: dict[str, Any]) -> dict[str, Any]:
        body = {"external_room": f"rocketchat:{call['rid']}", "external_call_id": call["_id"]}
        async with self.session.post(
            f"{self.url}/api/v1/calls", json=body, headers=self._headers()
        ) as response:
            assert response.status in (200, 201)
            data: dict[str, Any] = await response.json()
            return data

    async def generate_url(self, call: dict[str, Any]) -> str:
        return str((await self._call(call))["join_url"])

    async def customize_url(
        self, call: dict[str, Any], user: dict[str, Any], options: dict[str, bool]
    ) -> str:
        made = await self._call(call)
        body = {"identity": user["username"], "name": user["name"], **options}
        async with self.session.post(
            f"{self.url}/api/v1/calls/{made['call_id']}/join", json=body, headers=self._headers()
        ) as response:
            return str((await response.json())["join_url"])


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[FakeRocketChat, aiohttp.ClientSession]]:
    config = Config.model_validate({"keys": {KEY: SECRET}, "server": {"data_dir": str(tmp_path)}})
    app = await server.build_app(config, extensions=[server.call_api_extension()])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    session = aiohttp.ClientSession()
    fake = FakeRocketChat(provider=MediafedProvider(session, f"http://127.0.0.1:{port}"))
    fake.add_room("team")
    await fake.start()
    yield fake, session
    await fake.stop()
    await session.close()
    await runner.cleanup()


async def _login(fake: FakeRocketChat, session: aiohttp.ClientSession) -> dict[str, str]:
    async with session.post(
        f"{fake.url}/api/v1/login", json={"user": "mediafed.bot", "password": "bot-password"}
    ) as response:
        data = (await response.json())["data"]
    return {"X-User-Id": data["userId"], "X-Auth-Token": data["authToken"]}


async def test_start_and_join_a_call_from_rocketchat(
    setup: tuple[FakeRocketChat, aiohttp.ClientSession],
) -> None:
    fake, session = setup
    rid = next(iter(fake.rooms))
    auth = await _login(fake, session)
    api = f"{fake.url}/api/v1"
    async with session.post(
        f"{api}/video-conference.start", json={"roomId": rid, "title": "Sync"}, headers=auth
    ) as response:
        started = await response.json()
    assert started["success"] is True
    assert started["data"]["type"] == "videoconference" and started["data"]["rid"] == rid
    assert started["data"]["providerName"] == "mediafed"
    call_id = started["data"]["callId"]
    [message] = fake.messages
    assert message["t"] == "videoconf"
    assert message["blocks"] == [
        {"type": "video_conf", "callId": call_id, "appId": "videoconf-core"}
    ]

    async with session.post(
        f"{api}/video-conference.join",
        json={"callId": call_id, "state": {"mic": True, "cam": False}},
        headers=auth,
    ) as response:
        joined = await response.json()
    assert joined["success"] is True and joined["providerName"] == "mediafed"
    query = parse_qs(urlsplit(joined["url"]).query)
    claims = verify_token(query["token"][0], {KEY: SECRET})
    assert require_room_join(claims, f"rc-{rid}") and claims.identity == "mediafed.bot"
    assert (query["mic"], query["cam"]) == (["1"], ["0"])

    async with session.get(
        f"{api}/video-conference.info", params={"callId": call_id}, headers=auth
    ) as response:
        info = await response.json()
    assert info["_id"] == call_id and info["status"] == 1 and info["success"] is True
    assert info["url"].startswith("http://127.0.0.1:")
    async with session.get(
        f"{api}/video-conference.list", params={"roomId": rid}, headers=auth
    ) as response:
        listed = await response.json()
    assert [c["_id"] for c in listed["data"]] == [call_id] and listed["total"] == 1
    async with session.get(f"{api}/video-conference.providers", headers=auth) as response:
        assert (await response.json())["data"] == [{"key": "mediafed", "label": "mediafed"}]
    async with session.get(f"{api}/video-conference.capabilities", headers=auth) as response:
        caps = await response.json()
    assert caps["capabilities"] == {"mic": True, "cam": True, "title": True}
    # Only a direct call that still rings can be cancelled.
    async with session.post(
        f"{api}/video-conference.cancel", json={"callId": call_id}, headers=auth
    ) as response:
        assert response.status == 400
        assert (await response.json())["error"] == "invalid-call"
    assert fake.calls[call_id]["status"] == 1


async def test_documented_error_shapes(
    setup: tuple[FakeRocketChat, aiohttp.ClientSession],
) -> None:
    fake, session = setup
    api = f"{fake.url}/api/v1"
    async with session.post(f"{api}/video-conference.start", json={}) as response:
        assert response.status == 401
        assert await response.json() == {
            "status": "error",
            "message": "You must be logged in to do this.",
        }
    auth = await _login(fake, session)
    async with session.post(f"{api}/video-conference.start", json={}, headers=auth) as response:
        body = await response.json()
    assert response.status == 400
    assert body["success"] is False and body["errorType"] == "invalid-params"
    async with session.post(
        f"{api}/login", json={"user": "mediafed.bot", "password": "nope"}
    ) as response:
        assert response.status == 401
        assert (await response.json())["status"] == "error"
