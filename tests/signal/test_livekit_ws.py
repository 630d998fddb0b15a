"""The ``/rtc`` signaling WebSocket, driven by a protocol-level client against stand-in rooms.

The client speaks raw ``SignalRequest``/``SignalResponse`` protobufs, as every
LiveKit SDK does, including what SDKs never send (malformed frames, floods).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web
from livekit.protocol import models, rtc
from livekit_fakes import FakeRoomManager, SpeakersChanged

from mediafed import server
from mediafed.config import load_config
from mediafed.media.events import StreamStateChanged
from mediafed.signal.livekit.peer import SignalOptions
from mediafed.signal.livekit.rtc import RtcEndpoint, add_rtc_route
from mediafed.signal.livekit.tokens import VideoGrant, mint_token, verify_token
from mediafed.signal.livekit.validate import add_validate_routes

SECRET = "s" * 32
KEYS = {"k1": SECRET}
TIMEOUT = 10.0


@dataclass
class Node:
    url: str
    rooms: FakeRoomManager
    endpoint: RtcEndpoint
    http: aiohttp.ClientSession


async def _start(options: SignalOptions) -> tuple[web.AppRunner, Node]:
    rooms = FakeRoomManager()
    config = load_config(environ={"MEDIAFED_KEYS": "k1: " + SECRET})
    holder: list[RtcEndpoint] = []

    def extension(app: web.Application, cfg: object) -> None:
        add_validate_routes(app, config.keys)
        holder.append(add_rtc_route(app, config.keys, rooms, options))

    app = await server.build_app(config, extensions=[extension])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    http = aiohttp.ClientSession()
    return runner, Node(f"ws://127.0.0.1:{port}", rooms, holder[0], http)


@pytest.fixture
async def node_factory() -> AsyncIterator[Callable[..., object]]:
    started: list[tuple[web.AppRunner, Node]] = []

    async def make(**options: object) -> Node:
        runner, node = await _start(SignalOptions(**options))  # type: ignore[arg-type]
        started.append((runner, node))
        return node

    yield make
    for runner, node in started:
        await node.http.close()
        await runner.cleanup()


@pytest.fixture
async def node(node_factory: Callable[..., object]) -> Node:
    return await node_factory()  # type: ignore[misc, no-any-return]


def token(identity: str, room: str = "r1", *, ttl_s: float = 600, **grant: object) -> str:
    return mint_token(
        "k1",
        SECRET,
        identity=identity,
        name=identity.title(),
        video=VideoGrant(room_join=True, room=room, **grant),  # type: ignore[arg-type]
        ttl_s=ttl_s,
    )


class Client:
    """A bare LiveKit signal client: protobuf frames in, protobuf frames out."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.seen: list[rtc.SignalResponse] = []

    @classmethod
    async def connect(cls, node: Node, tok: str, query: str = "") -> Client:
        ws = await node.http.ws_connect(f"{node.url}/rtc?access_token={tok}{query}")
        return cls(ws)

    async def send(self, **fields: object) -> None:
        await self.ws.send_bytes(rtc.SignalRequest(**fields).SerializeToString())  # type: ignore[arg-type]

    async def recv(self) -> rtc.SignalResponse:
        message = await asyncio.wait_for(self.ws.receive(), TIMEOUT)
        if message.type != aiohttp.WSMsgType.BINARY:
            raise ConnectionError(f"socket ended: {message.type} {message.data} {message.extra}")
        response = rtc.SignalResponse()
        response.ParseFromString(message.data)
        self.seen.append(response)
        return response

    async def expect(
        self, which: str, where: Callable[[rtc.SignalResponse], bool] = lambda r: True
    ) -> rtc.SignalResponse:
        """The next response of kind ``which`` matching ``where`` (others are skipped)."""
        while True:
            response = await self.recv()
            if response.WhichOneof("message") == which and where(response):
                return response

    async def join(self) -> rtc.JoinResponse:
        return (await self.expect("join")).join

    async def closed(self) -> aiohttp.WSMessage:
        while True:
            message = await asyncio.wait_for(self.ws.receive(), TIMEOUT)
            if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                return message
            if message.type == aiohttp.WSMsgType.BINARY:
                response = rtc.SignalResponse()
                response.ParseFromString(message.data)
                self.seen.append(response)


def _updated(identity: str, state: int | None = None) -> Callable[[rtc.SignalResponse], bool]:
    def match(response: rtc.SignalResponse) -> bool:
        return any(
            p.identity == identity and (state is None or p.state == state)
            for p in response.update.participants
        )

    return match


async def test_join_response_has_what_clients_require(node: Node) -> None:
    alice = await Client.connect(node, token("alice"))
    join = await alice.join()
    assert join.room.name == "r1" and join.room.sid.startswith("RM_")
    assert join.participant.sid.startswith("PA_")
    assert join.participant.identity == "alice" and join.participant.name == "Alice"
    assert join.participant.version >= 1
    assert join.participant.permission.can_publish
    assert join.participant.permission.can_subscribe
    assert join.participant.permission.can_publish_data
    assert join.server_version and join.server_info.version
    assert join.ping_interval > 0 and join.ping_timeout > 0
    assert join.subscriber_primary
    assert list(join.other_participants) == []
    # the codecs browsers can watch through the relay, VP8 first: livekit-client
    # publishes in the codec asked for only if it is listed, and falls back to the
    # first video codec listed (AV1 waits for the dependency descriptor)
    mimes = [c.mime for c in join.enabled_publish_codecs]
    assert set(mimes) == {"audio/opus", "video/VP8", "video/H264", "video/VP9"}
    assert next(m for m in mimes if m.startswith("video/")) == "video/VP8"
    # the subscriber connection starts once the join is answered
    assert node.rooms.get("r1").sessions["alice"].started  # type: ignore[union-attr]

    bob = await Client.connect(node, token("bob"))
    bob_join = await bob.join()
    assert [p.identity for p in bob_join.other_participants] == ["alice"]
    update = await alice.expect("update", _updated("bob"))
    assert update.update.participants[0].sid == bob_join.participant.sid


async def test_hidden_participants_stay_hidden(node: Node) -> None:
    alice = await Client.connect(node, token("alice"))
    await alice.join()
    ghost = await Client.connect(node, token("ghost", hidden=True))
    assert (await ghost.join()).participant.permission.hidden
    bob = await Client.connect(node, token("bob"))
    join = await bob.join()
    assert [p.identity for p in join.other_participants] == ["alice"]
    update = await alice.expect("update")
    assert [p.identity for p in update.update.participants] == ["bob"]


async def test_bad_tokens_are_refused_before_upgrade(node: Node) -> None:
    cases = {
        token("x", ttl_s=-3600): "expired at",
        mint_token("k1", SECRET, identity="x", video=VideoGrant(room="r1")): "no roomJoin",
        mint_token(
            "nope", SECRET, identity="x", video=VideoGrant(room_join=True, room="r")
        ): "unknown API key",
    }
    for bad, reason in cases.items():
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await Client.connect(node, bad)
        assert info.value.status == 401
        async with node.http.get(
            node.url.replace("ws", "http") + "/rtc/validate", params={"access_token": bad}
        ) as resp:
            assert reason in await resp.text()
    # the same endpoint admits a Bearer header
    ws = await node.http.ws_connect(
        node.url + "/rtc", headers={"Authorization": "Bearer " + token("carol")}
    )
    assert (await Client(ws).join()).participant.identity == "carol"


async def test_messages_sent_before_the_join_response_are_answered_after_it(node: Node) -> None:
    alice = await Client.connect(node, token("alice"))
    await alice.send(ping_req=rtc.Ping(timestamp=1234, rtt=5))
    await alice.send(ping=99)
    first = await alice.recv()
    assert first.WhichOneof("message") == "join"
    pong = await alice.expect("pong_resp")
    assert pong.pong_resp.last_ping_timestamp == 1234
    assert pong.pong_resp.timestamp > 0
    assert (await alice.expect("pong")).pong > 0


async def test_publish_flow_and_update_before_offer(node: Node) -> None:
    alice = await Client.connect(node, token("alice"))
    await alice.join()
    bob = await Client.connect(node, token("bob"))
    await bob.join()
    await alice.expect("update", _updated("bob"))
    layers = [
        models.VideoLayer(quality=models.VideoQuality.LOW, width=320, height=180, bitrate=150_000),
        models.VideoLayer(
            quality=models.VideoQuality.HIGH, width=1280, height=720, bitrate=1_700_000
        ),
    ]
    await alice.send(
        add_track=rtc.AddTrackRequest(
            cid="cam-1",
            type=models.TrackType.VIDEO,
            source=models.TrackSource.CAMERA,
            width=1280,
            height=720,
            layers=layers,
            encryption=models.Encryption.GCM,
        )
    )
    published = (await alice.expect("track_published")).track_published
    assert published.cid == "cam-1"
    assert published.track.sid.startswith("TR_")
    assert published.track.source == models.TrackSource.CAMERA
    assert published.track.encryption == models.Encryption.GCM
    assert [layer.rid for layer in published.track.layers] == ["q", "f"]
    await alice.send(offer=rtc.SessionDescription(type="offer", sdp="v=0\r\nm=video 9\r\n", id=7))
    answer = (await alice.expect("answer")).answer
    assert answer.type == "answer" and answer.id == 7 and answer.sdp.startswith("v=0")
    session = node.rooms.get("r1").sessions["alice"]  # type: ignore[union-attr]
    assert session.offers == ["v=0\r\nm=video 9\r\n"]
    update = await bob.expect("update", _updated("alice"))
    tracks = update.update.participants[0].tracks
    assert [t.sid for t in tracks] == [published.track.sid]

    # a subscriber offer from the room core reaches bob after that update; his answer comes back
    bob_session = node.rooms.get("r1").sessions["bob"]  # type: ignore[union-attr]
    bob_session.listener.on_subscriber_offer("v=0\r\nsub\r\n", 3)
    offer = (await bob.expect("offer")).offer
    assert (offer.type, offer.sdp, offer.id) == ("offer", "v=0\r\nsub\r\n", 3)
    await bob.send(answer=rtc.SessionDescription(type="answer", sdp="v=0\r\nans\r\n", id=3))
    candidate = {"candidate": "candidate:1 1 udp 1 198.18.0.2 5000 typ host", "sdpMid": "0"}
    await bob.send(
        trickle=rtc.TrickleRequest(
            candidateInit=json.dumps(candidate), target=rtc.SignalTarget.SUBSCRIBER
        )
    )
    await bob.send(ping=1)
    await bob.expect("pong")
    assert bob_session.answers == [("v=0\r\nans\r\n", 3)]
    assert bob_session.candidates == [("subscriber", candidate["candidate"])]

    # bob's downlink cannot carry alice's video: he is told it is paused, then active
    track_info = session.info().tracks[0]
    for paused, state in ((True, rtc.StreamState.PAUSED), (False, rtc.StreamState.ACTIVE)):
        bob_session.listener.on_room_event(StreamStateChanged(track_info, paused))
        update = (await bob.expect("stream_state_update")).stream_state_update
        [info] = update.stream_states
        assert (info.participant_sid, info.track_sid, info.state) == (
            session.sid,
            published.track.sid,
            state,
        )

    # mute seen by the other side
    await alice.send(mute=rtc.MuteTrackRequest(sid=published.track.sid, muted=True))
    muted = await bob.expect(
        "update", lambda r: any(t.muted for p in r.update.participants for t in p.tracks)
    )
    assert muted.update.participants[0].identity == "alice"
    # subscription and adaptive-stream settings reach the session
    await bob.send(
        subscription=rtc.UpdateSubscription(track_sids=[published.track.sid], subscribe=False)
    )
    await bob.send(
        track_setting=rtc.UpdateTrackSettings(
            track_sids=[published.track.sid], quality=models.VideoQuality.LOW, width=320, height=180
        )
    )
    await bob.send(ping=2)
    await bob.expect("pong")
    assert bob_session.subscriptions == {published.track.sid: False}
    assert bob_session.settings[published.track.sid]["width"] == 320
    assert bob_session.settings[published.track.sid]["quality"] == models.VideoQuality.LOW


async def test_add_track_refusals_leave_the_room_unaffected(node: Node) -> None:
    alice = await Client.connect(node, token("alice", can_publish_sources=("microphone",)))
    await alice.join()
    bob = await Client.connect(node, token("bob"))
    await bob.join()
    await alice.send(
        add_track=rtc.AddTrackRequest(
            cid="cam", type=models.TrackType.VIDEO, source=models.TrackSource.CAMERA
        )
    )
    refused = (await alice.expect("request_response")).request_response
    assert refused.reason == rtc.RequestResponse.NOT_ALLOWED
    assert "camera" in refused.message and refused.add_track.cid == "cam"
    await alice.send(add_track=rtc.AddTrackRequest(cid="d", type=models.TrackType.DATA))
    refused = (await alice.expect("request_response")).request_response
    assert refused.reason == rtc.RequestResponse.UNSUPPORTED_TYPE
    assert "audio or video" in refused.message
    # a flood of announcements is bounded by the session's pending limit
    for i in range(20):
        await alice.send(
            add_track=rtc.AddTrackRequest(
                cid=f"mic-{i}", type=models.TrackType.AUDIO, source=models.TrackSource.MICROPHONE
            )
        )
    published = limited = 0
    while published + limited < 20:
        response = await alice.recv()
        which = response.WhichOneof("message")
        if which == "track_published":
            published += 1
        elif which == "request_response":
            assert response.request_response.reason == rtc.RequestResponse.LIMIT_EXCEEDED
            assert "too many pending tracks" in response.request_response.message
            limited += 1
    assert published == 8 and limited == 12
    # both participants are still fine
    for client in (alice, bob):
        await client.send(ping_req=rtc.Ping(timestamp=5))
        assert (await client.expect("pong_resp")).pong_resp.last_ping_timestamp == 5
    assert node.rooms.get("r1").num_participants == 2  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("frame", "code", "reason"),
    [
        (b"\xff\xff\xff\xff\x0f", 1007, "malformed SignalRequest protobuf"),
        (rtc.SignalRequest().SerializeToString(), 1008, "empty SignalRequest"),
        (b"x" * ((1 << 20) + 1), 1009, ""),
    ],
)
async def test_bad_frames_close_only_that_participant(
    node: Node, frame: bytes, code: int, reason: str
) -> None:
    bob = await Client.connect(node, token("bob"))
    await bob.join()
    mallory = await Client.connect(node, token("mallory"))
    await mallory.join()
    await bob.expect("update", _updated("mallory"))
    await mallory.ws.send_bytes(frame)
    closing = await mallory.closed()
    assert mallory.ws.close_code == code
    if reason:
        assert reason in str(closing.extra)
    if code != 1009:
        # a protocol error ends the participant at once; an oversized frame parks it
        await bob.expect("update", _updated("mallory", models.ParticipantInfo.State.DISCONNECTED))
    await bob.send(ping=3)
    await bob.expect("pong")


async def test_text_frames_are_refused(node: Node) -> None:
    mallory = await Client.connect(node, token("mallory"))
    await mallory.join()
    await mallory.ws.send_str('{"ping": 1}')
    closing = await mallory.closed()
    assert mallory.ws.close_code == 1003
    assert "binary protobuf" in str(closing.extra)


async def test_leave_both_ways(node: Node) -> None:
    alice = await Client.connect(node, token("alice"))
    await alice.join()
    bob = await Client.connect(node, token("bob"))
    await bob.join()
    await bob.send(leave=rtc.LeaveRequest(reason=models.DisconnectReason.CLIENT_INITIATED))
    await bob.closed()
    left = await alice.expect("update", _updated("bob", models.ParticipantInfo.State.DISCONNECTED))
    assert left.update.participants[0].version > 1
    # the server removes alice: she is told why
    room = node.rooms.get("r1")
    assert room is not None
    assert await room.remove_participant("alice", "removed by an admin")
    leave = (await alice.expect("leave")).leave
    assert leave.reason == models.DisconnectReason.PARTICIPANT_REMOVED
    assert leave.action == rtc.LeaveRequest.Action.DISCONNECT and not leave.can_reconnect
    await alice.closed()


async def test_a_server_going_down_asks_clients_to_join_again(node: Node) -> None:
    """As LiveKit's protocol has it for a restart: the client retries a full join
    until the server is back (livekit-client and the SDKs do)."""
    alice = await Client.connect(node, token("alice"))
    await alice.join()
    await node.endpoint.shutdown(web.Application())
    leave = (await alice.expect("leave")).leave
    assert leave.reason == models.DisconnectReason.SERVER_SHUTDOWN
    assert leave.action == rtc.LeaveRequest.Action.RECONNECT and leave.can_reconnect
    await alice.closed()


async def test_duplicate_identity_ends_the_older_connection(node: Node) -> None:
    first = await Client.connect(node, token("alice"))
    await first.join()
    second = await Client.connect(node, token("alice"))
    await second.join()
    leave = (await first.expect("leave")).leave
    assert leave.reason == models.DisconnectReason.DUPLICATE_IDENTITY
    await second.send(ping=1)
    await second.expect("pong")


async def test_speakers_changed_is_forwarded(node: Node) -> None:
    alice = await Client.connect(node, token("alice"))
    join = await alice.join()
    room = node.rooms.get("r1")
    assert room is not None
    room.broadcast(SpeakersChanged(((join.participant.sid, 0.8, True),)), exclude=None)
    speakers = (await alice.expect("speakers_changed")).speakers_changed.speakers
    assert speakers[0].sid == join.participant.sid and speakers[0].active
    assert speakers[0].level == pytest.approx(0.8)


async def test_resume_within_grace_keeps_the_participant(
    node_factory: Callable[..., object],
) -> None:
    node: Node = await node_factory(resume_grace_s=30.0)  # type: ignore[misc]
    alice = await Client.connect(node, token("alice"))
    sid = (await alice.join()).participant.sid
    bob = await Client.connect(node, token("bob"))
    await bob.join()
    await alice.ws.close()
    # while alice is away, bob's update is kept for her
    await bob.send(update_metadata=rtc.UpdateParticipantMetadata(name="Robert", request_id=1))
    refused = (await bob.expect("request_response")).request_response
    assert refused.reason == rtc.RequestResponse.NOT_ALLOWED  # no canUpdateOwnMetadata
    # reconnect_reason 3: the subscriber connection failed too, so ICE restarts
    back = await Client.connect(node, token("alice"), f"&reconnect=1&sid={sid}&reconnect_reason=3")
    first = await back.recv()
    assert first.WhichOneof("message") == "reconnect"
    offer = (await back.expect("offer")).offer
    assert "restart" in offer.sdp  # the session restarted ICE and offered again
    room = node.rooms.get("r1")
    assert room is not None and room.sessions["alice"].sid == sid
    assert room.sessions["alice"].ice_restarts == 1
    # only the signal connection dropped (reason 1): media is left alone
    await back.ws.close()
    again = await Client.connect(node, token("alice"), f"&reconnect=1&sid={sid}&reconnect_reason=1")
    assert (await again.recv()).WhichOneof("message") == "reconnect"
    await again.send(ping=1)
    await again.expect("pong")
    assert room.sessions["alice"].ice_restarts == 1
    back = again
    await bob.send(leave=rtc.LeaveRequest())
    await back.expect("update", _updated("bob", models.ParticipantInfo.State.DISCONNECTED))


async def test_resume_after_grace_is_told_to_rejoin(node_factory: Callable[..., object]) -> None:
    node: Node = await node_factory(resume_grace_s=0.2)
    alice = await Client.connect(node, token("alice"))
    sid = (await alice.join()).participant.sid
    watcher = await Client.connect(node, token("watcher"))
    await watcher.join()
    await alice.ws.close()
    await watcher.expect("update", _updated("alice", models.ParticipantInfo.State.DISCONNECTED))
    late = await Client.connect(node, token("alice"), f"&reconnect=1&sid={sid}")
    leave = (await late.expect("leave")).leave
    assert leave.action == rtc.LeaveRequest.Action.RECONNECT
    assert leave.reason == models.DisconnectReason.STATE_MISMATCH
    # and a wrong sid is refused the same way
    wrong = await Client.connect(node, token("watcher"), "&reconnect=1&sid=PA_nope")
    assert (await wrong.expect("leave")).leave.action == rtc.LeaveRequest.Action.RECONNECT


async def test_refresh_token_before_expiry(node_factory: Callable[..., object]) -> None:
    node: Node = await node_factory(refresh_margin_s=1.0)
    alice = await Client.connect(node, token("alice", ttl_s=2))
    await alice.join()
    fresh = (await alice.expect("refresh_token")).refresh_token
    claims = verify_token(fresh, KEYS)
    assert claims.identity == "alice" and claims.video.room == "r1" and claims.video.room_join
    assert claims.expires_at > time.time()


async def test_silent_client_is_closed_after_ping_timeout(
    node_factory: Callable[..., object],
) -> None:
    node: Node = await node_factory(ping_interval_s=1, ping_timeout_s=1, quality_interval_s=0.5)
    alice = await Client.connect(node, token("alice"))
    await alice.join()
    quality = await alice.expect("connection_quality")
    assert quality.connection_quality.updates[0].quality == models.ConnectionQuality.EXCELLENT
    closing = await alice.closed()
    assert "ping timeout" in str(closing.extra)


async def test_data_packets_are_relayed_with_the_true_sender(node: Node) -> None:
    clients = {}
    for name in ("alice", "bob", "carol"):
        clients[name] = await Client.connect(node, token(name))
        await clients[name].join()
    room = node.rooms.get("r1")
    assert room is not None
    alice = room.sessions["alice"]
    forged = models.DataPacket(
        kind=models.DataPacket.Kind.RELIABLE,
        sequence=7,
        participant_identity="mallory",
        destination_identities=["bob"],
        user=models.UserPacket(payload=b"psst", topic="chat", participant_identity="mallory"),
    )
    alice.listener.on_data_message("publisher", "_reliable", forged.SerializeToString())
    alice.listener.on_data_message("publisher", "_reliable", b"\xff\xff\xff")  # dropped
    # sent again (a client resends what it buffered after a resume): relayed once
    alice.listener.on_data_message("publisher", "_reliable", forged.SerializeToString())
    assert room.sessions["carol"].channel_out == []
    [(kind, data)] = room.sessions["bob"].channel_out
    relayed = models.DataPacket()
    relayed.ParseFromString(data)
    assert kind == "reliable"
    assert relayed.participant_identity == "alice" and relayed.participant_sid == alice.sid
    assert relayed.user.participant_identity == "alice"
    assert relayed.user.payload == b"psst" and relayed.user.topic == "chat"
    assert relayed.sequence == 7  # the sender's: receivers drop repeats by sender and sequence
    # a token without canPublishData sends nothing
    quiet = await Client.connect(node, token("quiet", can_publish_data=False))
    await quiet.join()
    room.sessions["quiet"].listener.on_data_message(
        "publisher",
        "_lossy",
        models.DataPacket(user=models.UserPacket(payload=b"x")).SerializeToString(),
    )
    assert len(room.sessions["bob"].channel_out) == 1


async def test_a_signaling_flood_ends_only_that_participant(node: Node) -> None:
    """A client sending requests far faster than any SDK does is disconnected (a
    dropped request would leave its state undefined); the room goes on."""
    bob = await Client.connect(node, token("bob"))
    await bob.join()
    mallory = await Client.connect(node, token("mallory"))
    await mallory.join()
    await bob.expect("update", _updated("mallory"))
    for index in range(400):
        await mallory.send(ping=index)
    closing = await mallory.closed()
    assert mallory.ws.close_code == 1008
    assert "signaling messages at once" in str(closing.extra)
    assert node.rooms.dropped == {"signal_rate": 1}
    await bob.expect("update", _updated("mallory", models.ParticipantInfo.State.DISCONNECTED))
    # a client at an SDK's pace is never refused
    for index in range(100):
        await bob.send(ping=index)
        await bob.expect("pong")
    assert node.rooms.dropped == {"signal_rate": 1}
