"""The call API on a real aiohttp server: calls, join tokens, bridges, webhooks, notices."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
import yaml
from aiohttp import web

from mediafed import server
from mediafed.config import Config
from mediafed.errors import AuthError
from mediafed.matrix.focus import room_call_alias
from mediafed.rocketchat import webhooks
from mediafed.rocketchat.config import RocketChatConfig
from mediafed.rocketchat.handlers import CALL_SERVICE_KEY
from mediafed.rocketchat.service import CallService
from mediafed.signal.livekit.tokens import VideoGrant, mint_token, require_room_join, verify_token

KEY, SECRET = "apikey", "a-long-enough-api-secret-for-tests-0123456789"
ADMIN = VideoGrant(room_admin=True, room_create=True, room_list=True)


def admin_token(key: str = KEY, secret: str = SECRET, **kwargs: Any) -> str:
    return mint_token(key, secret, identity="rocketchat-app", video=ADMIN, **kwargs)


def documented_signature_error(header: str, body: bytes, secret: str) -> str | None:
    """Check ``X-Mediafed-Signature`` as the API documentation tells a receiver to,
    without mediafed's code: ``t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``,
    ``t`` within 300 s of now. None if it holds, else what is wrong."""
    fields = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    if not fields.get("t", "").isdigit() or "v1" not in fields:
        return f"malformed header {header!r}"
    if abs(time.time() - int(fields["t"])) > 300:
        return "stale"
    mac = hmac.new(secret.encode(), fields["t"].encode() + b"." + body, hashlib.sha256)
    if not hmac.compare_digest(mac.hexdigest(), fields["v1"]):
        return "signature does not match"
    return None


@dataclass
class Receiver:
    """A webhook endpoint that checks signatures and refuses replayed ids."""

    fail_first: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    arrived: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    signed: list[tuple[str, bytes]] = field(default_factory=list)
    """(signature header, body) of every delivery accepted."""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.fail_first > 0:
            self.fail_first -= 1
            self.statuses.append(500)
            return web.Response(status=500, text="try later")
        header = request.headers.get(webhooks.SIGNATURE_HEADER, "")
        error = documented_signature_error(header, body, SECRET)
        if error is not None:
            self.statuses.append(401)
            return web.json_response({"error": error}, status=401)
        self.signed.append((header, body))
        event = json.loads(body)
        if event["id"] in self.seen:
            self.statuses.append(409)
            return web.json_response({"error": "replayed"}, status=409)
        self.seen.add(event["id"])
        assert request.headers[webhooks.KEY_HEADER] == KEY
        self.events.append(event)
        self.statuses.append(200)
        await self.arrived.put(event)
        return web.json_response({"ok": True})


@dataclass
class Node:
    url: str
    service: CallService
    session: aiohttp.ClientSession
    receiver: Receiver
    hook_url: str
    app: web.Application

    def headers(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or admin_token()}"}

    async def create(self, external_room: str, **fields: Any) -> tuple[int, dict[str, Any]]:
        body = {"external_room": external_room, "webhook_url": self.hook_url, **fields}
        async with self.session.post(
            f"{self.url}/api/v1/calls", json=body, headers=self.headers()
        ) as response:
            return response.status, await response.json()


async def _site(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    hook = Receiver()
    app = web.Application()
    app.router.add_post("/hook", hook.handle)
    runner, url = await _site(app)
    yield hook, f"{url}/hook"
    await runner.cleanup()


def _config(tmp_path: Path) -> Config:
    return Config.model_validate({"keys": {KEY: SECRET}, "server": {"data_dir": str(tmp_path)}})


async def _node(
    tmp_path: Path, receiver: tuple[Receiver, str], rocketchat: RocketChatConfig | None = None
) -> tuple[web.AppRunner, Node]:
    extension = server.call_api_extension(
        rocketchat=rocketchat,
        webhook_options={"base_delay_s": 0.01, "max_attempts": 3, "timeout_s": 5},
    )
    app = await server.build_app(_config(tmp_path), extensions=[extension])
    runner, url = await _site(app)
    session = aiohttp.ClientSession()
    return runner, Node(url, app[CALL_SERVICE_KEY], session, receiver[0], receiver[1], app)


@pytest.fixture
async def node(tmp_path: Path, receiver: tuple[Receiver, str]) -> AsyncIterator[Node]:
    runner, made = await _node(tmp_path, receiver)
    yield made
    await made.session.close()
    await runner.cleanup()


async def test_create_is_idempotent_per_room_and_listed(node: Node) -> None:
    status, call = await node.create("rocketchat:GENERAL", external_call_id="rc1", title="Daily")
    assert status == 201 and call["created"] is True
    assert call["room"] == "rc-GENERAL" and call["title"] == "Daily"
    assert call["status"] == "active" and call["external_call_id"] == "rc1"
    again_status, again = await node.create("rocketchat:GENERAL", external_call_id="rc1")
    assert again_status == 200 and again["created"] is False
    assert again["call_id"] == call["call_id"]
    async with node.session.get(f"{node.url}/api/v1/calls", headers=node.headers()) as response:
        listed = await response.json()
    assert [c["call_id"] for c in listed["calls"]] == [call["call_id"]]
    async with node.session.get(
        f"{node.url}/api/v1/calls/{call['call_id']}", headers=node.headers()
    ) as response:
        assert (await response.json())["room"] == "rc-GENERAL"


async def test_join_token_admits_to_that_room_only(node: Node) -> None:
    _, call = await node.create("!abc:example.org")
    # the Matrix room's own call room, where its Element Call users and callers are
    assert call["room"] == room_call_alias("!abc:example.org")
    async with node.session.post(
        f"{node.url}/api/v1/calls/{call['call_id']}/join",
        json={"identity": "alice", "name": "Alice", "mic": False, "cam": True},
        headers=node.headers(),
    ) as response:
        assert response.status == 200
        joined = await response.json()
    claims = verify_token(joined["token"], {KEY: SECRET})
    assert require_room_join(claims, call["room"]) == call["room"]
    assert (claims.identity, claims.name) == ("alice", "Alice")
    with pytest.raises(AuthError, match="not 'other-room'; ask for a token for it"):
        require_room_join(claims, "other-room")
    url = urlsplit(joined["join_url"])
    assert f"{url.scheme}://{url.netloc}" == node.url and url.path == "/"
    query = parse_qs(url.query)
    assert query == {"token": [joined["token"]], "mic": ["0"], "cam": ["1"]}
    # Default TTL is short (10 min): the token is useless once it expired.
    with pytest.raises(AuthError, match="expired"):
        verify_token(joined["token"], {KEY: SECRET}, now=claims.expires_at + 3600)
    assert 0 < claims.expires_at - claims.raw["nbf"] <= 600


async def test_participant_events_and_end_reach_the_webhook_signed(node: Node) -> None:
    _, call = await node.create("rocketchat:R1", external_call_id="rc-call-7")
    await node.service.participant_joined(call["room"], "alice", "Alice")
    await node.service.participant_left(call["room"], "alice")
    async with node.session.delete(
        f"{node.url}/api/v1/calls/{call['call_id']}", headers=node.headers()
    ) as response:
        assert (await response.json())["status"] == "ended"
    events = [await asyncio.wait_for(node.receiver.arrived.get(), 10) for _ in range(3)]
    assert [e["event"] for e in events] == ["participant_joined", "participant_left", "call_ended"]
    assert {e["call_id"] for e in events} == {call["call_id"]}
    assert {e["external_call_id"] for e in events} == {"rc-call-7"}
    assert events[0]["identity"] == "alice" and events[0]["name"] == "Alice"
    assert events[1]["name"] == "Alice"
    assert len({e["id"] for e in events}) == 3
    # Ending twice sends nothing more; the room core finishing an ended room neither.
    await node.service.room_finished(call["room"])
    await node.service.webhooks.wait_idle()
    assert len(node.receiver.events) == 3


APP = Path(__file__).resolve().parents[2] / "rocketchat-app"
# Run by node: node's own HMAC and the App's verifier (compiled from its crypto.ts) on
# one delivery as it arrived. The App's endpoint verifies JSON.stringify of the parsed
# body (Rocket.Chat hands Apps parsed JSON), so that is checked as well.
NODE_VERIFY = r"""
const nodeCrypto = require('node:crypto');
const fs = require('node:fs');
const [appCrypto, secret, header, bodyPath] = process.argv.slice(1);  // node -e: no script path
const app = require(appCrypto);
const body = fs.readFileSync(bodyPath, 'utf8');
const fields = Object.fromEntries(header.split(',').map((part) => part.split('=')));
const mac = nodeCrypto.createHmac('sha256', secret).update(`${fields.t}.${body}`).digest('hex');
const now = Date.now() / 1000;
function check(text, key) {
  try { return app.verifyWebhook(header, text, key, now) === Number(fields.t); }
  catch (e) { return e.message; }
}
console.log(JSON.stringify({
  nodeCrypto: mac === fields.v1,
  appRaw: check(body, secret),
  appParsed: check(JSON.stringify(JSON.parse(body)), secret),
  appTampered: check(body.replace('Zo', 'Mallory'), secret),
  appWrongSecret: check(body, secret + 'x'),
}));
"""


@pytest.mark.slow  # compiles the App's crypto.ts
async def test_signed_webhooks_pass_independent_verifiers(node: Node, tmp_path: Path) -> None:
    """A real delivery verifies with Python's hmac (the receiver), node's crypto and
    the Rocket.Chat App's own verifier; tampering or another secret fails there."""
    node_bin, tsc = shutil.which("node"), APP / "node_modules" / ".bin" / "tsc"
    assert node_bin and tsc.exists(), (
        "node or the App's tsc is missing; run scripts/install-test-deps"
    )
    compiled = tmp_path / "app"
    build = await asyncio.create_subprocess_exec(
        *(str(tsc), "--outDir", str(compiled), "--module", "commonjs", "--target", "es2017"),
        *("--lib", "es2017", "--strict", "--types", "node", "src/crypto.ts"),
        cwd=APP,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(build.communicate(), 120)
    assert build.returncode == 0, out.decode()[-3000:]

    _, call = await node.create("rocketchat:R8", external_call_id="rc-call-8")
    await node.service.participant_joined(call["room"], "zoe", "Zoë 🎥")
    event = await asyncio.wait_for(node.receiver.arrived.get(), 10)
    assert event["name"] == "Zoë 🎥"
    [(header, body)] = node.receiver.signed  # accepted by documented_signature_error
    assert "Zoë 🎥".encode() in body  # UTF-8 as is, what JSON.stringify gives back
    (tmp_path / "body.json").write_bytes(body)
    verify = await asyncio.create_subprocess_exec(
        *(node_bin, "-e", NODE_VERIFY, str(compiled / "crypto.js"), SECRET, header),
        str(tmp_path / "body.json"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(verify.communicate(), 60)
    assert verify.returncode == 0, err.decode()[-3000:]
    assert json.loads(out) == {
        "nodeCrypto": True,
        "appRaw": True,
        "appParsed": True,
        "appTampered": "webhook signature does not match the API secret",
        "appWrongSecret": "webhook signature does not match the API secret",
    }


async def test_room_finished_ends_the_call(node: Node) -> None:
    _, call = await node.create("rocketchat:R2")
    await node.service.room_finished(call["room"])
    event = await asyncio.wait_for(node.receiver.arrived.get(), 10)
    assert event["event"] == "call_ended"
    status, fresh = await node.create("rocketchat:R2")
    assert status == 201 and fresh["call_id"] != call["call_id"]


async def test_webhook_retried_with_backoff_until_delivered(node: Node) -> None:
    node.receiver.fail_first = 2
    _, call = await node.create("rocketchat:R3")
    await node.service.participant_joined(call["room"], "bob", "Bob")
    event = await asyncio.wait_for(node.receiver.arrived.get(), 10)
    assert event["identity"] == "bob"
    await node.service.webhooks.wait_idle()
    assert node.receiver.statuses == [500, 500, 200]
    [delivery] = await node.service.store.deliveries(call["call_id"])
    assert (delivery.status, delivery.attempts) == ("delivered", 3)


async def test_dead_webhook_receiver_gives_up_and_logs(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    _, call = await node.create("rocketchat:R4", webhook_url="http://127.0.0.1:9/nothing-here")
    with caplog.at_level(logging.WARNING, logger="mediafed.rocketchat.webhooks"):
        await node.service.participant_joined(call["room"], "carol", "Carol")
        await asyncio.wait_for(node.service.webhooks.wait_idle(), 10)
    [delivery] = await node.service.store.deliveries(call["call_id"])
    assert (delivery.status, delivery.attempts) == ("failed", 3)
    assert "gave up after 3 attempts" in caplog.text
    # The API still answers.
    status, _ = await node.create("rocketchat:R5")
    assert status == 201


def test_signature_verification_refuses_tampering_and_stale_timestamps() -> None:
    body = b'{"id":"x","event":"call_ended"}'
    header = webhooks.sign(SECRET, body, 1_700_000_000)
    assert webhooks.verify(header, body, SECRET, now=1_700_000_100) == 1_700_000_000
    with pytest.raises(AuthError, match="does not match"):
        webhooks.verify(header, body + b" ", SECRET, now=1_700_000_100)
    with pytest.raises(AuthError, match="does not match"):
        webhooks.verify(header, body, "another-secret", now=1_700_000_100)
    with pytest.raises(AuthError, match="more than 300s from now"):
        webhooks.verify(header, body, SECRET, now=1_700_000_301)
    with pytest.raises(AuthError, match="must look like"):
        webhooks.verify("v1=abc", body, SECRET, now=1_700_000_000)


async def test_requests_without_valid_credentials_are_refused(node: Node) -> None:
    url = f"{node.url}/api/v1/calls"
    cases = [
        ({}, 401, "Authorization: Bearer"),
        (node.headers(admin_token(secret="wrong-secret-wrong-secret-wrong")), 401, "signature"),
        (node.headers(admin_token(key="otherkey")), 401, "unknown API key"),
        (node.headers(admin_token(ttl_s=10, now=1_000_000)), 401, "expired"),
        (
            node.headers(mint_token(KEY, SECRET, identity="u", video=VideoGrant(room_join=True))),
            403,
            "roomList",
        ),
    ]
    for headers, status, message in cases:
        async with node.session.get(url, headers=headers) as response:
            assert response.status == status
            assert message in (await response.json())["error"]


async def test_bad_requests_say_what_to_fix(node: Node) -> None:
    url = f"{node.url}/api/v1/calls"
    async with node.session.post(url, data=b"not json", headers=node.headers()) as response:
        assert response.status == 400
        assert "must be JSON" in (await response.json())["error"]
    status, body = await node.create("general")
    assert status == 400 and "rocketchat:<room id>" in body["error"]
    status, body = await node.create("rocketchat:R6", colour="blue")
    assert status == 400 and "colour" in body["error"]
    async with node.session.post(
        f"{url}/CL_nope/join", json={"identity": "a"}, headers=node.headers()
    ) as response:
        assert response.status == 404
    _, call = await node.create("rocketchat:R7")
    async with node.session.post(
        f"{url}/{call['call_id']}/join", json={"identity": ""}, headers=node.headers()
    ) as response:
        assert response.status == 400 and "identity" in (await response.json())["error"]
    async with node.session.delete(f"{url}/{call['call_id']}", headers=node.headers()):
        pass
    async with node.session.post(
        f"{url}/{call['call_id']}/join", json={"identity": "a"}, headers=node.headers()
    ) as response:
        assert response.status == 410


async def test_bridges_share_one_call_between_rocketchat_and_matrix(node: Node) -> None:
    bridges = f"{node.url}/api/v1/bridges"
    async with node.session.put(
        f"{bridges}/team",
        json={"rocketchat_room": "RCROOM", "matrix_room": "!team:example.org"},
        headers=node.headers(),
    ) as response:
        assert response.status == 200
    async with node.session.put(
        f"{bridges}/other", json={"rocketchat_room": "RCROOM"}, headers=node.headers()
    ) as response:
        assert response.status == 409
        assert "unlink it first" in (await response.json())["error"]
    _, from_rc = await node.create("rocketchat:RCROOM")
    status, from_matrix = await node.create("!team:example.org")
    assert status == 200 and from_matrix["call_id"] == from_rc["call_id"]
    # Rocket.Chat users join the room Matrix users of the linked room are in
    assert from_rc["room"] == room_call_alias("!team:example.org")
    async with node.session.get(bridges, headers=node.headers()) as response:
        listed = (await response.json())["bridges"]
    assert [(b["room"], b["rocketchat_room"], b["matrix_room"]) for b in listed] == [
        ("team", "RCROOM", "!team:example.org")
    ]
    async with node.session.delete(f"{bridges}/team", headers=node.headers()) as response:
        assert response.status == 200
    async with node.session.delete(f"{bridges}/team", headers=node.headers()) as response:
        assert response.status == 404


V12_ROOM = "!lnTzxuXHixyorMcjgzAbCdEfGhIjKlMnOpQrStUvWxY"
"""A room version 12 id (the default of Synapse 1.163): '!' and a 43-character hash."""
FIND = "copy the room id from the room's settings (Element: Settings > Advanced > Internal room ID)"


@pytest.mark.parametrize("matrix_room", [V12_ROOM, "!team:example.org"])
async def test_rooms_of_every_version_are_linked_and_called(node: Node, matrix_room: str) -> None:
    async with node.session.put(
        f"{node.url}/api/v1/bridges/team",
        json={"rocketchat_room": "GENERAL", "matrix_room": matrix_room},
        headers=node.headers(),
    ) as response:
        assert response.status == 200, await response.text()
        assert (await response.json())["matrix_room"] == matrix_room
    status, from_rc = await node.create("rocketchat:GENERAL")
    assert status == 201
    status, from_matrix = await node.create(matrix_room)
    assert status == 200 and from_matrix["call_id"] == from_rc["call_id"]
    assert from_rc["room"] == room_call_alias(matrix_room)
    async with node.session.post(
        f"{node.url}/api/v1/calls/{from_rc['call_id']}/join",
        json={"identity": "rc-alice"},
        headers=node.headers(),
    ) as response:
        claims = verify_token((await response.json())["token"], {KEY: SECRET})
    assert require_room_join(claims) == room_call_alias(matrix_room)
    # an unlinked Matrix room of either form has a call of its own
    other = "!" + "Z" * 43 if matrix_room == V12_ROOM else "!other:example.org"
    status, unlinked = await node.create(other)
    assert status == 201 and unlinked["room"] == room_call_alias(other)


@pytest.mark.parametrize(
    ("matrix_room", "error"),
    [
        (
            "!lnTzxuXHixyorMcjgz…",
            "matrix_room: '!lnTzxuXHixyorMcjgz…' is not a Matrix room id: without ':server' "
            "it must be a room version 12 id, '!' and 43 letters, digits, '-' or '_' (this "
            "one has 19 characters after '!'); " + FIND,
        ),
        (
            "#team:example.org",
            "matrix_room: '#team:example.org' is a room alias, not a room id; " + FIND,
        ),
        (
            "!team:exa mple.org",
            "matrix_room: '!team:exa mple.org' is not a Matrix room id: it holds a space or "
            "control character; " + FIND,
        ),
        (
            "!team:",
            "matrix_room: '!team:' is not a Matrix room id: nothing follows ':'; " + FIND,
        ),
    ],
)
async def test_bad_matrix_rooms_say_what_a_room_id_is(
    node: Node, matrix_room: str, error: str
) -> None:
    async with node.session.put(
        f"{node.url}/api/v1/bridges/team", json={"matrix_room": matrix_room}, headers=node.headers()
    ) as response:
        assert response.status == 400
        assert (await response.json())["error"] == error
    status, body = await node.create(matrix_room)
    assert status == 400
    assert body["error"] == error.replace("matrix_room: ", "external_room: ", 1)


async def test_invite_link_gives_each_guest_a_token(node: Node) -> None:
    _, call = await node.create("rocketchat:R8")
    identities = set()
    for _ in range(2):
        async with node.session.get(call["join_url"], allow_redirects=False) as response:
            assert response.status == 302
            target = parse_qs(urlsplit(response.headers["Location"]).query)
        claims = verify_token(target["token"][0], {KEY: SECRET})
        assert require_room_join(claims, call["room"])
        identities.add(claims.identity)
    assert len(identities) == 2
    forged = call["join_url"].replace("code=", "code=x")
    async with node.session.get(forged, allow_redirects=False) as response:
        assert response.status == 401


async def test_openapi_documents_every_route(node: Node) -> None:
    async with node.session.get(f"{node.url}/api/v1/openapi.yaml") as response:
        document = yaml.safe_load(await response.text())
    assert document["openapi"].startswith("3.")
    app_routes = {
        (route.method.lower(), route.resource.canonical)
        for route in node.app.router.routes()
        if route.resource is not None
        and route.method != "HEAD"
        and route.resource.canonical.startswith("/api/v1/")
    }
    documented = {
        (method, path)
        for path, item in document["paths"].items()
        for method in item
        if method in {"get", "post", "put", "delete"}
    }
    assert len(app_routes) == 10, app_routes
    assert app_routes <= documented
