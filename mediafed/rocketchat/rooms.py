"""External rooms (``rocketchat:<rid>``, Matrix room ids) and the mediafed rooms
their calls run in when no bridge links them.

A Matrix room's call runs in its MatrixRTC room
(:func:`mediafed.matrix.focus.room_call_alias`), where its Element Call users and
classic callers are; a Rocket.Chat room's in ``rc-<rid>``. Matrix room ids of
every room version are taken (``!opaque:server``, version 12's ``!hash``) and
never split.
"""

from __future__ import annotations

import re

from mediafed.matrix.focus import room_call_alias
from mediafed.matrix.ids import FORMS, RoomIdError, check_room_id
from mediafed.rocketchat.models import CallError

RC_ROOM = re.compile(r"^rocketchat:([A-Za-z0-9_.-]{1,64})$")
ROOM_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


def external_kind(external_room: str) -> str:
    """``"rocketchat"`` or ``"matrix"``; CallError saying what was expected otherwise."""
    if RC_ROOM.match(external_room):
        return "rocketchat"
    if external_room.startswith(("!", "#")):
        try:
            check_room_id(external_room)
        except RoomIdError as exc:
            raise CallError(f"external_room: {exc}") from None
        return "matrix"
    raise CallError(
        f"external_room {external_room!r} is neither 'rocketchat:<room id>' nor a Matrix "
        f"room id ({FORMS})"
    )


def room_for_external(external_room: str) -> str:
    """The mediafed room of an unbridged external room's calls: ``rc-<rid>`` for a
    Rocket.Chat room, the MatrixRTC room of a Matrix room (where its Matrix users are)."""
    if external_kind(external_room) == "matrix":
        return room_call_alias(external_room)
    return f"rc-{external_room.partition(':')[2]}"


def default_bridge_name(external_room: str) -> str:
    """The name ``mediafed bridge link`` gives a link when none is given: ``rc-<rid>``,
    or ``mx-`` and the Matrix room id with what room names cannot hold replaced."""
    if external_kind(external_room) == "matrix":
        return "mx-" + re.sub(r"[^A-Za-z0-9_.-]", "_", external_room[1:])[:120]
    return f"rc-{external_room.partition(':')[2]}"


def check_matrix_room(matrix_room: str) -> str:
    """A Matrix room id to link (any room version), or CallError saying what to give."""
    try:
        return check_room_id(matrix_room)
    except RoomIdError as exc:
        raise CallError(f"matrix_room: {exc}") from None
