"""Headless Debian Chromium for end-to-end tests, with fake camera and microphone.

The flags keep it on loopback (no background networking, no mDNS-hidden
candidates) and let WebRTC use loopback addresses; pages must come from
``http://127.0.0.1:…`` or another loopback address (a secure context).

On a test host (``host``), Chromium runs inside that host's namespace (its
executable is ``nsenter`` around /usr/bin/chromium; Playwright drives it over
a pipe, which no namespace stops), and the relay's address on that host's
link, ``origin``, is declared a secure origin so the page may use the camera.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from playwright.async_api import BrowserContext, async_playwright

from tests.support.netns_hosts import TestHost

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
async def chromium(
    profile: Path, *, host: TestHost | None = None, origin: str = ""
) -> AsyncIterator[BrowserContext]:
    """A fresh persistent context (its own --user-data-dir) of /usr/bin/chromium,
    on ``host`` if given (pages from ``origin`` count as secure there)."""
    executable = "/usr/bin/chromium"
    args = list(CHROMIUM_ARGS)
    if host is not None:
        profile.mkdir(parents=True, exist_ok=True)
        wrapper = profile.parent / f"{profile.name}-chromium"
        wrapper.write_text(f'#!/bin/sh\nexec nsenter -t {host.pid} -n /usr/bin/chromium "$@"\n')
        wrapper.chmod(0o755)
        executable = str(wrapper)
        if origin:
            args.append(f"--unsafely-treat-insecure-origin-as-secure={origin}")
    async with async_playwright() as pw:
        context = await pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=executable,
            headless=True,
            args=args,
            viewport={"width": 960, "height": 600},
        )
        try:
            yield context
        finally:
            await context.close()
