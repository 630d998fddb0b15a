"""OpenID verification: server-name grammar, .well-known delegation over TLS, TLS checks.

The delegation test runs real HTTPS servers on 127.0.0.1:443 and another port
of the test network namespace, with a self-signed certificate for localhost.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web

from mediafed.matrix.openid import (
    OpenIDError,
    OpenIDVerifier,
    ServerName,
    ServerNameError,
    delegated_server,
    federation_base_url,
    parse_server_name,
    server_part,
)
from tests.support.tls import write_localhost_certificate


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("example.org", ServerName("example.org", None, False)),
        ("Example.ORG:8448", ServerName("example.org", 8448, False)),
        ("1.2.3.4", ServerName("1.2.3.4", None, True)),
        ("1.2.3.4:1234", ServerName("1.2.3.4", 1234, True)),
        ("[1234:5678::abcd]", ServerName("1234:5678::abcd", None, True)),
        ("[::1]:8448", ServerName("::1", 8448, True)),
        ("localhost", ServerName("localhost", None, False)),
    ],
)
def test_server_names(name: str, expected: ServerName) -> None:
    assert parse_server_name(name) == expected


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("", "is not a Matrix server name"),
        ("exa mple.org", "characters a host name cannot have"),
        ("example.org:0", "invalid port"),
        ("example.org:99999", "invalid port"),
        ("example.org:", "invalid port"),
        ("[::1", "unclosed IPv6 literal"),
        ("[nothex]", "no valid IPv6 address"),
        ("[::1]x", "only ':port' may follow"),
        ("evil.org/path", "characters a host name cannot have"),
        ("user@evil.org", "characters a host name cannot have"),
    ],
)
def test_bad_server_names(name: str, words: str) -> None:
    with pytest.raises(ServerNameError, match=words):
        parse_server_name(name)


def test_delegation_and_urls() -> None:
    assert delegated_server({"m.server": "matrix.example.org:443"}) == ServerName(
        "matrix.example.org", 443, False
    )
    assert delegated_server({"m.server": 5}) is None
    assert delegated_server(["m.server"]) is None
    assert delegated_server({"m.server": "bad name"}) is None
    assert federation_base_url(ServerName("example.org", None, False)) == "https://example.org:8448"
    assert federation_base_url(ServerName("::1", 8448, True)) == "https://[::1]:8448"
    assert server_part("@alice:example.org:8448") == "example.org:8448"
    assert server_part("alice") == ""


@asynccontextmanager
async def _https(app: web.Application, context: ssl.SSLContext, port: int) -> AsyncIterator[int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, ssl_context=context)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def test_well_known_delegation_over_tls(tmp_path: Path) -> None:
    cert, key = write_localhost_certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    hits: list[str] = []

    async def userinfo(request: web.Request) -> web.Response:
        hits.append(f"userinfo {request.host}")
        if request.query.get("access_token") != "good":
            return web.json_response({"errcode": "M_UNKNOWN_TOKEN", "error": "no"}, status=401)
        return web.json_response({"sub": "@alice:localhost"})

    federation = web.Application()
    federation.router.add_get("/_matrix/federation/v1/openid/userinfo", userinfo)
    async with _https(federation, context, 0) as federation_port:

        async def well_known(request: web.Request) -> web.Response:
            hits.append("well-known")
            return web.json_response({"m.server": f"localhost:{federation_port}"})

        front = web.Application()
        front.router.add_get("/.well-known/matrix/server", well_known)
        async with _https(front, context, 443):
            verifier = OpenIDVerifier(verify_tls=False)
            try:
                assert await verifier.user_id("good", "localhost") == "@alice:localhost"
                assert hits == ["well-known", f"userinfo localhost:{federation_port}"]
                # cached: no second .well-known request
                assert await verifier.user_id("good", "localhost") == "@alice:localhost"
                assert hits.count("well-known") == 1
                with pytest.raises(OpenIDError, match="did not accept the OpenID token"):
                    await verifier.user_id("expired", "localhost")
                # an explicit port skips discovery; here the user lives on "localhost",
                # not on "localhost:<port>", so the answer is refused
                with pytest.raises(OpenIDError, match="not a user of localhost:"):
                    await verifier.user_id("good", f"localhost:{federation_port}")
                assert hits.count("well-known") == 1
            finally:
                await verifier.close()

            # Normal certificate checks refuse the self-signed certificate.
            strict = OpenIDVerifier(verify_tls=True)
            try:
                with pytest.raises(OpenIDError, match="could not reach homeserver"):
                    await strict.user_id("good", f"localhost:{federation_port}")
            finally:
                await strict.close()


async def test_unreachable_homeserver_is_a_clear_error() -> None:
    verifier = OpenIDVerifier(overrides={"gone.example": "http://127.0.0.1:9"}, timeout_s=5)
    try:
        with pytest.raises(OpenIDError, match=r"could not reach homeserver gone\.example"):
            await verifier.user_id("t", "gone.example")
    finally:
        await verifier.close()
