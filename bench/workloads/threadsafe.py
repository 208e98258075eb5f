"""Cross-thread wake-ups: ``loop.call_soon_threadsafe`` from other threads.

* ``threadsafe.two_threads`` — two threads each post 100k callbacks with
  ``call_soon_threadsafe`` as fast as they can while the loop runs them; the
  round ends when the loop has run all 200k.  Reports callbacks/s: the cost of
  a post, of the wake-up, of handing the GIL between the posting threads and
  the loop, and of running the handle.
* ``threadsafe.flood_sleep`` — eight threads post callbacks in a tight loop
  while a task sleeps 0.3 s; reports how late the sleep returns (s, lower is
  better).  A loop that lets the posting threads keep the GIL falls behind, its
  backlog grows every iteration and its timers fire seconds late.  The threads
  stop when the sleep returns, or after 1 s of posting (so that a loop that
  never catches up still finishes: its figure is then the time to drain what
  was posted in that second).  The round only counts once every post has run
  (a loop that drops posts fails the measurement).
"""

from __future__ import annotations

import asyncio
import threading
import time

from . import Metric, Workload, scaled
from ._common import run_rounds

CALLBACKS_PER_ROUND = 200_000
POSTING_THREADS = 2
FLOOD_THREADS = 8
FLOOD_POSTS_PER_THREAD_MAX = 2_000_000
FLOOD_POSTING_MAX_S = 1.0
FLOOD_SLEEP_S = 0.3
FLOOD_ROUNDS = 1

CALLBACK_RATE = Metric("callbacks_per_s", "callbacks/s", "", higher_is_better=True)
SLEEP_LATENESS = Metric("sleep_late_s", "sleep(0.3) late", "s", higher_is_better=False)


def _time_posting_threads(loop, threads: int, per_thread: int) -> float:
    """Let ``threads`` threads post ``per_thread`` callbacks each; seconds until all ran."""
    total = threads * per_thread
    finished = loop.create_future()
    ran = 0

    def callback() -> None:
        nonlocal ran
        ran += 1
        if ran == total:
            finished.set_result(None)

    def post_all() -> None:
        post = loop.call_soon_threadsafe
        for _ in range(per_thread):
            post(callback)

    workers = [threading.Thread(target=post_all) for _ in range(threads)]
    start = time.perf_counter()
    for worker in workers:
        worker.start()
    loop.run_until_complete(finished)
    elapsed = time.perf_counter() - start
    for worker in workers:
        worker.join()
    return elapsed


def measure_two_threads(loop, scale: float) -> dict[str, float]:
    """Measure callbacks/s of two threads posting with call_soon_threadsafe."""
    per_thread = scaled(CALLBACKS_PER_ROUND, scale) // POSTING_THREADS
    _time_posting_threads(loop, POSTING_THREADS, max(10, per_thread // 10))  # warm-up
    result = run_rounds(
        lambda: _time_posting_threads(loop, POSTING_THREADS, per_thread),
        per_thread * POSTING_THREADS,
    )
    return {"callbacks_per_s": result.pop("rate"), **result}


def _flood_round(loop, threads: int, max_posts: int) -> tuple[float, int]:
    """One flood round: (how late the sleep returned in s, posts run)."""
    stop = threading.Event()
    posted = [0] * threads
    ran = 0

    def callback() -> None:
        nonlocal ran
        ran += 1

    def flood(index: int) -> None:
        post = loop.call_soon_threadsafe
        stopped = stop.is_set
        clock = time.monotonic
        give_up = clock() + FLOOD_POSTING_MAX_S
        count = 0
        while count < max_posts:
            post(callback)
            count += 1
            if not count & 255 and (stopped() or clock() > give_up):
                break
        posted[index] = count

    async def sleep_under_flood() -> float:
        workers = [threading.Thread(target=flood, args=(i,)) for i in range(threads)]
        start = time.monotonic()
        for worker in workers:
            worker.start()
        await asyncio.sleep(FLOOD_SLEEP_S)
        late = time.monotonic() - start - FLOOD_SLEEP_S
        stop.set()
        while any(worker.is_alive() for worker in workers):
            await asyncio.sleep(0.005)
        while ran < sum(posted):
            await asyncio.sleep(0.005)
        return late

    late = loop.run_until_complete(sleep_under_flood())
    if ran != sum(posted):
        raise RuntimeError(f"{sum(posted)} callbacks posted, {ran} ran")
    return late, ran


def measure_flood_sleep(loop, scale: float) -> dict[str, float]:
    """Measure how late asyncio.sleep(0.3) returns while 8 threads flood the loop."""
    max_posts = scaled(FLOOD_POSTS_PER_THREAD_MAX, scale)
    lateness = []
    posts = 0
    for _ in range(FLOOD_ROUNDS):
        late, ran = _flood_round(loop, FLOOD_THREADS, max_posts)
        lateness.append(late)
        posts += ran
    lateness.sort()
    return {
        "sleep_late_s": lateness[len(lateness) // 2],
        "sleep_late_max_s": lateness[-1],
        "posts_run": float(posts),
    }


WORKLOADS = [
    Workload(
        name="threadsafe.two_threads",
        description="2 threads posting call_soon_threadsafe callbacks (callbacks/s)",
        metrics=(CALLBACK_RATE,),
        run=measure_two_threads,
    ),
    Workload(
        name="threadsafe.flood_sleep",
        description=(
            f"{FLOOD_THREADS} threads flooding call_soon_threadsafe: "
            f"how late asyncio.sleep({FLOOD_SLEEP_S}) returns"
        ),
        metrics=(SLEEP_LATENESS,),
        run=measure_flood_sleep,
        cpu_bound=False,
    ),
]
