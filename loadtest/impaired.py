"""Calls over impaired links: what a real receiver decodes under loss, delay and
rate limits (``python -m loadtest --impair …``).

The light load clients decode nothing and ask for no repairs, so this mode uses
libwebrtc clients instead: a ``livekit`` SDK publisher (a 640x360 camera and a
tone) and an SDK viewer, each on a test host of its own (a namespace behind a
veth pair), so each link is impaired alone — loss and rate limits in the host's
namespace (``loadtest/impair.py``), delay on a userspace delay line its relay
address leads through (``loadtest/delayline.py``). The relay is mediafed,
in this process (bound to 127.0.0.2, advertised on the hosts' server addresses).

Each condition is one call, after a clean one as the baseline. What the viewer
decoded, against what the publisher encoded meanwhile, its longest wait for a
frame, the audio it played, and from the relay's own counters the NACKs it took
from the viewer, the packets it resent and the keyframes it asked of the
publisher.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from loadtest.delayline import DelayLine
from loadtest.impair import Conditions
from loadtest.sdk_client import PUBLISHER, VIEWER, ScriptClient
from loadtest.testhost import TestHost
from mediafed import server
from mediafed.config import load_config
from mediafed.media import RoomManager
from mediafed.signal.livekit.tokens import VideoGrant, mint_token
from mediafed.worker import Worker

SERVER_IP = "127.0.0.2"
LINE_IP = "127.0.0.5"
"""Where the delay lines' own sockets toward the relay live."""
API_KEY, API_SECRET = "impaired", "impaired-secret-" + "x" * 24
SIDES = ("viewer", "publisher", "both")


@dataclass(frozen=True)
class Impairment:
    """What one call's links suffer: ``side`` is whose link (or both)."""

    side: str = "both"
    link: Conditions = field(default_factory=Conditions)
    delay_ms: float = 0.0
    """One way, on the side's link (a round trip is twice this)."""
    jitter_ms: float = 0.0

    @classmethod
    def parse(cls, text: str) -> Impairment:
        """``viewer:loss=5``, ``publisher:loss=2,delay=75``, ``both:rate_down=500``;
        without a side, both links. Link conditions as :meth:`Conditions.parse`,
        plus ``delay`` and ``jitter`` in milliseconds."""
        side, sep, rest = text.partition(":")
        if not sep:
            side, rest = "both", text
        side = side.strip().lower()
        if side not in SIDES:
            raise ValueError(f"{side!r}: say whose link, one of {', '.join(SIDES)}")
        delays: dict[str, float] = {}
        others = []
        for item in filter(None, (part.strip() for part in rest.split(","))):
            key, _, value = item.partition("=")
            if key.strip().lower() in ("delay", "jitter"):
                try:
                    delays[key.strip().lower()] = float(value)
                except ValueError:
                    raise ValueError(f"{item!r}: expected a number of milliseconds") from None
                if delays[key.strip().lower()] < 0 or delays[key.strip().lower()] > 2000:
                    raise ValueError(f"{item!r}: milliseconds from 0 to 2000")
            else:
                others.append(item)
        return cls(
            side,
            Conditions.parse(",".join(others)),
            delays.get("delay", 0.0),
            delays.get("jitter", 0.0),
        )

    def __str__(self) -> str:
        parts = [str(self.link)] if str(self.link) != "clean" else []
        if self.delay_ms:
            rtt = 2 * self.delay_ms
            parts.append(f"{rtt:g} ms RTT" + (f" ±{self.jitter_ms:g}" if self.jitter_ms else ""))
        if not parts:
            return "clean"
        whose = {"both": "both links", "viewer": "viewer's link", "publisher": "publisher's link"}
        return f"{', '.join(parts)} on the {whose[self.side]}"


@dataclass
class Outcome:
    impairment: Impairment
    frames: int
    decoded_fps: float
    published_fps: float
    """Frames a second the viewer decoded, and the publisher encoded, in the window
    (each from its own reports' clock, so the sampling moments do not matter)."""
    longest_gap_ms: int
    """The longest the viewer waited between two decoded frames (a freeze)."""
    capture_gap_ms: int
    """The longest the publisher script went between two captured frames (its own
    stalls on a busy machine, which no relay can hide)."""
    loop_lag_ms: int
    """The longest the viewer script's event loop woke late."""
    audio_frames: int
    nacks: int
    retransmitted: int
    keyframe_requests: int

    @property
    def share(self) -> float:
        return self.decoded_fps / self.published_fps if self.published_fps else 0.0


def _rate(lines: list[dict[str, Any]], count: Callable[[dict[str, Any]], int]) -> float:
    """Per second, of ``count`` over the first and last of ``lines`` (their ``t``)."""
    if len(lines) < 2 or lines[-1]["t"] <= lines[0]["t"]:
        return 0.0
    return (count(lines[-1]) - count(lines[0])) / (lines[-1]["t"] - lines[0]["t"])


def _encoded(line: dict[str, Any]) -> int:
    return sum(int(layer["frames"]) for layer in line["layers"].values())


def _decoded(line: dict[str, Any]) -> int:
    return sum(int(v["frames"]) for v in line["video"].values())


@dataclass
class Topology:
    rooms: RoomManager
    http_port: int
    publisher_host: TestHost
    viewer_host: TestHost
    lines: dict[str, DelayLine]
    """By side: the delay line of the publisher's and of the viewer's link."""


@contextlib.asynccontextmanager
async def topology() -> AsyncIterator[Topology]:
    """A relay bound to 127.0.0.2 and advertised on two test hosts' server addresses,
    each reached through a delay line; its HTTP port on every address."""
    with TestHost(7) as publisher_host, TestHost(8) as viewer_host:
        config = load_config(
            environ={
                "MEDIAFED_KEYS": f"{API_KEY}: {API_SECRET}",
                "MEDIAFED_SERVER_BIND": SERVER_IP,
                "MEDIAFED_RTC_UDP_PORT": "0",
                "MEDIAFED_RTC_TCP_PORT": "0",
                "MEDIAFED_RTC_ICE_TCP": "false",
                "MEDIAFED_RTC_NODE_IP": f"{publisher_host.server_ip},{viewer_host.server_ip}",
            }
        )
        worker = Worker.from_config(config)
        await worker.start()
        app = await server.build_app(config, [server.livekit_extension(worker.rooms)])
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "0.0.0.0", 0).start()
        port = worker.udp_port
        lines: dict[str, DelayLine] = {}
        try:
            for side, host in (("publisher", publisher_host), ("viewer", viewer_host)):
                lines[side] = await DelayLine(
                    (host.server_ip, port), (SERVER_IP, port), upstream_ip=LINE_IP, delay_ms=0
                ).start()
            yield Topology(worker.rooms, runner.addresses[0][1], publisher_host, viewer_host, lines)
        finally:
            for line in lines.values():
                line.close()
            await runner.cleanup()
            await worker.stop()


def _token(identity: str, room: str) -> str:
    return mint_token(
        API_KEY, API_SECRET, identity=identity, video=VideoGrant(room_join=True, room=room)
    )


async def call(
    top: Topology, impairment: Impairment, room: str, *, warmup_s: float, measure_s: float
) -> Outcome:
    """One call under ``impairment``: measured for ``measure_s`` after ``warmup_s``."""
    hosts = {"publisher": top.publisher_host, "viewer": top.viewer_host}
    sides = ("publisher", "viewer") if impairment.side == "both" else (impairment.side,)
    for side in sides:
        hosts[side].link.apply(impairment.link)
        top.lines[side].set_delay(impairment.delay_ms, impairment.jitter_ms)
    run_s = str(warmup_s + measure_s + 4)
    publisher = await ScriptClient.start(
        top.publisher_host,
        PUBLISHER,
        f"ws://{top.publisher_host.server_ip}:{top.http_port}",
        _token("publisher", room),
        run_s,
        "640x360",
    )
    viewer = await ScriptClient.start(
        top.viewer_host,
        VIEWER,
        f"ws://{top.viewer_host.server_ip}:{top.http_port}",
        _token("viewer", room),
        run_s,
    )
    try:
        await asyncio.sleep(warmup_s)
        start, audio_start = viewer.seen()
        marks = len(viewer.lines), len(publisher.lines)
        await asyncio.sleep(measure_s)
        seen = [line for line in viewer.lines[marks[0] :] if line["event"] == "seen"]
        stats = [line for line in publisher.lines[marks[1] :] if line["event"] == "stats"]
        frames, audio = viewer.seen()
        sessions = top.rooms.get_or_create(room).sessions
        if "viewer" not in sessions or "publisher" not in sessions:
            raise RuntimeError(
                f"the clients did not both join ({sorted(sessions)}): "
                f"{publisher.lines[-2:]} {viewer.lines[-2:]}"
            )
        downtracks = list(sessions["viewer"].downtracks.values())
        published = sessions["publisher"].published.values()
        return Outcome(
            impairment=impairment,
            frames=frames - start,
            decoded_fps=_rate(seen, _decoded),
            published_fps=_rate(stats, _encoded),
            longest_gap_ms=max(
                (v["gap_ms"] for line in seen for v in line["video"].values()), default=0
            ),
            capture_gap_ms=max((int(line.get("capture_gap_ms", 0)) for line in stats), default=0),
            loop_lag_ms=max((int(line.get("loop_lag_ms", 0)) for line in seen), default=0),
            audio_frames=audio - audio_start,
            nacks=sum(d.nacked for d in downtracks),
            retransmitted=sum(d.retransmitted for d in downtracks),
            keyframe_requests=sum(track.keyframe_requests for track in published),
        )
    finally:
        await publisher.stop()
        await viewer.stop()
        for side in sides:
            hosts[side].link.clear()
            top.lines[side].set_delay(0)


async def run(
    impairments: Sequence[Impairment], *, warmup_s: float = 6.0, measure_s: float = 12.0
) -> list[Outcome]:
    """A clean call, then one per impairment, on one relay and the same two hosts."""
    outcomes = []
    async with topology() as top:
        for index, impairment in enumerate([Impairment(), *impairments]):
            outcomes.append(
                await call(
                    top, impairment, f"impaired{index}", warmup_s=warmup_s, measure_s=measure_s
                )
            )
    return outcomes


def markdown(outcomes: Sequence[Outcome], measure_s: float) -> str:
    """One row per condition: what the viewer decoded and what the relay repaired."""
    rows = [
        "| condition | decoded / encoded fps | kept | longest freeze | audio frames/s "
        "| NACKs | resent | keyframe requests |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for outcome in outcomes:
        rows.append(
            f"| {outcome.impairment} | {outcome.decoded_fps:.1f} / {outcome.published_fps:.1f} "
            f"| {outcome.share:.0%} | {outcome.longest_gap_ms} ms "
            f"| {outcome.audio_frames / measure_s:.0f} | {outcome.nacks} "
            f"| {outcome.retransmitted} | {outcome.keyframe_requests} |"
        )
    return "\n".join(rows)
