"""``/metrics`` scraped while real aiortc participants call, leave and the call ends.

What an operator's Prometheus would see: gauges for what is there now, and
counters that only ever go up — a subscriber or a publisher leaving must not
take what was forwarded to them out of the totals, or ``rate()`` reads a
counter reset; the same for SRTP authentication failures and limit drops of a
participant who left. Media sends count as datagrams out on the media port,
from the native send path as from the Python one (this module also runs under
``MEDIAFED_PURE_PYTHON=1``, see ``tests/media/test_pure_python.py``).
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from mediafed import server
from mediafed.config import load_config
from mediafed.media import RoomManager, events, limits
from mediafed.operator.metrics import setup_metrics
from mediafed.transport.dtls import SrtpKeys
from mediafed.transport.ice import binding_request
from mediafed.transport.srtp import SrtpContext
from mediafed.worker import Worker
from tests.support.aiortc_client import (
    AiortcParticipant,
    PatternVideoTrack,
    ToneAudioTrack,
    wait_for,
)

pytestmark = pytest.mark.slow

UDP = 'mediafed_udp_datagrams_total{what="%s"}'


CONFIG = load_config(
    environ={
        "MEDIAFED_SERVER_BIND": "127.0.0.2",
        "MEDIAFED_RTC_UDP_PORT": "0",
        "MEDIAFED_RTC_TCP_PORT": "0",
        "MEDIAFED_RTC_NODE_IP": "127.0.0.2",
    }
)


@pytest.fixture
async def worker() -> AsyncIterator[Worker]:
    running = Worker.from_config(CONFIG)
    await running.start()
    yield running
    await running.stop()


@pytest.fixture
def rooms(worker: Worker) -> RoomManager:
    return worker.rooms


@pytest.fixture
async def client(worker: Worker) -> AsyncIterator[TestClient]:
    app = await server.build_app(CONFIG)
    setup_metrics(app, worker)
    test_client = TestClient(TestServer(app, host="127.0.0.2"))
    await test_client.start_server()
    yield test_client
    await test_client.close()


async def _scrape(client: TestClient) -> dict[str, float]:
    response = await client.get("/metrics")
    assert response.status == 200
    text = await response.text()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def _totals(values: dict[str, float]) -> dict[str, float]:
    return {name: value for name, value in values.items() if "_total" in name}


def _fell(before: dict[str, float], after: dict[str, float]) -> dict[str, tuple[float, float]]:
    """Counters that went down (or vanished) between two scrapes."""
    return {
        name: (value, after.get(name, -1.0))
        for name, value in _totals(before).items()
        if after.get(name, -1.0) < value
    }


async def test_counters_only_go_up_as_people_leave(rooms: RoomManager, client: TestClient) -> None:
    room = rooms.get_or_create("metrics")
    alice = AiortcParticipant(room, "alice")
    bob = AiortcParticipant(room, "bob")
    carol = AiortcParticipant(room, "carol")
    try:
        for person in (alice, bob, carol):
            await person.join()
        await alice.publish(PatternVideoTrack((220, 0, 0)), ToneAudioTrack())
        await wait_for(
            lambda: all(
                any(v.frames >= 10 for v in p.video.values()) and p.audio for p in (bob, carol)
            )
        )
        early = await _scrape(client)
        frames = max(v.frames for v in carol.video.values())
        await wait_for(lambda: max(v.frames for v in carol.video.values()) >= frames + 20)
        during = await _scrape(client)
        assert not _fell(early, during)
        assert during["mediafed_participants"] == 3
        assert during['mediafed_published_tracks{kind="video"}'] == 1
        assert during['mediafed_published_tracks{kind="audio"}'] == 1
        assert during["mediafed_subscriptions"] == 4
        forwarded = during["mediafed_forwarded_packets_total"]
        assert forwarded >= 20
        assert during[UDP % "datagrams_in"] > forwarded / 2  # alice's packets came in
        # every packet forwarded since left the media port as one SRTP datagram
        sent = during[UDP % "datagrams_out"] - early[UDP % "datagrams_out"]
        assert sent >= forwarded - early["mediafed_forwarded_packets_total"] > 20
        assert during["mediafed_media_sent_bytes_total"] > during["mediafed_forwarded_bytes_total"]
        assert during[UDP % "send_errors"] == 0

        await bob.close()  # a subscriber leaves: his two subscriptions end
        await wait_for(lambda: any(isinstance(e, events.ParticipantLeft) for e in carol.events))
        after_bob = await _scrape(client)
        assert after_bob["mediafed_participants"] == 2
        assert after_bob["mediafed_subscriptions"] == 2
        assert not _fell(during, after_bob)

        frames = max(v.frames for v in carol.video.values())
        await wait_for(lambda: max(v.frames for v in carol.video.values()) >= frames + 5)
        await alice.close()  # the publisher leaves: nothing is forwarded any more
        await wait_for(lambda: not room.tracks and room.num_participants == 1)
        ended = await _scrape(client)
        assert ended["mediafed_subscriptions"] == 0
        assert ended['mediafed_published_tracks{kind="video"}'] == 0
        assert not _fell(after_bob, ended)
        # carol kept receiving after bob left: the total grew although both are gone now
        assert (
            ended["mediafed_forwarded_packets_total"]
            > after_bob["mediafed_forwarded_packets_total"]
        )
        assert ended["mediafed_srtp_auth_failures_total"] == 0
    finally:
        for person in (alice, bob, carol):
            await person.close()


async def test_srtp_failures_and_limit_drops_stay_counted_after_the_sender_left(
    rooms: RoomManager, worker: Worker, client: TestClient
) -> None:
    room = rooms.get_or_create("mallory-room")
    session = await room.join("mallory", listener=AiortcParticipant(room, "x"))
    session.send_data(b"x" * (limits.MAX_DATA_BYTES + 1))  # over the size limit: dropped
    endpoint = session.publisher.endpoint
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.2", 0))
        sock.setblocking(False)
        server_addr = ("127.0.0.2", worker.udp_port)
        # A real ICE check binds the address; SRTP keys we know stand in for DTLS.
        sock.sendto(
            binding_request(f"{endpoint.ice.local_ufrag}:m", endpoint.ice.local_pwd), server_addr
        )
        await asyncio.wait_for(loop.sock_recv(sock, 2048), 5)
        await wait_for(lambda: endpoint.addr is not None)
        key = bytes(range(30))
        endpoint.srtp = SrtpContext(SrtpKeys(b"SRTP_AES128_CM_SHA1_80", key, key))
        forged = struct.pack("!BBHII", 0x80, 96, 1, 0, 1234) + os.urandom(200)
        for _ in range(20):
            sock.sendto(forged, server_addr)
        await wait_for(lambda: endpoint.stats["srtp_auth_failed"] == 20)
    during = await _scrape(client)
    assert during["mediafed_srtp_auth_failures_total"] == 20
    assert during['mediafed_limit_drops_total{kind="data_size"}'] == 1
    await session.leave()
    after = await _scrape(client)
    assert after["mediafed_participants"] == 0
    assert after["mediafed_srtp_auth_failures_total"] == 20
    assert after['mediafed_limit_drops_total{kind="data_size"}'] == 1
    assert not _fell(during, after)
