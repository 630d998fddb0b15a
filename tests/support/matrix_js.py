"""matrix-js-sdk (the SDK of Element Web and Element Call) in headless Chromium,
as a real Matrix client for end-to-end tests.

The client is bundled from ``tests/js`` (``npm ci && npm run build`` there, done by
scripts/install-test-deps) and driven through its ``window.mf`` with
Playwright: ``mf.start`` logs in and syncs, ``mf.place``/``mf.answer`` make
classic 1:1 calls, ``mf.rtc`` joins a MatrixRTC call the way Element Call does,
``mf.lk`` joins plain LiveKit rooms (livekit-client) with controls the web-demo
lacks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import Page

from tests.support.browser import chromium
from tests.support.synapse import MatrixUser

CLIENT = Path(__file__).resolve().parents[1] / "js" / "dist" / "matrix-client.js"
PAGE = """<!doctype html><meta charset="utf-8"><title>matrix-js-sdk client</title>
<script src="/matrix-client.js"></script>"""
TIMEOUT_S = 30.0


@asynccontextmanager
async def client_page(profile: Path) -> AsyncIterator[Page]:
    """A page on 127.0.0.1 (a secure context) with the bundled clients loaded."""
    if not CLIENT.exists():
        pytest.fail(f"{CLIENT} is missing: run `npm ci && npm run build` in tests/js")

    async def page_html(_: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    async def script(_: web.Request) -> web.FileResponse:
        return web.FileResponse(CLIENT)

    app = web.Application()
    app.router.add_get("/", page_html)
    app.router.add_get("/matrix-client.js", script)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    origin = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with chromium(profile) as context:
            page = await context.new_page()
            await page.goto(origin)
            yield page
    finally:
        await runner.cleanup()


@asynccontextmanager
async def matrix_js_client(
    homeserver_url: str, user: MatrixUser, profile: Path
) -> AsyncIterator[Page]:
    """:func:`client_page` running matrix-js-sdk as ``user``, synced once."""
    async with client_page(profile) as page:
        await page.evaluate(
            "(u) => mf.start(u)",
            {
                "baseUrl": homeserver_url,
                "userId": user.user_id,
                "accessToken": user.access_token,
                "deviceId": user.device_id,
            },
        )
        try:
            yield page
        finally:
            await page.evaluate("mf.stop()")


async def until(
    page: Page, what: str, check: Callable[[], Awaitable[bool]], timeout_s: float = TIMEOUT_S
) -> None:
    """Poll ``check`` until true; on timeout fail with the client's own log."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            log = "\n".join(await page.evaluate("mf.log"))
            raise AssertionError(f"timed out waiting for {what}; the client's log:\n{log}")
        await asyncio.sleep(0.2)


async def evaluate(page: Page, expression: str, arg: Any = None) -> Any:
    """``page.evaluate`` typed as Any (the page's answers are JSON)."""
    return await page.evaluate(expression, arg)
