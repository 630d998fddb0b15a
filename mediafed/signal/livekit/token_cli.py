"""``mediafed token``: print an access token that LiveKit SDKs and mediafed accept.

The token is an HS256 JWT minted by :func:`.tokens.mint_token` with the
claims LiveKit defines (``iss`` API key, ``sub`` identity, ``exp``, ``video``
grant; see livekit/protocol ``auth/grants.go``). The key pair comes from the
configuration (``[keys]`` or ``MEDIAFED_KEYS``); ``--dev`` uses ``devkey``/``secret``.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mediafed.errors import ConfigError
from mediafed.signal.livekit.tokens import SOURCES, VideoGrant, mint_token

_TTL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ttl(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``6h``, ``2d`` -> seconds."""
    match = _TTL.match(text.lower())
    if match is None or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(
            f"--ttl {text!r} is not a duration; write e.g. 90s, 30m, 6h or 2d"
        )
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def _parse_sources(text: str) -> tuple[str, ...]:
    sources = tuple(part.strip().lower() for part in text.split(",") if part.strip())
    unknown = [s for s in sources if s not in SOURCES]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown source(s) {', '.join(unknown)}; choose from {', '.join(SOURCES)}"
        )
    return sources


def _parse_attribute(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--attribute {text!r} must look like key=value")
    return key, value


KeysOf = Callable[[Path | None, bool], Mapping[str, str]]
"""The API key pairs of the configuration file given with ``--config`` (or of none),
with the dev pair when ``--dev`` is given."""


def register(subparsers: Any, keys_of: KeysOf) -> argparse.ArgumentParser:
    """Add the ``token`` subcommand to ``mediafed``'s subparsers; ``keys_of`` reads
    the key pairs that may sign from the configuration."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "token",
        help="print an access token (JWT) for a room",
        description="Print an access token (JWT) that LiveKit SDKs and mediafed accept.",
    )
    parser.add_argument("--room", help="room the token admits to (required unless --admin only)")
    parser.add_argument("--identity", help="participant identity (the JWT 'sub')")
    parser.add_argument("--name", default="", help="display name")
    parser.add_argument("--metadata", default="", help="participant metadata")
    parser.add_argument(
        "--attribute",
        action="append",
        type=_parse_attribute,
        default=[],
        metavar="KEY=VALUE",
        help="participant attribute (repeatable)",
    )
    parser.add_argument(
        "--ttl", type=parse_ttl, default=6 * 3600.0, help="lifetime, e.g. 90s, 30m, 6h (default)"
    )
    flag = argparse.BooleanOptionalAction
    parser.add_argument("--can-publish", action=flag, default=True, help="may publish tracks")
    parser.add_argument("--can-subscribe", action=flag, default=True, help="may subscribe")
    parser.add_argument(
        "--can-publish-data", action=flag, default=None, help="may send data (default: publish)"
    )
    parser.add_argument(
        "--sources",
        type=_parse_sources,
        default=(),
        help=f"comma-separated sources allowed to publish ({', '.join(SOURCES)}); default all",
    )
    parser.add_argument("--hidden", action="store_true", help="invisible to other participants")
    parser.add_argument(
        "--can-update-metadata", action="store_true", help="may change own name/metadata"
    )
    parser.add_argument("--admin", action="store_true", help="roomAdmin grant for --room")
    parser.add_argument("--room-create", action="store_true", help="roomCreate grant")
    parser.add_argument("--room-list", action="store_true", help="roomList grant")
    parser.add_argument(
        "--no-join", dest="join", action="store_false", help="an API-only token (no roomJoin)"
    )
    parser.add_argument("--api-key", help="which configured API key signs (default: the first)")
    parser.add_argument("--config", type=Path, help="TOML configuration file")
    parser.add_argument("--dev", action="store_true", help="use the dev key pair devkey/secret")
    parser.set_defaults(func=run, keys_of=keys_of)
    return parser


def _signing_key(keys: Mapping[str, str], wanted: str | None) -> tuple[str, str]:
    if not keys:
        raise ConfigError(
            "no API keys configured; add a [keys] table to the config file, set "
            "MEDIAFED_KEYS='key: secret', or pass --dev"
        )
    if wanted is None:
        return next(iter(keys.items()))
    if wanted not in keys:
        raise ConfigError(f"API key {wanted!r} is not configured; known keys: {', '.join(keys)}")
    return wanted, keys[wanted]


def token_from_args(args: argparse.Namespace, keys: Mapping[str, str]) -> str:
    """Mint the token the parsed arguments describe (raises ConfigError on misuse)."""
    joins = bool(args.join)
    if joins and (not args.room or not args.identity):
        raise ConfigError("a join token needs --room and --identity (or pass --no-join)")
    api_key, secret = _signing_key(keys, args.api_key)
    can_publish_data = args.can_publish if args.can_publish_data is None else args.can_publish_data
    grant = VideoGrant(
        room_join=joins,
        room=args.room or "",
        can_publish=args.can_publish,
        can_subscribe=args.can_subscribe,
        can_publish_data=can_publish_data,
        can_publish_sources=tuple(args.sources),
        can_update_own_metadata=args.can_update_metadata,
        hidden=args.hidden,
        room_create=args.room_create,
        room_admin=args.admin,
        room_list=args.room_list,
    )
    return mint_token(
        api_key,
        secret,
        identity=args.identity or "",
        video=grant,
        name=args.name,
        metadata=args.metadata,
        attributes=dict(args.attribute),
        ttl_s=args.ttl,
    )


def run(args: argparse.Namespace) -> int:
    print(token_from_args(args, args.keys_of(args.config, args.dev)))
    sys.stdout.flush()
    return 0
