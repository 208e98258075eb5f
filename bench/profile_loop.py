r"""Profile one workload on one loop with ``perf`` (or callgrind) and list the top costs.

Runs ``bench/worker.py`` under a sampling profiler and prints the hottest
symbols, grouped by shared object, so that a loop's own costs (its extension
module) can be told from the interpreter's (libpython / the python binary) and
the kernel's.

* ``--tool perf`` (default): ``perf record -e cpu-clock`` — a software clock
  event, which also works in VMs where hardware counters such as
  ``instructions`` are "not supported".
* ``--tool callgrind``: ``valgrind --tool=callgrind`` — exact instruction
  counts, ~50× slower, so use a small ``--scale`` (e.g. 0.05).

Example::

    python3 bench/profile_loop.py --loop ferroloop --workload callbacks.chain
    python3 bench/profile_loop.py --loop ferroloop --workload callbacks.batch \\
        --tool callgrind --scale 0.05

Build the loop with symbols for readable Rust frames (a release build that is
not stripped is enough; ``debug = 1`` in the profile gives line info).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from loops import parse_loop_spec
from run import PINNED_MALLOC_ENVIRONMENT, WORKER_SCRIPT


def worker_command(python: str, target: str, workload: str, scale: float) -> list[str]:
    """Command line of the worker that performs the measurement."""
    return [
        python,
        str(WORKER_SCRIPT),
        "measure",
        "--loop",
        target,
        "--workload",
        workload,
        "--scale",
        repr(scale),
    ]


def profile_with_perf(command: list[str], output_dir: Path, top: int) -> str:
    """Record ``command`` with perf's cpu-clock event; return the symbol report."""
    data_file = output_dir / "perf.data"
    subprocess.run(
        [
            "perf",
            "record",
            "-q",
            "--no-inherit",  # the worker (the server) only, not an echo client it starts
            "-e",
            "cpu-clock",
            "-F",
            "2000",
            "-o",
            str(data_file),
            "--",
            *command,
        ],
        check=True,
        env=profiling_environment(),
    )
    report = subprocess.run(
        [
            "perf",
            "report",
            "-i",
            str(data_file),
            "--stdio",
            "--no-children",
            "--sort",
            "dso,symbol",
            "--percent-limit",
            "0.5",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    lines = [line for line in report.splitlines() if line.strip() and not line.startswith("#")]
    by_dso = subprocess.run(
        ["perf", "report", "-i", str(data_file), "--stdio", "--no-children", "--sort", "dso"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    dso_lines = [line for line in by_dso.splitlines() if line.strip() and not line.startswith("#")]
    return "\n".join(
        ["Samples by shared object:", *dso_lines[:10], "", f"Top {top} symbols:", *lines[:top]]
    )


def profile_with_callgrind(command: list[str], output_dir: Path, top: int) -> str:
    """Run ``command`` under callgrind; return callgrind_annotate's top functions."""
    out_file = output_dir / "callgrind.out"
    subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}", *command],
        check=True,
        env=profiling_environment(),
        stderr=subprocess.DEVNULL,
    )
    annotated = subprocess.run(
        ["callgrind_annotate", "--inclusive=no", "--threshold=99", str(out_file)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    lines = annotated.splitlines()
    return "\n".join(lines[: top + 25])


def profiling_environment() -> dict[str, str]:
    """Worker environment: the same pinned malloc settings as ``run.py``."""
    environment = dict(os.environ)
    environment.update(PINNED_MALLOC_ENVIRONMENT)
    environment.setdefault("PYTHONHASHSEED", "0")
    return environment


def main(argv: list[str]) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", default="ferroloop", help="loop spec, as for run.py --loops")
    parser.add_argument("--workload", default="callbacks.chain")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--tool", choices=("perf", "callgrind"), default="perf")
    parser.add_argument("--top", type=int, default=30, help="number of symbols to show")
    parser.add_argument("--keep", metavar="DIR", help="keep the raw profile in DIR")
    parser.add_argument("--python", default=sys.executable)
    arguments = parser.parse_args(argv)

    executable = "perf" if arguments.tool == "perf" else "valgrind"
    if shutil.which(executable) is None:
        parser.error(f"{executable} is not installed")
    command = worker_command(
        arguments.python,
        parse_loop_spec(arguments.loop).target,
        arguments.workload,
        arguments.scale,
    )
    profiler = profile_with_perf if arguments.tool == "perf" else profile_with_callgrind
    if arguments.keep:
        output_dir = Path(arguments.keep)
        output_dir.mkdir(parents=True, exist_ok=True)
        print(profiler(command, output_dir, arguments.top))
    else:
        with tempfile.TemporaryDirectory(prefix="bench-profile-") as temporary:
            print(profiler(command, Path(temporary), arguments.top))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
