import os, time, sys
from ferroloop._ferroloop import spawn_child
N = int(sys.argv[1]); a=[]
for i in range(N):
    t0 = time.perf_counter_ns()
    pid, pidfd, w, r, e = spawn_child([b"/bin/true"], [b"/bin/true"], None, None, -3, -1, None, True, [], True, False, -1, ("/bin/true", None, None), pidfd=True)
    t1 = time.perf_counter_ns()
    os.close(r); os.waitpid(pid, 0); os.close(pidfd)
    a.append((t1-t0)/1000)
a.sort(); print(f"p10 {a[N//10]:.0f} p25 {a[N//4]:.0f} med {a[N//2]:.0f}")
