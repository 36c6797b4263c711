# shellcheck shell=bash
# Reference relay pairs (without TLS, or with TLS done as kernel TLS would do it), chained like the sidecar pair (load tool -> relay-out -> relay-in ->
# nginx / iperf3) and measured with the same functions as every other configuration:
#
# floor-relay (default): two `ferrule-bench-relay --threads`: blocking sockets, one thread per
# direction, a 256 KiB buffer. Per message one wake-up, one read, one write: the least any relay
# that sleeps between messages does. What it adds over `direct`, and the CPU it uses, bound from
# below what ANY pair of user-space proxies can achieve on this machine (a TLS proxy does all of
# it plus the cryptography); a target it misses cannot be met by such a pair here.
#
# plain-relay (RELAY_CONFIGS="floor-relay tls-floor-relay plain-relay"): a reference pair without TLS. Two ferrule-bench-relay processes (src/bin/relay.rs:
# plain TCP, the proxy's own copy loop and runtime, FERRULE_WORKERS workers) chained like the
# sidecar pair, load tool -> relay-out -> relay-in -> nginx / iperf3, measured with the same
# functions as every other configuration. They have the pair's hops, system calls and wake-ups
# but no TLS, no policy and no pooling: what they add over `direct` is what moving the bytes
# through two user-space processes costs here. Leaner TLS alone is unlikely to meet a target that
# even this relay misses. It is not a lower bound: the pooled Ferrule hop batches more per system
# call and can beat it.
# tls-floor-relay (default): two `ferrule-bench-relay --tls`: the floor relay plus TLS 1.3, handshake by rustls
# with Ferrule's configuration (mutual, SPIFFE IDs), then records sealed and opened in place with aws-lc
# (src/tls_floor.rs): no copy of the data in user space (but a rare move of a partial record), no
# allocation and no runtime per message. A target it clearly misses, a sidecar pair that encrypts in user
# space cannot reach on this machine.
#
# A reference relay is measured only where the report judges it (tools/report.py): the fixed
# rates, one iperf3 stream and the HTTP download; its idle memory is shown, not judged. Not the closed loop nor 4
# iperf3 streams, where the pooled hop batches what a relay cannot (or the relay's threads contend
# for 2 cores), so its figure bounds nothing: skipping them keeps the whole command within its
# 15-minute budget. RELAY_FULL=1 measures them too, as for every other configuration.
#
# Sourced by lib/ferrule.sh.
: "${FERRULE_RELAY:=1}"; : "${RELAY_CONFIGS:=floor-relay tls-floor-relay}"; : "${RELAY_FULL:=0}"
RELAY_BIN=$BIN_DIR/ferrule-bench-relay
P_R_OUT_HTTP=$((F_BASE_PORT + 140)) P_R_OUT_BULK=$((F_BASE_PORT + 141))
P_R_IN_HTTP=$((F_BASE_PORT + 142)) P_R_IN_BULK=$((F_BASE_PORT + 143))

run_relay() {
  local c=$1 r p mode=()
  case $c in
    floor-relay) mode=(--threads)
      log "=== config $c: two floor relays (blocking, a thread per direction, no TLS) (run $RUN_ID) ===" ;;
    plain-relay)
      log "=== config $c: two plain-TCP relays on the proxy's copy loop (run $RUN_ID) ===" ;;
    tls-floor-relay)
      log "=== config $c: two TLS floor relays (blocking, a thread per direction, TLS 1.3 sealed in place) (run $RUN_ID) ==="
      "$RELAY_BIN" --make-certs "$WORK/tls-floor" || die "$c: writing its certificates failed"
      mode=(--certs "$WORK/tls-floor" --tls) ;;
    *) die "unknown relay configuration: $c (floor-relay, tls-floor-relay, plain-relay)" ;;
  esac
  local in_mode=("${mode[@]}") out_mode=("${mode[@]}")
  if [[ $c == tls-floor-relay ]]; then in_mode+=(server); out_mode+=(client); fi
  start_bg relay-in "$WORK/logs/$c-in.log" env TOKIO_WORKER_THREADS="$FERRULE_WORKERS" "$RELAY_BIN" "${in_mode[@]}" \
    --route "127.0.0.1:$P_R_IN_HTTP=127.0.0.1:$P_UP_HTTP" --route "127.0.0.1:$P_R_IN_BULK=127.0.0.1:$P_UP_IPERF"
  start_bg relay-out "$WORK/logs/$c-out.log" env TOKIO_WORKER_THREADS="$FERRULE_WORKERS" "$RELAY_BIN" "${out_mode[@]}" \
    --route "127.0.0.1:$P_R_OUT_HTTP=127.0.0.1:$P_R_IN_HTTP" --route "127.0.0.1:$P_R_OUT_BULK=127.0.0.1:$P_R_IN_BULK"
  wait_port "$P_R_IN_BULK"; wait_port "$P_R_OUT_BULK"
  FRONT_HTTP=$P_R_OUT_HTTP; FRONT_BULK=$P_R_OUT_BULK; INBOUND=""
  PROXIES=(relay-out relay-in); ADMIN=()
  [[ $(curl -s -o /dev/null -m 5 -w '%{size_download}' "http://127.0.0.1:$FRONT_HTTP/") == 1024 ]] \
    || die "$c: GET through the relays did not return the 1 KiB body"
  sleep 2; rss_report "$c" idle
  timeout 30 "$OHA_BIN" --no-tui -z 3s -c "$LAT_CONNS" -q 500 "http://127.0.0.1:$FRONT_HTTP/" >/dev/null 2>&1 || true
  for r in $RATES; do test_latency "$c" "$r"; done
  if [[ $RELAY_FULL == 1 ]]; then
    test_wrk "$c"
    for p in $IPERF_STREAMS; do test_iperf "$c" "$p"; done
  elif [[ " $IPERF_STREAMS " == *" 1 "* ]]; then
    test_iperf "$c" 1
  fi
  test_bulk_http "$c"
  stop_name relay-out; stop_name relay-in; PROXIES=()
  sleep 2
}
