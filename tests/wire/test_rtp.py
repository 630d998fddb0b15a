"""RTP header view and in-place rewrite (RFC 3550 §5.1, RFC 8285)."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from mediafed.wire import rtp


def _packet(extensions: list[tuple[int, bytes]] | None = None, payload: bytes = b"abc") -> bytes:
    return (
        bytes(rtp.build_header(96, 7, 9000, 0xCAFE, marker=True, extensions=extensions)) + payload
    )


def test_header_fields_and_payload_offset() -> None:
    packet = _packet([(1, b"\x05"), (3, b"\x01\x02\x03")], b"payload")
    b0, b1, seq, ts, ssrc = rtp.HEADER.unpack_from(packet, 0)
    assert (b0 >> 6, b1 & 0x7F, b1 >> 7, seq, ts, ssrc) == (2, 96, 1, 7, 9000, 0xCAFE)
    start = rtp.payload_offset(packet, len(packet))
    assert packet[start:] == b"payload"
    assert list(rtp.iter_extensions(packet, len(packet))) == [(1, 17, 1), (3, 19, 3)]
    assert rtp.extension_value(packet, len(packet), 3) == b"\x01\x02\x03"


def test_remap_and_scan_reads_twcc_and_level_and_rewrites_ids() -> None:
    packet = bytearray(_packet([(5, b"\x01\x02"), (6, b"\x85"), (7, b"mid")], b"x"))
    table = bytes([0, 14, 14, 14, 14, 14, 1, 14, 14, 14, 14, 14, 14, 14, 14, 15])
    twcc, level = rtp.remap_and_scan(packet, len(packet), table, 5, 6)
    assert (twcc, level) == (0x0102, 5)
    assert [i for i, _, _ in rtp.iter_extensions(packet, len(packet))] == [14, 1, 14]
    assert packet[-1:] == b"x"


def test_padding_end() -> None:
    packet = bytearray(_packet(payload=b"data\x00\x00\x03"))
    packet[0] |= 0x20
    assert rtp.payload_end(packet, len(packet)) == len(packet) - 3


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x80\x60\x00", "RTP packet truncated: 3 bytes, the fixed header needs 12"),
        (b"\x40" + bytes(11), "RTP version 1 is not 2"),
        (b"\x90" + bytes(11) + b"\xbe\xde\x00\x05", "RTP header claims 36 bytes, packet has 16"),
    ],
)
def test_truncated_input_raises_precise_errors(data: bytes, message: str) -> None:
    with pytest.raises(rtp.RtpError) as info:
        rtp.payload_offset(data, len(data))
    assert str(info.value) == message


@given(st.binary(min_size=0, max_size=80))
def test_random_bytes_raise_only_rtp_error(data: bytes) -> None:
    try:
        start = rtp.payload_offset(data, len(data))
        list(rtp.iter_extensions(data, len(data)))
        if start <= len(data) and len(data) >= 12:
            rtp.payload_end(data, len(data))
    except rtp.RtpError:
        pass


@given(
    seq=st.integers(0, 0xFFFF),
    ts=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    payload=st.binary(min_size=1, max_size=200),
)
def test_rewrite_keeps_payload_intact(seq: int, ts: int, ssrc: int, payload: bytes) -> None:
    packet = bytearray(_packet([(2, b"\x00\x00\x01")], payload))
    before = rtp.payload_offset(packet, len(packet))
    rtp.SEQ_TS_SSRC.pack_into(packet, 2, seq, ts, ssrc)
    assert rtp.HEADER.unpack_from(packet, 0)[2:] == (seq, ts, ssrc)
    assert bytes(packet[before:]) == payload
