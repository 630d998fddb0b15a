"""ICE-TCP: the worker's passive TCP candidates (RFC 6544), framed per RFC 4571.

Clients whose UDP is blocked (corporate firewalls, some hotel networks) reach
the worker over TCP: they connect to its TCP port and send what they would
have sent as datagrams, each preceded by its 16-bit length. A connection
belongs to no one until an integrity-checked ICE check arrives on it; then it
is that endpoint's path, exactly as a UDP address would be (STUN finds the
endpoint by USERNAME; DTLS and SRTP on the connection go only to the endpoint
it is bound to). The endpoint's state, keys and media code are the same
either way; its send target hands protected packets to :meth:`TcpConnection.write`
instead of ``sendto``.

TCP does not drop: a subscriber on a thin link would otherwise queue seconds
of video. Each connection queues at most ``MAX_QUEUED_BYTES``; a packet that
does not fit is dropped whole (framing intact), as a full UDP socket buffer
would drop it, and NACK/PLI repair it as they do loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from typing import TYPE_CHECKING, cast

from mediafed.transport.ice import parse_username
from mediafed.transport.srtp import MAX_DATAGRAM, PacketBuffer, copy_into

if TYPE_CHECKING:
    from mediafed.transport.endpoint import Endpoint
    from mediafed.transport.udp import MediaSocket

log = logging.getLogger(__name__)

_LENGTH = struct.Struct("!H")
MAX_CONNECTIONS = 4096
"""Open ICE-TCP connections per worker; more are refused at accept."""
UNBOUND_TIMEOUT_S = 10.0
"""A connection that carries no valid ICE check this long after it opened is closed."""
MAX_QUEUED_BYTES = 256 * 1024
"""Bytes a connection may hold unsent (about a second of 2 Mbit/s video)."""


class TcpConnection(asyncio.Protocol):
    """One client's TCP connection to the ICE-TCP port."""

    def __init__(self, listener: TcpListener) -> None:
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] = ("", 0)
        self.endpoint: Endpoint | None = None
        """The endpoint whose valid ICE check came on this connection."""
        self.dropped = 0
        self._pending = bytearray()
        self._skip = 0
        self._timeout: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ---------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream transport (uvloop's is not a subclass of asyncio.Transport)
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = (str(peer[0]), int(peer[1])) if peer else ("", 0)
        sock = transport.get_extra_info("socket")
        with contextlib.suppress(OSError, AttributeError):
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if not self.listener.admit(self):
            self.transport.abort()
            return
        loop = asyncio.get_running_loop()
        self._timeout = loop.call_later(UNBOUND_TIMEOUT_S, self._unbound_timeout)

    def data_received(self, data: bytes) -> None:
        pending = self._pending
        pending += data
        offset = 0
        now = self.listener.mux.clock()
        while True:
            if self._skip:
                step = min(self._skip, len(pending) - offset)
                self._skip -= step
                offset += step
                if self._skip:
                    break
            if len(pending) - offset < 2:
                break
            (length,) = _LENGTH.unpack_from(pending, offset)
            if length > MAX_DATAGRAM:
                # framed correctly but larger than any datagram we take: skip it
                self.listener.mux.counters["dropped_oversize"] += 1
                self._skip = length
                offset += 2
                continue
            if len(pending) - offset - 2 < length:
                break
            start = offset + 2
            offset = start + length
            if length:
                self.listener.dispatch(self, pending, start, length, now)
            if self.transport is None:
                return  # closed while handling (a refused first frame)
        del pending[:offset]

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timeout is not None:
            self._timeout.cancel()
            self._timeout = None
        self.transport = None
        self.listener.forget(self)
        endpoint = self.endpoint
        if endpoint is not None:
            endpoint.mux.stream_lost(endpoint, self)

    # -- sending ------------------------------------------------------------------
    def write(self, frame: bytes) -> bool:
        """Queue one datagram's worth (RFC 4571 framed); False when it was dropped."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return False
        if transport.get_write_buffer_size() + len(frame) > MAX_QUEUED_BYTES:
            self.dropped += 1
            return False
        transport.write(_LENGTH.pack(len(frame)) + frame)
        return True

    def close(self) -> None:
        """Close once what is queued is sent (the DTLS close_notify, say)."""
        if self.transport is not None:
            self.transport.close()

    # -- binding ------------------------------------------------------------------
    def bound(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        if self._timeout is not None:
            self._timeout.cancel()
            self._timeout = None

    def refuse(self, why: str) -> None:
        """The first frame is not a check of any endpoint: not ours to keep open."""
        self.listener.mux.report("tcp", self.peer, why)
        if self.transport is not None:
            self.transport.abort()
            self.transport = None

    def _unbound_timeout(self) -> None:
        self._timeout = None
        if self.endpoint is None and self.transport is not None:
            self.listener.mux.report("tcp", self.peer, "no valid ICE check on the connection")
            self.transport.abort()


class TcpListener:
    """The ICE-TCP port: accepts connections and hands their frames to endpoints."""

    def __init__(self, mux: MediaSocket, port: int) -> None:
        self.mux = mux
        self.port = port
        self.rx = PacketBuffer()
        self.connections: set[TcpConnection] = set()
        self._server: asyncio.Server | None = None

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: TcpConnection(self),
            host=self.mux.bind_ip or None,
            port=self.port,
            reuse_address=True,
            backlog=256,
        )
        sockets = self._server.sockets
        self.port = sockets[0].getsockname()[1] if sockets else self.port
        self.mux.tcp_port = self.port
        log.info("- ICE-TCP on %s:%d", self.mux.bind_ip or "*", self.port)

    async def close(self) -> None:
        self.mux.tcp_port = 0
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.abort()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def admit(self, connection: TcpConnection) -> bool:
        if len(self.connections) >= MAX_CONNECTIONS:
            self.mux.report("tcp", connection.peer, f"over {MAX_CONNECTIONS} ICE-TCP connections")
            return False
        self.connections.add(connection)
        return True

    def forget(self, connection: TcpConnection) -> None:
        self.connections.discard(connection)

    def dispatch(
        self, connection: TcpConnection, data: bytearray, start: int, length: int, now: float
    ) -> None:
        """One frame, demultiplexed by its first byte as a datagram is (RFC 7983)."""
        mux = self.mux
        mux.counters["datagrams_in"] += 1
        first = data[start]
        endpoint = connection.endpoint
        if first <= 3:
            message = bytes(data[start : start + length])
            username = parse_username(message)
            target = mux.by_ufrag.get(username.split(":", 1)[0]) if username else None
            if target is None or (endpoint is not None and target is not endpoint):
                mux.counters["dropped_unknown"] += 1
                if endpoint is None:
                    connection.refuse("ICE-TCP check for no endpoint of ours")
                else:
                    mux.report("stun", connection.peer, "check for another endpoint")
                return
            target.on_stun(message, connection.peer, now, stream=connection)
            return
        if endpoint is None or endpoint.stream is not connection:
            mux.counters["dropped_unbound"] += 1
            if endpoint is None:
                connection.refuse("ICE-TCP data before a valid ICE check")
            return
        if 128 <= first <= 191:
            rx = self.rx
            with memoryview(data) as view:
                copy_into(rx, view[start : start + length])
            endpoint.on_srtp(rx, length, now)
        elif 20 <= first <= 63:
            try:
                endpoint.on_dtls(bytes(data[start : start + length]), now)
            except MemoryError:
                raise
            except Exception as exc:
                mux.report_error("dtls", f"{endpoint.label} error handling DTLS", exc)
        else:
            mux.counters["dropped_unknown"] += 1
            mux.report("unknown", connection.peer, f"frame with first byte {first} (RFC 7983)")
