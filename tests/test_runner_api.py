"""asyncio.Runner over the loop under test, Future sharing, and ferroloop's
top-level entry points (``run``, ``install``, ``EventLoopPolicy``)."""

from __future__ import annotations

import asyncio
import contextvars
import sys

import pytest

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("REQUEST_ID", default="unset")


@pytest.fixture
def runner(new_loop):
    """An ``asyncio.Runner`` whose loop comes from the implementation under test."""
    with asyncio.Runner(loop_factory=new_loop) as runner:
        yield runner


async def _running_loop():
    return asyncio.get_running_loop()


def test_runner_shares_one_loop_across_runs(runner):
    """Successive ``Runner.run`` calls run on the same, still-open loop."""
    first = runner.run(_running_loop())
    second = runner.run(_running_loop())
    assert first is second is runner.get_loop()
    assert not first.is_closed()
    assert not first.is_running()


def test_runner_keeps_background_tasks_between_runs(runner):
    """A task started in one ``run`` can be awaited by the next one."""
    holder: dict[str, asyncio.Task] = {}

    async def start():
        holder["task"] = asyncio.create_task(asyncio.sleep(0.02, "background result"))

    async def finish():
        return await holder["task"]

    runner.run(start())
    assert not holder["task"].done()
    assert runner.run(finish()) == "background result"


def test_runner_closes_loop_on_exit(new_loop):
    """Leaving the Runner closes its loop."""
    with asyncio.Runner(loop_factory=new_loop) as runner:
        loop = runner.run(_running_loop())
    assert loop.is_closed()


def test_runner_honours_explicit_context(runner):
    """``run(coro, context=ctx)`` runs in ``ctx`` and writes back into it."""
    ctx = contextvars.copy_context()
    ctx.run(REQUEST_ID.set, "from-context")

    async def read_and_write():
        seen = REQUEST_ID.get()
        REQUEST_ID.set("written-in-task")
        return seen

    assert runner.run(read_and_write(), context=ctx) == "from-context"
    assert ctx[REQUEST_ID] == "written-in-task"
    assert REQUEST_ID.get() == "unset"


def test_runner_default_context_persists_between_runs(runner):
    """Without ``context=`` all runs share the Runner's own context."""

    async def write():
        REQUEST_ID.set("first run")

    async def read():
        return REQUEST_ID.get()

    runner.run(write())
    assert runner.run(read()) == "first run"
    assert REQUEST_ID.get() == "unset"


def test_runner_rejects_non_coroutine(runner):
    """``Runner.run`` insists on a coroutine (3.14+: or an awaitable), in that version's words."""
    if sys.version_info >= (3, 14):
        error = pytest.raises(
            TypeError, match=r"^An asyncio.Future, a coroutine or an awaitable is required$"
        )
    else:
        error = pytest.raises(ValueError, match=r"^a coroutine was expected, got 42$")
    with error:
        runner.run(42)


def test_future_awaited_many_times_gives_same_result(loop):
    """Every awaiter of one future gets the identical result object."""
    payload = object()

    async def waiter(future):
        return await future

    async def main():
        future = loop.create_future()
        waiters = [asyncio.create_task(waiter(future)) for _ in range(10)]
        await asyncio.sleep(0)
        future.set_result(payload)
        results = await asyncio.gather(*waiters)
        results.append(await future)
        results.append(await future)
        return results

    results = loop.run_until_complete(main())
    assert len(results) == 12
    assert all(result is payload for result in results)


def test_future_exception_reaches_every_awaiter(loop):
    """Every awaiter of a failed future sees the same exception instance."""
    error = LookupError("shared failure")

    async def waiter(future):
        try:
            await future
        except LookupError as exc:
            return exc

    async def main():
        future = loop.create_future()
        waiters = [asyncio.create_task(waiter(future)) for _ in range(5)]
        loop.call_later(0.01, future.set_exception, error)
        return await asyncio.gather(*waiters)

    assert all(result is error for result in loop.run_until_complete(main()))


@pytest.mark.ferroloop_only
def test_ferroloop_run_returns_result_on_ferroloop_loop():
    """``ferroloop.run`` runs the coroutine on a ferroloop loop and returns its result."""
    import ferroloop

    async def main(value):
        loop = asyncio.get_running_loop()
        return value, type(loop), loop.get_debug()

    value, loop_type, debug = ferroloop.run(main("result"))
    assert value == "result"
    assert loop_type is ferroloop.EventLoop
    assert debug is False


@pytest.mark.ferroloop_only
def test_ferroloop_run_debug_flag():
    """``ferroloop.run(coro, debug=True)`` enables debug mode on the loop."""
    import ferroloop

    async def main():
        return asyncio.get_running_loop().get_debug()

    assert ferroloop.run(main(), debug=True) is True


@pytest.mark.ferroloop_only
def test_ferroloop_run_propagates_exception():
    """An exception in the main coroutine propagates out of ``ferroloop.run``."""
    import ferroloop

    async def main():
        await asyncio.sleep(0)
        raise ZeroDivisionError("from ferroloop.run")

    with pytest.raises(ZeroDivisionError, match="^from ferroloop.run$"):
        ferroloop.run(main())


@pytest.mark.ferroloop_only
def test_event_loop_class_contract():
    """``ferroloop.EventLoop`` is an AbstractEventLoop; new_event_loop builds one."""
    import ferroloop

    assert issubclass(ferroloop.EventLoop, asyncio.AbstractEventLoop)
    loop = ferroloop.new_event_loop()
    try:
        assert type(loop) is ferroloop.EventLoop
        assert isinstance(loop, asyncio.AbstractEventLoop)
    finally:
        loop.close()


@pytest.mark.ferroloop_only
def test_event_loop_policy_makes_asyncio_run_use_ferroloop(restore_policy):
    """With ``ferroloop.EventLoopPolicy`` installed, asyncio.run uses ferroloop."""
    import ferroloop

    assert issubclass(ferroloop.EventLoopPolicy, asyncio.DefaultEventLoopPolicy)
    policy = ferroloop.EventLoopPolicy()
    loop = policy.new_event_loop()
    try:
        assert type(loop) is ferroloop.EventLoop
    finally:
        loop.close()

    asyncio.set_event_loop_policy(policy)

    async def main():
        return type(asyncio.get_running_loop())

    assert asyncio.run(main()) is ferroloop.EventLoop


@pytest.mark.ferroloop_only
def test_install_sets_the_policy(restore_policy):
    """``ferroloop.install()`` makes ferroloop the loop behind asyncio."""
    import ferroloop

    ferroloop.install()
    assert isinstance(asyncio.get_event_loop_policy(), ferroloop.EventLoopPolicy)
    loop = asyncio.new_event_loop()
    try:
        assert type(loop) is ferroloop.EventLoop
    finally:
        loop.close()

    async def main():
        await asyncio.sleep(0.001)
        return type(asyncio.get_running_loop())

    assert asyncio.run(main()) is ferroloop.EventLoop
