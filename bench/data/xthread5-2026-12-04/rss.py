"""RSS after a flood (2 threads x 100k posts, 5 rounds) and after 0.3 s idle: python rss.py PATH|rloop"""
import sys, os, time, asyncio
p = sys.argv[1]
if p == "rloop":
    import rloop as m
else:
    sys.path.insert(0, p); import ferroloop as m
sys.path.insert(0, "/work/wt-xthread5/bench")
from workloads.threadsafe import _time_posting_threads
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
loop = m.new_event_loop()
r0 = rss()
for _ in range(5):
    _time_posting_threads(loop, 2, 100_000)
r1 = rss()
loop.run_until_complete(asyncio.sleep(0.3))
r2 = rss()
print(f"{p}: start {r0:.1f} MiB, after flood {r1:.1f} (+{r1-r0:.1f}), after 0.3 s idle {r2:.1f} (+{r2-r0:.1f})")
