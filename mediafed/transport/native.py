"""The optional native hot-path steps (``_hotpath``), or their Python reference.

- ``send_rtp``: copy, rewrite, protect and send one packet (``None`` when not built);
- ``Forwarder`` and ``fanout``: DownTrack's base holding the fields the fan-out
  reads and writes, and the loop forwarding one packet to a layer's DownTracks;
- ``read_datagrams``: the media socket's read loop (``None`` when not built);
- ``remap_and_scan``: the header-extension pass of the receive path.

Without the extension, or with ``MEDIAFED_PURE_PYTHON=1``, ``Forwarder`` is
:class:`PyForwarder`, ``fanout`` :func:`py_fanout`, ``remap_and_scan`` the one
in ``wire/rtp.py``, and the media socket reads in Python: the same behaviour,
tested against the native steps.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pylibsrtp._binding import ffi, lib

from mediafed.wire import rtp

log = logging.getLogger(__name__)

SendRtp = Callable[[int, bytes, int, int, int, int, int, int, bytes], int]


Fanout = Callable[[list[Any], bytes, int, int, int, int, bool, float], None]
ReadDatagrams = Callable[[int, Any, memoryview, dict[bytes, Any], Callable[..., None], float], int]
RemapAndScan = Callable[[Any, int, bytes, int, int], tuple[int, int]]


class PyForwarder:
    """The forwarding fields of a DownTrack (the C ``Forwarder`` has the same)."""

    __slots__ = (
        "endpoint",
        "ext_remap",
        "needs_keyframe",
        "octets_sent",
        "packets_sent",
        "payload_type",
        "seq_off",
        "seq_out",
        "ssrc",
        "synced",
        "time_out",
        "ts_off",
        "ts_out",
    )

    endpoint: Any
    ext_remap: bytes | None
    needs_keyframe: bool
    octets_sent: int
    packets_sent: int
    payload_type: int
    seq_off: int
    seq_out: int
    ssrc: int
    synced: bool
    time_out: float
    ts_off: int
    ts_out: int


def py_fanout(
    downtracks: list[Any],
    packet: bytes,
    length: int,
    b1: int,
    seq: int,
    ts: int,
    keyframe: bool,
    now: float,
) -> None:
    """The fan-out in Python: every DownTrack runs its own ``forward``."""
    for downtrack in downtracks:
        downtrack.forward(packet, length, b1, seq, ts, keyframe, now)


send_rtp: SendRtp | None = None
fanout: Fanout = py_fanout
native_forwarder: type[Any] | None = None
read_datagrams: ReadDatagrams | None = None
remap_and_scan: RemapAndScan = rtp.remap_and_scan

if os.environ.get("MEDIAFED_PURE_PYTHON", "") not in ("1", "true", "yes"):
    try:
        from mediafed.transport import _hotpath  # type: ignore[attr-defined]
    except ImportError:
        _hotpath = None
    if _hotpath is not None:
        _hotpath.set_srtp(
            int(ffi.cast("uintptr_t", ffi.addressof(lib, "srtp_protect"))),
            int(ffi.cast("uintptr_t", ffi.addressof(lib, "srtp_unprotect"))),
        )
        send_rtp = _hotpath.send_rtp
        fanout = _hotpath.fanout
        native_forwarder = _hotpath.Forwarder
        read_datagrams = _hotpath.read_datagrams
        remap_and_scan = _hotpath.remap_and_scan

if TYPE_CHECKING:
    Forwarder = PyForwarder
else:
    Forwarder = PyForwarder if native_forwarder is None else native_forwarder
