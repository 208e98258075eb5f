"""Cancelled timers must not pin memory: the loop purges them like asyncio does."""

from __future__ import annotations

import sys

import pytest

_MEASURE = """
    import asyncio
    import gc
    import os
    import sys

    if sys.argv[1] == "ferroloop":
        import ferroloop
        new_loop = ferroloop.new_event_loop
    else:
        new_loop = asyncio.new_event_loop

    PAGE = os.sysconf("SC_PAGE_SIZE")
    COUNT = 1_000_000


    def rss_bytes():
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * PAGE


    def callback():
        raise AssertionError("a cancelled timer ran")


    loop = new_loop()
    loop.run_until_complete(asyncio.sleep(0))  # warm up the loop's machinery
    gc.collect()
    before = rss_bytes()
    handles = [loop.call_later(3600, callback) for _ in range(COUNT)]
    for handle in handles:
        handle.cancel()
    del handles, handle
    loop.run_until_complete(asyncio.sleep(0))
    gc.collect()
    after = rss_bytes()
    loop.close()
    print(after - before)
"""

MIB = 1024 * 1024


def _rss_growth(child, implementation: str) -> int:
    """RSS growth (bytes) of the measurement script on ``implementation``."""
    script = child.script("cancelled_timers.py", _MEASURE)
    env = child.env(MALLOC_MMAP_THRESHOLD_="1048576", MALLOC_TRIM_THRESHOLD_="67108864")
    proc = child.run([sys.executable, str(script), implementation], env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return int(proc.stdout)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_cancelled_timers_are_purged(child):
    """A million cancelled call_later handles leave no more RSS than on stock asyncio."""
    stock = _rss_growth(child, "asyncio")
    ours = _rss_growth(child, child.kind)
    limit = stock * 1.10 + 8 * MIB
    assert ours <= limit, (
        f"{child.kind} grew {ours / MIB:.1f} MiB; stock asyncio {stock / MIB:.1f} MiB "
        f"(limit {limit / MIB:.1f} MiB)"
    )
