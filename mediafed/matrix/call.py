"""One classic Matrix call (``m.call.*``) answered by the bridge: a state machine
over a single-connection session in the mediafed room of its Matrix room.

Matrix spec, client-server API "Voice over IP" (stable 1:1 VoIP, version
``"1"`` and ``0``; event schemas ``data/event-schemas/schema/m.call.*.yaml``):
the caller's ``m.call.invite`` is answered with ``m.call.answer`` (our
``party_id``, ``sdp_stream_metadata`` of what we send), followed by
``m.call.candidates`` ending with the empty end-of-candidates entry.
``m.call.select_answer`` naming another party ends our side quietly ("answered
elsewhere"); ``m.call.hangup``/``m.call.reject`` end it; a media connection
that fails or never comes up is hung up with ``ice_failed``/``ice_timeout``, a
mediafed room that ends with ``user_hangup``.

Streams (MSC3077 ``sdp_stream_metadata``): the caller's ``m.screenshare``
tracks are announced as screen share before the offer is applied, the rest
are camera and microphone; the other participants' tracks go back on the
same peer connection, renegotiated with ``m.call.negotiate``. The callee is
the polite party (spec, "Glare"): when the caller offers while our own offer
is outstanding, ours is dropped, theirs is answered and the media core
offers again afterwards. Version 0 has no ``m.call.negotiate``, so a v0
caller only receives what fits in the first answer.

The bridge also places calls (:meth:`MatrixCall.placed`): a Rocket.Chat user's
ghost calls the Matrix user of a direct room. Then we are the caller: our
``m.call.invite`` carries an offer from a session joined to the call's mediafed
room (:meth:`~mediafed.media.Session.offer_connection`), the first
``m.call.answer`` is taken (``m.call.select_answer`` names its party, so the
callee's other devices stop ringing) and joins the Matrix user's media to the
room. An invite nobody answers within its lifetime is hung up with
``invite_timeout``; one the callee rejects ends quietly; a room in which nobody
else is left (the Rocket.Chat user gave up, or hung up later) hangs the call up.

A call answers (or invites) first, then takes its inputs (the caller's events, the media
core's news) one at a time from a queue, through :data:`TRANSITIONS`: one table
of (state, input) -> transition. The bridge that routes events to calls is
:mod:`mediafed.matrix.calls`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import secrets
import string
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mediafed.errors import MediafedError
from mediafed.matrix import voip
from mediafed.matrix.focus import LEGACY_SLOT_ID, room_call_alias
from mediafed.media import TrackKind, TrackSource, events
from mediafed.wire.sdp import parse_sdp

if TYPE_CHECKING:
    from mediafed.matrix.calls import MatrixCallBridge
    from mediafed.media import Session

log = logging.getLogger(__name__)

CALL_SLOT = LEGACY_SLOT_ID
"""The MatrixRTC slot whose LiveKit room classic callers join, so Element Call
users and classic callers of one Matrix room meet in one mediafed room."""
PARTY_ID_LENGTH = 8
MAX_QUEUED_EVENTS = 128
"""Events waiting for one call; more are dropped (a flood must not grow memory)."""
MAX_REMOTE_CANDIDATES = 256
"""Remote candidates honoured per call (ICE-lite needs none); the rest are ignored."""
MAX_SEEN_EVENTS = 512
CAPABILITIES = {"m.call.transferee": False, "m.call.dtmf": False}
_PARTY_ALPHABET = string.ascii_letters + string.digits


def new_party_id() -> str:
    """Our ``party_id``: a few alphanumerics, as matrix-js-sdk's device ids are."""
    return "".join(secrets.choice(_PARTY_ALPHABET) for _ in range(PARTY_ID_LENGTH))


def mediafed_room_for(matrix_room_id: str) -> str:
    """The mediafed room of a Matrix room: the one the MatrixRTC focus hands out."""
    return room_call_alias(matrix_room_id)


class CallSendError(MediafedError):
    """The homeserver did not take an event a call had to send; that call ends."""


class CallState(enum.Enum):
    ANSWERING = "answering"
    PLACING = "placing"
    """Ours: joining the room and making the offer of our invite."""
    INVITING = "inviting"
    """Ours: the invite is out; the callee's devices ring."""
    ANSWERED = "answered"
    CONNECTED = "connected"
    ENDED = "ended"


@dataclass(frozen=True, slots=True)
class _Remote:
    event: voip.CallEvent


@dataclass(frozen=True, slots=True)
class _LocalOffer:
    sdp: str
    offer_id: int


@dataclass(frozen=True, slots=True)
class _MetadataCheck:
    pass


@dataclass(frozen=True, slots=True)
class _SessionClosed:
    reason: str


@dataclass(frozen=True, slots=True)
class _ConnectTimeout:
    pass


@dataclass(frozen=True, slots=True)
class _MediaConnected:
    """The media core says the caller's connection is up."""


@dataclass(frozen=True, slots=True)
class _OfferExpired:
    offer_id: int


@dataclass(frozen=True, slots=True)
class _InviteExpired:
    """Our invite's lifetime ran out unanswered."""


@dataclass(frozen=True, slots=True)
class _NobodyElse:
    """A call we placed: nobody else is left in the mediafed room."""


@dataclass(frozen=True, slots=True)
class _JoinedElsewhere:
    """A call we placed: the callee joined the room's MatrixRTC call instead."""


_Item = (
    _Remote
    | _LocalOffer
    | _MetadataCheck
    | _SessionClosed
    | _ConnectTimeout
    | _MediaConnected
    | _OfferExpired
    | _InviteExpired
    | _NobodyElse
    | _JoinedElsewhere
)
"""What a call's task takes from its queue: the caller's events (``_Remote``) and
the media core's news; ``_answer`` runs before any of them."""


@dataclass(frozen=True, slots=True)
class OfferedTrack:
    """One track the caller sends, from its offer's ``a=msid`` lines."""

    track_id: str
    stream_id: str
    kind: TrackKind


def offered_tracks(sdp: str) -> list[OfferedTrack]:
    """The tracks an offer sends (msid stream and track ids per m-section)."""
    result = []
    for media in parse_sdp(sdp).media:
        if media.kind not in ("audio", "video") or media.port == 0:
            continue
        if media.direction not in ("sendrecv", "sendonly"):
            continue
        stream, track = "", ""
        if media.msid:
            stream, track = media.msid[0]
        else:
            for attrs in media.ssrcs.values():
                if attrs.get("msid"):
                    stream, _, track = attrs["msid"].partition(" ")
                    break
        if track:
            result.append(OfferedTrack(track, stream, TrackKind(media.kind)))
    return result


def hangup_reason_for(session_reason: str) -> str:
    """The ``m.call.hangup`` reason when the media core ends a session."""
    if "failed" in session_reason:
        return "ice_failed"
    return "user_hangup"


class MatrixCall:
    """One classic call between a Matrix user and a bridge user (the bot or a ghost),
    answered by the bridge (``invite``) or placed by it (:meth:`placed`); also the
    session's listener.

    ``caller`` is always the Matrix user at the other end and ``callee`` the bridge
    user we send as, whichever side called."""

    def __init__(
        self,
        bridge: MatrixCallBridge,
        *,
        room_id: str,
        caller: str,
        caller_name: str,
        callee: str,
        invite: voip.Invite | None,
        call_id: str = "",
        lifetime_ms: int = 0,
        mediafed_room: str = "",
    ) -> None:
        self.bridge = bridge
        self.room_id = room_id
        self.caller = caller
        self.caller_name = caller_name
        self.callee = callee
        self.invite = invite
        self.outgoing = invite is None
        """We placed this call (our ghost invites ``caller``)."""
        self.call_id = invite.call_id if invite is not None else call_id
        self.lifetime_ms = lifetime_ms
        self.party_id = new_party_id()
        self.version: str | int = 0 if invite is not None and invite.version == 0 else "1"
        self.remote_party: str | None = (
            invite.party_id if invite is not None and invite.version == 1 else None
        )
        """The party whose events the call takes (None: any of ``caller``'s, as
        version 0 has no parties and nobody has answered our invite yet)."""
        self.mediafed_room = mediafed_room or mediafed_room_for(room_id)
        party = invite.party_id or invite.call_id if invite is not None else self.call_id
        self.identity = f"{caller}:{party}"
        role = "callee" if self.outgoing else "caller"
        self.label = f"call={self.call_id} room={room_id} {role}={caller}"
        self.state = CallState.PLACING if self.outgoing else CallState.ANSWERING
        self._invited = False
        self.end_reason = ""
        self.session: Session | None = None
        self.remote_candidates = 0
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._remote_queued = 0
        self._seen_events: OrderedDict[str, None] = OrderedDict()
        self._outstanding_offer: int | None = None
        self._last_metadata: dict[str, dict[str, object]] = {}
        self._stream_of_track: dict[str, str] = {}
        self._ended_by_caller = False
        self._candidates_warned = False
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._cancel_reason: tuple[str, str | None] = ("cancelled", None)
        self.done = asyncio.get_running_loop().create_future()

    @classmethod
    def placed(
        cls,
        bridge: MatrixCallBridge,
        *,
        room_id: str,
        callee: str,
        callee_name: str,
        ghost: str,
        lifetime_ms: int,
        mediafed_room: str = "",
    ) -> MatrixCall:
        """A call ``ghost`` places to Matrix user ``callee`` (started with :meth:`start`)."""
        return cls(
            bridge,
            room_id=room_id,
            caller=callee,
            caller_name=callee_name,
            callee=ghost,
            invite=None,
            call_id=f"mf{secrets.token_hex(8)}",
            lifetime_ms=lifetime_ms,
            mediafed_room=mediafed_room,
        )

    # -- state ------------------------------------------------------------------
    def _set_state(self, state: CallState) -> None:
        if state is not self.state:
            log.info("- %s %s -> %s", self.label, self.state.value, state.value)
            self.state = state

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"matrix-call-{self.call_id}"
        )

    # -- input: from the bridge and the media core (both on the event loop) ---
    def deliver(self, event: voip.CallEvent, event_id: str | None) -> None:
        if self.state is CallState.ENDED:
            return
        if event_id:
            if event_id in self._seen_events:
                log.info("- %s duplicate event %s ignored", self.label, event_id)
                return
            self._seen_events[event_id] = None
            if len(self._seen_events) > MAX_SEEN_EVENTS:
                self._seen_events.popitem(last=False)
        if isinstance(event, voip.Hangup | voip.Reject):
            # Seen at once, so an answer still being prepared is never sent.
            self._ended_by_caller = True
        if self._remote_queued >= MAX_QUEUED_EVENTS and not self._ended_by_caller:
            log.warning(
                "x %s more than %d events waiting; dropped %s",
                self.label,
                MAX_QUEUED_EVENTS,
                type(event).__name__,
            )
            return
        self._remote_queued += 1
        self._queue.put_nowait(_Remote(event))

    def joined_elsewhere(self) -> None:
        """The callee joined the room's MatrixRTC call (Element Call) instead."""
        if self.outgoing and self.state is not CallState.ENDED:
            self._queue.put_nowait(_JoinedElsewhere())

    def on_room_event(self, event: events.RoomEvent) -> None:
        session = self.session
        match event:
            case events.SessionClosed(reason=reason):
                self._queue.put_nowait(_SessionClosed(reason))
            case events.ParticipantLeft() if (
                self.outgoing and session is not None and self._nobody_else()
            ):
                self._queue.put_nowait(_NobodyElse())
            case events.ParticipantUpdated(participant=participant) if (
                session is not None
                and participant.sid == session.sid
                and participant.state == "active"
                and self.state is CallState.ANSWERED
            ):
                self._queue.put_nowait(_MediaConnected())
            case events.TrackMuted(track=track) if (
                session is not None and track.participant_sid != session.sid
            ):
                self._queue.put_nowait(_MetadataCheck())
            case _:
                pass

    def on_subscriber_offer(self, sdp: str, offer_id: int) -> None:
        self._queue.put_nowait(_LocalOffer(sdp, offer_id))

    def on_local_candidate(
        self, target: str, candidate: str, sdp_mid: str, sdp_mline_index: int
    ) -> None:
        # ICE-lite: our candidates are in the SDP and sent right after the answer.
        pass

    def _nobody_else(self) -> bool:
        session = self.session
        return session is not None and all(
            p.identity == session.identity for p in session.room.participants()
        )

    # -- the call's task ------------------------------------------------------
    async def _run(self) -> None:
        try:
            await (self._place() if self.outgoing else self._answer())
            while self.state is not CallState.ENDED:
                item = await self._queue.get()
                if isinstance(item, _Remote):
                    self._remote_queued -= 1
                await self._handle(item)
        except asyncio.CancelledError:
            await self._end(*self._cancel_reason)
            raise
        except MediafedError as exc:
            log.warning("x %s failed: %s", self.label, exc)
            await self._end(f"failed: {exc}", hangup="unknown_error")
        except Exception:
            log.exception("x %s failed", self.label)
            await self._end("internal error", hangup="unknown_error")
        finally:
            if self._timer is not None:
                self._timer.cancel()
            self.bridge.forget(self)
            if not self.done.done():
                self.done.set_result(self.end_reason)

    async def _place(self) -> None:
        """Join the room, offer, invite the callee; then wait for the answer."""
        room = self.bridge.rooms.get_or_create(self.mediafed_room)
        self.session = session = await room.join(
            self.identity, name=self.caller_name, listener=self, single_connection=True
        )
        if self._nobody_else():
            await self._end("nobody else in the call to ring for", hangup=None)
            return
        offer_sdp = session.offer_connection()
        self._last_metadata = session.stream_metadata()
        self._invited = True
        await self._send(
            voip.INVITE,
            {
                "offer": {"type": "offer", "sdp": offer_sdp},
                "lifetime": self.lifetime_ms,
                "invitee": self.caller,
                "sdp_stream_metadata": self._last_metadata,
                "capabilities": CAPABILITIES,
            },
        )
        self._set_state(CallState.INVITING)
        self._timer = asyncio.get_running_loop().call_later(
            self.lifetime_ms / 1000, self._queue.put_nowait, _InviteExpired()
        )
        await self._send_candidates()

    async def _answer(self) -> None:
        invite = self.invite
        assert invite is not None
        tracks = offered_tracks(invite.offer.sdp)
        room = self.bridge.rooms.get_or_create(self.mediafed_room)
        self.session = session = await room.join(
            self.identity, name=self.caller_name, listener=self, single_connection=True
        )
        self._announce(tracks, invite.stream_metadata)
        if self._ended_by_caller:
            await self._drain_before_answer()
            return
        answer_sdp = await session.answer_offer(invite.offer.sdp)
        self._apply_mutes(invite.stream_metadata)
        if self._ended_by_caller:  # hung up while we prepared the answer
            await self._drain_before_answer()
            return
        self._last_metadata = session.stream_metadata()
        await self._send(
            voip.ANSWER,
            {
                "answer": {"type": "answer", "sdp": answer_sdp},
                "sdp_stream_metadata": self._last_metadata,
                "capabilities": CAPABILITIES,
            },
        )
        self._answered(session)
        await self._send_candidates()
        self.bridge.call_started(self)

    async def _drain_before_answer(self) -> None:
        # The caller's hangup/reject is in the queue; end without sending anything.
        await self._end("caller hung up before the answer", hangup=None)

    def _announce(
        self, tracks: list[OfferedTrack], metadata: Mapping[str, voip.StreamMetadata]
    ) -> None:
        """Declare the caller's new tracks with their purpose before the offer is applied."""
        session = self.session
        assert session is not None
        known = set(session.pending) | {t.info.cid for t in session.published.values()}
        for track in tracks:
            self._stream_of_track[track.track_id] = track.stream_id
            if track.track_id in known:
                continue
            meta = metadata.get(track.stream_id)
            screen = meta is not None and meta.purpose == "m.screenshare"
            if track.kind is TrackKind.AUDIO:
                source = TrackSource.SCREEN_SHARE_AUDIO if screen else TrackSource.MICROPHONE
            else:
                source = TrackSource.SCREEN_SHARE if screen else TrackSource.CAMERA
            session.announce_track(
                track.track_id, track.kind, source=source, stream=track.stream_id
            )

    def _apply_mutes(self, metadata: Mapping[str, voip.StreamMetadata]) -> None:
        session = self.session
        if session is None or not metadata:
            return
        for track in list(session.published.values()):
            info = track.info
            stream = self._stream_of_track.get(info.cid, info.stream)
            meta = metadata.get(stream)
            if meta is None:
                continue
            muted = meta.audio_muted if info.kind is TrackKind.AUDIO else meta.video_muted
            if info.muted != muted:
                session.mute(info.sid, muted)

    async def _send_candidates(self) -> None:
        session = self.session
        assert session is not None
        entries: list[dict[str, Any]] = [
            {"candidate": line, "sdpMid": mid, "sdpMLineIndex": index}
            for line, mid, index in session.local_candidates()
        ]
        mid, index = (entries[0]["sdpMid"], entries[0]["sdpMLineIndex"]) if entries else ("0", 0)
        # "an entry with candidate '' ... indicates the end of candidates" (spec).
        entries.append({"candidate": "", "sdpMid": mid, "sdpMLineIndex": index})
        await self._send(voip.CANDIDATES, {"candidates": entries})

    async def _handle(self, item: _Item) -> None:
        """One input, through the transition table (an input a state does not take
        is logged and dropped)."""
        kind = type(item.event) if isinstance(item, _Remote) else type(item)
        transition = TRANSITIONS.get((self.state, kind))
        if transition is None:
            log.info("- %s %s ignored while %s", self.label, kind.__name__, self.state.value)
            return
        await transition(self, item)

    # -- transitions (see TRANSITIONS) -----------------------------------------
    async def _callee_answered(self, item: _Item) -> None:
        assert isinstance(item, _Remote) and isinstance(item.event, voip.Answer)
        answer = item.event
        session = self.session
        assert session is not None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if answer.version == 1:
            self.remote_party = answer.party_id
        self._announce(offered_tracks(answer.answer.sdp), answer.stream_metadata)
        await session.accept_connection_answer(answer.answer.sdp)
        self._apply_mutes(answer.stream_metadata)
        log.info("< m.call.answer %s party=%s", self.label, answer.party_id)
        if answer.version == 1:
            # The callee's other devices stop ringing (spec, "m.call.select_answer").
            await self._send(voip.SELECT_ANSWER, {"selected_party_id": answer.party_id})
        self._answered(session)

    def _answered(self, session: Session) -> None:
        """The call is answered (by us or by the callee): connected once media is up,
        hung up if it does not come up in time."""
        self._set_state(CallState.ANSWERED)
        if session.info().state == "active":
            self._set_state(CallState.CONNECTED)
        else:
            self._timer = asyncio.get_running_loop().call_later(
                self.bridge.connect_timeout_s, self._queue.put_nowait, _ConnectTimeout()
            )

    async def _invite_expired(self, item: _Item) -> None:
        await self._end("invite not answered in time", hangup="invite_timeout")

    async def _nobody_left(self, item: _Item) -> None:
        if self._nobody_else():
            await self._end("nobody else left in the call", hangup="user_hangup")

    async def _joined_instead(self, item: _Item) -> None:
        await self._end("the callee joined the MatrixRTC call instead", hangup="user_hangup")

    async def _caller_hung_up(self, item: _Item) -> None:
        assert isinstance(item, _Remote) and isinstance(item.event, voip.Hangup)
        await self._end(f"caller hung up ({item.event.reason})", hangup=None)

    async def _caller_rejected(self, item: _Item) -> None:
        await self._end("rejected", hangup=None)

    async def _answer_selected(self, item: _Item) -> None:
        assert isinstance(item, _Remote) and isinstance(item.event, voip.SelectAnswer)
        if item.event.selected_party_id != self.party_id:
            await self._end("answered elsewhere", hangup=None)
        else:
            log.info("- %s our answer was selected", self.label)

    async def _remote_candidates(self, item: _Item) -> None:
        assert isinstance(item, _Remote) and isinstance(item.event, voip.Candidates)
        self._on_candidates(item.event)

    async def _remote_negotiate(self, item: _Item) -> None:
        assert isinstance(item, _Remote) and isinstance(item.event, voip.Negotiate)
        await self._on_negotiate(item.event)

    async def _remote_metadata(self, item: _Item) -> None:
        assert isinstance(item, _Remote) and isinstance(item.event, voip.SdpStreamMetadataChanged)
        self._apply_mutes(item.event.stream_metadata)

    async def _media_connected(self, item: _Item) -> None:
        self._set_state(CallState.CONNECTED)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def _connect_timeout(self, item: _Item) -> None:
        await self._end("media connection not up in time", hangup="ice_timeout")

    async def _session_closed(self, item: _Item) -> None:
        assert isinstance(item, _SessionClosed)
        await self._end(f"session closed: {item.reason}", hangup=hangup_reason_for(item.reason))

    async def _offer_expired(self, item: _Item) -> None:
        assert isinstance(item, _OfferExpired)
        if self._outstanding_offer == item.offer_id and self.session is not None:
            # The caller let our offer's lifetime pass: withdraw it, offer afresh.
            log.info(
                "- %s negotiate offer %d unanswered; offering again", self.label, item.offer_id
            )
            self._outstanding_offer = None
            self.session.withdraw_subscriber_offer(item.offer_id)

    async def _local_offer(self, item: _Item) -> None:
        assert isinstance(item, _LocalOffer)
        await self._offer(item)

    async def _metadata_check(self, item: _Item) -> None:
        await self._metadata_changed()

    def _on_candidates(self, event: voip.Candidates) -> None:
        session = self.session
        assert session is not None
        for candidate in event.candidates:
            if candidate.end_of_candidates:
                continue
            if self.remote_candidates >= MAX_REMOTE_CANDIDATES:
                if not self._candidates_warned:
                    self._candidates_warned = True
                    log.warning(
                        "x %s more than %d remote candidates; ignoring the rest",
                        self.label,
                        MAX_REMOTE_CANDIDATES,
                    )
                return
            self.remote_candidates += 1
            session.add_remote_candidate("publisher", candidate.candidate)

    async def _on_negotiate(self, event: voip.Negotiate) -> None:
        session = self.session
        assert session is not None
        description = event.description
        if description.type == "answer":
            if self._outstanding_offer is None:
                log.info("- %s negotiate answer without an offer of ours; ignored", self.label)
                return
            offer_id, self._outstanding_offer = self._outstanding_offer, None
            await session.accept_subscriber_answer(description.sdp, offer_id)
            self._apply_mutes(event.stream_metadata)
            return
        if self._outstanding_offer is not None:
            # Glare: the callee is polite; the media core drops its offer and re-offers.
            log.info("- %s glare: answering the caller's offer, ours comes again", self.label)
            self._outstanding_offer = None
        self._announce(offered_tracks(description.sdp), event.stream_metadata)
        answer_sdp = await session.answer_offer(description.sdp)
        self._apply_mutes(event.stream_metadata)
        self._last_metadata = session.stream_metadata()
        await self._send(
            voip.NEGOTIATE,
            {
                "description": {"type": "answer", "sdp": answer_sdp},
                "sdp_stream_metadata": self._last_metadata,
            },
        )

    async def _offer(self, offer: _LocalOffer) -> None:
        if self.state not in _LIVE:
            return
        if self.version == 0:
            log.info("- %s version 0 call: cannot renegotiate; new tracks not sent", self.label)
            return
        session = self.session
        assert session is not None
        self._outstanding_offer = offer.offer_id
        lifetime_ms = self.bridge.negotiate_lifetime_ms
        asyncio.get_running_loop().call_later(
            lifetime_ms / 1000, self._queue.put_nowait, _OfferExpired(offer.offer_id)
        )
        self._last_metadata = session.stream_metadata()
        await self._send(
            voip.NEGOTIATE,
            {
                "description": {"type": "offer", "sdp": offer.sdp},
                "lifetime": lifetime_ms,
                "sdp_stream_metadata": self._last_metadata,
            },
        )

    async def _metadata_changed(self) -> None:
        session = self.session
        if session is None or self.state not in _LIVE:
            return
        metadata = session.stream_metadata()
        if metadata == self._last_metadata or self.version == 0:
            return
        self._last_metadata = metadata
        await self._send(voip.SDP_STREAM_METADATA_CHANGED, {"sdp_stream_metadata": metadata})

    # -- ending ---------------------------------------------------------------
    async def hangup(self, reason: str = "user_hangup") -> None:
        """End the call from our side (e.g. the bridge shuts down)."""
        if self._task is not None and not self._task.done():
            self._cancel_reason = ("hung up by the bridge", reason)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.state is not CallState.ENDED:  # the task never got to run
            await self._end("hung up by the bridge", hangup=reason)
            self.bridge.forget(self)
            if not self.done.done():
                self.done.set_result(self.end_reason)

    async def _end(self, why: str, hangup: str | None) -> None:
        if self.state is CallState.ENDED:
            return
        answered = self.state is not CallState.ANSWERING
        self._set_state(CallState.ENDED)
        self.end_reason = why
        log.info("- %s ended: %s", self.label, why)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        session, self.session = self.session, None
        if session is not None and not session.closed:
            try:
                await session.leave(why)
            except Exception:
                log.exception("x %s leaving the room failed", self.label)
        if self.outgoing and not self._invited:
            hangup = None  # nothing was sent: nothing to take back
        if hangup is not None and not self._ended_by_caller:
            content: dict[str, Any] = {}
            if answered or self.version == 0:
                content["reason"] = hangup
                event_type = voip.HANGUP
            else:
                # Never answered: decline (v1 callees reject; spec "m.call.reject").
                event_type = voip.REJECT
            with contextlib.suppress(Exception):
                await self._send(event_type, content)

    async def _send(self, event_type: str, content: dict[str, Any]) -> None:
        body = {
            "call_id": self.call_id,
            "party_id": self.party_id,
            "version": self.version,
            **content,
        }
        try:
            await self.bridge.sender.send(self.room_id, self.callee, event_type, body)
        except Exception as exc:
            raise CallSendError(
                f"could not send {event_type} as {self.callee} to room {self.room_id}: {exc}; "
                "check that the homeserver is up and the bridge user is in the room"
            ) from exc
        log.info("> %s %s", event_type, self.label)


_Transition = Callable[[MatrixCall, _Item], Awaitable[None]]
_LIVE = (CallState.ANSWERED, CallState.CONNECTED)
_OURS = (CallState.INVITING, CallState.ANSWERED, CallState.CONNECTED)
_ROWS: list[tuple[tuple[CallState, ...], type, _Transition]] = [
    # (in these states, this input, does this); ANSWERING and PLACING are the task's
    # _answer() and _place(), which run before the queue is read (a hangup meanwhile
    # is seen by ``deliver``), and ENDED takes nothing. INVITING and _NobodyElse,
    # _JoinedElsewhere only come to calls we placed.
    ((CallState.INVITING,), voip.Answer, MatrixCall._callee_answered),
    ((CallState.INVITING,), voip.Hangup, MatrixCall._caller_hung_up),
    ((CallState.INVITING,), voip.Reject, MatrixCall._caller_rejected),
    ((CallState.INVITING,), voip.Candidates, MatrixCall._remote_candidates),
    ((CallState.INVITING,), _InviteExpired, MatrixCall._invite_expired),
    ((CallState.INVITING,), _SessionClosed, MatrixCall._session_closed),
    ((CallState.INVITING,), _JoinedElsewhere, MatrixCall._joined_instead),
    (_OURS, _NobodyElse, MatrixCall._nobody_left),
    (_LIVE, voip.Hangup, MatrixCall._caller_hung_up),
    (_LIVE, voip.Reject, MatrixCall._caller_rejected),
    (_LIVE, voip.SelectAnswer, MatrixCall._answer_selected),
    (_LIVE, voip.Candidates, MatrixCall._remote_candidates),
    (_LIVE, voip.Negotiate, MatrixCall._remote_negotiate),
    (_LIVE, voip.SdpStreamMetadataChanged, MatrixCall._remote_metadata),
    ((CallState.ANSWERED,), _MediaConnected, MatrixCall._media_connected),
    ((CallState.ANSWERED,), _ConnectTimeout, MatrixCall._connect_timeout),
    (_LIVE, _SessionClosed, MatrixCall._session_closed),
    (_LIVE, _OfferExpired, MatrixCall._offer_expired),
    (_LIVE, _LocalOffer, MatrixCall._local_offer),
    (_LIVE, _MetadataCheck, MatrixCall._metadata_check),
]
TRANSITIONS: dict[tuple[CallState, type], _Transition] = {
    (state, kind): transition for states, kind, transition in _ROWS for state in states
}
"""The call's state machine: (state, input type) -> transition. Transitions that end
the call go through ``_end`` (state ENDED); ``_callee_answered`` moves INVITING to
ANSWERED (or CONNECTED), ``_media_connected`` ANSWERED to CONNECTED; the others keep
the state."""
