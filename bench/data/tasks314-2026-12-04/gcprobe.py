"""GC share of tasks.sleep0 / tasks.gather per loop on 3.12/3.14 (tasks2's gcprobe.py, adapted).

usage: gcprobe.py LOOP ROW on|off [REPS]; LOOP: asyncio, ferroloop, rloop, zuvloop, uvloop.
Prints one JSON line: median round (CPU time), collections per generation and their time,
objects collected, gc.get_stats() differences (3.14: incremental collector's rounds).
"""

import asyncio
import gc
import json
import sys
import time

LOOP, ROW, GCMODE = sys.argv[1], sys.argv[2], sys.argv[3]
REPS = int(sys.argv[4]) if len(sys.argv) > 4 else 5
N = 100_000

if LOOP == "asyncio":
    loop = asyncio.new_event_loop()
else:
    loop = __import__(LOOP).new_event_loop()
asyncio.set_event_loop(loop)


async def trivial():
    return None


async def yielder(k):
    for _ in range(k):
        await asyncio.sleep(0)


NG = len(gc.get_stats())
st = {"n": [0] * NG, "t": [0.0] * NG, "col": [0] * NG}
t0 = [0.0]


def cb(phase, info):
    if phase == "start":
        t0[0] = time.process_time()
    else:
        g = info["generation"]
        st["n"][g] += 1
        st["t"][g] += time.process_time() - t0[0]
        st["col"][g] += info["collected"]


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
rows = []
for _ in range(REPS):
    for k in st:
        st[k] = [0] * NG if k != "t" else [0.0] * NG
    s0 = gc.get_stats()
    w = one_round(N)
    s1 = gc.get_stats()
    stats = [{k: s1[g][k] - s0[g][k] for k in s1[g] if isinstance(s1[g][k], int)} for g in range(NG)]
    rows.append((w, list(st["n"]), list(st["t"]), list(st["col"]), stats))
    if GCMODE == "off":
        gc.enable()
        gc.collect()
        gc.disable()
rows.sort(key=lambda r: r[0])
w, n, t, col, stats = rows[REPS // 2]
print(
    json.dumps(
        {
            "py": sys.version.split()[0],
            "loop": LOOP,
            "row": ROW,
            "gc": GCMODE,
            "cpu_s": round(w, 4),
            "all_cpu_s": [round(r[0], 3) for r in rows],
            "rate": round(units / w),
            "gc_n": n,
            "gc_t": [round(x, 4) for x in t],
            "gc_s": round(sum(t), 4),
            "gc_share": round(sum(t) / w, 3),
            "collected": col,
            "stats": stats,
            "threshold": gc.get_threshold(),
        }
    )
)
