"""ICE-TCP (RFC 6544, RFC 4571 framing) at the transport: a client of our own
plays the browser over a real TCP connection — ICE check, DTLS, SRTP both ways —
and bad connections are refused without touching good ones."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aioice import stun

from mediafed.transport import tcp
from mediafed.transport.dtls import Certificate, DtlsSession, DtlsState
from mediafed.transport.endpoint import Endpoint, EndpointState
from mediafed.transport.ice import binding_request
from mediafed.transport.srtp import PacketBuffer, SrtpContext, copy_into
from mediafed.transport.tcp import TcpListener
from mediafed.transport.udp import MediaSocket

IP = "127.0.0.2"
REMOTE_UFRAG, REMOTE_PWD = "cli1", "c" * 24


@dataclass
class Recorder:
    rtp: list[bytes] = field(default_factory=list)
    states: list[EndpointState] = field(default_factory=list)

    def on_rtp(self, endpoint: Endpoint, buf: PacketBuffer, length: int, now: float) -> None:
        self.rtp.append(bytes(buf.view[:length]))

    def on_rtcp(self, endpoint: Endpoint, packet: bytes, now: float) -> None:
        pass

    def on_state(self, endpoint: Endpoint, state: EndpointState) -> None:
        self.states.append(state)

    def on_channel_message(self, endpoint: Endpoint, label: str, data: bytes) -> None:
        pass


@dataclass
class Node:
    mux: MediaSocket
    listener: TcpListener
    certificate: Certificate


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    mux = MediaSocket(IP, 0, [IP])
    mux.open(asyncio.get_running_loop())
    listener = TcpListener(mux, 0)
    await listener.open()
    try:
        yield Node(mux, listener, Certificate())
    finally:
        await listener.close()
        mux.close()


def endpoint_of(node: Node, client_cert: Certificate) -> tuple[Endpoint, Recorder]:
    recorder = Recorder()
    endpoint = Endpoint(node.mux, node.certificate, recorder, label="tcp-test")
    endpoint.configure_remote(
        REMOTE_UFRAG, REMOTE_PWD, [("sha-256", client_cert.fingerprint())], "actpass"
    )
    return endpoint, recorder


class FramedClient:
    """A TCP client speaking RFC 4571: a 16-bit length before each datagram."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int) -> FramedClient:
        reader, writer = await asyncio.open_connection(IP, port)
        return cls(reader, writer)

    async def send(self, *frames: bytes, chunk: int = 0) -> None:
        data = b"".join(struct.pack("!H", len(f)) + f for f in frames)
        if chunk:
            # frames split across segments, as TCP may deliver them
            for start in range(0, len(data), chunk):
                self.writer.write(data[start : start + chunk])
                await self.writer.drain()
                await asyncio.sleep(0.01)
        else:
            self.writer.write(data)
            await self.writer.drain()

    async def receive(self, timeout: float = 5.0) -> bytes:
        header = await asyncio.wait_for(self.reader.readexactly(2), timeout)
        return await asyncio.wait_for(self.reader.readexactly(struct.unpack("!H", header)[0]), 5)

    async def closed(self) -> bool:
        try:
            return await asyncio.wait_for(self.reader.read(), 5) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.writer.close()


def check(endpoint: Endpoint) -> bytes:
    return binding_request(f"{endpoint.ice.local_ufrag}:{REMOTE_UFRAG}", endpoint.ice.local_pwd)


async def test_tcp_candidates_are_passive_and_below_udp(node: Node) -> None:
    endpoint, _ = endpoint_of(node, Certificate())
    udp, tcp_line = endpoint.local_candidates()
    assert udp.split()[2] == "udp" and tcp_line.split()[2] == "tcp"
    assert tcp_line.endswith(f"{IP} {node.listener.port} typ host tcptype passive")
    assert int(tcp_line.split()[3]) < int(udp.split()[3])
    assert udp.split()[0] != tcp_line.split()[0], "foundations differ by transport"


async def test_check_dtls_and_srtp_over_one_tcp_connection(node: Node) -> None:
    client_cert = Certificate()
    endpoint, recorder = endpoint_of(node, client_cert)
    client = await FramedClient.connect(node.listener.port)
    try:
        await client.send(check(endpoint), chunk=7)
        response = stun.parse_message(await client.receive())
        assert response.message_class == stun.Class.RESPONSE
        assert response.attributes["XOR-MAPPED-ADDRESS"] == client.writer.get_extra_info("sockname")
        assert endpoint.stream is not None and endpoint.sockaddr is None
        assert endpoint.addr == client.writer.get_extra_info("sockname")

        # DTLS: we are the server (the remote offered actpass); the client starts.
        dtls = DtlsSession(
            client_cert,
            is_server=False,
            remote_fingerprints=[("sha-256", node.certificate.fingerprint())],
        )
        outgoing = dtls.start()
        while dtls.state is not DtlsState.CONNECTED:
            await client.send(*outgoing)
            outgoing = dtls.receive(await client.receive())
        if outgoing:
            await client.send(*outgoing)
        for _ in range(100):
            if endpoint.state is EndpointState.CONNECTED:
                break
            await asyncio.sleep(0.02)
        assert endpoint.state is EndpointState.CONNECTED and endpoint.target.ready
        assert dtls.keys is not None
        keys = SrtpContext(dtls.keys)

        # client -> server: SRTP reaches the handler decrypted
        packet = struct.pack("!BBHII", 0x80, 111, 7, 9000, 0x1234) + b"opus" * 20
        buf = PacketBuffer()
        size = keys.protect_rtp(buf, copy_into(buf, packet))
        await client.send(bytes(buf.view[:size]), chunk=31)
        for _ in range(100):
            if recorder.rtp:
                break
            await asyncio.sleep(0.02)
        assert recorder.rtp == [packet]

        # server -> client: the send target frames onto the connection
        reply = struct.pack("!BBHII", 0x80, 96, 1, 1, 0x5678) + b"v" * 300
        assert endpoint.target.send_packet(reply) > len(reply)
        rx = PacketBuffer()
        protected = await client.receive()
        plain = keys.unprotect_rtp(rx, copy_into(rx, protected))
        assert bytes(rx.view[:plain]) == reply
        assert endpoint.target.datagrams_out == 1
    finally:
        client.close()
        endpoint.close()


async def test_the_connection_closing_leaves_the_endpoint_without_a_path(node: Node) -> None:
    endpoint, _ = endpoint_of(node, Certificate())
    client = await FramedClient.connect(node.listener.port)
    await client.send(check(endpoint))
    await client.receive()
    assert endpoint.stream is not None
    client.close()
    for _ in range(100):
        if endpoint.stream is None:
            break
        await asyncio.sleep(0.02)
    assert endpoint.stream is None and endpoint.addr is None
    assert not node.listener.connections
    # a new connection (the client reconnecting) binds again
    again = await FramedClient.connect(node.listener.port)
    try:
        await again.send(check(endpoint))
        await again.receive()
        assert endpoint.stream is not None
    finally:
        again.close()
        endpoint.close()


@pytest.mark.parametrize(
    "first",
    [
        b"\x16\xfe\xfd" + bytes(40),  # DTLS before any check
        b"\x80\x60" + bytes(30),  # RTP before any check
        b"GET / HTTP/1.1\r\n\r\n",  # not ICE at all
        binding_request("nobody:cli1", "x" * 24),  # a check for no endpoint of ours
    ],
)
async def test_a_connection_that_does_not_start_with_our_check_is_closed(
    node: Node, first: bytes
) -> None:
    endpoint, _ = endpoint_of(node, Certificate())
    bad = await FramedClient.connect(node.listener.port)
    good = await FramedClient.connect(node.listener.port)
    try:
        await bad.send(first)
        assert await bad.closed()
        await good.send(check(endpoint))
        assert stun.parse_message(await good.receive()).message_class == stun.Class.RESPONSE
    finally:
        bad.close()
        good.close()
        endpoint.close()


async def test_oversize_frames_are_skipped_and_framing_survives(node: Node) -> None:
    endpoint, _ = endpoint_of(node, Certificate())
    client = await FramedClient.connect(node.listener.port)
    try:
        await client.send(check(endpoint))
        await client.receive()
        dropped = node.mux.counters["dropped_oversize"]
        await client.send(bytes([0x80]) + bytes(5000), check(endpoint), chunk=1000)
        assert stun.parse_message(await client.receive()).message_class == stun.Class.RESPONSE
        assert node.mux.counters["dropped_oversize"] == dropped + 1
    finally:
        client.close()
        endpoint.close()


async def test_wrong_password_gets_an_error_and_no_binding(node: Node) -> None:
    endpoint, _ = endpoint_of(node, Certificate())
    client = await FramedClient.connect(node.listener.port)
    try:
        await client.send(
            binding_request(f"{endpoint.ice.local_ufrag}:{REMOTE_UFRAG}", "wrong" * 5)
        )
        response = stun.parse_message(await client.receive())
        assert response.message_class == stun.Class.ERROR
        assert endpoint.stream is None and endpoint.addr is None
    finally:
        client.close()
        endpoint.close()


async def test_unbound_connections_time_out(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tcp, "UNBOUND_TIMEOUT_S", 0.2)
    idle = await FramedClient.connect(node.listener.port)
    try:
        assert await idle.closed()
    finally:
        idle.close()


async def test_a_slow_reader_loses_packets_not_the_framing(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tcp, "MAX_QUEUED_BYTES", 20_000)
    endpoint, _ = endpoint_of(node, Certificate())
    client = await FramedClient.connect(node.listener.port)
    try:
        await client.send(check(endpoint))
        await client.receive()
        stream = endpoint.stream
        assert stream is not None
        frame = b"\x80" + bytes(1199)
        results = [stream.write(frame) for _ in range(20_000)]  # 24 MB, nobody reading
        assert not all(results) and stream.dropped == results.count(False)
        # what was queued arrives whole and in order
        for _ in range(50):
            assert await client.receive() == frame
    finally:
        client.close()
        endpoint.close()
