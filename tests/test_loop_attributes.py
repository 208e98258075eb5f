"""Loop instances behave like ordinary Python objects for attribute assignment."""

from __future__ import annotations

import asyncio


def test_arbitrary_attributes(loop):
    """New attributes can be set, read back and deleted."""
    loop.foo = 1
    loop.bar = {"nested": [1, 2]}
    assert loop.foo == 1
    assert loop.bar == {"nested": [1, 2]}
    del loop.foo
    assert not hasattr(loop, "foo")


def test_wrapping_call_soon_affects_later_calls(loop):
    """Replacing ``loop.call_soon`` on the instance intercepts subsequent calls."""
    original = loop.call_soon
    intercepted: list[str] = []
    ran: list[str] = []

    def wrapper(callback, *args, context=None):
        intercepted.append(getattr(callback, "__name__", repr(callback)))
        return original(callback, *args, context=context)

    loop.call_soon = wrapper
    assert loop.call_soon is wrapper

    def marker():
        ran.append("marker")

    handle = loop.call_soon(marker)
    assert isinstance(handle, asyncio.Handle)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert ran == ["marker"]
    assert intercepted[:2] == ["marker", "stop"]

    del loop.call_soon
    loop.call_soon(ran.append, "unwrapped")
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert ran == ["marker", "unwrapped"]
    assert len(intercepted) == 2


def test_wrapped_call_soon_used_by_python_futures(loop):
    """asyncio.Future schedules its done callbacks through the instance's call_soon."""
    original = loop.call_soon
    scheduled: list[object] = []

    def wrapper(callback, *args, context=None):
        scheduled.append(callback)
        return original(callback, *args, context=context)

    loop.call_soon = wrapper
    future = asyncio.Future(loop=loop)
    results: list[object] = []

    def on_done(fut):
        results.append(fut.result())

    future.add_done_callback(on_done)
    future.set_result("value")
    assert on_done in scheduled
    original(loop.stop)
    loop.run_forever()
    assert results == ["value"]


def test_slow_callback_duration_is_settable(loop):
    """``slow_callback_duration`` defaults to 0.1 s and accepts new values."""
    assert loop.slow_callback_duration == 0.1
    loop.slow_callback_duration = 0.25
    assert loop.slow_callback_duration == 0.25
