"""5 + N spawns of /bin/true on ferroloop or rloop (for callgrind and strace -c)."""

import asyncio
import subprocess
import sys

which, n = sys.argv[1], int(sys.argv[2])
if which == "rloop":
    import rloop

    loop = rloop.new_event_loop()
else:
    import ferroloop

    loop = ferroloop.new_event_loop()


async def run(k):
    for _ in range(k):
        p = await asyncio.create_subprocess_exec(
            "/bin/true", stdin=subprocess.DEVNULL, stdout=subprocess.PIPE
        )
        await p.communicate()


loop.run_until_complete(run(5))
loop.run_until_complete(run(n))
