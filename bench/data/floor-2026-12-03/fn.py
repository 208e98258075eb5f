import subprocess, sys, re, collections
# per-function self cost per request: fn.py VARIANT K N [top]
def prof(f):
    out = subprocess.run(["callgrind_annotate", "--auto=no", "--threshold=100", "--show-percs=no", f], capture_output=True, text=True).stdout
    d = collections.Counter()
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(\S.*)", line)
        if m and ':' in m.group(2):
            name = re.sub(r"\[.*", "", m.group(2)).strip()
            name = re.sub(r"'\d+", "", name)
            name = re.sub(r"/(work|tmp)/[^ ]*?/(src|python)/", r"\2/", name)
            d[name] += int(m.group(1).replace(",", ""))
    return d
v, k, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
a = prof(f"cg.{v}.k{k}.{n}"); b = prof(f"cg.{v}.k{k}.{3*n}")
b.subtract(a)
tot = 0
groups = collections.Counter()
for name, c in b.items():
    per = c / (2*n)
    tot += per
    if "_ferroloop" in name or "src/" in name or "rustc" in name or "pyo3" in name or ".cargo" in name: groups["ferroloop+rust"] += per
    elif "libc" in name or "glibc" in name or "sysdeps" in name: groups["libc"] += per
    else: groups["python+other"] += per
print("total", round(tot,1), {k: round(v,1) for k,v in groups.items()})
for name, c in sorted(b.items(), key=lambda kv: -kv[1])[:int(sys.argv[4]) if len(sys.argv)>4 else 50]:
    print(f"{c/(2*n):8.1f}  {name[-150:]}")
