"""Parsing of m.call.* event content (Matrix spec, "Voice over IP"), good and bad."""

from __future__ import annotations

from typing import Any

import pytest

from mediafed.matrix.voip import (
    Answer,
    CallEventError,
    Candidate,
    Candidates,
    Hangup,
    Invite,
    Negotiate,
    Reject,
    SdpStreamMetadataChanged,
    SelectAnswer,
    StreamMetadata,
    parse_call_event,
)

SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
BASE = {"call_id": "c1", "party_id": "PARTY1", "version": "1"}


def test_invite_with_both_metadata_spellings() -> None:
    content = {
        **BASE,
        "offer": {"type": "offer", "sdp": SDP},
        "lifetime": 60000,
        "invitee": "@rc_bob:hs.example",
        "sdp_stream_metadata": {
            "s1": {"purpose": "m.usermedia", "audio_muted": False, "video_muted": True},
            "s2": {"purpose": "m.screenshare"},
            "s3": {"purpose": "m.something.new"},
        },
    }
    invite = parse_call_event("m.call.invite", content)
    assert isinstance(invite, Invite) and invite.offer.sdp == SDP
    assert invite == Invite(
        call_id="c1",
        party_id="PARTY1",
        version=1,
        offer=invite.offer,
        lifetime_ms=60000,
        invitee="@rc_bob:hs.example",
        stream_metadata={
            "s1": StreamMetadata("m.usermedia", audio_muted=False, video_muted=True),
            "s2": StreamMetadata("m.screenshare"),
        },
    )
    old = dict(content)
    old["org.matrix.msc3077.sdp_stream_metadata"] = old.pop("sdp_stream_metadata")
    assert parse_call_event("m.call.invite", old) == invite


def test_version_zero_and_unknown_versions() -> None:
    v0 = {"call_id": "c0", "version": 0, "offer": {"type": "offer", "sdp": SDP}, "lifetime": 30000}
    invite = parse_call_event("m.call.invite", v0)
    assert (invite.version, invite.party_id) == (0, "")
    # anything that is not 0 is treated as "1", which requires a party_id
    with pytest.raises(CallEventError, match="`party_id` must be a non-empty string"):
        parse_call_event("m.call.invite", {**v0, "version": "2"})
    assert parse_call_event("m.call.hangup", {**BASE, "version": 7}).version == 1
    assert parse_call_event("m.call.hangup", {**BASE, "version": False}).version == 1


def test_every_other_type() -> None:
    answer = parse_call_event("m.call.answer", {**BASE, "answer": {"type": "answer", "sdp": SDP}})
    assert isinstance(answer, Answer) and answer.answer.type == "answer"
    candidates = parse_call_event(
        "m.call.candidates",
        {
            **BASE,
            "candidates": [
                {
                    "candidate": "candidate:1 1 udp 1 127.0.0.1 5000 typ host",
                    "sdpMid": "0",
                    "sdpMLineIndex": 0,
                },
                {"candidate": "", "sdpMid": "0"},
            ],
        },
    )
    assert isinstance(candidates, Candidates)
    assert candidates.candidates[1] == Candidate("", "0", None)
    assert candidates.candidates[1].end_of_candidates
    assert parse_call_event("m.call.hangup", BASE) == Hangup("c1", "PARTY1", 1, "user_hangup")
    for given, expected in (
        ("ice_timeout", "ice_timeout"),
        ("user_busy", "user_busy"),
        ("bored", "unknown_error"),
    ):
        assert parse_call_event("m.call.hangup", {**BASE, "reason": given}) == Hangup(
            "c1", "PARTY1", 1, expected
        )
    assert parse_call_event("m.call.reject", BASE) == Reject("c1", "PARTY1", 1)
    assert parse_call_event(
        "m.call.select_answer", {**BASE, "selected_party_id": "P2"}
    ) == SelectAnswer("c1", "PARTY1", 1, "P2")
    negotiate = parse_call_event(
        "m.call.negotiate",
        {**BASE, "description": {"type": "offer", "sdp": SDP}, "lifetime": 10000},
    )
    assert isinstance(negotiate, Negotiate) and negotiate.lifetime_ms == 10000
    changed = parse_call_event(
        "m.call.sdp_stream_metadata_changed",
        {**BASE, "sdp_stream_metadata": {"s1": {"purpose": "m.usermedia", "audio_muted": True}}},
    )
    assert changed == SdpStreamMetadataChanged(
        "c1", "PARTY1", 1, {"s1": StreamMetadata("m.usermedia", audio_muted=True)}
    )


@pytest.mark.parametrize(
    ("event_type", "content", "words"),
    [
        ("m.call.invite", [], "content must be a JSON object"),
        ("m.call.invite", {**BASE, "call_id": ""}, "`call_id` must be a non-empty string"),
        ("m.call.invite", {**BASE, "lifetime": 1000}, "`offer` must be an object"),
        (
            "m.call.invite",
            {**BASE, "offer": {"type": "answer", "sdp": SDP}, "lifetime": 1},
            "`offer.type` must be offer",
        ),
        (
            "m.call.invite",
            {**BASE, "offer": {"type": "offer", "sdp": ""}, "lifetime": 1},
            "`offer.sdp` must be",
        ),
        (
            "m.call.invite",
            {**BASE, "offer": {"type": "offer", "sdp": SDP}},
            "`lifetime` must be a positive integer",
        ),
        (
            "m.call.invite",
            {**BASE, "offer": {"type": "offer", "sdp": SDP}, "lifetime": True},
            "`lifetime`",
        ),
        (
            "m.call.invite",
            {**BASE, "offer": {"type": "offer", "sdp": "x" * 70000}, "lifetime": 1},
            "longer than",
        ),
        (
            "m.call.answer",
            {**BASE, "answer": {"type": "answer", "sdp": SDP}, "sdp_stream_metadata": []},
            "must map stream ids",
        ),
        (
            "m.call.answer",
            {
                **BASE,
                "answer": {"type": "answer", "sdp": SDP},
                "sdp_stream_metadata": {"s": {"purpose": "m.usermedia", "audio_muted": "no"}},
            },
            "audio_muted must be true or false",
        ),
        ("m.call.candidates", {**BASE, "candidates": "x"}, "`candidates` must be a list"),
        (
            "m.call.candidates",
            {**BASE, "candidates": [{"sdpMid": "0"}]},
            r"candidates\[0\]\.candidate",
        ),
        (
            "m.call.candidates",
            {**BASE, "candidates": [{"candidate": "c"}]},
            "needs sdpMid or sdpMLineIndex",
        ),
        (
            "m.call.candidates",
            {**BASE, "candidates": [{"candidate": "c", "sdpMLineIndex": -1}]},
            "non-negative",
        ),
        (
            "m.call.candidates",
            {**BASE, "candidates": [{"candidate": "", "sdpMid": "0"}] * 300},
            "at most 256",
        ),
        ("m.call.hangup", {**BASE, "reason": 5}, "`reason` must be a string"),
        ("m.call.select_answer", BASE, "`selected_party_id` must be"),
        (
            "m.call.negotiate",
            {**BASE, "description": {"type": "pranswer", "sdp": SDP}},
            "answer or offer",
        ),
        ("m.call.sdp_stream_metadata_changed", BASE, "`sdp_stream_metadata` is required"),
        ("m.call.unknown", BASE, "not an m.call event"),
    ],
)
def test_malformed_content_is_named(event_type: str, content: Any, words: str) -> None:
    with pytest.raises(CallEventError, match=words):
        parse_call_event(event_type, content)
