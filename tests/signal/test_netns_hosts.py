"""The veth test-host helper: the client namespace reaches the server address, nothing else."""

from __future__ import annotations

import asyncio
import sys

from tests.support.netns_hosts import TestHost

PROBE = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
s.sendall(b"hello from " + s.getsockname()[0].encode())
print(s.recv(100).decode())
try:
    socket.create_connection(("127.0.0.2", int(sys.argv[2])), timeout=1)
    print("loopback of the server namespace reachable")
except OSError:
    print("isolated")
"""


async def test_client_namespace_reaches_only_the_server_address() -> None:
    received: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.read(100))
        writer.write(b"hi " + writer.get_extra_info("peername")[0].encode())
        await writer.drain()
        writer.close()

    with TestHost(3) as host:
        server = await asyncio.start_server(answer, host.server_ip, 0)
        port = server.sockets[0].getsockname()[1]
        proc = await host.spawn(
            [sys.executable, "-c", PROBE, host.server_ip, str(port)],
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 20)
        server.close()
        await server.wait_closed()
    lines = out.decode().split()
    assert received == [b"hello from 198.18.3.2"]
    assert lines[:2] == ["hi", "198.18.3.2"]
    assert lines[2] == "isolated"
