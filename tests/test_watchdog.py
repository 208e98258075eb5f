"""The watchdog (``loop.set_watchdog``): a callback that blocks the loop longer than the
threshold is reported once, while it still blocks, with the loop thread's Python stack.

ferroloop-only (stock asyncio has no watchdog). Times are recorded inside the program and
asserted after the run; the stack is checked by function name and line number.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import threading
import time
import traceback
import warnings
from pathlib import Path

import pytest

pytestmark = pytest.mark.ferroloop_only

#: The message of the default report.
REPORT_TEXT = "has blocked the event loop"


def sleeper(seconds: float) -> None:
    """Blocks the loop thread in time.sleep (which releases the GIL)."""
    time.sleep(seconds)  # SLEEP LINE


def spin(seconds: float) -> int:
    """Blocks the loop thread in pure Python code (which keeps the GIL between switches)."""
    end = time.monotonic() + seconds
    turns = 0
    while time.monotonic() < end:  # SPIN LINE
        turns += 1
    return turns


def line_of(function, marker: str) -> int:
    """The line number of the line of ``function`` that carries ``marker``."""
    lines, first = inspect.getsourcelines(function)
    return first + next(i for i, text in enumerate(lines) if marker in text)


class TimedRecords(logging.Handler):
    """Keeps (monotonic time of emission, record) for every record of the asyncio logger."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[tuple[float, logging.LogRecord]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((time.monotonic(), record))

    def reports(self) -> list[tuple[float, logging.LogRecord]]:
        return [(t, r) for t, r in self.records if REPORT_TEXT in r.getMessage()]


@pytest.fixture
def asyncio_log():
    """Records the asyncio logger's records (with the time they were emitted)."""
    handler = TimedRecords()
    logger = logging.getLogger("asyncio")
    previous = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(previous)


def watchdog_threads() -> list[str]:
    """The watchdog threads of this process (by their kernel name)."""
    names = []
    for task in Path("/proc/self/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
        except OSError:
            continue
        if name == "ferroloop-wdog":
            names.append(name)
    return names


def wait_for_watchdog_thread(timeout: float = 2.0) -> list[str]:
    """Waits until a watchdog thread shows (it names itself once started); returns them."""
    deadline = time.monotonic() + timeout
    while not watchdog_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    return watchdog_threads()


def wait_for_no_watchdog_thread(timeout: float = 2.0) -> list[str]:
    """Waits until no watchdog thread is left (or the timeout); returns those left."""
    deadline = time.monotonic() + timeout
    while watchdog_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    return watchdog_threads()


def test_sleep_in_a_task_is_reported_once_while_it_blocks(loop, asyncio_log):
    span: dict[str, float] = {}

    async def blocking_task():
        await asyncio.sleep(0)
        span["start"] = time.monotonic()
        sleeper(0.5)
        span["end"] = time.monotonic()

    async def main():
        await loop.create_task(blocking_task(), name="sleepy")
        await asyncio.sleep(0.2)  # an idle loop is not a blocked loop

    loop.set_watchdog(0.1)
    loop.run_until_complete(main())

    reports = asyncio_log.reports()
    assert len(reports) == 1, [r.getMessage() for _, r in asyncio_log.records]
    emitted, record = reports[0]
    assert record.levelno == logging.WARNING
    assert record.name == "asyncio"
    # Reported while the sleep was still going on, after the threshold.
    assert span["start"] + 0.1 <= emitted < span["end"]
    message = record.getMessage()
    assert "sleepy" in message  # the task whose step blocks
    assert "Traceback" not in message
    sleep_line = line_of(sleeper, "SLEEP LINE")
    assert f'File "{__file__}", line {sleep_line}, in sleeper' in message
    assert "time.sleep(seconds)" in message
    assert "in blocking_task" in message
    # Innermost last, as a traceback prints it.
    assert message.index("in blocking_task") < message.index("in sleeper")
    blocked = float(message.split("for ")[1].split(" seconds")[0])
    assert 0.1 <= blocked < 0.5


def test_busy_python_loop_is_caught_and_handler_runs_in_loop_thread_after(loop):
    reports = []
    seen: dict[str, object] = {}

    def handler(report):
        seen["thread"] = threading.get_ident()
        seen["when"] = time.monotonic()
        reports.append(report)

    def busy_callback():
        seen["loop_thread"] = threading.get_ident()
        spin(0.4)
        seen["spin_end"] = time.monotonic()

    async def main():
        loop.call_soon(busy_callback)
        await asyncio.sleep(0.1)

    loop.set_watchdog(0.1, handler)
    loop.run_until_complete(main())

    assert len(reports) == 1
    report = reports[0]
    assert seen["thread"] == seen["loop_thread"] == report.thread_id
    assert seen["when"] >= seen["spin_end"]  # once the callback returned
    assert 0.1 <= report.blocked_for < 0.4
    assert isinstance(report.handle, asyncio.Handle)
    assert "busy_callback" in repr(report.handle)
    assert isinstance(report.stack, list)
    assert all(isinstance(frame, traceback.FrameSummary) for frame in report.stack)
    innermost = report.stack[-1]
    assert innermost.name == "spin"
    assert innermost.filename == __file__
    spin_lines = range(line_of(spin, "SPIN LINE"), line_of(spin, "SPIN LINE") + 2)
    assert innermost.lineno in spin_lines
    assert report.stack[-2].name == "busy_callback"
    assert "WatchdogReport" in repr(report)


def test_callbacks_under_the_threshold_report_nothing(loop, asyncio_log):
    reports = []

    async def main():
        for _ in range(8):  # 0.4 s of blocking in all, never 0.3 s at once
            sleeper(0.05)
            await asyncio.sleep(0)
        await asyncio.sleep(0.5)  # waiting in the poll is not blocking

    loop.set_watchdog(0.3, reports.append)
    loop.run_until_complete(main())
    loop.set_watchdog(0.3)
    loop.run_until_complete(main())

    assert reports == []
    assert asyncio_log.reports() == []


def test_none_turns_it_off_and_its_thread_ends(loop, asyncio_log):
    reports = []
    loop.set_watchdog(0.05, reports.append)
    assert len(wait_for_watchdog_thread()) >= 1
    loop.set_watchdog(None)

    async def main():
        sleeper(0.3)

    loop.run_until_complete(main())
    assert reports == []
    assert asyncio_log.reports() == []
    assert wait_for_no_watchdog_thread() == []

    # On again, then closing the loop ends the thread.
    loop.set_watchdog(0.05, reports.append)
    loop.run_until_complete(main())
    loop.run_until_complete(asyncio.sleep(0))  # the handler runs in the next iteration
    assert len(reports) == 1
    loop.close()
    assert wait_for_no_watchdog_thread() == []


def test_reported_again_for_each_stall(loop):
    reports = []

    async def main():
        for _ in range(3):
            sleeper(0.25)
            await asyncio.sleep(0)
        await asyncio.sleep(0)

    loop.set_watchdog(0.1, reports.append)
    loop.run_until_complete(main())
    assert len(reports) == 3
    assert len({id(r.handle) for r in reports}) == 3


def test_bad_arguments(new_loop):
    loop = new_loop()
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            loop.set_watchdog(bad)
    with pytest.raises(TypeError):
        loop.set_watchdog("0.1")
    with pytest.raises(TypeError):
        loop.set_watchdog(0.1, handler=42)
    loop.close()
    with pytest.raises(RuntimeError, match="closed"):
        loop.set_watchdog(0.1)
    loop.set_watchdog(None)  # turning it off is always fine


BLOCKING_SCRIPT = """
import asyncio, time

def stuck():
    time.sleep(0.4)

async def main():
    stuck()

asyncio.run(main())
print("done")
"""


def test_environment_variable(child):
    script = child.script("blocking.py", BLOCKING_SCRIPT)
    result = child.run(child.command(str(script)), env=child.env(FERROLOOP_WATCHDOG="0.1"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "done\n"
    assert result.stderr.count(REPORT_TEXT) == 1, result.stderr
    assert "line 5, in stuck" in result.stderr
    assert "time.sleep(0.4)" in result.stderr

    quiet = child.run(child.command(str(script)), env=child.env(FERROLOOP_WATCHDOG=None))
    assert quiet.returncode == 0 and REPORT_TEXT not in quiet.stderr


def test_bad_environment_variable_warns(new_loop, monkeypatch):
    monkeypatch.setenv("FERROLOOP_WATCHDOG", "soon")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        new_loop()
    assert any("FERROLOOP_WATCHDOG" in str(w.message) for w in caught)
    assert all(issubclass(w.category, RuntimeWarning) for w in caught)


def test_command_line_flag(child):
    script = child.script("blocking.py", BLOCKING_SCRIPT)
    env = child.env(FERROLOOP_WATCHDOG=None)
    result = child.run(child.command("--watchdog", "0.1", str(script)), env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "done\n"
    assert result.stderr.count(REPORT_TEXT) == 1, result.stderr
    assert "in stuck" in result.stderr

    bad = child.run(child.command("--watchdog", "x", str(script)), env=env)
    assert bad.returncode == 2
    assert "--watchdog" in bad.stderr


def test_forked_child_has_its_own_watchdog(loop, asyncio_log):
    loop.set_watchdog(0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 2
        try:
            # The watchdog the parent turned on watches the child's loop too (its thread did
            # not survive the fork: the child has a new one).
            records = TimedRecords()
            logging.getLogger("asyncio").addHandler(records)

            async def main():
                sleeper(0.3)

            loop.run_until_complete(main())
            reports = records.reports()
            code = 0 if len(reports) == 1 and "in sleeper" in reports[0][1].getMessage() else 3
            loop.close()
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_c_code_holding_the_gil_is_reported_when_it_lets_go(loop):
    """sum() over a range runs in C without releasing the GIL: the watchdog thread cannot read
    the stack meanwhile; it reports once the GIL is free again (here in the sleep after it)."""
    reports = []
    timing: dict[str, float] = {}

    def hog():
        start = time.monotonic()
        sum(range(10_000_000))  # HOG C CALL
        timing["c_call"] = time.monotonic() - start
        time.sleep(0.3)  # HOG SLEEP

    async def main():
        loop.call_soon(hog)
        await asyncio.sleep(0.05)

    loop.set_watchdog(0.05, reports.append)
    loop.run_until_complete(main())

    assert len(reports) == 1
    assert reports[0].stack[-1].name == "hog"
    # The stack is read where the GIL is let go: right after the C call returns (its line) if
    # it outlasted the threshold, else in the sleep.
    c_line, sleep_line = line_of(hog, "HOG C CALL"), line_of(hog, "HOG SLEEP")
    if timing["c_call"] > 0.1:
        assert reports[0].stack[-1].lineno == c_line
    else:
        assert reports[0].stack[-1].lineno in (c_line, sleep_line)
    assert reports[0].blocked_for >= 0.05


EXIT_SCRIPT = """
import asyncio, ferroloop, time
loop = ferroloop.new_event_loop()
loop.set_watchdog(0.01)
loop.run_until_complete(asyncio.sleep(0.05))
print("leaving without closing the loop")
"""


def test_watchdog_thread_does_not_keep_the_process_alive(child):
    script = child.script("exit.py", EXIT_SCRIPT)
    started = time.monotonic()
    result = child.run([child.command()[0], str(script)], timeout=20)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "leaving without closing the loop\n"
    assert time.monotonic() - started < 15


def test_blocking_protocol_callback_of_a_native_transport(loop):
    """data_received runs from the loop's native transport code: it is watched as well."""
    import socket

    reports = []
    received = []

    class Slow(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            received.append(data)
            sleeper(0.3)

    async def main():
        ours, theirs = socket.socketpair()
        transport, _ = await loop.connect_accepted_socket(Slow, ours)
        theirs.sendall(b"ping")
        for _ in range(200):
            if received:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.01)
        transport.close()
        theirs.close()

    loop.set_watchdog(0.1, reports.append)
    loop.run_until_complete(main())

    assert received == [b"ping"]
    assert len(reports) == 1
    names = [frame.name for frame in reports[0].stack]
    assert names[-2:] == ["data_received", "sleeper"]
