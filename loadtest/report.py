"""The load test's outputs: a table on stdout, a JSON file, and an optional plot.

The JSON holds every ``TargetResult`` field plus, for each scenario and N
measured on more than one target, the CPU-per-packet ratio of each target to
Janus (the ratio is the number the README's speed claims rest on).
"""

from __future__ import annotations

import datetime
import json
import statistics
from dataclasses import asdict
from pathlib import Path
from typing import Any

from loadtest.runner import TargetResult


class PlotError(Exception):
    """The plot could not be drawn; the message says what to install."""


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


COLUMNS = (
    ("target", 9),
    ("scenario", 11),
    ("N", 4),
    ("subs", 5),
    ("fwd pkt/s", 10),
    ("fwd Mbit/s", 10),
    ("CPU %", 6),
    ("CPU us/pkt", 10),
    ("cli CPU%", 8),
    ("loss avg%", 9),
    ("loss max%", 9),
    ("lat p50", 8),
    ("lat p95", 8),
    ("lat p99", 8),
    ("RSS MB", 7),
    ("KB/sub", 7),
    ("TTFM p50", 9),
    ("no media", 8),
)


def table(results: list[TargetResult]) -> str:
    """A fixed-width table, one row per target and scenario; latencies and TTFM in ms."""
    header = " ".join(name.rjust(width) for name, width in COLUMNS)
    rows = [header, "-" * len(header)]
    for r in results:
        cells = (
            r.target,
            r.scenario,
            str(r.n),
            str(r.subscribers),
            f"{r.forwarded_pps:.0f}",
            f"{r.forwarded_bps / 1e6:.2f}",
            f"{r.server_cpu_percent:.1f}",
            _fmt(r.cpu_us_per_packet, ".1f"),
            f"{r.client_cpu_percent:.0f}",
            f"{100 * r.loss_mean:.2f}",
            f"{100 * r.loss_max:.2f}",
            _fmt(r.latency_ms["p50"], ".2f"),
            _fmt(r.latency_ms["p95"], ".2f"),
            _fmt(r.latency_ms["p99"], ".2f"),
            f"{r.rss_end_kb / 1024:.1f}",
            _fmt(r.rss_per_subscriber_kb, ".0f"),
            _fmt(r.time_to_first_media_ms["p50"], ".0f"),
            str(r.subscribers_without_media),
        )
        rows.append(" ".join(c.rjust(w) for c, (_, w) in zip(cells, COLUMNS, strict=True)))
    for r in results:
        if r.subscribers_without_media:
            rows.append(
                f"warning: {r.subscribers_without_media} of {r.subscribers} {r.target} "
                f"subscribers received no media; their loss is not counted (see -v output)"
            )
    return "\n".join(rows)


def ratios(results: list[TargetResult]) -> list[dict[str, Any]]:
    """CPU per packet of every non-Janus target relative to Janus, same scenario, N and round."""
    janus = {
        (r.scenario, r.n, r.round): r.cpu_us_per_packet
        for r in results
        if r.target == "janus" and r.cpu_us_per_packet
    }
    out = []
    for r in results:
        base = janus.get((r.scenario, r.n, r.round))
        if r.target != "janus" and base and r.cpu_us_per_packet is not None:
            out.append(
                {
                    "target": r.target,
                    "scenario": r.scenario,
                    "n": r.n,
                    "round": r.round,
                    "cpu_per_packet_vs_janus": r.cpu_us_per_packet / base,
                }
            )
    return out


def ratio_summary(results: list[TargetResult]) -> str:
    """One line per target, scenario and N: the ratio of each round and their median."""
    grouped: dict[tuple[str, str, int], list[float]] = {}
    for row in ratios(results):
        key = (row["target"], row["scenario"], row["n"])
        grouped.setdefault(key, []).append(row["cpu_per_packet_vs_janus"])
    lines = []
    for (target, scenario, n), values in grouped.items():
        each = " ".join(f"{v:.2f}" for v in values)
        lines.append(
            f"CPU per packet {target}/janus, {scenario} N={n}: {each} "
            f"(median {statistics.median(values):.2f})"
        )
    return "\n".join(lines)


def to_json(results: list[TargetResult], config: dict[str, Any]) -> dict[str, Any]:
    return {
        "tool": "mediafed-loadtest",
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "config": config,
        "results": [asdict(r) for r in results],
        "ratios": ratios(results),
    }


def write_json(path: Path, results: list[TargetResult], config: dict[str, Any]) -> None:
    path.write_text(json.dumps(to_json(results, config), indent=2) + "\n")


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def plot(path: Path, results: list[TargetResult]) -> None:
    """CPU per packet and latency p99 against N, one line per target and scenario."""
    try:
        import matplotlib  # type: ignore[import-not-found, unused-ignore]

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]
    except ImportError as exc:
        raise PlotError("--plot needs matplotlib: pip install matplotlib") from exc
    fig, (ax_cpu, ax_lat) = plt.subplots(1, 2, figsize=(11, 4))
    series: dict[tuple[str, str], list[TargetResult]] = {}
    for r in results:
        series.setdefault((r.target, r.scenario), []).append(r)
    for (target, scenario), rows in sorted(series.items()):
        # Several rounds give several points per N: draw the median through them.
        by_n: dict[int, list[TargetResult]] = {}
        for r in rows:
            by_n.setdefault(r.n, []).append(r)
        ns = sorted(by_n)
        cpu = [_median([r.cpu_us_per_packet for r in by_n[n]]) for n in ns]
        p99 = [_median([r.latency_ms["p99"] for r in by_n[n]]) for n in ns]
        label = f"{target} {scenario}"
        ax_cpu.plot(ns, cpu, marker="o", label=label)
        ax_lat.plot(ns, p99, marker="o", label=label)
    ax_cpu.set(xlabel="N", ylabel="server CPU per forwarded packet (µs)", title="CPU")
    ax_lat.set(xlabel="N", ylabel="added latency p99 (ms)", title="Latency")
    for ax in (ax_cpu, ax_lat):
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
