"""call_soon is entered by vectorcall without PyO3's argument parser
(src/event_loop/fast_methods.rs): every shape of call must still behave as asyncio's, including
the errors."""

from __future__ import annotations

import contextvars

import pytest


def _error(action) -> tuple[type, str] | None:
    try:
        action()
    except Exception as exc:  # compared below
        # The qualified name differs ("BaseEventLoop.call_soon()"): compare from the method.
        return type(exc), str(exc).split("call_soon()", 1)[-1]
    return None


@pytest.mark.parametrize(
    "call",
    [
        lambda loop: loop.call_soon(),
        lambda loop: loop.call_soon(print, foo=1),
        lambda loop: loop.call_soon(print, context=None, extra=2),
    ],
    ids=["no-callback", "unknown-keyword", "extra-keyword"],
)
def test_bad_calls_raise_like_asyncio(loop, stock_loop, call):
    """Argument errors are TypeErrors worded as asyncio's."""
    expected = _error(lambda: call(stock_loop))
    assert expected is not None and expected[0] is TypeError
    assert _error(lambda: call(loop)) == expected


def test_callback_by_keyword(loop):
    """asyncio's signature lets the callback be passed by keyword too."""
    seen = []
    loop.call_soon(callback=seen.append, context=None)  # no argument: append() fails...
    loop.call_soon(callback=lambda: seen.append("kw"))
    loop.call_soon(loop.stop)
    loop.set_exception_handler(lambda _loop, context: seen.append(type(context["exception"])))
    loop.run_forever()
    assert seen == [TypeError, "kw"]


def test_arguments_and_context_reach_the_callback(loop):
    """0, 1 and many positional arguments, with and without an explicit context."""
    var = contextvars.ContextVar("var", default="default")
    seen = []

    def record(*args):
        seen.append((args, var.get()))

    context = contextvars.copy_context()
    context.run(var.set, "explicit")
    loop.call_soon(record)
    loop.call_soon(record, 1)
    loop.call_soon(record, 1, "two", None)
    loop.call_soon(record, "ctx", context=context)
    loop.call_soon(record, "none", context=None)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == [
        ((), "default"),
        ((1,), "default"),
        ((1, "two", None), "default"),
        (("ctx",), "explicit"),
        (("none",), "default"),
    ]


def test_get_debug_reflects_set_debug(loop):
    """get_debug (also a raw entry point) follows set_debug."""
    assert loop.get_debug() is False
    loop.set_debug(True)
    assert loop.get_debug() is True
    loop.set_debug(False)
    assert loop.get_debug() is False
