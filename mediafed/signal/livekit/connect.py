"""What a client asks for when it opens the signal socket, on either path.

``/rtc`` (signal protocol v0, two peer connections) carries the join options
as query parameters. ``/rtc/v1`` (one peer connection, livekit-client 2.17
and later, the Rust, Python and C++ SDKs of 2026) carries them in one
``join_request`` parameter: a ``WrappedJoinRequest`` in URL-safe base64,
whose ``join_request`` bytes are a ``JoinRequest``, gzip-compressed when the
client could compress. The first publisher offer can ride along. Both become
one :class:`ConnectRequest`; anything malformed is a
:class:`~mediafed.errors.RemoteProtocolError` whose message the client sees
(HTTP 400), as LiveKit answers.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError
from livekit.protocol import rtc

from mediafed.errors import AuthError, RemoteProtocolError
from mediafed.signal.livekit.tokens import Claims

MAX_JOIN_REQUEST_BYTES = 1 << 20
"""A decompressed ``JoinRequest`` larger than this is refused (LiveKit: 1 MiB)."""


def _flag(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.lower() in ("1", "true")


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    """The options of one signal connection (join or resume)."""

    single: bool
    """``/rtc/v1``: one peer connection, offered by the client only."""
    auto_subscribe: bool = True
    adaptive_stream: bool = False
    reconnect: bool = False
    participant_sid: str = ""
    reconnect_reason: int = 0
    metadata: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)
    publisher_offer: rtc.SessionDescription | None = None
    add_tracks: tuple[rtc.AddTrackRequest, ...] = ()


def from_query(query: Mapping[str, str]) -> ConnectRequest:
    """A ``/rtc`` (v0) connection's options from its query parameters."""
    reason = query.get("reconnect_reason", "")
    return ConnectRequest(
        single=False,
        auto_subscribe=_flag(query.get("auto_subscribe"), True),
        adaptive_stream=_flag(query.get("adaptive_stream"), False),
        reconnect=_flag(query.get("reconnect"), False),
        participant_sid=query.get("sid", ""),
        reconnect_reason=int(reason) if reason.isdigit() else 0,
    )


def from_join_request(value: str) -> ConnectRequest:
    """A ``/rtc/v1`` connection's options from its ``join_request`` parameter."""
    if not value:
        raise RemoteProtocolError("join_request is required on /rtc/v1")
    try:
        # JS sends URL-safe base64 with padding; accept it without, too
        padded = value + "=" * (-len(value) % 4)
        wrapped_bytes = base64.b64decode(padded, altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise RemoteProtocolError("cannot base64 decode the wrapped join request") from None
    wrapped = rtc.WrappedJoinRequest()
    try:
        wrapped.ParseFromString(wrapped_bytes)
    except DecodeError:
        raise RemoteProtocolError("cannot unmarshal the wrapped join request") from None
    payload = wrapped.join_request
    if wrapped.compression == rtc.WrappedJoinRequest.Compression.GZIP:
        payload = _gunzip(payload)
    elif wrapped.compression != rtc.WrappedJoinRequest.Compression.NONE:
        raise RemoteProtocolError(f"unknown join request compression {wrapped.compression}")
    if len(payload) > MAX_JOIN_REQUEST_BYTES:
        raise RemoteProtocolError("join request too large")
    join = rtc.JoinRequest()
    try:
        join.ParseFromString(payload)
    except DecodeError:
        raise RemoteProtocolError("cannot unmarshal the join request") from None
    settings = join.connection_settings
    offer = join.publisher_offer if join.HasField("publisher_offer") else None
    if offer is not None and (offer.type != "offer" or not offer.sdp):
        raise RemoteProtocolError("the join request's publisher_offer is not an SDP offer")
    return ConnectRequest(
        single=True,
        auto_subscribe=settings.auto_subscribe,
        adaptive_stream=settings.adaptive_stream,
        reconnect=join.reconnect,
        participant_sid=join.participant_sid,
        reconnect_reason=int(join.reconnect_reason),
        metadata=join.metadata,
        attributes={str(k): str(v) for k, v in join.participant_attributes.items() if v},
        publisher_offer=offer,
        add_tracks=tuple(join.add_track_requests),
    )


def _gunzip(data: bytes) -> bytes:
    """Decompress at most :data:`MAX_JOIN_REQUEST_BYTES` (a small bomb stays small)."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, MAX_JOIN_REQUEST_BYTES + 1)
    except zlib.error:
        raise RemoteProtocolError("cannot read the decompressed join request") from None
    if len(out) > MAX_JOIN_REQUEST_BYTES or inflater.unconsumed_tail:
        raise RemoteProtocolError("join request too large")
    if not inflater.eof:
        raise RemoteProtocolError("cannot read the decompressed join request: truncated")
    return out


def with_join_fields(claims: Claims, connect: ConnectRequest) -> Claims:
    """The claims with the metadata and attributes a v1 join request sets, which
    only a token that may update its own metadata can do (as LiveKit rules)."""
    if not connect.metadata and not connect.attributes:
        return claims
    if not claims.video.can_update_own_metadata:
        raise AuthError(
            "the join request sets metadata or attributes, and the token may not "
            "(canUpdateOwnMetadata)"
        )
    attributes = {**claims.attributes, **connect.attributes}
    return dataclasses.replace(
        claims, metadata=connect.metadata or claims.metadata, attributes=attributes
    )
