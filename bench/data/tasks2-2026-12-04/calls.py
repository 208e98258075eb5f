import sys, re, collections
def calls(path, targets):
    names = {}; tot = collections.Counter(); cur_cfn = None
    for line in open(path, errors="replace"):
        if line.startswith(("cfn=", "cfi=", "cob=")) and line.startswith("cfn="):
            m = re.match(r"cfn=\((\d+)\)(?: (.*))?", line.strip())
            if m:
                if m.group(2): names[m.group(1)] = m.group(2)
                cur_cfn = names.get(m.group(1))
        elif line.startswith("fn="):
            m = re.match(r"fn=\((\d+)\)(?: (.*))?", line.strip())
            if m and m.group(2): names[m.group(1)] = m.group(2)
        elif line.startswith("calls=") and cur_cfn:
            n = int(line.split()[0][6:])
            for t in targets:
                if cur_cfn.endswith(":" + t) or cur_cfn == t:
                    tot[t] += n
            cur_cfn = None
    return tot
targets = sys.argv[3].split(",")
a = calls(sys.argv[1], targets); b = calls(sys.argv[2], targets)
for t in targets: print(t, b[t] - a[t])
