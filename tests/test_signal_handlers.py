"""loop.add_signal_handler / remove_signal_handler: asyncio's validation, dispatch as loop
callbacks, Python's default handlers restored afterwards."""

from __future__ import annotations

import asyncio
import contextvars
import signal
import time

import pytest


def _raised(action) -> tuple[type, str] | None:
    try:
        action()
    except Exception as exc:  # the type and message are what is compared
        return type(exc), str(exc)
    return None


@pytest.mark.parametrize(
    ("sig", "exc_type", "message"),
    [
        (signal.SIGKILL, RuntimeError, f"sig {int(signal.SIGKILL)} cannot be caught"),
        (signal.SIGSTOP, RuntimeError, f"sig {int(signal.SIGSTOP)} cannot be caught"),
        ("SIGINT", TypeError, "sig must be an int, not 'SIGINT'"),
        (99999, ValueError, "invalid signal number 99999"),
    ],
)
def test_invalid_signals_raise_like_asyncio(loop, stock_loop, sig, exc_type, message):
    """Bad signal numbers raise asyncio's exception types and messages."""
    expected = (exc_type, message)
    assert _raised(lambda: stock_loop.add_signal_handler(sig, print)) == expected
    assert _raised(lambda: loop.add_signal_handler(sig, print)) == expected


def test_coroutine_function_is_refused(loop):
    """A coroutine function is refused with asyncio's TypeError."""

    async def handler():
        pass

    with pytest.raises(TypeError, match=r"coroutines cannot be used with add_signal_handler\(\)"):
        loop.add_signal_handler(signal.SIGUSR1, handler)
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


def test_handler_runs_as_loop_callback_while_idle(loop):
    """A signal arriving while the loop sleeps in its poll runs the handler promptly, with its
    arguments, in the context captured at registration."""
    var = contextvars.ContextVar("var", default="unset")
    var.set("registered")
    calls = []

    def handler(*args):
        calls.append((args, var.get(), asyncio.get_running_loop() is loop, time.monotonic()))
        loop.stop()

    loop.add_signal_handler(signal.SIGALRM, handler, "a", 1)
    var.set("later")
    loop.call_later(10, loop.stop)
    signal.setitimer(signal.ITIMER_REAL, 0.05, 0)
    started = time.monotonic()
    loop.run_forever()
    assert len(calls) == 1
    args, seen, on_loop, at = calls[0]
    assert args == ("a", 1)
    assert seen == "registered"
    assert on_loop
    assert at - started < 1.0
    assert loop.remove_signal_handler(signal.SIGALRM) is True


def test_remove_restores_defaults(loop):
    """remove_signal_handler restores SIG_DFL (default_int_handler for SIGINT), returns False
    for a signal without handler."""
    loop.add_signal_handler(signal.SIGUSR2, print)
    assert signal.getsignal(signal.SIGUSR2) != signal.SIG_DFL
    assert loop.remove_signal_handler(signal.SIGUSR2) is True
    assert signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL
    assert loop.remove_signal_handler(signal.SIGUSR2) is False

    loop.add_signal_handler(signal.SIGINT, print)
    assert loop.remove_signal_handler(signal.SIGINT) is True
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_close_removes_handlers(new_loop):
    """Closing the loop restores the signals it handled."""
    loop = new_loop()
    loop.add_signal_handler(signal.SIGUSR1, print)
    loop.close()
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
