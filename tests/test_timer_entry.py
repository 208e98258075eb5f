"""call_later, call_at and Handle.cancel are entered by vectorcall without PyO3's argument
parser (src/event_loop/fast_methods.rs): every shape of call must still behave as asyncio's,
including the errors and the numeric types of delays and deadlines."""

from __future__ import annotations

import contextvars
import decimal
import fractions
import gc

import pytest


def _outcome(action, method: str):
    """The exception type and message (from the method's name on), or "ok"."""
    try:
        action()
    except Exception as exc:  # compared below
        return type(exc), str(exc).split(f"{method}()", 1)[-1]
    return "ok"


@pytest.mark.parametrize(
    ("method", "call"),
    [
        ("call_later", lambda loop: loop.call_later()),
        ("call_later", lambda loop: loop.call_later(1)),
        ("call_later", lambda loop: loop.call_later(1, print, foo=1)),
        ("call_later", lambda loop: loop.call_later(1, print, context=None, extra=2)),
        ("call_later", lambda loop: loop.call_later("soon", print)),
        ("call_later", lambda loop: loop.call_later(decimal.Decimal(1), print)),
        ("call_later", lambda loop: loop.call_later(10**400, print)),
        ("call_at", lambda loop: loop.call_at()),
        ("call_at", lambda loop: loop.call_at(1)),
        ("call_at", lambda loop: loop.call_at(1, print, foo=1)),
        ("call_at", lambda loop: loop.call_at(None, print)),
    ],
    ids=[
        "later-no-args",
        "later-no-callback",
        "later-unknown-keyword",
        "later-extra-keyword",
        "later-str-delay",
        "later-decimal-delay",
        "later-huge-int",
        "at-no-args",
        "at-no-callback",
        "at-unknown-keyword",
        "at-none",
    ],
)
def test_calls_behave_like_asyncio(loop, stock_loop, method, call):
    """Errors (type and wording) and accepted shapes are asyncio's."""
    expected = _outcome(lambda: call(stock_loop), method)
    assert _outcome(lambda: call(loop), method) == expected


@pytest.mark.parametrize(
    "delay",
    [0, 1, 0.0, 0.25, True, fractions.Fraction(1, 4), -5],
    ids=["int0", "int1", "float0", "float", "bool", "fraction", "negative"],
)
def test_numeric_delays_give_asyncio_deadlines(loop, delay):
    """Any real number is a delay; the deadline is loop.time() + delay, a float."""
    before = loop.time()
    handle = loop.call_later(delay, print)
    after = loop.time()
    when = handle.when()
    handle.cancel()
    assert type(when) is float
    assert before + float(delay) <= when <= after + float(delay)


def test_timers_fire_by_deadline_then_scheduling_order(loop):
    """int and float deadlines mix; equal deadlines run in the order they were scheduled;
    cancelled timers never run; arguments and an explicit context reach the callback."""
    var = contextvars.ContextVar("var", default="default")
    context = contextvars.copy_context()
    context.run(var.set, "explicit")
    seen = []

    def record(*args):
        seen.append((args, var.get()))

    base = int(loop.time()) + 1  # an int deadline shortly ahead
    later = loop.time() + 0.05
    loop.call_at(later, record, "later")
    loop.call_at(base - 1, record, "int-past", 1)
    loop.call_at(float(base - 1), record, "float-past-same-deadline")
    cancelled = loop.call_later(0, record, "cancelled")
    loop.call_later(0.01, record, "ctx", context=context)
    loop.call_later(0.06, loop.stop)
    cancelled.cancel()
    loop.run_forever()
    assert cancelled.cancelled() is True
    assert "cancelled" in repr(cancelled)
    assert seen == [
        (("int-past", 1), "default"),
        (("float-past-same-deadline",), "default"),
        (("ctx",), "explicit"),
        (("later",), "default"),
    ]


def test_cancel_is_idempotent_and_releases_the_callback(loop, stock_loop):
    """cancel() twice is fine; the cancelled handle drops its callback like asyncio's."""
    for each in (loop, stock_loop):
        handle = each.call_later(10, print, "x")
        assert handle.cancel() is None
        assert handle.cancel() is None
        assert handle.cancelled() is True
        assert handle._callback is None and handle._args is None


@pytest.mark.ferroloop_only
def test_timer_arguments_untracked_only_when_atomic(loop):
    """A timer's argument tuple leaves the GC lists when no item can be in a cycle (what
    CPython's collector does at its next young collection); one holding a list stays."""
    atomic = loop.call_later(10, print, 1.5, "s", None, 7)
    container = loop.call_later(10, print, [])
    soon = loop.call_soon(print, 1.5)
    try:
        assert gc.is_tracked(atomic._args) is False
        assert gc.is_tracked(container._args) is True
        assert gc.is_tracked(soon._args) is True
    finally:
        atomic.cancel()
        container.cancel()
        soon.cancel()


@pytest.mark.parametrize("args", [(), ("one",), ("one", 2), ([],)])
def test_callback_arguments_are_asyncios_for_every_count(loop, stock_loop, args):
    """Zero and one argument are kept without a tuple (src/event_loop/handle.rs, CallArgs):
    the callback still gets the very objects, and `_args`, repr and TimerHandle equality are
    asyncio's for 0, 1 and 2 arguments, on call_soon, call_later and call_at."""

    def observe(each):
        seen = []

        def callback(*received):
            seen.append(received)

        when = each.time() + 0.001
        handles = [
            each.call_soon(callback, *args),
            each.call_later(0, callback, *args),
            each.call_at(when, callback, *args),
        ]
        twin = each.call_at(when, callback, *args)
        shapes = [
            (type(h._args), h._args, repr(h).split(" at ")[0].split("callback")[-1])
            for h in handles
        ]
        equal = handles[2] == twin
        twin.cancel()
        each.call_later(0.01, each.stop)
        each.run_forever()
        return shapes, equal, seen

    mine, theirs = observe(loop), observe(stock_loop)
    assert mine == theirs
    shapes, equal, seen = mine
    assert equal is True
    assert [type(s[1]) for s in shapes] == [tuple] * 3
    assert seen == [args] * 3
    assert all(a is b for received in seen for a, b in zip(received, args, strict=True))
