"""Aggregation of per-repetition measurements into medians and ratios.

Ratios are *improvement factors*: for a higher-is-better metric the factor is
``loop / reference``, for a lower-is-better metric ``reference / loop``.  So a
factor above 1 always means "this loop does better than the reference", below
1 "worse".  The reported factor is the median of the per-repetition factors
(loop and reference measured in the same repetition, i.e. close in time), which
cancels most of the machine's drift; min–max of those factors shows spread.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Spread:
    """Median and range of a list of numbers."""

    median: float
    minimum: float
    maximum: float
    count: int

    @classmethod
    def of(cls, values: list[float]) -> Spread | None:
        """Summarise ``values``; ``None`` when there are none."""
        finite = [value for value in values if math.isfinite(value)]
        if not finite:
            return None
        return cls(statistics.median(finite), min(finite), max(finite), len(finite))

    def as_dict(self) -> dict[str, float]:
        """Return a JSON-serialisable view."""
        return {
            "median": self.median,
            "min": self.minimum,
            "max": self.maximum,
            "n": self.count,
        }


@dataclass
class MetricSummary:
    """Result of one (workload, metric, loop) cell over all repetitions."""

    workload: str
    metric_key: str
    loop_label: str
    values_by_rep: dict[int, float]
    value: Spread | None
    factors: dict[str, Spread | None] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable view."""
        return {
            "workload": self.workload,
            "metric": self.metric_key,
            "loop": self.loop_label,
            "values_by_rep": {str(rep): value for rep, value in self.values_by_rep.items()},
            "value": self.value.as_dict() if self.value else None,
            "improvement_factor_vs": {
                reference: spread.as_dict() if spread else None
                for reference, spread in self.factors.items()
            },
        }


def improvement_factor(value: float, reference: float, higher_is_better: bool) -> float:
    """Return how many times better ``value`` is than ``reference`` (NaN if undefined).

    Undefined when either number is not strictly positive (e.g. a lateness of
    zero or a negative lateness), because a ratio of such numbers means nothing.
    """
    if not (value > 0 and reference > 0):
        return math.nan
    return value / reference if higher_is_better else reference / value


def summarise(
    values: dict[tuple[str, str, str], dict[int, float]],
    metric_directions: dict[tuple[str, str], bool],
    loop_labels: list[str],
    reference_labels: list[str],
) -> list[MetricSummary]:
    """Build one :class:`MetricSummary` per (workload, metric, loop).

    ``values`` maps ``(workload, metric_key, loop_label)`` to ``{rep: value}``;
    ``metric_directions`` maps ``(workload, metric_key)`` to higher_is_better.
    Factors are computed against every label of ``reference_labels`` that is
    also in ``loop_labels`` (a loop is not compared with itself).
    """
    summaries: list[MetricSummary] = []
    for (workload, metric_key), higher_is_better in metric_directions.items():
        for loop_label in loop_labels:
            by_rep = values.get((workload, metric_key, loop_label), {})
            summary = MetricSummary(
                workload, metric_key, loop_label, by_rep, Spread.of(list(by_rep.values()))
            )
            for reference in reference_labels:
                if reference == loop_label or reference not in loop_labels:
                    continue
                reference_by_rep = values.get((workload, metric_key, reference), {})
                paired_factors = [
                    improvement_factor(by_rep[rep], reference_by_rep[rep], higher_is_better)
                    for rep in sorted(by_rep.keys() & reference_by_rep.keys())
                ]
                summary.factors[reference] = Spread.of(paired_factors)
            summaries.append(summary)
    return summaries
