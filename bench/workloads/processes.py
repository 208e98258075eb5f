"""Child processes through ``asyncio.create_subprocess_exec``.

* ``processes.spawn_true`` — spawn ``/bin/true`` with its stdout on a pipe and
  ``communicate()``, one child after the other (rounds of 200). Reports
  processes/s and the loop process's CPU µs per spawn (user + system CPU of the
  whole worker process from ``getrusage(RUSAGE_SELF)``, which includes any
  watcher thread the loop starts and excludes the children's own CPU).
* ``processes.cat_100mb`` — 100 MB through a pipe to ``cat`` and back:
  ``communicate(payload)`` on a ``cat`` child with stdin and stdout on pipes
  (rounds of 100 MB). Reports MB/s (MB sent, which equals MB received) and the
  loop process's CPU ms per MB.

Both wait on children, so they are not CPU-bound for the disturbance check.
A loop without subprocess support (``create_subprocess_exec`` raising
``NotImplementedError``, e.g. zloop 0.0.1, or ``subprocess_exec`` left to the
``AbstractEventLoop`` stub) is reported unavailable, not failed.
"""

from __future__ import annotations

import asyncio
import os
import resource
import subprocess
import time
from collections.abc import Awaitable, Callable

from . import Metric, Workload, scaled
from ._common import lacks_feature

SPAWNS_PER_ROUND = 200
CAT_BYTES = 100 * 1024 * 1024
MIN_SECONDS = 1.0
MAX_ROUNDS = 20


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _warm_up(loop, warm_up: Callable[[], Awaitable[None]]) -> None:
    """Run the warm-up; WorkloadUnavailable when the loop cannot start a child process."""
    try:
        loop.run_until_complete(warm_up())
    except NotImplementedError as error:
        raise lacks_feature(loop, "subprocess support", "create_subprocess_exec", error) from error


def _measure(loop, run_round, operations_per_round: int):
    """Run rounds until ``MIN_SECONDS`` are measured; return (ops, wall s, CPU s, rounds)."""
    wall = cpu = 0.0
    rounds = 0
    while rounds < MAX_ROUNDS and (rounds == 0 or wall < MIN_SECONDS):
        cpu_start, start = _cpu_seconds(), time.perf_counter()
        loop.run_until_complete(run_round())
        wall += time.perf_counter() - start
        cpu += _cpu_seconds() - cpu_start
        rounds += 1
    return operations_per_round * rounds, wall, cpu, rounds


def measure_spawn_true(loop, scale: float) -> dict[str, float]:
    """Processes/s and CPU µs per spawn for /bin/true + communicate()."""
    count = scaled(SPAWNS_PER_ROUND, scale)

    async def one_round() -> None:
        for _ in range(count):
            proc = await asyncio.create_subprocess_exec(
                "/bin/true", stdin=subprocess.DEVNULL, stdout=subprocess.PIPE
            )
            await proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"/bin/true exited with {proc.returncode}")

    async def warm_up() -> None:
        for _ in range(5):
            proc = await asyncio.create_subprocess_exec("/bin/true", stdout=subprocess.PIPE)
            await proc.communicate()

    _warm_up(loop, warm_up)
    spawns, wall, cpu, rounds = _measure(loop, one_round, count)
    return {
        "processes_per_s": spawns / wall,
        "cpu_us_per_spawn": cpu / spawns * 1e6,
        "operations": float(spawns),
        "rounds": float(rounds),
        "measured_seconds": wall,
    }


def measure_cat(loop, scale: float) -> dict[str, float]:
    """MB/s and CPU ms per MB for 100 MB through ``cat`` with communicate()."""
    size = scaled(CAT_BYTES, scale, minimum=1024 * 1024)
    payload = os.urandom(1024 * 1024) * (size // (1024 * 1024))

    async def one_round() -> None:
        proc = await asyncio.create_subprocess_exec(
            "cat", stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        out, _ = await proc.communicate(payload)
        if len(out) != len(payload) or proc.returncode != 0:
            raise RuntimeError(f"cat returned {len(out)} bytes, exit {proc.returncode}")

    async def warm_up() -> None:
        proc = await asyncio.create_subprocess_exec(
            "cat", stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        await proc.communicate(payload[: 1024 * 1024])

    _warm_up(loop, warm_up)
    sent, wall, cpu, rounds = _measure(loop, one_round, len(payload))
    megabytes = sent / 1e6
    return {
        "mb_per_s": megabytes / wall,
        "cpu_ms_per_mb": cpu / megabytes * 1e3,
        "operations": float(sent),
        "rounds": float(rounds),
        "measured_seconds": wall,
    }


WORKLOADS = [
    Workload(
        name="processes.spawn_true",
        description=f"{SPAWNS_PER_ROUND} x create_subprocess_exec('/bin/true') + communicate()",
        metrics=(
            Metric("processes_per_s", "processes/s"),
            Metric("cpu_us_per_spawn", "loop CPU µs/spawn", "µs", higher_is_better=False),
        ),
        run=measure_spawn_true,
        cpu_bound=False,
    ),
    Workload(
        name="processes.cat_100mb",
        description="communicate(100 MB) with `cat` (stdin and stdout on pipes)",
        metrics=(
            Metric("mb_per_s", "MB/s"),
            Metric("cpu_ms_per_mb", "loop CPU ms/MB", "ms", higher_is_better=False),
        ),
        run=measure_cat,
        cpu_bound=False,
    ),
]
