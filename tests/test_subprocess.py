"""Subprocesses: loop.subprocess_exec/shell, the SubprocessTransport, asyncio.subprocess.

Every test runs on ferroloop and on stock asyncio (``FERROLOOP_TEST_LOOP=asyncio``); values are
recorded inside callbacks and checked after the loop has run.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import subprocess
import sys
import time

import pytest

PY = sys.executable


def open_fds() -> set[int]:
    """The descriptors open in this process right now."""
    gc.collect()
    return {int(name) for name in os.listdir("/proc/self/fd")}


def is_our_child(pid: int) -> bool:
    """Whether ``pid`` still exists as a child of this process (running or zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return False
    return int(fields[1]) == os.getpid()


def no_zombie_left() -> bool:
    """True if ``waitpid(-1, WNOHANG)`` finds no exited child waiting to be reaped."""
    try:
        pid, _ = os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return True
    return pid == 0


class Recorder(asyncio.SubprocessProtocol):
    """A SubprocessProtocol that records every call in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.events: list[tuple] = []
        self.data: dict[int, bytearray] = {1: bytearray(), 2: bytearray()}
        self.done = loop.create_future()
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.events.append(("connection_made",))

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self.data[fd] += data
        if not self.events or self.events[-1] != ("data", fd):
            self.events.append(("data", fd))

    def pipe_connection_lost(self, fd: int, exc) -> None:
        self.events.append(("pipe_lost", fd, exc))

    def process_exited(self) -> None:
        self.events.append(("process_exited", self.transport.get_returncode()))

    def connection_lost(self, exc) -> None:
        self.events.append(("connection_lost", exc))
        self.done.set_result(None)


@pytest.mark.timeout(60)
def test_ten_megabytes_through_cat_with_communicate(loop):
    payload = os.urandom(10 * 1024 * 1024)

    async def main():
        proc = await asyncio.create_subprocess_exec(
            "cat", stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        out, err = await proc.communicate(payload)
        return out, err, proc.returncode

    out, err, code = loop.run_until_complete(main())
    assert out == payload
    assert err is None
    assert code == 0


def test_protocol_callback_order(loop):
    async def main():
        transport, proto = await loop.subprocess_exec(
            lambda: Recorder(loop),
            PY,
            "-c",
            "import sys; sys.stdout.write('out'); sys.stderr.write('err'); sys.exit(3)",
        )
        await proto.done
        state = (transport.get_returncode(), transport.is_closing())
        transport.close()
        return proto, state

    proto, (code, closing_before) = loop.run_until_complete(main())
    names = [event[0] for event in proto.events]
    assert names[0] == "connection_made"
    assert names[-1] == "connection_lost"
    assert names.count("process_exited") == 1
    assert names.index("process_exited") < names.index("connection_lost")
    lost = sorted(event[1] for event in proto.events if event[0] == "pipe_lost")
    assert lost == [0, 1, 2]
    assert all(event[2] is None for event in proto.events if event[0] == "pipe_lost")
    last_pipe = max(i for i, name in enumerate(names) if name == "pipe_lost")
    assert last_pipe < names.index("connection_lost")
    assert ("process_exited", 3) in proto.events
    assert proto.events[-1] == ("connection_lost", None)
    assert bytes(proto.data[1]) == b"out" and bytes(proto.data[2]) == b"err"
    assert code == 3 and closing_before is False


def test_transport_api_after_exit(loop):
    async def main():
        transport, proto = await loop.subprocess_exec(
            lambda: Recorder(loop), "true", stdin=None, stdout=None, stderr=None
        )
        pid = transport.get_pid()
        pipes = [transport.get_pipe_transport(fd) for fd in (0, 1, 2)]
        await proto.done
        errors = []
        for method in (transport.kill, transport.terminate):
            try:
                method()
            except ProcessLookupError as exc:
                errors.append(type(exc))
        try:
            transport.send_signal(signal.SIGTERM)
        except ProcessLookupError as exc:
            errors.append(type(exc))
        text = repr(transport)
        transport.close()
        return pid, pipes, errors, text, transport.is_closing(), transport.get_returncode()

    pid, pipes, errors, text, closing, code = loop.run_until_complete(main())
    assert isinstance(pid, int) and pid > 0
    assert pipes == [None, None, None]
    assert errors == [ProcessLookupError] * 3
    assert f"pid={pid}" in text and "returncode=0" in text
    assert closing is True and code == 0


def test_child_that_closes_stdout_early(loop):
    script = "import os, sys, time; os.close(1); time.sleep(0.3); sys.exit(5)"

    async def main():
        transport, proto = await loop.subprocess_exec(
            lambda: Recorder(loop), PY, "-c", script, stdin=None, stderr=None
        )
        await proto.done
        transport.close()
        proc = await asyncio.create_subprocess_exec(PY, "-c", script, stdout=subprocess.PIPE)
        out = await proc.stdout.read()
        code = await proc.wait()
        return proto.events, out, code

    events, out, code = loop.run_until_complete(main())
    names = [event[0] for event in events]
    # stdout's EOF comes while the child still runs: pipe_connection_lost(1) first.
    assert names == ["connection_made", "pipe_lost", "process_exited", "connection_lost"]
    assert events[1][1] == 1 and events[2] == ("process_exited", 5)
    assert out == b"" and code == 5


def test_killed_by_sigkill_reports_minus_nine(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec("sleep", "30")
        proc.kill()
        code = await proc.wait()
        proc2 = await asyncio.create_subprocess_exec("sleep", "30")
        proc2.send_signal(signal.SIGTERM)
        return code, await proc2.wait(), proc.returncode

    code, term_code, returncode = loop.run_until_complete(main())
    assert code == -signal.SIGKILL == returncode
    assert term_code == -signal.SIGTERM


@pytest.mark.timeout(120)
def test_two_hundred_concurrent_children_leave_nothing_behind(loop):
    baseline = open_fds()

    async def one(i: int):
        proc = await asyncio.create_subprocess_exec(
            PY if i % 50 == 0 else "cat",
            *(["-c", "import sys; sys.stdout.write(sys.stdin.read())"] if i % 50 == 0 else []),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        out, _ = await proc.communicate(str(i).encode())
        return proc.pid, out, proc.returncode

    async def main():
        return await asyncio.gather(*(one(i) for i in range(200)))

    results = loop.run_until_complete(main())
    pids = [pid for pid, _, _ in results]
    assert [out for _, out, _ in results] == [str(i).encode() for i in range(200)]
    assert {code for _, _, code in results} == {0}
    assert len(set(pids)) == 200
    assert [pid for pid in pids if is_our_child(pid)] == []
    assert no_zombie_left()
    assert open_fds() - baseline == set()


def test_exec_of_missing_program(loop):
    baseline = open_fds()

    async def main():
        outcomes = []
        for stdin in (None, subprocess.PIPE):
            try:
                await asyncio.create_subprocess_exec("/nonexistent/ferroloop-prog", stdin=stdin)
            except FileNotFoundError as exc:
                outcomes.append((exc.errno, exc.filename))
        try:
            await loop.subprocess_exec(asyncio.SubprocessProtocol, "/etc/passwd")
        except PermissionError as exc:
            outcomes.append((exc.errno, exc.filename))
        return outcomes

    outcomes = loop.run_until_complete(main())
    assert outcomes == [
        (2, "/nonexistent/ferroloop-prog"),
        (2, "/nonexistent/ferroloop-prog"),
        (13, "/etc/passwd"),
    ]
    assert open_fds() - baseline == set()
    assert no_zombie_left()


def test_pass_fds_cwd_env_and_redirections(loop, tmp_path):
    read_end, write_end = os.pipe()
    log = open(tmp_path / "log.txt", "wb")

    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY,
            "-c",
            "import os, sys; os.write(int(sys.argv[1]), b'via-fd'); "
            "print(os.getcwd(), os.environ['FERRO_X']); sys.stderr.write('E')",
            str(write_end),
            pass_fds=(write_end,),
            cwd=str(tmp_path),
            env={**os.environ, "FERRO_X": "y"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        proc2 = await asyncio.create_subprocess_exec(
            PY, "-c", "print('to file')", stdout=log, stdin=subprocess.DEVNULL
        )
        await proc2.wait()
        proc3 = await asyncio.create_subprocess_exec(
            PY, "-c", "import os; os.write(1, b'fd')", stdout=log.fileno()
        )
        await proc3.wait()
        return out, proc.returncode

    try:
        out, code = loop.run_until_complete(main())
        os.close(write_end)
        write_end = -1
        passed = os.read(read_end, 100)
    finally:
        os.close(read_end)
        if write_end != -1:
            os.close(write_end)
        log.close()
    assert passed == b"via-fd"
    assert out == f"{tmp_path} y\nE".encode()
    assert code == 0
    assert (tmp_path / "log.txt").read_bytes() == b"to file\nfd"


def test_start_new_session_and_process_group(loop):
    code = "import os; print(os.getsid(0), os.getpgid(0))"

    async def run(**kwargs):
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", code, stdout=subprocess.PIPE, **kwargs
        )
        out, _ = await proc.communicate()
        return proc.pid, [int(x) for x in out.split()]

    async def main():
        return [await run(start_new_session=True), await run(process_group=0)]

    (pid, (sid, pgid)), *rest = loop.run_until_complete(main())
    assert sid == pid != os.getsid(0)
    assert pgid == pid
    for pid, (sid, pgid) in rest:
        assert sid == os.getsid(0) and pgid == pid


VALUE_ERRORS = [
    ("exec", {"universal_newlines": True}, "universal_newlines must be False"),
    ("exec", {"shell": True}, "shell must be False"),
    ("exec", {"bufsize": 1}, "bufsize must be 0"),
    ("exec", {"text": True}, "text must be False"),
    ("exec", {"encoding": "utf-8"}, "encoding must be None"),
    ("exec", {"errors": "strict"}, "errors must be None"),
    ("shell", {"universal_newlines": True}, "universal_newlines must be False"),
    ("shell", {"shell": False}, "shell must be True"),
    ("shell", {"bufsize": 1}, "bufsize must be 0"),
    ("shell", {"text": True}, "text must be False"),
    ("shell", {"encoding": "utf-8"}, "encoding must be None"),
    ("shell", {"errors": "strict"}, "errors must be None"),
]


@pytest.mark.parametrize(("kind", "kwargs", "message"), VALUE_ERRORS)
def test_value_error_messages(loop, kind, kwargs, message):
    async def main():
        if kind == "exec":
            call = loop.subprocess_exec(asyncio.SubprocessProtocol, "true", **kwargs)
        else:
            call = loop.subprocess_shell(asyncio.SubprocessProtocol, "true", **kwargs)
        try:
            await call
        except ValueError as exc:
            return str(exc)
        return None

    assert loop.run_until_complete(main()) == message


def test_shell_command_must_be_a_string(loop):
    async def main():
        try:
            await loop.subprocess_shell(asyncio.SubprocessProtocol, ["true"])
        except ValueError as exc:
            return str(exc)

    assert loop.run_until_complete(main()) == "cmd must be a string"


def test_create_subprocess_text_mode_is_refused(loop):
    async def main():
        messages = []
        for make in (
            lambda: asyncio.create_subprocess_exec("true", text=True),
            lambda: asyncio.create_subprocess_shell("true", encoding="utf-8"),
        ):
            try:
                await make()
            except ValueError as exc:
                messages.append(str(exc))
        return messages

    assert loop.run_until_complete(main()) == ["text must be False", "encoding must be None"]


def test_cancelled_communicate_and_wait_leave_nothing_behind(loop):
    baseline = open_fds()

    async def main():
        proc = await asyncio.create_subprocess_exec(
            "sleep", "30", stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        outcomes = []
        for coro in (proc.communicate(b"x"), proc.wait()):
            task = asyncio.ensure_future(coro)
            await asyncio.sleep(0.05)
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                outcomes.append("cancelled")
        proc.kill()
        outcomes.append(await proc.wait())
        return proc.pid, outcomes

    pid, outcomes = loop.run_until_complete(main())
    assert outcomes == ["cancelled", "cancelled", -signal.SIGKILL]
    assert not is_our_child(pid)
    assert no_zombie_left()
    assert open_fds() - baseline == set()


def test_cancelled_spawn_kills_and_reaps_the_child(loop):
    baseline = open_fds()

    async def main():
        task = asyncio.ensure_future(
            asyncio.create_subprocess_exec("sleep", "30", stdout=subprocess.PIPE)
        )
        loop.call_soon(task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            return "cancelled"
        return "not cancelled"

    assert loop.run_until_complete(main()) == "cancelled"
    loop.run_until_complete(asyncio.sleep(0.05))
    assert no_zombie_left()
    assert open_fds() - baseline == set()


def test_close_kills_a_running_child(loop):
    async def main():
        transport, proto = await loop.subprocess_exec(lambda: Recorder(loop), "sleep", "30")
        transport.close()
        await asyncio.wait_for(proto.done, 10)
        return transport.get_returncode(), transport.is_closing()

    assert loop.run_until_complete(main()) == (-signal.SIGKILL, True)


def test_unclosed_transport_warns(loop):
    async def main():
        transport, proto = await loop.subprocess_exec(
            lambda: Recorder(loop), "true", stdin=None, stdout=None, stderr=None
        )
        await proto.done
        return transport

    transport = loop.run_until_complete(main())
    proto_text = repr(transport)
    with pytest.warns(ResourceWarning, match="unclosed transport"):
        del transport
        gc.collect()
    assert "returncode=0" in proto_text


def test_stdin_drain_close_and_readline_with_limit(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            "cat", stdin=subprocess.PIPE, stdout=subprocess.PIPE, limit=16
        )
        lines = []
        for i in range(3):
            proc.stdin.write(b"line %d\n" % i)
            await proc.stdin.drain()
            lines.append(await proc.stdout.readline())
        proc.stdin.write(b"x" * 40 + b"\n")
        await proc.stdin.drain()
        try:
            await proc.stdout.readline()
        except ValueError as exc:
            lines.append(type(exc).__name__)
        proc.stdin.close()
        await proc.stdin.wait_closed()
        rest = await proc.stdout.read()
        return lines, rest, await proc.wait()

    lines, rest, code = loop.run_until_complete(main())
    assert lines == [b"line 0\n", b"line 1\n", b"line 2\n", "ValueError"]
    assert code == 0
    assert len(rest) <= 41


@pytest.mark.timeout(60)
def test_subprocess_run_in_executor_thread_meanwhile(loop):
    """The loop never reaps a child it did not start: subprocess.run in threads keeps its
    exit statuses while the loop runs children of its own."""

    def run_in_thread(i: int) -> int:
        return subprocess.run([PY, "-c", f"import sys; sys.exit({i % 7})"]).returncode

    async def loop_child(i: int) -> int:
        proc = await asyncio.create_subprocess_exec("sh", "-c", f"exit {i % 5}")
        return await proc.wait()

    async def main():
        threads = [loop.run_in_executor(None, run_in_thread, i) for i in range(12)]
        own = [loop_child(i) for i in range(30)]
        return await asyncio.gather(*threads), await asyncio.gather(*own)

    from_threads, own = loop.run_until_complete(main())
    assert from_threads == [i % 7 for i in range(12)]
    assert own == [i % 5 for i in range(30)]


def test_shell_and_large_output_without_input(loop):
    async def main():
        proc = await asyncio.create_subprocess_shell(
            "head -c 3000000 /dev/zero; echo done >&2; exit 4",
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await proc.communicate()
        return len(out), err, proc.returncode

    assert loop.run_until_complete(main()) == (3_000_000, b"done\n", 4)


def test_exit_is_noticed_without_polling_delay(loop):
    async def main():
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec("true")
        await proc.wait()
        return time.monotonic() - started

    assert loop.run_until_complete(main()) < 2.0


# ---------------------------------------------------------------- ferroloop's child watching


@pytest.mark.ferroloop_only
def test_pidfd_watch_uses_no_thread_and_no_sigchld_handler(loop):
    import threading

    before_threads = threading.active_count()

    async def main():
        proc = await asyncio.create_subprocess_exec("sleep", "0.3")
        during = threading.active_count()
        handler = signal.getsignal(signal.SIGCHLD)
        return during, handler, await proc.wait()

    during, handler, code = loop.run_until_complete(main())
    assert during == before_threads
    assert handler == signal.SIG_DFL
    assert code == 0


@pytest.mark.ferroloop_only
def test_child_watch_reaps_exactly_once_and_peeks_without_reaping():
    from ferroloop._ferroloop import ChildWatch

    proc = subprocess.Popen(["sh", "-c", "exit 7"])
    watch = ChildWatch(proc.pid)
    assert watch.uses_pidfd and watch.fileno is not None
    deadline = time.monotonic() + 10
    while not watch.has_exited() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert watch.has_exited() and not watch.reaped
    assert watch.reap() == 7
    assert watch.reaped and watch.fileno is not None
    watch.close()
    assert watch.fileno is None
    with pytest.raises(ChildProcessError):
        watch.reap()
    with pytest.raises(ProcessLookupError):
        watch.send_signal(signal.SIGTERM)
    proc.returncode = 7  # reaped by the watch: keep Popen from waiting again

    # Peeking leaves the status for its owner: Popen.wait still sees it.
    other = subprocess.Popen(["sh", "-c", "exit 4"])
    peek = ChildWatch(other.pid)
    while not peek.has_exited():
        time.sleep(0.01)
    peek.close()
    assert other.wait() == 4


@pytest.mark.ferroloop_only
def test_spawn_hands_the_clone_pidfd_to_the_child_watch(loop, monkeypatch):
    """The native spawn gets the child's pidfd with the clone (CLONE_PIDFD); its watch adopts
    that descriptor (no pidfd_open), the child's pipe ends reach the transports non-blocking,
    and nothing is left open afterwards. A watch told not to use a pidfd closes one handed to
    it."""
    import fcntl

    from ferroloop import _spawn
    from ferroloop._ferroloop import ChildWatch

    pidfds = []
    real_spawn_child = _spawn.spawn_child

    def recording(*args, **kwargs):
        result = real_spawn_child(*args, **kwargs)
        pidfds.append((kwargs.get("pidfd"), result[1]))
        return result

    monkeypatch.setattr(_spawn, "spawn_child", recording)
    baseline = open_fds()

    async def main():
        proc = await asyncio.create_subprocess_exec(
            "cat", stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        watch = proc._transport._watch
        facts = [watch.fileno]
        for fd in (0, 1):
            pipe_fd = proc._transport.get_pipe_transport(fd).get_extra_info("pipe").fileno()
            facts.append(bool(fcntl.fcntl(pipe_fd, fcntl.F_GETFL) & os.O_NONBLOCK))
        out, _ = await proc.communicate(b"x" * 300_000)
        facts.append(len(out))
        return facts

    facts = loop.run_until_complete(main())
    assert len(pidfds) == 1 and pidfds[0][0] is True and pidfds[0][1] >= 0
    assert facts == [pidfds[0][1], True, True, 300_000]
    assert open_fds() == baseline

    # A pidfd handed to a watch that must not use one is closed at once.
    child = subprocess.Popen(["true"])
    pidfd = os.pidfd_open(child.pid)
    watch = ChildWatch(child.pid, False, pidfd)
    assert not watch.uses_pidfd and watch.fileno is None
    with pytest.raises(OSError):
        os.fstat(pidfd)
    assert child.wait() == 0


@pytest.mark.ferroloop_only
@pytest.mark.timeout(60)
def test_waiter_thread_fallback(loop, monkeypatch):
    """Without pidfds (FERROLOOP_NO_PIDFD=1, or ENOSYS/EPERM from the kernel), one thread per
    child waits in waitpid(pid); the behaviour is the same."""
    import ferroloop._subprocess as impl

    monkeypatch.setattr(impl, "_FORCE_THREADS", True)
    baseline = open_fds()

    async def one(i: int):
        proc = await asyncio.create_subprocess_exec(
            "cat", stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        out, _ = await proc.communicate(b"%d" % i)
        return out, proc.returncode, proc.pid

    async def main():
        results = await asyncio.gather(*(one(i) for i in range(50)))
        killed = await asyncio.create_subprocess_exec("sleep", "30")
        killed.kill()
        threads = loop.run_in_executor(
            None, lambda: subprocess.run(["sh", "-c", "exit 6"]).returncode
        )
        return results, await killed.wait(), await threads

    results, killed_code, thread_code = loop.run_until_complete(main())
    assert [out for out, _, _ in results] == [b"%d" % i for i in range(50)]
    assert {code for _, code, _ in results} == {0}
    assert killed_code == -signal.SIGKILL
    assert thread_code == 6
    assert [pid for _, _, pid in results if is_our_child(pid)] == []
    assert no_zombie_left()
    assert open_fds() - baseline == set()


def test_preexec_fn_umask_and_restore_signals(loop, tmp_path):
    """Options that only Popen's child side applies reach the child."""
    target = tmp_path / "made"

    def ignored_signals(status: bytes) -> int:
        line = next(x for x in status.splitlines() if x.startswith(b"SigIgn:"))
        return int(line.split()[1], 16)

    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY,
            "-c",
            "import os, sys; open(sys.argv[1], 'w').close(); print(os.getsid(0))",
            str(target),
            preexec_fn=os.setsid,
            umask=0o077,
            stdout=subprocess.PIPE,
        )
        out, _ = await proc.communicate()
        masks = []
        for restore in (True, False):
            cat = await asyncio.create_subprocess_exec(
                "cat", "/proc/self/status", restore_signals=restore, stdout=subprocess.PIPE
            )
            status, _ = await cat.communicate()
            masks.append(ignored_signals(status))
        return proc.pid, int(out), masks

    pid, sid, (restored, inherited) = loop.run_until_complete(main())
    sigpipe_bit = 1 << (signal.SIGPIPE - 1)
    assert sid == pid
    assert target.stat().st_mode & 0o777 == 0o600
    assert restored & sigpipe_bit == 0
    assert inherited & sigpipe_bit == sigpipe_bit  # Python ignores SIGPIPE


#: Whether the running Python's asyncio wakes ``Process.wait()`` as soon as the child exits
#: (gh-119710, CPython 3.14's subprocess transport) rather than once its pipes are closed too.
#: Read from the stdlib, as ferroloop does: its ``_process_exited`` touches the exit waiters
#: only where it wakes them.
WAIT_RETURNS_AT_EXIT = (
    "_exit_waiters"
    in (
        __import__(
            "asyncio.base_subprocess"
        ).base_subprocess.BaseSubprocessTransport._process_exited
    ).__code__.co_names
)

#: A child that starts a grandchild inheriting its stdin and stdout; the grandchild writes
#: "ready" and exits at EOF on stdin, so it holds the child's stdout open after the child died.
GRANDCHILD_HOLDS_STDOUT = (
    "import subprocess, sys\n"
    "subprocess.run([sys.executable, '-c',"
    " \"import sys; sys.stdout.write('ready'); sys.stdout.flush(); sys.stdin.read()\"])\n"
)


def test_wait_and_a_grandchild_holding_stdout_open(loop):
    """Process.wait() once the child is killed while a grandchild keeps its stdout open:
    returns at once where the running Python's asyncio does (3.14's gh-119710), else only
    after the pipe closes (the grandchild exits once stdin is closed)."""

    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", GRANDCHILD_HOLDS_STDOUT, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        wait = asyncio.ensure_future(proc.wait())
        ready = await asyncio.wait_for(proc.stdout.readexactly(5), 10)
        proc.kill()
        done, _ = await asyncio.wait([wait], timeout=1.0)
        early = wait in done
        proc.stdin.close()  # the grandchild exits, the pipe closes
        returncode = await asyncio.wait_for(wait, 10)
        rest = await asyncio.wait_for(proc.stdout.read(), 10)
        return ready, early, returncode, rest

    ready, early, returncode, rest = loop.run_until_complete(main())
    assert ready == b"ready"
    assert early is WAIT_RETURNS_AT_EXIT
    assert returncode == -signal.SIGKILL
    assert rest == b""


@pytest.mark.skipif(
    not WAIT_RETURNS_AT_EXIT,
    reason="before gh-119710 (CPython 3.14) asyncio waits for pipes that never connected: "
    "a spawn cancelled while connecting them hangs on the stock loop",
)
@pytest.mark.parametrize("failing", ["read", "write", "both"])
def test_spawn_cancelled_while_connecting_pipes(loop, failing):
    """connect_read_pipe / connect_write_pipe cancelled during create_subprocess_exec: the
    CancelledError reaches the caller, the child is killed and reaped, and no descriptor of
    its pipes is left open."""
    baseline = open_fds()

    async def main():
        running = asyncio.get_running_loop()

        async def cancelled(*args, **kwargs):
            raise asyncio.CancelledError

        if failing in ("read", "both"):
            running.connect_read_pipe = cancelled
        if failing in ("write", "both"):
            running.connect_write_pipe = cancelled
        try:
            await asyncio.wait_for(
                asyncio.create_subprocess_exec(
                    "sleep",
                    "30",
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                ),
                10,
            )
        except asyncio.CancelledError:
            return "cancelled"
        return "spawned"

    assert loop.run_until_complete(main()) == "cancelled"
    for attribute in ("connect_read_pipe", "connect_write_pipe"):
        loop.__dict__.pop(attribute, None)
    loop.run_until_complete(asyncio.sleep(0.05))
    assert no_zombie_left()
    assert open_fds() - baseline == set()


@pytest.mark.skipif(sys.version_info >= (3, 13), reason="no child watchers from 3.13 on")
def test_fast_child_watcher_on_the_policy_reaps_the_loops_children(loop, caplog):
    """A FastChildWatcher set on the policy collects every child with waitpid(-1): the loop
    registers its children with it (as asyncio's loop does) and gets their real returncodes.
    (Before it did, the loop's pidfd reap usually won the race, the kernel waking pidfd
    waiters before it sends SIGCHLD; this checks the results, not which side reaped.)"""
    import logging
    import warnings
    from asyncio import unix_events

    policy = asyncio.get_event_loop_policy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        watcher = unix_events.FastChildWatcher()
        watcher.attach_loop(loop)
        policy.set_child_watcher(watcher)

    async def main():
        codes = []
        # A child the loop did not start exits first; while the loop thread is busy, the
        # loop's child exits too: the watcher's SIGCHLD handler runs first and collects both
        # with waitpid(-1). A pidfd reap of the loop's child would then find nothing (255).
        other = subprocess.Popen([PY, "-c", "pass"])
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", "import time; time.sleep(0.3); raise SystemExit(5)"
        )
        time.sleep(1.0)
        codes.append(await proc.wait())
        other.wait()
        for code in (0, 7):
            proc = await asyncio.create_subprocess_exec(PY, "-c", f"raise SystemExit({code})")
            codes.append(await proc.wait())
        proc = await asyncio.create_subprocess_exec(
            PY,
            "-c",
            "import sys; sys.stdout.write(sys.stdin.read())",
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        out, _ = await proc.communicate(b"through")
        codes.append(out)
        proc = await asyncio.create_subprocess_exec(PY, "-c", "import time; time.sleep(30)")
        proc.kill()
        codes.append(await proc.wait())
        return codes

    try:
        with caplog.at_level(logging.WARNING, logger="asyncio"):
            codes = loop.run_until_complete(main())
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            policy.set_child_watcher(None)
            watcher.attach_loop(None)
            watcher.close()
    assert codes == [5, 0, 7, b"through", -signal.SIGKILL]
    lost = [r.getMessage() for r in caplog.records if "Unknown child process" in r.getMessage()]
    assert lost == []
    assert no_zombie_left()


def _pipe_size(transport) -> int:
    """The capacity of the pipe behind a pipe transport (F_GETPIPE_SZ)."""
    import fcntl

    return fcntl.fcntl(transport.get_extra_info("pipe").fileno(), fcntl.F_GETPIPE_SZ)


@pytest.mark.ferroloop_only
def test_busy_child_pipes_grow_and_idle_ones_do_not(loop):
    """ferroloop grows a child's pipe to 256 KiB once a bulk transfer fills it (fewer system
    calls per MB); a pipe that never fills keeps the kernel's default size."""
    payload = os.urandom(4 * 1024 * 1024)
    sizes: dict[str, list[int]] = {"stdout": [], "idle": []}

    class Sizes(Recorder):
        def pipe_data_received(self, fd: int, data: bytes) -> None:
            super().pipe_data_received(fd, data)
            sizes["stdout"].append(_pipe_size(self.transport.get_pipe_transport(1)))

    async def main():
        transport, proto = await loop.subprocess_exec(
            lambda: Sizes(loop), "cat", stdin=subprocess.PIPE, stderr=None
        )
        stdin = transport.get_pipe_transport(0)
        start = _pipe_size(stdin)
        stdin.write(payload)
        grown = _pipe_size(stdin)
        stdin.close()
        await proto.done
        transport.close()
        idle_transport, idle = await loop.subprocess_exec(
            lambda: Sizes(loop), PY, "-c", "print('x')", stdin=None, stderr=None
        )
        sizes["idle"].append(_pipe_size(idle_transport.get_pipe_transport(1)))
        await idle.done
        idle_transport.close()
        return start, grown, bytes(proto.data[1]), bytes(idle.data[1])

    start, grown, out, idle_out = loop.run_until_complete(main())
    assert out == payload
    assert idle_out.strip() == b"x"
    assert (start, grown) == (64 * 1024, 256 * 1024)
    assert max(sizes["stdout"]) == 256 * 1024
    assert sizes["idle"] == [64 * 1024]
