"""Kernel cost of moving 100 MB through cat: pipes vs unix socketpairs (parent CPU only)."""
import os, resource, socket, subprocess, sys, threading
kind = sys.argv[1]; N = 100 * 1024 * 1024
payload = os.urandom(1 << 20) * 100
def ends():
    if kind == "pipe":
        r, w = os.pipe(); return r, w   # (child's end, ours) set below
    a, b = socket.socketpair(); return a.detach(), b.detach()
for rep in range(4):
    if kind == "pipe":
        cin, pin = os.pipe(); pout, cout = os.pipe()
    else:
        a, b = socket.socketpair(); cin, pin = a.detach(), b.detach()
        a, b = socket.socketpair(); pout, cout = a.detach(), b.detach()
    p = subprocess.Popen(["cat"], stdin=cin, stdout=cout); os.close(cin); os.close(cout)
    buf = bytearray(256 * 1024); mv = memoryview(payload)
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    def writer():
        off = 0
        while off < N:
            off += os.write(pin, mv[off:off + 256 * 1024])
        os.close(pin)
    t = threading.Thread(target=writer); t.start()
    got = 0
    while True:
        n = os.readv(pout, [buf])
        if not n: break
        got += n
    t.join(); p.wait(); os.close(pout)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    print(kind, got == N, "sys %.3f user %.3f ms/MB" % ((r1.ru_stime - r0.ru_stime) / 104.8576e-3, (r1.ru_utime - r0.ru_utime) / 104.8576e-3))
