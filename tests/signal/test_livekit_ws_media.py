"""``/rtc`` against the real room core: what SDKs never send gets a clear refusal.

A raw protobuf client (no WebRTC stack) sends offers the room core cannot
accept; only that participant is closed, with a reason, and the room goes on.
"""

from __future__ import annotations

import asyncio

import aiohttp
from livekit.protocol import models, rtc

from tests.support.livekit_node import live_node

UNSUPPORTED_OFFER = "\r\n".join(
    [
        "v=0",
        "o=- 1 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0",
        "m=video 9 UDP/TLS/RTP/SAVPF 96",
        "c=IN IP4 0.0.0.0",
        "a=ice-ufrag:abcd",
        "a=ice-pwd:abcdefghijklmnopqrstuvwx",
        "a=fingerprint:sha-256 " + ":".join(["AB"] * 32),
        "a=setup:actpass",
        "a=mid:0",
        "a=sendonly",
        "a=rtcp-mux",
        "a=rtpmap:96 H265/90000",
        "a=msid:s cam-1",
        "",
    ]
)


CLOSE_REASONS: dict[int, str] = {}


async def _receive(ws: aiohttp.ClientWebSocketResponse) -> rtc.SignalResponse | None:
    message = await asyncio.wait_for(ws.receive(), 10)
    if message.type != aiohttp.WSMsgType.BINARY:
        CLOSE_REASONS[id(ws)] = str(message.extra)
        return None
    response = rtc.SignalResponse()
    response.ParseFromString(message.data)
    return response


async def test_unsupported_codec_offer_is_refused_and_the_room_goes_on() -> None:
    async with live_node("127.0.0.2") as node, aiohttp.ClientSession() as http:
        bob = await http.ws_connect(f"{node.ws_url}/rtc?access_token={node.token('bob')}")
        first = await _receive(bob)
        assert first is not None and first.WhichOneof("message") == "join"
        mallory = await http.ws_connect(f"{node.ws_url}/rtc?access_token={node.token('mallory')}")
        first = await _receive(mallory)
        assert first is not None and first.WhichOneof("message") == "join"
        await mallory.send_bytes(
            rtc.SignalRequest(
                add_track=rtc.AddTrackRequest(
                    cid="cam-1", type=models.TrackType.VIDEO, source=models.TrackSource.CAMERA
                )
            ).SerializeToString()
        )
        await mallory.send_bytes(
            rtc.SignalRequest(
                offer=rtc.SessionDescription(type="offer", sdp=UNSUPPORTED_OFFER, id=1)
            ).SerializeToString()
        )
        while (response := await _receive(mallory)) is not None:
            assert response.WhichOneof("message") != "answer"
        assert mallory.close_code == 1008
        assert "none of the offered m= sections" in CLOSE_REASONS[id(mallory)]
        assert "VP8" in CLOSE_REASONS[id(mallory)]  # says what would work
        room = node.rooms.get("call")
        assert room is not None
        assert [p.identity for p in room.participants()] == ["bob"]
        # bob saw mallory come and go, and is still served
        gone = False
        while not gone:
            response = await _receive(bob)
            assert response is not None
            gone = any(
                p.identity == "mallory" and p.state == models.ParticipantInfo.State.DISCONNECTED
                for p in response.update.participants
            )
        await bob.send_bytes(rtc.SignalRequest(ping_req=rtc.Ping(timestamp=7)).SerializeToString())
        while (response := await _receive(bob)) is not None:
            if response.WhichOneof("message") == "pong_resp":
                assert response.pong_resp.last_ping_timestamp == 7
                break
        await bob.close()
