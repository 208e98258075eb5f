#!/bin/bash
pp=$1
for n in 10 40; do PYTHONPATH=$pp strace -c -o /tmp/spawn3/sc-$n.txt /tmp/bench312/bin/python cg.py ferroloop $n; done
/tmp/bench312/bin/python - <<'PY'
import re
def parse(f):
    d={}
    for line in open(f):
        parts=line.split()
        if len(parts)>=5 and re.match(r'[\d.]+$',parts[0]) and parts[-1]!='total':
            d[parts[-1]]=int(parts[3])
    return d
a=parse('/tmp/spawn3/sc-10.txt'); b=parse('/tmp/spawn3/sc-40.txt')
tot=0
for k in sorted(set(a)|set(b)):
    x=(b.get(k,0)-a.get(k,0))/30
    if abs(x)>0.05: print(f"  {k}: {x:.2f}"); tot+=x
print(f"loop process: {tot:.2f} syscalls per spawn")
PY
