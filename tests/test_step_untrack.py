"""asyncio's C task schedules every step as `call_soon(<step wrapper>, context=...)`.
ferroloop keeps that wrapper out of the collector's lists while its handle holds the only
reference (src/interop/step_untrack.rs): a busy loop's full collections then do not walk one
wrapper per suspended task. None of that may show: cycles through a step callback that Python
code got hold of are still collected, and a handle's `_callback` is a tracked object."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest


class Holder:
    """A weak-referenceable box kept in the cycle under test."""


def step_wrapper_count() -> int:
    """How many step wrappers the collector tracks now."""
    return sum(type(o).__name__ == "TaskStepMethWrapper" for o in gc.get_objects())


def test_queued_steps_are_not_walked_by_collections(loop, loop_kind):
    """While 200 tasks wait in the ready queue, their step wrappers are untracked on ferroloop
    (stock asyncio tracks them, and its Handles); the tasks still run to the end."""
    counts = []
    done = []

    async def sleeper(i):
        for _ in range(3):
            await asyncio.sleep(0)
        done.append(i)

    async def main():
        tasks = [loop.create_task(sleeper(i)) for i in range(200)]
        await asyncio.sleep(0)  # every task took its first step and queued its next
        counts.append(step_wrapper_count())
        await asyncio.gather(*tasks)

    loop.run_until_complete(main())
    assert sorted(done) == list(range(200))
    if loop_kind == "ferroloop":
        assert counts[0] == 0
    else:
        assert counts[0] >= 200


def test_step_callback_kept_by_python_code_is_still_collected(loop):
    """A `call_soon` override that keeps the step callback in a cycle through a pending task:
    once everything is dropped, the collector frees the cycle (the callback was never taken
    out of its lists)."""
    kept = []
    original = loop.call_soon

    def call_soon(callback, *args, context=None):
        kept.append(callback)
        return original(callback, *args, context=context)

    loop.call_soon = call_soon
    loop.set_exception_handler(lambda loop, context: None)  # "Task was destroyed but pending"
    holder_ref = []

    async def body(store):
        holder = Holder()
        holder.store = store  # frame -> holder -> store -> step callbacks -> task -> frame
        holder_ref.append(weakref.ref(holder))
        await asyncio.sleep(0)
        await loop.create_future()  # never completes

    async def main():
        store = []
        task = loop.create_task(body(store))
        for _ in range(3):
            await asyncio.sleep(0)
        store.extend(cb for cb in kept if getattr(cb, "__self__", None) is task)
        kept.clear()
        assert store, "the task's step callbacks went through call_soon"

    loop.run_until_complete(main())
    del loop.call_soon
    kept.clear()
    for _ in range(3):
        gc.collect()
    assert holder_ref[0]() is None


@pytest.mark.parametrize("debug", [False, True])
def test_handle_callback_is_tracked(loop, debug):
    """Whatever a handle gives Python code is visible to the collector."""
    loop.set_debug(debug)
    seen = []

    async def main():
        handle = loop.call_soon(lambda: None)
        seen.append(gc.is_tracked(handle._callback))

    loop.run_until_complete(main())
    assert seen == [True]
