r"""Run the ferroloop benchmark suite across several event loops.

Every measurement (one workload on one loop) runs in a fresh worker process.
Loops are interleaved per repetition — repetition 1 runs every workload on
every loop in turn, then repetition 2, … — so that slow drifts of a shared
machine hit all loops alike, and ratios are taken between measurements of the
same repetition.

Example::

    python3 bench/run.py --loops asyncio,uvloop,rloop,ferroloop --repeat 3 \\
        --json bench-results.json --md bench-results.md

See bench/README.md for the workloads and how to read the output.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from loops import LoopSpec, parse_loop_list
from report import format_value, render_markdown, render_text
from stats import summarise
from workloads import Workload, discover_workloads, select_workloads

BENCH_DIRECTORY = Path(__file__).resolve().parent
WORKER_SCRIPT = BENCH_DIRECTORY / "worker.py"
RESULT_PREFIX = "BENCH-RESULT "
DEFAULT_LOOPS = "asyncio,uvloop,rloop,ferroloop"
REFERENCE_LABELS = ["asyncio", "uvloop", "rloop"]
MINIMUM_REPEAT = 3

#: glibc malloc tuning pinned in workers by default.  Without it glibc adapts
#: its mmap threshold at run time (a freed large block raises it), so a
#: measurement's allocation pattern depends on what ran before in the process,
#: and trimming returns memory to the kernel only to fault it back in.
PINNED_MALLOC_ENVIRONMENT = {
    "MALLOC_MMAP_THRESHOLD_": "1048576",
    "MALLOC_TRIM_THRESHOLD_": "67108864",
}


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description="Benchmark event loops side by side (see bench/README.md).",
    )
    parser.add_argument(
        "--loops",
        default=DEFAULT_LOOPS,
        help="comma-separated loops: asyncio, uvloop, rloop, ferroloop, module:factory "
        f"or label=module:factory (default: {DEFAULT_LOOPS})",
    )
    parser.add_argument(
        "--workloads",
        default="all",
        help="comma-separated workload names or module prefixes, e.g. 'callbacks,timers.burst' "
        "(default: all; see --list)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=5,
        help=f"repetitions per (workload, loop), at least {MINIMUM_REPEAT} (default: 5)",
    )
    parser.add_argument(
        "--malloc",
        choices=("pinned", "default"),
        default="pinned",
        help="'pinned' (default) sets MALLOC_MMAP_THRESHOLD_=1048576 and "
        "MALLOC_TRIM_THRESHOLD_=67108864 in workers; 'default' leaves glibc's adaptive defaults",
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply the amount of work (default 1.0; e.g. 0.05 for a smoke test)",
    )
    parser.add_argument("--json", metavar="PATH", help="write all raw and summary data as JSON")
    parser.add_argument(
        "--md",
        metavar="PATH",
        nargs="?",
        const="-",
        help="write a Markdown report (to stdout when PATH is omitted or '-')",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="seconds before a measurement is killed and counted as failed (default: 120)",
    )
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter for the worker processes (default: this one)",
    )
    parser.add_argument("--list", action="store_true", help="list workloads and exit")
    arguments = parser.parse_args(argv)
    if arguments.repeat < MINIMUM_REPEAT:
        parser.error(f"--repeat must be at least {MINIMUM_REPEAT} for a meaningful median")
    if arguments.scale <= 0:
        parser.error("--scale must be positive")
    return arguments


def worker_environment(malloc_mode: str) -> dict[str, str]:
    """Environment of the worker processes."""
    environment = dict(os.environ)
    for name in PINNED_MALLOC_ENVIRONMENT:
        environment.pop(name, None)
    if malloc_mode == "pinned":
        environment.update(PINNED_MALLOC_ENVIRONMENT)
    environment.setdefault("PYTHONHASHSEED", "0")
    return environment


def run_worker(
    python: str, worker_arguments: list[str], environment: dict[str, str], timeout: float
) -> dict[str, Any]:
    """Run one worker process and return its parsed result (``ok`` False on failure)."""
    command = [python, str(WORKER_SCRIPT), *worker_arguments]
    try:
        completed = subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=environment,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {timeout:g} s"}
    for line in reversed(completed.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    stderr_tail = completed.stderr.strip().splitlines()[-1:] or ["no output"]
    return {
        "ok": False,
        "error": f"worker exited with status {completed.returncode}: {stderr_tail[0]}",
    }


def probe_loops(
    specs: list[LoopSpec], python: str, environment: dict[str, str], timeout: float
) -> list[dict[str, Any]]:
    """Check in a subprocess that every loop can be created; describe each one."""
    described = []
    for spec in specs:
        result = run_worker(python, ["probe", "--loop", spec.target], environment, timeout)
        entry: dict[str, Any] = {"label": spec.label, "target": spec.target}
        if result.get("ok"):
            entry.update(
                available=True,
                version=result.get("version"),
                loop_type=result.get("loop_type"),
            )
        else:
            entry.update(available=False, reason=result.get("error", "unknown error"))
        described.append(entry)
    return described


def describe_machine() -> str:
    """One-line description of the machine and interpreter."""
    return (
        f"{platform.platform()}, {os.cpu_count()} CPUs, "
        f"{platform.python_implementation()} {platform.python_version()}"
    )


def load_average() -> list[float]:
    """Return the 1/5/15-minute load averages, rounded (empty if unknown)."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return []


def format_progress(result: dict[str, Any], workload: Workload) -> str:
    """Short description of one measurement for the progress log."""
    if not result.get("ok"):
        return f"FAILED: {result.get('error')}"
    metric = workload.metrics[0]
    value = result["metrics"].get(metric.key, float("nan"))
    return f"{format_value(value, metric.unit)} {metric.label} ({result['wall_s']:.2f} s)"


def run_suite(arguments: argparse.Namespace) -> int:
    """Run the whole suite as described by ``arguments``; return the exit code."""
    registry = discover_workloads()
    if arguments.list:
        for workload in registry.values():
            print(f"{workload.name:<18} {workload.description}")
        return 0
    workloads = select_workloads(registry, arguments.workloads)
    skipped_workloads = {}
    for workload in list(workloads):
        reason = workload.unavailable_reason()
        if reason:
            skipped_workloads[workload.name] = reason
            workloads.remove(workload)
            print(f"workload {workload.name} skipped: {reason}", file=sys.stderr)

    specs = parse_loop_list(arguments.loops)
    environment = worker_environment(arguments.malloc)
    started = datetime.datetime.now().isoformat(timespec="seconds")
    load_at_start = load_average()
    loops = probe_loops(specs, arguments.python, environment, arguments.timeout)
    for loop in loops:
        status = (
            f"{loop['version']} ({loop['loop_type']})"
            if loop["available"]
            else f"UNAVAILABLE, skipped: {loop['reason']}"
        )
        print(f"loop {loop['label']:<10} {loop['target']:<32} {status}", file=sys.stderr)
    available_labels = [loop["label"] for loop in loops if loop["available"]]
    targets = {spec.label: spec.target for spec in specs}
    if not available_labels:
        print("no loop available", file=sys.stderr)
        return 2
    if "asyncio" not in available_labels:
        print("note: asyncio is not in the run, so there are no ratios to it", file=sys.stderr)

    measurements: list[dict[str, Any]] = []
    values: dict[tuple[str, str, str], dict[int, float]] = {}
    for repetition in range(1, arguments.repeat + 1):
        for workload in workloads:
            for label in available_labels:
                worker_arguments = [
                    "measure",
                    "--loop",
                    targets[label],
                    "--workload",
                    workload.name,
                    "--scale",
                    repr(arguments.scale),
                ]
                result = run_worker(
                    arguments.python, worker_arguments, environment, arguments.timeout
                )
                print(
                    f"[rep {repetition}/{arguments.repeat}] {workload.name:<16} {label:<10} "
                    f"{format_progress(result, workload)}",
                    file=sys.stderr,
                    flush=True,
                )
                measurements.append(
                    {"rep": repetition, "workload": workload.name, "loop": label, **result}
                )
                if result.get("ok"):
                    for metric in workload.metrics:
                        if metric.key in result["metrics"]:
                            values.setdefault((workload.name, metric.key, label), {})[
                                repetition
                            ] = result["metrics"][metric.key]

    directions = {
        (workload.name, metric.key): metric.higher_is_better
        for workload in workloads
        for metric in workload.metrics
    }
    summaries = summarise(values, directions, available_labels, REFERENCE_LABELS)
    meta = {
        "command": shlex.join(["python3", "bench/run.py", *sys.argv[1:]]),
        "started": started,
        "finished": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": describe_machine(),
        "load_average_start": load_at_start,
        "load_average_end": load_average(),
        "repeat": arguments.repeat,
        "scale": arguments.scale,
        "malloc": (
            "pinned (" + ", ".join(f"{k}={v}" for k, v in PINNED_MALLOC_ENVIRONMENT.items()) + ")"
            if arguments.malloc == "pinned"
            else "glibc defaults"
        ),
        "order_per_repetition": available_labels,
    }

    print()
    for loop in loops:
        if not loop["available"]:
            print(f"{loop['label']}: unavailable, skipped ({loop['reason']})")
    print(render_text(workloads, available_labels, REFERENCE_LABELS, summaries))
    if arguments.md:
        markdown = render_markdown(
            meta, loops, workloads, available_labels, REFERENCE_LABELS, summaries
        )
        if arguments.md == "-":
            print()
            print(markdown)
        else:
            Path(arguments.md).write_text(markdown, encoding="utf-8")
            print(f"Markdown report written to {arguments.md}", file=sys.stderr)
    if arguments.json:
        document = {
            "meta": meta,
            "loops": loops,
            "workloads": [workload.as_dict() for workload in workloads],
            "skipped_workloads": skipped_workloads,
            "measurements": measurements,
            "summary": [summary.as_dict() for summary in summaries],
        }
        Path(arguments.json).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        print(f"JSON written to {arguments.json}", file=sys.stderr)
    failures = sum(1 for measurement in measurements if not measurement.get("ok"))
    if failures:
        print(f"{failures} measurement(s) failed; see the log above", file=sys.stderr)
    return 0


def main(argv: list[str]) -> int:
    """Entry point."""
    return run_suite(parse_arguments(argv))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
