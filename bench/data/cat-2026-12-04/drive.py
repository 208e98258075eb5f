"""Drive: N rounds of communicate(size MB) through cat on the chosen loop; prints CPU/MB."""
import asyncio, os, resource, subprocess, sys, time

loopname = sys.argv[1]
mb = int(sys.argv[2]) if len(sys.argv) > 2 else 100
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 5
payload = os.urandom(1024 * 1024) * mb

if loopname == "uvloop":
    import uvloop
    loop = uvloop.new_event_loop()
elif loopname == "asyncio":
    loop = asyncio.new_event_loop()
elif loopname == "rloop":
    import rloop
    loop = rloop.new_event_loop()
else:
    import ferroloop
    loop = ferroloop.new_event_loop()
asyncio.set_event_loop(loop)

async def one():
    proc = await asyncio.create_subprocess_exec("cat", stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    out, _ = await proc.communicate(payload)
    assert len(out) == len(payload)

def cpu():
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime, u.ru_stime, u.ru_minflt, u.ru_nvcsw, u.ru_nivcsw

loop.run_until_complete(one())
u0, s0, f0, v0, i0 = cpu(); t0 = time.perf_counter()
for _ in range(rounds):
    loop.run_until_complete(one())
t = time.perf_counter() - t0
u1, s1, f1, v1, i1 = cpu()
MB = mb * 1.048576 * rounds
print(f"{loopname}: {MB/t:.0f} MB/s user {(u1-u0)/MB*1e3:.3f} sys {(s1-s0)/MB*1e3:.3f} total {((u1-u0)+(s1-s0))/MB*1e3:.3f} ms/MB; per round: minflt {(f1-f0)/rounds:.0f} vcsw {(v1-v0)/rounds:.0f} ivcsw {(i1-i0)/rounds:.0f}")
