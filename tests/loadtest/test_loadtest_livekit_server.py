"""The livekit-server target's generated config: one node on loopback, nothing outside it."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from loadtest.gopeers import LIVEKIT_SERVER, PEERS, GoPeer, cache_dir, missing_message
from loadtest.livekit_server import API_KEY, LiveKitServerTarget, server_config
from loadtest.target import RoomPlan, TargetError


def test_config_keeps_livekit_on_loopback() -> None:
    config = server_config(7880, 7882, "s" * 40)
    rtc = config["rtc"]
    assert config["port"] == 7880 and config["bind_addresses"] == ["127.0.0.1"]
    assert rtc["udp_port"] == 7882 and rtc["tcp_port"] == 0
    assert rtc["use_external_ip"] is False and rtc["node_ip"] == "127.0.0.1"
    assert rtc["enable_loopback_candidate"] is True
    assert rtc["ips"] == {"includes": ["127.0.0.1/32"]}  # one media socket
    veth = server_config(7880, 7882, "s" * 40, node_ip="198.18.0.1")["rtc"]
    assert veth["enable_loopback_candidate"] is False and veth["node_ip"] == "198.18.0.1"
    # With no STUN server set, livekit-server would hand clients public ones.
    for server in rtc["stun_servers"]:
        assert ipaddress.ip_address(server.rpartition(":")[0]).is_loopback
    assert "redis" not in config and "turn" not in config
    assert len(config["keys"][API_KEY]) >= 32


def test_pins_and_cache_outside_the_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    repo = Path(__file__).resolve().parents[2]
    for peer in PEERS:
        assert peer.version.startswith("v") and peer.package.startswith(peer.module)
        assert repo not in peer.binary.parents
        assert peer.binary.name == peer.name and peer.version in str(peer.binary)
    monkeypatch.setenv("MEDIAFED_GO_CACHE", "/opt/go-peers")
    assert cache_dir() == Path("/opt/go-peers")
    assert str(LIVEKIT_SERVER.binary).startswith("/opt/go-peers/livekit-server-v")


async def test_missing_binary_names_the_install_script(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDIAFED_GO_CACHE", str(tmp_path))
    absent = GoPeer("livekit-server", "example.invalid/x", "example.invalid/x/cmd", "v0.0.0")
    target = LiveKitServerTarget(peer=absent)
    with pytest.raises(TargetError) as excinfo:
        await target.start(RoomPlan("x", 1))
    assert "scripts/install-test-deps" in str(excinfo.value)
    assert str(excinfo.value) == missing_message(absent)
