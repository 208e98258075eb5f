import asyncio, subprocess, sys, time, resource, os
which = sys.argv[1]; n = int(sys.argv[2]); rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 1
if which == "ferroloop":
    import ferroloop; loop = ferroloop.new_event_loop()
elif which == "rloop":
    import rloop; loop = rloop.new_event_loop()
elif which == "uvloop":
    import uvloop; loop = uvloop.new_event_loop()
else:
    loop = asyncio.new_event_loop()
asyncio.set_event_loop(loop)
async def run(k):
    for _ in range(k):
        p = await asyncio.create_subprocess_exec("/bin/true", stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        await p.communicate()
        assert p.returncode == 0
loop.run_until_complete(run(5))
for r in range(rounds):
    u0 = resource.getrusage(resource.RUSAGE_SELF); t0 = time.perf_counter()
    loop.run_until_complete(run(n))
    t = time.perf_counter() - t0; u1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (u1.ru_utime - u0.ru_utime + u1.ru_stime - u0.ru_stime)
    print(f"{which}: {n/t:.0f}/s wall {t/n*1e6:.0f}us cpu {cpu/n*1e6:.0f}us/spawn vcsw {(u1.ru_nvcsw-u0.ru_nvcsw)/n:.2f} ivcsw {(u1.ru_nivcsw-u0.ru_nivcsw)/n:.2f}", flush=True)
