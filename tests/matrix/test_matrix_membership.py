"""MatrixRTC call membership from raw room events (JSON as homeservers send it)."""

from __future__ import annotations

from typing import Any

from mediafed.matrix.membership import (
    CALL_MEMBER,
    DEFAULT_EXPIRES_MS,
    RTC_MEMBER,
    CallMembership,
    Focus,
    parse_state_key,
)

ROOM = "!call:hs.example"
T0 = 1_700_000_000_000
SFU = {"type": "livekit", "livekit_service_url": "https://sfu.example.org"}


def _member_event(
    sender: str, device: str, content: dict[str, Any] | None = None, ts: int = T0, room: str = ROOM
) -> dict[str, Any]:
    if content is None:
        content = {
            "application": "m.call",
            "call_id": "",
            "scope": "m.room",
            "device_id": device,
            "membershipID": f"mid-{device}",
            "expires": 3_600_000,
            "m.call.intent": "video",
            "focus_active": {"type": "livekit", "focus_selection": "oldest_membership"},
            "foci_preferred": [SFU],
        }
    return {
        "type": CALL_MEMBER,
        "room_id": room,
        "sender": sender,
        "state_key": f"_{sender}_{device}_m.call",
        "origin_server_ts": ts,
        "event_id": f"$e{device}{ts}",
        "content": content,
    }


def test_join_and_leave_element_call_style() -> None:
    calls = CallMembership()
    change = calls.apply(_member_event("@alice:hs.example", "AAA"))
    assert change is not None and [m.user_id for m in change.joined] == ["@alice:hs.example"]
    calls.apply(_member_event("@bob:hs.example", "BBB", ts=T0 + 10))

    members = calls.members(ROOM, now_ms=T0 + 1000)
    assert [(m.user_id, m.device_id) for m in members] == [
        ("@alice:hs.example", "AAA"),
        ("@bob:hs.example", "BBB"),
    ]
    alice = members[0]
    assert alice.slot_id == "m.call#ROOM"
    assert alice.member_id == "mid-AAA"
    assert alice.foci_preferred == (Focus("livekit", "https://sfu.example.org"),)
    assert alice.focus_active == Focus("livekit", focus_selection="oldest_membership")
    assert alice.expires_at_ms == T0 + 3_600_000

    # leaving: the same state key with empty content
    change = calls.apply(_member_event("@alice:hs.example", "AAA", content={}, ts=T0 + 2000))
    assert change is not None and change.left == ("AAA",) and change.joined == ()
    assert [m.user_id for m in calls.members(ROOM, now_ms=T0 + 3000)] == ["@bob:hs.example"]
    calls.apply(_member_event("@bob:hs.example", "BBB", content={}, ts=T0 + 4000))
    assert calls.members(ROOM, now_ms=T0 + 5000) == []
    assert calls.rooms_with_calls(T0 + 5000) == []


def test_rooms_of_every_version_are_kept_apart() -> None:
    # A room version 12 id has no server part; one of version 11 on the same
    # homeserver, or a version 12 id differing in one character, is another room.
    v12 = "!31hneApxJ_1o-63DmFrpeqnkFfWppnzWso1JvH3ogLM"
    v12_other = "!31hneApxJ_1o-63DmFrpeqnkFfWppnzWso1JvH3ogLm"
    calls = CallMembership()
    calls.apply(_member_event("@alice:hs.example", "AAA", room=v12))
    calls.apply(_member_event("@bob:hs.example", "BBB", room=ROOM))
    change = calls.apply(_member_event("@carol:other.example", "CCC", room=v12_other))
    assert change is not None and change.room_id == v12_other
    assert [(m.room_id, m.user_id) for m in calls.members(v12, T0)] == [(v12, "@alice:hs.example")]
    assert [m.user_id for m in calls.members(ROOM, T0)] == ["@bob:hs.example"]
    assert [m.user_id for m in calls.members(v12_other, T0)] == ["@carol:other.example"]
    assert calls.rooms_with_calls(T0) == sorted([v12, v12_other, ROOM])
    calls.apply(_member_event("@alice:hs.example", "AAA", content={}, ts=T0 + 1, room=v12))
    assert calls.rooms_with_calls(T0 + 2) == sorted([v12_other, ROOM])


def test_expired_memberships_are_dropped() -> None:
    calls = CallMembership()
    event = _member_event("@alice:hs.example", "AAA")
    event["content"]["created_ts"] = T0 - 10_000  # a refreshed event keeps its creation time
    calls.apply(event)
    no_expires = _member_event("@carol:hs.example", "CCC")
    del no_expires["content"]["expires"]
    calls.apply(no_expires)
    expiry = T0 - 10_000 + 3_600_000
    assert len(calls.members(ROOM, now_ms=expiry - 1)) == 2
    assert [m.user_id for m in calls.members(ROOM, now_ms=expiry)] == ["@carol:hs.example"]
    assert calls.prune(now_ms=expiry) == 1
    assert calls.prune(now_ms=T0 + DEFAULT_EXPIRES_MS) == 1
    assert calls.rooms_with_calls(T0) == []


def test_state_key_forms() -> None:
    assert parse_state_key("_@a:hs_DEV_m.call", "@a:hs") == ("@a:hs", "DEV")
    assert parse_state_key("@a:hs_DEV", "@a:hs") == ("@a:hs", "DEV")
    assert parse_state_key("@a:hs", "@a:hs") == ("@a:hs", "")
    # a user only owns state keys carrying their own id
    assert parse_state_key("_@b:hs_DEV_m.call", "@a:hs") == ("", "")
    calls = CallMembership()
    forged = _member_event("@mallory:hs.example", "DEV")
    forged["state_key"] = "_@alice:hs.example_DEV_m.call"
    assert calls.apply(forged) is None
    assert calls.members(ROOM, T0) == []


def test_legacy_memberships_list() -> None:
    calls = CallMembership()
    event = {
        "type": CALL_MEMBER,
        "room_id": ROOM,
        "sender": "@old:hs.example",
        "state_key": "@old:hs.example",
        "origin_server_ts": T0,
        "content": {
            "memberships": [
                {
                    "application": "m.call",
                    "call_id": "",
                    "scope": "m.room",
                    "device_id": "PHONE",
                    "expires_ts": T0 + 60_000,
                    "foci_active": [SFU],
                    "membershipID": "x1",
                },
                {"application": "m.call", "call_id": "", "device_id": "LAPTOP", "expires": 1000},
                "not an object",
            ]
        },
    }
    calls.apply(event)
    members = calls.members(ROOM, now_ms=T0)
    assert sorted(m.device_id for m in members) == ["LAPTOP", "PHONE"]
    phone = next(m for m in members if m.device_id == "PHONE")
    assert phone.focus_active == Focus("livekit", "https://sfu.example.org")
    assert [m.device_id for m in calls.members(ROOM, now_ms=T0 + 1000)] == ["PHONE"]
    event["content"] = {"memberships": []}
    change = calls.apply(event)
    assert change is not None and change.left == ("LAPTOP", "PHONE")
    assert calls.members(ROOM, now_ms=T0) == []


def test_rtc_member_sticky_events() -> None:
    calls = CallMembership()
    event: dict[str, Any] = {
        "type": RTC_MEMBER,
        "room_id": ROOM,
        "sender": "@new:hs.example",
        "origin_server_ts": T0,
        "msc4354_sticky": {"duration_ms": 3_600_000},
        "content": {
            "slot_id": "m.call#ROOM",
            "application": {"type": "m.call"},
            "member": {
                "id": "member-9",
                "claimed_user_id": "@new:hs.example",
                "claimed_device_id": "NEWDEV",
            },
            "rtc_transports": [SFU],
            "versions": [],
            "msc4354_sticky_key": "member-9",
        },
    }
    calls.apply(event)
    [member] = calls.members(ROOM, now_ms=T0 + 1)
    assert (member.device_id, member.member_id, member.slot_id) == (
        "NEWDEV",
        "member-9",
        "m.call#ROOM",
    )
    assert member.foci_preferred == (Focus("livekit", "https://sfu.example.org"),)
    assert member.expires_at_ms == T0 + 3_600_000
    assert calls.members(ROOM, now_ms=T0 + 3_600_000) == []

    # a member claiming someone else's user id is ignored
    forged = dict(event, sender="@mallory:hs.example")
    assert calls.apply(forged) is None

    # leaving: same sticky key, no member/application
    calls.apply(dict(event, origin_server_ts=T0 + 5, content={"msc4354_sticky_key": "member-9"}))
    assert calls.members(ROOM, now_ms=T0 + 10) == []


def test_other_events_and_garbage_are_ignored() -> None:
    calls = CallMembership()
    assert (
        calls.apply({"type": "m.room.message", "room_id": ROOM, "sender": "@a:h", "content": {}})
        is None
    )
    assert (
        calls.apply({"type": CALL_MEMBER, "room_id": ROOM, "sender": "@a:h", "content": "x"})
        is None
    )
    not_state = _member_event("@a:hs.example", "D")
    del not_state["state_key"]
    assert calls.apply(not_state) is None
    no_device = _member_event("@a:hs.example", "D")
    no_device["state_key"] = "@a:hs.example"
    del no_device["content"]["device_id"]
    change = calls.apply(no_device)
    assert change is not None and change.joined == ()
    mismatch = _member_event("@a:hs.example", "D")
    mismatch["content"]["device_id"] = "OTHER"
    assert calls.apply(mismatch) is not None
    assert calls.members(ROOM, T0) == []
