"""Invalid arguments raise the same exception type and message as stock asyncio.

Each case is run on the loop under test *and* on a stock asyncio loop; both
must raise exactly the expected exception (so a CPython behaviour change
shows up as a failure on the stock side rather than silently passing).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest


async def coroutine_function():
    """A coroutine function that must never be scheduled as a callback."""


def _with_coroutine(call: Callable[[object], object]) -> Callable[[], object]:
    """Call ``call(coro)`` with a fresh coroutine object, closing it afterwards."""

    def run():
        coro = coroutine_function()
        try:
            return call(coro)
        finally:
            coro.close()

    return run


# (id, debug mode?, operation(loop) -> zero-arg callable, exception type, message)
CASES = [
    (
        "call_soon-coroutine-function",
        True,
        lambda loop: lambda: loop.call_soon(coroutine_function),
        TypeError,
        "coroutines cannot be used with call_soon()",
    ),
    (
        "call_soon-coroutine-object",
        True,
        lambda loop: _with_coroutine(loop.call_soon),
        TypeError,
        "coroutines cannot be used with call_soon()",
    ),
    (
        "call_soon-non-callable",
        True,
        lambda loop: lambda: loop.call_soon(42),
        TypeError,
        "a callable object was expected by call_soon(), got 42",
    ),
    (
        "call_soon_threadsafe-coroutine-function",
        True,
        lambda loop: lambda: loop.call_soon_threadsafe(coroutine_function),
        TypeError,
        "coroutines cannot be used with call_soon_threadsafe()",
    ),
    (
        "call_soon_threadsafe-non-callable",
        True,
        lambda loop: lambda: loop.call_soon_threadsafe("not callable"),
        TypeError,
        "a callable object was expected by call_soon_threadsafe(), got 'not callable'",
    ),
    (
        "call_later-coroutine-function",
        True,
        lambda loop: lambda: loop.call_later(1, coroutine_function),
        TypeError,
        "coroutines cannot be used with call_at()",
    ),
    (
        "call_later-coroutine-object",
        True,
        lambda loop: _with_coroutine(lambda coro: loop.call_later(1, coro)),
        TypeError,
        "coroutines cannot be used with call_at()",
    ),
    (
        "call_at-non-callable",
        True,
        lambda loop: lambda: loop.call_at(loop.time() + 1, None),
        TypeError,
        "a callable object was expected by call_at(), got None",
    ),
    (
        "run_in_executor-coroutine-function",
        True,
        lambda loop: lambda: loop.run_in_executor(None, coroutine_function),
        TypeError,
        "coroutines cannot be used with run_in_executor()",
    ),
    (
        "call_later-None-delay",
        False,
        lambda loop: lambda: loop.call_later(None, print),
        TypeError,
        "delay must not be None",
    ),
    (
        "call_later-str-delay",
        False,
        lambda loop: lambda: loop.call_later("1", print),
        TypeError,
        "unsupported operand type(s) for +: 'float' and 'str'",
    ),
    (
        "call_at-None-when",
        False,
        lambda loop: lambda: loop.call_at(None, print),
        TypeError,
        "when cannot be None",
    ),
    (
        "create_task-non-coroutine",
        False,
        lambda loop: lambda: loop.create_task(42),
        TypeError,
        "a coroutine was expected, got 42",
    ),
    (
        "run_until_complete-non-awaitable",
        False,
        lambda loop: lambda: loop.run_until_complete(42),
        TypeError,
        "An asyncio.Future, a coroutine or an awaitable is required",
    ),
    (
        "set_task_factory-non-callable",
        False,
        lambda loop: lambda: loop.set_task_factory(42),
        TypeError,
        "task factory must be a callable or None",
    ),
    (
        "set_exception_handler-non-callable",
        False,
        lambda loop: lambda: loop.set_exception_handler("nope"),
        TypeError,
        "A callable object or None is expected, got 'nope'",
    ),
    (
        "closed-check-comes-first",
        False,
        lambda loop: (loop.close(), lambda: loop.call_soon(42))[1],
        RuntimeError,
        "Event loop is closed",
    ),
]


def _raised(loop, debug: bool, operation) -> tuple[type, str]:
    """Run ``operation`` against ``loop`` and return the exception it raised."""
    loop.set_debug(debug)
    action = operation(loop)
    with pytest.raises(Exception) as info:
        action()
    return type(info.value), str(info.value)


@pytest.mark.parametrize(
    ("debug", "operation", "exc_type", "message"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_bad_argument_matches_stock(loop, stock_loop, debug, operation, exc_type, message):
    """The loop under test raises what stock asyncio raises, type and message."""
    expected = (exc_type, message)
    assert _raised(stock_loop, debug, operation) == expected, "stock asyncio changed behaviour"
    assert _raised(loop, debug, operation) == expected


def test_call_soon_rejects_unknown_keyword(loop):
    """call_soon only accepts the ``context`` keyword."""
    with pytest.raises(TypeError):
        loop.call_soon(print, foo=1)
    with pytest.raises(TypeError):
        loop.call_later(1, print, delay=2)


def test_call_soon_requires_callback(loop):
    """call_soon() with no callback is a TypeError."""
    with pytest.raises(TypeError):
        loop.call_soon()
