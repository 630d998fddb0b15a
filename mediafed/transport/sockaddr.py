"""Socket addresses packed as the kernel's ``struct sockaddr_in`` / ``sockaddr_in6``.

The native read loop keys endpoints by the packed source address it gets from
``recvmmsg``, and a send target keeps its peer's address packed for ``sendto``.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

_SOCKADDR_IN = struct.Struct("=H2s4s8x")
_SOCKADDR_IN6 = struct.Struct("=H2sI16sI")


def pack_sockaddr(addr: tuple[Any, ...]) -> bytes:
    """An address as ``recvfrom`` gives it, packed as the kernel's ``struct sockaddr_in``
    or ``sockaddr_in6`` (for the native send step)."""
    host, port = addr[0], addr[1]
    port_be = port.to_bytes(2, "big")
    if ":" in host:
        host = host.split("%", 1)[0]  # a link-local zone; the scope id is addr[3]
        flowinfo = socket.htonl(addr[2]) if len(addr) > 2 else 0  # sin6_flowinfo is big-endian
        scope_id = addr[3] if len(addr) > 3 else 0
        return _SOCKADDR_IN6.pack(
            socket.AF_INET6, port_be, flowinfo, socket.inet_pton(socket.AF_INET6, host), scope_id
        )
    return _SOCKADDR_IN.pack(socket.AF_INET, port_be, socket.inet_pton(socket.AF_INET, host))


def unpack_sockaddr(sockaddr: bytes) -> tuple[Any, ...]:
    """The address tuple ``recvfrom`` would give for a packed ``sockaddr_in(6)``."""
    if len(sockaddr) == _SOCKADDR_IN6.size:
        _family, port_be, flowinfo, raw, scope_id = _SOCKADDR_IN6.unpack(sockaddr)
        host = socket.inet_ntop(socket.AF_INET6, raw)
        return (host, int.from_bytes(port_be, "big"), socket.ntohl(flowinfo), scope_id)
    if len(sockaddr) == _SOCKADDR_IN.size:
        _family, port_be, raw = _SOCKADDR_IN.unpack(sockaddr)
        return (socket.inet_ntop(socket.AF_INET, raw), int.from_bytes(port_be, "big"))
    raise ValueError(f"not a packed IPv4 or IPv6 socket address ({len(sockaddr)} bytes)")
