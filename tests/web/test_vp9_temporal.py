"""VP9 SVC temporal layers per subscriber: a viewer that asks for a lower frame
rate (livekit-client's ``setVideoFPS``, LiveKit's ``UpdateTrackSettings.fps``)
gets only the temporal layers that make it, and its full rate back when it asks.

Chromium publishes its fake camera through livekit-client in VP9 ``L3T3_KEY``
(three spatial and three temporal layers, as LiveKit SDKs publish VP9); a second
room connection in the same page watches it and measures its decoder.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page

from mediafed.media.downtrack import DownTrack
from mediafed.media.types import TrackKind
from tests.support.livekit_node import LiveNode, live_node
from tests.support.matrix_js import client_page

pytestmark = pytest.mark.slow

TIMEOUT_S = 30.0


@pytest.fixture
async def node() -> AsyncIterator[LiveNode]:
    async with live_node("127.0.0.2") as running:
        yield running


async def _video(page: Page) -> dict[str, Any]:
    """The viewer's one remote video: frames decoded, frame rate, size."""
    videos: dict[str, Any] = await page.evaluate("mf.lk.videos('viewer')")
    return next(iter(videos.values()), {"frames": 0, "fps": 0, "width": 0})


async def _rate(page: Page, seconds: float = 4.0) -> float:
    """Frames the viewer decodes per second over ``seconds``."""
    first = (await _video(page))["frames"]
    started = time.monotonic()
    await asyncio.sleep(seconds)
    return ((await _video(page))["frames"] - first) / (time.monotonic() - started)


def _downtrack(node: LiveNode) -> DownTrack:
    room = node.rooms.get("svc-time")
    assert room is not None
    [downtrack] = [
        d
        for t in room.tracks.values()
        if t.kind is TrackKind.VIDEO
        for d in t.downtracks.values()
        if d.peer.session.identity == "viewer"
    ]
    return downtrack


async def test_a_viewer_asking_for_fewer_frames_gets_fewer_temporal_layers(
    node: LiveNode, tmp_path: Path
) -> None:
    async with client_page(tmp_path / "chromium") as page:
        await page.evaluate(
            "([u, t]) => mf.lk.connect('publisher', u, t, "
            "{codec: 'vp9', scalabilityMode: 'L3T3_KEY'})",
            [node.ws_url, node.token("publisher", room="svc-time")],
        )
        await page.evaluate(
            "([u, t]) => mf.lk.connect('viewer', u, t)",
            [node.ws_url, node.token("viewer", room="svc-time")],
        )
        deadline = time.monotonic() + TIMEOUT_S
        while (await _video(page))["frames"] < 60:
            assert time.monotonic() < deadline, await page.evaluate("mf.log")
            await asyncio.sleep(0.5)
        assert (await _video(page))["codec"] == "video/VP9"
        full = await _rate(page)
        assert full > 10, f"the publisher's full rate is only {full:.1f} fps"

        # a quarter of the rate: the base temporal layer only
        await page.evaluate(f"mf.lk.setFps('viewer', {max(1, int(full / 4))})")
        await asyncio.sleep(3)
        low = await _rate(page)
        assert 0 < low < full * 0.6, (low, full)
        assert _downtrack(node).temporal_out < 2

        # no limit again: every layer, at a switching point
        await page.evaluate("mf.lk.setFps('viewer', 0)")
        await asyncio.sleep(3)
        back = await _rate(page)
        assert back > full * 0.8, (back, full)
        downtrack = _downtrack(node)
        assert downtrack.temporal_out >= 2 and downtrack.spatial_out == 2
