"""The transport's optional native steps (``_transport``), or their Python reference.

- ``SendTarget``: an endpoint's socket, outbound SRTP session and address, which
  numbers, protects and sends a packet the room core built
  (:class:`~mediafed.transport.target.PySendTarget` when not built);
- ``read_datagrams``: the media socket's read loop (``None`` when not built: the
  socket runs ``MediaSocket._read_python``).

Without the extension, or with ``MEDIAFED_PURE_PYTHON=1``, the Python code runs:
the same behaviour, tested against the native steps. The room core's own native
steps (the receive step and the fan-out) are in ``media/native.py``; they reach
the transport only through the C API this module's extension exports.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pylibsrtp._binding import ffi, lib

from mediafed.transport import srtp
from mediafed.transport.target import PySendTarget

log = logging.getLogger(__name__)

PURE_PYTHON = os.environ.get("MEDIAFED_PURE_PYTHON", "") in ("1", "true", "yes")
"""MEDIAFED_PURE_PYTHON=1 runs the Python reference of every native step."""

ReadDatagrams = Callable[
    [
        int,
        Any,
        memoryview,
        dict[bytes, Any],
        Callable[..., None],
        float | None,
        dict[str, int] | None,
    ],
    int,
]

native_send_target: type[Any] | None = None
read_datagrams: ReadDatagrams | None = None

if not PURE_PYTHON:
    try:
        from mediafed.transport import _transport  # type: ignore[attr-defined]
    except ImportError:
        _transport = None
    if _transport is not None and (_transport.MAX_DATAGRAM, _transport.BUFFER_SIZE) != (
        srtp.MAX_DATAGRAM,
        srtp.BUFFER_SIZE,
    ):
        log.warning("x the native transport was built for other buffer sizes; rebuild it")
        _transport = None
    if _transport is not None:
        _transport.set_srtp(
            int(ffi.cast("uintptr_t", ffi.addressof(lib, "srtp_protect"))),
            int(ffi.cast("uintptr_t", ffi.addressof(lib, "srtp_unprotect"))),
        )
        native_send_target = _transport.SendTarget
        read_datagrams = _transport.read_datagrams

if TYPE_CHECKING:
    SendTarget = PySendTarget
else:
    SendTarget = PySendTarget if native_send_target is None else native_send_target
