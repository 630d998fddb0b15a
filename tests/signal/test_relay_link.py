"""Relay links between two mediafed nodes: a remote room pulled into a local one.

The remote node (127.0.0.3) hosts a publisher; the local node (127.0.0.2) links
to the remote room over the LiveKit signal protocol, as any LiveKit client
would, and its own participants watch the remote publisher. Both nodes are
ICE-lite, so the link's side sends the checks (``transport/ice.py``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest
from livekit.protocol import models

from loadtest.livekit_server import LiveKitServerTarget
from loadtest.sdk_client import PUBLISHER, ScriptClient
from loadtest.target import RoomPlan
from mediafed import server
from mediafed.media import Room, Session, events
from mediafed.media.track import PublishedTrack
from mediafed.signal.livekit.link import LINK_ATTRIBUTE, LinkTarget, RelayLink
from mediafed.signal.livekit.tokens import VideoGrant, mint_token
from tests.support.aiortc_client import (
    AiortcParticipant,
    PatternVideoTrack,
    ToneAudioTrack,
    wait_for,
)
from tests.support.livekit_node import API_KEY, API_SECRET, LiveNode, live_node
from tests.support.netns_hosts import TestHost

pytestmark = pytest.mark.slow

RED = (220, 30, 30)
BLUE = (30, 30, 220)


def _close_to(colour: tuple[int, int, int], want: tuple[int, int, int]) -> bool:
    return all(abs(a - b) < 40 for a, b in zip(colour, want, strict=True))


def _link_session(remote_room: Room, identity: str) -> Session:
    session = remote_room.sessions.get(identity)
    assert session is not None, f"{identity} is not in the remote room"
    return session


def _decoding(participant: AiortcParticipant, colour: tuple[int, int, int]) -> bool:
    return any(v.frames >= 10 and _close_to(v.colour, colour) for v in participant.video.values())


@asynccontextmanager
async def _two_nodes() -> AsyncIterator[tuple[LiveNode, LiveNode]]:
    async with live_node("127.0.0.3") as remote, live_node("127.0.0.2") as local:
        yield remote, local


def _link(remote: LiveNode, local: LiveNode, identity: str = "relay-local") -> RelayLink:
    token = remote.token(identity, room="call", hidden=True)
    return RelayLink(local.rooms, LinkTarget(remote.ws_url, token, "call"))


def _data_from(participant: AiortcParticipant, identity: str) -> list[events.PacketRelayed]:
    return [
        e
        for e in participant.events
        if isinstance(e, events.PacketRelayed) and e.sender.identity == identity
    ]


def _mirrored_tracks(session: Session) -> list[PublishedTrack]:
    return list(session.published.values())


async def test_a_remote_publisher_reaches_local_subscribers_over_one_link() -> None:
    async with _two_nodes() as (remote, local):
        remote_room = remote.rooms.get_or_create("call")
        alice = AiortcParticipant(remote_room, "alice")
        await alice.join()
        await alice.publish(PatternVideoTrack(RED), ToneAudioTrack())

        link = _link(remote, local)
        link.start()
        local_room = local.rooms.get_or_create("call")
        watchers = [AiortcParticipant(local_room, name) for name in ("bob", "carol")]
        try:
            for watcher in watchers:
                await watcher.join()
            await wait_for(lambda: link.status.state == "connected", timeout=15)
            await wait_for(lambda: all(_decoding(w, RED) for w in watchers), timeout=30)
            await wait_for(
                lambda: all(any(a.frames > 20 for a in w.audio.values()) for w in watchers),
                timeout=15,
            )

            # alice shows up locally under her own identity, marked as mirrored
            mirror = local_room.sessions["alice"]
            assert mirror.info().attributes[LINK_ATTRIBUTE] == remote.ws_url
            assert {t.info.kind.value for t in _mirrored_tracks(mirror)} == {"audio", "video"}
            assert link.status.remote_participants == ["alice"]
            # the link's own session carries the media, hidden from the room's clients
            assert {p.identity for p in local_room.participants()} >= {"alice", "bob", "carol"}
            carriers = [
                p for p in local_room.participants() if p.identity.startswith("relay-link:")
            ]
            assert len(carriers) == 1 and carriers[0].hidden

            # one copy of each track crosses the link, whatever the local audience
            on_remote = _link_session(remote_room, "relay-local")
            assert len(on_remote.subscribing.downtracks) == 2
            # what the remote sent the link arrived on the link's own port
            sent = sum(d.packets_sent for d in on_remote.subscribing.downtracks.values())
            assert local.worker.link_datagrams_in() >= sent // 2 > 50

            # the local subscribers' frames come in order, with no long hole
            for watcher in watchers:
                for video in watcher.video.values():
                    counters = video.counters[-30:]
                    assert counters == sorted(counters), counters

            # her tone makes her an active speaker here too (the audio level rides along)
            mirror_sid = local_room.sessions["alice"].sid
            await wait_for(
                lambda: any(
                    isinstance(e, events.SpeakersChanged)
                    and any(sid == mirror_sid and active for sid, _, active in e.speakers)
                    for e in watchers[0].events
                ),
                timeout=10,
            )

            # what alice broadcasts there (chat, data streams) reaches them from her mirror
            assert alice.session is not None
            alice.session.send_data(b"hello from the remote room", topic="lk-chat-topic")
            await wait_for(lambda: all(_data_from(w, "alice") for w in watchers), timeout=10)
            packet = models.DataPacket()
            packet.ParseFromString(_data_from(watchers[0], "alice")[0].packet)
            assert packet.user.payload == b"hello from the remote room"
            assert packet.user.topic == "lk-chat-topic"
            assert packet.participant_identity == "alice" == packet.user.participant_identity
            assert packet.participant_sid == local_room.sessions["alice"].sid

            # nobody here watches any more: the link asks the remote to stop the video
            (video_down,) = [
                d
                for d in on_remote.subscribing.downtracks.values()
                if d.track.kind.value == "video"
            ]
            assert not video_down.disabled
            for watcher in watchers:
                await watcher.close()
            await wait_for(lambda: video_down.disabled, timeout=10)
        finally:
            for watcher in watchers:
                await watcher.close()
            await link.close()
            await alice.close()


async def test_remote_leaves_and_unpublishes_are_mirrored() -> None:
    async with _two_nodes() as (remote, local):
        remote_room = remote.rooms.get_or_create("call")
        alice = AiortcParticipant(remote_room, "alice")
        dave = AiortcParticipant(remote_room, "dave")
        await alice.join()
        await alice.publish(PatternVideoTrack(RED), ToneAudioTrack())
        await dave.join()
        await dave.publish(PatternVideoTrack(BLUE))

        link = _link(remote, local)
        link.start()
        local_room = local.rooms.get_or_create("call")
        bob = AiortcParticipant(local_room, "bob")
        try:
            await bob.join()
            await wait_for(lambda: _decoding(bob, RED) and _decoding(bob, BLUE), timeout=30)
            assert link.status.remote_participants == ["alice", "dave"]
            assert link.status.tracks == 3
            ports = list(local.worker.link_sockets)
            assert len(ports) == 1 and ports[0].port != local.worker.udp_port

            # dave leaves there: his mirror leaves here, alice stays
            await dave.close()
            await wait_for(lambda: "dave" not in local_room.sessions, timeout=10)
            assert "alice" in local_room.sessions
            assert link.status.tracks == 2

            # alice mutes her video there: muted here too
            assert alice.session is not None
            video_sid = next(
                sid for sid, t in alice.session.published.items() if t.info.kind.value == "video"
            )
            alice.session.mute(video_sid, True)
            mirror = local_room.sessions["alice"]
            await wait_for(
                lambda: any(
                    t.muted for t in mirror.published.values() if t.info.kind.value == "video"
                ),
                timeout=10,
            )
        finally:
            await bob.close()
            await link.close()
            await alice.close()
        # a closed link leaves nothing behind: no mirror, no carrier, no port
        assert ports[0].sock is None
        assert "alice" not in local_room.sessions
        assert not local_room.sessions or all(
            not s.identity.startswith("relay-link:") for s in local_room.sessions.values()
        )


async def test_a_link_comes_back_after_the_remote_drops_it() -> None:
    async with _two_nodes() as (remote, local):
        remote_room = remote.rooms.get_or_create("call")
        alice = AiortcParticipant(remote_room, "alice")
        await alice.join()
        await alice.publish(PatternVideoTrack(RED))

        link = _link(remote, local)
        link.start()
        local_room = local.rooms.get_or_create("call")
        bob = AiortcParticipant(local_room, "bob")
        try:
            await bob.join()
            await wait_for(lambda: _decoding(bob, RED), timeout=30)
            assert link.status.connects == 1

            # the remote operator removes the link's participant
            assert await remote_room.remove_participant("relay-local", "kicked by a test")
            await wait_for(lambda: link.status.state != "connected", timeout=10)
            await wait_for(lambda: "alice" not in local_room.sessions, timeout=10)
            await wait_for(lambda: link.status.connects == 2, timeout=20)
            await wait_for(lambda: "alice" in local_room.sessions, timeout=10)
            before = sum(v.frames for v in bob.video.values())
            await wait_for(lambda: sum(v.frames for v in bob.video.values()) > before + 30, 30)
            assert _decoding(bob, RED)
        finally:
            await bob.close()
            await link.close()
            await alice.close()


async def test_two_relays_linked_both_ways_pull_each_track_once() -> None:
    """Each relay links to the other's room: local publishers cross once each way,
    and a mirror is never pulled back (no loop, no echo of one's own tracks)."""
    async with _two_nodes() as (remote, local):
        remote_room = remote.rooms.get_or_create("call")
        local_room = local.rooms.get_or_create("call")
        alice = AiortcParticipant(remote_room, "alice")
        bob = AiortcParticipant(local_room, "bob")
        await alice.join()
        await alice.publish(PatternVideoTrack(RED))
        await bob.join()
        await bob.publish(PatternVideoTrack(BLUE))

        inbound = _link(remote, local, "relay-local")
        outbound_token = local.token("relay-remote", room="call", hidden=True)
        outbound = RelayLink(remote.rooms, LinkTarget(local.ws_url, outbound_token, "call"))
        inbound.start()
        outbound.start()
        try:
            await wait_for(lambda: _decoding(bob, RED) and _decoding(alice, BLUE), timeout=40)
            await asyncio.sleep(2)  # time for a loop to show, if there were one
            assert inbound.status.remote_participants == ["alice"]
            assert outbound.status.remote_participants == ["bob"]
            # each side's link participant takes exactly the one video of the other side
            assert len(_link_session(remote_room, "relay-local").subscribing.downtracks) == 1
            assert len(_link_session(local_room, "relay-remote").subscribing.downtracks) == 1
            # nobody watches themselves
            assert not any(_close_to(v.colour, RED) for v in alice.video.values())
            assert not any(_close_to(v.colour, BLUE) for v in bob.video.values())
        finally:
            await inbound.close()
            await outbound.close()
            await alice.close()
            await bob.close()


async def test_a_livekit_server_room_pulled_into_mediafed() -> None:
    """The remote is livekit-server itself (full ICE, controlling): a libwebrtc
    publisher's simulcast camera and microphone there reach an aiortc subscriber
    of mediafed, at the top layer, over one link."""
    with TestHost(4) as host:
        livekit = LiveKitServerTarget(host=host.server_ip)
        try:
            await livekit.start(RoomPlan("call", 1))
            endpoint = livekit.endpoint()
            publisher_token = mint_token(
                endpoint.api_key,
                endpoint.api_secret,
                identity="pat",
                name="Pat",
                video=VideoGrant(room_join=True, room="call"),
            )
            publisher = await ScriptClient.start(
                host, PUBLISHER, livekit.url, publisher_token, "40"
            )
            link_token = mint_token(
                endpoint.api_key,
                endpoint.api_secret,
                identity="relay-mediafed",
                video=VideoGrant(room_join=True, room="call", hidden=True),
            )
            async with live_node(host.server_ip) as local:
                link = RelayLink(local.rooms, LinkTarget(livekit.url, link_token, "call"))
                link.start()
                local_room = local.rooms.get_or_create("call")
                viewer = AiortcParticipant(local_room, "vic")
                try:
                    await viewer.join()
                    await wait_for(lambda: link.status.remote_participants == ["pat"], 30)
                    await wait_for(
                        lambda: any(v.frames >= 40 for v in viewer.video.values()), timeout=40
                    )
                    await wait_for(
                        lambda: any(a.frames > 50 for a in viewer.audio.values()), timeout=20
                    )
                    mirror = local_room.sessions["pat"]
                    assert mirror.info().name == "Pat"
                    assert mirror.info().attributes[LINK_ATTRIBUTE] == livekit.url
                    # the link asks for the top layer; the local subscriber gets 1280 wide
                    await wait_for(
                        lambda: any(v.width == 1280 for v in viewer.video.values()), timeout=20
                    )
                    assert max(a.peak_rms for a in viewer.audio.values()) > 1000
                    # the viewer wants the lowest layer: the link asks livekit-server for it
                    assert viewer.session is not None
                    (video,) = [
                        t for t in mirror.published.values() if t.info.kind.value == "video"
                    ]
                    viewer.session.update_track_settings(video.sid, quality=0)
                    await wait_for(
                        lambda: any(v.width == 320 for v in viewer.video.values()), timeout=20
                    )
                finally:
                    await viewer.close()
                    await link.close()
                    await publisher.stop()
        finally:
            await livekit.stop()


async def test_a_configured_link_starts_with_the_node_and_joins_hidden_and_subscribe_only() -> None:
    """``[[relay.links]]`` with the remote's key pair: the node signs its own token."""
    async with live_node("127.0.0.3") as remote:
        remote_room = remote.rooms.get_or_create("standup")
        alice = AiortcParticipant(remote_room, "alice")
        await alice.join()
        await alice.publish(PatternVideoTrack(RED))
        entry = {
            "room": "call",
            "remote_room": "standup",
            "url": remote.ws_url,
            "api_key": API_KEY,
            "api_secret": API_SECRET,
        }
        settings = {"MEDIAFED_RELAY_LINKS": json.dumps([entry])}
        async with live_node(
            "127.0.0.2", settings=settings, extensions=[server.relay_links_extension]
        ) as local:
            bob = AiortcParticipant(local.rooms.get_or_create("call"), "bob")
            try:
                await bob.join()
                await wait_for(lambda: _decoding(bob, RED), timeout=30)
                (link,) = local.app[server.RELAY_LINKS_KEY]
                assert link.status.state == "connected"
                # the operator sees it on /healthz
                async with (
                    aiohttp.ClientSession() as http,
                    http.get(f"{local.http_url}/healthz") as resp,
                ):
                    health = await resp.json()
                [shown] = health["relay_links"]
                assert (shown["room"], shown["state"]) == ("call", "connected")
                assert shown["remote_participants"] == ["alice"] and shown["tracks"] == 1
                joined = remote_room.sessions["mediafed-relay"]
                assert joined.permission.hidden and not joined.permission.can_publish
                assert "mediafed-relay" not in {
                    p.identity for p in remote_room.participants() if not p.hidden
                }
            finally:
                await bob.close()
                await alice.close()
        # the node stopped: so did its link
        await wait_for(lambda: "mediafed-relay" not in remote_room.sessions, timeout=10)
