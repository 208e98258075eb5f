"""``python -m ferroloop [--virtual-time] SCRIPT [ARGS...]`` / ``... -m MODULE [ARGS...]``.

Runs an unmodified asyncio program with ferroloop as the loop behind ``asyncio.run()``;
``--virtual-time`` gives those loops virtual time (sleeps end at once, ``loop.time()`` starts
at 0.0 and jumps from timer to timer).
"""

from __future__ import annotations

import os
import runpy
import sys

USAGE = "usage: python -m ferroloop [--virtual-time] SCRIPT [ARGS...] | -m MODULE [ARGS...]"


def main(argv: list[str]) -> None:
    """Makes ferroloop the loop behind ``asyncio.run()``, then runs the script or module."""
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr if not argv else sys.stdout)
        raise SystemExit(2 if not argv else 0)
    import ferroloop

    loop_options = {}
    if argv[0] == "--virtual-time":
        loop_options["virtual_time"] = True
        argv = argv[1:]
        if not argv:
            print(USAGE, file=sys.stderr)
            raise SystemExit(2)
    # Not install(): its DeprecationWarning (3.14+) would land on every run's stderr.
    ferroloop._install_quietly(**loop_options)
    if argv[0] == "-m":
        if len(argv) < 2:
            print(USAGE, file=sys.stderr)
            raise SystemExit(2)
        module = argv[1]
        sys.argv = [module, *argv[2:]]
        sys.path.insert(0, os.getcwd())
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    else:
        script = argv[0]
        if not os.path.exists(script):
            # Word it as the interpreter does for `python missing.py`, with its exit status.
            print(
                f"{sys.executable}: can't open file {os.path.abspath(script)!r}: "
                "[Errno 2] No such file or directory",
                file=sys.stderr,
            )
            raise SystemExit(2)
        sys.argv = list(argv)
        sys.path[0] = os.path.dirname(os.path.abspath(script))
        runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
