"""Three concurrent counters: the classic asyncio "One One One Two Two Two" demo.

Each ``count()`` prints ``One``, sleeps one second and prints ``Two``.  Run
under ``asyncio.gather`` the three sleeps overlap, so the program prints::

    One
    One
    One
    Two
    Two
    Two
    countasync.py executed in 1.003 seconds.

Run it with stock asyncio (``python examples/countasync.py``) or on ferroloop
(``python -m ferroloop examples/countasync.py``).
"""

import asyncio
import os
import time


async def count() -> None:
    """Print ``One``, wait a second, print ``Two``."""
    print("One")
    await asyncio.sleep(1)
    print("Two")


async def main() -> None:
    """Run three counters concurrently."""
    await asyncio.gather(count(), count(), count())


if __name__ == "__main__":
    start = time.perf_counter()
    asyncio.run(main())
    elapsed = time.perf_counter() - start
    print(f"{os.path.basename(__file__)} executed in {elapsed:0.3f} seconds.")
