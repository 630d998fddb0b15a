"""Fixtures of the LiveKit front-end's end-to-end tests: a live node and Chromium."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import BrowserContext

from tests.support.browser import chromium
from tests.support.livekit_node import LiveNode, live_node


@pytest.fixture
async def node() -> AsyncIterator[LiveNode]:
    """A node on 127.0.0.2 (test modules with other settings define their own)."""
    async with live_node("127.0.0.2") as running:
        yield running


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[BrowserContext]:
    """Headless Chromium with a fresh profile and fake camera and microphone."""
    async with chromium(tmp_path / "chromium-profile") as context:
        yield context
