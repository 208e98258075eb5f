"""Shared fixtures for the ferroloop behaviour tests.

Every test runs against the event loop implementation selected by the
``FERROLOOP_TEST_LOOP`` environment variable:

* ``ferroloop`` (default): loops come from ``ferroloop.new_event_loop``;
* ``asyncio``: loops come from stock ``asyncio.new_event_loop``.

Running the suite with ``FERROLOOP_TEST_LOOP=asyncio`` validates the tests
themselves against CPython's reference implementation.  Tests of
ferroloop-only API (``ferroloop.run``, ``install``, the CLI's loop type...)
carry the ``ferroloop_only`` marker and are skipped in that mode.

Tests that start a child interpreter use the ``child`` fixture
(:class:`ChildRunner`), which runs a program under ``python -m ferroloop``
(ferroloop) or plain ``python`` (asyncio).  Helpers are exposed only through
fixtures so that test modules never import this file; plain helper functions and
classes shared by several test modules are in ``support.py``.
"""

from __future__ import annotations

import asyncio
import faulthandler
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import FAMILIES, CountingExecutor

#: Which implementation the suite exercises: ``"ferroloop"`` or ``"asyncio"``.
LOOP_KIND = os.environ.get("FERROLOOP_TEST_LOOP", "ferroloop").strip().lower()
if LOOP_KIND not in ("ferroloop", "asyncio"):
    raise pytest.UsageError(
        f"FERROLOOP_TEST_LOOP must be 'ferroloop' or 'asyncio', got {LOOP_KIND!r}"
    )

#: Root of the repository (parent of ``tests/``).
REPO_ROOT = Path(__file__).resolve().parent.parent

#: Directory holding the example programs.
EXAMPLES_DIR = REPO_ROOT / "examples"

#: Default per-test time limit in seconds (override with ``@pytest.mark.timeout(n)``).
DEFAULT_TEST_TIMEOUT = 60.0


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """Return the ``new_event_loop`` callable of the implementation under test."""
    if LOOP_KIND == "asyncio":
        return asyncio.new_event_loop
    import ferroloop  # imported lazily so that stock runs never need it

    return ferroloop.new_event_loop


def child_command(*args: str, python_options: tuple[str, ...] = ()) -> list[str]:
    """Command line running an asyncio program under the implementation under test.

    ``args`` is what would follow ``python`` on a command line: a script path
    plus its arguments, or ``-m MODULE`` plus its arguments.  For ferroloop the
    program is started as ``python -m ferroloop ARGS``; for stock asyncio as
    ``python ARGS``.  ``python_options`` (e.g. ``("-X", "dev")``) are passed to
    the interpreter itself.
    """
    prefix = [sys.executable, *python_options]
    if LOOP_KIND == "ferroloop":
        prefix += ["-m", "ferroloop"]
    return [*prefix, *args]


#: Python source defining ``new_loop()`` for the implementation under test,
#: for child scripts that build an event loop by hand.
CHILD_LOOP_PRELUDE = (
    "import ferroloop\nnew_loop = ferroloop.new_event_loop\n"
    if LOOP_KIND == "ferroloop"
    else "import asyncio\nnew_loop = asyncio.new_event_loop\n"
)


def child_env(**overrides: str | None) -> dict[str, str]:
    """Environment for child interpreters: ours, minus asyncio debug switches.

    Keyword arguments set (or, when ``None``, remove) variables.
    """
    env = dict(os.environ)
    env.pop("PYTHONASYNCIODEBUG", None)
    env.pop("PYTHONDEVMODE", None)
    env.pop("PYTHONUNBUFFERED", None)
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run_child(
    cmd: list[str],
    *,
    timeout: float = 30.0,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` to completion, capturing text stdout/stderr."""
    return subprocess.run(
        cmd,
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env if env is not None else child_env(),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
    )


def write_script(directory: Path, name: str, source: str) -> Path:
    """Write dedented ``source`` to ``directory/name`` and return the path."""
    path = directory / name
    path.write_text(textwrap.dedent(source))
    return path


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers used by this suite."""
    config.addinivalue_line("markers", "slow: takes more than about a second")
    config.addinivalue_line(
        "markers", "ferroloop_only: exercises ferroloop-specific API; skipped on stock asyncio"
    )
    config.addinivalue_line("markers", "timeout(seconds): per-test time limit (SIGALRM based)")
    config.stash[_STDERR_FD_KEY] = _real_stderr_fd(config)


#: Where faulthandler writes if a test hangs beyond recovery.
_STDERR_FD_KEY = pytest.StashKey[int]()


def _real_stderr_fd(config: pytest.Config) -> int:
    """A duplicate of the process's real stderr, for faulthandler dumps.

    pytest redirects file descriptor 2 while a test runs, which would hide a
    dump written just before the process exits.
    """
    capture = config.pluginmanager.getplugin("capturemanager")
    if capture is None:
        return os.dup(2)
    with capture.global_and_fixture_disabled():
        return os.dup(2)


def pytest_report_header(config: pytest.Config) -> str:
    """Show which implementation is under test."""
    return f"event loop under test (FERROLOOP_TEST_LOOP): {LOOP_KIND}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``ferroloop_only`` tests when validating against stock asyncio."""
    if LOOP_KIND != "asyncio":
        return
    skip = pytest.mark.skip(reason="ferroloop-specific API; not applicable to stock asyncio")
    for item in items:
        if item.get_closest_marker("ferroloop_only") is not None:
            item.add_marker(skip)


class TestTimeout(SystemExit):
    """Raised in the main thread when a test exceeds its time limit.

    A SystemExit subclass so that it escapes event loop callbacks (which log
    and swallow ordinary exceptions) while pytest still records it as a
    failure of the test rather than ending the session.
    """


@pytest.fixture(autouse=True)
def _time_limit(request: pytest.FixtureRequest):
    """Fail a test that runs too long instead of hanging the whole session.

    A SIGALRM handler raises :class:`TestTimeout`; if the event loop never
    returns to the interpreter to run it, faulthandler dumps all stacks and
    exits the process a little later.
    """
    if request.config.pluginmanager.hasplugin("timeout"):
        yield  # pytest-timeout is installed and enforces the marker itself
        return
    marker = request.node.get_closest_marker("timeout")
    limit = float(marker.args[0]) if marker else DEFAULT_TEST_TIMEOUT

    def on_alarm(signum, frame):
        raise TestTimeout(f"test exceeded its {limit:.0f} s time limit")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, limit)
    faulthandler.dump_traceback_later(
        limit + 30, exit=True, file=request.config.stash[_STDERR_FD_KEY]
    )
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class ChildRunner:
    """Helpers for tests that run programs in a child interpreter."""

    #: ``"ferroloop"`` or ``"asyncio"``.
    kind = LOOP_KIND
    #: Source defining ``new_loop()`` for the implementation under test.
    loop_prelude = CHILD_LOOP_PRELUDE
    examples_dir = EXAMPLES_DIR
    repo_root = REPO_ROOT

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path

    command = staticmethod(child_command)
    env = staticmethod(child_env)
    run = staticmethod(run_child)

    def script(self, name: str, source: str) -> Path:
        """Write a dedented script into the test's temporary directory."""
        return write_script(self.tmp_path, name, source)


@pytest.fixture
def child(tmp_path: Path) -> ChildRunner:
    """Child-interpreter helpers bound to the test's temporary directory."""
    return ChildRunner(tmp_path)


@pytest.fixture
def loop_kind() -> str:
    """``"ferroloop"`` or ``"asyncio"``: the implementation under test."""
    return LOOP_KIND


@pytest.fixture
def new_loop():
    """Factory creating event loops of the implementation under test.

    Every loop it creates is closed at teardown (unless still running).
    """
    created: list[asyncio.AbstractEventLoop] = []
    factory = loop_factory()

    def make() -> asyncio.AbstractEventLoop:
        loop = factory()
        created.append(loop)
        return loop

    yield make
    for loop in created:
        if not loop.is_closed() and not loop.is_running():
            loop.close()
    asyncio.set_event_loop(None)


@pytest.fixture
def loop(new_loop, monkeypatch):
    """A fresh, non-debug event loop of the implementation under test."""
    monkeypatch.delenv("PYTHONASYNCIODEBUG", raising=False)
    return new_loop()


@pytest.fixture
def stock_loop():
    """A fresh stock asyncio loop, used as the reference for comparisons."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture
def restore_policy():
    """Reset the global event loop policy after the test."""
    yield
    asyncio.set_event_loop_policy(None)


@pytest.fixture
def handler_calls(loop) -> list[dict]:
    """Exception handler contexts reported on ``loop`` (recorded, asserted after the run)."""
    calls: list[dict] = []
    loop.set_exception_handler(lambda _loop, context: calls.append(context))
    return calls


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A raw, listening 127.0.0.1 TCP socket."""
    sock = socket.create_server(("127.0.0.1", 0), backlog=16)
    yield sock
    sock.close()


@pytest.fixture
def unix_path() -> Iterator[str]:
    """A fresh AF_UNIX socket path (short enough for sun_path), removed afterwards."""
    directory = tempfile.mkdtemp(prefix="fl-", dir="/tmp")
    yield os.path.join(directory, "sock")
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(params=FAMILIES)
def kind(request) -> str:
    """A stream socket kind: ``"tcp"`` (127.0.0.1) or ``"unix"``."""
    return request.param


@pytest.fixture
def counting_executor(loop) -> Iterator[CountingExecutor]:
    """A CountingExecutor installed as the loop's default executor."""
    executor = CountingExecutor()
    loop.set_default_executor(executor)
    yield executor
    executor.shutdown(wait=True)


def pytest_terminal_summary(terminalreporter) -> None:
    """Prints the size of the differential fuzzing run (CI's log says how much was fuzzed).

    It lives here, not in a tests/fuzz/conftest.py: a second module named `conftest` would
    replace this one in sys.modules, and tests importing helpers from it would break.
    """
    fuzz_interp = sys.modules.get("fuzz_interp")
    stats = getattr(fuzz_interp, "STATS", None)
    if not stats or not stats["programs"]:
        return
    terminalreporter.write_line(
        f"differential fuzz: {stats['programs']} programs, {stats['compared']} compared "
        f"identical on asyncio and ferroloop, {stats['steps']} trace events; "
        f"{stats['disturbed']} runs disturbed by the machine and rerun, {stats['retried']} "
        f"reruns after a difference, {stats['unstable']} programs given up as unstable"
    )
