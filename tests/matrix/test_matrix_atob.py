"""Element Call reads the focus token's payload with ``atob()``: no ``-``/``_`` in it.

The payload JSON is ASCII (PyJWT \\u-escapes the rest), and only ``>``, ``?``,
``~`` or DEL as the third byte of a 3-byte group become ``-``/``_``; the
``pad`` claim moves ``name`` across groups. These properties are checked over
generated Matrix ids.
"""

from __future__ import annotations

import string

from hypothesis import given, settings, strategies as st

from mediafed.matrix.focus import (
    FocusGrant,
    atob_safe,
    decode_payload_with_atob_rules,
    legacy_identity,
    livekit_identity,
    livekit_room_alias,
    mint_focus_token,
)
from mediafed.signal.livekit.tokens import verify_token

UNSAFE = ">?~\x7f"
SECRET = "s" * 32
NOW = 1_800_000_000

# Matrix spec appendix "User Identifiers": today's localparts, and the historical
# grammar (any of %x21-39 / %x3B-7E) still found on old servers.
localparts = st.text(
    alphabet=string.ascii_lowercase + string.digits + "._=-/+", min_size=1, max_size=24
)
historical_localparts = st.text(
    alphabet="".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != ":"), min_size=1, max_size=24
).filter(lambda s: sum(s.count(c) for c in UNSAFE) <= 1)
labels = st.text(alphabet=string.ascii_lowercase + string.digits + "-", min_size=1, max_size=12)
hostnames = st.lists(labels, min_size=1, max_size=4).map(".".join)
ports = st.one_of(st.just(""), st.integers(1, 65535).map(lambda p: f":{p}"))
server_names = st.one_of(
    st.tuples(hostnames, ports).map("".join),
    st.tuples(st.ip_addresses(v=4).map(str), ports).map("".join),
    st.tuples(st.ip_addresses(v=6).map(lambda a: f"[{a}]"), ports).map("".join),
)
# Device ids are opaque strings; anything but the four characters that could
# land in `sub` (whose place the API key fixes) -- including non-ASCII.
device_ids = st.text(
    alphabet=st.characters(blacklist_characters=UNSAFE, codec="utf-8"),
    min_size=1,
    max_size=20,
)
api_keys = st.text(alphabet=string.ascii_letters + string.digits, min_size=1, max_size=24)


def _check(token: str, grant: FocusGrant, api_key: str) -> None:
    assert atob_safe(token), token.split(".")[1]
    claims = decode_payload_with_atob_rules(token)
    assert claims["sub"] == grant.identity
    assert claims["name"] == grant.user_id
    verified = verify_token(token, {api_key: SECRET}, now=NOW)
    assert verified.identity == grant.identity
    assert verified.video.room == grant.room


@settings(max_examples=300, deadline=None)
@given(api_keys, localparts, server_names, device_ids, st.text(min_size=1))
def test_sfu_get_tokens_decode_with_atob(
    api_key: str, localpart: str, server: str, device: str, room_id: str
) -> None:
    user = f"@{localpart}:{server}"
    grant = FocusGrant(
        livekit_room_alias(room_id, "m.call#ROOM"), legacy_identity(user, device), user
    )
    _check(mint_focus_token(api_key, SECRET, grant, now=NOW), grant, api_key)


@settings(max_examples=300, deadline=None)
@given(api_keys, historical_localparts, server_names, st.text(), st.text(), st.text(min_size=1))
def test_get_token_tokens_decode_with_atob(
    api_key: str, localpart: str, server: str, device: str, member: str, room_id: str
) -> None:
    user = f"@{localpart}:{server}"
    grant = FocusGrant(
        livekit_room_alias(room_id, "s"), livekit_identity(user, device, member), user
    )
    _check(mint_focus_token(api_key, SECRET, grant, now=NOW), grant, api_key)


def test_awkward_characters_anywhere_still_decode() -> None:
    # '?', '~' and '>' at every offset of `sub` and `name`: escaped, never '-'/'_'.
    for user in ("@a?:h", "@ab?:h", "@abc?:h"):
        grant = FocusGrant("room", "@a:h:???~~~>>>\x7f", user)
        token = mint_focus_token("k", SECRET, grant, now=NOW)
        assert atob_safe(token)
        claims = verify_token(token, {"k": SECRET}, now=NOW)
        assert claims.identity == grant.identity
        assert claims.name == user
