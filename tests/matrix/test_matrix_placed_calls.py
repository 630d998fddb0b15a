"""Classic calls the bridge places (a Rocket.Chat call in a direct room rings the
Matrix user from the caller's ghost): ringing, refusals, the ends of a ring nobody
answers. The answered call, through a real Synapse and both ways of media, is in
test_matrix_rtc_ghosts_synapse.py."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from mediafed.matrix import voip
from mediafed.matrix.call import CallState, MatrixCall
from mediafed.matrix.calls import MatrixCallBridge
from mediafed.media import RoomManager
from tests.matrix.test_matrix_calls import (
    CALLER,
    GHOST,
    OTHER_ROOM,
    RecordingSender,
    _registration,
)
from tests.support.aiortc_client import AiortcParticipant, wait_for

CALL_ROOM = "rocketchat-call"


@pytest.fixture
async def placing(rooms: RoomManager) -> AsyncIterator[tuple[MatrixCallBridge, RecordingSender]]:
    sender = RecordingSender({OTHER_ROOM: {CALLER: "Dave", GHOST: "Erin (Rocket.Chat)"}})
    used: dict[tuple[str, str], bool] = {}

    async def matrixrtc_used(room_id: str, user_id: str) -> bool:
        return used.get((room_id, user_id), False)

    bridge = MatrixCallBridge(
        rooms,
        _registration(),
        sender,
        invite_lifetime_ms=400,
        matrixrtc_used=matrixrtc_used,
    )
    bridge.used = used  # type: ignore[attr-defined]
    try:
        yield bridge, sender
    finally:
        await bridge.close()


async def _erin(rooms: RoomManager) -> AiortcParticipant:
    """The Rocket.Chat user who started the call, waiting in its room."""
    erin = AiortcParticipant(rooms.get_or_create(CALL_ROOM), "rc-erin")
    await erin.join()
    return erin


async def _ring(bridge: MatrixCallBridge, sender: RecordingSender) -> MatrixCall:
    """Erin's ghost rings Dave; once the invite is out."""
    call = await bridge.place_call(CALL_ROOM, OTHER_ROOM, GHOST, CALLER)
    assert call is not None
    await sender.until(lambda: bool(sender.of(voip.INVITE)), "the invite")
    return call


async def test_an_unanswered_ring_is_hung_up_after_its_lifetime(
    placing: tuple[MatrixCallBridge, RecordingSender], rooms: RoomManager
) -> None:
    bridge, sender = placing
    erin = await _erin(rooms)
    try:
        call = await _ring(bridge, sender)
        [invite] = sender.of(voip.INVITE)
        assert (invite.room_id, invite.user_id) == (OTHER_ROOM, GHOST)
        assert invite.content["invitee"] == CALLER and invite.content["lifetime"] == 400
        assert invite.content["offer"]["type"] == "offer"
        assert "a=ice-lite" in invite.content["offer"]["sdp"]
        call_id = invite.content["call_id"]
        await sender.until(lambda: bool(sender.of(voip.HANGUP, call_id)), "the hangup")
        [hangup] = sender.of(voip.HANGUP, call_id)
        assert hangup.content["reason"] == "invite_timeout"
        assert call.state is CallState.ENDED
        # the ring's session left the call; Erin is still in it
        room = rooms.get(CALL_ROOM)
        assert room is not None and [p.identity for p in room.participants()] == ["rc-erin"]
    finally:
        await erin.close()


async def test_a_rejected_ring_ends_without_a_hangup(
    placing: tuple[MatrixCallBridge, RecordingSender], rooms: RoomManager
) -> None:
    bridge, sender = placing
    erin = await _erin(rooms)
    try:
        call = await _ring(bridge, sender)
        content = {"call_id": call.call_id, "party_id": "DAVEPHONE", "version": "1"}
        await bridge.on_call_event(
            OTHER_ROOM,
            CALLER,
            voip.parse_call_event(voip.REJECT, content),
            {"type": voip.REJECT, "room_id": OTHER_ROOM, "sender": CALLER, "content": content},
        )
        await wait_for(lambda: call.state is CallState.ENDED, timeout=10)
        assert not sender.of(voip.HANGUP, call.call_id)
    finally:
        await erin.close()


async def test_who_is_rung_and_who_is_not(
    placing: tuple[MatrixCallBridge, RecordingSender], rooms: RoomManager
) -> None:
    bridge, sender = placing
    # a MatrixRTC user of the room (Element X, Element Call) rings by notification alone
    bridge.used[(OTHER_ROOM, CALLER)] = True  # type: ignore[attr-defined]
    assert await bridge.place_call(CALL_ROOM, OTHER_ROOM, GHOST, CALLER) is None
    bridge.used.clear()  # type: ignore[attr-defined]
    # nobody is in the call any more: nothing to ring for
    call = await bridge.place_call(CALL_ROOM, OTHER_ROOM, GHOST, CALLER)
    assert call is not None
    await wait_for(lambda: call.state is CallState.ENDED, timeout=10)
    assert not sender.of(voip.INVITE)
    # someone not in the Matrix room is never rung
    erin = await _erin(rooms)
    try:
        assert await bridge.place_call(CALL_ROOM, OTHER_ROOM, GHOST, "@zed:hs.test") is None
        assert not sender.of(voip.INVITE)
    finally:
        await erin.close()
