"""The MatrixRTC focus over real HTTP: /sfu/get, /get_token, CORS, errors.

The homeserver here is a small fake answering the federation OpenID userinfo
endpoint; tests/matrix/test_matrix_synapse.py repeats the main cases against a
real Synapse.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mediafed import server
from mediafed.config import Config, ServerConfig
from mediafed.matrix.config import MatrixConfig
from mediafed.matrix.focus import (
    CORS_HEADERS,
    FocusGrant,
    RoomMembers,
    atob_safe,
    decode_payload_with_atob_rules,
    livekit_identity,
    livekit_room_alias,
    mint_focus_token,
    room_call_alias,
    setup_focus,
)
from mediafed.signal.livekit.tokens import require_room_join, verify_token
from tests.matrix.conftest import FakeHomeserver, serve

KEYS = {"focuskey": "a-secret-long-enough-for-hs256-signing!!"}
HS = "hs.example"
ROOM = "!abcdef:hs.example"


@asynccontextmanager
async def _focus(
    config: Config,
    matrix: MatrixConfig,
    room_exists: Callable[[str], bool] | None = None,
    room_members: RoomMembers | None = None,
) -> AsyncIterator[str]:
    app = await server.build_app(
        config,
        extensions=[
            lambda app, cfg: setup_focus(
                app,
                matrix,
                keys=cfg.keys,
                public_url=cfg.server.public_url,
                room_exists=room_exists,
                room_members=room_members,
            )
        ],
    )
    async with serve(app) as url:
        yield url


@pytest.fixture
async def focus(
    fake_homeserver: tuple[FakeHomeserver, str],
) -> AsyncIterator[tuple[str, FakeHomeserver]]:
    homeserver, hs_url = fake_homeserver
    matrix = MatrixConfig(
        server_name=HS,
        allowed_homeservers=[HS, "other.example"],
        federation_url_overrides={HS: hs_url, "other.example": hs_url},
    )
    async with _focus(Config(keys=KEYS), matrix) as url:
        yield url, homeserver


async def _post(url: str, body: Any, **kwargs: Any) -> tuple[int, dict[str, Any], dict[str, str]]:
    async with aiohttp.ClientSession() as http, http.post(url, json=body, **kwargs) as resp:
        return resp.status, await resp.json(content_type=None), dict(resp.headers)


def _openid(token: str, server_name: str = HS) -> dict[str, Any]:
    return {
        "access_token": token,
        "token_type": "Bearer",
        "matrix_server_name": server_name,
        "expires_in": 3600,
    }


async def test_sfu_get_grants_one_room_to_user_and_device(
    focus: tuple[str, FakeHomeserver],
) -> None:
    url, homeserver = focus
    homeserver.tokens["tok-alice"] = "@alice:hs.example"
    status, body, headers = await _post(
        f"{url}/sfu/get", {"room": ROOM, "openid_token": _openid("tok-alice"), "device_id": "DEVA"}
    )
    assert status == 200, body
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert body["url"] == url.replace("http://", "ws://")
    claims = verify_token(body["jwt"], KEYS)
    assert claims.identity == "@alice:hs.example:DEVA"
    assert claims.name == "@alice:hs.example"
    assert require_room_join(claims) == livekit_room_alias(ROOM, "m.call#ROOM")
    grant = claims.video
    assert (grant.can_publish, grant.can_subscribe, grant.can_update_own_metadata) == (True,) * 3
    assert not grant.room_create and not grant.room_admin
    assert 3500 <= claims.expires_at - claims.raw["nbf"] <= 3600
    assert atob_safe(body["jwt"])
    assert homeserver.requests == ["tok-alice"]


async def test_get_token_uses_hashed_room_and_identity(focus: tuple[str, FakeHomeserver]) -> None:
    url, homeserver = focus
    homeserver.tokens["tok-bob"] = "@bob:hs.example"
    request = {
        "room_id": ROOM,
        "slot_id": "m.call#ROOM",
        "openid_token": _openid("tok-bob"),
        "member": {
            "id": "member-1",
            "claimed_user_id": "@bob:hs.example",
            "claimed_device_id": "DEVB",
        },
    }
    status, body, _ = await _post(f"{url}/get_token", request)
    assert status == 200, body
    claims = verify_token(body["jwt"], KEYS)
    assert claims.identity == livekit_identity("@bob:hs.example", "DEVB", "member-1")
    assert claims.video.room == livekit_room_alias(ROOM, "m.call#ROOM")
    # Both endpoints put the same Matrix room into the same LiveKit room.
    homeserver.tokens["tok-bob2"] = "@bob:hs.example"
    _, legacy, _ = await _post(
        f"{url}/sfu/get", {"room": ROOM, "openid_token": _openid("tok-bob2"), "device_id": "DEVB"}
    )
    assert verify_token(legacy["jwt"], KEYS).video.room == claims.video.room


@pytest.mark.parametrize(
    "room_id",
    [
        "!31hneApxJ_1o-63DmFrpeqnkFfWppnzWso1JvH3ogLM",  # room version 12: no server part
        ROOM,  # versions 1-11
    ],
)
async def test_rooms_of_every_version_get_their_call_room(
    focus: tuple[str, FakeHomeserver], room_id: str
) -> None:
    # lk-jwt-service's LiveKit room: unpadded standard base64 of the SHA-256 of the
    # JSON array [room id, slot], the room id taken whole.
    as_go = json.dumps([room_id, "m.call#ROOM"], separators=(",", ":"))
    digest = hashlib.sha256(as_go.encode()).digest()
    expected = base64.b64encode(digest).decode().rstrip("=")
    assert room_call_alias(room_id) == expected
    url, homeserver = focus
    homeserver.tokens["tok-1"] = homeserver.tokens["tok-2"] = "@frida:hs.example"
    status, legacy, _ = await _post(
        f"{url}/sfu/get", {"room": room_id, "openid_token": _openid("tok-1"), "device_id": "DEVF"}
    )
    assert status == 200, legacy
    assert require_room_join(verify_token(legacy["jwt"], KEYS)) == expected
    status, body, _ = await _post(
        f"{url}/get_token",
        {
            "room_id": room_id,
            "slot_id": "m.call#ROOM",
            "openid_token": _openid("tok-2"),
            "member": {
                "id": "m1",
                "claimed_user_id": "@frida:hs.example",
                "claimed_device_id": "DEVF",
            },
        },
    )
    assert status == 200, body
    assert require_room_join(verify_token(body["jwt"], KEYS)) == expected


def test_hashes_match_msc4195_test_vectors() -> None:
    # MSC4195, appendix "Hash derivation test vectors" (also lk-jwt-service's tests).
    assert (
        livekit_room_alias("!roomid:example.com", "slot1234")
        == "O8437W3+jmzMVjoIP3tNwbm+XxHQk2iKpOA7aqw3qSc"
    )
    assert (
        livekit_identity("@alice:example.com", "DEVICE123", "memberABC")
        == "J+T45tGruxc+HrUOqJJlyQSV33m728Cme4+vt8/SWrU"
    )


async def test_refusals_are_clear_matrix_errors(focus: tuple[str, FakeHomeserver]) -> None:
    url, homeserver = focus
    homeserver.tokens["tok-carol"] = "@carol:hs.example"
    homeserver.tokens["tok-elsewhere"] = "@mallory:evil.example"

    # a token the homeserver does not know
    status, body, headers = await _post(
        f"{url}/sfu/get", {"room": ROOM, "openid_token": _openid("forged"), "device_id": "D"}
    )
    assert (status, body["errcode"]) == (401, "M_UNAUTHORIZED")
    assert "did not accept the OpenID token" in body["error"]
    assert headers["Access-Control-Allow-Origin"] == "*"

    # a homeserver vouching for a user of another server
    status, body, _ = await _post(
        f"{url}/sfu/get",
        {"room": ROOM, "openid_token": _openid("tok-elsewhere", "other.example"), "device_id": "D"},
    )
    assert (status, body["errcode"]) == (401, "M_UNAUTHORIZED")
    assert "@mallory:evil.example, who is not a user of other.example" in body["error"]

    # a homeserver not on the allow-list is refused before it is asked anything
    asked = len(homeserver.requests)
    status, body, _ = await _post(
        f"{url}/sfu/get",
        {"room": ROOM, "openid_token": _openid("tok-carol", "stranger.example"), "device_id": "D"},
    )
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    assert "stranger.example may not use this relay" in body["error"]
    assert len(homeserver.requests) == asked

    # /get_token: the claimed user must be the token's user
    status, body, _ = await _post(
        f"{url}/get_token",
        {
            "room_id": ROOM,
            "slot_id": "m.call#ROOM",
            "openid_token": _openid("tok-carol"),
            "member": {"id": "m", "claimed_user_id": "@dave:hs.example", "claimed_device_id": "D"},
        },
    )
    assert (status, body["errcode"]) == (401, "M_UNAUTHORIZED")
    assert "does not match the OpenID token's user @carol:hs.example" in body["error"]


@pytest.mark.parametrize(
    ("path", "body", "errcode", "words"),
    [
        ("/sfu/get", {"openid_token": {}, "device_id": "D"}, "M_BAD_JSON", "missing `room`"),
        ("/sfu/get", {"room": ROOM, "device_id": "D"}, "M_BAD_JSON", "`openid_token` must be"),
        (
            "/sfu/get",
            {"room": ROOM, "device_id": "D", "openid_token": {"access_token": "t"}},
            "M_BAD_JSON",
            "openid_token.matrix_server_name",
        ),
        (
            "/sfu/get",
            {"room": ROOM, "device_id": "D", "openid_token": _openid("t", "bad name!")},
            "M_BAD_JSON",
            "characters a host name cannot have",
        ),
        ("/get_token", {"room_id": ROOM, "slot_id": "s"}, "M_BAD_JSON", "`member` must be"),
        ("/get_token", [1, 2], "M_BAD_JSON", "the request body must be a JSON object"),
    ],
)
async def test_malformed_requests(
    focus: tuple[str, FakeHomeserver], path: str, body: Any, errcode: str, words: str
) -> None:
    url, _ = focus
    status, answer, _ = await _post(url + path, body)
    assert (status, answer["errcode"]) == (400, errcode)
    assert words in answer["error"]


async def test_not_json_body(focus: tuple[str, FakeHomeserver]) -> None:
    url, _ = focus
    async with aiohttp.ClientSession() as http, http.post(f"{url}/sfu/get", data=b"{nope") as resp:
        assert resp.status == 400
        assert (await resp.json())["errcode"] == "M_NOT_JSON"


@pytest.mark.parametrize("path", ["/sfu/get", "/get_token", "/delegate_delayed_leave"])
async def test_cors_preflight(focus: tuple[str, FakeHomeserver], path: str) -> None:
    url, _ = focus
    headers = {
        "Origin": "https://call.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    async with aiohttp.ClientSession() as http, http.options(url + path, headers=headers) as resp:
        assert resp.status == 200
        for name in CORS_HEADERS:
            assert resp.headers[name] == CORS_HEADERS[name]
        assert "POST" in resp.headers["Access-Control-Allow-Methods"]
        assert "Content-Type" in resp.headers["Access-Control-Allow-Headers"]


async def test_delegate_delayed_leave_is_not_supported(focus: tuple[str, FakeHomeserver]) -> None:
    url, _ = focus
    status, body, headers = await _post(f"{url}/delegate_delayed_leave", {"room_id": ROOM})
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    assert headers["Access-Control-Allow-Origin"] == "*"


async def test_url_comes_from_public_url(fake_homeserver: tuple[FakeHomeserver, str]) -> None:
    homeserver, hs_url = fake_homeserver
    homeserver.tokens["t"] = "@alice:hs.example"
    config = Config(keys=KEYS, server=ServerConfig(public_url="https://sfu.example.org/"))
    matrix = MatrixConfig(server_name=HS, federation_url_overrides={HS: hs_url})
    async with _focus(config, matrix) as url:
        status, body, _ = await _post(
            f"{url}/sfu/get", {"room": ROOM, "openid_token": _openid("t"), "device_id": "D"}
        )
        assert status == 200, body
        assert body["url"] == "wss://sfu.example.org"


async def test_default_allow_list_is_the_local_server(
    fake_homeserver: tuple[FakeHomeserver, str],
) -> None:
    homeserver, hs_url = fake_homeserver
    homeserver.tokens["t"] = "@alice:other.example"
    matrix = MatrixConfig(server_name=HS, federation_url_overrides={"other.example": hs_url})
    async with _focus(Config(keys=KEYS), matrix) as url:
        status, body, _ = await _post(
            f"{url}/sfu/get",
            {"room": ROOM, "openid_token": _openid("t", "other.example"), "device_id": "D"},
        )
        assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    assert homeserver.requests == []


async def test_users_of_other_homeservers_only_subscribe_to_calls_started_here(
    fake_homeserver: tuple[FakeHomeserver, str],
) -> None:
    """MSC4195 multi-SFU: a user of another homeserver publishes on its own SFU and only
    subscribes here, and only to a call a local user has started (lk-jwt-service's rule)."""
    homeserver, hs_url = fake_homeserver
    homeserver.tokens.update({"tok-lou": "@lou:hs.example", "tok-rita": "@rita:other.example"})
    for n in range(4):
        homeserver.tokens[f"tok-rita{n}"] = "@rita:other.example"
    open_rooms: set[str] = set()
    matrix = MatrixConfig(
        server_name=HS,
        allowed_homeservers=[HS, "other.example"],
        federation_url_overrides={HS: hs_url, "other.example": hs_url},
    )
    alias = livekit_room_alias(ROOM, "m.call#ROOM")

    def get_token(token: str, user: str, server_name: str) -> dict[str, Any]:
        return {
            "room_id": ROOM,
            "slot_id": "m.call#ROOM",
            "openid_token": _openid(token, server_name),
            "member": {"id": "m1", "claimed_user_id": user, "claimed_device_id": "D"},
        }

    async with _focus(Config(keys=KEYS), matrix, room_exists=open_rooms.__contains__) as url:
        # nobody of hs.example is in the call yet: the remote user is refused, both ways
        status, body, _ = await _post(
            f"{url}/get_token", get_token("tok-rita0", "@rita:other.example", "other.example")
        )
        assert (status, body["errcode"]) == (403, "M_FORBIDDEN"), body
        assert "no user of hs.example has started this call" in body["error"]
        status, body, _ = await _post(
            f"{url}/sfu/get",
            {"room": ROOM, "openid_token": _openid("tok-rita1", "other.example"), "device_id": "D"},
        )
        assert (status, body["errcode"]) == (403, "M_FORBIDDEN"), body

        # a local user may start it, and publish
        status, body, _ = await _post(
            f"{url}/get_token", get_token("tok-lou", "@lou:hs.example", HS)
        )
        assert status == 200, body
        local = verify_token(body["jwt"], KEYS).video
        assert (local.can_publish, local.can_subscribe, local.can_publish_data) == (True,) * 3

        # once the call is open here, the remote user subscribes and may not publish
        open_rooms.add(alias)
        status, body, _ = await _post(
            f"{url}/get_token", get_token("tok-rita2", "@rita:other.example", "other.example")
        )
        assert status == 200, body
        remote = verify_token(body["jwt"], KEYS)
        assert remote.video.room == alias and remote.video.can_subscribe
        assert not remote.video.can_publish and not remote.video.can_publish_data
        status, body, _ = await _post(
            f"{url}/sfu/get",
            {"room": ROOM, "openid_token": _openid("tok-rita3", "other.example"), "device_id": "D"},
        )
        assert status == 200, body
        assert not verify_token(body["jwt"], KEYS).video.can_publish


async def test_members_of_the_matrix_room_may_be_admitted_from_any_homeserver(
    fake_homeserver: tuple[FakeHomeserver, str],
) -> None:
    """``admit_room_members``: a user of a homeserver not on the allow-list gets a
    (subscribe-only) token when the bridge sees it joined to the call's Matrix room."""
    homeserver, hs_url = fake_homeserver
    homeserver.tokens.update({"tok-rita": "@rita:other.example", "tok-max": "@max:third.example"})
    asked: list[str] = []

    async def members(room_id: str) -> dict[str, str] | None:
        asked.append(room_id)
        return {"@lou:hs.example": "Lou", "@rita:other.example": "Rita"}

    matrix = MatrixConfig(
        server_name=HS,
        admit_room_members=True,
        federation_url_overrides={"other.example": hs_url, "third.example": hs_url},
    )
    alias = livekit_room_alias(ROOM, "m.call#ROOM")
    async with _focus(Config(keys=KEYS), matrix, {alias}.__contains__, members) as url:
        status, body, _ = await _post(
            f"{url}/sfu/get",
            {"room": ROOM, "openid_token": _openid("tok-rita", "other.example"), "device_id": "D"},
        )
        assert status == 200, body
        grant = verify_token(body["jwt"], KEYS).video
        assert grant.can_subscribe and not grant.can_publish
        status, body, _ = await _post(
            f"{url}/sfu/get",
            {"room": ROOM, "openid_token": _openid("tok-max", "third.example"), "device_id": "D"},
        )
        assert (status, body["errcode"]) == (403, "M_FORBIDDEN"), body
        assert f"@max:third.example is not a member of {ROOM}" in body["error"]
    assert asked == [ROOM, ROOM]


def test_admitting_room_members_needs_the_appservice() -> None:
    from aiohttp import web

    from mediafed.errors import ConfigError
    from mediafed.matrix.frontend import setup_matrix

    matrix = MatrixConfig(server_name=HS, admit_room_members=True)
    with pytest.raises(ConfigError, match="admit_room_members needs the appservice"):
        setup_matrix(web.Application(), matrix, keys=KEYS, data_dir=Path("/nonexistent"))


def test_element_call_can_decode_the_payload() -> None:
    # What Element Call does with the token: atob() on the payload segment.
    token = mint_focus_token(
        "focuskey", KEYS["focuskey"], FocusGrant("room", "@a:b:C", "@a:b"), now=1_700_000_000
    )
    claims = decode_payload_with_atob_rules(token)
    assert claims["sub"] == "@a:b:C"
    assert claims["video"]["room"] == "room"
