"""Rooms and the directory of one worker's rooms.

:class:`Room` holds sessions and published tracks and fans events out to every
session's listener and to observers (webhooks, bridges); :class:`RoomManager`
creates, finds and deletes rooms. Neither owns a socket, a timer or the
configuration: the worker (mediafed/worker.py) gives them a clock and an
endpoint factory and calls :meth:`RoomManager.tick` (every 50 ms NACKs and
transport-cc feedback; every second RTCP reports, allocation, connection
quality and room expiry; every 300 ms the active speakers).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence

from mediafed.errors import LocalProtocolError
from mediafed.media import events
from mediafed.media.downtrack import DownTrack
from mediafed.media.peer import MediaPeer
from mediafed.media.permissions import SubscriptionPermission, TrackAccess
from mediafed.media.rpc import DEFAULT_RESPONSE_TIMEOUT_S, RpcCalls, RpcCode, RpcError
from mediafed.media.session import Session, SessionListener
from mediafed.media.track import PublishedTrack
from mediafed.media.types import ParticipantInfo, Permission, TrackInfo, TrackKind, new_sid
from mediafed.transport.endpoint import Endpoint, EndpointHandler
from mediafed.wire.twcc import TransportCcRecorder

log = logging.getLogger(__name__)

SPEAKER_THRESHOLD = 0.01  # about -40 dBov
DROP_LOG_INTERVAL_S = 5.0
RETIRED_COUNTS = ("packets_sent", "octets_sent", "retransmitted", "srtp_auth_failed")

RoomObserver = Callable[["Room", events.RoomEvent], None]


class Room:
    def __init__(
        self,
        manager: RoomManager,
        name: str,
        *,
        empty_timeout_s: int = 300,
        max_participants: int = 0,
        metadata: str = "",
    ) -> None:
        self.manager = manager
        self.name = name
        self.sid = new_sid("RM_")
        self.created_at = time.time()
        self.metadata = metadata
        self.empty_timeout_s = empty_timeout_s
        self.max_participants = max_participants
        self.sessions: dict[str, Session] = {}
        self.tracks: dict[str, PublishedTrack] = {}
        self.empty_since: float | None = manager.clock()
        self.closed = False
        self.access = TrackAccess()
        """Who may subscribe to whose tracks (publishers' subscription permissions)."""
        self._speakers: tuple[str, ...] = ()
        self._levels: dict[str, float] = {}
        self.rpc = RpcCalls()
        """The server's calls to participants' clients (RoomService ``PerformRpc``)."""

    # -- queries ----------------------------------------------------------------
    @property
    def num_participants(self) -> int:
        return len(self.sessions)

    def participants(self) -> list[ParticipantInfo]:
        return [session.info() for session in self.sessions.values()]

    def participant(self, identity: str) -> ParticipantInfo | None:
        session = self.sessions.get(identity)
        return session.info() if session is not None else None

    # -- membership ------------------------------------------------------------
    async def join(
        self,
        identity: str,
        *,
        name: str = "",
        metadata: str = "",
        attributes: Mapping[str, str] | None = None,
        permission: Permission | None = None,
        listener: SessionListener,
        auto_subscribe: bool = True,
        single_connection: bool = False,
        answer_only: bool = False,
        own_port: bool = False,
    ) -> Session:
        """Join; ``single_connection`` for clients with one peer connection both ways
        (classic Matrix calls, LiveKit's ``/rtc/v1``): see :meth:`Session.answer_offer`;
        ``answer_only`` when only the client may offer on it (LiveKit's ``/rtc/v1``);
        ``own_port`` gives its connections a UDP port of their own (a relay link, whose
        peer SFU may hold a link to this worker's port as well: two connections on one
        pair of addresses could not be told apart).

        Nothing reaches the new session's listener before this returns (room
        events do from then on). The front-end answers the join first (who is in
        the room: :meth:`participants`), then calls :meth:`Session.start_subscriber`
        for the first subscriber offer.
        """
        if self.closed:
            raise LocalProtocolError(f"room {self.name} was deleted; create it again")
        if not identity:
            raise LocalProtocolError("a participant needs an identity")
        previous = self.sessions.get(identity)
        if previous is not None:
            await self.remove(previous, "duplicate identity")
        if self.max_participants and len(self.sessions) >= self.max_participants:
            raise LocalProtocolError(
                f"room {self.name} is full ({self.max_participants} participants)"
            )
        session = Session(
            self,
            identity,
            name=name,
            metadata=metadata,
            attributes=attributes or {},
            permission=permission or Permission(),
            listener=listener,
            auto_subscribe=auto_subscribe,
            single_connection=single_connection,
            answer_only=answer_only,
            own_port=own_port,
        )
        self.sessions[identity] = session
        self.empty_since = None
        log.info("- room=%s participant=%s joined as %s", self.name, identity, session.sid)
        if not session.permission.hidden:
            self.broadcast(events.ParticipantJoined(session.info()), exclude=session)
        if auto_subscribe:
            for track in self.tracks.values():
                if track.sid not in session.unsubscribed:
                    session.subscribe(track)
        return session

    async def remove(self, session: Session, reason: str) -> None:
        if self.sessions.get(session.identity) is not session:
            return
        del self.sessions[session.identity]
        session.close(reason)
        self.rpc.disconnected(session.identity)
        self.access.forget_participant(session.sid)
        log.info("- room=%s participant=%s left: %s", self.name, session.identity, reason)
        if not session.permission.hidden:
            self.broadcast(events.ParticipantLeft(session.info(), reason))
        if not self.sessions:
            self.empty_since = self.manager.clock()

    async def remove_participant(self, identity: str, reason: str = "removed") -> bool:
        session = self.sessions.get(identity)
        if session is None:
            return False
        await self.remove(session, reason)
        return True

    def mute_published_track(self, identity: str, track_sid: str, muted: bool) -> TrackInfo | None:
        session = self.sessions.get(identity)
        if session is None:
            return None
        if track_sid in session.published:
            return session.mute(track_sid, muted)
        info = session.publishing.mute_pending(track_sid, muted)
        if info is not None:
            # nobody else knows the track yet; its publisher follows
            session.listener.on_room_event(events.TrackMuted(info, muted))
        return info

    def update_participant(
        self,
        identity: str,
        *,
        metadata: str | None = None,
        name: str | None = None,
        attributes: Mapping[str, str] | None = None,
        permission: Permission | None = None,
    ) -> ParticipantInfo | None:
        session = self.sessions.get(identity)
        if session is None:
            return None
        return session.update_metadata(
            metadata=metadata, name=name, attributes=attributes, permission=permission
        )

    def update_metadata(self, metadata: str) -> None:
        """Set the room's metadata; every participant is told at once."""
        self.metadata = metadata
        log.info("- room=%s metadata set (%d bytes)", self.name, len(metadata))
        self.broadcast(events.RoomMetadataChanged(metadata))

    def update_subscriptions(
        self, identity: str, track_sids: Sequence[str], *, subscribe: bool
    ) -> bool:
        """Subscribe ``identity`` to these tracks, or unsubscribe it, as if it had asked
        itself; sids of tracks the room does not have are skipped. False if no such
        participant."""
        session = self.sessions.get(identity)
        if session is None:
            return False
        for track_sid in track_sids:
            if subscribe and track_sid not in self.tracks:
                log.info("x %s cannot subscribe to %s: no such track", session.label, track_sid)
                continue
            session.set_subscribed(track_sid, subscribe)
        return True

    async def perform_rpc(
        self,
        identity: str,
        method: str,
        payload: str,
        *,
        response_timeout_s: float = DEFAULT_RESPONSE_TIMEOUT_S,
    ) -> str | RpcError:
        """Call ``method`` of the client of ``identity``: its answer, or why there is none."""
        session = self.sessions.get(identity)
        if session is None:
            return RpcError.of(RpcCode.RECIPIENT_NOT_FOUND)
        return await self.rpc.call(session, method, payload, response_timeout_s=response_timeout_s)

    def send_data(
        self,
        payload: bytes,
        *,
        topic: str = "",
        kind: str = "reliable",
        destination_identities: Sequence[str] = (),
        sender: str | None = None,
    ) -> None:
        origin = self.sessions.get(sender) if sender else None
        sender_info = origin.info() if origin is not None else ParticipantInfo(sid="", identity="")
        event = events.DataReceived(
            sender_info, payload, topic, kind, tuple(destination_identities)
        )
        self._deliver_data(event, origin)

    def relay_packet(
        self,
        origin: Session,
        packet: bytes,
        *,
        protocol: str,
        kind: str = "reliable",
        destination_identities: Sequence[str] = (),
    ) -> None:
        """Relay a front-end's own data packet as it is (see ``events.PacketRelayed``)."""
        event = events.PacketRelayed(
            origin.info(), protocol, packet, kind, tuple(destination_identities)
        )
        self._deliver_data(event, origin)

    def _deliver_data(
        self, event: events.DataReceived | events.PacketRelayed, origin: Session | None
    ) -> None:
        """To everyone but the sender, or only to the participants the event names."""
        destinations = event.destination_identities
        for identity, session in list(self.sessions.items()):
            if session is origin or (destinations and identity not in destinations):
                continue
            try:
                session.listener.on_room_event(event)
            except Exception:
                log.exception("x room=%s listener of %s failed", self.name, identity)

    # -- subscription permissions (media/permissions.py) ------------------------
    def may_subscribe(self, session: Session, track: PublishedTrack) -> bool:
        """Whether the publisher of ``track`` lets ``session`` subscribe to it. A refusal
        is told to the subscriber, and so is the end of one."""
        info = track.info
        if self.access.allows(info, session.identity):
            if self.access.grant(session.sid, info.sid):
                self._tell_access(session, info, allowed=True)
            return True
        log.info("- %s may not subscribe to %s (publisher's permission)", session.label, info.sid)
        self.access.refuse(session.sid, info.sid)
        self._tell_access(session, info, allowed=False)
        return False

    def set_subscription_permission(
        self, publisher: Session, permission: SubscriptionPermission
    ) -> None:
        """Who may subscribe to ``publisher``'s tracks from now on: subscriptions no
        longer allowed are removed, refused ones that are allowed now come back (as
        LiveKit's revocation and reconcile do)."""
        access = self.access
        access.set_rules(publisher.sid, permission)
        log.info("- %s lets subscribe: %s", publisher.label, permission.describe())
        for track in list(publisher.published.values()):
            info = track.info
            for other in list(self.sessions.values()):
                if other is publisher:
                    continue
                if not access.allows(info, other.identity):
                    if info.sid in other.downtracks:
                        log.info("- %s loses %s (publisher's permission)", other.label, info.sid)
                        other.unsubscribe(info.sid)
                        access.refuse(other.sid, info.sid)
                        self._tell_access(other, info, allowed=False)
                elif access.refused(other.sid, info.sid):
                    if info.sid in other.unsubscribed:
                        access.grant(other.sid, info.sid)
                        self._tell_access(other, info, allowed=True)
                    else:
                        other.subscribe(track)  # may_subscribe tells it

    def _tell_access(self, session: Session, track: TrackInfo, *, allowed: bool) -> None:
        # Soon rather than now: this may happen within join, before it returns.
        event = events.SubscriptionPermissionChanged(track, allowed)
        asyncio.get_running_loop().call_soon(self._deliver_to, session, event)

    def _deliver_to(self, session: Session, event: events.RoomEvent) -> None:
        if session.closed or self.sessions.get(session.identity) is not session:
            return
        try:
            session.listener.on_room_event(event)
        except Exception:
            log.exception("x room=%s listener of %s failed", self.name, session.identity)

    # -- tracks ---------------------------------------------------------------
    def publish(self, session: Session, track: PublishedTrack) -> None:
        self.tracks[track.sid] = track
        self.broadcast(events.TrackPublished(track.info), exclude=session)
        self.broadcast(events.ParticipantUpdated(session.info()), exclude=session)
        for other in self.sessions.values():
            if (
                other is not session
                and other.auto_subscribe
                and track.sid not in other.unsubscribed
            ):
                other.subscribe(track)

    def unpublish(self, session: Session, track: PublishedTrack) -> None:
        self.tracks.pop(track.sid, None)
        self.access.forget_track(track.sid)
        for other in self.sessions.values():
            other.unsubscribe(track.sid)
        track.close()
        self.broadcast(events.TrackUnpublished(track.info), exclude=session)
        if not session.closed:
            self.broadcast(events.ParticipantUpdated(session.info()), exclude=session)

    def on_layer_started(self, track: PublishedTrack, layer: object) -> None:
        """A new layer began arriving: subscribers may move to a better one."""
        now = self.manager.clock()
        for downtrack in track.downtracks.values():
            if downtrack.negotiated:
                downtrack.select_layer(now)

    # -- events -----------------------------------------------------------------
    def broadcast(self, event: events.RoomEvent, exclude: Session | None = None) -> None:
        for session in list(self.sessions.values()):
            if session is exclude:
                continue
            try:
                session.listener.on_room_event(event)
            except Exception:
                log.exception("x room=%s listener of %s failed", self.name, session.identity)
        self.manager.notify(self, event)

    # -- timers ----------------------------------------------------------------
    def tick(self, now: float, *, reports: bool, speakers: bool) -> None:
        for session in list(self.sessions.values()):
            session.publisher.periodic(now, reports=reports)
            if reports and session.subscriber is not session.publisher:
                session.subscriber.periodic(now, reports=True)
            if reports:
                session.downlink.allocate(now)
                session.update_quality()
        if reports:
            self._report_wanted_qualities()
        if speakers:
            self._update_speakers(now)

    def _report_wanted_qualities(self) -> None:
        """Dynacast: tell each simulcast publisher which of its layers are watched."""
        for track in self.tracks.values():
            if track.kind is not TrackKind.VIDEO or track.closed:
                continue
            wanted = track.wanted_qualities()
            if len(wanted) == 0 or wanted == track.reported_qualities:
                continue
            if track.reported_qualities is None and len(track.info.layers) < 2:
                continue  # not simulcast: nothing to pause
            track.reported_qualities = wanted
            publisher = track.publisher.session
            try:
                publisher.listener.on_room_event(
                    events.SubscribedQualitiesChanged(track.info, wanted)
                )
            except Exception:
                log.exception("x room=%s listener of %s failed", self.name, publisher.identity)

    def _update_speakers(self, now: float) -> None:
        active: list[tuple[str, float]] = []
        for track in self.tracks.values():
            if track.kind is not TrackKind.AUDIO or track.muted:
                continue
            layer = track.best_layer()
            amplitude = 0.0
            if layer is not None and now - layer.last_packet_at < 0.5:
                amplitude = math.pow(10.0, -layer.level / 20.0)
            sid = track.info.participant_sid
            smoothed = 0.6 * self._levels.get(sid, 0.0) + 0.4 * amplitude
            self._levels[sid] = smoothed
            if smoothed > SPEAKER_THRESHOLD:
                active.append((sid, smoothed))
        active.sort(key=lambda pair: -pair[1])
        order = tuple(sid for sid, _ in active)
        if order != self._speakers:
            previous = set(self._speakers)
            self._speakers = order
            now_active = set(order)
            changes = [(sid, min(1.0, level), True) for sid, level in active]
            changes += [(sid, 0.0, False) for sid in previous - now_active]
            self.broadcast(events.SpeakersChanged(tuple(changes)))

    def close(self, reason: str) -> None:
        self.closed = True
        for session in list(self.sessions.values()):
            self.sessions.pop(session.identity, None)
            session.close(reason)


EndpointFactory = Callable[[EndpointHandler, str, bool], Endpoint]
"""Makes the transport endpoint of one peer connection (the worker's socket, or one of
its own when the third argument says so, and the worker's certificate)."""


class RoomManager:
    """The rooms of one worker: create, find, delete, and their events to observers.

    It owns no socket, timer or configuration: the worker (mediafed/worker.py) gives
    it a clock and an endpoint factory, and drives it with :meth:`tick`.
    """

    def __init__(
        self,
        *,
        new_endpoint: EndpointFactory,
        clock: Callable[[], float] = time.monotonic,
        rtx_cache_s: float = 1.0,
    ) -> None:
        self.clock = clock
        self._new_endpoint = new_endpoint
        self.rtx_cache_s = rtx_cache_s
        """How long received packets stay available for retransmission."""
        self._rooms: dict[str, Room] = {}
        self._observers: list[RoomObserver] = []
        self.dropped: dict[str, int] = {}
        """What participants sent beyond a limit, by kind (see :meth:`drop`)."""
        self._drop_logged: dict[str, float] = {}
        self.retired = dict.fromkeys(RETIRED_COUNTS, 0)
        """What DownTracks and endpoints now gone counted: /metrics totals never fall."""

    def close(self, reason: str) -> None:
        """The worker stops: every room ends."""
        for room in list(self._rooms.values()):
            room.close(reason)
        self._rooms.clear()

    # -- rooms ------------------------------------------------------------------
    def get_or_create(
        self,
        name: str,
        *,
        empty_timeout_s: int = 300,
        max_participants: int = 0,
        metadata: str = "",
    ) -> Room:
        room = self._rooms.get(name)
        if room is None:
            if not name or len(name) > 256:
                raise LocalProtocolError("room names must be 1-256 characters")
            room = Room(
                self,
                name,
                empty_timeout_s=empty_timeout_s,
                max_participants=max_participants,
                metadata=metadata,
            )
            self._rooms[name] = room
            log.info("- room=%s created (%s)", name, room.sid)
            self.notify(room, events.RoomCreated())
        return room

    def get(self, name: str) -> Room | None:
        return self._rooms.get(name)

    def rooms(self) -> list[Room]:
        return list(self._rooms.values())

    async def delete(self, name: str, reason: str = "room deleted") -> bool:
        return self._delete(name, reason)

    def _delete(self, name: str, reason: str) -> bool:
        room = self._rooms.pop(name, None)
        if room is None:
            return False
        room.close(reason)
        log.info("- room=%s deleted: %s", name, reason)
        self.notify(room, events.RoomClosed(reason))
        return True

    def add_observer(self, observer: RoomObserver) -> None:
        """Receive every room event (webhooks, bridges); must not block."""
        self._observers.append(observer)

    def notify(self, room: Room, event: events.RoomEvent) -> None:
        for observer in self._observers:
            try:
                observer(room, event)
            except Exception:
                log.exception("x room observer failed")

    # -- factories for the layers below ---------------------------------------
    def new_endpoint(self, peer: MediaPeer, label: str, *, own_port: bool = False) -> Endpoint:
        return self._new_endpoint(peer, label, own_port)

    def new_twcc_recorder(self, sender_ssrc: int) -> TransportCcRecorder:
        return TransportCcRecorder(sender_ssrc)

    def retire_downtrack(self, downtrack: DownTrack) -> None:
        """A subscription ended: what it forwarded stays in the totals."""
        retired = self.retired
        retired["packets_sent"] += downtrack.packets_sent
        retired["octets_sent"] += downtrack.octets_sent
        retired["retransmitted"] += downtrack.retransmitted

    def retire_endpoint(self, endpoint: Endpoint) -> None:
        """A connection closed: its failed SRTP authentications stay in the totals."""
        self.retired["srtp_auth_failed"] += endpoint.stats["srtp_auth_failed"]

    def drop(self, kind: str, label: str, message: str) -> None:
        """Something a participant sent went over a limit (:mod:`mediafed.media.limits`)
        and was dropped: counted under ``kind``; one log line per kind per interval."""
        self.dropped[kind] = self.dropped.get(kind, 0) + 1
        now = self.clock()
        if now - self._drop_logged.get(kind, -DROP_LOG_INTERVAL_S) >= DROP_LOG_INTERVAL_S:
            self._drop_logged[kind] = now
            log.info("x %s %s (dropped: %s, %d so far)", label, message, kind, self.dropped[kind])

    @staticmethod
    def random_ssrc() -> int:
        return random.getrandbits(32) or 1

    # -- timers ------------------------------------------------------------------
    def tick(self, now: float, *, reports: bool, speakers: bool) -> None:
        """The worker's timers: every room's periodic work (NACKs, feedback, reports,
        allocation, speakers); once a second also the rooms left empty too long."""
        for room in list(self._rooms.values()):
            try:
                room.tick(now, reports=reports, speakers=speakers)
            except Exception:
                log.exception("x room=%s timer work failed", room.name)
        if reports:
            for room in list(self._rooms.values()):
                if room.empty_since is not None and now - room.empty_since > room.empty_timeout_s:
                    self._delete(room.name, "empty timeout")
