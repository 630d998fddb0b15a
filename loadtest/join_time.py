"""Time from ``room.connect()`` to the first remote video frame, by signal path.

livekit-client (web-demo/node_modules, in headless Chromium with a fake
camera) joins a room where another page already publishes its camera, and
measures in the page, with ``performance.now()``, from the call of
``connect()`` to the first frame of the remote video (``requestVideoFrameCallback``).
Three ways of connecting, alternating join by join on one mediafed node:

- ``v1``: ``/rtc/v1``, one peer connection, the first offer in the join request
  (livekit-client's default since 2.17);
- ``v0``: ``/rtc``, two peer connections (``singlePeerConnection: false``);
- ``v1-404``: the client tries ``/rtc/v1``, the node answers 404 there (as
  mediafed did before it served v1, and as LiveKit servers before 1.9.10 do),
  the client asks ``/rtc/v1/validate``, then falls back to ``/rtc``.

With ``--rtt-ms``, the viewer reaches the node through delay lines
(loadtest/delayline.py): its signaling and HTTP through a TCP one, its media
through a UDP one at the address the node advertises, each way half the round
trip. Run it inside the loopback-only namespace, from the repository (it uses
the test helpers for the node and for Chromium)::

    scripts/in-netns .venv/bin/python -m loadtest.join_time --joins 20 [--rtt-ms 100]

It prints the median, p90 and minimum per path and their ratios to ``v0``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from loadtest.delayline import DelayLine, TcpDelayLine
from mediafed.config import Config
from mediafed.media import RoomManager
from tests.support.browser import TIMEOUT_MS, chromium
from tests.support.livekit_node import live_node

ROOT = Path(__file__).resolve().parent.parent
CLIENT_DIST = ROOT / "web-demo" / "node_modules" / "livekit-client" / "dist"
PATHS = ("v1", "v0", "v1-404")
SERVER_IP = "127.0.0.2"
ADVERTISED_IP = "127.0.0.3"
"""With a round trip: where the node says it is, the UDP delay line's address."""
LINE_IP = "127.0.0.5"
PAUSE_S = 1.0

PAGE = """<!doctype html><meta charset="utf-8"><title>join time</title><body>
<script type="module">
import { Room, RoomEvent } from "/lk/livekit-client.esm.mjs";
window.publish = async (url, token) => {
  const room = new Room();
  await room.connect(url, token);
  await room.localParticipant.setCameraEnabled(true);
  window.publisher = room;
};
window.join = async (url, token, single) => {
  const room = new Room({ singlePeerConnection: single });
  let firstFrame;
  const frame = new Promise((resolve) => { firstFrame = resolve; });
  room.on(RoomEvent.TrackSubscribed, (track) => {
    if (track.kind !== "video") return;
    const el = track.attach();
    el.muted = true;
    document.body.appendChild(el);
    el.requestVideoFrameCallback(() => firstFrame(performance.now()));
  });
  const started = performance.now();
  await room.connect(url, token);
  const at = await frame;
  await room.disconnect();
  document.querySelectorAll("video").forEach((el) => el.remove());
  return at - started;
};
</script>"""


def _no_v1_while(serving: dict[str, bool]) -> Callable[[RoomManager], object]:
    """An extension that answers 404 on ``/rtc/v1*`` while ``serving["v1"]`` is False."""

    def make(rooms: RoomManager) -> Callable[[web.Application, Config], None]:
        @web.middleware
        async def gate(
            request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> web.StreamResponse:
            if request.path.startswith("/rtc/v1") and not serving["v1"]:
                return web.Response(
                    status=404,
                    text="this node serves /rtc only",
                    headers={"Access-Control-Allow-Origin": "*"},
                )
            return await handler(request)

        async def page(request: web.Request) -> web.Response:
            return web.Response(text=PAGE, content_type="text/html")

        def extension(app: web.Application, config: Config) -> None:
            app.middlewares.append(gate)
            app.router.add_get("/join-time", page)
            app.router.add_static("/lk/", CLIENT_DIST)

        return extension

    return make


async def measure(joins: int, rtt_ms: float) -> dict[str, list[float]]:
    serving = {"v1": True}
    times: dict[str, list[float]] = {path: [] for path in PATHS}
    settings = {"MEDIAFED_RTC_NODE_IP": ADVERTISED_IP, "MEDIAFED_RTC_ICE_TCP": "false"}
    async with live_node(
        SERVER_IP,
        settings=settings if rtt_ms else None,
        extensions=[_no_v1_while(serving)],  # type: ignore[list-item]
    ) as node:
        url = f"ws://127.0.0.1:{node.http_port}"
        page_url = f"http://127.0.0.1:{node.http_port}/join-time"
        lines: list[DelayLine | TcpDelayLine] = []
        if rtt_ms:
            port = node.worker.udp_port
            udp = DelayLine(
                (ADVERTISED_IP, port), (SERVER_IP, port), upstream_ip=LINE_IP, delay_ms=rtt_ms / 2
            )
            tcp = TcpDelayLine("127.0.0.1", ("127.0.0.1", node.http_port), delay_ms=rtt_ms / 2)
            lines = [await udp.start(), await tcp.start()]
            url = f"ws://127.0.0.1:{tcp.port}"  # the viewer's way; the publisher's is direct
        direct = f"ws://127.0.0.1:{node.http_port}"
        with tempfile.TemporaryDirectory() as profile:
            async with chromium(Path(profile)) as browser:
                publisher = await browser.new_page()
                await publisher.goto(page_url)
                await publisher.evaluate(
                    "([url, token]) => window.publish(url, token)",
                    [direct, node.token("camera", room="join")],
                )
                viewer = await browser.new_page()
                await viewer.goto(page_url)
                for round_ in range(joins + 1):  # the first round warms up and is dropped
                    for path in PATHS:
                        serving["v1"] = path != "v1-404"
                        took = await asyncio.wait_for(
                            viewer.evaluate(
                                "([url, token, single]) => window.join(url, token, single)",
                                [
                                    url,
                                    node.token(f"viewer-{round_}-{path}", room="join"),
                                    path != "v0",
                                ],
                            ),
                            TIMEOUT_MS / 1000,
                        )
                        if round_:
                            times[path].append(float(took))
                        # apart, as people join: back to back, each join's keyframe
                        # request would wait out the previous one's interval (500 ms)
                        await asyncio.sleep(PAUSE_S)
                    print(
                        f"round {round_}: "
                        + ", ".join(f"{p} {times[p][-1]:.0f} ms" for p in PATHS if times[p]),
                        file=sys.stderr,
                    )
        for line in lines:
            line.close()
    return times


def report(times: dict[str, list[float]]) -> str:
    base = statistics.median(times["v0"])
    lines = [
        "| path | joins | median ms | p90 ms | min ms | median / v0 |",
        "|---|---|---|---|---|---|",
    ]
    for path in PATHS:
        values = sorted(times[path])
        median = statistics.median(values)
        p90 = values[min(len(values) - 1, int(0.9 * len(values)))]
        lines.append(
            f"| {path} | {len(values)} | {median:.0f} | {p90:.0f} | {values[0]:.0f} "
            f"| {median / base:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--joins", type=int, default=20, help="joins per path (default 20)")
    parser.add_argument(
        "--rtt-ms", type=float, default=0.0, help="round trip between viewer and node (0: none)"
    )
    args = parser.parse_args()
    if not CLIENT_DIST.is_dir():
        sys.exit(f"{CLIENT_DIST} is missing: run `npm ci` in web-demo/ first")
    print(report(asyncio.run(measure(args.joins, args.rtt_ms))))


if __name__ == "__main__":
    main()
