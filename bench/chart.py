"""Draw benchmark results as a PNG: ferroloop against the other loops of a run, as ratios.

    python3 bench/chart.py bench/data/*.json -o bench/chart.png

Reads the ``--json`` files ``bench/run.py`` writes (their ``summary``: per workload, metric and
loop, the median over the repetitions of the loop's improvement factor against each reference,
paired within a repetition).  One group of bars per workload, one bar per reference loop, for
one metric: by default the workload's CPU cost (server CPU per request, loop CPU per spawn or
per MB, client CPU per round trip) where it reports one, else its first metric (callbacks/s,
tasks/s, ...); ``--metric first`` draws the first metric everywhere.  CPU per unit of work is
what the loop costs and stays comparable on a busy shared machine, where throughput also
depends on who else holds the CPU.  Each bar says how many times
better ferroloop is (> 1: better, whichever way the metric points), on a logarithmic axis, with
the min–max over the repetitions as a whisker.  When several files measured the same workload,
the one that started last wins.  Needs matplotlib (``bench/requirements.txt``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOOP = "ferroloop"
# The reference loops a bar can be drawn for, in drawing order; a run that did not measure one
# (zloop runs on 3.12+ only, zuvloop on 3.14+) simply has no bar for it.
REFERENCES = ("asyncio", "uvloop", "rloop", "zloop", "zuvloop")
REFERENCE_NAMES = {
    "asyncio": "vs stock asyncio",
    "uvloop": "vs uvloop",
    "rloop": "vs rloop",
    "zloop": "vs zloop",
    "zuvloop": "vs zuvloop",
}
COLOURS = {
    "asyncio": "#4c72b0",
    "uvloop": "#dd8452",
    "rloop": "#55a868",
    "zloop": "#8172b3",
    "zuvloop": "#937860",
}


@dataclass
class Row:
    """One workload's bar group: its primary metric and ferroloop's factor per reference."""

    workload: str
    metric_label: str
    factors: dict[str, tuple[float, float, float]]  # reference -> (median, min, max)
    source: str


def chosen_metric(metrics: list[dict[str, Any]], prefer: str) -> dict[str, Any]:
    """Return the metric drawn for a workload: its CPU cost, else its first metric.

    ``prefer="first"`` always takes the first metric.
    """
    if prefer == "cpu":
        for metric in metrics:
            if "cpu" in metric["key"]:
                return metric
    return metrics[0]


def primary_rows(document: dict[str, Any], source: str, prefer: str = "cpu") -> list[Row]:
    """Return the rows of one run document: one metric per workload, ferroloop's factors."""
    summary = document.get("summary")
    if summary is None:
        raise ValueError(f"{source}: no 'summary' (write it with bench/run.py --json)")
    by_key = {(s["workload"], s["metric"], s["loop"]): s for s in summary}
    rows = []
    for workload in document["workloads"]:
        if not workload["metrics"]:
            continue
        metric = chosen_metric(workload["metrics"], prefer)
        cell = by_key.get((workload["name"], metric["key"], LOOP))
        if cell is None:
            continue
        factors = {}
        for reference in REFERENCES:
            spread = (cell.get("improvement_factor_vs") or {}).get(reference)
            if spread and all(math.isfinite(spread[k]) for k in ("median", "min", "max")):
                factors[reference] = (spread["median"], spread["min"], spread["max"])
        if factors:
            arrow = "↑" if metric["higher_is_better"] else "↓"
            rows.append(Row(workload["name"], f"{metric['label']} {arrow}", factors, source))
    return rows


def collect_rows(paths: list[str], prefer: str = "cpu") -> tuple[list[Row], list[str]]:
    """Return the rows of all files (a workload in several: the latest run's) and run dates."""
    documents = []
    for path in paths:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
        documents.append((document["meta"].get("started", ""), path, document))
    documents.sort(key=lambda item: item[0])
    rows: dict[str, Row] = {}
    dates = []
    for started, path, document in documents:
        dates.append(started[:10])
        for row in primary_rows(document, Path(path).name, prefer):
            rows[row.workload] = row
    return sorted(rows.values(), key=lambda row: row.workload), sorted(set(dates))


def draw(rows: list[Row], dates: list[str], output: str) -> None:
    """Draw the grouped horizontal bars into ``output`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    references = [r for r in REFERENCES if any(r in row.factors for row in rows)]
    height = 0.8 / len(references)
    figure, axes = plt.subplots(figsize=(10, 0.55 * len(rows) + 1.6), dpi=110)
    for index, reference in enumerate(references):
        positions, medians, lows, highs = [], [], [], []
        for row_index, row in enumerate(rows):
            if reference not in row.factors:
                continue
            median, low, high = row.factors[reference]
            positions.append(row_index + (index - (len(references) - 1) / 2) * height)
            medians.append(median)
            lows.append(median - low)
            highs.append(high - median)
        # Bars grow from 1 (no difference): right when ferroloop is better, left when worse.
        axes.barh(
            positions,
            [median - 1.0 for median in medians],
            height=height * 0.95,
            left=1.0,
            color=COLOURS[reference],
            label=REFERENCE_NAMES[reference],
        )
        axes.errorbar(
            medians,
            positions,
            xerr=[lows, highs],
            fmt="none",
            elinewidth=0.7,
            capsize=1.5,
            ecolor="#333333",
        )
        for position, median, high in zip(positions, medians, highs, strict=True):
            end = median + high if median >= 1.0 else 1.0
            axes.text(end * 1.04, position, f"×{median:.2f}", va="center", fontsize=7)
    axes.axvline(1.0, color="black", linewidth=1)
    axes.set_xscale("log")
    axes.set_xlim(left=0.3)
    ticks = [0.5, 1, 2, 5, 10, 20, 50]
    axes.set_xticks([t for t in ticks if t <= axes.get_xlim()[1]])
    axes.set_xticklabels([f"×{t:g}" for t in ticks if t <= axes.get_xlim()[1]])
    axes.minorticks_off()
    axes.set_yticks(range(len(rows)))
    axes.set_yticklabels([f"{row.workload}\n{row.metric_label}" for row in rows], fontsize=7.5)
    axes.invert_yaxis()
    axes.set_xlabel(
        "ferroloop's improvement factor (median over repetitions; > 1: ferroloop better)"
    )
    names = [REFERENCE_NAMES[r].removeprefix("vs ") for r in references]
    axes.set_title(f"ferroloop vs {', '.join(names)} ({', '.join(dates)})")
    axes.grid(axis="x", which="both", linewidth=0.3, alpha=0.6)
    axes.legend(
        loc="upper center", bbox_to_anchor=(0.5, -0.45 / len(rows) - 0.06), ncol=len(references)
    )
    figure.tight_layout()
    figure.savefig(output)
    plt.close(figure)


def main(argv: list[str]) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json", nargs="+", help="bench/run.py --json result files")
    parser.add_argument("-o", "--output", default="bench/chart.png", help="the PNG to write")
    parser.add_argument(
        "--metric",
        choices=("cpu", "first"),
        default="cpu",
        help="per workload: its CPU cost metric where it has one (default), or its first metric",
    )
    arguments = parser.parse_args(argv)
    rows, dates = collect_rows(arguments.json, arguments.metric)
    if not rows:
        print("no ferroloop factors in these files", file=sys.stderr)
        return 1
    draw(rows, dates, arguments.output)
    print(f"{arguments.output}: {len(rows)} workloads", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
