"""Virtual time (issue #12): ``new_event_loop(virtual_time=True)`` and ``loop.advance_time``.

The loop's ``time()`` starts at 0.0 and jumps to the next timer whenever the loop would wait
and no I/O arrives within ``autojump_threshold`` real seconds. Stock asyncio has no such mode,
so every test here is ferroloop-only. Values are recorded inside callbacks and asserted after
the run.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest

pytestmark = pytest.mark.ferroloop_only


def run_virtual(coro_fn, **options):
    """Runs ``coro_fn()`` on a new virtual-time ferroloop loop; returns (result, wall seconds)."""
    import ferroloop

    start = time.monotonic()
    result = ferroloop.run(coro_fn(), virtual_time=True, **options)
    return result, time.monotonic() - start


def test_clock_starts_at_zero_and_an_hour_of_sleep_is_instant():
    async def main():
        loop = asyncio.get_running_loop()
        first = loop.time()
        await asyncio.sleep(3600)
        return first, loop.time()

    (first, after), wall = run_virtual(main)
    assert first == 0.0
    assert after == 3600.0
    assert wall < 1.0


def test_runner_with_partial_loop_factory():
    import ferroloop

    async def main():
        await asyncio.sleep(30)
        return asyncio.get_running_loop().time()

    factory = functools.partial(ferroloop.new_event_loop, virtual_time=True)
    with asyncio.Runner(loop_factory=factory) as runner:
        assert runner.run(main()) == 30.0
        assert runner.run(main()) == 60.0  # the same loop: time went on


def test_time_does_not_move_on_its_own():
    import ferroloop

    loop = ferroloop.new_event_loop(virtual_time=True)
    try:
        time.sleep(0.01)
        assert loop.time() == 0.0
        assert loop._is_virtual_time()
    finally:
        loop.close()


def test_real_time_loop_is_unchanged():
    import ferroloop

    loop = ferroloop.new_event_loop()
    try:
        assert abs(loop.time() - time.monotonic()) < 1.0
        assert not loop._is_virtual_time()
        with pytest.raises(RuntimeError):
            loop.advance_time(1)
    finally:
        loop.close()


def test_negative_threshold_is_refused():
    import ferroloop

    with pytest.raises(ValueError):
        ferroloop.new_event_loop(virtual_time=True, autojump_threshold=-1)


def test_wait_for_fires_at_the_exact_virtual_deadline():
    async def main():
        loop = asyncio.get_running_loop()
        await asyncio.sleep(1.25)
        try:
            await asyncio.wait_for(asyncio.sleep(100), 2.5)
        except TimeoutError:
            return loop.time()
        return None

    fired_at, _ = run_virtual(main)
    assert fired_at == 3.75


def test_asyncio_timeout_rescheduled_fires_at_the_new_deadline():
    async def main():
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(5) as cm:
                await asyncio.sleep(1)
                cm.reschedule(loop.time() + 7)
                await asyncio.sleep(1000)
        except TimeoutError:
            return loop.time(), cm.expired()
        return None

    (fired_at, expired), _ = run_virtual(main)
    assert (fired_at, expired) == (8.0, True)


def test_timers_fire_in_order_at_their_deadline():
    """Deadline order, FIFO among equal deadlines, each at exactly ``when``."""
    trace: list[tuple[str, float, float]] = []

    async def main():
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        delays = [("a", 5.0), ("b", 1.0), ("c", 5.0), ("d", 0.5), ("e", 1.0), ("f", 86400.0)]
        for tag, delay in delays:
            handle = loop.call_later(
                delay, lambda tag=tag: trace.append((tag, loop.time(), handles[tag].when()))
            )
            handles[tag] = handle
        loop.call_at(86400.0, done.set_result, None)
        await done

    handles: dict[str, asyncio.TimerHandle] = {}
    run_virtual(main)
    assert [tag for tag, _, _ in trace] == ["d", "b", "e", "a", "c", "f"]
    assert all(now == when for _, now, when in trace)


def test_trace_is_deterministic():
    async def program(trace):
        loop = asyncio.get_running_loop()

        async def worker(n):
            for i in range(5):
                await asyncio.sleep((n * 7 + i * 3) % 5 + 0.1 * n)
                trace.append((n, i, loop.time()))

        await asyncio.gather(*(worker(n) for n in range(4)))

    traces = []
    for _ in range(100):
        trace: list = []
        run_virtual(lambda trace=trace: program(trace))
        traces.append(trace)
    assert len(traces[0]) == 20
    assert all(trace == traces[0] for trace in traces)


def test_retry_with_exponential_backoff_up_to_an_hour():
    async def main():
        loop = asyncio.get_running_loop()
        attempts = []
        delay = 1.0
        while True:
            attempts.append(loop.time())
            if delay > 3600:
                break
            await asyncio.sleep(delay)
            delay *= 2
        return attempts

    attempts, wall = run_virtual(main)
    assert attempts[:4] == [0.0, 1.0, 3.0, 7.0]
    assert len(attempts) == 13
    assert attempts[-1] == 2.0**12 - 1  # 1 + 2 + ... + 2048; the next delay is over an hour
    assert wall < 1.0


def test_heartbeat_over_tcp_for_24_virtual_hours():
    """A real TCP connection keeps working while the clock jumps a minute at a time."""

    async def main():
        loop = asyncio.get_running_loop()
        received: list[bytes] = []

        async def echo(reader, writer):
            while data := await reader.readline():
                writer.write(data)
                await writer.drain()
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for beat in range(24 * 60):
            await asyncio.sleep(60)
            writer.write(b"beat %d\n" % beat)
            received.append(await reader.readline())
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return received, loop.time()

    (received, end), wall = run_virtual(main)
    assert len(received) == 1440
    assert received[-1] == b"beat 1439\n"
    assert end == 86400.0
    assert wall < 20.0


def test_io_within_the_threshold_stops_the_jump():
    """A descriptor that becomes ready within the threshold is served before a far timer."""
    events: list[tuple[str, float]] = []

    async def main():
        loop = asyncio.get_running_loop()
        left, right = socket.socketpair()
        left.setblocking(False)
        loop.call_later(10, lambda: events.append(("timer", loop.time())))
        threading.Timer(0.05, right.send, (b"x",)).start()
        data = await loop.sock_recv(left, 1)
        events.append((data.decode(), loop.time()))
        await asyncio.sleep(20)
        left.close()
        right.close()

    _, wall = run_virtual(main, autojump_threshold=0.5)
    assert events == [("x", 0.0), ("timer", 10.0)]
    # After the data came, a threshold wait before each jump (to 10, then to 20).
    assert wall >= 1.0


def test_threshold_is_waited_in_real_time_before_a_jump():
    async def main():
        await asyncio.sleep(100)
        return asyncio.get_running_loop().time()

    now, wall = run_virtual(main, autojump_threshold=0.3)
    assert now == 100.0
    assert wall >= 0.3


def test_executor_job_is_pending_io():
    """A 10 s virtual timer does not fire while a 0.2 s real-time job runs."""
    order: list[tuple[str, float]] = []

    async def main():
        loop = asyncio.get_running_loop()
        loop.call_later(10, lambda: order.append(("timer", loop.time())))
        await asyncio.to_thread(time.sleep, 0.2)
        order.append(("thread", loop.time()))
        await loop.run_in_executor(None, time.sleep, 0.05)
        order.append(("executor", loop.time()))
        await asyncio.sleep(15)
        # Cancelled, so no longer outstanding, but its thread still sleeps when the runner
        # closes: joining the executor (3.12+: with a 300 s timeout) must not jump either.
        loop.run_in_executor(None, time.sleep, 0.2).cancel()
        await asyncio.sleep(0)

    with warnings.catch_warnings():
        # 3.12+: Runner.close() joins the executor with a 300 s timeout, which must not jump.
        warnings.simplefilter("error", RuntimeWarning)
        run_virtual(main)
    assert order == [("thread", 0.0), ("executor", 0.0), ("timer", 10.0)]


def test_advance_time_by_hand_with_an_infinite_threshold():
    results: dict[str, object] = {}

    async def main():
        loop = asyncio.get_running_loop()
        fired: list[float] = []
        loop.call_later(5, lambda: fired.append(loop.time()))
        for _ in range(3):
            await asyncio.sleep(0)
        results["before"] = list(fired)
        loop.advance_time(4.5)
        await asyncio.sleep(0)
        results["early"] = list(fired)
        loop.advance_time(0.5)
        for _ in range(3):
            await asyncio.sleep(0)
        results["after"] = list(fired)
        for bad in (-1, -0.001):
            try:
                loop.advance_time(bad)
            except ValueError as exc:
                results.setdefault("errors", []).append(str(exc))
        results["end"] = loop.time()

    run_virtual(main, autojump_threshold=float("inf"))
    assert results["before"] == []
    assert results["early"] == []
    assert results["after"] == [5.0]
    assert len(results["errors"]) == 2
    assert results["end"] == 5.0


def test_advance_time_from_another_thread_wakes_the_loop():
    async def main():
        loop = asyncio.get_running_loop()
        threading.Timer(0.1, loop.advance_time, (5,)).start()
        await asyncio.sleep(5)  # never jumps: the threshold is infinite
        return loop.time()

    now, wall = run_virtual(main, autojump_threshold=float("inf"))
    assert now == 5.0
    assert wall >= 0.1


def test_cli_countasync_finishes_in_virtual_time(child):
    script = child.examples_dir / "countasync.py"
    cmd = [sys.executable, "-m", "ferroloop", "--virtual-time", str(script)]
    result = child.run(cmd)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:6] == ["One"] * 3 + ["Two"] * 3
    elapsed = float(lines[6].split(" executed in ")[1].split()[0])
    assert elapsed < 0.1


def test_cli_virtual_time_clock_readings(child):
    script = child.script(
        "readings.py",
        """
        import asyncio

        async def say_after(delay, what):
            await asyncio.sleep(delay)
            print(what)

        async def main():
            loop = asyncio.get_running_loop()
            await asyncio.gather(asyncio.sleep(1), asyncio.sleep(1), asyncio.sleep(1))
            print(loop.time())
            await say_after(1, "hello")
            await say_after(2, "world")
            print(loop.time())

        asyncio.run(main())
        """,
    )
    result = child.run([sys.executable, "-m", "ferroloop", "--virtual-time", str(script)])
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["1.0", "hello", "world", "4.0"]


def test_pytest_plugin_marker_gives_virtual_time(child):
    child.script(
        "test_marked.py",
        """
        import asyncio
        import time

        import pytest

        async def sleeper():
            await asyncio.sleep(3600)
            return asyncio.get_running_loop().time()

        @pytest.mark.ferroloop(virtual_time=True)
        def test_virtual():
            start = time.monotonic()
            assert asyncio.run(sleeper()) == 3600.0
            assert time.monotonic() - start < 1.0

        def test_real_again():
            loop = asyncio.new_event_loop()
            try:
                assert not loop._is_virtual_time()
            finally:
                loop.close()

        async def timer_against_job():
            loop = asyncio.get_running_loop()
            order = []
            loop.call_later(10, order.append, "timer")
            await asyncio.to_thread(time.sleep, 0.2)
            order.append("job")
            await asyncio.sleep(10)
            return order

        @pytest.mark.ferroloop(virtual_time=True, wait_for_executor=False)
        def test_jobs_ignored():
            assert asyncio.run(timer_against_job()) == ["timer", "job"]

        @pytest.mark.ferroloop(virtual_time=True)
        def test_jobs_waited_for():
            assert asyncio.run(timer_against_job()) == ["job", "timer"]
        """,
    )
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "ferroloop.pytest_plugin",
        "-p",
        "no:cacheprovider",
    ]
    result = child.run(cmd, cwd=child.tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 passed" in result.stdout


#: The pytest-asyncio sample of virtual time (also run by ``scripts/downstream.sh plugin``).
PYTEST_ASYNCIO_SAMPLE = (
    Path(__file__).parent / "plugin_samples" / "pytest_asyncio_project" / "sample_virtual_time.py"
)


@pytest.mark.timeout(60)
def test_pytest_plugin_marker_with_pytest_asyncio_loop_scopes(child):
    """pytest-asyncio 1.4+: a marked test gets a virtual loop of its own even where its
    loop_scope is the module's; the unmarked tests around it stay on real time."""
    pytest_asyncio = pytest.importorskip("pytest_asyncio")
    from ferroloop import pytest_plugin

    hooks = pytest_plugin._PytestAsyncioHooks.pytest_asyncio_loop_factories.__name__
    source = open(pytest_asyncio.plugin.__file__).read()
    if hooks not in source:
        pytest.skip(f"pytest-asyncio {pytest_asyncio.__version__} has no loop factory hook")
    child.script("test_scopes.py", PYTEST_ASYNCIO_SAMPLE.read_text())
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "ferroloop.pytest_plugin",
        "-p",
        "no:cacheprovider",
        "-o",
        "asyncio_default_fixture_loop_scope=function",
        "-W",
        "error::pytest.PytestWarning",
    ]
    result = child.run(cmd, cwd=child.tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 passed" in result.stdout


def test_pytest_plugin_warns_when_a_marked_test_made_no_loop(child):
    child.script(
        "test_no_loop.py",
        """
        import pytest

        @pytest.mark.ferroloop(virtual_time=True)
        def test_marked_without_a_loop():
            pass
        """,
    )
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "ferroloop.pytest_plugin"]
    result = child.run([*cmd, "-p", "no:cacheprovider"], cwd=child.tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no event loop was made while this test ran" in result.stdout


def tls_contexts():
    """(server, client) TLS contexts on CPython's test certificates, or skip."""
    import ssl

    utils = pytest.importorskip("test.test_asyncio.utils")
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(utils.SIGNED_CERTFILE)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(utils.SIGNING_CA)
    return server, client


def test_tls_handshake_timeout_fires_at_its_virtual_deadline():
    """A peer that never answers the handshake: the client gives up at exactly 60.0."""
    _, client_ctx = tls_contexts()

    async def main():
        loop = asyncio.get_running_loop()
        silent = socket.create_server(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        try:
            await asyncio.open_connection(
                "127.0.0.1",
                port,
                ssl=client_ctx,
                server_hostname="localhost",
                ssl_handshake_timeout=60,
            )
        except (ConnectionError, TimeoutError) as exc:
            outcome = type(exc).__name__, loop.time()
        else:
            outcome = "connected", loop.time()
        silent.close()
        return outcome

    outcome, wall = run_virtual(main)
    assert outcome[1] == 60.0
    assert outcome[0] in ("ConnectionAbortedError", "TimeoutError")
    assert wall < 1.0


def test_tls_echo_with_virtual_sleeps():
    server_ctx, client_ctx = tls_contexts()

    async def main():
        loop = asyncio.get_running_loop()

        async def echo(reader, writer):
            while line := await reader.readline():
                await asyncio.sleep(600)  # ten virtual minutes per answer
                writer.write(line.upper())
                await writer.drain()
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_ctx, server_hostname="localhost"
        )
        answers = []
        for word in (b"one\n", b"two\n", b"three\n"):
            writer.write(word)
            answers.append((await reader.readline(), loop.time()))
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return answers

    answers, _ = run_virtual(main)
    assert answers == [(b"ONE\n", 600.0), (b"TWO\n", 1200.0), (b"THREE\n", 1800.0)]


def test_same_order_as_stock_asyncio_in_real_time():
    """A timer-only program prints the same trace on virtual ferroloop as on stock asyncio
    in real time (deadlines 50 ms apart, so real time keeps the order too)."""

    async def program():
        trace = []

        async def worker(name, delays):
            for delay in delays:
                await asyncio.sleep(delay)
                trace.append(name)

        async def waiter():
            try:
                await asyncio.wait_for(asyncio.sleep(10), 0.35)
            except TimeoutError:
                trace.append("timeout")

        await asyncio.gather(
            worker("a", [0.1, 0.3]), worker("b", [0.2, 0.05]), waiter(), worker("c", [0.5])
        )
        return trace

    stock = asyncio.run(program())
    virtual, _ = run_virtual(program)
    assert virtual == stock == ["a", "b", "b", "timeout", "a", "c"]


def test_subprocess_output_within_the_threshold_keeps_the_clock():
    """With a threshold longer than the child's pauses, its I/O holds the clock still."""

    async def main():
        loop = asyncio.get_running_loop()
        proc = await asyncio.create_subprocess_exec(
            "sh", "-c", "sleep 0.1; echo done", stdout=asyncio.subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        return out, proc.returncode, loop.time()

    assert run_virtual(main, autojump_threshold=2.0)[0] == (b"done\n", 0, 0.0)


def test_slow_callbacks_are_measured_in_real_time(caplog):
    import ferroloop

    loop = ferroloop.new_event_loop(virtual_time=True)
    try:
        loop.set_debug(True)
        loop.slow_callback_duration = 0.05
        loop.call_soon(time.sleep, 0.1)
        loop.call_later(3600, loop.stop)
        with caplog.at_level("WARNING", logger="asyncio"):
            loop.run_forever()
        now = loop.time()
    finally:
        loop.close()
    assert now == 3600.0
    assert any("took" in record.getMessage() for record in caplog.records)


@pytest.mark.timeout(20)
def test_jump_while_a_native_receive_is_pending_with_a_long_threshold():
    """An idle ``sock_recv`` keeps the closed-socket sweep going (every 0.25 s real time);
    the waits it cuts short add up, so a threshold above the sweep period still jumps (it used
    to wait forever)."""

    async def main():
        loop = asyncio.get_running_loop()
        left, right = socket.socketpair()
        left.setblocking(False)
        receive = asyncio.ensure_future(loop.sock_recv(left, 10))
        await asyncio.sleep(0)
        await asyncio.sleep(10)
        now = loop.time()
        receive.cancel()
        left.close()
        right.close()
        return now

    now, wall = run_virtual(main, autojump_threshold=0.6)
    assert now == 10.0
    assert 0.6 <= wall < 10


@pytest.mark.timeout(20)
@pytest.mark.parametrize("offset", [-1000.0, 1000.0])
def test_replaced_time_under_virtual_time_jumps_by_the_right_distance(offset):
    """With ``loop.time`` replaced on a virtual-time loop, timers are due by the replacement:
    the jump moves the clock by the distance to the first deadline in its scale (planning
    against the native clock used to spin without a jump, or jump too far)."""
    import ferroloop

    loop = ferroloop.new_event_loop(virtual_time=True, autojump_threshold=0.0)
    native = loop.time
    loop.time = lambda: native() + offset
    seen: dict[str, float] = {}

    async def main():
        await asyncio.sleep(10)
        seen["native"] = native()
        seen["replaced"] = loop.time()

    try:
        start = time.monotonic()
        loop.run_until_complete(main())
        wall = time.monotonic() - start
        iterations = loop._stats()[3]
    finally:
        del loop.time
        loop.close()
    assert seen == {"native": 10.0, "replaced": 10.0 + offset}
    assert wall < 5
    assert iterations < 100


def test_condition_wait_for_times_out_at_its_virtual_deadline():
    """``wait_for(cond.wait_for(predicate), 30)``: notified at 10 and 20 with the predicate
    still false, the wait gives up at exactly 30."""
    events: list[tuple[str, float]] = []

    async def main():
        loop = asyncio.get_running_loop()
        cond = asyncio.Condition()
        state = {"ready": False}

        async def notifier():
            for _ in range(2):
                await asyncio.sleep(10)
                async with cond:
                    events.append(("notify", loop.time()))
                    cond.notify_all()

        notifying = asyncio.ensure_future(notifier())
        async with cond:
            try:
                await asyncio.wait_for(cond.wait_for(lambda: state["ready"]), 30)
            except TimeoutError:
                events.append(("timeout", loop.time()))
            events.append(("locked", cond.locked()))
        await notifying

    _, wall = run_virtual(main)
    assert events == [("notify", 10.0), ("notify", 20.0), ("timeout", 30.0), ("locked", True)]
    assert wall < 1.0


def test_custom_executor_and_default_executor_jobs_are_pending_io():
    """Jobs in an executor the program made count as the default executor's do."""
    import concurrent.futures

    order: list[tuple[str, float]] = []

    async def main():
        loop = asyncio.get_running_loop()
        loop.call_later(5, lambda: order.append(("timer", loop.time())))
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            await loop.run_in_executor(pool, time.sleep, 0.15)
            order.append(("custom", loop.time()))
            await asyncio.gather(
                loop.run_in_executor(pool, time.sleep, 0.05),
                loop.run_in_executor(None, time.sleep, 0.1),
                asyncio.to_thread(time.sleep, 0.05),
            )
            order.append(("gathered", loop.time()))
        await asyncio.sleep(5)

    run_virtual(main)
    assert order == [("custom", 0.0), ("gathered", 0.0), ("timer", 5.0)]


def test_wait_for_executor_false_lets_the_clock_jump_past_jobs():
    order: list[tuple[str, float]] = []

    async def main():
        loop = asyncio.get_running_loop()
        loop.call_later(10, lambda: order.append(("timer", loop.time())))
        await asyncio.to_thread(time.sleep, 0.2)
        order.append(("thread", loop.time()))

    _, wall = run_virtual(main, wait_for_executor=False)
    assert order == [("timer", 10.0), ("thread", 10.0)]
    assert wall >= 0.2  # the job still ran to its end, in real time


def test_post_from_a_bare_thread_within_the_threshold_wakes_the_loop():
    """A thread of the program's own (no executor) is not pending I/O, but its
    ``call_soon_threadsafe`` arriving within the threshold is served before any jump."""
    events: list[tuple[str, float]] = []

    async def main():
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        loop.call_later(10, lambda: events.append(("timer", loop.time())))

        def work():
            time.sleep(0.05)
            loop.call_soon_threadsafe(done.set_result, "posted")

        threading.Thread(target=work).start()
        events.append((await done, loop.time()))
        await asyncio.sleep(10)

    run_virtual(main, autojump_threshold=0.5)
    assert events == [("posted", 0.0), ("timer", 10.0)]


def test_bare_thread_beyond_the_threshold_is_not_waited_for():
    """The rule for threads outside executors: the clock does not know about them, so with
    the default threshold a timer due before the thread posts fires first."""
    events: list[tuple[str, float]] = []

    async def main():
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        loop.call_later(10, lambda: events.append(("timer", loop.time())))

        def work():
            time.sleep(0.1)
            loop.call_soon_threadsafe(done.set_result, "posted")

        threading.Thread(target=work).start()
        events.append((await done, loop.time()))

    run_virtual(main)
    assert events == [("timer", 10.0), ("posted", 10.0)]


def test_shutdown_default_executor_timeout_fires_in_loop_time():
    """A job that outlives the join's timeout: the join holds the clock for ``timeout`` real
    seconds, then the timeout fires at its deadline in the loop's time (with asyncio's
    warning) instead of the loop waiting for the thread for ever."""
    results: dict[str, object] = {}
    release = threading.Event()

    async def main():
        loop = asyncio.get_running_loop()
        loop.run_in_executor(None, release.wait, 30)
        await asyncio.sleep(0)
        start = time.monotonic()
        before = loop.time()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            await loop.shutdown_default_executor(timeout=0.3)
        release.set()  # the runner's own shutdown then joins at once
        results["waited"] = time.monotonic() - start
        results["elapsed"] = loop.time() - before
        results["warnings"] = [str(w.message) for w in caught]

    try:
        run_virtual(main, wait_for_executor=False)
    finally:
        release.set()
    assert results["elapsed"] == 0.3
    assert results["waited"] >= 0.3
    assert any("within 0.3 seconds" in w for w in results["warnings"])


def test_shutdown_default_executor_waits_for_a_short_join():
    """A join shorter than its timeout: no jump, no warning."""
    results: dict[str, object] = {}

    async def main():
        loop = asyncio.get_running_loop()
        job = loop.run_in_executor(None, time.sleep, 0.2)
        await asyncio.sleep(0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            await loop.shutdown_default_executor(timeout=60)
        results["done"] = job.done()  # its result came before the join ended
        results["time"] = loop.time()
        results["warnings"] = [str(w.message) for w in caught]

    run_virtual(main, wait_for_executor=False)
    assert results == {"done": True, "time": 0.0, "warnings": []}


def test_cli_options_for_virtual_time(child):
    script = child.script(
        "options.py",
        """
        import asyncio, time

        async def main():
            loop = asyncio.get_running_loop()
            loop.call_later(10, lambda: print("timer", loop.time()))
            await asyncio.to_thread(time.sleep, 0.1)
            print("thread", loop.time())
            await asyncio.sleep(10)

        asyncio.run(main())
        """,
    )
    base = [sys.executable, "-m", "ferroloop", "--virtual-time"]
    held = child.run([*base, str(script)])
    assert held.returncode == 0, held.stderr
    assert held.stdout.splitlines() == ["thread 0.0", "timer 10.0"]
    jumped = child.run([*base, "--no-wait-for-executor", str(script)])
    assert jumped.returncode == 0, jumped.stderr
    assert jumped.stdout.splitlines() == ["timer 10.0", "thread 10.0"]
    threshold = child.run([*base, "--autojump-threshold", "0.5", str(script)])
    assert threshold.returncode == 0, threshold.stderr
    assert threshold.stdout.splitlines() == ["thread 0.0", "timer 10.0"]
    for bad in (
        ["--no-wait-for-executor", str(script)],  # without --virtual-time
        [*base[3:], "--autojump-threshold", "-1", str(script)],
        [*base[3:], "--autojump-threshold=soon", str(script)],
        [*base[3:], "--bogus", str(script)],
    ):
        result = child.run([sys.executable, "-m", "ferroloop", *bad])
        assert result.returncode == 2, (bad, result.stderr)
        assert "usage:" in result.stderr


def test_name_lookup_holds_the_clock_even_with_wait_for_executor_false(monkeypatch):
    """getaddrinfo in the executor is the loop's own I/O, not a job of the program's."""
    order: list[tuple[str, float]] = []
    real_getaddrinfo = socket.getaddrinfo

    def slow_getaddrinfo(*args, **kwargs):
        time.sleep(0.2)
        return real_getaddrinfo("127.0.0.1", *args[1:], **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow_getaddrinfo)

    async def main():
        loop = asyncio.get_running_loop()
        loop.call_later(10, lambda: order.append(("timer", loop.time())))
        infos = await loop.getaddrinfo("slow.invalid", 80, type=socket.SOCK_STREAM)
        order.append(("resolved", loop.time()))
        await asyncio.sleep(10)
        return infos

    infos, _ = run_virtual(main, wait_for_executor=False)
    assert infos[0][4] == ("127.0.0.1", 80)
    assert order == [("resolved", 0.0), ("timer", 10.0)]
