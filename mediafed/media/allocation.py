"""Share a subscriber's estimated bandwidth among the video it watches.

The estimate is the send-side one (media/bwe.py) or the browser's REMB
(draft-alvestrand-rmcat-remb). Every watched video starts at its lowest
simulcast layer; the budget left is then spent one step at a time, screen
shares first, up to what each subscriber's settings allow. When even the
lowest layers do not all fit, the videos that do not are paused (screen
shares last), so audio and the rest keep flowing. Pure functions, no I/O, no
clock.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

DEFAULT_LAYER_BPS = {0: 150_000, 1: 500_000, 2: 1_500_000}
"""What a layer is assumed to need before it has been measured or announced."""
PAUSED = -1
"""The quality of a video that does not fit at all: nothing is forwarded."""


@dataclass(frozen=True, slots=True)
class Demand:
    key: Hashable
    max_quality: int
    """The best quality the subscriber's settings allow (0 low .. 2 high)."""
    layers: dict[int, int]
    """Available qualities of the published track -> their bitrate in bps."""
    priority: int = 0
    """Higher is served first (screen shares)."""


def allocate(
    budget_bps: int, demands: Sequence[Demand], *, may_pause: bool = False
) -> dict[Hashable, int]:
    """The quality each demand gets within ``budget_bps``; with ``may_pause``,
    :data:`PAUSED` for those whose lowest layer no longer fits. Demands without
    layers (nothing known yet) are left out."""
    order = sorted(demands, key=lambda demand: -demand.priority)
    choice: dict[Hashable, int] = {}
    spent = 0
    for demand in order:
        if not demand.layers:
            continue
        lowest = min(demand.layers)
        if may_pause and spent + demand.layers[lowest] > budget_bps:
            choice[demand.key] = PAUSED
            continue
        choice[demand.key] = lowest
        spent += demand.layers[lowest]
    improved = True
    while improved:
        improved = False
        for demand in order:
            current = choice.get(demand.key, PAUSED)
            if current == PAUSED:
                continue
            better = sorted(q for q in demand.layers if current < q <= demand.max_quality)
            if not better:
                continue
            step = better[0]
            cost = demand.layers[step] - demand.layers[current]
            if spent + cost <= budget_bps:
                choice[demand.key] = step
                spent += cost
                improved = True
    return choice


def full_demand(demands: Sequence[Demand]) -> int:
    """What every demand's best wanted layer takes together (bps)."""
    total = 0
    for demand in demands:
        if not demand.layers:
            continue
        wanted = [q for q in demand.layers if q <= demand.max_quality]
        total += demand.layers[max(wanted) if wanted else min(demand.layers)]
    return total


def shortfall(demands: Sequence[Demand], choice: dict[Hashable, int]) -> int | None:
    """The extra bps the cheapest upgrade not taken would need (a step up some demand
    wants and could have), or None when everyone has what they want."""
    cheapest: int | None = None
    for demand in demands:
        current = choice.get(demand.key)
        if current is None:
            continue
        if current == PAUSED:
            cost = demand.layers[min(demand.layers)]  # resuming at the lowest layer
        else:
            better = sorted(q for q in demand.layers if current < q <= demand.max_quality)
            if not better:
                continue
            cost = demand.layers[better[0]] - demand.layers[current]
        cheapest = cost if cheapest is None else min(cheapest, cost)
    return cheapest
