"""VP9 SVC per subscriber (media/downtrack.py): layers above the subscriber's are
dropped and numbered around, the end of its top layer ends the picture, down at the
next picture, up at the next key picture (asked for); temporal layers follow the
frame rate the subscriber asks for, up again at a switching-up point."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from mediafed.media.downtrack import DownTrack
from mediafed.media.types import TrackKind
from mediafed.wire import rtp


class Target:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send_packet(self, packet: bytearray) -> int:
        self.sent.append(bytes(packet))
        return len(packet)


def _downtrack() -> tuple[DownTrack, Target, list[float]]:
    asked: list[float] = []
    track: Any = SimpleNamespace(
        mime_lower="video/vp9",
        clock_rate=90000,
        kind=TrackKind.VIDEO,
        request_keyframe=lambda now, **_: asked.append(now),
    )
    target = Target()
    peer: Any = SimpleNamespace(endpoint=SimpleNamespace(target=target))
    downtrack = DownTrack(track, peer, payload_type=98, rtx_payload_type=None)
    downtrack.needs_keyframe = False  # (the keyframe wait is tested elsewhere)
    return downtrack, target, asked


def _picture(
    pid: int, seq: int, *, key: bool, temporal: int = 0, up: bool = False
) -> list[tuple[bytes, int]]:
    """One picture of three spatial layers, one packet each (the last one marked), in
    temporal layer ``temporal`` (``up``: a switching-up point)."""
    packets = []
    for spatial in range(3):
        first = 0xBC | (0 if key and spatial == 0 else 0x40)  # I L F B E, P unless key
        indices = temporal << 5 | (0x10 if up else 0) | spatial << 1
        descriptor = bytes([first, 0x80 | (pid >> 8), pid & 0xFF, indices])
        header = bytearray(rtp.build_header(98, seq + spatial, pid * 3000, 7))
        if spatial == 2:
            header[1] |= 0x80
        packets.append((bytes(header) + descriptor + bytes(20), seq + spatial))
    return packets


def _send(downtrack: DownTrack, packets: list[tuple[bytes, int]], now: float) -> None:
    for packet, seq in packets:
        ts = int.from_bytes(packet[4:8], "big")
        downtrack.forward(packet, len(packet), packet[1], seq, ts, False, now)


def _layers(sent: list[bytes]) -> list[tuple[int, int, bool]]:
    """(output sequence number, spatial id, marker) of each packet sent."""
    return [(int.from_bytes(p[2:4], "big"), (p[15] >> 1) & 7, bool(p[1] & 0x80)) for p in sent]


def test_a_low_subscriber_gets_the_base_layer_in_sequence_and_marked() -> None:
    downtrack, target, asked = _downtrack()
    _send(downtrack, _picture(10, 100, key=True), 1.0)
    assert [s for _, s, _ in _layers(target.sent)] == [0, 1, 2]  # HIGH: everything
    downtrack.max_quality = 0
    downtrack._select_spatial(1.0)
    assert not asked  # going down needs no keyframe
    target.sent.clear()
    _send(downtrack, _picture(11, 103, key=False), 1.1)
    _send(downtrack, _picture(12, 106, key=False), 1.2)
    layers = _layers(target.sent)
    assert [(s, m) for _, s, m in layers] == [(0, True), (0, True)]
    first, second = (seq for seq, _, _ in layers)
    assert second == (first + 1) & 0xFFFF  # the dropped layers leave no gap


def test_going_up_waits_for_a_key_picture_it_asks_for() -> None:
    downtrack, target, asked = _downtrack()
    downtrack.max_quality = 1
    downtrack._select_spatial(1.0)
    _send(downtrack, _picture(10, 100, key=True), 1.0)
    assert [(s, m) for _, s, m in _layers(target.sent)] == [(0, False), (1, True)]
    downtrack.max_quality = 2
    downtrack._select_spatial(1.1)
    assert asked == [1.1]
    target.sent.clear()
    _send(downtrack, _picture(11, 103, key=False), 1.2)  # still MEDIUM
    assert [s for _, s, _ in _layers(target.sent)] == [0, 1]
    target.sent.clear()
    _send(downtrack, _picture(12, 106, key=True), 1.3)  # the key picture: HIGH from here
    assert [(s, m) for _, s, m in _layers(target.sent)] == [(0, False), (1, False), (2, True)]


L3T3 = [0, 2, 1, 2]
"""The temporal layer of each picture in turn (L3T3: a quarter, a quarter, a half)."""


def _temporal(sent: list[bytes]) -> list[int]:
    """The temporal layer id of each picture sent (its base spatial layer's packet)."""
    return [p[15] >> 5 for p in sent if (p[15] >> 1) & 7 == 0]


def test_a_lower_frame_rate_drops_temporal_layers_and_the_full_one_comes_back() -> None:
    downtrack, target, _ = _downtrack()
    seq, pid = 100, 10

    def second_of_pictures(start: float, **up: bool) -> None:
        """Eight pictures in a second (8 fps at TID 2, 4 at TID 1, 2 at TID 0)."""
        nonlocal seq, pid
        for index in range(8):
            temporal = L3T3[index % 4]
            picture = _picture(
                pid, seq, key=False, temporal=temporal, up=up.get(f"tid{temporal}", False)
            )
            _send(downtrack, picture, start + index / 8)
            seq, pid = seq + 3, pid + 1

    _send(downtrack, _picture(pid, seq, key=True), 0.9)
    seq, pid = seq + 3, pid + 1
    downtrack._select_temporal(1.0)  # the first window starts
    second_of_pictures(1.0)
    assert _temporal(target.sent)[1:] == [0, 2, 1, 2, 0, 2, 1, 2]  # all of it so far

    # the subscriber asks for 2 fps: only the base temporal layer, numbered on
    downtrack.max_fps = 2
    downtrack._select_temporal(2.0)
    assert downtrack.temporal_fps[:3] == [2.0, 4.0, 8.0]
    assert downtrack.temporal_target == 0
    target.sent.clear()
    second_of_pictures(2.0)
    assert _temporal(target.sent) == [0, 0]
    numbers = [int.from_bytes(p[2:4], "big") for p in target.sent]
    assert numbers == list(range(numbers[0], numbers[0] + 6))  # 2 pictures x 3 layers

    # 4 fps: up to TID 1, but only at a switching-up point of it
    downtrack.max_fps = 4
    downtrack._select_temporal(3.0)
    assert downtrack.temporal_target == 1
    target.sent.clear()
    second_of_pictures(3.0)  # no U bits: no way up
    assert _temporal(target.sent) == [0, 0]
    target.sent.clear()
    second_of_pictures(4.0, tid1=True)
    assert _temporal(target.sent) == [0, 1, 0, 1]
    assert downtrack.temporal_out == 1

    # no limit: every layer again, from TID 2's next switching-up point
    downtrack.max_fps = 0
    downtrack._select_temporal(5.0)
    target.sent.clear()
    second_of_pictures(5.0, tid2=True)
    assert _temporal(target.sent) == [0, 2, 1, 2, 0, 2, 1, 2]
