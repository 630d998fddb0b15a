"""VP9 SVC per subscriber (media/downtrack.py): layers above the subscriber's are
dropped and numbered around, the end of its top layer ends the picture, down at the
next picture, up at the next key picture (asked for)."""

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


def _picture(pid: int, seq: int, *, key: bool) -> list[tuple[bytes, int]]:
    """One picture of three spatial layers, one packet each (the last one marked)."""
    packets = []
    for spatial in range(3):
        first = 0xBC | (0 if key and spatial == 0 else 0x40)  # I L F B E, P unless key
        descriptor = bytes([first, 0x80 | (pid >> 8), pid & 0xFF, spatial << 1])
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
