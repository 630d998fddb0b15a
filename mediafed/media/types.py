"""Values the room core hands to front-ends: tracks, participants, permissions.

All frozen and slotted: a front-end gets a snapshot, never live state.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field


class TrackKind(enum.StrEnum):
    AUDIO = "audio"
    VIDEO = "video"


class TrackSource(enum.StrEnum):
    UNKNOWN = "unknown"
    CAMERA = "camera"
    MICROPHONE = "microphone"
    SCREEN_SHARE = "screen_share"
    SCREEN_SHARE_AUDIO = "screen_share_audio"


class PeerRole(enum.StrEnum):
    PUBLISHER = "publisher"
    SUBSCRIBER = "subscriber"


@dataclass(frozen=True, slots=True)
class Permission:
    can_publish: bool = True
    can_subscribe: bool = True
    can_publish_data: bool = True
    can_publish_sources: tuple[str, ...] = ()
    hidden: bool = False
    can_update_metadata: bool = False

    def may_publish(self, source: TrackSource) -> bool:
        return self.can_publish and (
            not self.can_publish_sources or source.value in self.can_publish_sources
        )


@dataclass(frozen=True, slots=True)
class LayerInfo:
    quality: int
    """0 low, 1 medium, 2 high (LiveKit's VideoQuality)."""
    width: int = 0
    height: int = 0
    bitrate_bps: int = 0
    rid: str = ""


@dataclass(frozen=True, slots=True)
class TrackInfo:
    sid: str
    cid: str
    participant_sid: str
    participant_identity: str
    kind: TrackKind
    source: TrackSource = TrackSource.UNKNOWN
    name: str = ""
    mime: str = ""
    muted: bool = False
    width: int = 0
    height: int = 0
    simulcast: bool = False
    layers: tuple[LayerInfo, ...] = ()
    encryption: int = 0
    stream: str = ""
    mid: str = ""
    trailer_features: tuple[int, ...] = ()
    """The publisher's packet trailer features (LiveKit's frame metadata: user
    timestamp, frame id), opaque to the relay, which forwards the trailer as is."""


@dataclass(frozen=True, slots=True)
class ParticipantInfo:
    sid: str
    identity: str
    name: str = ""
    metadata: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)
    joined_at: float = 0.0
    version: int = 0
    state: str = "joining"
    permission: Permission = Permission()
    hidden: bool = False
    tracks: tuple[TrackInfo, ...] = ()
    is_publisher: bool = False


def new_sid(prefix: str) -> str:
    """LiveKit-style ids: ``PA_``, ``TR_``, ``RM_`` + 12 random characters."""
    return prefix + secrets.token_urlsafe(9).replace("-", "x").replace("_", "y")
