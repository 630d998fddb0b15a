"""RoomService changes take effect on real calls at once.

aiortc participants publish and decode real media through the room core while an
operator (``livekit-api``) revokes and grants permissions, moves subscriptions
and mutes tracks; a ``livekit`` SDK participant (libwebrtc, in a veth test host)
shows what a LiveKit client is told: its tracks unpublished or muted, the room's
metadata, data and RPC calls from the server.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from livekit import api
from livekit.protocol import models

from mediafed import server
from mediafed.media import RoomManager, TrackKind, events
from mediafed.signal.livekit.tokens import VideoGrant, mint_token
from tests.operator.conftest import Node, serve
from tests.signal.sdk_runner import ScriptClient
from tests.support.aiortc_client import (
    AiortcParticipant,
    PatternVideoTrack,
    ToneAudioTrack,
    wait_for,
)
from tests.support.livekit_node import API_KEY as NODE_KEY, API_SECRET as NODE_SECRET, live_node
from tests.support.netns_hosts import TestHost

pytestmark = pytest.mark.slow

RED = (220, 0, 0)
MANAGED = Path(__file__).with_name("lk_sdk_managed.py")


def _frames(participant: AiortcParticipant) -> int:
    return sum(video.frames for video in participant.video.values())


async def _still_for(participant: AiortcParticipant, seconds: float = 1.0) -> bool:
    """No new video frame for ``seconds``: nothing is forwarded any more."""
    await asyncio.sleep(0.5)  # what was on its way
    before = _frames(participant)
    await asyncio.sleep(seconds)
    return _frames(participant) == before


async def _flowing(participant: AiortcParticipant, frames: int = 15) -> None:
    start = _frames(participant)
    await wait_for(lambda: _frames(participant) >= start + frames)


def _permission(**grants: bool) -> models.ParticipantPermission:
    return models.ParticipantPermission(
        **({"can_publish": True, "can_subscribe": True, "can_publish_data": True} | grants)
    )


async def test_revoking_can_publish_unpublishes_at_once(node: Node) -> None:
    room = node.rooms.get_or_create("standup")
    alice, bob = AiortcParticipant(room, "alice"), AiortcParticipant(room, "bob")
    try:
        await alice.join()
        await bob.join()
        await alice.publish(PatternVideoTrack(RED), ToneAudioTrack())
        await _flowing(bob)
        assert alice.session is not None
        published = set(alice.session.published)
        assert len(published) == 2

        info = await node.lk.room.update_participant(
            api.UpdateParticipantRequest(
                room="standup", identity="alice", permission=_permission(can_publish=False)
            )
        )
        assert not info.permission.can_publish and list(info.tracks) == []
        # alice is told her tracks are gone; bob sees them go and stops receiving
        own = {e.track.sid for e in alice.events if isinstance(e, events.TrackUnpublished)}
        assert own == published
        gone = {e.track.sid for e in bob.events if isinstance(e, events.TrackUnpublished)}
        assert gone == published
        assert not room.tracks and bob.session is not None and not bob.session.downtracks
        assert await _still_for(bob)
        listed = await node.lk.room.get_participant(
            api.RoomParticipantIdentity(room="standup", identity="alice")
        )
        assert list(listed.tracks) == [] and not listed.permission.can_publish
        # only a camera may be published from now on: alice's offer is refused for audio
        await node.lk.room.update_participant(
            api.UpdateParticipantRequest(
                room="standup",
                identity="alice",
                permission=_permission(can_publish_sources=[models.TrackSource.CAMERA]),
            )
        )
        await alice.publish(PatternVideoTrack(RED), ToneAudioTrack())
        await wait_for(lambda: bool(room.tracks))
        assert {t.kind for t in room.tracks.values()} == {TrackKind.VIDEO}
    finally:
        await alice.close()
        await bob.close()


async def test_can_subscribe_revoked_and_granted_again(node: Node) -> None:
    room = node.rooms.get_or_create("standup")
    alice, bob = AiortcParticipant(room, "alice"), AiortcParticipant(room, "bob")
    try:
        await alice.join()
        await bob.join()
        await alice.publish(PatternVideoTrack(RED), ToneAudioTrack())
        await _flowing(bob)
        assert bob.session is not None

        await node.lk.room.update_participant(
            api.UpdateParticipantRequest(
                room="standup", identity="bob", permission=_permission(can_subscribe=False)
            )
        )
        assert not bob.session.downtracks
        assert await _still_for(bob)
        # asking for a track while not permitted waits for the permission
        video = next(t.sid for t in room.tracks.values() if t.kind is TrackKind.VIDEO)
        await node.lk.room.update_subscriptions(
            api.UpdateSubscriptionsRequest(
                room="standup", identity="bob", track_sids=[video], subscribe=True
            )
        )
        assert not bob.session.downtracks

        await node.lk.room.update_participant(
            api.UpdateParticipantRequest(room="standup", identity="bob", permission=_permission())
        )
        assert set(bob.session.downtracks) == set(room.tracks)  # auto-subscribed again
        await _flowing(bob)
    finally:
        await alice.close()
        await bob.close()


async def test_update_subscriptions_moves_media(node: Node) -> None:
    room = node.rooms.get_or_create("standup")
    alice, carol = AiortcParticipant(room, "alice"), AiortcParticipant(room, "carol")
    try:
        await alice.join()
        await carol.join(auto_subscribe=False)
        await alice.publish(PatternVideoTrack(RED), ToneAudioTrack())
        await wait_for(lambda: len(room.tracks) == 2)
        assert carol.session is not None and not carol.session.downtracks
        by_kind = {t.kind: t for t in room.tracks.values()}
        video, audio = by_kind[TrackKind.VIDEO], by_kind[TrackKind.AUDIO]

        await node.lk.room.update_subscriptions(
            api.UpdateSubscriptionsRequest(
                room="standup",
                identity="carol",
                track_sids=[video.sid],
                participant_tracks=[
                    models.ParticipantTracks(
                        participant_sid=video.info.participant_sid, track_sids=[audio.sid]
                    )
                ],
                subscribe=True,
            )
        )
        assert set(carol.session.downtracks) == {video.sid, audio.sid}
        await _flowing(carol)
        await wait_for(lambda: any(a.frames > 20 for a in carol.audio.values()))

        await node.lk.room.update_subscriptions(
            api.UpdateSubscriptionsRequest(
                room="standup", identity="carol", track_sids=[video.sid], subscribe=False
            )
        )
        assert set(carol.session.downtracks) == {audio.sid}
        assert await _still_for(carol)
    finally:
        await alice.close()
        await carol.close()


async def test_mute_published_track_and_remote_unmute(node: Node, rooms: RoomManager) -> None:
    room = node.rooms.get_or_create("standup")
    alice, bob = AiortcParticipant(room, "alice"), AiortcParticipant(room, "bob")
    try:
        await alice.join()
        await bob.join()
        await alice.publish(PatternVideoTrack(RED))
        await _flowing(bob)
        video = next(iter(room.tracks))
        request = api.MuteRoomTrackRequest(room="standup", identity="alice", track_sid=video)

        request.muted = True
        muted = await node.lk.room.mute_published_track(request)
        assert muted.track.sid == video and muted.track.muted
        # the publisher is told to follow, the others see it muted
        assert any(e.track.sid == video and e.muted for e in alice.events if _muted(e))
        assert any(e.track.sid == video and e.muted for e in bob.events if _muted(e))
        # unmuting is the participant's own choice unless the server allows it
        request.muted = False
        with pytest.raises(api.TwirpError) as info:
            await node.lk.room.mute_published_track(request)
        assert (info.value.code, info.value.status) == ("failed_precondition", 412)
        assert "enable_remote_unmute" in info.value.message
        assert room.tracks[video].muted

        async with serve(rooms, MEDIAFED_ROOM_ENABLE_REMOTE_UNMUTE="true") as allowing:
            unmuted = await allowing.lk.room.mute_published_track(request)
        assert not unmuted.track.muted and not room.tracks[video].muted
        assert any(e.track.sid == video and not e.muted for e in alice.events if _muted(e))
    finally:
        await alice.close()
        await bob.close()


def _muted(event: object) -> bool:
    return isinstance(event, events.TrackMuted)


async def test_an_sdk_participant_follows_what_the_operator_does() -> None:
    with TestHost(1) as host:
        async with live_node(host.server_ip, extensions=[server.room_service_extension]) as node:
            lk = api.LiveKitAPI(node.http_url, NODE_KEY, NODE_SECRET, failover=False)
            client = await ScriptClient.start(
                host, MANAGED, node.ws_url, node.token("sam", room="call"), "60"
            )
            try:
                await _operate(node.http_url, lk, client)
            finally:
                await client.stop()
                await lk.aclose()


async def _until(client: ScriptClient, event: str, **fields: object) -> dict[str, Any]:
    """The first line ``event`` with these fields the client printed (waiting for it)."""

    def found() -> dict[str, Any] | None:
        return next(
            (
                line
                for line in client.lines
                if line["event"] == event and all(line.get(k) == v for k, v in fields.items())
            ),
            None,
        )

    try:
        await wait_for(lambda: found() is not None, timeout=20)
    except AssertionError:
        raise AssertionError(f"no {event} {fields} in {client.lines[-8:]}") from None
    line = found()
    assert line is not None
    return line


async def _perform_rpc(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    """PerformRpc as raw Twirp JSON: livekit-api 1.2 has no method for it."""
    token = mint_token(
        NODE_KEY, NODE_SECRET, identity="ops", video=VideoGrant(room_admin=True, room="call")
    )
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{url}/twirp/livekit.RoomService/PerformRpc",
            json={"room": "call", "destination_identity": "sam"} | body,
            headers={"Authorization": "Bearer " + token},
        ) as resp,
    ):
        return resp.status, await resp.json()


async def _operate(url: str, lk: api.LiveKitAPI, client: ScriptClient) -> None:
    published = await _until(client, "published")
    microphone = published["microphone"]
    room = lk.room
    sam = api.RoomParticipantIdentity(room="call", identity="sam")

    await room.update_room_metadata(api.UpdateRoomMetadataRequest(room="call", metadata="agenda"))
    await _until(client, "room_metadata", metadata="agenda")

    await room.send_data(
        api.SendDataRequest(
            room="call", data=b"from ops", topic="notice", kind=models.DataPacket.Kind.LOSSY
        )
    )
    await _until(client, "data", payload="from ops", topic="notice", kind="KIND_LOSSY", sender="")

    assert await _perform_rpc(url, {"method": "greet", "payload": "ops"}) == (
        200,
        {"payload": "hello ops"},
    )
    await _until(client, "rpc", method="greet", payload="ops")
    status, error = await _perform_rpc(url, {"method": "refuse"})
    assert (status, error["code"]) == (500, "internal")  # an application's own error code
    assert error["msg"] == "RpcError 2001: not today: try tomorrow"
    status, error = await _perform_rpc(url, {"method": "nothing"})
    assert (status, error["code"]) == (400, "invalid_argument")
    assert error["msg"].startswith("RpcError 1400")  # the SDK has no such method

    await room.update_participant(
        api.UpdateParticipantRequest(
            room="call", identity="sam", metadata="speaker", attributes={"desk": "4"}
        )
    )
    await _until(client, "metadata", identity="sam", metadata="speaker")
    await _until(client, "attributes", identity="sam", attributes={"desk": "4"})

    await room.mute_published_track(
        api.MuteRoomTrackRequest(room="call", identity="sam", track_sid=microphone, muted=True)
    )
    await _until(client, "local_track_muted", sid=microphone)

    async with asyncio.timeout(10):  # both tracks negotiated, not only announced
        while len((await room.get_participant(sam)).tracks) < 2:
            await asyncio.sleep(0.1)
    await room.update_participant(
        api.UpdateParticipantRequest(
            room="call", identity="sam", permission=_permission(can_publish=False)
        )
    )
    await _until(client, "permissions", identity="sam", can_publish=False)
    # (the Rust SDK does not act on the server's track_unpublished, as livekit-client
    # does: that the client is sent one is checked in test_twirp.py)
    listed = await room.get_participant(sam)
    assert list(listed.tracks) == [] and not listed.permission.can_publish
