"""Classic Matrix calls answered by the bridge, driven event by event against the
real media core (RoomManager on loopback, aiortc callers) with the homeserver
side recorded: the answer and what follows it, bad input, timeouts.

The same call against a real Synapse, with media both ways, is in
test_matrix_calls_synapse.py (which reuses the helpers here).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)

from mediafed.matrix import voip
from mediafed.matrix.call import (
    MAX_REMOTE_CANDIDATES,
    TRANSITIONS,
    CallState,
    MatrixCall,
    mediafed_room_for,
    offered_tracks,
)
from mediafed.matrix.calls import MAX_CALLS_PER_CALLER, MatrixCallBridge
from mediafed.matrix.registration import Registration, make_registration
from mediafed.media import RoomManager, TrackSource
from mediafed.worker import Worker
from tests.support.aiortc_client import (
    AiortcParticipant,
    PatternVideoTrack,
    ReceivedAudio,
    ReceivedVideo,
    ToneAudioTrack,
    dominant_colour,
    wait_for,
)
from tests.support.media import media_config

TIMEOUT_S = 30.0


@dataclass
class Sent:
    room_id: str
    user_id: str
    type: str
    content: dict[str, Any]


class RecordingSender:
    """The homeserver side of the bridge for tests without Synapse: records what
    the bridge sends and answers membership from a table."""

    def __init__(self, members: Mapping[str, Mapping[str, str]]) -> None:
        self.members = {room: dict(people) for room, people in members.items()}
        self.sent: list[Sent] = []
        self.fail_calls: set[str] = set()
        self._changed = asyncio.Condition()

    async def send(
        self, room_id: str, user_id: str, event_type: str, content: Mapping[str, Any]
    ) -> None:
        if content.get("call_id") in self.fail_calls:
            raise ConnectionError("homeserver unreachable (test)")
        self.sent.append(Sent(room_id, user_id, event_type, dict(content)))
        async with self._changed:
            self._changed.notify_all()

    async def joined_members(self, room_id: str) -> Mapping[str, str] | None:
        return self.members.get(room_id)

    def of(self, event_type: str, call_id: str | None = None) -> list[Sent]:
        return [
            s
            for s in self.sent
            if s.type == event_type and (call_id is None or s.content["call_id"] == call_id)
        ]

    async def until(self, predicate: Callable[[], bool], what: str) -> None:
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(predicate), TIMEOUT_S)
            except TimeoutError:
                raise AssertionError(f"timed out waiting for {what}; sent {self.sent}") from None


class MatrixCaller:
    """One RTCPeerConnection both ways, MAX_BUNDLE, no ICE servers."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection(
            RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )
        self.video: dict[str, ReceivedVideo] = {}
        self.audio: dict[str, ReceivedAudio] = {}
        self.track_streams: dict[str, str] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self.pc.on("track", self._on_track)

    async def offer(self, *tracks: MediaStreamTrack) -> str:
        for track in tracks:
            self.pc.addTrack(track)
        offer = await self.pc.createOffer()
        await self.pc.setLocalDescription(offer)
        sdp: str = self.pc.localDescription.sdp
        return sdp

    def stream_id(self) -> str:
        """The msid stream id of what this caller sends (aiortc: one per connection)."""
        return offered_tracks(self.pc.localDescription.sdp)[0].stream_id

    async def accept_answer(self, sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp, "answer"))

    async def answer_offer(self, sdp: str) -> str:
        # aiortc starts receivers of a renegotiation only once connected.
        while self.pc.connectionState not in ("connected", "failed", "closed"):
            await asyncio.sleep(0.02)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp, "offer"))
        answer = await self.pc.createAnswer()
        await self.pc.setLocalDescription(answer)
        out: str = self.pc.localDescription.sdp
        return out

    def _on_track(self, track: MediaStreamTrack) -> None:
        self._tasks.append(asyncio.create_task(self._consume(track)))

    async def _consume(self, track: MediaStreamTrack) -> None:
        if track.kind == "video":
            video = self.video.setdefault(track.id, ReceivedVideo())
            while True:
                try:
                    frame = await track.recv()
                except Exception:
                    return
                video.frames += 1
                video.colour = dominant_colour(frame.to_ndarray(format="rgb24"))
        else:
            audio = self.audio.setdefault(track.id, ReceivedAudio())
            while True:
                try:
                    frame = await track.recv()
                except Exception:
                    return
                samples = frame.to_ndarray().astype(np.float64)
                audio.frames += 1
                audio.peak_rms = max(audio.peak_rms, float(np.sqrt(np.mean(samples**2))))

    def sees(self, colour: tuple[int, int, int], frames: int = 5) -> bool:
        return any(v.frames >= frames and close_to(v.colour, colour) for v in self.video.values())

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.pc.close()


def close_to(colour: tuple[int, int, int], expected: tuple[int, int, int]) -> bool:
    return all(abs(a - b) < 45 for a, b in zip(colour, expected, strict=True))


# -- the tests ------------------------------------------------------------------

DOMAIN = "hs.test"
ROOM = "!call-room:hs.test"
OTHER_ROOM = "!other-room:hs.test"
CALLER = "@dave:hs.test"
BOT = f"@mediafed:{DOMAIN}"
GHOST = f"@rc_erin:{DOMAIN}"
RED = (220, 0, 0)


def _registration() -> Registration:
    registration = make_registration(url="http://127.0.0.1:1", domain=DOMAIN)
    assert registration.bot_user_id == BOT
    return registration


@dataclass
class Harness:
    rooms: RoomManager
    sender: RecordingSender
    bridge: MatrixCallBridge
    started: list[tuple[str, str]]
    callers: list[MatrixCaller]
    event_ids: Iterator[int] = field(default_factory=itertools.count)

    async def invite(
        self,
        call_id: str,
        *,
        room_id: str = ROOM,
        sender: str = CALLER,
        party_id: str = "DAVEDEV",
        version: object = "1",
        invitee: str | None = BOT,
        age_ms: int = 120,
        lifetime: int = 60000,
        sdp: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> MatrixCaller:
        caller = MatrixCaller()
        self.callers.append(caller)
        if sdp is None:
            sdp = await caller.offer(PatternVideoTrack(RED), ToneAudioTrack())
        content: dict[str, Any] = {
            "call_id": call_id,
            "party_id": party_id,
            "version": version,
            "lifetime": lifetime,
            "offer": {"type": "offer", "sdp": sdp},
        }
        if invitee is not None:
            content["invitee"] = invitee
        if metadata is not None:
            content["sdp_stream_metadata"] = metadata
        await self.event(voip.INVITE, content, room_id=room_id, sender=sender, age_ms=age_ms)
        return caller

    async def event(
        self,
        event_type: str,
        content: Mapping[str, Any],
        *,
        room_id: str = ROOM,
        sender: str = CALLER,
        age_ms: int = 100,
        event_id: str | None = None,
    ) -> None:
        raw = {
            "type": event_type,
            "room_id": room_id,
            "sender": sender,
            "event_id": event_id or f"$event{next(self.event_ids)}",
            "content": dict(content),
            "unsigned": {"age": age_ms},
        }
        await self.bridge.on_call_event(
            room_id, sender, voip.parse_call_event(event_type, raw["content"]), raw
        )

    def call(self, call_id: str, room_id: str = ROOM) -> MatrixCall:
        return self.bridge.calls[(room_id, call_id)]

    def room_identities(self, room_id: str = ROOM) -> list[str]:
        room = self.rooms.get(mediafed_room_for(room_id))
        return [] if room is None else [p.identity for p in room.participants()]


@pytest.fixture
async def harness(rooms: RoomManager) -> AsyncIterator[Harness]:
    sender = RecordingSender(
        {
            ROOM: {CALLER: "Dave", BOT: "mediafed bridge"},
            OTHER_ROOM: {CALLER: "Dave", BOT: "", GHOST: "Erin (Rocket.Chat)"},
        }
    )
    started: list[tuple[str, str]] = []
    bridge = MatrixCallBridge(
        rooms,
        _registration(),
        sender,
        on_call_started=lambda room, name: started.append((room, name)),
        connect_timeout_s=20.0,
    )
    h = Harness(rooms, sender, bridge, started, [])
    try:
        yield h
    finally:
        await bridge.close()
        for caller in h.callers:
            await caller.close()


@pytest.mark.slow
async def test_invite_is_answered_as_a_real_callee(harness: Harness) -> None:
    caller = await harness.invite("c1")
    sender = harness.sender
    await sender.until(lambda: bool(sender.of(voip.CANDIDATES, "c1")), "answer and candidates")
    [answer] = sender.of(voip.ANSWER, "c1")
    assert (answer.room_id, answer.user_id) == (ROOM, BOT)
    party = answer.content["party_id"]
    assert len(party) == 8 and party.isalnum()
    assert answer.content["version"] == "1"
    assert answer.content["answer"]["type"] == "answer"
    assert "a=ice-lite" in answer.content["answer"]["sdp"]
    assert isinstance(answer.content["sdp_stream_metadata"], dict)
    [candidates] = sender.of(voip.CANDIDATES, "c1")
    entries = candidates.content["candidates"]
    assert candidates.content["party_id"] == party
    assert [e["candidate"] for e in entries[:-1]] and all(
        e["candidate"].startswith("candidate:") for e in entries[:-1]
    )
    assert entries[-1]["candidate"] == ""  # end-of-candidates, sent as the spec asks
    assert {"sdpMid", "sdpMLineIndex"} <= set(entries[-1])
    # the caller is in the mediafed room of that Matrix room, named as on Matrix
    room = harness.rooms.get(mediafed_room_for(ROOM))
    assert room is not None
    [person] = room.participants()
    assert (person.identity, person.name) == (f"{CALLER}:DAVEDEV", "Dave")
    assert harness.started == [(mediafed_room_for(ROOM), "Dave")]
    # the real connection comes up with that answer
    await caller.accept_answer(answer.content["answer"]["sdp"])
    call = harness.call("c1")
    await wait_for(lambda: call.state is CallState.CONNECTED)
    assert sorted(t.kind.value for t in room.participants()[0].tracks) == ["audio", "video"]


async def test_invite_to_a_ghost_without_invitee_in_a_one_to_one_room(harness: Harness) -> None:
    harness.sender.members[OTHER_ROOM] = {CALLER: "Dave", GHOST: "Erin"}
    await harness.invite("c-ghost", room_id=OTHER_ROOM, invitee=None, version=0, party_id="")
    sender = harness.sender
    await sender.until(lambda: bool(sender.of(voip.ANSWER, "c-ghost")), "the ghost's answer")
    [answer] = sender.of(voip.ANSWER, "c-ghost")
    assert answer.user_id == GHOST
    assert answer.content["version"] == 0  # a version 0 call is answered in version 0


async def test_screenshare_stream_is_published_as_screen_share(harness: Harness) -> None:
    caller = MatrixCaller()
    harness.callers.append(caller)
    sdp = await caller.offer(PatternVideoTrack(RED))
    stream = caller.stream_id()
    await harness.invite(
        "c-screen",
        sdp=sdp,
        metadata={stream: {"purpose": "m.screenshare", "audio_muted": False, "video_muted": True}},
    )
    sender = harness.sender
    await sender.until(lambda: bool(sender.of(voip.ANSWER, "c-screen")), "answer")
    room = harness.rooms.get(mediafed_room_for(ROOM))
    assert room is not None
    [track] = room.participants()[0].tracks
    assert (track.source, track.muted) == (TrackSource.SCREEN_SHARE, True)
    # the caller unmutes: m.call.sdp_stream_metadata_changed reaches the room
    await harness.event(
        voip.SDP_STREAM_METADATA_CHANGED,
        {
            "call_id": "c-screen",
            "party_id": "DAVEDEV",
            "version": "1",
            "sdp_stream_metadata": {
                stream: {"purpose": "m.screenshare", "audio_muted": False, "video_muted": False}
            },
        },
    )
    await wait_for(lambda: not room.participants()[0].tracks[0].muted)


def _v1(call_id: str, **extra: Any) -> dict[str, Any]:
    return {"call_id": call_id, "party_id": "DAVEDEV", "version": "1", **extra}


async def test_select_answer_for_another_party_ends_quietly(harness: Harness) -> None:
    await harness.invite("c-sel")
    sender = harness.sender
    await sender.until(lambda: bool(sender.of(voip.CANDIDATES, "c-sel")), "answer")
    ours = sender.of(voip.ANSWER, "c-sel")[0].content["party_id"]
    await harness.event(voip.SELECT_ANSWER, _v1("c-sel", selected_party_id=ours))
    await harness.event(voip.SELECT_ANSWER, _v1("c-sel", selected_party_id="SOMEONEELSE"))
    call = harness.call("c-sel")
    assert await asyncio.wait_for(call.done, TIMEOUT_S) == "answered elsewhere"
    assert harness.room_identities() == []
    assert not sender.of(voip.HANGUP, "c-sel") and not sender.of(voip.REJECT, "c-sel")


async def test_caller_hangup_leaves_the_room(harness: Harness) -> None:
    await harness.invite("c-bye")
    sender = harness.sender
    await sender.until(lambda: bool(sender.of(voip.CANDIDATES, "c-bye")), "answer")
    assert harness.room_identities() == [f"{CALLER}:DAVEDEV"]
    call = harness.call("c-bye")
    await harness.event(voip.HANGUP, _v1("c-bye", reason="user_hangup"))
    assert "caller hung up" in await asyncio.wait_for(call.done, TIMEOUT_S)
    assert harness.room_identities() == []
    assert not sender.of(voip.HANGUP, "c-bye")
    assert "c-bye" not in {k[1] for k in harness.bridge.calls}


async def test_hangup_before_answer_sends_nothing(harness: Harness) -> None:
    caller = MatrixCaller()
    harness.callers.append(caller)
    sdp = await caller.offer(PatternVideoTrack(RED))
    await harness.invite("c-early", sdp=sdp)
    call = harness.call("c-early")
    # delivered before the call's task had its turn to answer
    await harness.event(voip.HANGUP, _v1("c-early"))
    assert await asyncio.wait_for(call.done, TIMEOUT_S) == "caller hung up before the answer"
    assert [s for s in harness.sender.sent if s.content["call_id"] == "c-early"] == []
    assert harness.room_identities() == []


async def test_media_never_connecting_is_hung_up_with_ice_timeout(rooms: RoomManager) -> None:
    sender = RecordingSender({ROOM: {CALLER: "Dave", BOT: ""}})
    bridge = MatrixCallBridge(rooms, _registration(), sender, connect_timeout_s=0.5)
    h = Harness(rooms, sender, bridge, [], [])
    try:
        await h.invite("c-timeout")  # the caller never applies our answer
        await sender.until(lambda: bool(sender.of(voip.HANGUP, "c-timeout")), "our hangup")
        [hangup] = sender.of(voip.HANGUP, "c-timeout")
        assert hangup.content["reason"] == "ice_timeout"
        assert h.room_identities() == []
    finally:
        await bridge.close()
        for caller in h.callers:
            await caller.close()


async def test_media_failure_is_hung_up_with_ice_failed() -> None:
    # No ICE consent for 1 s fails the connection (RFC 7675); the call is hung up.
    worker = Worker.from_config(media_config(consent_timeout_s=1))  # type: ignore[arg-type]
    manager = worker.rooms
    await worker.start()
    sender = RecordingSender({ROOM: {CALLER: "Dave", BOT: ""}})
    bridge = MatrixCallBridge(manager, _registration(), sender, connect_timeout_s=30.0)
    h = Harness(manager, sender, bridge, [], [])
    try:
        await h.invite("c-fail")  # the caller never gets its media through
        await sender.until(lambda: bool(sender.of(voip.HANGUP, "c-fail")), "our hangup")
        assert sender.of(voip.HANGUP, "c-fail")[0].content["reason"] == "ice_failed"
        assert h.room_identities() == []
    finally:
        await bridge.close()
        for caller in h.callers:
            await caller.close()
        await worker.stop()


@pytest.mark.slow
async def test_caller_connection_closing_is_hung_up(harness: Harness) -> None:
    caller = await harness.invite("c-gone")
    sender = harness.sender
    await sender.until(lambda: bool(sender.of(voip.ANSWER, "c-gone")), "answer")
    await caller.accept_answer(sender.of(voip.ANSWER, "c-gone")[0].content["answer"]["sdp"])
    call = harness.call("c-gone")
    await wait_for(lambda: call.state is CallState.CONNECTED)
    await caller.pc.close()  # DTLS close_notify: the tab went away without a hangup
    await sender.until(lambda: bool(sender.of(voip.HANGUP, "c-gone")), "our hangup")
    assert sender.of(voip.HANGUP, "c-gone")[0].content["reason"] == "user_hangup"
    assert harness.room_identities() == []


async def test_room_ending_hangs_up_with_user_hangup(harness: Harness) -> None:
    await harness.invite("c-room")
    sender = harness.sender
    await sender.until(lambda: bool(sender.of(voip.CANDIDATES, "c-room")), "answer")
    await harness.rooms.delete(mediafed_room_for(ROOM), "deleted by an operator")
    await sender.until(lambda: bool(sender.of(voip.HANGUP, "c-room")), "our hangup")
    assert sender.of(voip.HANGUP, "c-room")[0].content["reason"] == "user_hangup"


async def test_offer_we_cannot_accept_is_rejected(harness: Harness) -> None:
    sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\n"
    await harness.invite("c-bad-sdp", sdp=sdp)
    sender = harness.sender
    await sender.until(lambda: bool(sender.of(voip.REJECT, "c-bad-sdp")), "our reject")
    assert not sender.of(voip.ANSWER, "c-bad-sdp")
    assert harness.room_identities() == []


async def test_bad_input_touches_no_other_call(harness: Harness) -> None:
    await harness.invite("good")
    sender = harness.sender
    await sender.until(lambda: bool(sender.of(voip.CANDIDATES, "good")), "the good call's answer")
    good = harness.call("good")
    # invites the bridge must leave alone
    await harness.invite("for-someone-else", invitee="@frank:hs.test")
    await harness.invite("outside-namespace", invitee="@rc_erin:other.server")
    await harness.invite("too-old", age_ms=58_000)
    await harness.invite("ghost-not-in-room", invitee=GHOST)
    await harness.invite("bridge-not-in-room", room_id="!elsewhere:hs.test")
    await harness.invite("echo", sender=BOT)
    # unknown versions count as "1"
    await harness.invite("v-future", version="2", party_id="DAVEPHONE")
    await sender.until(lambda: bool(sender.of(voip.ANSWER, "v-future")), "v2 answered as v1")
    assert sender.of(voip.ANSWER, "v-future")[0].content["version"] == "1"
    # duplicates: the same invite again, the same event twice
    await harness.invite("good")
    # events for calls we do not have, or not from the caller
    await harness.event(voip.HANGUP, _v1("never-invited"))
    await harness.event(voip.HANGUP, _v1("good"), sender="@mallory:hs.test")
    await harness.event(voip.HANGUP, {**_v1("good"), "party_id": "OTHERDEVICE"})
    # a flood of candidates
    flood = [
        {"candidate": f"candidate:{i} 1 udp 1 127.0.0.1 {10000 + i} typ host", "sdpMid": "0"}
        for i in range(200)
    ]
    for _ in range(5):
        await harness.event(voip.CANDIDATES, _v1("good", candidates=flood))
    await harness.event(voip.CANDIDATES, _v1("good", candidates=flood[:1]), event_id="$same")
    await harness.event(voip.CANDIDATES, _v1("good", candidates=flood[:1]), event_id="$same")
    await wait_for(lambda: good.remote_candidates == MAX_REMOTE_CANDIDATES)

    await sender.until(lambda: bool(sender.of(voip.NEGOTIATE, "good")), "the good call's offer")
    sent_calls = {s.content["call_id"] for s in sender.sent}
    assert sent_calls == {"good", "v-future"}
    # the good call got its answer once, then only an offer for the other caller's tracks
    assert [s.type for s in sender.sent if s.content["call_id"] == "good"] == [
        voip.ANSWER,
        voip.CANDIDATES,
        voip.NEGOTIATE,
    ]
    assert good.state in (CallState.ANSWERED, CallState.CONNECTED)
    assert f"{CALLER}:DAVEDEV" in harness.room_identities()
    assert set(harness.bridge.calls) == {(ROOM, "good"), (ROOM, "v-future")}


async def test_failing_homeserver_ends_only_that_call(harness: Harness) -> None:
    await harness.invite("first")
    sender = harness.sender
    await sender.until(lambda: bool(sender.of(voip.CANDIDATES, "first")), "first answer")
    sender.fail_calls.add("second")
    await harness.invite("second", party_id="OTHER")
    second = harness.call("second")
    reason = await asyncio.wait_for(second.done, TIMEOUT_S)
    assert "could not send m.call.answer" in reason and "homeserver unreachable" in reason
    assert harness.call("first").state in (CallState.ANSWERED, CallState.CONNECTED)
    assert harness.room_identities() == [f"{CALLER}:DAVEDEV"]
    # (the second caller's tracks came and went: the first call may have been re-offered)
    assert not sender.of(voip.HANGUP, "first") and not sender.of(voip.REJECT, "first")


GREEN = (0, 200, 0)
BLUE = (0, 0, 220)


@pytest.mark.slow
async def test_glare_caller_screenshare_and_room_mutes(harness: Harness) -> None:
    sender = harness.sender
    caller = MatrixCaller()
    harness.callers.append(caller)
    sdp = await caller.offer(PatternVideoTrack(RED), ToneAudioTrack())
    usermedia = caller.stream_id()
    await harness.invite("c-glare", sdp=sdp, metadata={usermedia: {"purpose": "m.usermedia"}})
    await sender.until(lambda: bool(sender.of(voip.ANSWER, "c-glare")), "answer")
    await caller.accept_answer(sender.of(voip.ANSWER, "c-glare")[0].content["answer"]["sdp"])
    call = harness.call("c-glare")
    await wait_for(lambda: call.state is CallState.CONNECTED)

    room = harness.rooms.get(mediafed_room_for(ROOM))
    assert room is not None
    alice = AiortcParticipant(room, "alice")
    try:
        await alice.join(name="Alice")
        await alice.publish(PatternVideoTrack(GREEN))
        await sender.until(lambda: bool(sender.of(voip.NEGOTIATE, "c-glare")), "our offer")
        # Glare: the caller ignores our offer and offers a screen share of its own.
        screen = PatternVideoTrack(BLUE)
        caller.pc.addTrack(screen)
        # a browser's getDisplayMedia() stream is a MediaStream of its own
        caller.pc.getTransceivers()[-1].sender._stream_id = "screen-stream"
        offer = await caller.pc.createOffer()
        await caller.pc.setLocalDescription(offer)
        await harness.event(
            voip.NEGOTIATE,
            _v1(
                "c-glare",
                description={"type": "offer", "sdp": caller.pc.localDescription.sdp},
                sdp_stream_metadata={
                    usermedia: {"purpose": "m.usermedia"},
                    "screen-stream": {"purpose": "m.screenshare"},
                },
            ),
        )

        def negotiates(kind: str) -> list[Sent]:
            return [
                s
                for s in sender.of(voip.NEGOTIATE, "c-glare")
                if s.content["description"]["type"] == kind
            ]

        await sender.until(lambda: bool(negotiates("answer")), "our answer to the caller's offer")
        await caller.accept_answer(negotiates("answer")[0].content["description"]["sdp"])
        # the screen share is in the room as a screen share
        await wait_for(
            lambda: any(
                t.source is TrackSource.SCREEN_SHARE
                for p in room.participants()
                if p.identity == f"{CALLER}:DAVEDEV"
                for t in p.tracks
            )
        )
        await wait_for(lambda: any(_sees(v, BLUE) for v in alice.video.values()), timeout=30)
        # the polite side offers again after the glare; the caller takes that one
        await sender.until(lambda: len(negotiates("offer")) >= 2, "our offer again")
        again = negotiates("offer")[-1].content
        answer = await caller.answer_offer(again["description"]["sdp"])
        await harness.event(
            voip.NEGOTIATE, _v1("c-glare", description={"type": "answer", "sdp": answer})
        )
        await wait_for(lambda: caller.sees(GREEN), timeout=30)
        alice_stream = next(iter(again["sdp_stream_metadata"]))
        assert again["sdp_stream_metadata"][alice_stream]["video_muted"] is False

        # alice turns her camera off: the caller is told
        assert alice.session is not None
        [track_sid] = list(alice.session.published)
        alice.session.mute(track_sid, True)
        await sender.until(
            lambda: bool(sender.of(voip.SDP_STREAM_METADATA_CHANGED, "c-glare")), "mute notice"
        )
        [changed] = sender.of(voip.SDP_STREAM_METADATA_CHANGED, "c-glare")
        assert changed.content["sdp_stream_metadata"][alice_stream]["video_muted"] is True
        assert call.state is CallState.CONNECTED
    finally:
        await alice.close()


def _sees(video: ReceivedVideo, colour: tuple[int, int, int]) -> bool:
    return video.frames > 5 and close_to(video.colour, colour)


async def test_one_caller_gets_busy_beyond_the_limit(harness: Harness) -> None:
    sender = harness.sender
    for n in range(MAX_CALLS_PER_CALLER):
        await harness.invite(f"c{n}", party_id=f"DEVICE{n}")
    await sender.until(
        lambda: all(sender.of(voip.ANSWER, f"c{n}") for n in range(MAX_CALLS_PER_CALLER)),
        "every answer",
    )
    await harness.invite("one-too-many", party_id="DEVICEX")
    [busy] = sender.of(voip.HANGUP, "one-too-many")
    assert busy.content["reason"] == "user_busy"
    assert not sender.of(voip.ANSWER, "one-too-many")
    assert len(harness.room_identities()) == MAX_CALLS_PER_CALLER
    # the Rocket.Chat side hears of the call in that room once, not once per call
    assert harness.started == [(mediafed_room_for(ROOM), "Dave")]


async def test_unanswered_negotiate_offer_is_made_again_after_its_lifetime(
    rooms: RoomManager,
) -> None:
    sender = RecordingSender({ROOM: {CALLER: "Dave", BOT: "mediafed bridge"}})
    bridge = MatrixCallBridge(
        rooms, _registration(), sender, connect_timeout_s=20.0, negotiate_lifetime_ms=700
    )
    harness = Harness(rooms, sender, bridge, [], [])
    try:
        caller = await harness.invite("c-lifetime")
        await sender.until(lambda: bool(sender.of(voip.ANSWER, "c-lifetime")), "answer")
        await caller.accept_answer(sender.of(voip.ANSWER, "c-lifetime")[0].content["answer"]["sdp"])
        call = harness.call("c-lifetime")
        await wait_for(lambda: call.state is CallState.CONNECTED)
        room = rooms.get(mediafed_room_for(ROOM))
        assert room is not None
        alice = AiortcParticipant(room, "alice")
        try:
            await alice.join(name="Alice")
            await alice.publish(PatternVideoTrack(GREEN))
            # The caller never answers: after 0.7 s the offer is withdrawn and made again.
            await sender.until(
                lambda: len(sender.of(voip.NEGOTIATE, "c-lifetime")) >= 2, "a second offer"
            )
            offers = sender.of(voip.NEGOTIATE, "c-lifetime")
            assert [o.content["description"]["type"] for o in offers[:2]] == ["offer", "offer"]
            assert offers[0].content["lifetime"] == 700
            # The second offer can still be answered.
            answer = await caller.answer_offer(offers[-1].content["description"]["sdp"])
            await harness.event(
                voip.NEGOTIATE,
                _v1("c-lifetime", description={"type": "answer", "sdp": answer}),
            )
            await wait_for(lambda: caller.sees(GREEN))
        finally:
            await alice.close()
    finally:
        for person in harness.callers:
            await person.close()


def test_the_state_machine_is_one_table() -> None:
    """What each state takes: a live call takes every caller event; a call we placed
    takes, while it rings, the callee's answer, hangup, reject and candidates; only an
    answered, not yet connected call can time out or become connected; an ended one
    takes nothing."""
    from mediafed.matrix import call as call_module

    states_of: dict[type, set[CallState]] = {}
    for state, kind in TRANSITIONS:
        states_of.setdefault(kind, set()).add(state)
    live = {CallState.ANSWERED, CallState.CONNECTED}
    ringing = {CallState.INVITING}
    for event in (voip.Hangup, voip.Reject, voip.Candidates):
        assert states_of[event] == live | ringing, event
    for event in (voip.Negotiate, voip.SelectAnswer):
        assert states_of[event] == live, event
    assert states_of[voip.Answer] == ringing
    assert states_of[call_module._InviteExpired] == ringing
    assert states_of[call_module._ConnectTimeout] == {CallState.ANSWERED}
    assert states_of[call_module._MediaConnected] == {CallState.ANSWERED}
    assert all(state is not CallState.ENDED for state, _ in TRANSITIONS)
