"""Instructions per unit of the core rows (callgrind), independent of the machine's load.

Each row runs once with N units and once with N/3 in fresh processes under
``valgrind --tool=callgrind``; the difference of the two totals divided by the difference
of the units is the cost of one unit (start-up and import costs cancel out):

* ``sleep0``: one task switch (tasks of 10 ``await asyncio.sleep(0)``, created and gathered);
* ``gather``: one task (``create_task`` of a trivial coroutine, then ``gather``);
* ``chain``: one ``call_soon`` callback, one chain (one callback per iteration);
* ``batch``: one ``call_soon`` callback, 1000 chains at once;
* ``timers``: one ``call_later(0, ...)`` timer, every second one cancelled (schedule, cancel or
  fire; the timers row of the benchmark, without its random delays).

Usage (``--loop``: asyncio, uvloop, rloop or ferroloop, importable by ``--python``)::

    python bench/callgrind_rows.py --python PY --loop ferroloop --rows sleep0,gather,chain,batch
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile


def new_loop(name: str) -> asyncio.AbstractEventLoop:
    """Return a new loop of the named kind."""
    if name == "asyncio":
        return asyncio.new_event_loop()
    module = __import__(name)
    return module.new_event_loop()


async def _noop() -> None:
    pass


async def _switcher(k: int) -> None:
    for _ in range(k):
        await asyncio.sleep(0)


async def _chains(n: int, width: int) -> None:
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    call_soon = loop.call_soon
    left = [width]

    def make_chain():
        k = n // width

        def step():
            nonlocal k
            k -= 1
            if k:
                call_soon(step)
            else:
                left[0] -= 1
                if not left[0]:
                    done.set_result(None)

        return step

    for _ in range(width):
        call_soon(make_chain())
    await done


async def _timers(n: int) -> None:
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    left = [n // 2]

    def fired() -> None:
        left[0] -= 1
        if not left[0]:
            done.set_result(None)

    call_later = loop.call_later
    handles = [call_later(0.0, fired) for _ in range(n)]
    for handle in handles[1::2]:
        handle.cancel()
    del handles
    await done


async def _row(row: str, n: int) -> None:
    loop = asyncio.get_running_loop()
    if row == "gather":
        await asyncio.gather(*[loop.create_task(_noop()) for _ in range(n)])
    elif row == "sleep0":
        await asyncio.gather(*[loop.create_task(_switcher(10)) for _ in range(n // 10)])
    elif row == "chain":
        await _chains(n, 1)
    elif row == "batch":
        await _chains(n, 1000)
    elif row == "timers":
        await _timers(n)
    else:
        raise SystemExit(f"unknown row {row!r}")


def run_row(loop_name: str, row: str, n: int) -> None:
    """Run `n` units of `row` on a fresh loop (the measured process)."""
    loop = new_loop(loop_name)
    try:
        loop.run_until_complete(_row(row, n))
    finally:
        loop.close()


def instructions(python: str, loop_name: str, row: str, n: int) -> int:
    """Return the instructions callgrind counts for a process running `n` units."""
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={tmp}/cg.out",
                python,
                os.path.abspath(__file__),
                "--worker",
                "--loop",
                loop_name,
                "--rows",
                row,
                "--units",
                str(n),
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},
            check=True,
        )
    found = re.search(r"Collected : (\d+)", out.stderr)
    if not found:
        raise SystemExit(f"no callgrind total for {loop_name} {row}:\n{out.stderr[-2000:]}")
    return int(found.group(1))


def main() -> None:
    """Measure the rows named on the command line (or run one as the worker)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--loop", default="ferroloop")
    parser.add_argument("--rows", default="sleep0,gather,chain,batch")
    parser.add_argument("--units", type=int, default=60_000)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_row(args.loop, args.rows, args.units)
        return
    small = args.units // 3
    for row in args.rows.split(","):
        low = instructions(args.python, args.loop, row, small)
        high = instructions(args.python, args.loop, row, args.units)
        print(f"{args.loop} {row}: {(high - low) // (args.units - small)} instructions per unit")


if __name__ == "__main__":
    main()
