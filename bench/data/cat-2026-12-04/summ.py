import json, statistics as st, sys
rows=[json.loads(l) for l in open(sys.argv[1])]
names=[]
for x in rows:
    if x['name'] not in names: names.append(x['name'])
for n in names:
    rs=[r for x in rows if x['name']==n for r in x['rounds']]
    lo=[c for f,c in rs if f<45000]; hi=[c for f,c in rs if f>=45000]
    print(n.ljust(12), 'overall median %.3f'%st.median([x['cpu'] for x in rows if x['name']==n]), 'rounds<45k faults: n=%d med %.3f'%(len(lo), st.median(lo) if lo else 0), ' rounds>=45k: n=%d med %.3f'%(len(hi), st.median(hi) if hi else 0), 'faults med', st.median([f for f,c in rs]))
