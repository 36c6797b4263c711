#!/usr/bin/env bash
# Ferrule two-service demo as local processes on loopback (explicit mode).
#
#   deploy/local/demo.sh up      build, start control plane + api + web, show traffic
#   deploy/local/demo.sh status  show workloads, certificates and the caller's last lines
#   deploy/local/demo.sh down    stop everything and remove the demo's state
#
#   web: ferrulectl demo call ──► 127.0.0.1:9001 (web's proxy, upstream "api:8080")
#        ══ mTLS, spiffe://demo.local/ns/default/sa/web → .../sa/api ══►
#   api: 127.0.0.1:15006 (api's proxy, inbound) ──► 127.0.0.1:18080 (ferrulectl demo serve)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
STATE=${FERRULE_DEMO_DIR:-${TMPDIR:-/tmp}/ferrule-demo}
BIN=${FERRULE_BIN_DIR:-$ROOT/target/debug}
TD=demo.local
CP_ADDR=127.0.0.1:8443
export FERRULE_ADMIN_SOCKET=$STATE/cp/admin.sock

log() { printf '\033[1m==> %s\033[0m\n' "$*"; }

start() { # name, command...
  local name=$1; shift
  "$@" >"$STATE/$name.log" 2>&1 &
  echo $! >"$STATE/$name.pid"
}

wait_for() { # description, command...
  local what=$1; shift
  for _ in $(seq 1 100); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "timed out waiting for $what; logs are in $STATE" >&2
  exit 1
}

# GET /ready on a proxy's admin address, with bash's /dev/tcp (no curl needed).
ready() { (exec 3<>"/dev/tcp/${1%:*}/${1#*:}" && printf 'GET /ready HTTP/1.0\r\n\r\n' >&3 && head -1 <&3 | grep -q ' 200 '); }

up() {
  if [ -e "$STATE/cp.pid" ]; then echo "demo already running (state in $STATE); run '$0 down' first" >&2; exit 1; fi
  log "building the binaries (cargo build --bins)"
  cargo build --bins --quiet
  mkdir -p "$STATE"
  chmod 700 "$STATE"
  log "starting the control plane on $CP_ADDR (trust domain $TD)"
  start cp "$BIN/ferrule-control-plane" --data-dir "$STATE/cp" --trust-domain $TD --listen $CP_ADDR --svid-ttl 5m
  wait_for "the control plane" test -S "$FERRULE_ADMIN_SOCKET"
  wait_for "the trust bundle" test -s "$STATE/cp/bundle.pem"

  log "creating join tokens (one identity each)"
  (umask 077
   "$BIN/ferrulectl" token create --spiffe-id spiffe://$TD/ns/default/sa/api --ttl 1h --uses 5 >"$STATE/api.token"
   "$BIN/ferrulectl" token create --spiffe-id spiffe://$TD/ns/default/sa/web --ttl 1h --uses 5 >"$STATE/web.token")

  cat >"$STATE/api.yaml" <<YAML
service: api
inbound:
  listen: 127.0.0.1:15006
  ports:
    - port: 8080
      app: 127.0.0.1:18080
      protocol: http
YAML
  cat >"$STATE/web.yaml" <<YAML
service: web
inbound:
  listen: 127.0.0.1:15016
outbound:
  upstreams:
    - listen: 127.0.0.1:9001
      service: api
      port: 8080
YAML
  log "starting api (app on 127.0.0.1:18080, proxy inbound 127.0.0.1:15006)"
  start api-app "$BIN/ferrulectl" demo serve --listen 127.0.0.1:18080 --name api
  start api-proxy "$BIN/ferrule-proxy" run --trust-domain $TD --control-plane $CP_ADDR \
    --bundle-file "$STATE/cp/bundle.pem" --join-token-file "$STATE/api.token" \
    --admin-listen 127.0.0.1:15000 --config "$STATE/api.yaml"
  log "starting web (proxy upstream 127.0.0.1:9001 -> api:8080)"
  start web-proxy "$BIN/ferrule-proxy" run --trust-domain $TD --control-plane $CP_ADDR \
    --bundle-file "$STATE/cp/bundle.pem" --join-token-file "$STATE/web.token" \
    --admin-listen 127.0.0.1:15010 --config "$STATE/web.yaml"
  wait_for "api's proxy" ready 127.0.0.1:15000
  wait_for "web's proxy" ready 127.0.0.1:15010
  start web-app "$BIN/ferrulectl" demo call --target 127.0.0.1:9001 --every 1s
  sleep 3
  log "web calls api every second through the mesh:"
  tail -n 3 "$STATE/web-app.log"
  cat <<TXT

Next:
  tail -f $STATE/web-app.log                   # the caller's output
  FERRULE_ADMIN_SOCKET=$FERRULE_ADMIN_SOCKET $BIN/ferrulectl certs
  FERRULE_ADMIN_SOCKET=$FERRULE_ADMIN_SOCKET $BIN/ferrulectl ca status
  curl -s 127.0.0.1:15010/identity             # web proxy's identity (admin port)
  $0 down                                       # stop and clean up
TXT
}

status() {
  [ -e "$STATE/cp.pid" ] || { echo "demo not running"; exit 1; }
  "$BIN/ferrulectl" certs
  echo
  tail -n 5 "$STATE/web-app.log"
}

down() {
  for p in web-app web-proxy api-proxy api-app cp; do
    if [ -f "$STATE/$p.pid" ]; then kill "$(cat "$STATE/$p.pid")" 2>/dev/null || true; fi
  done
  sleep 0.5
  rm -rf "$STATE"
  log "demo stopped and its state removed"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|status|down" >&2; exit 64 ;;
esac
