"""callgrind driver: LOOP ROW ROUNDS [N]; the per-round cost is (ROUNDS=2) - (ROUNDS=1)."""

import asyncio
import sys

LOOP, ROW, ROUNDS = sys.argv[1], sys.argv[2], int(sys.argv[3])
N = int(sys.argv[4]) if len(sys.argv) > 4 else 100_000
loop = asyncio.new_event_loop() if LOOP == "asyncio" else __import__(LOOP).new_event_loop()


async def trivial():
    return None


async def y(k):
    for _ in range(k):
        await asyncio.sleep(0)


async def main(n):
    if ROW == "gather":
        tasks = [loop.create_task(trivial()) for _ in range(n)]
    else:
        tasks = [loop.create_task(y(10)) for _ in range(n)]
    await asyncio.gather(*tasks)


loop.run_until_complete(main(N // 10))
for _ in range(ROUNDS):
    loop.run_until_complete(main(N))
