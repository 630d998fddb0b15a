"""The optional native send step (``_fastsend``), or ``None`` when it is not built.

``MEDIAFED_PURE_PYTHON=1`` turns it off (the Python path is the reference).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from pylibsrtp._binding import ffi, lib

log = logging.getLogger(__name__)

SendRtp = Callable[[int, bytes, int, int, int, int, int, int, bytes], int]

send_rtp: SendRtp | None = None

if os.environ.get("MEDIAFED_PURE_PYTHON", "") not in ("1", "true", "yes"):
    try:
        from mediafed.transport import _fastsend  # type: ignore[attr-defined]
    except ImportError:
        _fastsend = None
    if _fastsend is not None:
        _fastsend.set_protect(int(ffi.cast("uintptr_t", ffi.addressof(lib, "srtp_protect"))))
        send_rtp = _fastsend.send_rtp
