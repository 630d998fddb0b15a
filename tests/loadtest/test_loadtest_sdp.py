"""The load clients' SDP offers and answers (RFC 8866, 8829, 8843) and Janus's generated config."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest.client import build_answer, build_offer
from loadtest.janus import render_jcfg, write_config
from loadtest.peer import LightPeer, PeerError, generate_certificate, parse_sdp

JANUS_LIKE_OFFER = """v=0
o=- 1 1 IN IP4 127.0.0.1
s=VideoRoom 1234
t=0 0
a=group:BUNDLE 0 1 2
a=ice-options:trickle
a=fingerprint:sha-256 AA:BB:CC:DD
a=msid-semantic: WMS janus
m=audio 9 UDP/TLS/RTP/SAVPF 111
c=IN IP4 127.0.0.1
a=sendonly
a=mid:0
a=rtcp-mux
a=ice-ufrag:JaNu
a=ice-pwd:janusjanusjanusjanus12
a=ice-options:trickle
a=setup:actpass
a=rtpmap:111 opus/48000/2
a=fmtp:111 useinbandfec=1
a=ssrc:1111 cname:janus
a=candidate:1 1 udp 2015363327 127.0.0.1 20000 typ host
m=video 9 UDP/TLS/RTP/SAVPF 100 101
c=IN IP4 127.0.0.1
a=sendonly
a=mid:1
a=rtcp-mux
a=ice-ufrag:JaNu
a=ice-pwd:janusjanusjanusjanus12
a=setup:actpass
a=rtpmap:100 H264/90000
a=rtpmap:101 VP8/90000
a=ssrc:2222 cname:janus
a=end-of-candidates
m=application 9 UDP/DTLS/SCTP webrtc-datachannel
c=IN IP4 127.0.0.1
a=mid:2
a=sctp-port:5000
"""


def test_parse_reads_credentials_candidates_and_sections() -> None:
    desc = parse_sdp(JANUS_LIKE_OFFER)
    assert (desc.ice_ufrag, desc.ice_pwd) == ("JaNu", "janusjanusjanusjanus12")
    assert desc.fingerprint == "sha-256 AA:BB:CC:DD"
    assert desc.setup == "actpass" and not desc.ice_lite
    assert desc.candidates == ["1 1 udp 2015363327 127.0.0.1 20000 typ host"]
    assert [(m.kind, m.mid, m.direction) for m in desc.media] == [
        ("audio", "0", "sendonly"),
        ("video", "1", "sendonly"),
        ("application", "2", "sendrecv"),
    ]
    assert desc.media[1].payload_type_for("vp8") == 101
    assert desc.media[1].ssrcs == [2222]


def test_sdp_without_ice_credentials_is_refused() -> None:
    with pytest.raises(PeerError, match="lacks ice-ufrag"):
        parse_sdp("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n")


async def test_offer_and_answer_carry_our_transport() -> None:
    certificate = generate_certificate()
    peer = LightPeer("t", certificate)
    await peer.gather(ice_controlling=True)
    try:
        offer = parse_sdp(build_offer(peer, ("microphone", "camera"), [11, 22]))
        assert offer.fingerprint == certificate.fingerprint
        assert offer.setup == "actpass"
        assert offer.candidates and all("127.0.0." in c for c in offer.candidates)
        assert [(m.kind, m.direction, m.ssrcs) for m in offer.media] == [
            ("audio", "sendonly", [11]),
            ("video", "sendonly", [22]),
        ]

        port = peer.default_address()[1]
        answer_sdp = build_answer(peer, JANUS_LIKE_OFFER)
        answer = parse_sdp(answer_sdp)
        assert "a=group:BUNDLE 0 1 2\r\n" in answer_sdp
        assert answer.setup == "active"
        audio, video, data = answer.media
        assert (audio.direction, audio.formats) == ("recvonly", ["111"])
        assert (video.direction, video.formats, video.mid) == ("recvonly", ["101"], "1")
        assert (data.kind, data.mid, data.port) == ("application", "2", port)
        assert "a=sctp-port:5000" in data.lines
    finally:
        await peer.close()


def test_certificate_fingerprint_is_sha256_of_the_der() -> None:
    from cryptography.hazmat.primitives import hashes

    certificate = generate_certificate()
    der_digest = certificate.cert.to_cryptography().fingerprint(hashes.SHA256()).hex().upper()
    assert certificate.fingerprint.replace(":", "") == "sha-256 " + der_digest


def test_janus_config_loads_only_videoroom_and_websockets(tmp_path: Path) -> None:
    lib_dir = tmp_path / "lib"
    for folder, names in {
        "plugins": ["libjanus_videoroom.so", "libjanus_echotest.so", "libjanus_sip.so"],
        "transports": ["libjanus_websockets.so", "libjanus_http.so"],
    }.items():
        (lib_dir / folder).mkdir(parents=True)
        for name in names:
            (lib_dir / folder / name).touch()
    config = write_config(tmp_path, ws_port=4321, lib_dir=lib_dir).read_text()
    assert 'disable = "libjanus_echotest.so,libjanus_sip.so"' in config
    assert 'disable = "libjanus_http.so"' in config
    assert 'ice_enforce_list = "lo"' in config
    assert "stun_server" not in config
    ws = (tmp_path / "janus.transport.websockets.jcfg").read_text()
    assert "ws_port = 4321" in ws and 'ws_ip = "127.0.0.1"' in ws


def test_jcfg_rendering() -> None:
    text = render_jcfg({"general": {"a": True, "b": 3, "c": 'x"y'}})
    assert text == 'general: {\n\ta = true\n\tb = 3\n\tc = "x\\"y"\n}\n'
