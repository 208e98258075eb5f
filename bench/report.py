"""Rendering of benchmark summaries as plain text and as Markdown."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from stats import MetricSummary, Spread
from workloads import Metric, Workload

NOT_AVAILABLE = "n/a"
UNAVAILABLE = "unavailable"
#: Cell of a pair that is not measured by design (the ``native`` pseudo-loop of a
#: workload without a native counterpart).
NOT_APPLICABLE = "—"

#: ``{(workload name, loop label): reason}`` of pairs the loop cannot run.
Unavailable = dict[tuple[str, str], str]
#: ``{(workload name, loop label)}`` of pairs that are not measured by design.
NotApplicable = set[tuple[str, str]]


def three_significant_digits(value: float) -> str:
    """Format with 3 significant digits, keeping trailing zeros (``1.70``, ``123``)."""
    return f"{value:#.3g}".rstrip(".")


def format_value(value: float, unit: str) -> str:
    """Format a metric value with 3 significant digits and a readable scale."""
    if not math.isfinite(value):
        return NOT_AVAILABLE
    value = float(f"{value:.3g}")  # round first, so 999.96k becomes 1.00M, not 1.00e+03k
    magnitude = abs(value)
    if unit == "µs":
        if magnitude >= 1e6:
            return f"{three_significant_digits(value / 1e6)} s"
        if magnitude >= 1e3:
            return f"{three_significant_digits(value / 1e3)} ms"
        return f"{three_significant_digits(value)} µs"
    for threshold, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if magnitude >= threshold:
            return f"{three_significant_digits(value / threshold)}{suffix}"
    return three_significant_digits(value)


def format_factor(factor: float) -> str:
    """Format an improvement factor as ``×1.23`` / ``×12.3`` / ``×123``."""
    if not math.isfinite(factor):
        return NOT_AVAILABLE
    if factor >= 100:
        return f"×{factor:.0f}"
    if factor >= 10:
        return f"×{factor:.1f}"
    return f"×{factor:.2f}"


def format_spread(spread: Spread | None, unit: str) -> str:
    """``median (min–max)`` of a metric, or n/a."""
    if spread is None:
        return NOT_AVAILABLE
    return (
        f"{format_value(spread.median, unit)} "
        f"({format_value(spread.minimum, unit)}–{format_value(spread.maximum, unit)})"
    )


def format_factor_spread(spread: Spread | None) -> str:
    """``×median [min–max]`` of improvement factors, or n/a."""
    if spread is None:
        return NOT_AVAILABLE
    return (
        f"{format_factor(spread.median)} "
        f"[{format_factor(spread.minimum)[1:]}–{format_factor(spread.maximum)[1:]}]"
    )


def metric_heading(metric: Metric) -> str:
    """Metric label with its unit and direction, e.g. ``lateness p99 [µs] ↓``."""
    unit = f" [{metric.unit}]" if metric.unit and metric.unit != "µs" else ""  # µs: in values
    arrow = "↑" if metric.higher_is_better else "↓"
    return f"{metric.label}{unit} {arrow}"


def _index(summaries: Iterable[MetricSummary]) -> dict[tuple[str, str, str], MetricSummary]:
    return {(s.workload, s.metric_key, s.loop_label): s for s in summaries}


def unavailable_notes(unavailable: Unavailable) -> list[str]:
    """One line per (workload, loop) pair the loop could not run, with the reason."""
    return [
        f"{workload} on {label}: unavailable ({reason})"
        for (workload, label), reason in sorted(unavailable.items())
    ]


def skipped_notes(skipped: dict[str, str]) -> list[str]:
    """One line per workload skipped on this machine, with the reason."""
    return [f"{workload}: skipped ({reason})" for workload, reason in sorted(skipped.items())]


def render_text(
    workloads: list[Workload],
    loop_labels: list[str],
    reference_labels: list[str],
    summaries: list[MetricSummary],
    unavailable: Unavailable | None = None,
    not_applicable: NotApplicable | None = None,
    skipped: dict[str, str] | None = None,
) -> str:
    """Render a fixed-width report: per workload and metric, one line per loop.

    Pairs in ``unavailable`` show ``unavailable`` instead of ``n/a`` and are
    listed with their reasons at the end; pairs in ``not_applicable`` have no
    line, and factors against them show ``—``.  Workloads in ``skipped``
    (not run on this machine) are listed at the end.
    """
    unavailable = unavailable or {}
    not_applicable = not_applicable or set()
    by_key = _index(summaries)
    references = [label for label in reference_labels if label in loop_labels]
    label_width = max([len(label) for label in loop_labels] + [4])
    lines: list[str] = []
    for workload in workloads:
        lines.append(f"== {workload.name}: {workload.description}")
        for metric in workload.metrics:
            lines.append(f"   {metric_heading(metric)}")
            header = f"     {'loop':<{label_width}}  {'median (min–max)':<30}"
            header += "".join(f"{'vs ' + reference:<22}" for reference in references)
            lines.append(header.rstrip())
            for label in loop_labels:
                if (workload.name, label) in not_applicable:
                    continue
                summary = by_key.get((workload.name, metric.key, label))
                value = format_spread(summary.value if summary else None, metric.unit)
                if (workload.name, label) in unavailable:
                    value = UNAVAILABLE
                row = f"     {label:<{label_width}}  {value:<30}"
                for reference in references:
                    cell = (
                        NOT_APPLICABLE
                        if reference == label or (workload.name, reference) in not_applicable
                        else format_factor_spread(
                            summary.factors.get(reference) if summary else None
                        )
                    )
                    row += f"{cell:<22}"
                lines.append(row.rstrip())
        lines.append("")
    lines.append(
        "Factors ×F: median over repetitions of (loop vs reference in the same repetition);"
        " F > 1 means the loop is F times better (faster, or less late), F < 1 worse."
    )
    lines.extend(unavailable_notes(unavailable))
    lines.extend(skipped_notes(skipped or {}))
    return "\n".join(lines)


def _markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return lines


def render_markdown(
    meta: dict[str, Any],
    loops: list[dict[str, Any]],
    workloads: list[Workload],
    loop_labels: list[str],
    reference_labels: list[str],
    summaries: list[MetricSummary],
    unavailable: Unavailable | None = None,
    not_applicable: NotApplicable | None = None,
    skipped: dict[str, str] | None = None,
) -> str:
    """Render a Markdown report: run facts, loops, a summary and a detail table.

    Pairs in ``unavailable`` show ``unavailable`` instead of ``n/a`` and are
    listed with their reasons under the summary table.  Pairs in
    ``not_applicable`` show ``—`` in the summary and have no detail row;
    workloads in ``skipped`` are listed under the summary table.
    """
    unavailable = unavailable or {}
    not_applicable = not_applicable or set()
    skipped = skipped or {}
    by_key = _index(summaries)
    references = [label for label in reference_labels if label in loop_labels]
    primary = references[0] if references else None
    lines = [
        f"Command: `{meta['command']}`  ",
        f"Run: {meta['started']} → {meta['finished']}; {meta['machine']}; "
        f"{meta['repeat']} repetitions, loops interleaved per repetition, one fresh process "
        f"per measurement; malloc: {meta['malloc']}"
        + (f"; echo client: {meta['echo_client']}." if meta.get("echo_client") else "."),
        "",
    ]
    loop_rows = [
        [
            loop["label"],
            f"`{loop['target']}`",
            loop.get("version") or "",
            loop.get("loop_type") or f"unavailable: {loop.get('reason', '')}",
        ]
        for loop in loops
    ]
    lines += _markdown_table(["loop", "factory", "version", "loop type"], loop_rows)
    lines.append("")

    # Loops that are not references (e.g. ferroloop) also get columns against the
    # other references, so the summary answers "how does it compare with uvloop/rloop".
    subjects = [label for label in loop_labels if label not in reference_labels]
    extra_comparisons = [
        (subject, reference)
        for subject in subjects
        for reference in references
        if reference != primary
    ]
    summary_rows = []
    for workload in workloads:
        for position, metric in enumerate(workload.metrics):
            row = [workload.name if position == 0 else "", metric_heading(metric)]
            for label in loop_labels:
                if (workload.name, label) in not_applicable:
                    row.append(NOT_APPLICABLE)
                    continue
                summary = by_key.get((workload.name, metric.key, label))
                if summary is None or summary.value is None:
                    row.append(
                        UNAVAILABLE if (workload.name, label) in unavailable else NOT_AVAILABLE
                    )
                    continue
                cell = format_value(summary.value.median, metric.unit)
                if primary and label != primary:
                    factor = summary.factors.get(primary)
                    cell += f" {format_factor(factor.median) if factor else NOT_AVAILABLE}"
                row.append(cell)
            for subject, reference in extra_comparisons:
                if {(workload.name, subject), (workload.name, reference)} & not_applicable:
                    row.append(NOT_APPLICABLE)
                    continue
                summary = by_key.get((workload.name, metric.key, subject))
                factor = summary.factors.get(reference) if summary else None
                row.append(format_factor_spread(factor))
            summary_rows.append(row)
    if primary:
        lines.append(
            f"Medians; ×F = improvement factor vs {primary} (F > 1: better)"
            + ("; last columns: factor [min–max] of the named pair." if extra_comparisons else ".")
        )
        lines.append("")
    extra_headers = [f"{subject} vs {reference}" for subject, reference in extra_comparisons]
    lines += _markdown_table(["workload", "metric", *loop_labels, *extra_headers], summary_rows)
    lines.append("")
    pseudo_loops = [
        loop["label"] for loop in loops if loop.get("pseudo_loop") and loop["label"] in loop_labels
    ]
    for label in pseudo_loops:
        lines.append(
            f"`{label}` is not an event loop: the same client against the compiled "
            f"server of the loop table (no Python), measured only where a workload has "
            f"such a counterpart ({NOT_APPLICABLE} elsewhere). A factor *X vs {label}* "
            f"of ×F < 1 means X needs 1/F times its CPU per request (or reaches F times "
            f"its requests/s)."
        )
        lines.append("")
    if unavailable or skipped:
        lines += [f"- {note}" for note in unavailable_notes(unavailable)]
        lines += [f"- {note}" for note in skipped_notes(skipped)]
        lines.append("")

    detail_rows = []
    for workload in workloads:
        for metric in workload.metrics:
            for label in loop_labels:
                if (workload.name, label) in not_applicable:
                    continue
                summary = by_key.get((workload.name, metric.key, label))
                value = format_spread(summary.value if summary else None, metric.unit)
                if (workload.name, label) in unavailable:
                    value = UNAVAILABLE
                row = [workload.name, metric_heading(metric), label, value]
                for reference in references:
                    if reference == label or (workload.name, reference) in not_applicable:
                        row.append(NOT_APPLICABLE)
                    else:
                        factors = summary.factors.get(reference) if summary else None
                        row.append(format_factor_spread(factors))
                detail_rows.append(row)
    lines.append(
        "Detail: median (min–max) over repetitions; factors are medians [min–max] of "
        "per-repetition improvement factors."
    )
    lines.append("")
    lines += _markdown_table(
        ["workload", "metric", "loop", "median (min–max)", *(f"vs {r}" for r in references)],
        detail_rows,
    )
    return "\n".join(lines) + "\n"
