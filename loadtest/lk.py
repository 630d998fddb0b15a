"""LiveKit's own load tester (``lk load-test``) against mediafed and livekit-server, side by side.

A second opinion on ``python -m loadtest``: the clients are LiveKit's Go SDK
(pion), publishing simulcast video and audio the way LiveKit's CLI does and
counting what its subscribers receive. The binary is ``lk-load-test``
(``loadtest.gopeers`` says why it is not ``lk`` itself): LiveKit CLI's load
tester package behind the flags of ``lk load-test``. pion gathers no ICE candidate on
loopback, so each run makes a client namespace behind a veth pair
(``loadtest.testhost``): the server listens and advertises 198.18.0.1, ``lk``
runs in the namespace of 198.18.0.2 (pinned to the client cores). The tool
measures the server process as ``loadtest.runner`` does (CPU from
``/proc/PID/stat`` over the whole ``lk`` run, joins included; resident
memory) and reads ``lk``'s own tables for tracks, packets, bitrate and loss.

    scripts/in-netns .venv/bin/python -m loadtest.lk --target livekit --target mediafed \\
        --video-publishers 1 --subscribers 20 --duration 20 --rounds 2

Arguments after ``--`` go to ``lk-load-test`` unchanged (e.g. ``-- --no-simulcast``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from loadtest.gopeers import LK, missing_message
from loadtest.livekit_server import LiveKitServerTarget
from loadtest.livekit_target import LiveKitEndpoint, MediafedTarget
from loadtest.runner import cpu_seconds, rss_kb, split_cpus
from loadtest.target import RoomPlan, Target, TargetError
from loadtest.testhost import TestHost, TestHostError

TARGETS = ("livekit", "mediafed")
ROOM = "lk-load"
_UNITS = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9}


@dataclass(slots=True)
class LkResult:
    """One ``lk load-test`` run against one target."""

    target: str
    round: int
    video_publishers: int
    audio_publishers: int
    subscribers: int
    duration_s: float
    exit_code: int
    wall_s: float = 0.0
    tracks_received: int = 0
    tracks_expected: int = 0
    packets: int = 0
    """RTP packets all subscribers received (``lk``'s "Pkts." column, summed)."""
    bitrate_bps: float = 0.0
    """Total of the subscribers' receive bitrates (``lk``'s "Total" row)."""
    loss_percent: float | None = None
    errors: int = 0
    server_cpu_s: float = 0.0
    cpu_us_per_packet: float | None = None
    rss_baseline_kb: int = 0
    rss_end_kb: int = 0
    output_tail: list[str] = field(default_factory=list)


def _cells(line: str) -> list[str]:
    """The cells of one row of ``lk``'s box-drawn tables (lipgloss), else []."""
    if "│" not in line:
        return []
    return [cell.strip() for cell in line.strip().strip("│").split("│")]


def _bitrate_bps(text: str) -> float:
    """``"1.2 mbps"`` / ``"345.6kbps"`` -> bits per second (0.0 if unreadable)."""
    match = re.match(r"\s*([\d.]+)\s*([kmg]?)bps", text.lower())
    return float(match.group(1)) * _UNITS[match.group(2)] if match else 0.0


def parse_lk_output(text: str, result: LkResult) -> None:
    """Fill tracks, packets, bitrate, loss and errors from ``lk load-test``'s tables."""
    section = ""
    for line in text.splitlines():
        if line.startswith("Track loading"):
            section = "tracks"
            continue
        if line.startswith("Subscriber summaries"):
            section = "summary"
            continue
        cells = _cells(line)
        if not cells:
            continue
        if section == "tracks" and len(cells) == 6 and cells[3].isdigit():
            result.packets += int(cells[3])
        elif section == "summary" and len(cells) == 5 and cells[0] == "Total":
            received, _, expected = cells[1].partition("/")
            if received.isdigit() and expected.isdigit():
                result.tracks_received, result.tracks_expected = int(received), int(expected)
            result.bitrate_bps = _bitrate_bps(cells[2])
            loss = re.search(r"([\d.]+)%", cells[3])
            result.loss_percent = float(loss.group(1)) if loss else None
            result.errors = int(cells[4]) if cells[4].isdigit() else 0


def make_target(name: str, server_cpus: set[int] | None, host: str) -> Target:
    if name == "livekit":
        return LiveKitServerTarget(server_cpus=server_cpus, host=host)
    if name == "mediafed":
        return MediafedTarget(server_cpus=server_cpus, host=host)
    raise TargetError(f"unknown target {name!r}; choose from {', '.join(TARGETS)}")


def lk_command(endpoint: LiveKitEndpoint, args: argparse.Namespace) -> list[str]:
    return [
        str(LK.binary),
        "--url",
        endpoint.url,
        "--api-key",
        endpoint.api_key,
        "--api-secret",
        endpoint.api_secret,
        "--room",
        endpoint.room,
        "--video-publishers",
        str(args.video_publishers),
        "--audio-publishers",
        str(args.audio_publishers),
        "--subscribers",
        str(args.subscribers),
        "--duration",
        f"{args.duration:g}s",
        "--num-per-second",
        str(args.num_per_second),
        *args.lk_args,
    ]


async def run_one(
    name: str, round_index: int, args: argparse.Namespace, cpus: tuple[set[int] | None, ...]
) -> LkResult:
    server_cpus, client_cpus = cpus
    result = LkResult(
        name,
        round_index,
        args.video_publishers,
        args.audio_publishers,
        args.subscribers,
        args.duration,
        exit_code=-1,
    )
    with TestHost() as host, tempfile.TemporaryDirectory(prefix="loadtest-lk-") as home:
        target = make_target(name, server_cpus, host.server_ip)
        publishers = max(args.video_publishers, args.audio_publishers)
        try:
            await target.start(RoomPlan(ROOM, publishers + 1))
            pids = target.server_pids()
            result.rss_baseline_kb = rss_kb(pids)
            endpoint = target.endpoint()
            assert isinstance(endpoint, LiveKitEndpoint)

            def pin() -> None:
                if client_cpus:
                    os.sched_setaffinity(0, client_cpus)

            sys.stderr.write(f"[{name} round {round_index}] lk load-test against {endpoint.url}\n")
            cpu_before, started = cpu_seconds(pids), time.monotonic()
            # A fresh HOME: lk reads no saved project or CLI config of this machine.
            proc = await asyncio.create_subprocess_exec(
                *host.command(lk_command(endpoint, args)),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=dict(os.environ, HOME=home, NO_COLOR="1"),
                preexec_fn=pin,
                start_new_session=True,
            )
            try:
                out, _ = await asyncio.wait_for(proc.communicate(), args.duration + 120)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                out, _ = await proc.communicate()
            finally:
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
            result.wall_s = time.monotonic() - started
            result.server_cpu_s = cpu_seconds(pids) - cpu_before
            result.rss_end_kb = rss_kb(pids)
            result.exit_code = proc.returncode if proc.returncode is not None else -1
            text = out.decode(errors="replace")
            parse_lk_output(text, result)
            result.output_tail = text.splitlines()[-60:]
            if result.packets:
                result.cpu_us_per_packet = 1e6 * result.server_cpu_s / result.packets
            else:  # nothing arrived: what the server said is where to look
                result.output_tail += ["--- server log:", *target.log_tail(40).splitlines()]
        finally:
            await target.stop()
    return result


def table(results: list[LkResult]) -> str:
    header = (
        f"{'target':>9} {'round':>5} {'tracks':>9} {'packets':>9} {'Mbit/s':>8} "
        f"{'loss %':>7} {'errors':>6} {'CPU s':>6} {'CPU us/pkt':>10} {'RSS MB':>7} {'exit':>4}"
    )
    rows = [header, "-" * len(header)]
    for r in results:
        loss = "-" if r.loss_percent is None else f"{r.loss_percent:.2f}"
        cpu = "-" if r.cpu_us_per_packet is None else f"{r.cpu_us_per_packet:.1f}"
        rows.append(
            f"{r.target:>9} {r.round:>5} {r.tracks_received:>4}/{r.tracks_expected:<4} "
            f"{r.packets:>9} {r.bitrate_bps / 1e6:>8.2f} {loss:>7} {r.errors:>6} "
            f"{r.server_cpu_s:>6.2f} {cpu:>10} {r.rss_end_kb / 1024:>7.1f} {r.exit_code:>4}"
        )
    by_round: dict[int, dict[str, LkResult]] = {}
    for r in results:
        by_round.setdefault(r.round, {})[r.target] = r
    ratios = [
        pair["mediafed"].cpu_us_per_packet / pair["livekit"].cpu_us_per_packet
        for pair in by_round.values()
        if "mediafed" in pair
        and "livekit" in pair
        and pair["mediafed"].cpu_us_per_packet
        and pair["livekit"].cpu_us_per_packet
    ]
    if ratios:
        each = " ".join(f"{v:.2f}" for v in ratios)
        median = statistics.median(ratios)
        rows.append(f"CPU per packet mediafed/livekit under lk: {each} (median {median:.2f})")
    return "\n".join(rows)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.lk",
        description="Run LiveKit's `lk load-test` against livekit-server and mediafed.",
    )
    parser.add_argument("--target", action="append", choices=TARGETS)
    parser.add_argument("--video-publishers", type=int, default=1)
    parser.add_argument("--audio-publishers", type=int, default=0)
    parser.add_argument("--subscribers", type=int, default=5)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds lk runs")
    parser.add_argument("--num-per-second", type=float, default=5.0, help="joins per second")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--show-output", action="store_true", help="print lk's own tables")
    parser.add_argument("lk_args", nargs="*", help="after --: more `lk load-test` arguments")
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> list[LkResult]:
    server_cpus, client_cpus = split_cpus()
    results = []
    for round_index in range(max(1, args.rounds)):
        for name in args.target or list(TARGETS):
            result = await run_one(name, round_index, args, (server_cpus, client_cpus))
            results.append(result)
            if args.show_output or result.exit_code != 0 or not result.packets:
                print(f"--- lk output ({name}, round {round_index}):")
                print("\n".join(result.output_tail))
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not LK.binary.exists():
        print(f"loadtest.lk: {missing_message(LK)}", file=sys.stderr)
        return 2
    if os.environ.get("MEDIAFED_IN_NETNS") != "1":
        print("loadtest.lk: run inside scripts/in-netns", file=sys.stderr)
        return 2
    try:
        results = asyncio.run(run(args))
    except (TargetError, TestHostError) as exc:
        print(f"loadtest.lk failed: {exc}", file=sys.stderr)
        return 1
    print(table(results))
    if args.json:
        rows = [asdict(r) for r in results]
        args.json.write_text(json.dumps({"tool": "lk load-test", "results": rows}, indent=2))
    return 0 if all(r.exit_code == 0 and r.packets for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
