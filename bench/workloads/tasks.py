"""Task throughput: creating, running and switching ``asyncio.Task`` objects.

* ``tasks.gather`` — create 100k tasks of a trivial coroutine with
  ``loop.create_task`` and ``asyncio.gather`` them; reports tasks/s.  This
  covers task creation, the first step of each coroutine, completion
  callbacks and the gather bookkeeping.
* ``tasks.sleep0`` — 100k tasks that each ``await asyncio.sleep(0)`` ten
  times; reports task switches/s (100k × 10 switches per round).  Every
  ``sleep(0)`` yields to the loop, which re-schedules the task's step via
  ``call_soon``, so this is the task-step path of a busy server.

Rounds are repeated until at least ``DEFAULT_MIN_MEASURE_SECONDS`` are
measured (normally a single round already takes longer).
"""

from __future__ import annotations

import asyncio
import time

from . import Metric, Workload, scaled
from ._common import run_rounds

TASKS_PER_ROUND = 100_000
SLEEPS_PER_TASK = 10


async def _trivial_coroutine() -> None:
    """Complete in the first step (a trivial coroutine)."""
    return None


async def _yield_repeatedly(times: int) -> None:
    """Yield to the event loop ``times`` times."""
    for _ in range(times):
        await asyncio.sleep(0)


def _time_gather(loop, task_count: int) -> float:
    """Create ``task_count`` trivial tasks and gather them; return seconds."""

    async def create_and_gather() -> float:
        start = time.perf_counter()
        tasks = [loop.create_task(_trivial_coroutine()) for _ in range(task_count)]
        await asyncio.gather(*tasks)
        return time.perf_counter() - start

    return loop.run_until_complete(create_and_gather())


def _time_sleep0_tasks(loop, task_count: int, sleeps_per_task: int) -> float:
    """Run ``task_count`` tasks doing ``sleeps_per_task`` × ``sleep(0)``; return seconds."""

    async def create_and_gather() -> float:
        start = time.perf_counter()
        tasks = [loop.create_task(_yield_repeatedly(sleeps_per_task)) for _ in range(task_count)]
        await asyncio.gather(*tasks)
        return time.perf_counter() - start

    return loop.run_until_complete(create_and_gather())


def measure_gather(loop, scale: float) -> dict[str, float]:
    """Measure tasks/s for create_task + gather of trivial coroutines."""
    task_count = scaled(TASKS_PER_ROUND, scale)
    _time_gather(loop, max(10, task_count // 10))  # warm-up
    result = run_rounds(lambda: _time_gather(loop, task_count), task_count)
    return {"tasks_per_s": result.pop("rate"), **result}


def measure_sleep0(loop, scale: float) -> dict[str, float]:
    """Measure task switches/s for tasks awaiting ``asyncio.sleep(0)`` repeatedly."""
    task_count = scaled(TASKS_PER_ROUND, scale)
    _time_sleep0_tasks(loop, max(10, task_count // 10), 2)  # warm-up
    result = run_rounds(
        lambda: _time_sleep0_tasks(loop, task_count, SLEEPS_PER_TASK),
        task_count * SLEEPS_PER_TASK,
    )
    return {"switches_per_s": result.pop("rate"), **result}


WORKLOADS = [
    Workload(
        name="tasks.gather",
        description=f"create_task + gather of {TASKS_PER_ROUND // 1000}k trivial coroutines",
        metrics=(Metric("tasks_per_s", "tasks/s"),),
        run=measure_gather,
    ),
    Workload(
        name="tasks.sleep0",
        description=(
            f"{TASKS_PER_ROUND // 1000}k tasks x {SLEEPS_PER_TASK} "
            "`await asyncio.sleep(0)` (task switches)"
        ),
        metrics=(Metric("switches_per_s", "task switches/s"),),
        run=measure_sleep0,
    ),
]
