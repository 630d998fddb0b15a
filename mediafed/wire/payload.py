"""Codec payload inspection for forwarding: keyframe detection and VP8 picture id rewriting.

Reads only the RTP payload descriptors and the first header bytes the relay must understand
to switch layers and answer keyframe requests, never the coded picture:

* VP8: RFC 7741 section 4.2 (payload descriptor) and 4.3 (payload header, the P bit);
* H.264: RFC 6184 section 5.2-5.8 (single NAL unit, STAP-A, FU-A);
* VP9: draft-ietf-payload-vp9-16 section 4.2 (payload descriptor);
* Opus: RFC 6716 section 3.1 (TOC byte), carried as RFC 7587 says.

Every function takes ``(buf, offset, end)`` so the hot path never slices a datagram. The
``*_is_keyframe`` functions never raise: a payload too short to say is not a keyframe. The
descriptor parser raises :class:`PayloadError` on truncated input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from mediafed.errors import WireError

__all__ = [
    "PayloadError",
    "Vp8Descriptor",
    "h264_is_keyframe",
    "is_keyframe",
    "opus_toc",
    "vp8_descriptor",
    "vp8_is_keyframe",
    "vp8_rewrite_picture_id",
    "vp9_is_keyframe",
    "vp9_layer",
]

Buffer: TypeAlias = bytes | bytearray | memoryview

# H.264 NAL unit types (RFC 6184 table 1, ITU-T H.264 table 7-1).
_NAL_IDR = 5
_NAL_SPS = 7
_NAL_STAP_A = 24
_NAL_FU_A = 28


class PayloadError(WireError):
    """An RTP payload too short or inconsistent for its codec's payload format."""


@dataclass(frozen=True, slots=True)
class Vp8Descriptor:
    """The VP8 payload descriptor (RFC 7741 section 4.2) of one RTP packet."""

    picture_id: int | None
    picture_id_bits: int  # 0 (absent), 7 or 15
    tl0picidx: int | None
    tid: int | None
    keyidx: int | None
    start_of_partition: bool
    partition_index: int
    header_size: int  # bytes of descriptor before the VP8 payload
    is_keyframe: bool  # S=1, PID=0 and the payload header's P bit is 0


def vp8_descriptor(buf: Buffer, offset: int, end: int) -> Vp8Descriptor:
    """Parse the VP8 payload descriptor starting at ``offset``.

    Raises:
        PayloadError: the payload ends inside the descriptor.
    """
    end = min(end, len(buf))
    if offset < 0 or offset >= end:
        raise PayloadError("VP8 payload is empty: expected a payload descriptor")
    first = buf[offset]
    pos = offset + 1
    picture_id: int | None = None
    picture_id_bits = 0
    tl0picidx: int | None = None
    tid: int | None = None
    keyidx: int | None = None
    if first & 0x80:  # X: extended control bits present
        if pos >= end:
            raise PayloadError("VP8 payload descriptor truncated after the X bit")
        ext = buf[pos]
        pos += 1
        if ext & 0x80:  # I: picture id
            if pos >= end:
                raise PayloadError("VP8 payload descriptor truncated in the picture id")
            if buf[pos] & 0x80:  # M: 15-bit picture id
                if pos + 1 >= end:
                    raise PayloadError("VP8 payload descriptor truncated in a 15-bit picture id")
                picture_id = ((buf[pos] & 0x7F) << 8) | buf[pos + 1]
                picture_id_bits = 15
                pos += 2
            else:
                picture_id = buf[pos]
                picture_id_bits = 7
                pos += 1
        if ext & 0x40:  # L: TL0PICIDX
            if pos >= end:
                raise PayloadError("VP8 payload descriptor truncated in TL0PICIDX")
            tl0picidx = buf[pos]
            pos += 1
        if ext & 0x30:  # T or K: TID/Y/KEYIDX byte
            if pos >= end:
                raise PayloadError("VP8 payload descriptor truncated in TID/KEYIDX")
            if ext & 0x20:
                tid = buf[pos] >> 6
            if ext & 0x10:
                keyidx = buf[pos] & 0x1F
            pos += 1
    start = bool(first & 0x10)
    partition = first & 0x07
    keyframe = start and partition == 0 and pos < end and not buf[pos] & 0x01
    return Vp8Descriptor(
        picture_id,
        picture_id_bits,
        tl0picidx,
        tid,
        keyidx,
        start,
        partition,
        pos - offset,
        keyframe,
    )


def _vp8_header_size(buf: Buffer, offset: int, end: int) -> int:
    """Descriptor length, or -1 if the payload ends inside it."""
    pos = offset + 1
    if buf[offset] & 0x80:
        if pos >= end:
            return -1
        ext = buf[pos]
        pos += 1
        if ext & 0x80:
            if pos >= end:
                return -1
            pos += 2 if buf[pos] & 0x80 else 1
        if ext & 0x40:
            pos += 1
        if ext & 0x30:
            pos += 1
    return pos - offset


def vp8_is_keyframe(buf: Buffer, offset: int, end: int) -> bool:
    """True for the first packet of a VP8 key frame (RFC 7741 section 4.3: P bit 0)."""
    end = min(end, len(buf))
    if offset >= end:
        return False
    first = buf[offset]
    if first & 0x17 != 0x10:  # S=1 and PID=0: the packet starts the first partition
        return False
    size = _vp8_header_size(buf, offset, end)
    if size < 0 or offset + size >= end:
        return False
    return not buf[offset + size] & 0x01


def vp8_rewrite_picture_id(
    buf: bytearray, offset: int, picture_id: int, tl0picidx: int | None
) -> None:
    """Write a new 15-bit picture id (and TL0PICIDX, when present) in place.

    Only a descriptor that already carries a 15-bit picture id is changed, so the packet keeps
    its length; anything else is left untouched.
    """
    end = len(buf)
    if offset + 3 >= end or not buf[offset] & 0x80:
        return
    ext = buf[offset + 1]
    pos = offset + 2
    if not ext & 0x80 or not buf[pos] & 0x80:
        return
    buf[pos] = 0x80 | ((picture_id >> 8) & 0x7F)
    buf[pos + 1] = picture_id & 0xFF
    pos += 2
    if tl0picidx is not None and ext & 0x40 and pos < end:
        buf[pos] = tl0picidx & 0xFF


def _h264_nal_is_key(nal_type: int) -> bool:
    return nal_type in (_NAL_IDR, _NAL_SPS)


def h264_is_keyframe(buf: Buffer, offset: int, end: int) -> bool:
    """True if the packet starts an IDR picture or carries an SPS (RFC 6184)."""
    end = min(end, len(buf))
    if offset >= end:
        return False
    nal_type = buf[offset] & 0x1F
    if nal_type == _NAL_STAP_A:
        pos = offset + 1
        while pos + 2 < end:
            size = (buf[pos] << 8) | buf[pos + 1]
            if size == 0 or pos + 2 + size > end:
                return False
            if _h264_nal_is_key(buf[pos + 2] & 0x1F):
                return True
            pos += 2 + size
        return False
    if nal_type == _NAL_FU_A:
        if offset + 1 >= end:
            return False
        fu_header = buf[offset + 1]
        return bool(fu_header & 0x80) and _h264_nal_is_key(fu_header & 0x1F)
    return _h264_nal_is_key(nal_type)


def vp9_is_keyframe(buf: Buffer, offset: int, end: int) -> bool:
    """True for the start of a VP9 key picture's base spatial layer (VP9 RTP draft, 4.2).

    B (beginning of frame) must be set and P (inter-picture predicted) clear; when layer
    indices are present the spatial layer id must be 0.
    """
    end = min(end, len(buf))
    if offset >= end:
        return False
    first = buf[offset]
    if first & 0x48 != 0x08:  # P == 0 and B == 1
        return False
    if not first & 0x20:  # L: no layer indices, a single layer
        return True
    pos = offset + 1
    if first & 0x80:  # I: picture id, 7 or 15 bits
        if pos >= end:
            return False
        pos += 2 if buf[pos] & 0x80 else 1
    if pos >= end:
        return False
    spatial_id = (buf[pos] >> 1) & 0x07
    return spatial_id == 0


def payload_span(buf: Buffer, length: int) -> tuple[int, int] | None:
    """(start, end) of the payload of a whole RTP packet: after CSRCs and the header
    extension, before padding; None when it has none or the header is unreadable."""
    if length < 12 or length > len(buf):
        return None
    pos = 12 + 4 * (buf[0] & 0x0F)
    if buf[0] & 0x10:
        if pos + 4 > length:
            return None
        pos += 4 + 4 * ((buf[pos + 2] << 8) | buf[pos + 3])
    end = length
    if buf[0] & 0x20:
        pad = buf[length - 1]
        if pad == 0 or pad > length - 12:
            return None
        end = length - pad
    if pos >= end:
        return None
    return pos, end


def vp9_layer(buf: Buffer, length: int) -> tuple[int, int, bool, bool, bool, bool] | None:
    """(spatial layer id, temporal layer id, B: a layer frame begins, E: it ends, a
    key picture begins, U: a temporal switching-up point) of the VP9 payload
    descriptor in a whole RTP packet (VP9 RTP draft, 4.2), or None without layer
    indices (L clear: one layer) or when unreadable. Never raises."""
    bounds = payload_span(buf, length)
    if bounds is None:
        return None
    pos, end = bounds
    first = buf[pos]
    if not first & 0x20:
        return None
    pos += 1
    if first & 0x80:  # I: picture id, 7 or 15 bits
        if pos >= end:
            return None
        pos += 2 if buf[pos] & 0x80 else 1
    if pos >= end:
        return None
    indices = buf[pos]
    spatial, temporal = (indices >> 1) & 0x07, indices >> 5
    begins, ends = bool(first & 0x08), bool(first & 0x04)
    key = begins and spatial == 0 and not first & 0x40
    return spatial, temporal, begins, ends, key, bool(indices & 0x10)


OBU_SEQUENCE_HEADER = 1


def av1_is_keyframe(buf: Buffer, offset: int, end: int) -> bool:
    """True for the first packet of an AV1 key frame (RTP payload format for AV1, 4.4).

    The aggregation header's N bit marks the first packet of a coded video sequence
    (a key frame with its sequence header) and Z that the packet continues an OBU;
    a sender that leaves N clear is still recognised by its first OBU being a
    sequence header (W == 1: one element without a length; otherwise a LEB128
    length precedes the first element).
    """
    end = min(end, len(buf))
    if offset >= end:
        return False
    header = buf[offset]
    if header & 0x80:  # Z: the first element continues an OBU of the previous packet
        return False
    if header & 0x08:  # N
        return True
    pos = offset + 1
    if (header >> 4) & 0x03 != 1:
        for _ in range(8):  # the first element's LEB128 length
            if pos >= end:
                return False
            more = buf[pos] & 0x80
            pos += 1
            if not more:
                break
        else:
            return False
    if pos >= end:
        return False
    return (buf[pos] >> 3) & 0x0F == OBU_SEQUENCE_HEADER


def opus_toc(buf: Buffer, offset: int) -> tuple[int, bool, int]:
    """The Opus TOC byte (RFC 6716 section 3.1): (config 0..31, stereo, frame count code 0..3).

    Raises:
        PayloadError: the payload is empty.
    """
    if offset >= len(buf) or offset < 0:
        raise PayloadError("Opus payload is empty: expected a TOC byte")
    toc = buf[offset]
    return toc >> 3, bool(toc & 0x04), toc & 0x03


def is_keyframe(mime_lower: str, buf: Buffer, offset: int, end: int) -> bool:
    """Keyframe test by lower-case MIME type; False for codecs without keyframes."""
    if mime_lower == "video/vp8":
        return vp8_is_keyframe(buf, offset, end)
    if mime_lower == "video/h264":
        return h264_is_keyframe(buf, offset, end)
    if mime_lower == "video/vp9":
        return vp9_is_keyframe(buf, offset, end)
    if mime_lower == "video/av1":
        return av1_is_keyframe(buf, offset, end)
    return False


@dataclass(frozen=True, slots=True)
class Vp8Fields:
    """Where a VP8 packet's picture id, TL0PICIDX and KEYIDX sit (-1: absent)."""

    pid_at: int
    pid_bits: int
    pid: int
    tl0_at: int
    tl0: int
    key_at: int
    keyidx: int


NO_VP8_FIELDS = Vp8Fields(-1, 0, 0, -1, 0, -1, 0)


def vp8_fields(buf: Buffer, length: int) -> Vp8Fields:
    """The VP8 descriptor fields a forwarder continues across simulcast layers
    (RFC 7741 section 4.2), found in a whole RTP packet; ``media/_forward.c``'s
    ``vp8_parse`` is its twin, byte for byte. Never raises."""
    bounds = payload_span(buf, length)
    if bounds is None:
        return NO_VP8_FIELDS
    pos, end = bounds
    first = buf[pos]
    pos += 1
    if not first & 0x80 or pos >= end:
        return NO_VP8_FIELDS
    ext = buf[pos]
    pos += 1
    pid_at, pid_bits, pid = -1, 0, 0
    tl0_at, tl0, key_at, keyidx = -1, 0, -1, 0
    if ext & 0x80:
        if pos >= end:
            return NO_VP8_FIELDS
        if buf[pos] & 0x80:
            if pos + 1 >= end:
                return NO_VP8_FIELDS
            pid_at, pid_bits, pid = pos, 15, ((buf[pos] & 0x7F) << 8) | buf[pos + 1]
            pos += 2
        else:
            pid_at, pid_bits, pid = pos, 7, buf[pos] & 0x7F
            pos += 1
    if ext & 0x40:
        if pos >= end:
            return Vp8Fields(pid_at, pid_bits, pid, -1, 0, -1, 0)
        tl0_at, tl0 = pos, buf[pos]
        pos += 1
    if ext & 0x10 and pos < end:
        key_at, keyidx = pos, buf[pos] & 0x1F
    return Vp8Fields(pid_at, pid_bits, pid, tl0_at, tl0, key_at, keyidx)
