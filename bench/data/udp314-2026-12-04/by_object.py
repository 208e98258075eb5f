import sys, re, collections
def objs(path):
    names = {}; cur = '?'; c = collections.Counter(); skip = False
    for line in open(path, errors='replace'):
        if skip:
            skip = False; continue
        if line.startswith('ob='):
            m = re.match(r'ob=\((\d+)\)(?: (.*))?', line.strip())
            if m.group(2): names[m.group(1)] = m.group(2)
            cur = names[m.group(1)]
        elif line.startswith('cob='):
            m = re.match(r'cob=\((\d+)\)(?: (.*))?', line.strip())
            if m.group(2): names[m.group(1)] = m.group(2)
        elif line.startswith('calls='):
            skip = True
        elif line[:1].isdigit() or line[:1] in '+-*':
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                c[cur] += int(parts[1])
    out = collections.Counter()
    for k, v in c.items():
        k = k.split('/')[-1]
        k = re.sub(r'\.cpython-3\d+-x86_64-linux-gnu', '', k)
        k = re.sub(r'^(libpython3\.\d+\.so.*|python3\.\d+)$', 'python', k)
        out[k] += v
    return out
a, b, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
ca, cb = objs(a), objs(b)
d = {k: (cb[k]-ca[k])/n for k in set(ca)|set(cb)}
for k, v in sorted(d.items(), key=lambda kv: -abs(kv[1]))[:6]:
    print('%8.0f  %s' % (v, k))
print('%8.0f  total' % (sum(d.values())))
