"""A worker without rooms keeps its timers quiet; a room wakes them at once."""

from __future__ import annotations

import asyncio

import pytest

from mediafed.worker import TICK_S, Worker, WorkerSettings


async def test_an_idle_worker_ticks_once_a_second_and_a_room_wakes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    worker = Worker(WorkerSettings(bind="127.0.0.2", udp_port=0, advertised_ips=("127.0.0.2",)))
    ticks: list[float] = []
    original = worker.rooms.tick

    def counted(now: float, **kwargs: bool) -> None:
        ticks.append(now)
        original(now, **kwargs)

    monkeypatch.setattr(worker.rooms, "tick", counted)
    await worker.start()
    try:
        await asyncio.sleep(0.5)
        assert len(ticks) <= 1, f"{len(ticks)} timer rounds in 0.5 s with no room"
        idle_ticks = len(ticks)
        worker.rooms.get_or_create("wake")
        await asyncio.sleep(10 * TICK_S)
        assert len(ticks) - idle_ticks >= 5, "a room did not bring the 50 ms timers back"
    finally:
        await worker.stop()
