#!/bin/bash
# usage: [CG_CONNS=K] run.sh VARIANT [N]; per request = (Ir(3N) - Ir(N)) / 2N ; VARIANT dir /tmp/floor-cg/VARIANT/python
cd /tmp/floor-cg
v=$1; n=${2:-3000}; k=${CG_CONNS:-1}
for m in $n $((3*n)); do
  CG_CONNS=$k PYTHONHASHSEED=0 PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=/tmp/floor-cg/$v/python nice valgrind --tool=callgrind --callgrind-out-file=/tmp/floor-cg/cg.$v.k$k.$m /root/.pyenv/versions/3.12.1/bin/python3.12 tcp_server.py $m 2> /tmp/floor-cg/log.$v.k$k.$m
done
a=$(grep -m1 "^summary:" cg.$v.k$k.$n | awk '{print $2}'); b=$(grep -m1 "^summary:" cg.$v.k$k.$((3*n)) | awk '{print $2}')
echo "$v k=$k n=$n $a $b $(( (b-a)/(2*n) ))" | tee -a results.txt
