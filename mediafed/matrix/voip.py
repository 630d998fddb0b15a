"""Typed content of the stable Matrix 1:1 VoIP events (``m.call.*``), parsed strictly.

Matrix spec, client-server API "Voice over IP" (schemas
``data/event-schemas/schema/m.call.*.yaml`` in matrix-org/matrix-spec): every
event carries ``call_id``, ``party_id`` and ``version`` (the string ``"1"``;
the integer ``0`` for the original protocol, which has no ``party_id``; any
other value is treated as ``"1"``). Stream purposes come from
``sdp_stream_metadata`` (MSC3077; older clients write
``org.matrix.msc3077.sdp_stream_metadata``). Malformed content raises
:class:`CallEventError` with a message naming the field; nothing else is
raised for peer input.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mediafed.errors import RemoteProtocolError

INVITE = "m.call.invite"
ANSWER = "m.call.answer"
CANDIDATES = "m.call.candidates"
HANGUP = "m.call.hangup"
REJECT = "m.call.reject"
SELECT_ANSWER = "m.call.select_answer"
NEGOTIATE = "m.call.negotiate"
SDP_STREAM_METADATA_CHANGED = "m.call.sdp_stream_metadata_changed"
CALL_EVENT_TYPES = frozenset(
    {
        INVITE,
        ANSWER,
        CANDIDATES,
        HANGUP,
        REJECT,
        SELECT_ANSWER,
        NEGOTIATE,
        SDP_STREAM_METADATA_CHANGED,
    }
)
HANGUP_REASONS = frozenset(
    {
        "ice_timeout",
        "ice_failed",
        "invite_timeout",
        "user_hangup",
        "user_media_failed",
        "user_busy",
        "unknown_error",
    }
)
PURPOSES = frozenset({"m.usermedia", "m.screenshare"})
MAX_SDP_CHARS = 64 * 1024
"""A whole Matrix event is at most 64 KiB, so no valid SDP is longer."""
MAX_CANDIDATES_PER_EVENT = 256
STREAM_METADATA_KEYS = ("sdp_stream_metadata", "org.matrix.msc3077.sdp_stream_metadata")


class CallEventError(RemoteProtocolError):
    """An ``m.call.*`` event whose content does not follow the spec."""


@dataclass(frozen=True, slots=True)
class SessionDescription:
    type: str
    sdp: str


@dataclass(frozen=True, slots=True)
class StreamMetadata:
    purpose: str
    audio_muted: bool = False
    video_muted: bool = False


@dataclass(frozen=True, slots=True)
class Candidate:
    candidate: str
    sdp_mid: str | None = None
    sdp_mline_index: int | None = None

    @property
    def end_of_candidates(self) -> bool:
        """The spec's ``candidate: ""`` entry: no more candidates follow."""
        return self.candidate == ""


@dataclass(frozen=True, slots=True)
class CallEvent:
    call_id: str
    party_id: str
    version: int
    """0 for the original protocol, 1 otherwise."""


@dataclass(frozen=True, slots=True)
class Invite(CallEvent):
    offer: SessionDescription
    lifetime_ms: int
    invitee: str | None = None
    stream_metadata: Mapping[str, StreamMetadata] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Answer(CallEvent):
    answer: SessionDescription
    stream_metadata: Mapping[str, StreamMetadata] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Candidates(CallEvent):
    candidates: tuple[Candidate, ...]


@dataclass(frozen=True, slots=True)
class Hangup(CallEvent):
    reason: str = "user_hangup"


@dataclass(frozen=True, slots=True)
class Reject(CallEvent):
    pass


@dataclass(frozen=True, slots=True)
class SelectAnswer(CallEvent):
    selected_party_id: str


@dataclass(frozen=True, slots=True)
class Negotiate(CallEvent):
    description: SessionDescription
    lifetime_ms: int | None = None
    stream_metadata: Mapping[str, StreamMetadata] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SdpStreamMetadataChanged(CallEvent):
    stream_metadata: Mapping[str, StreamMetadata]


def _where(event_type: str, key: str) -> str:
    return f"{event_type} `{key}`"


def _required_str(
    content: Mapping[str, Any], key: str, event_type: str, *, empty: bool = False
) -> str:
    value = content.get(key)
    if not isinstance(value, str) or (not empty and not value):
        raise CallEventError(f"{_where(event_type, key)} must be a non-empty string, got {value!r}")
    return value


def _version(content: Mapping[str, Any]) -> int:
    value = content.get("version")
    # "version": 0 (integer) is the original protocol; "1" and anything else is v1.
    return 0 if value == 0 and not isinstance(value, bool) else 1


def _description(
    value: object, event_type: str, key: str, types: frozenset[str]
) -> SessionDescription:
    if not isinstance(value, dict):
        raise CallEventError(f"{_where(event_type, key)} must be an object with `type` and `sdp`")
    kind, sdp = value.get("type"), value.get("sdp")
    if kind not in types:
        raise CallEventError(
            f"{_where(event_type, key + '.type')} must be "
            f"{' or '.join(sorted(types))}, got {kind!r}"
        )
    if not isinstance(sdp, str) or not sdp:
        raise CallEventError(f"{_where(event_type, key + '.sdp')} must be a non-empty string")
    if len(sdp) > MAX_SDP_CHARS:
        raise CallEventError(
            f"{_where(event_type, key + '.sdp')} is longer than {MAX_SDP_CHARS} characters"
        )
    assert isinstance(kind, str)
    return SessionDescription(kind, sdp)


def _lifetime(content: Mapping[str, Any], event_type: str, *, required: bool) -> int | None:
    value = content.get("lifetime")
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise CallEventError(
            f"{_where(event_type, 'lifetime')} must be a positive integer (ms), got {value!r}"
        )
    return value


def stream_metadata(
    content: Mapping[str, Any], event_type: str, *, required: bool = False
) -> dict[str, StreamMetadata]:
    """``sdp_stream_metadata`` (or its MSC3077 unstable name): stream id -> purpose and mutes.

    Entries with an unknown purpose are left out: clients ignore unlisted streams.
    """
    raw: object = None
    for key in STREAM_METADATA_KEYS:
        if key in content:
            raw = content[key]
            break
    if raw is None:
        if required:
            raise CallEventError(f"{_where(event_type, 'sdp_stream_metadata')} is required")
        return {}
    if not isinstance(raw, dict):
        raise CallEventError(
            f"{_where(event_type, 'sdp_stream_metadata')} must map stream ids to objects"
        )
    result: dict[str, StreamMetadata] = {}
    for stream_id, entry in raw.items():
        if not isinstance(entry, dict):
            raise CallEventError(
                f"{_where(event_type, 'sdp_stream_metadata')}[{stream_id!r}] must be an object"
            )
        purpose = entry.get("purpose")
        if purpose not in PURPOSES:
            continue
        flags = []
        for flag in ("audio_muted", "video_muted"):
            value = entry.get(flag, False)
            if not isinstance(value, bool):
                raise CallEventError(
                    f"{_where(event_type, 'sdp_stream_metadata')}[{stream_id!r}].{flag} "
                    "must be true or false"
                )
            flags.append(value)
        assert isinstance(purpose, str)
        result[stream_id] = StreamMetadata(purpose, audio_muted=flags[0], video_muted=flags[1])
    return result


def _candidates(content: Mapping[str, Any]) -> tuple[Candidate, ...]:
    raw = content.get("candidates")
    if not isinstance(raw, list):
        raise CallEventError(f"{_where(CANDIDATES, 'candidates')} must be a list")
    if len(raw) > MAX_CANDIDATES_PER_EVENT:
        raise CallEventError(
            f"{_where(CANDIDATES, 'candidates')} has {len(raw)} entries; at most "
            f"{MAX_CANDIDATES_PER_EVENT} are accepted per event"
        )
    result = []
    for index, entry in enumerate(raw):
        if not isinstance(entry, dict) or not isinstance(entry.get("candidate"), str):
            raise CallEventError(
                f"{_where(CANDIDATES, f'candidates[{index}].candidate')} must be a string"
            )
        mid = entry.get("sdpMid")
        line = entry.get("sdpMLineIndex")
        if mid is not None and not isinstance(mid, str):
            raise CallEventError(
                f"{_where(CANDIDATES, f'candidates[{index}].sdpMid')} must be a string"
            )
        if line is not None and (isinstance(line, bool) or not isinstance(line, int) or line < 0):
            raise CallEventError(
                f"{_where(CANDIDATES, f'candidates[{index}].sdpMLineIndex')} "
                "must be a non-negative integer"
            )
        if entry["candidate"] and mid is None and line is None:
            raise CallEventError(
                f"{_where(CANDIDATES, f'candidates[{index}]')} needs sdpMid or sdpMLineIndex"
            )
        result.append(Candidate(entry["candidate"], mid, line))
    return tuple(result)


def parse_call_event(event_type: str, content: object) -> CallEvent:
    """The typed form of one ``m.call.*`` event's content, or :class:`CallEventError`."""
    if event_type not in CALL_EVENT_TYPES:
        raise CallEventError(f"{event_type!r} is not an m.call event this relay understands")
    if not isinstance(content, dict):
        raise CallEventError(f"{event_type} content must be a JSON object")
    version = _version(content)
    call_id = _required_str(content, "call_id", event_type)
    # Version 0 predates party ids; a v1 event must carry one.
    party_id = (
        _required_str(content, "party_id", event_type)
        if version
        else str(content.get("party_id") or "")
    )
    if event_type == INVITE:
        invitee = content.get("invitee")
        if invitee is not None and not isinstance(invitee, str):
            raise CallEventError(f"{_where(INVITE, 'invitee')} must be a user id")
        lifetime = _lifetime(content, INVITE, required=True)
        assert lifetime is not None
        return Invite(
            call_id=call_id,
            party_id=party_id,
            version=version,
            offer=_description(content.get("offer"), INVITE, "offer", frozenset({"offer"})),
            lifetime_ms=lifetime,
            invitee=invitee,
            stream_metadata=stream_metadata(content, INVITE),
        )
    if event_type == ANSWER:
        return Answer(
            call_id=call_id,
            party_id=party_id,
            version=version,
            answer=_description(content.get("answer"), ANSWER, "answer", frozenset({"answer"})),
            stream_metadata=stream_metadata(content, ANSWER),
        )
    if event_type == CANDIDATES:
        return Candidates(
            call_id=call_id, party_id=party_id, version=version, candidates=_candidates(content)
        )
    if event_type == HANGUP:
        reason = content.get("reason", "user_hangup")
        if not isinstance(reason, str):
            raise CallEventError(f"{_where(HANGUP, 'reason')} must be a string")
        return Hangup(
            call_id=call_id,
            party_id=party_id,
            version=version,
            reason=reason if reason in HANGUP_REASONS else "unknown_error",
        )
    if event_type == REJECT:
        return Reject(call_id=call_id, party_id=party_id, version=version)
    if event_type == SELECT_ANSWER:
        return SelectAnswer(
            call_id=call_id,
            party_id=party_id,
            version=version,
            selected_party_id=_required_str(content, "selected_party_id", SELECT_ANSWER),
        )
    if event_type == NEGOTIATE:
        return Negotiate(
            call_id=call_id,
            party_id=party_id,
            version=version,
            description=_description(
                content.get("description"), NEGOTIATE, "description", frozenset({"offer", "answer"})
            ),
            lifetime_ms=_lifetime(content, NEGOTIATE, required=False),
            stream_metadata=stream_metadata(content, NEGOTIATE),
        )
    return SdpStreamMetadataChanged(
        call_id=call_id,
        party_id=party_id,
        version=version,
        stream_metadata=stream_metadata(content, SDP_STREAM_METADATA_CHANGED, required=True),
    )
