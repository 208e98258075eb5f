import sys
which, B, N = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if which == "rloop":
    import rloop as m
else:
    sys.path.insert(0, "/work/wt-xthread5-before/python" if which == "before" else "/work/wt-xthread5/python")
    import ferroloop as m
loop = m.new_event_loop()
def cb():
    pass
post = loop.call_soon_threadsafe
for _ in range(N // B):
    for _ in range(B):
        post(cb)
    loop.call_soon(loop.stop)
    loop.run_forever()
