"""Per-round CPU ms/MB and faults (bench's measure_cat rounds, after its 1 MB warm-up)."""
import sys, resource, asyncio, json
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from workloads import processes
name = sys.argv[1]
if name == "uvloop":
    import uvloop; loop = uvloop.new_event_loop()
else:
    import ferroloop; loop = ferroloop.new_event_loop()
asyncio.set_event_loop(loop)
rows = []
orig = loop.run_until_complete
def ruc(coro):
    a = resource.getrusage(resource.RUSAGE_SELF)
    r = orig(coro)
    b = resource.getrusage(resource.RUSAGE_SELF)
    rows.append((b.ru_minflt - a.ru_minflt, (b.ru_utime + b.ru_stime - a.ru_utime - a.ru_stime) / 104.8576e-3))
    return r
loop.run_until_complete = ruc
processes.MIN_SECONDS = 2.0
m = processes.measure_cat(loop, 1.0)
print(json.dumps({"name": sys.argv[2] if len(sys.argv) > 2 else name, "rounds": rows[1:], "cpu": m["cpu_ms_per_mb"]}))
