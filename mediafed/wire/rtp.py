"""RTP header view and in-place rewrite for the forwarding path (RFC 3550 §5.1, RFC 8285).

Nothing here builds a per-packet object: headers are read with precompiled
``struct.Struct.unpack_from`` and written with ``pack_into`` on a buffer the
caller owns. Payloads stay where they are and are addressed by offset.

Header extensions (RFC 8285) come in two forms: one-byte (profile ``0xBEDE``,
ids 1-14) and two-byte (profile ``0x100x``, ids 1-255). "The local identifier
value 15 is reserved for future extension and MUST NOT be used as an
identifier"; an element with id 15 ends parsing of the block.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from mediafed.errors import WireError

HEADER = struct.Struct("!BBHII")
"""byte0 (V P X CC), byte1 (M PT), sequence number, timestamp, SSRC."""
SEQ_TS_SSRC = struct.Struct("!HII")
"""Sequence number, timestamp and SSRC: written together at offset 2."""
U16 = struct.Struct("!H")
U32 = struct.Struct("!I")
EXT_HEADER = struct.Struct("!HH")

HEADER_SIZE = 12
ONE_BYTE_PROFILE = 0xBEDE
TWO_BYTE_PROFILE_MASK = 0xFFF0
TWO_BYTE_PROFILE = 0x1000

# Header extension URIs mediafed understands (RFC 8285 §5 / WebRTC usage).
URI_MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
URI_RID = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
URI_REPAIRED_RID = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"
URI_AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
URI_ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
URI_TRANSPORT_CC = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"


class RtpError(WireError):
    """An RTP packet that does not parse."""


def is_rtcp(buf: bytes | bytearray | memoryview) -> bool:
    """RFC 5761 §4: with rtcp-mux, payload types 64-95 (packet types 192-223) are RTCP."""
    return 192 <= buf[1] <= 223


def payload_offset(buf: bytes | bytearray | memoryview, length: int) -> int:
    """Offset of the payload: after CSRCs and the extension block. Raises RtpError."""
    if length < HEADER_SIZE:
        raise RtpError(f"RTP packet truncated: {length} bytes, the fixed header needs 12")
    first = buf[0]
    if first >> 6 != 2:
        raise RtpError(f"RTP version {first >> 6} is not 2")
    offset = HEADER_SIZE + 4 * (first & 0x0F)
    if first & 0x10:
        if offset + 4 > length:
            raise RtpError("RTP packet truncated inside the header extension header")
        words = U16.unpack_from(buf, offset + 2)[0]
        offset += 4 + 4 * words
    if offset > length:
        raise RtpError(f"RTP header claims {offset} bytes, packet has {length}")
    return offset


def payload_end(buf: bytes | bytearray | memoryview, length: int) -> int:
    """End of the payload: before RFC 3550 padding, if the P bit is set."""
    if buf[0] & 0x20:
        pad = buf[length - 1]
        if pad == 0 or pad > length - HEADER_SIZE:
            raise RtpError(f"RTP padding length {pad} is impossible for a {length}-byte packet")
        return length - pad
    return length


def padding_only(buf: bytes | bytearray | memoryview, length: int) -> bool:
    """An RTP packet with the P bit whose payload is all padding (RFC 3550 §5.1): a
    bandwidth probe. False for a malformed one (the checks of media/_forward.c)."""
    if not buf[0] & 0x20:
        return False
    try:
        return payload_end(buf, length) == payload_offset(buf, length)
    except RtpError:
        return False


def iter_extensions(
    buf: bytes | bytearray | memoryview, length: int
) -> Iterator[tuple[int, int, int]]:
    """Yield ``(id, value_offset, value_length)`` for each header extension element.

    Off the hot path this is the convenient view; the forwarding path uses
    :func:`extension_id_offsets` once per received packet.
    """
    first = buf[0]
    if not first & 0x10:
        return
    start = HEADER_SIZE + 4 * (first & 0x0F)
    if start + 4 > length:
        raise RtpError("RTP packet truncated inside the header extension header")
    profile, words = EXT_HEADER.unpack_from(buf, start)
    pos = start + 4
    end = pos + 4 * words
    if end > length:
        raise RtpError(f"RTP header extension claims {4 * words} bytes past the packet end")
    if profile == ONE_BYTE_PROFILE:
        while pos < end:
            byte = buf[pos]
            if byte == 0:  # padding
                pos += 1
                continue
            ext_id = byte >> 4
            if ext_id == 15:
                return
            size = (byte & 0x0F) + 1
            if pos + 1 + size > end:
                raise RtpError(f"RTP one-byte extension {ext_id} overruns the extension block")
            yield ext_id, pos + 1, size
            pos += 1 + size
    elif profile & TWO_BYTE_PROFILE_MASK == TWO_BYTE_PROFILE:
        while pos < end:
            ext_id = buf[pos]
            if ext_id == 0:
                pos += 1
                continue
            if pos + 2 > end:
                raise RtpError("RTP two-byte extension header overruns the extension block")
            size = buf[pos + 1]
            if pos + 2 + size > end:
                raise RtpError(f"RTP two-byte extension {ext_id} overruns the extension block")
            yield ext_id, pos + 2, size
            pos += 2 + size


def extension_value(buf: bytes | bytearray | memoryview, length: int, wanted: int) -> bytes | None:
    """The raw value of extension ``wanted`` (e.g. a mid or rid string), or None."""
    for ext_id, offset, size in iter_extensions(buf, length):
        if ext_id == wanted:
            return bytes(buf[offset : offset + size])
    return None


def find_extension(buf: bytes | bytearray | memoryview, length: int, ext_id: int, size: int) -> int:
    """Where the ``size``-byte value of header extension ``ext_id`` starts, or -1.

    One-byte and two-byte forms (RFC 8285); nothing past ``length`` is read, and
    a malformed block is -1. ``transport/_transport.c``'s ``find_extension`` is its twin."""
    if not buf[0] & 0x10:
        return -1
    start = HEADER_SIZE + 4 * (buf[0] & 0x0F)
    if start + 4 > length:
        return -1
    profile, words = EXT_HEADER.unpack_from(buf, start)
    pos = start + 4
    end = pos + 4 * words
    if end > length:
        return -1
    if profile == ONE_BYTE_PROFILE:
        while pos < end:
            byte = buf[pos]
            if byte == 0:
                pos += 1
                continue
            found, found_size = byte >> 4, (byte & 0x0F) + 1
            if found == 15 or pos + 1 + found_size > end:
                return -1
            if found == ext_id:
                return pos + 1 if found_size == size else -1
            pos += 1 + found_size
    elif profile & TWO_BYTE_PROFILE_MASK == TWO_BYTE_PROFILE:
        while pos + 1 < end:
            found = buf[pos]
            if found == 0:
                pos += 1
                continue
            found_size = buf[pos + 1]
            if pos + 2 + found_size > end:
                return -1
            if found == ext_id:
                return pos + 2 if found_size == size else -1
            pos += 2 + found_size
    return -1


def remap_extension_ids(buf: bytearray | memoryview, length: int, table: bytes) -> None:
    """Rewrite one-byte extension ids in place through ``table`` (16 entries).

    ``table[old_id]`` is the new id; ids a receiver has not negotiated map to
    an id it does not know, which RFC 8285 §4.1.1 requires it to ignore. Ids
    below 16 of the two-byte form are rewritten the same way. Nothing past
    ``length`` is read or written. ``media/_forward.c``'s ``remap_ids`` is its twin.
    """
    first = buf[0]
    if not first & 0x10:
        return
    start = HEADER_SIZE + 4 * (first & 0x0F)
    if start + 4 > length:
        return
    profile, words = EXT_HEADER.unpack_from(buf, start)
    pos = start + 4
    end = min(pos + 4 * words, length)
    if profile == ONE_BYTE_PROFILE:
        while pos < end:
            byte = buf[pos]
            if byte == 0:
                pos += 1
                continue
            ext_id = byte >> 4
            if ext_id == 15:
                return
            buf[pos] = (table[ext_id] << 4) | (byte & 0x0F)
            pos += 2 + (byte & 0x0F)
    elif profile & TWO_BYTE_PROFILE_MASK == TWO_BYTE_PROFILE:
        while pos + 1 < end:
            ext_id = buf[pos]
            if ext_id == 0:
                pos += 1
                continue
            if ext_id < 16:
                buf[pos] = table[ext_id]
            pos += 2 + buf[pos + 1]


def build_header(
    payload_type: int,
    sequence: int,
    timestamp: int,
    ssrc: int,
    *,
    marker: bool = False,
    extensions: list[tuple[int, bytes]] | None = None,
) -> bytearray:
    """A fresh RTP header (with one-byte extensions); used off the hot path and in tests."""
    header = bytearray(HEADER_SIZE)
    HEADER.pack_into(
        header, 0, 0x80, (0x80 if marker else 0) | payload_type, sequence, timestamp, ssrc
    )
    if extensions:
        block = bytearray()
        for ext_id, value in extensions:
            if not 1 <= ext_id <= 14 or not 1 <= len(value) <= 16:
                raise ValueError("one-byte extensions need ids 1-14 and 1-16 byte values")
            block.append((ext_id << 4) | (len(value) - 1))
            block += value
        block += bytes(-len(block) % 4)
        header[0] |= 0x10
        header += EXT_HEADER.pack(ONE_BYTE_PROFILE, len(block) // 4) + block
    return header


def remap_and_scan(
    buf: bytearray | memoryview, length: int, table: bytes, twcc_id: int, level_id: int
) -> tuple[int, int]:
    """One pass over one-byte extensions for the forwarding path.

    Reads the transport-wide sequence number (extension ``twcc_id``) and the
    audio level (``level_id``, RFC 6464: the low 7 bits are -dBov), then
    rewrites every id in place through ``table`` (see :func:`remap_extension_ids`).
    Returns ``(twcc_seq or -1, level or -1)``. Ids are the publisher's.
    """
    twcc = -1
    level = -1
    first = buf[0]
    if not first & 0x10:
        return twcc, level
    start = HEADER_SIZE + 4 * (first & 0x0F)
    if start + 4 > length:
        return twcc, level
    profile, words = EXT_HEADER.unpack_from(buf, start)
    if profile != ONE_BYTE_PROFILE:
        return twcc, level
    pos = start + 4
    end = pos + 4 * words
    if end > length:
        return twcc, level
    while pos < end:
        byte = buf[pos]
        if byte == 0:
            pos += 1
            continue
        ext_id = byte >> 4
        if ext_id == 15:
            break
        size = (byte & 0x0F) + 1
        if pos + 1 + size > end:
            break
        if ext_id == twcc_id and size == 2:
            twcc = (buf[pos + 1] << 8) | buf[pos + 2]
        elif ext_id == level_id:
            level = buf[pos + 1] & 0x7F
        buf[pos] = (table[ext_id] << 4) | (byte & 0x0F)
        pos += 1 + size
    return twcc, level
