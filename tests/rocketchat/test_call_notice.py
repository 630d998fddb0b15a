"""A call started on the Matrix side is announced in the linked Rocket.Chat room.

The notice goes through the real Rocket.Chat client to the fake Rocket.Chat
server; when Rocket.Chat is down it is retried, then logged, and the call
itself keeps working.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from aiohttp import web
from fake_server import FakeRocketChat

from mediafed import server
from mediafed.config import Config
from mediafed.matrix.focus import room_call_alias
from mediafed.rocketchat.config import RocketChatConfig
from mediafed.rocketchat.handlers import CALL_SERVICE_KEY
from mediafed.rocketchat.models import CreateCall
from mediafed.rocketchat.service import CallService
from mediafed.signal.livekit.tokens import require_room_join, verify_token

KEY, SECRET = "apikey", "a-long-enough-api-secret-for-tests-0123456789"


class _Retried(logging.Handler):
    """Sets an event when the notice logs its first retry."""

    def __init__(self) -> None:
        super().__init__()
        self.event = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "retry in" in record.getMessage():
            self.event.set()


async def _start_node(
    tmp_path: Path, rc: RocketChatConfig
) -> tuple[web.AppRunner, CallService, str]:
    # The notice has no request to take the host from: the link is built from
    # server.public_url, so the node needs a known port before it starts.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    config = Config.model_validate(
        {
            "keys": {KEY: SECRET},
            "server": {"data_dir": str(tmp_path), "public_url": url, "http_port": port},
        }
    )
    app = await server.build_app(config, extensions=[server.call_api_extension(rocketchat=rc)])
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, app[CALL_SERVICE_KEY], url


@pytest.fixture
async def fake() -> AsyncIterator[FakeRocketChat]:
    rc = FakeRocketChat()
    rc.add_room("team")
    await rc.start()
    yield rc
    await rc.stop()


def _rc_config(fake: FakeRocketChat, attempts: int, backoff_s: float) -> RocketChatConfig:
    return RocketChatConfig(
        url=fake.url,
        user="mediafed.bot",
        password="bot-password",
        notice_attempts=attempts,
        notice_backoff_s=backoff_s,
        timeout_s=5,
    )


@pytest.mark.parametrize(
    "matrix_room",
    ["!t:example.org", "!31hneApxJ_1o-63DmFrpeqnkFfWppnzWso1JvH3ogLM"],  # versions 1-11, 12
)
async def test_matrix_call_is_announced_with_a_working_link(
    tmp_path: Path, fake: FakeRocketChat, matrix_room: str
) -> None:
    rid = next(iter(fake.rooms))
    runner, service, _ = await _start_node(tmp_path, _rc_config(fake, 3, 0.01))
    # The Matrix front-end reports a call in the Matrix room's own call room.
    room = room_call_alias(matrix_room)
    try:
        await service.store.put_bridge("team", rocketchat_room=rid, matrix_room=matrix_room)
        assert await service.call_started_elsewhere(room, "Bob") is True
        [message] = fake.messages
        assert message["rid"] == rid and message["u"]["username"] == "mediafed.bot"
        prefix = "Bob started a call — Join: "
        assert message["msg"].startswith(prefix)
        link = message["msg"][len(prefix) :]
        async with (
            aiohttp.ClientSession() as session,
            session.get(link, allow_redirects=False) as response,
        ):
            assert response.status == 302
            token = parse_qs(urlsplit(response.headers["Location"]).query)["token"][0]
        assert require_room_join(verify_token(token, {KEY: SECRET}), room) == room
        call = await service.store.active_call(room)
        assert call is not None and call.external_room == matrix_room
        # Rocket.Chat's video conference for it joins this call, which still does
        # not ring on the Matrix side (it was started there).
        await service.create_call(
            CreateCall(external_room=matrix_room, external_call_id="VC_1"), KEY
        )
        assert await service.rocketchat_started_call(room) is None
        # An unbridged room posts nothing.
        assert await service.call_started_elsewhere("lonely", "Bob") is False
        assert len(fake.messages) == 1
    finally:
        await runner.cleanup()


async def test_rocketchat_down_notice_retried_logged_call_unharmed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeRocketChat()
    rid = fake.add_room("team")
    await fake.start()
    await fake.stop()  # Rocket.Chat is down from here on.
    runner, service, _ = await _start_node(tmp_path, _rc_config(fake, 3, 0.01))
    try:
        await service.store.put_bridge("team", rocketchat_room=rid, matrix_room=None)
        with caplog.at_level(logging.WARNING, logger="mediafed.rocketchat.service"):
            assert await service.call_started_elsewhere("team", "Bob") is False
        assert caplog.text.count("retry in") == 2
        assert "failed after 3 attempts" in caplog.text
        assert "cannot reach Rocket.Chat" in caplog.text
        call = await service.store.active_call("team")
        assert call is not None
        token = service.join_token(call, "alice", "Alice")
        assert require_room_join(verify_token(token, {KEY: SECRET}), "team") == "team"
    finally:
        await runner.cleanup()


async def test_notice_goes_through_once_rocketchat_is_back(tmp_path: Path) -> None:
    fake = FakeRocketChat()
    rid = fake.add_room("team")
    await fake.start()
    port = fake.port
    await fake.stop()
    watcher = _Retried()
    logging.getLogger("mediafed.rocketchat.service").addHandler(watcher)
    runner, service, _ = await _start_node(tmp_path, _rc_config(fake, 5, 0.2))
    try:
        await service.store.put_bridge("team", rocketchat_room=rid, matrix_room=None)
        notice = service.call_started_elsewhere("team", "Bob")
        await asyncio.wait_for(watcher.event.wait(), 10)
        await fake.start(port)
        assert await asyncio.wait_for(notice, 20) is True
        assert [m["msg"].split(" — ")[0] for m in fake.messages] == ["Bob started a call"]
    finally:
        logging.getLogger("mediafed.rocketchat.service").removeHandler(watcher)
        await runner.cleanup()
        await fake.stop()


async def test_a_call_rocketchat_started_is_one_to_ring_matrix_for(
    tmp_path: Path, fake: FakeRocketChat
) -> None:
    rid = next(iter(fake.rooms))
    runner, service, _ = await _start_node(tmp_path, _rc_config(fake, 1, 0.01))
    room = room_call_alias("!t:example.org")
    try:
        await service.store.put_bridge("team", rocketchat_room=rid, matrix_room="!t:example.org")
        # What the App's POST /api/v1/calls sends for a Rocket.Chat video conference.
        call, created = await service.create_call(
            CreateCall(external_room=f"rocketchat:{rid}", external_call_id="VC_1"), KEY
        )
        assert created and call.room == room
        assert await service.rocketchat_started_call(room) == call.call_id
        await service.end_call(call.call_id)
        assert await service.rocketchat_started_call(room) is None
    finally:
        await runner.cleanup()
