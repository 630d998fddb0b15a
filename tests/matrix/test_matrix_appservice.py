"""The appservice endpoint without a homeserver: auth, dedup, routing, bad input, joins.

tests/matrix/test_matrix_synapse.py has Synapse deliver real transactions.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from mediafed import server
from mediafed.config import Config
from mediafed.matrix.appservice import (
    APPSERVICE_KEY,
    PRUNE_EVERY,
    TransactionLog,
    setup_appservice,
)
from mediafed.matrix.membership import CallMembership
from mediafed.matrix.registration import make_registration
from mediafed.matrix.voip import CallEvent, Invite
from tests.matrix.conftest import serve

ROOM = "!room:hs.example"
REGISTRATION = make_registration(url="http://127.0.0.1:1", domain="hs.example")
SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"


class RecordingSink:
    def __init__(self, fail_on: str = "") -> None:
        self.events: list[tuple[str, str, CallEvent]] = []
        self.fail_on = fail_on

    async def on_call_event(
        self, room_id: str, sender: str, call_event: CallEvent, raw: Mapping[str, Any]
    ) -> None:
        if call_event.call_id == self.fail_on:
            raise RuntimeError("sink failure")
        self.events.append((room_id, sender, call_event))


@asynccontextmanager
async def _appservice(
    data_dir: Path,
    membership: CallMembership,
    sink: RecordingSink,
    homeserver_url: str = "http://127.0.0.1:9",
) -> AsyncIterator[str]:
    def extension(app: Any, config: Config) -> None:
        setup_appservice(
            app,
            REGISTRATION,
            homeserver_url=homeserver_url,
            data_dir=data_dir,
            membership=membership,
            call_sink=sink,
        )

    app = await server.build_app(Config(), extensions=[extension])
    assert app[APPSERVICE_KEY].registration == REGISTRATION
    async with serve(app) as url:
        yield url


async def _put(
    url: str, txn: str, body: Any, token: str | None = REGISTRATION.hs_token
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with (
        aiohttp.ClientSession() as http,
        http.put(f"{url}/_matrix/app/v1/transactions/{txn}", json=body, headers=headers) as resp,
    ):
        return resp.status, await resp.json()


def _call_member(sender: str, device: str) -> dict[str, Any]:
    return {
        "type": "org.matrix.msc3401.call.member",
        "room_id": ROOM,
        "sender": sender,
        "state_key": f"_{sender}_{device}_m.call",
        "origin_server_ts": 1_700_000_000_000,
        "event_id": f"$member-{device}",
        "content": {
            "application": "m.call",
            "call_id": "",
            "device_id": device,
            "expires": 3_600_000,
        },
    }


def _invite(call_id: str) -> dict[str, Any]:
    return {
        "type": "m.call.invite",
        "room_id": ROOM,
        "sender": "@alice:hs.example",
        "event_id": f"$invite-{call_id}",
        "content": {
            "call_id": call_id,
            "party_id": "ALICEDEV",
            "version": "1",
            "lifetime": 60000,
            "offer": {"type": "offer", "sdp": SDP},
        },
    }


async def test_hs_token_is_required(tmp_path: Path) -> None:
    sink = RecordingSink()
    async with _appservice(tmp_path, CallMembership(), sink) as url:
        status, body = await _put(url, "t1", {"events": [_invite("c")]}, token=None)
        assert (status, body["errcode"]) == (401, "M_UNAUTHORIZED")
        status, body = await _put(url, "t1", {"events": [_invite("c")]}, token="wrong")
        assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
        assert "wrong hs_token" in body["error"]
        async with aiohttp.ClientSession() as http:
            query_url = f"{url}/_matrix/app/v1/users/@rc_x:hs.example"
            async with http.get(query_url, params={"access_token": "nope"}) as resp:
                assert resp.status == 403
            async with http.get(query_url, params={"access_token": REGISTRATION.hs_token}) as resp:
                assert resp.status == 404  # no ghost users yet: the spec's "does not exist"
        assert sink.events == []
        # the old spec's query-parameter token still works for transactions
        async with (
            aiohttp.ClientSession() as http,
            http.put(
                f"{url}/_matrix/app/v1/transactions/t2",
                json={"events": [_invite("c")]},
                params={"access_token": REGISTRATION.hs_token},
            ) as resp,
        ):
            assert resp.status == 200
        assert [e[2].call_id for e in sink.events] == ["c"]


async def test_events_are_routed_and_bad_ones_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    membership, sink = CallMembership(), RecordingSink(fail_on="explodes")
    bad_candidates = {
        "type": "m.call.candidates",
        "room_id": ROOM,
        "sender": "@alice:hs.example",
        "event_id": "$bad",
        "content": {"call_id": "c1", "party_id": "P", "version": "1", "candidates": "not a list"},
    }
    events = [
        _call_member("@alice:hs.example", "AAA"),
        bad_candidates,
        _invite("explodes"),
        "not an event",
        _invite("c1"),
    ]
    with caplog.at_level(logging.INFO, logger="mediafed.matrix"):
        async with _appservice(tmp_path, membership, sink) as url:
            assert await _put(url, "1", {"events": events}) == (200, {})
    assert [(m.user_id, m.device_id) for m in membership.members(ROOM, 1_700_000_000_001)] == [
        ("@alice:hs.example", "AAA")
    ]
    [(room, sender, invite)] = sink.events
    assert (room, sender) == (ROOM, "@alice:hs.example")
    assert isinstance(invite, Invite) and invite.call_id == "c1" and invite.offer.sdp == SDP
    assert "dropped m.call.candidates" in caplog.text
    assert "`candidates` must be a list" in caplog.text
    assert "event $invite-explodes failed" in caplog.text


async def test_duplicate_transactions_are_ignored_across_restarts(tmp_path: Path) -> None:
    sink = RecordingSink()
    async with _appservice(tmp_path, CallMembership(), sink) as url:
        assert (await _put(url, "42", {"events": [_invite("c1")]}))[0] == 200
        assert (await _put(url, "42", {"events": [_invite("c1")]}))[0] == 200
        assert len(sink.events) == 1
        status, body = await _put(url, "43", {"no": "events"})
        assert (status, body["errcode"]) == (400, "M_BAD_JSON")
    async with _appservice(tmp_path, CallMembership(), sink) as url:
        assert (await _put(url, "42", {"events": [_invite("c1")]}))[0] == 200
        assert len(sink.events) == 1
        assert (await _put(url, "44", {"events": [_invite("c2")]}))[0] == 200
        assert [e[2].call_id for e in sink.events] == ["c1", "c2"]


def test_transaction_log_stays_bounded(tmp_path: Path) -> None:
    log = TransactionLog(tmp_path / "txn.sqlite3", keep=10)
    for i in range(3 * PRUNE_EVERY):
        log.record(str(i), now_ms=i)
    assert len(log) <= 10
    assert log.seen(str(3 * PRUNE_EVERY - 1))
    assert not log.seen("0")
    for i in range(3 * PRUNE_EVERY, 3 * PRUNE_EVERY + 5):
        log.record(str(i), now_ms=i)
    assert len(log) <= 10 + PRUNE_EVERY
    log.close()


@pytest.mark.parametrize(
    ("room_id", "inviter", "via"),
    [
        # room version 12: the id names no server at all
        (
            "!31hneApxJ_1o-63DmFrpeqnkFfWppnzWso1JvH3ogLM",
            "@alice:remote.example:8448",
            "remote.example:8448",
        ),
        # an older room made elsewhere: its id's server is not necessarily in the room
        ("!abc:gone.example", "@bob:other.example", "other.example"),
    ],
)
async def test_bot_joins_through_the_inviters_homeserver(
    tmp_path: Path, room_id: str, inviter: str, via: str
) -> None:
    joins: list[tuple[str, list[str]]] = []
    joined = asyncio.Event()

    async def homeserver(request: web.Request) -> web.Response:
        if request.path.startswith("/_matrix/client/v3/join/"):
            joins.append(
                (
                    request.match_info["tail"][len("v3/join/") :],
                    request.query.getall("server_name", []),
                )
            )
            joined.set()
            return web.json_response({"room_id": room_id})
        return web.json_response({"user_id": REGISTRATION.bot_user_id})  # /register and the rest

    fake = web.Application()
    fake.router.add_route("*", "/_matrix/client/{tail:.*}", homeserver)
    invite = {
        "type": "m.room.member",
        "room_id": room_id,
        "sender": inviter,
        "state_key": REGISTRATION.bot_user_id,
        "event_id": "$invite-bot",
        "content": {"membership": "invite"},
    }
    async with (
        serve(fake) as hs_url,
        _appservice(tmp_path, CallMembership(), RecordingSink(), homeserver_url=hs_url) as url,
    ):
        assert await _put(url, "j1", {"events": [invite]}) == (200, {})
        await asyncio.wait_for(joined.wait(), 10)
    assert joins == [(room_id, [via])]
