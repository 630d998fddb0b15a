"""SDP offers and answers (``wire/sdp.py``), as clients send them in every front-end.

Parsing must raise only :class:`SdpError`; a parsed description must write back and
parse again to the same description (the module's promise: nothing is dropped).
"""

from __future__ import annotations

from fuzz import _common

with _common.instrumented(__name__ == "__main__"):
    _common.load_native()
    from mediafed.wire import sdp


def test_one_input(data: bytes) -> None:
    # Signaling carries SDP in JSON or protobuf strings: any Unicode text.
    text = data.decode("utf-8", "replace")
    try:
        description = sdp.parse_sdp(text)
    except sdp.SdpError:
        return
    for media in description.media:
        for codec in media.codecs:
            _ = codec.mime, codec.rtx_apt
    description.bundle_mids()
    written = sdp.serialize_sdp(description)
    again = sdp.parse_sdp(written)
    assert sdp.serialize_sdp(again) == written, "serialize(parse(serialize(x))) changed"


def main() -> None:
    _common.run(test_one_input)


if __name__ == "__main__":
    main()
