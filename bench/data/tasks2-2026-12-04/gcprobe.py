"""Scratch: GC share of tasks.sleep0 / tasks.gather per loop (not committed)."""
import asyncio, gc, sys, time, statistics, json, resource

LOOP = sys.argv[1]
ROW = sys.argv[2]
GCMODE = sys.argv[3]  # on / off
REPS = int(sys.argv[4]) if len(sys.argv) > 4 else 5
N = 100_000

if LOOP == "asyncio":
    loop = asyncio.new_event_loop()
elif LOOP == "ferroloop":
    import ferroloop; loop = ferroloop.new_event_loop()
else:
    mod = __import__(LOOP); loop = mod.new_event_loop()
asyncio.set_event_loop(loop)

async def trivial():
    return None

async def yielder(k):
    for _ in range(k):
        await asyncio.sleep(0)

stats = {"n": [0, 0, 0], "t": [0.0, 0.0, 0.0], "collected": [0, 0, 0]}
_t0 = [0.0]
def cb(phase, info):
    if phase == "start":
        _t0[0] = time.process_time()
    else:
        g = info["generation"]
        stats["n"][g] += 1
        stats["t"][g] += time.process_time() - _t0[0]
        stats["collected"][g] += info["collected"]
gc.callbacks.append(cb)

def one_round(n):
    async def main():
        start = time.process_time()
        if ROW == "gather":
            tasks = [loop.create_task(trivial()) for _ in range(n)]
        else:
            tasks = [loop.create_task(yielder(10)) for _ in range(n)]
        await asyncio.gather(*tasks)
        return time.process_time() - start
    return loop.run_until_complete(main())

units = N if ROW == "gather" else N * 10
one_round(N // 10)
gc.collect()
if GCMODE == "off":
    gc.disable()
walls, gcs, cpus, counts = [], [], [], []
for _ in range(REPS):
    for k in stats: stats[k] = [0] * 3 if k != "t" else [0.0] * 3
    # net tracked allocations: gen0 count with gc disabled
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    w = one_round(N)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    walls.append(w)
    cpus.append((r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime))
    gcs.append((list(stats["n"]), list(stats["t"])))
    if GCMODE == "off":
        gc.enable(); gc.collect(); gc.disable()
i = sorted(range(REPS), key=lambda j: walls[j])[REPS // 2]
w = walls[i]
n, t = gcs[i]
print(json.dumps({"loop": LOOP, "row": ROW, "gc": GCMODE, "wall_s": round(w, 4),
    "rate": round(units / w), "cpu_s": round(statistics.median(cpus), 4),
    "gc_n": n, "gc_t": [round(x, 4) for x in t], "gc_share": round(sum(t) / w, 3),
    "rate_without_gc": round(units / (w - sum(t)))}))
