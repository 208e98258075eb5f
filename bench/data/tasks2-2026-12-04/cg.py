import asyncio, sys
LOOP, ROW, ROUNDS = sys.argv[1], sys.argv[2], int(sys.argv[3])
if LOOP == "asyncio": loop = asyncio.new_event_loop()
else:
    import ferroloop; loop = ferroloop.new_event_loop()
N = int(sys.argv[4]) if len(sys.argv) > 4 else 100_000
async def trivial(): return None
async def y(k):
    for _ in range(k): await asyncio.sleep(0)
async def main(n):
    if ROW == "gather": tasks = [loop.create_task(trivial()) for _ in range(n)]
    else: tasks = [loop.create_task(y(10)) for _ in range(n)]
    await asyncio.gather(*tasks)
loop.run_until_complete(main(N // 10))
for _ in range(ROUNDS): loop.run_until_complete(main(N))
