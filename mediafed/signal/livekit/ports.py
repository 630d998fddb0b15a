"""The room core's types as this front-end names them (:mod:`mediafed.media`).

The front-end drives the real session API; its tests drive it with small
stand-ins that use the same values and events (tests/signal/livekit_fakes.py).
"""

from __future__ import annotations

from mediafed.media import (
    LayerInfo as LayerView,
    ParticipantInfo as ParticipantView,
    Permission as PermissionView,
    Room as RoomPort,
    RoomManager as RoomDirectory,
    Session as SessionPort,
    SessionListener,
    TrackInfo as TrackView,
)

__all__ = [
    "LayerView",
    "ParticipantView",
    "PermissionView",
    "RoomDirectory",
    "RoomPort",
    "SessionListener",
    "SessionPort",
    "TrackView",
]
