"""Divergences from stock asyncio that the differential fuzzer (tests/fuzz/) found, each kept
as a regular test on both loops once fixed."""

from __future__ import annotations

import asyncio


def test_callback_cancelling_its_own_handle_then_raising_is_reported_as_none(loop):
    """asyncio's Handle.cancel() clears the callback and its arguments, even while the callback
    runs: an exception it raises afterwards is reported as "Exception in callback None()"
    (ferroloop reported "Exception in callback " with nothing)."""
    reports = []
    handles = []

    def body():
        handles[0].cancel()
        raise ValueError("after cancelling myself")

    def on_error(loop, context):
        reports.append((context["message"], type(context.get("exception")).__name__))

    loop.set_exception_handler(on_error)
    try:
        handles.append(loop.call_soon(body))
        timer = loop.call_later(0.05, body)
        handles.append(timer)
        loop.run_until_complete(asyncio.sleep(0))
        handles.reverse()  # the timer cancels itself
        loop.run_until_complete(asyncio.sleep(0.1))
    finally:
        loop.close()
    assert reports == [
        ("Exception in callback None()", "ValueError"),
        ("Exception in callback None()", "ValueError"),
    ]
    assert handles[0].cancelled() and handles[1].cancelled()
