"""Who is in a MatrixRTC call, per Matrix room, from room events (pure logic).

Follows MSC3401/MSC4143 call membership as Element Call writes it:

- ``org.matrix.msc3401.call.member`` state, one event per device, ``state_key``
  ``_@user:server_DEVICE_m.call`` (MSC3757 owned state; also
  ``@user:server_DEVICE`` without the underscore/application), content
  ``{application, call_id, scope, device_id, membershipID, expires,
  created_ts?, focus_active, foci_preferred}``; expiry is ``created_ts`` (or
  the event's ``origin_server_ts``) + ``expires`` ms; empty content = left.
- the 2023 legacy form: ``state_key`` = the user id and content
  ``{memberships: [...]}``, one entry per device (``expires_ts`` or
  ``expires``), an empty list = every device left.
- ``m.rtc.member`` (MSC4143 with MSC4354 sticky events): ``slot_id``,
  ``member{id, claimed_user_id, claimed_device_id}``, ``application``,
  ``rtc_transports``; keyed by its sticky key; a content without ``member``
  means that member left; it lasts the event's sticky ``duration_ms``.

Nothing here does I/O or reads a clock: callers pass ``now_ms``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

CALL_MEMBER = "org.matrix.msc3401.call.member"
RTC_MEMBER = "m.rtc.member"
MEMBERSHIP_EVENT_TYPES = frozenset({CALL_MEMBER, RTC_MEMBER})
DEFAULT_EXPIRES_MS = 4 * 3600 * 1000
"""matrix-js-sdk's default membership lifetime when ``expires`` is absent."""
ROOM_SLOT = "m.call#ROOM"


@dataclass(frozen=True, slots=True)
class Focus:
    """A transport a member uses or prefers (``type`` ``livekit`` for an SFU)."""

    type: str
    livekit_service_url: str = ""
    livekit_alias: str = ""
    focus_selection: str = ""

    @classmethod
    def from_json(cls, data: object) -> Focus | None:
        if not isinstance(data, dict) or not isinstance(data.get("type"), str):
            return None

        def text(key: str) -> str:
            value = data.get(key)
            return value if isinstance(value, str) else ""

        return cls(
            type=data["type"],
            livekit_service_url=text("livekit_service_url"),
            livekit_alias=text("livekit_alias"),
            focus_selection=text("focus_selection"),
        )


@dataclass(frozen=True, slots=True)
class CallMember:
    """One device of one user in one call of a room."""

    room_id: str
    user_id: str
    device_id: str
    member_id: str
    application: str
    slot_id: str
    """``m.call#ROOM`` for a room call (``call_id`` "" and ``scope`` m.room)."""
    expires_at_ms: int
    joined_at_ms: int = 0
    foci_preferred: tuple[Focus, ...] = ()
    focus_active: Focus | None = None
    source: str = CALL_MEMBER

    def expired(self, now_ms: int) -> bool:
        return now_ms >= self.expires_at_ms


@dataclass(frozen=True, slots=True)
class MembershipChange:
    """What one event did: who joined (or refreshed) and which keys left."""

    room_id: str
    joined: tuple[CallMember, ...] = ()
    left: tuple[str, ...] = ()


@dataclass(slots=True)
class _Room:
    # key -> members; a key is one state_key (or sticky key), which may carry
    # several devices in the 2023 legacy form.
    by_key: dict[str, tuple[CallMember, ...]] = field(default_factory=dict)


def _str(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    return value if isinstance(value, str) else ""


def _int(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


def _foci(content: Mapping[str, Any], key: str) -> tuple[Focus, ...]:
    raw = content.get(key)
    if not isinstance(raw, list):
        return ()
    return tuple(f for f in (Focus.from_json(item) for item in raw) if f is not None)


def _slot(application: str, call_id: str) -> str:
    return f"{application}#{call_id or 'ROOM'}"


def parse_state_key(state_key: str, sender: str) -> tuple[str, str]:
    """``(user_id, device_id)`` from a call.member state key; device "" if none.

    ``_@u:s_DEVICE_m.call``, ``@u:s_DEVICE`` or ``@u:s``; the user id part must
    be the sender (MSC3757: a user only owns state keys with their own id).
    """
    key = state_key[1:] if state_key.startswith("_@") else state_key
    if key == sender:
        return sender, ""
    if not key.startswith(sender + "_"):
        return "", ""
    rest = key[len(sender) + 1 :]
    for suffix in ("_m.call",):
        if rest.endswith(suffix):
            rest = rest[: -len(suffix)]
    return sender, rest


class CallMembership:
    """Per-room call membership, fed with raw room events (dicts as the
    homeserver sends them in appservice transactions or /sync)."""

    def __init__(self) -> None:
        self._rooms: dict[str, _Room] = {}

    def apply(self, event: Mapping[str, Any]) -> MembershipChange | None:
        """Update from one event; ``None`` when it is not a membership event."""
        event_type = event.get("type")
        if event_type not in MEMBERSHIP_EVENT_TYPES:
            return None
        room_id, sender = _str(event, "room_id"), _str(event, "sender")
        content = event.get("content")
        if not room_id or not sender or not isinstance(content, dict):
            log.info("x dropped %s without room, sender or content", event_type)
            return None
        ts = _int(event.get("origin_server_ts")) or 0
        if event_type == CALL_MEMBER:
            state_key = event.get("state_key")
            if not isinstance(state_key, str):
                log.info("x dropped %s in %s: not a state event", event_type, room_id)
                return None
            members = self._call_member(room_id, sender, state_key, content, ts)
            key = state_key
        else:
            key, members = self._rtc_member(room_id, sender, event, content, ts)
            if not key:
                log.info("x dropped %s in %s from %s: no member id", event_type, room_id, sender)
                return None
        if members is None:
            return None
        room = self._rooms.setdefault(room_id, _Room())
        old = {m.device_id for m in room.by_key.get(key, ())}
        if members:
            room.by_key[key] = members
        else:
            room.by_key.pop(key, None)
            if not room.by_key:
                del self._rooms[room_id]
        left = tuple(sorted(old - {m.device_id for m in members}))
        for member in members:
            log.info(
                "- %s in call %s room=%s device=%s",
                member.user_id,
                member.slot_id,
                room_id,
                member.device_id,
            )
        if not members and old:
            log.info("- %s left the call room=%s key=%s", sender, room_id, key)
        return MembershipChange(room_id, joined=members, left=left)

    def _call_member(
        self, room_id: str, sender: str, state_key: str, content: Mapping[str, Any], ts: int
    ) -> tuple[CallMember, ...] | None:
        user_id, key_device = parse_state_key(state_key, sender)
        if not user_id:
            log.info(
                "x dropped call.member in %s: state key %r is not %s's", room_id, state_key, sender
            )
            return None
        if not content:
            return ()
        if "memberships" in content:  # 2023 legacy: one event per user, a list of devices
            entries = content.get("memberships")
            if not isinstance(entries, list):
                return ()
            parsed = (
                self._one(room_id, user_id, "", e, ts) for e in entries if isinstance(e, dict)
            )
            return tuple(m for m in parsed if m is not None)
        member = self._one(room_id, user_id, key_device, content, ts)
        return () if member is None else (member,)

    def _one(
        self, room_id: str, user_id: str, key_device: str, data: Mapping[str, Any], ts: int
    ) -> CallMember | None:
        device_id = _str(data, "device_id") or key_device
        application = _str(data, "application") or "m.call"
        if not device_id:
            log.info("x call.member of %s in %s names no device", user_id, room_id)
            return None
        if key_device and device_id != key_device:
            log.info(
                "x call.member of %s: device %s is not the state key's %s",
                user_id,
                device_id,
                key_device,
            )
            return None
        created = _int(data.get("created_ts")) or ts
        expires_ts = _int(data.get("expires_ts"))
        expires = _int(data.get("expires"))
        if expires_ts is not None:
            expires_at = expires_ts
        else:
            expires_at = created + (expires if expires is not None else DEFAULT_EXPIRES_MS)
        foci_active = data.get("focus_active")
        if (
            foci_active is None
            and isinstance(data.get("foci_active"), list)
            and data["foci_active"]
        ):
            foci_active = data["foci_active"][0]  # legacy spelling: a list
        return CallMember(
            room_id=room_id,
            user_id=user_id,
            device_id=device_id,
            member_id=_str(data, "membershipID") or device_id,
            application=application,
            slot_id=_slot(application, _str(data, "call_id")),
            expires_at_ms=expires_at,
            joined_at_ms=created,
            foci_preferred=_foci(data, "foci_preferred"),
            focus_active=Focus.from_json(foci_active),
            source=CALL_MEMBER,
        )

    def _rtc_member(
        self,
        room_id: str,
        sender: str,
        event: Mapping[str, Any],
        content: Mapping[str, Any],
        ts: int,
    ) -> tuple[str, tuple[CallMember, ...] | None]:
        member = content.get("member")
        sticky_key = (
            _str(content, "sticky_key")
            or _str(content, "msc4354_sticky_key")
            or _str(event, "state_key")
            or (_str(member, "id") if isinstance(member, dict) else "")
        )
        if not sticky_key:
            return "", None
        key = f"{sender}|{sticky_key}"
        if not isinstance(member, dict) or not content.get("application"):
            return key, ()
        claimed_user = _str(member, "claimed_user_id") or sender
        if claimed_user != sender:
            log.info("x m.rtc.member in %s: %s claims to be %s", room_id, sender, claimed_user)
            return key, None
        device_id = _str(member, "claimed_device_id")
        if not device_id:
            log.info("x m.rtc.member of %s in %s names no device", sender, room_id)
            return key, None
        application = content.get("application")
        app_type = application.get("type") if isinstance(application, dict) else application
        sticky = event.get("msc4354_sticky") or event.get("sticky") or {}
        duration = _int(sticky.get("duration_ms")) if isinstance(sticky, dict) else None
        return key, (
            CallMember(
                room_id=room_id,
                user_id=sender,
                device_id=device_id,
                member_id=_str(member, "id") or sticky_key,
                application=app_type if isinstance(app_type, str) else "m.call",
                slot_id=_str(content, "slot_id") or ROOM_SLOT,
                expires_at_ms=ts + (duration if duration is not None else DEFAULT_EXPIRES_MS),
                joined_at_ms=ts,
                foci_preferred=_foci(content, "rtc_transports") or _foci(content, "transports"),
                source=RTC_MEMBER,
            ),
        )

    def apply_all(self, events: Iterable[Mapping[str, Any]]) -> list[MembershipChange]:
        return [change for e in events if (change := self.apply(e)) is not None]

    def members(self, room_id: str, now_ms: int, slot_id: str | None = None) -> list[CallMember]:
        """Live (unexpired) members of a room, optionally of one slot, oldest first."""
        room = self._rooms.get(room_id)
        if room is None:
            return []
        live = [
            m
            for members in room.by_key.values()
            for m in members
            if not m.expired(now_ms) and (slot_id is None or m.slot_id == slot_id)
        ]
        return sorted(live, key=lambda m: (m.joined_at_ms, m.user_id, m.device_id))

    def rooms_with_calls(self, now_ms: int) -> list[str]:
        return sorted(r for r in self._rooms if self.members(r, now_ms))

    def prune(self, now_ms: int) -> int:
        """Forget expired members; returns how many were dropped."""
        dropped = 0
        for room_id in list(self._rooms):
            room = self._rooms[room_id]
            for key in list(room.by_key):
                keep = tuple(m for m in room.by_key[key] if not m.expired(now_ms))
                dropped += len(room.by_key[key]) - len(keep)
                if keep:
                    room.by_key[key] = keep
                else:
                    del room.by_key[key]
            if not room.by_key:
                del self._rooms[room_id]
        return dropped
