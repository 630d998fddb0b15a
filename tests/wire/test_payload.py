"""Payload inspection (mediafed.wire.payload) on real encoder output and RFC layouts."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from mediafed.errors import WireError
from mediafed.wire import rtp
from mediafed.wire.payload import (
    PayloadError,
    Vp8Descriptor,
    av1_is_keyframe,
    h264_is_keyframe,
    is_keyframe,
    opus_toc,
    vp8_descriptor,
    vp8_is_keyframe,
    vp8_rewrite_picture_id,
    vp9_is_keyframe,
    vp9_layer,
)

GOLDEN = Path(__file__).parent / "golden"


def payloads(name: str) -> list[bytes]:
    """Golden RTP payloads of one frame, written by aiortc's packetizers from av encodes.

    File format: each payload as a 2-byte big-endian length followed by its bytes.
    """
    data = (GOLDEN / name).read_bytes()
    out = []
    pos = 0
    while pos < len(data):
        (size,) = struct.unpack_from("!H", data, pos)
        out.append(data[pos + 2 : pos + 2 + size])
        pos += 2 + size
    assert pos == len(data)
    return out


# A payload put at an offset inside a larger buffer, as the hot path sees it.
def framed(payload: bytes) -> tuple[bytes, int, int]:
    buf = b"\xaa" * 12 + payload + b"\xbb" * 16  # RTP header before, SRTP tag after
    return buf, 12, 12 + len(payload)


# ----------------------------------------------------------------- VP8


def test_vp8_real_keyframe_and_delta_frame() -> None:
    key = payloads("vp8_keyframe.payloads")
    delta = payloads("vp8_delta.payloads")
    assert vp8_is_keyframe(*framed(key[0]))
    assert is_keyframe("video/vp8", *framed(key[0]))
    buf, offset, end = framed(key[0])
    assert vp8_is_keyframe(memoryview(buf), offset, end)
    assert vp8_is_keyframe(bytearray(buf), offset, end)
    assert not any(vp8_is_keyframe(*framed(p)) for p in key[1:])
    assert not any(vp8_is_keyframe(*framed(p)) for p in delta)
    first = vp8_descriptor(*framed(key[0]))
    assert first.is_keyframe and first.start_of_partition and first.partition_index == 0
    assert first.picture_id_bits == 15 and first.header_size == 4
    # aiortc numbers pictures consecutively (15 bits): the delta frame is two pictures later.
    later = vp8_descriptor(*framed(delta[0]))
    assert later.picture_id == ((first.picture_id or 0) + 2) & 0x7FFF
    assert not later.is_keyframe
    continuation = vp8_descriptor(*framed(delta[1]))
    assert not continuation.start_of_partition and continuation.picture_id == later.picture_id


def test_vp8_descriptor_all_fields_rfc7741() -> None:
    # X=1 S=1 PID=0 | I L T K | M=1 picture id 0x1234 | TL0PICIDX 9 | TID=2 Y=1 KEYIDX=5
    payload = bytes([0x90, 0xF0, 0x80 | 0x12, 0x34, 9, (2 << 6) | 0x20 | 5, 0x00, 0x00])
    desc = vp8_descriptor(*framed(payload))
    assert desc == Vp8Descriptor(
        picture_id=0x1234,
        picture_id_bits=15,
        tl0picidx=9,
        tid=2,
        keyidx=5,
        start_of_partition=True,
        partition_index=0,
        header_size=6,
        is_keyframe=True,
    )
    assert vp8_is_keyframe(*framed(payload))
    # 7-bit picture id, no extensions beyond I; P bit set: an interframe.
    short = bytes([0x90, 0x80, 0x55, 0x01])
    desc = vp8_descriptor(*framed(short))
    assert (desc.picture_id, desc.picture_id_bits, desc.header_size) == (0x55, 7, 3)
    assert not desc.is_keyframe and not vp8_is_keyframe(*framed(short))
    # no X byte at all, partition 1: not a keyframe start
    plain = bytes([0x11, 0x00])
    desc = vp8_descriptor(*framed(plain))
    assert desc.picture_id is None and desc.partition_index == 1 and not desc.is_keyframe


def test_vp8_rewrite_picture_id_in_place() -> None:
    key = payloads("vp8_keyframe.payloads")[0]
    buf = bytearray(b"\x00" * 12 + key)
    vp8_rewrite_picture_id(buf, 12, 0x7ABC, None)
    desc = vp8_descriptor(buf, 12, len(buf))
    assert desc.picture_id == 0x7ABC and desc.is_keyframe
    assert bytes(buf[12 + desc.header_size :]) == key[desc.header_size :]  # payload intact
    with_tl0 = bytearray([0x90, 0xC0, 0x80, 0x01, 7, 0x00])
    vp8_rewrite_picture_id(with_tl0, 0, 0x8001, 200)  # wraps to 15 bits
    desc = vp8_descriptor(with_tl0, 0, len(with_tl0))
    assert (desc.picture_id, desc.tl0picidx) == (0x0001, 200)
    seven_bit = bytearray([0x90, 0x80, 0x05, 0x00])
    vp8_rewrite_picture_id(seven_bit, 0, 999, 1)
    assert seven_bit == bytearray([0x90, 0x80, 0x05, 0x00])


@given(
    picture_id=st.integers(0, 0x7FFF),
    tl0=st.integers(0, 255),
    body=st.binary(min_size=1, max_size=30),
)
def test_rewrite_keeps_everything_else(picture_id: int, tl0: int, body: bytes) -> None:
    original = bytes([0x90, 0xE0, 0x80, 0x00, 3, 0x40]) + body
    buf = bytearray(original)
    vp8_rewrite_picture_id(buf, 0, picture_id, tl0)
    before = vp8_descriptor(original, 0, len(original))
    after = vp8_descriptor(buf, 0, len(buf))
    assert (after.picture_id, after.tl0picidx) == (picture_id, tl0)
    assert (after.tid, after.header_size, after.is_keyframe) == (
        before.tid,
        before.header_size,
        before.is_keyframe,
    )
    assert buf[6:] == original[6:]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "VP8 payload is empty: expected a payload descriptor"),
        (b"\x90", "VP8 payload descriptor truncated after the X bit"),
        (b"\x90\x80", "VP8 payload descriptor truncated in the picture id"),
        (b"\x90\x80\x80", "VP8 payload descriptor truncated in a 15-bit picture id"),
        (b"\x90\x40", "VP8 payload descriptor truncated in TL0PICIDX"),
        (b"\x90\x20", "VP8 payload descriptor truncated in TID/KEYIDX"),
    ],
)
def test_vp8_truncated_descriptor(payload: bytes, message: str) -> None:
    with pytest.raises(PayloadError) as info:
        vp8_descriptor(*framed(payload))
    assert str(info.value) == message
    assert isinstance(info.value, WireError)
    assert not vp8_is_keyframe(*framed(payload))


# ----------------------------------------------------------------- H.264


def test_h264_real_keyframe_and_delta_frame() -> None:
    key = payloads("h264_keyframe.payloads")
    delta = payloads("h264_delta.payloads")
    assert key[0][0] & 0x1F == 24  # aiortc sends SPS+PPS in a STAP-A first
    assert h264_is_keyframe(*framed(key[0]))
    assert is_keyframe("video/h264", *framed(key[0]))
    # FU-A fragments of the IDR: only those with the start bit count
    fu = [p for p in key if p[0] & 0x1F == 28]
    assert fu
    assert [h264_is_keyframe(*framed(p)) for p in fu] == [bool(p[1] & 0x80) for p in fu]
    assert not any(h264_is_keyframe(*framed(p)) for p in delta)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (bytes([0x65, 0x88]), True),  # single NAL unit, IDR slice
        (bytes([0x67, 0x42]), True),  # single NAL unit, SPS
        (bytes([0x41, 0x9A]), False),  # non-IDR slice
        (bytes([0x68, 0xCE]), False),  # PPS alone
        (bytes([0x7C, 0x85, 0x00]), True),  # FU-A start of IDR
        (bytes([0x7C, 0x45, 0x00]), False),  # FU-A end of IDR
        (bytes([0x7C, 0x81, 0x00]), False),  # FU-A start of a non-IDR slice
        (bytes([0x78, 0x00, 0x02, 0x68, 0xCE, 0x00, 0x02, 0x65, 0x88]), True),  # STAP-A PPS+IDR
        (bytes([0x78, 0x00, 0x02, 0x68, 0xCE, 0x00, 0x02, 0x41, 0x9A]), False),
        (bytes([0x78, 0x00, 0x09, 0x67]), False),  # STAP-A with a size past the end
        (bytes([0x7C]), False),  # FU-A without its FU header
        (b"", False),
    ],
)
def test_h264_nal_types_rfc6184(payload: bytes, expected: bool) -> None:
    assert h264_is_keyframe(*framed(payload)) is expected


# ----------------------------------------------------------------- VP9


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (bytes([0x88, 0x01, 0x00]), True),  # I, B; 7-bit picture id; key picture
        (bytes([0xC8, 0x01, 0x00]), False),  # P set: inter-picture predicted
        (bytes([0x80, 0x01, 0x00]), False),  # not the beginning of a frame
        (bytes([0xA8, 0x80, 0x01, 0x00, 0x00]), True),  # L, 15-bit id, SID 0
        (bytes([0xA8, 0x80, 0x01, 0x02, 0x00]), False),  # L, SID 1: upper spatial layer
        (bytes([0x28, 0x00, 0x00]), True),  # L without picture id, SID 0
        (bytes([0xA8, 0x80]), False),  # truncated in the picture id
        (b"", False),
    ],
)
def test_vp9_descriptor_draft_layout(payload: bytes, expected: bool) -> None:
    assert vp9_is_keyframe(*framed(payload)) is expected
    assert is_keyframe("video/vp9", *framed(payload)) is expected


@pytest.mark.parametrize(
    ("descriptor", "expected"),
    [
        # Chromium's L3T3_KEY, flexible mode: (spatial id, temporal id, B, E, key
        # picture begins, U: switching-up point)
        (bytes([0xBE, 0x92, 0x0F, 0x00]), (0, 0, True, True, True, False)),  # SID 0
        (bytes([0xB8, 0x92, 0x0F, 0x02]), (1, 0, True, False, False, False)),  # SID 1
        (bytes([0xB4, 0x92, 0x0F, 0x05]), (2, 0, False, True, False, False)),  # SID 2 ends
        (bytes([0xFC, 0x92, 0x10, 0x40]), (0, 2, True, True, False, False)),  # P, TID 2
        (bytes([0xFC, 0x92, 0x11, 0x30]), (0, 1, True, True, False, True)),  # TID 1, U
        (bytes([0x9C, 0x92, 0x10]), None),  # no L: one layer
    ],
)
def test_vp9_layer_indices(descriptor: bytes, expected: object) -> None:
    packet = rtp.build_header(98, 1, 1, 7) + descriptor + b"\x00" * 8
    assert vp9_layer(packet, len(packet)) == expected
    truncated = rtp.build_header(98, 1, 1, 7) + descriptor[:2]  # ends in the picture id
    assert vp9_layer(truncated, len(truncated)) is None
    assert vp9_layer(packet, len(packet) + 1) is None  # longer than the buffer


# ----------------------------------------------------------------- AV1

# OBU headers (AV1 spec 5.3.1): type << 3, has_size_field 0x02
SEQUENCE_HEADER_OBU = bytes([1 << 3, 0x00, 0x00])
TEMPORAL_DELIMITER_OBU = bytes([2 << 3])
FRAME_OBU = bytes([6 << 3, 0x10, 0x00])


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        # N set (first packet of a coded video sequence), W=2: length-prefixed first element
        (bytes([0x28, 3]) + SEQUENCE_HEADER_OBU + FRAME_OBU, True),
        # libwebrtc leaves N clear on some key frames: a sequence header first still is one
        (bytes([0x20, 3]) + SEQUENCE_HEADER_OBU + FRAME_OBU, True),
        (bytes([0x10]) + SEQUENCE_HEADER_OBU, True),  # W=1: one element, no length
        (bytes([0x10]) + FRAME_OBU, False),  # a delta frame
        (bytes([0x00, 1]) + TEMPORAL_DELIMITER_OBU + bytes([3]) + FRAME_OBU, False),
        (bytes([0x88]) + SEQUENCE_HEADER_OBU, False),  # Z: continues an earlier OBU
        (bytes([0x20, 0x80]), False),  # truncated in the length
        (b"", False),
    ],
)
def test_av1_aggregation_header_and_first_obu(payload: bytes, expected: bool) -> None:
    assert av1_is_keyframe(*framed(payload)) is expected
    assert is_keyframe("video/av1", *framed(payload)) is expected


# ----------------------------------------------------------------- Opus and dispatch


def test_opus_toc_of_real_packet() -> None:
    (packet,) = payloads("opus.payloads")
    # aiortc encodes 20 ms CELT fullband stereo frames, one per packet (RFC 6716 table 2).
    assert opus_toc(packet, 0) == (31, True, 0)
    buf, offset, _ = framed(packet)
    assert opus_toc(buf, offset) == (31, True, 0)
    with pytest.raises(PayloadError, match="Opus payload is empty"):
        opus_toc(b"", 0)


def test_dispatch_other_codecs_have_no_keyframes() -> None:
    key = payloads("vp8_keyframe.payloads")[0]
    assert not is_keyframe("audio/opus", *framed(key))
    assert not is_keyframe("video/av1", *framed(key))


# ----------------------------------------------------------------- fuzz


@given(st.binary(max_size=40), st.integers(0, 8), st.integers(0, 48))
def test_fuzz_only_payload_errors(data: bytes, offset: int, end: int) -> None:
    for mime in ("video/vp8", "video/h264", "video/vp9", "audio/opus"):
        assert is_keyframe(mime, data, offset, end) in (True, False)
    try:
        desc = vp8_descriptor(data, offset, end)
    except PayloadError as error:
        assert str(error)
    else:
        assert offset + desc.header_size <= min(end, len(data))
        assert desc.is_keyframe == vp8_is_keyframe(data, offset, end)
    try:
        config, _, code = opus_toc(data, offset)
    except PayloadError:
        assert offset >= len(data)
    else:
        assert 0 <= config <= 31 and 0 <= code <= 3
    buf = bytearray(data)
    vp8_rewrite_picture_id(buf, offset, 1234, 5)
    assert len(buf) == len(data)
