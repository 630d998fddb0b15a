"""``python -m loadtest`` / ``mediafed-loadtest``: run load scenarios against SFUs side by side.

Example (inside the loopback-only namespace)::

    scripts/in-netns .venv/bin/python -m loadtest --scenario livestream -n 20 \\
        --duration 10 --target janus --target livekit --target mediafed --json out.json

Each N is run on every target in turn (alternating), with the server pinned
to the first allowed core and the clients to the others. See
``loadtest.runner`` for what is measured and how.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from loadtest.client import Clips
from loadtest.media import encode_opus, encode_vp8
from loadtest.peer import PeerError
from loadtest.report import PlotError, markdown, plot, ratio_summary, table, write_json
from loadtest.runner import SCENARIOS, RunConfig, RunError, TargetResult, run_one, split_cpus
from loadtest.target import Target, TargetError

log = logging.getLogger("loadtest")

TARGETS = ("janus", "livekit", "mediafed", "mediafed-2w")
"""``mediafed-Nw``: a mediafed node of N workers spread over every core."""


def make_target(
    name: str, server_cpus: set[int] | None, client_cpus: set[int] | None = None
) -> Target:
    """The target ``name``; ``mediafed-Nw`` runs on the server's and the clients' cores."""
    if name == "janus":
        from loadtest.janus import JanusTarget

        return JanusTarget(server_cpus=server_cpus)
    if name == "livekit":
        from loadtest.livekit_server import LiveKitServerTarget

        return LiveKitServerTarget(server_cpus=server_cpus)
    if name == "mediafed" or (name.startswith("mediafed-") and name.endswith("w")):
        from loadtest.livekit_target import MediafedTarget

        workers = 1 if name == "mediafed" else int(name[len("mediafed-") : -1])
        if workers > 1 and server_cpus is not None:
            server_cpus = server_cpus | (client_cpus or set())
        return MediafedTarget(server_cpus=server_cpus, workers=workers)
    raise RunError(f"unknown target {name!r}; choose from {', '.join(TARGETS)}")


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT, e.g. 1280x720") from None
    if not (16 <= width <= 3840 and 16 <= height <= 2160) or width % 2 or height % 2:
        raise argparse.ArgumentTypeError(f"{text!r}: even sizes from 16x16 to 3840x2160")
    return width, height


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="mediafed-loadtest",
        description="Load-test SFUs (mediafed, Janus, livekit-server) with light simulated "
        "WebRTC clients.",
    )
    parser.add_argument("--scenario", choices=SCENARIOS, default="livestream")
    parser.add_argument(
        "-n",
        type=int,
        nargs="+",
        default=[3],
        help="participants (livestream: subscribers); several values plot against N",
    )
    parser.add_argument(
        "--rooms",
        type=int,
        default=1,
        help="run the scenario in this many rooms at once (K meetings of N: --scenario "
        "meeting -n N --rooms K); mediafed-2w spreads them over its workers",
    )
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    parser.add_argument("--video-bitrate", type=int, default=500_000, help="camera bits/s")
    parser.add_argument("--fps", type=int, default=30, help="camera frames per second")
    parser.add_argument(
        "--video-size",
        type=_size,
        default=(640, 360),
        metavar="WxH",
        help="camera frame size (default 640x360; 1280x720 for high-rate capacity runs)",
    )
    parser.add_argument(
        "--target",
        action="append",
        choices=TARGETS,
        help="SFU to test; repeat to run several alternately (default: janus)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="repeat every N on every target this many times, alternating; ratios are "
        "taken within a round and their median reported (a shared machine drifts)",
    )
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    parser.add_argument("--plot", type=Path, help="draw CPU and latency against N (PNG)")
    parser.add_argument(
        "--markdown", type=Path, help="write one Markdown table per scenario and N here"
    )
    parser.add_argument("--clients-per-worker", type=int, default=20)
    parser.add_argument(
        "--keep-going",
        action="store_true",
        help="report a failed run and go on with the others (exit status 1 at the end)",
    )
    parser.add_argument(
        "--allow-host-network",
        action="store_true",
        help="run even with interfaces other than lo (default: refuse; use scripts/in-netns)",
    )
    parser.add_argument(
        "--impair",
        action="append",
        type=_impairment,
        metavar="[SIDE:]CONDITIONS",
        help="instead of a load run: one call of libwebrtc clients on mediafed per "
        "condition (and a clean one), e.g. 'viewer:loss=5', 'publisher:loss=2,delay=75', "
        "'both:rate_down=500'; SIDE is viewer, publisher or both; conditions loss, "
        "loss_up, loss_down (%%), rate, rate_up, rate_down (kbit/s), delay, jitter (ms "
        "one way); prints decoded frames, freezes, NACKs and retransmissions",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0)
    return parser.parse_args(argv)


def _impairment(text: str) -> Any:
    from loadtest.impaired import Impairment

    try:
        return Impairment.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run_impaired(args: argparse.Namespace) -> int:
    """``--impair``: the calls, and their table (``--markdown`` writes it too)."""
    from loadtest.impaired import markdown as impaired_markdown, run as impaired_run
    from loadtest.testhost import TestHostError

    warmup_s = max(args.warmup, 6.0)  # the clients connect and ramp up first
    try:
        outcomes = asyncio.run(
            impaired_run(args.impair, warmup_s=warmup_s, measure_s=args.duration)
        )
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\ninterrupted; everything started was stopped", file=sys.stderr)
        return 130
    except (TestHostError, RuntimeError, OSError) as exc:
        print(f"\nloadtest --impair failed: {exc}", file=sys.stderr)
        return 1
    text = impaired_markdown(outcomes, args.duration)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    return 0


def encode_clips(args: argparse.Namespace) -> Clips:
    width, height = args.video_size
    return Clips(
        audio=encode_opus(),
        camera=encode_vp8(width, height, args.fps, args.video_bitrate),
        screen=encode_vp8(1280, 720, 5, 300_000),
    )


async def run(args: argparse.Namespace) -> list[TargetResult]:
    # SIGTERM ends a run like Ctrl-C: cancel, so every ``finally`` stops what it started.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    server_cpus, client_cpus = split_cpus()
    if client_cpus:
        os.sched_setaffinity(0, client_cpus)
    clips = encode_clips(args)
    level = _log_level(args.verbose)
    results: list[TargetResult] = []
    runs = [
        (r, n, name)
        for r in range(max(1, args.rounds))
        for n in args.n
        for name in args.target or ["janus"]
    ]
    for round_index, n, name in runs:
        config = RunConfig(
            scenario=args.scenario,
            n=n,
            rooms=args.rooms,
            duration_s=args.duration,
            warmup_s=args.warmup,
            clients_per_worker=args.clients_per_worker,
            log_level=level,
        )
        target = make_target(name, server_cpus, client_cpus)
        try:
            result = await run_one(target, config, clips, client_cpus)
        except (RunError, TargetError, PeerError) as exc:
            if not args.keep_going:
                raise
            failure = f"{name} {args.scenario} n={n} round {round_index}: {exc}"
            print(f"\nrun failed (going on): {failure}", file=sys.stderr)
            args.failures.append(failure)
            continue
        result.round = round_index
        result.video = video_label(args)
        results.append(result)
    return results


def video_label(args: argparse.Namespace) -> str:
    width, height = args.video_size
    return f"{width}x{height} {args.fps} fps {args.video_bitrate / 1e6:g} Mbps"


def _config_dict(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "scenario": args.scenario,
        "n": args.n,
        "rooms": args.rooms,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "video_bitrate_bps": args.video_bitrate,
        "rounds": args.rounds,
        "fps": args.fps,
        "video_size": "x".join(map(str, args.video_size)),
        "targets": args.target or ["janus"],
    }


def _log_level(verbose: int) -> int:
    return logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING


def only_loopback() -> bool:
    """True in a namespace whose only interface is lo (if_nameindex asks this namespace)."""
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.failures = []
    if not args.allow_host_network and not only_loopback():
        print(
            "loadtest: this machine has network interfaces other than lo; run inside the "
            "loopback-only namespace: scripts/in-netns .venv/bin/python -m loadtest ... "
            "(or pass --allow-host-network)",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(
        level=_log_level(args.verbose), format="%(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("aioice").setLevel(logging.WARNING)
    # A shell may start us with SIGINT ignored (background job); Ctrl-C must still stop us.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if args.impair:
        return run_impaired(args)
    try:
        results = asyncio.run(run(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\ninterrupted; everything started was stopped", file=sys.stderr)
        return 130
    except (RunError, TargetError, PeerError) as exc:
        print(f"\nloadtest failed: {exc}", file=sys.stderr)
        return 1
    print(table(results))
    summary = ratio_summary(results)
    if summary:
        print(summary)
    if args.json:
        write_json(args.json, results, _config_dict(args))
    if args.markdown:
        args.markdown.write_text(markdown(results))
    if args.plot:
        try:
            plot(args.plot, results)
        except PlotError as exc:
            print(f"no plot: {exc}", file=sys.stderr)
            return 1
    for failure in args.failures:
        print(f"failed: {failure}", file=sys.stderr)
    return 1 if args.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
