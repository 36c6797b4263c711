#!/usr/bin/env bash
# Instruction counts of the ferrule-tcp pair for a FIXED amount of work, for before/after
# comparisons on a busy machine (callgrind counts instructions, not seconds): N new
# connections, N keep-alive requests, M MiB downloaded, each through a fresh pair whose proxies
# run under valgrind --tool=callgrind (counters zeroed after start-up and a warm-up).
#   benches/count.sh        COUNT_SCENARIOS="conn req bulk upload" COUNT_CONN_N=200 COUNT_REQ_N=10000 COUNT_BULK_MIB=64
#   COUNT_TOOL=cpu benches/count.sh    same fixed work, larger, without valgrind: CPU time of the
#                                      proxies from /proc, user and kernel (µs per unit)
# Needs built release binaries (benches/run.sh builds them; or
# RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --target x86_64-unknown-linux-gnu --bins)
# and nginx. Prints scenario, proxy, total Ir, units, Ir per unit; data in
# $FERRULE_BENCH_STATE/results/count-*/count/, per-unit figures appended to benches/results/count.tsv.
# User space only: syscalls are not counted.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib/solo.sh
source "$HERE/lib/solo.sh"
solo_run count
cpu=0
if [[ ${COUNT_TOOL:-callgrind} == cpu ]]; then
  cpu=1
  printf 'scenario\tproxy\tuser_us/unit\tsys_us/unit\tunits\tcpu_us/unit\n'
else
  printf 'scenario\tproxy\tIr\tunits\tIr/unit\n'
fi
cat "$RESULTS_DIR/count/summary.tsv"
# Keep the per-unit figures with the repository (benches/README.md quotes them): one row per
# scenario and proxy, with the run and the binaries it measured.
[[ -s $HERE/results/count.tsv ]] || printf 'run\tbinaries\tscenario\tproxy\tunits\tper_unit\tunit\n' > "$HERE/results/count.tsv"
awk -v run="$RUN_ID" -v bin="${BIN_DIR:-$HERE/../target/x86_64-unknown-linux-gnu/release}" -v cpu="$cpu" \
  'BEGIN{OFS="\t"} {print run, bin, $1, $2, cpu ? $5 : $4, cpu ? $6 : $5, cpu ? "cpu_us" : "Ir"}' \
  "$RESULTS_DIR/count/summary.tsv" >> "$HERE/results/count.tsv"
