"""Structured concurrency with ``asyncio.TaskGroup`` (Python 3.11+).

The first group waits for all of its tasks.  In the second, one task fails:
its sibling is cancelled and the failure surfaces as an ``ExceptionGroup``.

Expected output::

    fetched 1
    fetched 2
    fetched 3
    results: [9, 1, 4]
    sibling cancelled
    caught: ['boom']
    sibling task cancelled: True
"""

import asyncio


async def fetch(i: int) -> int:
    """Pretend to fetch item ``i``: sleep ``i`` centiseconds, return ``i * i``."""
    await asyncio.sleep(i / 50)
    print(f"fetched {i}")
    return i * i


async def fail_soon() -> None:
    """Fail shortly after starting."""
    await asyncio.sleep(0.02)
    raise ValueError("boom")


async def sibling() -> None:
    """Sleep for a long time; report cancellation."""
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        print("sibling cancelled")
        raise


async def main() -> None:
    """Run a successful group, then a failing one."""
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(fetch(i)) for i in (3, 1, 2)]
    print("results:", [t.result() for t in tasks])

    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(fail_soon())
            slow = tg.create_task(sibling())
    except* ValueError as group:
        print("caught:", [str(exc) for exc in group.exceptions])
    print("sibling task cancelled:", slow.cancelled())


if __name__ == "__main__":
    asyncio.run(main())
