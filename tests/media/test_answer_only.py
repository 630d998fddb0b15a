"""One peer connection that only the client offers (LiveKit's ``/rtc/v1``): the
server answers, asks for more receive sections when tracks need them, and asks
for an offer all the same when what it sends changes."""

from __future__ import annotations

import asyncio

import pytest
from aiortc import MediaStreamTrack, RTCSessionDescription

from mediafed.media import Room, RoomManager
from mediafed.wire.sdp import parse_sdp
from tests.media.test_single_connection import SingleCaller, _close_to
from tests.support.aiortc_client import AiortcParticipant, PatternVideoTrack, wait_for

pytestmark = pytest.mark.slow

RED = (220, 0, 0)
GREEN = (0, 200, 0)
BLUE = (0, 0, 220)


class OfferingClient(SingleCaller):
    """A v1 client: one RTCPeerConnection, always the offerer; on a sections
    requirement it adds receive-only transceivers and offers again, as
    livekit-client's engine does."""

    def __init__(self, room: Room, identity: str) -> None:
        super().__init__(room, identity)
        self.requirements: list[tuple[int, int]] = []
        self.answers: list[str] = []
        self._wanted: asyncio.Queue[tuple[int, int]] = asyncio.Queue()

    def on_subscriber_offer(self, sdp: str, offer_id: int) -> None:
        raise AssertionError("an answer-only session made an offer")

    def on_media_sections_requirement(self, audios: int, videos: int) -> None:
        self.requirements.append((audios, videos))
        self._wanted.put_nowait((audios, videos))

    async def join(self, videos: int, *tracks: MediaStreamTrack) -> None:
        self.session = await self.room.join(self.identity, listener=self, answer_only=True)
        for track in tracks:
            self.pc.addTransceiver(track, direction="sendonly")
        for _ in range(videos):
            self.pc.addTransceiver("video", direction="recvonly")
        await self.offer()
        self.tasks.append(asyncio.create_task(self._renegotiate()))

    async def offer(self) -> None:
        offer = await self.pc.createOffer()
        await self.pc.setLocalDescription(offer)
        assert self.session is not None
        answer = await self.session.answer_offer(self.pc.localDescription.sdp)
        self.answers.append(answer)
        await self.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))

    async def _renegotiate(self) -> None:
        while True:
            audios, videos = await self._wanted.get()
            for _ in range(audios):
                self.pc.addTransceiver("audio", direction="recvonly")
            for _ in range(videos):
                self.pc.addTransceiver("video", direction="recvonly")
            await self.offer()

    def sending(self) -> dict[str, str]:
        """mid -> direction of our last answer's video sections."""
        answer = parse_sdp(self.answers[-1])
        return {m.mid or "": m.direction for m in answer.media if m.kind == "video"}


async def test_the_client_offers_every_section_the_server_sends_on(rooms: RoomManager) -> None:
    room = rooms.get_or_create("v1")
    red, green = AiortcParticipant(room, "red"), AiortcParticipant(room, "green")
    client = OfferingClient(room, "viewer")
    blue = AiortcParticipant(room, "blue")
    try:
        for publisher, colour in ((red, RED), (green, GREEN)):
            await publisher.join()
            await publisher.publish(PatternVideoTrack(colour))
        await wait_for(lambda: len(room.tracks) == 2)
        # one receive section for two tracks: the answer fills it, asks for one more
        await client.join(1, PatternVideoTrack(BLUE))
        assert client.requirements[0] == (0, 1)
        await wait_for(lambda: client.sees(RED) and client.sees(GREEN))
        session = client.session
        assert session is not None
        mapping = session.sending_tracks()
        assert sorted(mapping.values()) == sorted(room.tracks.keys() - session.published.keys())
        assert all(client.sending()[mid] == "sendonly" for mid in mapping)
        # and what the client publishes on the same connection reaches the others
        await blue.join()
        await wait_for(
            lambda: any(v.frames >= 5 and _close_to(v.colour, BLUE) for v in blue.video.values())
        )

        # unsubscribing asks for an offer (nothing more to add); its answer stops the section
        assert red.session is not None
        red_sid = next(
            t.sid for t in room.tracks.values() if t.info.participant_sid == red.session.sid
        )
        red_mid = next(mid for mid, sid in mapping.items() if sid == red_sid)
        asked = len(client.requirements)
        session.set_subscribed(red_sid, False)
        await wait_for(lambda: len(client.requirements) > asked)
        assert client.requirements[asked] == (0, 0)
        await wait_for(lambda: client.sending().get(red_mid) == "inactive")
        assert red_mid not in session.sending_tracks()

        # subscribing again takes the freed section: no new one is asked for
        sections = len(client.sending())
        asked = len(client.requirements)
        session.set_subscribed(red_sid, True)
        await wait_for(lambda: client.sending().get(red_mid) == "sendonly")
        assert client.requirements[asked:] == [(0, 0)]
        assert len(client.sending()) == sections
        assert session.sending_tracks()[red_mid] == red_sid
    finally:
        for participant in (client, red, green, blue):
            await participant.close()
