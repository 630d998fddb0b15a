"""Events the room core delivers to each session's listener (frozen, slotted)."""

from __future__ import annotations

from dataclasses import dataclass

from mediafed.media.types import ParticipantInfo, TrackInfo


@dataclass(frozen=True, slots=True)
class ParticipantJoined:
    participant: ParticipantInfo


@dataclass(frozen=True, slots=True)
class ParticipantUpdated:
    participant: ParticipantInfo


@dataclass(frozen=True, slots=True)
class ParticipantLeft:
    participant: ParticipantInfo
    reason: str


@dataclass(frozen=True, slots=True)
class TrackPublished:
    track: TrackInfo


@dataclass(frozen=True, slots=True)
class TrackUnpublished:
    track: TrackInfo


@dataclass(frozen=True, slots=True)
class TrackMuted:
    track: TrackInfo
    muted: bool


@dataclass(frozen=True, slots=True)
class SpeakersChanged:
    speakers: tuple[tuple[str, float, bool], ...]
    """(participant sid, level 0..1, active)"""


@dataclass(frozen=True, slots=True)
class DataReceived:
    sender: ParticipantInfo
    payload: bytes
    topic: str
    kind: str
    destination_identities: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PacketRelayed:
    """A data packet in a front-end's own format (``protocol``: ``"livekit"`` for a
    LiveKit ``DataPacket``), relayed as it is: that front-end asserted the sender in
    it; front-ends of other protocols ignore it. ``kind``: reliable or lossy."""

    sender: ParticipantInfo
    protocol: str
    packet: bytes
    kind: str
    destination_identities: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SubscriptionPermissionChanged:
    """To a subscriber only: the publisher of ``track`` no longer lets it subscribe
    (its subscription is removed), or lets it again (LiveKit's
    ``SubscriptionPermissionUpdate``)."""

    track: TrackInfo
    allowed: bool


@dataclass(frozen=True, slots=True)
class SessionClosed:
    reason: str


@dataclass(frozen=True, slots=True)
class SubscribedQualitiesChanged:
    """To a publisher only: the simulcast qualities of its track someone watches
    (LiveKit's dynacast); layers not listed may be paused to save its uplink."""

    track: TrackInfo
    qualities: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class StreamStateChanged:
    """To a subscriber only: a video it receives is paused because its downlink does
    not carry even the lowest layer, or flows again (LiveKit's StreamStateUpdate)."""

    track: TrackInfo
    paused: bool


@dataclass(frozen=True, slots=True)
class RoomCreated:
    """A room began: made by a join or the RoomService API (observers only)."""


@dataclass(frozen=True, slots=True)
class RpcRequested:
    """To one participant only: the server calls ``method`` of its client (RoomService
    ``PerformRpc``); the answer goes back through ``Room.rpc`` (media/rpc.py)."""

    request_id: str
    method: str
    payload: str
    response_timeout_ms: int


@dataclass(frozen=True, slots=True)
class RoomMetadataChanged:
    """The room's metadata was changed (RoomService ``UpdateRoomMetadata``): every
    client is told the room's new state (LiveKit's ``room_update``)."""

    metadata: str


@dataclass(frozen=True, slots=True)
class RoomClosed:
    """The room was deleted or expired empty (observers only)."""

    reason: str


RoomEvent = (
    ParticipantJoined
    | ParticipantUpdated
    | ParticipantLeft
    | TrackPublished
    | TrackUnpublished
    | TrackMuted
    | SpeakersChanged
    | DataReceived
    | PacketRelayed
    | SubscriptionPermissionChanged
    | SessionClosed
    | SubscribedQualitiesChanged
    | StreamStateChanged
    | RoomCreated
    | RpcRequested
    | RoomMetadataChanged
    | RoomClosed
)
