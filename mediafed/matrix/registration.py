"""The appservice registration file a homeserver admin installs for mediafed.

Matrix spec, application service API, "Registration": ``id``, ``url``,
``as_token``, ``hs_token``, ``sender_localpart``, ``namespaces`` (users,
aliases, rooms: ``{exclusive, regex}``), ``rate_limited``, ``receive_ephemeral``
(MSC2409; Synapse also reads ``de.sorunome.msc2409.push_ephemeral`` and, with
``experimental_features.msc2409_to_device_messages_enabled``, delivers
to-device events with them).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mediafed.errors import ConfigError

DEFAULT_ID = "mediafed"
DEFAULT_BOT = "mediafed"
DEFAULT_USER_PREFIX = "rc_"


@dataclass(frozen=True, slots=True)
class Registration:
    id: str
    url: str
    as_token: str
    hs_token: str
    sender_localpart: str
    domain: str
    user_prefix: str = DEFAULT_USER_PREFIX
    rate_limited: bool = False
    receive_ephemeral: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def bot_user_id(self) -> str:
        return f"@{self.sender_localpart}:{self.domain}"

    def user_regex(self) -> str:
        return f"@{re.escape(self.user_prefix)}.*:{re.escape(self.domain)}"

    def is_ours(self, user_id: str) -> bool:
        """Whether ``user_id`` is the bot or a ghost user in our namespace."""
        return user_id == self.bot_user_id or re.fullmatch(self.user_regex(), user_id) is not None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "url": self.url,
            "as_token": self.as_token,
            "hs_token": self.hs_token,
            "sender_localpart": self.sender_localpart,
            "namespaces": {
                "users": [
                    {"exclusive": True, "regex": self.user_regex()},
                    {"exclusive": True, "regex": re.escape(self.bot_user_id)},
                ],
                "aliases": [],
                "rooms": [],
            },
            "rate_limited": self.rate_limited,
            "receive_ephemeral": self.receive_ephemeral,
            "de.sorunome.msc2409.push_ephemeral": self.receive_ephemeral,
        }
        data.update(self.extra)
        return data

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def write(self, path: Path) -> None:
        """Write with owner-only permissions: the file holds both secrets."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600, exist_ok=True)
        path.chmod(0o600)
        path.write_text(self.to_yaml(), encoding="utf-8")

    @classmethod
    def from_dict(cls, data: object, *, source: str = "registration") -> Registration:
        if not isinstance(data, dict):
            raise ConfigError(
                f"{source} is not a YAML mapping; write it with `mediafed matrix registration`"
            )
        missing = [
            key
            for key in ("id", "url", "as_token", "hs_token", "sender_localpart")
            if not isinstance(data.get(key), str) or not data[key]
        ]
        if missing:
            raise ConfigError(f"{source} lacks {', '.join(missing)}; regenerate it")
        users = (
            data.get("namespaces", {}).get("users", [])
            if isinstance(data.get("namespaces"), dict)
            else []
        )
        domain, prefix = _domain_and_prefix(users, data["sender_localpart"], source)
        known = {
            "id",
            "url",
            "as_token",
            "hs_token",
            "sender_localpart",
            "namespaces",
            "rate_limited",
            "receive_ephemeral",
            "de.sorunome.msc2409.push_ephemeral",
        }
        return cls(
            id=data["id"],
            url=data["url"],
            as_token=data["as_token"],
            hs_token=data["hs_token"],
            sender_localpart=data["sender_localpart"],
            domain=domain,
            user_prefix=prefix,
            rate_limited=bool(data.get("rate_limited", False)),
            receive_ephemeral=bool(data.get("receive_ephemeral", False)),
            extra={k: v for k, v in data.items() if k not in known},
        )

    @classmethod
    def load(cls, path: Path) -> Registration:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(
                f"appservice registration {path} does not exist; create it with "
                f"`mediafed matrix registration --out {path}`"
            ) from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"appservice registration {path} is not valid YAML: {exc}") from None
        return cls.from_dict(data, source=str(path))


_USER_REGEX = re.compile(r"@(?P<prefix>(?:[^\\.]|\\.)*?)\.\*:(?P<domain>.+)")


def _domain_and_prefix(users: object, bot: str, source: str) -> tuple[str, str]:
    if isinstance(users, list):
        for entry in users:
            regex = entry.get("regex") if isinstance(entry, dict) else None
            match = _USER_REGEX.fullmatch(regex) if isinstance(regex, str) else None
            if match:
                return _unescape(match["domain"]), _unescape(match["prefix"])
    raise ConfigError(
        f"{source} has no user namespace like '@rc_.*:example.org'; regenerate it with "
        "`mediafed matrix registration`"
    )


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def make_registration(
    *,
    url: str,
    domain: str,
    id: str = DEFAULT_ID,
    bot_localpart: str = DEFAULT_BOT,
    user_prefix: str = DEFAULT_USER_PREFIX,
) -> Registration:
    """A fresh registration with random 256-bit tokens."""
    if not domain:
        raise ConfigError("the registration needs the homeserver's domain (server name)")
    if not re.fullmatch(r"[a-z0-9._=/+-]+", bot_localpart):
        raise ConfigError(f"bot localpart {bot_localpart!r} is not a valid Matrix localpart")
    if not re.fullmatch(r"[a-z0-9._=/+-]*", user_prefix):
        raise ConfigError(f"user prefix {user_prefix!r} is not a valid Matrix localpart prefix")
    return Registration(
        id=id,
        url=url,
        as_token=secrets.token_urlsafe(32),
        hs_token=secrets.token_urlsafe(32),
        sender_localpart=bot_localpart,
        domain=domain,
        user_prefix=user_prefix,
    )
