"""call_soon_threadsafe under contention, and how fast it wakes an idle loop."""

from __future__ import annotations

import random
import threading
import time

import pytest

THREADS = 8
CALLS_PER_THREAD = 10_000


@pytest.mark.timeout(60)
def test_many_threads_lose_no_callbacks(loop):
    """8 threads x 10k call_soon_threadsafe: every callback runs, per-thread FIFO."""
    received: list[tuple[int, int]] = []
    expected_total = THREADS * CALLS_PER_THREAD
    barrier = threading.Barrier(THREADS + 1)

    def record(thread_index: int, seq: int) -> None:
        received.append((thread_index, seq))
        if len(received) == expected_total:
            loop.stop()

    def producer(thread_index: int) -> None:
        barrier.wait()
        for seq in range(CALLS_PER_THREAD):
            loop.call_soon_threadsafe(record, thread_index, seq)

    threads = [threading.Thread(target=producer, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    loop.call_soon(barrier.wait)
    watchdog = loop.call_later(30, loop.stop)
    loop.run_forever()
    watchdog.cancel()
    for thread in threads:
        thread.join()

    assert len(received) == expected_total
    per_thread: dict[int, list[int]] = {i: [] for i in range(THREADS)}
    for thread_index, seq in received:
        per_thread[thread_index].append(seq)
    for thread_index, seqs in per_thread.items():
        assert seqs == list(range(CALLS_PER_THREAD)), f"thread {thread_index} out of order"


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


@pytest.mark.timeout(60)
def test_threadsafe_call_wakes_idle_loop_quickly(loop):
    """An idle loop runs a cross-thread callback within 5 ms (p99 of 200 wakes)."""
    wakes = 200
    latencies: list[float] = []
    handled = threading.Event()
    rng = random.Random(1234)
    errors: list[BaseException] = []

    def on_wake(sent_at: float) -> None:
        latencies.append(time.monotonic() - sent_at)
        handled.set()

    def waker() -> None:
        try:
            for _ in range(wakes):
                time.sleep(rng.uniform(0.001, 0.006))  # loop is idle by now
                handled.clear()
                loop.call_soon_threadsafe(on_wake, time.monotonic())
                if not handled.wait(5):
                    raise TimeoutError("loop did not run the callback within 5 s")
        except Exception as exc:  # noqa: BLE001 - re-raised in the main thread via `errors`
            errors.append(exc)
        finally:
            loop.call_soon_threadsafe(loop.stop)

    thread = threading.Thread(target=waker)
    loop.call_soon(thread.start)
    far_timer = loop.call_later(3600, lambda: None)  # idle wait has a long timeout
    loop.run_forever()
    thread.join()
    far_timer.cancel()

    assert not errors, errors
    assert len(latencies) == wakes
    p99 = _percentile(latencies, 0.99)
    median = _percentile(latencies, 0.5)
    assert p99 < 0.005, f"p99 wake latency {p99 * 1000:.2f} ms (median {median * 1000:.2f} ms)"
