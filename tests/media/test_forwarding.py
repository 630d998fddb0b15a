"""End to end through the in-process session API with real aiortc peers.

Video is decoded at the subscriber and checked (the publisher's colour and an
advancing frame counter); audio is decoded and must not be silence.
"""

from __future__ import annotations

import asyncio

import pytest

from mediafed.media import RoomManager, TrackKind, TrackSource, events
from tests.support.aiortc_client import (
    AiortcParticipant,
    PatternVideoTrack,
    ToneAudioTrack,
    wait_for,
)

pytestmark = pytest.mark.slow

RED = (220, 0, 0)
GREEN = (0, 200, 0)
BLUE = (0, 0, 220)


def _close_to(colour: tuple[int, int, int], expected: tuple[int, int, int]) -> bool:
    return all(abs(a - b) < 45 for a, b in zip(colour, expected, strict=True))


def _videos_with(participant: AiortcParticipant, colour: tuple[int, int, int], frames: int) -> bool:
    return any(
        v.frames >= frames and _close_to(v.colour, colour) for v in participant.video.values()
    )


def _advancing(counters: list[int]) -> bool:
    return len(counters) >= 2 and counters[-1] > counters[0]


@pytest.mark.parametrize("codec", ["VP8", "H264"])
async def test_video_and_audio_reach_a_subscriber(rooms: RoomManager, codec: str) -> None:
    room = rooms.get_or_create("call")
    alice = AiortcParticipant(room, "alice", video_codec=codec)
    bob = AiortcParticipant(room, "bob")
    try:
        await alice.join(name="Alice")
        await bob.join(name="Bob")
        await alice.publish(PatternVideoTrack(RED), ToneAudioTrack())
        await wait_for(lambda: _videos_with(bob, RED, 30) and bob.audio)
        await wait_for(lambda: any(a.frames > 50 for a in bob.audio.values()))
        video = next(iter(bob.video.values()))
        assert _advancing(video.counters)
        assert video.width == 320
        assert max(a.peak_rms for a in bob.audio.values()) > 1000  # the tone, not silence
        published = [e.track for e in bob.events if isinstance(e, events.TrackPublished)]
        assert {t.kind for t in published} == {TrackKind.AUDIO, TrackKind.VIDEO}
        assert next(t for t in published if t.kind is TrackKind.VIDEO).mime == f"video/{codec}"
        assert not bob.answer_errors
        # Alice watches nothing of her own.
        assert not alice.video
    finally:
        await alice.close()
        await bob.close()


async def test_three_participants_all_publish_all_subscribe(rooms: RoomManager) -> None:
    room = rooms.get_or_create("trio")
    colours = {"a": RED, "b": GREEN, "c": BLUE}
    people = {name: AiortcParticipant(room, name) for name in colours}
    try:
        for person in people.values():
            await person.join()
        for name, person in people.items():
            await person.publish(PatternVideoTrack(colours[name]), ToneAudioTrack())

        def everyone_sees_everyone() -> bool:
            return all(
                _videos_with(person, colours[other], 15)
                for name, person in people.items()
                for other in colours
                if other != name
            )

        await wait_for(everyone_sees_everyone, timeout=30)
        for name, person in people.items():
            assert len(person.video) == 2, name
            assert len(person.audio) == 2, name
            assert not _videos_with(person, colours[name], 1), "nobody receives themselves"
    finally:
        for person in people.values():
            await person.close()


async def test_screenshare_is_a_second_video_track_with_its_source(rooms: RoomManager) -> None:
    room = rooms.get_or_create("share")
    alice = AiortcParticipant(room, "alice")
    bob = AiortcParticipant(room, "bob")
    try:
        session = await alice.join()
        await bob.join()
        camera = PatternVideoTrack(RED)
        screen = PatternVideoTrack(BLUE, width=640, height=360)
        session.announce_track(camera.id, TrackKind.VIDEO, source=TrackSource.CAMERA)
        session.announce_track(
            screen.id,
            TrackKind.VIDEO,
            source=TrackSource.SCREEN_SHARE,
            name="screen",
            width=640,
            height=360,
        )
        await alice.publish(camera, screen)
        await wait_for(lambda: _videos_with(bob, RED, 10) and _videos_with(bob, BLUE, 10))
        sources = {e.track.source for e in bob.events if isinstance(e, events.TrackPublished)}
        assert sources == {TrackSource.CAMERA, TrackSource.SCREEN_SHARE}
        screen_video = next(v for v in bob.video.values() if _close_to(v.colour, BLUE))
        assert screen_video.width == 640
    finally:
        await alice.close()
        await bob.close()


async def test_late_subscriber_gets_a_keyframe_quickly(rooms: RoomManager) -> None:
    room = rooms.get_or_create("late")
    alice = AiortcParticipant(room, "alice")
    early = AiortcParticipant(room, "early")
    late = AiortcParticipant(room, "late")
    try:
        await alice.join()
        await early.join()
        await alice.publish(PatternVideoTrack(GREEN))
        await wait_for(lambda: _videos_with(early, GREEN, 60))  # well past the first keyframe
        loop = asyncio.get_running_loop()
        joined_at = loop.time()
        await late.join()
        await wait_for(lambda: _videos_with(late, GREEN, 1), timeout=10)
        first = next(iter(late.video.values())).first_frame_at
        # Generous: a keyframe on request arrives within a frame or two; ICE+DTLS come first.
        assert first - joined_at < 3.0
    finally:
        for person in (alice, early, late):
            await person.close()


async def test_unsubscribe_and_mute(rooms: RoomManager) -> None:
    room = rooms.get_or_create("controls")
    alice = AiortcParticipant(room, "alice")
    bob = AiortcParticipant(room, "bob")
    try:
        session = await alice.join()
        bob_session = await bob.join()
        await alice.publish(PatternVideoTrack(RED))
        await wait_for(lambda: _videos_with(bob, RED, 10))
        track_sid = next(iter(session.published))
        session.mute(track_sid, True)
        await wait_for(
            lambda: any(isinstance(e, events.TrackMuted) and e.muted for e in bob.events)
        )
        assert room.tracks[track_sid].info.muted
        bob_session.set_subscribed(track_sid, False)
        assert track_sid not in bob_session.downtracks
        bob_session.set_subscribed(track_sid, True)
        session.mute(track_sid, False)
        assert track_sid in bob_session.downtracks
    finally:
        await alice.close()
        await bob.close()


async def test_leaving_publisher_unpublishes(rooms: RoomManager) -> None:
    room = rooms.get_or_create("bye")
    alice = AiortcParticipant(room, "alice")
    bob = AiortcParticipant(room, "bob")
    try:
        await alice.join()
        await bob.join()
        await alice.publish(PatternVideoTrack(RED))
        await wait_for(lambda: _videos_with(bob, RED, 5))
        await alice.close()
        await wait_for(lambda: any(isinstance(e, events.ParticipantLeft) for e in bob.events))
        assert any(isinstance(e, events.TrackUnpublished) for e in bob.events)
        assert not room.tracks
        assert [p.identity for p in room.participants()] == ["bob"]
    finally:
        await bob.close()
