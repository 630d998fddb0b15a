"""RoomService over Twirp, called with the real ``livekit-api`` client (and raw JSON)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from livekit import api
from livekit.protocol import models

from mediafed import server
from mediafed.config import load_config
from mediafed.operator.twirp import add_twirp_routes
from mediafed.signal.livekit.tokens import VideoGrant, mint_token
from tests.signal.livekit_fakes import DataReceived, FakeRoomManager, Permission, TrackInfo

SECRET = "t" * 32


class Recorder:
    """A session listener that keeps what the room core tells it."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def on_room_event(self, event: Any) -> None:
        self.events.append(event)

    def on_subscriber_offer(self, sdp: str, offer_id: int) -> None:
        pass

    def on_local_candidate(self, target: str, candidate: str, mid: str, index: int) -> None:
        pass


@dataclass
class Node:
    url: str
    rooms: FakeRoomManager
    lk: api.LiveKitAPI


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    rooms = FakeRoomManager()
    config = load_config(environ={"MEDIAFED_KEYS": "admin: " + SECRET})

    def extension(app: web.Application, cfg: object) -> None:
        add_twirp_routes(app, config.keys, rooms)

    app = await server.build_app(config, extensions=[extension])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    lk = api.LiveKitAPI(url, "admin", SECRET, failover=False)
    yield Node(url, rooms, lk)
    await lk.aclose()
    await runner.cleanup()


async def test_create_list_delete_rooms(node: Node) -> None:
    created = await node.lk.room.create_room(
        api.CreateRoomRequest(name="standup", metadata="daily", max_participants=8)
    )
    assert created.name == "standup" and created.sid.startswith("RM_")
    assert created.metadata == "daily"
    again = await node.lk.room.create_room(api.CreateRoomRequest(name="standup"))
    assert again.sid == created.sid  # idempotent
    await node.lk.room.create_room(api.CreateRoomRequest(name="retro"))
    listed = await node.lk.room.list_rooms(api.ListRoomsRequest())
    assert sorted(r.name for r in listed.rooms) == ["retro", "standup"]
    only = await node.lk.room.list_rooms(api.ListRoomsRequest(names=["retro"]))
    assert [r.name for r in only.rooms] == ["retro"]
    await node.lk.room.delete_room(api.DeleteRoomRequest(room="retro"))
    assert node.rooms.get("retro") is None
    with pytest.raises(api.TwirpError) as info:
        await node.lk.room.delete_room(api.DeleteRoomRequest(room="retro"))
    assert info.value.code == "not_found" and "'retro' does not exist" in info.value.message


async def test_participant_methods(node: Node) -> None:
    room = node.rooms.get_or_create("standup")
    alice_events, bob_events = Recorder(), Recorder()
    alice = await room.join("alice", name="Alice", listener=alice_events)
    await room.join("bob", listener=bob_events, attributes={"team": "red"})
    track = alice.announce_track("mic", "audio", source="microphone")
    await alice.answer_publisher_offer("v=0\r\nm=audio 9\r\n")

    listed = await node.lk.room.list_participants(api.ListParticipantsRequest(room="standup"))
    assert sorted(p.identity for p in listed.participants) == ["alice", "bob"]
    got = await node.lk.room.get_participant(
        api.RoomParticipantIdentity(room="standup", identity="alice")
    )
    assert got.name == "Alice" and [t.sid for t in got.tracks] == [track.sid]
    assert got.tracks[0].source == models.TrackSource.MICROPHONE

    muted = await node.lk.room.mute_published_track(
        api.MuteRoomTrackRequest(room="standup", identity="alice", track_sid=track.sid, muted=True)
    )
    assert muted.track.muted
    assert any(
        type(e).__name__ == "TrackMuted" and e.track.sid == track.sid for e in alice_events.events
    )

    updated = await node.lk.room.update_participant(
        api.UpdateParticipantRequest(
            room="standup",
            identity="bob",
            metadata="presenter",
            attributes={"team": "", "role": "host"},
            permission=models.ParticipantPermission(can_subscribe=True, can_publish=False),
        )
    )
    assert updated.metadata == "presenter"
    assert dict(updated.attributes) == {"role": "host"}
    assert not updated.permission.can_publish
    assert room.sessions["bob"].info().permission == Permission(
        can_publish=False, can_subscribe=True, can_publish_data=False
    )

    await node.lk.room.send_data(
        api.SendDataRequest(
            room="standup", data=b"hello", topic="chat", destination_identities=["bob"]
        )
    )
    received = [e for e in bob_events.events if isinstance(e, DataReceived)]
    assert [(e.payload, e.topic) for e in received] == [(b"hello", "chat")]
    assert not [e for e in alice_events.events if isinstance(e, DataReceived)]

    await node.lk.room.remove_participant(
        api.RoomParticipantIdentity(room="standup", identity="bob")
    )
    assert room.participant("bob") is None
    assert any(type(e).__name__ == "SessionClosed" for e in bob_events.events)
    with pytest.raises(api.TwirpError) as info:
        await node.lk.room.get_participant(
            api.RoomParticipantIdentity(room="standup", identity="bob")
        )
    assert info.value.code == "not_found"
    with pytest.raises(api.TwirpError) as info:
        await node.lk.room.mute_published_track(
            api.MuteRoomTrackRequest(room="standup", identity="alice", track_sid="TR_x")
        )
    assert info.value.code == "not_found"
    assert isinstance(track, TrackInfo)


async def test_grants_are_checked(node: Node) -> None:
    node.rooms.get_or_create("standup")
    other = api.LiveKitAPI(node.url, "admin", "wrong" * 8, failover=False)
    try:
        with pytest.raises(api.TwirpError) as info:
            await other.room.list_rooms(api.ListRoomsRequest())
        assert info.value.code == "unauthenticated" and info.value.status == 401
        assert "signature" in info.value.message
    finally:
        await other.aclose()
    # a token administering another room may not touch this one
    token = mint_token(
        "admin", SECRET, identity="ops", video=VideoGrant(room_admin=True, room="retro")
    )
    async with aiohttp.ClientSession() as http:
        async with http.post(
            node.url + "/twirp/livekit.RoomService/ListParticipants",
            json={"room": "standup"},
            headers={"Authorization": "Bearer " + token},
        ) as resp:
            assert resp.status == 403
            error = await resp.json()
        assert error["code"] == "permission_denied"
        assert "not 'standup'" in error["msg"]
        # JSON bodies work both ways with the right grant
        good = mint_token(
            "admin", SECRET, identity="ops", video=VideoGrant(room_admin=True, room="standup")
        )
        async with http.post(
            node.url + "/twirp/livekit.RoomService/ListParticipants",
            json={"room": "standup"},
            headers={"Authorization": "Bearer " + good},
        ) as resp:
            assert resp.status == 200
            assert resp.content_type == "application/json"
            assert await resp.json() == {}  # no participants: protobuf JSON omits empty lists
        async with http.post(
            node.url + "/twirp/livekit.RoomService/CreateRoom",
            data=b"{not json",
            headers={"Authorization": "Bearer " + good, "Content-Type": "application/json"},
        ) as resp:
            assert resp.status == 400
            assert (await resp.json())["code"] == "malformed"
        async with http.post(
            node.url + "/twirp/livekit.RoomService/CreateRoom",
            json={"name": "x"},
            headers={"Authorization": "Bearer " + good},
        ) as resp:
            assert resp.status == 403
            assert "roomCreate" in (await resp.json())["msg"]
        async with http.post(
            node.url + "/twirp/livekit.RoomService/Nope",
            json={},
            headers={"Authorization": "Bearer " + good},
        ) as resp:
            assert resp.status == 404
            assert (await resp.json())["code"] == "bad_route"
