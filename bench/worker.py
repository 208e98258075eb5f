"""Worker process: runs exactly one measurement (or a probe) and prints JSON.

The parent (``run.py``) starts one worker per measurement so that every loop
gets a fresh interpreter, heap and import state.  The worker prints one line
``BENCH-RESULT {json}`` on stdout; anything else a loop prints is ignored.
A workload that the loop cannot run (:class:`workloads.WorkloadUnavailable`)
yields ``{"ok": false, "unavailable": reason}`` and exit status 0.

The ``native`` mode measures a workload's Python-free counterpart instead
(``Workload.native``: the compiled ``native-echo`` server, shown as the
pseudo-loop ``native``); its process costs (CPU, RSS, run-queue wait) are the
server process's, since the worker only drives it.

Usage (normally only invoked by ``run.py``)::

    python bench/worker.py probe   --loop MODULE:FACTORY
    python bench/worker.py measure --loop MODULE:FACTORY --workload NAME [--scale S]
    python bench/worker.py native  --binary PATH --workload NAME [--scale S]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import resource
import sys
import time
import traceback
from typing import Any

from loops import describe_loop_module, load_loop_factory
from workloads import WorkloadUnavailable, discover_workloads

RESULT_PREFIX = "BENCH-RESULT "


def emit_result(payload: dict[str, Any]) -> None:
    """Print the result line that the parent process parses."""
    sys.stdout.flush()
    print(RESULT_PREFIX + json.dumps(payload), flush=True)


def split_target(target: str) -> tuple[str, str]:
    """Split ``module:factory`` into its two parts."""
    module_name, _, factory_path = target.partition(":")
    return module_name, factory_path


def probe(target: str) -> dict[str, Any]:
    """Create and close one loop; report its type and the module version."""
    module_name, factory_path = split_target(target)
    factory = load_loop_factory(module_name, factory_path)
    loop = factory()
    try:
        loop_type = f"{type(loop).__module__}.{type(loop).__qualname__}"
        is_loop = isinstance(loop, asyncio.AbstractEventLoop)
    finally:
        loop.close()
    return {
        "loop_type": loop_type,
        "version": describe_loop_module(module_name),
        "is_abstract_event_loop": is_loop,
    }


def read_run_delay_seconds() -> float | None:
    """Seconds this thread spent runnable but waiting for a CPU (Linux schedstat).

    The second field of ``/proc/thread-self/schedstat`` is the time spent on a
    run queue, in nanoseconds; it grows only when another task holds the CPU
    this thread wants, so it measures disturbance directly, also for workloads
    that sleep by design.  ``None`` where schedstat is unavailable.
    """
    try:
        with open("/proc/thread-self/schedstat", encoding="ascii") as schedstat:
            return int(schedstat.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


def measure(target: str, workload_name: str, scale: float) -> dict[str, Any]:
    """Run one workload on a fresh loop; return its metrics plus process costs."""
    workload = discover_workloads()[workload_name]
    module_name, factory_path = split_target(target)
    factory = load_loop_factory(module_name, factory_path)
    loop = factory()
    asyncio.set_event_loop(loop)
    try:
        gc.collect()
        usage_before = resource.getrusage(resource.RUSAGE_SELF)
        run_delay_before = read_run_delay_seconds()
        wall_start = time.perf_counter()
        metrics = workload.run(loop, scale)
        wall_seconds = time.perf_counter() - wall_start
        run_delay_after = read_run_delay_seconds()
        usage_after = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    return {
        "metrics": {key: float(value) for key, value in metrics.items()},
        "wall_s": wall_seconds,
        "user_cpu_s": usage_after.ru_utime - usage_before.ru_utime,
        "system_cpu_s": usage_after.ru_stime - usage_before.ru_stime,
        "max_rss_kib": usage_after.ru_maxrss,
        "involuntary_context_switches": usage_after.ru_nivcsw - usage_before.ru_nivcsw,
        "run_delay_s": (
            run_delay_after - run_delay_before
            if run_delay_before is not None and run_delay_after is not None
            else None
        ),
    }


def measure_native(binary: str, workload_name: str, scale: float) -> dict[str, Any]:
    """Run a workload's native counterpart; return its metrics plus the server's costs."""
    workload = discover_workloads()[workload_name]
    if workload.native is None:
        raise WorkloadUnavailable(f"{workload_name} has no native counterpart")
    metrics, costs = workload.native(binary, scale)
    return {"metrics": {key: float(value) for key, value in metrics.items()}, **costs}


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    """Parse the worker's command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("probe", "measure", "native"))
    parser.add_argument("--loop", help="MODULE:FACTORY of the loop (probe and measure modes)")
    parser.add_argument("--binary", help="native-echo binary (native mode)")
    parser.add_argument("--workload", help="workload name (measure and native modes)")
    parser.add_argument("--scale", type=float, default=1.0, help="work multiplier")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    """Entry point; returns the process exit code."""
    arguments = parse_arguments(argv)
    if arguments.mode != "native" and not arguments.loop:
        raise SystemExit(f"{arguments.mode} mode needs --loop")
    if arguments.mode != "probe" and not arguments.workload:
        raise SystemExit(f"{arguments.mode} mode needs --workload")
    if arguments.mode == "native" and not arguments.binary:
        raise SystemExit("native mode needs --binary")
    try:
        if arguments.mode == "probe":
            payload = probe(arguments.loop)
        elif arguments.mode == "native":
            payload = measure_native(arguments.binary, arguments.workload, arguments.scale)
        else:
            payload = measure(arguments.loop, arguments.workload, arguments.scale)
    except WorkloadUnavailable as reason:
        emit_result({"ok": False, "unavailable": str(reason)})
        return 0
    except Exception as error:  # noqa: BLE001 - report every failure to the parent
        traceback.print_exc()
        emit_result({"ok": False, "error": f"{type(error).__name__}: {error}"})
        return 1
    emit_result({"ok": True, **payload})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
