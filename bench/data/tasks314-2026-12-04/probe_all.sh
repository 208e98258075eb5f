#!/bin/bash
# GC on/off per loop and row; usage: probe_all.sh PYTHON PYTHONPATH OUT [REPS]
PY=$1; PP=$2; OUT=$3; REPS=${4:-5}
D=$(dirname "$0")
for row in sleep0 gather; do
  for gcm in on off; do
    for loop in asyncio ferroloop rloop zuvloop; do
      PYTHONPATH=$PP $PY $D/gcprobe.py $loop $row $gcm $REPS >> $OUT 2>&1
    done
  done
done
