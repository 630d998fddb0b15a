"""VP9 SVC per subscriber: each viewer gets the spatial layers its quality asks for.

The ``livekit`` SDK publishes a 1280x720 camera in VP9, which it encodes as
one stream of three spatial layers (``L3T3_KEY``: 320x180, 640x360, 1280x720).
Three SDK viewers ask LOW, MEDIUM and HIGH; the relay forwards each one the
layers up to its own (``media/downtrack.py``), marking the end of its top
layer as the end of the picture, so each decoder shows that layer's size.
"""

from __future__ import annotations

import asyncio

import pytest
from sdk_runner import ScriptClient

from loadtest.sdk_client import PUBLISHER, VIEWER
from mediafed.media.types import TrackKind
from tests.support.livekit_node import live_node
from tests.support.netns_hosts import TestHost

pytestmark = pytest.mark.slow

WANTED = {"LOW": (320, 180), "MEDIUM": (640, 360), "HIGH": (1280, 720)}


def _size(viewer: ScriptClient) -> tuple[int, int] | None:
    line = viewer.last("seen")
    if line is None:
        return None
    sizes = [(v["width"], v["height"]) for v in line["video"].values() if v["frames"] >= 10]
    return sizes[0] if sizes else None


async def test_each_viewer_decodes_the_spatial_layer_it_asks_for() -> None:
    with TestHost(15) as pub_host, TestHost(16) as viewer_host:
        settings = {
            "MEDIAFED_SERVER_BIND": "0.0.0.0",
            "MEDIAFED_RTC_NODE_IP": f"{pub_host.server_ip},{viewer_host.server_ip}",
        }
        async with live_node(viewer_host.server_ip, settings=settings) as node:
            publisher = await ScriptClient.start(
                pub_host,
                PUBLISHER,
                f"ws://{pub_host.server_ip}:{node.http_port}",
                node.token("publisher", room="svc"),
                "45",
                "1280x720",
                "VP9",
            )
            viewers = {
                quality: await ScriptClient.start(
                    viewer_host,
                    VIEWER,
                    f"ws://{viewer_host.server_ip}:{node.http_port}",
                    node.token(f"viewer-{quality.lower()}", room="svc"),
                    "45",
                    quality,
                )
                for quality in WANTED
            }
            try:
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 40
                while {q: _size(v) for q, v in viewers.items()} != WANTED:
                    if loop.time() > deadline:
                        break
                    await asyncio.sleep(0.5)
                sizes = {q: _size(v) for q, v in viewers.items()}
                room = node.rooms.get("svc")
                assert room is not None
                (video,) = [t for t in room.tracks.values() if t.kind is TrackKind.VIDEO]
                assert video.mime_lower == "video/vp9"
                assert sizes == WANTED, (sizes, [v.lines[-1:] for v in viewers.values()])
                # fewer layers, fewer bytes: LOW gets a fraction of what HIGH gets
                sent = {d.peer.session.identity: d.octets_sent for d in video.downtracks.values()}
                print("bytes sent per viewer:", sent)
                assert sent["viewer-low"] < 0.5 * sent["viewer-high"], sent
            finally:
                await publisher.stop()
                for viewer in viewers.values():
                    await viewer.stop()
