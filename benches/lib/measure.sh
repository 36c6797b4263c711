# shellcheck shell=bash
# Measurement functions of the peer harness, COPIED VERBATIM from /work/shared/peers/run.sh
# (the shared, read-only reference harness) so that the Ferrule pairs are measured with exactly
# the same tools, parameters, CPU/RSS accounting and parsers as direct/Envoy/HAProxy.
# Do not edit these bodies: lib/ferrule.sh checks at start that each one still matches the
# shared copy and warns (and records the drift in env.txt) if it does not.
# Sourced by lib/ferrule.sh after lib/common.sh; expects the same globals as run.sh
# (WORK, RESULTS_TSV, RUN_ID, PIDS, PROXIES, ADMIN, FRONT_HTTP, FRONT_BULK, the knobs, $PY, tool paths).

# Names of the functions below (used by the drift check).
MEASURE_FUNCS="proxy_pids wait_quiet harness_pids snap_times child_ticks cpu_begin cpu_end oha_run test_latency test_wrk test_connrate envoy_stats_snapshot test_iperf test_bulk_http rss_report"

proxy_pids() { local n; for n in "${PROXIES[@]}"; do echo "${PIDS[$n]}"; done; }

# Background-load guard. This box may be shared: before each measured test wait (bounded) until the
# whole machine is quiet, and after it report how much CPU went to processes outside the harness.
: "${QUIET_PCT:=10}"        # max background busy% (of all CPUs) tolerated before starting a test
: "${QUIET_MAX_WAIT:=120}"  # give up waiting after this many seconds (the test then runs, flagged)
wait_quiet() {
  local waited=0 b0 t0 b1 t1 pct
  while :; do
    read -r b0 t0 _ < <(sys_ticks); sleep 2; read -r b1 t1 _ < <(sys_ticks)
    pct=$(awk -v a="$b0" -v b="$b1" -v c="$t0" -v d="$t1" 'BEGIN{printf "%.0f", 100*(b-a)/(d-c)}')
    ((pct <= QUIET_PCT)) && return 0
    ((waited >= QUIET_MAX_WAIT)) && { log "box still ${pct}% busy after ${waited}s wait; measuring anyway"; return 0; }
    log "box ${pct}% busy (not us); waiting"; sleep 3; waited=$((waited + 5))
  done
}

harness_pids() { # proxies + upstream (nginx master/workers, iperf3 server): everything we run besides the load tool
  local n
  for n in "${!PIDS[@]}"; do echo "${PIDS[$n]}"; done
  [[ -n ${PIDS[nginx]:-} ]] && ps -o pid= --ppid "${PIDS[nginx]}"
  return 0
}

# CPU of reaped children of this shell (the load generators), in clock ticks. `times` must run in
# the main shell (a $(...) subshell would report its own, empty, child counters).
snap_times() { times > "$WORK/run/times.$1"; }

child_ticks() {
  awk -v hz="$CLK_TCK" 'NR==2{ split($1,u,"m"); split($2,s,"m"); sub("s","",u[2]); sub("s","",s[2]);
     printf "%d", (u[1]*60+u[2]+s[1]*60+s[2])*hz }' "$WORK/run/times.$1"
}

# cpu_begin / cpu_end CONFIG PREFIX: proxy CPU, whole-box busy%, and foreign busy% over a test.
# foreign = all busy ticks (incl. irq/softirq, which tick accounting also charges to the running task)
#           - harness processes (proxies, upstream, load tool) - kernel threads (ksoftirqd, kworker...)
cpu_begin() {
  wait_quiet
  HP=($(harness_pids)); H0=$(cpu_ticks "${HP[@]}"); snap_times 0; K0=$($PY tools/foreign.py)
  CPU0=$(cpu_ticks $(proxy_pids)); read -r SB0 ST0 _ < <(sys_ticks); T0=$(date +%s.%N)
}

cpu_end() { # CONFIG PREFIX
  local c1 sb1 st1 t1 h1 l1 l0 k1
  c1=$(cpu_ticks $(proxy_pids)); read -r sb1 st1 _ < <(sys_ticks); t1=$(date +%s.%N)
  h1=$(cpu_ticks "${HP[@]}"); snap_times 1; k1=$($PY tools/foreign.py)
  l0=$(child_ticks 0); l1=$(child_ticks 1)
  CPU_S=$(awk -v a="$CPU0" -v b="$c1" -v hz="$CLK_TCK" 'BEGIN{printf "%.3f", (b-a)/hz}')
  WALL_S=$(awk -v a="$T0" -v b="$t1" 'BEGIN{printf "%.3f", b-a}')
  BUSY=$(awk -v a="$SB0" -v b="$sb1" -v c="$ST0" -v d="$st1" 'BEGIN{printf "%.1f", 100*(b-a)/(d-c)}')
  FOREIGN=$(awk -v a="$SB0" -v b="$sb1" -v c="$ST0" -v d="$st1" -v h="$((h1 - H0 + l1 - l0 + k1 - K0))" \
    'BEGIN{f=100*((b-a)-h)/(d-c); if (f<0) f=0; printf "%.1f", f}')
  if ((${#PROXIES[@]})); then emit "$1" "$2.proxy_cpu_cores" "$(awk -v c="$CPU_S" -v w="$WALL_S" 'BEGIN{printf "%.3f", c/w}')" cores; fi
  emit "$1" "$2.box_busy_pct" "$BUSY" "%"
  emit "$1" "$2.foreign_busy_pct" "$FOREIGN" "%"
}

oha_run() { # OUTJSON ARGS... (bounded by -z and timeout)
  local out=$1; shift
  timeout 120 "$OHA_BIN" --no-tui -w --output-format json "$@" > "$out" 2>"$out.err" || log "oha rc=$? (see $out.err)"
}

test_latency() { # CONFIG RATE
  local c=$1 r=$2 f="$WORK/out/$c-lat$r.json" k v
  cpu_begin
  oha_run "$f" -z "${LAT_SECONDS}s" -c "$LAT_CONNS" -q "$r" --latency-correction "http://127.0.0.1:$FRONT_HTTP/"
  cpu_end "$c" "lat$r"
  while read -r k v; do
    case $k in
      p50_ms|p90_ms|p99_ms|p999_ms) emit "$c" "lat$r.$k" "$v" ms ;;
      rps) emit "$c" "lat$r.achieved_rps" "$v" req/s ;;
      errors|non_2xx) [[ $v == 0 ]] || emit "$c" "lat$r.$k" "$v" count ;;
    esac
  done < <($PY tools/parse.py oha "$f")
  if ((${#PROXIES[@]})); then
    emit "$c" "lat$r.proxy_vcpu_per_1krps_pair" "$(awk -v c="$CPU_S" -v w="$WALL_S" -v r="$r" 'BEGIN{printf "%.3f", (c/w)/(r/1000)}')" vCPU
  fi
}

test_wrk() { # CONFIG
  local c=$1 f="$WORK/out/$c-wrk.txt" k v
  cpu_begin
  timeout $((WRK_SECONDS + 30)) "$WRK_BIN" -t "$WRK_THREADS" -c "$WRK_CONNS" -d "${WRK_SECONDS}s" --latency \
    "http://127.0.0.1:$FRONT_HTTP/" > "$f" 2>&1 || log "wrk rc=$?"
  cpu_end "$c" "wrk"
  while read -r k v; do
    case $k in
      rps) emit "$c" "wrk.max_rps" "$v" req/s ;;
      p50_ms|p99_ms) emit "$c" "wrk.$k" "$v" ms ;;
      errors|non_2xx) [[ $v == 0 ]] || emit "$c" "wrk.$k" "$v" count ;;
    esac
  done < <($PY tools/parse.py wrk "$f")
}

test_connrate() { # CONFIG   (every request on a fresh client connection)
  local c=$1 f="$WORK/out/$c-conn.json" k v
  envoy_stats_snapshot "$c" before
  cpu_begin
  oha_run "$f" -z "${CONN_SECONDS}s" -c "$CONN_CONNS" --disable-keepalive "http://127.0.0.1:$FRONT_HTTP/"
  cpu_end "$c" "conn"
  while read -r k v; do
    case $k in
      rps) emit "$c" "conn.new_conn_rps" "$v" conn/s ;;
      p50_ms|p99_ms) emit "$c" "conn.$k" "$v" ms ;;
      errors|non_2xx) [[ $v == 0 ]] || emit "$c" "conn.$k" "$v" count ;;
    esac
  done < <($PY tools/parse.py oha "$f")
  envoy_stats_snapshot "$c" after
  if ((${#ADMIN[@]})); then  # handshakes actually performed on the mesh hop (server side = envoy-in)
    local hb ha rb ra
    hb=$(awk '$1=="handshake"{print $2}' "$WORK/out/$c-ssl-in-before.txt"); ha=$(awk '$1=="handshake"{print $2}' "$WORK/out/$c-ssl-in-after.txt")
    rb=$(awk '$1=="session_reused"{print $2}' "$WORK/out/$c-ssl-in-before.txt"); ra=$(awk '$1=="session_reused"{print $2}' "$WORK/out/$c-ssl-in-after.txt")
    emit "$c" "conn.mesh_handshakes" "$(( ${ha:-0} - ${hb:-0} ))" count
    emit "$c" "conn.mesh_resumed" "$(( ${ra:-0} - ${rb:-0} ))" count
  fi
}

envoy_stats_snapshot() { # CONFIG TAG
  ((${#ADMIN[@]})) || return 0
  curl -s -m 5 "http://127.0.0.1:${ADMIN[1]}/stats" > "$WORK/out/$1-stats-in-$2.raw" || true
  $PY tools/parse.py envoy_ssl "$WORK/out/$1-stats-in-$2.raw" > "$WORK/out/$1-ssl-in-$2.txt"
}

test_iperf() { # CONFIG STREAMS
  local c=$1 p=$2 f="$WORK/out/$c-iperf$2.json" k v
  [[ -n $FRONT_BULK ]] || return 0
  start_bg iperf3-srv "$WORK/logs/iperf3-srv.log" "$IPERF3_BIN" -s -1 -p "$P_UP_IPERF" --idle-timeout 60
  wait_port "$P_UP_IPERF"
  cpu_begin
  timeout $((IPERF_SECONDS + 30)) "$IPERF3_BIN" -c 127.0.0.1 -p "$FRONT_BULK" -t "$IPERF_SECONDS" -P "$p" -J > "$f" 2>&1 || log "iperf3 rc=$?"
  cpu_end "$c" "iperf_P$p"
  stop_name iperf3-srv
  while read -r k v; do
    if [[ $k == gbps ]]; then emit "$c" "iperf_P$p.gbit_s" "$v" Gbit/s; fi
  done < <($PY tools/parse.py iperf "$f")
}

test_bulk_http() { # CONFIG  (BULK_REPS x one ${BULK_MB}-MiB HTTP download on a fresh connection; median; works for L7 too)
  local c=$1 bps all=() i
  cpu_begin
  for ((i = 0; i < BULK_REPS; i++)); do
    bps=$(timeout 60 curl -s -o /dev/null -m 50 -w '%{speed_download}' "http://127.0.0.1:$FRONT_HTTP/bulk" || echo 0)
    all+=("$bps")
  done
  cpu_end "$c" "bulk_http"
  emit "$c" "bulk_http.gbit_s" "$(printf '%s\n' "${all[@]}" | sort -g | awk '{v[NR]=$1} END{printf "%.3f", v[int((NR+1)/2)]*8/1e9}')" Gbit/s
}

rss_report() { # CONFIG TAG(idle|peak)
  local c=$1 n pid sum=0 v
  for n in "${PROXIES[@]}"; do
    pid=${PIDS[$n]}
    if [[ $2 == idle ]]; then v=$(rss_kb "$pid"); else v=$(hwm_kb "$pid"); fi
    emit "$c" "rss_$2.$n" "$(awk -v k="$v" 'BEGIN{printf "%.1f", k/1024}')" MiB
    # anonymous (private, non-file) resident memory: what each extra sidecar really costs
    emit "$c" "anon_$2.$n" "$(awk '/^RssAnon:/{printf "%.1f", $2/1024}' "/proc/$pid/status")" MiB
    sum=$((sum + v))
  done
}

