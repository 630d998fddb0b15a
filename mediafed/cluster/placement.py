"""Which worker hosts which room (the supervisor's table).

A room lives on exactly one worker. The table learns rooms two ways: the
supervisor places a room when the first join (or ``CreateRoom``) for it
arrives, and every second each worker reports the rooms it holds — which also
tells it about rooms a worker made on its own (the home worker's front-ends
join Matrix and Rocket.Chat calls in-process). A placed room the worker has not
reported yet is kept for :data:`GRACE_S` (the join is on its way) and while a
connection routed to it is open; after that, a room its worker no longer holds
is forgotten, and its next join places it afresh.

New rooms go to the least loaded worker: fewest participants, then fewest
rooms (placed but not yet reported count as one participant each), then the
lowest index. Rooms pinned to the home worker (worker 0) go there: those the
home worker's front-ends serve (their tokens say so) and configured relay-link
rooms.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

HOME = 0
"""The worker that runs the Matrix, Rocket.Chat and relay-link front-ends."""
GRACE_S = 10.0


@dataclass(slots=True)
class _Entry:
    worker: int
    placed_at: float
    connections: int = 0
    reported: bool = False


@dataclass(slots=True)
class WorkerLoad:
    rooms: dict[str, int] = field(default_factory=dict)
    """Room name -> participants, as the worker last reported."""
    up: bool = False

    @property
    def participants(self) -> int:
        return sum(self.rooms.values())


class Placement:
    """Room name -> worker index, for ``workers`` workers."""

    def __init__(self, workers: int, *, pinned: Iterable[str] = ()) -> None:
        if workers < 1:
            raise ValueError("a node needs at least one worker")
        self.workers = workers
        self.pinned = frozenset(pinned)
        self.loads = [WorkerLoad() for _ in range(workers)]
        self._rooms: dict[str, _Entry] = {}

    def worker_of(self, room: str) -> int | None:
        entry = self._rooms.get(room)
        return None if entry is None else entry.worker

    def place(self, room: str, now: float, *, home: bool = False) -> int:
        """The worker of ``room``, choosing one (and remembering it) if it has none."""
        entry = self._rooms.get(room)
        if entry is not None:
            return entry.worker
        worker = HOME if home or room in self.pinned else self.least_loaded()
        self._rooms[room] = _Entry(worker, now)
        return worker

    def least_loaded(self) -> int:
        pending = [0] * self.workers
        for entry in self._rooms.values():
            if not entry.reported:
                pending[entry.worker] += 1
        candidates = [i for i in range(self.workers) if self.loads[i].up] or list(
            range(self.workers)
        )
        return min(
            candidates,
            key=lambda i: (
                self.loads[i].participants + pending[i],
                len(self.loads[i].rooms) + pending[i],
                i,
            ),
        )

    def hold(self, room: str) -> Callable[[], None]:
        """A connection to ``room`` is routed to its worker: keep the room placed
        until the returned function is called (when the connection ends)."""
        entry = self._rooms.get(room)
        if entry is None:
            return lambda: None
        entry.connections += 1

        def release() -> None:
            entry.connections = max(0, entry.connections - 1)

        return release

    def report(self, worker: int, rooms: Mapping[str, int], now: float) -> None:
        """What ``worker`` holds now (room -> participants)."""
        load = self.loads[worker]
        load.rooms = dict(rooms)
        load.up = True
        for name in rooms:
            entry = self._rooms.get(name)
            if entry is None:
                self._rooms[name] = _Entry(worker, now, reported=True)
            elif entry.worker == worker:
                entry.reported = True
            # else: two workers hold one room (a front-end of the home worker made
            # it in-process while it was placed elsewhere); joins keep going to the
            # first, the other ends with its last participant.
        for name, entry in list(self._rooms.items()):
            if entry.worker != worker or name in rooms or entry.connections:
                continue
            if entry.reported or now - entry.placed_at > GRACE_S:
                del self._rooms[name]

    def worker_down(self, worker: int) -> list[str]:
        """``worker`` died: forget its rooms (their next joins place them again)."""
        self.loads[worker] = WorkerLoad()
        gone = [name for name, entry in self._rooms.items() if entry.worker == worker]
        for name in gone:
            del self._rooms[name]
        return gone

    def rooms(self) -> list[str]:
        """Every room placed here (reported or on its way)."""
        return sorted(self._rooms)

    def rooms_of(self, worker: int) -> list[str]:
        return sorted(name for name, entry in self._rooms.items() if entry.worker == worker)
