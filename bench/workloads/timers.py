"""Timer scheduling throughput and timer lateness.

* ``timers.burst`` — inside a running coroutine, schedule 100k
  ``loop.call_later`` timers with random delays in 0–10 ms, cancel a random
  half of them, then wait until the other half has fired.  Reports timers/s
  (100k / wall time of the whole round: scheduling, cancelling and firing) and
  the lateness p50/p99 of the fired timers.  Scheduling 100k timers takes
  longer than 10 ms on every loop, so all timers are overdue when the loop gets
  back to them: this lateness is the time to schedule and cancel the burst plus
  the time to drain the overdue timers — a throughput figure, not precision.
* ``timers.lateness`` — 20k ``loop.call_at`` timers spread over one second
  (every 10 ms a batch of 200 timers due 0–50 ms later; ≈20k timers/s, a light
  load), so the loop mostly sleeps in its selector between timers.  Reports
  the lateness p50/p99 — how long after its ``when`` a timer actually runs —
  measured with ``loop.time()`` as the asyncio API defines it, and the same
  measured with ``time.monotonic()``.  The second view matters for loops whose
  ``loop.time()`` is a cached per-iteration clock (uvloop/libuv caches it, with
  1 ms resolution), where ``loop.time()``-based lateness understates the real
  delay.

Lateness is reported in microseconds; lower is better.  Small negative values
(a timer run marginally before its ``when``) are possible within a loop's
clock resolution.
"""

from __future__ import annotations

import random
import time

from . import Metric, Workload, scaled
from ._common import DEFAULT_MAX_ROUNDS, DEFAULT_MIN_MEASURE_SECONDS, percentile

BURST_TIMERS_PER_ROUND = 100_000
BURST_MAX_DELAY_S = 0.010
SPREAD_TIMER_COUNT = 20_000
SPREAD_SPAN_S = 1.0
SPREAD_TICK_S = 0.010
SPREAD_MAX_DELAY_S = 0.050
RANDOM_SEED = 20251125
MICROSECONDS_PER_SECOND = 1e6


def _burst_round(loop, delays: list[float], cancelled: list[bool]) -> tuple[float, list[float]]:
    """Run one burst round; return (elapsed seconds, lateness of fired timers in s)."""
    expected_fires = cancelled.count(False)
    lateness: list[float] = []

    async def schedule_cancel_and_wait() -> float:
        all_fired = loop.create_future()
        loop_time = loop.time

        def on_timer(expected_when: float) -> None:
            lateness.append(loop_time() - expected_when)
            if len(lateness) == expected_fires:
                all_fired.set_result(None)

        start = time.perf_counter()
        handles = [loop.call_later(delay, on_timer, loop_time() + delay) for delay in delays]
        for handle, is_cancelled in zip(handles, cancelled, strict=True):
            if is_cancelled:
                handle.cancel()
        await all_fired
        return time.perf_counter() - start

    elapsed = loop.run_until_complete(schedule_cancel_and_wait())
    return elapsed, lateness


def measure_burst(loop, scale: float) -> dict[str, float]:
    """Measure call_later + cancel throughput and the lateness of the survivors."""
    timer_count = scaled(BURST_TIMERS_PER_ROUND, scale)
    rng = random.Random(RANDOM_SEED)
    delays = [rng.uniform(0.0, BURST_MAX_DELAY_S) for _ in range(timer_count)]
    cancelled = [False] * timer_count
    for index in rng.sample(range(timer_count), timer_count // 2):
        cancelled[index] = True

    _burst_round(loop, delays[: timer_count // 10], cancelled[: timer_count // 10])  # warm-up
    measured_seconds = 0.0
    rounds = 0
    all_lateness: list[float] = []
    while rounds < DEFAULT_MAX_ROUNDS and (
        rounds == 0 or measured_seconds < DEFAULT_MIN_MEASURE_SECONDS
    ):
        elapsed, lateness = _burst_round(loop, delays, cancelled)
        measured_seconds += elapsed
        all_lateness.extend(lateness)
        rounds += 1
    all_lateness.sort()
    return {
        "timers_per_s": timer_count * rounds / measured_seconds,
        "lateness_p50_us": percentile(all_lateness, 50) * MICROSECONDS_PER_SECOND,
        "lateness_p99_us": percentile(all_lateness, 99) * MICROSECONDS_PER_SECOND,
        "rounds": float(rounds),
        "measured_seconds": measured_seconds,
        "round_wall_over_max_delay": measured_seconds / rounds / BURST_MAX_DELAY_S,
    }


def measure_spread_lateness(loop, scale: float) -> dict[str, float]:
    """Measure lateness of timers scheduled in small batches over ~1 s (light load).

    Every ``SPREAD_TICK_S`` a scheduling callback adds a batch of ``call_at``
    timers due 0–``SPREAD_MAX_DELAY_S`` after the current ``loop.time()``.
    For each timer the expected ``time.monotonic()`` is derived at scheduling
    time (monotonic now + (when − loop.time() now)); spreading the scheduling
    over many instants averages out the phase of coarse loop clocks.
    """
    timer_count = scaled(SPREAD_TIMER_COUNT, scale)
    span = SPREAD_SPAN_S * min(1.0, max(scale, 0.1))
    tick_count = max(1, round(span / SPREAD_TICK_S))
    timers_per_tick = max(1, timer_count // tick_count)
    timer_count = timers_per_tick * tick_count
    rng = random.Random(RANDOM_SEED)
    delays = [rng.uniform(0.0, SPREAD_MAX_DELAY_S) for _ in range(timer_count)]
    loop_lateness: list[float] = []
    monotonic_lateness: list[float] = []
    loop_time = loop.time
    monotonic = time.monotonic

    async def schedule_in_ticks_and_wait() -> None:
        all_fired = loop.create_future()

        def on_timer(when: float, expected_monotonic: float) -> None:
            loop_lateness.append(loop_time() - when)
            monotonic_lateness.append(monotonic() - expected_monotonic)
            if len(loop_lateness) == timer_count:
                all_fired.set_result(None)

        def schedule_batch(tick: int) -> None:
            now_loop = loop_time()
            now_monotonic = monotonic()
            for delay in delays[tick * timers_per_tick : (tick + 1) * timers_per_tick]:
                loop.call_at(now_loop + delay, on_timer, now_loop + delay, now_monotonic + delay)
            if tick + 1 < tick_count:
                loop.call_later(SPREAD_TICK_S, schedule_batch, tick + 1)

        schedule_batch(0)
        await all_fired

    loop.run_until_complete(schedule_in_ticks_and_wait())
    loop_lateness.sort()
    monotonic_lateness.sort()
    return {
        "loop_lateness_p50_us": percentile(loop_lateness, 50) * MICROSECONDS_PER_SECOND,
        "loop_lateness_p99_us": percentile(loop_lateness, 99) * MICROSECONDS_PER_SECOND,
        "monotonic_lateness_p50_us": percentile(monotonic_lateness, 50) * MICROSECONDS_PER_SECOND,
        "monotonic_lateness_p99_us": percentile(monotonic_lateness, 99) * MICROSECONDS_PER_SECOND,
        "loop_lateness_min_us": loop_lateness[0] * MICROSECONDS_PER_SECOND,
        "loop_lateness_max_us": loop_lateness[-1] * MICROSECONDS_PER_SECOND,
        "monotonic_lateness_min_us": monotonic_lateness[0] * MICROSECONDS_PER_SECOND,
        "monotonic_lateness_max_us": monotonic_lateness[-1] * MICROSECONDS_PER_SECOND,
        "timers": float(timer_count),
    }


WORKLOADS = [
    Workload(
        name="timers.burst",
        description=(
            f"{BURST_TIMERS_PER_ROUND // 1000}k call_later (0-{BURST_MAX_DELAY_S * 1000:g} ms), "
            "cancel half, run until the rest fired"
        ),
        metrics=(
            Metric("timers_per_s", "timers/s"),
            Metric("lateness_p50_us", "lateness p50", "µs", higher_is_better=False),
            Metric("lateness_p99_us", "lateness p99", "µs", higher_is_better=False),
        ),
        run=measure_burst,
        cpu_bound=False,  # sleeps until the last timer is due when scheduling is fast
    ),
    Workload(
        name="timers.lateness",
        description=(
            f"{SPREAD_TIMER_COUNT // 1000}k call_at (0-{SPREAD_MAX_DELAY_S * 1000:g} ms) scheduled "
            f"over {SPREAD_SPAN_S:g} s: "
            "how late timers run (loop.time() and time.monotonic())"
        ),
        metrics=(
            Metric(
                "loop_lateness_p50_us", "lateness p50 (loop.time)", "µs", higher_is_better=False
            ),
            Metric(
                "loop_lateness_p99_us", "lateness p99 (loop.time)", "µs", higher_is_better=False
            ),
            Metric(
                "monotonic_lateness_p50_us",
                "lateness p50 (monotonic)",
                "µs",
                higher_is_better=False,
            ),
            Metric(
                "monotonic_lateness_p99_us",
                "lateness p99 (monotonic)",
                "µs",
                higher_is_better=False,
            ),
        ),
        run=measure_spread_lateness,
        cpu_bound=False,
    ),
]
