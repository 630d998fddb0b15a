"""A Python ``livekit`` SDK participant, run inside a veth test host by the e2e tests.

Usage: ``lk_sdk_client.py URL TOKEN ROLE [v0]`` (``v0``: two peer connections,
signal protocol v0; else the SDK's default, one, v1). It publishes synthetic media whose
content tells who sent it — camera frames of one solid colour, a screenshare
of another, a sine tone of a known pitch — and reports, as JSON lines on
stdout, what it receives from the others: mean frame colours, frame sizes,
the dominant audio frequency, mutes and data packets. The test decides.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import numpy as np
from livekit import rtc

WIDTH, HEIGHT = 320, 240
RATE = 48000
PATTERNS = {
    # role: (camera RGB, screenshare RGB, tone Hz)
    "alice": ((220, 40, 40), (40, 200, 60), 440.0),
    "bob": ((40, 60, 220), (230, 210, 40), 880.0),
}
RUN_S = 12.0


def say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def solid(rgb: tuple[int, int, int], frame_no: int) -> rtc.VideoFrame:
    pixels = np.empty((HEIGHT, WIDTH, 4), dtype=np.uint8)
    pixels[:, :] = (*rgb, 255)
    # a moving bar keeps the encoder producing real frames
    x = (frame_no * 4) % WIDTH
    pixels[:, x : x + 8] = (*rgb, 255)
    return rtc.VideoFrame(WIDTH, HEIGHT, rtc.VideoBufferType.RGBA, pixels.tobytes())


async def pump_video(
    source: rtc.VideoSource, rgb: tuple[int, int, int], stop: asyncio.Event
) -> None:
    frame_no = 0
    while not stop.is_set():
        source.capture_frame(solid(rgb, frame_no))
        frame_no += 1
        await asyncio.sleep(1 / 15)


async def pump_audio(source: rtc.AudioSource, hz: float, stop: asyncio.Event) -> None:
    samples = RATE // 100  # 10 ms
    t = 0
    while not stop.is_set():
        n = np.arange(t, t + samples)
        wave = (np.sin(2 * np.pi * hz * n / RATE) * 12000).astype(np.int16)
        frame = rtc.AudioFrame(wave.tobytes(), RATE, 1, samples)
        await source.capture_frame(frame)
        t += samples


async def watch_video(track: rtc.Track, who: str, source: str) -> None:
    count = 0
    async for event in rtc.VideoStream(track):
        count += 1
        if count % 10 == 0:
            rgba = np.frombuffer(
                event.frame.convert(rtc.VideoBufferType.RGBA).data, dtype=np.uint8
            ).reshape(event.frame.height, event.frame.width, 4)
            mean = rgba[..., :3].reshape(-1, 3).mean(axis=0)
            say(
                event="video",
                sender=who,
                source=source,
                frames=count,
                width=event.frame.width,
                height=event.frame.height,
                rgb=[round(float(c)) for c in mean],
            )


async def watch_audio(track: rtc.Track, who: str) -> None:
    buffered: list[np.ndarray] = []
    async for event in rtc.AudioStream(track, sample_rate=RATE, num_channels=1):
        buffered.append(np.frombuffer(event.frame.data, dtype=np.int16))
        if sum(len(b) for b in buffered) >= RATE // 2:
            samples = np.concatenate(buffered).astype(np.float64)
            buffered.clear()
            if np.abs(samples).max() < 100:
                continue  # silence (muted or not started)
            spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
            peak_hz = float(np.fft.rfftfreq(len(samples), 1 / RATE)[int(spectrum.argmax())])
            say(event="audio", sender=who, peak_hz=round(peak_hz))


async def main(url: str, token: str, role: str, v0: bool) -> None:
    camera_rgb, screen_rgb, tone_hz = PATTERNS[role]
    room = rtc.Room()
    tasks: set[asyncio.Task[None]] = set()

    def spawn(coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        tasks.add(task)

    @room.on("track_subscribed")
    def _subscribed(
        track: rtc.Track, pub: rtc.RemoteTrackPublication, p: rtc.RemoteParticipant
    ) -> None:
        source = rtc.TrackSource.Name(pub.source)
        say(event="subscribed", sender=p.identity, source=source, kind=track.kind)
        if track.kind == rtc.TrackKind.KIND_VIDEO:
            spawn(watch_video(track, p.identity, source))
        else:
            spawn(watch_audio(track, p.identity))

    @room.on("track_muted")
    def _muted(p: rtc.Participant, pub: rtc.TrackPublication) -> None:
        say(event="muted", sender=p.identity, source=rtc.TrackSource.Name(pub.source))

    @room.on("data_received")
    def _data(packet: rtc.DataPacket) -> None:
        sender = packet.participant.identity if packet.participant else ""
        say(event="data", sender=sender, topic=packet.topic, payload=packet.data.decode())

    @room.on("disconnected")
    def _gone(reason: object) -> None:
        say(event="disconnected", reason=str(reason))

    started = time.monotonic()
    try:
        await room.connect(url, token, rtc.RoomOptions(single_peer_connection=not v0))
    except rtc.ConnectError as exc:
        say(event="refused", error=str(exc))
        return
    say(event="connected", sid=room.local_participant.sid, took_s=time.monotonic() - started)
    stop = asyncio.Event()
    camera = rtc.VideoSource(WIDTH, HEIGHT)
    screen = rtc.VideoSource(WIDTH, HEIGHT)
    mic = rtc.AudioSource(RATE, 1)
    cam_track = rtc.LocalVideoTrack.create_video_track("camera", camera)
    screen_track = rtc.LocalVideoTrack.create_video_track("screen", screen)
    mic_track = rtc.LocalAudioTrack.create_audio_track("microphone", mic)
    lp = room.local_participant
    spawn(pump_video(camera, camera_rgb, stop))
    spawn(pump_video(screen, screen_rgb, stop))
    spawn(pump_audio(mic, tone_hz, stop))
    await lp.publish_track(
        cam_track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA, simulcast=False)
    )
    await lp.publish_track(
        screen_track,
        rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_SCREENSHARE, simulcast=False),
    )
    await lp.publish_track(
        mic_track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    )
    say(event="published")
    await asyncio.sleep(RUN_S / 2)
    try:
        await asyncio.wait_for(lp.publish_data(f"hello from {role}", topic="chat"), 5)
        say(event="data_sent")
    except Exception as exc:  # reported to the test, which decides
        say(event="data_failed", error=repr(exc))
    if role == "bob":
        mic_track.mute()
        say(event="muted_own")
    await asyncio.sleep(RUN_S / 2)
    stop.set()
    await room.disconnect()
    for task in tasks:
        task.cancel()
    say(event="done")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:5] == ["v0"]))
