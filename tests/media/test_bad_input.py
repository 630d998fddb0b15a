"""Bad input is logged clearly, dropped, and never disturbs another call."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
from collections.abc import AsyncIterator

import pytest
from aioice import stun

from mediafed.errors import NegotiationError
from mediafed.media import RoomManager
from mediafed.transport import udp
from mediafed.transport.dtls import SrtpKeys
from mediafed.transport.ice import binding_request
from mediafed.transport.srtp import SrtpContext
from mediafed.worker import Worker
from tests.support.aiortc_client import AiortcParticipant, PatternVideoTrack, wait_for
from tests.support.media import media_config, use_python_paths

pytestmark = pytest.mark.slow

GREEN = (0, 200, 0)


class Call:
    """A running call in its own room whose frames must keep coming."""

    def __init__(self, rooms: RoomManager) -> None:
        room = rooms.get_or_create("unharmed")
        self.publisher = AiortcParticipant(room, "carol")
        self.viewer = AiortcParticipant(room, "dave")

    async def start(self) -> None:
        await self.publisher.join()
        await self.viewer.join()
        await self.publisher.publish(PatternVideoTrack(GREEN))
        await wait_for(lambda: self.frames() > 10)

    def frames(self) -> int:
        return sum(v.frames for v in self.viewer.video.values())

    async def still_flowing(self) -> None:
        before = self.frames()
        await wait_for(lambda: self.frames() > before + 10, timeout=10)

    async def stop(self) -> None:
        await self.publisher.close()
        await self.viewer.close()


@pytest.fixture(params=["native", "python"])
def read_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The media socket's read loop: native (transport/_transport.c) or the Python reference."""
    if request.param == "python":
        use_python_paths(monkeypatch)
    else:
        assert udp._read_datagrams is not None, "the native read loop is not built"
    return str(request.param)


@pytest.fixture
async def call(rooms: RoomManager) -> AsyncIterator[Call]:
    running = Call(rooms)
    await running.start()
    yield running
    await running.stop()


def _socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.2", 0))
    sock.setblocking(False)
    return sock


async def _receive(sock: socket.socket) -> bytes:
    # The server runs on this event loop: never block it while waiting.
    loop = asyncio.get_running_loop()
    return await asyncio.wait_for(loop.sock_recv(sock, 2048), 5)


async def test_random_datagrams_are_dropped_with_a_reason(
    read_path: str, rooms: RoomManager, worker: Worker, call: Call, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mediafed.transport.udp")
    target = ("127.0.0.2", worker.udp_port)
    with _socket() as sock:
        for first in (70, 0, 0x16, 0x80, 0xFF):
            for _ in range(50):
                sock.sendto(bytes([first]) + os.urandom(100), target)
        sock.sendto(b"", target)
    await call.still_flowing()
    text = caplog.text
    assert "datagram with first byte 70 (RFC 7983)" in text
    assert "STUN without USERNAME or malformed" in text
    assert "DTLS from an address that never completed ICE" in text
    assert "RTP/RTCP from an address that never completed ICE" in text
    assert worker.mux.counters["dropped_unbound"] >= 100


async def test_stun_with_a_wrong_password_gets_401(
    rooms: RoomManager, worker: Worker, call: Call, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mediafed.transport.udp")
    endpoint = rooms.get_or_create("unharmed").sessions["dave"].subscriber.endpoint
    bound_before = endpoint.addr
    with _socket() as sock:
        sock.sendto(
            binding_request(f"{endpoint.ice.local_ufrag}:evil", "not-the-password-at-all"),
            ("127.0.0.2", worker.udp_port),
        )
        reply = stun.parse_message(await _receive(sock))
    assert reply.message_class == stun.Class.ERROR
    assert reply.attributes["ERROR-CODE"] == (401, "Unauthorized")
    assert endpoint.addr == bound_before, "a failed check must not move the media path"
    assert "MESSAGE-INTEGRITY does not verify" in caplog.text
    await call.still_flowing()


async def test_srtp_failing_authentication_is_dropped(
    read_path: str, rooms: RoomManager, worker: Worker, call: Call, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mediafed.transport.udp")
    room = rooms.get_or_create("mallory-room")
    session = await room.join("mallory", listener=AiortcParticipant(room, "x"))
    endpoint = session.publisher.endpoint
    with _socket() as sock:
        # A real ICE check binds the address; SRTP keys we know stand in for DTLS.
        sock.sendto(
            binding_request(f"{endpoint.ice.local_ufrag}:m", endpoint.ice.local_pwd),
            ("127.0.0.2", worker.udp_port),
        )
        assert stun.parse_message(await _receive(sock)).message_class == stun.Class.RESPONSE
        await wait_for(lambda: endpoint.addr is not None)
        key = bytes(range(30))
        endpoint.srtp = SrtpContext(SrtpKeys(b"SRTP_AES128_CM_SHA1_80", key, key))
        packet = struct.pack("!BBHII", 0x80, 96, 1, 0, 1234) + os.urandom(200)
        for _ in range(20):
            sock.sendto(packet, ("127.0.0.2", worker.udp_port))
    await wait_for(lambda: endpoint.stats["srtp_auth_failed"] == 20)
    assert "SRTP failed authentication" in caplog.text
    await call.still_flowing()
    await session.leave()


async def test_malformed_sdp_is_refused_with_a_clear_error(rooms: RoomManager, call: Call) -> None:
    room = rooms.get_or_create("sdp")
    session = await room.join("eve", listener=AiortcParticipant(room, "x"))
    with pytest.raises(NegotiationError, match="publisher offer is empty"):
        await session.answer_publisher_offer("")
    with pytest.raises(NegotiationError, match="line 2"):
        await session.answer_publisher_offer("v=0\r\no=garbage\r\n")
    no_ice = (
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
        "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=rtpmap:111 opus/48000/2\r\n"
    )
    with pytest.raises(NegotiationError, match="no a=ice-ufrag"):
        await session.answer_publisher_offer(no_ice)
    only_unknown = (
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=ice-ufrag:abcd\r\n"
        "a=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=fingerprint:sha-256 "
        + ":".join(["AA"] * 32)
        + "\r\nm=audio 9 UDP/TLS/RTP/SAVPF 120\r\na=mid:0\r\na=sendonly\r\n"
        "a=rtpmap:120 SPEEX/16000\r\n"
    )
    with pytest.raises(NegotiationError, match="could accept none of the offered"):
        await session.answer_publisher_offer(only_unknown)
    assert not session.closed, "a bad offer is refused; the session lives on"
    await call.still_flowing()
    await session.leave()


async def test_publisher_vanishing_mid_stream(call: Call) -> None:
    rooms_config = media_config(consent_timeout_s=8)
    worker = Worker.from_config(rooms_config)  # type: ignore[arg-type]
    manager = worker.rooms
    await worker.start()
    try:
        room = manager.get_or_create("vanish")
        ghost = AiortcParticipant(room, "ghost")
        viewer = AiortcParticipant(room, "viewer")
        await ghost.join()
        await viewer.join()
        await ghost.publish(PatternVideoTrack(GREEN))
        await wait_for(lambda: sum(v.frames for v in viewer.video.values()) > 5)
        # Vanish without a word: stop the ICE transport under the publisher,
        # so no more media, no consent checks and no DTLS close arrive.
        for transceiver in ghost.pub.getTransceivers():
            await transceiver.sender.transport.transport.stop()
        await wait_for(lambda: "ghost" not in room.sessions, timeout=25)
        assert not room.tracks
        assert [p.identity for p in room.participants()] == ["viewer"]
        await viewer.close()
        await asyncio.gather(ghost.close(), return_exceptions=True)
    finally:
        await worker.stop()
    await call.still_flowing()


async def test_a_late_dtls_close_is_named_after_the_session_it_ended(
    rooms: RoomManager, worker: Worker, call: Call, caplog: pytest.LogCaptureFixture
) -> None:
    """The server removes a participant first; the client's DTLS close_notify arrives
    after its endpoint is gone and is reported as what it is, not as a stranger's."""
    caplog.set_level(logging.INFO, logger="mediafed.transport.udp")
    room = rooms.get_or_create("late-close")
    session = await room.join("erin", listener=AiortcParticipant(room, "x"))
    endpoint = session.publisher.endpoint
    with _socket() as sock:
        sock.sendto(
            binding_request(f"{endpoint.ice.local_ufrag}:e", endpoint.ice.local_pwd),
            ("127.0.0.2", worker.udp_port),
        )
        assert stun.parse_message(await _receive(sock)).message_class == stun.Class.RESPONSE
        await wait_for(lambda: endpoint.addr is not None)
        await room.remove_participant("erin", "removed by an admin")
        # a DTLS 1.2 alert record (close_notify is encrypted; the header is what we see)
        alert = bytes([21, 0xFE, 0xFD]) + bytes(8) + b"\x00\x1a" + bytes(26)
        sock.sendto(alert, ("127.0.0.2", worker.udp_port))
        await wait_for(lambda: "whose connection closed" in caplog.text)
    assert f"DTLS for {endpoint.label}, whose connection closed" in caplog.text
    assert "DTLS from an address that never completed ICE" not in caplog.text
    await call.still_flowing()
