"""Active speakers, from real audio: who is loud is named, who is silent is not.

Two aiortc participants publish Opus with the RFC 6464 audio-level header
extension (aiortc computes it from the samples it encodes): one a loud tone,
one digital silence. The room core reads the levels on the receive path and
ranks speakers; a LiveKit client on ``/rtc`` sees ``speakers_changed``. Then
the two swap, and the speaker list follows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
import numpy as np
import pytest
from av import AudioFrame
from livekit.protocol import models, rtc

from mediafed.media import events
from tests.support.aiortc_client import AiortcParticipant, ToneAudioTrack, wait_for
from tests.support.livekit_node import live_node

pytestmark = pytest.mark.slow


class SwitchableTone(ToneAudioTrack):
    """The 440 Hz tone while ``loud``; digital silence otherwise."""

    def __init__(self, loud: bool) -> None:
        super().__init__()
        self.loud = loud

    async def recv(self) -> AudioFrame:
        frame = await super().recv()
        if self.loud:
            return frame
        silent = AudioFrame.from_ndarray(
            np.zeros_like(frame.to_ndarray()), format="s16", layout=frame.layout.name
        )
        silent.sample_rate = frame.sample_rate
        silent.pts = frame.pts
        silent.time_base = frame.time_base
        return silent


class Watcher:
    """A LiveKit signal client that records every ``speakers_changed`` it is sent."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.updates: list[list[models.SpeakerInfo]] = []
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        async for message in self.ws:
            if message.type != aiohttp.WSMsgType.BINARY:
                return
            response = rtc.SignalResponse()
            response.ParseFromString(message.data)
            if response.WhichOneof("message") == "speakers_changed":
                self.updates.append(list(response.speakers_changed.speakers))

    def active(self) -> set[str]:
        """Who is speaking now, by participant sid, from the updates so far."""
        speaking: set[str] = set()
        for update in self.updates:
            for speaker in update:
                if speaker.active:
                    speaking.add(speaker.sid)
                else:
                    speaking.discard(speaker.sid)
        return speaking

    def ever_active(self) -> set[str]:
        return {s.sid for update in self.updates for s in update if s.active}


async def _seen_for(predicate: Callable[[], bool], seconds: float) -> None:
    """``predicate`` stays true for ``seconds`` (speakers are ranked every 0.3 s)."""
    loop = asyncio.get_running_loop()
    until = loop.time() + seconds
    while loop.time() < until:
        assert predicate()
        await asyncio.sleep(0.05)


async def test_the_speaking_participant_is_named_and_the_silent_one_is_not() -> None:
    async with live_node("127.0.0.2") as node, aiohttp.ClientSession() as http:
        room = node.rooms.get_or_create("call")
        alice = AiortcParticipant(room, "alice")
        bob = AiortcParticipant(room, "bob")
        ws = await http.ws_connect(f"{node.ws_url}/rtc?access_token={node.token('watcher')}")
        watcher = Watcher(ws)
        watcher.task = asyncio.create_task(watcher.run())
        alice_voice, bob_voice = SwitchableTone(loud=True), SwitchableTone(loud=False)
        try:
            alice_session = await alice.join()
            bob_session = await bob.join()
            await alice.publish(alice_voice)
            await bob.publish(bob_voice)
            tracks = {t.info.participant_identity: t for t in room.tracks.values()}

            def both_arrive() -> bool:
                layers = [tracks[who].best_layer() for who in ("alice", "bob")]
                return all(layer is not None and layer.received > 10 for layer in layers)

            # bob's silence really reaches the room: it is measured, not missing
            await wait_for(both_arrive)
            await wait_for(lambda: watcher.active() == {alice_session.sid}, timeout=10)
            await _seen_for(lambda: watcher.active() == {alice_session.sid}, 1.5)
            assert bob_session.sid not in watcher.ever_active()
            first = next(u for u in watcher.updates if any(s.active for s in u))
            assert [s.sid for s in first if s.active] == [alice_session.sid]
            assert 0.03 < first[0].level <= 1.0  # a loud tone, not the threshold's edge
            # the room's own event says the same to in-process listeners
            heard = [e for e in bob.events if isinstance(e, events.SpeakersChanged)]
            assert heard and {sid for sid, _, on in heard[0].speakers if on} == {alice_session.sid}

            # they swap: alice falls silent, bob speaks
            alice_voice.loud, bob_voice.loud = False, True
            await wait_for(lambda: watcher.active() == {bob_session.sid}, timeout=10)
            last = watcher.updates[-1]
            assert any(s.sid == bob_session.sid and s.active for s in last)
            assert not any(s.sid == alice_session.sid and s.active for s in last)
        finally:
            await ws.close()
            if watcher.task is not None:
                await asyncio.wait_for(watcher.task, 5)
            await alice.close()
            await bob.close()
