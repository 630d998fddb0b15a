"""One participant as the LiveKit signaling front-end sees it: protocol translation.

A :class:`SignalPeer` turns the client's ``SignalRequest`` frames into calls of
the room core's session API (:mod:`mediafed.media`) and the room core's events
and negotiation callbacks into ``SignalResponse`` frames (livekit/protocol
``livekit_rtc.proto``: v0 with two connections, subscriber-primary, or v1 with
one connection only the client offers). It outlives its sockets: when one
drops without a ``leave`` the peer is parked, holding back what the client
must still learn, until it resumes on a new socket or the grace period ends.
Which socket reaches which peer is :mod:`.rtc`'s business. It never touches
packets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from google.protobuf.message import DecodeError
from livekit.protocol import models, rtc

from mediafed.errors import AuthError, LocalProtocolError, MediafedError, RemoteProtocolError
from mediafed.media import LayerInfo, ParticipantInfo, Room, Session, TrackKind, TrackSource, codecs
from mediafed.media.events import (
    DataReceived,
    PacketRelayed,
    ParticipantJoined,
    ParticipantLeft,
    ParticipantUpdated,
    RoomEvent,
    RoomMetadataChanged,
    RpcRequested,
    SessionClosed,
    SpeakersChanged,
    StreamStateChanged,
    SubscribedQualitiesChanged,
    SubscriptionPermissionChanged,
    TrackMuted,
    TrackPublished,
    TrackUnpublished,
)
from mediafed.media.limits import SIGNAL_MESSAGE_BURST, SIGNAL_MESSAGES_PER_S
from mediafed.media.rpc import RpcCode, RpcError
from mediafed.signal.livekit import translate
from mediafed.signal.livekit.tokens import HOME_CLAIM, Claims, mint_token

log = logging.getLogger(__name__)

CLOSE_UNSUPPORTED = 1003
CLOSE_INVALID = 1007
CLOSE_POLICY = 1008
"""WebSocket close codes (RFC 6455 section 7.4.1) for clients that break the protocol."""


@dataclass(frozen=True, slots=True)
class SignalOptions:
    """Timers and limits of the signaling front-end (seconds unless named)."""

    ping_interval_s: int = 5
    ping_timeout_s: int = 15
    resume_grace_s: float = 20.0
    max_frame_bytes: int = 1 << 20
    refresh_margin_s: float = 300.0
    """Send ``refresh_token`` this long before the token expires (or halfway, if sooner)."""
    parked_backlog: int = 256
    """Participant updates kept for a parked (disconnected, resumable) client."""
    quality_interval_s: float = 5.0
    messages_per_s: float = SIGNAL_MESSAGES_PER_S
    message_burst: float = SIGNAL_MESSAGE_BURST
    """Signaling requests a client may send; beyond, it is disconnected."""
    publish_codecs: tuple[str, ...] = tuple(
        spec.mime for spec in codecs.SUPPORTED if spec.mime != "video/AV1"
    )
    """``JoinResponse.enabled_publish_codecs``: livekit-client publishes in the codec
    asked for only if it is listed (else in the first video codec listed: VP8). AV1
    is left out: Chrome decodes AV1 only with the dependency descriptor extension,
    which the relay does not forward yet, so a browser asking for AV1 sends VP8."""


_QUALITY_LEVELS = {
    "excellent": models.ConnectionQuality.EXCELLENT,
    "good": models.ConnectionQuality.GOOD,
    "poor": models.ConnectionQuality.POOR,
    "lost": models.ConnectionQuality.LOST,
}


def _now_ms() -> int:
    return int(time.time() * 1000)


class SignalPeer:
    """One participant as seen by the signaling front-end; outlives its sockets.

    Implements the session API's ``SessionListener``: room events and
    negotiation callbacks become ``SignalResponse`` frames for the current
    socket (kept in order; held back until the ``JoinResponse`` is out).
    """

    def __init__(
        self,
        *,
        keys: Mapping[str, str],
        options: SignalOptions,
        claims: Claims,
        room: Room,
        on_finished: Callable[[SignalPeer], None] = lambda peer: None,
    ) -> None:
        self.keys = keys
        """API key -> secret: the refreshed tokens are signed like the join token."""
        self.options = options
        self.claims = claims
        self.room = room
        self.room_name = room.name
        self.identity = claims.identity
        self._on_finished = on_finished
        self.session: Session | None = None
        self.finished = False
        self._ws: web.WebSocketResponse | None = None
        self._outbox: asyncio.Queue[bytes | None] | None = None
        self._held: deque[rtc.SignalResponse] = deque()
        self._ready = False
        self._writer: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._grace: asyncio.TimerHandle | None = None
        self._last_seen = 0.0
        self._last_offer_id = 0
        self._last_data_sequence = 0
        """The sequence of the client's last reliable data packet (repeats are dropped)."""

    # ---- log helpers -------------------------------------------------------

    def __repr__(self) -> str:
        sid = self.session.sid if self.session else "-"
        return f"SignalPeer(room={self.room_name} participant={self.identity} sid={sid})"

    # ---- outgoing ------------------------------------------------------------

    def send(self, response: rtc.SignalResponse) -> None:
        """Queue one response for the client, in order."""
        if self.finished:
            return
        if not self._ready or self._outbox is None:
            # before the JoinResponse, or parked: keep what still matters later
            if self._ready and response.WhichOneof("message") not in (
                "update",
                "mute",
                "subscription_permission_update",
                "room_update",
            ):
                return
            if len(self._held) >= self.options.parked_backlog:
                self._held.popleft()
            self._held.append(response)
            return
        self._outbox.put_nowait(response.SerializeToString())

    @property
    def socket(self) -> web.WebSocketResponse | None:
        """The client's current socket; None while parked."""
        return self._ws

    def attach(self, ws: web.WebSocketResponse) -> None:
        """Write to ``ws`` from now on; responses wait for :meth:`go_live`."""
        self._ws = ws
        self._outbox = asyncio.Queue()
        self._last_seen = asyncio.get_running_loop().time()
        self._writer = asyncio.create_task(self._write(ws, self._outbox))
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None

    def go_live(self, first: rtc.SignalResponse) -> None:
        """Send ``first`` (join or reconnect), then what was held back."""
        assert self._outbox is not None
        self._outbox.put_nowait(first.SerializeToString())
        self._ready = True
        while self._held:
            self._outbox.put_nowait(self._held.popleft().SerializeToString())

    async def _write(self, ws: web.WebSocketResponse, outbox: asyncio.Queue[bytes | None]) -> None:
        while True:
            data = await outbox.get()
            if data is None or ws.closed:
                return
            try:
                await ws.send_bytes(data)
            except (ConnectionError, RuntimeError) as exc:
                log.debug("x %r send failed: %s", self, exc)
                return

    async def detach(self) -> None:
        """The socket is gone: stop writing to it (the session lives on)."""
        if self._outbox is not None:
            self._outbox.put_nowait(None)
        if self._writer is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._writer, timeout=5)
        self._ws = None
        self._outbox = None
        self._writer = None

    async def reattach(self, ws: web.WebSocketResponse) -> None:
        """The client resumed on ``ws``: close the socket it had, if still open, and
        hold responses back until :meth:`go_live` sends the reconnect answer."""
        old = self._ws
        if old is not None and not old.closed:
            await old.close(code=1000, message=b"resumed on another connection")
        await self.detach()
        self._ready = False
        self.attach(ws)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("x %r background task failed", self, exc_info=task.exception())

    # ---- SessionListener -----------------------------------------------------

    def on_room_event(self, event: RoomEvent) -> None:
        # the frequent first: each case is one isinstance check
        match event:
            case PacketRelayed():
                self._on_packet_relayed(event)
            case DataReceived():
                self._on_data_received(event)
            case SubscriptionPermissionChanged():
                self.send(translate.subscription_permission_update(event.track, event.allowed))
            case SpeakersChanged():
                self._on_speakers_changed(event)
            case ParticipantUpdated():
                self._on_participant_updated(event)
            case TrackMuted():
                self._on_track_muted(event)
            case SubscribedQualitiesChanged():
                self._on_subscribed_qualities(event)
            case ParticipantJoined():
                self._on_participant_joined(event)
            case ParticipantLeft():
                self._on_participant_left(event)
            case TrackPublished():
                self._on_track_published(event)
            case TrackUnpublished():
                self._on_track_unpublished(event)
            case SessionClosed():
                self._on_session_closed(event)
            case StreamStateChanged():
                self._on_stream_state(event)
            case RoomMetadataChanged():
                self._on_room_metadata()
            case RpcRequested():
                self._on_rpc_requested(event)
            case _:
                log.debug("- %r ignores %s", self, type(event).__name__)

    def on_subscriber_offer(self, sdp: str, offer_id: int) -> None:
        log.debug("> %r subscriber offer id=%d", self, offer_id)
        self._last_offer_id = offer_id
        self.send(
            rtc.SignalResponse(offer=rtc.SessionDescription(type="offer", sdp=sdp, id=offer_id))
        )

    def on_media_sections_requirement(self, audios: int, videos: int) -> None:
        log.debug("> %r media sections requirement audio=%d video=%d", self, audios, videos)
        self.send(
            rtc.SignalResponse(
                media_sections_requirement=rtc.MediaSectionsRequirement(
                    num_audios=audios, num_videos=videos
                )
            )
        )

    def on_local_candidate(
        self, target: str, candidate: str, sdp_mid: str, sdp_mline_index: int
    ) -> None:
        self.send(
            rtc.SignalResponse(
                trickle=rtc.TrickleRequest(
                    candidateInit=translate.candidate_init(candidate, sdp_mid, sdp_mline_index),
                    target=translate.TARGETS_TO_PB.get(target, rtc.SignalTarget.SUBSCRIBER),
                )
            )
        )

    def on_data_message(self, role: str, label: str, data: bytes) -> None:
        """A data-channel message from the client: a ``DataPacket`` (user data, RPC, a
        data stream's header, chunk or trailer, chat…) to relay, with its sender asserted,
        to the others or to those it names (livekit-server's ``handleReceivedDataMessage``)."""
        session = self.session
        if session is None:
            return
        packet = models.DataPacket()
        try:
            packet.ParseFromString(data)
        except DecodeError:
            log.info("x %r malformed DataPacket on %s/%s dropped", self, role, label)
            return
        # the channel it came on says what it is, whatever the packet claims
        if label in ("_reliable", "_lossy"):
            lossy = label == "_lossy"
        else:
            lossy = packet.kind == models.DataPacket.Kind.LOSSY
        if not lossy and packet.sequence > 0:
            if packet.sequence <= self._last_data_sequence:
                log.debug("- %r reliable data %d repeated; dropped", self, packet.sequence)
                return  # resent after a resume: relayed already
            self._last_data_sequence = packet.sequence
        if self._answers_server_call(packet):
            return  # for the server (RoomService PerformRpc), not for the others
        hidden = session.permission.hidden
        relayed = translate.relayed_data_packet(
            packet,
            sender_sid=session.sid,
            sender_identity="" if hidden else self.identity,
            lossy=lossy,
        )
        if relayed is None:
            log.debug("- %r %s data packet not relayed", self, packet.WhichOneof("value"))
            return
        destinations = relayed.destination_identities
        if relayed.destination_sids:
            wanted = set(relayed.destination_sids)
            destinations += tuple(p.identity for p in self.room.participants() if p.sid in wanted)
        try:
            session.relay_packet(
                relayed.packet,
                protocol=translate.DATA_PROTOCOL,
                kind=relayed.kind,
                destination_identities=destinations,
            )
        except MediafedError as exc:
            log.info("x %r data refused: %s", self, exc)

    # ---- room events -----------------------------------------------------------

    def _on_packet_relayed(self, event: PacketRelayed) -> None:
        session = self.session
        if session is None or event.protocol != translate.DATA_PROTOCOL:
            return
        if not session.send_data_message(event.kind, event.packet):
            log.debug("x %r data channel not open; %d bytes dropped", self, len(event.packet))

    def _on_data_received(self, event: DataReceived) -> None:
        # Data the server sends (RoomService SendData) is unsequenced, as LiveKit's:
        # clients drop repeats by sender and sequence, and this is no client's sequence.
        session = self.session
        if session is None:
            return
        packet = translate.data_packet_to_pb(
            sender_sid=event.sender.sid,
            sender_identity=event.sender.identity,
            payload=event.payload,
            topic=event.topic,
            kind=event.kind,
            destination_identities=event.destination_identities,
        )
        if not session.send_data_message(event.kind, packet.SerializeToString()):
            log.debug("x %r data channel not open; %d bytes dropped", self, len(event.payload))

    @property
    def last_data_sequence(self) -> int:
        """The sequence of the last reliable data packet the client sent (LiveKit's
        ``ReconnectResponse.last_message_seq``: on a resume it resends what came after)."""
        return self._last_data_sequence

    def _own_sid(self) -> str:
        return self.session.sid if self.session is not None else ""

    def _send_update(self, *infos: models.ParticipantInfo) -> None:
        self.send(rtc.SignalResponse(update=rtc.ParticipantUpdate(participants=list(infos))))

    def _visible(self, participant: ParticipantInfo) -> bool:
        own = participant.sid == self._own_sid()
        return own or not (participant.hidden or participant.permission.hidden)

    def _on_participant_joined(self, event: ParticipantJoined) -> None:
        if event.participant.sid != self._own_sid() and self._visible(event.participant):
            self._send_update(translate.participant_to_pb(event.participant))

    def _on_participant_updated(self, event: ParticipantUpdated) -> None:
        if self._visible(event.participant):
            self._send_update(translate.participant_to_pb(event.participant))

    def _on_participant_left(self, event: ParticipantLeft) -> None:
        if event.participant.sid != self._own_sid() and self._visible(event.participant):
            self._send_update(translate.disconnected_to_pb(event.participant))

    def _update_for_identity(self, identity: str) -> None:
        info: ParticipantInfo | None
        if identity == self.identity and self.session is not None:
            info = self.session.info()
        else:
            info = self.room.participant(identity)
        if info is not None and self._visible(info):
            self._send_update(translate.participant_to_pb(info))

    def _on_track_published(self, event: TrackPublished) -> None:
        # the update goes out before the subscriber offer that carries the track
        self._update_for_identity(event.track.participant_identity)

    def _on_track_unpublished(self, event: TrackUnpublished) -> None:
        track = event.track
        if track.participant_sid == self._own_sid():
            self.send(
                rtc.SignalResponse(
                    track_unpublished=rtc.TrackUnpublishedResponse(track_sid=track.sid)
                )
            )
        else:
            self._update_for_identity(track.participant_identity)

    def _on_track_muted(self, event: TrackMuted) -> None:
        track = event.track
        if track.participant_sid == self._own_sid():
            # the server (an admin) muted our own track: tell the client to follow
            self.send(
                rtc.SignalResponse(mute=rtc.MuteTrackRequest(sid=track.sid, muted=event.muted))
            )
        else:
            self._update_for_identity(track.participant_identity)

    def _on_speakers_changed(self, event: SpeakersChanged) -> None:
        self.send(rtc.SignalResponse(speakers_changed=translate.speakers_to_pb(event.speakers)))

    def _on_subscribed_qualities(self, event: SubscribedQualitiesChanged) -> None:
        # Dynacast: the client pauses the simulcast layers nobody watches.
        self.send(
            rtc.SignalResponse(
                subscribed_quality_update=translate.subscribed_quality_update(
                    event.track, event.qualities
                )
            )
        )

    def _on_stream_state(self, event: StreamStateChanged) -> None:
        # A video paused for bandwidth (or flowing again): clients show it as such.
        state = rtc.StreamState.PAUSED if event.paused else rtc.StreamState.ACTIVE
        info = rtc.StreamStateInfo(
            participant_sid=event.track.participant_sid, track_sid=event.track.sid, state=state
        )
        self.send(
            rtc.SignalResponse(stream_state_update=rtc.StreamStateUpdate(stream_states=[info]))
        )

    def _on_rpc_requested(self, event: RpcRequested) -> None:
        # as livekit-server: the request id stands as the caller, the client answers it
        packet = models.DataPacket(
            kind=models.DataPacket.Kind.RELIABLE,
            participant_identity=event.request_id,
            rpc_request=models.RpcRequest(
                id=event.request_id,
                method=event.method,
                payload=event.payload,
                response_timeout_ms=event.response_timeout_ms,
                version=1,
            ),
        )
        session = self.session
        if session is None or not session.send_data_message("reliable", packet.SerializeToString()):
            failed = RpcError.of(RpcCode.SEND_FAILED, "the data channel is not open")
            self.room.rpc.answered(self.identity, event.request_id, failed)

    def _answers_server_call(self, packet: models.DataPacket) -> bool:
        """Whether ``packet`` acknowledges or answers a call of the server's (and went
        to it), rather than one of another participant's, to relay."""
        which = packet.WhichOneof("value")
        if which == "rpc_ack":
            return self.room.rpc.acknowledged(self.identity, packet.rpc_ack.request_id)
        if which == "rpc_response":
            response = packet.rpc_response
            answer: str | RpcError = response.payload
            if response.WhichOneof("value") == "error":
                error = response.error
                answer = RpcError(error.code, error.message, error.data)
            return self.room.rpc.answered(self.identity, response.request_id, answer)
        return False

    def _on_room_metadata(self) -> None:
        # LiveKit sends the whole room, as in the join response
        room = translate.room_to_pb(self.room)
        self.send(rtc.SignalResponse(room_update=rtc.RoomUpdate(room=room)))

    def _on_session_closed(self, event: SessionClosed) -> None:
        if self.finished:
            return  # we ended it ourselves (leave, protocol error): already closing
        log.info("- %r closed by the server: %s", self, event.reason)
        reason = translate.disconnect_reason(event.reason)
        # A server going down (for a restart, usually) asks clients to join again,
        # as LiveKit's protocol has it: they retry until it is back.
        restart = reason == models.DisconnectReason.SERVER_SHUTDOWN
        self.send(
            rtc.SignalResponse(
                leave=rtc.LeaveRequest(
                    can_reconnect=restart,
                    reason=reason,  # type: ignore[arg-type]
                    action=(
                        rtc.LeaveRequest.Action.RECONNECT
                        if restart
                        else rtc.LeaveRequest.Action.DISCONNECT
                    ),
                )
            )
        )
        self.finish()
        ws = self._ws
        if ws is not None:
            self._spawn(self.close_after_flush(ws, 1000, f"session closed: {event.reason}"))

    # ---- lifecycle ----------------------------------------------------------------

    def finish(self) -> None:
        """No more frames after the ones queued now; forget resume state."""
        if self.finished:
            return
        self.finished = True
        self._on_finished(self)
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None
        for task in list(self._tasks):
            if task is not asyncio.current_task():
                task.cancel()

    async def close_after_flush(self, ws: web.WebSocketResponse, code: int, message: str) -> None:
        """Close ``ws`` with ``code`` once what is queued for it is out (at most 5 s)."""
        if self._outbox is not None:
            self._outbox.put_nowait(None)
        if self._writer is not None and self._writer is not asyncio.current_task():
            with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._writer), timeout=5)
        await ws.close(code=code, message=message[:120].encode())

    async def end(self, reason: str) -> None:
        """Leave the room for good (client leave, protocol error, grace period over)."""
        self.finish()
        if self.session is not None and not self.session.closed:
            await self.session.leave(reason)

    def park(self) -> None:
        """The socket dropped without a leave: keep the session for a resume."""
        if self.finished:
            return
        self._ready = True  # what arrives now is held for a resume
        loop = asyncio.get_running_loop()
        self._grace = loop.call_later(self.options.resume_grace_s, self._grace_over)
        log.info("- %r parked for %.0f s awaiting resume", self, self.options.resume_grace_s)

    def _grace_over(self) -> None:
        self._grace = None
        log.info("- %r did not resume in time; leaving", self)
        self._spawn(self.end("signal closed: resume grace period over"))

    def start_timers(self) -> None:
        self._spawn(self._refresh_tokens())

    async def _refresh_tokens(self) -> None:
        """Send ``refresh_token`` before the join token expires, for every resume."""
        claims = self.claims
        nbf = claims.raw.get("nbf")
        ttl_s = claims.expires_at - nbf if isinstance(nbf, int | float) else 600.0
        ttl_s = max(ttl_s, 60.0)
        expires_at = claims.expires_at
        secret = self.keys.get(claims.api_key)
        if secret is None:
            return
        while True:
            remaining = expires_at - time.time()
            await asyncio.sleep(
                max(0.0, min(remaining - self.options.refresh_margin_s, remaining / 2))
            )
            token = mint_token(
                claims.api_key,
                secret,
                identity=claims.identity,
                video=claims.video,
                name=claims.name,
                metadata=claims.metadata,
                attributes=claims.attributes,
                ttl_s=ttl_s,
                extra_claims={HOME_CLAIM: True} if claims.raw.get(HOME_CLAIM) is True else None,
            )
            expires_at = time.time() + ttl_s
            log.debug("> %r refresh_token", self)
            self.send(rtc.SignalResponse(refresh_token=token))

    async def watch(self, ws: web.WebSocketResponse) -> None:
        """Close a socket that stays silent longer than the ping timeout; report quality."""
        loop = asyncio.get_running_loop()
        tick = min(self.options.ping_interval_s, self.options.quality_interval_s)
        while not ws.closed:
            await asyncio.sleep(tick)
            if loop.time() - self._last_seen > self.options.ping_timeout_s:
                log.info("x %r sent nothing for %d s; closing", self, self.options.ping_timeout_s)
                await ws.close(code=CLOSE_POLICY, message=b"ping timeout")
                return
            self._send_quality()

    def _send_quality(self) -> None:
        quality_of = getattr(self.session, "connection_quality", None)
        if self.session is None or quality_of is None:
            return
        measured = quality_of()
        self.send(
            rtc.SignalResponse(
                connection_quality=rtc.ConnectionQualityUpdate(
                    updates=[
                        rtc.ConnectionQualityInfo(
                            participant_sid=self.session.sid,
                            quality=_QUALITY_LEVELS[measured.level.value],
                            score=measured.mos,
                        )
                    ]
                )
            )
        )

    # ---- incoming -------------------------------------------------------------------

    def seen(self) -> None:
        self._last_seen = asyncio.get_running_loop().time()

    async def handle(self, request: rtc.SignalRequest) -> None:
        """Apply one request; raises RemoteProtocolError/NegotiationError on fatal input."""
        session = self.session
        assert session is not None
        which = request.WhichOneof("message")
        if which not in ("ping", "ping_req", "trickle"):
            log.debug("< %r %s", self, which)
        if which == "offer":
            if session.single:
                # v1: one connection; the answer also says which track goes on which mid
                answer = await session.answer_offer(request.offer.sdp)
                mapping = session.sending_tracks()
            else:
                answer = await session.answer_publisher_offer(request.offer.sdp)
                mapping = {}
            self.send(
                rtc.SignalResponse(
                    answer=rtc.SessionDescription(
                        type="answer", sdp=answer, id=request.offer.id, mid_to_track_id=mapping
                    )
                )
            )
        elif which == "answer":
            # the Rust SDK (Python ``livekit``) does not echo the offer id: 0 means the latest
            offer_id = request.answer.id or self._last_offer_id
            await session.accept_subscriber_answer(request.answer.sdp, offer_id)
        elif which == "trickle":
            self._trickle(session, request.trickle)
        elif which == "add_track":
            self._add_track(session, request.add_track)
        elif which == "mute":
            self._mute(session, request.mute)
        elif which == "subscription":
            self._subscription(session, request.subscription)
        elif which == "subscription_permission":
            self._subscription_permission(session, request.subscription_permission)
        elif which == "track_setting":
            self._track_settings(session, request.track_setting)
        elif which == "update_metadata":
            self._update_metadata(session, request.update_metadata)
        elif which == "ping":
            self.send(rtc.SignalResponse(pong=_now_ms()))
        elif which == "ping_req":
            self.send(
                rtc.SignalResponse(
                    pong_resp=rtc.Pong(
                        last_ping_timestamp=request.ping_req.timestamp, timestamp=_now_ms()
                    )
                )
            )
        elif which == "publish_data_track_request":
            # LiveKit's data tracks (SDKs of 2026): not relayed yet. Refused at once, so
            # the client reports it instead of waiting for an answer until it times out.
            self._refuse(
                rtc.RequestResponse.UNSUPPORTED_TYPE,
                "mediafed does not relay data tracks yet; send data packets (publish_data) instead",
                publish_data_track=request.publish_data_track_request,
            )
        elif which == "unpublish_data_track_request":
            self._refuse(
                rtc.RequestResponse.NOT_FOUND,
                "no data track is published here",
                unpublish_data_track=request.unpublish_data_track_request,
            )
        elif which == "leave":
            log.info("< %r leave", self)
            await self.end("client request")
        elif which is None:
            raise RemoteProtocolError("empty SignalRequest; set one of its message fields")
        else:
            log.debug("< %r %s (not handled; ignored)", self, which)

    def _trickle(self, session: Session, trickle: rtc.TrickleRequest) -> None:
        try:
            candidate = translate.candidate_from_init(trickle.candidateInit)
        except RemoteProtocolError as exc:
            log.info("x %r trickle ignored: %s", self, exc)
            return
        target = translate.TARGETS.get(trickle.target, "publisher")
        session.add_remote_candidate(target, candidate)

    def _refuse(self, reason: int, message: str, **request: Any) -> None:
        log.info("x %r refused: %s", self, message)
        self.send(
            rtc.SignalResponse(
                request_response=rtc.RequestResponse(reason=reason, message=message, **request)  # type: ignore[arg-type]
            )
        )

    def _add_track(self, session: Session, request: rtc.AddTrackRequest) -> None:
        try:
            kind = translate.kind_from_pb(request.type)
            options = translate.add_track_kwargs(request, LayerInfo)
            options["source"] = TrackSource(options["source"])
            track = session.announce_track(request.cid, TrackKind(kind), **options)
        except AuthError as exc:
            self._refuse(rtc.RequestResponse.NOT_ALLOWED, str(exc), add_track=request)
            return
        except RemoteProtocolError as exc:
            self._refuse(rtc.RequestResponse.UNSUPPORTED_TYPE, str(exc), add_track=request)
            return
        except LocalProtocolError as exc:
            self._refuse(rtc.RequestResponse.LIMIT_EXCEEDED, str(exc), add_track=request)
            return
        log.info("< %r add_track cid=%s -> %s", self, request.cid, track.sid)
        self.send(
            rtc.SignalResponse(
                track_published=rtc.TrackPublishedResponse(
                    cid=request.cid, track=translate.track_to_pb(track)
                )
            )
        )

    def _mute(self, session: Session, request: rtc.MuteTrackRequest) -> None:
        try:
            session.mute(request.sid, request.muted)
        except MediafedError as exc:
            self._refuse(rtc.RequestResponse.NOT_FOUND, str(exc), mute=request)

    def _subscription(self, session: Session, request: rtc.UpdateSubscription) -> None:
        sids = list(request.track_sids)
        for entry in request.participant_tracks:
            sids.extend(entry.track_sids)
        for sid in sids:
            try:
                session.set_subscribed(sid, request.subscribe)
            except MediafedError as exc:
                log.info("x %r subscription %s: %s", self, sid, exc)

    def _subscription_permission(
        self, session: Session, request: rtc.SubscriptionPermission
    ) -> None:
        """Who may subscribe to this participant's tracks (``setTrackSubscriptionPermissions``)."""
        by_sid = {p.sid: p.identity for p in self.room.participants()}
        try:
            permission = translate.subscription_permission_from_pb(request, by_sid)
        except RemoteProtocolError as exc:
            # as livekit-server: the rules in force stay
            log.info("x %r subscription permission ignored: %s", self, exc)
            return
        session.set_subscription_permission(permission)

    def _track_settings(self, session: Session, request: rtc.UpdateTrackSettings) -> None:
        for sid in request.track_sids:
            try:
                session.update_track_settings(
                    sid,
                    disabled=request.disabled,
                    quality=int(request.quality),
                    width=request.width,
                    height=request.height,
                    fps=request.fps,
                )
            except MediafedError as exc:
                log.info("x %r track settings %s: %s", self, sid, exc)

    def _update_metadata(self, session: Session, request: rtc.UpdateParticipantMetadata) -> None:
        if not session.info().permission.can_update_metadata:
            self._refuse(
                rtc.RequestResponse.NOT_ALLOWED,
                "this token may not change its own name or metadata (canUpdateOwnMetadata)",
                request_id=request.request_id,
                update_metadata=request,
            )
            return
        info = session.update_metadata(
            metadata=request.metadata or None,
            name=request.name or None,
            attributes=dict(request.attributes) or None,
        )
        self._send_update(translate.participant_to_pb(info))
        self.send(
            rtc.SignalResponse(
                request_response=rtc.RequestResponse(
                    request_id=request.request_id, reason=rtc.RequestResponse.OK
                )
            )
        )
