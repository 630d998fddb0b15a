"""The room core's native steps (media/_forward.c) against their Python reference.

Fan-out: steady DownTracks forwarded natively send the bytes their Python
forward() would, end in the same state, and every other case runs forward().
VP8 picture ids continue across simulcast layers. The receive step survives
Python that changes the layer under it. Extension scan: the same bytes.
"""

from __future__ import annotations

import gc
import socket
import struct
import subprocess
import sys
import weakref
from collections.abc import Iterator
from typing import Any

import pylibsrtp
import pytest
from hypothesis import given, settings, strategies as st

from mediafed.media import native
from mediafed.transport import native as transport_native
from mediafed.transport.dtls import SrtpKeys
from mediafed.transport.srtp import MAX_DATAGRAM, PacketBuffer, SrtpContext
from mediafed.transport.target import PySendTarget
from mediafed.transport.udp import pack_sockaddr
from mediafed.wire import rtp

RTP = struct.Struct("!BBHII")
KEY = bytes(range(28))
GCM = SrtpKeys(b"SRTP_AEAD_AES_128_GCM", KEY, KEY)


def built() -> None:
    assert native.native_forwarder is not None, (
        "mediafed.media._forward is not built: pip install -e . needs gcc and Python headers"
    )


@pytest.fixture
def sink() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.2", 0))
    sock.settimeout(2)
    yield sock
    sock.close()


@pytest.fixture
def sender() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.2", 0))
    yield sock
    sock.close()


def make_target(cls: type[Any], sock: socket.socket | None, keys: SrtpKeys, dest: Any) -> Any:
    target = cls()
    target.set_socket(sock)
    target.set_srtp(SrtpContext(keys))
    target.set_address(pack_sockaddr(dest) if dest is not None else None)
    return target


def unprotect(datagram: bytes) -> bytes:
    rx = pylibsrtp.Session(
        pylibsrtp.Policy(
            key=KEY,
            ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
            srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
        )
    )
    return rx.unprotect(datagram)


class _Track(native.Forwarder):
    """A Forwarder whose Python forward() (the slow path) records its calls."""

    def __init__(self, target: Any, *, ssrc: int, offsets: tuple[int, int]) -> None:
        self.target = target
        self.ext_remap = None
        self.needs_keyframe = False
        self.synced = True
        self.seq_off, self.ts_off = offsets
        self.seq_out = self.ts_out = 0
        self.ssrc = ssrc
        self.payload_type = 101
        self.vp8 = False
        self.packets_sent = self.octets_sent = 0
        self.time_out = 0.0
        self.calls: list[tuple[object, ...]] = []

    def forward(
        self, packet: bytes, length: int, b1: int, seq: int, ts: int, keyframe: bool, now: float
    ) -> None:
        self.calls.append((packet, length, b1, seq, ts, keyframe, now))


class _NotAForwarder:
    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []

    def forward(self, *args: object) -> None:
        self.calls.append(args)


def test_fanout_forwards_steady_tracks_natively_and_hands_the_rest_to_python(
    sink: socket.socket, sender: socket.socket
) -> None:
    built()
    keys = GCM
    dest = sink.getsockname()
    cls = transport_native.SendTarget

    def target(to: Any = dest) -> Any:
        return make_target(cls, sender, keys, to)

    steady = _Track(target(), ssrc=0x0A0B0C0D, offsets=(65000, 7))
    waiting = _Track(target(), ssrc=2, offsets=(0, 0))
    waiting.needs_keyframe = True
    unsynced = _Track(target(), ssrc=3, offsets=(0, 0))
    unsynced.synced = False
    unbound = _Track(target(None), ssrc=5, offsets=(0, 0))
    plain = _NotAForwarder()
    packet = RTP.pack(0x80, 0x80 | 96, 1000, 0xFFFFFFFE, 0x99) + bytes(range(100))
    args = (packet, len(packet), 0x80 | 96, 1000, 0xFFFFFFFE, False, 12.5)
    tracks = [waiting, steady, unsynced, unbound, plain]
    native.fanout(tracks, *args)
    # Only the steady track sent natively, once, with its rewrite and fresh state.
    datagram = sink.recv(2048)
    with pytest.raises(TimeoutError):
        sink.settimeout(0.2)
        sink.recv(2048)
    seq_out, ts_out = (1000 + 65000) & 0xFFFF, (0xFFFFFFFE + 7) & 0xFFFFFFFF
    sink.settimeout(2)
    expected = bytearray(packet)
    expected[1] = 0x80 | 101
    struct.pack_into("!HII", expected, 2, seq_out, ts_out, 0x0A0B0C0D)
    assert target().send_packet(expected) > 0
    assert datagram == sink.recv(2048)
    assert (steady.seq_out, steady.ts_out, steady.time_out) == (seq_out, ts_out, 12.5)
    assert (steady.packets_sent, steady.octets_sent) == (1, len(packet))
    assert steady.calls == []
    # Every other case ran its Python forward() with the same arguments.
    for other in (waiting, unsynced, plain):
        assert other.calls == [args]
    # Not ready to send (no address yet): skipped, as forward() would.
    assert unbound.calls == [] and unbound.packets_sent == 0
    # A track with an id table is forwarded natively too, ids rewritten.
    remapped = _Track(target(), ssrc=4, offsets=(0, 0))
    remapped.ext_remap = bytes(range(16))
    native.fanout([remapped], *args)
    assert remapped.calls == [] and remapped.packets_sent == 1
    assert sink.recv(2048)


def test_a_fanout_to_many_sends_every_datagram_in_order_across_batches_and_sockets(
    sink: socket.socket, sender: socket.socket
) -> None:
    """The native fan-out sends in batches (sendmmsg): more subscribers than a batch
    holds, targets on two sockets in turn, a Python forward() in the middle and a
    target the kernel refuses: each subscriber's datagram arrives once, in the order
    of the list, and each target counts what it sent or what was refused."""
    built()
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.2", 0))
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    dest = sink.getsockname()
    cls = transport_native.SendTarget
    try:
        tracks: list[Any] = []
        for i in range(150):
            sock = sender if (i // 7) % 2 == 0 else other
            tracks.append(_Track(make_target(cls, sock, GCM, dest), ssrc=1000 + i, offsets=(0, 0)))
        tracks.insert(90, _NotAForwarder())
        # the kernel refuses a datagram to port 0
        refused = _Track(make_target(cls, sender, GCM, ("127.0.0.2", 0)), ssrc=7, offsets=(0, 0))
        tracks.insert(40, refused)
        packet = RTP.pack(0x80, 96, 5, 9, 1) + bytes(200)
        native.fanout(tracks, packet, len(packet), 96, 5, 9, False, 3.0)
        ssrcs = [struct.unpack_from("!I", unprotect(sink.recv(2048)), 8)[0] for _ in range(150)]
        assert ssrcs == list(range(1000, 1150))
        sink.settimeout(0.2)
        with pytest.raises(TimeoutError):
            sink.recv(2048)
        forwarders = [t for t in tracks if isinstance(t, _Track) and t is not refused]
        assert all(t.target.datagrams_out == 1 and t.target.send_errors == 0 for t in forwarders)
        assert (refused.target.datagrams_out, refused.target.send_errors) == (0, 1)
        assert tracks[91].calls == [(packet, len(packet), 96, 5, 9, False, 3.0)]
    finally:
        other.close()


def test_fanout_and_python_fanout_leave_the_same_state() -> None:
    built()
    packet = RTP.pack(0x80, 96, 7, 9, 1) + bytes(30)
    for fan in (native.fanout, native.py_fanout):
        recorder = _NotAForwarder()
        fan([recorder, recorder], packet, len(packet), 96, 7, 9, True, 1.0)
        assert recorder.calls == [(packet, len(packet), 96, 7, 9, True, 1.0)] * 2


def test_fanout_refuses_bad_arguments_clearly(sink: socket.socket) -> None:
    built()
    keys = GCM
    packet = RTP.pack(0x80, 96, 1, 2, 3) + bytes(20)
    track = _Track(
        make_target(transport_native.SendTarget, sink, keys, sink.getsockname()),
        ssrc=1,
        offsets=(0, 0),
    )
    with pytest.raises(TypeError, match="list"):
        native.fanout((track,), packet, len(packet), 96, 1, 2, False, 0.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="length"):
        native.fanout([track], packet[:8], 8, 96, 1, 2, False, 0.0)
    with pytest.raises(ValueError, match="length"):
        native.fanout([track], bytes(4000), 4000, 96, 1, 2, False, 0.0)
    with pytest.raises(TypeError, match="bytes"):
        native.fanout([track], bytearray(packet), len(packet), 96, 1, 2, False, 0.0)
    # a target of another kind (the Python reference) is the Python forward()'s
    track.target = PySendTarget()
    native.fanout([track], packet, len(packet), 96, 1, 2, False, 0.0)
    assert track.calls == [(packet, len(packet), 96, 1, 2, False, 0.0)]
    track.calls.clear()
    track.target = make_target(transport_native.SendTarget, sink, keys, sink.getsockname())
    # A bad id table is the Python forward()'s to report.
    track.ext_remap = b"short"  # type: ignore[assignment]
    native.fanout([track], packet, len(packet), 96, 1, 2, False, 0.0)
    assert track.calls and track.packets_sent == 0
    # An exception in a Python forward() surfaces to the caller.
    broken = _NotAForwarder()
    broken.forward = None  # type: ignore[assignment,method-assign]
    with pytest.raises(TypeError):
        native.fanout([broken], packet, len(packet), 96, 1, 2, False, 0.0)


def test_forwarder_cycles_are_collected() -> None:
    built()
    collected: list[bool] = []

    class Holder:
        track: object = None

    holder = Holder()
    track = _Track(transport_native.SendTarget(), ssrc=1, offsets=(0, 0))
    track.ext_remap = holder  # type: ignore[assignment]
    holder.track = track  # a cycle through the C type's reference
    weakref.finalize(holder, collected.append, True)
    del holder, track
    gc.collect()
    assert collected == [True]


def test_forwarder_fields_keep_their_types() -> None:
    built()
    track = native.Forwarder()
    track.seq_out = 0xFFFF
    track.ts_out = 0xFFFFFFFF
    track.packets_sent = 2**40
    track.needs_keyframe = True
    assert (track.seq_out, track.ts_out, track.packets_sent) == (0xFFFF, 0xFFFFFFFF, 2**40)
    assert track.needs_keyframe is True
    assert track.ext_remap is None
    with pytest.raises(AttributeError):
        track.target  # noqa: B018  (unset until a DownTrack gives it one)
    with pytest.raises(TypeError):
        track.synced = 1  # type: ignore[assignment]


# -- receive path ------------------------------------------------------------------

extension_blocks = st.lists(
    st.tuples(st.integers(0, 15), st.binary(min_size=1, max_size=16)), max_size=6
)


@settings(max_examples=300, deadline=None)
@given(
    blocks=extension_blocks,
    padding=st.integers(0, 3),
    cc=st.integers(0, 2),
    table=st.lists(st.integers(0, 15), min_size=16, max_size=16).map(bytes),
    ids=st.tuples(st.integers(0, 15), st.integers(0, 15)),
    truncate=st.integers(0, 8),
    profile=st.sampled_from([0xBEDE, 0x1000, 0xBEDF]),
)
def test_native_extension_scan_matches_the_python_one(
    blocks: list[tuple[int, bytes]],
    padding: int,
    cc: int,
    table: bytes,
    ids: tuple[int, int],
    truncate: int,
    profile: int,
) -> None:
    built()
    body = bytearray()
    for ext_id, value in blocks:
        body.append((ext_id << 4) | (len(value) - 1))
        body += value
        body += bytes(padding)
    body += bytes(-len(body) % 4)
    packet = bytearray(RTP.pack(0x90 | cc, 96, 1, 2, 3) + bytes(4 * cc))
    packet += struct.pack("!HH", profile, len(body) // 4) + body + bytes(10)
    length = max(1, len(packet) - 10 - truncate)
    python_buf, native_buf = bytearray(packet), bytearray(packet)
    expected = rtp.remap_and_scan(python_buf, length, table, *ids)
    assert native.remap_and_scan(native_buf, length, table, *ids) == expected
    assert native_buf == python_buf


def test_native_extension_scan_refuses_bad_arguments_clearly() -> None:
    built()
    packet = bytearray(RTP.pack(0x90, 96, 1, 2, 3) + b"\xbe\xde\x00\x01\x10\xff\x00\x00")
    with pytest.raises(ValueError, match="table"):
        native.remap_and_scan(packet, len(packet), bytes(15), 1, 2)
    with pytest.raises(ValueError, match="length"):
        native.remap_and_scan(packet, len(packet) + 1, bytes(16), 1, 2)
    with pytest.raises((TypeError, BufferError)):
        native.remap_and_scan(bytes(packet), len(packet), bytes(16), 1, 2)  # read-only


def test_receive_step_refuses_bad_arguments_clearly() -> None:
    built()
    assert native.receive_rtp is not None
    buf = PacketBuffer()
    buf.view[:12] = RTP.pack(0x80, 96, 1, 2, 3)
    with pytest.raises(TypeError, match="InStream"):
        native.receive_rtp(object(), buf, 12, 0.0)
    stream = native.InStream()
    with pytest.raises(TypeError, match="cache"):
        native.receive_rtp(stream, buf, 12, 0.0)  # fields never set
    stream.downtracks = []
    stream.cache = None
    stream.missing = {}
    stream.base_seq = -1
    with pytest.raises(ValueError, match="length"):
        native.receive_rtp(stream, buf, 8, 0.0)
    with pytest.raises(ValueError, match="length"):
        native.receive_rtp(stream, buf, MAX_DATAGRAM + 1, 0.0)


# Python that runs in the middle of a packet and changes the layer under the receive
# step. Run in a child process: a crash (the review reproduced exit 139) must show as a
# failed test, not end the test run. The child prints what the receive step raised.
MID_PACKET = """
import struct, sys
from mediafed.media import native
from mediafed.transport.srtp import PacketBuffer

scenario = sys.argv[1]

class Cache:
    def put(self, seq, packet, now):
        if scenario == "cache_drops_downtracks":
            layer.downtracks = None
        return True

class Layer(native.InStream):
    def _note_missing(self, first, count, now):
        if scenario == "gap_drops_cache":
            self.cache = None
        if scenario == "gap_replaces_downtracks":
            self.downtracks = 7
    def _is_keyframe(self, packet, length):
        if scenario == "keyframe_check_drops_downtracks":
            self.downtracks = None
        return True

class Down:
    def __init__(self, layer):
        self.layer = layer
        self.calls = 0
    def forward(self, packet, length, b1, seq, ts, keyframe, now):
        self.calls += 1
        if scenario == "forward_empties_the_list":
            self.layer.downtracks.clear()
        if scenario == "forward_rebinds_the_list":
            self.layer.downtracks = []

class Track:
    nack_enabled = True

layer = Layer()
layer.track = Track()
layer.cache = Cache()
layer.missing = {}
layer.base_seq = -1
layer.clock_rate = 90000
layer.keyframe_waiters = 1
downs = [Down(layer) for _ in range(3)]
layer.downtracks = list(downs)
buf = PacketBuffer()
outcomes = []
for seq in (1, 5, 6):  # the jump from 1 to 5 is a gap: _note_missing runs
    buf.view[:112] = struct.pack("!BBHII", 0x80, 96, seq, seq * 3000, 9) + bytes(100)
    try:
        if native.receive_rtp is not None:
            native.receive_rtp(layer, buf, 112, 1.0)
        else:
            raise SystemExit("native receive step not built")
        outcomes.append("ok")
    except Exception as exc:
        outcomes.append(type(exc).__name__)
print(scenario, outcomes, [d.calls for d in downs])
"""


@pytest.mark.parametrize(
    ("scenario", "expected"),
    [
        ("gap_drops_cache", "['ok', 'TypeError', 'TypeError']"),
        ("gap_replaces_downtracks", "['ok', 'TypeError', 'TypeError']"),
        ("cache_drops_downtracks", "['TypeError', 'TypeError', 'TypeError']"),
        ("keyframe_check_drops_downtracks", "['TypeError', 'TypeError', 'TypeError']"),
        ("forward_empties_the_list", "['ok', 'ok', 'ok'] [1, 0, 0]"),
        ("forward_rebinds_the_list", "['ok', 'ok', 'ok'] [1, 1, 1]"),
    ],
)
def test_python_changing_the_layer_mid_packet_is_an_error_not_a_crash(
    scenario: str, expected: str
) -> None:
    built()
    run = subprocess.run(
        [sys.executable, "-c", MID_PACKET, scenario], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, f"the receive step crashed ({run.returncode}): {run.stderr}"
    assert run.stdout.startswith(f"{scenario} {expected}"), run.stdout


def test_instream_cycles_are_collected() -> None:
    built()
    collected: list[bool] = []

    class Track:
        layers: list[object]

    track = Track()
    stream = native.InStream()
    stream.track = track
    track.layers = [stream]  # Layer -> track -> layers -> Layer, as in a room
    weakref.finalize(track, collected.append, True)
    del track, stream
    gc.collect()
    assert collected == [True]
