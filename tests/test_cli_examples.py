"""The example programs and ``python -m ferroloop`` as a drop-in runner.

Under ``FERROLOOP_TEST_LOOP=ferroloop`` each program is started as
``python -m ferroloop ARGS``; under ``asyncio`` as plain ``python ARGS``, which
is the reference behaviour the CLI must reproduce (same output, same exit
code).
"""

from __future__ import annotations

import json
import re
import signal

import pytest


def _assert_ok(proc) -> None:
    """Assert a child exited 0 without writing to stderr."""
    assert proc.returncode == 0, f"exit {proc.returncode}; stderr:\n{proc.stderr}"
    assert proc.stderr == ""


@pytest.mark.slow
def test_countasync_runs_counters_concurrently(child):
    """Three overlapping 1 s sleeps: One x3, Two x3, in 1.0-1.1 s total."""
    proc = child.run(child.command(str(child.examples_dir / "countasync.py")))
    _assert_ok(proc)
    lines = proc.stdout.splitlines()
    assert lines[:6] == ["One", "One", "One", "Two", "Two", "Two"]
    assert len(lines) == 7
    match = re.fullmatch(r"countasync\.py executed in (\d+\.\d{3}) seconds\.", lines[6])
    assert match, lines[6]
    elapsed = float(match.group(1))
    assert 1.0 <= elapsed < 1.1, f"took {elapsed} s"


@pytest.mark.slow
def test_say_after_awaits_sequentially(child):
    """Two sequential sleeps (1 s, then 2 s) take 3.0-3.1 s in total."""
    proc = child.run(child.command(str(child.examples_dir / "say_after.py")))
    _assert_ok(proc)
    lines = proc.stdout.splitlines()
    assert lines[:3] == ["started", "hello", "world"]
    assert len(lines) == 4
    match = re.fullmatch(r"finished in (\d+\.\d{3}) seconds", lines[3])
    assert match, lines[3]
    elapsed = float(match.group(1))
    assert 3.0 <= elapsed < 3.1, f"took {elapsed} s"


def test_gather_example_output(child):
    """The gather example prints results in argument order and propagates errors."""
    proc = child.run(child.command(str(child.examples_dir / "gather_results.py")))
    _assert_ok(proc)
    assert proc.stdout.splitlines() == [
        "b done",
        "c done",
        "a done",
        "results: ['A', 'B', 'C']",
        "d done",
        "with return_exceptions: ['D', ValueError('e failed')]",
        "caught: f failed",
        "g still running: True",
        "g done",
    ]


def test_taskgroup_example_output(child):
    """The TaskGroup example waits for all tasks, then cancels a sibling on failure."""
    proc = child.run(child.command(str(child.examples_dir / "taskgroup_demo.py")))
    _assert_ok(proc)
    assert proc.stdout.splitlines() == [
        "fetched 1",
        "fetched 2",
        "fetched 3",
        "results: [9, 1, 4]",
        "sibling cancelled",
        "caught: ['boom']",
        "sibling task cancelled: True",
    ]


_REPORT_SOURCE = """
    import asyncio
    import json
    import os
    import sys

    async def main():
        loop = asyncio.get_running_loop()
        return {
            "argv0": os.path.basename(sys.argv[0]),
            "args": sys.argv[1:],
            "name": __name__,
            "loop_package": type(loop).__module__.split(".")[0],
        }

    if __name__ == "__main__":
        print(json.dumps(asyncio.run(main())))
"""


def test_script_receives_argv_and_runs_as_main(child):
    """A script sees its own argv, runs as ``__main__`` and gets the expected loop."""
    script = child.script("report.py", _REPORT_SOURCE)
    proc = child.run(child.command(str(script), "alpha", "--beta", "-m", "gamma delta"))
    _assert_ok(proc)
    report = json.loads(proc.stdout)
    assert report == {
        "argv0": "report.py",
        "args": ["alpha", "--beta", "-m", "gamma delta"],
        "name": "__main__",
        "loop_package": child.kind,
    }


def test_script_directory_is_importable(child):
    """Like ``python SCRIPT``, the script's directory is first on ``sys.path``."""
    child.script("sibling_helper.py", "GREETING = 'hi from sibling'\n")
    script = child.script(
        "uses_sibling.py",
        """
        import asyncio
        import sibling_helper

        async def main():
            await asyncio.sleep(0)
            print(sibling_helper.GREETING)

        asyncio.run(main())
        """,
    )
    proc = child.run(child.command(str(script)), cwd="/")
    _assert_ok(proc)
    assert proc.stdout == "hi from sibling\n"


def test_module_form_runs_module_as_main(child):
    """``-m MODULE ARGS`` runs the module as ``__main__`` with its argv."""
    child.script("report_mod.py", _REPORT_SOURCE)
    proc = child.run(
        child.command("-m", "report_mod", "x", "--flag"),
        env=child.env(PYTHONPATH=str(child.tmp_path)),
    )
    _assert_ok(proc)
    report = json.loads(proc.stdout)
    assert report == {
        "argv0": "report_mod.py",
        "args": ["x", "--flag"],
        "name": "__main__",
        "loop_package": child.kind,
    }


def test_module_form_runs_package_main(child):
    """``-m PACKAGE`` runs the package's ``__main__`` module."""
    package = child.tmp_path / "demo_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    child.script(
        "demo_pkg/__main__.py",
        """
        import asyncio
        import sys

        async def main(args):
            await asyncio.sleep(0.01)
            print("package main", *args)

        asyncio.run(main(sys.argv[1:]))
        """,
    )
    proc = child.run(
        child.command("-m", "demo_pkg", "one", "two"),
        env=child.env(PYTHONPATH=str(child.tmp_path)),
    )
    _assert_ok(proc)
    assert proc.stdout == "package main one two\n"


def test_sys_exit_code_propagates(child):
    """``sys.exit(3)`` inside the program gives exit status 3; output is flushed."""
    script = child.script(
        "exit3.py",
        """
        import asyncio
        import sys

        async def main():
            print("about to exit", end="")
            await asyncio.sleep(0)
            sys.exit(3)

        asyncio.run(main())
        print("not reached")
        """,
    )
    proc = child.run(child.command(str(script)))
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == "about to exit"
    assert proc.stderr == ""


def test_uncaught_exception_exits_1_with_traceback(child):
    """An exception escaping ``asyncio.run`` prints a traceback and exits 1."""
    script = child.script(
        "crash.py",
        """
        import asyncio

        async def main():
            await asyncio.sleep(0)
            raise ValueError("boom from main")

        asyncio.run(main())
        """,
    )
    proc = child.run(child.command(str(script)))
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.startswith("Traceback (most recent call last):\n"), proc.stderr
    assert proc.stderr.rstrip("\n").splitlines()[-1] == "ValueError: boom from main"
    assert 'crash.py", line 6, in main' in proc.stderr


def test_keyboard_interrupt_in_program_exits_like_python(child):
    """A KeyboardInterrupt escaping the program ends it as killed by SIGINT."""
    script = child.script(
        "kbint.py",
        """
        import asyncio

        async def main():
            await asyncio.sleep(0)
            raise KeyboardInterrupt

        asyncio.run(main())
        """,
    )
    proc = child.run(child.command(str(script)))
    assert proc.returncode == -signal.SIGINT
    assert proc.stderr.rstrip("\n").splitlines()[-1] == "KeyboardInterrupt"


@pytest.mark.ferroloop_only
def test_cli_loop_is_ferroloop_event_loop(child):
    """Under ``python -m ferroloop`` asyncio.run() runs on ``ferroloop.EventLoop``."""
    script = child.script(
        "which_loop.py",
        """
        import asyncio

        async def main():
            import ferroloop
            print(type(asyncio.get_running_loop()) is ferroloop.EventLoop)

        asyncio.run(main())
        """,
    )
    proc = child.run(child.command(str(script)))
    _assert_ok(proc)
    assert proc.stdout == "True\n"


def test_main_module_is_the_script(child):
    """The script runs as the real ``__main__`` module, so its classes pickle."""
    script = child.script(
        "pickles.py",
        """
        import asyncio
        import pickle
        import sys

        class Marker:
            pass

        async def main():
            await asyncio.sleep(0)
            restored = pickle.loads(pickle.dumps(Marker()))
            print(sys.modules["__main__"].Marker is Marker, type(restored) is Marker)

        asyncio.run(main())
        """,
    )
    proc = child.run(child.command(str(script)))
    _assert_ok(proc)
    assert proc.stdout == "True True\n"


def test_missing_script_fails_like_python(child):
    """A script that does not exist fails with exit status 2, as with plain python."""
    missing = child.tmp_path / "does_not_exist.py"
    proc = child.run(child.command(str(missing)))
    assert proc.returncode == 2, proc.stderr
    assert "does_not_exist.py" in proc.stderr
    assert "No such file or directory" in proc.stderr
    assert proc.stdout == ""
