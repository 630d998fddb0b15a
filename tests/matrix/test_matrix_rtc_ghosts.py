"""Bridged participants as MatrixRTC members: identities, contents, and the
publisher's join / refresh / leave against a recording homeserver double."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any, cast

from mediafed.matrix.membership import CALL_MEMBER, CallMembership
from mediafed.matrix.registration import make_registration
from mediafed.matrix.rtc_ghosts import (
    RTC_NOTIFICATION,
    DelayedEventsRefused,
    RtcGhosts,
    call_member_content,
    call_member_state_key,
    ghost_identity,
    ghost_localpart,
    parse_ghost_identity,
    rtc_member_content,
)
from mediafed.media import Room, events
from mediafed.media.types import ParticipantInfo

REG = make_registration(url="http://127.0.0.1:1", domain="hs.test")
ROOM_ID = "!room:hs.test"
FOCUS = "https://relay.hs.test"


def test_ghost_localpart_escapes_what_a_localpart_cannot_hold() -> None:
    assert ghost_localpart("rc_", "Alice") == "rc_alice"
    assert ghost_localpart("rc_", "bob.smith-2") == "rc_bob.smith-2"
    assert ghost_localpart("rc_", "zoë x") == "rc_zo=c3=ab=20x"


def test_ghost_identity_round_trips_and_rejects_others() -> None:
    identity = ghost_identity(REG, "alice", "MFDEV1")
    assert identity == "@rc_alice:hs.test:MFDEV1"
    assert parse_ghost_identity(REG, identity) == ("@rc_alice:hs.test", "MFDEV1")
    assert ghost_identity(REG, "alice").startswith("@rc_alice:hs.test:MF")
    # Element Call users, classic callers, the bot and plain names are not ghosts.
    assert parse_ghost_identity(REG, "@bob:hs.test:ABCDEF") is None
    assert parse_ghost_identity(REG, "@rc_alice:other.test:DEV") is None
    assert parse_ghost_identity(REG, f"{REG.bot_user_id}:DEV") is None
    assert parse_ghost_identity(REG, "guest-1234") is None


def test_call_member_content_is_what_element_call_reads() -> None:
    content = call_member_content(
        matrix_room_id=ROOM_ID,
        device_id="MFDEV1",
        focus_url=FOCUS,
        created_ts=1_000,
        expires_ms=14_400_000,
    )
    assert content == {
        "application": "m.call",
        "call_id": "",
        "scope": "m.room",
        "device_id": "MFDEV1",
        "membershipID": "MFDEV1",
        "created_ts": 1_000,
        "expires": 14_400_000,
        "m.call.intent": "video",
        "focus_active": {"type": "livekit", "focus_selection": "multi_sfu"},
        "foci_preferred": [
            {"type": "livekit", "livekit_service_url": FOCUS, "livekit_alias": ROOM_ID}
        ],
    }
    key = call_member_state_key("@rc_alice:hs.test", "MFDEV1")
    assert key == "_@rc_alice:hs.test_MFDEV1_m.call"
    # mediafed's own membership parser (the one Element Call's form is tested
    # against) reads it as a live member of the room call on this relay.
    membership = CallMembership()
    event = {
        "type": CALL_MEMBER,
        "room_id": ROOM_ID,
        "sender": "@rc_alice:hs.test",
        "state_key": key,
        "origin_server_ts": 2_000,
        "content": content,
    }
    membership.apply(event)
    [member] = membership.members(ROOM_ID, now_ms=5_000)
    assert (member.user_id, member.device_id, member.slot_id) == (
        "@rc_alice:hs.test",
        "MFDEV1",
        "m.call#ROOM",
    )
    assert member.expires_at_ms == 1_000 + 14_400_000
    assert member.foci_preferred[0].livekit_service_url == FOCUS
    membership.apply({**event, "content": {}})
    assert membership.members(ROOM_ID, now_ms=5_000) == []


def test_rtc_member_content_parses_as_the_same_member() -> None:
    content = rtc_member_content(
        user_id="@rc_alice:hs.test", device_id="MFDEV1", focus_url=FOCUS, matrix_room_id=ROOM_ID
    )
    membership = CallMembership()
    membership.apply(
        {
            "type": "m.rtc.member",
            "room_id": ROOM_ID,
            "sender": "@rc_alice:hs.test",
            "origin_server_ts": 0,
            "content": content,
        }
    )
    [member] = membership.members(ROOM_ID, now_ms=1)
    assert (member.user_id, member.device_id) == ("@rc_alice:hs.test", "MFDEV1")
    assert member.foci_preferred[0].livekit_service_url == FOCUS


class RecordingHomeserver:
    def __init__(
        self, *, delayed: bool = True, encrypted: bool = False, members: tuple[str, ...] = ()
    ) -> None:
        self.delayed = delayed
        self.encrypted = encrypted
        self.members = members
        self.calls: list[tuple[Any, ...]] = []
        self._next = 0

    async def join(self, room_id: str, user_id: str, displayname: str) -> None:
        self.calls.append(("join", room_id, user_id, displayname))

    async def room_encrypted(self, room_id: str, user_id: str) -> bool:
        return self.encrypted

    async def joined_members(self, room_id: str, user_id: str) -> list[str]:
        return list(self.members)

    async def put_state(
        self,
        room_id: str,
        user_id: str,
        event_type: str,
        state_key: str,
        content: Mapping[str, Any],
        *,
        delay_ms: int | None = None,
    ) -> str:
        if delay_ms is not None and not self.delayed:
            raise DelayedEventsRefused("M_UNRECOGNIZED: not here")
        self._next += 1
        self.calls.append(("state", state_key, dict(content), delay_ms))
        return f"id{self._next}"

    async def send(
        self,
        room_id: str,
        user_id: str,
        event_type: str,
        content: Mapping[str, Any],
        *,
        sticky_ms: int | None = None,
        delay_ms: int | None = None,
    ) -> str:
        self.calls.append(("send", event_type, dict(content), sticky_ms, delay_ms))
        return "sent"

    async def update_delayed(self, user_id: str, delay_id: str, action: str) -> None:
        self.calls.append(("delayed", delay_id, action))


def _room(name: str) -> Room:
    return cast(Room, SimpleNamespace(name=name))


async def _linked(room: str) -> str | None:
    return ROOM_ID if room == "linked" else None


async def _until(predicate: Any, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_join_publishes_refreshes_and_leave_removes() -> None:
    hs = RecordingHomeserver()
    ghosts = RtcGhosts(REG, hs, _linked, focus_url=FOCUS + "/", leave_delay_ms=150)
    alice = ParticipantInfo(sid="PA_1", identity="@rc_alice:hs.test:MFDEV1", name="Alice")
    ghosts.observe(_room("linked"), events.ParticipantJoined(alice))
    await ghosts.wait_published(alice.identity)
    key = "_@rc_alice:hs.test_MFDEV1_m.call"
    assert hs.calls[0] == ("join", ROOM_ID, "@rc_alice:hs.test", "Alice")
    # The delayed leave goes first, then the membership naming this relay.
    assert hs.calls[1] == ("state", key, {}, 150)
    _, state_key, content, delay = hs.calls[2]
    assert (state_key, delay) == (key, None)
    assert content["foci_preferred"][0]["livekit_service_url"] == FOCUS
    await _until(lambda: ("delayed", "id1", "restart") in hs.calls)
    ghosts.observe(_room("linked"), events.ParticipantLeft(alice, "left"))
    await _until(lambda: ("delayed", "id1", "cancel") in hs.calls)
    assert ("state", key, {}, None) in hs.calls
    assert ghosts.ghosts == {}


async def test_no_delayed_events_falls_back_to_a_short_expiry() -> None:
    hs = RecordingHomeserver(delayed=False)
    # A fixed clock: a millisecond passing between join and publish adds to expires.
    ghosts = RtcGhosts(
        REG, hs, _linked, focus_url=FOCUS, fallback_expires_ms=60_000, clock_ms=lambda: 1_000
    )
    alice = ParticipantInfo(sid="PA_1", identity="@rc_alice:hs.test:MFDEV1", name="Alice")
    ghosts.observe(_room("linked"), events.ParticipantJoined(alice))
    await ghosts.wait_published(alice.identity)
    assert ghosts.delayed_events is False
    [(_, _, content, _)] = [c for c in hs.calls if c[0] == "state"]
    assert content["expires"] == 60_000
    await ghosts.close()
    assert [c for c in hs.calls if c[0] == "state"][-1][2] == {}


async def test_unlinked_rooms_others_and_encrypted_rooms_publish_nothing() -> None:
    hs = RecordingHomeserver(encrypted=True)
    ghosts = RtcGhosts(REG, hs, _linked, focus_url=FOCUS)
    for room, identity in (
        ("linked", "@bob:hs.test:ELEMENTCALL"),  # an Element Call user
        ("other", "@rc_alice:hs.test:MFDEV1"),  # a call not linked to Matrix
        ("linked", "@rc_carol:hs.test:MFDEV2"),  # linked, but the room is encrypted
    ):
        ghosts.observe(_room(room), events.ParticipantJoined(ParticipantInfo("PA", identity)))
    await asyncio.sleep(0.1)
    assert [c for c in hs.calls if c[0] != "join"] == []
    assert ghosts.ghosts == {}
    await ghosts.close()


async def test_leaving_before_the_room_is_resolved_publishes_nothing() -> None:
    hs = RecordingHomeserver()
    gate = asyncio.Event()

    async def slow_linked(room: str) -> str | None:
        await gate.wait()
        return ROOM_ID

    ghosts = RtcGhosts(REG, hs, slow_linked, focus_url=FOCUS)
    alice = ParticipantInfo(sid="PA_1", identity="@rc_alice:hs.test:MFDEV1")
    ghosts.observe(_room("linked"), events.ParticipantJoined(alice))
    ghosts.observe(_room("linked"), events.ParticipantLeft(alice, "left"))
    gate.set()
    await asyncio.sleep(0.05)
    assert hs.calls == []
    await ghosts.close()


def _notifications(hs: RecordingHomeserver) -> list[dict[str, Any]]:
    return [c[2] for c in hs.calls if c[0] == "send" and c[1] == RTC_NOTIFICATION]


async def test_a_rocketchat_call_rings_a_room_of_two_once() -> None:
    # The Matrix user, the first ghost and the bridge bot (not a party to the call).
    hs = RecordingHomeserver(members=("@bob:hs.test", "@rc_alice:hs.test", REG.bot_user_id))

    async def rocketchat_call(room: str) -> str | None:
        return "CL_1"

    ghosts = RtcGhosts(
        REG, hs, _linked, focus_url=FOCUS, ringing_call_of=rocketchat_call, clock_ms=lambda: 7
    )
    alice = ParticipantInfo(sid="PA_1", identity="@rc_alice:hs.test:MFDEV1", name="Alice")
    ghosts.observe(_room("linked"), events.ParticipantJoined(alice))
    await _until(lambda: _notifications(hs))
    # Membership first (id1 is the delayed leave, id2 the membership), then the
    # notification referring to it, as matrix-js-sdk's sendCallNotify sends it.
    member_index = next(i for i, c in enumerate(hs.calls) if c[0] == "state" and c[2])
    assert hs.calls[member_index + 1][:2] == ("send", RTC_NOTIFICATION)
    assert _notifications(hs) == [
        {
            "m.mentions": {"user_ids": [], "room": True},
            "notification_type": "ring",
            "m.relates_to": {"rel_type": "m.reference", "event_id": "id2"},
            "sender_ts": 7,
            "lifetime": 30_000,
            "m.call.intent": "video",
        }
    ]
    # A second Rocket.Chat participant of the same call does not ring again.
    carol = ParticipantInfo(sid="PA_2", identity="@rc_carol:hs.test:MFDEV2", name="Carol")
    ghosts.observe(_room("linked"), events.ParticipantJoined(carol))
    await ghosts.wait_published(carol.identity)
    await asyncio.sleep(0.05)
    assert len(_notifications(hs)) == 1
    await ghosts.close()


async def test_a_rocketchat_call_notifies_a_group_room() -> None:
    hs = RecordingHomeserver(members=("@bob:hs.test", "@dave:hs.test", "@rc_alice:hs.test"))

    async def rocketchat_call(room: str) -> str | None:
        return "CL_1"

    ghosts = RtcGhosts(REG, hs, _linked, focus_url=FOCUS, ringing_call_of=rocketchat_call)
    alice = ParticipantInfo(sid="PA_1", identity="@rc_alice:hs.test:MFDEV1", name="Alice")
    ghosts.observe(_room("linked"), events.ParticipantJoined(alice))
    await _until(lambda: _notifications(hs))
    [content] = _notifications(hs)
    assert content["notification_type"] == "notification"
    assert content["m.mentions"] == {"user_ids": [], "room": True}
    await ghosts.close()


async def test_a_matrix_started_call_does_not_ring_again() -> None:
    hs = RecordingHomeserver(members=("@bob:hs.test", "@rc_alice:hs.test"))

    async def matrix_started(room: str) -> str | None:
        return None

    ghosts = RtcGhosts(REG, hs, _linked, focus_url=FOCUS, ringing_call_of=matrix_started)
    alice = ParticipantInfo(sid="PA_1", identity="@rc_alice:hs.test:MFDEV1", name="Alice")
    ghosts.observe(_room("linked"), events.ParticipantJoined(alice))
    await ghosts.wait_published(alice.identity)
    await asyncio.sleep(0.05)
    assert _notifications(hs) == []
    await ghosts.close()
