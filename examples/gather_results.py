"""``asyncio.gather`` semantics in three short scenes.

1. Results come back in argument order, whatever order the work finishes in.
2. ``return_exceptions=True`` returns exceptions in place of results.
3. Without it the first exception propagates at once, while the other
   awaitables keep running.

Expected output::

    b done
    c done
    a done
    results: ['A', 'B', 'C']
    d done
    with return_exceptions: ['D', ValueError('e failed')]
    caught: f failed
    g still running: True
    g done
"""

import asyncio


async def work(name: str, delay: float, fail: bool = False) -> str:
    """Sleep ``delay`` seconds, then fail or print and return ``name.upper()``."""
    await asyncio.sleep(delay)
    if fail:
        raise ValueError(f"{name} failed")
    print(f"{name} done")
    return name.upper()


async def main() -> None:
    """Demonstrate ordering, ``return_exceptions`` and early propagation."""
    results = await asyncio.gather(work("a", 0.06), work("b", 0.02), work("c", 0.04))
    print("results:", results)

    results = await asyncio.gather(
        work("d", 0.02), work("e", 0.04, fail=True), return_exceptions=True
    )
    print("with return_exceptions:", results)

    g_task = asyncio.create_task(work("g", 0.06))
    try:
        await asyncio.gather(work("f", 0.02, fail=True), g_task)
    except ValueError as exc:
        print("caught:", exc)
    print("g still running:", not g_task.done())
    await g_task


if __name__ == "__main__":
    asyncio.run(main())
