"""A node serving RoomService (and LiveKit's ``/rtc``) on the real room core of the
test worker, and the ``livekit-api`` client that administers it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
from aiohttp import web
from livekit import api

from mediafed import server
from mediafed.config import load_config
from mediafed.media import RoomManager
from mediafed.signal.livekit.tokens import VideoGrant, mint_token

API_KEY = "admin"
SECRET = "t" * 32


@dataclass
class Node:
    url: str
    rooms: RoomManager
    lk: api.LiveKitAPI

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://")

    def token(self, identity: str, room: str = "standup", **grant: object) -> str:
        """A participant's join token."""
        return mint_token(
            API_KEY,
            SECRET,
            identity=identity,
            video=VideoGrant(room_join=True, room=room, **grant),  # type: ignore[arg-type]
        )

    def admin_token(self, **grant: object) -> str:
        return mint_token(API_KEY, SECRET, identity="ops", video=VideoGrant(**grant))  # type: ignore[arg-type]


@asynccontextmanager
async def serve(rooms: RoomManager, **settings: str) -> AsyncIterator[Node]:
    """RoomService and ``/rtc`` on ``rooms`` over loopback HTTP; ``settings`` are
    ``MEDIAFED_*`` variables."""
    config = load_config(environ={"MEDIAFED_KEYS": f"{API_KEY}: {SECRET}"} | settings)
    extensions = [server.livekit_extension(rooms), server.room_service_extension(rooms)]
    app = await server.build_app(config, extensions=extensions)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    lk = api.LiveKitAPI(url, API_KEY, SECRET, failover=False)
    try:
        yield Node(url, rooms, lk)
    finally:
        await lk.aclose()
        await runner.cleanup()


@pytest.fixture
async def node(rooms: RoomManager) -> AsyncIterator[Node]:
    async with serve(rooms) as running:
        yield running
