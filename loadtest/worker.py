"""A client worker process: dozens of simulated participants on one asyncio loop.

The tool's main process drives each worker through a command queue (publish,
subscribe, mark, snapshot, collect, stop) and reads replies from one shared
result queue, so workers never compete with the server's core: they are
pinned to the client cores before any client starts.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from typing import Any

from loadtest.client import Clips, Publisher, Subscriber
from loadtest.peer import generate_certificate
from loadtest.stats import ReceiverSnapshot
from loadtest.target import Endpoint, SignalSession

log = logging.getLogger(__name__)

JOIN_CONCURRENCY = 4
FIRST_MEDIA_TIMEOUT_S = 20.0


@dataclass(frozen=True, slots=True)
class ClientPlan:
    """One simulated participant: what it publishes, whether it subscribes."""

    name: str
    publish: tuple[str, ...] = ()
    subscribe: bool = False
    room: int = 0
    """Which room of the run (``--rooms``): 0 is the target's room, k its ``-k`` sibling."""


@dataclass(slots=True)
class _Participant:
    plan: ClientPlan
    session: SignalSession
    publisher: Publisher | None = None
    subscriber: Subscriber | None = None


@dataclass(slots=True)
class WorkerState:
    index: int
    endpoint: Endpoint
    clips: Clips
    participants: dict[str, _Participant] = field(default_factory=dict)
    marks: dict[str, int] = field(default_factory=dict)


async def _session(state: WorkerState, plan: ClientPlan) -> _Participant:
    participant = state.participants.get(plan.name)
    if participant is None:
        session = await state.endpoint.open(plan.name, plan.room)
        participant = state.participants[plan.name] = _Participant(plan, session)
    return participant


async def _publish(state: WorkerState, plans: list[ClientPlan]) -> dict[str, str]:
    certificate = generate_certificate()
    gate = asyncio.Semaphore(JOIN_CONCURRENCY)

    async def one(plan: ClientPlan) -> tuple[str, str]:
        async with gate:
            participant = await _session(state, plan)
            publisher = Publisher(
                plan.name, participant.session, certificate, state.clips, plan.publish
            )
            participant.publisher = publisher
            await publisher.start()
            return plan.name, publisher.feed

    return dict(await asyncio.gather(*(one(p) for p in plans)))


async def _subscribe(
    state: WorkerState, plans: list[tuple[ClientPlan, tuple[str, ...]]]
) -> dict[str, float | None]:
    certificate = generate_certificate()
    gate = asyncio.Semaphore(JOIN_CONCURRENCY)

    async def one(plan: ClientPlan, feeds: tuple[str, ...]) -> tuple[str, float | None]:
        async with gate:
            # Time to first media counts from here: signaling connect, offer/answer, ICE, DTLS.
            join_started_s = time.monotonic()
            participant = await _session(state, plan)
            subscriber = Subscriber(plan.name, participant.session, certificate)
            subscriber.stats.join_started_s = join_started_s
            participant.subscriber = subscriber
            await subscriber.start(feeds)
        try:
            await asyncio.wait_for(subscriber.first_media.wait(), FIRST_MEDIA_TIMEOUT_S)
        except TimeoutError:
            log.warning("x %s received no media in %.0f s", plan.name, FIRST_MEDIA_TIMEOUT_S)
        return plan.name, subscriber.stats.time_to_first_media_s

    return dict(await asyncio.gather(*(one(p, f) for p, f in plans)))


def _subscribers(state: WorkerState) -> list[Subscriber]:
    return [p.subscriber for p in state.participants.values() if p.subscriber is not None]


def _snapshot(state: WorkerState) -> dict[str, Any]:
    snaps: dict[str, ReceiverSnapshot] = {s.name: s.stats.snapshot() for s in _subscribers(state)}
    sent = sum(
        p.publisher.packets_sent for p in state.participants.values() if p.publisher is not None
    )
    return {"receivers": snaps, "packets_sent": sent}


def _mark(state: WorkerState) -> dict[str, Any]:
    """Start a measured window: latency samples from here on."""
    for subscriber in _subscribers(state):
        subscriber.stats.latency_ns.clear()
    return _snapshot(state)


def _collect(state: WorkerState) -> dict[str, Any]:
    for subscriber in _subscribers(state):
        counts = {ssrc: c.packets for ssrc, c in subscriber.stats.ssrcs.items()}
        log.debug("- %s packets per SSRC %s", subscriber.name, counts)
    result = _snapshot(state)
    result["latency_ns"] = [ns for s in _subscribers(state) for ns in s.stats.latency_ns]
    peers = [p.publisher.peer for p in state.participants.values() if p.publisher is not None]
    peers += [s.peer for s in _subscribers(state)]
    result["srtp_profiles"] = sorted({peer.srtp_profile for peer in peers if peer.srtp_profile})
    return result


async def _close(state: WorkerState) -> None:
    """Close every participant at once: one slow close handshake must not hold up the rest."""

    async def close_one(participant: _Participant) -> None:
        for part in (participant.subscriber, participant.publisher):
            if part is not None:
                try:
                    await part.close()
                except Exception:  # shutting down: report and go on with the others
                    log.exception("x closing %s", participant.plan.name)
        try:
            await participant.session.close()
        except Exception:
            log.exception("x closing the signaling of %s", participant.plan.name)

    await asyncio.gather(*(close_one(p) for p in state.participants.values()))
    state.participants.clear()


async def _serve(
    state: WorkerState, commands: Queue[tuple[str, Any]], results: Queue[tuple[int, str, Any]]
) -> None:
    loop = asyncio.get_running_loop()
    while True:
        command, payload = await loop.run_in_executor(None, commands.get)
        try:
            if command == "publish":
                reply: Any = await _publish(state, payload)
            elif command == "subscribe":
                reply = await _subscribe(state, payload)
            elif command == "mark":
                reply = _mark(state)
            elif command == "snapshot":
                reply = _snapshot(state)
            elif command == "collect":
                reply = _collect(state)
            elif command == "stop":
                await _close(state)
                results.put((state.index, "stopped", None))
                return
            else:
                raise ValueError(f"unknown worker command {command!r}")
        except Exception as exc:
            log.info("x %s failed", command, exc_info=True)  # the traceback with -v
            results.put((state.index, "error", f"{type(exc).__name__}: {exc}"))
            continue
        results.put((state.index, command, reply))


def worker_main(
    index: int,
    endpoint: Endpoint,
    clips: Clips,
    cpus: set[int] | None,
    log_level: int,
    commands: Queue[tuple[str, Any]],
    results: Queue[tuple[int, str, Any]],
) -> None:
    """Process entry point (multiprocessing, spawn)."""
    # Ctrl-C goes to the whole foreground group; the main process does the shutdown.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=log_level, format=f"w{index} %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aioice").setLevel(max(log_level, logging.WARNING))
    if cpus:
        os.sched_setaffinity(0, cpus)
    state = WorkerState(index, endpoint, clips)
    try:
        asyncio.run(_serve(state, commands, results))
    except Exception as exc:
        results.put((index, "error", f"worker {index} crashed: {exc}"))
