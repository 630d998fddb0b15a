"""Configuration: a TOML file, then ``MEDIAFED_*`` environment variables, validated.

Every setting has an embedded default so ``mediafed serve`` runs with no file.
Environment variables name a section and a field: ``MEDIAFED_RTC_UDP_PORT=7900``
sets ``[rtc] udp_port``; ``MEDIAFED_KEYS="key1: secret1, key2: secret2"`` sets
the API key pairs (the LiveKit convention).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mediafed.errors import ConfigError
from mediafed.matrix.config import MatrixConfig
from mediafed.rocketchat.client import RocketChatConfig

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


class RtcConfig(_Section):
    udp_port: int = Field(7882, ge=0, le=65535)
    tcp_port: int = Field(7881, ge=0, le=65535)
    node_ip: list[str] = Field(default_factory=list)
    """Addresses advertised as ICE host candidates. Empty: the bind address if
    it is specific, else 127.0.0.1; nothing is discovered unless asked."""
    use_external_ip: bool = False
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


class Config(_Section):
    server: ServerConfig = ServerConfig()
    rtc: RtcConfig = RtcConfig()
    log: LogConfig = LogConfig()
    matrix: MatrixConfig = MatrixConfig()
    rocketchat: RocketChatConfig = RocketChatConfig()
    keys: dict[str, str] = Field(default_factory=dict)
    """API key -> secret pairs that sign and verify access tokens."""

    @field_validator("keys")
    @classmethod
    def _secrets_long_enough(cls, keys: dict[str, str]) -> dict[str, str]:
        for key, secret in keys.items():
            if not key or not secret:
                raise ValueError("API keys and secrets must not be empty")
        return keys

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


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    sections = {
        name: model
        for name, model in (
            ("server", ServerConfig),
            ("rtc", RtcConfig),
            ("log", LogConfig),
            ("matrix", MatrixConfig),
            ("rocketchat", RocketChatConfig),
        )
    }
    for name, value in environ.items():
        if not name.startswith("MEDIAFED_"):
            continue
        rest = name[len("MEDIAFED_") :].lower()
        if rest == "keys":
            overrides["keys"] = _parse_keys(value)
            continue
        section, _, field = rest.partition("_")
        model = sections.get(section)
        if model is None or field not in model.model_fields:
            continue
        annotation = model.model_fields[field].annotation
        parsed: Any = value
        if annotation == list[str]:
            parsed = [part.strip() for part in value.split(",") if part.strip()]
        overrides.setdefault(section, {})[field] = parsed
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
    """
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    if dev:
        data = _merge(
            {"server": {"bind": "127.0.0.1", "dev": True}, "keys": {DEV_API_KEY: DEV_API_SECRET}},
            data,
        )
    data = _merge(data, _env_overrides(os.environ if environ is None else environ))
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        source = str(path) if path else "defaults/environment"
        raise ConfigError(f"invalid configuration ({source}): {problems}") from None
