"""A classic Matrix call to the bridge through a real Synapse, with real media.

A Matrix user (client-server API over aiohttp, events read with /sync) calls
the bridge bot with an aiortc peer connection; a second participant joins the
same mediafed room through the session API. Media goes both ways (decoded,
colour checked), the bridge renegotiates with ``m.call.negotiate``, and the
call ends by hangup or by another party being selected.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import urllib.parse
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mediafed import server
from mediafed.config import Config
from mediafed.matrix import voip
from mediafed.matrix.appservice import APPSERVICE_KEY, MatrixAppService
from mediafed.matrix.call import CallState, mediafed_room_for, offered_tracks
from mediafed.matrix.calls import MatrixCallBridge
from mediafed.matrix.config import MatrixConfig
from mediafed.matrix.frontend import CALL_BRIDGE_KEY, setup_matrix
from mediafed.media import RoomManager
from tests.matrix.conftest import serve
from tests.matrix.test_matrix_calls import MatrixCaller, close_to
from tests.matrix.test_matrix_synapse import Waiter
from tests.support.aiortc_client import (
    AiortcParticipant,
    PatternVideoTrack,
    ToneAudioTrack,
    wait_for,
)
from tests.support.synapse import MatrixUser, SynapseServer

pytestmark = pytest.mark.slow

KEYS = {"focuskey": "a-secret-long-enough-for-hs256-signing!!"}
TIMEOUT_S = 30.0
RED = (220, 0, 0)
GREEN = (0, 200, 0)


class MatrixClient:
    """The few client-server API calls a caller makes, and a /sync loop."""

    def __init__(self, synapse: SynapseServer, user: MatrixUser, room_id: str) -> None:
        self.base = synapse.base_url
        self.user = user
        self.room_id = room_id
        self.events: list[dict[str, Any]] = []
        self._http = aiohttp.ClientSession(headers={"Authorization": f"Bearer {user.access_token}"})
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        since = (await self._sync(None, 0))["next_batch"]  # skip the room's history
        self._task = asyncio.create_task(self._loop(since))

    async def _sync(self, since: str | None, timeout_ms: int) -> dict[str, Any]:
        params = {
            "timeout": str(timeout_ms),
            "filter": json.dumps({"room": {"state": {"limit": 0}}}),
        }
        if since:
            params["since"] = since
        async with self._http.get(f"{self.base}/_matrix/client/v3/sync", params=params) as resp:
            assert resp.status == 200, await resp.text()
            body: dict[str, Any] = await resp.json()
            return body

    async def _loop(self, since: str) -> None:
        while True:
            body = await self._sync(since, 5000)
            since = body["next_batch"]
            room = body.get("rooms", {}).get("join", {}).get(self.room_id, {})
            timeline = room.get("timeline", {}).get("events", [])
            if timeline:
                self.events.extend(timeline)
                async with self._changed:
                    self._changed.notify_all()

    async def send(self, event_type: str, content: Mapping[str, Any]) -> None:
        room = urllib.parse.quote(self.room_id)
        url = (
            f"{self.base}/_matrix/client/v3/rooms/{room}/send/"
            f"{urllib.parse.quote(event_type)}/{secrets.token_hex(8)}"
        )
        async with self._http.put(url, json=dict(content)) as resp:
            assert resp.status == 200, await resp.text()

    def received(self, event_type: str, call_id: str) -> list[dict[str, Any]]:
        return [
            e
            for e in self.events
            if e["type"] == event_type
            and e["sender"] != self.user.user_id
            and e["content"].get("call_id") == call_id
        ]

    async def until(self, predicate: Callable[[], bool], what: str) -> None:
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(predicate), TIMEOUT_S)
            except TimeoutError:
                types = [e["type"] for e in self.events]
                raise AssertionError(f"timed out waiting for {what}; saw {types}") from None

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self._http.close()


@asynccontextmanager
async def _bridge(
    synapse: SynapseServer, data_dir: Path, rooms: RoomManager
) -> AsyncIterator[tuple[MatrixAppService, MatrixCallBridge, list[tuple[str, str]]]]:
    assert synapse.appservice is not None
    registration = data_dir / "registration.yaml"
    synapse.appservice.write(registration)
    matrix = MatrixConfig(
        server_name=synapse.server_name,
        homeserver_url=synapse.base_url,
        registration=registration,
    )
    config = Config.model_validate({"keys": KEYS, "server": {"data_dir": str(data_dir)}})
    started: list[tuple[str, str]] = []

    def extension(app: Any, cfg: Config) -> None:
        setup_matrix(
            app,
            matrix,
            keys=cfg.keys,
            data_dir=cfg.server.data_dir,
            rooms=rooms,
            on_call_started=lambda room, name: started.append((room, name)),
        )

    app = await server.build_app(config, extensions=[extension])
    async with serve(app, port=synapse.appservice_port):
        yield app[APPSERVICE_KEY], app[CALL_BRIDGE_KEY], started


async def _room_with_bot(
    synapse: SynapseServer, service: MatrixAppService, caller: MatrixUser, **create: Any
) -> str:
    """A room ``caller`` makes (``create``: more createRoom fields, e.g. room_version)
    and invites the bot to; returns once the bot has joined."""
    assert synapse.appservice is not None
    bot = synapse.appservice.bot_user_id
    waiter = Waiter()
    service.add_event_listener(waiter)
    room_id = await asyncio.to_thread(synapse.create_room, caller, name="call the bridge", **create)
    await asyncio.to_thread(synapse.invite, caller, room_id, bot)
    await waiter.until(
        lambda: any(
            e.get("type") == "m.room.member"
            and e.get("state_key") == bot
            and e.get("content", {}).get("membership") == "join"
            for e in waiter.events
        ),
        "the bot's join",
    )
    return room_id


def _invite(call_id: str, party_id: str, sdp: str, stream: str, invitee: str) -> dict[str, Any]:
    return {
        "call_id": call_id,
        "party_id": party_id,
        "version": "1",
        "lifetime": 60000,
        "invitee": invitee,
        "offer": {"type": "offer", "sdp": sdp},
        "sdp_stream_metadata": {
            stream: {"purpose": "m.usermedia", "audio_muted": False, "video_muted": False}
        },
    }


async def test_matrix_call_through_synapse_media_both_ways(
    synapse: SynapseServer, tmp_path: Path, rooms: RoomManager
) -> None:
    assert synapse.appservice is not None
    bot = synapse.appservice.bot_user_id
    user = await asyncio.to_thread(synapse.register_user, "caller")
    await asyncio.to_thread(
        synapse.request,
        "PUT",
        f"/_matrix/client/v3/profile/{urllib.parse.quote(user.user_id)}/displayname",
        {"displayname": "Caroline Caller"},
        token=user.access_token,
    )
    caller = MatrixCaller()
    alice: AiortcParticipant | None = None
    async with _bridge(synapse, tmp_path, rooms) as (service, bridge, started):
        room_id = await _room_with_bot(synapse, service, user)
        client = MatrixClient(synapse, user, room_id)
        await client.start()
        try:
            sdp = await caller.offer(PatternVideoTrack(RED), ToneAudioTrack())
            party = user.device_id
            await client.send(voip.INVITE, _invite("call-1", party, sdp, caller.stream_id(), bot))
            await client.until(lambda: bool(client.received(voip.ANSWER, "call-1")), "answer")
            [answer] = client.received(voip.ANSWER, "call-1")
            assert answer["sender"] == bot
            ours = answer["content"]["party_id"]
            await caller.accept_answer(answer["content"]["answer"]["sdp"])
            await client.send(
                voip.SELECT_ANSWER,
                {"call_id": "call-1", "party_id": party, "version": "1", "selected_party_id": ours},
            )
            # our trickled candidates (ICE-lite ignores them) and theirs with end-of-candidates
            await client.send(
                voip.CANDIDATES,
                {
                    "call_id": "call-1",
                    "party_id": party,
                    "version": "1",
                    "candidates": [{"candidate": "", "sdpMid": "0", "sdpMLineIndex": 0}],
                },
            )
            await client.until(
                lambda: any(
                    c["candidate"] == ""
                    for e in client.received(voip.CANDIDATES, "call-1")
                    for c in e["content"]["candidates"]
                ),
                "the bridge's end-of-candidates",
            )
            call = bridge.calls[(room_id, "call-1")]
            await wait_for(lambda: call.state is CallState.CONNECTED, timeout=TIMEOUT_S)
            name = mediafed_room_for(room_id)
            assert started == [(name, "Caroline Caller")]

            # (1) someone in the same mediafed room sees and hears the Matrix caller
            room = rooms.get_or_create(name)
            alice = AiortcParticipant(room, "alice")
            await alice.join(name="Alice")
            await alice.publish(PatternVideoTrack(GREEN), ToneAudioTrack())
            await wait_for(
                lambda: any(v.frames > 5 and close_to(v.colour, RED) for v in alice.video.values()),
                timeout=TIMEOUT_S,
            )
            await wait_for(
                lambda: any(a.frames > 5 and a.peak_rms > 1000 for a in alice.audio.values()),
                timeout=TIMEOUT_S,
            )
            caller_info = room.participant(f"{user.user_id}:{party}")
            assert caller_info is not None and caller_info.name == "Caroline Caller"

            # (2) alice comes back to the caller after an m.call.negotiate round
            await client.until(
                lambda: any(
                    e["content"]["description"]["type"] == "offer"
                    for e in client.received(voip.NEGOTIATE, "call-1")
                ),
                "the bridge's renegotiation offer",
            )
            [offer] = [
                e
                for e in client.received(voip.NEGOTIATE, "call-1")
                if e["content"]["description"]["type"] == "offer"
            ][-1:]
            content = offer["content"]
            video_streams = {
                t.stream_id
                for t in offered_tracks(content["description"]["sdp"])
                if t.kind.value == "video"
            }
            metadata = content["sdp_stream_metadata"]
            assert video_streams and all(
                metadata[stream]["purpose"] == "m.usermedia" for stream in video_streams
            )
            answer_sdp = await caller.answer_offer(content["description"]["sdp"])
            await client.send(
                voip.NEGOTIATE,
                {
                    "call_id": "call-1",
                    "party_id": party,
                    "version": "1",
                    "description": {"type": "answer", "sdp": answer_sdp},
                    "sdp_stream_metadata": {
                        caller.stream_id(): {
                            "purpose": "m.usermedia",
                            "audio_muted": False,
                            "video_muted": False,
                        }
                    },
                },
            )
            await wait_for(lambda: caller.sees(GREEN), timeout=TIMEOUT_S)

            # (4) bad input meanwhile: a flood of candidates, a malformed event, an
            # invite for someone outside the namespace; the call goes on
            flood = [
                {
                    "candidate": f"candidate:{i} 1 udp 1 127.0.0.1 {20000 + i} typ host",
                    "sdpMid": "0",
                    "sdpMLineIndex": 0,
                }
                for i in range(200)
            ]
            for _ in range(3):
                await client.send(
                    voip.CANDIDATES,
                    {"call_id": "call-1", "party_id": party, "version": "1", "candidates": flood},
                )
            await client.send(voip.HANGUP, {"call_id": "call-1", "version": "1"})  # no party_id
            other = {**_invite("call-x", party, sdp, caller.stream_id(), "@frank:elsewhere")}
            await client.send(voip.INVITE, other)
            seen = sum(v.frames for v in alice.video.values())
            await wait_for(
                lambda: sum(v.frames for v in alice.video.values()) > seen + 20, timeout=TIMEOUT_S
            )
            assert call.state is CallState.CONNECTED
            assert (room_id, "call-x") not in bridge.calls

            # (3) the caller hangs up: the session leaves the room
            await client.send(
                voip.HANGUP,
                {"call_id": "call-1", "party_id": party, "version": "1", "reason": "user_hangup"},
            )
            await asyncio.wait_for(call.done, TIMEOUT_S)
            assert room.participant(f"{user.user_id}:{party}") is None
            assert [p.identity for p in room.participants()] == ["alice"]
            assert not client.received(voip.HANGUP, "call-1")
            assert not client.received(voip.INVITE, "call-x")
        finally:
            if alice is not None:
                await alice.close()
            await caller.close()
            await client.close()
            await service.wait_idle()


async def test_matrix_call_answered_elsewhere(
    synapse: SynapseServer, tmp_path: Path, rooms: RoomManager
) -> None:
    assert synapse.appservice is not None
    bot = synapse.appservice.bot_user_id
    user = await asyncio.to_thread(synapse.register_user, "caller2")
    caller = MatrixCaller()
    async with _bridge(synapse, tmp_path, rooms) as (service, bridge, _):
        room_id = await _room_with_bot(synapse, service, user)
        client = MatrixClient(synapse, user, room_id)
        await client.start()
        try:
            sdp = await caller.offer(PatternVideoTrack(RED))
            party = user.device_id
            await client.send(voip.INVITE, _invite("call-2", party, sdp, caller.stream_id(), bot))
            await client.until(lambda: bool(client.received(voip.ANSWER, "call-2")), "answer")
            call = bridge.calls[(room_id, "call-2")]
            room = rooms.get(mediafed_room_for(room_id))
            assert room is not None and room.participant(f"{user.user_id}:{party}") is not None
            await client.send(
                voip.SELECT_ANSWER,
                {
                    "call_id": "call-2",
                    "party_id": party,
                    "version": "1",
                    "selected_party_id": "another-device",
                },
            )
            assert await asyncio.wait_for(call.done, TIMEOUT_S) == "answered elsewhere"
            assert room.participant(f"{user.user_id}:{party}") is None
            assert not client.received(voip.HANGUP, "call-2")
        finally:
            await caller.close()
            await client.close()
            await service.wait_idle()
