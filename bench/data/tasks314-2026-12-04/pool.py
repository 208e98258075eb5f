import json, statistics, collections, sys
ratios = collections.defaultdict(list)
for f in sys.argv[1:]:
    d = json.load(open(f))
    by = collections.defaultdict(dict)
    for m in d['measurements']:
        if m.get('ok'):
            by[(m['workload'], m['rep'])][m['loop']] = list(m['metrics'].values())[0]
    for (w, rep), v in by.items():
        for l in ('rloop', 'zuvloop', 'ferroloop-before', 'ferroloop'):
            if l in v and 'asyncio' in v:
                ratios[(w, l)].append(v[l] / v['asyncio'])
        if 'ferroloop' in v and 'ferroloop-before' in v:
            ratios[(w, 'after/before')].append(v['ferroloop'] / v['ferroloop-before'])
for k, r in sorted(ratios.items()):
    r.sort(); print(k, len(r), f"median x{statistics.median(r):.2f} [{r[0]:.2f}-{r[-1]:.2f}]")
