"""Exclusive instructions per object file (and top functions of one object) in a callgrind file.

usage: byobj.py A.out B.out [OBJ-SUBSTRING]: prints B - A per object (and per function of OBJ).
"""

import collections
import re
import sys


def parse(path):
    obs, fns = {}, {}
    per_ob, per_fn = collections.Counter(), collections.Counter()
    ob = fn = None
    skip = False
    for line in open(path, errors="replace"):
        c = line[0]
        if c.isdigit() or c in "+-*":
            if skip:
                skip = False
                continue
            parts = line.split()
            if len(parts) >= 2:
                n = int(parts[1])
                per_ob[ob] += n
                per_fn[(ob, fn)] += n
            continue
        m = re.match(r"(ob|fn|cob|cfn|fl|fi|fe|cfi|cfl)=\((\d+)\)(?: (.*))?", line.rstrip("\n"))
        if m:
            kind, i, name = m.groups()
            table = obs if kind in ("ob", "cob") else fns if kind in ("fn", "cfn") else None
            if table is not None and name:
                table[i] = name
            if kind == "ob":
                ob = obs[i]
            elif kind == "fn":
                fn = fns[i]
            continue
        if line.startswith("calls="):
            skip = True
    return per_ob, per_fn


a_ob, a_fn = parse(sys.argv[1])
b_ob, b_fn = parse(sys.argv[2])
d = {k: b_ob[k] - a_ob.get(k, 0) for k in b_ob}
tot = sum(d.values())
print("total", tot)
for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:8]:
    print(f"{v:>14,} {100 * v / tot:5.1f}% {k}")
if len(sys.argv) > 3:
    sub = sys.argv[3]
    f = {k: b_fn[k] - a_fn.get(k, 0) for k in b_fn if sub in (k[0] or "")}
    for k, v in sorted(f.items(), key=lambda kv: -kv[1])[:25]:
        print(f"{v:>14,} {k[1][:110]}")
