"""The room core's optional native steps (``_forward``), or their Python reference.

- ``PeerBase``: MediaPeer's base; its ``on_rtp`` (the endpoint handler the read
  loop calls) takes a packet of a known stream to its layer, anything else to
  ``MediaPeer._on_other_rtp``;
- ``InStream`` and ``receive_rtp``: Layer's base holding its receive state, and
  Layer.receive for a packet (``None`` when not built);
- ``Forwarder`` and ``fanout``: DownTrack's base holding the fields the fan-out
  reads and writes, and the loop forwarding one packet to a layer's DownTracks;
- ``remap_and_scan``: the header-extension pass of the receive path.

The native module is built beside the transport's (``media/_forward.c`` imports
its C API to send) and is used only when that one is. Without them, or with
``MEDIAFED_PURE_PYTHON=1``, the classes here and Layer's and DownTrack's Python
methods run: the same behaviour, tested against the native steps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mediafed.transport import native as transport_native
from mediafed.wire import rtp

if TYPE_CHECKING:
    from mediafed.transport.endpoint import Endpoint
    from mediafed.transport.srtp import PacketBuffer

Fanout = Callable[[list[Any], bytes, int, int, int, int, bool, float], None]
RemapAndScan = Callable[[Any, int, bytes, int, int], tuple[int, int]]
ReceiveRtp = Callable[[Any, Any, int, float], None]


class PyPeerBase:
    """A publishing peer's stream table and its ``on_rtp`` (the C ``PeerBase`` has
    the same)."""

    __slots__ = ("layers_by_ssrc", "twcc", "twcc_id")

    layers_by_ssrc: dict[int, Any]
    twcc: Any
    twcc_id: int

    def on_rtp(self, endpoint: Endpoint, buf: PacketBuffer, length: int, now: float) -> None:
        """EndpointHandler.on_rtp: a packet of a known stream goes to its layer."""
        view = buf.view
        layer = self.layers_by_ssrc.get(rtp.U32.unpack_from(view, 8)[0]) if length >= 12 else None
        if layer is None:
            self._on_other_rtp(endpoint, buf, length, now)
            return
        track = layer.track
        twcc_seq, level = remap_and_scan(
            view, length, track.ext_table, self.twcc_id, track.level_id
        )
        if twcc_seq >= 0 and self.twcc is not None:
            self.twcc.record(twcc_seq, int(now * 1_000_000))
        if level >= 0:
            layer.level = level
        if track.muted:
            return
        if receive_rtp is not None:
            receive_rtp(layer, buf, length, now)
        else:
            layer.receive(buf, length, now)

    def _on_other_rtp(self, endpoint: Endpoint, buf: PacketBuffer, length: int, now: float) -> None:
        raise NotImplementedError


class PyForwarder:
    """The forwarding fields of a DownTrack (the C ``Forwarder`` has the same)."""

    __slots__ = (
        "ext_remap",
        "keyidx_off",
        "keyidx_out",
        "needs_keyframe",
        "octets_sent",
        "packets_sent",
        "pad_floor",
        "payload_type",
        "pid_off",
        "pid_out",
        "seq_off",
        "seq_out",
        "ssrc",
        "svc",
        "switching",
        "synced",
        "target",
        "time_out",
        "tl0_off",
        "tl0_out",
        "ts_off",
        "ts_out",
        "vp8",
    )

    ext_remap: bytes | None
    keyidx_off: int
    keyidx_out: int
    needs_keyframe: bool
    octets_sent: int
    packets_sent: int
    pad_floor: int
    payload_type: int
    pid_off: int
    pid_out: int
    seq_off: int
    seq_out: int
    ssrc: int
    svc: bool
    switching: bool
    synced: bool
    target: Any
    time_out: float
    tl0_off: int
    tl0_out: int
    ts_off: int
    ts_out: int
    vp8: bool


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


fanout: Fanout = py_fanout
native_forwarder: type[Any] | None = None
native_instream: type[Any] | None = None
native_peer: type[Any] | None = None
receive_rtp: ReceiveRtp | None = None
remap_and_scan: RemapAndScan = rtp.remap_and_scan

if transport_native.native_send_target is not None:
    # Only with the native transport: the fan-out sends through its C API.
    try:
        from mediafed.media import _forward  # type: ignore[attr-defined]
    except ImportError:
        _forward = None
    if _forward is not None:
        fanout = _forward.fanout
        native_forwarder = _forward.Forwarder
        native_instream = _forward.InStream
        native_peer = _forward.PeerBase
        receive_rtp = _forward.receive_rtp
        remap_and_scan = _forward.remap_and_scan

if TYPE_CHECKING:
    Forwarder = PyForwarder
    InStream = PyInStream
    PeerBase = PyPeerBase
else:
    Forwarder = PyForwarder if native_forwarder is None else native_forwarder
    InStream = PyInStream if native_instream is None else native_instream
    PeerBase = PyPeerBase if native_peer is None else native_peer
