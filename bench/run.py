r"""Run the ferroloop benchmark suite across several event loops.

Every measurement (one workload on one loop) runs in a fresh worker process.
Loops are interleaved per repetition — repetition 1 runs every workload on
every loop in turn, then repetition 2, … — so that slow drifts of a shared
machine hit all loops alike, and ratios are taken between measurements of the
same repetition.

Workloads that have a Python-free counterpart (the Protocol echo cases) are
also measured against ``native-echo`` (``../shared/native-echo``, built into a
cache directory outside the repository), shown as the pseudo-loop ``native``
in the same interleaved repetitions; ``--native-echo off`` leaves it out.

Example::

    python3 bench/run.py --loops asyncio,uvloop,rloop,ferroloop --repeat 3 \\
        --json bench-results.json --md bench-results.md

See bench/README.md for the workloads and how to read the output.
"""

from __future__ import annotations

import argparse
import atexit
import datetime
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from loops import LoopSpec, parse_loop_list
from native_echo import NATIVE_LABEL, prepare_native_echo
from report import Unavailable, format_value, render_markdown, render_text
from stats import MetricSummary, summarise
from workloads import Workload, discover_workloads, select_workloads
from workloads.sock_echo import LOADGEN_ENVIRONMENT_VARIABLE

BENCH_DIRECTORY = Path(__file__).resolve().parent
#: scripts/downstream_services.py starts the real servers some workloads talk to.
SERVICES_DIRECTORY = BENCH_DIRECTORY.parent / "scripts"
WORKER_SCRIPT = BENCH_DIRECTORY / "worker.py"
RESULT_PREFIX = "BENCH-RESULT "
DEFAULT_LOOPS = "asyncio,uvloop,rloop,ferroloop"
#: Loops every loop is compared with, when the run has them (zloop runs on 3.12+, zuvloop on
#: 3.14+, both labelled so with ``--loops zloop=zloop:new_event_loop``); ``native`` (the compiled
#: echo server) is the floor.
REFERENCE_LABELS = [
    "asyncio",
    "uvloop",
    "rloop",
    "zloop",
    "zuvloop",
    "ferroloop-before",
    NATIVE_LABEL,
]
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
    parser.add_argument(
        "--loadgen",
        metavar="PATH",
        default=os.environ.get(LOADGEN_ENVIRONMENT_VARIABLE) or None,
        help="load generator binary for the echo workloads ('loadgen echo' options, e.g. a "
        "build of ../shared/loadgen); default: $BENCH_LOADGEN, else bench/echo_client.py",
    )
    parser.add_argument(
        "--native-echo",
        default="auto",
        metavar="auto|off|PATH",
        help="the Python-free echo server measured as pseudo-loop 'native' on the workloads "
        "that have a native counterpart: 'auto' (default) builds ../shared/native-echo into "
        "$XDG_CACHE_HOME/ferroloop-bench (~/.cache if unset), PATH names its sources or a "
        "built binary, 'off' leaves it out",
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
    parser.add_argument(
        "--max-disturbance",
        type=float,
        default=0.05,
        help="a measurement whose worker waited for a CPU (taken by another process) for more "
        "than this fraction of its wall time is measured again (default: 0.05)",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=2,
        help="how many times a disturbed measurement is repeated (default: 2)",
    )
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each measurement wait up to SECONDS until other processes use less than "
        "half a CPU (default: 0, do not wait)",
    )
    parser.add_argument(
        "--order",
        choices=("rotated", "fixed"),
        default="rotated",
        help="'rotated' (default): repetition r runs the loops in the --loops order rotated by "
        "r-1 places, so that each loop takes each place in the sequence equally often (a "
        "slot's effect, e.g. which CPU the scheduler picks after the previous worker, falls on "
        "every loop alike); 'fixed': the --loops order in every repetition",
    )
    parser.add_argument("--list", action="store_true", help="list workloads and exit")
    parser.add_argument(
        "--report",
        metavar="RUN.json",
        help="do not measure: re-render the text/--md reports from an earlier --json file",
    )
    arguments = parser.parse_args(argv)
    if arguments.repeat < MINIMUM_REPEAT:
        parser.error(f"--repeat must be at least {MINIMUM_REPEAT} for a meaningful median")
    if arguments.scale <= 0:
        parser.error("--scale must be positive")
    if arguments.loadgen and not os.access(arguments.loadgen, os.X_OK):
        parser.error(
            f"--loadgen / ${LOADGEN_ENVIRONMENT_VARIABLE}: {arguments.loadgen} is not executable"
        )
    return arguments


def worker_environment(malloc_mode: str, loadgen: str | None = None) -> dict[str, str]:
    """Environment of the worker processes (and of the echo clients they start)."""
    environment = dict(os.environ)
    for name in PINNED_MALLOC_ENVIRONMENT:
        environment.pop(name, None)
    if malloc_mode == "pinned":
        environment.update(PINNED_MALLOC_ENVIRONMENT)
    environment.pop(LOADGEN_ENVIRONMENT_VARIABLE, None)
    if loadgen:
        environment[LOADGEN_ENVIRONMENT_VARIABLE] = str(Path(loadgen).resolve())
    environment.setdefault("PYTHONHASHSEED", "0")
    return environment


def start_services(workloads: list[Workload]) -> None:
    """Start the real servers (PostgreSQL, Redis) the selected workloads need.

    Each starts once for the whole run and stops when this process exits.  What the workers
    need to reach them is exported into this process's environment, which they inherit.
    """
    needed = sorted({service for workload in workloads for service in workload.services})
    if not needed:
        return
    sys.path.insert(0, str(SERVICES_DIRECTORY))
    import downstream_services

    # SIGTERM would end the process without running atexit (the servers would stay up).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    for service in needed:
        print(f"starting {service} (scripts/downstream_services.py)", file=sys.stderr, flush=True)
        atexit.register(downstream_services.start(service))


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


def disturbance_share(result: dict[str, Any], workload: Workload) -> float | None:
    """Fraction of a measurement's wall time during which another process held its CPU.

    Uses the worker's run-queue wait (``run_delay_s``, Linux schedstat) when
    available.  Otherwise, for CPU-bound workloads only, ``1 - CPU time / wall
    time``.  ``None`` when neither applies.
    """
    wall = result.get("wall_s") or 0.0
    if wall <= 0 or not workload.timing_sensitive:
        return None
    if result.get("run_delay_s") is not None:
        return result["run_delay_s"] / wall
    if workload.cpu_bound:
        cpu = (result.get("user_cpu_s") or 0.0) + (result.get("system_cpu_s") or 0.0)
        return max(0.0, 1.0 - cpu / wall)
    return None


def loop_order(labels: list[str], repetition: int, order: str) -> list[str]:
    """Return the loops of one repetition (1-based) in the order they run (see --order)."""
    if order == "fixed" or not labels:
        return labels
    start = (repetition - 1) % len(labels)
    return labels[start:] + labels[:start]


def measure_undisturbed(
    workload: Workload,
    arguments: argparse.Namespace,
    worker_arguments: list[str],
    environment: dict[str, str],
) -> dict[str, Any]:
    """Run one measurement, repeating it while it looks disturbed.

    An attempt during which other processes kept the worker off its CPU for
    more than ``--max-disturbance`` of the wall time (see
    :func:`disturbance_share`) is discarded and measured again, up to
    ``--retries`` times.  The result records the discarded attempts'
    disturbance shares and, if every attempt was disturbed, ``disturbed: True``
    (the last attempt is kept).
    """
    discarded_disturbances: list[float] = []
    while True:
        if arguments.wait_idle > 0:
            wait_for_idle_machine(arguments.wait_idle)
        result = run_worker(arguments.python, worker_arguments, environment, arguments.timeout)
        if not result.get("ok"):
            break
        share = disturbance_share(result, workload)
        result["disturbance"] = share
        if share is None or share <= arguments.max_disturbance:
            break
        if len(discarded_disturbances) >= arguments.retries:
            result["disturbed"] = True
            break
        discarded_disturbances.append(round(share, 3))
    if discarded_disturbances:
        result["discarded_attempt_disturbances"] = discarded_disturbances
    return result


def read_cpu_times() -> tuple[int, int] | None:
    """Return (busy, total) jiffies of all CPUs from /proc/stat, or None off Linux."""
    try:
        with open("/proc/stat", encoding="ascii") as stat_file:
            fields = [int(value) for value in stat_file.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_cpus(sample_seconds: float = 0.5) -> float | None:
    """How many CPUs other processes kept busy over a short sample (None if unknown)."""
    before = read_cpu_times()
    time.sleep(sample_seconds)
    after = read_cpu_times()
    if before is None or after is None or after[1] == before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1]) * (os.cpu_count() or 1)


def wait_for_idle_machine(max_wait_seconds: float, max_busy_cpus: float = 0.5) -> float:
    """Wait up to ``max_wait_seconds`` until other processes use < ``max_busy_cpus``.

    Returns the seconds waited.  Used with ``--wait-idle`` on shared machines,
    where a compiler or test run next door would otherwise steal the core.
    """
    start = time.monotonic()
    while time.monotonic() - start < max_wait_seconds:
        busy = busy_cpus()
        if busy is None or busy < max_busy_cpus:
            break
    return time.monotonic() - start


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
    if result.get("unavailable"):
        return f"UNAVAILABLE on this loop: {result['unavailable']}"
    if not result.get("ok"):
        return f"FAILED: {result.get('error')}"
    metric = workload.metrics[0]
    value = result["metrics"].get(metric.key, float("nan"))
    text = f"{format_value(value, metric.unit)} {metric.label} ({result['wall_s']:.2f} s)"
    if result.get("discarded_attempt_disturbances"):
        shares = ", ".join(f"{share:.0%}" for share in result["discarded_attempt_disturbances"])
        text += f" [re-measured; discarded attempts were disturbed {shares} of the time]"
    if result.get("disturbed"):
        text += f" [DISTURBED {result['disturbance']:.0%} of the time]"
    return text


def run_suite(arguments: argparse.Namespace) -> int:
    """Run the whole suite as described by ``arguments``; return the exit code.

    The exit code is 0 when every measurement succeeded (unavailable loops, and
    workloads a loop reports it cannot run, are skipped, not failures), 1 when
    some measurement failed, 2 when no loop is available.  A (workload, loop)
    pair found unavailable is not tried again in later repetitions.
    """
    if arguments.report:
        return report_from_json(arguments.report, arguments)
    registry = discover_workloads()
    if arguments.list:
        width = max(len(name) for name in registry)
        for workload in registry.values():
            print(f"{workload.name:<{width}}  {workload.description}")
        return 0
    workloads = select_workloads(registry, arguments.workloads)
    skipped_workloads = {}
    for workload in list(workloads):
        reason = workload.unavailable_reason()
        if reason:
            skipped_workloads[workload.name] = reason
            workloads.remove(workload)
            print(f"workload {workload.name} skipped: {reason}", file=sys.stderr)
    start_services(workloads)

    specs = parse_loop_list(arguments.loops)
    if any(spec.label == NATIVE_LABEL for spec in specs):
        print(
            f"the label {NATIVE_LABEL!r} is reserved for the native echo server; "
            "label the loop differently (label=module:factory)",
            file=sys.stderr,
        )
        return 2
    environment = worker_environment(arguments.malloc, arguments.loadgen)
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
    native = None
    if arguments.native_echo != "off" and any(workload.native for workload in workloads):
        native = prepare_native_echo(
            arguments.native_echo, lambda line: print(line, file=sys.stderr, flush=True)
        )
        entry = native.loop_entry()
        loops.append(entry)
        status = (
            f"{entry['version']} ({entry['loop_type']})"
            if entry["available"]
            else f"UNAVAILABLE, skipped: {entry['reason']}"
        )
        print(
            f"loop {NATIVE_LABEL:<10} {native.binary or native.target:<32} {status}",
            file=sys.stderr,
        )
        if entry["available"]:
            available_labels.append(NATIVE_LABEL)
    if "asyncio" not in available_labels:
        print("note: asyncio is not in the run, so there are no ratios to it", file=sys.stderr)

    measurements: list[dict[str, Any]] = []
    unavailable_pairs: set[tuple[str, str]] = set()
    for repetition in range(1, arguments.repeat + 1):
        for workload in workloads:
            for label in loop_order(available_labels, repetition, arguments.order):
                if (workload.name, label) in unavailable_pairs:
                    continue
                if label == NATIVE_LABEL:
                    if not workload.native or native is None or not native.binary:
                        continue  # no native counterpart: not measured, shown as "—"
                    mode = ["native", "--binary", native.binary]
                else:
                    mode = ["measure", "--loop", targets[label]]
                worker_arguments = [
                    *mode,
                    "--workload",
                    workload.name,
                    "--scale",
                    repr(arguments.scale),
                ]
                result = measure_undisturbed(workload, arguments, worker_arguments, environment)
                print(
                    f"[rep {repetition}/{arguments.repeat}] {workload.name:<16} {label:<10} "
                    f"{format_progress(result, workload)}",
                    file=sys.stderr,
                    flush=True,
                )
                measurements.append(
                    {"rep": repetition, "workload": workload.name, "loop": label, **result}
                )
                if result.get("unavailable"):
                    unavailable_pairs.add((workload.name, label))

    meta = {
        "command": shlex.join(["python3", "bench/run.py", *sys.argv[1:]]),
        "started": started,
        "finished": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": describe_machine(),
        "load_average_start": load_at_start,
        "load_average_end": load_average(),
        "repeat": arguments.repeat,
        "scale": arguments.scale,
        "max_disturbance": arguments.max_disturbance,
        "retries": arguments.retries,
        "wait_idle_s": arguments.wait_idle,
        "malloc": (
            "pinned (" + ", ".join(f"{k}={v}" for k, v in PINNED_MALLOC_ENVIRONMENT.items()) + ")"
            if arguments.malloc == "pinned"
            else "glibc defaults"
        ),
        "order_per_repetition": available_labels,
        "order": (
            "rotated: repetition r runs order_per_repetition rotated by r-1 places"
            if arguments.order == "rotated"
            else "fixed: order_per_repetition in every repetition"
        ),
        "native_echo": (
            f"{native.binary} (built from {native.target})"
            if native and native.binary
            else (native.reason if native else "not used")
        ),
        "echo_client": (
            f"loadgen ({environment[LOADGEN_ENVIRONMENT_VARIABLE]})"
            if environment.get(LOADGEN_ENVIRONMENT_VARIABLE)
            else "bench/echo_client.py"
        )
        + (
            " (TLS rows: bench/echo_client.py --tls-ca, loadgen has no TLS)"
            if environment.get(LOADGEN_ENVIRONMENT_VARIABLE)
            and any(workload.name.startswith("transport_echo.tls_") for workload in workloads)
            else ""
        ),
        "remeasured_after_disturbance": sum(
            1 for m in measurements if m.get("discarded_attempt_disturbances")
        ),
        "still_disturbed": sum(1 for m in measurements if m.get("disturbed")),
    }

    document = {
        "meta": meta,
        "loops": loops,
        "workloads": [workload.as_dict() for workload in workloads],
        "skipped_workloads": skipped_workloads,
        "measurements": measurements,
    }
    publish_reports(document, workloads, arguments)
    return 1 if any(is_failure(measurement) for measurement in measurements) else 0


def not_applicable_pairs(workloads: list[Workload], labels: list[str]) -> set[tuple[str, str]]:
    """(workload, ``native``) pairs of workloads without a native counterpart."""
    if NATIVE_LABEL not in labels:
        return set()
    return {(workload.name, NATIVE_LABEL) for workload in workloads if not workload.native}


def is_failure(measurement: dict[str, Any]) -> bool:
    """Whether a measurement failed (a workload the loop reports it cannot run is not)."""
    return not measurement.get("ok") and not measurement.get("unavailable")


def unavailable_pairs_of(document: dict[str, Any]) -> Unavailable:
    """``{(workload, loop label): reason}`` of the pairs reported unavailable in a run."""
    return {
        (measurement["workload"], measurement["loop"]): measurement["unavailable"]
        for measurement in document["measurements"]
        if measurement.get("unavailable")
    }


def summarise_document(document: dict[str, Any], workloads: list[Workload]) -> list[MetricSummary]:
    """Summarise the measurements of a run document (live or loaded from JSON)."""
    by_name = {workload.name: workload for workload in workloads}
    values: dict[tuple[str, str, str], dict[int, float]] = {}
    for measurement in document["measurements"]:
        workload = by_name.get(measurement["workload"])
        if workload is None or not measurement.get("ok"):
            continue
        for metric in workload.metrics:
            if metric.key in measurement["metrics"]:
                values.setdefault((workload.name, metric.key, measurement["loop"]), {})[
                    measurement["rep"]
                ] = measurement["metrics"][metric.key]
    directions = {
        (workload.name, metric.key): metric.higher_is_better
        for workload in workloads
        for metric in workload.metrics
    }
    labels = document["meta"]["order_per_repetition"]
    return summarise(values, directions, labels, REFERENCE_LABELS)


def publish_reports(
    document: dict[str, Any], workloads: list[Workload], arguments: argparse.Namespace
) -> None:
    """Print the text report and write the Markdown/JSON reports that were asked for."""
    summaries = summarise_document(document, workloads)
    labels = document["meta"]["order_per_repetition"]
    measurements = document["measurements"]
    unavailable = unavailable_pairs_of(document)
    not_applicable = not_applicable_pairs(workloads, labels)
    skipped = document.get("skipped_workloads") or {}
    print()
    for loop in document["loops"]:
        if not loop["available"]:
            print(f"{loop['label']}: unavailable, skipped ({loop['reason']})")
    print(
        render_text(
            workloads, labels, REFERENCE_LABELS, summaries, unavailable, not_applicable, skipped
        )
    )
    if arguments.md:
        markdown = render_markdown(
            document["meta"],
            document["loops"],
            workloads,
            labels,
            REFERENCE_LABELS,
            summaries,
            unavailable,
            not_applicable,
            skipped,
        )
        if arguments.md == "-":
            print()
            print(markdown)
        else:
            # The report's folder is made if missing: a run of many minutes must not be lost
            # at its last step to a missing directory.
            Path(arguments.md).parent.mkdir(parents=True, exist_ok=True)
            Path(arguments.md).write_text(markdown, encoding="utf-8")
            print(f"Markdown report written to {arguments.md}", file=sys.stderr)
    if arguments.json:
        document = {**document, "summary": [summary.as_dict() for summary in summaries]}
        Path(arguments.json).parent.mkdir(parents=True, exist_ok=True)
        Path(arguments.json).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        print(f"JSON written to {arguments.json}", file=sys.stderr)
    remeasured = sum(1 for m in measurements if m.get("discarded_attempt_disturbances"))
    disturbed = sum(1 for m in measurements if m.get("disturbed"))
    if remeasured or disturbed:
        print(
            f"{remeasured} measurement(s) re-measured after a disturbance, "
            f"{disturbed} still disturbed (kept)",
            file=sys.stderr,
        )
    failures = sum(1 for measurement in measurements if is_failure(measurement))
    if failures:
        print(f"{failures} measurement(s) failed; see the log above", file=sys.stderr)


def report_from_json(path: str, arguments: argparse.Namespace) -> int:
    """Re-render the reports of an earlier run from its ``--json`` file."""
    document = json.loads(Path(path).read_text(encoding="utf-8"))
    registry = discover_workloads()
    workloads = [
        registry[entry["name"]] for entry in document["workloads"] if entry["name"] in registry
    ]
    publish_reports(document, workloads, arguments)
    return 0


def main(argv: list[str]) -> int:
    """Entry point."""
    return run_suite(parse_arguments(argv))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
