import os, sys, time, resource, threading
sys.path.insert(0, "/work/wt-xthread5/bench")
which = sys.argv[1]
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
if which == "rloop":
    import rloop as m
else:
    if which == "before":
        sys.path.insert(0, "/work/wt-xthread5-before/python")
    else:
        sys.path.insert(0, "/work/wt-xthread5/python")
    import ferroloop as m
from workloads.threadsafe import _time_posting_threads
loop = m.new_event_loop()
_time_posting_threads(loop, 2, 10000)
t0 = time.perf_counter(); c0 = time.process_time()
n = 0
for _ in range(rounds):
    _time_posting_threads(loop, 2, 100_000); n += 200_000
w = time.perf_counter() - t0; c = time.process_time() - c0
print(f"{which} {os.environ.get('FERROLOOP_XT_LIMIT','-')} rate={n/w/1e6:.2f}M/s cpu/cb={c/n*1e9:.0f}ns wall/cb={w/n*1e9:.0f}ns util={c/w:.2f}")
