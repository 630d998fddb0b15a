"""Element Web's own SDK as the classic client: matrix-js-sdk in Chromium (fake
camera and microphone) places a 1:1 call to the bridge bot, and answers the ring
of a call a Rocket.Chat user started, through a real Synapse. Each time the
Matrix user and a participant of the same mediafed room see and hear each other,
and a hangup on either side ends the call on the other.

The client: tests/support/matrix_js.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Page

from mediafed.matrix.appservice import APPSERVICE_KEY
from mediafed.matrix.call import mediafed_room_for
from mediafed.matrix.frontend import CALL_BRIDGE_KEY
from mediafed.media import Room, RoomManager
from tests.matrix.test_matrix_calls_synapse import _room_with_bot
from tests.matrix.test_matrix_rtc_ghosts_synapse import _call_room, _join_link, _node
from tests.support.aiortc_client import (
    AiortcParticipant,
    PatternVideoTrack,
    ToneAudioTrack,
    wait_for,
)
from tests.support.matrix_js import matrix_js_client, until
from tests.support.synapse import MatrixUser, SynapseServer

pytestmark = pytest.mark.slow

TIMEOUT_S = 30.0
RED = (220, 0, 0)


async def _state(page: Page) -> dict[str, Any]:
    state: dict[str, Any] = await page.evaluate("mf.state()")
    return state


async def _media(page: Page) -> dict[str, int]:
    media: dict[str, int] = await page.evaluate("mf.media()")
    return media


async def _sees_and_hears(page: Page, alice: AiortcParticipant) -> None:
    """The Matrix user decodes Alice's video and gets her audio; Alice decodes the
    Matrix user's camera and hears its microphone (Chromium's fake devices)."""
    await until(page, "Alice's video decoded in the browser", _frames_after(page, 0))
    await until(page, "Alice's audio in the browser", _audio_after(page, 0))
    await wait_for(lambda: any(v.frames >= 10 for v in alice.video.values()), timeout=TIMEOUT_S)
    await wait_for(
        lambda: any(a.frames > 10 and a.peak_rms > 100 for a in alice.audio.values()),
        timeout=TIMEOUT_S,
    )
    # and it keeps flowing
    decoded = (await _media(page))["framesDecoded"]
    await until(page, "more of Alice's video", _frames_after(page, decoded + 30))


def _frames_after(page: Page, frames: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return (await _media(page))["framesDecoded"] > frames

    return check


def _audio_after(page: Page, packets: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return (await _media(page))["audioPackets"] > packets

    return check


def _in_state(page: Page, *states: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return (await _state(page))["state"] in states

    return check


async def test_matrix_js_sdk_calls_the_bridge(
    synapse: SynapseServer, tmp_path: Path, rooms: RoomManager
) -> None:
    assert synapse.appservice is not None
    bot = synapse.appservice.bot_user_id
    user = await asyncio.to_thread(synapse.register_user, "jscaller")
    async with _node(synapse, tmp_path / "data", rooms) as (_url, app):
        room_id = await _room_with_bot(synapse, app[APPSERVICE_KEY], user)
        name = mediafed_room_for(room_id)
        alice = AiortcParticipant(rooms.get_or_create(name), "alice")
        await alice.join(name="Alice")
        await alice.publish(PatternVideoTrack(RED), ToneAudioTrack())
        try:
            async with matrix_js_client(synapse.base_url, user, tmp_path / "chromium") as page:
                call_id = await page.evaluate("([r, b]) => mf.place(r, b)", [room_id, bot])
                await until(page, "the call connected", _in_state(page, "connected"))
                bridge = app[CALL_BRIDGE_KEY]
                room = rooms.get(name)
                assert room is not None
                identity = f"{user.user_id}:{user.device_id}"
                assert room.participant(identity) is not None
                assert (room_id, call_id) in bridge.calls
                await _sees_and_hears(page, alice)

                # the Matrix user hangs up: its session leaves, Alice stays
                await page.evaluate("mf.hangup()")
                await wait_for(lambda: room.participant(identity) is None, timeout=TIMEOUT_S)
                assert [p.identity for p in room.participants()] == ["alice"]
                assert (await _state(page))["state"] == "ended"
        finally:
            await alice.close()
            await app[APPSERVICE_KEY].wait_idle()


async def _element_call_user_joins(
    synapse: SynapseServer,
    classic: MatrixUser,
    room_id: str,
    relay_url: str,
    tmp_path: Path,
    classic_page: Page,
    alice: AiortcParticipant,
) -> None:
    """Erin, on the same homeserver, joins the room's call the Element Call way
    (matrix-js-sdk's MatrixRTC session, livekit-client, this relay as her focus):
    she decodes Alice (Rocket.Chat) and the classic caller, both decode her; then
    she leaves the call."""
    erin = await asyncio.to_thread(synapse.register_user, "jsrtc")
    await asyncio.to_thread(synapse.invite, classic, room_id, erin.user_id)
    await asyncio.to_thread(synapse.join, erin, room_id, synapse.server_name)
    # the classic caller's participant: its user id and its call's party id
    [classic_identity] = [i for i in alice.room.sessions if i.startswith(classic.user_id + ":")]
    erin_identity = f"{erin.user_id}:{erin.device_id}"
    async with matrix_js_client(synapse.base_url, erin, tmp_path / "chromium-erin") as page:
        await page.evaluate("([r, f]) => mf.rtc.join(r, f)", [room_id, relay_url])

        async def erin_sees_both() -> bool:
            seen = (await page.evaluate("mf.rtc.seen()")).get(relay_url, {})
            remote = seen.get("remote", {})
            return seen.get("published", 0) >= 2 and all(
                remote.get(who, {}).get("frames", 0) >= 10
                for who in (alice.identity, classic_identity)
            )

        await until(page, "Erin decoding Alice and the classic caller", erin_sees_both)

        async def classic_sees_two() -> bool:
            return (await _media(classic_page))["videoStreamsDecoding"] >= 2

        await until(classic_page, "the classic caller decoding Alice and Erin", classic_sees_two)
        room = alice.room
        erin_video = {
            t.sid
            for t in room.tracks.values()
            if t.info.participant_sid == _sid(room, erin_identity)
        }
        await wait_for(
            lambda: any(v.frames >= 10 for sid, v in alice.video.items() if sid in erin_video),
            timeout=TIMEOUT_S,
        )
        await page.evaluate("mf.rtc.leave()")
        await wait_for(lambda: room.participant(erin_identity) is None, timeout=TIMEOUT_S)


def _sid(room: Room, identity: str) -> str:
    session = room.sessions.get(identity)
    assert session is not None, f"{identity} is not in the room"
    return session.sid


async def test_matrix_js_sdk_answers_the_ring_of_a_rocketchat_call(
    synapse: SynapseServer, tmp_path: Path, rooms: RoomManager
) -> None:
    """A Rocket.Chat user starts a call in a room bridged to a direct Matrix room:
    the Matrix user's Element-Web-like client rings (an incoming call from the
    caller's ghost), answers, and is in the call; an Element Call user joins the
    same call (one call, one room, three kinds of client); the Rocket.Chat user
    leaving last hangs the call up in the browser."""
    assert synapse.appservice is not None
    classic = await asyncio.to_thread(synapse.register_user, "jscallee")
    async with _node(synapse, tmp_path / "data", rooms) as (url, app):
        room_id = await _call_room(synapse, app, classic)
        alice: AiortcParticipant | None = None
        try:
            async with matrix_js_client(synapse.base_url, classic, tmp_path / "chromium") as page:
                async with aiohttp.ClientSession() as http:
                    link = await _join_link(http, url, room_id, "alice")
                alice = AiortcParticipant(rooms.get_or_create(link["room"]), link["identity"])
                await alice.join()
                await alice.publish(PatternVideoTrack(RED), ToneAudioTrack())

                async def rung() -> bool:
                    return (await _state(page))["incoming"] > 0

                await until(page, "an incoming call in matrix-js-sdk", rung)
                await page.evaluate("mf.answer()")
                await until(page, "the answered call connected", _in_state(page, "connected"))
                await _sees_and_hears(page, alice)

                # the third kind joins the same call: an Element Call user of the room
                await _element_call_user_joins(
                    synapse, classic, room_id, url, tmp_path, page, alice
                )

                # Alice hangs up in Rocket.Chat: nobody is left, the call ends
                await alice.close()
                alice = None
                await until(page, "the hangup", _in_state(page, "ended"))
        finally:
            if alice is not None:
                await alice.close()
            await app[APPSERVICE_KEY].wait_idle()
