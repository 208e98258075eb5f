#!/bin/bash
# callgrind per round: cg.sh PYTHON PYTHONPATH OUTDIR LABEL LOOP ROW [N]
# Writes OUTDIR/cg.LABEL.ROW.{1,2}.out; the round's cost is the difference of their totals.
PY=$1; PP=$2; OUT=$3; label=$4; loop=$5; row=$6; n=${7:-10000}
D=$(dirname "$0")
mkdir -p $OUT
for r in 1 2; do
  PYTHONHASHSEED=0 PYTHONPATH=$PP valgrind --tool=callgrind --callgrind-out-file=$OUT/cg.$label.$row.$r.out $PY $D/cg.py $loop $row $r $n > $OUT/cg.$label.$row.$r.log 2>&1
done
a=$(grep -m1 "^summary:\|^totals:" $OUT/cg.$label.$row.1.out | awk '{print $2}')
b=$(grep -m1 "^summary:\|^totals:" $OUT/cg.$label.$row.2.out | awk '{print $2}')
echo "$label $row n=$n round=$((b-a))" >> $OUT/cg.results
