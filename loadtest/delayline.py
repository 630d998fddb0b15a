"""A userspace delay line for UDP: latency and jitter this kernel's qdiscs cannot add.

The kernel here has no ``netem`` (REFERENCES.md, "Impairing test links"). The
delay line sits where clients think the server is: the server binds one
address and advertises another (``[rtc] node_ip``), the delay line listens on
that other address at the server's port, and relays each client's datagrams
through a socket of its own (so the server sees one 5-tuple per client, as
through a NAT), holding every datagram for the configured one-way delay plus
up to ``jitter_ms`` — in order, as a real queue does.
"""

from __future__ import annotations

import asyncio
import random
from typing import cast


class _Direction:
    """One way through the line: a FIFO of (due time, datagram), released on time."""

    def __init__(self, delay_s: float, jitter_s: float, rng: random.Random) -> None:
        self.delay_s = delay_s
        self.jitter_s = jitter_s
        self.rng = rng
        self.last_due = 0.0
        self.held = 0

    def due(self, now: float) -> float:
        due = now + self.delay_s + (self.rng.random() * self.jitter_s if self.jitter_s else 0.0)
        due = max(due, self.last_due)  # no reordering: a later datagram never overtakes
        self.last_due = due
        return due


class DelayLine(asyncio.DatagramProtocol):
    """Relay ``listen`` <-> ``server``, delaying each way by ``delay_ms`` (+ jitter)."""

    def __init__(
        self,
        listen: tuple[str, int],
        server: tuple[str, int],
        *,
        upstream_ip: str,
        delay_ms: float,
        jitter_ms: float = 0.0,
        seed: int = 11,
    ) -> None:
        self.listen = listen
        self.server = server
        self.upstream_ip = upstream_ip
        rng = random.Random(seed)
        self.up = _Direction(delay_ms / 1000, jitter_ms / 1000, rng)
        self.down = _Direction(delay_ms / 1000, jitter_ms / 1000, rng)
        self.transport: asyncio.DatagramTransport | None = None
        self.upstream: dict[tuple[str, int], asyncio.DatagramTransport] = {}
        self._opening: dict[tuple[str, int], list[bytes]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.relayed = 0

    async def start(self) -> DelayLine:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=self.listen)
        return self

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def set_delay(self, delay_ms: float, jitter_ms: float = 0.0) -> None:
        for direction in (self.up, self.down):
            direction.delay_s, direction.jitter_s = delay_ms / 1000, jitter_ms / 1000

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        upstream = self.upstream.get(addr)
        if upstream is None:
            waiting = self._opening.get(addr)
            if waiting is None:
                self._opening[addr] = [data]
                task = loop.create_task(self._open(addr))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            else:
                waiting.append(data)
            return
        loop.call_at(self.up.due(loop.time()), self._send_up, upstream, data)

    def _send_up(self, upstream: asyncio.DatagramTransport, data: bytes) -> None:
        if not upstream.is_closing():
            upstream.sendto(data)
            self.relayed += 1

    def _send_down(self, data: bytes, client: tuple[str, int]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, client)
            self.relayed += 1

    async def _open(self, client: tuple[str, int]) -> None:
        line = self

        class Back(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                loop = asyncio.get_running_loop()
                loop.call_at(line.down.due(loop.time()), line._send_down, data, client)

        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            Back, local_addr=(self.upstream_ip, 0), remote_addr=self.server
        )
        self.upstream[client] = transport
        for data in self._opening.pop(client, []):
            loop.call_at(self.up.due(loop.time()), self._send_up, transport, data)

    def close(self) -> None:
        for transport in self.upstream.values():
            transport.close()
        self.upstream.clear()
        if self.transport is not None:
            self.transport.close()


class TcpDelayLine:
    """The same for TCP (a signaling WebSocket, an HTTP request): connections to
    ``listen`` are relayed to ``server``, each byte held ``delay_ms`` each way, and
    a connection's first bytes not before the handshake a real link would take
    (one round trip) has passed."""

    def __init__(self, listen_host: str, server: tuple[str, int], *, delay_ms: float) -> None:
        self.listen_host = listen_host
        self.server = server
        self.delay_s = delay_ms / 1000
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> TcpDelayLine:
        self._server = await asyncio.start_server(self._accept, self.listen_host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        opened_at = loop.time() + 2 * self.delay_s  # SYN, SYN-ACK
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.server)
        except OSError:
            writer.close()
            return
        for source, sink, not_before in (
            (reader, up_writer, opened_at),
            (up_reader, writer, 0.0),
        ):
            task = loop.create_task(self._pump(source, sink, not_before))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, not_before: float
    ) -> None:
        loop = asyncio.get_running_loop()
        held: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def release() -> None:
            while True:
                due, data = await held.get()
                await asyncio.sleep(max(0.0, due - loop.time()))
                if not data:
                    sink.close()
                    return
                sink.write(data)
                await sink.drain()

        releaser = loop.create_task(release())
        try:
            while True:
                data = await source.read(65536)
                held.put_nowait((max(loop.time(), not_before) + self.delay_s, data))
                if not data:
                    break
            await releaser
        except (ConnectionError, asyncio.CancelledError):
            releaser.cancel()
            sink.close()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
