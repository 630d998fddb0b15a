"""A Python ``livekit`` SDK participant that an operator manages through RoomService,
run inside a veth test host by ``test_roomservice.py``.

Usage: ``lk_sdk_managed.py URL TOKEN SECONDS``. It publishes a camera and a
microphone, answers the RPC methods ``greet`` (with a greeting) and ``refuse``
(with error 2001), and reports as JSON lines on stdout what it is told: its
tracks unpublished or muted by the server, the room's metadata, its own
metadata, attributes and permission, and data packets. The test decides.
"""

from __future__ import annotations

import asyncio
import json
import sys

import numpy as np
from livekit import rtc

WIDTH, HEIGHT = 320, 240


def say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


async def pump_video(source: rtc.VideoSource, stop: asyncio.Event) -> None:
    frame_no = 0
    while not stop.is_set():
        pixels = np.full((HEIGHT, WIDTH, 4), 200, dtype=np.uint8)
        x = (frame_no * 4) % WIDTH
        pixels[:, x : x + 8] = (20, 20, 20, 255)
        source.capture_frame(
            rtc.VideoFrame(WIDTH, HEIGHT, rtc.VideoBufferType.RGBA, pixels.tobytes())
        )
        frame_no += 1
        await asyncio.sleep(1 / 15)


async def pump_audio(source: rtc.AudioSource, stop: asyncio.Event) -> None:
    rate, samples = 48000, 480
    t = 0
    while not stop.is_set():
        n = np.arange(t, t + samples)
        wave = (np.sin(2 * np.pi * 440.0 * n / rate) * 8000).astype(np.int16)
        await source.capture_frame(rtc.AudioFrame(wave.tobytes(), rate, 1, samples))
        t += samples


async def main(url: str, token: str, seconds: float) -> None:
    room = rtc.Room()

    @room.on("local_track_unpublished")
    def _unpublished(publication: rtc.LocalTrackPublication) -> None:
        say(event="local_track_unpublished", sid=publication.sid)

    @room.on("track_muted")
    def _muted(participant: rtc.Participant, publication: rtc.TrackPublication) -> None:
        if participant.identity == room.local_participant.identity:
            say(event="local_track_muted", sid=publication.sid)

    @room.on("room_metadata_changed")
    def _room_metadata(old: str, new: str) -> None:
        say(event="room_metadata", metadata=new)

    @room.on("participant_metadata_changed")
    def _metadata(participant: rtc.Participant, old: str, new: str) -> None:
        say(event="metadata", identity=participant.identity, metadata=new)

    @room.on("participant_attributes_changed")
    def _attributes(changed: dict[str, str], participant: rtc.Participant) -> None:
        say(event="attributes", identity=participant.identity, attributes=participant.attributes)

    @room.on("participant_permissions_changed")
    def _permissions(participant: rtc.Participant, permission: object) -> None:
        permission = participant.permissions
        say(
            event="permissions",
            identity=participant.identity,
            can_publish=permission.can_publish,
            can_subscribe=permission.can_subscribe,
        )

    @room.on("data_received")
    def _data(packet: rtc.DataPacket) -> None:
        say(
            event="data",
            payload=packet.data.decode(),
            topic=packet.topic,
            kind=rtc.DataPacketKind.Name(packet.kind),
            sender=packet.participant.identity if packet.participant else "",
        )

    try:
        await room.connect(url, token)
    except rtc.ConnectError as exc:
        say(event="refused", error=str(exc))
        return
    me = room.local_participant

    @me.register_rpc_method("greet")
    async def _greet(call: rtc.RpcInvocationData) -> str:
        say(event="rpc", method="greet", caller=call.caller_identity, payload=call.payload)
        return f"hello {call.payload}"

    @me.register_rpc_method("refuse")
    async def _refuse(call: rtc.RpcInvocationData) -> str:
        raise rtc.RpcError(2001, "not today", "try tomorrow")

    stop = asyncio.Event()
    camera = rtc.VideoSource(WIDTH, HEIGHT)
    mic = rtc.AudioSource(48000, 1)
    pumps = [
        asyncio.ensure_future(pump_video(camera, stop)),
        asyncio.ensure_future(pump_audio(mic, stop)),
    ]
    video = await me.publish_track(
        rtc.LocalVideoTrack.create_video_track("camera", camera),
        rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA, simulcast=False),
    )
    audio = await me.publish_track(
        rtc.LocalAudioTrack.create_audio_track("microphone", mic),
        rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE),
    )
    say(event="published", camera=video.sid, microphone=audio.sid)
    await asyncio.sleep(seconds)
    stop.set()
    for pump in pumps:
        await pump
    await room.disconnect()
    say(event="done")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
