"""A Python ``livekit`` SDK participant that only watches, for the bandwidth tests.

Usage: ``sdk_viewer.py URL TOKEN SECONDS [QUALITY]``. It subscribes to everything
(videos at QUALITY: LOW, MEDIUM or HIGH, the default)
and prints, every half second, a JSON line of what it decoded so far: per
video track the frames, the size of the last one and the longest time between
two frames (``gap_ms``) since the last line, the frame metadata of the last
one if it carried any (``frame_id``, ``user_timestamp`` and, in microseconds,
its ``age_us`` on arrival), and the audio frames.
The test shapes its link meanwhile and decides from these lines (and the
relay's own state) what happened.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from livekit import rtc


def say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


async def main(url: str, token: str, seconds: float, quality: str = "HIGH") -> None:
    room = rtc.Room()
    video: dict[str, dict[str, int]] = {}
    audio = {"frames": 0}
    tasks: set[asyncio.Task[None]] = set()

    async def watch_video(track: rtc.Track, sid: str) -> None:
        seen = video.setdefault(sid, {"frames": 0, "width": 0, "height": 0, "gap_ms": 0})
        last = 0.0
        async for event in rtc.VideoStream(track):
            now = time.monotonic()
            if last:
                seen["gap_ms"] = max(seen["gap_ms"], round((now - last) * 1000))
            last = now
            seen["frames"] += 1
            seen["width"], seen["height"] = event.frame.width, event.frame.height
            metadata = event.metadata
            if metadata is not None and metadata.HasField("frame_id"):
                seen["frame_id"] = metadata.frame_id
                seen["user_timestamp"] = metadata.user_timestamp
                seen["age_us"] = time.time_ns() // 1000 - metadata.user_timestamp

    async def watch_audio(track: rtc.Track) -> None:
        async for _event in rtc.AudioStream(track, sample_rate=48000, num_channels=1):
            audio["frames"] += 1

    @room.on("track_subscribed")
    def _subscribed(
        track: rtc.Track, pub: rtc.RemoteTrackPublication, p: rtc.RemoteParticipant
    ) -> None:
        if track.kind == rtc.TrackKind.KIND_VIDEO:
            if quality != "HIGH":
                pub.set_video_quality(getattr(rtc.VideoQuality, f"VIDEO_QUALITY_{quality}"))
            tasks.add(asyncio.ensure_future(watch_video(track, pub.sid)))
        else:
            tasks.add(asyncio.ensure_future(watch_audio(track)))

    loop_lag = {"ms": 0}

    async def watch_loop() -> None:
        """How late this script's own event loop wakes (a busy shared machine): frames
        that arrived meanwhile are counted late, whatever the relay did."""
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.01)
            late = round((time.monotonic() - before - 0.01) * 1000)
            loop_lag["ms"] = max(loop_lag["ms"], late)

    tasks.add(asyncio.ensure_future(watch_loop()))
    started = time.monotonic()
    try:
        await room.connect(url, token)
    except rtc.ConnectError as exc:
        say(event="refused", error=str(exc))
        return
    say(event="connected")
    while time.monotonic() - started < seconds:
        await asyncio.sleep(0.5)
        say(
            event="seen",
            t=round(time.monotonic() - started, 2),
            video=video,
            audio=audio,
            loop_lag_ms=loop_lag["ms"],
        )
        loop_lag["ms"] = 0
        for seen in video.values():
            seen["gap_ms"] = 0  # the longest gap of each half second
    await room.disconnect()
    for task in tasks:
        task.cancel()
    say(event="done")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]), *sys.argv[4:5]))
