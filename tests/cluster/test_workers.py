"""A node of two workers with real clients: rooms placed apart, a worker killed.

``mediafed serve`` with ``[server] workers = 2`` in a process of its own; two
rooms, each with a libwebrtc publisher (the ``livekit`` SDK: a 640x360 camera
and a tone) and a libwebrtc viewer on test hosts, joined through the one public
port. What users see is measured at the viewers (frames decoded, the longest
wait between two).

- The rooms go to different workers (``/healthz`` lists each worker's rooms);
  RoomService, ``/metrics`` and ``/healthz`` answer for both.
- The worker of one room killed with SIGKILL: the supervisor restarts it, that
  room's clients rejoin on their own (their resume is refused: the room is new)
  and its viewer decodes video again; the other room never notices (its viewer
  never waits over a second for a frame, nobody in it rejoins).
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import aiohttp
import pytest

from loadtest.sdk_client import PUBLISHER, VIEWER, ScriptClient
from tests.support.netns_hosts import TestHost
from tests.support.relay import Relay, until

ROOMS = ("left", "right")
RUN_S = 120

pytestmark = pytest.mark.slow


def _worker_of(health: dict[str, object], room: str) -> dict[str, object]:
    workers = health["workers"]
    assert isinstance(workers, list)
    hosting = [w for w in workers if room in w["rooms"]]
    assert len(hosting) == 1, f"room {room} is on {len(hosting)} workers: {workers}"
    worker: dict[str, object] = hosting[0]
    return worker


async def _metric(relay: Relay, name: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(f"{relay.url}/metrics") as response:
        text = await response.text()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics:\n{text}")


async def _list_rooms(relay: Relay) -> set[str]:
    token = relay.token("lister", room_list=True)
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{relay.url}/twirp/livekit.RoomService/ListRooms",
            json={},
            headers={"Authorization": f"Bearer {token}"},
        ) as response,
    ):
        body = await response.json()
    return {room["name"] for room in body.get("rooms", [])}


async def test_rooms_spread_over_workers_and_a_killed_worker_takes_only_its_room(
    tmp_path: Path,
) -> None:
    with TestHost(21) as pub_host, TestHost(22) as viewer_host:
        relay = Relay([pub_host, viewer_host], tmp_path, room=ROOMS[0], workers=2)
        await relay.start()
        viewers: dict[str, ScriptClient] = {}
        clients: list[ScriptClient] = []
        try:
            for room in ROOMS:
                for host, script, who, extra in (
                    (pub_host, PUBLISHER, "publisher", ("640x360",)),
                    (viewer_host, VIEWER, "viewer", ()),
                ):
                    url = f"ws://{host.server_ip}:{relay.http_port}"
                    token = relay.token(f"{who}-{room}", room=room)
                    client = await ScriptClient.start(host, script, url, token, str(RUN_S), *extra)
                    clients.append(client)
                    if who == "viewer":
                        viewers[room] = client
                # joined before the next room is placed
                await until(
                    f"{room} decodes video", lambda r=room: viewers[r].seen()[0] > 20, 30, relay
                )  # type: ignore[misc]

            health = await relay.health()
            left, right = (_worker_of(health, room) for room in ROOMS)
            assert left["index"] != right["index"], health
            assert health["participants"] == 4, health
            assert await _list_rooms(relay) == set(ROOMS)
            assert await _metric(relay, "mediafed_rooms") == 2
            assert await _metric(relay, "mediafed_participants") == 4
            sids = {room: await relay.participants(room) for room in ROOMS}

            first_line = len(viewers["left"].lines)
            frames = viewers["right"].seen()[0]
            pid = right["pid"]
            assert isinstance(pid, int)
            os.kill(pid, signal.SIGKILL)
            back_s = await until(
                "the killed worker's room decodes video again",
                lambda: viewers["right"].seen()[0] > frames + 5,
                30,
                relay,
            )
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20  # the killed worker starts again
            while (health := await relay.health())["status"] != "ok":
                assert loop.time() < deadline, health
                await asyncio.sleep(0.2)
            restarted = health["workers"][right["index"]]
            assert restarted["restarts"] == 1 and restarted["pid"] != pid, health
            assert _worker_of(health, "left")["index"] == left["index"]
            _worker_of(health, "right")  # placed again, on exactly one worker
            assert await relay.participants("left") == sids["left"], "someone in left rejoined"
            after = await relay.participants("right")
            assert set(after) == set(sids["right"]), after
            assert after["viewer-right"] != sids["right"]["viewer-right"], "a new room, new sids"
            gap = viewers["left"].longest_gap_ms(first_line)
            assert gap <= 1000, f"the other room's video stopped for {gap} ms"
            assert (
                await _metric(relay, f'mediafed_worker_restarts_total{{worker="{right["index"]}"}}')
                == 1
            )
            print(
                f"worker {right['index']} killed: its room's video back after {back_s:.2f} s; "
                f"the other room's longest wait between frames {gap} ms"
            )
        finally:
            for client in clients:
                await client.stop()
            await relay.stop()
