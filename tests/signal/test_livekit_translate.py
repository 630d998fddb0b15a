"""Protobuf <-> room-core mapping, with the room core's own data classes."""

from __future__ import annotations

import json

import pytest
from livekit.protocol import models, rtc

from mediafed.errors import RemoteProtocolError
from mediafed.media import LayerInfo, ParticipantInfo, Permission, TrackInfo, TrackKind, TrackSource
from mediafed.signal.livekit import translate

CAMERA = TrackInfo(
    sid="TR_cam",
    cid="c1",
    participant_sid="PA_a",
    participant_identity="alice",
    kind=TrackKind.VIDEO,
    source=TrackSource.CAMERA,
    mime="video/VP8",
    width=1280,
    height=720,
    simulcast=True,
    layers=(LayerInfo(0, 320, 180, 150_000, "q"), LayerInfo(2, 1280, 720, 1_700_000, "f")),
    encryption=1,
    mid="1",
)
ALICE = ParticipantInfo(
    sid="PA_a",
    identity="alice",
    name="Alice",
    metadata="m",
    attributes={"team": "red"},
    joined_at=1700000000.25,
    version=4,
    state="active",
    permission=Permission(can_publish_sources=("camera", "microphone"), can_update_metadata=True),
    tracks=(CAMERA,),
    is_publisher=True,
)


def test_participant_to_pb() -> None:
    info = translate.participant_to_pb(ALICE)
    assert (info.sid, info.identity, info.name, info.metadata) == ("PA_a", "alice", "Alice", "m")
    assert info.state == models.ParticipantInfo.State.ACTIVE and info.version == 4
    assert info.joined_at == 1700000000 and info.joined_at_ms == 1700000000250
    assert dict(info.attributes) == {"team": "red"} and info.is_publisher
    assert list(info.permission.can_publish_sources) == [
        models.TrackSource.CAMERA,
        models.TrackSource.MICROPHONE,
    ]
    assert info.permission.can_update_metadata
    [track] = info.tracks
    assert track.type == models.TrackType.VIDEO and track.source == models.TrackSource.CAMERA
    assert track.mime_type == "video/VP8" and track.mid == "1" and track.simulcast
    assert [(layer.quality, layer.width, layer.rid) for layer in track.layers] == [
        (models.VideoQuality.LOW, 320, "q"),
        (models.VideoQuality.HIGH, 1280, "f"),
    ]
    assert track.encryption == models.Encryption.GCM
    gone = translate.disconnected_to_pb(ALICE)
    assert gone.state == models.ParticipantInfo.State.DISCONNECTED and gone.version == 5


def test_hidden_participants_are_left_out() -> None:
    ghost = ParticipantInfo(sid="PA_g", identity="ghost", permission=Permission(hidden=True))
    listed = translate.visible_participants([ALICE, ghost], exclude_sid="")
    assert [p.identity for p in listed] == ["alice"]
    assert translate.visible_participants([ALICE], exclude_sid="PA_a") == []


def test_add_track_request_to_announcement() -> None:
    request = rtc.AddTrackRequest(
        cid="c9",
        type=models.TrackType.VIDEO,
        source=models.TrackSource.SCREEN_SHARE,
        width=1920,
        height=1080,
        muted=True,
        layers=[models.VideoLayer(quality=models.VideoQuality.MEDIUM, width=960, height=540)],
        encryption=models.Encryption.CUSTOM,
        stream="s1",
        packet_trailer_features=[models.PacketTrailerFeature.PTF_USER_TIMESTAMP],
    )
    options = translate.add_track_kwargs(request, LayerInfo)
    assert options["trailer_features"] == (models.PacketTrailerFeature.PTF_USER_TIMESTAMP,)
    assert options["codec"] == ""  # none named: the offer decides
    request.simulcast_codecs.append(rtc.SimulcastCodec(codec="h264", cid="c9"))
    assert translate.add_track_kwargs(request, LayerInfo)["codec"] == "video/h264"
    assert options["source"] == "screen_share" and options["muted"]
    assert options["layers"] == (LayerInfo(1, 960, 540, 0, "h"),)
    assert options["encryption"] == models.Encryption.CUSTOM and options["stream"] == "s1"
    assert translate.kind_from_pb(models.TrackType.AUDIO) == "audio"
    with pytest.raises(RemoteProtocolError, match="publish audio or video"):
        translate.kind_from_pb(models.TrackType.DATA)


def test_candidates() -> None:
    line = "candidate:1 1 udp 2130706431 198.18.0.2 5000 typ host"
    assert translate.candidate_from_init(json.dumps({"candidate": line, "sdpMid": "0"})) == line
    assert translate.candidate_from_init("{}") == ""  # end of candidates
    with pytest.raises(RemoteProtocolError, match="not JSON"):
        translate.candidate_from_init("candidate:1")
    with pytest.raises(RemoteProtocolError, match="no string 'candidate'"):
        translate.candidate_from_init('{"candidate": 5}')
    init = json.loads(translate.candidate_init(line, "0", 0))
    assert init == {"candidate": line, "sdpMid": "0", "sdpMLineIndex": 0}


def test_data_packets() -> None:
    packet = translate.data_packet_to_pb(
        sender_sid="PA_a",
        sender_identity="alice",
        payload=b"hi",
        topic="chat",
        kind="lossy",
        destination_identities=["bob"],
        sequence=3,
    )
    parsed = models.DataPacket()
    parsed.ParseFromString(packet.SerializeToString())
    assert parsed.kind == models.DataPacket.Kind.LOSSY and parsed.sequence == 3
    assert (parsed.user.payload, parsed.user.topic) == (b"hi", "chat")
    assert list(parsed.destination_identities) == list(parsed.user.destination_identities)
    assert parsed.user.participant_identity == parsed.participant_identity == "alice"


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("duplicate identity", models.DisconnectReason.DUPLICATE_IDENTITY),
        ("removed by an admin", models.DisconnectReason.PARTICIPANT_REMOVED),
        ("room deleted", models.DisconnectReason.ROOM_DELETED),
        ("server shutting down", models.DisconnectReason.SERVER_SHUTDOWN),
        ("server shutdown", models.DisconnectReason.SERVER_SHUTDOWN),
        ("subscriber connection failed", models.DisconnectReason.MEDIA_FAILURE),
        ("publisher connection closed by the peer", models.DisconnectReason.CLIENT_INITIATED),
        ("something new", models.DisconnectReason.UNKNOWN_REASON),
    ],
)
def test_disconnect_reasons(reason: str, expected: int) -> None:
    assert translate.disconnect_reason(reason) == expected


def test_subscribed_quality_update_enables_only_watched_layers() -> None:
    from mediafed.media import LayerInfo, TrackInfo, TrackKind
    from mediafed.signal.livekit.translate import subscribed_quality_update

    track = TrackInfo(
        sid="TR_1",
        cid="c",
        participant_sid="PA_1",
        participant_identity="a",
        kind=TrackKind.VIDEO,
        mime="video/VP8",
        layers=(LayerInfo(0, 320, 180, 1, "q"), LayerInfo(2, 1280, 720, 3, "f")),
    )
    update = subscribed_quality_update(track, (0,))
    assert update.track_sid == "TR_1"
    assert [(q.quality, q.enabled) for q in update.subscribed_qualities] == [(0, True), (2, False)]
    assert update.subscribed_codecs[0].codec == "vp8"
