"""The Python ``livekit`` SDK (libwebrtc) against mediafed, from a veth test host.

Two participants publish camera, screenshare and microphone tracks whose
content names the sender; each checks what it receives from the other, and
the data packet and the mute the other sent.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time

import pytest
from sdk_runner import EXPECTED, SIGNAL_IDS, close_to, run_client

from mediafed.signal.livekit.tokens import VideoGrant, mint_token
from tests.support.livekit_node import API_KEY, API_SECRET, live_node
from tests.support.netns_hosts import TestHost


@pytest.mark.slow
@pytest.mark.parametrize(
    ("alice_v0", "bob_v0"), [(False, False), (True, True), (False, True)], ids=SIGNAL_IDS
)
async def test_two_sdk_participants_see_and_hear_each_other(
    alice_v0: bool, bob_v0: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Both on v1 (one peer connection, the SDK's default), both on v0, one of each."""
    caplog.set_level(logging.INFO, logger="mediafed.signal.livekit.rtc")
    with TestHost(1) as host:
        async with live_node(host.server_ip) as node:
            async with asyncio.TaskGroup() as both:  # a failure cancels the other client
                alice_run = both.create_task(
                    run_client(host, node.ws_url, node.token("alice"), "alice", v0=alice_v0)
                )
                bob_run = both.create_task(
                    run_client(host, node.ws_url, node.token("bob"), "bob", v0=bob_v0)
                )
            alice, bob = alice_run.result(), bob_run.result()
    for who, v0 in (("alice", alice_v0), ("bob", bob_v0)):
        path = "/rtc" if v0 else "/rtc/v1"
        assert re.search(f"participant={who} .* joined on {path}$", caplog.text, re.M), who
    for me, other, seen in (("alice", "bob", alice), ("bob", "alice", bob)):
        camera_rgb, screen_rgb, tone = EXPECTED[other]
        assert any(e["event"] == "connected" for e in seen), seen[:3]
        sources = {e["source"] for e in seen if e["event"] == "subscribed" and e["sender"] == other}
        assert {"SOURCE_CAMERA", "SOURCE_SCREENSHARE", "SOURCE_MICROPHONE"} <= sources, sources
        camera = [e for e in seen if e["event"] == "video" and e["source"] == "SOURCE_CAMERA"]
        screen = [e for e in seen if e["event"] == "video" and e["source"] == "SOURCE_SCREENSHARE"]
        assert camera and all(e["sender"] == other for e in camera)
        assert (camera[-1]["width"], camera[-1]["height"]) == (320, 240)
        assert camera[-1]["frames"] >= 30, f"{me} got few camera frames: {camera[-1]}"
        assert close_to(camera[-1]["rgb"], camera_rgb), (me, camera[-1])
        assert screen and close_to(screen[-1]["rgb"], screen_rgb), (me, screen[-1:])
        tones = [e["peak_hz"] for e in seen if e["event"] == "audio" and e["sender"] == other]
        assert tones and abs(tones[0] - tone) <= 10, (me, tones)
        data = [(e["sender"], e["topic"], e["payload"]) for e in seen if e["event"] == "data"]
        assert data == [(other, "chat", f"hello from {other}")], (me, data)
    # bob muted his microphone half-way: alice was told
    assert any(e["event"] == "muted" and e["sender"] == "bob" for e in alice), alice[-10:]


@pytest.mark.slow
async def test_sdk_token_refusals() -> None:
    with TestHost(2) as host:
        async with live_node(host.server_ip) as node:
            refused = {
                "signature does not match": mint_token(
                    API_KEY,
                    "not-the-secret",
                    identity="carol",
                    video=VideoGrant(room_join=True, room="call"),
                ),
                "expired at": mint_token(
                    API_KEY,
                    API_SECRET,
                    identity="carol",
                    video=VideoGrant(room_join=True, room="call"),
                    now=time.time() - 7200,
                    ttl_s=600,
                ),
                "no roomJoin grant": mint_token(
                    API_KEY, API_SECRET, identity="carol", video=VideoGrant(room="call")
                ),
            }
            for why, bad in refused.items():
                seen = await run_client(host, node.ws_url, bad, "alice")
                assert [e["event"] for e in seen] == ["refused"], (why, seen)
                assert "401" in seen[0]["error"] and why in seen[0]["error"], seen
            assert node.rooms.get("call") is None
