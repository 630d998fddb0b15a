"""A subscriber moved between VP8 simulcast layers sees one sequence of picture ids.

Each layer numbers its pictures on its own (RFC 7741 §4.2 picture id, TL0PICIDX,
KEYIDX); libwebrtc drops a frame whose picture id looks older than one it decoded,
so a switch to a layer whose numbers happen to be lower froze the picture until
the next keyframe it asked for (seen as 3 s freezes at call start). Both
forwarding paths, native and Python, must continue the numbers.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import struct
from collections.abc import Iterator

import pylibsrtp
import pytest

from mediafed.media import LayerInfo, RoomManager, TrackKind
from mediafed.transport.dtls import SrtpKeys
from mediafed.transport.srtp import SrtpContext
from mediafed.wire import payload, rtp
from tests.support.aiortc_client import AiortcParticipant
from tests.support.media import native_paths_built, use_python_paths

from .test_allocation import SIMULCAST_OFFER, SSRCS
from .test_downtrack import KEY, feed

# Picture ids far apart per layer, the way independent encoders leave them.
PID_BASE = {"q": 30000, "h": 12000, "f": 5}
TL0_BASE = {"q": 200, "h": 7, "f": 90}
KEYIDX_BASE = {"q": 3, "h": 17, "f": 30}


def vp8(rid: str, index: int, keyframe: bool) -> bytes:
    """A VP8 packet with a 15-bit picture id, TL0PICIDX and KEYIDX (every frame one packet)."""
    header = rtp.build_header(
        100, 1000 + index, index * 3000, SSRCS[rid], extensions=[(1, b"0"), (2, rid.encode())]
    )
    pid = (PID_BASE[rid] + index) & 0x7FFF
    descriptor = bytes(
        [
            0x90,  # X, S, partition 0
            0xF0,  # I, L, T, K
            0x80 | (pid >> 8),
            pid & 0xFF,
            (TL0_BASE[rid] + index) & 0xFF,
            (KEYIDX_BASE[rid] + index // 10) & 0x1F,
        ]
    )
    return bytes(header) + descriptor + (b"\x00" if keyframe else b"\x01") + bytes(40)


@pytest.fixture(params=["native", "python"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "python":
        use_python_paths(monkeypatch)
    else:
        native_paths_built()
    yield str(request.param)


async def test_picture_ids_continue_across_layer_switches(path: str, rooms: RoomManager) -> None:
    room = rooms.get_or_create("vp8")
    publisher = await room.join("pub", listener=AiortcParticipant(room, "x"))
    publisher.announce_track(
        "cam",
        TrackKind.VIDEO,
        layers=[
            LayerInfo(0, 320, 180, 150_000, "q"),
            LayerInfo(1, 640, 360, 500_000, "h"),
            LayerInfo(2, 1280, 720, 1_500_000, "f"),
        ],
    )
    await publisher.answer_publisher_offer(SIMULCAST_OFFER)
    subscriber = await room.join("sub", listener=AiortcParticipant(room, "y"))
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.2", 0))
    sink.setblocking(False)
    endpoint = subscriber.subscriber.endpoint
    endpoint.srtp = SrtpContext(SrtpKeys(b"SRTP_AES128_CM_SHA1_80", KEY, KEY))
    endpoint.mux.bind_address(endpoint, sink.getsockname())
    [downtrack] = subscriber.downtracks.values()
    rx = pylibsrtp.Session(pylibsrtp.Policy(key=KEY, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND))
    out: list[tuple[int, int, int, int]] = []  # (seq, pid, tl0, keyidx)

    async def read() -> None:
        await asyncio.sleep(0.05)
        while True:
            try:
                data = sink.recv(2048)
            except BlockingIOError:
                return
            if 192 <= data[1] <= 223:
                continue
            plain = rx.unprotect(data)
            fields = payload.vp8_fields(plain, len(plain))
            out.append(
                (struct.unpack_from("!H", plain, 2)[0], fields.pid, fields.tl0, fields.keyidx)
            )

    def send(index: int, keyframe_on: str = "") -> None:
        for rid in ("q", "h", "f"):
            feed(publisher, vp8(rid, index, rid == keyframe_on), rooms.clock())

    try:
        send(0)
        downtrack.attach(rooms.clock())
        assert downtrack.layer is not None and downtrack.layer.rid == "f"
        for index in range(1, 5):
            send(index, keyframe_on="f" if index == 1 else "")
        await read()
        assert len(out) == 4
        # the first layer keeps the publisher's numbers
        assert [pid for _, pid, _, _ in out] == [PID_BASE["f"] + i for i in range(1, 5)]
        # down to q (its ids are far above) on q's keyframe, then back up to h (below)
        subscriber.update_track_settings(downtrack.track.sid, quality=0)
        for index in range(5, 9):
            send(index, keyframe_on="q" if index == 6 else "")
        subscriber.update_track_settings(downtrack.track.sid, quality=1)
        for index in range(9, 13):
            send(index, keyframe_on="h" if index == 10 else "")
        await read()
    finally:
        sink.close()
    seqs = [seq for seq, _, _, _ in out]
    assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(len(out))], out
    pids = [pid for _, pid, _, _ in out]
    assert pids == [(pids[0] + i) & 0x7FFF for i in range(len(out))], out
    tl0s = [tl0 for _, _, tl0, _ in out]
    assert tl0s == [(tl0s[0] + i) & 0xFF for i in range(len(out))], out
    keyidx = [k for _, _, _, k in out]
    assert all((b - a) & 0x1F in (0, 1) for a, b in itertools.pairwise(keyidx)), out
    assert downtrack.layer is not None and downtrack.layer.rid == "h"
