"""Loss on the way to a subscriber is repaired by NACK and retransmission (RFC 4585, 4588).

A relay socket sits between the clients and the server (the server advertises
the relay's address) and drops a share of the RTP packets going to clients.
The same call runs once without and once with loss; decoded frames are compared.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import cast

import pytest

from mediafed.config import load_config
from mediafed.media.quality import Level, Quality
from mediafed.worker import Worker
from tests.support.aiortc_client import AiortcParticipant, PatternVideoTrack, wait_for

pytestmark = pytest.mark.slow

SERVER_IP = "127.0.0.2"
RELAY_IP = "127.0.0.3"


class LossyRelay(asyncio.DatagramProtocol):
    """Forwards client <-> server datagrams, dropping server -> client RTP at ``loss``."""

    def __init__(self, server: tuple[str, int], loss: float, seed: int = 7) -> None:
        self.server = server
        self.loss = loss
        self.random = random.Random(seed)
        self.transport: asyncio.DatagramTransport | None = None
        self.upstream: dict[tuple[str, int], asyncio.DatagramTransport] = {}
        self.dropped = 0
        self.passed = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        upstream = self.upstream.get(addr)
        if upstream is None:
            asyncio.get_running_loop().create_task(self._open(addr, data))
            return
        upstream.sendto(data)

    async def _open(self, client: tuple[str, int], first: bytes) -> None:
        relay = self

        class Back(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                is_rtp = 128 <= data[0] <= 191 and not 192 <= data[1] <= 223
                if is_rtp and relay.random.random() < relay.loss:
                    relay.dropped += 1
                    return
                relay.passed += 1
                assert relay.transport is not None
                relay.transport.sendto(data, client)

        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            Back, local_addr=(RELAY_IP, 0), remote_addr=self.server
        )
        self.upstream[client] = transport
        transport.sendto(first)

    def close(self) -> None:
        for transport in self.upstream.values():
            transport.close()
        if self.transport is not None:
            self.transport.close()


def _free_udp_port() -> int:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b,
    ):
        a.bind((SERVER_IP, 0))
        port: int = a.getsockname()[1]
        b.bind((RELAY_IP, port))  # free on both addresses
        return port


@dataclass(frozen=True)
class CallResult:
    decoded: int
    produced: int
    retransmitted: int
    quality: Quality
    """bob's connection quality at the end, as LiveKit clients are told it"""
    rtt_ms: float


async def _run_call(loss: float, seconds: float) -> CallResult:
    port = _free_udp_port()
    config = load_config(
        environ={
            "MEDIAFED_SERVER_BIND": SERVER_IP,
            "MEDIAFED_RTC_UDP_PORT": str(port),
            "MEDIAFED_RTC_TCP_PORT": "0",
            "MEDIAFED_RTC_NODE_IP": RELAY_IP,
        }
    )
    worker = Worker.from_config(config)
    manager = worker.rooms
    await worker.start()
    loop = asyncio.get_running_loop()
    relay = LossyRelay((SERVER_IP, port), loss)
    await loop.create_datagram_endpoint(lambda: relay, local_addr=(RELAY_IP, port))
    room = manager.get_or_create("lossy")
    alice = AiortcParticipant(room, "alice")
    bob = AiortcParticipant(room, "bob")
    try:
        await alice.join()
        await bob.join()
        track = PatternVideoTrack((0, 0, 220), width=640, height=480)
        await alice.publish(track)
        await wait_for(lambda: sum(v.frames for v in bob.video.values()) > 0, timeout=20)
        start_frames = sum(v.frames for v in bob.video.values())
        start_sent = track.count
        await asyncio.sleep(seconds)
        decoded = sum(v.frames for v in bob.video.values()) - start_frames
        produced = track.count - start_sent
        bob_session = room.sessions["bob"]
        downtrack = next(iter(bob_session.downtracks.values()))
        return CallResult(
            decoded,
            produced,
            downtrack.retransmitted,
            bob_session.connection_quality(),
            downtrack.rtt_ms,
        )
    finally:
        await alice.close()
        await bob.close()
        relay.close()
        await worker.stop()


@pytest.fixture
async def lossless() -> AsyncIterator[CallResult]:
    yield await _run_call(0.0, 6.0)


async def test_nack_and_rtx_recover_lost_packets(lossless: CallResult) -> None:
    lossy = await _run_call(0.10, 6.0)
    assert lossless.decoded > 0.8 * lossless.produced
    assert lossless.retransmitted == 0
    # 10% of packets lost on the way to the subscriber, repaired from the cache:
    assert lossy.retransmitted > 10
    assert lossy.decoded > 0.7 * lossy.produced, lossy
    # connection quality follows the subscriber's own reports: loss, jitter, round trip
    assert lossless.quality.level is Level.EXCELLENT, lossless
    assert lossy.quality.level in (Level.GOOD, Level.POOR), lossy
    assert lossy.quality.score < lossless.quality.score - 20, (lossless, lossy)
    assert 0 < lossless.rtt_ms < 200, lossless  # LSR/DLSR of aiortc's receiver reports
