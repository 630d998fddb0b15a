"""LiveKit webhooks, checked the way an operator's receiver checks them: livekit-api's
``WebhookReceiver`` verifies every request (signature, body hash) and parses it.

Participants are real WebRTC clients (aiortc) in a node with the LiveKit front-end,
RoomService and the webhooks; receivers are small aiohttp servers on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web
from livekit import api
from livekit.protocol import models, rtc, webhook

from mediafed import server
from mediafed.config import load_config
from mediafed.errors import ConfigError
from mediafed.operator.webhooks import WebhookNotifier
from tests.support.aiortc_client import (
    AiortcParticipant,
    PatternVideoTrack,
    ToneAudioTrack,
    wait_for,
)
from tests.support.livekit_node import API_KEY, API_SECRET, LiveNode, live_node

VERIFY = api.WebhookReceiver(api.TokenVerifier(API_KEY, API_SECRET))
FAST_RETRIES = {"retry_wait_s": 0.05, "max_retry_wait_s": 0.2}


@dataclass
class Posted:
    content_type: str
    authorization: str
    body: str
    status: int
    """What the receiver answered."""


class Receiver:
    """A webhook endpoint on 127.0.0.1: it records every request and answers the next
    of ``statuses`` (then 200); with ``hold`` it answers nothing until released."""

    def __init__(self, statuses: Sequence[int] = (), *, hold: bool = False) -> None:
        self.posted: list[Posted] = []
        self.statuses = list(statuses)
        self.released = asyncio.Event()
        if not hold:
            self.released.set()
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        status = self.statuses.pop(0) if self.statuses else 200
        self.posted.append(
            Posted(
                request.headers.get("Content-Type", ""),
                request.headers.get("Authorization", ""),
                await request.text(),
                status,
            )
        )
        await self.released.wait()
        return web.Response(status=status)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/hook"
        return self.url

    async def close(self) -> None:
        self.released.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def delivered(self) -> list[webhook.WebhookEvent]:
        """The events accepted (answered 2xx), each verified as livekit-api verifies it."""
        return [
            VERIFY.receive(posted.body, posted.authorization)
            for posted in self.posted
            if posted.status < 300
        ]

    async def wait_for_event(
        self, name: str, identity: str = "", count: int = 1, timeout: float = 20.0
    ) -> None:
        def arrived() -> bool:
            found = [
                e
                for e in self.delivered()
                if e.event == name and (not identity or e.participant.identity == identity)
            ]
            return len(found) >= count

        await wait_for(arrived, timeout)


@asynccontextmanager
async def receivers(*made: Receiver) -> AsyncIterator[list[str]]:
    urls = [await receiver.start() for receiver in made]
    try:
        yield urls
    finally:
        for receiver in made:
            await receiver.close()


@asynccontextmanager
async def webhook_node(urls: Sequence[str]) -> AsyncIterator[LiveNode]:
    """A live node (LiveKit front-end, RoomService) posting webhooks to ``urls``,
    retrying within a fraction of a second."""
    async with live_node(
        "127.0.0.2",
        settings={"MEDIAFED_WEBHOOK_URLS": ",".join(urls), "MEDIAFED_WEBHOOK_API_KEY": API_KEY},
        extensions=[
            server.room_service_extension,
            functools.partial(server.webhook_extension, **FAST_RETRIES),
        ],
    ) as node:
        yield node


@asynccontextmanager
async def room_service(node: LiveNode) -> AsyncIterator[api.LiveKitAPI]:
    lk = api.LiveKitAPI(node.http_url, API_KEY, API_SECRET, failover=False)
    try:
        yield lk
    finally:
        await lk.aclose()


async def join_and_abort(node: LiveNode, identity: str) -> None:
    """A LiveKit client that signals (join, then leave) but never connects media."""
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(f"{node.ws_url}/rtc?access_token={node.token(identity)}")
        message = await asyncio.wait_for(ws.receive(), 10)
        first = rtc.SignalResponse()
        first.ParseFromString(message.data)
        assert first.WhichOneof("message") == "join"
        await ws.send_bytes(rtc.SignalRequest(leave=rtc.LeaveRequest()).SerializeToString())
        await ws.close()


async def test_a_call_posts_every_livekit_webhook_signed() -> None:
    started_s = int(time.time())
    receiver = Receiver()
    async with (
        receivers(receiver) as urls,
        webhook_node(urls) as node,
        room_service(node) as lk,
    ):
        created = await lk.room.create_room(api.CreateRoomRequest(name="call", empty_timeout=3))
        room = node.rooms.get("call")
        assert room is not None
        alice = AiortcParticipant(room, "alice")
        bob = AiortcParticipant(room, "bob")
        try:
            await alice.join(name="Alice")
            # LiveKit's "joined" is a participant whose connection is up
            await receiver.wait_for_event("participant_joined", "alice")
            await alice.publish(PatternVideoTrack((200, 40, 40)), ToneAudioTrack())
            await receiver.wait_for_event("track_published", "alice", count=2)
            await bob.join(name="Bob")
            await receiver.wait_for_event("participant_joined", "bob")
            await wait_for(lambda: any(v.frames >= 10 for v in bob.video.values()))
            await join_and_abort(node, "carol")
            await receiver.wait_for_event("participant_connection_aborted", "carol")
            assert alice.session is not None and bob.session is not None
            alice_sid, bob_sid = alice.session.sid, bob.session.sid
            published = {t.sid: t.kind.value for t in alice.session.published.values()}
        finally:
            await alice.close()
            await bob.close()
        await receiver.wait_for_event("room_finished", timeout=15)
    finished_s = int(time.time())

    assert {p.content_type for p in receiver.posted} == {"application/webhook+json"}
    delivered = receiver.delivered()
    sequence = [(e.event, e.participant.identity) for e in delivered]
    assert sequence == [
        ("room_started", ""),
        ("participant_joined", "alice"),
        ("track_published", "alice"),
        ("track_published", "alice"),
        ("participant_joined", "bob"),
        ("participant_connection_aborted", "carol"),
        # alice and bob leave one after the other; the room expires after both
        ("track_unpublished", "alice"),
        ("track_unpublished", "alice"),
        ("participant_left", "alice"),
        ("participant_left", "bob"),
        ("room_finished", ""),
    ]

    assert len({e.id for e in delivered}) == len(delivered)
    for event in delivered:
        assert event.id.startswith("EV_")
        assert started_s <= event.created_at <= finished_s
        assert (event.room.sid, event.room.name) == (created.sid, "call")

    by_name: dict[str, list[webhook.WebhookEvent]] = {}
    for event in delivered:
        by_name.setdefault(event.event, []).append(event)
    joined = {e.participant.identity: e for e in by_name["participant_joined"]}
    assert joined["alice"].participant.sid == alice_sid
    assert joined["alice"].participant.name == "Alice"
    assert joined["alice"].participant.state == models.ParticipantInfo.State.ACTIVE
    assert joined["bob"].participant.sid == bob_sid
    assert joined["bob"].room.num_participants == 2

    kinds = {"audio": models.TrackType.AUDIO, "video": models.TrackType.VIDEO}
    for name in ("track_published", "track_unpublished"):
        tracks = {e.track.sid: e.track for e in by_name[name]}
        assert {sid: t.type for sid, t in tracks.items()} == {
            sid: kinds[kind] for sid, kind in published.items()
        }
        for event in by_name[name]:
            assert event.participant.sid == alice_sid
    video = next(e.track for e in by_name["track_published"] if e.track.type == kinds["video"])
    assert video.mime_type.lower() == "video/vp8"

    left = {e.participant.identity: e.participant for e in by_name["participant_left"]}
    assert left["alice"].sid == alice_sid
    assert left["alice"].state == models.ParticipantInfo.State.DISCONNECTED
    assert by_name["participant_connection_aborted"][0].participant.state == (
        models.ParticipantInfo.State.DISCONNECTED
    )
    assert by_name["room_finished"][0].room.num_participants == 0


async def test_failed_posts_are_retried_and_refusals_are_not() -> None:
    # room_started: 500, 500, then 200; room_finished: 400 (not retried); room_started: 200
    receiver = Receiver([500, 500, 200, 400])
    async with (
        receivers(receiver) as urls,
        webhook_node(urls) as node,
        room_service(node) as lk,
    ):
        await lk.room.create_room(api.CreateRoomRequest(name="standup"))
        await wait_for(lambda: len(receiver.posted) == 3, 10)
        await lk.room.delete_room(api.DeleteRoomRequest(room="standup"))
        await wait_for(lambda: len(receiver.posted) == 4, 10)
        await lk.room.create_room(api.CreateRoomRequest(name="retro"))
        await receiver.wait_for_event("room_started", count=2, timeout=10)
        await asyncio.sleep(0.5)  # a retry of the refused event would come by now

    assert [p.status for p in receiver.posted] == [500, 500, 200, 400, 200]
    attempts = [VERIFY.receive(p.body, p.authorization) for p in receiver.posted]
    assert [e.event for e in attempts] == ["room_started"] * 3 + ["room_finished", "room_started"]
    assert len({e.id for e in attempts[:3]}) == 1  # the same event, signed again
    assert [e.room.name for e in receiver.delivered()] == ["standup", "retro"]


async def test_a_receiver_that_hangs_or_is_down_blocks_neither_media_nor_other_urls() -> None:
    hanging, good = Receiver(hold=True), Receiver()
    with socket.socket() as probe:  # a port nothing listens on: connection refused
        probe.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{probe.getsockname()[1]}/hook"
    async with (
        receivers(hanging, good) as (hanging_url, good_url),
        webhook_node([hanging_url, down, good_url]) as node,
    ):
        room = node.rooms.get_or_create("call")
        alice = AiortcParticipant(room, "alice")
        bob = AiortcParticipant(room, "bob")
        try:
            await alice.join()
            await good.wait_for_event("participant_joined", "alice", timeout=10)
            await alice.publish(PatternVideoTrack((40, 200, 40)))
            await good.wait_for_event("track_published", "alice", timeout=10)
            await bob.join()
            await good.wait_for_event("participant_joined", "bob", timeout=10)
            await wait_for(lambda: any(v.frames >= 10 for v in bob.video.values()))
            # media keeps flowing while the hanging receiver holds its request
            before = max(v.frames for v in bob.video.values())
            await asyncio.sleep(1.0)
            assert max(v.frames for v in bob.video.values()) >= before + 10
            assert len(hanging.posted) == 1 and not hanging.released.is_set()
        finally:
            await alice.close()
            await bob.close()
        await good.wait_for_event("participant_left", count=2, timeout=10)
    assert [e.event for e in good.delivered()] == [
        "room_started",
        "participant_joined",
        "track_published",
        "participant_joined",
        "track_unpublished",
        "participant_left",
        "participant_left",
    ]


async def test_a_full_queue_drops_its_oldest_event() -> None:
    receiver = Receiver(hold=True)
    async with receivers(receiver) as (url,):
        notifier = WebhookNotifier([url], API_KEY, API_SECRET, queue_size=2)
        await notifier.start()
        try:
            for name in ("r1", "r2", "r3", "r4", "r5"):
                notifier.notify(
                    webhook.WebhookEvent(event="room_started", room=models.Room(name=name))
                )
                if name == "r1":  # in flight, held by the receiver: out of the queue
                    await wait_for(lambda: len(receiver.posted) == 1, 5)
            assert notifier.counts["dropped"] == 2
            receiver.released.set()
            await asyncio.wait_for(notifier.wait_idle(), 5)
        finally:
            await notifier.close()
    assert [e.room.name for e in receiver.delivered()] == ["r1", "r4", "r5"]
    assert notifier.counts == {"sent": 3, "failed": 0, "dropped": 2}


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        (
            {"MEDIAFED_WEBHOOK_API_KEY": "other"},
            "webhook: Value error, api_key 'other' is not one of [keys] (configured keys: "
            "e2ekey); webhooks are signed with that key's secret, so add it to [keys] or name "
            "one that is there",
        ),
        (
            {},
            "webhook: Value error, urls are set but api_key is empty; set it to the key of "
            "[keys] whose secret signs the webhooks (configured keys: e2ekey)",
        ),
    ],
)
def test_a_webhook_key_not_in_keys_is_refused_at_load(
    settings: dict[str, str], problem: str
) -> None:
    environ = {
        "MEDIAFED_KEYS": f"{API_KEY}: {API_SECRET}",
        "MEDIAFED_WEBHOOK_URLS": "http://127.0.0.1:9/hook",
    } | settings
    with pytest.raises(ConfigError) as info:
        load_config(environ=environ)
    assert str(info.value) == f"invalid configuration (defaults/environment): {problem}"


def test_webhook_urls_must_be_http() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(
            environ={
                "MEDIAFED_KEYS": f"{API_KEY}: {API_SECRET}",
                "MEDIAFED_WEBHOOK_URLS": "ftp://127.0.0.1/hook",
                "MEDIAFED_WEBHOOK_API_KEY": API_KEY,
            }
        )
    assert "'ftp://127.0.0.1/hook' is not an http:// or https:// URL" in str(info.value)
