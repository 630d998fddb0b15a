"""Composition of the LiveKit front-end: ``/rtc``, ``/rtc/validate`` and, on a
node in dev mode, ``/dev/token``.

The composition root (:mod:`mediafed.server`) hands it the node's rooms and
what it needs of the configuration: the API key pairs and the dev flag.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aiohttp import web

from mediafed.media import RoomManager
from mediafed.signal.livekit.devtoken import add_dev_token_route
from mediafed.signal.livekit.rtc import RtcEndpoint, add_rtc_route
from mediafed.signal.livekit.validate import add_validate_routes
from mediafed.transport.turn import TurnServer


def setup_livekit(
    app: web.Application,
    rooms: RoomManager,
    *,
    keys: Mapping[str, str],
    dev: bool = False,
    turn_servers: Sequence[TurnServer] = (),
) -> RtcEndpoint:
    """Add the LiveKit routes to ``app``; ``rooms`` is the node's RoomManager,
    ``turn_servers`` what clients get in their ``ice_servers``."""
    add_validate_routes(app, keys)
    if dev:
        add_dev_token_route(app, keys)
    return add_rtc_route(app, keys, rooms, turn_servers=turn_servers)
