"""Which address the media socket binds."""

from __future__ import annotations

import asyncio

from mediafed.transport.udp import MediaSocket


async def test_wildcard_bind_uses_the_advertised_address_when_it_is_local() -> None:
    loop = asyncio.get_running_loop()
    local = MediaSocket("0.0.0.0", 0, ["127.0.0.2"])
    local.open(loop)
    remote = MediaSocket("0.0.0.0", 0, ["203.0.113.7"])  # a NAT's address: not ours
    remote.open(loop)
    try:
        assert local.sock is not None and local.sock.getsockname()[0] == "127.0.0.2"
        assert remote.sock is not None and remote.sock.getsockname()[0] == "0.0.0.0"
    finally:
        local.close()
        remote.close()
