"""Single-threaded post + run (ns), B posts per batch: python tpost.py before|new|rloop B"""
import sys, time
which, B = sys.argv[1], int(sys.argv[2])
if which == "rloop":
    import rloop as m
else:
    sys.path.insert(0, "/work/wt-xthread5-before/python" if which == "before" else "/work/wt-xthread5/python")
    import ferroloop as m
loop = m.new_event_loop()
def main():
    def cb():
        pass
    post = loop.call_soon_threadsafe
    best = 1e9
    for rep in range(7):
        t = time.perf_counter()
        for _ in range(200_000 // B):
            for _ in range(B):
                post(cb)
            loop.call_soon(loop.stop)
            loop.run_forever()
        best = min(best, time.perf_counter() - t)
    print(which, B, f"{best/(200_000 // B * B)*1e9:.1f} ns per post+run (best of 7)")
main()
