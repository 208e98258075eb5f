#!/bin/bash
# usage: cg.sh label pythonpath loop row
label=$1; pp=$2; loop=$3; row=$4; n=${5:-100000}
for r in 1 2; do
  PYTHONHASHSEED=0 PYTHONPATH=$pp valgrind --tool=callgrind --callgrind-out-file=/tmp/tasks2/cg.$label.$row.$r.out /tmp/bench312/bin/python /tmp/tasks2/cg.py $loop $row $r $n > /tmp/tasks2/cg.$label.$row.$r.log 2>&1
done
a=$(grep -m1 "^summary:\|^totals:" /tmp/tasks2/cg.$label.$row.1.out | awk '{print $2}')
b=$(grep -m1 "^summary:\|^totals:" /tmp/tasks2/cg.$label.$row.2.out | awk '{print $2}')
echo "$label $row n=$n round=$((b-a))" >> /tmp/tasks2/cg.results
