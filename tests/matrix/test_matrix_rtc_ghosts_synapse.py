"""A Rocket.Chat user in a call linked to a Matrix room, seen from the Matrix room
through a real Synapse: the ghost's MatrixRTC membership names this relay as its
focus while the user is connected, and goes when they leave or when mediafed
stops without cleaning up (the delayed leave, MSC4140).

The user joins as the Rocket.Chat App makes them join: ``PUT /api/v1/bridges``
links the rooms, ``POST /api/v1/calls`` opens the Rocket.Chat room's call,
``POST /api/v1/calls/{id}/join`` mints the link (whose identity is the ghost's
device), and an aiortc participant connects with that identity.
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiortc import RTCSessionDescription

from mediafed import server
from mediafed.config import Config
from mediafed.matrix import voip
from mediafed.matrix.appservice import APPSERVICE_KEY
from mediafed.matrix.frontend import RTC_GHOSTS_KEY
from mediafed.matrix.membership import CALL_MEMBER
from mediafed.matrix.rtc_ghosts import (
    RTC_NOTIFICATION,
    RtcGhosts,
    call_member_state_key,
    parse_ghost_identity,
)
from mediafed.media import RoomManager
from tests.matrix.conftest import serve
from tests.matrix.test_matrix_calls import MatrixCaller, close_to
from tests.matrix.test_matrix_calls_synapse import MatrixClient, _room_with_bot
from tests.rocketchat.test_call_api import KEY, SECRET, admin_token
from tests.support.aiortc_client import (
    AiortcParticipant,
    PatternVideoTrack,
    ToneAudioTrack,
    wait_for,
)
from tests.support.synapse import MatrixUser, SynapseServer

pytestmark = pytest.mark.slow

LEAVE_DELAY_S = 3.0
TIMEOUT_S = 20.0
RED = (220, 0, 0)
GREEN = (0, 200, 0)


@asynccontextmanager
async def _node(
    synapse: SynapseServer, data_dir: Path, rooms: RoomManager
) -> AsyncIterator[tuple[str, Any]]:
    """Every front-end on ``rooms``, serving on the appservice's port; yields its
    URL and the app."""
    assert synapse.appservice is not None
    registration = data_dir / "registration.yaml"
    synapse.appservice.write(registration)
    url = f"http://127.0.0.1:{synapse.appservice_port}"
    config = Config.model_validate(
        {
            "keys": {KEY: SECRET},
            "server": {"data_dir": str(data_dir), "public_url": url},
            "matrix": {
                "server_name": synapse.server_name,
                "homeserver_url": synapse.base_url,
                "registration": str(registration),
                "ghost_leave_delay_s": LEAVE_DELAY_S,
                # the focus checks OpenID tokens on Synapse's plain-HTTP listener
                "federation_url_overrides": {synapse.server_name: synapse.base_url},
            },
        }
    )
    app = await server.build_app(config, server.front_ends(rooms))
    async with serve(app, port=synapse.appservice_port):
        yield url, app


async def _call_room(synapse: SynapseServer, app: Any, user: MatrixUser) -> str:
    """A room ``user`` makes with the bridge bot in it, whose members may join its
    call (Element's call rooms give ``call.member`` power level 0)."""
    return await _room_with_bot(
        synapse,
        app[APPSERVICE_KEY],
        user,
        power_level_content_override={"events": {CALL_MEMBER: 0}},
    )


def _member_state(synapse: SynapseServer, user: MatrixUser, room_id: str, key: str) -> Any:
    """The call.member state at ``key`` as a room member reads it (None: never set)."""
    path = (
        f"/_matrix/client/v3/rooms/{urllib.parse.quote(room_id)}/state/"
        f"{CALL_MEMBER}/{urllib.parse.quote(key)}"
    )
    try:
        return synapse.request("GET", path, token=user.access_token)
    except AssertionError as exc:  # the helper's answer to any status but 200
        if "-> 404" in str(exc):
            return None
        raise


async def _until_state(
    synapse: SynapseServer, user: MatrixUser, room_id: str, key: str, want_member: bool
) -> tuple[Any, float]:
    started = time.monotonic()
    deadline = started + TIMEOUT_S
    while True:
        state = await asyncio.to_thread(_member_state, synapse, user, room_id, key)
        if bool(state) == want_member:
            return state, time.monotonic() - started
        if time.monotonic() > deadline:
            raise AssertionError(f"call.member {key} still {state!r} after {TIMEOUT_S} s")
        await asyncio.sleep(0.2)


async def _join_link(http: aiohttp.ClientSession, url: str, room_id: str, user: str) -> Any:
    headers = {"Authorization": f"Bearer {admin_token()}"}
    async with http.put(
        f"{url}/api/v1/bridges/general",
        json={"rocketchat_room": "GENERAL", "matrix_room": room_id},
        headers=headers,
    ) as resp:
        assert resp.status == 200, await resp.text()
    async with http.post(
        f"{url}/api/v1/calls",
        # As the App opens the call of a Rocket.Chat video conference.
        json={"external_room": "rocketchat:GENERAL", "external_call_id": "VC_GENERAL"},
        headers=headers,
    ) as resp:
        assert resp.status in (200, 201), await resp.text()
        call = await resp.json()
    async with http.post(
        f"{url}/api/v1/calls/{call['call_id']}/join",
        json={"identity": user, "name": user.title()},
        headers=headers,
    ) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


def _notifications(synapse: SynapseServer, user: MatrixUser, room_id: str) -> list[Any]:
    """The room's MSC4075 call notifications, as a room member reads its timeline."""
    path = f"/_matrix/client/v3/rooms/{urllib.parse.quote(room_id)}/messages?dir=b&limit=50"
    answer = synapse.request("GET", path, token=user.access_token)
    return [e for e in answer["chunk"] if e["type"] == RTC_NOTIFICATION]


async def test_rocketchat_user_is_a_matrixrtc_member_until_they_leave_or_mediafed_dies(
    synapse: SynapseServer, tmp_path: Path, rooms: RoomManager
) -> None:
    assert synapse.appservice is not None
    matrix_user = await asyncio.to_thread(synapse.register_user, "rtcwatcher")
    async with _node(synapse, tmp_path / "data", rooms) as (url, app):
        room_id = await _call_room(synapse, app, matrix_user)
        ghosts: RtcGhosts = app[RTC_GHOSTS_KEY]
        async with aiohttp.ClientSession() as http:
            alice_link = await _join_link(http, url, room_id, "alice")
            bob_link = await _join_link(http, url, room_id, "bob")
        # The link's identity is the ghost's device, as Element Call expects of a
        # member's LiveKit participant.
        parsed = parse_ghost_identity(synapse.appservice, alice_link["identity"])
        assert parsed is not None
        user_id, device_id = parsed
        assert user_id == f"@rc_alice:{synapse.server_name}"
        room = rooms.get_or_create(alice_link["room"])

        alice = AiortcParticipant(room, alice_link["identity"])
        await alice.join()
        key = call_member_state_key(user_id, device_id)
        content, _ = await _until_state(synapse, matrix_user, room_id, key, want_member=True)
        assert content["device_id"] == device_id
        assert content["focus_active"] == {"type": "livekit", "focus_selection": "multi_sfu"}
        assert content["foci_preferred"][0]["livekit_service_url"] == url
        assert (content["application"], content["call_id"], content["scope"]) == (
            "m.call",
            "",
            "m.room",
        )
        # The call Rocket.Chat started rings the Matrix user (a room of two, the
        # bridge bot aside), from Alice's ghost, about her membership.
        deadline = time.monotonic() + TIMEOUT_S
        while not (found := await asyncio.to_thread(_notifications, synapse, matrix_user, room_id)):
            assert time.monotonic() < deadline, "no call notification in the room"
            await asyncio.sleep(0.2)
        [notification] = found
        assert notification["sender"] == user_id
        assert notification["content"]["notification_type"] == "ring"
        assert notification["content"]["m.relates_to"]["rel_type"] == "m.reference"
        # Kept while she stays (longer than the delay of the delayed leave).
        await asyncio.sleep(LEAVE_DELAY_S * 1.5)
        assert await asyncio.to_thread(_member_state, synapse, matrix_user, room_id, key)
        await alice.close()
        await _until_state(synapse, matrix_user, room_id, key, want_member=False)

        # A crash: nothing refreshes or removes Bob's membership; the homeserver's
        # delayed leave does, within its delay.
        bob = AiortcParticipant(room, bob_link["identity"])
        await bob.join()
        bob_ghost = parse_ghost_identity(synapse.appservice, bob_link["identity"])
        assert bob_ghost is not None
        bob_key = call_member_state_key(*bob_ghost)
        await _until_state(synapse, matrix_user, room_id, bob_key, want_member=True)
        await ghosts.wait_published(bob_link["identity"])
        await ghosts.abandon()
        _, took_s = await _until_state(synapse, matrix_user, room_id, bob_key, want_member=False)
        assert took_s > LEAVE_DELAY_S / 2, f"removed after {took_s:.1f} s: not by the delay"
        assert took_s < LEAVE_DELAY_S + 10
        await bob.close()


async def test_a_rocketchat_call_in_a_direct_room_rings_a_classic_client_that_joins_it(
    synapse: SynapseServer, tmp_path: Path, rooms: RoomManager
) -> None:
    """A classic client (no MatrixRTC) gets an ``m.call.invite`` from the Rocket.Chat
    caller's ghost; answering it puts it in the same call, both ways; the
    Rocket.Chat user hanging up hangs it up."""
    assert synapse.appservice is not None
    classic = await asyncio.to_thread(synapse.register_user, "classicuser")
    async with _node(synapse, tmp_path / "data", rooms) as (url, app):
        room_id = await _call_room(synapse, app, classic)
        client = MatrixClient(synapse, classic, room_id)
        await client.start()
        callee = MatrixCaller()
        alice: AiortcParticipant | None = None
        try:
            async with aiohttp.ClientSession() as http:
                link = await _join_link(http, url, room_id, "alice")
            ghost, _device = parse_ghost_identity(synapse.appservice, link["identity"]) or ("", "")
            alice = AiortcParticipant(rooms.get_or_create(link["room"]), link["identity"])
            await alice.join()
            await alice.publish(PatternVideoTrack(RED), ToneAudioTrack())

            def invites() -> list[dict[str, Any]]:
                return [
                    e for e in client.events if e["type"] == voip.INVITE and e["sender"] == ghost
                ]

            await client.until(lambda: bool(invites()), "the ghost's m.call.invite")
            [invite] = invites()
            content = invite["content"]
            assert content["invitee"] == classic.user_id
            assert content["version"] == "1" and content["lifetime"] > 0
            call_id = content["call_id"]

            # the classic client answers with its own camera and microphone
            pc = callee.pc
            await pc.setRemoteDescription(RTCSessionDescription(content["offer"]["sdp"], "offer"))
            pc.addTrack(PatternVideoTrack(GREEN))
            pc.addTrack(ToneAudioTrack())
            await pc.setLocalDescription(await pc.createAnswer())
            await client.send(
                voip.ANSWER,
                {
                    "call_id": call_id,
                    "party_id": classic.device_id,
                    "version": "1",
                    "answer": {"type": "answer", "sdp": pc.localDescription.sdp},
                },
            )
            await client.until(
                lambda: bool(client.received(voip.SELECT_ANSWER, call_id)), "select_answer"
            )
            [selected] = client.received(voip.SELECT_ANSWER, call_id)
            assert selected["content"]["selected_party_id"] == classic.device_id

            # one call: the classic user sees Alice, Alice sees the classic user
            await wait_for(lambda: callee.sees(RED), timeout=TIMEOUT_S)
            await wait_for(
                lambda: any(
                    v.frames >= 5 and close_to(v.colour, GREEN) for v in alice.video.values()
                ),
                timeout=TIMEOUT_S,
            )
            await wait_for(
                lambda: any(a.frames > 10 for a in callee.audio.values()), timeout=TIMEOUT_S
            )
            await wait_for(
                lambda: any(a.frames > 10 for a in alice.audio.values()), timeout=TIMEOUT_S
            )

            # Alice hangs up in Rocket.Chat: nobody is left, the bridge hangs up
            await alice.close()
            alice = None
            await client.until(lambda: bool(client.received(voip.HANGUP, call_id)), "the hangup")
        finally:
            if alice is not None:
                await alice.close()
            await callee.close()
            await client.close()
