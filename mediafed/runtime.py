"""What every serving process of a node does, single or supervisor: the event
loop, signals, the HTTP request-line limit, the warning about short secrets.
Kept light: a supervisor imports this and not the room core."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from mediafed.config import Config
from mediafed.signal.livekit.tokens import MIN_SECRET_LENGTH

log = logging.getLogger(__name__)


def install_event_loop_policy() -> None:
    """uvloop wherever it is installed; the plain asyncio loop otherwise."""
    try:
        import uvloop
    except ImportError:
        log.info("- uvloop not installed; using the asyncio event loop")
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def warn_short_secrets(config: Config) -> None:
    for key, secret in config.keys.items():
        if len(secret) < MIN_SECRET_LENGTH and not config.server.dev:
            log.warning(
                "x API secret of key %r is %d characters; use %d or more (e.g. `openssl rand "
                "-hex 32`) or anyone who guesses it can mint tokens",
                key,
                len(secret),
                MIN_SECRET_LENGTH,
            )


MAX_LINE_SIZE = 1 << 16
"""A v1 join request (the first offer, when a client cannot gzip it) makes the
request line longer than aiohttp's default 8 KiB."""


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    return stop
