"""callgrind: TCP echo server process; python tcp_server.py N [watchdog]; CG_CONNS=K clients
(K=1: one connection, the client sleeps 1 ms before each request, so the server blocks in the
poll every request; K>1: K connections, one message in flight each, sent back to back)."""
import asyncio, os, socket, subprocess, sys
import ferroloop

n = int(sys.argv[1])
K = int(os.environ.get("CG_CONNS", "1"))
wd = len(sys.argv) > 2 and sys.argv[2] == "on"
CLIENT = r'''
import socket, sys, time, os
port, n = int(sys.argv[1]), int(sys.argv[2])
K = int(os.environ.get("CG_CONNS", "1"))
socks = []
for _ in range(K):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    socks.append(s)
msg = b"x" * 1024
for _ in range(n // K):
    if K == 1:
        time.sleep(0.001)
    for s in socks:
        s.sendall(msg)
    for s in socks:
        got = 0
        while got < 1024:
            d = s.recv(65536)
            if not d: raise SystemExit("eof")
            got += len(d)
for s in socks:
    s.close()
'''

class Echo(asyncio.Protocol):
    def connection_made(self, t):
        self.t = t
        t.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    def data_received(self, d):
        self.t.write(d)
    def connection_lost(self, exc):
        global lost
        lost += 1
        if lost == K:
            done.set_result(None)

loop = ferroloop.new_event_loop() if os.environ.get("CG_LOOP") != "asyncio" else asyncio.new_event_loop()
if wd:
    loop.set_watchdog(5)
async def main(k):
    global done, lost
    lost = 0
    done = loop.create_future()
    srv = await loop.create_server(Echo, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    env = dict(os.environ); env.pop("LD_PRELOAD", None)
    p = subprocess.Popen(["/usr/bin/python3", "-c", CLIENT, str(port), str(k)], env=env)
    await done
    srv.close()
    await srv.wait_closed()
    while p.poll() is None:
        await asyncio.sleep(0.01)
loop.run_until_complete(main(200))
loop.run_until_complete(main(n))
if wd:
    loop.stats()
loop.close()
