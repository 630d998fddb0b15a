"""The subscriber offer state machine: one offer outstanding, answers must match it."""

from __future__ import annotations

import asyncio

import pytest

from mediafed.errors import NegotiationError
from mediafed.media import RoomManager, events
from mediafed.wire.sdp import parse_sdp
from mediafed.worker import Worker


class Recorder:
    def __init__(self) -> None:
        self.offers: list[tuple[str, int]] = []
        self.events: list[events.RoomEvent] = []

    def on_room_event(self, event: events.RoomEvent) -> None:
        self.events.append(event)

    def on_subscriber_offer(self, sdp: str, offer_id: int) -> None:
        self.offers.append((sdp, offer_id))

    def on_local_candidate(self, target: str, candidate: str, mid: str, index: int) -> None:
        pass


async def test_first_offer_is_ice_lite_with_a_data_channel(
    rooms: RoomManager, worker: Worker
) -> None:
    recorder = Recorder()
    session = await rooms.get_or_create("r").join("a", listener=recorder)
    await asyncio.sleep(0)
    assert recorder.offers == [], "nothing before the front-end starts the session"
    session.start_subscriber()
    await asyncio.sleep(0)
    [(sdp, offer_id)] = recorder.offers
    assert offer_id == 1
    offer = parse_sdp(sdp)
    assert offer.ice_lite
    assert [m.kind for m in offer.media] == ["application"]
    assert offer.media[0].setup == "actpass"
    assert offer.media[0].candidates[0].startswith("candidate:")
    assert f" {worker.udp_port} typ host" in offer.media[0].candidates[0]


async def test_answers_must_match_the_outstanding_offer(rooms: RoomManager) -> None:
    recorder = Recorder()
    session = await rooms.get_or_create("r").join("a", listener=recorder)
    session.start_subscriber()
    await asyncio.sleep(0)
    with pytest.raises(NegotiationError, match="outstanding offer is 1"):
        await session.accept_subscriber_answer("v=0\r\n", 7)
    assert not session.withdraw_subscriber_offer(7)
    assert session.withdraw_subscriber_offer(1)
    await asyncio.sleep(0)
    assert [offer_id for _, offer_id in recorder.offers] == [1, 2]
