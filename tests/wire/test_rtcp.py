"""RTCP codec (mediafed.wire.rtcp): real aiortc captures, RFC-figure bytes, properties, fuzz."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiortc import rtp as aiortc_rtp
from hypothesis import given, strategies as st

from mediafed.errors import WireError
from mediafed.wire.rtcp import (
    Bye,
    FullIntraRequest,
    GenericNack,
    PictureLossIndication,
    ReceiverReport,
    Remb,
    ReportBlock,
    RtcpBuildError,
    RtcpError,
    RtcpPacket,
    SenderReport,
    SourceDescription,
    TransportCcFeedback,
    UnknownRtcp,
    parse_rtcp,
    serialize_rtcp,
)

GOLDEN = Path(__file__).parent / "golden"
CAPTURES = sorted(GOLDEN.glob("aiortc_*.bin"))


def golden(name: str) -> bytes:
    return (GOLDEN / name).read_bytes()


# ----------------------------------------------------------------- real captures


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_captures_round_trip_byte_exact(path: Path) -> None:
    data = path.read_bytes()
    packets = parse_rtcp(data)
    assert packets
    assert not any(isinstance(p, UnknownRtcp) for p in packets)
    assert serialize_rtcp(packets) == data
    assert parse_rtcp(memoryview(data)) == packets == parse_rtcp(bytearray(data))


def test_captures_present() -> None:
    assert {p.name for p in CAPTURES} >= {
        "aiortc_sr_sdes.bin",
        "aiortc_rr.bin",
        "aiortc_rr_two_blocks.bin",
        "aiortc_bye.bin",
        "aiortc_nack.bin",
        "aiortc_pli.bin",
        "aiortc_remb.bin",
    }


def test_capture_sender_report_and_cname() -> None:
    sr, sdes = parse_rtcp(golden("aiortc_sr_sdes.bin"))
    assert sr == SenderReport(
        ssrc=0xF05AA0C4,
        ntp_timestamp=0xEEB613CC471DA37E,
        rtp_timestamp=0xC5408745,
        packet_count=28,
        octet_count=84,
        reports=[],
    )
    assert sdes == SourceDescription([(0xF05AA0C4, [(1, b"7964eec3-71d6-44c5-8438-8df57e6c2c7c")])])


def test_capture_receiver_report_block() -> None:
    (rr,) = parse_rtcp(golden("aiortc_rr.bin"))
    assert rr == ReceiverReport(
        0x0542EAE1, [ReportBlock(0xF05AA0C4, 4, 1, 0x227B, 0x2F, 0x13CC471D, 0xAC65)]
    )
    (rr2,) = parse_rtcp(golden("aiortc_rr_two_blocks.bin"))
    assert isinstance(rr2, ReceiverReport) and len(rr2.reports) == 2
    assert rr2.reports[0].fraction_lost == 9 and rr2.reports[0].packets_lost == 1


def test_capture_feedback() -> None:
    assert parse_rtcp(golden("aiortc_pli.bin")) == [PictureLossIndication(0x798C9CD7, 0xD653533C)]
    assert parse_rtcp(golden("aiortc_nack.bin")) == [GenericNack(0x798C9CD7, 0xD653533C, [15131])]
    assert parse_rtcp(golden("aiortc_bye.bin")) == [Bye([0xD653533C])]
    (remb,) = parse_rtcp(golden("aiortc_remb.bin"))
    assert remb == Remb(0x798C9CD7, 0x5EF8, [0xD653533C, 0x1D9BC5DA])


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_aiortc_agrees_on_captures(path: Path) -> None:
    data = path.read_bytes()
    theirs = aiortc_rtp.RtcpPacket.parse(data)
    ours = parse_rtcp(data)
    assert len(theirs) == len(ours)
    for their, our in zip(theirs, ours, strict=True):
        if isinstance(our, SenderReport | ReceiverReport):
            assert their.ssrc == our.ssrc
            fields = ("ssrc", "fraction_lost", "packets_lost", "highest_sequence", "jitter")
            assert [[getattr(r, f) for f in fields] for r in their.reports] == [
                [getattr(r, f) for f in fields] for r in our.reports
            ]
        if isinstance(our, GenericNack):
            assert their.lost == our.lost
        if isinstance(our, Bye):
            assert their.sources == our.ssrcs


# ----------------------------------------------------------------- bytes from the RFC figures


def test_nack_pid_blp_from_rfc4585_figure() -> None:
    # PID 100, BLP bits 0, 2 and 15: packets 101, 103 and 116 lost too.
    data = bytes.fromhex("81cd0003000000010000000200648005")
    nack = GenericNack(1, 2, [100, 101, 103, 116])
    assert parse_rtcp(data) == [nack]
    assert nack.serialize() == data


def test_nack_wraps_sequence_numbers() -> None:
    nack = GenericNack(1, 2, [65534, 65535, 0, 2, 40])
    data = nack.serialize()
    # 65534 with bits for 65535 (1), 0 (2) and 2 (4); then 40 alone.
    assert data[12:] == bytes.fromhex("fffe000b00280000")
    assert parse_rtcp(data) == [nack]


def test_fir_layout_rfc5104() -> None:
    data = bytes.fromhex("84ce00060000000a000000000000000b070000000000000cff000000")
    fir = FullIntraRequest(10, [(11, 7), (12, 255)])
    assert parse_rtcp(data) == [fir]
    assert fir.serialize() == data


def test_remb_exponent_and_mantissa() -> None:
    remb = Remb(1, 1_500_000, [7])
    data = remb.serialize()
    # 1_500_000 needs 21 bits: exponent 3, mantissa 187500 (exact).
    assert data[12:16] == b"REMB"
    assert data[16] == 1 and data[17] >> 2 == 3
    assert parse_rtcp(data) == [remb]
    # Unrepresentable values round down, as libwebrtc does.
    (rounded,) = parse_rtcp(Remb(1, (1 << 20) + 1, []).serialize())
    assert isinstance(rounded, Remb) and rounded.bitrate_bps == 1 << 20


def test_transport_cc_two_bit_vector_with_wrap() -> None:
    data = bytes.fromhex(
        "8fcd0006"  # V=2 FMT=15 PT=205 length 6 words
        "01020304"  # sender SSRC
        "0a0b0c0d"  # media SSRC
        "fffe0005"  # base sequence 65534, 5 packets
        "00001007"  # reference time 16 (x 64 ms), feedback count 7
        "d240"  # 2-bit vector: small, none, large, small, none, (pad, pad)
        "04fffe01"  # deltas: 4 x 250 us, -2 x 250 us (2 bytes), 1 x 250 us
        "0000"  # padding to 32 bits
    )
    fb = TransportCcFeedback(
        0x01020304,
        0x0A0B0C0D,
        65534,
        16,
        7,
        [(65534, 1000), (65535, None), (0, -500), (1, 250), (2, None)],
    )
    assert parse_rtcp(data) == [fb]
    assert fb.serialize() == data


def test_transport_cc_run_length_and_one_bit_vector() -> None:
    run = TransportCcFeedback(1, 2, 10, -3, 0, [(10 + i, 0) for i in range(20)])
    data = run.serialize()
    assert data[20:22] == bytes.fromhex("2014")  # T=0, S=small delta, run 20
    assert data[12:20] == bytes.fromhex("000a0014fffffd00")  # reference time -3
    assert parse_rtcp(data) == [run]
    alternating = TransportCcFeedback(
        1, 2, 0, 0, 1, [(i, 250 * i if i % 2 == 0 else None) for i in range(14)]
    )
    data = alternating.serialize()
    assert data[20:22] == bytes.fromhex("aaaa")  # T=1 S=0: 1,0,1,0,...
    assert parse_rtcp(data) == [alternating]


def test_transport_cc_rejects_bad_values() -> None:
    with pytest.raises(RtcpBuildError, match="multiple of 250 us"):
        TransportCcFeedback(1, 2, 0, 0, 0, [(0, 100)]).serialize()
    with pytest.raises(RtcpBuildError, match="must be consecutive"):
        TransportCcFeedback(1, 2, 0, 0, 0, [(0, 0), (2, 0)]).serialize()
    with pytest.raises(RtcpBuildError, match="does not fit 16 signed bits"):
        TransportCcFeedback(1, 2, 0, 0, 0, [(0, 250 * 40000)]).serialize()


def test_unknown_types_are_kept() -> None:
    app = UnknownRtcp(204, 3, b"name" + b"\x01\x02\x03\x04")
    psfb_other = UnknownRtcp(206, 15, b"\x00" * 8 + b"ABCD")
    data = serialize_rtcp([app, psfb_other])
    assert parse_rtcp(data) == [app, psfb_other]


def test_padding_is_removed() -> None:
    # A BYE with a reason and RTCP padding (P bit, last byte = 4).
    data = bytes.fromhex("a1cb00030000002a0268690000000004")
    assert parse_rtcp(data) == [Bye([42], b"hi")]


# ----------------------------------------------------------------- precise errors


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "RTCP packet is empty: expected at least a 4-byte header"),
        (bytes.fromhex("81c9"), "RTCP packet truncated: header needs 4 bytes, 2 left"),
        (bytes.fromhex("41c9000100000000"), "RTCP version is 1, expected 2: this is not RTCP"),
        (
            bytes.fromhex("81c90006" + "00" * 16),
            "RTCP packet truncated: header says 28 bytes, 20 left",
        ),
        (
            bytes.fromhex("a1cb000100000009"),
            "RTCP padding count 9 is invalid for a 8-byte packet",
        ),
        (
            bytes.fromhex("a1cb000100000000"),
            "RTCP padding count 0 is invalid for a 8-byte packet",
        ),
        (
            bytes.fromhex("82c90007" + "00" * 28),
            "RTCP RR with 2 report blocks truncated: needs 52 bytes, 28 left",
        ),
        (
            bytes.fromhex("8fcd0004" + "00" * 8 + "0000000300000000"),
            "RTCP transport-cc status chunk for packet 0 of 3 truncated: needs 2 bytes, 0 left",
        ),
        (
            # two large deltas announced (run length, symbol 2), only one present
            bytes.fromhex("8fcd0005" + "00" * 8 + "00000002" + "00000000" + "4002" + "0001"),
            "RTCP transport-cc receive delta of packet 1 truncated: needs 2 bytes, 0 left",
        ),
        (
            bytes.fromhex("8fcd0005" + "00" * 8 + "000000010000000060010000"),
            "transport-cc status of packet 0 uses the reserved symbol 3",
        ),
    ],
)
def test_malformed_input_precise_errors(data: bytes, message: str) -> None:
    with pytest.raises(RtcpError) as info:
        parse_rtcp(data)
    assert str(info.value) == message
    assert isinstance(info.value, WireError)


# ----------------------------------------------------------------- properties

u32 = st.integers(0, 2**32 - 1)
u16 = st.integers(0, 2**16 - 1)

report_blocks = st.lists(
    st.builds(
        ReportBlock,
        ssrc=u32,
        fraction_lost=st.integers(0, 255),
        packets_lost=st.integers(-(2**23), 2**23 - 1),
        highest_sequence=u32,
        jitter=u32,
        lsr=u32,
        dlsr=u32,
    ),
    max_size=4,
)


@st.composite
def twcc(draw: st.DrawFn) -> TransportCcFeedback:
    base = draw(u16)
    ticks = st.one_of(st.none(), st.integers(0, 255), st.integers(-(2**15), 2**15 - 1), st.just(0))
    deltas = draw(st.lists(ticks, min_size=0, max_size=60))
    return TransportCcFeedback(
        draw(u32),
        draw(u32),
        base,
        draw(st.integers(-(2**23), 2**23 - 1)),
        draw(st.integers(0, 255)),
        [((base + i) & 0xFFFF, None if t is None else t * 250) for i, t in enumerate(deltas)],
    )


@st.composite
def remb(draw: st.DrawFn) -> Remb:
    mantissa = draw(st.integers(0, 2**18 - 1))
    exponent = draw(st.integers(0, 20))
    return Remb(draw(u32), mantissa << exponent, draw(st.lists(u32, max_size=5)))


rtcp_packets: st.SearchStrategy[RtcpPacket] = st.one_of(
    st.builds(
        SenderReport,
        ssrc=u32,
        ntp_timestamp=st.integers(0, 2**64 - 1),
        rtp_timestamp=u32,
        packet_count=u32,
        octet_count=u32,
        reports=report_blocks,
    ),
    st.builds(ReceiverReport, ssrc=u32, reports=report_blocks),
    st.builds(
        SourceDescription,
        chunks=st.lists(
            st.tuples(
                u32,
                st.lists(st.tuples(st.integers(1, 8), st.binary(max_size=40)), max_size=3),
            ),
            max_size=3,
        ),
    ),
    st.builds(Bye, ssrcs=st.lists(u32, max_size=4), reason=st.binary(max_size=30)),
    st.builds(PictureLossIndication, sender_ssrc=u32, media_ssrc=u32),
    st.builds(
        FullIntraRequest,
        sender_ssrc=u32,
        entries=st.lists(st.tuples(u32, st.integers(0, 255)), max_size=4),
    ),
    st.builds(GenericNack, sender_ssrc=u32, media_ssrc=u32, lost=st.lists(u16, max_size=40)),
    remb(),
    twcc(),
    st.builds(
        UnknownRtcp,
        packet_type=st.sampled_from([204, 207, 205, 206]),
        fmt=st.sampled_from([2, 3, 5, 9]),
        body=st.binary(max_size=8).map(lambda b: b + b"\x00" * (-len(b) % 4)),
    ),
)


@given(st.lists(rtcp_packets, min_size=1, max_size=4))
def test_round_trip_property(packets: list[RtcpPacket]) -> None:
    data = serialize_rtcp(packets)
    assert parse_rtcp(data) == packets
    for packet in packets:
        assert parse_rtcp(packet.serialize()) == [packet]
    assert serialize_rtcp(parse_rtcp(data)) == data


@given(st.lists(rtcp_packets, min_size=1, max_size=3), st.data())
def test_truncation_raises_precise_error(packets: list[RtcpPacket], data: st.DataObject) -> None:
    wire = serialize_rtcp(packets)
    boundaries = [0]
    for packet in packets:
        boundaries.append(boundaries[-1] + len(packet.serialize()))
    cut = data.draw(st.integers(1, len(wire) - 1).filter(lambda c: c not in boundaries))
    start = max(b for b in boundaries if b < cut)
    left = cut - start
    with pytest.raises(RtcpError) as info:
        parse_rtcp(wire[:cut])
    if left < 4:
        assert str(info.value) == f"RTCP packet truncated: header needs 4 bytes, {left} left"
    else:
        size = boundaries[boundaries.index(start) + 1] - start
        assert str(info.value) == f"RTCP packet truncated: header says {size} bytes, {left} left"


@given(st.binary(max_size=200))
def test_fuzz_random_bytes_only_rtcp_error(data: bytes) -> None:
    try:
        packets = parse_rtcp(data)
    except RtcpError as error:
        assert str(error)
    else:
        assert all(hasattr(p, "serialize") for p in packets)


@given(st.lists(rtcp_packets, min_size=1, max_size=3), st.data())
def test_fuzz_mutated_packets_only_rtcp_error(
    packets: list[RtcpPacket], data: st.DataObject
) -> None:
    wire = bytearray(serialize_rtcp(packets))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(wire) - 1))
        wire[pos] = data.draw(st.integers(0, 255))
    try:
        parse_rtcp(bytes(wire))
    except RtcpError as error:
        assert str(error)
