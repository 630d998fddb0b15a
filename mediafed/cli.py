"""The ``mediafed`` command line: ``serve``, ``token`` and operator tools.

Like :mod:`mediafed.server`, a composition root: the subcommands of the
front-ends (``token``, ``matrix``, ``bridge``) are handed what they need of the
configuration, read here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from mediafed import __version__
from mediafed.config import load_config
from mediafed.errors import ConfigError


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML configuration file")
    parser.add_argument(
        "--dev",
        action="store_true",
        help="development mode: bind 127.0.0.1, API key 'devkey' / secret 'secret'",
    )


def _keys_of(path: Path | None, dev: bool) -> Mapping[str, str]:
    return load_config(path, dev=dev).keys


def _data_dir_of(path: Path | None) -> Path:
    return load_config(path).server.data_dir


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def _cmd_serve(args: argparse.Namespace) -> int:
    from mediafed.runtime import install_event_loop_policy

    config = load_config(args.config, dev=args.dev)
    logging.basicConfig(level=config.log.level, format=LOG_FORMAT)
    install_event_loop_policy()
    workers = config.server.worker_count()
    with contextlib.suppress(KeyboardInterrupt):
        if workers == 1 and not config.redis.url:
            from mediafed import server

            asyncio.run(server.serve(config))
        else:
            from mediafed.cluster.supervisor import serve_workers

            asyncio.run(serve_workers(config, workers))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mediafed", description="Federated real-time media relay (SFU)."
    )
    parser.add_argument("--version", action="version", version=f"mediafed {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser("serve", help="run a mediafed node")
    _add_config_args(serve)
    serve.set_defaults(func=_cmd_serve)
    from mediafed.matrix import cli as matrix_cli
    from mediafed.rocketchat import bridge_cli
    from mediafed.signal.livekit import token_cli

    token_cli.register(commands, _keys_of)
    matrix_cli.register(commands)
    bridge_cli.register(commands, _data_dir_of)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result: int = args.func(args)
    except ConfigError as exc:
        print(f"mediafed: {exc}", file=sys.stderr)
        return 2
    return result
