#!/bin/bash
# usage: cg.sh WHICH B  -> prints instructions per post+run: (Ir(200k) - Ir(100k)) / 100k
which=$1; B=$2
ir() { PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=/tmp/xthread5-cg-$which-$B-$1.out /tmp/bench312/bin/python cg.py $which $B $1 2>&1 | grep -o "Collected : [0-9]*" | grep -o "[0-9]*"; }
a=$(ir 100000); b=$(ir 200000)
echo "$which B=$B per_post=$(( (b - a) / 100000 ))"
