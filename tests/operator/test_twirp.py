"""RoomService over Twirp against the real room core: methods, grants, error codes.

Called with the real ``livekit-api`` client (and raw Twirp JSON where the client
has no method); participants here have no media (``test_roomservice.py`` has
real clients). Codes and statuses are livekit-server's (``roomservice.go``).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiortc import RTCPeerConnection, VideoStreamTrack
from livekit import api
from livekit.protocol import models, room as room_pb, rtc

from mediafed.media import Permission, events
from tests.operator.conftest import Node

SERVICE = room_pb.DESCRIPTOR.services_by_name["RoomService"]


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

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


async def twirp(node: Node, method: str, body: dict[str, Any], token: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{node.url}/twirp/livekit.RoomService/{method}",
            json=body,
            headers={"Authorization": "Bearer " + token},
        ) as resp,
    ):
        return resp.status, await resp.json()


async def test_every_livekit_method_is_served(node: Node) -> None:
    """Each method of livekit-protocol's RoomService is routed; the two only LiveKit
    Cloud serves are refused as unimplemented, as LiveKit's open-source server does."""
    token = node.admin_token(room_admin=True, room_create=True, room_list=True)
    names = [method.name for method in SERVICE.methods]
    assert {"UpdateSubscriptions", "SendData", "UpdateRoomMetadata", "PerformRpc"} <= set(names)
    for name in names:
        status, error = await twirp(node, name, {}, token)
        assert error.get("code") != "bad_route", (name, error)
        if name in ("ForwardParticipant", "MoveParticipant"):
            assert (status, error["code"]) == (501, "unimplemented"), error
            assert "LiveKit Cloud" in error["msg"]
    status, error = await twirp(node, "Nope", {}, token)
    assert (status, error["code"]) == (404, "bad_route")


ROOM_ADMIN_METHODS = {
    "ListParticipants": {"room": "standup"},
    "GetParticipant": {"room": "standup", "identity": "alice"},
    "RemoveParticipant": {"room": "standup", "identity": "alice"},
    "MutePublishedTrack": {"room": "standup", "identity": "alice", "track_sid": "TR_x"},
    "UpdateParticipant": {"room": "standup", "identity": "alice", "metadata": "m"},
    "UpdateSubscriptions": {"room": "standup", "identity": "alice", "track_sids": ["TR_x"]},
    "SendData": {"room": "standup", "data": "aGk="},
    "UpdateRoomMetadata": {"room": "standup", "metadata": "m"},
    "PerformRpc": {"room": "standup", "destination_identity": "alice", "method": "m"},
}
GRANTS = {"CreateRoom": "room_create", "DeleteRoom": "room_create", "ListRooms": "room_list"}
BODIES = {"CreateRoom": {"name": "standup"}, "DeleteRoom": {"room": "standup"}, "ListRooms": {}}


@pytest.mark.parametrize("method", [*GRANTS, *ROOM_ADMIN_METHODS])
async def test_each_method_needs_its_grant(node: Node, method: str) -> None:
    """livekit-server answers a missing grant with ``unauthenticated`` (401)."""
    node.rooms.get_or_create("standup")
    needed = GRANTS.get(method, "room_admin")
    body = BODIES[method] if method in BODIES else ROOM_ADMIN_METHODS[method]
    grants = {"room_admin": True, "room_create": True, "room_list": True, "room": "standup"}
    wrong = [grants | {needed: False}]
    if needed == "room_admin":
        wrong.append(grants | {"room": "retro"})  # administers another room
    for grant in wrong:
        status, error = await twirp(node, method, body, node.admin_token(**grant))
        assert (status, error["code"]) == (401, "unauthenticated"), (grant, error)
        assert error["msg"].startswith("permissions denied"), error
    status, answer = await twirp(node, method, body, node.admin_token(**grants))
    assert status != 401, answer


async def test_deleting_a_room_needs_room_create_not_its_admin(node: Node) -> None:
    node.rooms.get_or_create("standup")
    token = node.admin_token(room_admin=True, room="standup")
    status, error = await twirp(node, "DeleteRoom", {"room": "standup"}, token)
    assert (status, error["code"]) == (401, "unauthenticated")
    assert "roomCreate" in error["msg"]
    assert node.rooms.get("standup") is not None


async def test_bad_tokens_and_bodies(node: Node) -> None:
    other = api.LiveKitAPI(node.url, "admin", "wrong" * 8, failover=False)
    try:
        with pytest.raises(api.TwirpError) as info:
            await other.room.list_rooms(api.ListRoomsRequest())
        assert info.value.code == "unauthenticated" and info.value.status == 401
        assert "signature" in info.value.message
    finally:
        await other.aclose()
    node.rooms.get_or_create("standup")
    good = node.admin_token(room_admin=True, room="standup")
    status, body = await twirp(node, "ListParticipants", {"room": "standup"}, good)
    assert (status, body) == (200, {})  # protobuf JSON omits empty lists
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            node.url + "/twirp/livekit.RoomService/CreateRoom",
            data=b"{not json",
            headers={"Authorization": "Bearer " + good, "Content-Type": "application/json"},
        ) as resp,
    ):
        assert resp.status == 400
        assert (await resp.json())["code"] == "malformed"


async def test_create_list_delete_rooms(node: Node) -> None:
    created = await node.lk.room.create_room(
        api.CreateRoomRequest(name="standup", metadata="daily", max_participants=8)
    )
    assert created.name == "standup" and created.sid.startswith("RM_")
    assert (created.metadata, created.max_participants) == ("daily", 8)
    # creating a room that exists keeps it and applies the settings given (as LiveKit)
    again = await node.lk.room.create_room(
        api.CreateRoomRequest(name="standup", empty_timeout=60, metadata="weekly")
    )
    assert again.sid == created.sid
    assert (again.metadata, again.empty_timeout, again.max_participants) == ("weekly", 60, 8)
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
    with pytest.raises(api.TwirpError) as info:
        await node.lk.room.create_room(api.CreateRoomRequest(name="x" * 257))
    assert info.value.code == "invalid_argument" and info.value.status == 400


async def test_unknown_rooms_and_participants_are_not_found(node: Node) -> None:
    lk = node.lk.room
    calls: list[Callable[[str, str], Any]] = [
        lambda room, who: lk.get_participant(api.RoomParticipantIdentity(room=room, identity=who)),
        lambda room, who: lk.remove_participant(
            api.RoomParticipantIdentity(room=room, identity=who)
        ),
        lambda room, who: lk.mute_published_track(
            api.MuteRoomTrackRequest(room=room, identity=who, track_sid="TR_x", muted=True)
        ),
        lambda room, who: lk.update_participant(
            api.UpdateParticipantRequest(room=room, identity=who, metadata="m")
        ),
        lambda room, who: lk.update_subscriptions(
            api.UpdateSubscriptionsRequest(room=room, identity=who, track_sids=["TR_x"])
        ),
    ]
    for call in calls:
        for room in ("nowhere", "standup"):
            node.rooms.get_or_create("standup")
            with pytest.raises(api.TwirpError) as info:
                await call(room, "ghost")
            assert (info.value.code, info.value.status) == ("not_found", 404), info.value
    for room_only in (
        lk.send_data(api.SendDataRequest(room="nowhere", data=b"x")),
        lk.update_room_metadata(api.UpdateRoomMetadataRequest(room="nowhere", metadata="m")),
    ):
        with pytest.raises(api.TwirpError) as info:
            await room_only
        assert info.value.code == "not_found"
    # as LiveKit: an unknown room has no participants rather than an error
    listed = await lk.list_participants(api.ListParticipantsRequest(room="nowhere"))
    assert list(listed.participants) == []
    for room in ("nowhere", "standup"):
        token = node.admin_token(room_admin=True, room=room)
        body = {"room": room, "destination_identity": "ghost", "method": "m"}
        status, error = await twirp(node, "PerformRpc", body, token)
        assert (status, error["code"]) == (404, "not_found")


async def test_limits_and_malformed_arguments(node: Node) -> None:
    room = node.rooms.get_or_create("standup")
    await room.join("alice", listener=Recorder())
    lk = node.lk.room
    too_big = [
        api.UpdateParticipantRequest(room="standup", identity="alice", name="n" * 257),
        api.UpdateParticipantRequest(
            room="standup", identity="alice", metadata="m" * (512 * 1024 + 1)
        ),
        api.UpdateParticipantRequest(
            room="standup", identity="alice", attributes={"k": "v" * (64 * 1024)}
        ),
    ]
    for request in too_big:
        with pytest.raises(api.TwirpError) as info:
            await lk.update_participant(request)
        assert (info.value.code, info.value.status) == ("invalid_argument", 400)
        assert "exceeds the limit" in info.value.message
    with pytest.raises(api.TwirpError) as info:
        await lk.update_room_metadata(
            api.UpdateRoomMetadataRequest(room="standup", metadata="m" * (512 * 1024 + 1))
        )
    assert info.value.code == "invalid_argument"
    token = node.admin_token(room_admin=True, room="standup")
    # (livekit-api sets a nonce of its own: this one goes raw)
    body = {"room": "standup", "data": "eA==", "nonce": "c2hvcnQ="}
    status, error = await twirp(node, "SendData", body, token)
    assert (status, error["code"]) == (400, "invalid_argument")
    assert "16 bytes" in error["msg"]
    status, error = await twirp(node, "PerformRpc", {"room": "standup", "method": "m"}, token)
    assert (status, error["code"]) == (400, "invalid_argument")
    assert error["msg"] == "destination identity is required"
    assert room.participant("alice") is not None


async def test_update_participant_and_everyone_is_told(node: Node) -> None:
    room = node.rooms.get_or_create("standup")
    alice, bob = Recorder(), Recorder()
    await room.join("alice", name="Alice", listener=alice)
    bob_session = await room.join("bob", listener=bob, attributes={"team": "red", "floor": "2"})
    listed = await node.lk.room.list_participants(api.ListParticipantsRequest(room="standup"))
    assert sorted(p.identity for p in listed.participants) == ["alice", "bob"]
    got = await node.lk.room.get_participant(
        api.RoomParticipantIdentity(room="standup", identity="alice")
    )
    assert got.name == "Alice"

    updated = await node.lk.room.update_participant(
        api.UpdateParticipantRequest(
            room="standup",
            identity="bob",
            name="Robert",
            metadata="presenter",
            attributes={"team": "", "role": "host"},  # "" deletes a key, others merge
            permission=models.ParticipantPermission(can_subscribe=True, can_update_metadata=True),
        )
    )
    assert (updated.name, updated.metadata) == ("Robert", "presenter")
    assert dict(updated.attributes) == {"floor": "2", "role": "host"}
    # LiveKit replaces the permission as a whole: what is not given is off
    assert bob_session.permission == Permission(
        can_publish=False, can_subscribe=True, can_publish_data=False, can_update_metadata=True
    )
    for listener in (alice, bob):  # the participant itself and the others
        seen = [e.participant for e in listener.of(events.ParticipantUpdated)]
        assert any(p.identity == "bob" and p.metadata == "presenter" for p in seen), seen
    # empty fields leave things as they are
    again = await node.lk.room.update_participant(
        api.UpdateParticipantRequest(room="standup", identity="bob")
    )
    assert (again.name, again.metadata, again.permission.can_publish) == (
        "Robert",
        "presenter",
        False,
    )

    await node.lk.room.remove_participant(
        api.RoomParticipantIdentity(room="standup", identity="bob")
    )
    assert room.participant("bob") is None
    assert bob.of(events.SessionClosed)


async def test_send_data_to_all_or_to_those_named(node: Node) -> None:
    room = node.rooms.get_or_create("standup")
    people = {name: Recorder() for name in ("alice", "bob", "carol")}
    sids = {}
    for name, listener in people.items():
        sids[name] = (await room.join(name, listener=listener)).sid

    def received(name: str) -> list[tuple[bytes, str, str]]:
        return [(e.payload, e.topic, e.kind) for e in people[name].of(events.DataReceived)]

    send = node.lk.room.send_data
    await send(api.SendDataRequest(room="standup", data=b"all", topic="news"))
    await send(
        api.SendDataRequest(
            room="standup",
            data=b"some",
            kind=models.DataPacket.Kind.LOSSY,
            destination_identities=["alice"],
            destination_sids=[sids["bob"]],
        )
    )
    # only sids of no one here: sent to no one, not to everyone
    await send(api.SendDataRequest(room="standup", data=b"none", destination_sids=["PA_gone"]))
    # a retried request (the same nonce) is delivered once
    once = {"room": "standup", "data": "b25jZQ==", "destination_identities": ["carol"]}
    once["nonce"] = base64.b64encode(bytes(range(16))).decode()
    for _ in range(2):
        status, _answer = await twirp(
            node, "SendData", once, node.admin_token(room_admin=True, room="standup")
        )
        assert status == 200
    assert received("alice") == [(b"all", "news", "reliable"), (b"some", "", "lossy")]
    assert received("bob") == [(b"all", "news", "reliable"), (b"some", "", "lossy")]
    assert received("carol") == [(b"all", "news", "reliable"), (b"once", "", "reliable")]
    server_sent = people["alice"].of(events.DataReceived)[0]
    assert server_sent.sender.identity == ""  # from the server, not a participant


async def _receive_until(
    ws: aiohttp.ClientWebSocketResponse, which: str, timeout: float = 10.0
) -> rtc.SignalResponse:
    async with asyncio.timeout(timeout):
        while True:
            message = await ws.receive()
            assert message.type == aiohttp.WSMsgType.BINARY, message
            response = rtc.SignalResponse()
            response.ParseFromString(message.data)
            if response.WhichOneof("message") == which:
                return response


async def test_room_metadata_reaches_connected_clients(node: Node) -> None:
    """A LiveKit client in the room gets ``room_update``; one joining later has the
    metadata in its join response."""
    await node.lk.room.create_room(api.CreateRoomRequest(name="standup", metadata="v1"))
    async with aiohttp.ClientSession() as http:
        alice = await http.ws_connect(f"{node.ws_url}/rtc?access_token={node.token('alice')}")
        joined = await _receive_until(alice, "join")
        assert joined.join.room.metadata == "v1"
        room = await node.lk.room.update_room_metadata(
            api.UpdateRoomMetadataRequest(room="standup", metadata="v2")
        )
        assert room.metadata == "v2" and room.num_participants == 1
        update = await _receive_until(alice, "room_update")
        assert update.room_update.room.metadata == "v2"
        assert update.room_update.room.name == "standup"
        bob = await http.ws_connect(f"{node.ws_url}/rtc?access_token={node.token('bob')}")
        assert (await _receive_until(bob, "join")).join.room.metadata == "v2"
        await alice.close()
        await bob.close()


async def test_perform_rpc_against_the_room_core(node: Node) -> None:
    """What PerformRpc answers for each way a call ends (the client side of RPC is in
    ``test_roomservice.py``, with a real SDK)."""
    room = node.rooms.get_or_create("standup")

    class Callee(Recorder):
        def __init__(self, answer: str | None, ack: bool = True) -> None:
            super().__init__()
            self.answer = answer
            self.ack = ack

        def on_room_event(self, event: Any) -> None:
            super().on_room_event(event)
            if isinstance(event, events.RpcRequested):
                asyncio.get_running_loop().call_later(0.05, self.reply, event)

        def reply(self, event: events.RpcRequested) -> None:
            if self.ack:
                room.rpc.acknowledged(self.identity, event.request_id)
            if self.answer is not None:
                room.rpc.answered(self.identity, event.request_id, self.answer + event.payload)

    callees = {"ok": Callee("echo:"), "mute": Callee(None, ack=False), "slow": Callee(None)}
    for identity, callee in callees.items():
        callee.identity = identity  # type: ignore[attr-defined]
        await room.join(identity, listener=callee)

    async def call(identity: str, timeout_ms: int = 0) -> tuple[int, Any]:
        body = {
            "room": "standup",
            "destination_identity": identity,
            "method": "greet",
            "payload": "hi",
            "response_timeout_ms": timeout_ms,
        }
        return await twirp(
            node, "PerformRpc", body, node.admin_token(room_admin=True, room="standup")
        )

    assert await call("ok") == (200, {"payload": "echo:hi"})
    request = callees["ok"].of(events.RpcRequested)[0]
    assert (request.method, request.payload, request.response_timeout_ms) == ("greet", "hi", 10000)
    # not acknowledged in time: the client is not there (LiveKit: 1501, canceled)
    status, error = await call("mute")
    assert (status, error["code"]) == (408, "canceled")
    assert error["msg"] == "RpcError 1501: Connection timeout"
    status, error = await call("slow", timeout_ms=500)
    assert (status, error["code"]) == (408, "canceled")
    assert error["msg"] == "RpcError 1502: Response timeout"
    # the callee leaves while the call waits
    pending = asyncio.ensure_future(call("slow"))
    await asyncio.sleep(0.3)
    await room.remove_participant("slow")
    status, error = await pending
    assert (status, error["code"]) == (503, "unavailable")
    assert "1503" in error["msg"]
    assert await call("ok") == (200, {"payload": "echo:hi"})  # nothing left behind
    assert len(room.rpc) == 0


async def test_a_client_is_told_its_tracks_are_unpublished(node: Node) -> None:
    """Revoking ``can_publish`` sends the publisher ``track_unpublished`` for each of
    its tracks (livekit-client unpublishes them then) and updates everyone."""
    pc = RTCPeerConnection()
    async with aiohttp.ClientSession() as http:
        alice = await http.ws_connect(f"{node.ws_url}/rtc?access_token={node.token('alice')}")
        bob = await http.ws_connect(f"{node.ws_url}/rtc?access_token={node.token('bob')}")
        await _receive_until(alice, "join")
        await _receive_until(bob, "join")
        try:
            camera = VideoStreamTrack()
            pc.addTransceiver(camera, direction="sendonly")
            await pc.setLocalDescription(await pc.createOffer())
            add = rtc.AddTrackRequest(
                cid=camera.id, type=models.TrackType.VIDEO, source=models.TrackSource.CAMERA
            )
            await alice.send_bytes(rtc.SignalRequest(add_track=add).SerializeToString())
            sid = (await _receive_until(alice, "track_published")).track_published.track.sid
            # an announced track may be muted before its offer (as LiveKit's pending ones)
            mute = api.MuteRoomTrackRequest(
                room="standup", identity="alice", track_sid=sid, muted=True
            )
            muted = await node.lk.room.mute_published_track(mute)
            assert muted.track.sid == sid and muted.track.muted
            told = await _receive_until(alice, "mute")
            assert (told.mute.sid, told.mute.muted) == (sid, True)
            offer = rtc.SessionDescription(type="offer", sdp=pc.localDescription.sdp, id=1)
            await alice.send_bytes(rtc.SignalRequest(offer=offer).SerializeToString())
            await _receive_until(alice, "answer")
            room = node.rooms.get("standup")
            assert room is not None and list(room.tracks) == [sid]
            assert room.tracks[sid].muted

            await node.lk.room.update_participant(
                api.UpdateParticipantRequest(
                    room="standup",
                    identity="alice",
                    permission=models.ParticipantPermission(can_subscribe=True),
                )
            )
            gone = await _receive_until(alice, "track_unpublished")
            assert gone.track_unpublished.track_sid == sid
            own = await _receive_until(alice, "update")
            (me,) = own.update.participants
            assert me.identity == "alice" and not me.permission.can_publish
            while True:  # bob sees alice without the track and without the grant
                update = await _receive_until(bob, "update")
                seen = [p for p in update.update.participants if p.identity == "alice"]
                if seen and not seen[0].permission.can_publish:
                    assert list(seen[0].tracks) == []
                    break
            assert not room.tracks
        finally:
            await pc.close()
            await alice.close()
            await bob.close()
