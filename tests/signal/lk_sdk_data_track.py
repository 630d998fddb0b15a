"""A Python ``livekit`` SDK participant that tries to publish a data track.

Usage: ``lk_sdk_data_track.py URL TOKEN``. Prints one JSON line: how the attempt
ended (``published``, or the error the SDK raised) and after how many seconds.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from livekit import rtc


async def main(url: str, token: str) -> None:
    room = rtc.Room()
    await room.connect(url, token)
    started = time.monotonic()
    try:
        await asyncio.wait_for(room.local_participant.publish_data_track(name="telemetry"), 30)
        outcome = {"published": True}
    except Exception as exc:
        outcome = {"published": False, "error": f"{type(exc).__name__}: {exc}"}
    outcome["seconds"] = round(time.monotonic() - started, 2)
    print(json.dumps({"event": "data_track", **outcome}), flush=True)
    await room.disconnect()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
