"""A Python ``livekit`` SDK publisher of a 1280x720 simulcast camera and a tone, for the
estimate and bandwidth tests.

Usage: ``sdk_publisher.py URL TOKEN SECONDS [WIDTHxHEIGHT [CODEC]]`` (simulcast
at 1280x720, the default; one layer at any other size; CODEC is VP8, the
default, H264, VP9 or AV1). With ``FRAME_METADATA=1`` in its environment every
frame carries metadata (its number as frame id, the wall clock in
microseconds as user timestamp) in the SDK's packet trailer. The frames are a detailed
texture that moves every frame, so the encoder wants every bit it is
allowed (a flat picture would fit any estimate and prove nothing). Every
second it prints, as a JSON line, what libwebrtc says of its sending
side: the transport's available outgoing bitrate (its bandwidth estimate,
fed by the relay's transport-cc feedback) and, per simulcast layer, the
resolution, frames sent and what limits its quality. The test decides.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

import numpy as np
from livekit import rtc
from livekit.rtc._proto import stats_pb2

WIDTH, HEIGHT = 1280, 720
WITH_METADATA = os.environ.get("FRAME_METADATA") == "1"


def say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


CAPTURE = {"gap_ms": 0}
"""The longest time between two frames handed to the encoder since the last report:
this script's own stalls (a busy shared machine), which no relay can hide."""


async def pump(source: rtc.VideoSource, stop: asyncio.Event, width: int, height: int) -> None:
    rng = np.random.default_rng(5)
    # 8x8-pixel blocks of random colour: detail an encoder must spend bits on, yet
    # coarse enough that a 720p frame fits its target without dropping frames
    blocks = rng.integers(0, 256, size=((height + 64) // 8, (width + 64) // 8, 4), dtype=np.uint8)
    texture = np.repeat(np.repeat(blocks, 8, axis=0), 8, axis=1)
    texture[..., 3] = 255
    frame_no = 0
    last = 0.0
    while not stop.is_set():
        now = time.monotonic()
        if last:
            CAPTURE["gap_ms"] = max(CAPTURE["gap_ms"], round((now - last) * 1000))
        last = now
        dx, dy = (frame_no * 7) % 64, (frame_no * 3) % 64
        pixels = np.ascontiguousarray(texture[dy : dy + height, dx : dx + width])
        frame = rtc.VideoFrame(width, height, rtc.VideoBufferType.RGBA, pixels.tobytes())
        if WITH_METADATA:
            metadata = rtc.FrameMetadata(user_timestamp=time.time_ns() // 1000, frame_id=frame_no)
            source.capture_frame(frame, metadata=metadata)
        else:
            source.capture_frame(frame)
        frame_no += 1
        await asyncio.sleep(1 / 20)


async def pump_audio(source: rtc.AudioSource, stop: asyncio.Event) -> None:
    rate, samples = 48000, 480  # 10 ms of a 440 Hz tone
    t = 0
    while not stop.is_set():
        n = np.arange(t, t + samples)
        wave = (np.sin(2 * np.pi * 440.0 * n / rate) * 8000).astype(np.int16)
        await source.capture_frame(rtc.AudioFrame(wave.tobytes(), rate, 1, samples))
        t += samples


async def report(room: rtc.Room, started: float) -> None:
    stats = await room.get_rtc_stats()
    available = 0.0
    layers: dict[str, dict[str, object]] = {}
    for item in stats.publisher_stats:
        kind = item.WhichOneof("stats")
        if kind == "candidate_pair":
            pair = item.candidate_pair.candidate_pair
            available = max(available, pair.available_outgoing_bitrate)
        elif kind == "outbound_rtp" and item.outbound_rtp.stream.kind == "video":
            out = item.outbound_rtp.outbound
            layers[out.rid or "-"] = {
                "width": out.frame_width,
                "height": out.frame_height,
                "frames": out.frames_sent,
                "target_bps": out.target_bitrate,
                "limit": stats_pb2.QualityLimitationReason.Name(out.quality_limitation_reason),
            }
    say(
        event="stats",
        t=round(time.monotonic() - started, 1),
        available=available,
        layers=layers,
        capture_gap_ms=CAPTURE["gap_ms"],
    )
    CAPTURE["gap_ms"] = 0  # the longest time between two captured frames, per report


async def main(url: str, token: str, seconds: float, size: str, codec: str) -> None:
    width, height = (int(n) for n in size.split("x"))
    room = rtc.Room()
    started = time.monotonic()
    try:
        await room.connect(url, token)
    except rtc.ConnectError as exc:
        say(event="refused", error=str(exc))
        return
    say(event="connected")
    stop = asyncio.Event()
    source = rtc.VideoSource(width, height)
    track = rtc.LocalVideoTrack.create_video_track("camera", source)
    pumping = asyncio.ensure_future(pump(source, stop, width, height))
    options = rtc.TrackPublishOptions(
        source=rtc.TrackSource.SOURCE_CAMERA,
        simulcast=(width, height) == (WIDTH, HEIGHT),
        video_encoding=rtc.VideoEncoding(max_bitrate=2_500_000, max_framerate=20),
        video_codec=getattr(rtc.VideoCodec, codec),
    )
    if WITH_METADATA:
        options.frame_metadata_features.extend(
            [rtc.FrameMetadataFeature.FMF_USER_TIMESTAMP, rtc.FrameMetadataFeature.FMF_FRAME_ID]
        )
    await room.local_participant.publish_track(track, options)
    mic = rtc.AudioSource(48000, 1)
    tone = asyncio.ensure_future(pump_audio(mic, stop))
    await room.local_participant.publish_track(
        rtc.LocalAudioTrack.create_audio_track("microphone", mic),
        rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE),
    )
    say(event="published")
    while time.monotonic() - started < seconds:
        await asyncio.sleep(1)
        await report(room, started)
    stop.set()
    await pumping
    await tone
    await room.disconnect()
    say(event="done")


if __name__ == "__main__":
    size = sys.argv[4] if len(sys.argv) > 4 else f"{WIDTH}x{HEIGHT}"
    codec = sys.argv[5] if len(sys.argv) > 5 else "VP8"
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]), size, codec))
