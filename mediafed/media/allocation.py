"""Share a subscriber's estimated bandwidth among the video it watches.

The subscriber's browser reports what its downlink carries (REMB,
draft-alvestrand-rmcat-remb). Every watched video starts at its lowest
simulcast layer; the budget left is then spent one step at a time, screen
shares first, up to what each subscriber's settings allow. Pure function,
no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

DEFAULT_LAYER_BPS = {0: 150_000, 1: 500_000, 2: 1_500_000}
"""What a layer is assumed to need before it has been measured or announced."""


@dataclass(frozen=True, slots=True)
class Demand:
    key: Hashable
    max_quality: int
    """The best quality the subscriber's settings allow (0 low .. 2 high)."""
    layers: dict[int, int]
    """Available qualities of the published track -> their bitrate in bps."""
    priority: int = 0
    """Higher is served first (screen shares)."""


def allocate(budget_bps: int, demands: Sequence[Demand]) -> dict[Hashable, int]:
    """The quality each demand gets within ``budget_bps``."""
    order = sorted(demands, key=lambda demand: -demand.priority)
    choice: dict[Hashable, int] = {}
    spent = 0
    for demand in order:
        if not demand.layers:
            continue
        lowest = min(demand.layers)
        choice[demand.key] = lowest
        spent += demand.layers[lowest]
    improved = True
    while improved:
        improved = False
        for demand in order:
            if demand.key not in choice:
                continue
            current = choice[demand.key]
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


def shortfall(demands: Sequence[Demand], choice: dict[Hashable, int]) -> int | None:
    """The extra bps the cheapest upgrade not taken would need (a step up some demand
    wants and could have), or None when everyone has what they want."""
    cheapest: int | None = None
    for demand in demands:
        current = choice.get(demand.key)
        if current is None:
            continue
        better = sorted(q for q in demand.layers if current < q <= demand.max_quality)
        if better:
            cost = demand.layers[better[0]] - demand.layers[current]
            cheapest = cost if cheapest is None else min(cheapest, cost)
    return cheapest
