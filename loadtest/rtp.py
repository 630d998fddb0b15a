"""RTP packets for the load-test clients: build, packetize VP8 and Opus, read back.

Headers follow RFC 3550 section 5.1 with one-byte header extensions (RFC 8285
section 4.2): ``sdes:mid`` (RFC 8843 section 15) and ``abs-send-time``
(webrtc.org, 6.18 fixed-point seconds). VP8 payloads carry the RFC 7741
section 4.2 payload descriptor with a 15-bit PictureID. Every payload ends in
a 12-byte trailer (magic + CLOCK_MONOTONIC send time in ns) so a subscriber
can measure forwarding latency even when the SFU rewrites header extensions;
all clients and servers of a run share one machine and so one clock.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

RTP_HEADER = struct.Struct("!BBHII")
RTCP_HEADER = struct.Struct("!BBH")
SSRC = struct.Struct("!I")
RTCP_PSFB = 206  # RFC 4585 section 6.3 payload-specific feedback
PSFB_PLI = 1  # RFC 4585 section 6.3.1
PSFB_FIR = 4  # RFC 5104 section 4.3.1
EXT_PROFILE = struct.Struct("!HH")
TRAILER = struct.Struct("!4sQ")
TRAILER_MAGIC = b"MFLT"
TRAILER_SIZE = TRAILER.size

VP8_DESCRIPTOR_SIZE = 4
DEFAULT_MAX_PAYLOAD = 1100

MID_EXT_ID = 1
ABS_SEND_TIME_EXT_ID = 2
MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
ABS_SEND_TIME_URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"


def abs_send_time(now_ns: int) -> int:
    """24-bit abs-send-time: seconds in 6.18 fixed point, wrapping every 64 s."""
    return ((now_ns << 18) // 1_000_000_000) & 0xFFFFFF


def vp8_descriptor(picture_id: int, start: bool) -> bytes:
    """RFC 7741 section 4.2: X=1, S on a partition's first packet, PID=0; I=1, M=1."""
    return bytes(
        (
            0x90 if start else 0x80,
            0x80,
            0x80 | ((picture_id >> 8) & 0x7F),
            picture_id & 0xFF,
        )
    )


def packetize_vp8(
    frame: bytes, picture_id: int, max_payload: int = DEFAULT_MAX_PAYLOAD
) -> list[bytes]:
    """Split one encoded VP8 frame into RTP payloads of at most ``max_payload`` bytes.

    ``max_payload`` counts the descriptor and the latency trailer the sender adds.
    """
    chunk = max_payload - VP8_DESCRIPTOR_SIZE - TRAILER_SIZE
    if chunk <= 0:
        raise ValueError(f"max_payload {max_payload} is too small; use at least 64 bytes")
    if not frame:
        raise ValueError("cannot packetize an empty VP8 frame")
    count = -(-len(frame) // chunk)
    # Even split, so the last packet is not a runt.
    size = -(-len(frame) // count)
    return [
        vp8_descriptor(picture_id, start=offset == 0) + frame[offset : offset + size]
        for offset in range(0, len(frame), size)
    ]


class RtpSender:
    """Fresh RTP headers for one outgoing stream (one SSRC)."""

    __slots__ = ("_ext_bytes", "clock_rate", "mid", "payload_type", "seq", "ssrc")

    def __init__(
        self, ssrc: int, payload_type: int, clock_rate: int, mid: str, first_seq: int = 0
    ) -> None:
        if not 1 <= len(mid.encode()) <= 16:
            raise ValueError(f"mid {mid!r} must be 1 to 16 bytes long")
        self.ssrc = ssrc
        self.payload_type = payload_type
        self.clock_rate = clock_rate
        self.mid = mid
        self.seq = first_seq & 0xFFFF
        mid_bytes = mid.encode()
        self._ext_bytes = bytes([(MID_EXT_ID << 4) | (len(mid_bytes) - 1)]) + mid_bytes

    def build(self, payload: bytes, timestamp: int, marker: bool, now_ns: int) -> bytes:
        """One RTP packet: header, extensions, ``payload`` and the send-time trailer."""
        elements = (
            self._ext_bytes
            + bytes([(ABS_SEND_TIME_EXT_ID << 4) | 2])
            + abs_send_time(now_ns).to_bytes(3, "big")
        )
        padding = -len(elements) % 4
        ext = EXT_PROFILE.pack(0xBEDE, (len(elements) + padding) // 4) + elements
        header = RTP_HEADER.pack(
            0x90,  # V=2, X=1
            (0x80 if marker else 0) | self.payload_type,
            self.seq,
            timestamp & 0xFFFFFFFF,
            self.ssrc,
        )
        self.seq = (self.seq + 1) & 0xFFFF
        return header + ext + b"\x00" * padding + payload + TRAILER.pack(TRAILER_MAGIC, now_ns)


def is_rtcp(packet: bytes) -> bool:
    """RFC 5761 section 4: RTCP packet types 192..223 sit where RTP has M+PT."""
    return len(packet) >= 2 and 192 <= packet[1] <= 223


def rtp_payload_bounds(packet: bytes) -> tuple[int, int]:
    """Offsets (start, end) of an RTP packet's payload; raises ValueError if malformed."""
    if len(packet) < 12 or packet[0] >> 6 != 2:
        raise ValueError("not an RTP version 2 packet")
    start = 12 + 4 * (packet[0] & 0x0F)
    if packet[0] & 0x10:
        if len(packet) < start + 4:
            raise ValueError("RTP header extension is truncated")
        _, words = EXT_PROFILE.unpack_from(packet, start)
        start += 4 + 4 * words
    end = len(packet)
    if packet[0] & 0x20:
        end -= packet[-1]
    if start > end:
        raise ValueError("RTP header is longer than the packet")
    return start, end


def read_send_time_ns(packet: bytes) -> int | None:
    """The trailer's send time of a decrypted RTP packet, or None if it has none."""
    try:
        start, end = rtp_payload_bounds(packet)
    except ValueError:
        return None
    if end - start < TRAILER_SIZE:
        return None
    magic, sent_ns = TRAILER.unpack_from(packet, end - TRAILER_SIZE)
    return int(sent_ns) if magic == TRAILER_MAGIC else None


def iter_header_extensions(packet: bytes) -> Iterator[tuple[int, bytes]]:
    """(id, value) of each one-byte header extension element (RFC 8285 section 4.2)."""
    if len(packet) < 16 or not packet[0] & 0x10:
        return
    offset = 12 + 4 * (packet[0] & 0x0F)
    profile, words = EXT_PROFILE.unpack_from(packet, offset)
    if profile != 0xBEDE:
        return
    pos = offset + 4
    end = pos + 4 * words
    while pos < end:
        byte = packet[pos]
        if byte == 0:
            pos += 1
            continue
        ext_id, length = byte >> 4, (byte & 0x0F) + 1
        if ext_id == 15:
            return
        yield ext_id, packet[pos + 1 : pos + 1 + length]
        pos += 1 + length


def keyframe_requests(compound: bytes) -> set[int]:
    """Media SSRCs a decrypted compound RTCP packet asks keyframes for (PLI or FIR)."""
    wanted: set[int] = set()
    offset = 0
    while offset + 4 <= len(compound):
        first, packet_type, words = RTCP_HEADER.unpack_from(compound, offset)
        end = offset + 4 * (words + 1)
        if first >> 6 != 2 or end > len(compound):
            break
        fmt = first & 0x1F
        if packet_type == RTCP_PSFB and fmt == PSFB_PLI and end >= offset + 12:
            wanted.add(SSRC.unpack_from(compound, offset + 8)[0])
        elif packet_type == RTCP_PSFB and fmt == PSFB_FIR:
            # FCI entries of 8 bytes: the SSRC asked for, then seq nr and padding.
            for fci in range(offset + 12, end - 7, 8):
                wanted.add(SSRC.unpack_from(compound, fci)[0])
        offset = end
    return wanted
