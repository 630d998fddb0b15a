"""Runs one scenario against one target and measures it.

Order of a run: start the target (server pinned to the server core), record
its baseline RSS, start client workers (pinned to the other cores), join
every publisher, then every subscriber (timing each one's first media), warm
up, then measure a window: server CPU from ``/proc/PID/stat`` (utime+stime of
all server processes, proc(5)), packets and bytes every subscriber received,
loss from sequence gaps (RFC 3550 A.3), latency from the send-time trailer.
Everything started is stopped again, also on failure and on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import multiprocessing
import os
import queue
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.context import SpawnProcess
from multiprocessing.queues import Queue
from typing import Any

import numpy as np

from loadtest.client import Clips
from loadtest.stats import ReceiverSnapshot, loss_fraction, percentiles_ms, window_loss
from loadtest.target import Endpoint, RoomPlan, Target
from loadtest.worker import ClientPlan, worker_main

log = logging.getLogger(__name__)

SCENARIOS = ("meeting", "livestream", "audio", "listeners", "screenshare")
SPEAKERS = 3
"""Speakers of the ``listeners`` scenario (a panel heard by an audience)."""
CLK_TCK = os.sysconf("SC_CLK_TCK")


class RunError(Exception):
    """A run could not complete; the message names the step and what to look at."""


# --------------------------------------------------------------------------- plans


def plan_clients(scenario: str, n: int, rooms: int = 1) -> list[ClientPlan]:
    """The participants of a scenario with ``n`` participants (livestream, listeners: n
    subscribe-only participants besides the publishers), in each of ``rooms`` rooms."""
    if rooms < 1:
        raise RunError("--rooms must be at least 1")
    one = _plan_room(scenario, n)
    if rooms == 1:
        return one
    return [
        dataclasses.replace(plan, name=f"r{k}.{plan.name}", room=k)
        for k in range(rooms)
        for plan in one
    ]


def _plan_room(scenario: str, n: int) -> list[ClientPlan]:
    if n < 1:
        raise RunError("N must be at least 1")
    av_sources = ("microphone", "camera")
    if scenario == "meeting":
        return [ClientPlan(f"p{i}", av_sources, True) for i in range(n)]
    if scenario == "livestream":
        return [ClientPlan("host", av_sources, False)] + [
            ClientPlan(f"v{i}", (), True) for i in range(n)
        ]
    if scenario == "audio":
        return [ClientPlan(f"a{i}", ("microphone",), True) for i in range(n)]
    if scenario == "listeners":
        return [ClientPlan(f"s{i}", ("microphone",), True) for i in range(SPEAKERS)] + [
            ClientPlan(f"l{i}", (), True) for i in range(n)
        ]
    if scenario == "screenshare":
        return [ClientPlan("p0", (*av_sources, "screen_share"), True)] + [
            ClientPlan(f"p{i}", av_sources, True) for i in range(1, n)
        ]
    raise RunError(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")


# --------------------------------------------------------------------------- /proc


def cpu_seconds(pids: list[int]) -> float:
    """utime+stime of ``pids`` (all their threads) in seconds, from /proc/PID/stat."""
    ticks = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except FileNotFoundError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return ticks / CLK_TCK


def thread_runtimes_ns(pids: list[int]) -> dict[tuple[int, int], int]:
    """On-CPU time of every thread of ``pids`` in ns (/proc/PID/task/TID/schedstat).

    Exact scheduler accounting, where utime/stime are sampled at the tick; a
    thread that exits inside the window takes its time with it, so this is a
    cross-check, not the headline number.
    """
    times: dict[tuple[int, int], int] = {}
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except FileNotFoundError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    times[(pid, int(tid))] = int(f.read().split()[0])
            except (FileNotFoundError, ProcessLookupError):
                continue
    return times


def runtime_delta_s(before: dict[tuple[int, int], int], after: dict[tuple[int, int], int]) -> float:
    return sum(ns - before.get(key, 0) for key, ns in after.items()) / 1e9


def rss_kb(pids: list[int]) -> int:
    """Sum of VmRSS of ``pids`` in kB, from /proc/PID/status."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except FileNotFoundError:
            continue
    return total


def split_cpus() -> tuple[set[int] | None, set[int] | None]:
    """(server cores, client cores): the first allowed core for the server, the rest for us."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None, None
    return {allowed[0]}, set(allowed[1:])


# --------------------------------------------------------------------------- results


@dataclass(slots=True)
class TargetResult:
    """Measures of one target in one scenario; every field goes into the JSON report."""

    target: str
    scenario: str
    n: int
    publishers: int
    subscribers: int
    window_s: float
    sent_packets: int
    forwarded_packets: int
    forwarded_pps: float
    forwarded_bps: float
    server_cpu_s: float
    server_cpu_percent: float
    cpu_us_per_packet: float | None
    cpu_us_per_packet_schedstat: float | None
    loss_mean: float
    loss_max: float
    loss_total: float
    latency_ms: dict[str, float | None]
    latency_samples: int
    rss_baseline_kb: int
    rss_joined_kb: int
    rss_end_kb: int
    rss_per_subscriber_kb: float | None
    time_to_first_media_ms: dict[str, float | None]
    subscribers_without_media: int
    loss_per_subscriber: dict[str, float] = field(default_factory=dict)
    round: int = 0
    """Which round of ``--rounds`` (targets alternate within a round)."""
    client_cpu_percent: float = 0.0
    """CPU of all client workers over the window (they share the other core(s))."""
    srtp_profiles: list[str] = field(default_factory=list)
    """The SRTP profiles the server chose (clients offer what Chrome offers)."""
    rooms: int = 1
    """Rooms of the run (``--rooms``), each with the scenario's N participants."""
    rooms_per_worker: list[int] = field(default_factory=list)
    """A target with several workers: how many of the rooms each one hosts."""
    video: str = ""
    """The camera clip, e.g. "640x360 30 fps 0.5 Mbps": runs of one scenario and N with
    other clips are other cases."""


FIELDS = tuple(TargetResult.__dataclass_fields__)


# --------------------------------------------------------------------------- workers


class WorkerPool:
    """Client worker processes (spawned, so none inherits our event loop)."""

    def __init__(self, count: int, cpus: set[int] | None, log_level: int) -> None:
        self.count = count
        self.cpus = cpus
        self.log_level = log_level
        self._ctx = multiprocessing.get_context("spawn")
        self._results: Queue[tuple[int, str, Any]] = self._ctx.Queue()
        self._commands: list[Queue[tuple[str, Any]]] = []
        self._procs: list[SpawnProcess] = []

    def start(self, endpoint: Endpoint, clips: Clips) -> None:
        for index in range(self.count):
            commands: Queue[tuple[str, Any]] = self._ctx.Queue()
            proc = self._ctx.Process(
                target=worker_main,
                args=(index, endpoint, clips, self.cpus, self.log_level, commands, self._results),
                name=f"loadtest-worker-{index}",
                daemon=True,
            )
            proc.start()
            self._commands.append(commands)
            self._procs.append(proc)

    async def call(
        self, command: str, payloads: dict[int, Any], timeout_s: float = 120.0
    ) -> dict[int, Any]:
        """Send ``command`` to the workers named in ``payloads``; wait for every reply."""
        for index, payload in payloads.items():
            self._commands[index].put((command, payload))
        replies: dict[int, Any] = {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while len(replies) < len(payloads):
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise RunError(f"client workers did not finish {command!r} in {timeout_s:.0f} s")
            try:
                index, kind, reply = await loop.run_in_executor(
                    None, self._results.get, True, min(remaining, 1.0)
                )
            except queue.Empty:
                dead = [p.name for p in self._procs if not p.is_alive()]
                if dead:
                    raise RunError(f"client worker(s) died: {', '.join(dead)}") from None
                continue
            if kind == "error":
                raise RunError(f"client worker {index} failed during {command!r}: {reply}")
            if kind == command:
                replies[index] = reply
        return replies

    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p.pid is not None]

    async def call_all(self, command: str, timeout_s: float = 60.0) -> dict[int, Any]:
        return await self.call(command, dict.fromkeys(range(self.count)), timeout_s)

    async def stop(self) -> None:
        if not self._procs:
            return
        alive = {i: None for i, p in enumerate(self._procs) if p.is_alive()}
        with contextlib.suppress(RunError):
            await self.call("stop", alive, timeout_s=15.0)
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join()
        self._procs.clear()
        self._commands.clear()


# --------------------------------------------------------------------------- a run


@dataclass(frozen=True, slots=True)
class RunConfig:
    scenario: str
    n: int
    duration_s: float
    rooms: int = 1
    warmup_s: float = 1.0
    clients_per_worker: int = 20
    log_level: int = logging.WARNING


Progress = Callable[[str], None]


def _stderr_progress(line: str) -> None:
    end = "\r" if sys.stderr.isatty() else "\n"
    sys.stderr.write(line.ljust(100) + end)
    sys.stderr.flush()


def _merge(replies: dict[int, Any]) -> tuple[dict[str, ReceiverSnapshot], int]:
    receivers: dict[str, ReceiverSnapshot] = {}
    sent = 0
    for reply in replies.values():
        receivers.update(reply["receivers"])
        sent += reply["packets_sent"]
    return receivers, sent


async def run_one(
    target: Target,
    config: RunConfig,
    clips: Clips,
    client_cpus: set[int] | None,
    progress: Progress = _stderr_progress,
) -> TargetResult:
    """Run ``config.scenario`` with ``config.n`` against ``target`` and measure it."""
    plans = plan_clients(config.scenario, config.n, config.rooms)
    room_of = {plan.name: plan.room for plan in plans}
    publishers = [p for p in plans if p.publish]
    subscribers = [p for p in plans if p.subscribe]
    workers = max(1, -(-len(plans) // config.clients_per_worker))
    home = {plan.name: i % workers for i, plan in enumerate(plans)}
    pool = WorkerPool(workers, client_cpus, config.log_level)
    label = f"[{target.name} {config.scenario} n={config.n}]"
    try:
        progress(f"{label} starting {target.name}")
        await target.start(RoomPlan(f"loadtest-{config.scenario}", len(publishers) + 1))
        pids = target.server_pids()
        rss_baseline = rss_kb(pids)
        pool.start(target.endpoint(), clips)

        progress(f"{label} joining {len(publishers)} publisher(s)")
        by_worker: dict[int, list[Any]] = {}
        for plan in publishers:
            by_worker.setdefault(home[plan.name], []).append(plan)
        feeds: dict[str, str] = {}
        for reply in (await pool.call("publish", by_worker)).values():
            feeds.update(reply)

        progress(f"{label} joining {len(subscribers)} subscriber(s)")
        by_worker = {}
        for plan in subscribers:
            others = tuple(
                feed
                for name, feed in feeds.items()
                if name != plan.name and room_of[name] == plan.room
            )
            by_worker.setdefault(home[plan.name], []).append((plan, others))
        ttfm: dict[str, float | None] = {}
        for reply in (await pool.call("subscribe", by_worker)).values():
            ttfm.update(reply)
        rss_joined = rss_kb(pids)
        balance = getattr(target, "rooms_per_worker", None)
        rooms_per_worker = await balance() if balance is not None else []

        await asyncio.sleep(config.warmup_s)
        before, sent_before = _merge(await pool.call_all("mark"))
        cpu_before = cpu_seconds(pids)
        client_cpu_before = cpu_seconds(pool.pids())
        runtimes_before = thread_runtimes_ns(pids)
        started = time.monotonic()
        last_packets = sum(s.packets for s in before.values())
        last_cpu, last_t = cpu_before, started
        while (elapsed := time.monotonic() - started) < config.duration_s:
            await asyncio.sleep(min(1.0, config.duration_s - elapsed))
            snaps, _ = _merge(await pool.call_all("snapshot"))
            now, cpu = time.monotonic(), cpu_seconds(pids)
            packets = sum(s.packets for s in snaps.values())
            dt = max(now - last_t, 1e-6)
            progress(
                f"{label} {now - started:4.1f}/{config.duration_s:.0f} s  "
                f"{(packets - last_packets) / dt:8.0f} pkt/s  "
                f"server CPU {100 * (cpu - last_cpu) / dt:5.1f}%  RSS {rss_kb(pids) / 1024:.1f} MB"
            )
            last_packets, last_cpu, last_t = packets, cpu, now
        collected = await pool.call_all("collect")
        window = time.monotonic() - started
        cpu_after = cpu_seconds(pids)
        client_cpu_s = cpu_seconds(pool.pids()) - client_cpu_before
        runtime_s = runtime_delta_s(runtimes_before, thread_runtimes_ns(pids))
        rss_end = rss_kb(pids)
        after, sent_after = _merge(collected)
        latency = np.concatenate(
            [np.asarray(r["latency_ns"], dtype=np.int64) for r in collected.values()]
        )
        progress(f"{label} done")
        result = _result(
            target.name,
            config,
            len(publishers),
            before,
            after,
            sent_after - sent_before,
            window,
            (cpu_after - cpu_before, runtime_s),
            latency,
            (rss_baseline, rss_joined, rss_end),
            ttfm,
        )
        result.client_cpu_percent = 100 * client_cpu_s / window
        result.rooms = config.rooms
        result.rooms_per_worker = rooms_per_worker
        result.srtp_profiles = sorted(
            {name for r in collected.values() for name in r.get("srtp_profiles", [])}
        )
        return result
    finally:
        await pool.stop()
        await target.stop()


def _result(
    name: str,
    config: RunConfig,
    publishers: int,
    before: dict[str, ReceiverSnapshot],
    after: dict[str, ReceiverSnapshot],
    sent: int,
    window_s: float,
    cpu_s: tuple[float, float],
    latency_ns: np.ndarray[Any, Any],
    rss: tuple[int, int, int],
    ttfm: dict[str, float | None],
) -> TargetResult:
    losses = {
        name: window_loss(before[name], snap) for name, snap in after.items() if name in before
    }
    packets = sum(a.packets - before[n].packets for n, a in after.items() if n in before)
    nbytes = sum(a.bytes - before[n].bytes for n, a in after.items() if n in before)
    expected = sum(a.expected - before[n].expected for n, a in after.items() if n in before)
    subscribers = len(after)
    got_media = [v for v in ttfm.values() if v is not None]
    ttfm_ms = np.asarray(got_media, dtype=np.float64) * 1000
    rss_baseline, rss_joined, rss_end = rss
    stat_cpu_s, schedstat_cpu_s = cpu_s
    return TargetResult(
        target=name,
        scenario=config.scenario,
        n=config.n,
        publishers=publishers,
        subscribers=subscribers,
        window_s=window_s,
        sent_packets=sent,
        forwarded_packets=packets,
        forwarded_pps=packets / window_s,
        forwarded_bps=8 * nbytes / window_s,
        server_cpu_s=stat_cpu_s,
        server_cpu_percent=100 * stat_cpu_s / window_s,
        cpu_us_per_packet=1e6 * stat_cpu_s / packets if packets else None,
        cpu_us_per_packet_schedstat=1e6 * schedstat_cpu_s / packets if packets else None,
        loss_mean=float(np.mean(list(losses.values()))) if losses else 0.0,
        loss_max=max(losses.values(), default=0.0),
        loss_total=loss_fraction(packets, expected),
        latency_ms=percentiles_ms(latency_ns),
        latency_samples=int(latency_ns.size),
        rss_baseline_kb=rss_baseline,
        rss_joined_kb=rss_joined,
        rss_end_kb=rss_end,
        rss_per_subscriber_kb=(rss_joined - rss_baseline) / subscribers if subscribers else None,
        time_to_first_media_ms={
            "p50": float(np.median(ttfm_ms)) if got_media else None,
            "max": float(np.max(ttfm_ms)) if got_media else None,
        },
        subscribers_without_media=len(ttfm) - len(got_media),
        loss_per_subscriber=losses,
    )
