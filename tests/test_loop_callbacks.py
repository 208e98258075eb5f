"""call_soon / call_later / call_at scheduling, handles and the loop clock."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import random
import sys
import time
import weakref

import pytest
from support import WeakReferable

COLOUR: contextvars.ContextVar[str] = contextvars.ContextVar("COLOUR", default="none")


def _context_of(handle, loop_kind: str) -> contextvars.Context:
    """The context a handle will run its callback in.

    ferroloop handles must offer ``get_context()`` (Python 3.12 API); stock
    3.11 handles only have the private ``_context`` attribute.
    """
    if loop_kind == "asyncio" and not hasattr(handle, "get_context"):
        return handle._context
    return handle.get_context()


def _run_then_stop(loop, delay: float = 0.0) -> None:
    """Run ``loop`` until a stop scheduled ``delay`` seconds from now."""
    if delay:
        loop.call_later(delay, loop.stop)
    else:
        loop.call_soon(loop.stop)
    loop.run_forever()


def test_call_soon_is_fifo(loop):
    """Callbacks run in the order they were scheduled, with their arguments."""
    calls: list[tuple] = []
    for i in range(100):
        loop.call_soon(calls.append, (i, f"arg{i}"))
    _run_then_stop(loop)
    assert calls == [(i, f"arg{i}") for i in range(100)]


def test_call_soon_passes_positional_arguments(loop):
    """Extra positional arguments reach the callback unchanged."""
    received: list[tuple] = []
    loop.call_soon(lambda *args: received.append(args), 1, "two", None)
    _run_then_stop(loop)
    assert received == [(1, "two", None)]


def test_callbacks_scheduled_by_callbacks_run_after_current_batch(loop):
    """A callback scheduled from a callback runs after the already-queued ones."""
    order: list[str] = []

    def first():
        order.append("first")
        loop.call_soon(order.append, "scheduled by first")

    loop.call_soon(first)
    loop.call_soon(order.append, "second")
    loop.call_soon(order.append, "third")
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert order == ["first", "second", "third", "scheduled by first"]


def test_stop_in_a_callback_chain_ends_that_iteration(loop):
    """In a chain of callbacks (one per iteration, nothing else to do), stop() ends the run
    after the iteration it was called in; the next link waits for the next run."""
    ran: list[int] = []

    def step(k: int) -> None:
        ran.append(k)
        if k in (5, 9):
            loop.stop()
        if k < 9:
            loop.call_soon(step, k + 1)

    loop.call_soon(step, 0)
    loop.run_forever()
    assert ran == [0, 1, 2, 3, 4, 5]
    loop.run_forever()
    assert ran == list(range(10))


def test_timer_and_reader_added_mid_chain_are_served_during_the_chain(loop):
    """A chain of callbacks that adds a timer and a ready descriptor on the way does not
    starve them: both run within a few iterations, while the chain goes on."""
    import socket

    r, w = socket.socketpair()
    seen: dict[str, int] = {}
    steps = [0]

    def on_readable() -> None:
        seen.setdefault("reader", steps[0])
        r.recv(16)
        loop.remove_reader(r.fileno())

    def step() -> None:
        steps[0] += 1
        if steps[0] == 10:
            loop.call_later(0, lambda: seen.setdefault("timer", steps[0]))
            w.send(b"x")
            loop.add_reader(r.fileno(), on_readable)
        if steps[0] < 200:
            loop.call_soon(step)
        else:
            loop.stop()

    try:
        loop.call_soon(step)
        loop.run_forever()
    finally:
        r.close()
        w.close()
    assert steps[0] == 200
    assert 10 <= seen["timer"] < 20
    assert 10 <= seen["reader"] < 20


def test_call_later_runs_in_deadline_order(loop):
    """Timers fire in ``when`` order, not in scheduling order."""
    order: list[str] = []
    loop.call_later(0.03, order.append, "30ms")
    loop.call_later(0.01, order.append, "10ms")
    loop.call_later(0.02, order.append, "20ms")
    loop.call_later(0, order.append, "0ms")
    loop.call_soon(order.append, "soon")
    _run_then_stop(loop, 0.05)
    assert order == ["soon", "0ms", "10ms", "20ms", "30ms"]


def test_call_at_uses_loop_time(loop):
    """``call_at`` deadlines are in ``loop.time()`` units, interleaving with call_later."""
    order: list[str] = []
    now = loop.time()
    loop.call_at(now + 0.02, order.append, "at+20ms")
    loop.call_later(0.01, order.append, "later 10ms")
    loop.call_at(now + 0.03, order.append, "at+30ms")
    loop.call_at(now - 5, order.append, "at past")
    _run_then_stop(loop, 0.05)
    assert order == ["at past", "later 10ms", "at+20ms", "at+30ms"]


def test_call_at_keeps_an_int_deadline(loop):
    """A deadline given to ``call_at`` as an int comes back as that int (``when()``,
    ``_when``, the repr), as asyncio's TimerHandle keeps it (aiohttp's TimeoutHandle rounds
    deadlines up to whole seconds and checks the type); a float one, or call_later's, stays a
    float. The int timer still fires in order."""
    order: list[str] = []
    whole = int(loop.time()) - 1  # already due
    by_int = loop.call_at(whole, order.append, "int")
    by_float = loop.call_at(float(whole), order.append, "float")
    later = loop.call_later(0.001, order.append, "later")
    seen = (
        type(by_int.when()),
        type(by_int._when),
        by_int.when(),
        f"when={whole}" in repr(by_int),
        type(by_float.when()),
        type(later.when()),
    )
    _run_then_stop(loop, 0.02)
    assert seen == (int, int, whole, True, float, float)
    assert order == ["int", "float", "later"]


def test_time_replaced_on_the_instance_drives_the_clock(loop):
    """``mock.patch.object(loop, "time")`` moves the loop's clock, as with asyncio (whose
    loop reads it through ``self.time()``): a far timer fires once the replacement says it is
    due, ``call_later`` counts from the replacement, and removing it restores the real clock
    (aiohttp's test_keepalive_expires_on_time relies on this)."""
    from unittest import mock

    fired: list[str] = []
    seen: dict[str, object] = {}
    start = loop.time()
    loop.call_at(start + 1000, fired.append, "far")

    async def scenario():
        with mock.patch.object(loop, "time") as replaced:
            replaced.return_value = start + 1000
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            seen["fired while patched"] = list(fired)
            seen["call_later when"] = loop.call_later(5, lambda: None).when()
        seen["time after"] = loop.time()
        seen["sleep after"] = await asyncio.wait_for(asyncio.sleep(0.01, "slept"), 5)

    loop.run_until_complete(scenario())
    assert seen["fired while patched"] == ["far"]
    assert seen["call_later when"] == start + 1005
    assert seen["time after"] - start < 100
    assert seen["sleep after"] == "slept"


def test_timers_never_fire_early(loop):
    """A timer callback runs no earlier than its deadline on the monotonic clock."""
    fired: list[tuple[float, float]] = []
    for delay in (0.005, 0.015, 0.03):
        when = loop.time() + delay
        loop.call_at(when, lambda w=when: fired.append((w, time.monotonic())))
    _run_then_stop(loop, 0.05)
    assert len(fired) == 3
    for when, at in fired:
        assert at >= when - 0.001, f"fired {(when - at) * 1000:.2f} ms early"
        assert at - when < 0.02, f"fired {(at - when) * 1000:.2f} ms late"


def test_long_timer_does_not_block_short_ones(loop):
    """Scheduling a far-future timer does not delay nearer ones or stop()."""
    order: list[str] = []
    far = loop.call_later(3600, order.append, "far")
    loop.call_later(0.01, order.append, "near")
    start = time.monotonic()
    _run_then_stop(loop, 0.02)
    assert time.monotonic() - start < 0.5
    assert order == ["near"]
    far.cancel()


def test_cancelled_handles_never_run(loop):
    """Cancelled call_soon and call_later handles are skipped."""
    ran: list[str] = []
    soon = loop.call_soon(ran.append, "soon")
    later = loop.call_later(0.01, ran.append, "later")
    loop.call_soon(ran.append, "kept")
    soon.cancel()
    later.cancel()
    _run_then_stop(loop, 0.03)
    assert ran == ["kept"]


def test_handle_cancelled_by_earlier_callback_in_same_batch(loop):
    """A ready callback cancelled by an earlier one in the same iteration is skipped."""
    ran: list[str] = []
    victim: list[asyncio.Handle] = []
    loop.call_soon(lambda: victim[0].cancel())
    victim.append(loop.call_soon(ran.append, "victim"))
    loop.call_soon(ran.append, "survivor")
    _run_then_stop(loop)
    assert ran == ["survivor"]


def test_timer_cancelled_by_earlier_due_timer(loop):
    """A timer cancelled by another timer due in the same iteration is skipped."""
    ran: list[str] = []
    now = loop.time()
    victim = loop.call_at(now + 0.011, ran.append, "victim")
    loop.call_at(now + 0.010, victim.cancel)
    time.sleep(0.02)  # both timers are overdue when the loop starts
    _run_then_stop(loop, 0.01)
    assert ran == []


def test_handle_api(loop, loop_kind):
    """call_soon returns an ``asyncio.Handle`` with the documented methods."""

    def my_callback():
        pass

    handle = loop.call_soon(my_callback)
    assert isinstance(handle, asyncio.Handle)
    assert not isinstance(handle, asyncio.TimerHandle)
    assert handle.cancelled() is False
    assert isinstance(_context_of(handle, loop_kind), contextvars.Context)
    assert "my_callback" in repr(handle)
    assert repr(handle).startswith("<Handle ")
    assert handle.cancel() is None
    assert handle.cancelled() is True
    assert "cancelled" in repr(handle)
    handle.cancel()  # idempotent
    assert handle.cancelled() is True


def test_timer_handle_api(loop):
    """call_later/call_at return ``asyncio.TimerHandle`` objects with ``when()``."""

    def my_timer_callback():
        pass

    before = loop.time()
    later = loop.call_later(10, my_timer_callback)
    after = loop.time()
    assert isinstance(later, asyncio.TimerHandle)
    assert isinstance(later, asyncio.Handle)
    assert before + 10 <= later.when() <= after + 10

    when = loop.time() + 123.25
    at = loop.call_at(when, my_timer_callback)
    assert isinstance(at, asyncio.TimerHandle)
    assert at.when() == when
    assert repr(at).startswith("<TimerHandle ")
    assert "when=" in repr(at) and "my_timer_callback" in repr(at)
    assert at.cancelled() is False
    at.cancel()
    later.cancel()
    assert at.cancelled() and later.cancelled()
    assert "cancelled" in repr(at)


def test_handle_context_defaults_to_copy_of_current(loop, loop_kind):
    """Without ``context=`` the handle captures a copy of the current context."""
    token = COLOUR.set("blue")
    try:
        handle = loop.call_soon(lambda: None)
    finally:
        COLOUR.reset(token)
    assert _context_of(handle, loop_kind)[COLOUR] == "blue"
    assert COLOUR.get() == "none"


def test_explicit_context_is_used(loop, loop_kind):
    """``context=ctx`` is returned by get_context() and the callback runs in it."""
    ctx = contextvars.copy_context()
    ctx.run(COLOUR.set, "green")
    seen: list[str] = []

    def read_and_write():
        seen.append(COLOUR.get())
        COLOUR.set("red")

    soon = loop.call_soon(read_and_write, context=ctx)
    timer = loop.call_later(0.001, read_and_write, context=ctx)
    assert _context_of(soon, loop_kind) is ctx
    assert _context_of(timer, loop_kind) is ctx
    _run_then_stop(loop, 0.02)
    assert seen == ["green", "red"]
    assert ctx[COLOUR] == "red"
    assert COLOUR.get() == "none"


def test_threadsafe_handle_is_handle(loop):
    """call_soon_threadsafe also returns an ``asyncio.Handle``."""
    ran: list[int] = []
    handle = loop.call_soon_threadsafe(ran.append, 1)
    assert isinstance(handle, asyncio.Handle)
    _run_then_stop(loop)
    assert ran == [1]


def test_loop_time_is_monotonic_clock(loop):
    """``loop.time()`` reads the same clock as ``time.monotonic()``."""
    for _ in range(100):
        before = time.monotonic()
        now = loop.time()
        after = time.monotonic()
        assert before - 0.001 <= now <= after + 0.001
    first = loop.time()
    time.sleep(0.02)
    assert 0.019 <= loop.time() - first < 0.5


def test_create_future(loop):
    """``create_future`` returns an unfinished future bound to this loop."""
    future = loop.create_future()
    assert asyncio.isfuture(future)
    assert future.get_loop() is loop
    assert not future.done()
    future.set_result(5)
    assert future.result() == 5


def test_create_task_name_and_type(loop):
    """``create_task`` returns an asyncio.Task honouring ``name=``."""

    async def answer():
        return 42

    named = loop.create_task(answer(), name="the-answer")
    unnamed = loop.create_task(answer())
    assert isinstance(named, asyncio.Task)
    assert named.get_loop() is loop
    assert named.get_name() == "the-answer"
    assert unnamed.get_name().startswith("Task-")
    assert loop.run_until_complete(named) == 42
    assert loop.run_until_complete(unnamed) == 42


def test_create_task_context(loop):
    """``create_task(context=ctx)`` runs the coroutine in ``ctx``."""
    ctx = contextvars.copy_context()
    ctx.run(COLOUR.set, "violet")

    async def read_and_write():
        seen = COLOUR.get()
        COLOUR.set("changed")
        return seen

    task = loop.create_task(read_and_write(), context=ctx)
    assert loop.run_until_complete(task) == "violet"
    assert ctx[COLOUR] == "changed"
    assert COLOUR.get() == "none"


def test_task_factory(loop):
    """set/get_task_factory: the factory builds tasks; None restores the default."""
    calls: list[tuple] = []

    def factory(factory_loop, coro, **kwargs):
        calls.append((factory_loop, sorted(kwargs)))
        return asyncio.Task(coro, loop=factory_loop, **kwargs)

    assert loop.get_task_factory() is None
    loop.set_task_factory(factory)
    assert loop.get_task_factory() is factory

    async def answer():
        return "made by factory"

    task = loop.create_task(answer(), name="factory-task")
    # Python 3.14+ hands the factory every keyword of create_task; before, the name was set
    # on the factory's task afterwards.
    assert calls == [(loop, ["name"] if sys.version_info >= (3, 14) else [])]
    assert task.get_name() == "factory-task"
    assert loop.run_until_complete(task) == "made by factory"

    ctx = contextvars.copy_context()
    loop.run_until_complete(loop.create_task(answer(), context=ctx))
    assert calls[1] == (loop, ["context"])

    async def spawn_via_asyncio():
        return await asyncio.create_task(answer())

    loop.run_until_complete(spawn_via_asyncio())
    assert len(calls) == 4  # run_until_complete's wrapper task + asyncio.create_task

    loop.set_task_factory(None)
    assert loop.get_task_factory() is None
    loop.run_until_complete(loop.create_task(answer()))
    assert len(calls) == 4


def test_get_running_loop_and_current_task(loop):
    """get_running_loop/current_task/all_tasks reflect the running loop."""
    with pytest.raises(RuntimeError, match="^no running event loop$"):
        asyncio.get_running_loop()
    assert asyncio.current_task(loop) is None
    in_callback: list[object] = []

    def callback():
        in_callback.append(asyncio.get_running_loop())
        in_callback.append(asyncio.current_task())

    async def main():
        assert asyncio.get_running_loop() is loop
        me = asyncio.current_task()
        assert me is not None and me.get_name() == "main-task"
        sleeper = asyncio.create_task(asyncio.sleep(10), name="sleeper")
        done = asyncio.create_task(asyncio.sleep(0), name="done")
        await done
        assert asyncio.all_tasks() == {me, sleeper}
        assert asyncio.all_tasks(loop) == {me, sleeper}
        loop.call_soon(callback)
        await asyncio.sleep(0)
        sleeper.cancel()
        return me

    main_task = loop.create_task(main(), name="main-task")
    assert loop.run_until_complete(main_task) is main_task
    assert in_callback == [loop, None]
    assert asyncio.all_tasks(loop) == set()


def test_many_timers_fire_in_deadline_order(loop):
    """2000 timers with random deadlines fire sorted by deadline."""
    rng = random.Random(42)
    fired: list[float] = []
    now = loop.time()
    for _ in range(2000):
        when = now + rng.uniform(0, 0.05)
        loop.call_at(when, fired.append, when)
    _run_then_stop(loop, 0.08)
    assert len(fired) == 2000
    assert fired == sorted(fired)


def test_purging_cancelled_timers_keeps_live_ones(loop):
    """Cancelling most timers (triggering a purge) keeps the rest, in order."""
    fired: list[int] = []
    handles = [loop.call_later(0.001 + i * 0.00002, fired.append, i) for i in range(1000)]
    for i, handle in enumerate(handles):
        if i % 10:
            handle.cancel()
    _run_then_stop(loop, 0.06)
    assert fired == list(range(0, 1000, 10))


def test_extreme_delays(loop):
    """Huge or infinite delays never fire and do not break the loop; negative ones fire."""
    fired: list[str] = []
    loop.call_later(float("inf"), fired.append, "inf")
    loop.call_later(1e300, fired.append, "1e300")
    loop.call_at(loop.time() + 10**12, fired.append, "int 1e12")
    loop.call_later(-1, fired.append, "negative")
    start = time.monotonic()
    _run_then_stop(loop, 0.02)
    assert time.monotonic() - start < 1.0
    assert fired == ["negative"]


def test_handle_repr_shows_arguments(loop):
    """In debug mode a handle's repr shows the callback with its arguments.

    (Since Python 3.13 asyncio hides the arguments outside debug mode.)
    """

    def report(number, text):
        pass

    loop.set_debug(True)
    handle = loop.call_soon(report, 1, "a")
    assert "report(1, 'a')" in repr(handle)
    timer = loop.call_later(5, report, 2, "b")
    assert "report(2, 'b')" in repr(timer)
    timer.cancel()
    handle.cancel()


def test_cancel_releases_callback_references(loop):
    """A cancelled handle no longer keeps its callback's arguments alive."""
    payload = WeakReferable()
    ref = weakref.ref(payload)
    soon = loop.call_soon(print, payload)
    later = loop.call_later(3600, print, payload)
    soon.cancel()
    later.cancel()
    del payload
    _run_then_stop(loop)
    gc.collect()
    assert ref() is None
    assert soon.cancelled() and later.cancelled()


def test_executed_callbacks_are_released(loop):
    """After a callback ran, the loop holds no reference to its arguments."""
    payload = WeakReferable()
    ref = weakref.ref(payload)
    loop.call_soon(id, payload)
    loop.call_later(0.001, id, payload)
    del payload
    _run_then_stop(loop, 0.01)
    gc.collect()
    assert ref() is None


def test_nan_timer_runs_at_once_and_the_loop_stays_usable(loop):
    """A lone timer at ``float('nan')``, as in the running asyncio: up to 3.12 it runs right
    away (``max(0, nan)`` is no wait, and ``nan >= end`` is false); 3.13+ passes the NaN wait
    to the selector, whose ``math.ceil`` raises ValueError out of ``run_forever``, and the
    timer runs in the next run that finds a callback ready (no wait). Either way no panic in
    the poll timeout and the loop is not left marked running (a failed run used to keep
    ``is_running()`` True)."""
    fired: list[str] = []

    def on_nan() -> None:
        fired.append("nan")
        loop.stop()

    loop.call_at(float("nan"), on_nan)
    outcome: list[object] = []
    try:
        loop.run_forever()
        outcome.append("stopped")
    except BaseException as exc:  # noqa: BLE001 - PanicException derives from BaseException
        outcome.append(type(exc).__name__)
    assert not loop.is_running()
    if sys.version_info >= (3, 13):
        assert (outcome, fired) == (["ValueError"], [])
        loop.call_soon(fired.append, "ready")
        loop.run_forever()  # still usable; the ready callback, then the NaN timer (stops)
        assert fired == ["ready", "nan"]
    else:
        assert (outcome, fired) == (["stopped"], ["nan"])
        loop.call_soon(loop.stop)
        loop.run_forever()  # still usable
    assert not loop.is_running()


def test_replaced_time_is_not_leaked_by_call_later(loop):
    """``call_later`` with ``loop.time`` replaced calls the replacement; the reference taken
    for that call is given back (ferroloop's fast entry point used to leak one per call)."""

    def clock() -> float:
        return time.monotonic()

    loop.time = clock
    before = sys.getrefcount(clock)
    for _ in range(1000):
        loop.call_later(1, print).cancel()
    after = sys.getrefcount(clock)
    del loop.time
    assert after - before < 10
