"""Pure mapping between LiveKit protobufs and the room core's data classes.

Protobuf classes come from ``livekit-protocol`` (livekit/protocol
``livekit_models.proto``, ``livekit_rtc.proto``); the room core's side is the
session API (:mod:`mediafed.media`). No I/O, no
clocks except where a timestamp is passed in.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from livekit.protocol import models, rtc

from mediafed.errors import RemoteProtocolError
from mediafed.media import (
    LayerInfo,
    ParticipantInfo,
    Permission,
    Room,
    SubscriptionPermission,
    TrackInfo,
    TrackPermission,
)
from mediafed.signal.livekit.tokens import Claims

_KIND_TO_PB = {"audio": models.TrackType.AUDIO, "video": models.TrackType.VIDEO}
_KIND_FROM_PB: dict[int, str] = {models.TrackType.AUDIO: "audio", models.TrackType.VIDEO: "video"}
_SOURCE_TO_PB = {
    "unknown": models.TrackSource.UNKNOWN,
    "camera": models.TrackSource.CAMERA,
    "microphone": models.TrackSource.MICROPHONE,
    "screen_share": models.TrackSource.SCREEN_SHARE,
    "screen_share_audio": models.TrackSource.SCREEN_SHARE_AUDIO,
}
_SOURCE_FROM_PB: dict[int, str] = {value: name for name, value in _SOURCE_TO_PB.items()}
_STATE_TO_PB = {
    "joining": models.ParticipantInfo.State.JOINING,
    "joined": models.ParticipantInfo.State.JOINED,
    "active": models.ParticipantInfo.State.ACTIVE,
    "disconnected": models.ParticipantInfo.State.DISCONNECTED,
}
TARGETS = {rtc.SignalTarget.PUBLISHER: "publisher", rtc.SignalTarget.SUBSCRIBER: "subscriber"}
TARGETS_TO_PB = {name: value for value, name in TARGETS.items()}

_DISCONNECT_REASONS = {
    "client request": models.DisconnectReason.CLIENT_INITIATED,
    "duplicate identity": models.DisconnectReason.DUPLICATE_IDENTITY,
    "removed": models.DisconnectReason.PARTICIPANT_REMOVED,
    "room deleted": models.DisconnectReason.ROOM_DELETED,
    "server shutdown": models.DisconnectReason.SERVER_SHUTDOWN,
    "shutting down": models.DisconnectReason.SERVER_SHUTDOWN,
    "ice failure": models.DisconnectReason.MEDIA_FAILURE,
    "connection failed": models.DisconnectReason.MEDIA_FAILURE,
    "closed by the peer": models.DisconnectReason.CLIENT_INITIATED,
    "signal closed": models.DisconnectReason.SIGNAL_CLOSE,
    "state mismatch": models.DisconnectReason.STATE_MISMATCH,
    "join failure": models.DisconnectReason.JOIN_FAILURE,
    "timeout": models.DisconnectReason.CONNECTION_TIMEOUT,
}


def disconnect_reason(reason: str) -> int:
    """The ``DisconnectReason`` closest to a room-core reason string."""
    text = reason.lower()
    for key, value in _DISCONNECT_REASONS.items():
        if key in text:
            return value
    return models.DisconnectReason.UNKNOWN_REASON


def kind_from_pb(track_type: int) -> str:
    try:
        return _KIND_FROM_PB[track_type]
    except KeyError:
        raise RemoteProtocolError(
            f"track type {track_type} is not supported; publish audio or video tracks"
        ) from None


def source_from_pb(source: int) -> str:
    return _SOURCE_FROM_PB.get(source, "unknown")


def source_to_pb(source: str) -> models.TrackSource:
    return _SOURCE_TO_PB.get(str(source), models.TrackSource.UNKNOWN)


def permission_to_pb(permission: Permission) -> models.ParticipantPermission:
    return models.ParticipantPermission(
        can_subscribe=permission.can_subscribe,
        can_publish=permission.can_publish,
        can_publish_data=permission.can_publish_data,
        can_publish_sources=[source_to_pb(s) for s in permission.can_publish_sources],
        hidden=permission.hidden,
        can_update_metadata=permission.can_update_metadata,
    )


def permission_kwargs(claims: Claims) -> dict[str, Any]:
    """The room core's ``Permission`` fields granted by a join token."""
    grant = claims.video
    return {
        "can_publish": grant.can_publish,
        "can_subscribe": grant.can_subscribe,
        "can_publish_data": grant.can_publish_data,
        "can_publish_sources": tuple(grant.can_publish_sources),
        "hidden": grant.hidden,
        "can_update_metadata": grant.can_update_own_metadata,
    }


def permission_kwargs_from_pb(permission: models.ParticipantPermission) -> dict[str, Any]:
    """``Permission`` fields from a RoomService ``UpdateParticipantRequest.permission``."""
    return {
        "can_publish": permission.can_publish,
        "can_subscribe": permission.can_subscribe,
        "can_publish_data": permission.can_publish_data,
        "can_publish_sources": tuple(source_from_pb(s) for s in permission.can_publish_sources),
        "hidden": permission.hidden,
        "can_update_metadata": permission.can_update_metadata,
    }


def layer_to_pb(layer: LayerInfo) -> models.VideoLayer:
    return models.VideoLayer(
        quality=cast(Any, layer.quality),
        width=layer.width,
        height=layer.height,
        bitrate=layer.bitrate_bps,
        rid=layer.rid,
    )


_DEFAULT_RIDS = {0: "q", 1: "h", 2: "f"}


def layer_kwargs_from_pb(layer: models.VideoLayer) -> dict[str, Any]:
    """``LayerInfo`` fields of one ``AddTrackRequest.layers`` entry.

    Clients leave ``rid`` empty; their simulcast rids are ``q``/``h``/``f`` low
    to high (REFERENCES.md, "Simulcast").
    """
    quality = int(layer.quality)
    return {
        "quality": quality,
        "width": layer.width,
        "height": layer.height,
        "bitrate_bps": layer.bitrate,
        "rid": layer.rid or _DEFAULT_RIDS.get(quality, ""),
    }


def track_to_pb(track: TrackInfo) -> models.TrackInfo:
    info = models.TrackInfo(
        sid=track.sid,
        type=_KIND_TO_PB.get(str(track.kind), models.TrackType.AUDIO),
        name=track.name,
        muted=track.muted,
        width=track.width,
        height=track.height,
        simulcast=track.simulcast,
        source=source_to_pb(track.source),
        layers=[layer_to_pb(layer) for layer in track.layers],
        mime_type=track.mime,
        mid=track.mid,
        encryption=cast(Any, track.encryption),  # opaque copy (E2EE passthrough)
        stream=track.stream,
        packet_trailer_features=cast(Any, list(track.trailer_features)),
    )
    if track.mime:
        info.codecs.append(
            models.SimulcastCodecInfo(
                mime_type=track.mime,
                mid=track.mid,
                layers=[layer_to_pb(layer) for layer in track.layers],
            )
        )
    return info


def participant_to_pb(participant: ParticipantInfo) -> models.ParticipantInfo:
    joined_at = float(participant.joined_at)
    return models.ParticipantInfo(
        sid=participant.sid,
        identity=participant.identity,
        state=_STATE_TO_PB.get(participant.state, models.ParticipantInfo.State.JOINED),
        tracks=[track_to_pb(track) for track in participant.tracks],
        metadata=participant.metadata,
        joined_at=int(joined_at),
        joined_at_ms=int(joined_at * 1000),
        name=participant.name,
        version=participant.version,
        permission=permission_to_pb(participant.permission),
        is_publisher=participant.is_publisher,
        kind=models.ParticipantInfo.Kind.STANDARD,
        attributes=dict(participant.attributes),
    )


def disconnected_to_pb(participant: ParticipantInfo) -> models.ParticipantInfo:
    """A participant that left: state DISCONNECTED and a version above the last one seen."""
    info = participant_to_pb(participant)
    if info.state != models.ParticipantInfo.State.DISCONNECTED:
        info.state = models.ParticipantInfo.State.DISCONNECTED
        info.version += 1
    return info


def room_to_pb(room: Room) -> models.Room:
    created = float(room.created_at)
    return models.Room(
        sid=room.sid,
        name=room.name,
        metadata=room.metadata,
        empty_timeout=room.empty_timeout_s,
        max_participants=room.max_participants,
        creation_time=int(created),
        creation_time_ms=int(created * 1000),
        num_participants=room.num_participants,
        num_publishers=sum(1 for p in room.participants() if p.is_publisher),
    )


def visible_participants(
    participants: Iterable[ParticipantInfo], *, exclude_sid: str = ""
) -> list[models.ParticipantInfo]:
    """Protobuf infos of the participants others may see (hidden ones left out)."""
    return [
        participant_to_pb(p)
        for p in participants
        if not p.hidden and not p.permission.hidden and p.sid != exclude_sid
    ]


def add_track_kwargs(
    request: rtc.AddTrackRequest, layer_factory: Callable[..., Any]
) -> dict[str, Any]:
    """Keyword arguments for ``Session.announce_track`` (besides cid and kind)."""
    return {
        "source": source_from_pb(request.source),
        "name": request.name,
        "width": request.width,
        "height": request.height,
        "muted": request.muted,
        "layers": tuple(layer_factory(**layer_kwargs_from_pb(layer)) for layer in request.layers),
        "encryption": int(request.encryption),
        "stream": request.stream,
        "trailer_features": tuple(int(f) for f in request.packet_trailer_features),
        "codec": _requested_codec(request),
    }


def _requested_codec(request: rtc.AddTrackRequest) -> str:
    """The codec the client publishes with (its first ``simulcast_codecs`` entry, as
    ``h264`` or ``video/h264``), as a lower-case MIME type; "" when it names none."""
    for entry in request.simulcast_codecs:
        codec = entry.codec.strip().lower()
        if codec:
            kind = "audio" if request.type == models.TrackType.AUDIO else "video"
            return codec if "/" in codec else f"{kind}/{codec}"
    return ""


def subscribed_quality_update(
    track: TrackInfo, wanted: Sequence[int]
) -> rtc.SubscribedQualityUpdate:
    """Which simulcast qualities of ``track`` are watched (LiveKit's dynacast)."""
    known = sorted({layer.quality for layer in track.layers}) or [0, 1, 2]
    qualities = [
        rtc.SubscribedQuality(quality=quality, enabled=quality in wanted)  # type: ignore[arg-type]
        for quality in known
    ]
    codec = track.mime.split("/", 1)[-1].lower() if track.mime else ""
    return rtc.SubscribedQualityUpdate(
        track_sid=track.sid,
        subscribed_qualities=qualities,
        subscribed_codecs=[rtc.SubscribedCodec(codec=codec, qualities=qualities)] if codec else [],
    )


def speakers_to_pb(speakers: Sequence[tuple[str, float, bool]]) -> rtc.SpeakersChanged:
    return rtc.SpeakersChanged(
        speakers=[
            models.SpeakerInfo(sid=sid, level=float(level), active=bool(active))
            for sid, level, active in speakers
        ]
    )


def candidate_from_init(candidate_init: str) -> str:
    """The ``candidate`` line of a ``TrickleRequest.candidateInit`` JSON string.

    An empty string is end-of-candidates. Raises RemoteProtocolError if the
    JSON is not an RTCIceCandidateInit.
    """
    try:
        parsed = json.loads(candidate_init)
    except json.JSONDecodeError:
        raise RemoteProtocolError(
            "trickle candidateInit is not JSON; send JSON.stringify(RTCIceCandidateInit)"
        ) from None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("candidate", ""), str):
        raise RemoteProtocolError("trickle candidateInit has no string 'candidate' field")
    return str(parsed.get("candidate", ""))


def candidate_init(candidate: str, sdp_mid: str, sdp_mline_index: int) -> str:
    """``TrickleRequest.candidateInit`` for a local candidate (RTCIceCandidateInit JSON)."""
    return json.dumps(
        {"candidate": candidate, "sdpMid": sdp_mid, "sdpMLineIndex": sdp_mline_index},
        separators=(",", ":"),
    )


def data_packet_to_pb(
    *,
    sender_sid: str,
    sender_identity: str,
    payload: bytes,
    topic: str,
    kind: str,
    destination_identities: Sequence[str],
    sequence: int = 0,
) -> models.DataPacket:
    """The ``DataPacket`` a receiving client decodes from a data channel message.

    Sender identity and sid come from the server (never from the sender's
    packet), as LiveKit does.
    """
    pb_kind = models.DataPacket.Kind.LOSSY if kind == "lossy" else models.DataPacket.Kind.RELIABLE
    return models.DataPacket(
        kind=pb_kind,
        participant_identity=sender_identity,
        participant_sid=sender_sid,
        destination_identities=list(destination_identities),
        sequence=sequence,
        user=models.UserPacket(
            participant_sid=sender_sid,
            participant_identity=sender_identity,
            payload=payload,
            topic=topic,
            destination_identities=list(destination_identities),
        ),
    )


DATA_PROTOCOL = "livekit"
"""``PacketRelayed.protocol`` of the ``DataPacket`` bytes this front-end relays."""

RELAYED_DATA = frozenset(
    {
        "user",
        "chat_message",
        "rpc_request",
        "rpc_ack",
        "rpc_response",
        "stream_header",
        "stream_chunk",
        "stream_trailer",
        "encrypted_packet",
        "sip_dtmf",
    }
)
"""What a client's ``DataPacket`` may carry to be relayed to others, as livekit-server
relays it (``pkg/rtc/participant.go`` ``handleReceivedDataMessage``). Not relayed:
``transcription`` (agents' only), ``metrics`` (the server's to collect), ``speaker``
(the server's to send)."""


@dataclass(frozen=True, slots=True)
class RelayedData:
    """A client's ``DataPacket`` made ready for the others, and where it goes."""

    packet: bytes
    kind: str
    """reliable or lossy"""
    destination_identities: tuple[str, ...]
    destination_sids: tuple[str, ...]
    """Older clients' ``UserPacket.destination_sids``: the front-end adds their identities."""


def relayed_data_packet(
    packet: models.DataPacket, *, sender_sid: str, sender_identity: str, lossy: bool
) -> RelayedData | None:
    """``packet`` from a client, as the others are to receive it; None if it is not relayed.

    As livekit-server does, its sender is who sent it, whatever it claims:
    ``participant_sid`` and ``participant_identity`` (the ``user`` packet's too) are
    overwritten; a hidden sender's identity is empty. Its kind is the channel's it came
    on; its sequence stays the sender's (receivers drop repeats by sender and sequence).
    """
    which = packet.WhichOneof("value")
    if which not in RELAYED_DATA:
        return None
    packet.kind = models.DataPacket.Kind.LOSSY if lossy else models.DataPacket.Kind.RELIABLE
    packet.participant_sid = sender_sid
    packet.participant_identity = sender_identity
    destination_sids: tuple[str, ...] = ()
    if which == "user":
        user = packet.user
        user.participant_sid = sender_sid if sender_identity else ""
        user.participant_identity = sender_identity
        if packet.destination_identities:
            user.destination_identities[:] = packet.destination_identities
        else:
            packet.destination_identities[:] = user.destination_identities
        destination_sids = tuple(user.destination_sids)
    return RelayedData(
        packet.SerializeToString(),
        "lossy" if lossy else "reliable",
        tuple(packet.destination_identities),
        destination_sids,
    )


def subscription_permission_from_pb(
    request: rtc.SubscriptionPermission, identity_of_sid: Mapping[str, str]
) -> SubscriptionPermission:
    """The room core's rules from a client's ``SubscriptionPermission``.

    Entries may name the subscriber by sid only; one whose sid is not in the room is
    left out (livekit-server does the same). Raises RemoteProtocolError for an entry
    that names no one.
    """
    if request.all_participants:
        return SubscriptionPermission()
    entries: list[TrackPermission] = []
    for entry in request.track_permissions:
        identity = entry.participant_identity
        if not identity:
            if not entry.participant_sid:
                raise RemoteProtocolError(
                    "a TrackPermission names no participant; set participant_identity"
                )
            identity = identity_of_sid.get(entry.participant_sid, "")
            if not identity:
                continue
        entries.append(TrackPermission(identity, entry.all_tracks, frozenset(entry.track_sids)))
    return SubscriptionPermission(all_participants=False, track_permissions=tuple(entries))


def subscription_permission_update(track: TrackInfo, allowed: bool) -> rtc.SignalResponse:
    return rtc.SignalResponse(
        subscription_permission_update=rtc.SubscriptionPermissionUpdate(
            participant_sid=track.participant_sid, track_sid=track.sid, allowed=allowed
        )
    )


def attributes_of(mapping: Mapping[str, str]) -> dict[str, str]:
    return {str(k): str(v) for k, v in mapping.items()}
