"""Task interleaving, sleeps and timeouts on the loop under test."""

from __future__ import annotations

import asyncio
import time

import pytest


def test_sleep_zero_interleaves_tasks_round_robin(loop):
    """``await asyncio.sleep(0)`` yields exactly one turn: tasks alternate."""
    order: list[str] = []

    async def worker(name: str):
        for i in range(3):
            order.append(f"{name}{i}")
            await asyncio.sleep(0)

    async def main():
        await asyncio.gather(worker("a"), worker("b"), worker("c"))

    loop.run_until_complete(main())
    assert order == ["a0", "b0", "c0", "a1", "b1", "c1", "a2", "b2", "c2"]


def test_sleep_duration_and_result(loop):
    """``asyncio.sleep(d, result)`` waits about ``d`` seconds and returns ``result``."""

    async def main():
        start = time.monotonic()
        value = await asyncio.sleep(0.05, "slept")
        return value, time.monotonic() - start

    value, elapsed = loop.run_until_complete(main())
    assert value == "slept"
    assert 0.05 <= elapsed < 0.09


def test_timeout_context_manager(loop):
    """``asyncio.timeout`` cancels the block and raises TimeoutError on time."""
    events: list[str] = []

    async def main():
        start = loop.time()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.03):
                try:
                    await asyncio.sleep(10)
                except asyncio.CancelledError:
                    events.append("inner cancelled")
                    raise
        return loop.time() - start

    elapsed = loop.run_until_complete(main())
    assert events == ["inner cancelled"]
    assert 0.03 <= elapsed < 0.08


def test_timeout_reschedule(loop):
    """A timeout moved later with ``reschedule`` fires at the new deadline."""

    async def main():
        start = loop.time()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01) as deadline:
                assert deadline.when() == pytest.approx(start + 0.01, abs=0.005)
                deadline.reschedule(loop.time() + 0.05)
                await asyncio.sleep(10)
        return loop.time() - start

    elapsed = loop.run_until_complete(main())
    assert 0.05 <= elapsed < 0.1


def test_wait_for(loop):
    """``wait_for`` returns in time or raises TimeoutError after cancelling the awaitable."""

    async def main():
        assert await asyncio.wait_for(asyncio.sleep(0.01, "fast"), 1) == "fast"
        slow = asyncio.create_task(asyncio.sleep(10))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(slow, 0.02)
        assert slow.cancelled()

    loop.run_until_complete(main())


def test_task_cancel_message_and_uncancel(loop):
    """Cancelling a task delivers the message; cancelling() counts requests."""

    async def sleeper():
        await asyncio.sleep(10)

    async def main():
        task = asyncio.create_task(sleeper())
        await asyncio.sleep(0)
        assert task.cancel("stop now") is True
        assert task.cancelling() == 1
        with pytest.raises(asyncio.CancelledError) as info:
            await task
        assert info.value.args == ("stop now",)
        assert task.cancelled()
        assert task.cancel() is False

    loop.run_until_complete(main())


def test_done_callbacks_run_via_loop_in_order(loop):
    """Future done-callbacks run in registration order, after set_result returns."""
    order: list[str] = []

    async def main():
        future = loop.create_future()
        future.add_done_callback(lambda f: order.append(f"first {f.result()}"))
        future.add_done_callback(lambda f: order.append(f"second {f.result()}"))
        future.set_result("x")
        order.append("after set_result")
        await asyncio.sleep(0)

    loop.run_until_complete(main())
    assert order == ["after set_result", "first x", "second x"]
