"""The LiveKit signaling WebSocket ``/rtc`` (protocol v0, subscriber-primary).

One binary protobuf ``SignalRequest`` per client frame, one ``SignalResponse``
per server frame (livekit/protocol ``livekit_rtc.proto``). The handler checks
the access token before the upgrade (HTTP 401 with the reason), joins the room
through the session API (:mod:`mediafed.media`), answers with a
``JoinResponse`` carrying every field clients insist on (REFERENCES.md, "LiveKit
client protocol"), then translates requests to session calls and room events
to responses. A socket that drops without a ``leave`` is parked: the client
may resume (``reconnect=1&sid=PA_…``) within a grace period and keeps its
participant and tracks; later it is told to rejoin (``leave`` action
RECONNECT). It never touches packets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web
from google.protobuf.message import DecodeError
from livekit.protocol import models, rtc

from mediafed import __version__, media as room_core
from mediafed.config import Config
from mediafed.errors import AuthError, LocalProtocolError, MediafedError, RemoteProtocolError
from mediafed.media.limits import SIGNAL_MESSAGE_BURST, SIGNAL_MESSAGES_PER_S, TokenBucket
from mediafed.signal.livekit import translate
from mediafed.signal.livekit.auth import verify_join
from mediafed.signal.livekit.ports import RoomDirectory, RoomPort, SessionPort
from mediafed.tokens import Claims, mint_token

log = logging.getLogger(__name__)

SERVER_PROTOCOL = 15
"""The signal protocol version mediafed reports in ``ServerInfo.protocol``."""

CLOSE_PROTOCOL_ERROR = 1002
CLOSE_UNSUPPORTED = 1003
CLOSE_INVALID = 1007
CLOSE_POLICY = 1008


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
    publish_codecs: tuple[str, ...] = ("video/VP8", "audio/opus")


_QUALITY_LEVELS = {
    "excellent": models.ConnectionQuality.EXCELLENT,
    "good": models.ConnectionQuality.GOOD,
    "poor": models.ConnectionQuality.POOR,
    "lost": models.ConnectionQuality.LOST,
}


def _default_media_types() -> Any:
    """The room core's constructors (``Permission``, ``LayerInfo``, enums)."""
    return room_core


class _Peers:
    """Signal peers of this node by (room, identity), for resume and shutdown."""

    def __init__(self) -> None:
        self.by_key: dict[tuple[str, str], SignalPeer] = {}

    def add(self, peer: SignalPeer) -> None:
        self.by_key[(peer.room_name, peer.identity)] = peer

    def discard(self, peer: SignalPeer) -> None:
        if self.by_key.get((peer.room_name, peer.identity)) is peer:
            del self.by_key[(peer.room_name, peer.identity)]

    def find(self, room: str, identity: str, sid: str) -> SignalPeer | None:
        peer = self.by_key.get((room, identity))
        if peer is None or peer.finished or peer.session is None or peer.session.sid != sid:
            return None
        return peer


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
        config: Config,
        options: SignalOptions,
        claims: Claims,
        room: RoomPort,
        peers: _Peers,
        media: Any,
    ) -> None:
        self.config = config
        self.media = media
        self.options = options
        self.claims = claims
        self.room = room
        self.room_name = room.name
        self.identity = claims.identity
        self.peers = peers
        self.session: SessionPort | None = None
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
        self._handlers: dict[str, Callable[[Any], None]] = {
            "ParticipantJoined": self._on_participant_joined,
            "ParticipantUpdated": self._on_participant_updated,
            "ParticipantLeft": self._on_participant_left,
            "TrackPublished": self._on_track_published,
            "TrackUnpublished": self._on_track_unpublished,
            "TrackMuted": self._on_track_muted,
            "SpeakersChanged": self._on_speakers_changed,
            "SessionClosed": self._on_session_closed,
            "DataReceived": self._on_data_received,
            "SubscribedQualitiesChanged": self._on_subscribed_qualities,
        }
        self._data_sequence = 0

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
            if self._ready and response.WhichOneof("message") not in ("update", "mute"):
                return
            if len(self._held) >= self.options.parked_backlog:
                self._held.popleft()
            self._held.append(response)
            return
        self._outbox.put_nowait(response.SerializeToString())

    def _attach(self, ws: web.WebSocketResponse) -> None:
        self._ws = ws
        self._outbox = asyncio.Queue()
        self._last_seen = asyncio.get_running_loop().time()
        self._writer = asyncio.create_task(self._write(ws, self._outbox))
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None

    def _go_live(self, first: rtc.SignalResponse) -> None:
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

    async def _detach(self) -> None:
        """The socket is gone: stop writing to it (the session lives on)."""
        if self._outbox is not None:
            self._outbox.put_nowait(None)
        if self._writer is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._writer, timeout=5)
        self._ws = None
        self._outbox = None
        self._writer = None

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("x %r background task failed", self, exc_info=task.exception())

    # ---- SessionListener -----------------------------------------------------

    def on_room_event(self, event: Any) -> None:
        handler = self._handlers.get(type(event).__name__)
        if handler is None:
            log.debug("- %r ignores %s", self, type(event).__name__)
            return
        handler(event)

    def on_subscriber_offer(self, sdp: str, offer_id: int) -> None:
        log.debug("> %r subscriber offer id=%d", self, offer_id)
        self._last_offer_id = offer_id
        self.send(
            rtc.SignalResponse(offer=rtc.SessionDescription(type="offer", sdp=sdp, id=offer_id))
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
        """A data-channel message from the client: relay its user packet to the room."""
        session = self.session
        if session is None:
            return
        packet = models.DataPacket()
        try:
            packet.ParseFromString(data)
        except DecodeError:
            log.info("x %r malformed DataPacket on %s/%s dropped", self, role, label)
            return
        user = translate.user_data_from_pb(packet)
        if user is None:
            log.debug("- %r %s data packet not relayed", self, packet.WhichOneof("value"))
            return
        payload, topic, destinations = user
        lossy = label == "_lossy" or packet.kind == models.DataPacket.Kind.LOSSY
        try:
            session.send_data(
                payload,
                topic=topic,
                kind="lossy" if lossy else "reliable",
                destination_identities=destinations,
            )
        except MediafedError as exc:
            log.info("x %r data refused: %s", self, exc)

    # ---- room events -----------------------------------------------------------

    def _on_data_received(self, event: Any) -> None:
        session = self.session
        if session is None:
            return
        self._data_sequence += 1
        packet = translate.data_packet_to_pb(
            sender_sid=event.sender.sid,
            sender_identity=event.sender.identity,
            payload=event.payload,
            topic=event.topic,
            kind=event.kind,
            destination_identities=event.destination_identities,
            sequence=self._data_sequence,
        )
        if not session.send_data_message(event.kind, packet.SerializeToString()):
            log.debug("x %r data channel not open; %d bytes dropped", self, len(event.payload))

    def _own_sid(self) -> str:
        return self.session.sid if self.session is not None else ""

    def _send_update(self, *infos: models.ParticipantInfo) -> None:
        self.send(rtc.SignalResponse(update=rtc.ParticipantUpdate(participants=list(infos))))

    def _visible(self, participant: Any) -> bool:
        own = participant.sid == self._own_sid()
        return own or not (participant.hidden or participant.permission.hidden)

    def _on_participant_joined(self, event: Any) -> None:
        if event.participant.sid != self._own_sid() and self._visible(event.participant):
            self._send_update(translate.participant_to_pb(event.participant))

    def _on_participant_updated(self, event: Any) -> None:
        if self._visible(event.participant):
            self._send_update(translate.participant_to_pb(event.participant))

    def _on_participant_left(self, event: Any) -> None:
        if event.participant.sid != self._own_sid() and self._visible(event.participant):
            self._send_update(translate.disconnected_to_pb(event.participant))

    def _update_for_identity(self, identity: str) -> None:
        if identity == self.identity and self.session is not None:
            info: Any = self.session.info()
        else:
            info = self.room.participant(identity)
        if info is not None and self._visible(info):
            self._send_update(translate.participant_to_pb(info))

    def _on_track_published(self, event: Any) -> None:
        # the update goes out before the subscriber offer that carries the track
        self._update_for_identity(event.track.participant_identity)

    def _on_track_unpublished(self, event: Any) -> None:
        track = event.track
        if track.participant_sid == self._own_sid():
            self.send(
                rtc.SignalResponse(
                    track_unpublished=rtc.TrackUnpublishedResponse(track_sid=track.sid)
                )
            )
        else:
            self._update_for_identity(track.participant_identity)

    def _on_track_muted(self, event: Any) -> None:
        track = event.track
        if track.participant_sid == self._own_sid():
            # the server (an admin) muted our own track: tell the client to follow
            self.send(
                rtc.SignalResponse(mute=rtc.MuteTrackRequest(sid=track.sid, muted=event.muted))
            )
        else:
            self._update_for_identity(track.participant_identity)

    def _on_speakers_changed(self, event: Any) -> None:
        self.send(rtc.SignalResponse(speakers_changed=translate.speakers_to_pb(event.speakers)))

    def _on_subscribed_qualities(self, event: Any) -> None:
        # Dynacast: the client pauses the simulcast layers nobody watches.
        self.send(
            rtc.SignalResponse(
                subscribed_quality_update=translate.subscribed_quality_update(
                    event.track, event.qualities
                )
            )
        )

    def _on_session_closed(self, event: Any) -> None:
        if self.finished:
            return  # we ended it ourselves (leave, protocol error): already closing
        log.info("- %r closed by the server: %s", self, event.reason)
        self.send(
            rtc.SignalResponse(
                leave=rtc.LeaveRequest(
                    can_reconnect=False,
                    reason=translate.disconnect_reason(event.reason),  # type: ignore[arg-type]
                    action=rtc.LeaveRequest.Action.DISCONNECT,
                )
            )
        )
        self._finish()
        ws = self._ws
        if ws is not None:
            self._spawn(self._close_after_flush(ws, 1000, f"session closed: {event.reason}"))

    # ---- lifecycle ----------------------------------------------------------------

    def _finish(self) -> None:
        """No more frames after the ones queued now; forget resume state."""
        if self.finished:
            return
        self.finished = True
        self.peers.discard(self)
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None
        for task in list(self._tasks):
            if task is not asyncio.current_task():
                task.cancel()

    async def _close_after_flush(self, ws: web.WebSocketResponse, code: int, message: str) -> None:
        if self._outbox is not None:
            self._outbox.put_nowait(None)
        if self._writer is not None and self._writer is not asyncio.current_task():
            with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._writer), timeout=5)
        await ws.close(code=code, message=message[:120].encode())

    async def end(self, reason: str) -> None:
        """Leave the room for good (client leave, protocol error, grace period over)."""
        self._finish()
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
        secret = self.config.keys.get(claims.api_key)
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
            answer = await session.answer_publisher_offer(request.offer.sdp)
            self.send(
                rtc.SignalResponse(
                    answer=rtc.SessionDescription(type="answer", sdp=answer, id=request.offer.id)
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
        elif which == "leave":
            log.info("< %r leave", self)
            await self.end("client request")
        elif which is None:
            raise RemoteProtocolError("empty SignalRequest; set one of its message fields")
        else:
            log.debug("< %r %s (not handled; ignored)", self, which)

    def _trickle(self, session: SessionPort, trickle: rtc.TrickleRequest) -> None:
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

    def _add_track(self, session: SessionPort, request: rtc.AddTrackRequest) -> None:
        media = self.media
        try:
            kind = translate.kind_from_pb(request.type)
            options = translate.add_track_kwargs(request, media.LayerInfo)
            options["source"] = media.TrackSource(options["source"])
            track = session.announce_track(request.cid, media.TrackKind(kind), **options)
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

    def _mute(self, session: SessionPort, request: rtc.MuteTrackRequest) -> None:
        try:
            session.mute(request.sid, request.muted)
        except MediafedError as exc:
            self._refuse(rtc.RequestResponse.NOT_FOUND, str(exc), mute=request)

    def _subscription(self, session: SessionPort, request: rtc.UpdateSubscription) -> None:
        sids = list(request.track_sids)
        for entry in request.participant_tracks:
            sids.extend(entry.track_sids)
        for sid in sids:
            try:
                session.set_subscribed(sid, request.subscribe)
            except MediafedError as exc:
                log.info("x %r subscription %s: %s", self, sid, exc)

    def _track_settings(self, session: SessionPort, request: rtc.UpdateTrackSettings) -> None:
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

    def _update_metadata(
        self, session: SessionPort, request: rtc.UpdateParticipantMetadata
    ) -> None:
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


def _join_response(peer: SignalPeer, session: SessionPort) -> rtc.SignalResponse:
    options = peer.options
    room = peer.room
    return rtc.SignalResponse(
        join=rtc.JoinResponse(
            room=translate.room_to_pb(room),
            participant=translate.participant_to_pb(session.info()),
            other_participants=translate.visible_participants(
                room.participants(), exclude_sid=session.sid
            ),
            server_version=__version__,
            server_info=models.ServerInfo(
                edition=models.ServerInfo.Edition.Standard,
                version=__version__,
                protocol=SERVER_PROTOCOL,
                node_id="mediafed",
            ),
            ice_servers=[],
            subscriber_primary=True,
            client_configuration=models.ClientConfiguration(),
            ping_interval=options.ping_interval_s,
            ping_timeout=options.ping_timeout_s,
            enabled_publish_codecs=[models.Codec(mime=mime) for mime in options.publish_codecs],
            fast_publish=False,
        )
    )


def _leave_frame(reason: int, action: int, *, can_reconnect: bool) -> bytes:
    return rtc.SignalResponse(
        leave=rtc.LeaveRequest(can_reconnect=can_reconnect, reason=reason, action=action)  # type: ignore[arg-type]
    ).SerializeToString()


class RtcEndpoint:
    """The ``/rtc`` route: authenticate, join or resume, then pump frames."""

    def __init__(
        self, config: Config, rooms: RoomDirectory, options: SignalOptions, media: Any = None
    ) -> None:
        self.config = config
        self.rooms = rooms
        self.options = options
        self.peers = _Peers()
        self._media = media

    @property
    def media(self) -> Any:
        """The room core's constructors; ``mediafed.media`` unless given."""
        if self._media is None:
            self._media = _default_media_types()
        return self._media

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            claims, room_name = verify_join(request, self.config)
        except AuthError as exc:
            log.info("x /rtc refused: %s", exc)
            return web.Response(status=401, text=str(exc))
        ws = web.WebSocketResponse(max_msg_size=self.options.max_frame_bytes, autoping=True)
        await ws.prepare(request)
        resume = request.query.get("reconnect", "") in ("1", "true")
        if resume:
            peer = self.peers.find(room_name, claims.identity, request.query.get("sid", ""))
            if peer is None:
                log.info("x resume refused room=%s participant=%s", room_name, claims.identity)
                await ws.send_bytes(
                    _leave_frame(
                        models.DisconnectReason.STATE_MISMATCH,
                        rtc.LeaveRequest.Action.RECONNECT,
                        can_reconnect=True,
                    )
                )
                await ws.close(code=1000, message=b"session not found; join again")
                return ws
            await self._resume(peer, ws, request.query.get("reconnect_reason", ""))
        else:
            joined = await self._join(ws, claims, room_name, request)
            if joined is None:
                return ws
            peer = joined
        await self._pump(peer, ws)
        return ws

    async def _join(
        self,
        ws: web.WebSocketResponse,
        claims: Claims,
        room_name: str,
        request: web.Request,
    ) -> SignalPeer | None:
        room = self.rooms.get_or_create(room_name)
        peer = SignalPeer(
            config=self.config,
            options=self.options,
            claims=claims,
            room=room,
            peers=self.peers,
            media=self.media,
        )
        peer._attach(ws)
        media = self.media
        try:
            session = await room.join(
                claims.identity,
                name=claims.name,
                metadata=claims.metadata,
                attributes=translate.attributes_of(claims.attributes),
                permission=media.Permission(**translate.permission_kwargs(claims)),
                listener=peer,
                auto_subscribe=request.query.get("auto_subscribe", "1") not in ("0", "false"),
            )
        except MediafedError as exc:
            log.info("x join refused room=%s participant=%s: %s", room_name, claims.identity, exc)
            peer.finished = True
            await peer._detach()
            await ws.send_bytes(
                _leave_frame(
                    models.DisconnectReason.JOIN_FAILURE,
                    rtc.LeaveRequest.Action.DISCONNECT,
                    can_reconnect=False,
                )
            )
            await ws.close(code=CLOSE_POLICY, message=str(exc)[:120].encode())
            return None
        peer.session = session
        old = self.peers.by_key.get((room_name, claims.identity))
        if old is not None and old is not peer:
            old._finish()
        self.peers.add(peer)
        peer._go_live(_join_response(peer, session))
        peer.start_timers()
        log.info("- %r joined", peer)
        return peer

    async def _resume(self, peer: SignalPeer, ws: web.WebSocketResponse, reason: str) -> None:
        assert peer.session is not None
        old = peer._ws
        if old is not None and not old.closed:
            await old.close(code=1000, message=b"resumed on another connection")
        await peer._detach()
        peer._ready = False
        peer._attach(ws)
        peer._go_live(
            rtc.SignalResponse(
                reconnect=rtc.ReconnectResponse(
                    ice_servers=[],
                    client_configuration=models.ClientConfiguration(),
                    server_info=models.ServerInfo(
                        edition=models.ServerInfo.Edition.Standard,
                        version=__version__,
                        protocol=SERVER_PROTOCOL,
                    ),
                )
            )
        )
        log.info("- %r resumed (reconnect_reason=%s)", peer, reason or "-")
        if reason != str(models.ReconnectReason.RR_SIGNAL_DISCONNECTED):
            # media may be broken too: new ICE credentials and a new subscriber offer
            # (the client restarts its publisher side itself). When only the signal
            # connection dropped, media kept flowing and needs nothing.
            await peer.session.restart_ice()

    async def _pump(self, peer: SignalPeer, ws: web.WebSocketResponse) -> None:
        watchdog = asyncio.create_task(peer.watch(ws))
        close: tuple[int, str] | None = None
        budget = TokenBucket(self.options.messages_per_s, self.options.message_burst)
        loop = asyncio.get_running_loop()
        try:
            async for message in ws:
                peer.seen()
                if not budget.take(loop.time()):
                    # No client sends this many requests; dropping some would leave its
                    # state undefined, so it is disconnected, and may join again.
                    close = (
                        CLOSE_POLICY,
                        f"more than {self.options.message_burst:.0f} signaling messages at "
                        f"once or {self.options.messages_per_s:.0f} a second",
                    )
                    self.rooms.drop("signal_rate", repr(peer), close[1])
                    break
                if message.type == WSMsgType.BINARY:
                    close = await self._handle_frame(peer, message.data)
                elif message.type == WSMsgType.TEXT:
                    close = (CLOSE_UNSUPPORTED, "send binary protobuf SignalRequest frames")
                elif message.type == WSMsgType.ERROR:
                    log.info("x %r socket error: %s", peer, ws.exception())
                if close is not None or peer.finished:
                    break
        finally:
            watchdog.cancel()
        if close is not None:
            log.info("x %r protocol error: %s", peer, close[1])
            await peer.end(f"protocol error: {close[1]}")
            await peer._close_after_flush(ws, close[0], close[1])
        elif peer.finished:
            await peer._close_after_flush(ws, 1000, "left")
        elif peer._ws is ws:
            await peer._detach()
            peer.park()
        if not ws.closed:
            await ws.close()

    async def _handle_frame(self, peer: SignalPeer, data: bytes) -> tuple[int, str] | None:
        request = rtc.SignalRequest()
        try:
            request.ParseFromString(data)
        except DecodeError:
            return (CLOSE_INVALID, "malformed SignalRequest protobuf")
        try:
            await peer.handle(request)
        except RemoteProtocolError as exc:
            return (CLOSE_POLICY, str(exc))
        except MediafedError as exc:
            log.warning("x %r %s failed: %s", peer, request.WhichOneof("message"), exc)
            return (CLOSE_POLICY, str(exc))
        return None

    async def shutdown(self, app: web.Application) -> None:
        for peer in list(self.peers.by_key.values()):
            peer._on_session_closed(_ShutdownEvent())


@dataclass(frozen=True, slots=True)
class _ShutdownEvent:
    reason: str = "server shutdown"


def add_rtc_route(
    app: web.Application,
    config: Config,
    rooms: RoomDirectory,
    options: SignalOptions | None = None,
    media: Any = None,
) -> RtcEndpoint:
    """Serve ``/rtc`` on ``app``; returns the endpoint (its peers, for tests).

    ``media`` supplies the room core's ``Permission``, ``LayerInfo``,
    ``TrackKind`` and ``TrackSource`` (default: :mod:`mediafed.media`).
    """
    endpoint = RtcEndpoint(config, rooms, options or SignalOptions(), media)
    app.router.add_get("/rtc", endpoint.handle)
    app.on_shutdown.append(endpoint.shutdown)
    return endpoint
