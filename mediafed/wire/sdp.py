"""SDP offers and answers as WebRTC endpoints write them, parsed and written back.

Implements the parts of RFC 8866 (SDP) that JSEP (RFC 8829, unified plan) uses, together with
BUNDLE (RFC 8843), RTP header extensions (RFC 8285 ``a=extmap``), RTP stream ids (RFC 8851
``a=rid``), simulcast (RFC 8853), SCTP over DTLS (RFC 8841) and ICE/DTLS attributes
(RFC 8839, RFC 8842). Unlike aiortc's parser nothing is dropped: attributes we do not model are
kept in order in ``other`` and written back, so a description survives parse -> serialize.

Parsing is tolerant of unknown lines and strict about malformed known ones: a bad line raises
:class:`SdpError` naming its line number and what is wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from mediafed.errors import NegotiationError

__all__ = [
    "Codec",
    "Extmap",
    "MediaSection",
    "Rid",
    "SdpError",
    "SessionDescription",
    "Simulcast",
    "SsrcGroup",
    "parse_sdp",
    "serialize_sdp",
]

DIRECTIONS = frozenset({"sendrecv", "sendonly", "recvonly", "inactive"})
SETUP_ROLES = frozenset({"actpass", "active", "passive", "holdconn"})

# RFC 3551 static payload types, used when an m= line lists one without an a=rtpmap.
_STATIC_PAYLOAD_TYPES: dict[int, tuple[str, int, int | None]] = {
    0: ("PCMU", 8000, 1),
    8: ("PCMA", 8000, 1),
    9: ("G722", 8000, 1),
    13: ("CN", 8000, 1),
}


class SdpError(NegotiationError):
    """An SDP line that cannot be understood; the message names the line and the problem."""


@dataclass(slots=True)
class Codec:
    """One RTP payload format of a media section (``a=rtpmap`` + ``a=fmtp`` + ``a=rtcp-fb``)."""

    payload_type: int
    name: str
    clock_rate: int
    channels: int | None = None
    fmtp: dict[str, str] = field(default_factory=dict)
    rtcp_fb: list[str] = field(default_factory=list)

    @property
    def mime(self) -> str:
        """``"video/VP8"``, ``"audio/opus"``: WebRTC video payload formats all run at 90 kHz."""
        kind = "video" if self.clock_rate == 90000 else "audio"
        return f"{kind}/{self.name}"

    @property
    def rtx_apt(self) -> int | None:
        """The payload type this RTX format repairs (``apt`` in fmtp, RFC 4588), if any."""
        apt = self.fmtp.get("apt")
        return None if apt is None else _payload_type(apt)


@dataclass(slots=True)
class Extmap:
    """An RTP header extension mapping (RFC 8285 ``a=extmap:<id>[/<direction>] <uri>``)."""

    id: int
    uri: str
    direction: str | None = None
    attributes: str = ""  # extension attributes after the URI, kept verbatim


@dataclass(slots=True)
class Rid:
    """An RTP stream id restriction (RFC 8851 ``a=rid:q send pt=96;max-width=320``)."""

    rid: str
    direction: str
    params: str = ""


@dataclass(slots=True)
class Simulcast:
    """RFC 8853 ``a=simulcast``: per direction a list of streams, each a list of alternatives.

    ``a=simulcast:send q;h;f`` is ``send=[["q"], ["h"], ["f"]]``; a paused stream keeps its
    ``~`` prefix in the string.
    """

    send: list[list[str]] = field(default_factory=list)
    recv: list[list[str]] = field(default_factory=list)


@dataclass(slots=True)
class SsrcGroup:
    """``a=ssrc-group:FID 1111 2222`` (RFC 5576): semantics and member SSRCs."""

    semantics: str
    ssrcs: list[int]


@dataclass(slots=True)
class MediaSection:
    """One ``m=`` section (RFC 8866 section 5.14) with the attributes JSEP uses."""

    kind: str
    port: int
    protocol: str
    formats: list[str]
    mid: str | None = None
    direction: str = "sendrecv"
    msid: list[tuple[str, str]] = field(default_factory=list)
    codecs: list[Codec] = field(default_factory=list)
    extmaps: list[Extmap] = field(default_factory=list)
    ssrcs: dict[int, dict[str, str]] = field(default_factory=dict)
    ssrc_groups: list[SsrcGroup] = field(default_factory=list)
    rids: list[Rid] = field(default_factory=list)
    simulcast: Simulcast | None = None
    ice_ufrag: str | None = None
    ice_pwd: str | None = None
    ice_options: list[str] = field(default_factory=list)
    fingerprints: list[tuple[str, str]] = field(default_factory=list)
    setup: str | None = None
    rtcp_mux: bool = False
    rtcp_rsize: bool = False
    candidates: list[str] = field(default_factory=list)  # each "candidate:..." as in trickle
    end_of_candidates: bool = False
    sctp_port: int | None = None
    max_message_size: int | None = None
    connection_address: str = "0.0.0.0"
    bundle_only: bool = False
    other: list[tuple[str, str | None]] = field(default_factory=list)
    extra_lines: list[str] = field(default_factory=list)  # e.g. "b=AS:30", kept verbatim

    def codec(self, payload_type: int) -> Codec | None:
        """The codec with this payload type, or None."""
        for codec in self.codecs:
            if codec.payload_type == payload_type:
                return codec
        return None

    def extmap_id(self, uri: str) -> int | None:
        """The id negotiated for a header extension URI, or None."""
        for extmap in self.extmaps:
            if extmap.uri == uri:
                return extmap.id
        return None


@dataclass(slots=True, kw_only=True)
class SessionDescription:
    """A whole SDP: session-level lines and the media sections in order."""

    origin_username: str = "-"
    session_id: int
    session_version: int
    origin_address: str = "127.0.0.1"
    name: str = "-"
    timing: str = "0 0"
    connection_address: str | None = None
    groups: list[tuple[str, list[str]]] = field(default_factory=list)
    msid_semantic: str | None = None
    ice_lite: bool = False
    ice_ufrag: str | None = None
    ice_pwd: str | None = None
    ice_options: list[str] = field(default_factory=list)
    fingerprints: list[tuple[str, str]] = field(default_factory=list)
    setup: str | None = None
    media: list[MediaSection] = field(default_factory=list)
    other: list[tuple[str, str | None]] = field(default_factory=list)
    extra_lines: list[str] = field(default_factory=list)

    def bundle_mids(self) -> list[str]:
        """The mids of the first ``a=group:BUNDLE`` (RFC 8843), or [] without bundling."""
        for semantics, mids in self.groups:
            if semantics == "BUNDLE":
                return list(mids)
        return []


# --------------------------------------------------------------------------- parsing


class _Line:
    """Where we are while parsing, for error messages."""

    __slots__ = ("number", "text")

    def __init__(self, number: int, text: str) -> None:
        self.number = number
        self.text = text

    def error(self, why: str) -> SdpError:
        return SdpError(f"SDP line {self.number} {self.text!r} is malformed: {why}")


_MAX_DIGITS = 20
"""The longest number SDP has: a 64-bit session id (int() refuses 4300 digits and more)."""


def _payload_type(text: str) -> int | None:
    """An RTP payload type written as a format or ``apt`` (0-127), else None.

    ASCII digits only: ``str.isdigit()`` also takes '²', which ``int()`` refuses.
    """
    if not (text.isascii() and text.isdigit() and len(text) <= _MAX_DIGITS):
        return None
    value = int(text)
    return value if value <= 127 else None


def _int(line: _Line, value: str, what: str, low: int = 0, high: int | None = None) -> int:
    if not value.isascii() or not value.isdigit():
        raise line.error(f"{what} must be a number")
    if len(value) > _MAX_DIGITS:
        raise line.error(f"{what} must be a number of at most {_MAX_DIGITS} digits")
    number = int(value)
    if number < low or (high is not None and number > high):
        upper = "" if high is None else f"..{high}"
        raise line.error(f"{what} must be in {low}{upper}")
    return number


def _address(line: _Line, value: str) -> str:
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise line.error("expected 'IN IP4 <address>' or 'IN IP6 <address>'")
    return parts[2]


def _addrtype(address: str) -> str:
    return "IP6" if ":" in address else "IP4"


def _fingerprint(line: _Line, value: str) -> tuple[str, str]:
    parts = value.split()
    if len(parts) != 2:
        raise line.error("expected '<hash algorithm> <hex fingerprint>'")
    algorithm, digest = parts
    hexdigits = digest.replace(":", "")
    if not hexdigits or any(c not in "0123456789abcdefABCDEF" for c in hexdigits):
        raise line.error("fingerprint must be hex bytes separated by ':'")
    return algorithm.lower(), digest.upper()


def _setup(line: _Line, value: str) -> str:
    if value not in SETUP_ROLES:
        raise line.error("setup must be one of actpass, active, passive, holdconn")
    return value


class _MediaBuilder:
    """Collects one m= section's lines; codecs are assembled when the section ends."""

    __slots__ = ("fbs", "fmtps", "media", "msid_from_ssrc", "rtpmaps", "wildcard_fbs")

    def __init__(self, media: MediaSection) -> None:
        self.media = media
        self.rtpmaps: dict[int, tuple[str, int, int | None]] = {}
        self.fmtps: dict[int, tuple[_Line, str]] = {}
        self.fbs: dict[int, list[tuple[_Line, str]]] = {}
        self.wildcard_fbs: list[str] = []
        self.msid_from_ssrc: list[tuple[str, str]] = []

    def finish(self) -> MediaSection:
        media = self.media
        if media.protocol.split("/")[-1] in ("SAVPF", "SAVP", "AVPF", "AVP"):
            # Each payload type once, in m= line order: a format listed twice is one codec.
            order = list(
                dict.fromkeys(pt for pt in map(_payload_type, media.formats) if pt is not None)
            )
            order += [pt for pt in self.rtpmaps if pt not in order]
            for pt in order:
                if pt in self.rtpmaps:
                    name, clock, channels = self.rtpmaps[pt]
                elif pt in _STATIC_PAYLOAD_TYPES:
                    name, clock, channels = _STATIC_PAYLOAD_TYPES[pt]
                else:
                    continue
                codec = Codec(pt, name, clock, channels)
                if pt in self.fmtps:
                    codec.fmtp = _parse_fmtp(self.fmtps.pop(pt)[1])
                codec.rtcp_fb = [fb for _, fb in self.fbs.pop(pt, [])]
                codec.rtcp_fb += [fb for fb in self.wildcard_fbs if fb not in codec.rtcp_fb]
                media.codecs.append(codec)
        # Parameters for payload types we know no codec of: keep them rather than lose them.
        for pt, (_, params) in self.fmtps.items():
            media.other.append(("fmtp", f"{pt} {params}"))
        for pt, fbs in self.fbs.items():
            media.other.extend(("rtcp-fb", f"{pt} {fb}") for _, fb in fbs)
        if not media.codecs:
            media.other.extend(("rtcp-fb", f"* {fb}") for fb in self.wildcard_fbs)
        if not media.msid:
            for pair in self.msid_from_ssrc:
                if pair not in media.msid:
                    media.msid.append(pair)
        return media


def _parse_fmtp(params: str) -> dict[str, str]:
    fmtp: dict[str, str] = {}
    for param in params.split(";"):
        param = param.strip()
        if not param:
            continue
        key, _, value = param.partition("=")
        fmtp[key.strip()] = value.strip()
    return fmtp


def _format_fmtp(fmtp: dict[str, str]) -> str:
    return ";".join(f"{k}={v}" if v else k for k, v in fmtp.items())


def _parse_simulcast(line: _Line, value: str) -> Simulcast:
    words = value.split()
    if not words or len(words) % 2:
        raise line.error("expected 'send <streams>' and/or 'recv <streams>'")
    simulcast = Simulcast()
    for i in range(0, len(words), 2):
        direction, streams = words[i], words[i + 1]
        if direction not in ("send", "recv"):
            raise line.error(f"direction must be 'send' or 'recv', not {direction!r}")
        alternatives = [stream.split(",") for stream in streams.split(";")]
        if any(not alt for alts in alternatives for alt in alts):
            raise line.error("a simulcast stream id is empty")
        getattr(simulcast, direction).extend(alternatives)
    return simulcast


def _media_attribute(b: _MediaBuilder, line: _Line, name: str, value: str | None) -> None:
    media = b.media
    v = value if value is not None else ""
    handler = _FLAG_ATTRIBUTES.get(name)
    if handler is not None and value is None:
        handler(media)
        return
    if name == "mid":
        media.mid = v
    elif name == "extmap":
        parts = v.split(maxsplit=2)
        if len(parts) < 2:
            raise line.error("expected 'extmap:<id>[/<direction>] <uri>'")
        ident, _, direction = parts[0].partition("/")
        if direction and direction not in DIRECTIONS:
            raise line.error(f"extmap direction {direction!r} is not a valid direction")
        media.extmaps.append(
            Extmap(
                _int(line, ident, "extmap id", 1, 255),
                parts[1],
                direction or None,
                parts[2] if len(parts) > 2 else "",
            )
        )
    elif name == "msid":
        parts = v.split()
        if not 1 <= len(parts) <= 2:
            raise line.error("expected 'msid:<stream id> [<track id>]'")
        media.msid.append((parts[0], parts[1] if len(parts) == 2 else ""))
    elif name == "rtpmap":
        pt_text, _, encoding = v.partition(" ")
        pt = _int(line, pt_text, "payload type", 0, 127)
        pieces = encoding.strip().split("/")
        if len(pieces) not in (2, 3) or not pieces[0]:
            raise line.error("expected 'rtpmap:<pt> <name>/<clock rate>[/<channels>]'")
        clock = _int(line, pieces[1], "clock rate", 1)
        channels = _int(line, pieces[2], "channel count", 1) if len(pieces) == 3 else None
        b.rtpmaps[pt] = (pieces[0], clock, channels)
    elif name == "fmtp":
        pt_text, _, params = v.partition(" ")
        b.fmtps[_int(line, pt_text, "payload type", 0, 127)] = (line, params.strip())
    elif name == "rtcp-fb":
        pt_text, _, fb = v.partition(" ")
        fb = " ".join(fb.split())
        if not fb:
            raise line.error("expected 'rtcp-fb:<pt> <feedback type>'")
        if pt_text == "*":
            b.wildcard_fbs.append(fb)
        else:
            pt = _int(line, pt_text, "payload type", 0, 127)
            b.fbs.setdefault(pt, []).append((line, fb))
    elif name == "ssrc":
        ssrc_text, _, attribute = v.partition(" ")
        ssrc = _int(line, ssrc_text, "SSRC", 0, 0xFFFFFFFF)
        attrs = media.ssrcs.setdefault(ssrc, {})
        if attribute:
            key, _, attr_value = attribute.partition(":")
            attrs[key] = attr_value
            if key == "msid":
                ids = attr_value.split()
                if 1 <= len(ids) <= 2:
                    b.msid_from_ssrc.append((ids[0], ids[1] if len(ids) == 2 else ""))
    elif name == "ssrc-group":
        parts = v.split()
        if not parts:
            raise line.error("expected 'ssrc-group:<semantics> <ssrc> ...'")
        media.ssrc_groups.append(
            SsrcGroup(parts[0], [_int(line, s, "SSRC", 0, 0xFFFFFFFF) for s in parts[1:]])
        )
    elif name == "rid":
        parts = v.split(maxsplit=2)
        if len(parts) < 2 or parts[1] not in ("send", "recv"):
            raise line.error("expected 'rid:<id> send|recv [<restrictions>]'")
        media.rids.append(Rid(parts[0], parts[1], parts[2] if len(parts) > 2 else ""))
    elif name == "simulcast":
        media.simulcast = _parse_simulcast(line, v)
    elif name == "ice-ufrag":
        media.ice_ufrag = v
    elif name == "ice-pwd":
        media.ice_pwd = v
    elif name == "ice-options":
        media.ice_options = v.split()
    elif name == "fingerprint":
        media.fingerprints.append(_fingerprint(line, v))
    elif name == "setup":
        media.setup = _setup(line, v)
    elif name == "candidate":
        if not v.strip():
            raise line.error("candidate is empty")
        media.candidates.append("candidate:" + v)
    elif name == "sctp-port":
        media.sctp_port = _int(line, v, "SCTP port", 0, 65535)
    elif name == "max-message-size":
        media.max_message_size = _int(line, v, "max-message-size")
    else:
        media.other.append((name, value))


def _set_direction(direction: str) -> Callable[[MediaSection], None]:
    def apply(media: MediaSection) -> None:
        media.direction = direction

    return apply


def _set_flag(name: str) -> Callable[[MediaSection], None]:
    def apply(media: MediaSection) -> None:
        setattr(media, name, True)

    return apply


_FLAG_ATTRIBUTES: dict[str, Callable[[MediaSection], None]] = {
    **{d: _set_direction(d) for d in DIRECTIONS},
    "rtcp-mux": _set_flag("rtcp_mux"),
    "rtcp-rsize": _set_flag("rtcp_rsize"),
    "end-of-candidates": _set_flag("end_of_candidates"),
    "bundle-only": _set_flag("bundle_only"),
}


def _session_attribute(desc: SessionDescription, line: _Line, name: str, value: str | None) -> None:
    v = value if value is not None else ""
    if name == "group":
        parts = v.split()
        if not parts:
            raise line.error("expected 'group:<semantics> <mid> ...'")
        desc.groups.append((parts[0], parts[1:]))
    elif name == "msid-semantic":
        desc.msid_semantic = " ".join(v.split())
    elif name == "ice-lite" and value is None:
        desc.ice_lite = True
    elif name == "ice-ufrag":
        desc.ice_ufrag = v
    elif name == "ice-pwd":
        desc.ice_pwd = v
    elif name == "ice-options":
        desc.ice_options = v.split()
    elif name == "fingerprint":
        desc.fingerprints.append(_fingerprint(line, v))
    elif name == "setup":
        desc.setup = _setup(line, v)
    else:
        desc.other.append((name, value))


def _parse_origin(desc: SessionDescription, line: _Line, value: str) -> None:
    parts = value.split()
    if len(parts) != 6:
        raise line.error("expected 'o=<username> <session id> <version> IN IP4|IP6 <address>'")
    desc.origin_username = parts[0]
    desc.session_id = _int(line, parts[1], "session id")
    desc.session_version = _int(line, parts[2], "session version")
    desc.origin_address = _address(line, " ".join(parts[3:]))


def _parse_media_line(line: _Line, value: str) -> MediaSection:
    parts = value.split()
    if len(parts) < 3:
        raise line.error("expected 'm=<media> <port> <protocol> <format> ...'")
    port_text = parts[1].partition("/")[0]
    port = _int(line, port_text, "port", 0, 65535)
    return MediaSection(kind=parts[0], port=port, protocol=parts[2], formats=parts[3:])


def parse_sdp(text: str) -> SessionDescription:
    """Parse an SDP offer or answer (``\\r\\n`` or ``\\n`` line endings).

    Session-level ICE credentials, ICE options, fingerprints and setup role are copied into
    every media section that has none of its own (JSEP, RFC 8829 section 5.8).

    Raises:
        SdpError: a known line is malformed; the message gives the line number.
    """
    desc = SessionDescription(session_id=0, session_version=0)
    builder: _MediaBuilder | None = None
    seen_version = False
    seen_origin = False
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        line = _Line(number, raw)
        if len(raw) < 2 or raw[1] != "=":
            raise line.error("an SDP line must look like '<letter>=<value>'")
        kind, value = raw[0], raw[2:]
        if not seen_version:
            if kind != "v":
                raise line.error("an SDP must start with 'v=0'")
            if value.strip() != "0":
                raise line.error("only SDP version 0 exists")
            seen_version = True
            continue
        if kind == "a":
            name, colon, attr_value = value.partition(":")
            if builder is not None:
                _media_attribute(builder, line, name, attr_value if colon else None)
            else:
                _session_attribute(desc, line, name, attr_value if colon else None)
        elif kind == "m":
            if builder is not None:
                desc.media.append(builder.finish())
            builder = _MediaBuilder(_parse_media_line(line, value))
        elif kind == "c":
            if builder is not None:
                builder.media.connection_address = _address(line, value)
            else:
                desc.connection_address = _address(line, value)
        elif kind == "o" and builder is None:
            _parse_origin(desc, line, value)
            seen_origin = True
        elif kind == "s" and builder is None:
            desc.name = value
        elif kind == "t" and builder is None:
            desc.timing = value
        elif builder is not None:
            builder.media.extra_lines.append(raw)
        else:
            desc.extra_lines.append(raw)
    if not seen_version:
        raise SdpError("the SDP is empty: it must start with 'v=0'")
    if not seen_origin:
        raise SdpError("the SDP has no 'o=' line; every session description needs an origin")
    if builder is not None:
        desc.media.append(builder.finish())
    for media in desc.media:
        _inherit(desc, media)
    return desc


def _inherit(desc: SessionDescription, media: MediaSection) -> None:
    if media.ice_ufrag is None:
        media.ice_ufrag = desc.ice_ufrag
    if media.ice_pwd is None:
        media.ice_pwd = desc.ice_pwd
    if not media.ice_options:
        media.ice_options = list(desc.ice_options)
    if not media.fingerprints:
        media.fingerprints = list(desc.fingerprints)
    if media.setup is None:
        media.setup = desc.setup


# --------------------------------------------------------------------------- writing


def _attr(name: str, value: str | None) -> str:
    return f"a={name}" if value is None else f"a={name}:{value}"


def _media_lines(media: MediaSection, session: SessionDescription) -> list[str]:
    formats = " ".join(media.formats)
    lines = [f"m={media.kind} {media.port} {media.protocol}" + (f" {formats}" if formats else "")]
    lines.append(f"c=IN {_addrtype(media.connection_address)} {media.connection_address}")
    lines.extend(media.extra_lines)
    lines.extend(_attr(name, value) for name, value in media.other)
    lines.extend(f"a={candidate}" for candidate in media.candidates)
    if media.end_of_candidates:
        lines.append("a=end-of-candidates")
    # Values equal to the session-level ones are inherited on parse, so they are written once
    # (some parsers, aiortc's among them, add up session and media fingerprints).
    if media.ice_ufrag is not None and media.ice_ufrag != session.ice_ufrag:
        lines.append(f"a=ice-ufrag:{media.ice_ufrag}")
    if media.ice_pwd is not None and media.ice_pwd != session.ice_pwd:
        lines.append(f"a=ice-pwd:{media.ice_pwd}")
    if media.ice_options and media.ice_options != session.ice_options:
        lines.append("a=ice-options:" + " ".join(media.ice_options))
    if media.fingerprints != session.fingerprints:
        lines.extend(f"a=fingerprint:{alg} {digest}" for alg, digest in media.fingerprints)
    if media.setup is not None and media.setup != session.setup:
        lines.append(f"a=setup:{media.setup}")
    if media.mid is not None:
        lines.append(f"a=mid:{media.mid}")
    if media.bundle_only:
        lines.append("a=bundle-only")
    for ext in media.extmaps:
        ident = f"{ext.id}/{ext.direction}" if ext.direction else str(ext.id)
        tail = f" {ext.attributes}" if ext.attributes else ""
        lines.append(f"a=extmap:{ident} {ext.uri}{tail}")
    if media.kind != "application" or media.direction != "sendrecv":
        lines.append(f"a={media.direction}")
    lines.extend(f"a=msid:{stream} {track}".rstrip() for stream, track in media.msid)
    if media.rtcp_mux:
        lines.append("a=rtcp-mux")
    if media.rtcp_rsize:
        lines.append("a=rtcp-rsize")
    for codec in media.codecs:
        channels = f"/{codec.channels}" if codec.channels is not None else ""
        lines.append(f"a=rtpmap:{codec.payload_type} {codec.name}/{codec.clock_rate}{channels}")
        lines.extend(f"a=rtcp-fb:{codec.payload_type} {fb}" for fb in codec.rtcp_fb)
        if codec.fmtp:
            lines.append(f"a=fmtp:{codec.payload_type} {_format_fmtp(codec.fmtp)}")
    for group in media.ssrc_groups:
        lines.append(f"a=ssrc-group:{group.semantics} " + " ".join(map(str, group.ssrcs)))
    for ssrc, attrs in media.ssrcs.items():
        if not attrs:
            lines.append(f"a=ssrc:{ssrc}")
        lines.extend(
            f"a=ssrc:{ssrc} {key}:{value}" if value else f"a=ssrc:{ssrc} {key}"
            for key, value in attrs.items()
        )
    for rid in media.rids:
        lines.append(f"a=rid:{rid.rid} {rid.direction}" + (f" {rid.params}" if rid.params else ""))
    if media.simulcast is not None:
        parts = []
        for direction in ("send", "recv"):
            streams: list[list[str]] = getattr(media.simulcast, direction)
            if streams:
                parts.append(direction + " " + ";".join(",".join(alts) for alts in streams))
        lines.append("a=simulcast:" + " ".join(parts))
    if media.sctp_port is not None:
        lines.append(f"a=sctp-port:{media.sctp_port}")
    if media.max_message_size is not None:
        lines.append(f"a=max-message-size:{media.max_message_size}")
    return lines


def serialize_sdp(desc: SessionDescription) -> str:
    """Write a description with ``\\r\\n`` line endings, attributes in the order browsers use."""
    origin = desc.origin_address
    lines = [
        "v=0",
        f"o={desc.origin_username} {desc.session_id} {desc.session_version} "
        f"IN {_addrtype(origin)} {origin}",
        f"s={desc.name}",
    ]
    if desc.connection_address is not None:
        lines.append(f"c=IN {_addrtype(desc.connection_address)} {desc.connection_address}")
    lines.append(f"t={desc.timing}")
    lines.extend(desc.extra_lines)
    if desc.ice_lite:
        lines.append("a=ice-lite")
    if desc.ice_ufrag is not None:
        lines.append(f"a=ice-ufrag:{desc.ice_ufrag}")
    if desc.ice_pwd is not None:
        lines.append(f"a=ice-pwd:{desc.ice_pwd}")
    if desc.ice_options:
        lines.append("a=ice-options:" + " ".join(desc.ice_options))
    lines.extend(f"a=fingerprint:{alg} {digest}" for alg, digest in desc.fingerprints)
    if desc.setup is not None:
        lines.append(f"a=setup:{desc.setup}")
    lines.extend("a=group:" + " ".join([semantics, *mids]) for semantics, mids in desc.groups)
    lines.extend(_attr(name, value) for name, value in desc.other)
    if desc.msid_semantic is not None:
        lines.append(f"a=msid-semantic:{desc.msid_semantic}")
    for media in desc.media:
        lines.extend(_media_lines(media, desc))
    return "\r\n".join(lines) + "\r\n"
