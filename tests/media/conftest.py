from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from mediafed.config import load_config
from mediafed.media import RoomManager


def media_config(**rtc: object) -> object:
    overrides = {
        "MEDIAFED_SERVER_BIND": "127.0.0.2",
        "MEDIAFED_RTC_UDP_PORT": "0",
        "MEDIAFED_RTC_NODE_IP": "127.0.0.2",
    }
    for key, value in rtc.items():
        overrides[f"MEDIAFED_RTC_{key.upper()}"] = str(value)
    return load_config(environ=overrides)


@pytest.fixture
async def rooms() -> AsyncIterator[RoomManager]:
    manager = RoomManager(media_config())  # type: ignore[arg-type]
    await manager.start()
    yield manager
    await manager.stop()
