"""Async generator hooks, executors and cross-thread entry points."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import gc
import sys
import threading

import pytest

LABEL: contextvars.ContextVar[str] = contextvars.ContextVar("LABEL", default="none")


def test_asyncgen_hooks_installed_only_while_running(loop):
    """The loop installs asyncgen hooks while running and restores the old ones."""
    before = sys.get_asyncgen_hooks()
    seen: list = []
    loop.call_soon(lambda: seen.append(sys.get_asyncgen_hooks()))
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen[0].firstiter is not None and seen[0].finalizer is not None
    assert sys.get_asyncgen_hooks() == before


def test_shutdown_asyncgens_finalizes_unfinished_generators(loop):
    """An async generator left suspended is closed by shutdown_asyncgens()."""
    events: list[str] = []
    keep_alive: list = []

    async def ticker():
        try:
            yield 1
            yield 2
        finally:
            await asyncio.sleep(0)
            events.append("ticker finally")

    async def main():
        agen = ticker()
        keep_alive.append(agen)
        assert await agen.__anext__() == 1

    loop.run_until_complete(main())
    assert events == []
    loop.run_until_complete(loop.shutdown_asyncgens())
    assert events == ["ticker finally"]


def test_asyncio_run_finalizes_async_generators(new_loop):
    """Leaving a Runner runs the finally block of suspended async generators."""
    events: list[str] = []
    keep_alive: list = []

    async def numbers():
        try:
            for i in range(10):
                yield i
        finally:
            events.append("numbers finally")

    async def main():
        agen = numbers()
        keep_alive.append(agen)
        await agen.__anext__()
        await agen.__anext__()
        return "main done"

    with asyncio.Runner(loop_factory=new_loop) as runner:
        assert runner.run(main()) == "main done"
        assert events == []
    assert events == ["numbers finally"]


def test_garbage_collected_asyncgen_is_closed_on_loop(loop):
    """An async generator dropped mid-iteration has aclose() scheduled on the loop."""
    events: list[str] = []

    async def stream():
        try:
            yield "a"
            yield "b"
        finally:
            events.append(f"closed on loop: {asyncio.get_running_loop() is loop}")

    async def main():
        agen = stream()
        assert await agen.__anext__() == "a"
        del agen
        gc.collect()
        for _ in range(5):
            await asyncio.sleep(0)

    loop.run_until_complete(main())
    assert events == ["closed on loop: True"]


def test_run_in_executor_default(loop):
    """run_in_executor(None, ...) runs the function in a worker thread."""

    def work(a, b):
        return a + b, threading.get_ident()

    result, worker = loop.run_until_complete(loop.run_in_executor(None, work, 2, 3))
    assert result == 5
    assert worker != threading.get_ident()
    loop.run_until_complete(loop.shutdown_default_executor())


def test_run_in_executor_propagates_exception(loop):
    """An exception in the worker is raised by the awaited future."""

    def fail():
        raise ConnectionError("worker failed")

    with pytest.raises(ConnectionError, match="^worker failed$"):
        loop.run_until_complete(loop.run_in_executor(None, fail))
    loop.run_until_complete(loop.shutdown_default_executor())


def test_run_in_explicit_executor(loop):
    """An explicit executor is used instead of the default one."""
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="explicit") as pool:
        name = loop.run_until_complete(
            loop.run_in_executor(pool, lambda: threading.current_thread().name)
        )
    assert name.startswith("explicit")


def test_set_default_executor(loop):
    """set_default_executor() replaces the pool used for executor=None."""
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="custom-default")
    loop.set_default_executor(pool)
    name = loop.run_until_complete(
        loop.run_in_executor(None, lambda: threading.current_thread().name)
    )
    assert name.startswith("custom-default")
    loop.run_until_complete(loop.shutdown_default_executor())
    with pytest.raises(RuntimeError, match="^cannot schedule new futures after shutdown$"):
        pool.submit(print)


def test_set_default_executor_requires_thread_pool(loop):
    """Only ThreadPoolExecutor instances are accepted as the default executor."""
    with pytest.raises(TypeError, match="^executor must be ThreadPoolExecutor instance$"):
        loop.set_default_executor(object())


def test_shutdown_default_executor_refuses_later_work(loop):
    """After shutdown_default_executor(), run_in_executor(None) raises."""
    assert loop.run_until_complete(loop.run_in_executor(None, lambda: "warm")) == "warm"
    loop.run_until_complete(loop.shutdown_default_executor())
    with pytest.raises(RuntimeError, match="^Executor shutdown has been called$"):
        loop.run_in_executor(None, print)


def test_shutdown_default_executor_waits_for_running_jobs(loop):
    """shutdown_default_executor() waits for submitted jobs to finish."""
    finished = threading.Event()

    def slow_job():
        finished.wait(0.05)
        finished.set()

    async def main():
        loop.run_in_executor(None, slow_job)
        await loop.shutdown_default_executor()
        return finished.is_set()

    assert loop.run_until_complete(main()) is True


def test_run_coroutine_threadsafe(loop):
    """A thread can submit a coroutine to the running loop and wait for it."""
    outcome: dict[str, object] = {}

    async def double(x):
        await asyncio.sleep(0.001)
        return x * 2, asyncio.get_running_loop()

    async def fail():
        raise IndexError("threadsafe failure")

    def submitter():
        future = asyncio.run_coroutine_threadsafe(double(21), loop)
        outcome["result"] = future.result(timeout=5)
        failed = asyncio.run_coroutine_threadsafe(fail(), loop)
        outcome["error"] = failed.exception(timeout=5)
        loop.call_soon_threadsafe(loop.stop)

    thread = threading.Thread(target=submitter)
    loop.call_soon(thread.start)
    loop.call_later(10, loop.stop)
    loop.run_forever()
    thread.join()
    assert outcome["result"] == (42, loop)
    assert type(outcome["error"]) is IndexError


def test_to_thread_runs_in_worker_with_context(loop):
    """asyncio.to_thread runs in another thread and sees the caller's context."""

    def work(suffix):
        return f"{LABEL.get()}-{suffix}", threading.get_ident()

    async def main():
        LABEL.set("ctx")
        return await asyncio.to_thread(work, "thread")

    value, worker = loop.run_until_complete(main())
    assert value == "ctx-thread"
    assert worker != threading.get_ident()
    loop.run_until_complete(loop.shutdown_default_executor())
