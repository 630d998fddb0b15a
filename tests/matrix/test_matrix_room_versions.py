"""Rooms of every room version through a real Synapse: linked, called, met (issue 20).

Synapse at its defaults makes room version 12 rooms, whose ids are ``!`` and a
hash with no server part (MSC4291); older rooms, here an explicit version 11,
have ``!opaque:server`` ids. For each, on one full node (every front-end of
:func:`mediafed.server.front_ends`, a fake Rocket.Chat for the notices):

1. the room is linked to a Rocket.Chat room with ``mediafed bridge link`` (the
   real command, on the running node's database) and shows in ``/api/v1/bridges``;
2. Rocket.Chat starts a call there the way the mediafed App does (``POST
   /api/v1/calls`` for ``rocketchat:<rid>``); a Rocket.Chat user joins with the
   token it gets;
3. a Matrix user calls the bridge bot in the Matrix room (classic ``m.call.*``,
   aiortc): the Rocket.Chat user sees and hears the caller, the caller sees the
   Rocket.Chat user after the bridge renegotiates, and the Rocket.Chat room gets
   a notice whose link opens that same call;
4. an Element-Call-style membership (``org.matrix.msc3401.call.member``) in the
   room reaches the membership tracker, and the focus hands that user a token
   for the very room the others are in.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
import urllib.parse
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
from mediafed.matrix.call import CallState, mediafed_room_for
from mediafed.matrix.frontend import CALL_BRIDGE_KEY, MEMBERSHIP_KEY
from mediafed.media import RoomManager
from mediafed.signal.livekit.tokens import VideoGrant, mint_token, require_room_join, verify_token
from mediafed.worker import Worker
from tests.matrix.test_matrix_calls import MatrixCaller, close_to
from tests.matrix.test_matrix_calls_synapse import MatrixClient, _invite, _room_with_bot
from tests.matrix.test_matrix_synapse import Waiter
from tests.rocketchat.fake_server import FakeRocketChat
from tests.support.aiortc_client import (
    AiortcParticipant,
    PatternVideoTrack,
    ToneAudioTrack,
    wait_for,
)
from tests.support.synapse import MatrixUser, SynapseServer

pytestmark = pytest.mark.slow

KEY, SECRET = "rooms-key", "a-secret-long-enough-for-hs256-signing!!"
ADMIN = VideoGrant(room_admin=True, room_create=True, room_list=True)
TIMEOUT_S = 30.0
RED = (220, 0, 0)
GREEN = (0, 200, 0)
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Node:
    app: web.Application
    rooms: RoomManager
    url: str
    data_dir: Path


@asynccontextmanager
async def full_node(
    synapse: SynapseServer, directory: Path, rocketchat_url: str
) -> AsyncIterator[Node]:
    """Every front-end on one RoomManager, where Synapse sends its transactions."""
    assert synapse.appservice is not None
    registration = directory / "registration.yaml"
    synapse.appservice.write(registration)
    port = synapse.appservice_port
    url = f"http://127.0.0.1:{port}"
    data_dir = directory / "data"
    config = Config.model_validate(
        {
            "keys": {KEY: SECRET},
            "server": {
                # the media socket binds this address (see tests/support/livekit_node.py)
                "bind": "127.0.0.2",
                "http_port": port,
                "data_dir": str(data_dir),
                "public_url": url,
            },
            "rtc": {"udp_port": 0, "tcp_port": 0, "node_ip": ["127.0.0.2"]},
            "matrix": {
                "server_name": synapse.server_name,
                "homeserver_url": synapse.base_url,
                "registration": str(registration),
                # the focus checks OpenID tokens on Synapse's plain-HTTP federation listener
                "federation_url_overrides": {synapse.server_name: synapse.base_url},
            },
            "rocketchat": {
                "url": rocketchat_url,
                "user": "mediafed.bot",
                "password": "bot-password",
                "notice_attempts": 3,
                "notice_backoff_s": 0.2,
            },
        }
    )
    worker = Worker.from_config(config)
    rooms = worker.rooms
    app = await server.build_app(config, server.front_ends(rooms), worker=worker)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    # Synapse reaches the appservice at 127.0.0.1
    await web.TCPSite(runner, "0.0.0.0", port).start()
    try:
        yield Node(app, rooms, url, data_dir)
    finally:
        await runner.cleanup()


def _bridge_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``mediafed bridge ...`` as an admin runs it next to the node."""
    return subprocess.run(
        [sys.executable, "-m", "mediafed", "bridge", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def _api(
    http: aiohttp.ClientSession, method: str, url: str, body: Any = None
) -> tuple[int, dict[str, Any]]:
    token = mint_token(KEY, SECRET, identity="rocketchat-app", video=ADMIN)
    headers = {"Authorization": f"Bearer {token}"}
    async with http.request(method, url, json=body, headers=headers) as resp:
        return resp.status, await resp.json()


async def _matrix_call(
    client: MatrixClient, caller: MatrixCaller, user: MatrixUser, bot: str, call_id: str
) -> None:
    """Place a classic call to the bot and bring its media up (invite, answer,
    select_answer, end of candidates)."""
    sdp = await caller.offer(PatternVideoTrack(RED), ToneAudioTrack())
    party = user.device_id
    await client.send(voip.INVITE, _invite(call_id, party, sdp, caller.stream_id(), bot))
    await client.until(lambda: bool(client.received(voip.ANSWER, call_id)), "the answer")
    [answer] = client.received(voip.ANSWER, call_id)
    assert answer["sender"] == bot
    await caller.accept_answer(answer["content"]["answer"]["sdp"])
    await client.send(
        voip.SELECT_ANSWER,
        {
            "call_id": call_id,
            "party_id": party,
            "version": "1",
            "selected_party_id": answer["content"]["party_id"],
        },
    )
    await client.send(
        voip.CANDIDATES,
        {
            "call_id": call_id,
            "party_id": party,
            "version": "1",
            "candidates": [{"candidate": "", "sdpMid": "0", "sdpMLineIndex": 0}],
        },
    )


async def _answer_renegotiations(
    client: MatrixClient, caller: MatrixCaller, user: MatrixUser, call_id: str
) -> None:
    """Answer each m.call.negotiate offer of the bridge (it sends one when someone's
    tracks did not fit in its first answer), as a caller's client does."""
    answered: set[str] = set()

    def pending() -> list[dict[str, Any]]:
        return [
            e
            for e in client.received(voip.NEGOTIATE, call_id)
            if e["content"]["description"]["type"] == "offer" and e["event_id"] not in answered
        ]

    while True:
        async with client._changed:
            await client._changed.wait_for(lambda: bool(pending()))
        for event in pending():
            answered.add(event["event_id"])
            answer_sdp = await caller.answer_offer(event["content"]["description"]["sdp"])
            await client.send(
                voip.NEGOTIATE,
                {
                    "call_id": call_id,
                    "party_id": user.device_id,
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


@pytest.mark.parametrize("room_version", [None, "11"], ids=["synapse-default", "version-11"])
async def test_room_is_linked_called_and_met(
    synapse: SynapseServer, tmp_path: Path, room_version: str | None
) -> None:
    assert synapse.appservice is not None
    bot = synapse.appservice.bot_user_id
    tag = room_version or "default"
    user = await asyncio.to_thread(synapse.register_user, f"vera-{tag}")
    name = f"Vera {tag}"
    await asyncio.to_thread(
        synapse.request,
        "PUT",
        f"/_matrix/client/v3/profile/{urllib.parse.quote(user.user_id)}/displayname",
        {"displayname": name},
        token=user.access_token,
    )
    fake = FakeRocketChat()
    rid = fake.add_room("general")
    await fake.start()
    caller = MatrixCaller()
    rita: AiortcParticipant | None = None
    client: MatrixClient | None = None
    http = aiohttp.ClientSession()
    try:
        async with full_node(synapse, tmp_path, fake.url) as node:
            service = node.app[APPSERVICE_KEY]
            waiter = Waiter()
            service.add_event_listener(waiter)
            create = {} if room_version is None else {"room_version": room_version}
            room_id = await _room_with_bot(synapse, service, user, **create)
            version = await asyncio.to_thread(synapse.room_version, user, room_id)
            if room_version is None:
                # what a new user gets today: version 12, an id without a server part
                assert version == "12"
                assert re.fullmatch(r"![A-Za-z0-9_-]{43}", room_id), room_id
            else:
                assert version == "11"
                assert room_id.startswith("!") and room_id.endswith(f":{synapse.server_name}")
            call_room = mediafed_room_for(room_id)

            # (1) the README's first Rocket.Chat step: link the rooms
            linked = await asyncio.to_thread(
                _bridge_cli,
                "link",
                "--rocketchat-room",
                rid,
                "--matrix-room",
                room_id,
                "--data-dir",
                str(node.data_dir),
            )
            assert linked.returncode == 0, linked.stderr
            assert linked.stdout == f"linked room rc-{rid}: rocketchat={rid} matrix={room_id}\n"
            status, listed = await _api(http, "GET", f"{node.url}/api/v1/bridges")
            assert status == 200
            assert [(b["rocketchat_room"], b["matrix_room"]) for b in listed["bridges"]] == [
                (rid, room_id)
            ]

            # (2) Rocket.Chat starts a call in the linked room; Rita joins with her token
            status, rc_call = await _api(
                http,
                "POST",
                f"{node.url}/api/v1/calls",
                {
                    "external_room": f"rocketchat:{rid}",
                    "external_call_id": "rc-call-1",
                    "title": "Standup",
                },
            )
            assert status == 201, rc_call
            assert rc_call["room"] == call_room
            status, joined = await _api(
                http,
                "POST",
                f"{node.url}/api/v1/calls/{rc_call['call_id']}/join",
                {"identity": "rc-rita", "name": "Rita"},
            )
            assert status == 200, joined
            claims = verify_token(joined["token"], {KEY: SECRET})
            rita_room = node.rooms.get_or_create(require_room_join(claims))
            rita = AiortcParticipant(rita_room, claims.identity)
            await rita.join(name="Rita")
            await rita.publish(PatternVideoTrack(GREEN), ToneAudioTrack())

            # (3) a classic Matrix call in the same Matrix room
            client = MatrixClient(synapse, user, room_id)
            await client.start()
            await _matrix_call(client, caller, user, bot, "call-1")
            call = node.app[CALL_BRIDGE_KEY].calls[(room_id, "call-1")]
            await wait_for(lambda: call.state is CallState.CONNECTED, timeout=TIMEOUT_S)
            assert call.mediafed_room == call_room
            await wait_for(
                lambda: any(v.frames > 5 and close_to(v.colour, RED) for v in rita.video.values()),
                timeout=TIMEOUT_S,
            )
            await wait_for(
                lambda: any(a.frames > 5 and a.peak_rms > 1000 for a in rita.audio.values()),
                timeout=TIMEOUT_S,
            )
            renegotiating = asyncio.create_task(
                _answer_renegotiations(client, caller, user, "call-1")
            )
            try:
                await wait_for(lambda: caller.sees(GREEN), timeout=TIMEOUT_S)
            finally:
                renegotiating.cancel()
            # ... and Rocket.Chat is told nothing new: the call started there, and its
            # own card already leads into this same mediafed room (a Matrix-started
            # call would start one: tests/rocketchat/test_matrix_starts_rc_card.py)
            await asyncio.sleep(1.0)
            assert fake.messages == [] and fake.started == [], (fake.messages, fake.started)

            # (4) an Element-Call-style member of the room
            state_key = f"_{user.user_id}_{user.device_id}_m.call"
            member = {
                "application": "m.call",
                "call_id": "",
                "scope": "m.room",
                "device_id": user.device_id,
                "membershipID": f"vera-{tag}-ec",
                "expires": 3_600_000,
                "focus_active": {"type": "livekit", "focus_selection": "oldest_membership"},
                "foci_preferred": [{"type": "livekit", "livekit_service_url": node.url}],
            }
            await asyncio.to_thread(
                synapse.send_state,
                user,
                room_id,
                "org.matrix.msc3401.call.member",
                state_key,
                member,
            )
            await waiter.until(
                lambda: any(
                    e.get("type") == "org.matrix.msc3401.call.member"
                    and e.get("room_id") == room_id
                    for e in waiter.events
                ),
                "the call.member event",
            )
            [seen] = node.app[MEMBERSHIP_KEY].members(room_id, now_ms=int(time.time() * 1000))
            assert (seen.room_id, seen.user_id, seen.member_id) == (
                room_id,
                user.user_id,
                f"vera-{tag}-ec",
            )
            openid = await asyncio.to_thread(synapse.openid_token, user)
            async with http.post(
                f"{node.url}/sfu/get",
                json={"room": room_id, "openid_token": openid, "device_id": user.device_id},
            ) as resp:
                assert resp.status == 200, await resp.text()
                legacy = await resp.json()
            assert require_room_join(verify_token(legacy["jwt"], {KEY: SECRET})) == call_room
            openid = await asyncio.to_thread(synapse.openid_token, user)
            async with http.post(
                f"{node.url}/get_token",
                json={
                    "room_id": room_id,
                    "slot_id": "m.call#ROOM",
                    "openid_token": openid,
                    "member": {
                        "id": f"vera-{tag}-ec",
                        "claimed_user_id": user.user_id,
                        "claimed_device_id": user.device_id,
                    },
                },
            ) as resp:
                assert resp.status == 200, await resp.text()
                token = await resp.json()
            assert require_room_join(verify_token(token["jwt"], {KEY: SECRET})) == call_room

            # the caller hangs up; Rita stays in the Rocket.Chat call
            await client.send(
                voip.HANGUP,
                {
                    "call_id": "call-1",
                    "party_id": user.device_id,
                    "version": "1",
                    "reason": "user_hangup",
                },
            )
            await asyncio.wait_for(call.done, TIMEOUT_S)
            # in a linked call she is the device of her Matrix ghost, as Element Call
            # matches participants to members (matrix/rtc_ghosts.py)
            assert [p.identity for p in rita_room.participants()] == [claims.identity]
            assert claims.identity.startswith(f"@rc_rc-rita:{synapse.server_name}:")
            await service.wait_idle()
    finally:
        if rita is not None:
            await rita.close()
        await caller.close()
        if client is not None:
            await client.close()
        await http.close()
        await fake.stop()
