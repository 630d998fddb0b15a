"""Matrix room ids in every form the spec allows, checked where people type them.

Matrix spec, appendix "Identifier Grammar", "Room IDs", and the room version
specifications: in room versions 1 to 11 a room id is ``!opaque_id:domain``
(the localpart may hold anything but ``:`` and NUL; ``domain`` is a server
name); from room version 12 on (MSC4291, Matrix 1.16; the default of Synapse
1.163) it is ``!`` and the reference hash of the room's create event, 43
characters of unpadded URL-safe base64, with no domain at all. Either way the
whole id is at most 255 bytes.

A room id is opaque: nothing here hands out its domain. "Room IDs are not
routable on their own" (appendix "Routing"); where a server is needed — to join
a room over federation, say — it comes from an event's ``sender``, a ``via``
or the homeserver the request came from, never from the room id.
"""

from __future__ import annotations

import re

from mediafed.errors import MediafedError
from mediafed.matrix.openid import ServerNameError, parse_server_name

ROOM_ID_MAX_BYTES = 255
HASH_LENGTH = 43
"""Characters after ``!`` in a room version 12 id: a SHA-256 in unpadded base64."""
_HASH = re.compile(rf"[A-Za-z0-9_-]{{{HASH_LENGTH}}}")
_SPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")
WHERE_TO_FIND = (
    "copy the room id from the room's settings (Element: Settings > Advanced > Internal room ID)"
)
FORMS = (
    "'!' and 43 letters, digits, '-' or '_' (room version 12 and later), "
    "or '!opaque:server' (room versions 1 to 11)"
)


class RoomIdError(MediafedError):
    """Text that is not a Matrix room id; the message says which form was expected."""


def check_room_id(text: str) -> str:
    """``text`` if it is a Matrix room id of any room version, else RoomIdError."""
    shown = repr(text) if len(text) <= 80 else repr(text[:77]) + "…"
    if text.startswith("#"):
        raise RoomIdError(f"{shown} is a room alias, not a room id; {WHERE_TO_FIND}")
    if not text.startswith("!"):
        raise RoomIdError(f"{shown} is not a Matrix room id: a room id is {FORMS}; {WHERE_TO_FIND}")
    if len(text.encode("utf-8", "surrogatepass")) > ROOM_ID_MAX_BYTES:
        raise RoomIdError(
            f"{shown} is not a Matrix room id: it is longer than {ROOM_ID_MAX_BYTES} bytes; "
            f"{WHERE_TO_FIND}"
        )
    if _SPACE_OR_CONTROL.search(text):
        raise RoomIdError(
            f"{shown} is not a Matrix room id: it holds a space or control character; "
            f"{WHERE_TO_FIND}"
        )
    localpart, sep, server = text[1:].partition(":")
    if not sep:
        if not _HASH.fullmatch(localpart):
            found = (
                f"has {len(localpart)} characters after '!'"
                if len(localpart) != HASH_LENGTH
                else "holds other characters"
            )
            raise RoomIdError(
                f"{shown} is not a Matrix room id: without ':server' it must be a room "
                f"version 12 id, '!' and {HASH_LENGTH} letters, digits, '-' or '_' (this one "
                f"{found}); {WHERE_TO_FIND}"
            )
        return text
    if not localpart:
        problem = "nothing between '!' and ':'"
    elif not server:
        problem = "nothing follows ':'"
    else:
        try:
            parse_server_name(server)
        except ServerNameError:
            problem = (
                f"{server!r} after the first ':' is not a server name "
                "(host, host:port or [IPv6]:port)"
            )
        else:
            return text
    raise RoomIdError(f"{shown} is not a Matrix room id: {problem}; {WHERE_TO_FIND}")


def is_room_id(text: str) -> bool:
    """Whether ``text`` is a Matrix room id (any room version)."""
    try:
        check_room_id(text)
    except RoomIdError:
        return False
    return True
