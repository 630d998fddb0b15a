"""The load test's outputs: a table on stdout, a JSON file, and an optional plot.

The JSON holds every ``TargetResult`` field plus, for each scenario, N and
round measured on more than one target, the CPU-per-packet ratio of each
target to each baseline (Janus, LiveKit) measured in the same round: the
ratios are the numbers the README's speed claims rest on.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from loadtest.runner import FIELDS, TargetResult


class PlotError(Exception):
    """The plot could not be drawn; the message says what to install."""


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


COLUMNS = (
    ("target", 11),
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
    ("lat max", 8),
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
            _fmt(r.latency_ms.get("max"), ".1f"),
            f"{r.rss_end_kb / 1024:.1f}",
            _fmt(r.rss_per_subscriber_kb, ".0f"),
            _fmt(r.time_to_first_media_ms["p50"], ".0f"),
            str(r.subscribers_without_media),
        )
        rows.append(" ".join(c.rjust(w) for c, (_, w) in zip(cells, COLUMNS, strict=True)))
    for r in results:
        if r.rooms_per_worker:
            rows.append(
                f"{r.target} round {r.round}: {r.rooms} rooms, per worker "
                + " / ".join(str(count) for count in r.rooms_per_worker)
            )
    for r in results:
        if r.subscribers_without_media:
            rows.append(
                f"warning: {r.subscribers_without_media} of {r.subscribers} {r.target} "
                f"subscribers received no media; their loss is not counted (see -v output)"
            )
    return "\n".join(rows)


BASELINES = ("janus", "livekit", "mediafed")
"""The SFUs every other target is compared with, in this order."""


def ratios(results: list[TargetResult]) -> list[dict[str, Any]]:
    """CPU per packet of each target relative to each baseline, same scenario, N and round."""
    base: dict[tuple[str, str, str, int, int], float] = {
        (r.target, r.scenario, r.video, r.n, r.round): r.cpu_us_per_packet
        for r in results
        if r.target in BASELINES and r.cpu_us_per_packet
    }
    out = []
    for baseline in BASELINES:
        for r in results:
            reference = base.get((baseline, r.scenario, r.video, r.n, r.round))
            if r.target == baseline or not reference or r.cpu_us_per_packet is None:
                continue
            if r.target in BASELINES and BASELINES.index(r.target) < BASELINES.index(baseline):
                continue  # janus/livekit is livekit/janus upside down: give one of the two
            out.append(
                {
                    "target": r.target,
                    "baseline": baseline,
                    "scenario": r.scenario,
                    "video": r.video,
                    "n": r.n,
                    "round": r.round,
                    "cpu_per_packet_ratio": r.cpu_us_per_packet / reference,
                }
            )
    return out


def ratio_summary(results: list[TargetResult]) -> str:
    """One line per target, baseline, scenario and N: the ratio of each round and their median."""
    grouped: dict[tuple[str, str, str, str, int], list[float]] = {}
    for row in ratios(results):
        key = (row["target"], row["baseline"], row["scenario"], row["video"], row["n"])
        grouped.setdefault(key, []).append(row["cpu_per_packet_ratio"])
    lines = []
    for (target, baseline, scenario, video, n), values in grouped.items():
        each = " ".join(f"{v:.2f}" for v in values)
        clip = f" ({video})" if video else ""
        lines.append(
            f"CPU per packet {target}/{baseline}, {scenario}{clip} N={n}: {each} "
            f"(median {statistics.median(values):.2f})"
        )
    return "\n".join(lines)


def _span(values: list[float | None], spec: str) -> str:
    known = sorted(v for v in values if v is not None)
    if not known:
        return "-"
    low, high = format(known[0], spec), format(known[-1], spec)
    return low if low == high else f"{low}-{high}"


def markdown(results: list[TargetResult]) -> str:
    """One Markdown table per scenario: a row per N and target, rounds given as ranges.

    The ratio column holds each round's CPU-per-packet ratio to Janus and to
    LiveKit and (in brackets) their median: what the README's tables show.
    """
    by_scenario: dict[tuple[str, str], dict[tuple[int, str], list[TargetResult]]] = {}
    for r in results:
        key = (r.scenario, r.video)
        by_scenario.setdefault(key, {}).setdefault((r.n, r.target), []).append(r)
    rows = ratios(results)
    out = []
    for (scenario, video), cases in by_scenario.items():
        out += [
            f"{scenario} ({video})" if video else scenario,
            "",
            "| N | target | forwarded pkt/s | CPU µs / forwarded packet | CPU ratio per round "
            "(median) | loss | latency p50 / p99 / max ms | memory per subscriber "
            "| resident at start | time to first media p50 |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for (n, target), runs in sorted(cases.items(), key=lambda item: item[0][0]):
            ratio_cells = []
            for baseline in BASELINES:
                values = [
                    row["cpu_per_packet_ratio"]
                    for row in rows
                    if (row["target"], row["baseline"], row["scenario"], row["video"], row["n"])
                    == (target, baseline, scenario, video, n)
                ]
                if values:
                    each = ", ".join(f"{v:.2f}" for v in values)
                    ratio_cells.append(f"vs {baseline}: {each} ({statistics.median(values):.2f})")
            latency = " / ".join(
                _span([r.latency_ms.get(p) for r in runs], ".2f" if p != "max" else ".1f")
                for p in ("p50", "p99", "max")
            )
            loss = _span([100 * r.loss_mean for r in runs], ".2f")
            idle_mb = _span([r.rss_baseline_kb / 1024 for r in runs], ".0f")
            out.append(
                f"| {n} | {target} | {_span([r.forwarded_pps for r in runs], ',.0f')} "
                f"| {_span([r.cpu_us_per_packet for r in runs], '.1f')} "
                f"| {'; '.join(ratio_cells)} | {loss} % | {latency} "
                f"| {_span([r.rss_per_subscriber_kb for r in runs], '.0f')} KB | {idle_mb} MB "
                f"| {_span([r.time_to_first_media_ms['p50'] for r in runs], '.0f')} ms |"
            )
        out.append("")
    return "\n".join(out)


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


def from_json(paths: list[Path]) -> list[TargetResult]:
    """The results of saved reports (``--json``), in order."""
    results = []
    for path in paths:
        for row in json.loads(path.read_text())["results"]:
            results.append(TargetResult(**{k: v for k, v in row.items() if k in FIELDS}))
    return results


def plot_side_by_side(path: Path, results: list[TargetResult]) -> None:
    """Bars per scenario and N, one per target: CPU per packet, latency p99, memory per subscriber.

    Each bar is the median over rounds; CPU figures of different rounds are
    on one machine but not one moment, so read the ratios, not the heights.
    """
    try:
        import matplotlib  # type: ignore[import-not-found, unused-ignore]

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]
    except ImportError as exc:
        raise PlotError("plots need matplotlib: pip install matplotlib") from exc
    cases: list[tuple[str, str, int]] = []
    targets: list[str] = []
    for r in results:
        if (r.scenario, r.video, r.n) not in cases:
            cases.append((r.scenario, r.video, r.n))
        if r.target not in targets:
            targets.append(r.target)
    panels: tuple[tuple[str, Callable[[TargetResult], float | None]], ...] = (
        ("CPU µs per forwarded packet", lambda r: r.cpu_us_per_packet),
        ("added latency p99 (ms)", lambda r: r.latency_ms["p99"]),
        ("memory per subscriber (KB)", lambda r: r.rss_per_subscriber_kb),
    )
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(8, 1.3 * len(cases)), 9), sharex=True)
    width = 0.8 / max(1, len(targets))
    for ax, (title, value) in zip(axes, panels, strict=True):
        for i, target in enumerate(targets):
            heights = [
                _median(
                    [
                        value(r)
                        for r in results
                        if (r.scenario, r.video, r.n, r.target) == (*case, target)
                    ]
                )
                for case in cases
            ]
            xs = [c + (i - (len(targets) - 1) / 2) * width for c in range(len(cases))]
            ax.bar(xs, [h or 0 for h in heights], width, label=target)
        ax.set_ylabel(title)
        ax.grid(True, axis="y", alpha=0.3)
        if "latency" in title:
            ax.set_yscale("log")  # an overloaded run's seconds beside others' milliseconds
    axes[0].legend()
    labels = [f"{s}\nN={n}\n{v.split(' ')[0]}" if v else f"{s}\nN={n}" for s, v, n in cases]
    axes[-1].set_xticks(range(len(cases)), labels)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """``python -m loadtest.report A.json B.json --markdown out.md --plot out.png``."""
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.report", description="Tables and a plot from saved load tests."
    )
    parser.add_argument("json", type=Path, nargs="+", help="reports written with --json")
    parser.add_argument("--markdown", type=Path, help="write the Markdown tables here")
    parser.add_argument("--plot", type=Path, help="bars per scenario and target (PNG)")
    args = parser.parse_args(argv)
    results = from_json(args.json)
    print(table(results))
    summary = ratio_summary(results)
    if summary:
        print(summary)
    if args.markdown:
        args.markdown.write_text(markdown(results))
    if args.plot:
        try:
            plot_side_by_side(args.plot, results)
        except PlotError as exc:
            print(f"no plot: {exc}", file=sys.stderr)
            return 1
    return 0


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


if __name__ == "__main__":
    sys.exit(main())
