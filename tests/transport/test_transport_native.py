"""The transport's native steps (transport/_transport.c) against their Python reference.

Send target: the same plaintext packet must leave the socket as byte for byte
the same SRTP datagram, numbered the same way for transport-wide feedback, and
anything it cannot send is counted. Read loop: the same dispatch as the Python
code, oversize datagrams dropped, errors contained.
"""

from __future__ import annotations

import gc
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pylibsrtp
import pytest
from pylibsrtp._binding import lib

from mediafed.transport import native
from mediafed.transport.dtls import Certificate, SrtpKeys
from mediafed.transport.endpoint import Endpoint
from mediafed.transport.srtp import (
    BUFFER_SIZE,
    MAX_DATAGRAM,
    PacketBuffer,
    SrtpContext,
)
from mediafed.transport.target import (
    SEND_KERNEL_REFUSED,
    SEND_NOT_READY,
    SEND_OVERSIZE,
    PySendTarget,
)
from mediafed.transport.udp import MediaSocket, pack_sockaddr, unpack_sockaddr
from mediafed.wire import rtp

RTP = struct.Struct("!BBHII")
PROFILES = {
    b"SRTP_AES128_CM_SHA1_80": (bytes(range(30)), pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80),
    b"SRTP_AEAD_AES_128_GCM": (
        bytes(range(28)),
        pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
    ),
}


def built() -> None:
    assert native.native_send_target is not None, (
        "mediafed.transport._transport is not built: pip install -e . needs gcc and Python headers"
    )


@pytest.fixture
def sink() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.2", 0))
    sock.settimeout(2)
    yield sock
    sock.close()


@pytest.fixture
def sender() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.2", 0))
    yield sock
    sock.close()


def target_classes() -> list[type[Any]]:
    built()
    assert native.native_send_target is not None
    return [native.native_send_target, PySendTarget]


def make_target(cls: type[Any], sock: socket.socket | None, keys: SrtpKeys, dest: Any) -> Any:
    target = cls()
    target.set_socket(sock)
    target.set_srtp(SrtpContext(keys))
    target.set_address(pack_sockaddr(dest) if dest is not None else None)
    return target


def receiver(profile: bytes) -> pylibsrtp.Session:
    key, policy_profile = PROFILES[profile]
    return pylibsrtp.Session(
        pylibsrtp.Policy(
            key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND, srtp_profile=policy_profile
        )
    )


ONE_BYTE_EXT = bytes([0x90, 0x60]) + struct.pack("!HII", 1, 2, 3) + b"\xbe\xde\x00\x02"
TWO_BYTE_EXT = bytes([0x90, 0x60]) + struct.pack("!HII", 1, 2, 3) + b"\x10\x00\x00\x02"


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_native_and_python_targets_send_the_same_datagram(
    profile: bytes, sink: socket.socket, sender: socket.socket
) -> None:
    key = PROFILES[profile][0]
    keys = SrtpKeys(profile, key, key)
    dest = sink.getsockname()
    packets = [
        RTP.pack(0x80, 0x60, 1000, 5555, 0xAAAA) + bytes(range(200)) * 5,
        ONE_BYTE_EXT + b"\x11\xaa\xbb\x90\xcc\x00\x00\x00" + bytes(40),
        TWO_BYTE_EXT + b"\x01\x02\xaa\xbb\x09\x01\xcc\x00" + bytes(40),
    ]
    for packet in packets:
        sent: dict[str, bytes] = {}
        for cls in target_classes():
            # Contexts with the same key: the same input must encrypt the same way.
            target = make_target(cls, sender, keys, dest)
            size = target.send_packet(bytearray(packet))
            sent[cls.__module__] = datagram = sink.recv(2048)
            assert size == len(datagram) > len(packet)
            assert (target.datagrams_out, target.octets_out) == (1, size)
        native_out, python_out = sent.values()
        assert native_out == python_out
        assert receiver(profile).unprotect(native_out) == packet


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_length_is_sent_whole_or_refused_and_counted(
    profile: bytes, sink: socket.socket, sender: socket.socket
) -> None:
    """12 bytes up to MAX_DATAGRAM are protected and sent whole with either profile
    (GCM writes the longest tag); anything longer is refused, never written past the
    buffer. Retransmissions (send_packet) take the same path."""
    key = PROFILES[profile][0]
    keys = SrtpKeys(profile, key, key)
    sink.setblocking(False)
    body = bytes(range(256)) * 9
    for cls in target_classes():
        target = make_target(cls, sender, keys, sink.getsockname())
        rx = SrtpContext(keys)  # pylibsrtp's own buffer is too short for the longest
        buf = PacketBuffer()
        for length in range(12, 2100):
            packet = RTP.pack(0x80, 96, length & 0xFFFF, 0, 7) + body[: length - 12]
            result = target.send_packet(packet if length % 2 else memoryview(packet))
            if length > MAX_DATAGRAM:
                assert result == SEND_OVERSIZE, (cls, length)
                continue
            datagram = b""
            for _ in range(100):
                try:
                    datagram = sink.recv(4096)
                    break
                except BlockingIOError:
                    time.sleep(0.001)
            assert result == len(datagram), (cls, length)
            # the longest plaintext protected with GCM is longer than any datagram we
            # accept: decrypt it with libsrtp directly
            buf.view[: len(datagram)] = datagram
            buf.length[0] = len(datagram)
            assert lib.srtp_unprotect(rx.rx, buf.cdata, buf.length) == 0, (cls, length)
            assert bytes(buf.view[: buf.length[0]]) == packet, (cls, length)
        assert target.oversize == 2100 - MAX_DATAGRAM - 1
        assert target.datagrams_out == MAX_DATAGRAM - 11
    assert BUFFER_SIZE >= MAX_DATAGRAM + 16 + 4  # the longest SRTCP trailer fits too


def test_send_target_says_why_it_did_not_send(sink: socket.socket, sender: socket.socket) -> None:
    keys = SrtpKeys(b"SRTP_AES128_CM_SHA1_80", bytes(30), bytes(30))
    packet = RTP.pack(0x80, 96, 1, 2, 3) + bytes(20)
    for cls in target_classes():
        target = cls()
        assert not target.ready
        assert target.send_packet(packet) == SEND_NOT_READY
        target.set_srtp(SrtpContext(keys))
        assert target.send_packet(packet) == SEND_NOT_READY  # no address yet
        target.set_address(pack_sockaddr(sink.getsockname()))
        assert target.ready
        # no socket: the kernel refuses; counted, not raised
        assert target.send_packet(packet) == SEND_KERNEL_REFUSED
        assert target.send_errors == 1
        target.set_socket(sender)
        assert target.send_packet(packet[:11]) == SEND_OVERSIZE  # shorter than a header
        assert target.send_packet(bytes(4000)) == SEND_OVERSIZE
        assert target.oversize == 2
        assert target.send_packet(packet) > len(packet)
        assert target.datagrams_out == 1
        with pytest.raises(TypeError):
            target.send_packet("not bytes")
        with pytest.raises(ValueError, match="sockaddr"):
            target.set_address(b"\x02\x00")
        target.set_address(None)
        target.set_srtp(None)
        assert not target.ready
        assert target.send_packet(packet) == SEND_NOT_READY


def test_targets_number_packets_for_transport_wide_feedback(
    sink: socket.socket, sender: socket.socket
) -> None:
    """Every packet carrying the negotiated transport-cc extension gets the next
    transport-wide sequence number; what went out when is kept for the feedback."""
    key = PROFILES[b"SRTP_AES128_CM_SHA1_80"][0]
    keys = SrtpKeys(b"SRTP_AES128_CM_SHA1_80", key, key)
    with_twcc = rtp.build_header(96, 1, 2, 3, extensions=[(1, b"\x7f"), (3, b"\x00\x00")])
    without = rtp.build_header(96, 1, 2, 3, extensions=[(1, b"\x7f")])
    seen: dict[str, list[Any]] = {}
    for cls in target_classes():
        target = make_target(cls, sender, keys, sink.getsockname())
        rx = receiver(b"SRTP_AES128_CM_SHA1_80")
        sizes, numbers = [], []
        target.send_packet(bytes(with_twcc) + bytes(100))  # not numbered: feature off
        sink.recv(2048)
        target.set_twcc(3)
        for index, packet in enumerate([with_twcc, with_twcc, without, with_twcc]):
            if index == 3:
                target.set_probe(9)
            data = bytearray(bytes(packet) + bytes(100))
            struct.pack_into("!H", data, 2, 10 + index)
            size = target.send_packet(data)
            plain = rx.unprotect(sink.recv(2048))
            at = rtp.find_extension(plain, len(plain), 3, 2)
            numbers.append(struct.unpack_from("!H", plain, at)[0] if at >= 0 else None)
            sizes.append(size)
        assert numbers == [0, 1, None, 2]
        assert target.twcc_seq == 3
        records = target.sent(0, 4)
        assert [r[1:] if r else None for r in records] == [
            (sizes[0], -1),
            (sizes[1], -1),
            (sizes[3], 9),
            None,
        ]
        assert all(abs(r[0] / 1e6 - time.monotonic()) < 5 for r in records[:3] if r)
        assert target.sent(65535, 2)[1] is not None, "sequence numbers wrap"
        seen[cls.__name__] = [numbers, [r[1:] if r else None for r in records]]
    assert len({repr(v) for v in seen.values()}) == 1, seen


def test_a_native_target_keeps_its_srtp_session_alive(sink: socket.socket) -> None:
    built()
    assert native.native_send_target is not None
    target = native.native_send_target()
    target.set_socket(sink)
    target.set_address(pack_sockaddr(sink.getsockname()))
    target.set_srtp(SrtpContext(SrtpKeys(b"SRTP_AES128_CM_SHA1_80", bytes(30), bytes(30))))
    gc.collect()  # the context is only referenced by the target now
    packet = RTP.pack(0x80, 96, 1, 2, 3) + bytes(20)
    assert target.send_packet(packet) > 0


def test_pack_sockaddr_matches_the_kernel_layout() -> None:
    v4 = pack_sockaddr(("127.0.0.2", 7882))
    assert len(v4) == 16
    assert struct.unpack_from("=H", v4)[0] == socket.AF_INET
    assert v4[2:4] == (7882).to_bytes(2, "big")
    assert v4[4:8] == socket.inet_aton("127.0.0.2")
    v6 = pack_sockaddr(("::1", 5000))
    assert len(v6) == 28
    assert struct.unpack_from("=H", v6)[0] == socket.AF_INET6
    assert v6[2:4] == (5000).to_bytes(2, "big")
    assert v6[8:24] == socket.inet_pton(socket.AF_INET6, "::1")
    # recvfrom on an IPv6 socket gives (host, port, flowinfo, scope_id); a link-local
    # host may carry its zone after '%'.
    scoped = pack_sockaddr(("fe80::1%lo", 5000, 7, 1))
    assert struct.unpack_from("!I", scoped, 4)[0] == 7
    assert scoped[8:24] == socket.inet_pton(socket.AF_INET6, "fe80::1")
    assert struct.unpack_from("=I", scoped, 24)[0] == 1


def test_pure_python_switch_turns_the_native_steps_off() -> None:
    code = (
        "from mediafed.transport import native as t; from mediafed.media import native as m;"
        " print(t.native_send_target is None and t.SendTarget is t.PySendTarget"
        " and t.read_datagrams is None and m.fanout is m.py_fanout"
        " and m.Forwarder is m.PyForwarder and m.receive_rtp is None"
        " and m.InStream is m.PyInStream and m.PeerBase is m.PyPeerBase"
        " and m.remap_and_scan.__module__ == 'mediafed.wire.rtp')"
    )
    env = dict(os.environ, MEDIAFED_PURE_PYTHON="1")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "True"
    env["MEDIAFED_PURE_PYTHON"] = ""
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


class _Receiver:
    """An endpoint without SRTP keys yet: its media goes to on_srtp as it came."""

    srtp = None

    def __init__(self) -> None:
        self.media: list[tuple[bytes, float]] = []

    def on_srtp(self, buf: PacketBuffer, length: int, now: float) -> None:
        self.media.append((bytes(buf.view[:length]), now))


class _SortingSocket(MediaSocket):
    """A media socket, open on 127.0.0.2, that keeps what it would dispatch aside."""

    def __init__(self) -> None:
        super().__init__("127.0.0.2", 0, ["127.0.0.2"])
        self.sock = self._bind("127.0.0.2")
        self.fd = self.sock.fileno()
        self.port = self.sock.getsockname()[1]
        self.others: list[tuple[int, tuple[Any, ...], bytes]] = []
        self.times: list[float] = []

    def _dispatch(self, length: int, addr: tuple[Any, ...], now: float) -> None:
        self.others.append((length, addr, bytes(self.rx.view[:length])))
        self.times.append(now)

    def read(self, path: str, now: float) -> int:
        assert self.sock is not None
        if path == "python":
            return self._read_python(self.sock, now)
        built()
        assert native.read_datagrams is not None
        return native.read_datagrams(
            self.fd, self.rx, self.rx.view, self.by_sockaddr, self._on_other, now, None
        )


@pytest.mark.parametrize("path", ["native", "python"])
def test_read_loop_sends_bound_media_to_its_endpoint_and_the_rest_aside(path: str) -> None:
    server = _SortingSocket()
    bound = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        bound.bind(("127.0.0.2", 0))
        stranger.bind(("127.0.0.2", 0))
        receiver = _Receiver()
        addr = bound.getsockname()
        server.by_addr[addr] = receiver  # type: ignore[assignment]
        server.by_sockaddr[pack_sockaddr(addr)] = receiver  # type: ignore[assignment]
        media = bytes([0x80, 96]) + os.urandom(40)
        dest = ("127.0.0.2", server.port)
        bound.sendto(media, dest)
        bound.sendto(b"\x00\x01" + bytes(18), dest)  # STUN-like from the bound address
        stranger.sendto(media, dest)  # media from an address that never did ICE
        stranger.sendto(b"\xff" * 10, dest)
        bound.sendto(b"\x17" + media[1:], dest)  # DTLS-like from the bound address
        time.sleep(0.1)
        assert server.read(path, 5.0) == 5
        assert receiver.media == [(media, 5.0)]
        assert server.others == [
            (20, addr, b"\x00\x01" + bytes(18)),
            (len(media), stranger.getsockname(), media),
            (10, stranger.getsockname(), b"\xff" * 10),
            (len(media), addr, b"\x17" + media[1:]),
        ]
        assert server.read(path, 6.0) == 0, "an empty socket reads nothing, without error"
    finally:
        bound.close()
        stranger.close()
        server.close()


class _BrokenHandler:
    def __init__(self) -> None:
        self.seen = 0

    def on_rtp(self, endpoint: object, buf: PacketBuffer, length: int, now: float) -> None:
        self.seen += 1
        raise RuntimeError("a bug while handling one packet")

    def on_state(self, endpoint: object, state: object) -> None:
        pass


@pytest.mark.parametrize("path", ["native", "python"])
def test_an_error_handling_one_packet_is_logged_and_the_next_is_handled(
    path: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = _SortingSocket()
    handler = _BrokenHandler()
    endpoint = Endpoint(server, Certificate(), handler, label="broken")  # type: ignore[arg-type]
    key = bytes(range(30))
    endpoint.srtp = SrtpContext(SrtpKeys(b"SRTP_AES128_CM_SHA1_80", key, key))
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        client.bind(("127.0.0.2", 0))
        server.bind_address(endpoint, client.getsockname())
        tx = pylibsrtp.Session(
            pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
        )
        target = ("127.0.0.2", server.port)
        for seq in (1, 2):
            client.sendto(tx.protect(RTP.pack(0x80, 96, seq, 0, 5) + bytes(50)), target)
        time.sleep(0.1)
        assert server.read(path, 1.0) == 2
        assert handler.seen == 2
        assert endpoint.stats["media_errors"] == server.counters["media_errors"] == 2
        assert caplog.text.count("x broken error handling media") == 1  # rate-limited
        assert "a bug while handling one packet" in caplog.text
    finally:
        client.close()
        server.close()


def test_read_loop_as_the_reader_takes_the_clock_and_counts() -> None:
    """Registered as the socket's reader, the loop reads CLOCK_MONOTONIC itself
    and adds to the socket's counters."""
    built()
    assert native.read_datagrams is not None
    server = _SortingSocket()
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        client.bind(("127.0.0.2", 0))
        for size in range(1, 41):  # more than one batch
            client.sendto(b"\xff" * size, ("127.0.0.2", server.port))
        time.sleep(0.1)
        server.counters["datagrams_in"] = 7
        before = time.monotonic()
        count = native.read_datagrams(
            server.fd, server.rx, server.rx.view, {}, server._on_other, None, server.counters
        )
        assert count == 40 and server.counters["datagrams_in"] == 47
        assert [length for length, _addr, _data in server.others] == list(range(1, 41))
        assert all(data == b"\xff" * len(data) for _l, _a, data in server.others)
        assert before <= server.times[0] == server.times[-1] <= time.monotonic()
    finally:
        client.close()
        server.close()


def test_read_loop_handles_the_rest_of_a_batch_after_a_handler_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built()
    printed: list[BaseException | None] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda info: printed.append(info.exc_value))
    assert native.read_datagrams is not None
    server = _SortingSocket()
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    seen: list[int] = []

    def on_other(length: int, sockaddr: bytes, now: float) -> None:
        seen.append(length)
        if length == 1:
            raise RuntimeError("a handler bug")

    try:
        client.bind(("127.0.0.2", 0))
        for size in (1, 2, 3):
            client.sendto(b"\xff" * size, ("127.0.0.2", server.port))
        time.sleep(0.1)
        count = native.read_datagrams(server.fd, server.rx, server.rx.view, {}, on_other, 1.0, None)
        assert count == 3 and seen == [1, 2, 3]
        assert len(printed) == 1 and "a handler bug" in str(printed[0])
    finally:
        client.close()
        server.close()


@pytest.mark.parametrize("fatal", [KeyboardInterrupt, MemoryError, SystemExit])
def test_read_loop_lets_interrupts_and_memory_errors_through(
    fatal: type[BaseException], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C and MemoryError are not a handler's bug to print and survive."""
    built()
    printed: list[object] = []
    monkeypatch.setattr(sys, "unraisablehook", printed.append)
    assert native.read_datagrams is not None
    server = _SortingSocket()
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def on_other(length: int, sockaddr: bytes, now: float) -> None:
        raise fatal()

    try:
        client.bind(("127.0.0.2", 0))
        client.sendto(b"\xff", ("127.0.0.2", server.port))
        time.sleep(0.1)
        with pytest.raises(fatal):
            native.read_datagrams(server.fd, server.rx, server.rx.view, {}, on_other, 1.0, None)
        assert printed == []
    finally:
        client.close()
        server.close()


@pytest.mark.parametrize("path", ["native", "python"])
def test_datagrams_longer_than_the_limit_are_dropped_and_counted(path: str) -> None:
    """Longer than MAX_DATAGRAM: never truncated into a buffer and decrypted as garbage
    (which would be counted as an authentication failure), but dropped as what it is."""
    server = _SortingSocket()
    receiver = _Receiver()
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        client.bind(("127.0.0.2", 0))
        server.by_sockaddr[pack_sockaddr(client.getsockname())] = receiver
        server.by_addr[client.getsockname()] = receiver  # type: ignore[assignment]
        target = ("127.0.0.2", server.port)
        for size in (MAX_DATAGRAM, MAX_DATAGRAM + 1, 4000, 60000):
            client.sendto(RTP.pack(0x80, 96, 1, 2, 3) + bytes(size - 12), target)
        time.sleep(0.1)
        counters = server.counters
        if path == "native":
            assert native.read_datagrams is not None
            native.read_datagrams(
                server.fd,
                server.rx,
                server.rx.view,
                server.by_sockaddr,
                server._on_other,
                1.0,
                counters,
            )
        else:
            counters["datagrams_in"] += server._read_python(server.sock, 1.0)  # type: ignore[arg-type]
        assert [len(m) for m, _ in receiver.media] == [MAX_DATAGRAM]
        assert counters["dropped_oversize"] == 3
        assert counters["datagrams_in"] == 4
        assert server.others == []
    finally:
        client.close()
        server.close()


def test_read_loop_refuses_bad_arguments_clearly() -> None:
    built()
    assert native.read_datagrams is not None
    buf = PacketBuffer()
    with pytest.raises(TypeError, match="dict"):
        native.read_datagrams(-1, buf, buf.view, [], print, 0.0, None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="counters"):
        native.read_datagrams(-1, buf, buf.view, {}, print, 0.0, [])  # type: ignore[arg-type]
    with pytest.raises((TypeError, BufferError)):
        native.read_datagrams(-1, buf, b"read-only", {}, print, 0.0, None)  # type: ignore[arg-type]
    # A socket that cannot be read is simply empty.
    assert native.read_datagrams(-1, buf, buf.view, {}, print, 0.0, None) == 0


def test_unpack_sockaddr_inverts_pack_sockaddr() -> None:
    for addr in [("127.0.0.2", 7882), ("10.1.2.3", 1), ("::1", 5000, 0, 0), ("fe80::1", 9, 7, 1)]:
        assert unpack_sockaddr(pack_sockaddr(addr)) == addr
    with pytest.raises(ValueError, match="bytes"):
        unpack_sockaddr(b"\x02\x00\x00")
