"""``python -m mediafed.cluster --index I --socket PATH --config-json PATH``: one
media worker of a node, as its supervisor (:mod:`.supervisor`) starts it."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from pathlib import Path

from mediafed import server
from mediafed.cli import LOG_FORMAT
from mediafed.cluster.supervisor import load_worker_config
from mediafed.runtime import install_event_loop_policy


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m mediafed.cluster")
    parser.add_argument("--config-json", type=Path, required=True)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--socket", required=True)
    args = parser.parse_args()
    config = load_worker_config(args.config_json)
    logging.basicConfig(level=config.log.level, format=f"[w{args.index}] {LOG_FORMAT}")
    install_event_loop_policy()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(server.serve(config, worker_index=args.index, unix_path=args.socket))
    return 0


if __name__ == "__main__":
    sys.exit(main())
