"""``loop.stats()``: the loop's counters, busy/idle time, the lag of ready callbacks and what is
open right now (ferroloop only: stock asyncio has no such method)."""

from __future__ import annotations

import asyncio
import socket
import time
import typing

import pytest

pytestmark = pytest.mark.ferroloop_only

KEYS = {
    "iterations",
    "callbacks_run",
    "io_events",
    "timers_fired",
    "busy_time",
    "idle_time",
    "lag",
    "tasks",
    "transports",
    "readers",
    "writers",
    "timers",
}


def _delta(before: dict, after: dict, key: str):
    return after[key] - before[key]


def test_keys_and_types_match_the_typed_dict(loop):
    import ferroloop

    stats = loop.stats()
    assert set(stats) == KEYS
    hints = typing.get_type_hints(ferroloop.LoopStats)
    assert set(hints) == KEYS
    assert (
        set(typing.get_type_hints(ferroloop.LagStats))
        == set(stats["lag"])
        == {
            "p50",
            "p99",
            "max",
        }
    )
    for key in KEYS - {"lag"}:
        expected = float if hints[key] is float else int
        assert type(stats[key]) is expected, key
    assert stats["lag"] == {"p50": 0.0, "p99": 0.0, "max": 0.0}


def test_counts_match_a_scripted_workload(loop):
    """3 callbacks, 2 timers, 2 readiness events on a socketpair; a cancelled handle and a
    cancelled timer count for nothing."""
    r, w = socket.socketpair()
    r.setblocking(False)
    events: list[str] = []
    try:

        def on_read():
            events.append("read:" + r.recv(1).decode())
            if len(events) == 4:  # after the three callbacks and the first read
                w.send(b"y")
            if events.count("read:x") + events.count("read:y") == 2:
                loop.remove_reader(r)

        def on_timer(last):
            events.append("timer")
            if last:
                loop.stop()

        before = loop.stats()
        for _ in range(3):
            loop.call_soon(events.append, "soon")
        loop.call_soon(events.append, "cancelled").cancel()
        loop.call_later(0.05, on_timer, False)
        loop.call_later(0.06, on_timer, True)
        loop.call_later(0.01, events.append, "cancelled timer").cancel()
        loop.add_reader(r, on_read)
        w.send(b"x")
        loop.run_forever()
        after = loop.stats()
    finally:
        r.close()
        w.close()
    assert events == ["soon"] * 3 + ["read:x", "read:y", "timer", "timer"]
    assert _delta(before, after, "callbacks_run") == 7
    assert _delta(before, after, "timers_fired") == 2
    assert _delta(before, after, "io_events") == 2
    assert _delta(before, after, "iterations") >= 3
    # The loop waited ~60 ms for its timers (idle) and ran little (busy).
    assert after["idle_time"] - before["idle_time"] >= 0.03
    assert after["busy_time"] - before["busy_time"] < after["idle_time"] - before["idle_time"]
    assert after["timers"] == 0 and after["readers"] == 0


def test_open_things_are_counted(loop):
    r, w = socket.socketpair()
    a, b = socket.socketpair()
    try:

        async def main():
            transport, _ = await loop.create_connection(asyncio.Protocol, sock=a)
            loop.add_reader(r, lambda: None)
            loop.add_writer(w, lambda: None)
            timers = [loop.call_later(10, lambda: None) for _ in range(3)]
            timers[0].cancel()
            sleeper = asyncio.ensure_future(asyncio.sleep(10))
            await asyncio.sleep(0)
            stats = loop.stats()
            sleeper.cancel()
            for timer in timers:
                timer.cancel()
            loop.remove_reader(r)
            loop.remove_writer(w)
            transport.close()
            return stats

        stats = loop.run_until_complete(main())
    finally:
        for sock in (r, w, a, b):
            sock.close()
    assert stats["tasks"] == 2  # main and the sleeper
    assert stats["transports"] == 1
    assert stats["timers"] == 3  # two of ours + the sleeper's
    assert stats["readers"] == 2  # ours + the transport's
    assert stats["writers"] == 1


def test_lag_reflects_a_slow_callback(loop):
    def fast():
        pass

    # A warm-up of fast callbacks: small lag.
    for _ in range(50):
        loop.call_soon(fast)
    loop.call_soon(loop.stop)
    loop.run_forever()
    quiet = loop.stats()["lag"]

    # A 0.2 s callback ahead of 99 fast ones in the same batch; one queued while it runs.
    loop.call_soon(lambda: (loop.call_soon(fast), time.sleep(0.2)))
    for _ in range(99):
        loop.call_soon(fast)
    loop.call_soon(loop.call_soon, loop.stop)
    loop.run_forever()
    lag = loop.stats()["lag"]
    assert quiet["p99"] < 0.05, quiet
    assert lag["p99"] >= 0.1, lag
    assert 0.15 <= lag["max"] < 2.0, lag
    assert lag["p50"] <= lag["p99"] <= lag["max"]


def test_time_between_runs_is_not_lag(loop):
    loop.call_soon(loop.stop)
    loop.run_forever()
    loop.call_soon(lambda: None)  # queued, then the loop does not run for 0.3 s
    time.sleep(0.3)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert loop.stats()["lag"]["max"] < 0.1
