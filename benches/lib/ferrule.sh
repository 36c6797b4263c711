#!/usr/bin/env bash
# Ferrule pairs measured exactly like the peer harness measures direct/Envoy/HAProxy
# (same tools, parameters, CPU/RSS accounting and parsers: lib/measure.sh is a verbatim copy of
# the shared run.sh's measurement functions), plus Ferrule-only tests:
#   ferrule-tcp   pair in explicit mode, opaque port
#   ferrule-http  same pair with the port declared `protocol: http`
#   ferrule-tcp-nopool  (opt-in, FERRULE_CONFIGS) ferrule-tcp with `outbound.pool: false`: one mTLS
#                 connection per application connection (ALPN ferrule/1), to see what pooling costs
#   floor-relay   two blocking thread-per-direction relays, no TLS: the floor of any user-space pair
#   tls-floor-relay  the same plus TLS 1.3 (rustls handshake with Ferrule's config, records sealed and
#                 opened in place): the floor of any pair that encrypts in user space (lib/relay.sh)
#   plain-relay   (RELAY_CONFIGS) two plain-TCP relays on the proxy's copy loop, no TLS (lib/relay.sh)
#   ferrule-idle  memory per idle established connection (1,000 and 10,000 through the pair)
#   ferrule-cp    certificates issued per second by the control plane (Certify, join tokens), and
#                 policy propagation: ApplyPolicies -> enforcement through a real pair, and -> 1 / 100 /
#                 1,000 connected simulated proxies (FERRULE_PROPAGATE_ONLY=1: only this, ~15 s)
#   physical      the machine's limits (lib/physical.sh: the shared tools/physical.sh's openssl speed and loopback iperf3, trimmed)
# Appends rows (run, config, metric, value, unit) to $RESULTS_TSV for $RUN_ID. Called by run.sh.
# Loopback only. Every load is bounded (duration flags + `timeout`). Only processes started
# here are signalled, by PID.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)   # benches/
cd "$HERE"
# Same priority as the shared harness gives itself (NICE=0 disables).
: "${NICE:=-10}"
if [[ -z ${PEERS_NICED:-} && $NICE != 0 ]] && nice -n "$NICE" true 2>/dev/null; then
  exec nice -n "$NICE" env PEERS_NICED=1 "$HERE/lib/ferrule.sh" "$@"   # $0 may be relative to the old cwd
fi
# shellcheck source=lib/common.sh
source lib/common.sh
# shellcheck source=lib/measure.sh
source lib/measure.sh

# ---------------------------------------------------------------- knobs (same names/defaults as the shared run.sh;
# benches/run.sh exports its shorter durations, so these defaults apply only when run alone)
: "${RATES:=500 2000}"; : "${LAT_SECONDS:=20}"; : "${LAT_CONNS:=16}"
: "${WRK_SECONDS:=15}"; : "${WRK_THREADS:=2}"; : "${WRK_CONNS:=64}"
: "${CONN_SECONDS:=10}"; : "${CONN_CONNS:=16}"
: "${IPERF_SECONDS:=10}"; : "${IPERF_STREAMS:=1 4}"
: "${BULK_MB:=1024}"; : "${BULK_REPS:=3}"
: "${NGINX_WORKERS:=1}"; : "${ENVOY_CONCURRENCY:=1}"
: "${TRUST_DOMAIN:=demo.local}"
: "${PEERS_STATE:=${XDG_CACHE_HOME:-$HOME/.cache}/ferrule-peers}"
: "${WRK_BIN:=wrk}"; : "${IPERF3_BIN:=iperf3}"; : "${NGINX_BIN:=nginx}"
: "${PY:=python3}"
# Ferrule knobs
: "${FERRULE_CONFIGS:=ferrule-tcp ferrule-http}"
: "${FERRULE_WORKERS:=$ENVOY_CONCURRENCY}"   # tokio worker threads per proxy (TOKIO_WORKER_THREADS); = Envoy's --concurrency
: "${FERRULE_IDLE:=1}"; : "${IDLE_COUNTS:=1000 10000 10000}"   # waves; a repeated count shows reused memory
: "${IDLE_LOCAL_COUNTS:=1000 1000}"   # baseline: the copy loop alone, in-process, plain TCP
: "${FERRULE_CERTIFY:=1}"; : "${CERT_SECONDS:=10}"; : "${CERT_CONCURRENCY:=8}"
# Policy propagation (ferrule-bench-propagate): rounds of PROPAGATE_CHANGES changes (each round bounded
# by PROPAGATE_SECONDS) with 1, 100, 1,000 simulated proxies connected; PROPAGATE_CYCLES DENY/undo
# cycles through a real pair first. A change that misses a proxy for PROPAGATE_TIMEOUT s fails it.
: "${FERRULE_PROPAGATE:=1}"; : "${PROPAGATE_COUNTS:=1 100 1000}"; : "${PROPAGATE_CHANGES:=20}"
: "${PROPAGATE_SECONDS:=5}"; : "${PROPAGATE_CYCLES:=10}"; : "${PROPAGATE_TIMEOUT:=10}"; : "${PROPAGATE_MAX_SECONDS:=150}"
: "${FERRULE_PHYSICAL:=1}"; : "${PHYS_SPEED_SECONDS:=1}"; : "${PHYS_IPERF_SECONDS:=3}"
: "${PROXY_WRAPPER:=}"          # command prefix for the proxies (profile.sh: valgrind/perf)
: "${F_BASE_PORT:=22000}"    # ports F_BASE+6..F_BASE+201 and F_BASE+443 on 127.0.0.1
: "${BIN_DIR:=$HERE/../target/x86_64-unknown-linux-gnu/release}"
# The open-loop load tool, oha's command line (benches/run.sh's LOAD_TOOL): ours unless set.
: "${OHA_BIN:=$BIN_DIR/ferrule-bench-oha}"
: "${PEERS_DIR:?set PEERS_DIR to the shared peer harness}"
: "${RESULTS_DIR:?}"; : "${RUN_ID:?}"
: "${WORK:=$RESULTS_DIR/ferrule-work}"
RESULTS_TSV=$RESULTS_DIR/results.tsv
PROXY_BIN=$BIN_DIR/ferrule-proxy CP_BIN=$BIN_DIR/ferrule-control-plane CTL_BIN=$BIN_DIR/ferrulectl
HOLD_BIN=$BIN_DIR/ferrule-bench-hold CERTIFY_BIN=$BIN_DIR/ferrule-bench-certify PROPAGATE_BIN=$BIN_DIR/ferrule-bench-propagate
# Simulated proxy i registers inbound port PROPAGATE_PORT_BASE + i (registry entries only: nothing listens).
: "${PROPAGATE_PORT_BASE:=$((F_BASE_PORT + 1000))}"

export WORK TRUST_DOMAIN NGINX_WORKERS
export CERTS=$WORK/certs CP_DIR=$WORK/cp
export P_UP_HTTP=$((F_BASE_PORT + 80)) P_UP_IPERF=$((F_BASE_PORT + 201))
export P_F_IN_MESH=$((F_BASE_PORT + 6)) P_F_OUT_MESH=$((F_BASE_PORT + 16))
export P_F_IN_ADMIN=$((F_BASE_PORT + 100)) P_F_OUT_ADMIN=$((F_BASE_PORT + 101))
export P_F_OUT_HTTP=$((F_BASE_PORT + 110)) P_F_OUT_BULK=$((F_BASE_PORT + 112)) P_F_OUT_HOLD=$((F_BASE_PORT + 114))
export P_F_SINK=$((F_BASE_PORT + 120)) P_F_CP=$((F_BASE_PORT + 443)) P_F_CP_METRICS=$((F_BASE_PORT + 90))
export P_PHYS_IPERF=$((F_BASE_PORT + 199)) P_F_LOCAL=$((F_BASE_PORT + 130)) P_F_LOCAL_SINK=$((F_BASE_PORT + 131))
export FERRULE_ADMIN_SOCKET=$CP_DIR/admin.sock
BODY_1K=$(head -c 1024 /dev/zero | tr '\0' 'x'); export BODY_1K

LOAD_BIN=$BIN_DIR/ferrule-bench-load
# shellcheck source=lib/relay.sh
source lib/relay.sh
NEEDED=("$OHA_BIN" "$WRK_BIN" "$IPERF3_BIN" "$NGINX_BIN" "$PROXY_BIN" "$CP_BIN" "$CTL_BIN" "$HOLD_BIN" "$CERTIFY_BIN" "$RELAY_BIN" "$PROPAGATE_BIN" openssl curl ss perl "$PY")
# count.sh needs only nginx, the Ferrule binaries, the fixed-work load tool and valgrind.
[[ ${FERRULE_PROPAGATE_ONLY:-0} == 1 ]] && NEEDED=("$NGINX_BIN" "$PROXY_BIN" "$CP_BIN" "$CTL_BIN" "$PROPAGATE_BIN" openssl curl ss perl "$PY")
# paired.sh's pair (FERRULE_UP) runs no load: paired.sh checks the load tools its tests use.
[[ ${FERRULE_UP:-0} == 1 ]] && NEEDED=("$NGINX_BIN" "$PROXY_BIN" "$CP_BIN" "$CTL_BIN" openssl curl ss perl "$PY")
[[ ${FERRULE_COUNT:-0} == 1 ]] && NEEDED=("$NGINX_BIN" "$PROXY_BIN" "$CP_BIN" "$CTL_BIN" "$LOAD_BIN" "$IPERF3_BIN" valgrind callgrind_control openssl curl ss perl "$PY")
for b in "${NEEDED[@]}"; do
  command -v "$b" >/dev/null || die "missing tool: $b (run benches/run.sh, which installs and builds everything)"
done
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
trap 'stop_all' EXIT
trap 'log "interrupted"; exit 130' INT TERM

# ---------------------------------------------------------------- drift check against the shared harness
func_text() { # FILE NAME : text of shell function NAME in FILE (header line to the first line that is "}")
  awk -v f="$2" 'p == 0 && $0 ~ "^" f "\\(\\) *\\{" {p = 1; print; if ($0 ~ /}$/) exit; next} p {print; if ($0 == "}") exit}' "$1"
}
DRIFT=""
for f in $MEASURE_FUNCS; do
  if ! diff -q <(func_text "$PEERS_DIR/run.sh" "$f") <(func_text lib/measure.sh "$f") >/dev/null; then
    DRIFT+="$f "
  fi
done
[[ -z $DRIFT ]] || log "WARNING: measurement functions differ from $PEERS_DIR/run.sh: $DRIFT(re-copy them into lib/measure.sh)"

# ---------------------------------------------------------------- infrastructure
setup_work() {
  rm -rf "$WORK"; mkdir -p "$WORK"/{run,logs,conf,www,out}
  # Certificates from an unrelated CA, only used to check that the inbound port refuses them.
  lib/certs.sh "$CERTS" "$TRUST_DOMAIN" >/dev/null 2>&1
  truncate -s "${BULK_MB}M" "$WORK/www/bulk.bin"
}

start_upstream() {
  render conf/nginx-upstream.conf.tmpl "$WORK/conf/nginx.conf"
  start_bg nginx "$WORK/logs/nginx.out" "$NGINX_BIN" -p "$WORK" -c "$WORK/conf/nginx.conf" -e "$WORK/logs/nginx-error.log"
  wait_port "$P_UP_HTTP"
}

start_control_plane() {
  start_bg cp "$WORK/logs/control-plane.log" "$CP_BIN" --data-dir "$CP_DIR" --trust-domain "$TRUST_DOMAIN" \
    --listen "127.0.0.1:$P_F_CP" --metrics-listen "127.0.0.1:$P_F_CP_METRICS" --svid-ttl 1h
  local i
  for ((i = 0; i < 300; i++)); do
    [[ -S $FERRULE_ADMIN_SOCKET && -s $CP_DIR/bundle.pem ]] && ss -Hltn "sport = :$P_F_CP" | grep -q . && return 0
    kill -0 "${PIDS[cp]}" 2>/dev/null || break
    sleep 0.1
  done
  tail -20 "$WORK/logs/control-plane.log" >&2
  die "control plane did not start"
}

new_token() { # SA-NAME USES OUT
  (umask 077; "$CTL_BIN" token create --spiffe-id "spiffe://$TRUST_DOMAIN/ns/default/sa/$1" --ttl 30m --uses "$2" > "$3") \
    || die "ferrulectl token create failed"
}

wait_ready() { # NAME ADMIN_PORT
  local i code
  for ((i = 0; i < ${READY_TRIES:-300}; i++)); do
    code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$2/ready" || true)
    [[ $code == 200 ]] && return 0
    kill -0 "${PIDS[$1]}" 2>/dev/null || break
    sleep 0.1
  done
  tail -20 "$WORK/logs/$1.log" >&2
  die "$1 not ready on 127.0.0.1:$2 (last /ready: $code)"
}

start_proxy() { # NAME CONFIG-FILE SA-NAME ADMIN-PORT
  local tok="$WORK/run/$1.token"
  new_token "$3" 1 "$tok"
  # shellcheck disable=SC2086  # PROXY_WRAPPER is a word list on purpose
  start_bg "$1" "$WORK/logs/$1.log" env TOKIO_WORKER_THREADS="$FERRULE_WORKERS" $PROXY_WRAPPER "$PROXY_BIN" run \
    --trust-domain "$TRUST_DOMAIN" --control-plane "127.0.0.1:$P_F_CP" --bundle-file "$CP_DIR/bundle.pem" \
    --join-token-file "$tok" --spiffe-id "spiffe://$TRUST_DOMAIN/ns/default/sa/$3" \
    --admin-listen "127.0.0.1:$4" --config "$2"
}

# Sets FRONT_HTTP, FRONT_BULK, PROXIES, ADMIN, INBOUND like the shared start_config.
start_ferrule() { # CONFIG
  local c=$1
  export F_HTTP_PROTOCOL=opaque
  [[ $c == ferrule-http* ]] && F_HTTP_PROTOCOL=http
  render conf/ferrule-in.yaml.tmpl "$WORK/conf/ferrule-in.yaml"
  render conf/ferrule-out.yaml.tmpl "$WORK/conf/ferrule-out.yaml"
  if [[ $c == *-nopool ]]; then   # ferrule/1: no pooled mesh connections
    sed -i 's/^outbound:$/outbound:\n  pool: false/' "$WORK/conf/ferrule-out.yaml"
    grep -q '^  pool: false$' "$WORK/conf/ferrule-out.yaml" || die "could not turn pooling off in $WORK/conf/ferrule-out.yaml"
  fi
  start_proxy ferrule-in "$WORK/conf/ferrule-in.yaml" server "$P_F_IN_ADMIN"
  wait_ready ferrule-in "$P_F_IN_ADMIN"
  start_proxy ferrule-out "$WORK/conf/ferrule-out.yaml" client "$P_F_OUT_ADMIN"
  wait_ready ferrule-out "$P_F_OUT_ADMIN"
  FRONT_HTTP=$P_F_OUT_HTTP; FRONT_BULK=$P_F_OUT_BULK; INBOUND=$P_F_IN_MESH
  PROXIES=(ferrule-out ferrule-in); ADMIN=()   # ADMIN is Envoy's stats port in the shared functions
}

stop_ferrule() { local n; for n in "${PROXIES[@]}"; do stop_name "$n"; done; PROXIES=(); }

metric_sum() { # ADMIN_PORT REGEX : sum of the Prometheus samples whose line matches REGEX
  curl -s -m 5 "http://127.0.0.1:$1/metrics" | awk -v re="$2" '$0 ~ re && $0 !~ /^#/ {s += $NF} END {printf "%d", s}'
}

# ---------------------------------------------------------------- checks
ferrule_sanity_check() { # CONFIG
  local c=$1 url="http://127.0.0.1:$FRONT_HTTP/" code=000 size=0 i
  # Discovery may reach the client proxy a moment after /ready: retry for up to 10 s.
  for ((i = 0; i < 50; i++)); do
    read -r code size < <(curl -s -o /dev/null -m 5 -w '%{http_code} %{size_download}\n' "$url" || echo "000 0")
    [[ $code == 200 && $size == 1024 ]] && break
    sleep 0.2
  done
  [[ $code == 200 && $size == 1024 ]] || die "$c: sanity GET $url -> $code/$size"
  # Identity enforcement at the inbound (mesh) port: a client without a certificate and a client
  # whose certificate chains to another CA are refused, each counted with its reason. (The
  # legitimate path, client identity -> pinned server identity, is the GET above.)
  local req='FRL1\x1f\x90\x00\x00GET /small HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' f0 f1 nocert foreign
  f0=$(metric_sum "$P_F_IN_ADMIN" '^ferrule_proxy_connection_failures_total')
  nocert=$(printf "$req" | timeout 5 openssl s_client -quiet -connect "127.0.0.1:$INBOUND" -alpn ferrule/1 \
    -CAfile "$CP_DIR/bundle.pem" 2>/dev/null | head -1 || true)
  foreign=$(printf "$req" | timeout 5 openssl s_client -quiet -connect "127.0.0.1:$INBOUND" -alpn ferrule/1 \
    -cert "$CERTS/client.crt" -key "$CERTS/client.key" -CAfile "$CP_DIR/bundle.pem" 2>/dev/null | head -1 || true)
  [[ $nocert != HTTP/1.1\ 200* ]] || die "$c: inbound ACCEPTED a client without certificate"
  [[ $foreign != HTTP/1.1\ 200* ]] || die "$c: inbound ACCEPTED a certificate from a foreign CA"
  sleep 0.3
  f1=$(metric_sum "$P_F_IN_ADMIN" '^ferrule_proxy_connection_failures_total')
  ((f1 - f0 >= 2)) || die "$c: the inbound proxy did not count the two refused handshakes ($f0 -> $f1)"
  log "$c: identity checks OK (pair GET ok; no-cert and foreign-CA clients refused: $(curl -s -m 5 "http://127.0.0.1:$P_F_IN_ADMIN/metrics" | grep '^ferrule_proxy_connection_failures_total' | sed 's/.*reason="\([^"]*\)".*/\1/' | sort -u | tr '\n' ' '))"
}

# ---------------------------------------------------------------- Ferrule-only diagnostics
# User/system CPU split of the pair over a test, and CPU per unit of work. (Syscall counts come
# from profile.sh: /proc/PID/io does not count socket send/recv, and tracing them here would slow
# the measured pair.)
diag_snap() { # -> "utime stime minflt" (clock ticks, page faults; both proxies)
  local p ut=0 st=0 fl=0 a b c
  for p in $(proxy_pids); do
    read -r a b c < <(awk '{print $14, $15, $10}' "/proc/$p/stat")
    ut=$((ut + a)); st=$((st + b)); fl=$((fl + c))
  done
  echo "$ut $st $fl"
}
diag_emit() { # CONFIG PREFIX "BEFORE" "AFTER" UNITS UNIT-NAME
  local c=$1 pre=$2 units=$5 uname=$6 u0 t0 f0 u1 t1 f1
  read -r u0 t0 f0 <<< "$3"; read -r u1 t1 f1 <<< "$4"
  awk -v u="$units" 'BEGIN{exit !(u > 0)}' || return 0
  emit "$c" "$pre.proxy_cpu_us_per_$uname" "$(awk -v t=$((u1 - u0 + t1 - t0)) -v hz="$CLK_TCK" -v u="$units" 'BEGIN{printf "%.2f", t/hz*1e6/u}')" "us"
  emit "$c" "$pre.proxy_user_pct" "$(awk -v a=$((u1 - u0)) -v b=$((t1 - t0)) 'BEGIN{printf "%.1f", (a+b) ? 100*a/(a+b) : 0}')" "%"
  # Minor page faults of both proxies per unit: heap memory handed back to the kernel and
  # faulted in again (src/memory.rs) shows here.
  emit "$c" "$pre.proxy_minflt_per_$uname" "$(awk -v f=$((f1 - f0)) -v u="$units" 'BEGIN{printf "%.2f", f/u}')" "count"
}

# ---------------------------------------------------------------- one config (mirrors the shared run_config)
run_ferrule_config() { # CONFIG
  local c=$1 r p d0 d1 n h0 h1 k0 k1 f0 f1
  log "=== config $c (run $RUN_ID) ==="
  start_ferrule "$c"
  ferrule_sanity_check "$c"
  sleep 2; rss_report "$c" idle
  # warm-up (not recorded): 3 s at 500 req/s
  timeout 30 "$OHA_BIN" --no-tui -z 3s -c "$LAT_CONNS" -q 500 "http://127.0.0.1:$FRONT_HTTP/" >/dev/null 2>&1 || true
  for r in $RATES; do test_latency "$c" "$r"; done
  d0=$(diag_snap); test_wrk "$c"; d1=$(diag_snap)
  n=$(awk '/requests in/{print $1; exit}' "$WORK/out/$c-wrk.txt"); diag_emit "$c" wrk "$d0" "$d1" "${n:-0}" req
  h0=$(metric_sum "$P_F_IN_ADMIN" '^ferrule_proxy_connections_opened_total\{direction="inbound"')
  k0=$(metric_sum "$P_F_IN_ADMIN" '^ferrule_proxy_mesh_handshakes_total\{direction="inbound"')
  f0=$(metric_sum "$P_F_IN_ADMIN" '^ferrule_proxy_connection_failures_total')
  d0=$(diag_snap); test_connrate "$c"; d1=$(diag_snap)
  h1=$(metric_sum "$P_F_IN_ADMIN" '^ferrule_proxy_connections_opened_total\{direction="inbound"')
  k1=$(metric_sum "$P_F_IN_ADMIN" '^ferrule_proxy_mesh_handshakes_total\{direction="inbound"')
  f1=$(metric_sum "$P_F_IN_ADMIN" '^ferrule_proxy_connection_failures_total')
  # Full handshakes (Ferrule has no resumption). With pooling (ALPN ferrule/2) application
  # connections are streams on a pooled mesh connection: far fewer handshakes than
  # connections; `conn.mesh_connections` counts the application connections carried.
  emit "$c" "conn.mesh_handshakes" "$((k1 - k0))" count
  emit "$c" "conn.mesh_resumed" 0 count
  emit "$c" "conn.mesh_connections" "$((h1 - h0))" count
  ((f1 == f0)) || emit "$c" "conn.mesh_failures" "$((f1 - f0))" count
  diag_emit "$c" conn "$d0" "$d1" "$((h1 - h0))" conn
  # iperf3's port is opaque in every Ferrule config: ferrule-http would repeat ferrule-tcp's
  # byte path exactly, so it is measured once (FERRULE_HTTP_IPERF=1 measures it anyway).
  if [[ $c != ferrule-http* || ${FERRULE_HTTP_IPERF:-0} == 1 ]]; then
    for p in $IPERF_STREAMS; do test_iperf "$c" "$p"; done
  fi
  d0=$(diag_snap); test_bulk_http "$c"; d1=$(diag_snap)
  diag_emit "$c" bulk_http "$d0" "$d1" "$((BULK_MB * BULK_REPS))" mib
  rss_report "$c" peak
  if [[ $c == ferrule-http* ]]; then   # is L7 handling active on the `protocol: http` port yet?
    emit "$c" "l7.http_requests_seen" "$(metric_sum "$P_F_IN_ADMIN" '^ferrule_proxy_http_requests_total')" count
  fi
  stop_ferrule
  sleep 2   # let TIME_WAIT/loopback settle a bit between configs
}

run_idle() { # memory per idle established connection through a fresh pair
  local c=ferrule-idle k v unit n counts="" lim maxn
  # Each proxy needs 2 fds per relayed connection. Without CAP_SYS_RESOURCE the hard fd limit
  # cannot be raised; counts above what it allows are lowered (and the limit is recorded).
  # The proxy itself caps each direction at about (RLIMIT_NOFILE - 64) / 4 connections (two
  # directions, two descriptors each: proxy/src/descriptors.rs); stay under that.
  lim=$(ulimit -n); maxn=$(( (lim - 200) / 4 / 100 * 100 ))
  for n in $IDLE_COUNTS; do
    if ((n > maxn)); then log "fd limit $lim: the proxies cap a direction at ~$(( (lim - 64) / 4 )) connections; using $maxn instead of $n"; n=$maxn; fi
    counts+="${counts:+,}$n"
  done
  emit "$c" "idle.fd_limit" "$lim" count
  log "=== $c: waves of $counts idle established connections through the pair (run $RUN_ID) ==="
  start_ferrule "$c"
  ferrule_sanity_check "$c"
  sleep 2; rss_report "$c" idle
  timeout 600 "$HOLD_BIN" --target "127.0.0.1:$P_F_OUT_HOLD" --sink "127.0.0.1:$P_F_SINK" --timeout 240 \
    --counts "$counts" --pids "${PIDS[ferrule-out]},${PIDS[ferrule-in]}" --names ferrule-out,ferrule-in \
    > "$WORK/out/$c-hold.txt" 2> "$WORK/out/$c-hold.err" || log "hold rc=$? (see $WORK/out/$c-hold.err)"
  rss_report "$c" peak
  stop_ferrule
  # Baseline: the proxy's copy loop alone (no TLS), in one process; 4 sockets per connection there.
  counts=${IDLE_LOCAL_COUNTS// /,}
  timeout 300 "$HOLD_BIN" --local-copy "127.0.0.1:$P_F_LOCAL" --sink "127.0.0.1:$P_F_LOCAL_SINK" \
    --target "127.0.0.1:$P_F_LOCAL" --counts "$counts" --names local-copy --timeout 120 \
    > "$WORK/out/$c-local.txt" 2> "$WORK/out/$c-local.err" || log "hold --local-copy rc=$? (see $WORK/out/$c-local.err)"
  for f in hold:idle local:idle_local; do
    while read -r k v; do
      case $k in
        *_mib.*) unit=MiB ;; *bytes_per_conn*) unit=B ;; *seconds) unit=s ;; *) unit=count ;;
      esac
      emit "$c" "${f#*:}.$k" "$v" "$unit"
    done < "$WORK/out/$c-${f%%:*}.txt"
  done
}

run_certify() { # certificates issued per second
  local c=ferrule-cp tok="$WORK/run/bench.tokens" f="$WORK/out/ferrule-cp-certify.txt" i c0 c1 t0 t1 k v n
  log "=== $c: Certify with join tokens, concurrency $CERT_CONCURRENCY, ${CERT_SECONDS}s (run $RUN_ID) ==="
  : > "$tok"
  for ((i = 0; i < CERT_CONCURRENCY; i++)); do new_token bench 10000 "$tok.$i"; cat "$tok.$i" >> "$tok"; done
  PROXIES=()
  wait_quiet
  emit "$c" "certify.cp_rss_before_mib" "$(awk -v k="$(rss_kb "${PIDS[cp]}")" 'BEGIN{printf "%.1f", k/1024}')" MiB
  c0=$(cpu_ticks "${PIDS[cp]}"); t0=$(date +%s.%N)
  timeout $((${CERT_SECONDS%.*} + 60)) "$CERTIFY_BIN" --control-plane "127.0.0.1:$P_F_CP" --trust-domain "$TRUST_DOMAIN" \
    --bundle-file "$CP_DIR/bundle.pem" --token-file "$tok" --spiffe-id "spiffe://$TRUST_DOMAIN/ns/default/sa/bench" \
    --concurrency "$CERT_CONCURRENCY" --duration "$CERT_SECONDS" > "$f" 2> "$f.err" || log "certify rc=$? (see $f.err)"
  c1=$(cpu_ticks "${PIDS[cp]}"); t1=$(date +%s.%N)
  while read -r k v; do
    case $k in
      certs_per_s) emit "$c" "certify.certs_per_s" "$v" cert/s ;;
      p50_ms|p99_ms) emit "$c" "certify.$k" "$v" ms ;;
      issued|errors) emit "$c" "certify.$k" "$v" count ;;
    esac
  done < "$f"
  n=$(awk '$1=="issued"{print $2}' "$f")
  emit "$c" "certify.cp_cpu_cores" "$(awk -v a="$c0" -v b="$c1" -v hz="$CLK_TCK" -v x="$t0" -v y="$t1" 'BEGIN{printf "%.3f", (b-a)/hz/(y-x)}')" cores
  [[ -n $n && $n != 0 ]] && emit "$c" "certify.cp_cpu_ms_per_cert" "$(awk -v a="$c0" -v b="$c1" -v hz="$CLK_TCK" -v n="$n" -v w="$CERT_CONCURRENCY" 'BEGIN{printf "%.3f", (b-a)/hz*1e3/(n+w)}')" ms
  emit "$c" "certify.cp_rss_after_mib" "$(awk -v k="$(rss_kb "${PIDS[cp]}")" 'BEGIN{printf "%.1f", k/1024}')" MiB
}

run_propagate() { # policy propagation time (ferrule-bench-propagate); its exit status in PROPAGATE_RC
  local c=ferrule-cp tok="$WORK/run/propagate.token" f="$WORK/out/ferrule-propagate.txt" k v unit n max=0 rc=0 counts=""
  # counts: comma-separated for --counts (word splitting drops leading/repeated blanks)
  for n in $PROPAGATE_COUNTS; do max=$((n > max ? n : max)); counts=${counts:+$counts,}$n; done
  log "=== $c: policy propagation: ApplyPolicies -> enforcement through a ferrule-tcp pair ($PROPAGATE_CYCLES DENY/undo cycles), then -> '$PROPAGATE_COUNTS' connected simulated proxies, $PROPAGATE_CHANGES changes or ${PROPAGATE_SECONDS}s each (run $RUN_ID) ==="
  new_token bench-replica "$((max + 10))" "$tok"   # every simulated proxy is a replica of one workload
  start_ferrule ferrule-tcp
  ferrule_sanity_check ferrule-tcp
  wait_quiet
  RUST_BACKTRACE=0 RUST_LIB_BACKTRACE=0 timeout "$((PROPAGATE_MAX_SECONDS + 30))" "$PROPAGATE_BIN" --control-plane "127.0.0.1:$P_F_CP" \
    --trust-domain "$TRUST_DOMAIN" --bundle-file "$CP_DIR/bundle.pem" --admin-socket "$FERRULE_ADMIN_SOCKET" \
    --token-file "$tok" --spiffe-id "spiffe://$TRUST_DOMAIN/ns/default/sa/bench-replica" \
    --counts "$counts" --changes "$PROPAGATE_CHANGES" --seconds "$PROPAGATE_SECONDS" \
    --timeout "$PROPAGATE_TIMEOUT" --inbound-port-base "$PROPAGATE_PORT_BASE" --cp-pid "${PIDS[cp]}" --clk-tck "$CLK_TCK" \
    --probe "127.0.0.1:$FRONT_HTTP" --probe-from "spiffe://$TRUST_DOMAIN/ns/default/sa/client" \
    --probe-to "spiffe://$TRUST_DOMAIN/ns/default/sa/server" --probe-metrics "127.0.0.1:$P_F_IN_ADMIN" \
    --probe-cycles "$PROPAGATE_CYCLES" --max-seconds "$PROPAGATE_MAX_SECONDS" > "$f" 2> "$f.err" || rc=$?
  # Each completed part's lines are valid even if a later one failed.
  while read -r k v; do
    case $k in *_ms|*_ms_per_*) unit=ms ;; *_s) unit=s ;; *_mib) unit=MiB ;; *_cores) unit=cores ;; *) unit=count ;; esac
    emit "$c" "propagate.$k" "$v" "$unit"
  done < "$f"
  if ((rc != 0)); then
    emit "$c" "propagate.failed" 1 count
    log "WARNING: ferrule-bench-propagate FAILED (rc=$rc): $(grep -v '^#' "$f.err" | tr -s '\n ' ' ' | cut -c1-400) (see $f.err)"
  fi
  stop_ferrule
  PROPAGATE_RC=$rc
}

run_physical() { # lib/physical.sh: the shared tools/physical.sh's measurements the report uses (openssl speed on 16 KiB + loopback iperf3)
  local c=physical f="$WORK/out/physical.txt" alg
  log "=== physical limits (lib/physical.sh, SPEED_SECONDS=$PHYS_SPEED_SECONDS IPERF_SECONDS=$PHYS_IPERF_SECONDS) ==="
  SPEED_SECONDS=$PHYS_SPEED_SECONDS IPERF_SECONDS=$PHYS_IPERF_SECONDS PORT=$P_PHYS_IPERF \
    timeout 300 "$HERE/lib/physical.sh" "$WORK/out/physical" > "$f" 2>&1 || log "physical.sh rc=$?"
  for alg in AES-128-GCM AES-256-GCM ChaCha20-Poly1305; do
    emit "$c" "$(tr 'A-Z-' 'a-z_' <<< "$alg").16k_gbit_s" \
      "$(awk -v a="$alg" '$1==a{v=$NF; sub("k","",v); printf "%.2f", v*1000*8/1e9}' "$f")" Gbit/s
  done
  emit "$c" "ecdsa_p256.sign_per_s" "$(awk '/ecdsa \(nistp256\)/{print $(NF-1)}' "$f")" op/s
  emit "$c" "ecdsa_p256.verify_per_s" "$(awk '/ecdsa \(nistp256\)/{print $NF}' "$f")" op/s
  emit "$c" "x25519.ops_per_s" "$(awk '/X25519/{print $NF}' "$f")" op/s
  emit "$c" "loopback_iperf_P1.gbit_s" "$(awk '/-P 1,/{p=1} p && $1=="gbps"{print $2; exit}' "$f")" Gbit/s
  emit "$c" "loopback_iperf_P4.gbit_s" "$(awk '/-P 4,/{p=1} p && $1=="gbps"{print $2; exit}' "$f")" Gbit/s
}

# ---------------------------------------------------------------- profiling (benches/profile.sh)
# Profiles the ferrule-tcp pair under load: `perf record` when hardware counters work
# (`perf stat -e instructions true`), else `valgrind --tool=callgrind` (instruction counts; user
# space only: syscalls and the kernel's TCP work are invisible to it, see the syscall counts).
stop_slow() { # NAME : SIGTERM and wait up to 120 s (a process under valgrind writes its profile on exit)
  local pid=${PIDS[$1]:-} i
  [[ -n $pid ]] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 1200; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  unset "PIDS[$1]"
}
run_profile() {
  local out=$RESULTS_DIR/profile secs=${PROF_SECONDS:-10} tool=callgrind pass sc n pid d0 d1 h0 units perfpids=()
  mkdir -p "$out"
  if perf stat -e instructions true 2>&1 | grep -q instructions && ! perf stat -e instructions true 2>&1 | grep -q 'not supported'; then
    tool=perf
  fi
  : "${PROF_SCENARIOS:=wrk http conn bulk}"   # http = wrk through the ferrule-http pair (L7 port)
  log "profiling with $tool: scenarios $PROF_SCENARIOS, ${secs}s each"
  local passes="$tool"
  [[ ${PROF_SYSCALLS:-1} == 1 ]] && perf trace -s true > /dev/null 2>&1 && passes+=" syscalls"
  for pass in $passes; do
  for sc in $PROF_SCENARIOS; do
    PROXY_WRAPPER=""; READY_TRIES=300
    if [[ $pass == callgrind ]]; then
      PROXY_WRAPPER="valgrind --tool=callgrind --callgrind-out-file=$out/callgrind.$sc.%p.out"; READY_TRIES=1200
    fi
    if [[ $sc == http ]]; then start_ferrule ferrule-http; else start_ferrule ferrule-tcp; fi
    curl -s -o /dev/null -m 30 "http://127.0.0.1:$FRONT_HTTP/" || true
    declare -A pname=(); for n in "${PROXIES[@]}"; do pname[${PIDS[$n]}]=$n; done
    # Count only the load: zero the counters now (start-up, e.g. aws-lc's jitter-entropy seeding
    # and the first certificate, is excluded).
    if [[ $pass == callgrind ]]; then
      for pid in "${!pname[@]}"; do timeout 60 callgrind_control -z "$pid" > /dev/null 2>&1 || log "callgrind_control -z $pid failed"; done
    fi
    h0=$(metric_sum "$P_F_IN_ADMIN" '^ferrule_proxy_connections_opened_total\{direction="inbound"')
    if [[ $pass == perf ]]; then
      perf record -F 499 -g -o "$out/perf.$sc.data" -p "$(proxy_pids | paste -sd,)" -- sleep $((secs + 2)) > /dev/null 2>&1 & perfpids+=($!)
    elif [[ $pass == syscalls ]]; then   # per-syscall counts of both proxies (perf trace -s), no valgrind
      for pid in "${!pname[@]}"; do
        timeout $((secs + 30)) perf trace -s -p "$pid" -o "$out/syscalls.$sc.${pname[$pid]}.txt" -- sleep "$secs" > /dev/null 2>&1 &
        perfpids+=($!)
      done
    fi
    d0=$(diag_snap)
    case $sc in
      wrk|http) timeout $((secs + 30)) "$WRK_BIN" -t1 -c16 -d"${secs}s" "http://127.0.0.1:$FRONT_HTTP/" > "$out/$pass.$sc-load.txt" 2>&1 || true
           units=$(awk '/requests in/{print $1; exit}' "$out/$pass.$sc-load.txt") ;;
      conn) timeout $((secs + 30)) "$OHA_BIN" --no-tui -z "${secs}s" -c 8 --disable-keepalive "http://127.0.0.1:$FRONT_HTTP/" > "$out/$pass.$sc-load.txt" 2>&1 || true
           units=$(( $(metric_sum "$P_F_IN_ADMIN" '^ferrule_proxy_connections_opened_total\{direction="inbound"') - h0 )) ;;  # application connections (each a handshake without pooling)
      bulk) start_bg iperf3-srv "$WORK/logs/iperf3-srv.log" "$IPERF3_BIN" -s -1 -p "$P_UP_IPERF" --idle-timeout 60
           wait_port "$P_UP_IPERF"
           timeout $((secs + 30)) "$IPERF3_BIN" -c 127.0.0.1 -p "$FRONT_BULK" -t "$secs" > "$out/$pass.$sc-load.txt" 2>&1 || true
           stop_name iperf3-srv
           units=$(awk '/receiver/{v=$5; u=$6} END{ if (u ~ /GBytes/) v*=1024; print v+0 }' "$out/$pass.$sc-load.txt") ;;  # MiB moved
    esac
    d1=$(diag_snap)
    log "profile $pass/$sc: load output in $out/$pass.$sc-load.txt; utime/stime/minflt before/after: $d0 / $d1, units=$units"
    echo "$pass $sc utime,stime,minflt: $d0 -> $d1; units=$units ($(case $sc in conn) echo connections;; bulk) echo MiB;; *) echo requests;; esac))" >> "$out/diag.txt"
    ((${#perfpids[@]})) && { wait "${perfpids[@]}" || true; perfpids=(); }
    for n in "${PROXIES[@]}"; do stop_slow "$n"; done
    PROXIES=()
    if [[ $pass == callgrind ]]; then
      for pid in "${!pname[@]}"; do
        [[ -f $out/callgrind.$sc.$pid.out ]] || continue
        mv "$out/callgrind.$sc.$pid.out" "$out/callgrind.$sc.${pname[$pid]}.out"
        # tools/cgtop.py: self cost by category and function, per unit of work
        $PY tools/cgtop.py "$out/callgrind.$sc.${pname[$pid]}.out" "$units" \
          "$(case $sc in conn) echo connection;; bulk) echo MiB;; *) echo request;; esac)" 30 \
          > "$out/cgtop.$sc.${pname[$pid]}.txt" 2>&1 || true
      done
    elif [[ $pass == perf ]]; then
      perf report --stdio --no-children -i "$out/perf.$sc.data" 2>/dev/null | head -120 > "$out/perf.$sc.txt" || true
    fi
    unset pname
  done
  done
  PROXY_WRAPPER=""; READY_TRIES=300
  log "profiles in $out"
}

# ---------------------------------------------------------------- instruction counts (benches/count.sh)
# A fixed amount of work (ferrule-bench-load: N new connections, N keep-alive requests, M MiB
# downloaded) through a fresh ferrule-tcp pair whose proxies run under callgrind. After start-up
# and a warm-up (which also opens the pooled mesh connection when pooling is on), the counters
# are zeroed; right after the workload they are dumped. Instruction counts do not depend on what
# else the machine is doing, so before/after comparisons work on a busy box.
# COUNT_TOOL=cpu runs the same fixed work without valgrind (larger by default) and reports the
# proxies' CPU time from /proc (user and kernel, microseconds per unit): the kernel's share
# (syscalls, loopback TCP) that callgrind cannot see. CPU time is noisier than instruction
# counts on a busy machine, but it does not depend on the wall clock.
cg_total() { # CALLGRIND-DUMP : total Ir
  awk '/^(summary|totals):/{print $2; exit}' "$1"
}
proc_ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }   # PID -> "utime stime" (clock ticks)
run_count() {
  local out=$RESULTS_DIR/count sc n pid f tot units uname args lpid u0 s0 u1 s1
  local -A t0=()
  mkdir -p "$out"
  : "${COUNT_TOOL:=callgrind}"
  : "${COUNT_SCENARIOS:=conn req bulk upload}"
  if [[ $COUNT_TOOL == cpu ]]; then
    : "${COUNT_CONN_N:=3000}"; : "${COUNT_CONN_C:=16}"; : "${COUNT_REQ_N:=100000}"; : "${COUNT_REQ_C:=64}"; : "${COUNT_BULK_MIB:=1000}"
  fi
  : "${COUNT_CONN_N:=200}"; : "${COUNT_CONN_C:=8}"; : "${COUNT_REQ_N:=10000}"; : "${COUNT_REQ_C:=16}"; : "${COUNT_BULK_MIB:=64}"
  log "fixed-work counts ($COUNT_TOOL): scenarios $COUNT_SCENARIOS; conn ${COUNT_CONN_N}x${COUNT_CONN_C}, req ${COUNT_REQ_N}/${COUNT_REQ_C} conns, bulk ${COUNT_BULK_MIB} MiB"
  for sc in $COUNT_SCENARIOS; do
    PROXY_WRAPPER=""; READY_TRIES=300
    if [[ $COUNT_TOOL == callgrind ]]; then
      PROXY_WRAPPER="valgrind --tool=callgrind --callgrind-out-file=$out/callgrind.$sc.%p.out"; READY_TRIES=1200
    fi
    start_ferrule ferrule-tcp
    declare -A pname=(); for n in "${PROXIES[@]}"; do pname[${PIDS[$n]}]=$n; done
    # Warm-up: discovery, the first handshake(s), allocator pools.
    # (Discovery may reach the client proxy a moment after /ready: the sanity GET retries.)
    ferrule_sanity_check ferrule-tcp
    timeout 300 "$LOAD_BIN" --target "127.0.0.1:$FRONT_HTTP" --mode conn --n 20 --concurrency 4 > "$out/warmup.$sc.txt" 2>&1 \
      || die "warm-up through the pair failed (see $out/warmup.$sc.txt)"
    timeout 300 "$LOAD_BIN" --target "127.0.0.1:$FRONT_HTTP" --mode req --n 200 --concurrency "$COUNT_REQ_C" >> "$out/warmup.$sc.txt" 2>&1 \
      || die "warm-up (req) failed (see $out/warmup.$sc.txt)"
    case $sc in
      conn) args=(--mode conn --n "$COUNT_CONN_N" --concurrency "$COUNT_CONN_C"); units=$COUNT_CONN_N; uname=connection ;;
      # req and bulk: connections opened and warmed first (--ready-file), so only the
      # requests / the bytes are counted, not connection set-up.
      req)  args=(--mode req --n "$COUNT_REQ_N" --concurrency "$COUNT_REQ_C" --ready-file "$out/ready"); units=$COUNT_REQ_N; uname=request ;;
      bulk) args=(--mode bulk --path /bulk --mib "$COUNT_BULK_MIB" --ready-file "$out/ready"); units=$COUNT_BULK_MIB; uname=MiB ;;
      # upload: client -> server (the client proxy encrypts), iperf3 -n through the bulk port
      # (its control connection and the data connection's set-up are counted too: small).
      upload) units=$COUNT_BULK_MIB; uname=MiB
        start_bg iperf3-srv "$WORK/logs/iperf3-srv.log" "$IPERF3_BIN" -s -1 -p "$P_UP_IPERF" --idle-timeout 300
        wait_port "$P_UP_IPERF" ;;
    esac
    rm -f "$out/ready"
    if [[ $sc == upload ]]; then
      timeout 1200 "$IPERF3_BIN" -c 127.0.0.1 -p "$FRONT_BULK" -n "${COUNT_BULK_MIB}M" > "$out/load.$sc.txt" 2>&1 & lpid=$!
    else
      timeout 1200 "$LOAD_BIN" --target "127.0.0.1:$FRONT_HTTP" "${args[@]}" > "$out/load.$sc.txt" 2>&1 & lpid=$!
    fi
    if [[ $sc == req || $sc == bulk ]]; then
      for ((n = 0; n < 3000; n++)); do [[ -f $out/ready ]] && break; kill -0 "$lpid" 2>/dev/null || break; sleep 0.1; done
      [[ -f $out/ready ]] || die "workload $sc did not get ready (see $out/load.$sc.txt)"
    fi
    for pid in "${!pname[@]}"; do
      if [[ $COUNT_TOOL == cpu ]]; then t0[$pid]=$(proc_ticks "$pid"); continue; fi
      timeout 60 callgrind_control -z "$pid" > /dev/null 2>&1 || log "callgrind_control -z $pid failed"
    done
    rm -f "$out/ready"
    wait "$lpid" || die "workload $sc failed (see $out/load.$sc.txt)"
    [[ $sc == upload ]] && stop_name iperf3-srv
    sleep 1   # let the last connections close inside the proxies
    if [[ $COUNT_TOOL == cpu ]]; then
      for pid in "${!pname[@]}"; do
        read -r u0 s0 <<< "${t0[$pid]}"; read -r u1 s1 < <(proc_ticks "$pid")
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$sc" "${pname[$pid]}" \
          "$(awk -v a=$((u1 - u0)) -v hz="$CLK_TCK" -v u="$units" 'BEGIN{printf "%.1f", a/hz*1e6/u}')" \
          "$(awk -v a=$((s1 - s0)) -v hz="$CLK_TCK" -v u="$units" 'BEGIN{printf "%.1f", a/hz*1e6/u}')" \
          "$units" "$(awk -v a=$((u1 - u0 + s1 - s0)) -v hz="$CLK_TCK" -v u="$units" 'BEGIN{printf "%.1f", a/hz*1e6/u}')" >> "$out/summary.tsv"
      done
      for n in "${PROXIES[@]}"; do stop_name "$n"; done
      PROXIES=(); unset pname
      continue
    fi
    for pid in "${!pname[@]}"; do
      timeout 120 callgrind_control -d "$pid" > /dev/null 2>&1 || log "callgrind_control -d $pid failed"
    done
    for pid in "${!pname[@]}"; do
      f=$(ls -t "$out"/callgrind."$sc"."$pid".out.* 2>/dev/null | head -1)
      [[ -n $f ]] || { log "no callgrind dump for $sc/${pname[$pid]}"; continue; }
      tot=$(cg_total "$f")
      mv "$f" "$out/callgrind.$sc.${pname[$pid]}.out"
      printf '%s\t%s\t%s\t%s\t%s\n' "$sc" "${pname[$pid]}" "$tot" "$units" "$(awk -v t="$tot" -v u="$units" 'BEGIN{printf "%.0f", t/u}')" >> "$out/summary.tsv"
      emit ferrule-tcp "count.$sc.${pname[$pid]}.ir_per_$uname" "$(awk -v t="$tot" -v u="$units" 'BEGIN{printf "%.0f", t/u}')" Ir
      $PY tools/cgtop.py "$out/callgrind.$sc.${pname[$pid]}.out" "$units" "$uname" 30 > "$out/cgtop.$sc.${pname[$pid]}.txt" 2>&1 || true
    done
    for n in "${PROXIES[@]}"; do stop_slow "$n"; done
    rm -f "$out"/callgrind."$sc".[0-9]*.out*
    PROXIES=(); unset pname
  done
  PROXY_WRAPPER=""; READY_TRIES=300
  log "instruction counts in $out/summary.tsv"
}

# ---------------------------------------------------------------- main
mkdir -p "$RESULTS_DIR"
[[ -f $RESULTS_TSV ]] || printf 'run\tconfig\tmetric\tvalue\tunit\n' > "$RESULTS_TSV"
for v in $(compgen -v P_); do
  [[ $v == P_F_* || $v == P_UP_* || $v == P_PHYS_* || $v == P_R_* ]] || continue
  if ss -Hltn "sport = :${!v}" | grep -q .; then die "port ${!v} ($v) already in use on this machine; set F_BASE_PORT"; fi
done
{
  echo "ferrule: $("$PROXY_BIN" --version 2>&1 | head -1); binaries from $BIN_DIR"
  echo "ferrule knobs: FERRULE_WORKERS=$FERRULE_WORKERS (TOKIO_WORKER_THREADS per proxy) FERRULE_CONFIGS='$FERRULE_CONFIGS' IDLE_COUNTS='$IDLE_COUNTS' CERT=${CERT_CONCURRENCY}c/${CERT_SECONDS}s PROPAGATE='$PROPAGATE_COUNTS' x${PROPAGATE_CHANGES}/${PROPAGATE_SECONDS}s cycles=$PROPAGATE_CYCLES RELAY_CONFIGS='$RELAY_CONFIGS' RELAY_FULL=$RELAY_FULL"
  echo "ferrule measured with: RATES='$RATES' LAT_SECONDS=$LAT_SECONDS LAT_CONNS=$LAT_CONNS WRK=${WRK_THREADS}t/${WRK_CONNS}c/${WRK_SECONDS}s CONN=${CONN_CONNS}c/${CONN_SECONDS}s IPERF=${IPERF_SECONDS}s P='$IPERF_STREAMS' BULK_MB=$BULK_MB BULK_REPS=$BULK_REPS NGINX_WORKERS=$NGINX_WORKERS QUIET_PCT=$QUIET_PCT QUIET_MAX_WAIT=$QUIET_MAX_WAIT nice=$(nice)"
  echo "measurement functions drifted from the shared harness: ${DRIFT:-none}"
} >> "$RESULTS_DIR/env.txt"

setup_work
start_upstream
start_control_plane
if [[ ${FERRULE_PROFILE:-0} == 1 ]]; then run_profile; stop_all; exit 0; fi
if [[ ${FERRULE_COUNT:-0} == 1 ]]; then run_count; stop_all; exit 0; fi
if [[ ${FERRULE_PROPAGATE_ONLY:-0} == 1 ]]; then run_propagate; stop_all; exit "$PROPAGATE_RC"; fi
if [[ ${FERRULE_UP:-0} == 1 ]]; then   # development: a pair to poke at, for FERRULE_UP_SECONDS (bounded)
  start_ferrule ferrule-tcp; ferrule_sanity_check ferrule-tcp
  log "pair up: http 127.0.0.1:$FRONT_HTTP, bulk 127.0.0.1:$FRONT_BULK, out pid ${PIDS[ferrule-out]}, in pid ${PIDS[ferrule-in]}; ${FERRULE_UP_SECONDS:=300}s"
  sleep "$FERRULE_UP_SECONDS" & PIDS[up-timer]=$!   # in PIDS: stop_all ends it when this script is stopped early
  wait "${PIDS[up-timer]}"; stop_all; exit 0
fi
for c in $FERRULE_CONFIGS; do run_ferrule_config "$c"; done
if [[ $FERRULE_RELAY == 1 ]]; then for c in $RELAY_CONFIGS; do run_relay "$c"; done; fi
if [[ $FERRULE_IDLE == 1 ]]; then run_idle; fi
if [[ $FERRULE_CERTIFY == 1 ]]; then run_certify; fi
if [[ $FERRULE_PROPAGATE == 1 ]]; then run_propagate; fi   # a failure is logged and in results.tsv
stop_all
if [[ $FERRULE_PHYSICAL == 1 ]]; then run_physical; fi
mkdir -p "$RESULTS_DIR/raw-$RUN_ID"; cp -r "$WORK/out/." "$RESULTS_DIR/raw-$RUN_ID/"
cp "$WORK"/logs/*.log "$RESULTS_DIR/raw-$RUN_ID/" 2>/dev/null || true
log "ferrule part done"
