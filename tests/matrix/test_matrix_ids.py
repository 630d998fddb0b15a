"""Matrix room ids of every room version: accepted as the spec writes them, refused
with a message that says what a room id looks like and where to find it."""

from __future__ import annotations

import pytest

from mediafed.matrix.ids import RoomIdError, check_room_id, is_room_id

# MSC4291's example: the create event $31hneApxJ_1o-63DmFrpeqnkFfWppnzWso1JvH3ogLM
V12 = "!31hneApxJ_1o-63DmFrpeqnkFfWppnzWso1JvH3ogLM"
FIND = "copy the room id from the room's settings (Element: Settings > Advanced > Internal room ID)"


@pytest.mark.parametrize(
    "room_id",
    [
        V12,
        "!" + "A" * 43,
        "!" + "-_" * 21 + "9",
        "!abc:example.org",
        "!OGEhHVWSdvArJzumhm:matrix.org",
        "!abc:localhost:8481",
        "!abc:1.2.3.4",
        "!abc:[::1]:8448",
        "!héllo:example.org",  # old localparts may hold any character but ':' and NUL
        "!" + "a" * 242 + ":example.org",  # 255 bytes
    ],
)
def test_every_room_version_form_is_accepted(room_id: str) -> None:
    assert check_room_id(room_id) == room_id
    assert is_room_id(room_id)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "",
            "'' is not a Matrix room id: a room id is '!' and 43 letters, digits, '-' or '_' "
            "(room version 12 and later), or '!opaque:server' (room versions 1 to 11); " + FIND,
        ),
        (
            "abc:example.org",
            "'abc:example.org' is not a Matrix room id: a room id is '!' and 43 letters, "
            "digits, '-' or '_' (room version 12 and later), or '!opaque:server' (room "
            "versions 1 to 11); " + FIND,
        ),
        ("#team:example.org", "'#team:example.org' is a room alias, not a room id; " + FIND),
        (
            "!lnTzxuXHixyorMcjgz…",
            "'!lnTzxuXHixyorMcjgz…' is not a Matrix room id: without ':server' it must be a "
            "room version 12 id, '!' and 43 letters, digits, '-' or '_' (this one has 19 "
            "characters after '!'); " + FIND,
        ),
        (
            "!",
            "'!' is not a Matrix room id: without ':server' it must be a room version 12 id, "
            "'!' and 43 letters, digits, '-' or '_' (this one has 0 characters after '!'); " + FIND,
        ),
        (
            "!" + "A" * 42 + "+",
            f"'!{'A' * 42}+' is not a Matrix room id: without ':server' it must be a room "
            "version 12 id, '!' and 43 letters, digits, '-' or '_' (this one holds other "
            "characters); " + FIND,
        ),
        (
            "!" + "A" * 44,
            f"'!{'A' * 44}' is not a Matrix room id: without ':server' it must be a room "
            "version 12 id, '!' and 43 letters, digits, '-' or '_' (this one has 44 "
            "characters after '!'); " + FIND,
        ),
        (
            "!:example.org",
            "'!:example.org' is not a Matrix room id: nothing between '!' and ':'; " + FIND,
        ),
        ("!abc:", "'!abc:' is not a Matrix room id: nothing follows ':'; " + FIND),
        (
            "!abc:exa_mple.org",
            "'!abc:exa_mple.org' is not a Matrix room id: 'exa_mple.org' after the first ':' "
            "is not a server name (host, host:port or [IPv6]:port); " + FIND,
        ),
        (
            "!abc:example.org:99999",
            "'!abc:example.org:99999' is not a Matrix room id: 'example.org:99999' after the "
            "first ':' is not a server name (host, host:port or [IPv6]:port); " + FIND,
        ),
        (
            "!abc def:example.org",
            "'!abc def:example.org' is not a Matrix room id: it holds a space or control "
            "character; " + FIND,
        ),
        (
            " " + V12,
            f"' {V12}' is not a Matrix room id: a room id is '!' and 43 letters, digits, '-' "
            "or '_' (room version 12 and later), or '!opaque:server' (room versions 1 to 11); "
            + FIND,
        ),
        (
            V12 + "\n",
            f"'{V12}\\n' is not a Matrix room id: it holds a space or control character; " + FIND,
        ),
        (
            "!a\x00b:example.org",
            "'!a\\x00b:example.org' is not a Matrix room id: it holds a space or control "
            "character; " + FIND,
        ),
        (
            "!" + "a" * 243 + ":example.org",
            f"'!{'a' * 76}'… is not a Matrix room id: it is longer than 255 bytes; " + FIND,
        ),
    ],
)
def test_what_is_not_a_room_id_is_explained(text: str, message: str) -> None:
    with pytest.raises(RoomIdError) as caught:
        check_room_id(text)
    assert str(caught.value) == message
    assert not is_room_id(text)
