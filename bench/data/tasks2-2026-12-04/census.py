import asyncio, gc, sys, collections
LOOP=sys.argv[1]; ROW=sys.argv[2]
if LOOP=="asyncio": loop=asyncio.new_event_loop()
else:
    import ferroloop; loop=ferroloop.new_event_loop()
N=100_000
done=[False]
def census():
    c=collections.Counter(type(o).__name__ for o in gc.get_objects())
    print(LOOP, ROW, "tracked", sum(c.values()), c.most_common(9))
async def trivial(): return None
async def y(i):
    for k in range(10):
        if i==N//2 and k==5: census()
        await asyncio.sleep(0)
async def main():
    if ROW=="gather":
        tasks=[loop.create_task(trivial()) for _ in range(N)]
        loop.call_soon(census)  # after first steps? runs after all first steps queued before
        await asyncio.gather(*tasks)
    else:
        tasks=[loop.create_task(y(i)) for i in range(N)]
        await asyncio.gather(*tasks)
loop.run_until_complete(main())
