import sys, time
which = sys.argv[1]
sys.path.insert(0, "/work/wt-xthread4-before/python" if which == "before" else "/work/wt-xthread4/python")
import ferroloop as m
loop = m.new_event_loop()
def cb():
    pass
post = loop.call_soon_threadsafe
best = 1e9
for rep in range(7):
    t = time.perf_counter()
    for _ in range(200):
        for _ in range(500):
            post(cb)
        loop.call_soon(loop.stop)
        loop.run_forever()
    best = min(best, time.perf_counter() - t)
print(which, f"{best/100000*1e9:.1f} ns per post+run (best of 7)")
