"""ICE-TCP with a libwebrtc client: on a host whose UDP is blocked, the ``livekit``
SDK reaches mediafed over TCP (RFC 6544) and both participants see and hear each
other; the server's endpoints carry their media on TCP connections."""

from __future__ import annotations

import asyncio

import pytest
from sdk_runner import EXPECTED, close_to, run_client

from mediafed.transport.endpoint import EndpointState
from tests.support.livekit_node import live_node
from tests.support.netns_hosts import TestHost


@pytest.mark.slow
@pytest.mark.parametrize("v0", [False, True], ids=["v1", "v0"])
async def test_sdk_clients_without_udp_connect_over_tcp(v0: bool) -> None:
    with TestHost(3) as host:
        host.link.block_udp()
        async with live_node(host.server_ip) as node:
            assert node.worker.tcp_port, "ICE-TCP listens"
            paths: dict[str, set[str]] = {}
            """endpoint label -> the paths it was connected on while the call ran"""

            async def watch() -> None:
                while True:
                    room = node.rooms.get("call")
                    for session in room.sessions.values() if room else ():
                        for peer in (session.publisher, session.subscriber):
                            endpoint = peer.endpoint
                            if endpoint.state is EndpointState.CONNECTED:
                                path = "tcp" if endpoint.stream is not None else "udp"
                                paths.setdefault(endpoint.label, set()).add(path)
                    await asyncio.sleep(0.1)

            watcher = asyncio.create_task(watch())
            try:
                async with asyncio.TaskGroup() as both:
                    alice_run = both.create_task(
                        run_client(host, node.ws_url, node.token("alice"), "alice", v0=v0)
                    )
                    bob_run = both.create_task(
                        run_client(host, node.ws_url, node.token("bob"), "bob", v0=v0)
                    )
            finally:
                watcher.cancel()
    alice, bob = alice_run.result(), bob_run.result()
    for me, other, seen in (("alice", "bob", alice), ("bob", "alice", bob)):
        camera_rgb, _screen, tone = EXPECTED[other]
        camera = [e for e in seen if e["event"] == "video" and e["source"] == "SOURCE_CAMERA"]
        assert camera and camera[-1]["frames"] >= 30, (me, camera[-1:])
        assert close_to(camera[-1]["rgb"], camera_rgb), (me, camera[-1])
        tones = [e["peak_hz"] for e in seen if e["event"] == "audio" and e["sender"] == other]
        assert tones and abs(tones[0] - tone) <= 10, (me, tones)
    # one connection per participant on signal v1 (the SDK's default), two on v0; each
    # connected on TCP and only on TCP
    assert len(paths) == (4 if v0 else 2), paths
    assert all(seen == {"tcp"} for seen in paths.values()), paths
