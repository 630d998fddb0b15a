"""The LiveKit front-end's HTTP endpoints: validate (v0 and v1), v1 refusals, dev tokens."""

from __future__ import annotations

import base64
import gzip
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from livekit.protocol import rtc
from livekit_fakes import FakeRoomManager

from mediafed import server
from mediafed.config import Config, load_config
from mediafed.signal.livekit.tokens import VideoGrant, mint_token, verify_token

KEYS = {"k1": "s" * 32}


async def _serve(config: Config) -> tuple[web.AppRunner, str]:
    rooms = FakeRoomManager()
    app = await server.build_app(config, extensions=[server.livekit_extension(rooms)])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


@pytest.fixture
async def base_url() -> AsyncIterator[str]:
    config = load_config(environ={"MEDIAFED_KEYS": "k1: " + KEYS["k1"]})
    runner, url = await _serve(config)
    yield url
    await runner.cleanup()


@pytest.fixture
async def dev_url() -> AsyncIterator[str]:
    runner, url = await _serve(load_config(dev=True, environ={}))
    yield url
    await runner.cleanup()


def _token(room: str = "r1", **kw: object) -> str:
    return mint_token(
        "k1", KEYS["k1"], identity="alice", video=VideoGrant(room_join=True, room=room), **kw
    )


def _join_request(
    compression: str = "gzip", *, metadata: str = "", raw: bytes | None = None
) -> str:
    """A ``join_request`` parameter as livekit-client makes it (URL-safe base64)."""
    join = rtc.JoinRequest(
        connection_settings=rtc.ConnectionSettings(auto_subscribe=True), metadata=metadata
    )
    payload = join.SerializeToString() if raw is None else raw
    kind = rtc.WrappedJoinRequest.Compression.NONE
    if compression == "gzip":
        payload = gzip.compress(payload)
        kind = rtc.WrappedJoinRequest.Compression.GZIP
    wrapped = rtc.WrappedJoinRequest(compression=kind, join_request=payload)
    return base64.urlsafe_b64encode(wrapped.SerializeToString()).decode()


async def test_v1_validate_reads_the_join_request(base_url: str) -> None:
    async with aiohttp.ClientSession() as http:
        url = base_url + "/rtc/v1/validate"
        for compression in ("gzip", "none"):
            params = {"access_token": _token(), "join_request": _join_request(compression)}
            async with http.get(url, params=params) as resp:
                assert resp.status == 200, await resp.text()
                assert await resp.text() == "success"
                assert resp.headers["Access-Control-Allow-Origin"] == "*"
        # without padding, as some clients encode it
        params = {"access_token": _token(), "join_request": _join_request().rstrip("=")}
        async with http.get(url, params=params) as resp:
            assert resp.status == 200, await resp.text()
        async with http.get(url, params={"access_token": "bad"}) as resp:
            assert resp.status == 401
            assert "not a well-formed JWT" in await resp.text()


@pytest.mark.parametrize(
    ("join_request", "status", "reason"),
    [
        ("", 400, "join_request is required"),
        ("!!!", 400, "cannot base64 decode"),
        (base64.urlsafe_b64encode(b"\xff\xff\xff").decode(), 400, "cannot unmarshal"),
        (_join_request("none", raw=b"\x0a\xff"), 400, "cannot unmarshal the join request"),
        # 4 MiB of zeros gzip to 4 KB: inflating stops after 1 MiB
        (_join_request("gzip", raw=bytes(4 << 20)), 400, "join request too large"),
        (_join_request(metadata="mine"), 401, "canUpdateOwnMetadata"),
    ],
)
async def test_v1_join_request_refusals_say_why(
    base_url: str, join_request: str, status: int, reason: str
) -> None:
    params = {"access_token": _token(), "join_request": join_request}
    async with aiohttp.ClientSession() as http:
        for path in ("/rtc/v1/validate", "/rtc/v1"):
            async with http.get(base_url + path, params=params) as resp:
                assert resp.status == status, path
                assert reason in await resp.text(), path
                assert resp.headers["Access-Control-Allow-Origin"] == "*"


async def test_validate_accepts_query_and_bearer_tokens(base_url: str) -> None:
    async with aiohttp.ClientSession() as http:
        url = base_url + "/rtc/validate"
        async with http.get(url, params={"access_token": _token()}) as resp:
            assert resp.status == 200
            assert await resp.text() == "success"
            assert resp.headers["Access-Control-Allow-Origin"] == "*"
        headers = {"Authorization": "Bearer " + _token()}
        async with http.get(url, headers=headers) as resp:
            assert resp.status == 200


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("", "no access token"),
        ("not-a-jwt", "not a well-formed JWT"),
        (
            mint_token("other", "x" * 32, identity="a", video=VideoGrant(room_join=True, room="r")),
            "unknown API key 'other'",
        ),
        (
            mint_token(
                "k1",
                KEYS["k1"],
                identity="a",
                video=VideoGrant(room_join=True, room="r"),
                now=time.time() - 7200,
                ttl_s=60,
            ),
            "expired at",
        ),
        (
            mint_token("k1", KEYS["k1"], identity="a", video=VideoGrant(room="r")),
            "no roomJoin grant",
        ),
        (
            mint_token("k1", "wrong" * 8, identity="a", video=VideoGrant(room_join=True, room="r")),
            "signature does not match",
        ),
    ],
)
async def test_validate_refusals_say_why(base_url: str, token: str, reason: str) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(base_url + "/rtc/validate", params={"access_token": token}) as resp,
    ):
        assert resp.status == 401
        assert reason in await resp.text()
        assert resp.headers["Access-Control-Allow-Origin"] == "*"


async def test_dev_token_only_in_dev_mode(base_url: str, dev_url: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(base_url + "/dev/token", params={"room": "r"}) as resp:
            assert resp.status == 404
        params = {"room": "standup", "name": "Ada Lovelace"}
        async with http.get(dev_url + "/dev/token", params=params) as resp:
            assert resp.status == 200
            answer = await resp.json()
        claims = verify_token(answer["token"], {"devkey": "secret"})
        assert claims.video.room == "standup" and claims.video.room_join
        assert claims.name == "Ada Lovelace"
        assert claims.identity == answer["identity"]
        assert claims.identity.startswith("ada-lovelace-")
        async with http.get(dev_url + "/dev/token", params={"name": "x"}) as resp:
            assert resp.status == 400
            assert "room" in (await resp.json())["error"]
        # the dev token passes /rtc/validate of the same node
        async with http.get(
            dev_url + "/rtc/validate", params={"access_token": answer["token"]}
        ) as resp:
            assert resp.status == 200
