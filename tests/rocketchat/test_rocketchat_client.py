"""The Rocket.Chat client (REST + DDP) against the fake Rocket.Chat server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from fake_server import FakeRocketChat

from mediafed.errors import AuthError, ConfigError
from mediafed.rocketchat.client import RocketChatClient, RocketChatError
from mediafed.rocketchat.config import RocketChatConfig


@pytest.fixture
async def fake() -> AsyncIterator[FakeRocketChat]:
    server = FakeRocketChat()
    server.add_room("general")
    await server.start()
    yield server
    await server.stop()


def _config(fake: FakeRocketChat, **overrides: str) -> RocketChatConfig:
    fields = {"url": fake.url, "user": "mediafed.bot", "password": "bot-password", **overrides}
    return RocketChatConfig.model_validate(fields)


def _general(fake: FakeRocketChat) -> str:
    return next(rid for rid, room in fake.rooms.items() if room["name"] == "general")


async def test_login_then_post_message_lands_in_the_room(fake: FakeRocketChat) -> None:
    rid = _general(fake)
    async with RocketChatClient(_config(fake)) as client:
        message = await client.post_message(rid, "hello from mediafed")
        assert client.user_id == fake.user_ids["mediafed.bot"]
    assert message["rid"] == rid
    assert message["msg"] == "hello from mediafed"
    assert [m["msg"] for m in fake.messages] == ["hello from mediafed"]
    assert fake.messages[0]["u"]["username"] == "mediafed.bot"
    assert fake.requests[:2] == ["POST /api/v1/login", "POST /api/v1/chat.postMessage"]


async def test_rooms_and_users_info(fake: FakeRocketChat) -> None:
    rid = _general(fake)
    async with RocketChatClient(_config(fake)) as client:
        room = await client.room_info(rid)
        by_name = await client.user_info(username="mediafed.bot")
        by_id = await client.user_info(user_id=fake.user_ids["mediafed.bot"])
    assert room["_id"] == rid and room["name"] == "general" and room["t"] == "c"
    assert by_name == by_id and by_name["username"] == "mediafed.bot"


async def test_error_shape_becomes_rocketchat_error(fake: FakeRocketChat) -> None:
    async with RocketChatClient(_config(fake)) as client:
        with pytest.raises(RocketChatError) as caught:
            await client.room_info("doesnotexist")
        assert caught.value.error_type == "error-room-not-found"
        assert caught.value.status == 400
        with pytest.raises(RocketChatError) as caught:
            await client.video_conference_info("nope")
        assert caught.value.error_type == "invalid-params"


async def test_wrong_password_is_an_auth_error(fake: FakeRocketChat) -> None:
    async with RocketChatClient(_config(fake, password="wrong")) as client:
        with pytest.raises(AuthError, match=r"check rocketchat\.user/password"):
            await client.room_info(_general(fake))


async def test_expired_session_logs_in_again(fake: FakeRocketChat) -> None:
    rid = _general(fake)
    async with RocketChatClient(_config(fake)) as client:
        await client.room_info(rid)
        first = client.auth_token
        fake.logout_everyone()
        await client.post_message(rid, "still here")
        assert client.auth_token != first
    assert fake.requests.count("POST /api/v1/login") == 2


async def test_personal_access_token_skips_login(fake: FakeRocketChat) -> None:
    fake.tokens["pat-123"] = fake.user_ids["mediafed.bot"]
    config = RocketChatConfig(url=fake.url, token="pat-123", user_id=fake.user_ids["mediafed.bot"])
    async with RocketChatClient(config) as client:
        await client.room_info(_general(fake))
    assert "POST /api/v1/login" not in fake.requests


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="user_id"):
        RocketChatConfig(url="http://rc.test", token="t")
    with pytest.raises(ValueError, match="password"):
        RocketChatConfig(url="http://rc.test", user="bot")
    with pytest.raises(ValueError, match="http"):
        RocketChatConfig(url="rc.test", user="bot", password="pw")
    assert not RocketChatConfig().enabled
    with pytest.raises(ConfigError):
        RocketChatClient(RocketChatConfig())


async def test_server_down_is_a_clear_error() -> None:
    fake = FakeRocketChat()
    await fake.start()
    url = fake.url
    await fake.stop()
    config = RocketChatConfig(url=url, user="mediafed.bot", password="bot-password")
    async with RocketChatClient(config) as client:
        with pytest.raises(RocketChatError, match=r"cannot reach Rocket\.Chat"):
            await client.post_message("x", "y")


async def test_ddp_login_subscribe_and_receive_room_messages(fake: FakeRocketChat) -> None:
    rid = _general(fake)
    async with RocketChatClient(_config(fake)) as client, client.realtime() as realtime:
        assert realtime.session_id
        await realtime.subscribe_room_messages(rid)
        stream = realtime.room_messages()
        await client.post_message(rid, "over DDP")
        message = await asyncio.wait_for(anext(stream), 10)
        assert message["msg"] == "over DDP" and message["rid"] == rid
        with pytest.raises(RocketChatError, match="refused the subscription"):
            await realtime.subscribe_room_messages("unknown-room")


async def test_ddp_login_with_a_dead_token_is_refused(fake: FakeRocketChat) -> None:
    async with RocketChatClient(_config(fake)) as client:
        await client.login()
        fake.logout_everyone()
        realtime = client.realtime()
        with pytest.raises(AuthError, match="logged out by the server"):
            await realtime.connect()
        await realtime.close()
