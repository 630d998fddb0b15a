"""Participants who are not MatrixRTC clients, shown in the Matrix room as
MatrixRTC members: appservice ghosts (``@rc_alice:server``) whose focus is this relay.

A Rocket.Chat user who joins a call of a Rocket.Chat room linked to a Matrix
room (or of a Matrix room itself) through the call API gets the LiveKit
identity ``@rc_<name>:<server>:<DEVICE>`` (:func:`ghost_identity`). When such a
participant joins the mediafed room, the ghost joins the Matrix room and
publishes the membership Element Call reads in its default mode (MSC3401/MSC4143
``org.matrix.msc3401.call.member`` state, ``state_key``
``_@rc_alice:server_DEVICE_m.call``, ``focus_selection`` ``multi_sfu``,
``foci_preferred`` = this relay's focus) and, when configured, the newer
``m.rtc.member`` (MSC4143 with MSC4354 sticky events). Element Call matches a
LiveKit participant to a state-event membership by the identity
``sender:device_id`` (``/sfu/get``'s identity), so the subscriber maps the
participant's tracks to the ghost.

Crash safety, as Element Call does it (MSC4140 delayed events): before the
membership, a delayed ``{}`` to the same state key is scheduled, and restarted
while the participant stays; if mediafed dies, the homeserver sends it when the
delay runs out. A homeserver that refuses delayed events gets a short
``expires`` instead, refreshed while the participant stays.

Media E2EE: Element Call decides per Matrix room, not per membership
(``useRoomEncryptionSystem`` in element-call ``src/e2ee/sharedKeyManagement.ts``):
a room with an ``m.room.encryption`` state event runs per-participant E2EE
(keys as to-device ``io.element.call.encryption_keys``), any other room none.
Bridged participants send plain media, so a ghost is published only in rooms
without ``m.room.encryption``: in an encrypted room Element Call would wait for
keys that never come and show a blank tile.

Ringing (MSC4075, as matrix-js-sdk ``MatrixRTCSession.sendCallNotify`` does for
Element Web and Element Call): the ghost that brings the first Rocket.Chat
participant into a call Rocket.Chat started sends, right after its membership,
an ``org.matrix.msc4075.rtc.notification`` referring to it, ``ring`` in a room
of two (Element X and Element Web show an incoming call) and ``notification`` in
a larger one; once per call. Calls started on the Matrix side ring there already.
In a room of two whose other member is a Matrix user, the same ghost also places
a classic call to that user when the call bridge says they take classic calls
(``classic_call``, :meth:`mediafed.matrix.calls.MatrixCallBridge.place_call`).

A mediafed room that is deleted (the call ended in Rocket.Chat) takes its
ghosts' memberships with it, as their leaving would.

Classic ``m.call`` callers are not published: they are Matrix users already in
the room, whose identity (``@caller:server:party``) the appservice cannot send
state as, and a ghost standing for them would show one person twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from mediafed.matrix.membership import CALL_MEMBER, ROOM_SLOT, RTC_MEMBER
from mediafed.media import events

if TYPE_CHECKING:
    from mediafed.matrix.appservice import MatrixAppService
    from mediafed.matrix.registration import Registration
    from mediafed.media import Room

log = logging.getLogger(__name__)

EXPIRES_MS = 4 * 3600 * 1000
"""Membership lifetime when the homeserver takes delayed events (Element Call's
default); it is extended before it runs out."""
FALLBACK_EXPIRES_MS = 120_000
"""Membership lifetime when it does not: a crash leaves the ghost this long at most."""
LEAVE_DELAY_MS = 20_000
"""Delay of the delayed leave; within Synapse's ``max_event_delay_duration``."""
STICKY_DURATION_MS = 3600 * 1000
"""Lifetime of an ``m.rtc.member`` sticky event (MSC4354 caps it at one hour)."""
DEVICE_PREFIX = "MF"
_LOCALPART_SAFE = re.compile(r"[a-z0-9._/+-]")

MatrixRoomOf = Callable[[str], Awaitable[str | None]]
"""mediafed room -> the Matrix room its call belongs to, or None."""
RingingCallOf = Callable[[str], Awaitable[str | None]]
"""mediafed room -> the id of its active call if Rocket.Chat started it (so the
Matrix side is to ring), else None."""

ClassicCall = Callable[[str, str, str, str], Awaitable[object]]
"""``(mediafed room, Matrix room, ghost user id, Matrix user)``: ring the user with a
classic call from the ghost, if they take those (the call bridge decides)."""

RTC_NOTIFICATION = "org.matrix.msc4075.rtc.notification"
"""The MSC4075 call notification matrix-js-sdk sends (``EventType.RTCNotification``)
and Element Web / Element X read; the older ``org.matrix.msc4075.call.notify`` is
no longer sent by matrix-js-sdk."""
NOTIFICATION_LIFETIME_MS = 30_000
"""How long clients ring after ``sender_ts`` (matrix-js-sdk's value; they cap it at 90 s)."""


# -- identities ---------------------------------------------------------------


def ghost_localpart(user_prefix: str, name: str) -> str:
    """The ghost localpart of an external user name: ``rc_`` + the name in
    lower case, other characters than a Matrix localpart allows as ``=xx``
    (UTF-8 bytes in hex, as mautrix bridges escape them)."""
    out: list[str] = []
    for char in name.lower():
        if _LOCALPART_SAFE.fullmatch(char):
            out.append(char)
        else:
            out.extend(f"={byte:02x}" for byte in char.encode("utf-8"))
    return user_prefix + "".join(out)


def new_device_id() -> str:
    return DEVICE_PREFIX + secrets.token_hex(4).upper()


def ghost_identity(registration: Registration, name: str, device_id: str | None = None) -> str:
    """The LiveKit identity of external user ``name`` in a call linked to Matrix:
    ``@rc_<name>:<server>:<DEVICE>``, as Element Call expects of a member's
    participant (``sender:device_id``)."""
    user_id = f"@{ghost_localpart(registration.user_prefix, name)}:{registration.domain}"
    return f"{user_id}:{device_id or new_device_id()}"


def parse_ghost_identity(registration: Registration, identity: str) -> tuple[str, str] | None:
    """``(ghost user id, device id)`` if ``identity`` is one of our ghosts' devices."""
    user_id, sep, device_id = identity.rpartition(":")
    if not sep or not device_id or user_id == registration.bot_user_id:
        return None
    if not registration.is_ours(user_id):
        return None
    return user_id, device_id


# -- contents (pure) ----------------------------------------------------------


def call_member_state_key(user_id: str, device_id: str) -> str:
    return f"_{user_id}_{device_id}_m.call"


def livekit_focus(focus_url: str, matrix_room_id: str) -> dict[str, str]:
    return {"type": "livekit", "livekit_service_url": focus_url, "livekit_alias": matrix_room_id}


def call_member_content(
    *,
    matrix_room_id: str,
    device_id: str,
    focus_url: str,
    created_ts: int,
    expires_ms: int,
    intent: str = "video",
) -> dict[str, Any]:
    """``org.matrix.msc3401.call.member`` content of one device in the room call.

    The member expires at ``created_ts + expires_ms`` (matrix-js-sdk
    ``CallMembership.getAbsoluteExpiry``); a refresh keeps ``created_ts`` and
    sends a larger ``expires``, as matrix-js-sdk does."""
    return {
        "application": "m.call",
        "call_id": "",
        "scope": "m.room",
        "device_id": device_id,
        "membershipID": device_id,
        "created_ts": created_ts,
        "expires": expires_ms,
        "m.call.intent": intent,
        "focus_active": {"type": "livekit", "focus_selection": "multi_sfu"},
        "foci_preferred": [livekit_focus(focus_url, matrix_room_id)],
    }


def rtc_member_content(
    *, user_id: str, device_id: str, focus_url: str, matrix_room_id: str, intent: str = "video"
) -> dict[str, Any]:
    """``m.rtc.member`` content (MSC4143; sticky per MSC4354, keyed by the member id)."""
    return {
        "slot_id": ROOM_SLOT,
        "application": {"type": "m.call", "m.call.intent": intent},
        "member": {"id": device_id, "claimed_user_id": user_id, "claimed_device_id": device_id},
        "rtc_transports": [livekit_focus(focus_url, matrix_room_id)],
        "msc4354_sticky_key": device_id,
    }


def rtc_notification_content(
    *, membership_event_id: str, ring: bool, sender_ts: int, intent: str = "video"
) -> dict[str, Any]:
    """``org.matrix.msc4075.rtc.notification`` content for a call whose first
    membership is ``membership_event_id`` (matrix-js-sdk ``sendCallNotify``)."""
    return {
        "m.mentions": {"user_ids": [], "room": True},
        "notification_type": "ring" if ring else "notification",
        "m.relates_to": {"rel_type": "m.reference", "event_id": membership_event_id},
        "sender_ts": sender_ts,
        "lifetime": NOTIFICATION_LIFETIME_MS,
        "m.call.intent": intent,
    }


def rtc_member_left(device_id: str) -> dict[str, Any]:
    """An ``m.rtc.member`` that ends the member's sticky one (no ``member``)."""
    return {"slot_id": ROOM_SLOT, "msc4354_sticky_key": device_id}


# -- what the publisher needs of the homeserver -------------------------------


class DelayedEventsRefused(Exception):
    """The homeserver does not take MSC4140 delayed events (or not this long)."""


class GhostHomeserver(Protocol):
    async def join(self, room_id: str, user_id: str, displayname: str) -> None: ...

    async def room_encrypted(self, room_id: str, user_id: str) -> bool: ...

    async def joined_members(self, room_id: str, user_id: str) -> list[str]:
        """The user ids of the room's joined members, as seen by ``user_id``."""

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
        """The event id, or with ``delay_ms`` the delay id; DelayedEventsRefused."""

    async def send(
        self,
        room_id: str,
        user_id: str,
        event_type: str,
        content: Mapping[str, Any],
        *,
        sticky_ms: int | None = None,
        delay_ms: int | None = None,
    ) -> str: ...

    async def update_delayed(self, user_id: str, delay_id: str, action: str) -> None:
        """``restart`` or ``cancel`` a delayed event."""


class AppServiceGhostHomeserver:
    """:class:`GhostHomeserver` through the appservice's mautrix intents."""

    def __init__(self, service: MatrixAppService) -> None:
        self._service = service

    def _api(self, user_id: str) -> Any:
        from mautrix.types import UserID

        return self._service.intent.user(UserID(user_id))

    async def join(self, room_id: str, user_id: str, displayname: str) -> None:
        from mautrix.types import RoomID

        intent = self._api(user_id)
        # Invited by the bot first when the room is invite-only.
        await intent.ensure_joined(RoomID(room_id))
        if displayname:
            await intent.set_displayname(displayname)

    async def room_encrypted(self, room_id: str, user_id: str) -> bool:
        from mautrix.api import Method, Path
        from mautrix.errors import MNotFound

        try:
            await self._api(user_id).api.request(
                Method.GET, Path.v3.rooms[room_id].state["m.room.encryption"][""]
            )
        except MNotFound:
            return False
        return True

    async def joined_members(self, room_id: str, user_id: str) -> list[str]:
        from mautrix.types import RoomID

        members = await self._api(user_id).get_joined_members(RoomID(room_id))
        return [str(member) for member in members]

    async def _request(
        self,
        user_id: str,
        method: Any,
        path: Any,
        content: Mapping[str, Any],
        query: dict[str, str],
    ) -> Mapping[str, Any]:
        from mautrix.errors import MatrixRequestError

        try:
            response: Mapping[str, Any] = await self._api(user_id).api.request(
                method, path, dict(content), query_params=query or None
            )
        except MatrixRequestError as exc:
            if "org.matrix.msc4140.delay" in query and exc.http_status in (400, 404):
                raise DelayedEventsRefused(f"{exc.errcode}: {exc.message}") from exc
            raise
        return response

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
        from mautrix.api import Method, Path

        query = {} if delay_ms is None else {"org.matrix.msc4140.delay": str(delay_ms)}
        path = Path.v3.rooms[room_id].state[event_type][state_key]
        response = await self._request(user_id, Method.PUT, path, content, query)
        return str(response.get("delay_id") or response.get("event_id") or "")

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
        from mautrix.api import Method, Path

        api = self._api(user_id).api
        query: dict[str, str] = {}
        if sticky_ms is not None:
            query["org.matrix.msc4354.sticky_duration_ms"] = str(sticky_ms)
        if delay_ms is not None:
            query["org.matrix.msc4140.delay"] = str(delay_ms)
        path = Path.v3.rooms[room_id].send[event_type][api.get_txn_id()]
        response = await self._request(user_id, Method.PUT, path, content, query)
        return str(response.get("delay_id") or response.get("event_id") or "")

    async def update_delayed(self, user_id: str, delay_id: str, action: str) -> None:
        from mautrix.api import Method, Path

        # The MSC4140 form every Synapse with delayed events takes (newer ones also
        # have .../{delay_id}/restart).
        path = Path.unstable["org.matrix.msc4140"].delayed_events[delay_id]
        await self._api(user_id).api.request(Method.POST, path, {"action": action})


# -- the publisher --------------------------------------------------------------


@dataclass(slots=True)
class _Ghost:
    room: str
    matrix_room_id: str
    user_id: str
    device_id: str
    name: str
    created_ts: int = 0
    published: bool = False
    delay_ids: tuple[str, ...] = ()
    task: asyncio.Task[None] | None = None

    @property
    def label(self) -> str:
        return (
            f"room={self.room} matrix_room={self.matrix_room_id} "
            f"ghost={self.user_id}:{self.device_id}"
        )


class RtcGhosts:
    """Room observer: publishes, refreshes and removes the MatrixRTC membership of
    each ghost participant (:func:`ghost_identity`) in a call linked to a Matrix room."""

    def __init__(
        self,
        registration: Registration,
        homeserver: GhostHomeserver,
        matrix_room_of: MatrixRoomOf,
        *,
        focus_url: str,
        rtc_member_events: bool = False,
        leave_delay_ms: int = LEAVE_DELAY_MS,
        expires_ms: int = EXPIRES_MS,
        fallback_expires_ms: int = FALLBACK_EXPIRES_MS,
        ringing_call_of: RingingCallOf | None = None,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.registration = registration
        self.homeserver = homeserver
        self.matrix_room_of = matrix_room_of
        self.focus_url = focus_url.rstrip("/")
        self.rtc_member_events = rtc_member_events
        self.leave_delay_ms = leave_delay_ms
        self.expires_ms = expires_ms
        self.fallback_expires_ms = fallback_expires_ms
        self.clock_ms = clock_ms
        self.ringing_call_of = ringing_call_of
        self.classic_call: ClassicCall | None = None
        """Set by the composition: the call bridge's ``place_call``."""
        self._rung: dict[str, str] = {}
        """mediafed room -> the call a notification was sent for (one per call)."""
        self.delayed_events: bool | None = None
        """Whether the homeserver takes delayed events (None: not tried yet)."""
        self.ghosts: dict[tuple[str, str], _Ghost] = {}
        self._present: set[tuple[str, str]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- room events --

    def observe(self, room: Room, event: events.RoomEvent) -> None:
        match event:
            case events.ParticipantJoined(participant=participant):
                parsed = parse_ghost_identity(self.registration, participant.identity)
                if parsed is not None:
                    self._present.add((room.name, participant.identity))
                    self._spawn(self._join(room.name, participant.identity, participant.name))
            case events.ParticipantLeft(participant=participant):
                self._present.discard((room.name, participant.identity))
                ghost = self.ghosts.pop((room.name, participant.identity), None)
                if ghost is not None:
                    self._spawn(self._leave(ghost))
            case events.RoomClosed():
                # A deleted room's sessions close without a ParticipantLeft each.
                self._present = {key for key in self._present if key[0] != room.name}
                for key in [key for key in self.ghosts if key[0] == room.name]:
                    self._spawn(self._leave(self.ghosts.pop(key)))
                self._rung.pop(room.name, None)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)

        def done(task: asyncio.Task[None]) -> None:
            self._tasks.discard(task)
            if not task.cancelled() and task.exception() is not None:
                log.error("x MatrixRTC ghost task failed", exc_info=task.exception())

        task.add_done_callback(done)

    async def _join(self, room: str, identity: str, name: str) -> None:
        parsed = parse_ghost_identity(self.registration, identity)
        assert parsed is not None
        matrix_room_id = await self.matrix_room_of(room)
        if matrix_room_id is None:
            log.debug("- room=%s is not linked to a Matrix room; %s not published", room, identity)
            return
        ghost = _Ghost(room, matrix_room_id, parsed[0], parsed[1], name)
        key = (room, identity)
        if key in self.ghosts or key not in self._present:
            return  # published already, or left while we looked
        self.ghosts[key] = ghost
        ghost.task = asyncio.current_task()
        try:
            await self.homeserver.join(matrix_room_id, ghost.user_id, name)
            if await self.homeserver.room_encrypted(matrix_room_id, ghost.user_id):
                log.warning(
                    "x %s not published: the Matrix room is encrypted, so Element Call runs "
                    "per-participant media E2EE there and cannot show a bridged participant's "
                    "plain media; bridge calls through an unencrypted room",
                    ghost.label,
                )
                self.ghosts.pop(key, None)
                return
            if self.ghosts.get(key) is not ghost:
                return  # left while we joined
            ghost.created_ts = self.clock_ms()
            membership_event_id = await self._publish(ghost)
            await self._ring(ghost, membership_event_id)
            await self._keep_alive(ghost)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("x %s: publishing the MatrixRTC membership failed", ghost.label)
            if self.ghosts.get(key) is ghost:
                del self.ghosts[key]
            await self._remove(ghost)

    async def _schedule_leaves(self, ghost: _Ghost) -> None:
        if self.delayed_events is False:
            ghost.delay_ids = ()
            return
        key = call_member_state_key(ghost.user_id, ghost.device_id)
        try:
            ids = [
                await self.homeserver.put_state(
                    ghost.matrix_room_id,
                    ghost.user_id,
                    CALL_MEMBER,
                    key,
                    {},
                    delay_ms=self.leave_delay_ms,
                )
            ]
            if self.rtc_member_events:
                ids.append(
                    await self.homeserver.send(
                        ghost.matrix_room_id,
                        ghost.user_id,
                        RTC_MEMBER,
                        rtc_member_left(ghost.device_id),
                        delay_ms=self.leave_delay_ms,
                    )
                )
        except DelayedEventsRefused as exc:
            log.warning(
                "x homeserver refuses delayed events (%s); memberships expire after %d s "
                "instead (enable MSC4140: experimental_features msc4140_enabled and "
                "max_event_delay_duration in Synapse)",
                exc,
                self.fallback_expires_ms // 1000,
            )
            self.delayed_events = False
            ghost.delay_ids = ()
            return
        self.delayed_events = True
        ghost.delay_ids = tuple(ids)

    async def _publish(self, ghost: _Ghost) -> str:
        """Schedule the delayed leave, then send (or refresh) the membership;
        its event id."""
        await self._schedule_leaves(ghost)
        now = self.clock_ms()
        lifetime = self.expires_ms if ghost.delay_ids else self.fallback_expires_ms
        content = call_member_content(
            matrix_room_id=ghost.matrix_room_id,
            device_id=ghost.device_id,
            focus_url=self.focus_url,
            created_ts=ghost.created_ts,
            expires_ms=now - ghost.created_ts + lifetime,
        )
        event_id = await self.homeserver.put_state(
            ghost.matrix_room_id,
            ghost.user_id,
            CALL_MEMBER,
            call_member_state_key(ghost.user_id, ghost.device_id),
            content,
        )
        ghost.published = True
        if self.rtc_member_events:
            await self.homeserver.send(
                ghost.matrix_room_id,
                ghost.user_id,
                RTC_MEMBER,
                rtc_member_content(
                    user_id=ghost.user_id,
                    device_id=ghost.device_id,
                    focus_url=self.focus_url,
                    matrix_room_id=ghost.matrix_room_id,
                ),
                sticky_ms=STICKY_DURATION_MS,
            )
        log.info(
            "> MatrixRTC membership %s focus=%s (%s)",
            ghost.label,
            self.focus_url,
            "delayed leave" if ghost.delay_ids else f"expires in {lifetime // 1000} s",
        )
        return event_id

    async def _ring(self, ghost: _Ghost, membership_event_id: str) -> None:
        """Send the call notification (and in a room of two, have the classic call
        placed) if Rocket.Chat started this call and that was not done for it yet.
        Failures are logged; the membership stands."""
        if self.ringing_call_of is None:
            return
        try:
            call_id = await self.ringing_call_of(ghost.room)
            if call_id is None or self._rung.get(ghost.room) == call_id:
                return
            self._rung[ghost.room] = call_id  # before the next await: one ghost claims it
            # Room of two: the cheap check. m.direct is each user's own account
            # data, which the appservice cannot read; the bridge bot is not a party.
            members = await self.homeserver.joined_members(ghost.matrix_room_id, ghost.user_id)
        except Exception as exc:
            log.warning("x %s: call notification not sent: %s", ghost.label, exc)
            return
        parties = [m for m in members if m != self.registration.bot_user_id]
        ring = len(parties) == 2
        content = rtc_notification_content(
            membership_event_id=membership_event_id, ring=ring, sender_ts=self.clock_ms()
        )
        try:
            await self.homeserver.send(
                ghost.matrix_room_id, ghost.user_id, RTC_NOTIFICATION, content
            )
        except Exception as exc:
            log.warning("x %s: call notification not sent: %s", ghost.label, exc)
        else:
            log.info(
                "> MatrixRTC call notification %s call=%s type=%s",
                ghost.label,
                call_id,
                content["notification_type"],
            )
        others = [m for m in parties if m != ghost.user_id]
        if not ring or self.classic_call is None or len(others) != 1:
            return
        if self.registration.is_ours(others[0]):
            return  # another bridged user: it has no Matrix client to ring
        try:
            await self.classic_call(ghost.room, ghost.matrix_room_id, ghost.user_id, others[0])
        except Exception as exc:
            log.warning("x %s: classic call to %s not placed: %s", ghost.label, others[0], exc)

    async def _keep_alive(self, ghost: _Ghost) -> None:
        """Restart the delayed leave a few times per delay; resend the membership
        before it (or the sticky event) expires."""
        lifetime = self.expires_ms if ghost.delay_ids else self.fallback_expires_ms
        if self.rtc_member_events:
            lifetime = min(lifetime, STICKY_DURATION_MS)
        sent_at = self.clock_ms()
        while True:
            step_ms = self.leave_delay_ms // 3 if ghost.delay_ids else lifetime // 3
            await asyncio.sleep(step_ms / 1000)
            republish = self.clock_ms() - sent_at >= lifetime // 2
            if ghost.delay_ids and not republish:
                try:
                    for delay_id in ghost.delay_ids:
                        await self.homeserver.update_delayed(ghost.user_id, delay_id, "restart")
                    continue
                except Exception as exc:
                    # Gone (it fired after a stall, say): schedule anew and send again.
                    log.warning("x %s: restarting the delayed leave failed: %s", ghost.label, exc)
            await self._publish(ghost)
            sent_at = self.clock_ms()

    async def _leave(self, ghost: _Ghost) -> None:
        if ghost.task is not None and ghost.task is not asyncio.current_task():
            ghost.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await ghost.task
        await self._remove(ghost)

    async def _remove(self, ghost: _Ghost) -> None:
        if not ghost.created_ts:
            return  # never published
        try:
            await self.homeserver.put_state(
                ghost.matrix_room_id,
                ghost.user_id,
                CALL_MEMBER,
                call_member_state_key(ghost.user_id, ghost.device_id),
                {},
            )
            if self.rtc_member_events:
                await self.homeserver.send(
                    ghost.matrix_room_id,
                    ghost.user_id,
                    RTC_MEMBER,
                    rtc_member_left(ghost.device_id),
                )
            log.info("> MatrixRTC membership removed %s", ghost.label)
        except Exception as exc:
            log.warning(
                "x %s: removing the membership failed (%s); the delayed leave or its "
                "expiry removes it",
                ghost.label,
                exc,
            )
            return
        for delay_id in ghost.delay_ids:
            with contextlib.suppress(Exception):
                await self.homeserver.update_delayed(ghost.user_id, delay_id, "cancel")

    # -- lifecycle --

    async def close(self) -> None:
        """Remove every published membership (orderly shutdown)."""
        ghosts = list(self.ghosts.values())
        self.ghosts.clear()
        await asyncio.gather(*(self._leave(g) for g in ghosts), return_exceptions=True)
        await self.abandon()

    async def abandon(self) -> None:
        """Stop refreshing without removing anything, as a crash would: the
        homeserver's delayed leaves (or the expiry) remove the memberships."""
        self.ghosts.clear()
        self._present.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def wait_published(self, identity: str, timeout_s: float = 10.0) -> None:
        """For tests: until the membership of ``identity`` has been sent."""
        async with asyncio.timeout(timeout_s):
            while True:
                ghost = next((g for (_, i), g in self.ghosts.items() if i == identity), None)
                if ghost is not None and ghost.published:
                    return
                await asyncio.sleep(0.05)
