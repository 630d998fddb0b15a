"""The supervisor's room table: one worker per room, new rooms to the least loaded."""

from __future__ import annotations

import pytest

from mediafed.cluster.placement import GRACE_S, HOME, Placement


def test_new_rooms_go_to_the_least_loaded_worker() -> None:
    placement = Placement(3)
    for worker in range(3):
        placement.report(worker, {}, now=0.0)
    # placed rooms count before their workers report them
    assert [placement.place(name, 0.0) for name in ("a", "b", "c")] == [0, 1, 2]
    placement.report(0, {"a": 5}, now=1.0)
    placement.report(1, {"b": 1}, now=1.0)
    placement.report(2, {"c": 2}, now=1.0)
    assert placement.place("d", 1.0) == 1
    placement.report(1, {"b": 1, "d": 3}, now=2.0)
    assert placement.place("e", 2.0) == 2  # 2 participants against 4 and 5
    assert placement.place("a", 2.0) == 0, "a placed room stays where it is"


def test_a_room_lives_on_the_worker_that_reports_it() -> None:
    placement = Placement(2)
    # the home worker's front-ends made a room in-process: joins follow it there
    placement.report(1, {"made-here": 1}, now=0.0)
    assert placement.place("made-here", 0.0) == 1


def test_pinned_rooms_and_home_tokens_go_to_the_home_worker() -> None:
    placement = Placement(2, pinned=["linked"])
    placement.report(0, {"busy": 50}, now=0.0)
    placement.report(1, {}, now=0.0)
    assert placement.place("linked", 0.0) == HOME
    assert placement.place("matrix-call", 0.0, home=True) == HOME
    assert placement.place("other", 0.0) == 1


def test_rooms_a_worker_no_longer_holds_are_forgotten() -> None:
    placement = Placement(2)
    placement.place("joining", 0.0)
    placement.report(0, {}, now=1.0)
    assert placement.worker_of("joining") == 0, "a fresh placement waits for its join"
    release = placement.hold("joining")
    placement.report(0, {}, now=GRACE_S + 1)
    assert placement.worker_of("joining") == 0, "an open connection keeps it"
    release()
    placement.report(0, {}, now=GRACE_S + 2)
    assert placement.worker_of("joining") is None
    placement.report(1, {"ended": 2}, now=20.0)
    placement.report(1, {}, now=21.0)
    assert placement.worker_of("ended") is None, "its last participant left"


def test_a_dead_worker_takes_only_its_rooms() -> None:
    placement = Placement(2)
    placement.report(0, {"stays": 2}, now=0.0)
    placement.report(1, {"lost": 2}, now=0.0)
    release = placement.hold("lost")
    assert placement.worker_down(1) == ["lost"]
    release()  # the dead worker's connections end later: harmless
    assert placement.worker_of("stays") == 0
    assert placement.worker_of("lost") is None
    # the lost room's clients come back: it goes to a worker that runs
    assert placement.place("lost", 1.0) == 0


def test_a_node_needs_a_worker() -> None:
    with pytest.raises(ValueError, match="at least one worker"):
        Placement(0)
