"""Where one endpoint's media goes: its socket, outbound SRTP session and address.

The media code holds an endpoint's :class:`PySendTarget` (or the native
``SendTarget`` of ``transport/_transport.c``, which it mirrors) and hands it
plaintext RTP the room core built: the target copies it into a scratch buffer,
numbers it for transport-wide feedback, protects it in place, sends it, and
counts what happened. The endpoint keeps it current (address after ICE, keys
after DTLS); media never touches sockets or SRTP sessions itself.

Results: the protected length sent, or one of the negative codes below.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pylibsrtp._binding import ffi, lib

from mediafed.transport.sockaddr import unpack_sockaddr
from mediafed.transport.srtp import MAX_DATAGRAM, PacketBuffer
from mediafed.wire.rtp import U16, find_extension

if TYPE_CHECKING:
    from mediafed.transport.srtp import SrtpContext

SEND_SRTP_REFUSED = -1
SEND_KERNEL_REFUSED = -2
SEND_NOT_READY = -3
"""No address (ICE) or no keys (DTLS) yet."""
SEND_OVERSIZE = -4
"""Shorter than an RTP header or longer than MAX_DATAGRAM: never sent."""

SENT_HISTORY = 8192
"""Packets remembered for transport-wide feedback (as ``_transport.c``)."""

_memmove = ffi.memmove
_protect = lib.srtp_protect
_scratch: PacketBuffer | None = None


def _scratch_buffer() -> PacketBuffer:
    global _scratch
    if _scratch is None:
        _scratch = PacketBuffer()
    return _scratch


class PySendTarget:
    """The Python reference of the native ``SendTarget``: same methods, same counts."""

    __slots__ = (
        "_addr",
        "_probe",
        "_sent",
        "_sock",
        "_srtp",
        "_stream",
        "datagrams_out",
        "fd",
        "octets_out",
        "oversize",
        "send_errors",
        "srtp_errors",
        "twcc_id",
        "twcc_seq",
    )

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self._addr: tuple[Any, ...] | None = None
        self._srtp: SrtpContext | None = None
        self._stream: Callable[[bytes], bool] | None = None
        self.fd = -1
        self.datagrams_out = 0
        self.octets_out = 0
        self.send_errors = 0
        self.srtp_errors = 0
        self.oversize = 0
        self.twcc_id = 0
        self.twcc_seq = 0
        self._probe = -1
        self._sent: list[tuple[int, int, int, int] | None] = []

    @property
    def ready(self) -> bool:
        return (self._addr is not None or self._stream is not None) and self._srtp is not None

    def set_socket(self, sock: socket.socket | None) -> None:
        self._sock = sock
        self.fd = sock.fileno() if sock is not None else -1

    def set_address(self, sockaddr: bytes | None) -> None:
        if sockaddr is None:
            self._addr = None
            return
        try:
            self._addr = unpack_sockaddr(sockaddr)
        except ValueError:
            raise ValueError("set_address: not a packed sockaddr_in or sockaddr_in6") from None

    def set_stream(self, write: Callable[[bytes], bool] | None) -> None:
        """ICE-TCP: the connection's ``write(frame) -> bool`` that frames (RFC 4571)
        and queues a protected packet; it takes precedence over the address.
        None: back to UDP."""
        if write is not None and not callable(write):
            raise TypeError("set_stream: a callable or None")
        self._stream = write

    def set_srtp(self, context: SrtpContext | None) -> None:
        self._srtp = context

    def set_twcc(self, ext_id: int) -> None:
        """Number packets carrying header extension ``ext_id`` (transport-wide-cc)."""
        if not 0 <= ext_id <= 255:
            raise ValueError("set_twcc: an extension id is 1-255 (0: off)")
        if ext_id and not self._sent:
            self._sent = [None] * SENT_HISTORY
        self.twcc_id = ext_id

    def set_probe(self, cluster: int) -> None:
        """Stamp packets sent from now on with probe cluster ``cluster`` (-1: none)."""
        self._probe = -1 if cluster < 0 else cluster & 0x7FFFFFFF

    def sent(self, first_seq: int, count: int) -> list[tuple[int, int, int] | None]:
        """(send time in µs, bytes, probe cluster) per sequence number from ``first_seq``."""
        if not 0 <= count <= 0xFFFF:
            raise ValueError("sent: count must be 0-65535")
        out: list[tuple[int, int, int] | None] = []
        for offset in range(count):
            seq = (first_seq + offset) & 0xFFFF
            record = self._sent[seq & (SENT_HISTORY - 1)] if self._sent else None
            out.append(record[1:] if record is not None and record[0] == seq else None)
        return out

    def send_packet(self, packet: bytes | bytearray | memoryview) -> int:
        """Number, protect and send a whole plaintext RTP packet the room core built."""
        data = memoryview(packet).cast("B")  # TypeError for what is not bytes-like
        return self._send(data, len(data))

    def _send(self, packet: memoryview, length: int) -> int:
        srtp, addr, sock, stream = self._srtp, self._addr, self._sock, self._stream
        if srtp is None or (addr is None and stream is None):
            return SEND_NOT_READY
        if not 12 <= length <= MAX_DATAGRAM:
            self.oversize += 1
            return SEND_OVERSIZE
        tx = _scratch_buffer()
        view = tx.view
        _memmove(tx.cdata, packet, length)
        twcc_at = find_extension(view, length, self.twcc_id, 2) if self.twcc_id else -1
        seq = self.twcc_seq
        if twcc_at >= 0:
            U16.pack_into(view, twcc_at, seq)
        cell = tx.length
        cell[0] = length
        if _protect(srtp.tx, tx.cdata, cell):
            self.srtp_errors += 1
            return SEND_SRTP_REFUSED
        size = int(cell[0])
        if stream is not None:
            refused = not stream(bytes(view[:size]))
        else:
            try:
                if sock is None or addr is None:
                    raise OSError("no socket")
                sock.sendto(view[:size], addr)
                refused = False
            except OSError:
                refused = True
        if twcc_at >= 0:
            # numbered even when the kernel refused it: the receiver reports it lost
            self._sent[seq & (SENT_HISTORY - 1)] = (
                seq,
                time.monotonic_ns() // 1000,
                size,
                self._probe,
            )
            self.twcc_seq = (seq + 1) & 0xFFFF
        if refused:
            self.send_errors += 1
            return SEND_KERNEL_REFUSED
        self.datagrams_out += 1
        self.octets_out += size
        return size
