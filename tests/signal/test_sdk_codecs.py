"""Every video codec mediafed offers, published by a libwebrtc client and decoded by another.

The ``livekit`` SDK publishes a 640x360 camera in the codec under test (one
layer); a viewer on another test host decodes it. A subscriber starts on a
keyframe, so a codec whose keyframes the relay cannot recognise is never
forwarded at all (AV1 was, until its aggregation header was read).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from livekit.protocol import models
from sdk_runner import ScriptClient

from loadtest.sdk_client import PUBLISHER, VIEWER
from mediafed.media.types import TrackKind
from tests.support.livekit_node import LiveNode, live_node
from tests.support.netns_hosts import TestHost

HERE = Path(__file__).parent

pytestmark = pytest.mark.slow


async def _until(what: str, predicate: Callable[[], bool], timeout_s: float) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not predicate():
        if loop.time() - start > timeout_s:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        await asyncio.sleep(0.1)


def _mimes(node: LiveNode, room: str) -> set[str]:
    found = node.rooms.get(room)
    if found is None:
        return set()
    return {t.mime_lower for t in found.tracks.values() if t.kind is TrackKind.VIDEO}


@asynccontextmanager
async def _call(
    room: str, *publisher_args: str, env: dict[str, str] | None = None
) -> AsyncIterator[tuple[LiveNode, ScriptClient]]:
    """A node, an SDK publisher (640x360, ``publisher_args`` after the size) on one test
    host and an SDK viewer on another; yields the node and the viewer."""
    with TestHost(13) as pub_host, TestHost(14) as viewer_host:
        settings = {
            "MEDIAFED_SERVER_BIND": "0.0.0.0",
            "MEDIAFED_RTC_NODE_IP": f"{pub_host.server_ip},{viewer_host.server_ip}",
        }
        async with live_node(viewer_host.server_ip, settings=settings) as node:
            clients = [
                await ScriptClient.start(
                    pub_host,
                    PUBLISHER,
                    f"ws://{pub_host.server_ip}:{node.http_port}",
                    node.token("publisher", room=room),
                    "40",
                    "640x360",
                    *publisher_args,
                    env=env,
                ),
                await ScriptClient.start(
                    viewer_host,
                    VIEWER,
                    f"ws://{viewer_host.server_ip}:{node.http_port}",
                    node.token("viewer", room=room),
                    "40",
                ),
            ]
            try:
                yield node, clients[1]
            finally:
                for client in clients:
                    await client.stop()


@pytest.mark.parametrize("codec", ["AV1", "VP9", "H264"])
async def test_a_camera_in_each_codec_reaches_the_viewer(codec: str) -> None:
    room = f"codec-{codec.lower()}"
    async with _call(room, codec) as (node, viewer):
        await _until("the publisher's camera is published", lambda: bool(_mimes(node, room)), 20)
        assert _mimes(node, room) == {f"video/{codec.lower()}"}
        await _until(f"the viewer decodes {codec}", lambda: viewer.seen()[0] >= 20, 30)
        line = viewer.last("seen")
        assert line is not None
        sizes = {(v["width"], v["height"]) for v in line["video"].values()}
        assert sizes == {(640, 360)}, sizes


async def test_frame_metadata_reaches_the_viewer() -> None:
    """The SDK's frame metadata (packet trailer: frame id, user timestamp) is declared in
    the track's info and arrives with each frame."""
    room = "metadata"
    async with _call(room, env={"FRAME_METADATA": "1"}) as (node, viewer):
        await _until("the viewer decodes video", lambda: viewer.seen()[0] >= 20, 30)
        found = node.rooms.get(room)
        assert found is not None
        (video,) = (t for t in found.tracks.values() if t.kind is TrackKind.VIDEO)
        assert set(video.info.trailer_features) == {
            models.PacketTrailerFeature.PTF_USER_TIMESTAMP,
            models.PacketTrailerFeature.PTF_FRAME_ID,
        }
        first = _metadata(viewer)
        await asyncio.sleep(1.0)
        last = _metadata(viewer)
        assert first is not None and last is not None, viewer.last("seen")
        assert last["frame_id"] > first["frame_id"], (first, last)
        assert 0 <= last["age_us"] < 2_000_000, last


def _metadata(viewer: ScriptClient) -> dict[str, int] | None:
    line = viewer.last("seen")
    if line is None:
        return None
    return next((v for v in line["video"].values() if "frame_id" in v), None)


async def test_a_data_track_is_refused_at_once() -> None:
    """Data tracks are not relayed yet: the SDK hears so at once, not after its timeout."""
    with TestHost(13) as host:
        async with live_node(host.server_ip) as node:
            client = await ScriptClient.start(
                host,
                HERE / "lk_sdk_data_track.py",
                node.ws_url,
                node.token("sensor", room="data-track"),
            )
            try:
                await _until("the attempt ends", lambda: client.last("data_track") is not None, 40)
            finally:
                await client.stop()
            outcome = client.last("data_track")
            assert outcome is not None
            assert outcome["published"] is False, outcome
            assert outcome["seconds"] < 5, outcome
            assert "data track" in outcome["error"], outcome
