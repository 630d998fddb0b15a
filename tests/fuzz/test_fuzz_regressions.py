"""What the fuzz targets found, kept: each crash input is replayed, and the error a
user gets for it is asserted.

``tests/fuzz/regressions/<target>/`` holds every crash input the fuzzers found
(``scripts/fuzz`` writes them to ``build/fuzz/crashes/``); each is replayed through its
target as libFuzzer runs a single input (with the sanitized build when clang is here),
and the tests above assert, without a fuzzer, what each now gets.
"""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest

from mediafed.errors import AuthError
from mediafed.rocketchat import webhooks
from mediafed.transport.ice import IceLiteAgent, parse_username
from mediafed.wire import sdp

ROOT = Path(__file__).resolve().parents[2]
REGRESSIONS = Path(__file__).resolve().parent / "regressions"
INPUTS = sorted(path for path in REGRESSIONS.glob("*/*") if path.is_file())
OPEN: dict[str, str] = {}
"""Crash inputs whose bug is not fixed yet (each an expected failure, strict)."""

SDP_HEAD = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"


def short_ice_controlling() -> bytes:
    """A binding request whose ICE-CONTROLLING attribute has 4 bytes instead of 8."""
    attribute = struct.pack("!HH", 0x802A, 4) + b"\x00\x00\x00\x01"
    return struct.pack("!HHI", 0x0001, len(attribute), 0x2112A442) + b"\x01" * 12 + attribute


def test_a_stun_attribute_shorter_than_its_type_is_malformed_stun() -> None:
    # aioice raised struct.error, which escaped the demultiplexer (fuzz target stun).
    data = short_ice_controlling()
    assert (REGRESSIONS / "stun" / "ice-controlling-4-bytes").read_bytes()[1:] == data
    assert parse_username(data) is None
    result = IceLiteAgent().handle(data, ("127.0.0.2", 5000), 1.0)
    assert (result.response, result.valid) == (None, False)
    assert result.error == "malformed STUN: unpack requires a buffer of 8 bytes"


@pytest.mark.parametrize(
    "header",
    [
        "t=1700000000,v1=9dba2b73e2dAAAþAAA",  # was TypeError from hmac.compare_digest
        "t=²,v1=00",  # was ValueError: '²'.isdigit() but int('²') fails
        "t=" + "1" * 5000 + ",v1=00",  # was ValueError: int() of more than 4300 digits
    ],
)
def test_a_malformed_webhook_signature_is_refused_with_auth_error(header: str) -> None:
    with pytest.raises(AuthError, match=r"X-Mediafed-Signature must look like|does not match"):
        webhooks.verify(header, b"{}", "secret", now=1_700_000_000)


def test_unicode_digits_in_sdp_formats_are_not_payload_types() -> None:
    # int('²') raised ValueError out of parse_sdp (fuzz target livekit_signal: an offer).
    desc = sdp.parse_sdp(SDP_HEAD + "m=audio 9 RTP/AVP 0 ²\r\n")
    assert [codec.name for codec in desc.media[0].codecs] == ["PCMU"]
    assert desc.media[0].formats == ["0", "²"]  # kept, and written back as they came
    rtx = sdp.parse_sdp(
        SDP_HEAD + "m=video 9 RTP/AVP 96 97\r\na=rtpmap:96 VP8/90000\r\n"
        "a=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=²\r\n"
    )
    assert rtx.media[0].codec(97) is not None
    assert rtx.media[0].codec(97).rtx_apt is None  # type: ignore[union-attr]


def test_sdp_numbers_too_long_for_int_are_refused_with_sdp_error() -> None:
    with pytest.raises(sdp.SdpError, match="session id must be a number of at most 20 digits"):
        sdp.parse_sdp(SDP_HEAD.replace("o=- 1 1", "o=- " + "1" * 5000 + " 1"))
    assert (
        sdp.parse_sdp(SDP_HEAD + "m=audio 9 RTP/AVP " + "9" * 5000 + "\r\n").media[0].codecs == []
    )


def test_a_payload_type_listed_twice_is_one_codec() -> None:
    # Two Codec objects for one payload type (the second without its rtcp-fb and fmtp),
    # and a description that changed on every parse -> serialize (fuzz target sdp).
    desc = sdp.parse_sdp(
        SDP_HEAD + "m=video 9 RTP/AVPF 96 96\r\na=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 nack\r\n"
    )
    assert [(c.payload_type, c.rtcp_fb) for c in desc.media[0].codecs] == [(96, ["nack"])]
    text = sdp.serialize_sdp(desc)
    assert sdp.serialize_sdp(sdp.parse_sdp(text)) == text


def _case(path: Path) -> object:
    name = f"{path.parent.name}/{path.name}"
    if name in OPEN:
        return pytest.param(path, id=name, marks=pytest.mark.xfail(reason=OPEN[name], strict=True))
    return pytest.param(path, id=name)


@pytest.mark.slow  # a process per input: ~2 s each
@pytest.mark.parametrize("path", [_case(path) for path in INPUTS])
def test_crash_input_replays_cleanly(path: Path, fuzz_env: dict[str, str]) -> None:
    target = path.parent.name
    result = subprocess.run(
        [sys.executable, "-m", f"fuzz.{target}", "-timeout=30", str(path)],
        cwd=ROOT,
        env=fuzz_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    assert "Executed" in log, log[-3000:]
