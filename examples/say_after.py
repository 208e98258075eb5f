"""Sequential awaits: ``hello`` after one second, ``world`` two seconds later.

Because the two ``say_after`` calls are awaited one after the other, the total
run time is the sum of the delays, about three seconds::

    started
    hello
    world
    finished in 3.003 seconds
"""

import asyncio
import time


async def say_after(delay: float, what: str) -> None:
    """Sleep ``delay`` seconds, then print ``what``."""
    await asyncio.sleep(delay)
    print(what)


async def main() -> None:
    """Await two greetings one after the other and report the elapsed time."""
    print("started")
    start = time.perf_counter()
    await say_after(1, "hello")
    await say_after(2, "world")
    print(f"finished in {time.perf_counter() - start:0.3f} seconds")


if __name__ == "__main__":
    asyncio.run(main())
