"""``asyncio.gather`` semantics on the loop under test."""

from __future__ import annotations

import asyncio

import pytest


def test_results_follow_argument_order_not_completion_order(loop):
    """Results are returned in argument order although completion is reversed."""
    finished: list[str] = []

    async def work(name: str, delay: float) -> str:
        await asyncio.sleep(delay)
        finished.append(name)
        return name

    async def main():
        return await asyncio.gather(work("a", 0.03), work("b", 0.02), work("c", 0.01))

    assert loop.run_until_complete(main()) == ["a", "b", "c"]
    assert finished == ["c", "b", "a"]


def test_futures_resolved_in_reverse_order(loop):
    """Plain futures resolved last-to-first still give argument-order results."""

    async def main():
        futures = [loop.create_future() for _ in range(5)]
        for index, future in reversed(list(enumerate(futures))):
            loop.call_soon(future.set_result, index * 10)
        return await asyncio.gather(*futures)

    assert loop.run_until_complete(main()) == [0, 10, 20, 30, 40]


def test_same_awaitable_twice_gives_same_result(loop):
    """Passing one future twice yields its result in both positions."""

    async def main():
        future = loop.create_future()
        loop.call_later(0.01, future.set_result, "shared")
        return await asyncio.gather(future, future)

    assert loop.run_until_complete(main()) == ["shared", "shared"]


def test_empty_gather_returns_empty_list(loop):
    """``gather()`` with no arguments completes with ``[]``."""

    async def main():
        return await asyncio.gather()

    assert loop.run_until_complete(main()) == []


def test_first_exception_propagates_while_others_keep_running(loop):
    """The first error reaches the awaiter at once; siblings are not cancelled."""
    events: list[str] = []

    async def fail():
        await asyncio.sleep(0.01)
        raise ValueError("first failure")

    async def slow():
        await asyncio.sleep(0.1)
        events.append("slow finished")
        return "slow result"

    async def main():
        slow_task = asyncio.create_task(slow())
        gathering = asyncio.gather(fail(), slow_task)
        start = loop.time()
        with pytest.raises(ValueError, match="^first failure$"):
            await gathering
        waited = loop.time() - start
        events.append("caught")
        assert waited < 0.08, f"error surfaced only after {waited:.3f} s"
        assert not slow_task.done()
        assert gathering.done() and not gathering.cancelled()
        assert str(gathering.exception()) == "first failure"
        assert await slow_task == "slow result"

    loop.run_until_complete(main())
    assert events == ["caught", "slow finished"]


def test_return_exceptions_collects_errors_in_place(loop):
    """With ``return_exceptions=True`` errors and cancellations become results."""

    async def ok():
        await asyncio.sleep(0.01)
        return "ok"

    async def fail():
        await asyncio.sleep(0)
        raise KeyError("missing")

    async def main():
        cancelled_child = asyncio.create_task(asyncio.sleep(10))
        loop.call_soon(cancelled_child.cancel)
        return await asyncio.gather(ok(), fail(), cancelled_child, return_exceptions=True)

    results = loop.run_until_complete(main())
    assert results[0] == "ok"
    assert type(results[1]) is KeyError and results[1].args == ("missing",)
    assert isinstance(results[2], asyncio.CancelledError)
    assert len(results) == 3


def test_cancelling_gather_cancels_children(loop):
    """Cancelling the gather future cancels every still-running child."""
    seen: list[str] = []

    async def child(name: str):
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            seen.append(f"{name} cancelled")
            raise

    async def main():
        first = asyncio.create_task(child("first"))
        second = asyncio.create_task(child("second"))
        gathering = asyncio.gather(first, second)
        await asyncio.sleep(0.01)
        assert gathering.cancel() is True
        with pytest.raises(asyncio.CancelledError):
            await gathering
        assert gathering.done()
        assert first.cancelled() and second.cancelled()

    loop.run_until_complete(main())
    assert sorted(seen) == ["first cancelled", "second cancelled"]


def test_cancelled_child_cancels_gather_without_return_exceptions(loop):
    """A child cancelled from outside makes the gather raise CancelledError."""

    async def main():
        child = asyncio.create_task(asyncio.sleep(10))
        other = asyncio.create_task(asyncio.sleep(0.01, "other"))
        gathering = asyncio.gather(child, other)
        loop.call_soon(child.cancel)
        with pytest.raises(asyncio.CancelledError):
            await gathering
        assert await other == "other"

    loop.run_until_complete(main())
