"""``mediafed matrix registration`` and ``mediafed matrix recipe``."""

from __future__ import annotations

import argparse
import json
import stat
from pathlib import Path

import pytest
import yaml

from mediafed.errors import ConfigError
from mediafed.matrix.cli import register
from mediafed.matrix.registration import Registration, make_registration


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mediafed")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


def test_registration_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "registration.yaml"
    argv = ["matrix", "registration", "--domain", "example.org", "--url", "http://mf:7880"]
    argv += ["--homeserver-url", "https://matrix.example.org", "--out", str(out)]
    assert _run(argv) == 0
    data = yaml.safe_load(out.read_text())
    assert data["id"] == "mediafed"
    assert data["url"] == "http://mf:7880"
    assert data["sender_localpart"] == "mediafed"
    assert len(data["as_token"]) >= 40 and len(data["hs_token"]) >= 40
    assert data["as_token"] != data["hs_token"]
    assert data["rate_limited"] is False
    assert data["receive_ephemeral"] is True
    assert data["namespaces"]["users"] == [
        {"exclusive": True, "regex": r"@rc_.*:example\.org"},
        {"exclusive": True, "regex": r"@mediafed:example\.org"},
    ]
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    printed = capsys.readouterr().out
    assert 'homeserver_url = "https://matrix.example.org"' in printed
    assert f'registration = "{out.resolve()}"' in printed

    loaded = Registration.load(out)
    assert loaded.domain == "example.org" and loaded.user_prefix == "rc_"
    assert loaded.is_ours("@rc_alice:example.org") and loaded.is_ours("@mediafed:example.org")
    assert not loaded.is_ours("@alice:example.org") and not loaded.is_ours("@rc_x:exampleXorg")

    # an existing file (and its tokens) is kept unless --force
    with pytest.raises(ConfigError, match="pass --force"):
        _run(argv)
    assert _run([*argv, "--force"]) == 0
    assert yaml.safe_load(out.read_text())["hs_token"] != data["hs_token"]


def test_registration_round_trip_and_errors(tmp_path: Path) -> None:
    registration = make_registration(url="http://x", domain="localhost:8008", user_prefix="rc_")
    assert Registration.from_dict(yaml.safe_load(registration.to_yaml())) == registration
    with pytest.raises(ConfigError, match="does not exist"):
        Registration.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: x\n")
    with pytest.raises(ConfigError, match="lacks url, as_token, hs_token, sender_localpart"):
        Registration.load(bad)
    with pytest.raises(ConfigError, match="not a valid Matrix localpart"):
        make_registration(url="http://x", domain="d", bot_localpart="Bad Bot")


def test_recipe(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["matrix", "recipe", "--public-url", "https://sfu.example.org/"]) == 0
    text = capsys.readouterr().out
    well_known_text = text.split("# 2.")[0].split("\n", 2)[2]
    well_known = json.loads(well_known_text)
    assert well_known == {
        "org.matrix.msc4143.rtc_foci": [
            {"type": "livekit", "livekit_service_url": "https://sfu.example.org"}
        ]
    }
    synapse_text = text.split("# 2.")[1].split("\n", 1)[1].split("# 3.")[0]
    synapse = yaml.safe_load(synapse_text)
    assert synapse["matrix_rtc"] == {
        "transports": [{"type": "livekit", "livekit_service_url": "https://sfu.example.org"}]
    }
    assert synapse["experimental_features"] == {"msc4143_enabled": True}
    assert synapse["max_event_delay_duration"] == "24h"
    with pytest.raises(ConfigError, match="must be the http"):
        _run(["matrix", "recipe", "--public-url", "sfu.example.org"])
