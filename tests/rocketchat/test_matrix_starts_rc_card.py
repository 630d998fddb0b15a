"""A call started on the Matrix side shows as Rocket.Chat's own video conference.

mediafed starts it with ``video-conference.start`` as its Rocket.Chat bridge
user (ringing in a direct room); the fake Rocket.Chat then runs the mediafed
App's provider (``fake_app``: the App's HTTP requests to the call API), so a
Rocket.Chat user's join lands in the Matrix room's call room. When Rocket.Chat
refuses, the text notice is posted instead; the call's end ends the card.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from aiohttp import web
from fake_app import FakeMediafedApp
from fake_server import VIDEOCONF_CALLING, VIDEOCONF_ENDED, VIDEOCONF_STARTED, FakeRocketChat

from mediafed import server
from mediafed.config import Config
from mediafed.matrix.call import mediafed_room_for
from mediafed.matrix.callwatch import MatrixCallWatcher
from mediafed.matrix.focus import room_call_alias
from mediafed.matrix.membership import CallMembership
from mediafed.matrix.registration import make_registration
from mediafed.media import RoomManager
from mediafed.rocketchat.handlers import CALL_SERVICE_KEY
from mediafed.rocketchat.service import CallService
from mediafed.signal.livekit.tokens import require_room_join, verify_token

KEY, SECRET = "apikey", "a-long-enough-api-secret-for-tests-0123456789"
MATRIX_ROOM = "!team:hs.example"
CALL_ROOM = room_call_alias(MATRIX_ROOM)
REGISTRATION = make_registration(url="http://127.0.0.1:1", domain="hs.example")


@dataclass
class Setup:
    fake: FakeRocketChat
    app: FakeMediafedApp
    service: CallService
    url: str
    session: aiohttp.ClientSession


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@asynccontextmanager
async def _node(
    tmp_path: Path,
    *,
    room_type: str = "c",
    site_url: bool = True,
    rooms: RoomManager | None = None,
) -> AsyncIterator[Setup]:
    """Fake Rocket.Chat + the App + a mediafed node; with ``rooms``, every front-end
    (the Matrix appservice included), else the call API alone."""
    fake = FakeRocketChat(users={"mediafed.bot": "bot-password", "carol": "carol-password"})
    fake.add_room("carol" if room_type == "d" else "team", room_type)
    await fake.start()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    settings: dict[str, Any] = {
        "keys": {KEY: SECRET},
        "server": {"data_dir": str(tmp_path), "public_url": url, "http_port": port},
        "rocketchat": {
            "url": fake.url,
            "user": "mediafed.bot",
            "password": "bot-password",
            "notice_attempts": 2,
            "notice_backoff_s": 0.01,
            "timeout_s": 5,
        },
    }
    if rooms is not None:
        registration = tmp_path / "registration.yaml"
        REGISTRATION.write(registration)
        settings["matrix"] = {
            "server_name": "hs.example",
            "homeserver_url": "http://127.0.0.1:9",
            "registration": str(registration),
        }
    config = Config.model_validate(settings)
    extensions = server.front_ends(rooms) if rooms is not None else [server.call_api_extension()]
    app = await server.build_app(config, extensions=extensions)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    session = aiohttp.ClientSession()
    rc_app = FakeMediafedApp(fake, session, url, KEY, SECRET, site_url=site_url)
    service = app[CALL_SERVICE_KEY]
    await service.store.put_bridge(
        "team", rocketchat_room=next(iter(fake.rooms)), matrix_room=MATRIX_ROOM
    )
    try:
        yield Setup(fake, rc_app, service, url, session)
    finally:
        await runner.cleanup()
        await session.close()
        await fake.stop()


async def _join_as_carol(setup: Setup, call_id: str) -> str:
    """What Rocket.Chat's "Join" does for carol: ``video-conference.join`` -> her link's room."""
    api = f"{setup.fake.url}/api/v1"
    async with setup.session.post(
        f"{api}/login", json={"user": "carol", "password": "carol-password"}
    ) as response:
        data = (await response.json())["data"]
    auth = {"X-User-Id": data["userId"], "X-Auth-Token": data["authToken"]}
    async with setup.session.post(
        f"{api}/video-conference.join",
        json={"callId": call_id, "state": {"mic": True, "cam": True}},
        headers=auth,
    ) as response:
        joined = await response.json()
    assert joined["success"] is True, joined
    claims = verify_token(parse_qs(urlsplit(joined["url"]).query)["token"][0], {KEY: SECRET})
    assert "carol" in claims.identity  # her username, or her Matrix ghost's device
    return require_room_join(claims, CALL_ROOM)


def _card_messages(fake: FakeRocketChat) -> list[dict[str, Any]]:
    return [m for m in fake.messages if m.get("t") == "videoconf"]


def _member_event(sender: str, device: str, *, left: bool = False) -> dict[str, Any]:
    content: dict[str, Any] = (
        {}
        if left
        else {
            "application": "m.call",
            "call_id": "",
            "scope": "m.room",
            "device_id": device,
            "expires": 3_600_000,
            "focus_active": {"type": "livekit", "focus_selection": "oldest_membership"},
            "foci_preferred": [],
        }
    )
    return {
        "type": "org.matrix.msc3401.call.member",
        "room_id": MATRIX_ROOM,
        "sender": sender,
        "state_key": f"_{sender}_{device}_m.call",
        "origin_server_ts": int(time.time() * 1000),
        "event_id": f"$member-{device}-{'left' if left else 'joined'}",
        "content": content,
    }


async def _transaction(url: str, txn: str, events: list[Mapping[str, Any]]) -> None:
    headers = {"Authorization": f"Bearer {REGISTRATION.hs_token}"}
    async with (
        aiohttp.ClientSession() as http,
        http.put(
            f"{url}/_matrix/app/v1/transactions/{txn}", json={"events": events}, headers=headers
        ) as response,
    ):
        assert response.status == 200, await response.text()


async def test_element_call_in_linked_room_shows_rocketchat_card(
    tmp_path: Path, rooms: RoomManager
) -> None:
    async with _node(tmp_path, rooms=rooms) as setup:
        fake, service = setup.fake, setup.service
        rid = next(iter(fake.rooms))
        await _transaction(setup.url, "t1", [_member_event("@alice:hs.example", "ALICEDEV")])
        await fake.wait_until(lambda: bool(_card_messages(fake)))
        assert fake.started == [
            {"roomId": rid, "allowRinging": False, "title": "Call from @alice:hs.example"}
        ]
        [rc_call] = fake.calls.values()
        assert rc_call["type"] == "videoconference" and rc_call["status"] == VIDEOCONF_STARTED
        assert rc_call["createdBy"]["username"] == "mediafed.bot"
        # The card, not a text notice.
        assert [m for m in fake.messages if m.get("t") != "videoconf"] == []
        call = await service.store.active_call(CALL_ROOM)
        assert call is not None and call.external_call_id == rc_call["_id"]
        assert call.webhook_url == setup.app.webhook_url()
        # Carol's join goes where Element Call users and classic callers are.
        assert await _join_as_carol(setup, rc_call["_id"]) == CALL_ROOM
        assert mediafed_room_for(MATRIX_ROOM) == CALL_ROOM
        # A second Matrix member starts nothing new.
        await _transaction(setup.url, "t2", [_member_event("@bob:hs.example", "BOBDEV")])
        # Everyone leaves the MatrixRTC call, nobody is in the room: the card ends.
        await _transaction(
            setup.url,
            "t3",
            [
                _member_event("@alice:hs.example", "ALICEDEV", left=True),
                _member_event("@bob:hs.example", "BOBDEV", left=True),
            ],
        )
        await fake.wait_until(lambda: rc_call["status"] == VIDEOCONF_ENDED)
        assert len(fake.started) == 1
        assert [e["event"] for e in setup.app.events] == ["call_ended"]
        assert await service.store.active_call(CALL_ROOM) is None


@pytest.mark.parametrize("site_url", [True, False], ids=["app-webhook", "cancel"])
async def test_direct_room_rings_and_the_end_stops_it(tmp_path: Path, site_url: bool) -> None:
    async with _node(tmp_path, room_type="d", site_url=site_url) as setup:
        fake, service = setup.fake, setup.service
        rid = next(iter(fake.rooms))
        assert await service.call_started_elsewhere(CALL_ROOM, "Alice") is True
        assert fake.started == [{"roomId": rid, "allowRinging": True, "title": "Call from Alice"}]
        [rc_call] = fake.calls.values()
        assert rc_call["type"] == "direct" and rc_call["status"] == VIDEOCONF_CALLING
        assert rc_call["ringing"] is True
        assert service.cards[CALL_ROOM].direct is True
        # The Matrix caller gives up before carol answers: the ringing stops.
        await service.room_finished(CALL_ROOM)
        await fake.wait_until(lambda: rc_call["status"] == VIDEOCONF_ENDED)
        assert rc_call["ringing"] is False
        cancelled = "POST /api/v1/video-conference.cancel" in fake.requests
        assert cancelled is not site_url
        assert CALL_ROOM not in service.cards


@pytest.mark.parametrize(
    ("status", "answer"),
    [
        (
            400,
            {"success": False, "error": "no-videoconf-provider-app", "errorType": "invalid-params"},
        ),
        (500, {"success": False, "error": "Internal server error"}),
    ],
    ids=["refused", "http-500"],
)
async def test_refused_start_falls_back_to_the_text_notice(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, status: int, answer: dict[str, Any]
) -> None:
    async with _node(tmp_path) as setup:
        fake, service = setup.fake, setup.service
        fake.start_failure = (status, answer)
        with caplog.at_level(logging.WARNING, logger="mediafed.rocketchat.service"):
            assert await service.call_started_elsewhere(CALL_ROOM, "Alice") is True
        assert len(fake.started) == 1 and fake.calls == {}
        [notice] = fake.messages
        assert notice["msg"].startswith("Alice started a call — Join: ")
        assert "refused video-conference.start" in caplog.text
        assert f"HTTP {status}" in caplog.text
        assert service.cards == {}


async def test_other_default_provider_gets_the_notice_not_a_foreign_call(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with _node(tmp_path) as setup:
        setup.app.name = "jitsi"
        with caplog.at_level(logging.WARNING, logger="mediafed.rocketchat.service"):
            assert await setup.service.call_started_elsewhere(CALL_ROOM, "Alice") is True
        assert setup.fake.started == []
        assert setup.fake.messages[0]["msg"].startswith("Alice started a call")
        assert "provider is 'jitsi', not 'mediafed'" in caplog.text


async def test_call_started_in_rocketchat_is_not_started_again(tmp_path: Path) -> None:
    async with _node(tmp_path) as setup:
        fake = setup.fake
        rid = next(iter(fake.rooms))
        async with setup.session.post(
            f"{fake.url}/api/v1/login", json={"user": "carol", "password": "carol-password"}
        ) as response:
            data = (await response.json())["data"]
        auth = {"X-User-Id": data["userId"], "X-Auth-Token": data["authToken"]}
        async with setup.session.post(
            f"{fake.url}/api/v1/video-conference.start", json={"roomId": rid}, headers=auth
        ) as response:
            assert (await response.json())["success"] is True
        # A Matrix user joins it: Rocket.Chat already shows this call.
        assert await setup.service.call_started_elsewhere(CALL_ROOM, "Alice") is True
        assert len(fake.started) == 1 and len(fake.messages) == 1


def test_watcher_counts_matrix_members_not_the_bridge_ghosts() -> None:
    membership = CallMembership()
    started: list[tuple[str, str]] = []
    ended: list[str] = []
    watcher = MatrixCallWatcher(
        membership,
        REGISTRATION.is_ours,
        on_started=lambda room, who: started.append((room, who)),
        on_ended=ended.append,
        clock_ms=lambda: 1_000,
    )

    def feed(sender: str, device: str, *, left: bool = False) -> None:
        event = {
            "type": "org.matrix.msc3401.call.member",
            "room_id": MATRIX_ROOM,
            "sender": sender,
            "state_key": f"_{sender}_{device}_m.call",
            "origin_server_ts": 500,
            "content": {}
            if left
            else {"application": "m.call", "call_id": "", "device_id": device, "expires": 10_000},
        }
        membership.apply(event)
        watcher.on_event(event)

    feed(REGISTRATION.bot_user_id, "BOT")  # the bridge's own users alone: no Matrix call
    assert started == []
    feed("@alice:hs.example", "A")
    feed("@bob:hs.example", "B")
    assert started == [(CALL_ROOM, "@alice:hs.example")]
    feed("@alice:hs.example", "A", left=True)
    assert ended == []
    feed("@bob:hs.example", "B", left=True)
    assert ended == [CALL_ROOM]
    watcher.on_event({"type": "m.room.message", "room_id": MATRIX_ROOM})
    assert len(started) == 1 and len(ended) == 1
