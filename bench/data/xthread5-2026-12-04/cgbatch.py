"""callbacks.batch-like: 1000 chains of call_soon, R rounds each: python cgbatch.py before|new R"""
import sys
which, R = sys.argv[1], int(sys.argv[2])
sys.path.insert(0, "/work/wt-xthread5-before/python" if which == "before" else "/work/wt-xthread5/python")
import ferroloop as m
loop = m.new_event_loop()
def main():
    left = [R * 1000]
    def step():
        left[0] -= 1
        if left[0] > 0:
            loop.call_soon(step)
        elif left[0] == 0:
            loop.stop()
    for _ in range(1000):
        loop.call_soon(step)
    loop.run_forever()
main()
