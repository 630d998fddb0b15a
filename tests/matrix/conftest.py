"""Fixtures of the Matrix front-end tests: a real aiohttp server per app, a fake
homeserver for the fast OpenID tests and the session's real Synapse."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from tests.support.synapse import SynapseServer, synapse_session

__all__ = ["synapse_session"]


@pytest.fixture(scope="session")
def synapse(synapse_session: SynapseServer) -> Iterator[SynapseServer]:
    yield synapse_session


@asynccontextmanager
async def serve(app: web.Application, port: int = 0) -> AsyncIterator[str]:
    """Run ``app`` on 127.0.0.1 (a free port unless given); yields its base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    bound = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{bound}"
    finally:
        await runner.cleanup()


@dataclass
class FakeHomeserver:
    """Answers the federation OpenID userinfo endpoint from a token table."""

    tokens: dict[str, str] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    def app(self) -> web.Application:
        async def userinfo(request: web.Request) -> web.Response:
            token = request.query.get("access_token", "")
            self.requests.append(token)
            sub = self.tokens.get(token)
            if sub is None:
                return web.json_response(
                    {"errcode": "M_UNKNOWN_TOKEN", "error": "Access Token unknown or expired"},
                    status=401,
                )
            return web.json_response({"sub": sub})

        app = web.Application()
        app.router.add_get("/_matrix/federation/v1/openid/userinfo", userinfo)
        return app


@pytest.fixture
async def fake_homeserver() -> AsyncIterator[tuple[FakeHomeserver, str]]:
    homeserver = FakeHomeserver()
    async with serve(homeserver.app()) as url:
        yield homeserver, url
