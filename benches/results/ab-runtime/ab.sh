#!/usr/bin/env bash
# usage: ab.sh LABEL  (env FERRULE_EXPERIMENT_CT set or not)
set -u
cd /work/main
export PEERS_DIR=/work/shared/peers RUN_ID=ab-$1 RESULTS_DIR=/var/tmp/ferrule-benches/results/ab-$1
FERRULE_UP=1 FERRULE_UP_SECONDS=75 /work/main/benches/lib/ferrule.sh > /tmp/ab-$1.up.log 2>&1 &
for i in $(seq 100); do grep -q "pair up" /tmp/ab-$1.up.log && break; sleep 0.3; done
OUT=$(grep -o "out pid [0-9]*" /tmp/ab-$1.up.log | awk '{print $3}'); IN=$(grep -o "in pid [0-9]*" /tmp/ab-$1.up.log | awk '{print $3}')
cpu() { awk '{print $14+$15}' /proc/$OUT/stat /proc/$IN/stat | paste -sd+ | bc; }
oha --no-tui -z 2s -c 16 -q 500 http://127.0.0.1:22110/ >/dev/null 2>&1
for r in 500 2000; do
  c0=$(cpu); oha --no-tui -z 12s -c 16 -q $r --latency-correction --output-format json http://127.0.0.1:22110/ > /tmp/ab-$1-lat$r.json 2>/dev/null; c1=$(cpu)
  python3 -c "import json;d=json.load(open('/tmp/ab-$1-lat$r.json'));p=d['latencyPercentiles'];print('$1 lat$r p50 %.3f p99 %.3f ms' % (p['p50']*1e3,p['p99']*1e3))"
  echo "$1 lat$r pair vCPU/1k rps: $(echo "scale=4; ($c1-$c0)/100/12/($r/1000)" | bc)"
done
c0=$(cpu); wrk -t2 -c64 -d10s http://127.0.0.1:22110/ > /tmp/ab-$1-wrk.txt; c1=$(cpu)
rps=$(awk '/Requests\/sec/{print $2}' /tmp/ab-$1-wrk.txt); echo "$1 wrk rps $rps pair cpu us/req $(echo "scale=2; ($c1-$c0)/100/10/$rps*1000000" | bc)"
wait
