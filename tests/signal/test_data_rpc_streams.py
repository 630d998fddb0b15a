"""Data packets beyond user data, and who may subscribe to whom.

RPC (``rpc_request``, ``rpc_ack``, ``rpc_response``) and data streams
(``stream_header``, ``stream_chunk``, ``stream_trailer``) are relayed to the
participants they name, with the sender asserted as livekit-server does
(``pkg/rtc/participant.go`` ``handleReceivedDataMessage``); a publisher's
``subscription_permission`` decides who receives its tracks
(``pkg/rtc/uptrackmanager.go``). The end-to-end tests drive livekit-client
(2.23, in headless Chromium) through the web-demo's live ``Room``
(``window.mediafedDemo.room``).
"""

from __future__ import annotations

import asyncio

import pytest
from livekit.protocol import metrics, models, rtc
from playwright.async_api import BrowserContext, Page

from mediafed.errors import AuthError
from mediafed.media import (
    Permission,
    RoomManager,
    SubscriptionPermission,
    TrackPermission,
    events,
    limits,
)
from mediafed.signal.livekit import translate
from tests.support.aiortc_client import AiortcParticipant, PatternVideoTrack, wait_for
from tests.support.browser import TIMEOUT_MS
from tests.support.livekit_node import LiveNode

# ---- the sender is who sent it -------------------------------------------------------


def _relay(
    packet: models.DataPacket, *, lossy: bool = False, identity: str = "ada"
) -> tuple[models.DataPacket, translate.RelayedData]:
    relayed = translate.relayed_data_packet(
        packet, sender_sid="PA_ada", sender_identity=identity, lossy=lossy
    )
    assert relayed is not None
    out = models.DataPacket()
    out.ParseFromString(relayed.packet)
    return out, relayed


def test_rpc_and_stream_packets_carry_the_true_sender() -> None:
    request = models.DataPacket(
        participant_identity="mallory",
        participant_sid="PA_mallory",
        destination_identities=["bob"],
        sequence=4,
        rpc_request=models.RpcRequest(id="r1", method="greet", payload="hi", version=1),
    )
    out, relayed = _relay(request)
    assert (out.participant_identity, out.participant_sid) == ("ada", "PA_ada")
    assert out.rpc_request.payload == "hi" and out.sequence == 4
    assert relayed.destination_identities == ("bob",) and relayed.kind == "reliable"
    chunk = models.DataPacket(
        kind=models.DataPacket.Kind.RELIABLE,
        stream_chunk=models.DataStream.Chunk(stream_id="s1", chunk_index=2, content=b"x" * 9),
    )
    out, relayed = _relay(chunk, lossy=True)  # the channel it came on decides
    assert out.kind == models.DataPacket.Kind.LOSSY and relayed.kind == "lossy"
    assert out.participant_identity == "ada" and out.stream_chunk.content == b"x" * 9
    assert relayed.destination_identities == ()  # to everyone


def test_user_packets_carry_the_true_sender_inside_too() -> None:
    user = models.DataPacket(
        user=models.UserPacket(
            participant_identity="mallory",
            participant_sid="PA_mallory",
            payload=b"psst",
            destination_identities=["bob"],
            destination_sids=["PA_carol"],
        )
    )
    out, relayed = _relay(user)
    assert (out.user.participant_identity, out.user.participant_sid) == ("ada", "PA_ada")
    assert list(out.destination_identities) == ["bob"]  # copied up from the user packet
    assert relayed.destination_sids == ("PA_carol",)
    # a hidden sender is nobody (its sid stays on the packet, as livekit-server's)
    out, _ = _relay(user, identity="")
    assert out.participant_identity == out.user.participant_identity == ""
    assert out.participant_sid == "PA_ada" and out.user.participant_sid == ""


def test_what_clients_may_not_relay() -> None:
    for packet in (
        models.DataPacket(speaker=models.ActiveSpeakerUpdate()),  # the server's to send
        models.DataPacket(transcription=models.Transcription()),  # agents' only
        models.DataPacket(metrics=metrics.MetricsBatch()),  # the server's to collect
        models.DataPacket(),
    ):
        assert (
            translate.relayed_data_packet(packet, sender_sid="s", sender_identity="a", lossy=False)
            is None
        )
    chat = models.DataPacket(chat_message=models.ChatMessage(id="m", message="hello"))
    assert _relay(chat)[0].chat_message.message == "hello"


def test_subscription_permission_from_pb() -> None:
    request = rtc.SubscriptionPermission(
        all_participants=False,
        track_permissions=[
            rtc.TrackPermission(participant_identity="bob", all_tracks=True),
            rtc.TrackPermission(participant_sid="PA_carol", track_sids=["TR_1"]),
            rtc.TrackPermission(participant_sid="PA_gone", all_tracks=True),  # left: skipped
        ],
    )
    permission = translate.subscription_permission_from_pb(request, {"PA_carol": "carol"})
    assert permission == SubscriptionPermission(
        all_participants=False,
        track_permissions=(
            TrackPermission("bob", all_tracks=True),
            TrackPermission("carol", track_sids=frozenset({"TR_1"})),
        ),
    )
    assert permission.allows("TR_2", "bob") and permission.allows("TR_1", "carol")
    assert not permission.allows("TR_2", "carol") and not permission.allows("TR_1", "dave")
    everyone = translate.subscription_permission_from_pb(
        rtc.SubscriptionPermission(all_participants=True), {}
    )
    assert everyone.allows("TR_1", "anyone")
    with pytest.raises(Exception, match="names no participant"):
        translate.subscription_permission_from_pb(
            rtc.SubscriptionPermission(track_permissions=[rtc.TrackPermission(all_tracks=True)]),
            {},
        )


# ---- the room core ---------------------------------------------------------------------


def _relayed(participant: AiortcParticipant) -> list[bytes]:
    return [e.packet for e in participant.events if isinstance(e, events.PacketRelayed)]


async def test_packets_go_to_the_participants_named_within_the_limits(
    rooms: RoomManager,
) -> None:
    room = rooms.get_or_create("packets")
    people = {name: AiortcParticipant(room, name) for name in ("ada", "bob", "carol")}
    sessions = {name: await room.join(name, listener=p) for name, p in people.items()}
    ada = sessions["ada"]
    ada.relay_packet(b"to bob", protocol="livekit", destination_identities=["bob"])
    ada.relay_packet(b"to all", protocol="livekit", kind="lossy")
    ada.relay_packet(b"x" * (limits.MAX_DATA_BYTES + 1), protocol="livekit")  # dropped
    assert _relayed(people["bob"]) == [b"to bob", b"to all"]
    assert _relayed(people["carol"]) == [b"to all"]
    assert _relayed(people["ada"]) == []
    relayed = next(e for e in people["carol"].events if isinstance(e, events.PacketRelayed))
    assert (relayed.sender.identity, relayed.protocol, relayed.kind) == ("ada", "livekit", "lossy")
    assert rooms.dropped == {"data_size": 1}
    quiet = await room.join(
        "quiet",
        listener=AiortcParticipant(room, "quiet"),
        permission=Permission(can_publish_data=False),
    )
    with pytest.raises(AuthError, match="quiet may not publish data"):
        quiet.relay_packet(b"hi", protocol="livekit")


def _access(participant: AiortcParticipant) -> list[tuple[str, bool]]:
    return [
        (e.track.sid, e.allowed)
        for e in participant.events
        if isinstance(e, events.SubscriptionPermissionChanged)
    ]


async def test_a_publisher_decides_who_subscribes(rooms: RoomManager) -> None:
    """Subscribers it no longer allows lose its tracks and are told; allowed again, they
    get them back; whoever joins meanwhile is refused the same way."""
    room = rooms.get_or_create("private")
    ada = AiortcParticipant(room, "ada")
    bob, carol = AiortcParticipant(room, "bob"), AiortcParticipant(room, "carol")
    try:
        publisher = await ada.join()
        bob_session = await room.join("bob", listener=bob)
        carol_session = await room.join("carol", listener=carol)
        await ada.publish(PatternVideoTrack((200, 0, 0)))
        [track_sid] = publisher.published
        assert track_sid in bob_session.downtracks and track_sid in carol_session.downtracks

        only_carol = SubscriptionPermission(
            all_participants=False, track_permissions=(TrackPermission("carol", all_tracks=True),)
        )
        publisher.set_subscription_permission(only_carol)
        assert track_sid not in bob_session.downtracks
        assert track_sid in carol_session.downtracks
        await wait_for(lambda: _access(bob) == [(track_sid, False)], timeout=5)
        assert _access(carol) == []

        dave = AiortcParticipant(room, "dave")
        dave_session = await room.join("dave", listener=dave)  # auto-subscribe: refused
        assert track_sid not in dave_session.downtracks
        assert _access(dave) == []  # told after join returned: its JoinResponse goes first
        await wait_for(lambda: _access(dave) == [(track_sid, False)], timeout=5)

        # by track: bob may have this one
        publisher.set_subscription_permission(
            SubscriptionPermission(
                all_participants=False,
                track_permissions=(TrackPermission("bob", track_sids=frozenset({track_sid})),),
            )
        )
        assert track_sid in bob_session.downtracks
        assert track_sid not in carol_session.downtracks
        await wait_for(lambda: _access(carol) == [(track_sid, False)], timeout=5)
        await wait_for(lambda: _access(bob) == [(track_sid, False), (track_sid, True)], timeout=5)

        publisher.set_subscription_permission(SubscriptionPermission())  # everyone again
        assert all(track_sid in s.downtracks for s in (bob_session, carol_session, dave_session))
        await wait_for(lambda: _access(dave) == [(track_sid, False), (track_sid, True)], timeout=5)
        await wait_for(lambda: _access(carol)[-1:] == [(track_sid, True)], timeout=5)
        sessions = (bob_session, carol_session, dave_session)
        assert not any(room.access.refused(s.sid, track_sid) for s in sessions)
    finally:
        await ada.close()


# ---- livekit-client in Chromium ------------------------------------------------------------

RECORD = """() => { const room = window.mediafedDemo.room;
  window.raw = []; window.data = []; window.texts = []; window.calls = [];
  room.engine.on('dataPacketReceived', p => window.raw.push(p.value.case));
  room.on('dataReceived', (payload, participant, kind, topic) => window.data.push(
    [participant ? participant.identity : '', new TextDecoder().decode(payload), topic || '']));
  room.registerTextStreamHandler('notes', async (reader, from) => {
    window.texts.push([from.identity, await reader.readAll(), reader.info.topic]); });
  room.registerRpcMethod('greet', async data => {
    window.calls.push([data.callerIdentity, data.payload]);
    if (data.payload === 'fail') throw new Error('no greeting today');
    return 'hello ' + data.callerIdentity + ', you said ' + data.payload; }); }"""
PERFORM_RPC = """async ([to, method, payload]) => {
  try { return ['ok', await window.mediafedDemo.room.localParticipant.performRpc(
          { destinationIdentity: to, method, payload })]; }
  catch (error) { return ['error', error.code, error.message]; } }"""
SEND_TEXT = """async ([text, to]) => { const info = await window.mediafedDemo.room.localParticipant
  .sendText(text, { topic: 'notes', destinationIdentities: to }); return info.id; }"""
SEND_DATA = """async ([text, to]) => window.mediafedDemo.room.localParticipant.publishData(
  new TextEncoder().encode(text), { reliable: true, topic: 'chat', destinationIdentities: to })"""
# Every packet this client sends claims to come from someone else.
FORGE_SENDER = """() => { const engine = window.mediafedDemo.room.engine;
  const send = engine.sendDataPacket.bind(engine);
  engine.sendDataPacket = (packet, kind) => { packet.participantIdentity = 'mallory';
    if (packet.value.case === 'user') packet.value.value.participantIdentity = 'mallory';
    return send(packet, kind); }; }"""


async def _join(
    browser: BrowserContext, node: LiveNode, identity: str, room: str, media: str = "mic=0&cam=0"
) -> Page:
    page = await browser.new_page()
    await page.goto(
        f"http://127.0.0.1:{node.http_port}/?token={node.token(identity, room)}&{media}"
    )
    await page.wait_for_selector("#controls:not([hidden])", timeout=TIMEOUT_MS)
    return page


async def _sees(page: Page, *identities: str) -> None:
    wanted = repr(list(identities))
    await page.wait_for_function(
        f"() => {wanted}.every(i => window.mediafedDemo.room.remoteParticipants.has(i))",
        timeout=TIMEOUT_MS,
    )


@pytest.mark.slow
async def test_rpc_and_text_streams_between_browsers(
    node: LiveNode, browser: BrowserContext
) -> None:
    pages = {name: await _join(browser, node, name, "rpc") for name in ("ada", "bob", "carol")}
    for page in pages.values():
        await page.evaluate(RECORD)
    ada, bob, carol = pages["ada"], pages["bob"], pages["carol"]
    await _sees(ada, "bob", "carol")
    await _sees(bob, "ada")
    await _sees(carol, "ada")

    # performRpc -> registerRpcMethod -> ack and response, both ways of ending
    answer = await ada.evaluate(PERFORM_RPC, ["bob", "greet", "hi"])
    assert answer == ["ok", "hello ada, you said hi"]
    assert await ada.evaluate(PERFORM_RPC, ["bob", "greet", "fail"]) == [
        "error",
        1500,
        "Application error in method handler",
    ]
    assert await ada.evaluate(PERFORM_RPC, ["bob", "nosuch", ""]) == [
        "error",
        1400,
        "Method not supported at destination",
    ]
    assert await bob.evaluate("() => window.calls") == [["ada", "hi"], ["ada", "fail"]]
    answer = await bob.evaluate(PERFORM_RPC, ["ada", "greet", "hey"])
    assert answer == ["ok", "hello bob, you said hey"]

    # a text of 40 KB goes in several chunks (15 000 bytes each) and arrives whole
    text = "".join(f"line {i:05d} of the notes — ✓\n" for i in range(1600))  # UTF-8 splits
    assert len(text.encode()) > 40_000
    await ada.evaluate(SEND_TEXT, [text, ["bob"]])
    await bob.wait_for_function("() => window.texts.length === 1", timeout=TIMEOUT_MS)
    assert await bob.evaluate("() => window.texts") == [["ada", text, "notes"]]
    chunks = await bob.evaluate("() => window.raw.filter(c => c === 'streamChunk').length")
    assert chunks >= 3

    # none of it reached carol: a message to everyone, sent last, is all she got
    await ada.evaluate(SEND_DATA, ["to everyone", []])
    await carol.wait_for_function("() => window.data.length === 1", timeout=TIMEOUT_MS)
    assert await carol.evaluate("() => window.raw") == ["user"]
    assert await carol.evaluate("() => window.data") == [["ada", "to everyone", "chat"]]
    assert await carol.evaluate("() => window.texts.length + window.calls.length") == 0
    await asyncio.gather(*(page.close() for page in pages.values()))


@pytest.mark.slow
async def test_a_sender_cannot_pass_for_someone_else(
    node: LiveNode, browser: BrowserContext
) -> None:
    ada = await _join(browser, node, "ada", "forge")
    bob = await _join(browser, node, "bob", "forge")
    for page in (ada, bob):
        await page.evaluate(RECORD)
    await _sees(ada, "bob")
    await _sees(bob, "ada")
    await ada.evaluate(FORGE_SENDER)
    await ada.evaluate(SEND_DATA, ["it was mallory", ["bob"]])
    await ada.evaluate(SEND_TEXT, ["mallory wrote this", ["bob"]])
    # the call and its answer find their way: bob answers ada, not mallory
    assert await ada.evaluate(PERFORM_RPC, ["bob", "greet", "guess who"]) == [
        "ok",
        "hello ada, you said guess who",
    ]
    await bob.wait_for_function(
        "() => window.data.length === 1 && window.texts.length === 1", timeout=TIMEOUT_MS
    )
    assert await bob.evaluate("() => window.data") == [["ada", "it was mallory", "chat"]]
    assert await bob.evaluate("() => window.texts") == [["ada", "mallory wrote this", "notes"]]
    assert await bob.evaluate("() => window.calls") == [["ada", "guess who"]]
    await asyncio.gather(ada.close(), bob.close())


WATCH_PERMISSION = """() => { window.permission = [];
  window.mediafedDemo.room.on('trackSubscriptionPermissionChanged',
    (publication, status, from) => window.permission.push([from.identity, status])); }"""
CAMERA_OF_ADA = """() => { const ada = window.mediafedDemo.room.remoteParticipants.get('ada');
  return ada && [...ada.trackPublications.values()].find(p => p.source === 'camera'); }"""
FRAMES_DECODED = (
    """async () => { const pub = ("""
    + CAMERA_OF_ADA
    + """)(); if (!pub || !pub.track || !pub.track.receiver) return -1;
  const stats = await pub.track.receiver.getStats(); let frames = 0;
  stats.forEach(s => { if (s.type === 'inbound-rtp') frames = s.framesDecoded || 0; });
  return frames; }"""
)


async def _decodes_frames(page: Page, frames: int = 15) -> None:
    """Ada's camera is subscribed and ``frames`` more frames are decoded from now on."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT_MS / 1000
    start = -1
    while True:
        count = await page.evaluate(FRAMES_DECODED)
        if start < 0 <= count:
            start = count
        if start >= 0 and count >= start + frames:
            return
        if loop.time() > deadline:
            raise AssertionError(f"ada's camera did not play: {count} frames")
        await asyncio.sleep(0.1)


@pytest.mark.slow
async def test_set_track_subscription_permissions(node: LiveNode, browser: BrowserContext) -> None:
    """livekit-client's ``setTrackSubscriptionPermissions``: bob, no longer allowed,
    loses ada's camera and is told; allowed again, he sees it again; carol keeps it."""
    ada = await _join(browser, node, "ada", "private", "mic=0&cam=1")
    bob = await _join(browser, node, "bob", "private")
    carol = await _join(browser, node, "carol", "private")
    for page in (bob, carol):
        await page.evaluate(WATCH_PERMISSION)
        await _decodes_frames(page)

    await ada.evaluate(
        """() => window.mediafedDemo.room.localParticipant.setTrackSubscriptionPermissions(
             false, [{ participantIdentity: 'carol', allowAll: true }])"""
    )
    await bob.wait_for_function(
        f"""() => {{ const pub = ({CAMERA_OF_ADA})();
          return pub.permissionStatus === 'not_allowed' && !pub.isSubscribed; }}""",
        timeout=TIMEOUT_MS,
    )
    assert await bob.evaluate("() => window.permission") == [["ada", "not_allowed"]]
    await _decodes_frames(carol)
    assert await carol.evaluate("() => window.permission") == []

    await ada.evaluate(
        "() => window.mediafedDemo.room.localParticipant.setTrackSubscriptionPermissions(true)"
    )
    await bob.wait_for_function(
        f"() => ({CAMERA_OF_ADA})().permissionStatus === 'allowed'", timeout=TIMEOUT_MS
    )
    await _decodes_frames(bob)
    assert await bob.evaluate("() => window.permission") == [
        ["ada", "not_allowed"],
        ["ada", "allowed"],
    ]
    await asyncio.gather(*(page.close() for page in (ada, bob, carol)))
