#!/bin/bash
# interleaved GC probe: 3 passes x (stock, before, after) x (on, off) x (sleep0, gather)
out=/tmp/tasks2/probe_all.jsonl; : > $out
for pass in 1 2; do
 for row in sleep0 gather; do
  for g in on off; do
   echo "{\"pass\":$pass}" >> $out
   /tmp/bench312/bin/python /tmp/tasks2/gcprobe.py asyncio $row $g 3 | sed 's/"loop": "asyncio"/"loop": "stock"/' >> $out
   PYTHONPATH=/work/wt-tasks2-before/python /tmp/bench312/bin/python /tmp/tasks2/gcprobe.py ferroloop $row $g 3 | sed 's/"loop": "ferroloop"/"loop": "before"/' >> $out
   PYTHONPATH=/tmp/tasks2/after2/python /tmp/bench312/bin/python /tmp/tasks2/gcprobe.py ferroloop $row $g 3 | sed 's/"loop": "ferroloop"/"loop": "after"/' >> $out
  done
 done
done
echo DONE >> $out
