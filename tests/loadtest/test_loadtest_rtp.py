"""The load clients' RTP: VP8 packetizing (RFC 7741), headers and extensions (RFC 3550, 8285)."""

from __future__ import annotations

import os
import struct

import pytest
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket
from hypothesis import given, strategies as st

from loadtest.rtp import (
    ABS_SEND_TIME_EXT_ID,
    ABS_SEND_TIME_URI,
    MID_EXT_ID,
    MID_URI,
    TRAILER_SIZE,
    VP8_DESCRIPTOR_SIZE,
    RtpSender,
    abs_send_time,
    is_rtcp,
    iter_header_extensions,
    keyframe_requests,
    packetize_vp8,
    read_send_time_ns,
    rtp_payload_bounds,
)


def _reassemble(payloads: list[bytes]) -> bytes:
    return b"".join(p[VP8_DESCRIPTOR_SIZE:] for p in payloads)


def test_large_frame_is_split_under_the_payload_limit_and_reassembles() -> None:
    frame = os.urandom(5000)
    payloads = packetize_vp8(frame, picture_id=0x1234, max_payload=1100)
    assert len(payloads) == 5  # ceil(5000 / (1100 - 4 - 12))
    assert all(len(p) + TRAILER_SIZE <= 1100 for p in payloads)
    assert _reassemble(payloads) == frame


def test_descriptor_marks_partition_start_and_carries_the_picture_id() -> None:
    payloads = packetize_vp8(os.urandom(3000), picture_id=0x1234)
    first, *rest = payloads
    # X=1 and S=1 on the first packet only; PID=0.
    assert first[0] == 0x90
    assert all(p[0] == 0x80 for p in rest)
    for p in payloads:
        assert p[1] == 0x80  # I=1: PictureID present
        assert struct.unpack_from("!H", p, 2)[0] == 0x8000 | 0x1234  # M=1, 15 bits


def test_small_frame_is_one_packet() -> None:
    payloads = packetize_vp8(b"\x10\x02\x00abc", picture_id=5)
    assert len(payloads) == 1
    assert payloads[0][VP8_DESCRIPTOR_SIZE:] == b"\x10\x02\x00abc"


def test_empty_frame_and_tiny_limit_are_refused() -> None:
    with pytest.raises(ValueError, match="empty VP8 frame"):
        packetize_vp8(b"", picture_id=0)
    with pytest.raises(ValueError, match="too small"):
        packetize_vp8(b"x", picture_id=0, max_payload=10)


@given(
    frame=st.binary(min_size=1, max_size=20_000),
    max_payload=st.integers(min_value=64, max_value=1400),
    picture_id=st.integers(min_value=0, max_value=0x7FFF),
)
def test_packetize_roundtrip(frame: bytes, max_payload: int, picture_id: int) -> None:
    payloads = packetize_vp8(frame, picture_id, max_payload)
    assert _reassemble(payloads) == frame
    assert all(len(p) + TRAILER_SIZE <= max_payload for p in payloads)
    assert [bool(p[0] & 0x10) for p in payloads] == [True] + [False] * (len(payloads) - 1)


def _aiortc_map() -> HeaderExtensionsMap:
    ext_map = HeaderExtensionsMap()
    ext_map.configure(
        RTCRtpParameters(
            headerExtensions=[
                RTCRtpHeaderExtensionParameters(id=MID_EXT_ID, uri=MID_URI),
                RTCRtpHeaderExtensionParameters(id=ABS_SEND_TIME_EXT_ID, uri=ABS_SEND_TIME_URI),
            ]
        )
    )
    return ext_map


def test_built_packet_parses_with_an_independent_parser() -> None:
    sender = RtpSender(ssrc=0xDEADBEEF, payload_type=96, clock_rate=90_000, mid="1", first_seq=7)
    now_ns = 123_456_789_012
    packet = sender.build(b"payload", timestamp=3000, marker=True, now_ns=now_ns)
    parsed = RtpPacket.parse(packet, _aiortc_map())
    assert parsed.ssrc == 0xDEADBEEF
    assert parsed.payload_type == 96
    assert parsed.sequence_number == 7
    assert parsed.timestamp == 3000
    assert parsed.marker == 1
    assert parsed.extensions.mid == "1"
    assert parsed.extensions.abs_send_time == abs_send_time(now_ns)
    assert parsed.payload[:7] == b"payload"
    assert len(parsed.payload) == 7 + TRAILER_SIZE
    assert read_send_time_ns(packet) == now_ns
    assert dict(iter_header_extensions(packet))[MID_EXT_ID] == b"1"


def test_sequence_numbers_increase_and_wrap() -> None:
    sender = RtpSender(ssrc=1, payload_type=111, clock_rate=48_000, mid="0", first_seq=0xFFFE)
    seqs = [struct.unpack_from("!H", sender.build(b"x", 0, False, 0), 2)[0] for _ in range(4)]
    assert seqs == [0xFFFE, 0xFFFF, 0, 1]


def test_abs_send_time_is_6_18_fixed_point_seconds() -> None:
    assert abs_send_time(1_500_000_000) == int(1.5 * 2**18)
    assert abs_send_time(64_000_000_000) == 0  # wraps every 64 s


def test_payload_bounds_respect_csrcs_and_padding() -> None:
    header = bytes([0xA1, 96]) + b"\x00\x01" + b"\x00" * 8 + b"\x00\x00\x00\x09"  # P=1, CC=1
    packet = header + b"hello" + b"\x00\x00\x03"
    assert rtp_payload_bounds(packet) == (16, 21)
    assert read_send_time_ns(packet) is None
    with pytest.raises(ValueError, match="not an RTP"):
        rtp_payload_bounds(b"\x00" * 12)


def test_rtcp_is_told_apart_from_rtp() -> None:
    assert is_rtcp(bytes([0x80, 200, 0, 6]))  # sender report
    assert not is_rtcp(bytes([0x80, 96, 0, 1]))


def test_keyframe_requests_from_pli_and_fir_in_a_compound_packet() -> None:
    receiver_report = struct.pack("!BBHI", 0x80, 201, 1, 0x11111111)  # RR, no blocks
    pli = struct.pack("!BBHII", 0x81, 206, 2, 0x22222222, 0xAAAA0001)  # FMT 1
    fir = struct.pack("!BBHIIIBBH", 0x84, 206, 4, 0x22222222, 0, 0xAAAA0002, 7, 0, 0)  # FMT 4
    remb = struct.pack("!BBHII", 0x8F, 206, 2, 0x22222222, 0)  # FMT 15: not a request
    assert keyframe_requests(receiver_report + pli + fir + remb) == {0xAAAA0001, 0xAAAA0002}
    assert keyframe_requests(receiver_report) == set()
    assert keyframe_requests(pli[:-2]) == set()  # truncated: ignored, no exception
