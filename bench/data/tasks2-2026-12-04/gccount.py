import asyncio, gc, sys, ferroloop
ROW=sys.argv[1]; loop=ferroloop.new_event_loop() if sys.argv[2]!="stock" else asyncio.new_event_loop()
N=100_000
n=[0,0,0]
gc.callbacks.append(lambda p,i: p=="stop" and n.__setitem__(i["generation"], n[i["generation"]]+1))
async def trivial(): return None
async def y(k):
    for _ in range(k): await asyncio.sleep(0)
async def main(m):
    tasks=[loop.create_task(trivial() if ROW=="gather" else y(10)) for _ in range(m)]
    await asyncio.gather(*tasks)
loop.run_until_complete(main(N//10)); gc.collect()
per=[]
for r in range(8):
    n[:]=[0,0,0]; loop.run_until_complete(main(N)); per.append(n[2])
print(sys.argv[2], ROW, "gen2 per round", per, "mean", sum(per)/len(per))
