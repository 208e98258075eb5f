"""Helpers shared by workload modules (not a workload module itself)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterable, Sequence

from . import WorkloadUnavailable

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


def require_loop_methods(loop, names: Iterable[str]) -> None:
    """Raise WorkloadUnavailable if the loop leaves any of ``names`` to the abstract stub.

    A method counts as missing when the loop's class lacks it or inherits
    ``asyncio.AbstractEventLoop``'s, which only raises ``NotImplementedError``.
    """
    missing = [
        name
        for name in names
        if getattr(type(loop), name, None) in (None, getattr(asyncio.AbstractEventLoop, name))
    ]
    if missing:
        raise WorkloadUnavailable(f"{type(loop).__name__} does not implement {', '.join(missing)}")


def lacks_feature(loop, feature: str, call: str, error: NotImplementedError) -> WorkloadUnavailable:
    """Return the WorkloadUnavailable to raise for a loop whose ``call`` raised ``error``.

    Reads "<loop class> has no <feature>: <call> raised NotImplementedError", with
    ": <message>" after it when the error has one (rloop's has none).
    """
    detail = f": {error}" if str(error) else ""
    return WorkloadUnavailable(
        f"{type(loop).__name__} has no {feature}: {call} raised NotImplementedError{detail}"
    )
