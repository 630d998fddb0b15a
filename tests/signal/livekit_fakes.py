"""Stand-ins for the room core's session API, to drive the LiveKit front-end alone.

They follow the session API contract (``mediafed.media``) closely enough for
the front-end's translation and state handling; real media is exercised by
the end-to-end tests with real clients.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

_ids = itertools.count(1)


# The real values and events of the room core: only its behaviour is faked here.
from mediafed.media.events import (  # noqa: E402
    DataReceived,
    PacketRelayed,
    ParticipantJoined,
    ParticipantLeft,
    ParticipantUpdated,
    SessionClosed,
    SpeakersChanged,
    TrackMuted,
    TrackPublished,
    TrackUnpublished,
)
from mediafed.media.quality import Level, Quality  # noqa: E402
from mediafed.media.types import LayerInfo, ParticipantInfo, Permission, TrackInfo  # noqa: E402

__all__ = [
    "DataReceived",
    "LayerInfo",
    "ParticipantInfo",
    "ParticipantJoined",
    "ParticipantLeft",
    "ParticipantUpdated",
    "Permission",
    "SessionClosed",
    "SpeakersChanged",
    "TrackInfo",
    "TrackMuted",
    "TrackPublished",
    "TrackUnpublished",
]

DEFAULT_PERMISSION = Permission()


class FakeSession:
    def __init__(self, room: FakeRoom, info: ParticipantInfo, listener: Any) -> None:
        self.room = room
        self._info = info
        self.listener = listener
        self.sid = info.sid
        self.identity = info.identity
        self.closed = False
        self.pending: dict[str, TrackInfo] = {}
        self.offers: list[str] = []
        self.answers: list[tuple[str, int]] = []
        self.candidates: list[tuple[str, str]] = []
        self.subscriptions: dict[str, bool] = {}
        self.settings: dict[str, dict[str, Any]] = {}
        self.sent_data: list[tuple[bytes, str, str, tuple[str, ...]]] = []
        self.ice_restarts = 0
        self.channel_out: list[tuple[str, bytes]] = []
        self.single = False
        """Only v0 (two connections) is faked; v1 runs against real sessions."""
        self.max_pending = 8
        self.started = False

    def info(self) -> ParticipantInfo:
        return self._info

    @property
    def permission(self) -> Permission:
        return self._info.permission

    def _bump(self, **changes: Any) -> ParticipantInfo:
        self._info = replace(self._info, version=self._info.version + 1, **changes)
        self.room.broadcast(ParticipantUpdated(self._info), exclude=self.identity)
        return self._info

    def announce_track(
        self,
        cid: str,
        kind: Any,
        *,
        source: Any = "unknown",
        name: str = "",
        width: int = 0,
        height: int = 0,
        muted: bool = False,
        layers: Sequence[Any] = (),
        encryption: int = 0,
        stream: str = "",
        trailer_features: tuple[int, ...] = (),
        codec: str = "",
    ) -> TrackInfo:
        from mediafed.errors import AuthError, LocalProtocolError

        perm = self._info.permission
        if not perm.can_publish or (
            perm.can_publish_sources and str(source) not in perm.can_publish_sources
        ):
            raise AuthError(f"not allowed to publish {source}")
        if cid in self.pending or any(t.cid == cid for t in self._info.tracks):
            raise LocalProtocolError(f"track cid {cid!r} already announced")
        if len(self.pending) >= self.max_pending:
            raise LocalProtocolError("too many pending tracks; publish the ones announced first")
        track = TrackInfo(
            sid=f"TR_{next(_ids)}",
            cid=cid,
            participant_sid=self.sid,
            participant_identity=self.identity,
            kind=str(kind),
            source=str(source),
            name=name,
            muted=muted,
            width=width,
            height=height,
            simulcast=len(layers) > 1,
            layers=tuple(layers),
            encryption=encryption,
            stream=stream,
            trailer_features=trailer_features,
        )
        self.pending[cid] = track
        return track

    async def answer_publisher_offer(self, sdp: str) -> str:
        from mediafed.errors import NegotiationError

        if "m=" not in sdp:
            raise NegotiationError("offer has no media sections; send a full SDP offer")
        self.offers.append(sdp)
        published = list(self.pending.values())
        self.pending.clear()
        if published:
            self._info = replace(
                self._info,
                tracks=self._info.tracks + tuple(published),
                is_publisher=True,
                version=self._info.version + 1,
            )
            for track in published:
                self.room.broadcast(TrackPublished(track), exclude=None)
        return "v=0\r\nanswer-for-" + str(len(self.offers)) + "\r\n"

    async def accept_subscriber_answer(self, sdp: str, offer_id: int) -> None:
        self.answers.append((sdp, offer_id))

    def add_remote_candidate(self, target: str, candidate: str) -> None:
        self.candidates.append((target, candidate))

    async def restart_ice(self) -> None:
        self.ice_restarts += 1
        self.listener.on_subscriber_offer("v=0\r\nrestart\r\n", 100 + self.ice_restarts)

    def start_subscriber(self) -> None:
        self.started = True

    def set_subscribed(self, track_sid: str, subscribed: bool) -> None:
        self.subscriptions[track_sid] = subscribed

    def update_track_settings(
        self,
        track_sid: str,
        *,
        disabled: bool = False,
        quality: int = 2,
        width: int = 0,
        height: int = 0,
        fps: int = 0,
    ) -> None:
        self.settings[track_sid] = dict(
            disabled=disabled, quality=quality, width=width, height=height, fps=fps
        )

    def mute(self, track_sid: str, muted: bool) -> TrackInfo:
        from mediafed.errors import LocalProtocolError

        for track in self._info.tracks:
            if track.sid == track_sid:
                new = replace(track, muted=muted)
                self._info = replace(
                    self._info,
                    tracks=tuple(new if t.sid == track_sid else t for t in self._info.tracks),
                    version=self._info.version + 1,
                )
                self.room.broadcast(TrackMuted(new, muted), exclude=self.identity)
                return new
        raise LocalProtocolError(f"no published track {track_sid}")

    def unpublish(self, track_sid: str) -> None:
        gone = [t for t in self._info.tracks if t.sid == track_sid]
        self._info = replace(
            self._info, tracks=tuple(t for t in self._info.tracks if t.sid != track_sid)
        )
        for track in gone:
            self.room.broadcast(TrackUnpublished(track), exclude=self.identity)

    def update_metadata(
        self,
        *,
        metadata: str | None = None,
        name: str | None = None,
        attributes: Mapping[str, str] | None = None,
    ) -> ParticipantInfo:
        changes: dict[str, Any] = {}
        if metadata is not None:
            changes["metadata"] = metadata
        if name is not None:
            changes["name"] = name
        if attributes is not None:
            changes["attributes"] = dict(attributes)
        return self._bump(**changes)

    def send_data(
        self,
        payload: bytes,
        *,
        topic: str = "",
        kind: Any = "reliable",
        destination_identities: Sequence[str] = (),
    ) -> None:
        from mediafed.errors import AuthError

        if not self._info.permission.can_publish_data:
            raise AuthError(f"{self.identity} may not publish data")
        self.sent_data.append((payload, topic, str(kind), tuple(destination_identities)))
        self.room.send_data(
            payload,
            topic=topic,
            kind=kind,
            destination_identities=destination_identities,
            sender=self.identity,
        )

    def relay_packet(
        self,
        packet: bytes,
        *,
        protocol: str,
        kind: str = "reliable",
        destination_identities: Sequence[str] = (),
    ) -> None:
        from mediafed.errors import AuthError

        if not self._info.permission.can_publish_data:
            raise AuthError(f"{self.identity} may not publish data")
        self.room.relay_packet(
            self,
            packet,
            protocol=protocol,
            kind=kind,
            destination_identities=destination_identities,
        )

    def set_subscription_permission(self, permission: Any) -> None:
        self.subscription_permission = permission

    def send_data_message(self, kind: str, data: bytes) -> bool:
        self.channel_out.append((kind, data))
        return True

    def connection_quality(self) -> Quality:
        return Quality(Level.EXCELLENT, 90.0)

    async def leave(self, reason: str = "client request") -> None:
        if self.closed:
            return
        self.closed = True
        self.room.sessions.pop(self.identity, None)
        left = replace(self._info, state="disconnected", version=self._info.version + 1)
        self.room.broadcast(ParticipantLeft(left, reason), exclude=None)


class FakeRoom:
    def __init__(
        self, name: str, metadata: str = "", max_participants: int = 0, empty_timeout_s: int = 300
    ) -> None:
        self.name = name
        self.sid = f"RM_{next(_ids)}"
        self.created_at = time.time()
        self.metadata = metadata
        self.max_participants = max_participants
        self.empty_timeout_s = empty_timeout_s
        self.sessions: dict[str, FakeSession] = {}

    @property
    def num_participants(self) -> int:
        return len(self.sessions)

    def broadcast(self, event: Any, exclude: str | None) -> None:
        for identity, session in list(self.sessions.items()):
            if identity != exclude:
                session.listener.on_room_event(event)

    def participants(self) -> list[ParticipantInfo]:
        return [s.info() for s in self.sessions.values()]

    def participant(self, identity: str) -> ParticipantInfo | None:
        session = self.sessions.get(identity)
        return session.info() if session else None

    async def join(
        self,
        identity: str,
        *,
        name: str = "",
        metadata: str = "",
        attributes: Mapping[str, str] = {},
        permission: Any = DEFAULT_PERMISSION,
        listener: Any,
        auto_subscribe: bool = True,
        answer_only: bool = False,
    ) -> FakeSession:
        old = self.sessions.get(identity)
        if old is not None:
            old.closed = True
            del self.sessions[identity]
            old.listener.on_room_event(SessionClosed("duplicate identity"))
        info = ParticipantInfo(
            sid=f"PA_{next(_ids)}",
            identity=identity,
            name=name,
            metadata=metadata,
            attributes=dict(attributes),
            joined_at=time.time(),
            permission=permission,
            hidden=permission.hidden,
            state="joined",
            version=1,
        )
        session = FakeSession(self, info, listener)
        self.broadcast(ParticipantJoined(info), exclude=None)
        self.sessions[identity] = session
        return session

    async def remove_participant(self, identity: str, reason: str = "removed") -> bool:
        session = self.sessions.get(identity)
        if session is None:
            return False
        session.listener.on_room_event(SessionClosed(reason))
        await session.leave(reason)
        return True

    def mute_published_track(self, identity: str, track_sid: str, muted: bool) -> TrackInfo | None:
        session = self.sessions.get(identity)
        if session is None or not any(t.sid == track_sid for t in session.info().tracks):
            return None
        track = session.mute(track_sid, muted)
        session.listener.on_room_event(TrackMuted(track, muted))
        return track

    def update_participant(
        self,
        identity: str,
        *,
        metadata: str | None = None,
        name: str | None = None,
        attributes: Any = None,
        permission: Any = None,
    ) -> ParticipantInfo | None:
        session = self.sessions.get(identity)
        if session is None:
            return None
        changes: dict[str, Any] = {}
        for key, value in (
            ("metadata", metadata),
            ("name", name),
            ("attributes", attributes),
            ("permission", permission),
        ):
            if value is not None:
                changes[key] = value
        info = session._bump(**changes)
        session.listener.on_room_event(ParticipantUpdated(info))
        return info

    def send_data(
        self,
        payload: bytes,
        *,
        topic: str = "",
        kind: Any = "reliable",
        destination_identities: Sequence[str] = (),
        sender: str | None = None,
    ) -> None:
        sender_info = (
            self.sessions[sender].info()
            if sender in self.sessions
            else ParticipantInfo(sid="", identity="")
        )
        event = DataReceived(sender_info, payload, topic, str(kind), tuple(destination_identities))
        for identity, session in self.sessions.items():
            if identity == sender:
                continue
            if destination_identities and identity not in destination_identities:
                continue
            session.listener.on_room_event(event)

    def relay_packet(
        self,
        origin: FakeSession,
        packet: bytes,
        *,
        protocol: str,
        kind: str = "reliable",
        destination_identities: Sequence[str] = (),
    ) -> None:
        destinations = tuple(destination_identities)
        event = PacketRelayed(origin.info(), protocol, packet, kind, destinations)
        for identity, session in self.sessions.items():
            if session is origin or (destinations and identity not in destinations):
                continue
            session.listener.on_room_event(event)


class FakeRoomManager:
    def __init__(self) -> None:
        self._rooms: dict[str, FakeRoom] = {}
        self.dropped: dict[str, int] = {}

    def drop(self, kind: str, label: str, message: str) -> None:
        self.dropped[kind] = self.dropped.get(kind, 0) + 1

    def get_or_create(
        self,
        name: str,
        *,
        empty_timeout_s: int = 300,
        max_participants: int = 0,
        metadata: str = "",
    ) -> FakeRoom:
        room = self._rooms.get(name)
        if room is None:
            room = self._rooms[name] = FakeRoom(name, metadata, max_participants, empty_timeout_s)
        return room

    def get(self, name: str) -> FakeRoom | None:
        return self._rooms.get(name)

    def rooms(self) -> list[FakeRoom]:
        return list(self._rooms.values())

    async def delete(self, name: str) -> bool:
        room = self._rooms.pop(name, None)
        if room is None:
            return False
        for identity in list(room.sessions):
            await room.remove_participant(identity, "room deleted")
        return True
