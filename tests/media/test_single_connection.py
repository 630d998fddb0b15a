"""One peer connection both ways (classic Matrix calls): the client offers, the
server answers and later re-offers as people join, all on the same connection."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)

from mediafed.media import Room, RoomManager, Session, TrackKind, TrackSource, events
from tests.support.aiortc_client import (
    AiortcParticipant,
    PatternVideoTrack,
    ReceivedVideo,
    ToneAudioTrack,
    dominant_colour,
    wait_for,
)

pytestmark = pytest.mark.slow

RED = (220, 0, 0)
GREEN = (0, 200, 0)
BLUE = (0, 0, 220)


def _close_to(colour: tuple[int, int, int], expected: tuple[int, int, int]) -> bool:
    return all(abs(a - b) < 45 for a, b in zip(colour, expected, strict=True))


class SingleCaller:
    """A caller with one RTCPeerConnection, as matrix-js-sdk has."""

    def __init__(self, room: Room, identity: str) -> None:
        self.room = room
        self.identity = identity
        self.pc = RTCPeerConnection(
            RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )
        self.session: Session | None = None
        self.events: list[events.RoomEvent] = []
        self.video: dict[str, ReceivedVideo] = {}
        self.offers: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
        self.tasks: list[asyncio.Task[Any]] = []
        self.pc.on("track", self._on_track)

    def on_room_event(self, event: events.RoomEvent) -> None:
        self.events.append(event)

    def on_subscriber_offer(self, sdp: str, offer_id: int) -> None:
        self.offers.put_nowait((sdp, offer_id))

    def on_local_candidate(self, target: str, candidate: str, mid: str, index: int) -> None:
        pass

    async def call(self, *tracks: MediaStreamTrack) -> None:
        self.session = await self.room.join(self.identity, listener=self, single_connection=True)
        for track in tracks:
            self.pc.addTrack(track)
        offer = await self.pc.createOffer()
        await self.pc.setLocalDescription(offer)
        answer = await self.session.answer_offer(self.pc.localDescription.sdp)
        await self.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        self.tasks.append(asyncio.create_task(self._renegotiate()))

    async def _renegotiate(self) -> None:
        while True:
            sdp, offer_id = await self.offers.get()
            while self.pc.connectionState != "connected":
                await asyncio.sleep(0.02)
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp, "offer"))
            answer = await self.pc.createAnswer()
            await self.pc.setLocalDescription(answer)
            assert self.session is not None
            await self.session.accept_subscriber_answer(self.pc.localDescription.sdp, offer_id)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "video":
            self.tasks.append(asyncio.create_task(self._consume(track)))

    async def _consume(self, track: MediaStreamTrack) -> None:
        video = self.video.setdefault(track.id, ReceivedVideo())
        while True:
            try:
                frame = await track.recv()
            except Exception:
                return
            video.frames += 1
            video.colour = dominant_colour(frame.to_ndarray(format="rgb24"))

    def sees(self, colour: tuple[int, int, int], frames: int = 5) -> bool:
        return any(v.frames >= frames and _close_to(v.colour, colour) for v in self.video.values())

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await self.pc.close()
        if self.session is not None and not self.session.closed:
            await self.session.leave()


async def test_single_connection_call_both_ways_with_renegotiation(rooms: RoomManager) -> None:
    room = rooms.get_or_create("matrix-like")
    alice = AiortcParticipant(room, "alice")
    carol = AiortcParticipant(room, "carol")
    caller = SingleCaller(room, "@bob:hs")
    try:
        await alice.join()
        await alice.publish(PatternVideoTrack(GREEN), ToneAudioTrack())
        await caller.call(PatternVideoTrack(RED), ToneAudioTrack())
        # Both ways on the sections of the first offer.
        await wait_for(lambda: caller.sees(GREEN))
        await wait_for(
            lambda: any(v.frames > 5 and _close_to(v.colour, RED) for v in alice.video.values())
        )
        assert caller.session is not None
        streams = caller.session.stream_metadata()
        assert list(streams.values()) == [
            {"purpose": "m.usermedia", "audio_muted": False, "video_muted": False}
        ]
        # Someone else joins and shares a screen: it reaches the caller by re-offer.
        await carol.join()
        session = carol.session
        assert session is not None
        screen = PatternVideoTrack(BLUE)
        session.announce_track(screen.id, TrackKind.VIDEO, source=TrackSource.SCREEN_SHARE)
        await carol.publish(screen)
        await wait_for(lambda: caller.sees(BLUE) and caller.sees(GREEN), timeout=30)
        purposes = sorted(str(s["purpose"]) for s in caller.session.stream_metadata().values())
        assert purposes == ["m.screenshare", "m.usermedia"]
        # The caller's media goes on reaching others while renegotiating.
        await wait_for(
            lambda: any(v.frames > 5 and _close_to(v.colour, RED) for v in carol.video.values())
        )
    finally:
        for person in (alice, carol):
            await person.close()
        await caller.close()
