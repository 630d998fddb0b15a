"""Configuration: a TOML file, then ``MEDIAFED_*`` environment variables, validated.

Every setting has an embedded default so ``mediafed serve`` runs with no file.
Environment variables name a section and a field: ``MEDIAFED_RTC_UDP_PORT=7900``
sets ``[rtc] udp_port``; ``MEDIAFED_KEYS="key1: secret1, key2: secret2"`` sets
the API key pairs (the LiveKit convention). A key or variable that names no
setting is an error that names the closest one: a typo never passes silently.

The node's own sections (``[server]``, ``[rtc]``, ``[log]``, ``[room]``, ``[keys]``,
``[webhook]``) are defined here; each front-end defines its own (``[matrix]`` in
:mod:`mediafed.matrix.config`, ``[rocketchat]`` in :mod:`mediafed.rocketchat.config`)
and this module composes them. Configuration flows downward: the composition
roots (:mod:`mediafed.server`, :mod:`mediafed.cli`) hand each front-end its
section and what else it needs; no front-end imports this module.
"""

from __future__ import annotations

import difflib
import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from mediafed.errors import ConfigError
from mediafed.matrix.config import MatrixConfig
from mediafed.rocketchat.config import RocketChatConfig
from mediafed.transport.turn import SCHEMES, TurnServer

DEV_API_KEY = "devkey"
DEV_API_SECRET = "secret"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Section):
    bind: str = "0.0.0.0"
    http_port: int = Field(7880, ge=0, le=65535)
    data_dir: Path = Path("data")
    public_url: str = ""
    """Base URL clients reach the HTTP port at (join links, focus answers)."""
    dev: bool = False
    workers: int = Field(0, ge=0, le=1024)
    """Media worker processes, each hosting whole rooms: 0 = one per core."""

    def worker_count(self) -> int:
        """``workers``, with 0 resolved to the cores this process may run on."""
        if self.workers:
            return self.workers
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not Linux
            return max(1, os.cpu_count() or 1)

    def local_url(self) -> str:
        """The HTTP port's URL on this host: links' base when no ``public_url`` is set
        and no request tells where clients came from."""
        host = self.bind
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return f"http://{host}:{self.http_port}"


class TurnServerConfig(_Section):
    """One ``[[rtc.turn_servers]]`` entry: a TURN (or STUN) server clients get in
    their ``iceServers``, with a REST ``secret`` (coturn ``static-auth-secret``:
    each client gets its own credentials for ``ttl_s``) or static credentials."""

    urls: list[str] = Field(min_length=1)
    """``turn:host:3478?transport=udp``, ``turns:host:5349?transport=tcp``, ``stun:…``"""
    secret: str = ""
    username: str = ""
    credential: str = ""
    ttl_s: int = Field(86_400, gt=0, le=7 * 86_400)

    @field_validator("urls")
    @classmethod
    def _known_schemes(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not url.startswith(SCHEMES):
                raise ValueError(f"{url!r} is not a stun:, turn: or turns: URI (RFC 7064, 7065)")
        return urls

    @model_validator(mode="after")
    def _one_kind_of_credentials(self) -> TurnServerConfig:
        if self.secret and (self.username or self.credential):
            raise ValueError("give a REST secret or a username and credential, not both")
        relays = any(url.startswith(("turn:", "turns:")) for url in self.urls)
        if relays and not self.secret and not (self.username and self.credential):
            raise ValueError("a TURN server needs a secret (TURN REST) or username and credential")
        return self

    def server(self) -> TurnServer:
        return TurnServer(tuple(self.urls), self.secret, self.username, self.credential, self.ttl_s)


class RtcConfig(_Section):
    udp_port: int = Field(7882, ge=0, le=65535)
    tcp_port: int = Field(7881, ge=0, le=65535)
    """ICE-TCP (RFC 6544 passive candidates) for clients whose UDP is blocked; 0: any
    free port, as for ``udp_port``."""
    ice_tcp: bool = True
    """Listen on ``tcp_port`` and offer TCP candidates (below every UDP one)."""
    turn_servers: list[TurnServerConfig] = Field(default_factory=list)
    """Relays handed to clients for networks that reach neither port (a JSON list in
    ``MEDIAFED_RTC_TURN_SERVERS``)."""
    node_ip: list[str] = Field(default_factory=list)
    """Addresses advertised as ICE host candidates. Empty: the bind address if
    it is specific, else 127.0.0.1; nothing is discovered."""
    consent_timeout_s: float = Field(30.0, gt=0)
    rtx_cache_ms: int = Field(1000, ge=100, le=10000)


class LogConfig(_Section):
    level: str = "INFO"

    @field_validator("level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        upper = value.upper()
        if upper not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return upper


class RoomConfig(_Section):
    """How rooms may be administered (LiveKit's ``room`` section)."""

    enable_remote_unmute: bool = False
    """RoomService ``MutePublishedTrack`` may unmute a participant's track, not only
    mute it (LiveKit's ``room.enable_remote_unmute``; off: a privacy safeguard)."""


class WebhookConfig(_Section):
    """LiveKit webhooks (``room_started``, ``participant_joined``, ...): POSTed to each
    of ``urls``, signed with the secret of ``api_key`` (LiveKit's ``webhook`` section)."""

    urls: list[str] = Field(default_factory=list)
    api_key: str = ""
    """The key of ``[keys]`` whose secret signs the webhooks; receivers verify with it."""

    @field_validator("urls")
    @classmethod
    def _http_urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{url!r} is not an http:// or https:// URL")
        return urls


class LinkConfig(_Section):
    """One ``[[relay.links]]`` entry: a room of another LiveKit-compatible SFU (another
    mediafed, livekit-server) pulled into a room here, each of its tracks once."""

    room: str = Field(min_length=1)
    """The room here that shows the remote participants."""
    url: str
    """The remote SFU: ``wss://sfu.partner.example`` (``https://`` works too)."""
    remote_room: str = ""
    """The room there; empty: the same name as ``room``."""
    api_key: str = ""
    api_secret: str = ""
    """A key pair of the remote SFU: a fresh subscribe-only, hidden token is signed
    for every connection attempt."""
    token: str = ""
    """Or a token the remote operator gave (it must allow joining ``remote_room``);
    it is refreshed over the connection while it lasts."""

    @field_validator("url")
    @classmethod
    def _ws_or_http(cls, url: str) -> str:
        if not url.startswith(("ws://", "wss://", "http://", "https://")):
            raise ValueError(f"{url!r} is not a ws(s):// or http(s):// URL")
        return url

    @model_validator(mode="after")
    def _credentials(self) -> LinkConfig:
        if bool(self.api_key) != bool(self.api_secret):
            raise ValueError("give api_key and api_secret together")
        if bool(self.api_key) == bool(self.token):
            raise ValueError("give the remote SFU's api_key and api_secret, or a token")
        return self


class RelayConfig(_Section):
    """Rooms of other SFUs pulled in here (relay links)."""

    links: list[LinkConfig] = Field(default_factory=list)
    """``MEDIAFED_RELAY_LINKS``: a JSON list of tables."""
    identity: str = "mediafed-relay"
    """The identity links join remote rooms as (hidden there)."""


class RedisConfig(_Section):
    """``[redis]``: several nodes placing rooms through one Redis server."""

    url: str = ""
    """``redis://host:6379/0``; empty: this node alone (no Redis needed)."""
    node_url: str = ""
    """Where other nodes reach this node's HTTP port (default: ``server.public_url``,
    else the port on the bind address)."""
    node_id: str = ""
    """This node's name in Redis (default: host name and HTTP port)."""
    key_prefix: str = "mediafed:"
    ttl_s: float = Field(6.0, gt=1.0, le=300.0)
    """A node (and its rooms) that stops renewing them is gone after this long; it
    renews them every ``ttl_s / 3``."""

    @field_validator("url")
    @classmethod
    def _redis_scheme(cls, url: str) -> str:
        if url and not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"{url!r} is not a redis://, rediss:// or unix:// URL")
        return url


class Config(_Section):
    server: ServerConfig = ServerConfig()
    rtc: RtcConfig = RtcConfig()
    log: LogConfig = LogConfig()
    room: RoomConfig = RoomConfig()
    matrix: MatrixConfig = MatrixConfig()
    rocketchat: RocketChatConfig = RocketChatConfig()
    keys: dict[str, str] = Field(default_factory=dict)
    """API key -> secret pairs that sign and verify access tokens."""
    webhook: WebhookConfig = WebhookConfig()
    """Checked after ``keys``: its ``api_key`` must name one of them."""
    relay: RelayConfig = RelayConfig()
    redis: RedisConfig = RedisConfig()

    @field_validator("keys")
    @classmethod
    def _secrets_long_enough(cls, keys: dict[str, str]) -> dict[str, str]:
        for key, secret in keys.items():
            if not key or not secret:
                raise ValueError("API keys and secrets must not be empty")
        return keys

    @field_validator("webhook")
    @classmethod
    def _webhook_key_known(cls, webhook: WebhookConfig, info: ValidationInfo) -> WebhookConfig:
        if not webhook.urls:
            return webhook
        keys = info.data.get("keys")
        if keys is None:
            return webhook  # [keys] is invalid itself: that error is reported
        known = ", ".join(sorted(keys)) or "none"
        if not webhook.api_key:
            raise ValueError(
                f"urls are set but api_key is empty; set it to the key of [keys] whose "
                f"secret signs the webhooks (configured keys: {known})"
            )
        if webhook.api_key not in keys:
            raise ValueError(
                f"api_key {webhook.api_key!r} is not one of [keys] (configured keys: "
                f"{known}); webhooks are signed with that key's secret, so add it to [keys] "
                f"or name one that is there"
            )
        return webhook

    def advertised_ips(self) -> list[str]:
        if self.rtc.node_ip:
            return list(self.rtc.node_ip)
        if self.server.bind not in ("0.0.0.0", "::", ""):
            return [self.server.bind]
        return ["127.0.0.1"]


def _parse_keys(text: str) -> dict[str, str]:
    keys: dict[str, str] = {}
    for pair in text.split(","):
        if not pair.strip():
            continue
        key, sep, secret = pair.partition(":")
        if not sep:
            raise ConfigError(
                f"MEDIAFED_KEYS entry {pair.strip()!r} has no ':'; write 'key: secret, ...'"
            )
        keys[key.strip()] = secret.strip()
    return keys


ENV_PREFIX = "MEDIAFED_"

NOT_SETTINGS = frozenset(
    {
        "MEDIAFED_IN_NETNS",  # scripts/in-netns: we run inside the test network namespace
        "MEDIAFED_PURE_PYTHON",  # transport/native.py, media/native.py: no C steps
        "MEDIAFED_KEEP_SYNAPSE",  # tests/support/synapse.py: keep the test homeserver's files
        "MEDIAFED_FUZZ_NATIVE",  # fuzz/: the sanitizer-built native module to load
        "MEDIAFED_FUZZ_CC",  # fuzz/: the compiler that builds it
        "MEDIAFED_FUZZ_TARGET",  # scripts/fuzz: the target a run is for
        "MEDIAFED_GO_CACHE",  # loadtest/gopeers.py: where the Go peers are built
        "MEDIAFED_URL",  # rocketchat-app's end-to-end driver: where mediafed is
        "MEDIAFED_API_KEY",  # ... and the key pair it uses
        "MEDIAFED_API_SECRET",
    }
)
"""``MEDIAFED_*`` variables that other parts of the project read: not settings, never an error."""

REMOVED = {
    "rtc.use_external_ip": "mediafed does not discover its public address; "
    "list the addresses to advertise in [rtc] node_ip",
}
"""Settings that existed once, and what to do instead."""


def _sections() -> dict[str, type[BaseModel]]:
    """The tables of the configuration file (``[server]``, ``[rtc]``, ...) and their models."""
    return {
        name: field.annotation
        for name, field in Config.model_fields.items()
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
    }


def _tables() -> dict[str, list[str]]:
    """Every table of the configuration with its keys; ``""`` is the top level."""
    tables = {"": list(Config.model_fields)}
    for name, model in _sections().items():
        tables[name] = list(model.model_fields)
    return tables


def _env_tables() -> dict[str, list[str]]:
    """What ``MEDIAFED_*`` variables can set: ``KEYS`` and each key of each section."""
    return {name: keys for name, keys in _tables().items() if name} | {"": ["keys"]}


def _closest(name: str, tables: Mapping[str, list[str]]) -> str | None:
    """The valid dotted setting nearest to the unknown dotted ``name``, if any is near."""
    table, _, leaf = name.rpartition(".")
    siblings = tables.get(table)
    if siblings is not None:
        match = difflib.get_close_matches(leaf, siblings, n=1)
        if match:
            return f"{table}.{match[0]}" if table else match[0]
    # the right key in the wrong table: `bind` under [rtc], `udp_port` at the top
    elsewhere = {
        key: f"{other}.{key}" if other else key
        for other, keys in tables.items()
        if other != table
        for key in keys
    }
    match = difflib.get_close_matches(leaf, list(elsewhere), n=1)
    return elsewhere[match[0]] if match else None


def _unknown_keys(data: Mapping[str, Any], tables: Mapping[str, list[str]]) -> list[str]:
    """Dotted names of the keys in ``data`` (a parsed TOML file) that name no setting."""
    unknown: list[str] = []
    for key, value in data.items():
        if key not in tables[""]:
            unknown.append(key)
        elif key in tables and isinstance(value, Mapping):
            unknown.extend(f"{key}.{inner}" for inner in value if inner not in tables[key])
    return unknown


def _file_key_problem(name: str, path: Path) -> str:
    if name in REMOVED:
        return f"{name} in {path} is no longer a setting: {REMOVED[name]}"
    tables = _tables()
    nearest = _closest(name, tables)
    if nearest is not None:
        return f"unknown setting {name} in {path}; did you mean {nearest}?"
    table = name.rpartition(".")[0]
    if table:
        return f"unknown setting {name} in {path}; [{table}] has {', '.join(tables[table])}"
    listed = ", ".join(f"[{key}]" for key in tables[""])
    return f"unknown setting {name} in {path}; the tables are {listed}"


def _env_to_dotted(variable: str) -> str:
    rest = variable[len(ENV_PREFIX) :].lower()
    section, sep, key = rest.partition("_")
    return f"{section}.{key}" if sep and section in _sections() else rest


def _dotted_to_env(name: str) -> str:
    return ENV_PREFIX + name.replace(".", "_").upper()


def _env_problem(variable: str) -> str:
    name = _env_to_dotted(variable)
    if name in REMOVED:
        return f"{variable} is no longer a setting: {REMOVED[name]}"
    tables = _env_tables()
    nearest = _closest(name, tables)
    if nearest is not None:
        return f"unknown setting {variable}; did you mean {_dotted_to_env(nearest)}?"
    table = name.rpartition(".")[0]
    if table:
        names = ", ".join(_dotted_to_env(f"{table}.{key}") for key in tables[table])
        return f"unknown setting {variable}; [{table}] is set by {names}"
    sections = ", ".join(table.upper() for table in tables if table)
    return (
        f"unknown setting {variable}; settings are {ENV_PREFIX}KEYS and "
        f"{ENV_PREFIX}<SECTION>_<FIELD> with SECTION one of {sections}"
    )


def _env_overrides(environ: Mapping[str, str], problems: list[str]) -> dict[str, Any]:
    """The settings ``MEDIAFED_*`` variables make; unknown ones are added to ``problems``."""
    overrides: dict[str, Any] = {}
    sections = _sections()
    for variable, value in sorted(environ.items()):
        if not variable.startswith(ENV_PREFIX) or variable in NOT_SETTINGS:
            continue
        name = _env_to_dotted(variable)
        if name == "keys":
            overrides["keys"] = _parse_keys(value)
            continue
        section, _, key = name.partition(".")
        field = sections[section].model_fields.get(key) if section in sections else None
        if field is None:
            problems.append(_env_problem(variable))
            continue
        parsed: Any = value
        if field.annotation == list[str]:
            parsed = [part.strip() for part in value.split(",") if part.strip()]
        elif value.lstrip().startswith(("[", "{")):
            try:
                parsed = json.loads(value)  # tables and lists of tables: JSON
            except json.JSONDecodeError as exc:
                problems.append(f"{variable} is not valid JSON: {exc}")
                continue
        overrides.setdefault(section, {})[key] = parsed
    return overrides


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key != "keys":
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(
    path: Path | None = None,
    *,
    dev: bool = False,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Read the TOML file (if any), apply ``MEDIAFED_*`` variables, validate.

    ``dev`` binds to 127.0.0.1 and adds the ``devkey``/``secret`` key pair.
    Every problem found is in the ConfigError, one per line.
    """
    data: dict[str, Any] = {}
    problems: list[str] = []
    unknown: list[str] = []
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        unknown = _unknown_keys(data, _tables())
        problems.extend(_file_key_problem(name, path) for name in unknown)
    if dev:
        data = _merge(
            {"server": {"bind": "127.0.0.1", "dev": True}, "keys": {DEV_API_KEY: DEV_API_SECRET}},
            data,
        )
    env = _env_overrides(os.environ if environ is None else environ, problems)
    data = _merge(data, env)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        named = ((".".join(str(part) for part in err["loc"]), err["msg"]) for err in exc.errors())
        invalid = "; ".join(f"{name}: {msg}" for name, msg in named if name not in unknown)
        source = str(path) if path else "defaults/environment"
        if invalid or not problems:
            problems.append(f"invalid configuration ({source}): {invalid or exc}")
        raise ConfigError("\n".join(problems)) from None
    if problems:
        raise ConfigError("\n".join(problems))
    return config
