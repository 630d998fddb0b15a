"""Reconnection with real clients: a lost path, a dropped signal socket, a restarted relay.

A libwebrtc publisher (the ``livekit`` SDK: a 640x360 camera and a tone) and a
libwebrtc viewer sit on two test hosts; the relay runs as ``mediafed serve``
in its own process, so it can be killed. What users see is measured at the
viewer (frames decoded, the longest wait between two) and the relay's view of
the participants is read from its RoomService API (``ListParticipants``: the
participant's sid tells a resume, which keeps it, from a rejoin, which makes a
new one).

- The viewer's path blackholed for 3 s, then restored: video resumes within
  5 s and the viewer never leaves the room (same sid throughout).
- The viewer's signaling socket reset by the relay: the SDK resumes on a new
  socket, video never stops (no wait over 1 s) and the sid stays.
- The relay killed (SIGKILL) and started again on the same ports: both clients
  rejoin on their own and video reaches the viewer again within 10 s.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sdk_runner import ScriptClient

from loadtest.sdk_client import PUBLISHER, VIEWER
from tests.support.netns_hosts import TestHost
from tests.support.relay import Relay, until

HERE = Path(__file__).parent
ROOM = "reconnect"
RUN_S = 120

pytestmark = pytest.mark.slow


@asynccontextmanager
async def _call(tmp_path: Path) -> AsyncIterator[tuple[Relay, TestHost, ScriptClient]]:
    """A relay, a publisher and a viewer whose video flows; yields (relay, the viewer's
    host, the viewer)."""
    with TestHost(11) as pub_host, TestHost(12) as viewer_host:
        relay = Relay([pub_host, viewer_host], tmp_path, room=ROOM)
        await relay.start()
        clients: list[ScriptClient] = []
        try:
            for host, script, who, extra in (
                (pub_host, PUBLISHER, "publisher", ("640x360",)),
                (viewer_host, VIEWER, "viewer", ()),
            ):
                url = f"ws://{host.server_ip}:{relay.http_port}"
                clients.append(
                    await ScriptClient.start(
                        host, script, url, relay.token(who), str(RUN_S), *extra
                    )
                )
            viewer = clients[1]
            await until("the viewer decodes video", lambda: viewer.seen()[0] > 20, 30, relay)
            yield relay, viewer_host, viewer
        finally:
            for client in clients:
                await client.stop()
            await relay.stop()


async def test_a_blackholed_path_resumes_without_leaving(tmp_path: Path) -> None:
    async with _call(tmp_path) as (relay, host, viewer):
        before = await relay.participants()
        host.link.blackhole()
        await asyncio.sleep(3.0)
        frames = viewer.seen()[0]
        host.link.blackhole(False)
        resumed_s = await until(
            "video resumes after the path is back", lambda: viewer.seen()[0] > frames + 5, 5, relay
        )
        after = await relay.participants()
        assert after["viewer"] == before["viewer"], "the viewer left and rejoined"
        print(f"blackhole 3 s: video back {resumed_s:.2f} s after the path")


async def test_a_dropped_signal_socket_resumes_and_video_goes_on(tmp_path: Path) -> None:
    async with _call(tmp_path) as (relay, host, viewer):
        before = await relay.participants()
        # the relay's end of the viewer's WebSocket reset, as a NAT that forgot it would
        # (the HTTP port's TCP connections from the viewer's host, killed by the kernel)
        first_line = len(viewer.lines)
        relay.reset_signal_socket(host)
        await asyncio.sleep(6.0)
        after = await relay.participants()
        assert after.get("viewer") == before["viewer"], "the viewer rejoined instead of resuming"
        gap = viewer.longest_gap_ms(first_line)
        assert gap <= 1000, f"video stopped for {gap} ms"
        assert "resumed" in relay.log(), relay.log()
        print(f"signal socket reset: longest wait between frames {gap} ms")


async def test_a_restarted_relay_is_rejoined(tmp_path: Path) -> None:
    async with _call(tmp_path) as (relay, _host, viewer):
        before = await relay.participants()
        await relay.restart()
        frames = viewer.seen()[0]
        back_s = await until(
            "the viewer decodes video from the restarted relay",
            lambda: viewer.seen()[0] > frames + 5,
            10,
            relay,
        )
        after = await relay.participants()
        assert set(after) >= {"publisher", "viewer"}, after
        assert after["viewer"] != before["viewer"], "a new relay cannot know the old sid"
        print(f"relay killed and restarted: video back {back_s:.2f} s after the restart")
