#!/bin/bash
label=$1; pp=$2; loop=$3; row=$4; n=${5:-100000}; hi=${6:-4}
for r in $hi; do
  PYTHONHASHSEED=0 PYTHONPATH=$pp valgrind --tool=callgrind --callgrind-out-file=/tmp/tasks2/cg.$label.$row.$r.out /tmp/bench312/bin/python /tmp/tasks2/cg.py $loop $row $r $n > /tmp/tasks2/cg.$label.$row.$r.log 2>&1
done
