"""The mediafed target's client side of LiveKit v0 signaling, against a scripted peer.

mediafed's own ``/rtc`` is tested where it lives; here a minimal WebSocket
peer plays the server's half of the documented exchange (REFERENCES.md,
"LiveKit client protocol") so the load client's half is checked: token in the
query, ``add_track`` per msid before the publisher offer, offer ids echoed,
trickled candidates handed to the right peer connection.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import parse_qs, urlparse

import websockets
from livekit.protocol import models, rtc
from websockets.asyncio.server import ServerConnection

from loadtest.client import build_offer
from loadtest.livekit_target import API_KEY, API_SECRET, LiveKitSession
from loadtest.peer import LightPeer, generate_certificate
from mediafed.signal.livekit.tokens import verify_token

SUBSCRIBER_OFFER = "v=0\r\ns=subscriber offer\r\n"
PUBLISHER_ANSWER = "v=0\r\ns=publisher answer\r\n"
CANDIDATE = "candidate:1 1 udp 2130706431 127.0.0.1 7882 typ host"


class ScriptedServer:
    def __init__(self) -> None:
        self.requests: list[rtc.SignalRequest] = []
        self.claims: Any = None
        self.query: dict[str, list[str]] = {}
        self.answered = asyncio.Event()

    async def handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        self.query = parse_qs(urlparse(ws.request.path).query)
        self.claims = verify_token(self.query["access_token"][0], {API_KEY: API_SECRET})
        join = rtc.JoinResponse(
            room=models.Room(sid="RM_1", name=self.claims.video.room),
            participant=models.ParticipantInfo(sid="PA_1", identity=self.claims.identity),
            subscriber_primary=True,
            ping_interval=5,
            ping_timeout=15,
            server_version="scripted",
        )
        await ws.send(rtc.SignalResponse(join=join).SerializeToString())
        offer = rtc.SessionDescription(type="offer", sdp=SUBSCRIBER_OFFER, id=7)
        await ws.send(rtc.SignalResponse(offer=offer).SerializeToString())
        async for raw in ws:
            assert isinstance(raw, bytes)
            request = rtc.SignalRequest.FromString(raw)
            self.requests.append(request)
            kind = request.WhichOneof("message")
            if kind == "add_track":
                info = models.TrackInfo(sid="TR_" + request.add_track.cid)
                published = rtc.TrackPublishedResponse(cid=request.add_track.cid, track=info)
                await ws.send(rtc.SignalResponse(track_published=published).SerializeToString())
            elif kind == "offer":
                trickle = rtc.TrickleRequest(
                    candidateInit=json.dumps({"candidate": CANDIDATE, "sdpMid": "0"}),
                    target=rtc.SignalTarget.PUBLISHER,
                )
                await ws.send(rtc.SignalResponse(trickle=trickle).SerializeToString())
                answer = rtc.SessionDescription(
                    type="answer", sdp=PUBLISHER_ANSWER, id=request.offer.id
                )
                await ws.send(rtc.SignalResponse(answer=answer).SerializeToString())
            elif kind == "answer":
                self.answered.set()

    def kinds(self) -> list[str]:
        return [str(r.WhichOneof("message")) for r in self.requests]


async def test_publish_and_subscribe_follow_the_v0_exchange() -> None:
    server = ScriptedServer()
    async with websockets.serve(server.handle, "127.0.0.1", 0) as ws_server:
        port = next(iter(ws_server.sockets)).getsockname()[1]
        session = await LiveKitSession.connect(f"ws://127.0.0.1:{port}", "bench", "alice")
        peer = LightPeer("alice", generate_certificate())
        await peer.gather(ice_controlling=True)
        try:
            assert session.join.participant.identity == "alice"
            assert server.claims.video.room == "bench" and server.claims.video.room_join
            assert server.query["auto_subscribe"] == ["1"]

            sources = ("microphone", "camera")
            offer_sdp = build_offer(peer, sources, [11, 22])
            result = await session.publish(offer_sdp, sources)
            assert (result.answer_sdp, result.feed) == (PUBLISHER_ANSWER, "alice")
            assert server.kinds()[:3] == ["add_track", "add_track", "offer"]
            tracks = [r.add_track for r in server.requests[:2]]
            assert [t.cid for t in tracks] == ["microphone-0", "camera-1"]  # msid track ids
            assert [t.cid in offer_sdp for t in tracks] == [True, True]
            assert [(t.type, t.source) for t in tracks] == [
                (models.TrackType.AUDIO, models.TrackSource.MICROPHONE),
                (models.TrackType.VIDEO, models.TrackSource.CAMERA),
            ]
            assert server.requests[2].offer.sdp == offer_sdp

            trickled: list[str | None] = []

            async def sink(line: str | None) -> None:
                trickled.append(line)

            await session.on_remote_candidate("publisher", sink)
            assert trickled == [CANDIDATE]  # arrived before the sink: replayed

            assert await session.subscribe(()) == SUBSCRIBER_OFFER
            await session.answer_subscription("v=0\r\ns=our answer\r\n")
            await asyncio.wait_for(server.answered.wait(), 10)
            answer = server.requests[-1].answer
            assert (answer.type, answer.id, answer.sdp) == ("answer", 7, "v=0\r\ns=our answer\r\n")
        finally:
            await peer.close()
            await session.close()
