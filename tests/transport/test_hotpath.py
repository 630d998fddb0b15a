"""The native hot-path steps (transport/_hotpath.c) against their Python reference.

Send: the same plaintext packet and rewrite must leave the socket as byte for
byte the same SRTP datagram. Fan-out: steady DownTracks forwarded natively
end in the same state, every other one runs its Python forward(). Read loop
and extension scan: the same dispatch and the same bytes as the Python code.
"""

from __future__ import annotations

import gc
import os
import socket
import struct
import subprocess
import sys
import time
import weakref
from collections.abc import Iterator
from typing import Any

import pylibsrtp
import pytest
from hypothesis import given, settings, strategies as st

from mediafed.transport import native
from mediafed.transport.dtls import Certificate, SrtpKeys
from mediafed.transport.endpoint import Endpoint
from mediafed.transport.srtp import PacketBuffer, SrtpContext
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


def built() -> native.SendRtp:
    assert native.send_rtp is not None, (
        "mediafed.transport._hotpath is not built: pip install -e . needs gcc and Python headers"
    )
    return native.send_rtp


@pytest.fixture
def sink() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.2", 0))
    sock.settimeout(2)
    yield sock
    sock.close()


def python_send(
    ctx: SrtpContext,
    sock: socket.socket,
    dest: tuple[str, int],
    packet: bytes,
    rewrite: tuple[int, int, int, int],
) -> None:
    """What DownTrack._send_python does, without a DownTrack."""
    b1, seq, ts, ssrc = rewrite
    buf = PacketBuffer()
    buf.view[: len(packet)] = packet
    buf.view[1] = b1
    struct.pack_into("!HII", buf.view, 2, seq, ts, ssrc)
    size = ctx.protect_rtp(buf, len(packet))
    assert size > 0
    sock.sendto(buf.view[:size], dest)


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_native_and_python_send_the_same_datagram(profile: bytes, sink: socket.socket) -> None:
    send_rtp = built()
    key, policy_profile = PROFILES[profile]
    keys = SrtpKeys(profile, key, key)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("127.0.0.2", 0))
    packet = RTP.pack(0x80, 0x60, 1000, 5555, 0xAAAA) + bytes(range(200)) * 5
    try:
        for index in range(3):
            # Two contexts with the same key: the same input must encrypt the same way.
            b1, seq, ts, ssrc = 0x80 | 101, 40000 + index, 0xFFFFFF00 + index, 0x01020304
            native_ctx = SrtpContext(keys)
            python_ctx = SrtpContext(keys)
            sent = send_rtp(
                sender.fileno(),
                packet,
                len(packet),
                b1,
                seq,
                ts,
                ssrc,
                native_ctx.tx_address,
                pack_sockaddr(sink.getsockname()),
            )
            from_native = sink.recv(2048)
            python_send(python_ctx, sender, sink.getsockname(), packet, (b1, seq, ts, ssrc))
            from_python = sink.recv(2048)
            assert sent == len(from_native) > len(packet)
            assert from_native == from_python
            rx = pylibsrtp.Session(
                pylibsrtp.Policy(
                    key=key,
                    ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
                    srtp_profile=policy_profile,
                )
            )
            plain = rx.unprotect(from_native)
            assert RTP.unpack_from(plain, 0) == (0x80, b1, seq, ts, ssrc)
            assert plain[12:] == packet[12:]
    finally:
        sender.close()


def test_native_send_refuses_bad_arguments_clearly(sink: socket.socket) -> None:
    send_rtp = built()
    ctx = SrtpContext(SrtpKeys(b"SRTP_AES128_CM_SHA1_80", bytes(30), bytes(30)))
    addr = pack_sockaddr(sink.getsockname())
    packet = RTP.pack(0x80, 96, 1, 2, 3) + bytes(20)
    fd = sink.fileno()
    with pytest.raises(ValueError, match="length"):
        send_rtp(fd, packet[:8], 8, 96, 1, 2, 3, ctx.tx_address, addr)  # shorter than a header
    with pytest.raises(ValueError, match="length"):
        send_rtp(fd, packet, len(packet) + 1, 96, 1, 2, 3, ctx.tx_address, addr)
    with pytest.raises(ValueError, match="length"):
        send_rtp(fd, bytes(4000), 4000, 96, 1, 2, 3, ctx.tx_address, addr)  # no room for a tag
    with pytest.raises(ValueError, match="address"):
        send_rtp(fd, packet, len(packet), 96, 1, 2, 3, ctx.tx_address, b"\x02\x00")
    with pytest.raises(TypeError):
        send_rtp(fd, packet, len(packet))  # type: ignore[call-arg]
    # The kernel refusing the datagram is a result, not an exception.
    assert send_rtp(-1, packet, len(packet), 96, 1, 2, 3, ctx.tx_address, addr) == -2


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


def test_pure_python_switch_turns_the_native_step_off() -> None:
    code = (
        "from mediafed.transport import native; print(native.send_rtp is None"
        " and native.read_datagrams is None and native.fanout is native.py_fanout"
        " and native.Forwarder is native.PyForwarder and native.receive_rtp is None"
        " and native.InStream is native.PyInStream"
        " and native.remap_and_scan.__module__ == 'mediafed.wire.rtp')"
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


# -- fan-out ---------------------------------------------------------------------


class _Mux:
    def __init__(self, fd: int) -> None:
        self.fd = fd


class _Endpoint:
    """What the fan-out reads from a subscriber's Endpoint."""

    def __init__(self, fd: int, keys: SrtpKeys, dest: tuple[str, int] | None) -> None:
        self.mux = _Mux(fd)
        self.srtp: SrtpContext | None = SrtpContext(keys)
        self.sockaddr = pack_sockaddr(dest) if dest is not None else None


class _Track(native.Forwarder):
    """A Forwarder whose Python forward() (the slow path) records its calls."""

    def __init__(self, endpoint: _Endpoint, *, ssrc: int, offsets: tuple[int, int]) -> None:
        self.endpoint = endpoint
        self.ext_remap = None
        self.needs_keyframe = False
        self.synced = True
        self.seq_off, self.ts_off = offsets
        self.seq_out = self.ts_out = 0
        self.ssrc = ssrc
        self.payload_type = 101
        self.packets_sent = self.octets_sent = 0
        self.time_out = 0.0
        self.calls: list[tuple[object, ...]] = []

    def forward(
        self, packet: bytes, length: int, b1: int, seq: int, ts: int, keyframe: bool, now: float
    ) -> None:
        self.calls.append((packet, length, b1, seq, ts, keyframe, now))


class _NotAForwarder:
    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []

    def forward(self, *args: object) -> None:
        self.calls.append(args)


def test_fanout_forwards_steady_tracks_natively_and_hands_the_rest_to_python(
    sink: socket.socket,
) -> None:
    built()
    keys = SrtpKeys(b"SRTP_AEAD_AES_128_GCM", bytes(range(28)), bytes(range(28)))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("127.0.0.2", 0))
    dest = sink.getsockname()
    try:
        steady = _Track(_Endpoint(sender.fileno(), keys, dest), ssrc=0x0A0B0C0D, offsets=(65000, 7))
        waiting = _Track(_Endpoint(sender.fileno(), keys, dest), ssrc=2, offsets=(0, 0))
        waiting.needs_keyframe = True
        unsynced = _Track(_Endpoint(sender.fileno(), keys, dest), ssrc=3, offsets=(0, 0))
        unsynced.synced = False
        remapped = _Track(_Endpoint(sender.fileno(), keys, dest), ssrc=4, offsets=(0, 0))
        remapped.ext_remap = bytes(range(16))
        unbound = _Track(_Endpoint(sender.fileno(), keys, None), ssrc=5, offsets=(0, 0))
        plain = _NotAForwarder()
        packet = RTP.pack(0x80, 0x80 | 96, 1000, 0xFFFFFFFE, 0x99) + bytes(range(100))
        args = (packet, len(packet), 0x80 | 96, 1000, 0xFFFFFFFE, False, 12.5)
        tracks = [waiting, steady, unsynced, remapped, unbound, plain]
        native.fanout(tracks, *args)
        # Only the steady track sent natively, once, with its rewrite and fresh state.
        datagram = sink.recv(2048)
        with pytest.raises(TimeoutError):
            sink.settimeout(0.2)
            sink.recv(2048)
        seq_out, ts_out = (1000 + 65000) & 0xFFFF, (0xFFFFFFFE + 7) & 0xFFFFFFFF
        expected_ctx = SrtpContext(keys)
        python_send(expected_ctx, sender, dest, packet, (0x80 | 101, seq_out, ts_out, 0x0A0B0C0D))
        sink.settimeout(2)
        assert datagram == sink.recv(2048)
        assert (steady.seq_out, steady.ts_out, steady.time_out) == (seq_out, ts_out, 12.5)
        assert (steady.packets_sent, steady.octets_sent) == (1, len(packet))
        assert steady.calls == []
        # Every other case ran its Python forward() with the same arguments.
        for other in (waiting, unsynced, remapped, plain):
            assert other.calls == [args]
        # Not ready to send (no address yet): skipped, as forward() would.
        assert unbound.calls == [] and unbound.packets_sent == 0
        unbound.endpoint.sockaddr = pack_sockaddr(dest)
        unbound.endpoint.srtp = None
        native.fanout([unbound], *args)
        assert unbound.packets_sent == 0
    finally:
        sender.close()


def test_fanout_and_python_fanout_leave_the_same_state() -> None:
    built()
    packet = RTP.pack(0x80, 96, 7, 9, 1) + bytes(30)
    for fan in (native.fanout, native.py_fanout):
        recorder = _NotAForwarder()
        fan([recorder, recorder], packet, len(packet), 96, 7, 9, True, 1.0)
        assert recorder.calls == [(packet, len(packet), 96, 7, 9, True, 1.0)] * 2


def test_fanout_refuses_bad_arguments_clearly(sink: socket.socket) -> None:
    built()
    keys = SrtpKeys(b"SRTP_AES128_CM_SHA1_80", bytes(30), bytes(30))
    packet = RTP.pack(0x80, 96, 1, 2, 3) + bytes(20)
    track = _Track(_Endpoint(sink.fileno(), keys, sink.getsockname()), ssrc=1, offsets=(0, 0))
    with pytest.raises(TypeError, match="list"):
        native.fanout((track,), packet, len(packet), 96, 1, 2, False, 0.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="length"):
        native.fanout([track], packet[:8], 8, 96, 1, 2, False, 0.0)
    track.endpoint.sockaddr = "not bytes"
    with pytest.raises(TypeError, match="sockaddr"):
        native.fanout([track], packet, len(packet), 96, 1, 2, False, 0.0)
    track.endpoint.sockaddr = b"\x02\x00"
    with pytest.raises(ValueError, match="sockaddr"):
        native.fanout([track], packet, len(packet), 96, 1, 2, False, 0.0)
    # An exception in a Python forward() surfaces to the caller.
    broken = _NotAForwarder()
    broken.forward = None  # type: ignore[assignment,method-assign]
    with pytest.raises(TypeError):
        native.fanout([broken], packet, len(packet), 96, 1, 2, False, 0.0)


def test_forwarder_cycles_are_collected() -> None:
    built()
    collected: list[bool] = []

    class Holder:
        track: object = None

    holder = Holder()
    track = _Track(holder, ssrc=1, offsets=(0, 0))  # type: ignore[arg-type]
    holder.track = track  # a cycle through the C type's reference
    weakref.finalize(holder, collected.append, True)
    del holder, track
    gc.collect()
    assert collected == [True]


def test_forwarder_fields_keep_their_types() -> None:
    built()
    track = native.Forwarder()
    track.seq_out = 0xFFFF
    track.ts_out = 0xFFFFFFFF
    track.packets_sent = 2**40
    track.needs_keyframe = True
    assert (track.seq_out, track.ts_out, track.packets_sent) == (0xFFFF, 0xFFFFFFFF, 2**40)
    assert track.needs_keyframe is True
    assert track.ext_remap is None and track.endpoint is None
    with pytest.raises(TypeError):
        track.synced = 1  # type: ignore[assignment]


# -- receive path ------------------------------------------------------------------


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
        assert caplog.text.count("x broken error handling media") == 2
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


extension_blocks = st.lists(
    st.tuples(st.integers(0, 15), st.binary(min_size=1, max_size=16)), max_size=6
)


@settings(max_examples=300, deadline=None)
@given(
    blocks=extension_blocks,
    padding=st.integers(0, 3),
    cc=st.integers(0, 2),
    table=st.lists(st.integers(0, 15), min_size=16, max_size=16).map(bytes),
    ids=st.tuples(st.integers(0, 15), st.integers(0, 15)),
    truncate=st.integers(0, 8),
    profile=st.sampled_from([0xBEDE, 0x1000, 0xBEDF]),
)
def test_native_extension_scan_matches_the_python_one(
    blocks: list[tuple[int, bytes]],
    padding: int,
    cc: int,
    table: bytes,
    ids: tuple[int, int],
    truncate: int,
    profile: int,
) -> None:
    built()
    body = bytearray()
    for ext_id, value in blocks:
        body.append((ext_id << 4) | (len(value) - 1))
        body += value
        body += bytes(padding)
    body += bytes(-len(body) % 4)
    packet = bytearray(RTP.pack(0x90 | cc, 96, 1, 2, 3) + bytes(4 * cc))
    packet += struct.pack("!HH", profile, len(body) // 4) + body + bytes(10)
    length = max(1, len(packet) - 10 - truncate)
    python_buf, native_buf = bytearray(packet), bytearray(packet)
    expected = rtp.remap_and_scan(python_buf, length, table, *ids)
    assert native.remap_and_scan(native_buf, length, table, *ids) == expected
    assert native_buf == python_buf


def test_native_extension_scan_refuses_bad_arguments_clearly() -> None:
    built()
    packet = bytearray(RTP.pack(0x90, 96, 1, 2, 3) + b"\xbe\xde\x00\x01\x10\xff\x00\x00")
    with pytest.raises(ValueError, match="table"):
        native.remap_and_scan(packet, len(packet), bytes(15), 1, 2)
    with pytest.raises(ValueError, match="length"):
        native.remap_and_scan(packet, len(packet) + 1, bytes(16), 1, 2)
    with pytest.raises((TypeError, BufferError)):
        native.remap_and_scan(bytes(packet), len(packet), bytes(16), 1, 2)  # read-only


def test_receive_step_refuses_bad_arguments_clearly() -> None:
    built()
    assert native.receive_rtp is not None
    buf = PacketBuffer()
    buf.view[:12] = RTP.pack(0x80, 96, 1, 2, 3)
    with pytest.raises(TypeError, match="InStream"):
        native.receive_rtp(object(), buf, 12, 0.0)
    stream = native.InStream()
    with pytest.raises(TypeError, match="downtracks"):
        native.receive_rtp(stream, buf, 12, 0.0)  # fields never set
    stream.downtracks = []
    stream.cache = None
    stream.missing = {}
    stream.base_seq = -1
    with pytest.raises(ValueError, match="length"):
        native.receive_rtp(stream, buf, 8, 0.0)


def test_instream_cycles_are_collected() -> None:
    built()
    collected: list[bool] = []

    class Track:
        layers: list[object]

    track = Track()
    stream = native.InStream()
    stream.track = track
    track.layers = [stream]  # Layer -> track -> layers -> Layer, as in a room
    weakref.finalize(track, collected.append, True)
    del track, stream
    gc.collect()
    assert collected == [True]
