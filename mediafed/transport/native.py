"""The optional native hot-path steps (``_hotpath``), or their Python reference.

- ``SendTarget``: an endpoint's socket, outbound SRTP session and address, which
  copies, rewrites, protects and sends one packet (:class:`~mediafed.transport.target.PySendTarget`
  when not built);
- ``Forwarder`` and ``fanout``: DownTrack's base holding the fields the fan-out
  reads and writes, and the loop forwarding one packet to a layer's DownTracks;
- ``InStream`` and ``receive_rtp``: Layer's base holding its receive state, and
  Layer.receive for a packet (``None`` when not built);
- ``read_datagrams``: the media socket's read loop (``None`` when not built);
- ``remap_and_scan``: the header-extension pass of the receive path.

Without the extension, or with ``MEDIAFED_PURE_PYTHON=1``, ``SendTarget`` is
:class:`~mediafed.transport.target.PySendTarget`, ``Forwarder`` is
:class:`PyForwarder`, ``InStream`` :class:`PyInStream`, ``fanout``
:func:`py_fanout`, ``remap_and_scan`` the one in ``wire/rtp.py``, and Layer
and the media socket run their Python code: the same behaviour, tested
against the native steps.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pylibsrtp._binding import ffi, lib

from mediafed.transport import srtp
from mediafed.transport.target import PySendTarget
from mediafed.wire import rtp

log = logging.getLogger(__name__)

Fanout = Callable[[list[Any], bytes, int, int, int, int, bool, float], None]
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
RemapAndScan = Callable[[Any, int, bytes, int, int], tuple[int, int]]
ReceiveRtp = Callable[[Any, Any, int, float], None]


class PyForwarder:
    """The forwarding fields of a DownTrack (the C ``Forwarder`` has the same)."""

    __slots__ = (
        "ext_remap",
        "needs_keyframe",
        "octets_sent",
        "packets_sent",
        "payload_type",
        "seq_off",
        "seq_out",
        "ssrc",
        "switching",
        "synced",
        "target",
        "time_out",
        "ts_off",
        "ts_out",
    )

    ext_remap: bytes | None
    needs_keyframe: bool
    octets_sent: int
    packets_sent: int
    payload_type: int
    seq_off: int
    seq_out: int
    ssrc: int
    switching: bool
    synced: bool
    target: Any
    time_out: float
    ts_off: int
    ts_out: int


class PyInStream:
    """The receive fields of a Layer (the C ``InStream`` has the same)."""

    __slots__ = (
        "base_seq",
        "cache",
        "clock_rate",
        "cycles",
        "downtracks",
        "highest_seq",
        "jitter",
        "keyframe_waiters",
        "last_keyframe_at",
        "last_packet_at",
        "last_seq",
        "last_transit",
        "last_ts",
        "level",
        "missing",
        "octets",
        "received",
        "track",
    )

    base_seq: int
    cache: Any
    clock_rate: int
    cycles: int
    downtracks: list[Any]
    highest_seq: int
    jitter: float
    keyframe_waiters: int
    last_keyframe_at: float
    last_packet_at: float
    last_seq: int
    last_transit: float
    last_ts: int
    level: int
    missing: dict[int, list[float]]
    octets: int
    received: int
    track: Any


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


native_send_target: type[Any] | None = None
fanout: Fanout = py_fanout
native_forwarder: type[Any] | None = None
read_datagrams: ReadDatagrams | None = None
receive_rtp: ReceiveRtp | None = None
native_instream: type[Any] | None = None
remap_and_scan: RemapAndScan = rtp.remap_and_scan

if os.environ.get("MEDIAFED_PURE_PYTHON", "") not in ("1", "true", "yes"):
    try:
        from mediafed.transport import _hotpath  # type: ignore[attr-defined]
    except ImportError:
        _hotpath = None
    if _hotpath is not None and (_hotpath.MAX_DATAGRAM, _hotpath.BUFFER_SIZE) != (
        srtp.MAX_DATAGRAM,
        srtp.BUFFER_SIZE,
    ):
        log.warning("x the native hot path was built for other buffer sizes; rebuild it")
        _hotpath = None
    if _hotpath is not None:
        _hotpath.set_srtp(
            int(ffi.cast("uintptr_t", ffi.addressof(lib, "srtp_protect"))),
            int(ffi.cast("uintptr_t", ffi.addressof(lib, "srtp_unprotect"))),
        )
        native_send_target = _hotpath.SendTarget
        fanout = _hotpath.fanout
        native_forwarder = _hotpath.Forwarder
        read_datagrams = _hotpath.read_datagrams
        receive_rtp = _hotpath.receive_rtp
        native_instream = _hotpath.InStream
        remap_and_scan = _hotpath.remap_and_scan

if TYPE_CHECKING:
    SendTarget = PySendTarget
    Forwarder = PyForwarder
    InStream = PyInStream
else:
    SendTarget = PySendTarget if native_send_target is None else native_send_target
    Forwarder = PyForwarder if native_forwarder is None else native_forwarder
    InStream = PyInStream if native_instream is None else native_instream
