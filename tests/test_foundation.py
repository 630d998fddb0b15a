"""The foundation: configuration, CLI and the HTTP health endpoint."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from mediafed import __version__, server
from mediafed.config import load_config
from mediafed.errors import ConfigError


def test_defaults_need_no_file() -> None:
    config = load_config(environ={})
    assert config.server.http_port == 7880
    assert config.rtc.udp_port == 7882
    assert config.keys == {}
    assert config.advertised_ips() == ["127.0.0.1"]


def test_dev_mode_binds_loopback_with_dev_key() -> None:
    config = load_config(dev=True, environ={})
    assert config.server.bind == "127.0.0.1"
    assert config.keys == {"devkey": "secret"}


def test_file_then_environment(tmp_path: Path) -> None:
    path = tmp_path / "mediafed.toml"
    path.write_text('[rtc]\nudp_port = 9000\nnode_ip = ["198.18.0.1"]\n[keys]\nk = "s"\n')
    config = load_config(
        path, environ={"MEDIAFED_RTC_UDP_PORT": "9100", "MEDIAFED_KEYS": "a: b, c: d"}
    )
    assert config.rtc.udp_port == 9100
    assert config.rtc.node_ip == ["198.18.0.1"]
    assert config.keys == {"a": "b", "c": "d"}


def test_invalid_values_are_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[rtc]\nudp_port = 70000\n[server]\nnonsense = 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    message = str(info.value)
    assert "rtc.udp_port" in message
    assert "server.nonsense" in message


def test_broken_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "x.toml"
    bad.write_text("[rtc\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(bad, environ={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", environ={})


def test_bad_keys_env() -> None:
    with pytest.raises(ConfigError, match="has no ':'"):
        load_config(environ={"MEDIAFED_KEYS": "justakey"})


def test_cli_version_and_config_error(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mediafed", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"mediafed {__version__}"
    bad = tmp_path / "bad.toml"
    bad.write_text("[log]\nlevel = 'LOUD'\n")
    failed = subprocess.run(
        [sys.executable, "-m", "mediafed", "serve", "--config", str(bad)],
        capture_output=True,
        text=True,
    )
    assert failed.returncode == 2
    assert "log.level" in failed.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_serve_answers_healthz() -> None:
    port = _free_port()
    config = load_config(
        dev=True,
        environ={
            "MEDIAFED_SERVER_HTTP_PORT": str(port),
            "MEDIAFED_RTC_UDP_PORT": "0",
            "MEDIAFED_RTC_TCP_PORT": "0",
        },
    )
    ready = asyncio.Event()
    task = asyncio.create_task(server.serve(config, ready=ready))
    await asyncio.wait_for(ready.wait(), 10)
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/healthz") as response,
        ):
            assert response.status == 200
            assert await response.json() == {
                "status": "ok",
                "version": __version__,
                "rooms": 0,
                "participants": 0,
            }
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
