"""The classic-call bridge: routes ``m.call.*`` events from the appservice to one
:class:`~mediafed.matrix.call.MatrixCall` per ``call_id`` and starts a call for
each valid invite to the bridge bot or a ghost user.

An invite is answered when it is fresh (younger than its lifetime, less the
3 s matrix-js-sdk allows), its caller and callee are in the room, and the
caller has fewer than MAX_CALLS_PER_CALLER calls (else ``user_busy``); events
of a call are taken only from its caller (and, in version 1, its party).
Every call runs on a task of its own; a call's failure is logged and hung up,
never raised into the appservice, and never touches another call. The call
itself, its state machine and the VoIP details are in :mod:`mediafed.matrix.call`.

The other way (:meth:`MatrixCallBridge.place_call`): when a Rocket.Chat user
starts a call in a direct room linked to Matrix, the ghost that rings the
Matrix side (:mod:`mediafed.matrix.rtc_ghosts`) also places a classic call to
the room's Matrix user, if that user takes classic calls. With
``classic_invites="auto"`` (the default) that is a user who called the bridge
with ``m.call.invite`` in this room before, or who has never been a MatrixRTC
member of it: Element X and Element Web with Element Call leave
``call.member`` state in every room they called in and ring on the MSC4075
notification alone (Element X ignores ``m.call.invite``), while Element Web's
1:1 calls, nheko and other classic clients only ring on an invite.
``"always"`` and ``"never"`` decide without looking. The callee joining the
room's MatrixRTC call instead takes the invite back.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal, Protocol

from mediafed.matrix import voip
from mediafed.matrix.call import CallState, MatrixCall
from mediafed.matrix.membership import MEMBERSHIP_EVENT_TYPES

if TYPE_CHECKING:
    from mediafed.matrix.appservice import MatrixAppService
    from mediafed.matrix.registration import Registration
    from mediafed.media import RoomManager

log = logging.getLogger(__name__)

INVITE_GRACE_MS = 3000
"""matrix-js-sdk drops an invite older than ``lifetime`` minus 3 s; so do we."""
CONNECT_TIMEOUT_S = 30.0
"""Hang up with ``ice_timeout`` when the media connection is not up by then."""
NEGOTIATE_LIFETIME_MS = 30000
MAX_CALLS = 256
MAX_CALLS_PER_CALLER = 4
"""Calls one Matrix user may have with the bridge at once; more are answered busy."""
ENDED_CALLS_KEPT = 1024
INVITE_LIFETIME_MS = 60000
"""Lifetime of the invites the bridge sends (matrix-js-sdk's ``CALL_TIMEOUT_MS``)."""
CLASSIC_CALLERS_KEPT = 4096

ClassicInvites = Literal["auto", "always", "never"]
MatrixRtcUsed = Callable[[str, str], Awaitable[bool]]
"""``(room_id, user_id)`` -> whether the user has been a MatrixRTC member of the room."""


class MatrixSender(Protocol):
    """What a call needs from the homeserver (the appservice, or a test double)."""

    async def send(
        self, room_id: str, user_id: str, event_type: str, content: Mapping[str, Any]
    ) -> None:
        """Send a message event to ``room_id`` as ``user_id`` (the bot or a ghost)."""

    async def joined_members(self, room_id: str) -> Mapping[str, str] | None:
        """User id -> display name ("" if none) of the room's joined members, or
        None when no bridge user is in the room."""


class AppServiceSender:
    """:class:`MatrixSender` through mautrix's intent API of the appservice."""

    def __init__(self, service: MatrixAppService) -> None:
        self._service = service

    async def send(
        self, room_id: str, user_id: str, event_type: str, content: Mapping[str, Any]
    ) -> None:
        from mautrix.api import Method, Path
        from mautrix.types import UserID

        intent = self._service.intent
        if user_id != intent.mxid:
            intent = intent.user(UserID(user_id))
        txn_id = intent.api.get_txn_id()
        # The plain client call: mautrix's send_message_event first fetches power
        # levels and the create event; m.call.* events need the default level only.
        await intent.api.request(
            Method.PUT, Path.v3.rooms[room_id].send[event_type][txn_id], dict(content)
        )

    async def joined_members(self, room_id: str) -> Mapping[str, str] | None:
        from mautrix.errors import MatrixRequestError
        from mautrix.types import RoomID

        try:
            members = await self._service.intent.get_joined_members(RoomID(room_id))
        except MatrixRequestError as exc:
            log.info("- bridge not in room=%s (%s)", room_id, exc.errcode)
            return None
        return {str(user): member.displayname or "" for user, member in members.items()}

    async def matrixrtc_used(self, room_id: str, user_id: str) -> bool:
        """Whether the room's state holds a MatrixRTC membership ``user_id`` sent (a
        left one is ``{}`` and still there)."""
        from mautrix.api import Method, Path
        from mautrix.errors import MatrixRequestError

        try:
            state = await self._service.intent.api.request(Method.GET, Path.v3.rooms[room_id].state)
        except MatrixRequestError as exc:
            log.info("- room=%s state not readable (%s)", room_id, exc.errcode)
            return False
        return any(
            isinstance(event, dict)
            and event.get("type") in MEMBERSHIP_EVENT_TYPES
            and event.get("sender") == user_id
            for event in state
        )


OnCallStarted = Callable[[str, str], object]


class MatrixCallBridge:
    """The appservice's :class:`~mediafed.matrix.appservice.CallEventSink`: routes
    ``m.call.*`` events to calls and starts one for each valid invite."""

    def __init__(
        self,
        rooms: RoomManager,
        registration: Registration,
        sender: MatrixSender,
        *,
        on_call_started: OnCallStarted | None = None,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        max_calls: int = MAX_CALLS,
        negotiate_lifetime_ms: int = NEGOTIATE_LIFETIME_MS,
        classic_invites: ClassicInvites = "auto",
        invite_lifetime_ms: int = INVITE_LIFETIME_MS,
        matrixrtc_used: MatrixRtcUsed | None = None,
    ) -> None:
        self.rooms = rooms
        self.negotiate_lifetime_ms = negotiate_lifetime_ms
        self.registration = registration
        self.sender = sender
        self.on_call_started = on_call_started
        self.clock_ms = clock_ms
        self.connect_timeout_s = connect_timeout_s
        self.max_calls = max_calls
        self.classic_invites = classic_invites
        self.invite_lifetime_ms = invite_lifetime_ms
        self.matrixrtc_used = matrixrtc_used
        self.calls: dict[tuple[str, str], MatrixCall] = {}
        self._ended: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._classic_callers: OrderedDict[tuple[str, str], None] = OrderedDict()
        """(room, user) who called a bridge user with ``m.call.invite`` there."""

    async def on_call_event(
        self, room_id: str, sender: str, call_event: voip.CallEvent, raw: Mapping[str, Any]
    ) -> None:
        try:
            await self._route(room_id, sender, call_event, raw)
        except Exception:
            log.exception("x call event %s in room=%s failed", raw.get("event_id"), room_id)

    async def _route(
        self, room_id: str, sender: str, call_event: voip.CallEvent, raw: Mapping[str, Any]
    ) -> None:
        if self.registration.is_ours(sender):
            return  # our own events, echoed back by the homeserver
        key = (room_id, call_event.call_id)
        event_id = raw.get("event_id")
        if isinstance(call_event, voip.Invite):
            await self._on_invite(room_id, sender, call_event, raw)
            return
        call = self.calls.get(key)
        if call is None:
            log.debug("- %s for unknown call=%s room=%s", raw.get("type"), key[1], room_id)
            return
        if sender != call.caller or (
            call.remote_party is not None and call_event.party_id != call.remote_party
        ):
            log.info(
                "- %s from %s (party %s) is not from the caller of call=%s; ignored",
                raw.get("type"),
                sender,
                call_event.party_id,
                call.call_id,
            )
            return
        call.deliver(call_event, event_id if isinstance(event_id, str) else None)

    async def _on_invite(
        self, room_id: str, sender: str, invite: voip.Invite, raw: Mapping[str, Any]
    ) -> None:
        key = (room_id, invite.call_id)
        label = f"call={invite.call_id} room={room_id} caller={sender}"
        if key in self.calls or key in self._ended:
            log.info("- %s invite again; ignored", label)
            return
        if invite.invitee is not None and not self.registration.is_ours(invite.invitee):
            log.debug("- %s invites %s, not a bridge user", label, invite.invitee)
            return
        age_ms = _age_ms(raw, self.clock_ms())
        if age_ms is not None and age_ms > invite.lifetime_ms - INVITE_GRACE_MS:
            log.info(
                "- %s invite is %d ms old (lifetime %d); dropped", label, age_ms, invite.lifetime_ms
            )
            return
        members = await self.sender.joined_members(room_id)
        if members is None or sender not in members:
            log.info("- %s bridge or caller not in the room; invite ignored", label)
            return
        callee = self._callee(invite.invitee, sender, members)
        if callee is None:
            log.info("- %s no bridge user to answer in this room; invite ignored", label)
            return
        if key in self.calls or key in self._ended:  # arrived again while we looked
            return
        caller_name = members.get(sender) or sender
        call = MatrixCall(
            self,
            room_id=room_id,
            caller=sender,
            caller_name=caller_name,
            callee=callee,
            invite=invite,
        )
        mine = sum(1 for other in self.calls.values() if other.caller == sender)
        if len(self.calls) >= self.max_calls or mine >= MAX_CALLS_PER_CALLER:
            log.warning(
                "x %s busy: %d calls (%d of this caller); limits %d and %d",
                label,
                len(self.calls),
                mine,
                self.max_calls,
                MAX_CALLS_PER_CALLER,
            )
            with contextlib.suppress(Exception):
                await call._send(voip.HANGUP, {"reason": "user_busy"})
            self._remember_ended(key)
            return
        self.calls[key] = call
        self._classic_callers[(room_id, sender)] = None
        if len(self._classic_callers) > CLASSIC_CALLERS_KEPT:
            self._classic_callers.popitem(last=False)
        log.info("< m.call.invite %s to %s (version %s)", label, callee, call.version)
        call.start()

    # -- calls we place -----------------------------------------------------------
    async def takes_classic_calls(self, room_id: str, user_id: str) -> bool:
        """Whether to ring ``user_id`` with ``m.call.invite`` (see the module's text)."""
        if self.classic_invites != "auto":
            return self.classic_invites == "always"
        if (room_id, user_id) in self._classic_callers:
            return True
        if self.matrixrtc_used is None:
            return True
        return not await self.matrixrtc_used(room_id, user_id)

    async def place_call(
        self, mediafed_room: str, room_id: str, ghost: str, callee: str
    ) -> MatrixCall | None:
        """Have ``ghost`` call Matrix user ``callee`` of ``room_id`` into the call of
        ``mediafed_room``, if the user takes classic calls and is not in one with us
        in that room already; the call, or None."""
        label = f"room={room_id} callee={callee} ghost={ghost}"
        if not await self.takes_classic_calls(room_id, callee):
            log.info(
                "- %s rings by MatrixRTC alone (classic_invites=%s)", label, self.classic_invites
            )
            return None
        if any(
            call.room_id == room_id and call.caller == callee and call.state is not CallState.ENDED
            for call in self.calls.values()
        ):
            log.info("- %s is in a classic call with the bridge already; no invite", label)
            return None
        members = await self.sender.joined_members(room_id)
        if members is None or callee not in members or ghost not in members:
            log.info("- %s callee or ghost not in the room; no invite", label)
            return None
        if len(self.calls) >= self.max_calls:
            log.warning(
                "x %s not placed: %d calls (limit %d)", label, len(self.calls), self.max_calls
            )
            return None
        call = MatrixCall.placed(
            self,
            room_id=room_id,
            callee=callee,
            callee_name=members.get(callee) or callee,
            ghost=ghost,
            lifetime_ms=self.invite_lifetime_ms,
            mediafed_room=mediafed_room,
        )
        self.calls[(room_id, call.call_id)] = call
        log.info("> m.call.invite %s call=%s", label, call.call_id)
        call.start()
        return call

    def on_room_event(self, raw: Mapping[str, Any]) -> None:
        """Appservice listener: a callee who joins the room's MatrixRTC call (a
        membership with content) while our invite rings has answered that way."""
        if raw.get("type") not in MEMBERSHIP_EVENT_TYPES or not raw.get("content"):
            return
        room_id, sender = raw.get("room_id"), raw.get("sender")
        for call in list(self.calls.values()):
            if (
                call.outgoing
                and call.room_id == room_id
                and call.caller == sender
                and call.state in (CallState.PLACING, CallState.INVITING)
            ):
                call.joined_elsewhere()

    def _callee(self, invitee: str | None, caller: str, members: Mapping[str, str]) -> str | None:
        if invitee is not None:
            return invitee if invitee in members else None
        # No invitee (older clients): the other member of a 1:1 room, else the bot.
        others = [user for user in members if user != caller]
        if len(others) == 1 and self.registration.is_ours(others[0]):
            return others[0]
        bot = self.registration.bot_user_id
        return bot if bot in members else None

    def call_started(self, call: MatrixCall) -> None:
        """Tell the hook, once per Matrix room while classic calls go on there."""
        if self.on_call_started is None:
            return
        if any(
            other is not call
            and other.room_id == call.room_id
            and other.state is not CallState.ENDED
            for other in self.calls.values()
        ):
            return
        try:
            self.on_call_started(call.mediafed_room, call.caller_name)
        except Exception:
            log.exception("x on_call_started hook failed for %s", call.label)

    def forget(self, call: MatrixCall) -> None:
        key = (call.room_id, call.call_id)
        if self.calls.get(key) is call:
            del self.calls[key]
        self._remember_ended(key)

    def _remember_ended(self, key: tuple[str, str]) -> None:
        self._ended[key] = None
        if len(self._ended) > ENDED_CALLS_KEPT:
            self._ended.popitem(last=False)

    async def close(self) -> None:
        """Hang up every call (the bridge is shutting down)."""
        for call in list(self.calls.values()):
            await call.hangup("user_hangup")


def _age_ms(raw: Mapping[str, Any], now_ms: int) -> int | None:
    unsigned = raw.get("unsigned")
    if isinstance(unsigned, dict):
        age = unsigned.get("age")
        if isinstance(age, int) and not isinstance(age, bool):
            return age
    origin = raw.get("origin_server_ts")
    if isinstance(origin, int) and not isinstance(origin, bool):
        return now_ms - origin
    return None
