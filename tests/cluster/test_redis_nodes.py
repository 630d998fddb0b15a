"""Two nodes on a real Redis: one room, joined through both nodes' URLs.

A ``redis-server`` on a loopback port and two ``mediafed serve`` processes
with ``[redis] url`` (one worker each, a short ``ttl_s``), each posting LiveKit
webhooks to a receiver of the test. A libwebrtc publisher (the ``livekit``
SDK) joins through node A's URL and a libwebrtc viewer through node B's; they
must end up in the one room, on one node, and see each other:

- the viewer decodes the publisher's video; Redis names the room's node, and
  only that node's ``/healthz`` lists the room; RoomService on either node
  lists both participants and the room once;
- each webhook event is posted once (``room_started`` once, one
  ``participant_joined`` per participant) though both nodes post webhooks;
- the node hosting the room killed (SIGKILL): after its time to live it is gone
  from the other node's list, its rooms are released, and the participant who
  came through the other node is placed there again (it rejoins on its own).
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web

from loadtest.sdk_client import PUBLISHER, VIEWER, ScriptClient
from tests.support.netns_hosts import TestHost
from tests.support.relay import API_KEY, Relay, until

ROOM = "across-nodes"
RUN_S = 120
TTL_S = 3.0

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def redis_server(workdir: Path) -> AsyncIterator[str]:
    """A real ``redis-server`` on a free loopback port; yields its URL."""
    port = _free_port()
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = aioredis.from_url(url)
    try:
        for _ in range(100):
            try:
                await client.ping()
                break
            except OSError:
                await asyncio.sleep(0.05)
            except aioredis.ConnectionError:
                await asyncio.sleep(0.05)
        else:
            raise AssertionError("redis-server did not start")
        yield url
    finally:
        await client.aclose()
        proc.terminate()
        proc.wait(10)


class Hooks:
    """A webhook receiver: every event posted, by name."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.runner: web.AppRunner | None = None

    async def start(self) -> str:
        async def receive(request: web.Request) -> web.Response:
            self.events.append(json.loads(await request.read()))
            return web.Response()

        app = web.Application()
        app.router.add_post("/hook", receive)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        port = _free_port()
        await web.TCPSite(self.runner, "127.0.0.2", port).start()
        return f"http://127.0.0.2:{port}/hook"

    def count(self, event: str, **where: str) -> int:
        def matches(e: dict[str, Any]) -> bool:
            if e.get("event") != event:
                return False
            participant = e.get("participant", {})
            return all(participant.get(k) == v for k, v in where.items())

        return sum(1 for e in self.events if matches(e))

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def test_two_nodes_on_redis_share_a_room_and_release_it_when_one_disappears(
    tmp_path: Path,
) -> None:
    hooks = Hooks()
    hook_url = await hooks.start()
    with TestHost(31) as pub_host, TestHost(32) as viewer_host:
        async with redis_server(tmp_path) as redis_url:
            nodes = []
            for name in ("a", "b"):
                relay = Relay(
                    [pub_host, viewer_host],
                    tmp_path,
                    room=ROOM,
                    workers=1,
                    env={
                        "MEDIAFED_REDIS_URL": redis_url,
                        "MEDIAFED_REDIS_NODE_ID": f"node-{name}",
                        "MEDIAFED_REDIS_TTL_S": str(TTL_S),
                        "MEDIAFED_WEBHOOK_URLS": hook_url,
                        "MEDIAFED_WEBHOOK_API_KEY": API_KEY,
                    },
                )
                relay.env["MEDIAFED_REDIS_NODE_URL"] = relay.url
                nodes.append(relay)
            node_a, node_b = nodes
            clients: list[ScriptClient] = []
            redis = aioredis.from_url(redis_url, decode_responses=True)
            try:
                await asyncio.gather(node_a.start(), node_b.start())
                publisher = await ScriptClient.start(
                    pub_host,
                    PUBLISHER,
                    f"ws://{pub_host.server_ip}:{node_a.http_port}",
                    node_a.token("publisher"),
                    str(RUN_S),
                    "640x360",
                )
                clients.append(publisher)
                viewer = await ScriptClient.start(
                    viewer_host,
                    VIEWER,
                    f"ws://{viewer_host.server_ip}:{node_b.http_port}",
                    node_b.token("viewer"),
                    str(RUN_S),
                )
                clients.append(viewer)
                await until(
                    "the viewer (through node b) decodes the publisher's video (through a)",
                    lambda: viewer.seen()[0] > 20,
                    30,
                    node_a,
                    node_b,
                )

                owner = await redis.get(f"mediafed:room:{ROOM}")
                assert owner in ("node-a", "node-b"), owner
                host, other = (node_a, node_b) if owner == "node-a" else (node_b, node_a)
                assert ROOM in (await host.health())["workers"][0]["rooms"]
                assert ROOM not in (await other.health())["workers"][0]["rooms"]
                listed = await other.health()
                assert {n["id"] for n in listed["nodes"]} == {"node-a", "node-b"}, listed
                for node in nodes:
                    people = await node.participants()
                    assert set(people) == {"publisher", "viewer"}, (node.url, people)
                    status, rooms = await node.twirp(
                        "ListRooms", {}, node.token("admin", room_list=True)
                    )
                    assert status == 200, rooms
                    assert [r["name"] for r in rooms["rooms"]] == [ROOM], rooms

                await until(
                    "webhooks of both joins",
                    lambda: hooks.count("participant_joined") >= 2,
                    10,
                    node_a,
                    node_b,
                )
                await asyncio.sleep(1.0)  # a second poster would have posted by now
                assert hooks.count("room_started") == 1, hooks.events
                assert hooks.count("participant_joined", identity="publisher") == 1
                assert hooks.count("participant_joined", identity="viewer") == 1

                # the room's node disappears
                survivor_client = "viewer" if host is node_a else "publisher"
                host.kill()

                async def released() -> bool:
                    survivors = (await other.health())["nodes"]
                    return [n["id"] for n in survivors] == [
                        f"node-{'b' if host is node_a else 'a'}"
                    ]

                loop = asyncio.get_running_loop()
                deadline = loop.time() + 4 * TTL_S
                while not await released():
                    assert loop.time() < deadline, "the dead node is still listed"
                    await asyncio.sleep(0.2)
                # its participant came through the survivor: it rejoins, the room is
                # placed on the survivor
                deadline = loop.time() + 30
                while survivor_client not in await other.participants():
                    assert loop.time() < deadline, other.log()
                    await asyncio.sleep(0.2)
                survivor_id = "node-b" if host is node_a else "node-a"
                assert await redis.get(f"mediafed:room:{ROOM}") == survivor_id
                deadline = loop.time() + 5  # its worker reports it within a second
                while ROOM not in (await other.health())["workers"][0]["rooms"]:
                    assert loop.time() < deadline, await other.health()
                    await asyncio.sleep(0.2)
            finally:
                for client in clients:
                    await client.stop()
                await redis.aclose()
                for node in nodes:
                    await node.stop()
                await hooks.close()
