"""Configuration names: a typo in a TOML key or a ``MEDIAFED_*`` variable is an
error that names the closest valid setting; variables the project reads for
other purposes are never mistaken for settings."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from mediafed.config import NOT_SETTINGS, Config, load_config
from mediafed.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def _error(path: Path | None = None, **environ: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, environ=environ)
    return str(info.value)


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mediafed.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("variable", "message"),
    [
        (
            "MEDIAFED_RTC_UDP_PROT",
            "unknown setting MEDIAFED_RTC_UDP_PROT; did you mean MEDIAFED_RTC_UDP_PORT?",
        ),
        # the right key in the wrong section, or in none
        (
            "MEDIAFED_RTC_BIND",
            "unknown setting MEDIAFED_RTC_BIND; did you mean MEDIAFED_SERVER_BIND?",
        ),
        (
            "MEDIAFED_UDP_PORT",
            "unknown setting MEDIAFED_UDP_PORT; did you mean MEDIAFED_RTC_UDP_PORT?",
        ),
        ("MEDIAFED_KEY", "unknown setting MEDIAFED_KEY; did you mean MEDIAFED_KEYS?"),
        (
            "MEDIAFED_MATRIX_SERVER_NAM",
            "unknown setting MEDIAFED_MATRIX_SERVER_NAM; did you mean MEDIAFED_MATRIX_SERVER_NAME?",
        ),
        (
            "MEDIAFED_RTC_COLOUR",
            "unknown setting MEDIAFED_RTC_COLOUR; [rtc] is set by MEDIAFED_RTC_UDP_PORT, "
            "MEDIAFED_RTC_TCP_PORT, MEDIAFED_RTC_ICE_TCP, MEDIAFED_RTC_TURN_SERVERS, "
            "MEDIAFED_RTC_NODE_IP, MEDIAFED_RTC_CONSENT_TIMEOUT_S, MEDIAFED_RTC_RTX_CACHE_MS",
        ),
        (
            "MEDIAFED_COLOUR",
            "unknown setting MEDIAFED_COLOUR; settings are MEDIAFED_KEYS and "
            "MEDIAFED_<SECTION>_<FIELD> with SECTION one of SERVER, RTC, LOG, ROOM, MATRIX, "
            "ROCKETCHAT, WEBHOOK, RELAY, REDIS",
        ),
    ],
)
def test_unknown_variable_names_the_closest_setting(variable: str, message: str) -> None:
    assert _error(**{variable: "7900"}) == message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[rtc]\nudp_prot = 7900\n",
            "unknown setting rtc.udp_prot in {path}; did you mean rtc.udp_port?",
        ),
        ("[rtcc]\nudp_port = 7900\n", "unknown setting rtcc in {path}; did you mean rtc?"),
        ("udp_port = 7900\n", "unknown setting udp_port in {path}; did you mean rtc.udp_port?"),
        ("[rtc]\nbind = '::'\n", "unknown setting rtc.bind in {path}; did you mean server.bind?"),
        (
            "[rocketchat]\npasword = 'x'\n",
            "unknown setting rocketchat.pasword in {path}; did you mean rocketchat.password?",
        ),
        (
            "[log]\ncolour = 'blue'\n",
            "unknown setting log.colour in {path}; [log] has level",
        ),
        (
            "colour = 'blue'\n",
            "unknown setting colour in {path}; the tables are "
            "[server], [rtc], [log], [room], [matrix], [rocketchat], [keys], [webhook], [relay], "
            "[redis]",
        ),
    ],
)
def test_unknown_toml_key_names_the_closest_setting(
    tmp_path: Path, text: str, message: str
) -> None:
    path = _toml(tmp_path, text)
    assert _error(path) == message.format(path=path)


def test_removed_settings_say_what_to_do_instead(tmp_path: Path) -> None:
    path = _toml(tmp_path, "[rtc]\nuse_external_ip = true\ntcp_port = 7881\n")
    assert _error(path).splitlines() == [
        f"rtc.use_external_ip in {path} is no longer a setting: mediafed does not discover "
        "its public address; list the addresses to advertise in [rtc] node_ip",
    ]
    assert _error(MEDIAFED_RTC_USE_EXTERNAL_IP="true") == (
        "MEDIAFED_RTC_USE_EXTERNAL_IP is no longer a setting: mediafed does not discover "
        "its public address; list the addresses to advertise in [rtc] node_ip"
    )


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = _toml(tmp_path, "[rtc]\nudp_port = 70000\n[server]\nhttp_prot = 8080\n")
    assert _error(path, MEDIAFED_LOG_LEVL="DEBUG").splitlines() == [
        f"unknown setting server.http_prot in {path}; did you mean server.http_port?",
        "unknown setting MEDIAFED_LOG_LEVL; did you mean MEDIAFED_LOG_LEVEL?",
        f"invalid configuration ({path}): rtc.udp_port: Input should be less than or equal "
        "to 65535",
    ]


def test_free_form_tables_take_any_key(tmp_path: Path) -> None:
    path = _toml(
        tmp_path,
        '[keys]\nmy-api-key = "s3cret"\n'
        '[matrix.federation_url_overrides]\n"example.org" = "http://127.0.0.1:8448"\n',
    )
    config = load_config(path, environ={})
    assert config.keys == {"my-api-key": "s3cret"}
    assert config.matrix.federation_url_overrides == {"example.org": "http://127.0.0.1:8448"}


def test_variables_that_are_not_settings_are_allowed() -> None:
    environ = {name: "1" for name in NOT_SETTINGS}
    config = load_config(environ={**environ, "MEDIAFED_RTC_UDP_PORT": "7900", "PATH": "/bin"})
    assert config.rtc.udp_port == 7900


def test_every_mediafed_variable_the_project_names_is_a_setting_or_allowed() -> None:
    """A variable some script or test sets must not stop `mediafed serve` from starting."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    settings = {"MEDIAFED_KEYS"} | {
        f"MEDIAFED_{table}_{key}".upper()
        for table, field in Config.model_fields.items()
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
        for key in field.annotation.model_fields
    }
    named: dict[str, str] = {}
    for name in files:
        path = ROOT / os.fsdecode(name)
        if not name or path == Path(__file__) or not path.is_file():
            continue  # this file names wrong variables on purpose
        text = path.read_bytes().decode("utf-8", errors="replace")
        # (a name followed by "; did you mean" is an example of the error message)
        for variable in re.findall(r"\bMEDIAFED_[A-Z0-9_]*[A-Z0-9]\b(?!; did you mean)", text):
            named.setdefault(variable, str(path.relative_to(ROOT)))
    assert "MEDIAFED_IN_NETNS" in named  # the scan sees scripts/in-netns
    unknown = {v: where for v, where in named.items() if v not in settings | NOT_SETTINGS}
    assert unknown == {}, "add these to mediafed.config.NOT_SETTINGS or make them settings"


def test_serve_refuses_a_misspelt_variable() -> None:
    env = {**os.environ, "MEDIAFED_RTC_UDP_PROT": "7900"}
    failed = subprocess.run(
        [sys.executable, "-m", "mediafed", "serve", "--dev"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert failed.returncode == 2
    assert failed.stderr == (
        "mediafed: unknown setting MEDIAFED_RTC_UDP_PROT; did you mean MEDIAFED_RTC_UDP_PORT?\n"
    )


def test_relay_links_from_toml_and_their_mistakes(tmp_path: Path) -> None:
    path = _toml(
        tmp_path,
        '[[relay.links]]\nroom = "call"\nurl = "wss://sfu.partner.example"\n'
        'api_key = "k"\napi_secret = "s"\n',
    )
    (link,) = load_config(path, environ={}).relay.links
    assert (link.room, link.url, link.remote_room) == ("call", "wss://sfu.partner.example", "")
    both = _toml(
        tmp_path,
        '[[relay.links]]\nroom = "call"\nurl = "wss://x.example"\ntoken = "t"\n'
        'api_key = "k"\napi_secret = "s"\n',
    )
    assert "give the remote SFU's api_key and api_secret, or a token" in _error(both)
    assert "is not a ws(s):// or http(s):// URL" in _error(
        MEDIAFED_RELAY_LINKS='[{"room": "call", "url": "sfu.example", "token": "t"}]'
    )
