"""SRTP/SRTCP contexts (RFC 3711, RFC 7714) on libsrtp through pylibsrtp.

pylibsrtp creates and owns the libsrtp sessions; the forwarding path calls
libsrtp's ``srtp_protect``/``srtp_unprotect`` through pylibsrtp's compiled
binding on buffers that stay allocated for the life of the worker, so
protecting a packet costs no Python object beyond the length cell. That is
the "protect in place in a pooled buffer" of ARCHITECTURE.md.
"""

from __future__ import annotations

from typing import Any

import pylibsrtp
from pylibsrtp._binding import ffi, lib

from mediafed.transport.dtls import SrtpKeys

BUFFER_SIZE = 2048
"""Room for a 1500-byte datagram plus the largest SRTP/SRTCP trailer."""

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
        buf.length[0] = length
        if lib.srtp_unprotect(self.rx, buf.cdata, buf.length) != 0:
            return -1
        return int(buf.length[0])

    def unprotect_rtcp(self, buf: PacketBuffer, length: int) -> int:
        buf.length[0] = length
        if lib.srtp_unprotect_rtcp(self.rx, buf.cdata, buf.length) != 0:
            return -1
        return int(buf.length[0])

    def protect_rtp(self, buf: PacketBuffer, length: int) -> int:
        """Encrypt ``length`` bytes of plaintext in ``buf`` in place; the new length or -1."""
        buf.length[0] = length
        if lib.srtp_protect(self.tx, buf.cdata, buf.length) != 0:
            return -1
        return int(buf.length[0])

    def protect_rtcp(self, buf: PacketBuffer, length: int) -> int:
        buf.length[0] = length
        if lib.srtp_protect_rtcp(self.tx, buf.cdata, buf.length) != 0:
            return -1
        return int(buf.length[0])

    def protect_rtcp_bytes(self, packet: bytes) -> bytes:
        """Off the hot path: protect a compound RTCP packet we built."""
        return self._tx.protect_rtcp(packet)


def copy_into(buf: PacketBuffer, data: bytes | bytearray | memoryview) -> int:
    """Copy a packet into ``buf``; its length."""
    size = len(data)
    ffi.memmove(buf.cdata, data, size)
    return size
