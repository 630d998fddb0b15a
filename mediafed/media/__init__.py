"""The room core: rooms, participants, published tracks and DownTracks.

Front-ends use the session API of :mod:`mediafed.media.session` (see its
docstring) through the names exported here, never ``mediafed.transport``.
"""

from mediafed.media import events
from mediafed.media.permissions import SubscriptionPermission, TrackPermission
from mediafed.media.room import Room, RoomManager
from mediafed.media.session import Session, SessionListener
from mediafed.media.types import (
    LayerInfo,
    ParticipantInfo,
    PeerRole,
    Permission,
    TrackInfo,
    TrackKind,
    TrackSource,
)

__all__ = [
    "LayerInfo",
    "ParticipantInfo",
    "PeerRole",
    "Permission",
    "Room",
    "RoomManager",
    "Session",
    "SessionListener",
    "SubscriptionPermission",
    "TrackInfo",
    "TrackKind",
    "TrackPermission",
    "TrackSource",
    "events",
]
