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


def test_handler_runs_after_python_handler_swapped_and_restored(loop):
    """The loop learns of a signal from the wakeup fd, not from the Python-level handler: a
    program that swaps in its own handler and later puts back the one it found (uvicorn's
    ``Server.capture_signals``) does not lose the loop's callbacks. Each arrival runs the
    callback once, in arrival order, also while the program's handler is installed."""
    calls = []
    other_calls = []

    async def main():
        loop.add_signal_handler(signal.SIGUSR1, calls.append, "usr1")
        loop.add_signal_handler(signal.SIGUSR2, calls.append, "usr2")
        previous = signal.signal(signal.SIGUSR1, lambda signum, frame: other_calls.append(signum))
        signal.raise_signal(signal.SIGUSR1)  # the program's handler is installed
        await asyncio.sleep(0.05)
        seen_while_replaced = list(calls)
        signal.signal(signal.SIGUSR1, previous)  # put back the one it found
        signal.raise_signal(signal.SIGUSR2)
        signal.raise_signal(signal.SIGUSR1)
        for _ in range(100):
            if len(calls) >= 3:
                break
            await asyncio.sleep(0.01)
        return seen_while_replaced

    try:
        seen_while_replaced = loop.run_until_complete(main())
    finally:
        loop.remove_signal_handler(signal.SIGUSR1)
        loop.remove_signal_handler(signal.SIGUSR2)
    assert other_calls == [signal.SIGUSR1]
    assert seen_while_replaced == ["usr1"]
    assert calls == ["usr1", "usr2", "usr1"]
