"""Two organisations federate a call: two Synapses, two mediafeds, one relay link.

Homeserver A and homeserver B federate (TLS on loopback, REFERENCES.md "Synapse
on loopback"); each runs its own mediafed as its MatrixRTC focus and
appservice. Bob, of B, is in a Matrix room of A's user and in its call the way
Element Call puts him there: a membership event naming relay B as his focus,
a token from relay B's ``/sfu/get``, and his camera published on relay B.
Carol is a bridged participant of relay A (a Rocket.Chat join-link user), in
the same call's room there. Relay A sees Bob's membership arrive over
federation, asks Synapse A for the bridge bot's OpenID token, gets a
subscribe-only token from relay B's focus (which checks that OpenID token with
Synapse A), and pulls Bob's tracks in once, for however many watch on A.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from mediafed import server
from mediafed.config import Config
from mediafed.matrix import voip
from mediafed.matrix.appservice import APPSERVICE_KEY
from mediafed.matrix.focus import FOCUS_KEY, room_call_alias
from mediafed.matrix.frontend import RTC_LINKS_KEY
from mediafed.matrix.membership import CALL_MEMBER
from mediafed.matrix.rtc_ghosts import RTC_NOTIFICATION
from mediafed.matrix.rtc_links import mirror_identity
from mediafed.media import RoomManager, Session, TrackKind
from mediafed.signal.livekit.link import LINK_ATTRIBUTE
from mediafed.signal.livekit.tokens import verify_token
from mediafed.worker import Worker
from tests.matrix.test_matrix_calls_synapse import MatrixClient
from tests.matrix.test_matrix_rtc_ghosts_synapse import _join_link
from tests.matrix.test_matrix_synapse import Waiter
from tests.rocketchat.test_call_api import KEY as CALL_API_KEY, SECRET as CALL_API_SECRET
from tests.support.aiortc_client import (
    AiortcParticipant,
    PatternVideoTrack,
    ToneAudioTrack,
    wait_for,
)
from tests.support.matrix_js import evaluate, matrix_js_client, until
from tests.support.synapse import MatrixUser, SynapseServer, start_synapse

pytestmark = pytest.mark.slow

KEY, SECRET = "fed-key", "a-secret-long-enough-for-hs256-signing!!"
BLUE = (30, 30, 220)


@dataclass
class Relay:
    app: web.Application
    rooms: RoomManager
    url: str


@asynccontextmanager
async def _relay(
    synapse: SynapseServer,
    other: SynapseServer,
    directory: Path,
    media_ip: str,
    *,
    admit_other: bool = True,
) -> AsyncIterator[Relay]:
    """One organisation's mediafed: focus and appservice of ``synapse``, whose
    users and ``other``'s may get tokens (the federation step of the README)."""
    assert synapse.appservice is not None
    registration = directory / "registration.yaml"
    directory.mkdir(parents=True, exist_ok=True)
    synapse.appservice.write(registration)
    port = synapse.appservice_port
    url = f"http://127.0.0.1:{port}"
    config = Config.model_validate(
        {
            # the second key signs the call API's requests (as the Rocket.Chat App's)
            "keys": {KEY: SECRET, CALL_API_KEY: CALL_API_SECRET},
            "server": {
                "bind": media_ip,
                "http_port": port,
                "data_dir": str(directory / "data"),
                "public_url": url,
            },
            "rtc": {"udp_port": 0, "tcp_port": 0, "node_ip": [media_ip]},
            "matrix": {
                "server_name": synapse.server_name,
                "homeserver_url": synapse.base_url,
                "registration": str(registration),
                "allowed_homeservers": [synapse.server_name]
                + ([other.server_name] if admit_other else []),
                # OpenID tokens are checked on each Synapse's plain-HTTP listener
                "federation_url_overrides": {
                    synapse.server_name: synapse.base_url,
                    other.server_name: other.base_url,
                },
            },
        }
    )
    worker = Worker.from_config(config)
    app = await server.build_app(config, server.front_ends(worker.rooms), worker=worker)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()
    try:
        yield Relay(app, worker.rooms, url)
    finally:
        await runner.cleanup()


class TwoRelays:
    """Relay A and relay B (which the tests stop and start again), and a client."""

    def __init__(self, hs_a: SynapseServer, hs_b: SynapseServer, directory: Path) -> None:
        self.hs_a, self.hs_b, self.directory = hs_a, hs_b, directory
        self._a = contextlib.AsyncExitStack()
        self._b = contextlib.AsyncExitStack()
        self.http = aiohttp.ClientSession()

    async def start(self) -> TwoRelays:
        self.a = await self._a.enter_async_context(
            _relay(self.hs_a, self.hs_b, self.directory / "relay-a", "127.0.0.2")
        )
        await self.start_b()
        return self

    async def start_b(self) -> Relay:
        self.b = await self._b.enter_async_context(
            _relay(self.hs_b, self.hs_a, self.directory / "relay-b", "127.0.0.3")
        )
        return self.b

    async def stop_b(self) -> None:
        await self._b.aclose()

    async def close(self) -> None:
        await self._b.aclose()
        await self._a.aclose()
        await self.http.close()


@asynccontextmanager
async def _two_relays(
    homeservers: tuple[SynapseServer, SynapseServer], directory: Path
) -> AsyncIterator[TwoRelays]:
    relays = TwoRelays(*homeservers, directory)
    try:
        yield await relays.start()
    finally:
        await relays.close()


@pytest.fixture(scope="module")
def homeservers(tmp_path_factory: pytest.TempPathFactory) -> Any:
    a = start_synapse(tmp_path_factory.mktemp("hs-a"), federating=True)
    try:
        b = start_synapse(tmp_path_factory.mktemp("hs-b"), federating=True)
    except BaseException:
        a.stop()
        raise
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()


def _membership(focus_url: str, room_id: str, device_id: str) -> dict[str, Any]:
    """Element Call's per-device membership (MSC3401 session form)."""
    return {
        "application": "m.call",
        "call_id": "",
        "scope": "m.room",
        "device_id": device_id,
        "expires": 3_600_000,
        "created_ts": int(time.time() * 1000),
        "focus_active": {"type": "livekit", "focus_selection": "oldest_membership"},
        "foci_preferred": [
            {"type": "livekit", "livekit_service_url": focus_url, "livekit_alias": room_id}
        ],
    }


async def _announce_member(
    synapse: SynapseServer, user: MatrixUser, room_id: str, relay: Relay
) -> None:
    """``user``'s device joins the room's call, naming ``relay`` as its focus."""
    await asyncio.to_thread(
        synapse.send_state,
        user,
        room_id,
        CALL_MEMBER,
        f"_{user.user_id}_{user.device_id}_m.call",
        _membership(relay.url, room_id, user.device_id),
    )


async def _shared_room(
    hs_a: SynapseServer, alice: MatrixUser, bob: MatrixUser, hs_b: SynapseServer, name: str
) -> str:
    """Alice's room (on A) with A's bridge bot and Bob (of B, over federation) in it."""
    assert hs_a.appservice is not None
    room_id = await asyncio.to_thread(
        hs_a.create_room,
        alice,
        name=name,
        # as Element Call sets up a room for calls: every member may join the call
        power_level_content_override={"events": {CALL_MEMBER: 0}},
    )
    await asyncio.to_thread(hs_a.invite, alice, room_id, hs_a.appservice.bot_user_id)
    await asyncio.to_thread(hs_a.invite, alice, room_id, bob.user_id)
    await asyncio.to_thread(hs_b.join, bob, room_id, hs_a.server_name)
    return room_id


async def _sfu_get(
    http: aiohttp.ClientSession, relay: Relay, room_id: str, openid: dict[str, Any], device: str
) -> dict[str, Any]:
    body = {"room": room_id, "openid_token": openid, "device_id": device}
    async with http.post(f"{relay.url}/sfu/get", json=body) as resp:
        answer: dict[str, Any] = await resp.json()
        assert resp.status == 200, answer
        return answer


async def test_a_bridged_user_sees_a_remote_homeservers_member_through_one_link(
    homeservers: tuple[SynapseServer, SynapseServer], tmp_path: Path
) -> None:
    hs_a, hs_b = homeservers
    alice = await asyncio.to_thread(hs_a.register_user, "alice")
    bob = await asyncio.to_thread(hs_b.register_user, "bob")
    assert hs_a.appservice is not None
    bot_a = hs_a.appservice.bot_user_id
    async with _two_relays(homeservers, tmp_path) as relays:
        relay_a, relay_b, http = relays.a, relays.b, relays.http
        room_id = await _shared_room(hs_a, alice, bob, hs_b, "across")
        alias = room_call_alias(room_id)

        async def bob_joins(relay_b: Relay) -> tuple[AiortcParticipant, str]:
            """As Element Call does: a token from his own relay, his camera published there."""
            openid = await asyncio.to_thread(hs_b.openid_token, bob)
            grant = await _sfu_get(http, relay_b, room_id, openid, bob.device_id)
            claims = verify_token(grant["jwt"], {KEY: SECRET})
            assert claims.video.can_publish  # a local user of B publishes on B
            assert relay_b.app[FOCUS_KEY].is_matrixrtc(claims.identity)
            client = AiortcParticipant(relay_b.rooms.get_or_create(alias), claims.identity)
            await client.join()
            await client.publish(PatternVideoTrack(BLUE), ToneAudioTrack())
            return client, claims.identity

        bob_client, bob_identity = await bob_joins(relay_b)
        await _announce_member(hs_b, bob, room_id, relay_b)

        # Carol, a bridged user of A, and two more watchers: one link, one copy
        room_a = relay_a.rooms.get_or_create(alias)
        watchers = [AiortcParticipant(room_a, f"rc-{name}") for name in ("carol", "dan", "eve")]
        links = relay_a.app[RTC_LINKS_KEY]

        def blue_frames() -> list[int]:
            return [sum(v.frames for v in w.video.values() if v.colour[2] > 150) for w in watchers]

        def linked_on(relay_b: Relay) -> list[Session]:
            room = relay_b.rooms.get(alias)
            sessions = [] if room is None else list(room.sessions.values())
            return [s for s in sessions if s.identity.startswith(bot_a + ":")]

        try:
            for watcher in watchers:
                await watcher.join()
            await wait_for(lambda: bool(links.links), timeout=30)
            (link,) = links.links.values()
            await wait_for(lambda: link.status.state == "connected", timeout=30)
            await wait_for(lambda: min(blue_frames()) >= 10, timeout=30)
            # his copy here is not under his own identity, which his client uses
            # when it subscribes here, as Element Call does (multi-SFU)
            bob_here = mirror_identity(bob_identity, relay_b.url)
            mirror = room_a.sessions[bob_here]
            assert mirror.info().attributes[LINK_ATTRIBUTE] == link.target.url
            assert bob_identity not in room_a.sessions

            # relay A's operator sees the link on /healthz
            async with http.get(f"{relay_a.url}/healthz") as resp:
                [shown] = (await resp.json())["matrixrtc_links"]
            assert (shown["room"], shown["state"]) == (alias, "connected")
            assert shown["remote_participants"] == [bob_identity]

            # relay B sees one subscribe-only participant of A's bot, taking one copy
            (linked,) = linked_on(relay_b)
            assert not linked.permission.can_publish
            assert len(linked.subscribing.downtracks) == 2

            # relay B restarts; Bob's client joins it again; the link comes back by
            # itself and A's participants never leave
            await bob_client.close()
            await relays.stop_b()
            await wait_for(lambda: bob_here not in room_a.sessions, timeout=15)
            relay_b = await relays.start_b()
            bob_client, _ = await bob_joins(relay_b)
            before = blue_frames()
            await wait_for(lambda: link.status.connects == 2, timeout=40)
            await wait_for(
                lambda: all(n > b + 20 for n, b in zip(blue_frames(), before, strict=True)),
                timeout=30,
            )
            assert all(w.session is not None and not w.session.closed for w in watchers)
            assert len(linked_on(relay_b)) == 1

            # the bridged users leave: the link is closed, the mirror goes
            for watcher in watchers:
                await watcher.close()
            await wait_for(lambda: not links.links, timeout=10)
            await wait_for(lambda: bob_here not in room_a.sessions, timeout=10)
            await wait_for(lambda: not linked_on(relay_b), timeout=15)
        finally:
            for watcher in watchers:
                await watcher.close()
            await bob_client.close()


async def test_a_focus_that_refuses_the_link_is_reported_and_asked_again(
    homeservers: tuple[SynapseServer, SynapseServer], tmp_path: Path
) -> None:
    """Relay B's operator has not admitted homeserver A: relay A's link says why it
    has no connection (the focus's own words) and keeps asking, with a growing pause."""
    hs_a, hs_b = homeservers
    alice = await asyncio.to_thread(hs_a.register_user, "alice2")
    bob = await asyncio.to_thread(hs_b.register_user, "bob2")
    assert hs_a.appservice is not None
    async with (
        _relay(hs_a, hs_b, tmp_path / "relay-a", "127.0.0.2") as relay_a,
        _relay(hs_b, hs_a, tmp_path / "relay-b", "127.0.0.3", admit_other=False) as relay_b,
    ):
        room_id = await _shared_room(hs_a, alice, bob, hs_b, "closed border")
        alias = room_call_alias(room_id)
        bob_client = AiortcParticipant(relay_b.rooms.get_or_create(alias), "bob-device")
        carol = AiortcParticipant(relay_a.rooms.get_or_create(alias), "rc-carol")
        try:
            await bob_client.join()
            await bob_client.publish(PatternVideoTrack(BLUE))
            await carol.join()
            await _announce_member(hs_b, bob, room_id, relay_b)
            links = relay_a.app[RTC_LINKS_KEY]
            await wait_for(lambda: bool(links.links), timeout=30)
            (link,) = links.links.values()
            await wait_for(lambda: "refused" in link.status.last_error, timeout=15)
            assert "M_FORBIDDEN" in link.status.last_error, link.status.last_error
            assert hs_a.server_name in link.status.last_error
            assert link.status.state in ("retrying", "connecting")
            assert link.status.connects == 0
            assert not any(v.frames for v in carol.video.values())
        finally:
            await carol.close()
            await bob_client.close()


async def test_a_rocketchat_call_rings_a_user_of_another_homeserver(
    homeservers: tuple[SynapseServer, SynapseServer], tmp_path: Path
) -> None:
    """Bob, of homeserver B, shares a direct room with A's bridge; a Rocket.Chat user
    of A starts a call there: over federation Bob's homeserver shows him the ghost's
    MatrixRTC membership, the ring (MSC4075) and a classic invite from the ghost."""
    hs_a, hs_b = homeservers
    bob = await asyncio.to_thread(hs_b.register_user, "bob3")
    assert hs_a.appservice is not None
    bot_a = hs_a.appservice.bot_user_id
    async with _relay(hs_a, hs_b, tmp_path / "relay-a", "127.0.0.2") as relay_a:
        waiter = Waiter()
        relay_a.app[APPSERVICE_KEY].add_event_listener(waiter)
        room_id = await asyncio.to_thread(
            hs_b.create_room,
            bob,
            name="bob and rocket.chat",
            power_level_content_override={"events": {CALL_MEMBER: 0}},
        )
        await asyncio.to_thread(hs_b.invite, bob, room_id, bot_a)
        await waiter.until(
            lambda: any(
                e.get("type") == "m.room.member"
                and e.get("state_key") == bot_a
                and e.get("content", {}).get("membership") == "join"
                for e in waiter.events
            ),
            "the bridge bot's join over federation",
        )
        client = MatrixClient(hs_b, bob, room_id)
        await client.start()
        alice: AiortcParticipant | None = None
        try:
            async with aiohttp.ClientSession() as http:
                link = await _join_link(http, relay_a.url, room_id, "alice")
            alice = AiortcParticipant(relay_a.rooms.get_or_create(link["room"]), link["identity"])
            await alice.join()
            await alice.publish(PatternVideoTrack(BLUE))
            ghost = f"@rc_alice:{hs_a.server_name}"

            def seen(event_type: str) -> list[dict[str, Any]]:
                return [
                    e for e in client.events if e["type"] == event_type and e["sender"] == ghost
                ]

            await client.until(lambda: bool(seen(CALL_MEMBER)), "the ghost's membership")
            [membership] = seen(CALL_MEMBER)
            focus = membership["content"]["foci_preferred"][0]
            assert focus["livekit_service_url"] == relay_a.url
            await client.until(lambda: bool(seen(RTC_NOTIFICATION)), "the ring")
            [ring] = seen(RTC_NOTIFICATION)
            assert ring["content"]["notification_type"] == "ring"
            await client.until(lambda: bool(seen(voip.INVITE)), "the classic invite")
            [invite] = seen(voip.INVITE)
            assert invite["content"]["invitee"] == bob.user_id
            assert invite["content"]["offer"]["type"] == "offer"
        finally:
            if alice is not None:
                await alice.close()
            await client.close()


FORWARDED = "mediafed_forwarded_packets_total"


async def _metric(http: aiohttp.ClientSession, relay: Relay, name: str) -> float:
    async with http.get(f"{relay.url}/metrics") as resp:
        text = await resp.text()
    [value] = [line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")]
    return float(value)


async def test_an_element_call_like_client_of_b_and_rocketchat_users_of_a_share_a_call(
    homeservers: tuple[SynapseServer, SynapseServer], tmp_path: Path
) -> None:
    """Bob's client is matrix-js-sdk's MatrixRTC session with livekit-client in
    Chromium, doing what Element Call does: camera published on his own relay B,
    his membership naming it, and a subscribe-only connection to relay A once a
    member there (Carol's ghost) names A. Five Rocket.Chat users on A watch Bob
    through one link; relay B restarts and nobody on A leaves."""
    hs_a, hs_b = homeservers
    alice = await asyncio.to_thread(hs_a.register_user, "alice4")
    bob = await asyncio.to_thread(hs_b.register_user, "bob4")
    assert hs_a.appservice is not None
    bot_a = hs_a.appservice.bot_user_id
    bob_identity = f"{bob.user_id}:{bob.device_id}"
    async with _two_relays(homeservers, tmp_path) as relays:
        relay_a, relay_b, http = relays.a, relays.b, relays.http
        room_id = await _shared_room(hs_a, alice, bob, hs_b, "element call meets rocket.chat")
        alias = room_call_alias(room_id)
        watchers: list[AiortcParticipant] = []
        async with matrix_js_client(hs_b.base_url, bob, tmp_path / "chromium") as page:

            async def seen() -> dict[str, Any]:
                answer: dict[str, Any] = await evaluate(page, "mf.rtc.seen()")
                return answer

            async def publishing_on_b() -> bool:
                on_b = (await seen()).get(relay_b.url, {})
                return on_b.get("state") == "connected" and on_b.get("published", 0) >= 2

            await evaluate(page, "([r, f]) => mf.rtc.join(r, f)", [room_id, relay_b.url])
            await until(page, "Bob publishing on relay B", publishing_on_b)
            assert (await seen())[relay_b.url]["identity"] == bob_identity

            # Carol joins from Rocket.Chat (her ghost becomes a member naming relay
            # A), and four more Rocket.Chat users of A watch
            link_grant = await _join_link(http, relay_a.url, room_id, "carol")
            assert link_grant["room"] == alias
            room_a = relay_a.rooms.get_or_create(alias)
            # (frames counted, not looked at: ten decoders share this busy process)
            carol = AiortcParticipant(room_a, link_grant["identity"], pixels=False)
            watchers = [carol] + [
                AiortcParticipant(room_a, f"rc-{name}", pixels=False)
                for name in ("dan", "eve", "fay", "gus")
            ]
            try:
                for watcher in watchers:
                    await watcher.join()
                await carol.publish(PatternVideoTrack(BLUE), ToneAudioTrack())

                bob_here = mirror_identity(bob_identity, relay_b.url)

                def bob_frames() -> list[int]:
                    """Per watcher, the frames of Bob's camera (his copy's track)."""
                    mirror = room_a.sessions.get(bob_here)
                    sids = set() if mirror is None else set(mirror.published)
                    return [
                        sum(v.frames for k, v in w.video.items() if k in sids) for w in watchers
                    ]

                def bob_on_a() -> tuple[int, int]:
                    """Packets of Bob's tracks at A: arrived over the link, sent on."""
                    mirror = room_a.sessions.get(bob_here)
                    tracks = [] if mirror is None else list(mirror.published.values())
                    return (
                        sum(layer.received for t in tracks for layer in t.layers.values()),
                        sum(d.packets_sent for t in tracks for d in t.downtracks.values()),
                    )

                # A's users see Bob through the link
                await wait_for(lambda: len(bob_frames()) == 5 and min(bob_frames()) >= 10, 30)

                # Bob sees Carol on relay A, where he may subscribe but not publish
                async def sees_carol() -> bool:
                    on_a = (await seen()).get(relay_a.url, {})
                    got = on_a.get("remote", {}).get(carol.identity, {})
                    return got.get("frames", 0) >= 10 and got.get("audioPackets", 0) > 0

                await until(page, "Bob's client decoding Carol on relay A", sees_carol)
                on_a = (await seen())[relay_a.url]
                assert on_a["canPublish"] is False and on_a["published"] == 0
                assert on_a["identity"] == bob_identity
                # his own media is not sent back to him from A
                assert on_a["remote"][bob_here]["frames"] == 0
                mirror = room_a.sessions[bob_here]
                assert not any(
                    d.peer.session.identity == bob_identity
                    for t in mirror.published.values()
                    for d in t.downtracks.values()
                )

                # one copy of Bob's tracks crosses: B forwards to A's bot only
                links = relay_a.app[RTC_LINKS_KEY]
                (link,) = links.links.values()
                linked = [
                    s
                    for s in relay_b.rooms.get_or_create(alias).sessions.values()
                    if s.identity.startswith(bot_a + ":")
                ]
                assert len(linked) == 1 and len(linked[0].subscribing.downtracks) == 2
                # B's metrics: what it forwards (all of it to A's link) is what arrives
                # at A for Bob; A sends that on to its five users (not back to Bob)
                b_first, (arrived_first, sent_first) = (
                    await _metric(http, relay_b, FORWARDED),
                    bob_on_a(),
                )
                await asyncio.sleep(3)
                b_sent = await _metric(http, relay_b, FORWARDED) - b_first
                arrived, sent_on = bob_on_a()
                arrived, sent_on = arrived - arrived_first, sent_on - sent_first
                assert b_sent > 100, b_sent
                assert 0.8 < arrived / b_sent < 1.2, (arrived, b_sent)
                assert sent_on > 4 * b_sent, (sent_on, b_sent)

                # relay B restarts; Bob's livekit-client reconnects by itself, the link
                # comes back, and A's users never leave
                await relays.stop_b()
                relay_b = await relays.start_b()
                await until(page, "Bob publishing on relay B again", publishing_on_b, 60)
                await wait_for(lambda: link.status.connects >= 2, timeout=40)

                # Bob's new copy reaches every user of A, none of whom left; one who
                # joins now decodes it (aiortc's receivers do not follow a track that
                # comes back on a reused transceiver, browsers do)
                def bob_sent_to() -> list[int]:
                    mirror = room_a.sessions.get(bob_here)
                    tracks = [] if mirror is None else list(mirror.published.values())
                    videos = [t for t in tracks if t.kind is TrackKind.VIDEO]
                    return [
                        sum(
                            d.packets_sent
                            for t in videos
                            for d in t.downtracks.values()
                            if d.peer.session.identity == w.identity
                        )
                        for w in watchers
                    ]

                await wait_for(lambda: min(bob_sent_to()) > 0, timeout=30)
                before = bob_sent_to()
                await wait_for(
                    lambda: all(n > b + 50 for n, b in zip(bob_sent_to(), before, strict=True)),
                    timeout=30,
                )
                assert all(w.session is not None and not w.session.closed for w in watchers)
                late = AiortcParticipant(room_a, "rc-hal", pixels=False)
                watchers.append(late)
                await late.join()
                await wait_for(lambda: bob_frames()[-1] >= 10, timeout=30)
            finally:
                await evaluate(page, "mf.rtc.leave()")
                for watcher in watchers:
                    await watcher.close()
