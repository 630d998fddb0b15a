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
    | SessionClosed
    | SubscribedQualitiesChanged
    | StreamStateChanged
    | RoomClosed
)
