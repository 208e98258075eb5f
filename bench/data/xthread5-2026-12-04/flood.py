"""flood_sleep lateness: python flood.py before|new|rloop  (FERROLOOP_XT_LIMIT picks the gate limit)"""
import os, sys
which = sys.argv[1]
if which == "rloop":
    import rloop as m
else:
    sys.path.insert(0, "/work/wt-xthread5-before/python" if which == "before" else "/work/wt-xthread5/python")
    import ferroloop as m
sys.path.insert(0, "/work/wt-xthread5/bench")
from workloads.threadsafe import _flood_round
loop = m.new_event_loop()
late, ran = _flood_round(loop, 8, 2_000_000)
print(which, os.environ.get("FERROLOOP_XT_LIMIT", "-"), f"late={late:.4f}s ran={ran}")
