"""SRTP/SRTCP contexts (RFC 3711, RFC 7714) on libsrtp through pylibsrtp.

pylibsrtp creates and owns the libsrtp sessions; the forwarding path calls
libsrtp's ``srtp_protect``/``srtp_unprotect`` through pylibsrtp's compiled
binding on buffers that stay allocated for the life of the worker, so
protecting a packet costs no Python object beyond the length cell. That is
the "protect in place in a pooled buffer" of ARCHITECTURE.md.
"""

from __future__ import annotations

import socket
from typing import Any

import pylibsrtp
from pylibsrtp._binding import ffi, lib

from mediafed.transport.dtls import SrtpKeys

MAX_DATAGRAM = 1900
"""The largest datagram mediafed accepts; a longer one is dropped and counted. WebRTC
stacks keep theirs under a path MTU of 1500 and usually near 1200."""
MAX_SRTP_EXPANSION = 148
"""The most libsrtp appends when protecting (SRTP_MAX_TRAILER_LEN: a 16-byte tag, a
128-byte MKI, the 4-byte SRTCP index): no profile writes past a buffer this much
larger than the plaintext."""
BUFFER_SIZE = MAX_DATAGRAM + MAX_SRTP_EXPANSION
"""Every packet buffer: the largest plaintext (never longer than the datagram it came
in) protected with any profile fits. ``transport/transport_api.h`` has the same numbers."""

_PROFILES = {
    b"SRTP_AES128_CM_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    b"SRTP_AEAD_AES_128_GCM": pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
}


class PacketBuffer:
    """A libsrtp-ready buffer: cdata for libsrtp, a memoryview for struct and sockets."""

    __slots__ = ("cdata", "length", "view")

    def __init__(self) -> None:
        self.cdata: Any = ffi.new("char[]", BUFFER_SIZE)
        self.view = memoryview(ffi.buffer(self.cdata))
        self.length: Any = ffi.new("int *")


def _session(profile: bytes, key: bytes, inbound: bool) -> pylibsrtp.Session:
    policy = pylibsrtp.Policy(
        key=key,
        ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND
        if inbound
        else pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
        srtp_profile=_PROFILES[profile],
    )
    policy.window_size = 1024
    # Retransmissions without RTX resend the same sequence number on purpose.
    policy.allow_repeat_tx = True
    return pylibsrtp.Session(policy)


class SrtpContext:
    """Inbound and outbound SRTP state of one DTLS association."""

    __slots__ = ("_rx", "_tx", "rx", "rx_address", "tx", "tx_address")

    def __init__(self, keys: SrtpKeys) -> None:
        self._rx = _session(keys.profile, keys.remote_key, inbound=True)
        self._tx = _session(keys.profile, keys.local_key, inbound=False)
        # The srtp_t handles libsrtp wants; pylibsrtp keeps the sessions alive.
        self.rx: Any = self._rx._srtp[0]
        self.tx: Any = self._tx._srtp[0]
        self.rx_address = int(ffi.cast("uintptr_t", self.rx))
        self.tx_address = int(ffi.cast("uintptr_t", self.tx))

    def unprotect_rtp(self, buf: PacketBuffer, length: int) -> int:
        """Decrypt ``length`` bytes of ``buf`` in place; the plaintext length or -1."""
        if not 0 < length <= MAX_DATAGRAM:
            return -1
        buf.length[0] = length
        if lib.srtp_unprotect(self.rx, buf.cdata, buf.length) != 0:
            return -1
        return int(buf.length[0])

    def unprotect_rtcp(self, buf: PacketBuffer, length: int) -> int:
        if not 0 < length <= MAX_DATAGRAM:
            return -1
        buf.length[0] = length
        if lib.srtp_unprotect_rtcp(self.rx, buf.cdata, buf.length) != 0:
            return -1
        return int(buf.length[0])

    def forget_inbound(self, ssrc: int) -> None:
        """Drop libsrtp's state of one inbound SSRC (it makes one per SSRC it decrypts,
        and searches them one by one); a later packet of it starts afresh."""
        lib.srtp_remove_stream(self.rx, socket.htonl(ssrc))

    def protect_rtp(self, buf: PacketBuffer, length: int) -> int:
        """Encrypt ``length`` bytes of plaintext in ``buf`` in place; the new length or -1."""
        if not 0 < length <= MAX_DATAGRAM:
            return -1
        buf.length[0] = length
        if lib.srtp_protect(self.tx, buf.cdata, buf.length) != 0:
            return -1
        return int(buf.length[0])

    def protect_rtcp(self, buf: PacketBuffer, length: int) -> int:
        if not 0 < length <= MAX_DATAGRAM:
            return -1
        buf.length[0] = length
        if lib.srtp_protect_rtcp(self.tx, buf.cdata, buf.length) != 0:
            return -1
        return int(buf.length[0])

    def protect_rtcp_bytes(self, packet: bytes) -> bytes | None:
        """Off the hot path: a compound RTCP packet we built, protected; None when it
        is longer than MAX_DATAGRAM or libsrtp refuses it."""
        buf = _rtcp_scratch()
        if len(packet) > MAX_DATAGRAM:
            return None
        size = self.protect_rtcp(buf, copy_into(buf, packet))
        return bytes(buf.view[:size]) if size > 0 else None


_scratch: PacketBuffer | None = None


def _rtcp_scratch() -> PacketBuffer:
    global _scratch
    if _scratch is None:
        _scratch = PacketBuffer()
    return _scratch


def copy_into(buf: PacketBuffer, data: bytes | bytearray | memoryview) -> int:
    """Copy a packet into ``buf``; its length. ValueError beyond MAX_DATAGRAM (the
    read loops drop such datagrams, so only a bug gets here)."""
    size = len(data)
    if size > MAX_DATAGRAM:
        raise ValueError(f"a {size}-byte packet is longer than MAX_DATAGRAM ({MAX_DATAGRAM})")
    ffi.memmove(buf.cdata, data, size)
    return size
