"""The LiveKit signal handler: sequences of ``SignalRequest`` frames against a live room.

A real room (``mediafed.media``, its UDP socket on 127.0.0.2: run inside
``scripts/in-netns``) holds a host participant publishing VP8 video and Opus audio.
Each input joins one more participant with the grants its first byte names, hands its
frames to the ``/rtc`` endpoint's frame handler one by one (what the WebSocket pump
does with each binary message), then leaves. A frame must be answered, refused with a
``RequestResponse``, or end the session with a close code; any other exception, or an
error mediafed logged with a traceback, is a crash.

Input: ``[grants u8]`` then frames, each ``[length u16][SignalRequest bytes]``. Track
sids ``T0``/``T1`` in subscription, track settings and mute requests stand for the
host's tracks (their real sids are random).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fuzz import _common

with _common.instrumented(__name__ == "__main__"):
    _common.load_native()
    from livekit.protocol import rtc

    from fuzz.read_loop import OFFER, Listener
    from mediafed import media
    from mediafed.config import load_config
    from mediafed.signal.livekit import translate
    from mediafed.signal.livekit.peer import (
        CLOSE_INVALID,
        CLOSE_POLICY,
        CLOSE_UNSUPPORTED,
        SignalOptions,
        SignalPeer,
    )
    from mediafed.signal.livekit.rtc import RtcEndpoint, _join_response
    from mediafed.signal.livekit.tokens import Claims, VideoGrant
    from mediafed.worker import Worker


HOST = "127.0.0.2"
MAX_FRAMES = 16
SECRET = "s" * 32


class Harness:
    def __init__(self) -> None:
        self.config = load_config(
            environ={
                "MEDIAFED_SERVER_BIND": HOST,
                "MEDIAFED_RTC_UDP_PORT": "0",
                "MEDIAFED_RTC_ICE_TCP": "false",
                "MEDIAFED_RTC_NODE_IP": HOST,
                "MEDIAFED_KEYS": "k1: " + SECRET,
            }
        )
        self.worker = Worker.from_config(self.config)
        self.rooms = self.worker.rooms
        _common.run_async(self.worker.start())
        self.endpoint = RtcEndpoint(self.config.keys, self.rooms, SignalOptions())
        self.room = self.rooms.get_or_create("fuzz")
        host = _common.run_async(self.room.join("host", listener=Listener()))
        _common.run_async(host.answer_publisher_offer(OFFER))
        self.track_sids = {f"T{i}": sid for i, sid in enumerate(host.published)}
        self.count = 0


_harness: Harness | None = None


def harness() -> Harness:
    global _harness
    if _harness is None:
        _harness = Harness()
    return _harness


def _claims(identity: str, grants: int) -> Claims:
    video = VideoGrant(
        room_join=True,
        room="fuzz",
        can_publish=bool(grants & 1),
        can_subscribe=bool(grants & 2),
        can_publish_data=bool(grants & 4),
        can_update_own_metadata=bool(grants & 8),
        hidden=bool(grants & 16),
        can_publish_sources=("camera", "microphone") if grants & 32 else (),
    )
    return Claims(
        api_key="k1",
        identity=identity,
        expires_at=time.time() + 600,
        video=video,
        name=identity,
        metadata="",
        attributes={"a": "b"} if grants & 64 else {},
    )


def _real_sids(h: Harness, frame: bytes) -> bytes:
    """Put the host's track sids where the frame says ``T0``/``T1``."""
    if b"T" not in frame:
        return frame
    request = rtc.SignalRequest()
    try:
        request.ParseFromString(frame)
    except Exception:
        return frame  # the handler reports malformed frames itself
    sids = h.track_sids

    def swap(values: Any) -> None:
        for i, value in enumerate(values):
            values[i] = sids.get(value, value)

    which = request.WhichOneof("message")
    if which == "subscription":
        swap(request.subscription.track_sids)
        for entry in request.subscription.participant_tracks:
            swap(entry.track_sids)
    elif which == "track_setting":
        swap(request.track_setting.track_sids)
    elif which == "mute":
        request.mute.sid = sids.get(request.mute.sid, request.mute.sid)
    else:
        return frame
    return request.SerializeToString()


async def _session(h: Harness, cursor: _common.Cursor) -> None:
    h.count += 1
    claims = _claims(f"p{h.count}", cursor.u8())
    peer = SignalPeer(
        keys=h.config.keys,
        options=h.endpoint.options,
        claims=claims,
        room=h.room,
        on_finished=h.endpoint.peers.discard,
    )
    outbox: asyncio.Queue[bytes | None] = asyncio.Queue()
    peer._outbox = outbox  # what attach does, without a WebSocket
    session = await h.room.join(
        claims.identity,
        name=claims.name,
        attributes=translate.attributes_of(claims.attributes),
        permission=media.Permission(**translate.permission_kwargs(claims)),
        listener=peer,
    )
    peer.session = session
    h.endpoint.peers.add(peer)
    peer.go_live(_join_response(peer, session, h.endpoint.turn_servers))
    try:
        for _ in range(MAX_FRAMES):
            if not cursor or peer.finished:
                break
            close = await h.endpoint._handle_frame(peer, _real_sids(h, cursor.blob()))
            if close is not None:
                code, message = close
                assert code in (CLOSE_UNSUPPORTED, CLOSE_INVALID, CLOSE_POLICY) and message, close
                break
            await asyncio.sleep(0)
    finally:
        await peer.end("fuzz input done")
        await asyncio.sleep(0)
    while not outbox.empty():
        frame = outbox.get_nowait()
        if frame is not None:
            rtc.SignalResponse.FromString(frame)  # what we send must parse


def test_one_input(data: bytes) -> None:
    h = harness()
    _common.run_async(_session(h, _common.Cursor(data)))
    _common.settle(2)
    _common.TRAP.check()


def main() -> None:
    harness()
    _common.run(test_one_input)


if __name__ == "__main__":
    main()
