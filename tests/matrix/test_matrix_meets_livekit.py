"""A classic Matrix call and a LiveKit-protocol browser in one mediafed room.

One full node (every front-end from :func:`mediafed.server.front_ends` on one
RoomManager). A Matrix user calls the bridge bot through a real Synapse with
an aiortc peer connection (``m.call.invite``, stable 1:1 VoIP, spec v1.x
"Voice over IP"); the web-demo in headless Chromium joins the mediafed room of
that Matrix room (the MatrixRTC slot alias, ``mediafed_room_for``) with a
``?token=`` link. The page plays the caller's red picture; the caller, after
the bridge's ``m.call.negotiate``, decodes Chromium's animated fake camera.
Issue 5 ("Tests with a real homeserver": real media with a LiveKit-protocol
client in the same room).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from aiortc import MediaStreamTrack
from playwright.async_api import BrowserContext

from mediafed import server
from mediafed.config import Config
from mediafed.matrix import voip
from mediafed.matrix.appservice import APPSERVICE_KEY
from mediafed.matrix.call import CallState, mediafed_room_for
from mediafed.matrix.frontend import CALL_BRIDGE_KEY
from mediafed.media import RoomManager
from mediafed.signal.livekit.tokens import VideoGrant, mint_token
from mediafed.worker import Worker
from tests.matrix.test_matrix_calls import MatrixCaller, close_to
from tests.matrix.test_matrix_calls_synapse import MatrixClient, _invite, _room_with_bot
from tests.matrix.test_matrix_synapse import Waiter
from tests.support.aiortc_client import PatternVideoTrack, ReceivedVideo, ToneAudioTrack, wait_for
from tests.support.browser import TIMEOUT_MS, chromium
from tests.support.synapse import SynapseServer

pytestmark = pytest.mark.slow

KEY, SECRET = "mxlkkey", "a-secret-long-enough-for-hs256-signing!!"
TIMEOUT_S = 30.0
RED = (220, 0, 0)
SNAPSHOT_EVERY = 10
SNAPSHOTS = 6

# What a viewer of the caller's tile sees: size, frames shown, and the mean colour
# of the picture below the frame counter rows (drawn through a small canvas).
CALLER_TILE = """(identity) => {
  const tile = [...document.querySelectorAll('#grid .tile[data-source="camera"]')]
    .find(t => t.dataset.identity === identity);
  const v = tile && tile.querySelector('video');
  if (!v || !v.videoWidth) return null;
  const canvas = document.createElement('canvas');
  canvas.width = 32; canvas.height = 24;
  const ctx = canvas.getContext('2d');
  ctx.drawImage(v, 0, 0, 32, 24);
  const data = ctx.getImageData(0, 4, 32, 20).data;
  const rgb = [0, 0, 0];
  for (let i = 0; i < data.length; i += 4) for (let c = 0; c < 3; c++) rgb[c] += data[i + c];
  const n = data.length / 4;
  return { width: v.videoWidth, height: v.videoHeight,
           frames: v.getVideoPlaybackQuality().totalVideoFrames,
           rgb: rgb.map(x => Math.round(x / n)) }; }"""


class WatchingCaller(MatrixCaller):
    """A Matrix caller that also keeps a few small snapshots of each received picture."""

    def __init__(self) -> None:
        super().__init__()
        self.snapshots: dict[str, list[np.ndarray]] = {}

    async def _consume(self, track: MediaStreamTrack) -> None:
        if track.kind != "video":
            await super()._consume(track)
            return
        video = self.video.setdefault(track.id, ReceivedVideo())
        shots = self.snapshots.setdefault(track.id, [])
        while True:
            try:
                frame = await track.recv()
            except Exception:
                return
            video.frames += 1
            video.width = frame.width
            if video.frames % SNAPSHOT_EVERY == 0 and len(shots) < SNAPSHOTS:
                small = frame.reformat(width=64, height=48, format="rgb24")
                shots.append(small.to_ndarray().astype(np.float64))

    def sees_moving_picture(self) -> bool:
        """Some received track decoded into green-ish pictures (Chromium's fake camera,
        not black) that change from one snapshot to the next (it is animated)."""
        for shots in self.snapshots.values():
            if len(shots) < SNAPSHOTS:
                continue
            green = all(_greenish(shot.reshape(-1, 3).mean(axis=0)) for shot in shots)
            changes = [float(np.abs(a - b).mean()) for a, b in itertools.pairwise(shots)]
            if green and max(changes) > 0.5:
                return True
        return False


def _greenish(rgb: np.ndarray) -> bool:
    red, green, blue = (float(x) for x in rgb)
    return green > 60 and green > 2 * max(red, blue)


@asynccontextmanager
async def full_node(
    synapse: SynapseServer, data_dir: Path
) -> AsyncIterator[tuple[web.Application, RoomManager, int]]:
    """Every front-end on one RoomManager, listening where Synapse sends transactions."""
    assert synapse.appservice is not None
    registration = data_dir / "registration.yaml"
    synapse.appservice.write(registration)
    config = Config.model_validate(
        {
            "keys": {KEY: SECRET},
            "server": {
                # the media socket binds this address (see tests/support/livekit_node.py)
                "bind": "127.0.0.2",
                "http_port": synapse.appservice_port,
                "data_dir": str(data_dir / "data"),
            },
            "rtc": {"udp_port": 0, "tcp_port": 0, "node_ip": ["127.0.0.2"]},
            "matrix": {
                "server_name": synapse.server_name,
                "homeserver_url": synapse.base_url,
                "registration": str(registration),
            },
        }
    )
    worker = Worker.from_config(config)
    rooms = worker.rooms
    app = await server.build_app(config, server.front_ends(rooms), worker=worker)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    # Synapse reaches the appservice at 127.0.0.1; the page loads from there too
    await web.TCPSite(runner, "0.0.0.0", synapse.appservice_port).start()
    try:
        yield app, rooms, synapse.appservice_port
    finally:
        await runner.cleanup()


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[BrowserContext]:
    async with chromium(tmp_path / "chromium-profile") as context:
        yield context


async def _answer_renegotiations(
    client: MatrixClient, caller: MatrixCaller, call_id: str, party: str
) -> None:
    """Answer every ``m.call.negotiate`` offer of the bridge, in order, as a client would."""

    def offers() -> list[dict[str, Any]]:
        return [
            e
            for e in client.received(voip.NEGOTIATE, call_id)
            if e["content"]["description"]["type"] == "offer"
        ]

    answered = 0
    while True:
        with contextlib.suppress(AssertionError):  # nothing new yet: keep listening
            await client.until(lambda seen=answered: len(offers()) > seen, "a renegotiation offer")
        for event in offers()[answered:]:
            answer_sdp = await caller.answer_offer(event["content"]["description"]["sdp"])
            await client.send(
                voip.NEGOTIATE,
                {
                    "call_id": call_id,
                    "party_id": party,
                    "version": "1",
                    "description": {"type": "answer", "sdp": answer_sdp},
                    "sdp_stream_metadata": {
                        caller.stream_id(): {
                            "purpose": "m.usermedia",
                            "audio_muted": False,
                            "video_muted": False,
                        }
                    },
                },
            )
            answered += 1


async def test_matrix_caller_and_browser_see_each_other(
    synapse: SynapseServer, tmp_path: Path, browser: BrowserContext
) -> None:
    assert synapse.appservice is not None
    bot = synapse.appservice.bot_user_id
    user = await asyncio.to_thread(synapse.register_user, "mx_meets_lk")
    caller = WatchingCaller()
    renegotiation: asyncio.Task[None] | None = None
    async with full_node(synapse, tmp_path) as (app, rooms, port):
        service, bridge = app[APPSERVICE_KEY], app[CALL_BRIDGE_KEY]
        room_id = await _room_with_bot(synapse, service, user)
        client = MatrixClient(synapse, user, room_id)
        await client.start()
        try:
            # the Matrix user calls the bridge bot (classic 1:1 VoIP)
            sdp = await caller.offer(PatternVideoTrack(RED), ToneAudioTrack())
            party = user.device_id
            await client.send(voip.INVITE, _invite("call-lk", party, sdp, caller.stream_id(), bot))
            await client.until(lambda: bool(client.received(voip.ANSWER, "call-lk")), "answer")
            [answer] = client.received(voip.ANSWER, "call-lk")
            await caller.accept_answer(answer["content"]["answer"]["sdp"])
            await client.send(
                voip.SELECT_ANSWER,
                {
                    "call_id": "call-lk",
                    "party_id": party,
                    "version": "1",
                    "selected_party_id": answer["content"]["party_id"],
                },
            )
            call = bridge.calls[(room_id, "call-lk")]
            await wait_for(lambda: call.state is CallState.CONNECTED, timeout=TIMEOUT_S)
            renegotiation = asyncio.create_task(
                _answer_renegotiations(client, caller, "call-lk", party)
            )

            # a browser joins the mediafed room of that Matrix room with a LiveKit token
            name = mediafed_room_for(room_id)
            caller_identity = f"{user.user_id}:{party}"
            room = rooms.get(name)
            assert room is not None and room.participant(caller_identity) is not None
            token = mint_token(
                KEY,
                SECRET,
                identity="web-ada",
                name="Ada (web)",
                video=VideoGrant(room_join=True, room=name),
            )
            page = await browser.new_page()
            await page.goto(f"http://127.0.0.1:{port}/?token={token}&mic=1&cam=1")
            await page.wait_for_selector("#controls:not([hidden])", timeout=TIMEOUT_MS)

            # (1) the page plays the Matrix caller's red picture, frames advancing
            await page.wait_for_function(
                f"(id) => {{ const v = ({CALLER_TILE})(id); return v && v.frames > 5; }}",
                arg=caller_identity,
                timeout=TIMEOUT_MS,
            )
            first = await page.evaluate(CALLER_TILE, caller_identity)
            await page.wait_for_function(
                f"""(id) => {{ const v = ({CALLER_TILE})(id);
                    return v && v.frames > {first["frames"]} + 10; }}""",
                arg=caller_identity,
                timeout=TIMEOUT_MS,
            )
            shown = await page.evaluate(CALLER_TILE, caller_identity)
            assert shown["width"] > 0 and shown["height"] > 0
            assert close_to(tuple(shown["rgb"]), RED), shown

            # (2) the caller decodes the browser's camera after the bridge renegotiates
            await wait_for(caller.sees_moving_picture, timeout=TIMEOUT_S)
            assert any(e["sender"] == bot for e in client.received(voip.NEGOTIATE, "call-lk"))
            assert room.participant("web-ada") is not None
            assert call.state is CallState.CONNECTED
            assert not renegotiation.done()

            # the caller hangs up; the browser stays. Wait until Synapse has handed the
            # hangup to the appservice, so no event of this call is left queued for the
            # next test's appservice on the same port.
            renegotiation.cancel()
            waiter = Waiter()
            service.add_event_listener(waiter)
            await client.send(
                voip.HANGUP,
                {"call_id": "call-lk", "party_id": party, "version": "1", "reason": "user_hangup"},
            )
            await asyncio.wait_for(call.done, TIMEOUT_S)
            await waiter.until(
                lambda: any(
                    e.get("type") == voip.HANGUP
                    and e.get("content", {}).get("call_id") == "call-lk"
                    for e in waiter.events
                ),
                "the hangup to reach the appservice",
            )
            assert room.participant(caller_identity) is None
            assert [p.identity for p in room.participants()] == ["web-ada"]
            assert not client.received(voip.HANGUP, "call-lk")
            await page.close()
        finally:
            if renegotiation is not None:
                renegotiation.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await renegotiation
            await caller.close()
            await client.close()
            await service.wait_idle()
