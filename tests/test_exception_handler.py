"""Exception handler API and the default logging of callback errors."""

from __future__ import annotations

import asyncio
import gc
import logging
import traceback

import pytest


def bad_callback():
    """A callback that always fails."""
    raise ValueError("callback exploded")


def _asyncio_records(caplog) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "asyncio"]


def test_default_handler_logs_and_loop_keeps_running(loop, caplog):
    """A raising callback is logged on 'asyncio' and later callbacks still run."""
    caplog.set_level(logging.DEBUG, logger="asyncio")
    ran: list[str] = []
    loop.call_soon(bad_callback)
    loop.call_soon(ran.append, "after")
    loop.call_later(0.01, ran.append, "timer after")
    loop.call_later(0.02, loop.stop)
    loop.run_forever()
    assert ran == ["after", "timer after"]

    records = _asyncio_records(caplog)
    assert len(records) == 1
    record = records[0]
    assert record.levelno == logging.ERROR
    lines = record.getMessage().splitlines()
    assert lines[0].startswith("Exception in callback bad_callback()")
    assert lines[1].startswith("handle: <Handle bad_callback()")
    assert len(lines) == 2
    assert record.exc_info[0] is ValueError
    assert str(record.exc_info[1]) == "callback exploded"


def test_custom_handler_receives_context(loop):
    """A custom handler gets (loop, context) with message, exception and handle."""
    calls: list[tuple] = []

    def handler(handler_loop, context):
        calls.append((handler_loop, dict(context)))

    assert loop.get_exception_handler() is None
    loop.set_exception_handler(handler)
    assert loop.get_exception_handler() is handler
    failing = loop.call_soon(bad_callback)
    loop.call_soon(loop.stop)
    loop.run_forever()

    assert len(calls) == 1
    handler_loop, context = calls[0]
    assert handler_loop is loop
    assert set(context) == {"message", "exception", "handle"}
    assert context["message"].startswith("Exception in callback bad_callback()")
    assert type(context["exception"]) is ValueError
    assert context["handle"] is failing

    loop.set_exception_handler(None)
    assert loop.get_exception_handler() is None


def test_set_exception_handler_rejects_non_callable(loop):
    """set_exception_handler() requires a callable or None."""
    with pytest.raises(TypeError, match=r"^A callable object or None is expected, got 42$"):
        loop.set_exception_handler(42)


def test_call_exception_handler_passes_context_through(loop):
    """call_exception_handler() hands the context dict to the custom handler."""
    received: list[dict] = []
    loop.set_exception_handler(lambda _loop, context: received.append(context))
    context = {"message": "something odd", "custom": 123}
    loop.call_exception_handler(context)
    assert received == [{"message": "something odd", "custom": 123}]


def test_call_exception_handler_default_log_format(loop, caplog):
    """The default handler logs the message then sorted 'key: repr(value)' lines."""
    caplog.set_level(logging.DEBUG, logger="asyncio")
    error = KeyError("k")
    loop.call_exception_handler(
        {"message": "custom failure", "zeta": [1, 2], "alpha": "text", "exception": error}
    )
    records = _asyncio_records(caplog)
    assert len(records) == 1
    assert records[0].levelno == logging.ERROR
    assert records[0].getMessage() == "custom failure\nalpha: 'text'\nzeta: [1, 2]"
    assert records[0].exc_info[1] is error


def test_default_exception_handler_without_message(loop, caplog):
    """A context without a message is logged as 'Unhandled exception in event loop'."""
    caplog.set_level(logging.DEBUG, logger="asyncio")
    loop.default_exception_handler({"detail": 7})
    records = _asyncio_records(caplog)
    assert [r.getMessage() for r in records] == ["Unhandled exception in event loop\ndetail: 7"]
    assert not records[0].exc_info


def test_custom_handler_can_delegate_to_default(loop, caplog):
    """A custom handler may call loop.default_exception_handler()."""
    caplog.set_level(logging.DEBUG, logger="asyncio")
    seen: list[str] = []

    def handler(handler_loop, context):
        seen.append(context["message"])
        handler_loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
    loop.call_soon(bad_callback)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert len(seen) == 1
    records = _asyncio_records(caplog)
    assert len(records) == 1
    assert records[0].getMessage().startswith("Exception in callback bad_callback()")


def test_failing_handler_is_reported_and_loop_continues(loop, caplog):
    """If the handler itself raises, that is logged and the loop carries on."""
    caplog.set_level(logging.DEBUG, logger="asyncio")
    ran: list[str] = []

    def broken_handler(handler_loop, context):
        raise RuntimeError("handler broke")

    loop.set_exception_handler(broken_handler)
    loop.call_soon(bad_callback)
    loop.call_soon(ran.append, "still running")
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert ran == ["still running"]
    records = _asyncio_records(caplog)
    assert len(records) == 1
    assert records[0].getMessage().startswith("Unhandled error in exception handler")
    assert records[0].exc_info[0] is RuntimeError


def test_unretrieved_task_exception_reaches_handler(loop):
    """A failed task that is never awaited is reported when collected."""
    contexts: list[dict] = []
    loop.set_exception_handler(lambda _loop, context: contexts.append(context))

    async def doomed():
        raise ArithmeticError("nobody awaits me")

    task = loop.create_task(doomed())
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert task.done()
    del task
    gc.collect()
    assert len(contexts) == 1
    assert contexts[0]["message"] == "Task exception was never retrieved"
    assert type(contexts[0]["exception"]) is ArithmeticError
    assert isinstance(contexts[0]["future"], asyncio.Task)


def test_base_exception_in_callback_propagates(loop):
    """SystemExit / KeyboardInterrupt from a callback stop the loop and propagate."""
    ran: list[str] = []

    def interrupt():
        raise KeyboardInterrupt

    loop.call_soon(interrupt)
    loop.call_soon(ran.append, "later")
    with pytest.raises(KeyboardInterrupt):
        loop.run_forever()
    assert not loop.is_running()
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert ran == ["later"]


def test_timer_callback_error_reports_timer_handle(loop):
    """An error in a call_later callback is reported with its TimerHandle."""
    contexts: list[dict] = []
    loop.set_exception_handler(lambda _loop, context: contexts.append(context))
    timer = loop.call_later(0.001, bad_callback)
    loop.call_later(0.02, loop.stop)
    loop.run_forever()
    assert len(contexts) == 1
    assert contexts[0]["handle"] is timer
    assert isinstance(contexts[0]["handle"], asyncio.TimerHandle)
    assert contexts[0]["message"].startswith("Exception in callback bad_callback()")
    assert str(contexts[0]["exception"]) == "callback exploded"


def test_callback_error_keeps_its_traceback(loop, caplog):
    """The exception handed to the handler carries the traceback of the failing callback, so
    the default handler's log shows where it failed (as with stock asyncio)."""
    caplog.set_level(logging.DEBUG, logger="asyncio")

    def failing_callback():
        raise ValueError("boom")

    loop.call_soon(failing_callback)
    loop.run_until_complete(asyncio.sleep(0.01))
    records = _asyncio_records(caplog)
    assert len(records) == 1
    exc_type, exc, tb = records[0].exc_info
    assert exc_type is ValueError
    assert tb is not None and exc.__traceback__ is tb
    frames = [frame.name for frame in traceback.extract_tb(tb)]
    assert frames[-1] == "failing_callback"
    assert 'raise ValueError("boom")' in caplog.text
