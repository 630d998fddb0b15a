"""Headless Debian Chromium for end-to-end tests, with fake camera and microphone.

The flags keep it on loopback (no background networking, no mDNS-hidden
candidates) and let WebRTC use loopback addresses; pages must come from
``http://127.0.0.1:…`` or another loopback address (a secure context).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from playwright.async_api import BrowserContext, async_playwright

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 30_000


@asynccontextmanager
async def chromium(profile: Path) -> AsyncIterator[BrowserContext]:
    """A fresh persistent context (its own --user-data-dir) of /usr/bin/chromium."""
    async with async_playwright() as pw:
        context = await pw.chromium.launch_persistent_context(
            str(profile),
            executable_path="/usr/bin/chromium",
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 960, "height": 600},
        )
        try:
            yield context
        finally:
            await context.close()
