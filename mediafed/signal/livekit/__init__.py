"""LiveKit-compatible front-end: ``/rtc`` signaling, validation, dev tokens, RoomService.

Speaks the LiveKit client protocol (livekit/protocol ``livekit_rtc.proto``,
signal protocol v0 with publisher and subscriber peer connections) so every
LiveKit SDK and Element Call can use mediafed. It translates protobuf to the
room core's session API (:mod:`mediafed.media`) and never touches packets.
"""

from __future__ import annotations

from aiohttp import web

from mediafed.config import Config
from mediafed.signal.livekit.devtoken import add_dev_token_route
from mediafed.signal.livekit.ports import RoomDirectory
from mediafed.signal.livekit.twirp import add_twirp_routes
from mediafed.signal.livekit.validate import add_validate_routes
from mediafed.signal.livekit.ws import add_rtc_route


def setup_livekit(app: web.Application, config: Config, rooms: RoomDirectory) -> None:
    """Add the LiveKit routes to ``app``; ``rooms`` is the node's RoomManager."""
    add_validate_routes(app, config)
    add_dev_token_route(app, config)
    add_rtc_route(app, config, rooms)
    add_twirp_routes(app, config, rooms)


__all__ = ["setup_livekit"]
