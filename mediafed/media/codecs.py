"""The codecs and header extensions mediafed forwards, and how it names them.

Publishers keep the payload types and extension ids of their own offers;
subscriber offers use the canonical numbers below, so one rewrite table per
published track serves every subscriber.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mediafed.wire import rtp
from mediafed.wire.sdp import Codec, Extmap


@dataclass(frozen=True, slots=True)
class CodecSpec:
    mime: str
    """``audio/opus``, ``video/VP8``..."""
    payload_type: int
    clock_rate: int
    channels: int | None = None
    fmtp: tuple[tuple[str, str], ...] = ()
    rtx_payload_type: int | None = None
    rtcp_fb: tuple[str, ...] = field(default=())

    @property
    def name(self) -> str:
        return self.mime.split("/", 1)[1]

    def codec(self) -> Codec:
        return Codec(
            self.payload_type,
            self.name,
            self.clock_rate,
            self.channels,
            dict(self.fmtp),
            list(self.rtcp_fb),
        )

    def rtx_codec(self) -> Codec | None:
        if self.rtx_payload_type is None:
            return None
        return Codec(
            self.rtx_payload_type, "rtx", self.clock_rate, None, {"apt": str(self.payload_type)}, []
        )


_VIDEO_FB = ("goog-remb", "transport-cc", "ccm fir", "nack", "nack pli")

SUPPORTED: tuple[CodecSpec, ...] = (
    CodecSpec(
        "audio/opus",
        111,
        48000,
        2,
        (("minptime", "10"), ("useinbandfec", "1")),
        rtcp_fb=("transport-cc",),
    ),
    CodecSpec("video/VP8", 96, 90000, rtx_payload_type=97, rtcp_fb=_VIDEO_FB),
    CodecSpec(
        "video/H264",
        102,
        90000,
        fmtp=(
            ("level-asymmetry-allowed", "1"),
            ("packetization-mode", "1"),
            ("profile-level-id", "42e01f"),
        ),
        rtx_payload_type=103,
        rtcp_fb=_VIDEO_FB,
    ),
    CodecSpec(
        "video/VP9", 98, 90000, fmtp=(("profile-id", "0"),), rtx_payload_type=99, rtcp_fb=_VIDEO_FB
    ),
    CodecSpec("video/AV1", 45, 90000, rtx_payload_type=46, rtcp_fb=_VIDEO_FB),
)
BY_MIME = {spec.mime.lower(): spec for spec in SUPPORTED}

# Extensions a publisher may send us (we read or keep them) ...
RECEIVE_EXTENSIONS = frozenset(
    {
        rtp.URI_MID,
        rtp.URI_RID,
        rtp.URI_REPAIRED_RID,
        rtp.URI_AUDIO_LEVEL,
        rtp.URI_ABS_SEND_TIME,
        rtp.URI_TRANSPORT_CC,
    }
)
# ... and those forwarded to subscribers, with their canonical ids. Everything
# else is renamed to UNKNOWN_EXTENSION_ID, which no subscriber negotiates.
FORWARD_EXTENSIONS = {rtp.URI_AUDIO_LEVEL: 1, rtp.URI_ABS_SEND_TIME: 2, rtp.URI_TRANSPORT_CC: 3}
"""The transport-wide sequence number is the publisher's on arrival; on the way out each
subscriber connection's send target writes its own (media/bwe.py estimates from it)."""
TWCC_ID = FORWARD_EXTENSIONS[rtp.URI_TRANSPORT_CC]
UNKNOWN_EXTENSION_ID = 14


def find_spec(codec: Codec) -> CodecSpec | None:
    """Our spec for an offered codec, if we forward it (H264 only packetization-mode 1)."""
    spec = BY_MIME.get(codec.mime.lower())
    if spec is None:
        return None
    if spec.mime == "video/H264" and codec.fmtp.get("packetization-mode", "0") != "1":
        return None
    return spec


def extension_table(extmaps: list[Extmap]) -> bytes:
    """The 16-entry id rewrite table from a publisher's extmap to subscribers'."""
    table = bytearray([UNKNOWN_EXTENSION_ID] * 16)
    table[0] = 0
    table[15] = 15
    for extmap in extmaps:
        if 1 <= extmap.id <= 14:
            table[extmap.id] = FORWARD_EXTENSIONS.get(extmap.uri, UNKNOWN_EXTENSION_ID)
    return bytes(table)


def subscriber_extmaps(kind: str) -> list[Extmap]:
    twcc = Extmap(TWCC_ID, rtp.URI_TRANSPORT_CC)
    if kind == "audio":
        return [Extmap(FORWARD_EXTENSIONS[rtp.URI_AUDIO_LEVEL], rtp.URI_AUDIO_LEVEL), twcc]
    return [Extmap(FORWARD_EXTENSIONS[rtp.URI_ABS_SEND_TIME], rtp.URI_ABS_SEND_TIME), twcc]


def downstream_table(extmaps: list[Extmap]) -> bytes | None:
    """Rewrite table from canonical forwarded ids to a connection's own ids.

    Subscriber connections we offer use the canonical ids and need none; a
    connection the client opened (classic Matrix calls) has its own numbering.
    None when the canonical numbering already fits.
    """
    used = {extmap.id for extmap in extmaps}
    free = next((i for i in range(14, 0, -1) if i not in used), 15)
    table = bytearray([free] * 16)
    table[0] = 0
    table[15] = 15
    by_uri = {extmap.uri: extmap.id for extmap in extmaps}
    for uri, canonical in FORWARD_EXTENSIONS.items():
        table[canonical] = by_uri.get(uri, free)
    identity = all(table[c] == c for c in FORWARD_EXTENSIONS.values()) and free == (
        UNKNOWN_EXTENSION_ID
    )
    return None if identity else bytes(table)
