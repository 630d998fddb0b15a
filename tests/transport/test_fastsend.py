"""The native send step (transport/_fastsend.c) against the Python reference.

Both paths take the same plaintext packet and the same rewrite; what leaves
the socket must be byte for byte the same SRTP datagram.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator

import pylibsrtp
import pytest

from mediafed.transport import native
from mediafed.transport.dtls import SrtpKeys
from mediafed.transport.srtp import PacketBuffer, SrtpContext
from mediafed.transport.udp import pack_sockaddr

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
        "mediafed.transport._fastsend is not built: pip install -e . needs gcc and Python headers"
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
    code = "from mediafed.transport import native; print(native.send_rtp is None)"
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
