"""SDP offer/answer for the room core (RFC 8829 JSEP, unified plan, BUNDLE, ICE-lite).

Two shapes, both with every m-section bundled on one transport and rtcp-mux:
- a client's offer (its publisher connection) -> our answer, receiving only
  (:func:`answer_offer`); simulcast is accepted with ``a=rid:… recv`` and
  ``a=simulcast:recv`` and the mid/rid extensions (RFC 8853 §5.3);
- our offer for a subscriber connection (:func:`build_offer`), one
  ``sendonly`` m-section per forwarded track, reusing sections of tracks that
  went away (set ``inactive``) as browsers recycle transceivers.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

from mediafed.errors import NegotiationError
from mediafed.media import codecs
from mediafed.wire import rtp
from mediafed.wire.sdp import (
    Codec,
    Extmap,
    MediaSection,
    Rid,
    SessionDescription,
    Simulcast,
    SsrcGroup,
    parse_sdp,
)

MAX_SIMULCAST_LAYERS = 4
"""Simulcast encodings accepted per track; later rids are refused (not in the answer)."""

_REVERSE = {
    "sendonly": "recvonly",
    "recvonly": "sendonly",
    "sendrecv": "sendrecv",
    "inactive": "inactive",
}


@dataclass(frozen=True, slots=True)
class LocalTransport:
    ufrag: str
    pwd: str
    fingerprint: str
    setup: str
    candidates: tuple[str, ...]


@dataclass(slots=True)
class AcceptedMedia:
    """A publisher m-section we accepted: what arrives on it and how to read it."""

    mid: str
    kind: str
    codec: Codec
    rtx: Codec | None
    extmaps: list[Extmap]
    stream: str
    track_id: str
    ssrcs: list[int]
    rtx_ssrcs: dict[int, int]
    """media SSRC -> its RTX SSRC (a=ssrc-group:FID)."""
    rids: list[str]
    nack: bool
    sending: bool
    """The offerer sends on this section (sendonly/sendrecv)."""


@dataclass(slots=True)
class OutgoingSlot:
    """One m-section of a subscriber offer."""

    mid: str
    kind: str
    codec: Codec
    rtx: Codec | None = None
    ssrc: int = 0
    rtx_ssrc: int = 0
    stream: str = ""
    track_id: str = ""
    cname: str = "mediafed"
    active: bool = False
    extmaps: list[Extmap] = field(default_factory=list)


def parse(text: str, what: str) -> SessionDescription:
    if not isinstance(text, str) or not text.strip():
        raise NegotiationError(f"{what} is empty; send the SDP of createOffer()/createAnswer()")
    if len(text) > 256 * 1024:
        raise NegotiationError(f"{what} is larger than 256 KiB; refusing it")
    desc = parse_sdp(text)
    if not desc.media:
        raise NegotiationError(f"{what} has no m= sections")
    return desc


def remote_transport(
    desc: SessionDescription, what: str
) -> tuple[str, str, list[tuple[str, str]], str]:
    """(ufrag, pwd, fingerprints, setup) of a bundled remote description."""
    for media in desc.media:
        if media.port == 0 and not media.bundle_only:
            continue
        ufrag = media.ice_ufrag or desc.ice_ufrag
        pwd = media.ice_pwd or desc.ice_pwd
        fingerprints = media.fingerprints or desc.fingerprints
        setup = media.setup or desc.setup or "actpass"
        if not ufrag or not pwd:
            raise NegotiationError(f"{what} has no a=ice-ufrag/a=ice-pwd")
        if not fingerprints:
            raise NegotiationError(f"{what} has no a=fingerprint; DTLS-SRTP needs one")
        return ufrag, pwd, fingerprints, setup
    raise NegotiationError(f"{what} rejects every m= section")


def _transport_attrs(section: MediaSection, local: LocalTransport, with_candidates: bool) -> None:
    section.ice_ufrag = local.ufrag
    section.ice_pwd = local.pwd
    section.ice_options = []
    section.fingerprints = [("sha-256", local.fingerprint)]
    section.setup = local.setup
    if with_candidates:
        section.candidates = list(local.candidates)
        section.end_of_candidates = True


def _new_description(session_id: int, version: int) -> SessionDescription:
    return SessionDescription(
        session_id=session_id,
        session_version=version,
        ice_lite=True,
        msid_semantic="WMS *",
    )


def _ssrcs_of(media: MediaSection) -> tuple[list[int], dict[int, int]]:
    rtx_of: dict[int, int] = {}
    repair: set[int] = set()
    for group in media.ssrc_groups:
        if group.semantics == "FID" and len(group.ssrcs) >= 2:
            rtx_of[group.ssrcs[0]] = group.ssrcs[1]
            repair.add(group.ssrcs[1])
    primaries = [ssrc for ssrc in media.ssrcs if ssrc not in repair]
    return primaries, rtx_of


def _stream_and_track(media: MediaSection) -> tuple[str, str]:
    if media.msid:
        return media.msid[0]
    for attrs in media.ssrcs.values():
        msid = attrs.get("msid")
        if msid:
            stream, _, track = msid.partition(" ")
            return stream, track or stream
    return "", media.mid or ""


def answer_offer(
    offer: SessionDescription,
    local: LocalTransport,
    *,
    session_id: int,
    version: int,
    send_slots: dict[str, OutgoingSlot] | None = None,
    preferred: dict[str, str] | None = None,
) -> tuple[SessionDescription, list[AcceptedMedia]]:
    """Our answer to a client's offer, and the media sections we will receive.

    ``send_slots`` (mid -> slot) lets a bidirectional peer (a classic Matrix
    call) send on sections the client offered as sendrecv/recvonly.
    ``preferred`` (msid track id -> lower-case MIME type) names the codec a
    client said it publishes a track in: chosen when offered, else the first
    offered codec mediafed takes (a client whose track only encodes one codec
    cannot send another, whatever else its offer lists).
    """
    answer = _new_description(session_id, version)
    accepted: list[AcceptedMedia] = []
    bundle: list[str] = []
    for media in offer.media:
        mid = media.mid
        if mid is None:
            raise NegotiationError(
                f"offer m={media.kind} section {len(answer.media)} has no a=mid; "
                "mediafed needs unified plan with BUNDLE"
            )
        section = MediaSection(
            kind=media.kind, port=9, protocol=media.protocol, formats=list(media.formats), mid=mid
        )
        rejected = media.port == 0 and not media.bundle_only
        if media.kind == "application" and not rejected:
            if "SCTP" not in media.protocol.upper():
                rejected = True
            else:
                section.sctp_port = 5000
                section.max_message_size = 262144
                section.direction = "sendrecv"
        elif media.kind in ("audio", "video") and not rejected:
            chosen = next((c for c in media.codecs if codecs.find_spec(c) is not None), None)
            wanted_codec = (preferred or {}).get(_stream_and_track(media)[1])
            if wanted_codec:
                chosen = next(
                    (
                        c
                        for c in media.codecs
                        if c.mime.lower() == wanted_codec and codecs.find_spec(c) is not None
                    ),
                    chosen,
                )
            slot = (send_slots or {}).get(mid)
            if slot is not None and slot.active:
                # We send a given track here: its codec must be the one chosen.
                wanted = slot.codec.mime.lower()
                chosen = next(
                    (c for c in media.codecs if c.mime.lower() == wanted),
                    chosen if media.direction == "sendonly" else None,
                )
            if chosen is None:
                rejected = True
            else:
                accepted_media = _accept_rtp(media, section, chosen, send_slots)
                if accepted_media is not None:
                    accepted.append(accepted_media)
        elif not rejected:
            rejected = True
        if rejected:
            section.port = 0
            section.direction = "inactive"
            if media.kind in ("audio", "video"):
                section.formats = media.formats[:1] or ["0"]
                section.codecs = [c for c in media.codecs if str(c.payload_type) in section.formats]
        else:
            section.rtcp_mux = media.kind != "application"
            section.rtcp_rsize = media.rtcp_rsize and media.kind != "application"
            bundle.append(mid)
        _transport_attrs(section, local, with_candidates=not rejected)
        answer.media.append(section)
    if not bundle:
        raise NegotiationError(
            "mediafed could accept none of the offered m= sections "
            "(supported: opus, VP8, H264 packetization-mode=1, VP9, AV1, "
            "data channels)"
        )
    answer.groups = [("BUNDLE", bundle)]
    return answer, accepted


def _accept_rtp(
    media: MediaSection,
    section: MediaSection,
    chosen: Codec,
    send_slots: dict[str, OutgoingSlot] | None,
) -> AcceptedMedia | None:
    mid = media.mid or ""
    rtx = next(
        (c for c in media.codecs if c.name.lower() == "rtx" and c.rtx_apt == chosen.payload_type),
        None,
    )
    extmaps = [
        Extmap(e.id, e.uri, None) for e in media.extmaps if e.uri in codecs.RECEIVE_EXTENSIONS
    ]
    twcc = any(e.uri == rtp.URI_TRANSPORT_CC for e in extmaps)
    wanted_fb = {"nack", "nack pli", "ccm fir", "goog-remb"} if media.kind == "video" else set()
    if twcc:
        wanted_fb.add("transport-cc")
    answer_codec = Codec(
        chosen.payload_type,
        chosen.name,
        chosen.clock_rate,
        chosen.channels,
        dict(chosen.fmtp),
        [fb for fb in chosen.rtcp_fb if fb in wanted_fb],
    )
    section.codecs = [answer_codec]
    if rtx is not None:
        section.codecs.append(
            Codec(rtx.payload_type, rtx.name, rtx.clock_rate, None, dict(rtx.fmtp), [])
        )
    section.formats = [str(c.payload_type) for c in section.codecs]
    section.extmaps = extmaps
    offered = media.direction
    sending = offered in ("sendonly", "sendrecv")
    slot = (send_slots or {}).get(mid)
    we_send = (
        slot is not None
        and slot.active
        and offered in ("sendrecv", "recvonly")
        and chosen.mime.lower() == slot.codec.mime.lower()
    )
    if sending and we_send:
        section.direction = "sendrecv"
    elif sending:
        section.direction = "recvonly"
    elif we_send:
        section.direction = "sendonly"
    else:
        section.direction = "inactive"
    if we_send and slot is not None:
        section.msid = [(slot.stream, slot.track_id)]
        section.ssrcs = {slot.ssrc: {"cname": slot.cname}}
        slot.codec = Codec(
            answer_codec.payload_type,
            answer_codec.name,
            answer_codec.clock_rate,
            answer_codec.channels,
            dict(answer_codec.fmtp),
            [],
        )
        if rtx is not None and slot.rtx_ssrc:
            section.ssrcs[slot.rtx_ssrc] = {"cname": slot.cname}
            section.ssrc_groups = [SsrcGroup("FID", [slot.ssrc, slot.rtx_ssrc])]
            slot.rtx = Codec(rtx.payload_type, "rtx", rtx.clock_rate, None, dict(rtx.fmtp), [])
        else:
            slot.rtx = None
    # A simulcast offer names a few encodings (libwebrtc: at most 3); more would only
    # make the worker hold layers nobody can tell apart.
    send_rids = [r for r in media.rids if r.direction == "send"][:MAX_SIMULCAST_LAYERS]
    if send_rids and sending:
        section.rids = [Rid(r.rid, "recv", r.params) for r in send_rids]
        kept = {r.rid for r in send_rids}
        alternatives = [
            [rid for rid in alt if rid.lstrip("~") in kept]
            for alt in (media.simulcast.send if media.simulcast is not None else [])
        ]
        alternatives = [alt for alt in alternatives if alt]
        if alternatives:
            section.simulcast = Simulcast(send=[], recv=alternatives)
        else:
            section.simulcast = Simulcast(send=[], recv=[[r.rid] for r in send_rids])
    if not sending:
        return None
    stream, track_id = _stream_and_track(media)
    ssrcs, rtx_ssrcs = _ssrcs_of(media)
    return AcceptedMedia(
        mid=mid,
        kind=media.kind,
        codec=answer_codec,
        rtx=rtx,
        extmaps=extmaps,
        stream=stream,
        track_id=track_id,
        ssrcs=ssrcs,
        rtx_ssrcs=rtx_ssrcs,
        rids=[r.rid.lstrip("~") for r in send_rids],
        nack="nack" in chosen.rtcp_fb,
        sending=True,
    )


def extension_id(description: SessionDescription, uri: str) -> int:
    """The id a description gives header extension ``uri`` (BUNDLE: one id for every
    section), or 0 when it has none."""
    for section in description.media:
        if section.port == 0:
            continue
        for extmap in section.extmaps:
            if extmap.uri == uri and 1 <= extmap.id <= 255:
                return extmap.id
    return 0


def build_offer(
    slots: list[OutgoingSlot],
    local: LocalTransport,
    *,
    session_id: int,
    version: int,
    data_channel_mid: str | None = None,
) -> SessionDescription:
    """Our offer for a subscriber connection: sendonly sections, then the data channel."""
    offer = _new_description(session_id, version)
    bundle: list[str] = []
    entries: list[tuple[int, MediaSection]] = []
    for slot in slots:
        section = MediaSection(
            kind=slot.kind, port=9, protocol="UDP/TLS/RTP/SAVPF", formats=[], mid=slot.mid
        )
        section.codecs = [slot.codec] + ([slot.rtx] if slot.rtx is not None else [])
        section.formats = [str(c.payload_type) for c in section.codecs]
        section.extmaps = list(slot.extmaps)
        section.rtcp_mux = True
        section.rtcp_rsize = True
        if slot.active:
            section.direction = "sendonly"
            section.msid = [(slot.stream, slot.track_id)]
            section.ssrcs = {
                slot.ssrc: {"cname": slot.cname, "msid": f"{slot.stream} {slot.track_id}"}
            }
            if slot.rtx is not None and slot.rtx_ssrc:
                section.ssrc_groups = [SsrcGroup("FID", [slot.ssrc, slot.rtx_ssrc])]
                section.ssrcs[slot.rtx_ssrc] = {
                    "cname": slot.cname,
                    "msid": f"{slot.stream} {slot.track_id}",
                }
        else:
            section.direction = "inactive"
        entries.append((_mid_order(slot.mid), section))
    if data_channel_mid is not None:
        section = MediaSection(
            kind="application",
            port=9,
            protocol="UDP/DTLS/SCTP",
            formats=["webrtc-datachannel"],
            mid=data_channel_mid,
        )
        section.sctp_port = 5000
        section.max_message_size = 262144
        entries.append((_mid_order(data_channel_mid), section))
    entries.sort(key=lambda pair: pair[0])
    for _order, section in entries:
        _transport_attrs(section, local, with_candidates=True)
        offer.media.append(section)
        bundle.append(section.mid or "")
    offer.groups = [("BUNDLE", bundle)]
    return offer


def build_single_offer(
    previous: SessionDescription,
    slots: list[OutgoingSlot],
    local: LocalTransport,
    *,
    version: int,
) -> SessionDescription:
    """A new offer on a connection the client opened (classic Matrix calls).

    Starts from our last local description, so every m-section keeps its
    place, mid and codecs (RFC 8829 §5.2.2); sections of our slots change
    direction and SSRCs, new slots are appended. Payload types are taken from
    what the connection already uses for that codec, else from the free ones,
    so one value never names two codecs in the bundle (RFC 8843 §9.1).
    """
    offer = copy.deepcopy(previous)
    offer.session_version = version
    offer.ice_lite = True
    by_mid = {slot.mid: slot for slot in slots}
    used: dict[int, tuple[str, int]] = {}
    for section in offer.media:
        for codec in section.codecs:
            used[codec.payload_type] = (codec.name.lower(), codec.clock_rate)
    known = {section.mid for section in offer.media}
    ext_ids = {e.uri: e.id for section in offer.media for e in section.extmaps}
    for section in offer.media:
        slot = by_mid.get(section.mid or "")
        if slot is None or section.port == 0:
            continue
        receiving = section.direction in ("recvonly", "sendrecv")
        _set_sending(section, slot, receiving)
    for slot in slots:
        if slot.mid in known or not slot.active:
            continue
        _assign_payload_types(slot, used)
        slot.extmaps = _extmaps_for(slot.extmaps, ext_ids)
        section = MediaSection(
            kind=slot.kind, port=9, protocol="UDP/TLS/RTP/SAVPF", formats=[], mid=slot.mid
        )
        section.codecs = [slot.codec] + ([slot.rtx] if slot.rtx is not None else [])
        section.formats = [str(c.payload_type) for c in section.codecs]
        section.extmaps = list(slot.extmaps)
        section.rtcp_mux = True
        section.rtcp_rsize = True
        _set_sending(section, slot, receiving=False)
        offer.media.append(section)
    for section in offer.media:
        _transport_attrs(section, local, with_candidates=section.port != 0)
    offer.groups = [("BUNDLE", [m.mid or "" for m in offer.media if m.port != 0])]
    return offer


OPENING_EXTENSION_IDS = {**codecs.FORWARD_EXTENSIONS, rtp.URI_MID: 4}
"""Header extension ids of an offer that opens a single connection: the canonical
forwarded ones (no rewrite on the way out) and the mid."""


def build_opening_offer(
    slots: list[OutgoingSlot],
    receive: tuple[str, ...],
    local: LocalTransport,
    *,
    session_id: int,
    version: int,
) -> SessionDescription:
    """Our offer that opens a single connection (we call a classic Matrix client).

    One section per kind in ``receive`` (mids ``0``, ``1``...) to receive the
    client's media on, listing every codec we forward; the first active slot of
    that kind is sent there too (``sendrecv``, its codec first, so the client,
    answering in offer order, sends it back in the same one), as a client's
    ``addTrack`` pairs a track with the first transceiver of its kind. Other
    active slots get ``sendonly`` sections of their own. Slots moved to a receive
    section take its mid."""
    offer = _new_description(session_id, version)
    uris = {
        "audio": (rtp.URI_AUDIO_LEVEL, rtp.URI_TRANSPORT_CC, rtp.URI_MID),
        "video": (rtp.URI_ABS_SEND_TIME, rtp.URI_TRANSPORT_CC, rtp.URI_MID),
    }
    paired: set[str] = set()
    for index, kind in enumerate(receive):
        mid = str(index)
        specs = [spec for spec in codecs.SUPPORTED if spec.mime.startswith(kind + "/")]
        slot = next((s for s in slots if s.active and s.kind == kind and s.mid not in paired), None)
        if slot is not None:
            mime = slot.codec.mime.lower()
            specs.sort(key=lambda spec: spec.mime.lower() != mime)
            slot.mid = mid
            paired.add(mid)
        section = MediaSection(kind=kind, port=9, protocol="UDP/TLS/RTP/SAVPF", formats=[], mid=mid)
        for spec in specs:
            if slot is not None and spec.mime.lower() == slot.codec.mime.lower():
                section.codecs += [slot.codec] + ([slot.rtx] if slot.rtx is not None else [])
                continue
            section.codecs.append(spec.codec())
            rtx = spec.rtx_codec()
            if rtx is not None:
                section.codecs.append(rtx)
        section.formats = [str(c.payload_type) for c in section.codecs]
        section.extmaps = [Extmap(OPENING_EXTENSION_IDS[uri], uri) for uri in uris[kind]]
        section.rtcp_mux = True
        section.rtcp_rsize = True
        section.direction = "recvonly"
        if slot is not None:
            _set_sending(section, slot, receiving=True)
        offer.media.append(section)
    for slot in slots:
        if not slot.active or slot.mid in paired:
            continue
        section = MediaSection(
            kind=slot.kind, port=9, protocol="UDP/TLS/RTP/SAVPF", formats=[], mid=slot.mid
        )
        section.codecs = [slot.codec] + ([slot.rtx] if slot.rtx is not None else [])
        section.formats = [str(c.payload_type) for c in section.codecs]
        section.extmaps = [
            Extmap(OPENING_EXTENSION_IDS[uri], uri)
            for uri in uris.get(slot.kind, ())
            if uri != rtp.URI_MID
        ]
        section.rtcp_mux = True
        section.rtcp_rsize = True
        _set_sending(section, slot, receiving=False)
        offer.media.append(section)
    for section in offer.media:
        _transport_attrs(section, local, with_candidates=True)
    offer.groups = [("BUNDLE", [m.mid or "" for m in offer.media])]
    return offer


def answered_media(offer: SessionDescription, answer: SessionDescription) -> list[AcceptedMedia]:
    """What the client's answer to our offer sends us: one entry per section it
    sends on (``sendrecv``/``sendonly`` from its side) in a codec we forward."""
    offered = {m.mid for m in offer.media if m.port != 0}
    accepted = []
    for media in answer.media:
        if media.mid not in offered or media.port == 0 or media.kind not in ("audio", "video"):
            continue
        chosen = next((c for c in media.codecs if codecs.find_spec(c) is not None), None)
        if chosen is None:
            continue
        scratch = MediaSection(kind=media.kind, port=9, protocol=media.protocol, formats=[])
        entry = _accept_rtp(media, scratch, chosen, None)
        if entry is not None:
            accepted.append(entry)
    return accepted


def _extmaps_for(wanted: list[Extmap], ext_ids: dict[str, int]) -> list[Extmap]:
    """Our extensions, numbered as the connection already numbers them (one id, one URI)."""
    out = []
    for extmap in wanted:
        ext_id = ext_ids.get(extmap.uri)
        if ext_id is None:
            taken = set(ext_ids.values())
            ext_id = next((i for i in range(1, 15) if i not in taken), 0)
            if not ext_id:
                continue
            ext_ids[extmap.uri] = ext_id
        out.append(Extmap(ext_id, extmap.uri))
    return out


def _set_sending(section: MediaSection, slot: OutgoingSlot, receiving: bool) -> None:
    if slot.active:
        section.direction = "sendrecv" if receiving else "sendonly"
        section.msid = [(slot.stream, slot.track_id)]
        section.ssrcs = {slot.ssrc: {"cname": slot.cname}}
        section.ssrc_groups = []
        if slot.rtx is not None and slot.rtx_ssrc:
            section.ssrcs[slot.rtx_ssrc] = {"cname": slot.cname}
            section.ssrc_groups = [SsrcGroup("FID", [slot.ssrc, slot.rtx_ssrc])]
    else:
        section.direction = "recvonly" if receiving else "inactive"
        section.msid = []
        section.ssrcs = {}
        section.ssrc_groups = []


def _assign_payload_types(slot: OutgoingSlot, used: dict[int, tuple[str, int]]) -> None:
    def pick(name: str, clock_rate: int, preferred: int) -> int:
        for pt, codec in used.items():
            if codec == (name.lower(), clock_rate) and name.lower() != "rtx":
                return pt
        if preferred not in used:
            used[preferred] = (name.lower(), clock_rate)
            return preferred
        for pt in range(96, 128):
            if pt not in used:
                used[pt] = (name.lower(), clock_rate)
                return pt
        raise NegotiationError("no free RTP payload type left in this connection")

    slot.codec.payload_type = pick(slot.codec.name, slot.codec.clock_rate, slot.codec.payload_type)
    if slot.rtx is not None:
        # RTX formats differ by their apt: never share one.
        rtx_pt = slot.rtx.payload_type
        if rtx_pt in used:
            rtx_pt = next(pt for pt in range(96, 128) if pt not in used)
        used[rtx_pt] = ("rtx", slot.rtx.clock_rate)
        slot.rtx.payload_type = rtx_pt
        slot.rtx.fmtp = {"apt": str(slot.codec.payload_type)}


def _mid_order(mid: str) -> int:
    return int(mid) if mid.isdigit() else 1 << 30


def accepted_mids(answer: SessionDescription) -> set[str]:
    return {m.mid for m in answer.media if m.mid is not None and m.port != 0}


def new_session_id() -> int:
    return int(time.time() * 1000) & 0x7FFFFFFFFFFF
