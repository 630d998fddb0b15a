"""The Rocket.Chat journey with real media, on one full mediafed node.

What the Rocket.Chat App does, done here over HTTP: open a call for a
Rocket.Chat room with ``POST /api/v1/calls`` (a service token like the App's,
a ``webhook_url`` to a small receiver in this test), mint two users' links with
``POST /api/v1/calls/{id}/join``. Both links are opened in headless Chromium
(the web-demo joins straight from ``?token=``); each page plays the other's
camera. The receiver checks every webhook's signature with
:func:`mediafed.rocketchat.webhooks.verify` and sees ``participant_joined`` for both
users; ``DELETE /api/v1/calls/{id}`` brings a signed ``call_ended``. Ending
a call also sends its participants out (second test).
Issue 6 ("Tests": end to end).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from playwright.async_api import BrowserContext

from mediafed import server
from mediafed.config import Config
from mediafed.errors import AuthError
from mediafed.media import RoomManager
from mediafed.rocketchat import webhooks
from mediafed.signal.livekit.tokens import VideoGrant, mint_token
from mediafed.worker import Worker
from tests.support.browser import TIMEOUT_MS, chromium
from tests.support.synapse import free_port
from tests.web.test_web_demo import _wait_for_videos

pytestmark = pytest.mark.slow

KEY, SECRET = "rc-app-key", "a-long-enough-api-secret-for-the-app-0123456789"
TIMEOUT_S = 30.0


@dataclass
class FullNode:
    app: web.Application
    rooms: RoomManager
    http_url: str


@asynccontextmanager
async def full_node(tmp_path: Path) -> AsyncIterator[FullNode]:
    """Every front-end (server.front_ends) on one RoomManager; media on 127.0.0.2."""
    port = free_port()
    http_url = f"http://127.0.0.1:{port}"
    config = Config.model_validate(
        {
            "keys": {KEY: SECRET},
            "server": {
                # the media socket binds this address (see tests/support/livekit_node.py)
                "bind": "127.0.0.2",
                "http_port": port,
                "data_dir": str(tmp_path / "data"),
                "public_url": http_url,
            },
            "rtc": {"udp_port": 0, "tcp_port": 0, "node_ip": ["127.0.0.2"]},
        }
    )
    worker = Worker.from_config(config)
    rooms = worker.rooms
    app = await server.build_app(config, server.front_ends(rooms), worker=worker)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()
    try:
        yield FullNode(app, rooms, http_url)
    finally:
        await runner.cleanup()


@dataclass
class WebhookReceiver:
    """The App's endpoint, reduced to what the test checks: signed events, by kind."""

    events: list[dict[str, Any]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            if request.headers.get(webhooks.KEY_HEADER) != KEY:
                raise AuthError(f"unknown key {request.headers.get(webhooks.KEY_HEADER)!r}")
            webhooks.verify(request.headers.get(webhooks.SIGNATURE_HEADER, ""), body, SECRET)
        except AuthError as exc:
            self.refused.append(str(exc))
            return web.json_response({"error": str(exc)}, status=401)
        async with self._changed:
            self.events.append(json.loads(body))
            self._changed.notify_all()
        return web.json_response({"ok": True})

    def of(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == event]

    async def until(self, predicate: Callable[[], bool], what: str) -> None:
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(predicate), TIMEOUT_S)
            except TimeoutError:
                raise AssertionError(f"timed out waiting for {what}; got {self.events}") from None


@asynccontextmanager
async def webhook_receiver() -> AsyncIterator[tuple[WebhookReceiver, str]]:
    receiver = WebhookReceiver()
    app = web.Application()
    app.router.add_post("/api/apps/public/mediafed/events", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        yield receiver, f"http://127.0.0.1:{port}/api/apps/public/mediafed/events"
    finally:
        await runner.cleanup()


def app_headers() -> dict[str, str]:
    """The App's service token (rocketchat-app/src/crypto.ts serviceToken)."""
    token = mint_token(
        KEY,
        SECRET,
        identity="rocketchat-app",
        video=VideoGrant(room_create=True, room_list=True, room_admin=True),
        ttl_s=300,
    )
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[BrowserContext]:
    async with chromium(tmp_path / "chromium-profile") as context:
        yield context


async def _healthz(http: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    async with http.get(f"{base}/healthz") as resp:
        assert resp.status == 200
        body: dict[str, Any] = await resp.json()
        return body


async def test_rocketchat_call_with_real_media_and_signed_webhooks(
    tmp_path: Path, browser: BrowserContext
) -> None:
    async with (
        full_node(tmp_path) as node,
        webhook_receiver() as (receiver, hook_url),
        aiohttp.ClientSession(headers=app_headers()) as http,
    ):
        base = node.http_url
        # generateUrl: the App opens the call of its Rocket.Chat room
        async with http.post(
            f"{base}/api/v1/calls",
            json={
                "external_room": "rocketchat:GENERAL",
                "external_call_id": "vc-42",
                "title": "Stand-up",
                "webhook_url": hook_url,
            },
        ) as resp:
            assert resp.status == 201, await resp.text()
            call = await resp.json()
        call_id, room_name = call["call_id"], call["room"]
        assert call["status"] == "active" and call["join_url"].startswith(base + "/")

        # customizeUrl: one link per user, camera and microphone on
        links: dict[str, str] = {}
        for identity, name in (("ada", "Ada Lovelace"), ("grace", "Grace Hopper")):
            async with http.post(
                f"{base}/api/v1/calls/{call_id}/join",
                json={"identity": identity, "name": name, "mic": True, "cam": True},
            ) as resp:
                assert resp.status == 200, await resp.text()
                joined = await resp.json()
            assert joined["room"] == room_name and joined["join_url"].startswith(base + "/?")
            links[identity] = joined["join_url"]

        pages = {}
        for identity, url in links.items():
            page = await browser.new_page()
            await page.goto(url)
            await page.wait_for_selector("#controls:not([hidden])", timeout=TIMEOUT_MS)
            pages[identity] = page

        # each page plays the other's camera (size known, frames advancing)
        ada_sees = await _wait_for_videos(pages["ada"], 1)
        grace_sees = await _wait_for_videos(pages["grace"], 1)
        assert [v["identity"] for v in ada_sees] == ["grace"]
        assert [v["identity"] for v in grace_sees] == ["ada"]
        assert all(v["width"] > 0 and v["height"] > 0 for v in ada_sees + grace_sees)
        assert await pages["ada"].text_content("#room-title") == room_name

        # the App's endpoint got signed participant_joined events for both users
        await receiver.until(
            lambda: {e["identity"] for e in receiver.of("participant_joined")} >= {"ada", "grace"},
            "participant_joined for ada and grace",
        )
        for event in receiver.of("participant_joined"):
            assert event["call_id"] == call_id and event["external_call_id"] == "vc-42"
        names = {e["identity"]: e["name"] for e in receiver.of("participant_joined")}
        assert names == {"ada": "Ada Lovelace", "grace": "Grace Hopper"}
        async with http.get(f"{base}/api/v1/calls/{call_id}") as resp:
            listed = await resp.json()
        assert {p["identity"] for p in listed["participants"]} == {"ada", "grace"}
        health = await _healthz(http, base)
        assert health["rooms"] == 1 and health["participants"] == 2

        # the Rocket.Chat side ends the call
        async with http.delete(f"{base}/api/v1/calls/{call_id}") as resp:
            assert resp.status == 200, await resp.text()
            ended = await resp.json()
        assert ended["status"] == "ended"
        await receiver.until(lambda: bool(receiver.of("call_ended")), "call_ended")
        [call_ended] = receiver.of("call_ended")
        assert call_ended["call_id"] == call_id and call_ended["external_call_id"] == "vc-42"
        assert receiver.refused == []

        # an ended call hands out no more links
        async with http.post(
            f"{base}/api/v1/calls/{call_id}/join", json={"identity": "linus", "name": "Linus"}
        ) as resp:
            assert resp.status == 410, await resp.text()
        await asyncio.gather(*(page.close() for page in pages.values()))


async def test_ending_a_call_disconnects_its_pages(tmp_path: Path, browser: BrowserContext) -> None:
    async with (
        full_node(tmp_path) as node,
        aiohttp.ClientSession(headers=app_headers()) as http,
    ):
        base = node.http_url
        async with http.post(
            f"{base}/api/v1/calls", json={"external_room": "rocketchat:ROOM2"}
        ) as resp:
            assert resp.status == 201, await resp.text()
            call_id = (await resp.json())["call_id"]
        async with http.post(
            f"{base}/api/v1/calls/{call_id}/join",
            json={"identity": "ada", "mic": False, "cam": False},
        ) as resp:
            assert resp.status == 200, await resp.text()
            url = (await resp.json())["join_url"]
        page = await browser.new_page()
        await page.goto(url)
        await page.wait_for_selector("#controls:not([hidden])", timeout=TIMEOUT_MS)
        assert (await _healthz(http, base))["participants"] == 1

        async with http.delete(f"{base}/api/v1/calls/{call_id}") as resp:
            assert resp.status == 200, await resp.text()
        # everyone is sent out of the ended call: the page shows the join form again
        # and the node has no room left (a disconnect takes well under a second; the
        # shorter wait keeps this known failure cheap until the product is fixed)
        await page.wait_for_selector("#join-form:not([hidden])", timeout=TIMEOUT_MS // 2)
        health = await _healthz(http, base)
        assert health["rooms"] == 0 and health["participants"] == 0
        await page.close()
