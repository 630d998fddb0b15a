"""TURN: clients get the configured relays with TURN REST credentials, and
livekit-client in Chromium with ``iceTransportPolicy: "relay"`` reaches mediafed
through a real coturn that checks those credentials."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aioice import stun
from playwright.async_api import Page

from mediafed.config import load_config
from mediafed.errors import ConfigError
from mediafed.transport.endpoint import EndpointState
from mediafed.transport.turn import TurnServer, ice_servers_for
from tests.support.browser import TIMEOUT_MS, chromium
from tests.support.livekit_node import LiveNode, live_node

TURN_IP = "127.0.0.3"
SECRET = "turn-shared-secret"
REALM = "mediafed.test"


def test_rest_credentials_are_what_coturn_computes() -> None:
    server = TurnServer(("turn:turn.example.org:3478",), secret=SECRET, ttl_s=600)
    [entry] = ice_servers_for([server], "alice", now=1_000_000.0)
    assert entry.urls == ("turn:turn.example.org:3478",)
    assert entry.username == "1000600:alice"  # expiry first: coturn checks it
    expected = hmac.new(SECRET.encode(), b"1000600:alice", hashlib.sha1).digest()
    assert base64.b64decode(entry.credential) == expected
    # static credentials pass through; STUN needs none
    static = TurnServer(("turns:t.example.org:5349?transport=tcp",), username="u", credential="p")
    stun = TurnServer(("stun:t.example.org:3478",))
    assert [(e.username, e.credential) for e in ice_servers_for([static, stun], "bob", 0)] == [
        ("u", "p"),
        ("", ""),
    ]


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"urls": ["http://t.example.org"]}, "not a stun:, turn: or turns: URI"),
        ({"urls": ["turn:t.example.org"]}, "needs a secret"),
        ({"urls": ["turn:t"], "secret": "s", "username": "u"}, "not both"),
        ({"urls": []}, "at least 1"),
    ],
)
def test_bad_turn_servers_are_refused_with_the_reason(
    entry: dict[str, object], problem: str
) -> None:
    with pytest.raises(ConfigError, match=problem):
        load_config(environ={"MEDIAFED_RTC_TURN_SERVERS": json.dumps([entry])})


def _free_udp_port(ip: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((ip, 0))
        return int(sock.getsockname()[1])


def _answers_stun(port: int) -> bool:
    request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        sock.sendto(bytes(request), (TURN_IP, port))
        try:
            return bool(sock.recv(2048))
        except OSError:
            return False


@pytest.fixture
def coturn(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """coturn on 127.0.0.3 with TURN REST (use-auth-secret); (port, its log)."""
    port = _free_udp_port(TURN_IP)
    log_path = tmp_path / "turnserver.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [
                "turnserver",
                "-n",  # no configuration file
                f"--listening-ip={TURN_IP}",
                f"--relay-ip={TURN_IP}",
                f"--listening-port={port}",
                "--min-port=40000",
                "--max-port=40100",
                "--use-auth-secret",
                f"--static-auth-secret={SECRET}",
                f"--realm={REALM}",
                "--fingerprint",
                "--no-tls",
                "--no-dtls",
                "--no-cli",
                "--allow-loopback-peers",  # mediafed is on 127.0.0.2 here
                "--no-stun-backward-compatibility",
                f"--pidfile={tmp_path / 'turnserver.pid'}",
                f"--userdb={tmp_path / 'turndb.sqlite'}",
                "--log-file=stdout",
                "--simple-log",
                "--verbose",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 10
        while not _answers_stun(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"coturn did not start: {log_path.read_text()[-2000:]}")
        yield port, log_path
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
async def node(coturn: tuple[int, Path]) -> AsyncIterator[LiveNode]:
    port, _log = coturn
    turn = [{"urls": [f"turn:{TURN_IP}:{port}?transport=udp"], "secret": SECRET, "ttl_s": 600}]
    settings = {"MEDIAFED_RTC_TURN_SERVERS": json.dumps(turn)}
    async with live_node("127.0.0.2", settings=settings) as running:
        yield running


REMOTE_FRAMES = """() => [...document.querySelectorAll('#grid .tile[data-source="camera"] video')]
  .filter(v => v.videoWidth > 0)
  .map(v => v.getVideoPlaybackQuality().totalVideoFrames)"""
SELECTED_PAIR = """async () => {
  const manager = window.mediafedDemo.room.engine.pcManager;
  const pc = (manager.subscriber ?? manager.publisher).pc;  // v0 or v1 (one connection)
  const stats = await pc.getStats();
  for (const report of stats.values()) {
    if (report.type === 'transport' && report.selectedCandidatePairId) {
      const pair = stats.get(report.selectedCandidatePairId);
      return stats.get(pair.localCandidateId).candidateType;
    }
  }
  return null;
}"""


@pytest.mark.slow
async def test_relay_only_clients_get_media_through_coturn(
    node: LiveNode, coturn: tuple[int, Path], tmp_path: Path
) -> None:
    _port, turn_log = coturn
    async with chromium(tmp_path / "profile") as browser:
        pages: list[Page] = []
        for identity in ("ada", "grace"):
            page = await browser.new_page()
            token = node.token(identity)
            await page.goto(f"http://127.0.0.1:{node.http_port}/?token={token}&relay=1&mic=1&cam=1")
            await page.wait_for_selector("#controls:not([hidden])", timeout=TIMEOUT_MS)
            pages.append(page)
        for page in pages:
            await page.wait_for_function(
                f"() => ({REMOTE_FRAMES})().length > 0", timeout=TIMEOUT_MS
            )
            start = max(await page.evaluate(REMOTE_FRAMES))
            await page.wait_for_function(
                f"() => Math.max(...({REMOTE_FRAMES})()) >= {start + 30}", timeout=TIMEOUT_MS
            )
            assert await page.evaluate(SELECTED_PAIR) == "relay"
        room = node.rooms.get("call")
        assert room is not None
        for session in room.sessions.values():
            for peer in (session.publisher, session.subscriber):
                endpoint = peer.endpoint
                assert endpoint.state is EndpointState.CONNECTED, endpoint.label
                # what reached us came from coturn's relay address, not the browser's
                assert endpoint.addr is not None and endpoint.addr[0] == TURN_IP, endpoint.addr
    log = turn_log.read_text(errors="replace")
    # coturn checked the REST credentials mediafed made for each participant
    for identity in ("ada", "grace"):
        assert re.search(
            rf"user <\d+:{identity}>: incoming packet ALLOCATE processed, success", log
        )
        assert f"user <{identity}>" not in log
