"""RTCP packets: parse a compound packet into values, write values back to bytes.

Covers sender and receiver reports, SDES and BYE (RFC 3550 section 6.4-6.6), generic NACK and
PLI (RFC 4585 section 6.2.1, 6.3.1), FIR (RFC 5104 section 4.3.1), REMB
(draft-alvestrand-rmcat-remb-03 section 2.2) and transport-wide congestion control feedback
(draft-holmer-rmcat-transport-wide-cc-extensions-01 section 3.1). Anything else is kept as
:class:`UnknownRtcp` so it can be relayed untouched.

Off the hot path: the router reads the few fields it needs straight from the buffer; this module
is for RTCP we terminate (feedback, reports) and for tests. Parsing bad input raises
:class:`RtcpError` and nothing else.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypeAlias

from mediafed.errors import LocalProtocolError, WireError

__all__ = [
    "Bye",
    "FullIntraRequest",
    "GenericNack",
    "PictureLossIndication",
    "ReceiverReport",
    "Remb",
    "ReportBlock",
    "RtcpBuildError",
    "RtcpError",
    "RtcpPacket",
    "SenderReport",
    "SourceDescription",
    "TransportCcFeedback",
    "UnknownRtcp",
    "parse_rtcp",
    "serialize_rtcp",
]

PT_SR = 200
PT_RR = 201
PT_SDES = 202
PT_BYE = 203
PT_RTPFB = 205
PT_PSFB = 206

FMT_NACK = 1
FMT_TWCC = 15
FMT_PLI = 1
FMT_FIR = 4
FMT_AFB = 15

SDES_CNAME = 1

_HEADER = struct.Struct("!BBH")
_U32 = struct.Struct("!I")
_U16 = struct.Struct("!H")
_I16 = struct.Struct("!h")
_TWO_U32 = struct.Struct("!II")
_SR_INFO = struct.Struct("!IQIII")
_REPORT_BLOCK = struct.Struct("!IIIIII")
_NACK_FCI = struct.Struct("!HH")
_FIR_FCI = struct.Struct("!IB3x")
_REMB_HEAD = struct.Struct("!4sBBH")
_TWCC_HEAD = struct.Struct("!HHI")

_REMB_ID = b"REMB"
_TWCC_DELTA_US = 250


class RtcpError(WireError):
    """An RTCP packet that does not parse; the message says which field is wrong."""


class RtcpBuildError(LocalProtocolError):
    """A value that cannot be written as RTCP (out of range, too many entries)."""


# --------------------------------------------------------------------------- values


@dataclass(slots=True)
class ReportBlock:
    """One reception report block (RFC 3550 section 6.4.1)."""

    ssrc: int
    fraction_lost: int
    packets_lost: int  # signed 24-bit cumulative count
    highest_sequence: int  # extended highest sequence number received
    jitter: int
    lsr: int
    dlsr: int

    def serialize(self) -> bytes:
        """The 24-byte block as it sits inside an SR or RR."""
        if not -(1 << 23) <= self.packets_lost < (1 << 23):
            raise RtcpBuildError(f"packets_lost {self.packets_lost} does not fit 24 signed bits")
        if not 0 <= self.fraction_lost <= 255:
            raise RtcpBuildError(f"fraction_lost {self.fraction_lost} is not in 0..255")
        loss = (self.fraction_lost << 24) | (self.packets_lost & 0xFFFFFF)
        return _REPORT_BLOCK.pack(
            self.ssrc, loss, self.highest_sequence, self.jitter, self.lsr, self.dlsr
        )


@dataclass(slots=True)
class SenderReport:
    """SR, RTCP packet type 200 (RFC 3550 section 6.4.1)."""

    ssrc: int
    ntp_timestamp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: list[ReportBlock] = field(default_factory=list)

    def serialize(self) -> bytes:
        body = _SR_INFO.pack(
            self.ssrc, self.ntp_timestamp, self.rtp_timestamp, self.packet_count, self.octet_count
        )
        return _packet(PT_SR, _count(len(self.reports), "report blocks"), body, self.reports)


@dataclass(slots=True)
class ReceiverReport:
    """RR, RTCP packet type 201 (RFC 3550 section 6.4.2)."""

    ssrc: int
    reports: list[ReportBlock] = field(default_factory=list)

    def serialize(self) -> bytes:
        body = _U32.pack(self.ssrc)
        return _packet(PT_RR, _count(len(self.reports), "report blocks"), body, self.reports)


@dataclass(slots=True)
class SourceDescription:
    """SDES, packet type 202 (RFC 3550 section 6.5): per SSRC a list of (item type, value)."""

    chunks: list[tuple[int, list[tuple[int, bytes]]]] = field(default_factory=list)

    def serialize(self) -> bytes:
        out = bytearray()
        for ssrc, items in self.chunks:
            out += _U32.pack(ssrc)
            for item_type, value in items:
                if not 1 <= item_type <= 255 or len(value) > 255:
                    raise RtcpBuildError(
                        f"SDES item type {item_type} / length {len(value)} out of range"
                    )
                out += bytes((item_type, len(value))) + value
            # "terminated by one or more null octets ... to the next 32-bit boundary"
            out += b"\x00" * (4 - len(out) % 4)
        return _packet(PT_SDES, _count(len(self.chunks), "SDES chunks"), bytes(out))


@dataclass(slots=True)
class Bye:
    """BYE, packet type 203 (RFC 3550 section 6.6)."""

    ssrcs: list[int] = field(default_factory=list)
    reason: bytes = b""

    def serialize(self) -> bytes:
        body = b"".join(_U32.pack(ssrc) for ssrc in self.ssrcs)
        if self.reason:
            if len(self.reason) > 255:
                raise RtcpBuildError("a BYE reason is at most 255 bytes")
            body += bytes((len(self.reason),)) + self.reason
            body += b"\x00" * (-len(body) % 4)
        return _packet(PT_BYE, _count(len(self.ssrcs), "BYE sources"), body)


@dataclass(slots=True)
class PictureLossIndication:
    """PLI, payload-specific feedback FMT 1 (RFC 4585 section 6.3.1)."""

    sender_ssrc: int
    media_ssrc: int

    def serialize(self) -> bytes:
        return _packet(PT_PSFB, FMT_PLI, _TWO_U32.pack(self.sender_ssrc, self.media_ssrc))


@dataclass(slots=True)
class FullIntraRequest:
    """FIR, payload-specific feedback FMT 4 (RFC 5104 section 4.3.1): (ssrc, command seq nr)."""

    sender_ssrc: int
    entries: list[tuple[int, int]] = field(default_factory=list)

    def serialize(self) -> bytes:
        # "the 'SSRC of media source' is not used and SHALL be set to 0"
        body = bytearray(_TWO_U32.pack(self.sender_ssrc, 0))
        for ssrc, seq in self.entries:
            if not 0 <= seq <= 0xFF:
                raise RtcpBuildError(f"FIR command sequence number {seq} is not in 0..255")
            body += _FIR_FCI.pack(ssrc, seq)
        return _packet(PT_PSFB, FMT_FIR, bytes(body))


@dataclass(slots=True)
class GenericNack:
    """Generic NACK, transport feedback FMT 1 (RFC 4585 section 6.2.1).

    ``lost`` holds the sequence numbers the PID/BLP pairs stand for, in wire order. Writing
    packs them again, each pair covering a PID and the next 16 numbers (mod 2**16).
    """

    sender_ssrc: int
    media_ssrc: int
    lost: list[int] = field(default_factory=list)

    def serialize(self) -> bytes:
        body = bytearray(_TWO_U32.pack(self.sender_ssrc, self.media_ssrc))
        lost = self.lost
        i, n = 0, len(lost)
        while i < n:
            pid = lost[i] & 0xFFFF
            blp = 0
            last = 0
            i += 1
            while i < n:
                offset = (lost[i] - pid) & 0xFFFF
                if not last < offset <= 16:
                    break
                blp |= 1 << (offset - 1)
                last = offset
                i += 1
            body += _NACK_FCI.pack(pid, blp)
        return _packet(PT_RTPFB, FMT_NACK, bytes(body))


@dataclass(slots=True)
class Remb:
    """Receiver estimated maximum bitrate, PSFB FMT 15 'REMB' (draft-alvestrand-rmcat-remb).

    The bitrate travels as an 18-bit mantissa and a 6-bit exponent; writing rounds down to the
    nearest value that form can carry.
    """

    sender_ssrc: int
    bitrate_bps: int
    ssrcs: list[int] = field(default_factory=list)

    def serialize(self) -> bytes:
        if self.bitrate_bps < 0:
            raise RtcpBuildError("a REMB bitrate cannot be negative")
        exponent = max(0, self.bitrate_bps.bit_length() - 18)
        if exponent > 63:
            raise RtcpBuildError(f"REMB bitrate {self.bitrate_bps} is too large")
        mantissa = self.bitrate_bps >> exponent
        if len(self.ssrcs) > 255:
            raise RtcpBuildError("a REMB names at most 255 SSRCs")
        body = _TWO_U32.pack(self.sender_ssrc, 0) + _REMB_HEAD.pack(
            _REMB_ID, len(self.ssrcs), (exponent << 2) | (mantissa >> 16), mantissa & 0xFFFF
        )
        body += b"".join(_U32.pack(ssrc) for ssrc in self.ssrcs)
        return _packet(PT_PSFB, FMT_AFB, body)


@dataclass(slots=True)
class TransportCcFeedback:
    """Transport-wide congestion control feedback, RTPFB FMT 15.

    ``packets`` lists consecutive transport-wide sequence numbers from ``base_sequence`` with
    the receive delta in microseconds (to the previous received packet; the first to
    ``reference_time * 64 ms``) or None when the packet was not received. Deltas are multiples
    of 250 us: 0..63750 us travel in one byte, others (-8192000..8191750 us) in two.
    """

    sender_ssrc: int
    media_ssrc: int
    base_sequence: int
    reference_time: int  # 24-bit signed, units of 64 ms
    feedback_count: int
    packets: list[tuple[int, int | None]] = field(default_factory=list)

    def serialize(self) -> bytes:
        count = len(self.packets)
        if count > 0xFFFF:
            raise RtcpBuildError("transport-cc feedback covers at most 65535 packets")
        if not -(1 << 23) <= self.reference_time < (1 << 23):
            raise RtcpBuildError(f"reference_time {self.reference_time} exceeds 24 signed bits")
        symbols = bytearray(count)
        deltas = bytearray()
        for i, (seq, delta_us) in enumerate(self.packets):
            if seq != (self.base_sequence + i) & 0xFFFF:
                raise RtcpBuildError(
                    f"transport-cc packet {i} has sequence {seq}, expected "
                    f"{(self.base_sequence + i) & 0xFFFF}: sequences must be consecutive"
                )
            if delta_us is None:
                continue
            ticks, rest = divmod(delta_us, _TWCC_DELTA_US)
            if rest:
                raise RtcpBuildError(f"receive delta {delta_us} us is not a multiple of 250 us")
            if 0 <= ticks <= 0xFF:
                symbols[i] = 1
                deltas.append(ticks)
            elif -0x8000 <= ticks <= 0x7FFF:
                symbols[i] = 2
                deltas += _I16.pack(ticks)
            else:
                raise RtcpBuildError(f"receive delta {delta_us} us does not fit 16 signed bits")
        body = bytearray(_TWO_U32.pack(self.sender_ssrc, self.media_ssrc))
        body += _TWCC_HEAD.pack(
            self.base_sequence & 0xFFFF,
            count,
            ((self.reference_time & 0xFFFFFF) << 8) | (self.feedback_count & 0xFF),
        )
        body += _encode_status_chunks(symbols)
        body += deltas
        body += b"\x00" * (-len(body) % 4)
        return _packet(PT_RTPFB, FMT_TWCC, bytes(body))


@dataclass(slots=True)
class UnknownRtcp:
    """An RTCP packet type/format we do not interpret; ``body`` follows the 4-byte header."""

    packet_type: int
    fmt: int
    body: bytes

    def serialize(self) -> bytes:
        if len(self.body) % 4:
            raise RtcpBuildError("an RTCP body must be a multiple of 4 bytes")
        return _packet(self.packet_type, self.fmt, self.body)


RtcpPacket: TypeAlias = (
    SenderReport
    | ReceiverReport
    | SourceDescription
    | Bye
    | PictureLossIndication
    | FullIntraRequest
    | GenericNack
    | Remb
    | TransportCcFeedback
    | UnknownRtcp
)


# --------------------------------------------------------------------------- writing


def _count(value: int, what: str) -> int:
    if value > 31:
        raise RtcpBuildError(f"one RTCP packet carries at most 31 {what}, not {value}")
    return value


def _packet(packet_type: int, count: int, body: bytes, blocks: Iterable[ReportBlock] = ()) -> bytes:
    if not 0 <= count <= 31:
        raise RtcpBuildError(f"RTCP count/format {count} is not in 0..31")
    payload = body + b"".join(block.serialize() for block in blocks)
    words = len(payload) // 4
    if words > 0xFFFF:
        raise RtcpBuildError("RTCP packet longer than 65535 words")
    return _HEADER.pack(0x80 | count, packet_type, words) + payload


def serialize_rtcp(packets: Iterable[RtcpPacket]) -> bytes:
    """Write a compound RTCP packet (RFC 3550 section 6.1)."""
    return b"".join(packet.serialize() for packet in packets)


def _encode_status_chunks(symbols: bytearray) -> bytes:
    """Packet status chunks (draft section 3.1.1-3.1.4), choosing run length or vectors."""
    out = bytearray()
    n = len(symbols)
    i = 0
    while i < n:
        symbol = symbols[i]
        run = 1
        while i + run < n and run < 0x1FFF and symbols[i + run] == symbol:
            run += 1
        window = symbols[i : i + 14]
        if run >= 14 or (run == n - i and run >= 7):
            out += _U16.pack((symbol << 13) | run)  # run length chunk, T=0
            i += run
        elif max(window) <= 1:
            value = 0x8000  # status vector, T=1 S=0: fourteen 1-bit symbols
            for k, s in enumerate(window):
                value |= s << (13 - k)
            out += _U16.pack(value)
            i += len(window)
        elif run >= 7:
            out += _U16.pack((symbol << 13) | run)
            i += run
        else:
            value = 0xC000  # status vector, T=1 S=1: seven 2-bit symbols
            for k, s in enumerate(symbols[i : i + 7]):
                value |= s << (12 - 2 * k)
            out += _U16.pack(value)
            i += 7
    return bytes(out)


# --------------------------------------------------------------------------- parsing


def parse_rtcp(data: bytes | bytearray | memoryview) -> list[RtcpPacket]:
    """Parse a compound RTCP packet into its members.

    Raises:
        RtcpError: the bytes are not RTCP (version, lengths, padding, field values).
    """
    buf = bytes(data)
    packets: list[RtcpPacket] = []
    offset = 0
    total = len(buf)
    if total == 0:
        raise RtcpError("RTCP packet is empty: expected at least a 4-byte header")
    while offset < total:
        left = total - offset
        if left < 4:
            raise RtcpError(f"RTCP packet truncated: header needs 4 bytes, {left} left")
        first, packet_type, words = _HEADER.unpack_from(buf, offset)
        version = first >> 6
        if version != 2:
            raise RtcpError(f"RTCP version is {version}, expected 2: this is not RTCP")
        size = (words + 1) * 4
        if size > left:
            raise RtcpError(f"RTCP packet truncated: header says {size} bytes, {left} left")
        end = offset + size
        if first & 0x20:
            padding = buf[end - 1]
            if padding == 0 or padding > size - 4:
                raise RtcpError(f"RTCP padding count {padding} is invalid for a {size}-byte packet")
            end -= padding
        count = first & 0x1F
        packets.append(_parse_one(buf, packet_type, count, offset + 4, end))
        offset += size
    return packets


def _need(buf_end: int, offset: int, size: int, what: str) -> None:
    left = buf_end - offset
    if left < size:
        raise RtcpError(f"RTCP {what} truncated: needs {size} bytes, {left} left")


def _parse_one(buf: bytes, packet_type: int, count: int, start: int, end: int) -> RtcpPacket:
    if packet_type == PT_SR:
        _need(end, start, 24 + 24 * count, f"SR with {count} report blocks")
        ssrc, ntp, rtp_ts, packets, octets = _SR_INFO.unpack_from(buf, start)
        reports = _report_blocks(buf, start + 24, count)
        return SenderReport(ssrc, ntp, rtp_ts, packets, octets, reports)
    if packet_type == PT_RR:
        _need(end, start, 4 + 24 * count, f"RR with {count} report blocks")
        (ssrc,) = _U32.unpack_from(buf, start)
        return ReceiverReport(ssrc, _report_blocks(buf, start + 4, count))
    if packet_type == PT_SDES:
        return _parse_sdes(buf, count, start, end)
    if packet_type == PT_BYE:
        return _parse_bye(buf, count, start, end)
    if packet_type == PT_RTPFB and count == FMT_NACK:
        _need(end, start, 8, "NACK")
        sender, media = _TWO_U32.unpack_from(buf, start)
        lost: list[int] = []
        for pos in range(start + 8, end - 3, 4):
            pid, blp = _NACK_FCI.unpack_from(buf, pos)
            lost.append(pid)
            lost.extend((pid + bit + 1) & 0xFFFF for bit in range(16) if blp >> bit & 1)
        return GenericNack(sender, media, lost)
    if packet_type == PT_RTPFB and count == FMT_TWCC:
        return _parse_twcc(buf, start, end)
    if packet_type == PT_PSFB and count == FMT_PLI:
        _need(end, start, 8, "PLI")
        return PictureLossIndication(*_TWO_U32.unpack_from(buf, start))
    if packet_type == PT_PSFB and count == FMT_FIR:
        _need(end, start, 8, "FIR")
        sender, _ = _TWO_U32.unpack_from(buf, start)
        entries = [_FIR_FCI.unpack_from(buf, pos) for pos in range(start + 8, end - 7, 8)]
        return FullIntraRequest(sender, [(ssrc, seq) for ssrc, seq in entries])
    if (
        packet_type == PT_PSFB
        and count == FMT_AFB
        and end - start >= 12
        and buf[start + 8 : start + 12] == _REMB_ID
    ):
        _need(end, start, 16, "REMB")
        sender, _ = _TWO_U32.unpack_from(buf, start)
        _, num, high, low = _REMB_HEAD.unpack_from(buf, start + 8)
        _need(end, start + 16, 4 * num, f"REMB with {num} SSRCs")
        bitrate = (((high & 0x03) << 16) | low) << (high >> 2)
        ssrcs = [_U32.unpack_from(buf, start + 16 + 4 * k)[0] for k in range(num)]
        return Remb(sender, bitrate, ssrcs)
    return UnknownRtcp(packet_type, count, buf[start:end])


def _report_blocks(buf: bytes, offset: int, count: int) -> list[ReportBlock]:
    blocks = []
    for k in range(count):
        ssrc, loss, highest, jitter, lsr, dlsr = _REPORT_BLOCK.unpack_from(buf, offset + 24 * k)
        lost = loss & 0xFFFFFF
        if lost & 0x800000:
            lost -= 1 << 24
        blocks.append(ReportBlock(ssrc, loss >> 24, lost, highest, jitter, lsr, dlsr))
    return blocks


def _parse_sdes(buf: bytes, count: int, start: int, end: int) -> SourceDescription:
    chunks: list[tuple[int, list[tuple[int, bytes]]]] = []
    pos = start
    for k in range(count):
        _need(end, pos, 4, f"SDES chunk {k}")
        (ssrc,) = _U32.unpack_from(buf, pos)
        pos += 4
        items: list[tuple[int, bytes]] = []
        while True:
            _need(end, pos, 1, f"SDES chunk {k} item list")
            item_type = buf[pos]
            if item_type == 0:
                # "terminated by one or more null octets" up to the 32-bit boundary
                pad = 4 - (pos - start) % 4
                _need(end, pos, pad, f"SDES chunk {k} padding")
                pos += pad
                break
            _need(end, pos, 2, f"SDES chunk {k} item")
            length = buf[pos + 1]
            _need(end, pos + 2, length, f"SDES item of type {item_type}")
            items.append((item_type, buf[pos + 2 : pos + 2 + length]))
            pos += 2 + length
        chunks.append((ssrc, items))
    return SourceDescription(chunks)


def _parse_bye(buf: bytes, count: int, start: int, end: int) -> Bye:
    _need(end, start, 4 * count, f"BYE with {count} sources")
    ssrcs = [_U32.unpack_from(buf, start + 4 * k)[0] for k in range(count)]
    pos = start + 4 * count
    reason = b""
    if pos < end:
        length = buf[pos]
        _need(end, pos + 1, length, "BYE reason")
        reason = buf[pos + 1 : pos + 1 + length]
    return Bye(ssrcs, reason)


def _parse_twcc(buf: bytes, start: int, end: int) -> TransportCcFeedback:
    _need(end, start, 16, "transport-cc feedback header")
    sender, media = _TWO_U32.unpack_from(buf, start)
    base, count, ref_and_count = _TWCC_HEAD.unpack_from(buf, start + 8)
    reference_time = ref_and_count >> 8
    if reference_time & 0x800000:
        reference_time -= 1 << 24
    symbols: list[int] = []
    pos = start + 16
    while len(symbols) < count:
        _need(end, pos, 2, f"transport-cc status chunk for packet {len(symbols)} of {count}")
        (chunk,) = _U16.unpack_from(buf, pos)
        pos += 2
        if not chunk & 0x8000:
            run = chunk & 0x1FFF
            if run == 0:
                raise RtcpError("transport-cc run length chunk with a run of 0 packets")
            symbols.extend([(chunk >> 13) & 0x03] * min(run, count - len(symbols)))
        elif not chunk & 0x4000:
            symbols.extend((chunk >> (13 - k)) & 1 for k in range(14))
        else:
            symbols.extend((chunk >> (12 - 2 * k)) & 0x03 for k in range(7))
    del symbols[count:]
    packets: list[tuple[int, int | None]] = []
    for i, symbol in enumerate(symbols):
        seq = (base + i) & 0xFFFF
        if symbol == 0:
            packets.append((seq, None))
        elif symbol == 1:
            _need(end, pos, 1, f"transport-cc receive delta of packet {seq}")
            packets.append((seq, buf[pos] * _TWCC_DELTA_US))
            pos += 1
        elif symbol == 2:
            _need(end, pos, 2, f"transport-cc receive delta of packet {seq}")
            packets.append((seq, _I16.unpack_from(buf, pos)[0] * _TWCC_DELTA_US))
            pos += 2
        else:
            raise RtcpError(f"transport-cc status of packet {seq} uses the reserved symbol 3")
    return TransportCcFeedback(sender, media, base, reference_time, ref_and_count & 0xFF, packets)
