"""Callback scheduling throughput: ``loop.call_soon`` in its two typical shapes.

* ``callbacks.chain`` — one callback that re-schedules itself with
  ``call_soon`` until it has run N times.  Only one handle is ever ready, so
  this measures the per-iteration overhead of the loop (``_run_once`` in
  asyncio) plus the cost of one ``call_soon`` and one handle run.
* ``callbacks.batch`` — 1000 such chains run concurrently (each callback gets
  its chain index as an argument), so every loop iteration has ~1000 ready
  handles and the per-handle cost dominates.

Both report callbacks per second (higher is better).  Each measurement runs
rounds of ``CALLBACKS_PER_ROUND`` callbacks until at least
``DEFAULT_MIN_MEASURE_SECONDS`` have been measured.
"""

from __future__ import annotations

import time

from . import Metric, Workload, scaled
from ._common import run_rounds

CALLBACKS_PER_ROUND = 200_000
CONCURRENT_CHAINS = 1000

CALLBACK_RATE = Metric("callbacks_per_s", "callbacks/s", "", higher_is_better=True)


def _time_single_chain(loop, chain_length: int) -> float:
    """Run one self-rescheduling chain of ``chain_length`` callbacks; return seconds."""
    finished = loop.create_future()
    remaining = chain_length

    def step() -> None:
        nonlocal remaining
        remaining -= 1
        if remaining:
            loop.call_soon(step)
        else:
            finished.set_result(None)

    start = time.perf_counter()
    loop.call_soon(step)
    loop.run_until_complete(finished)
    return time.perf_counter() - start


def _time_concurrent_chains(loop, chain_count: int, chain_length: int) -> float:
    """Run ``chain_count`` interleaved chains of ``chain_length`` callbacks; return seconds."""
    finished = loop.create_future()
    remaining_per_chain = [chain_length] * chain_count
    chains_running = chain_count

    def step(chain_index: int) -> None:
        nonlocal chains_running
        remaining_per_chain[chain_index] -= 1
        if remaining_per_chain[chain_index]:
            loop.call_soon(step, chain_index)
            return
        chains_running -= 1
        if not chains_running:
            finished.set_result(None)

    start = time.perf_counter()
    for chain_index in range(chain_count):
        loop.call_soon(step, chain_index)
    loop.run_until_complete(finished)
    return time.perf_counter() - start


def measure_chain(loop, scale: float) -> dict[str, float]:
    """Measure callbacks/s of a single ``call_soon`` chain."""
    chain_length = scaled(CALLBACKS_PER_ROUND, scale)
    _time_single_chain(loop, max(10, chain_length // 10))  # warm-up
    result = run_rounds(lambda: _time_single_chain(loop, chain_length), chain_length)
    return {"callbacks_per_s": result.pop("rate"), **result}


def measure_batch(loop, scale: float) -> dict[str, float]:
    """Measure callbacks/s of 1000 concurrent ``call_soon`` chains."""
    chain_length = max(2, scaled(CALLBACKS_PER_ROUND, scale) // CONCURRENT_CHAINS)
    callbacks_per_round = chain_length * CONCURRENT_CHAINS
    _time_concurrent_chains(loop, CONCURRENT_CHAINS, 2)  # warm-up
    result = run_rounds(
        lambda: _time_concurrent_chains(loop, CONCURRENT_CHAINS, chain_length),
        callbacks_per_round,
    )
    return {"callbacks_per_s": result.pop("rate"), **result}


WORKLOADS = [
    Workload(
        name="callbacks.chain",
        description="one callback re-scheduling itself with call_soon (1 ready handle/iteration)",
        metrics=(CALLBACK_RATE,),
        run=measure_chain,
    ),
    Workload(
        name="callbacks.batch",
        description=(
            f"{CONCURRENT_CHAINS} concurrent call_soon chains "
            f"(~{CONCURRENT_CHAINS} ready handles/iteration)"
        ),
        metrics=(CALLBACK_RATE,),
        run=measure_batch,
    ),
]
