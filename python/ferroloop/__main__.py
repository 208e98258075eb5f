"""``python -m ferroloop [OPTIONS] SCRIPT [ARGS...]`` / ``... [OPTIONS] -m MODULE [ARGS...]``.

Runs an unmodified asyncio program with ferroloop as the loop behind ``asyncio.run()``;
``--virtual-time`` gives those loops virtual time (sleeps end at once, ``loop.time()`` starts
at 0.0 and jumps from timer to timer), with ``--autojump-threshold SECONDS`` (real seconds
the loop waits for I/O before a jump; default 0) and ``--no-wait-for-executor`` (the clock
jumps past running ``run_in_executor``/``to_thread`` jobs) as in ``ferroloop.new_event_loop``;
``--watchdog SECONDS`` turns their watchdog on (``loop.set_watchdog``: a callback blocking the
loop longer than that is logged with its stack).

``python -m ferroloop ps PID`` / ``top PID``: the tasks, transports and stats of a process
serving the inspector (``FERROLOOP_INSPECT=1``), see ``_inspect_cli.py``.
"""

from __future__ import annotations

import os
import runpy
import sys
from typing import NoReturn

USAGE = (
    "usage: python -m ferroloop [--virtual-time [--autojump-threshold SECONDS]"
    " [--no-wait-for-executor]] [--watchdog SECONDS] SCRIPT [ARGS...] | -m MODULE [ARGS...]\n"
    "       python -m ferroloop ps PID | top PID [-n COUNT] [-i SECONDS]"
)


def _usage_error(message: str | None = None) -> NoReturn:
    if message:
        print(f"python -m ferroloop: {message}", file=sys.stderr)
    print(USAGE, file=sys.stderr)
    raise SystemExit(2)


def _loop_options(argv: list[str]) -> tuple[dict, list[str]]:
    """The leading options (before SCRIPT or -m) as ``new_event_loop`` keywords, and the rest."""
    options: dict = {}
    while argv and argv[0].startswith("--"):
        arg, argv = argv[0], argv[1:]
        if arg == "--virtual-time":
            options["virtual_time"] = True
        elif arg == "--no-wait-for-executor":
            options["wait_for_executor"] = False
        elif arg == "--autojump-threshold" or arg.startswith("--autojump-threshold="):
            if "=" in arg:
                value = arg.partition("=")[2]
            elif argv:
                value, argv = argv[0], argv[1:]
            else:
                _usage_error("--autojump-threshold needs a number of seconds")
            try:
                options["autojump_threshold"] = float(value)
            except ValueError:
                _usage_error(f"--autojump-threshold: not a number: {value!r}")
            if not options["autojump_threshold"] >= 0:
                _usage_error("--autojump-threshold must be >= 0")
        elif arg == "--watchdog" or arg.startswith("--watchdog="):
            if "=" in arg:
                value = arg.partition("=")[2]
            elif argv:
                value, argv = argv[0], argv[1:]
            else:
                _usage_error("--watchdog needs a number of seconds")
            try:
                options["watchdog"] = float(value)
            except ValueError:
                _usage_error(f"--watchdog: not a number: {value!r}")
            if not 0 < options["watchdog"] < float("inf"):
                _usage_error("--watchdog must be a positive number of seconds")
        else:
            _usage_error(f"unknown option {arg}")
    virtual_only = {"autojump_threshold", "wait_for_executor"} & options.keys()
    if virtual_only and not options.get("virtual_time"):
        _usage_error("--autojump-threshold and --no-wait-for-executor need --virtual-time")
    return options, argv


def main(argv: list[str]) -> None:
    """Makes ferroloop the loop behind ``asyncio.run()``, then runs the script or module."""
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr if not argv else sys.stdout)
        raise SystemExit(2 if not argv else 0)
    if argv[0] in ("ps", "top"):
        from ferroloop._inspect_cli import main as inspect_main

        raise SystemExit(inspect_main(argv))
    import ferroloop

    loop_options, argv = _loop_options(argv)
    if not argv:
        _usage_error()
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
