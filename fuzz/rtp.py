"""RTP header, header extensions (RFC 8285) and codec payload descriptors.

Input: one control byte (extension ids for the scan) and an RTP packet. Checks that
the parsers raise only :class:`RtpError`/:class:`PayloadError`, that the keyframe tests
never raise, and that the native extension scan (``remap_and_scan``) returns
the same values and leaves the same bytes as the Python reference.
"""

from __future__ import annotations

import contextlib

from fuzz import _common

with _common.instrumented(__name__ == "__main__"):
    _common.load_native()
    from mediafed.media import native  # the receive path's native steps
    from mediafed.wire import payload, rtp

NATIVE_SCAN = native.remap_and_scan if native.remap_and_scan is not rtp.remap_and_scan else None
MIMES = ("video/vp8", "video/h264", "video/vp9", "audio/opus")


def test_one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    control, packet = data[0], data[1:]
    length = len(packet)
    try:
        start = rtp.payload_offset(packet, length)
        end = rtp.payload_end(packet, length)
        extensions = list(rtp.iter_extensions(packet, length))
    except rtp.RtpError:
        return
    for ext_id, offset, size in extensions:
        assert 0 <= ext_id < 256 and offset + size <= length, (ext_id, offset, size)
        assert rtp.extension_value(packet, length, ext_id) is not None
    rtp.is_rtcp(packet)
    twcc_id, level_id = control & 0x0F, control >> 4
    table = bytes((i * 5 + control) & 0x0F for i in range(16))
    python_buf = bytearray(packet)
    expected = rtp.remap_and_scan(python_buf, length, table, twcc_id, level_id)
    if NATIVE_SCAN is not None:
        native_buf = bytearray(packet)
        got = NATIVE_SCAN(native_buf, length, table, twcc_id, level_id)
        assert got == expected, f"native scan {got} != Python {expected}"
        assert native_buf == python_buf, "native scan rewrote other bytes than Python"
    rtp.remap_extension_ids(bytearray(packet), length, table)
    # Payload descriptors, as the receive path reads them (offset..end).
    for mime in MIMES:
        payload.is_keyframe(mime, packet, start, end)
    try:
        descriptor = payload.vp8_descriptor(packet, start, end)
        assert descriptor.header_size >= 1
    except payload.PayloadError:
        pass
    with contextlib.suppress(payload.PayloadError):
        payload.opus_toc(packet, start)
    rewritten = bytearray(packet)
    payload.vp8_rewrite_picture_id(rewritten, start, control << 7, control)
    assert len(rewritten) == length


def main() -> None:
    _common.run(test_one_input)


if __name__ == "__main__":
    main()
