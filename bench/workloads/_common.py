"""Helpers shared by workload modules (not a workload module itself)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

#: Wall-clock time a repeated measurement aims to fill, in seconds.  Fast loops
#: run more rounds of the same size instead of one round that is over in 50 ms.
DEFAULT_MIN_MEASURE_SECONDS = 0.5

#: Upper bound of rounds, so that a pathologically fast result cannot spin.
DEFAULT_MAX_ROUNDS = 200


def run_rounds(
    run_one_round: Callable[[], float],
    operations_per_round: int,
    min_seconds: float = DEFAULT_MIN_MEASURE_SECONDS,
    max_rounds: int = DEFAULT_MAX_ROUNDS,
) -> dict[str, float]:
    """Call ``run_one_round`` until ``min_seconds`` of measured time accrue.

    ``run_one_round`` performs ``operations_per_round`` operations and returns
    the seconds it measured itself (so per-round set-up can stay outside the
    timed region).  Returns the aggregate rate plus the bookkeeping numbers.
    """
    measured_seconds = 0.0
    rounds = 0
    while rounds < max_rounds and (rounds == 0 or measured_seconds < min_seconds):
        measured_seconds += run_one_round()
        rounds += 1
    operations = operations_per_round * rounds
    return {
        "rate": operations / measured_seconds,
        "operations": float(operations),
        "rounds": float(rounds),
        "measured_seconds": measured_seconds,
    }


def percentile(sorted_values: Sequence[float], percent: float) -> float:
    """Nearest-rank percentile of already sorted values (``percent`` in 0–100)."""
    if not sorted_values:
        return math.nan
    rank = math.ceil(percent / 100.0 * len(sorted_values))
    return sorted_values[min(len(sorted_values), max(1, rank)) - 1]


def elapsed_since(start: float) -> float:
    """Seconds elapsed on ``time.perf_counter`` since ``start``."""
    return time.perf_counter() - start
