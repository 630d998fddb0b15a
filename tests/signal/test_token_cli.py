"""``mediafed token``: the printed JWT is accepted by mediafed and by LiveKit's own verifier."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pytest
from livekit.api import TokenVerifier

from mediafed import cli
from mediafed.errors import ConfigError
from mediafed.signal.livekit.token_cli import parse_ttl
from mediafed.signal.livekit.tokens import verify_token


def _parser() -> argparse.ArgumentParser:
    """The ``mediafed`` command line, which reads the configuration for ``token``."""
    return cli.build_parser()


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    args = _parser().parse_args(["token", *argv])
    assert args.func(args) == 0
    return capsys.readouterr().out.strip()


def test_dev_token_is_accepted_by_livekit_verifier(capsys: pytest.CaptureFixture[str]) -> None:
    token = _run(
        ["--dev", "--room", "standup", "--identity", "ada", "--name", "Ada", "--ttl", "30m"],
        capsys,
    )
    lk = TokenVerifier("devkey", "secret").verify(token)
    assert lk.identity == "ada"
    assert lk.name == "Ada"
    assert lk.video is not None and lk.video.room == "standup" and lk.video.room_join
    ours = verify_token(token, {"devkey": "secret"})
    assert 29 * 60 < ours.expires_at - time.time() <= 30 * 60


def test_grant_flags(capsys: pytest.CaptureFixture[str]) -> None:
    token = _run(
        [
            "--dev",
            "--room",
            "r",
            "--identity",
            "bob",
            "--no-can-publish",
            "--sources",
            "camera,microphone",
            "--hidden",
            "--attribute",
            "team=blue",
        ],
        capsys,
    )
    claims = verify_token(token, {"devkey": "secret"})
    assert not claims.video.can_publish
    assert not claims.video.can_publish_data  # follows canPublish unless given
    assert claims.video.can_subscribe
    assert claims.video.can_publish_sources == ("camera", "microphone")
    assert claims.video.hidden
    assert claims.attributes == {"team": "blue"}


def test_admin_token_from_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "m.toml"
    config.write_text('[keys]\nprod = "' + "p" * 40 + '"\n')
    token = _run(
        ["--config", str(config), "--no-join", "--room-create", "--room-list", "--identity", "ops"],
        capsys,
    )
    claims = verify_token(token, {"prod": "p" * 40})
    assert claims.video.room_create and claims.video.room_list and not claims.video.room_join


def test_misuse_is_explained(tmp_path: Path) -> None:
    parser = _parser()
    args = parser.parse_args(["token", "--dev", "--identity", "x"])
    with pytest.raises(ConfigError, match="needs --room and --identity"):
        args.func(args)
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    args = parser.parse_args(["token", "--config", str(empty), "--room", "r", "--identity", "x"])
    with pytest.raises(ConfigError, match="no API keys configured"):
        args.func(args)
    args = parser.parse_args(
        ["token", "--dev", "--api-key", "nope", "--room", "r", "--identity", "x"]
    )
    with pytest.raises(ConfigError, match="'nope' is not configured"):
        args.func(args)
    with pytest.raises(SystemExit):
        parser.parse_args(["token", "--dev", "--sources", "camera,radio"])


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("30m", 1800), ("6h", 21600), ("2d", 172800)]
)
def test_ttl(text: str, seconds: float) -> None:
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["", "6x", "-1h", "0"])
def test_bad_ttl(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="is not a duration"):
        parse_ttl(text)
