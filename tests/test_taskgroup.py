"""``asyncio.TaskGroup`` semantics on the loop under test."""

from __future__ import annotations

import asyncio

import pytest


def test_waits_for_all_tasks(loop):
    """Leaving the ``async with`` block waits for every task in the group."""
    finished: list[int] = []

    async def work(i: int) -> int:
        await asyncio.sleep(i / 100)
        finished.append(i)
        return i * i

    async def main():
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(work(i)) for i in (3, 1, 2)]
            assert finished == []
        assert all(task.done() for task in tasks)
        return [task.result() for task in tasks]

    assert loop.run_until_complete(main()) == [9, 1, 4]
    assert finished == [1, 2, 3]


def test_accepts_tasks_added_while_waiting(loop):
    """A task may add tasks to the group while ``__aexit__`` is waiting."""
    events: list[str] = []

    async def grandchild():
        await asyncio.sleep(0.03)
        events.append("grandchild done")

    async def spawner(group: asyncio.TaskGroup):
        await asyncio.sleep(0.01)
        group.create_task(grandchild(), name="late")
        events.append("spawned")

    async def main():
        async with asyncio.TaskGroup() as group:
            group.create_task(spawner(group))
            events.append("body done")
        events.append("group exited")

    loop.run_until_complete(main())
    assert events == ["body done", "spawned", "grandchild done", "group exited"]


def test_failure_cancels_siblings_and_raises_exception_group(loop):
    """One failing task cancels the others and surfaces as an ExceptionGroup."""
    events: list[str] = []

    async def failing():
        await asyncio.sleep(0.01)
        raise ValueError("task failed")

    async def sibling():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            events.append("sibling cancelled")
            raise

    async def main():
        start = loop.time()
        with pytest.raises(ExceptionGroup) as info:
            async with asyncio.TaskGroup() as group:
                group.create_task(failing())
                sibling_task = group.create_task(sibling())
            events.append("not reached")
        assert loop.time() - start < 1.0
        assert sibling_task.cancelled()
        return info.value

    group_error = loop.run_until_complete(main())
    assert events == ["sibling cancelled"]
    assert str(group_error) == "unhandled errors in a TaskGroup (1 sub-exception)"
    assert len(group_error.exceptions) == 1
    assert type(group_error.exceptions[0]) is ValueError
    assert str(group_error.exceptions[0]) == "task failed"


def test_failure_interrupts_the_group_body(loop):
    """A task failure cancels the body of the ``async with`` block too."""
    events: list[str] = []

    async def failing():
        raise RuntimeError("early")

    async def main():
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(failing())
                try:
                    await asyncio.sleep(10)
                except asyncio.CancelledError:
                    events.append("body cancelled")
                    raise
        except* RuntimeError as caught:
            events.append(f"caught {[str(e) for e in caught.exceptions]}")

    loop.run_until_complete(main())
    assert events == ["body cancelled", "caught ['early']"]


def test_refuses_tasks_after_exit(loop):
    """``create_task`` on a finished group raises RuntimeError."""

    async def noop():
        pass

    async def main():
        async with asyncio.TaskGroup() as group:
            group.create_task(noop())
        coro = noop()
        try:
            with pytest.raises(RuntimeError, match=r"^TaskGroup <TaskGroup.*> is finished$"):
                group.create_task(coro)
        finally:
            coro.close()

    loop.run_until_complete(main())


def test_refuses_tasks_before_entering(loop):
    """``create_task`` on a group that was never entered raises RuntimeError."""

    async def noop():
        pass

    async def main():
        group = asyncio.TaskGroup()
        coro = noop()
        try:
            with pytest.raises(RuntimeError, match=r"has not been entered$"):
                group.create_task(coro)
        finally:
            coro.close()

    loop.run_until_complete(main())
