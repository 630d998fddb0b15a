"""The public port of a two-worker node, over HTTP: what reaches which worker.

``mediafed serve`` with ``[server] workers = 2`` in a process of its own; no
media, only the requests a client or an operator makes: RoomService creates
rooms on both workers and lists them all, a join refused by a worker comes back
with its status and reason, a plain GET on ``/rtc`` joins nobody, ``/metrics``
and ``/healthz`` answer for both workers.
"""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from mediafed.server import static_dir
from tests.support.relay import Relay


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Relay]:
    relay = Relay([], tmp_path, room="unused", workers=2, env={"MEDIAFED_RTC_NODE_IP": "127.0.0.2"})
    await relay.start()
    try:
        yield relay
    finally:
        await relay.stop()


async def test_roomservice_places_rooms_on_both_workers_and_answers_for_all(node: Relay) -> None:
    admin = node.token("ops", room_create=True, room_list=True)
    for name in ("one", "two", "three", "four"):
        status, room = await node.twirp("CreateRoom", {"name": name}, admin)
        assert status == 200 and room["name"] == name, room
    health = await node.health()
    per_worker = [sorted(w["rooms"]) for w in health["workers"]]
    assert sorted(name for rooms in per_worker for name in rooms) == ["four", "one", "three", "two"]
    assert all(len(rooms) == 2 for rooms in per_worker), f"not balanced: {per_worker}"

    status, listed = await node.twirp("ListRooms", {}, admin)
    assert status == 200
    assert sorted(r["name"] for r in listed["rooms"]) == ["four", "one", "three", "two"]
    status, only = await node.twirp("ListRooms", {"names": ["two"]}, admin)
    assert [r["name"] for r in only["rooms"]] == ["two"]

    # every other method reaches the room's worker
    for name in ("one", "two", "three", "four"):
        status, answer = await node.twirp(
            "ListParticipants", {"room": name}, node.token("ops", room=name, room_admin=True)
        )
        assert status == 200, answer
        status, answer = await node.twirp("DeleteRoom", {"room": name}, admin)
        assert status == 200, answer
    status, listed = await node.twirp("ListRooms", {}, admin)
    assert (status, listed.get("rooms", [])) == (200, []), "a DeleteRoom missed its worker"
    status, answer = await node.twirp(
        "GetParticipant",
        {"room": "nowhere", "identity": "someone"},
        node.token("ops", room="nowhere", room_admin=True),
    )
    assert (status, answer["code"]) == (404, "not_found"), answer
    status, answer = await node.twirp("ListRooms", {}, node.token("nobody"))
    assert status == 401 and answer["code"] == "unauthenticated", answer


async def test_joins_refused_by_a_worker_keep_their_reason_and_a_plain_get_joins_nobody(
    node: Relay,
) -> None:
    upgrade = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
    }
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{node.url}/rtc?access_token=not-a-jwt", headers=upgrade) as answer:
            assert answer.status == 401
            assert "not a well-formed JWT" in await answer.text()
        token = node.token("alice", room="plain")
        async with http.get(f"{node.url}/rtc?access_token={token}") as answer:
            assert answer.status == 400, await answer.text()
        async with http.get(f"{node.url}/rtc/validate?access_token={token}") as answer:
            assert answer.status == 200, await answer.text()
    assert await node.participants("plain") == {}


async def test_metrics_and_health_answer_for_every_worker(node: Relay) -> None:
    health = await node.health()
    assert health["status"] == "ok"
    assert [w["index"] for w in health["workers"]] == [0, 1]
    assert len({w["pid"] for w in health["workers"]}) == 2
    assert len({w["udp_port"] for w in health["workers"]}) == 2
    async with aiohttp.ClientSession() as http, http.get(f"{node.url}/metrics") as answer:
        text = await answer.text()
    assert 'mediafed_worker_up{worker="0"} 1.0' in text
    assert 'mediafed_worker_up{worker="1"} 1.0' in text
    assert "\nmediafed_rooms 0.0" in text
    # the web-demo and everything else come from the home worker
    built = static_dir() is not None
    async with aiohttp.ClientSession() as http, http.get(f"{node.url}/") as answer:
        assert answer.status == (200 if built else 503), await answer.text()
