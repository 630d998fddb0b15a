"""A viewer joining a call sees the picture at once and without freezes (livekit-client).

The web-demo uses Element Call's media settings: adaptive stream, dynacast, a 720p
camera in three simulcast layers. The viewer's element is large, so it is moved from
the layer it starts on to the top one within seconds. Each frame the viewer's
<video> presents is timed (requestVideoFrameCallback): the first must come soon,
none may be followed by a gap over half a second, and the last must be 1280x720.
Freezes of 1-3 s at every layer switch were what users saw before a switch waited
for the new layer's keyframe and picture ids continued across layers.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest

from tests.support.browser import TIMEOUT_MS, chromium
from tests.support.livekit_node import live_node

WATCH_FRAMES = """() => {
  window.frameTimes = [];
  window.joinedAt = performance.now();
  const watch = () => {
    const video = [...document.querySelectorAll('#grid .tile[data-source="camera"]')]
      .filter(t => !t.querySelector('.name').textContent.endsWith('(you)'))
      .map(t => t.querySelector('video'))[0];
    if (!video) { setTimeout(watch, 20); return; }
    const frame = (now, meta) => {
      window.frameTimes.push([performance.now(), meta.width, meta.height]);
      video.requestVideoFrameCallback(frame);
    };
    video.requestVideoFrameCallback(frame);
  };
  watch();
}"""
WATCH_S = 15


@pytest.mark.slow
async def test_a_viewer_starts_fast_and_moves_up_to_720p_without_freezing(
    tmp_path: Path,
) -> None:
    async with live_node("127.0.0.2", dev=True) as node:
        base = f"http://127.0.0.1:{node.http_port}"
        async with chromium(tmp_path / "profile") as browser:
            pages = []
            for name in ("Ada", "Grace"):
                page = await browser.new_page()
                await page.set_viewport_size({"width": 1920, "height": 1080})
                await page.goto(f"{base}/?room=start")
                await page.fill("#name-input", name)
                if name == "Grace":
                    await page.evaluate(WATCH_FRAMES)
                await page.click("#join-button")
                await page.wait_for_selector("#controls:not([hidden])", timeout=TIMEOUT_MS)
                if name == "Ada":
                    await asyncio.sleep(2)  # the publisher is up before the viewer comes
                pages.append(page)
            await asyncio.sleep(WATCH_S)
            joined_at, frames = await pages[1].evaluate(
                "() => [window.joinedAt, window.frameTimes]"
            )
    assert frames, "the viewer never presented a frame"
    first_after_s = (frames[0][0] - joined_at) / 1000
    assert first_after_s < 3.0, first_after_s
    gaps = [
        (round((a[0] - joined_at) / 1000, 2), round(b[0] - a[0]), a[1], b[1])
        for a, b in itertools.pairwise(frames)
        if b[0] - a[0] > 500
    ]
    assert gaps == [], f"freezes (at s, ms, width before, after): {gaps}"
    assert (frames[-1][1], frames[-1][2]) == (1280, 720), frames[-1]
    assert len(frames) > 8 * WATCH_S, "far fewer frames than the camera sends"
