"""The call service: calls of external rooms (Rocket.Chat, Matrix), their
participants, join links, and the events that leave mediafed about them.

A call belongs to one mediafed room; an external room (``rocketchat:<rid>`` or a
Matrix room id of any room version, ``!opaque:server`` or ``!hash``) resolves to
its room through the bridge table, so a Rocket.Chat room and the Matrix room
linked to it share one call. The call of a Matrix room, or of a Rocket.Chat room
linked to one, runs in that Matrix room's MatrixRTC room
(:func:`mediafed.matrix.focus.room_call_alias`), where its Element Call users
and classic callers are. Events of the room core (participant joined/left, room
finished) reach the caller as signed webhooks (:mod:`.webhooks`). A call started
on the Matrix side starts Rocket.Chat's own video conference in the linked
Rocket.Chat room through :mod:`.client` (``video-conference.start``: its card,
ringing in a direct room); Rocket.Chat then asks the mediafed App's provider for
the call, and the App's ``POST /api/v1/calls`` for that room finds this call, so
Rocket.Chat users join the same room. When Rocket.Chat refuses, a text notice
with a join link is posted instead. The HTTP routes over it are :mod:`.handlers`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlencode

from aiohttp import web

from mediafed.errors import MediafedError
from mediafed.matrix.focus import room_call_alias
from mediafed.rocketchat.client import RocketChatClient
from mediafed.rocketchat.config import RocketChatConfig
from mediafed.rocketchat.models import JOIN_TTL_DEFAULT_S, CallError, CreateCall
from mediafed.rocketchat.rooms import external_kind, room_for_external
from mediafed.rocketchat.webhooks import WebhookSender
from mediafed.signal.livekit.tokens import HOME_CLAIM, VideoGrant, mint_token
from mediafed.store import Bridge, CallRecord, Store

log = logging.getLogger(__name__)

T = TypeVar("T")

DB_FILE = "mediafed.sqlite3"
"""The node's database (calls, bridges, webhook deliveries) under its data directory."""

PROVIDER_NAME = "mediafed"
"""The name of the mediafed App's video-conference provider
(``rocketchat-app/src/videoConfProvider.ts``)."""


@dataclass(frozen=True, slots=True)
class Card:
    """A Rocket.Chat video conference mediafed started for a call begun on the Matrix side."""

    rocketchat_room: str
    rocketchat_call_id: str
    direct: bool


EXTERNAL_IDENTITY = "mediafed.external_identity"
"""Participant attribute: the call API caller's identity of a user who joined
under another (a Matrix ghost's device, :meth:`CallService.livekit_identity`)."""


class CallService:
    """Calls, their participants and the events that leave mediafed about them.

    The room core calls :meth:`participant_joined`, :meth:`participant_left`
    and :meth:`room_finished`; the Matrix front-end calls
    :meth:`call_started_elsewhere`. Those return at once: the work (database,
    webhooks, Rocket.Chat notice) runs on background tasks, returned for
    callers who want to wait (tests).
    """

    def __init__(
        self,
        store: Store,
        webhooks: WebhookSender,
        *,
        keys: Mapping[str, str],
        public_url: str = "",
        local_url: str = "http://127.0.0.1:7880",
        rocketchat: RocketChatClient | None = None,
        rocketchat_config: RocketChatConfig | None = None,
    ) -> None:
        self.keys = keys
        """API key -> secret: join tokens are signed with the key that made the call."""
        self._public_url = public_url
        self._local_url = local_url
        self.store = store
        self.webhooks = webhooks
        self.rocketchat = rocketchat
        self.rocketchat_config = rocketchat_config or RocketChatConfig()
        self.participants: dict[str, dict[str, str]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._room_locks: dict[str, asyncio.Lock] = {}
        self.cards: dict[str, Card] = {}
        """mediafed room -> the Rocket.Chat video conference started for its call."""
        self.started_on_matrix: dict[str, str] = {}
        """mediafed room -> the id of its active call if the Matrix side opened it
        (:meth:`call_started_elsewhere`); see :meth:`rocketchat_started_call`."""
        self.on_call_ended: Callable[[str], Coroutine[Any, Any, object]] | None = None
        """Closes the media room of an ended call (set by the composition root)."""
        self.ghost_identity: Callable[[str], str] | None = None
        """User name -> the LiveKit identity of its Matrix ghost's device
        (``@rc_<name>:<server>:<DEVICE>``), for calls linked to a Matrix room, where
        the appservice shows them as MatrixRTC members (set by the composition root
        when the Matrix appservice runs; :mod:`mediafed.matrix.rtc_ghosts`)."""

    # -- helpers --------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, T], what: str) -> asyncio.Task[T]:
        task = asyncio.create_task(coro, name=what)
        self._tasks.add(task)

        def done(finished: asyncio.Task[T]) -> None:
            self._tasks.discard(finished)
            if not finished.cancelled() and finished.exception() is not None:
                log.error("x %s failed", what, exc_info=finished.exception())

        task.add_done_callback(done)
        return task

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def public_url(self, request: web.Request | None = None) -> str:
        """The node's base URL in links: the configured public URL, else where
        ``request`` came in, else the local address of the HTTP port."""
        if self._public_url:
            return self._public_url.rstrip("/")
        if request is not None:
            return str(request.url.origin())
        return self._local_url

    def _signing_key(self, call: CallRecord) -> tuple[str, str]:
        if call.api_key in self.keys:
            return call.api_key, self.keys[call.api_key]
        if not self.keys:
            raise CallError("no API keys are configured; add a [keys] entry", status=503)
        key = next(iter(self.keys))
        return key, self.keys[key]

    async def resolve_room(self, external_room: str) -> str:
        """The mediafed room whose call belongs to ``external_room``.

        A bridge with a Matrix room runs its calls in that Matrix room's MatrixRTC
        room, so Rocket.Chat users meet its Element Call users and classic callers;
        a bridge of a Rocket.Chat room alone, in the bridge's own room."""
        if external_kind(external_room) == "rocketchat":
            rid = external_room.partition(":")[2]
            bridge = await self.store.find_bridge(rocketchat_room=rid)
        else:
            bridge = await self.store.find_bridge(matrix_room=external_room)
        if bridge is None:
            return room_for_external(external_room)
        if bridge.matrix_room is not None:
            return room_call_alias(bridge.matrix_room)
        return bridge.mediafed_room

    async def bridge_of_room(self, room: str) -> Bridge | None:
        """The bridge whose calls run in mediafed room ``room`` (see :meth:`resolve_room`)."""
        for bridge in await self.store.list_bridges():
            if bridge.matrix_room is not None:
                if room_call_alias(bridge.matrix_room) == room:
                    return bridge
            elif bridge.mediafed_room == room:
                return bridge
        return None

    async def matrix_room_of(self, room: str) -> str | None:
        """The Matrix room whose call runs in mediafed room ``room``: its bridge's, or
        the Matrix room an active call was opened for; None if there is none."""
        bridge = await self.bridge_of_room(room)
        if bridge is not None and bridge.matrix_room is not None:
            return bridge.matrix_room
        call = await self.store.active_call(room)
        if (
            call is not None
            and external_kind(call.external_room) == "matrix"
            and room_call_alias(call.external_room) == room
        ):
            return call.external_room
        return None

    async def rocketchat_started_call(self, room: str) -> str | None:
        """The id of ``room``'s active call if Rocket.Chat started it (the App's
        ``POST /api/v1/calls`` for a Rocket.Chat video conference made it), else None:
        the Matrix side rings for its own calls."""
        call = await self.store.active_call(room)
        if call is None or not call.external_call_id:
            return None
        if self.started_on_matrix.get(room) == call.call_id:
            return None
        return call.call_id

    async def livekit_identity(self, call: CallRecord, identity: str) -> str:
        """The identity a user joins ``call`` with: in a call linked to a Matrix room,
        its ghost's device (Element Call maps a participant to the MatrixRTC member
        ``sender:device_id``), else ``identity`` itself."""
        if self.ghost_identity is None or await self.matrix_room_of(call.room) is None:
            return identity
        return self.ghost_identity(identity)

    def call_json(self, call: CallRecord, request: web.Request | None = None) -> dict[str, Any]:
        return {
            "call_id": call.call_id,
            "room": call.room,
            "title": call.title,
            "external_room": call.external_room,
            "external_call_id": call.external_call_id,
            "status": call.status,
            "created_at": call.created_at,
            "ended_at": call.ended_at,
            "join_url": self.invite_url(call, request),
            "participants": [
                {"identity": identity, "name": name}
                for identity, name in sorted(self.participants.get(call.room, {}).items())
            ]
            if call.status == "active"
            else [],
        }

    def invite_url(self, call: CallRecord, request: web.Request | None = None) -> str:
        """A link anyone who has it can open to join as a guest while the call lasts."""
        query = urlencode({"code": call.invite_code})
        return f"{self.public_url(request)}/api/v1/calls/{call.call_id}/invite?{query}"

    # -- calls ----------------------------------------------------------------

    async def create_call(
        self, body: CreateCall, api_key: str, *, now: float | None = None
    ) -> tuple[CallRecord, bool]:
        """The active call of the external room's mediafed room, made if needed."""
        room = await self.resolve_room(body.external_room)
        lock = self._room_locks.setdefault(room, asyncio.Lock())
        async with lock:
            existing = await self.store.active_call(room)
            if existing is not None:
                if body.external_call_id and body.external_call_id != existing.external_call_id:
                    # A newer call of the same room (e.g. Rocket.Chat started a new one
                    # while Matrix users kept this one going): send its events there.
                    await self.store.update_call_target(
                        existing.call_id,
                        external_call_id=body.external_call_id,
                        webhook_url=body.webhook_url or existing.webhook_url,
                        title=body.title or existing.title,
                    )
                    existing = await self.store.get_call(existing.call_id) or existing
                return existing, False
            record = CallRecord(
                call_id=f"CL_{uuid.uuid4().hex[:16]}",
                room=room,
                external_room=body.external_room,
                external_call_id=body.external_call_id,
                title=body.title or room,
                webhook_url=body.webhook_url,
                api_key=api_key,
                invite_code=secrets.token_urlsafe(18),
                status="active",
                created_at=time.time() if now is None else now,
                ended_at=None,
            )
            stored = await self.store.insert_call(record)
        created = stored.call_id == record.call_id
        if created:
            log.info(
                "- call %s created room=%s external=%s", stored.call_id, room, body.external_room
            )
        return stored, created

    async def get_call(self, call_id: str) -> CallRecord:
        call = await self.store.get_call(call_id)
        if call is None:
            raise CallError(f"no call {call_id!r}; list calls with GET /api/v1/calls", 404)
        return call

    def join_token(
        self,
        call: CallRecord,
        identity: str,
        name: str,
        *,
        ttl_s: int = JOIN_TTL_DEFAULT_S,
        external_identity: str = "",
    ) -> str:
        """``external_identity``: the caller's name for the user when ``identity`` is
        another (a Matrix ghost's); webhooks report it."""
        key, secret = self._signing_key(call)
        attributes = {"mediafed.call_id": call.call_id}
        if external_identity and external_identity != identity:
            attributes[EXTERNAL_IDENTITY] = external_identity
        return mint_token(
            key,
            secret,
            identity=identity,
            name=name,
            video=VideoGrant(room_join=True, room=call.room),
            attributes=attributes,
            ttl_s=ttl_s,
            extra_claims={HOME_CLAIM: True},
        )

    def join_url(self, token: str, *, mic: bool, cam: bool, request: web.Request | None) -> str:
        query = urlencode({"token": token, "mic": int(mic), "cam": int(cam)})
        return f"{self.public_url(request)}/?{query}"

    async def end_call(self, call_id: str, *, reason: str = "ended") -> CallRecord:
        call = await self.get_call(call_id)
        if await self.store.end_call(call_id):
            self.participants.pop(call.room, None)
            self.started_on_matrix.pop(call.room, None)
            log.info("- call %s ended room=%s (%s)", call_id, call.room, reason)
            self._webhook(call, "call_ended")
            card = self.cards.pop(call.room, None)
            if card is not None and card.rocketchat_call_id == call.external_call_id:
                self._spawn(self._end_card(call, card), f"end card {call.room}")
            if self.on_call_ended is not None:
                self._spawn(self.on_call_ended(call.room), f"close room {call.room}")
        return await self.get_call(call_id)

    def _webhook(self, call: CallRecord, event: str, **extra: str) -> None:
        if not call.webhook_url:
            return
        self.webhooks.send(
            call.webhook_url,
            call.api_key,
            {
                "event": event,
                "call_id": call.call_id,
                "external_call_id": call.external_call_id,
                "room": call.room,
                "timestamp": int(time.time()),
                **extra,
            },
        )

    # -- hooks for the room core and the Matrix front-end ----------------------

    def participant_joined(self, room: str, identity: str, name: str = "") -> asyncio.Task[None]:
        return self._spawn(self._joined(room, identity, name), f"participant_joined {room}")

    async def _joined(self, room: str, identity: str, name: str) -> None:
        call = await self.store.active_call(room)
        if call is None:
            log.debug("- participant %s joined room=%s without a call", identity, room)
            return
        self.participants.setdefault(room, {})[identity] = name
        self._webhook(call, "participant_joined", identity=identity, name=name)

    def participant_left(self, room: str, identity: str, name: str = "") -> asyncio.Task[None]:
        return self._spawn(self._left(room, identity, name), f"participant_left {room}")

    async def _left(self, room: str, identity: str, name: str) -> None:
        call = await self.store.active_call(room)
        if call is None:
            return
        known = self.participants.get(room, {}).pop(identity, None)
        self._webhook(call, "participant_left", identity=identity, name=name or known or "")

    def room_finished(self, room: str) -> asyncio.Task[None]:
        return self._spawn(self._finished(room), f"room_finished {room}")

    async def _finished(self, room: str) -> None:
        call = await self.store.active_call(room)
        self.participants.pop(room, None)
        if call is not None:
            await self.end_call(call.call_id, reason="room finished")

    def call_started_elsewhere(self, room: str, starter_name: str) -> asyncio.Task[bool]:
        """Announce a call started on the Matrix side in the linked Rocket.Chat room.

        The task's result says whether the notice was posted; failures are
        retried with backoff and logged, never raised into the caller.
        """
        return self._spawn(self._announce(room, starter_name), f"announce call {room}")

    def call_ended_elsewhere(self, room: str) -> asyncio.Task[None]:
        """The Matrix side's call of ``room`` ended (its last MatrixRTC membership went):
        end the call if nobody is connected to the room; otherwise it ends when
        the last one leaves (:meth:`room_finished`)."""
        return self._spawn(self._ended_elsewhere(room), f"call ended elsewhere {room}")

    async def _ended_elsewhere(self, room: str) -> None:
        call = await self.store.active_call(room)
        if call is None or self.participants.get(room):
            return
        await self.end_call(call.call_id, reason="the Matrix call ended")

    async def _announce(self, room: str, starter_name: str) -> bool:
        bridge = await self.bridge_of_room(room)
        if bridge is None or bridge.rocketchat_room is None:
            log.debug("- room=%s has no Rocket.Chat room linked; no notice", room)
            return False
        call = await self.store.active_call(room)
        if call is None:
            if not self.keys:
                log.error("x room=%s: no API keys configured; cannot open a call", room)
                return False
            external = bridge.matrix_room or f"rocketchat:{bridge.rocketchat_room}"
            call, created = await self.create_call(
                CreateCall(external_room=external), next(iter(self.keys))
            )
            if created:
                self.started_on_matrix[room] = call.call_id
        if self.rocketchat is None:
            log.warning("x room=%s: Rocket.Chat is not configured; notice not posted", room)
            return False
        if call.external_call_id:
            log.info(
                "- room=%s: Rocket.Chat call %s already shows this call; nothing to start",
                room,
                call.external_call_id,
            )
            return True
        if await self._start_card(room, bridge.rocketchat_room, call, starter_name):
            return True
        text = f"{starter_name} started a call — Join: {self.invite_url(call)}"
        attempts = self.rocketchat_config.notice_attempts
        for attempt in range(1, attempts + 1):
            try:
                await self.rocketchat.post_message(bridge.rocketchat_room, text)
            except MediafedError as exc:
                if attempt == attempts:
                    log.error(
                        "x call notice for room=%s to Rocket.Chat room %s failed after "
                        "%d attempts: %s",
                        room,
                        bridge.rocketchat_room,
                        attempts,
                        exc,
                    )
                    return False
                delay = self.rocketchat_config.notice_backoff_s * 2 ** (attempt - 1)
                log.warning(
                    "x call notice for room=%s failed (%s); retry in %.1fs", room, exc, delay
                )
                await asyncio.sleep(delay)
            else:
                log.info(
                    "> call notice room=%s to Rocket.Chat room %s", room, bridge.rocketchat_room
                )
                return True
        return False

    async def _start_card(
        self, room: str, rocketchat_room: str, call: CallRecord, starter_name: str
    ) -> bool:
        """Start Rocket.Chat's own video conference for ``call``; False (logged) when
        Rocket.Chat refuses or would not run it on mediafed."""
        assert self.rocketchat is not None
        try:
            provider = (await self.rocketchat.video_conference_capabilities()).get("providerName")
            if provider != PROVIDER_NAME:
                log.warning(
                    "x room=%s: Rocket.Chat's default video-conference provider is %r, not "
                    "%r; posting a text notice (install the mediafed App and make it the "
                    "default provider under Administration > Settings > Video Conference)",
                    room,
                    provider,
                    PROVIDER_NAME,
                )
                return False
            direct = (await self.rocketchat.room_info(rocketchat_room)).get("t") == "d"
            # Rocket.Chat asks the App's provider for the call before it answers; the
            # App's POST /api/v1/calls for this room finds `call` and takes the new id.
            started = await self.rocketchat.start_video_conference(
                rocketchat_room, title=f"Call from {starter_name}", allow_ringing=direct
            )
        except MediafedError as exc:
            log.warning(
                "x room=%s: Rocket.Chat refused video-conference.start in %s (%s); posting a "
                "text notice instead",
                room,
                rocketchat_room,
                exc,
            )
            return False
        card = Card(rocketchat_room, str(started["callId"]), direct)
        current = await self.store.active_call(room)
        if current is None or current.external_call_id != card.rocketchat_call_id:
            log.warning(
                "x room=%s: Rocket.Chat call %s did not reach mediafed call %s through the "
                "App; check the App's room links",
                room,
                card.rocketchat_call_id,
                call.call_id,
            )
        else:
            self.cards[room] = card
        log.info(
            "> video conference room=%s Rocket.Chat room %s call %s (%s)",
            room,
            rocketchat_room,
            card.rocketchat_call_id,
            "ringing" if direct else "card",
        )
        return True

    async def _end_card(self, call: CallRecord, card: Card) -> None:
        """End the card of an ended call. The App ends it on the ``call_ended`` webhook;
        without a webhook URL, a direct call that still rings is cancelled here."""
        if call.webhook_url:
            return
        if not card.direct or self.rocketchat is None:
            log.warning(
                "x room=%s: Rocket.Chat call %s has no webhook URL to end it by; set "
                "Site_Url in Rocket.Chat so the App can give one",
                call.room,
                card.rocketchat_call_id,
            )
            return
        try:
            await self.rocketchat.cancel_video_conference(card.rocketchat_call_id)
        except MediafedError as exc:
            log.info(
                "- room=%s: Rocket.Chat call %s not cancelled (%s)",
                call.room,
                card.rocketchat_call_id,
                exc,
            )
        else:
            log.info(
                "> video-conference.cancel room=%s Rocket.Chat call %s",
                call.room,
                card.rocketchat_call_id,
            )
