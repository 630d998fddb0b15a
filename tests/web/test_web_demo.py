"""The web-demo (livekit-client 2.23 in headless Chromium) against a real mediafed node.

Two pages join one room through the join form (dev token endpoint), each
plays the other's camera and receives audio; a third joins late through a
``?token=`` link and sees both. A screenshot of the call is kept for the README.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import BrowserContext, Page

from tests.support.browser import TIMEOUT_MS, chromium
from tests.support.livekit_node import LiveNode, live_node

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "docs" / "screenshot-call.png"

# JavaScript run in a page: what a viewer of the other tiles would check.
REMOTE_VIDEOS = """() => [...document.querySelectorAll('#grid .tile[data-source="camera"]')]
  .filter(t => !t.querySelector('.name').textContent.endsWith('(you)'))
  .map(t => { const v = t.querySelector('video');
    return { identity: t.dataset.identity, width: v.videoWidth, height: v.videoHeight,
             frames: v.getVideoPlaybackQuality().totalVideoFrames, hidden: v.hidden }; })"""
AUDIO_BYTES = """async () => {
  let total = 0;
  for (const p of window.mediafedDemo.room.remoteParticipants.values()) {
    for (const pub of p.audioTrackPublications.values()) {
      const receiver = pub.track && pub.track.receiver;
      if (!receiver) continue;
      (await receiver.getStats()).forEach(s => {
        if (s.type === 'inbound-rtp') total += s.bytesReceived; });
    }
  }
  return total; }"""


@pytest.fixture
async def node() -> AsyncIterator[LiveNode]:
    async with live_node("127.0.0.2", dev=True) as running:
        yield running


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[BrowserContext]:
    async with chromium(tmp_path / "chromium-profile") as context:
        yield context


async def _join_with_form(context: BrowserContext, base: str, room: str, name: str) -> Page:
    page = await context.new_page()
    await page.goto(f"{base}/?room={room}")
    await page.fill("#name-input", name)
    await page.click("#join-button")
    await page.wait_for_selector("#controls:not([hidden])", timeout=TIMEOUT_MS)
    return page


async def _wait_for_videos(page: Page, count: int) -> list[dict[str, Any]]:
    """Remote camera tiles whose video plays (size known, frames advancing)."""
    await page.wait_for_function(
        f"() => ({REMOTE_VIDEOS})().filter(v => v.width > 0).length >= {count}",
        timeout=TIMEOUT_MS,
    )
    before = {v["identity"]: v["frames"] for v in await page.evaluate(REMOTE_VIDEOS)}
    await page.wait_for_function(
        f"""() => ({REMOTE_VIDEOS})().filter(v => v.frames > ({before!r})[v.identity] + 10)
            .length >= {count}""",
        timeout=TIMEOUT_MS,
    )
    videos: list[dict[str, Any]] = await page.evaluate(REMOTE_VIDEOS)
    return videos


@pytest.mark.slow
async def test_two_pages_call_and_a_late_third_sees_both(
    node: LiveNode, browser: BrowserContext
) -> None:
    base = f"http://127.0.0.1:{node.http_port}"
    ada = await _join_with_form(browser, base, "demo", "Ada")
    grace = await _join_with_form(browser, base, "demo", "Grace")
    ada_sees = await _wait_for_videos(ada, 1)
    grace_sees = await _wait_for_videos(grace, 1)
    assert [v["identity"].rsplit("-", 1)[0] for v in ada_sees] == ["grace"]
    assert [v["identity"].rsplit("-", 1)[0] for v in grace_sees] == ["ada"]
    assert all(v["width"] > 0 and v["height"] > 0 for v in ada_sees + grace_sees)
    for page in (ada, grace):
        await page.wait_for_function(
            f"() => ({AUDIO_BYTES})().then(n => n > 1000)", timeout=TIMEOUT_MS
        )
    names = await ada.locator("#grid .tile .name").all_text_contents()
    assert sorted(names) == ["Ada (you)", "Grace"]
    SCREENSHOT.parent.mkdir(exist_ok=True)
    await ada.screenshot(path=str(SCREENSHOT))

    # a third participant follows a join link with the camera on and the mic off
    token = node.token("linus", room="demo")
    linus = await browser.new_page()
    await linus.goto(f"{base}/?token={token}&mic=0&cam=1")
    linus_sees = await _wait_for_videos(linus, 2)
    assert sorted(v["identity"].rsplit("-", 1)[0] for v in linus_sees) == ["ada", "grace"]
    # linus's mic is off: the others show him muted
    await ada.wait_for_function(
        """() => [...document.querySelectorAll('#grid .tile')].some(t =>
             t.dataset.identity === 'linus' && !t.querySelector('.muted').hidden)""",
        timeout=TIMEOUT_MS,
    )
    await _wait_for_videos(ada, 2)

    # leaving removes the tile on the other pages
    await grace.click("#leave-button")
    await grace.wait_for_selector("#join-form:not([hidden])", timeout=TIMEOUT_MS)
    await ada.wait_for_function(
        "() => ![...document.querySelectorAll('#grid .tile')].some(t => "
        "t.dataset.identity.startsWith('grace-'))",
        timeout=TIMEOUT_MS,
    )
    await asyncio.gather(*(p.close() for p in (ada, grace, linus)))


async def test_page_loads_and_refuses_a_bad_link(node: LiveNode, browser: BrowserContext) -> None:
    base = f"http://127.0.0.1:{node.http_port}"
    page = await browser.new_page()
    await page.goto(f"{base}/?token=not-a-token")
    await page.wait_for_selector("#join-error:not([hidden])", timeout=TIMEOUT_MS)
    assert "could not join" in await page.text_content("#join-error")  # type: ignore[operator]
    assert await page.is_visible("#join-form")


@pytest.mark.slow
async def test_signal_reconnect_resumes_the_call(node: LiveNode, browser: BrowserContext) -> None:
    """The signal socket drops; the client resumes with reconnect=1&sid=… and media goes on."""
    base = f"http://127.0.0.1:{node.http_port}"
    ada = await _join_with_form(browser, base, "resume", "Ada")
    grace = await _join_with_form(browser, base, "resume", "Grace")
    await _wait_for_videos(ada, 1)
    await _wait_for_videos(grace, 1)
    sid = await ada.evaluate("() => window.mediafedDemo.room.localParticipant.sid")
    await ada.evaluate(
        """() => { const room = window.mediafedDemo.room;
                   window.resumed = false;
                   room.once('reconnected', () => { window.resumed = true; });
                   return room.simulateScenario('signal-reconnect'); }"""
    )
    await ada.wait_for_function("() => window.resumed === true", timeout=TIMEOUT_MS)
    assert await ada.evaluate("() => window.mediafedDemo.room.localParticipant.sid") == sid
    room = node.rooms.get("resume")
    assert room is not None and room.num_participants == 2
    # media still flows both ways after the resume
    await _wait_for_videos(ada, 1)
    await _wait_for_videos(grace, 1)
