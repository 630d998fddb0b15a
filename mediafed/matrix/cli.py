"""``mediafed matrix …``: the appservice registration file and the homeserver recipe.

- ``mediafed matrix registration --domain example.org --url http://mediafed:7880
  --out registration.yaml`` writes an appservice registration (Matrix spec,
  application service API "Registration") with fresh random tokens.
- ``mediafed matrix recipe --public-url https://sfu.example.org`` prints what a
  homeserver admin adds so Element Call uses this relay as its MatrixRTC focus:
  ``.well-known/matrix/client`` ``org.matrix.msc4143.rtc_foci`` (MSC4143) and
  Synapse's ``matrix_rtc.transports``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import yaml

from mediafed.errors import ConfigError
from mediafed.matrix.registration import (
    DEFAULT_BOT,
    DEFAULT_ID,
    DEFAULT_USER_PREFIX,
    make_registration,
)


def well_known_client(public_url: str, homeserver_url: str = "") -> dict[str, Any]:
    """The ``/.well-known/matrix/client`` keys that point Element Call at mediafed."""
    data: dict[str, Any] = {}
    if homeserver_url:
        data["m.homeserver"] = {"base_url": homeserver_url}
    data["org.matrix.msc4143.rtc_foci"] = [{"type": "livekit", "livekit_service_url": public_url}]
    return data


def synapse_matrix_rtc(public_url: str) -> dict[str, Any]:
    """Synapse's ``matrix_rtc`` section (served at ``/_matrix/client/unstable/
    org.matrix.msc4143/rtc/transports`` once ``msc4143_enabled`` is on), and
    MSC4140 delayed events (on once ``max_event_delay_duration`` is set): Element
    Call and mediafed's bridged members leave through them when a client dies."""
    return {
        "matrix_rtc": {"transports": [{"type": "livekit", "livekit_service_url": public_url}]},
        "experimental_features": {"msc4143_enabled": True},
        "max_event_delay_duration": "24h",
    }


def _check_public_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise ConfigError(
            f"--public-url {url!r} must be the http(s) URL browsers reach mediafed at, "
            "e.g. https://sfu.example.org"
        )
    return url.rstrip("/")


def print_recipe(public_url: str, homeserver_url: str, out: TextIO) -> None:
    url = _check_public_url(public_url)
    out.write("# 1. Serve this at https://<your server name>/.well-known/matrix/client\n")
    out.write(
        "#    (merge it into the JSON you already serve; CORS: Access-Control-Allow-Origin *)\n"
    )
    out.write(json.dumps(well_known_client(url, homeserver_url), indent=2) + "\n\n")
    out.write("# 2. Add this to Synapse's homeserver.yaml (merge experimental_features):\n")
    out.write(yaml.safe_dump(synapse_matrix_rtc(url), sort_keys=False) + "\n")
    out.write("# 3. In mediafed's config, let your homeserver's users in:\n")
    out.write('#    [matrix]\n#    server_name = "<your server name>"\n')
    out.write(
        "#    Users of other homeservers need them in allowed_homeservers "
        '(or ["*"] for everyone).\n'
    )
    if not url.startswith("https://"):
        out.write("# WARNING: browsers need https:// for the focus outside localhost.\n")


def _cmd_registration(args: argparse.Namespace) -> int:
    registration = make_registration(
        url=args.url,
        domain=args.domain,
        id=args.id,
        bot_localpart=args.bot,
        user_prefix=args.user_prefix,
    )
    out: Path = args.out
    if out.exists() and not args.force:
        raise ConfigError(f"{out} exists; pass --force to replace it (its tokens change)")
    registration.write(out)
    print(f"wrote {out} (bot {registration.bot_user_id}, users {registration.user_regex()})")
    print("Homeserver: add it to app_service_config_files and restart. mediafed config:")
    print("  [matrix]")
    print(f'  server_name = "{args.domain}"')
    if args.homeserver_url:
        print(f'  homeserver_url = "{args.homeserver_url}"')
    print(f'  registration = "{out.resolve()}"')
    return 0


def _cmd_recipe(args: argparse.Namespace) -> int:
    print_recipe(args.public_url, args.homeserver_url, sys.stdout)
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``mediafed matrix registration`` and ``mediafed matrix recipe``."""
    matrix = subparsers.add_parser("matrix", help="Matrix appservice and MatrixRTC focus tools")
    commands = matrix.add_subparsers(dest="matrix_command", metavar="SUBCOMMAND", required=True)

    registration = commands.add_parser(
        "registration", help="write the appservice registration file for your homeserver"
    )
    registration.add_argument(
        "--domain", required=True, help="the homeserver's server name, e.g. example.org"
    )
    registration.add_argument(
        "--url",
        default="http://localhost:7880",
        help="where the homeserver reaches mediafed's HTTP port (default %(default)s)",
    )
    registration.add_argument(
        "--homeserver-url", default="", help="the homeserver's client-server API URL"
    )
    registration.add_argument("--out", type=Path, default=Path("registration.yaml"))
    registration.add_argument("--id", default=DEFAULT_ID, help="appservice id (%(default)s)")
    registration.add_argument("--bot", default=DEFAULT_BOT, help="bot localpart (%(default)s)")
    registration.add_argument(
        "--user-prefix", default=DEFAULT_USER_PREFIX, help="ghost user prefix (%(default)s)"
    )
    registration.add_argument("--force", action="store_true", help="replace an existing file")
    registration.set_defaults(func=_cmd_registration)

    recipe = commands.add_parser(
        "recipe", help="print the .well-known and Synapse settings for Element Call"
    )
    recipe.add_argument(
        "--public-url", required=True, help="the https URL browsers reach mediafed at"
    )
    recipe.add_argument("--homeserver-url", default="", help="include m.homeserver base_url")
    recipe.set_defaults(func=_cmd_recipe)
