"""Each handle made without ``context=`` runs in its own copy of the context current at
scheduling time, as asyncio's ``copy_context()`` per handle: ferroloop reuses the Context object
of a recycled handle when nothing else can reach it (src/interop/context_reuse.rs), and none of
that may show. Values are recorded inside callbacks and asserted after the run."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import sys
import sysconfig
import threading
import weakref

import pytest

var = contextvars.ContextVar("var", default="unset")


class Box:
    """A weak-referenceable value."""


def spin(loop, iterations: int) -> None:
    """Runs `iterations` iterations of `loop` (one run_forever each)."""
    for _ in range(iterations):
        loop.call_soon(loop.stop)
        loop.run_forever()


def test_snapshot_at_scheduling_time(loop):
    """A callback sees the values of its scheduler's context when call_soon ran, not later
    ones (chains reuse the same context objects)."""
    seen = []

    def step(i):
        seen.append(var.get())
        if i < 50:
            var.set(f"before-{i}")
            loop.call_soon(step, i + 1)
            var.set(f"after-{i}")
        else:
            loop.stop()

    loop.call_soon(step, 0)
    loop.run_forever()
    assert seen == ["unset"] + [f"before-{i}" for i in range(50)]


def test_siblings_do_not_see_each_other(loop):
    """A variable set by one callback is never seen by another callback, whichever handle or
    context object it ran in before."""
    seen = []

    def writer(i):
        seen.append(("w", i, var.get()))
        var.set(f"w{i}")

    def reader(i):
        seen.append(("r", i, var.get()))

    for _ in range(3):
        for i in range(20):
            loop.call_soon(writer, i)
            loop.call_soon(reader, i)
        loop.call_soon(loop.stop)
        loop.run_forever()
    assert all(value == "unset" for _, _, value in seen)
    assert len(seen) == 3 * 40


def test_kept_context_is_not_reused(loop):
    """A context obtained with get_context() keeps the values its callback set, however many
    handles run after it."""
    seen = []

    def setter():
        var.set("mine")

    def later(i):
        seen.append(var.get())
        var.set(f"later-{i}")

    handle = loop.call_soon(setter)
    context = handle._context  # (get_context() is 3.12+)
    del handle
    for i in range(30):
        loop.call_soon(later, i)
    loop.call_soon(loop.stop)
    loop.run_forever()
    for i in range(30):
        loop.call_soon(later, i)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert context[var] == "mine"
    assert seen == ["unset"] * 60


def test_copy_context_inside_callback(loop):
    """copy_context() inside a callback sees the callback's own values, and keeps them."""
    copies = []

    def first():
        var.set("first")
        copies.append(contextvars.copy_context())
        loop.call_soon(second)
        var.set("first-after")

    def second():
        copies.append(contextvars.copy_context())
        var.set("second")

    loop.call_soon(first)
    spin(loop, 3)
    assert [c[var] for c in copies] == ["first", "first"]


def test_context_run_inside_callback(loop):
    """call_soon inside Context.run copies that context, not the handle's."""
    seen = []

    def check():
        seen.append(var.get())

    def outer():
        var.set("outer")
        inner = contextvars.copy_context()
        inner.run(var.set, "inner")
        inner.run(loop.call_soon, check)
        loop.call_soon(check)

    loop.call_soon(outer)
    loop.call_soon(loop.call_soon, loop.stop)
    loop.run_forever()
    assert seen == ["inner", "outer"]


def test_weakly_referenced_context_dies(loop):
    """A handle's context that only a weak reference points to dies once the handle ran, as
    asyncio's does (it is not kept for reuse)."""
    handle = loop.call_soon(lambda: None)
    ref = weakref.ref(handle._context)  # (get_context() is 3.12+)
    del handle
    gc.disable()
    try:
        spin(loop, 3)
        # More callbacks, which may take the recycled handle.
        for _ in range(5):
            loop.call_soon(lambda: None)
        spin(loop, 2)
    finally:
        gc.enable()
    assert ref() is None


def test_values_are_released_with_the_handle(loop):
    """A value set in a callback is released once its handle is gone (no parked context keeps
    it), as on asyncio."""
    refs = []
    alive = []

    def first():
        loop.call_soon(second)
        box = Box()
        refs.append(weakref.ref(box))
        var.set(box)

    def second():
        loop.call_soon(third)

    def third():
        alive.append(refs[0]() is not None)
        loop.stop()

    gc.disable()
    try:
        loop.call_soon(first)
        loop.run_forever()
    finally:
        gc.enable()
    assert alive == [False]


def test_token_keeps_its_context(loop):
    """A Token holds the context it was made in: reset() in another callback, on a handle the
    loop may have recycled meanwhile, still fails as on asyncio."""
    tokens = []
    errors = []

    def first():
        tokens.append(var.set("first"))
        loop.call_soon(middle)

    def middle():
        loop.call_soon(last)

    def last():
        try:
            var.reset(tokens[0])
        except ValueError as exc:
            errors.append(str(exc))
        loop.stop()

    loop.call_soon(first)
    loop.run_forever()
    assert len(errors) == 1 and "different Context" in errors[0]


def test_call_later_copies_too(loop):
    """Timers take the same copy at scheduling time."""
    seen = []

    def step(i):
        seen.append(var.get())
        if i < 20:
            var.set(f"t{i}")
            loop.call_later(0, step, i + 1)
            var.set("changed")
        else:
            loop.stop()

    loop.call_soon(step, 0)
    loop.run_forever()
    assert seen == ["unset"] + [f"t{i}" for i in range(20)]


def test_threadsafe_copies_the_posting_thread(loop):
    """call_soon_threadsafe from another thread copies that thread's context."""
    seen = []

    def post():
        var.set("thread")
        loop.call_soon_threadsafe(lambda: seen.append(var.get()))
        loop.call_soon_threadsafe(loop.stop)

    def start():
        var.set("loop")
        threading.Thread(target=post).start()

    loop.call_soon(start)
    loop.run_forever()
    assert seen == ["thread"]


BURST = 5000  # more posts than the loop keeps spare handles (1,024): new handles


def test_burst_from_a_thread_sees_each_posts_values(loop):
    """A burst of call_soon_threadsafe posts larger than the spare-handle pool (handles made
    new, which keep only the posting thread's mapping until they run): each callback sees
    the value set before its post, none sees another's set, and they run in posting order."""
    seen = []

    def callback(i):
        seen.append((i, var.get()))
        var.set(f"leak-{i}")

    def post():
        for i in range(BURST):
            var.set(f"post-{i}")
            loop.call_soon_threadsafe(callback, i)
        loop.call_soon_threadsafe(loop.stop)

    for _ in range(2):  # the second burst meets recycled handles and parked contexts
        seen.clear()
        thread = threading.Thread(target=post)
        thread.start()
        thread.join()
        loop.run_forever()
        assert seen == [(i, f"post-{i}") for i in range(BURST)]


def test_burst_context_identity_and_values(loop):
    """A handle of a large burst that someone keeps has one Context for its life: the same
    object before and after it runs, holding the value set before the post, then the value
    its callback set; the others' values do not show in it."""
    kept = {}
    seen = []

    def callback(i):
        seen.append(var.get())
        var.set(f"set-{i}")

    def schedule():
        for i in range(BURST):
            var.set(f"post-{i}")
            handle = loop.call_soon(callback, i)
            if i % 1000 == 7:
                kept[i] = handle
        var.set("after")

    outer = contextvars.copy_context()  # the test's own context stays as it was
    outer.run(schedule)
    before = {i: h._context for i, h in kept.items()}  # (get_context() is 3.12+)
    values_before = {i: ctx[var] for i, ctx in before.items()}
    loop.call_soon(loop.stop)
    loop.run_forever()
    after = {i: h._context for i, h in kept.items()}
    assert seen == [f"post-{i}" for i in range(BURST)]
    assert values_before == {i: f"post-{i}" for i in kept}
    assert all(after[i] is before[i] for i in kept)
    assert {i: ctx[var] for i, ctx in after.items()} == {i: f"set-{i}" for i in kept}
    assert outer[var] == "after"


def test_burst_values_are_released_with_their_handles(loop):
    """The values a burst's handles captured are released once the handles ran (nothing
    keeps the mappings of handles made new and then let go)."""
    refs = []

    def post():
        for _ in range(BURST):
            box = Box()
            refs.append(weakref.ref(box))
            var.set(box)
            loop.call_soon_threadsafe(lambda: None)
        var.set(None)
        loop.call_soon_threadsafe(loop.stop)

    thread = threading.Thread(target=post)
    thread.start()
    thread.join()
    loop.run_forever()
    spin(loop, 2)
    gc.collect()
    assert sum(ref() is not None for ref in refs) == 0


def test_explicit_context_only_held_by_the_handle(loop):
    """A context given with context= and then dropped by the caller is the handle's alone:
    values set in it do not leak into later copies."""
    seen = []

    def setter():
        var.set("explicit-set")

    def reader():
        seen.append(var.get())

    for _ in range(10):
        loop.call_soon(setter, context=contextvars.copy_context())
        loop.call_soon(reader)
        spin(loop, 1)
    assert seen == ["unset"] * 10


def test_tasks_keep_their_contexts(loop):
    """Tasks interleaved with plain callbacks keep their own context."""
    seen = []

    async def worker(name):
        var.set(name)
        for _ in range(5):
            loop.call_soon(lambda: var.set("callback"))
            await asyncio.sleep(0)
            seen.append((name, var.get()))

    async def main():
        await asyncio.gather(worker("a"), worker("b"))

    loop.run_until_complete(main())
    assert sorted(seen) == sorted([("a", "a")] * 5 + [("b", "b")] * 5)


@pytest.mark.ferroloop_only
def test_reuse_is_on_for_this_python():
    """The layout check passes on the CPython versions the project supports (3.11-3.15, GIL
    builds): otherwise the reuse silently stays off."""
    from ferroloop import _ferroloop

    plain_build = not sysconfig.get_config_var("Py_GIL_DISABLED") and not hasattr(sys, "getobjects")
    supported = (3, 11) <= sys.version_info < (3, 16)
    if sys.implementation.name == "cpython" and supported and plain_build:
        assert _ferroloop._context_reuse is True


@pytest.mark.ferroloop_only
def test_direct_switch_is_on_up_to_3_13():
    """Entering callbacks' contexts without the C API is on where it is verified (3.11-3.13,
    GIL builds) and off from 3.14 on (context watchers need the C API)."""
    from ferroloop import _ferroloop

    plain_build = not sysconfig.get_config_var("Py_GIL_DISABLED") and not hasattr(sys, "getobjects")
    if sys.implementation.name == "cpython" and plain_build:
        assert _ferroloop._context_switch is ((3, 11) <= sys.version_info < (3, 14))


def test_context_var_cache_follows_callback_contexts(loop):
    """`ContextVar.get` caches its last lookup per thread and context version: each callback's
    own context must be seen, also when callbacks with different values alternate in one
    batch, and the loop's own context is back once they ran (both loops)."""
    var = contextvars.ContextVar("switch_var", default="outer")
    seen = []
    contexts = []
    for value in ("a", "b", "c"):
        ctx = contextvars.copy_context()
        ctx.run(var.set, value)
        contexts.append(ctx)

    def record(tag):
        seen.append((tag, var.get()))

    for round_ in range(3):
        for ctx in contexts:
            loop.call_soon(record, round_, context=ctx)
        loop.call_soon(record, round_)
    loop.call_soon(loop.stop)
    loop.run_forever()
    after = var.get()
    assert seen == [(r, v) for r in range(3) for v in ("a", "b", "c", "outer")]
    assert after == "outer"
