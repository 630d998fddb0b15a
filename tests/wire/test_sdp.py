"""SDP parsing and writing (mediafed.wire.sdp) against offers real endpoints produce."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiortc import sdp as aiortc_sdp
from hypothesis import given, strategies as st

from mediafed.errors import NegotiationError
from mediafed.wire.sdp import (
    Codec,
    Extmap,
    MediaSection,
    Rid,
    SdpError,
    SessionDescription,
    Simulcast,
    SsrcGroup,
    parse_sdp,
    serialize_sdp,
)

GOLDEN = Path(__file__).parent / "golden"
SDP_FILES = sorted(GOLDEN.glob("*.sdp"))

TWCC_URI = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"


def load(name: str) -> SessionDescription:
    return parse_sdp((GOLDEN / name).read_text())


def test_golden_files_present() -> None:
    assert {p.name for p in SDP_FILES} >= {
        "aiortc_offer.sdp",
        "chrome_simulcast_offer.sdp",
        "firefox_simulcast_offer.sdp",
        "sfu_ice_lite_answer.sdp",
    }


@pytest.mark.parametrize("path", SDP_FILES, ids=lambda p: p.name)
def test_parse_serialize_parse_is_identical(path: Path) -> None:
    first = parse_sdp(path.read_text())
    text = serialize_sdp(first)
    assert text.endswith("\r\n")
    assert "\n" not in text.replace("\r\n", "")
    assert parse_sdp(text) == first
    # Serializing is a fixed point after one round.
    assert serialize_sdp(parse_sdp(text)) == text


@pytest.mark.parametrize("path", SDP_FILES, ids=lambda p: p.name)
def test_aiortc_parses_what_we_write(path: Path) -> None:
    ours = parse_sdp(path.read_text())
    theirs = aiortc_sdp.SessionDescription.parse(serialize_sdp(ours))
    assert [m.kind for m in theirs.media] == [m.kind for m in ours.media]
    assert [m.rtp.muxId if m.kind != "application" else None for m in theirs.media] == [
        m.mid if m.kind != "application" else None for m in ours.media
    ]
    for their_media, our_media in zip(theirs.media, ours.media, strict=True):
        assert their_media.ice.usernameFragment == our_media.ice_ufrag
        assert their_media.ice.password == our_media.ice_pwd
        assert [f.value for f in their_media.dtls.fingerprints] == [
            v for _, v in our_media.fingerprints
        ]
        if our_media.kind != "application":
            assert [c.payloadType for c in their_media.rtp.codecs] == [
                c.payload_type for c in our_media.codecs
            ]
            assert [(h.id, h.uri) for h in their_media.rtp.headerExtensions] == [
                (e.id, e.uri) for e in our_media.extmaps
            ]
            assert [(c.mimeType, c.clockRate) for c in their_media.rtp.codecs] == [
                (c.mime, c.clock_rate) for c in our_media.codecs
            ]
            assert their_media.direction == our_media.direction
        else:
            assert their_media.sctpCapabilities is not None
            assert their_media.sctp_port == our_media.sctp_port


def test_aiortc_offer_details() -> None:
    desc = load("aiortc_offer.sdp")
    assert desc.bundle_mids() == ["0", "1", "2"]
    assert desc.msid_semantic == "WMS *"
    audio, video, app = desc.media
    assert (audio.kind, audio.protocol, audio.mid) == ("audio", "UDP/TLS/RTP/SAVPF", "0")
    assert audio.connection_address == "127.0.0.2"
    assert audio.codec(96) == Codec(96, "opus", 48000, 2)
    assert audio.codec(96) is not None and audio.codec(96).mime == "audio/opus"  # type: ignore[union-attr]
    assert audio.extmap_id("urn:ietf:params:rtp-hdrext:ssrc-audio-level") == 2
    assert audio.rtcp_mux and not audio.rtcp_rsize
    assert audio.candidates[0].startswith("candidate:") and " typ host" in audio.candidates[0]
    assert audio.end_of_candidates
    assert [alg for alg, _ in audio.fingerprints] == ["sha-256", "sha-384", "sha-512"]
    assert audio.setup == "actpass"
    assert ("rtcp", "9 IN IP4 0.0.0.0") in audio.other
    assert video.ssrc_groups == [SsrcGroup("FID", list(video.ssrcs))]
    vp8 = video.codec(97)
    assert vp8 is not None and vp8.rtcp_fb == ["nack", "nack pli", "goog-remb"]
    rtx = video.codec(98)
    assert rtx is not None and rtx.rtx_apt == 97 and rtx.mime == "video/rtx"
    h264 = video.codec(101)
    assert h264 is not None and h264.fmtp["profile-level-id"] == "42e01f"
    assert app.kind == "application" and app.sctp_port == 5000
    assert app.max_message_size == 262144
    assert app.formats == ["webrtc-datachannel"]


def test_chrome_simulcast_offer_details() -> None:
    desc = load("chrome_simulcast_offer.sdp")
    assert desc.bundle_mids() == ["0", "1", "2", "3"]
    assert ("extmap-allow-mixed", None) in desc.other
    assert desc.msid_semantic == "WMS 6f1c1a7e-9f5a-4b0e-8d43-0f6a2e9c4b11"
    audio, camera, screen, app = desc.media
    assert audio.direction == "sendonly"
    assert audio.msid == [
        ("6f1c1a7e-9f5a-4b0e-8d43-0f6a2e9c4b11", "2c0d6e55-8a7b-4c3e-9e1f-a1b2c3d4e5f6")
    ]
    red = audio.codec(63)
    assert red is not None and red.fmtp == {"111/111": ""}
    assert audio.codec(0) == Codec(0, "PCMU", 8000)
    assert camera.rids == [Rid("q", "send"), Rid("h", "send"), Rid("f", "send")]
    assert camera.simulcast == Simulcast(send=[["q"], ["h"], ["f"]], recv=[])
    assert camera.extmap_id("urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id") == 10
    assert camera.extmap_id(TWCC_URI) == 3
    assert camera.ssrcs == {}
    assert [c.payload_type for c in camera.codecs] == [int(f) for f in camera.formats]
    vp8 = camera.codec(96)
    assert vp8 is not None
    assert vp8.rtcp_fb == ["goog-remb", "transport-cc", "ccm fir", "nack", "nack pli"]
    assert camera.codec(97) is not None and camera.codec(97).rtx_apt == 96  # type: ignore[union-attr]
    h264 = camera.codec(102)
    assert h264 is not None and h264.fmtp == {
        "level-asymmetry-allowed": "1",
        "packetization-mode": "1",
        "profile-level-id": "42001f",
    }
    assert camera.rtcp_rsize
    assert screen.ssrc_groups == [SsrcGroup("FID", [3046539218, 1193087014])]
    assert screen.ssrcs[3046539218]["cname"] == "Yq6Vw0w1V8Jx5dTk"
    assert app.sctp_port == 5000 and app.ice_options == ["trickle"]


def test_firefox_offer_inherits_session_level_values() -> None:
    desc = load("firefox_simulcast_offer.sdp")
    assert desc.origin_username == "mozilla...THIS_IS_SDPARTA-99.0"
    assert desc.session_id == 7146387052216063581
    assert desc.fingerprints and desc.fingerprints[0][0] == "sha-256"
    for media in desc.media:
        assert media.fingerprints == desc.fingerprints
        assert media.ice_options == ["trickle"]
    audio, video, _ = desc.media
    assert audio.extmaps[1] == Extmap(2, "urn:ietf:params:rtp-hdrext:csrc-audio-level", "recvonly")
    # fmtp lines came before their rtpmap lines; codecs still follow the m= line order.
    assert [c.payload_type for c in video.codecs] == [120, 124, 121, 125, 126, 127, 97, 98]
    assert video.codec(120) is not None and video.codec(120).fmtp == {  # type: ignore[union-attr]
        "max-fs": "12288",
        "max-fr": "60",
    }
    assert len(video.ssrc_groups) == 3
    assert video.simulcast == Simulcast(send=[["q"], ["h"], ["f"]], recv=[])
    assert audio.codec(9) == Codec(9, "G722", 8000, 1)


def test_sfu_answer_ice_lite_and_recv_simulcast() -> None:
    desc = load("sfu_ice_lite_answer.sdp")
    assert desc.ice_lite
    audio, video = desc.media
    # session-level ICE and DTLS values are inherited, fingerprint hex upper-cased
    assert video.ice_ufrag == "mfUFRAGsfu01" and video.setup == "passive"
    assert video.fingerprints[0][1].startswith("AA:BB:CC")
    assert audio.candidates[1].endswith("tcptype passive")
    assert video.port == 0 and video.bundle_only
    assert video.rids[2] == Rid("f", "recv", "pt=96;max-width=1280;max-height=720")
    assert video.simulcast == Simulcast(send=[], recv=[["q"], ["h"], ["~f"]])
    # a=rtcp-fb:* applies to every payload type of the section
    vp8 = video.codec(96)
    rtx = video.codec(97)
    assert vp8 is not None and set(vp8.rtcp_fb) == {"nack", "nack pli", "transport-cc"}
    assert rtx is not None and rtx.rtcp_fb == ["nack"]


def test_legacy_ssrc_msid_fills_msid() -> None:
    text = (
        "v=0\no=- 1 1 IN IP4 127.0.0.1\ns=-\nt=0 0\n"
        "m=audio 9 UDP/TLS/RTP/SAVPF 111\nc=IN IP4 0.0.0.0\na=mid:a\n"
        "a=rtpmap:111 opus/48000/2\n"
        "a=ssrc:5 cname:x\na=ssrc:5 msid:stream1 track1\n"
    )
    media = parse_sdp(text).media[0]
    assert media.msid == [("stream1", "track1")]
    assert media.ssrcs == {5: {"cname": "x", "msid": "stream1 track1"}}
    assert parse_sdp(serialize_sdp(parse_sdp(text))) == parse_sdp(text)


def test_built_description_serializes_like_a_browser() -> None:
    video = MediaSection(
        kind="video",
        port=9,
        protocol="UDP/TLS/RTP/SAVPF",
        formats=["96", "97"],
        mid="1",
        direction="recvonly",
        codecs=[
            Codec(96, "VP8", 90000, rtcp_fb=["nack", "nack pli"]),
            Codec(97, "rtx", 90000, fmtp={"apt": "96"}),
        ],
        extmaps=[Extmap(4, "urn:ietf:params:rtp-hdrext:sdes:mid")],
        rids=[Rid("q", "recv"), Rid("h", "recv")],
        simulcast=Simulcast(recv=[["q"], ["h"]]),
        rtcp_mux=True,
        ice_ufrag="u",
        ice_pwd="p" * 22,
        fingerprints=[("sha-256", "AB:CD")],
        setup="passive",
    )
    desc = SessionDescription(
        session_id=7, session_version=2, groups=[("BUNDLE", ["1"])], media=[video]
    )
    lines = serialize_sdp(desc).split("\r\n")
    assert lines[:4] == ["v=0", "o=- 7 2 IN IP4 127.0.0.1", "s=-", "t=0 0"]
    order = [
        "a=mid:1",
        "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid",
        "a=recvonly",
        "a=rtcp-mux",
        "a=rtpmap:96 VP8/90000",
        "a=rtcp-fb:96 nack",
        "a=rtcp-fb:96 nack pli",
        "a=rtpmap:97 rtx/90000",
        "a=fmtp:97 apt=96",
        "a=rid:q recv",
        "a=rid:h recv",
        "a=simulcast:recv q;h",
    ]
    assert [line for line in lines if line in order] == order
    assert parse_sdp(serialize_sdp(desc)) == desc


BASE = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "a=rtpmap:abc VP8/90000",
            "SDP line 6 'a=rtpmap:abc VP8/90000' is malformed: payload type must be a number",
        ),
        (
            "a=rtpmap:96 VP8",
            "SDP line 6 'a=rtpmap:96 VP8' is malformed: "
            "expected 'rtpmap:<pt> <name>/<clock rate>[/<channels>]'",
        ),
        ("a=rtpmap:200 VP8/90000", "payload type must be in 0..127"),
        ("a=extmap:x urn:foo", "extmap id must be a number"),
        ("a=extmap:3/sideways urn:foo", "extmap direction 'sideways' is not a valid direction"),
        ("a=ssrc:-5 cname:x", "SSRC must be a number"),
        ("a=ssrc-group:FID 1 two", "SSRC must be a number"),
        ("a=rid:q both", "expected 'rid:<id> send|recv [<restrictions>]'"),
        ("a=simulcast:send", "expected 'send <streams>' and/or 'recv <streams>'"),
        ("a=simulcast:up q;h", "direction must be 'send' or 'recv', not 'up'"),
        ("a=fingerprint:sha-256", "expected '<hash algorithm> <hex fingerprint>'"),
        ("a=fingerprint:sha-256 ZZ:11", "fingerprint must be hex bytes separated by ':'"),
        ("a=setup:sometimes", "setup must be one of actpass, active, passive, holdconn"),
        ("a=sctp-port:many", "SCTP port must be a number"),
        ("c=IN IP4", "expected 'IN IP4 <address>' or 'IN IP6 <address>'"),
        ("garbage", "an SDP line must look like '<letter>=<value>'"),
    ],
)
def test_malformed_lines_name_line_and_problem(line: str, message: str) -> None:
    with pytest.raises(SdpError) as info:
        parse_sdp(BASE + line + "\r\n")
    assert message in str(info.value)
    assert str(info.value).startswith(f"SDP line 6 {line!r} is malformed: ")
    assert isinstance(info.value, NegotiationError)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the SDP is empty: it must start with 'v=0'"),
        (
            "o=- 1 1 IN IP4 127.0.0.1\r\n",
            "SDP line 1 'o=- 1 1 IN IP4 127.0.0.1' is malformed: an SDP must start with 'v=0'",
        ),
        ("v=1\r\n", "SDP line 1 'v=1' is malformed: only SDP version 0 exists"),
        ("v=0\r\ns=-\r\n", "the SDP has no 'o=' line"),
        ("v=0\r\no=- x 1 IN IP4 127.0.0.1\r\n", "session id must be a number"),
        ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\nm=video nine UDP 96\r\n", "port must be a number"),
    ],
)
def test_malformed_session(text: str, message: str) -> None:
    with pytest.raises(SdpError) as info:
        parse_sdp(text)
    assert message in str(info.value)


def test_unknown_lines_and_attributes_survive() -> None:
    text = BASE + "b=AS:500\r\na=x-google-flag:conference\r\na=weird\r\na=rtpmap:96 VP8/90000\r\n"
    desc = parse_sdp(text)
    media = desc.media[0]
    assert media.extra_lines == ["b=AS:500"]
    assert media.other == [("x-google-flag", "conference"), ("weird", None)]
    out = serialize_sdp(desc)
    assert "b=AS:500\r\n" in out and "a=x-google-flag:conference\r\n" in out
    assert "a=weird\r\n" in out


_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=8)


@given(
    mids=st.lists(_token, min_size=1, max_size=4, unique=True),
    pts=st.lists(st.integers(96, 127), min_size=1, max_size=5, unique=True),
    fbs=st.lists(st.sampled_from(["nack", "nack pli", "ccm fir", "transport-cc"]), max_size=4),
    rids=st.lists(_token, max_size=3, unique=True),
    ssrc=st.integers(0, 2**32 - 1),
    direction=st.sampled_from(["sendrecv", "sendonly", "recvonly", "inactive"]),
)
def test_property_round_trip(
    mids: list[str],
    pts: list[int],
    fbs: list[str],
    rids: list[str],
    ssrc: int,
    direction: str,
) -> None:
    media = [
        MediaSection(
            kind="video",
            port=9,
            protocol="UDP/TLS/RTP/SAVPF",
            formats=[str(pt) for pt in pts],
            mid=mid,
            direction=direction,
            codecs=[Codec(pt, "VP8", 90000, rtcp_fb=list(fbs)) for pt in pts],
            rids=[Rid(r, "send") for r in rids],
            simulcast=Simulcast(send=[[r] for r in rids]) if rids else None,
            ssrcs={ssrc: {"cname": mid}},
            msid=[("s", mid)],
        )
        for mid in mids
    ]
    desc = SessionDescription(
        session_id=ssrc, session_version=1, groups=[("BUNDLE", mids)], media=media
    )
    assert parse_sdp(serialize_sdp(desc)) == desc


@given(st.text(max_size=300))
def test_fuzz_only_sdp_errors(text: str) -> None:
    text = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\nm=video 9 RTP/AVP 96\r\n" + text
    try:
        desc = parse_sdp(text)
    except SdpError as error:
        assert str(error)  # only our error escapes, and it explains itself
    else:
        # whatever parsed must write back to something that parses the same
        assert parse_sdp(serialize_sdp(desc)) == desc
