#!/usr/bin/env bash
# Ferrule two-service demo on Docker Compose, with images built FROM scratch from static
# binaries: nothing is pulled from any registry.
#
#   deploy/compose/demo.sh up           build static binaries + images, start the mesh
#   deploy/compose/demo.sh status       containers, sidecar identities, the caller's last lines
#   deploy/compose/demo.sh test         check the running demo (readiness + successful calls)
#   deploy/compose/demo.sh logs [svc]   follow the logs (default: web, the caller)
#   deploy/compose/demo.sh down         remove every container, network, volume and image it made
#   deploy/compose/demo.sh ctl ARGS...  ferrulectl against the control plane (stdin passed on:
#                                       demo.sh ctl apply -f - < deploy/compose/policies/deny-web.yaml)
#
# Without Docker (no `docker` command, or the daemon is unreachable) it says so and runs
# the local-process demo (deploy/local/demo.sh) instead.
#
# Environment:
#   FERRULE_COMPOSE_PROJECT         Compose project name and image prefix (ferrule-demo)
#   FERRULE_COMPOSE_TRANSPARENT=1   add docker-compose.transparent.yml (netfilter capture)
#   FERRULE_COMPOSE_TARGET_DIR      cargo target dir of the static build (target/compose,
#                                   apart from the debug builds so neither waits for the other)
#   FERRULE_COMPOSE_SKIP_BUILD=1    use the static binaries already in that target dir
#   FERRULE_COMPOSE_PREBUILT=1      build nothing: use the images <project>/{control-plane,
#                                   proxy,ferrulectl}:dev as they are (e.g. from
#                                   Dockerfile.multistage)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PROJECT=${FERRULE_COMPOSE_PROJECT:-ferrule-demo}
export FERRULE_COMPOSE_PROJECT=$PROJECT # the compose file names the images after it
TRIPLE=x86_64-unknown-linux-gnu
TARGET_DIR=${FERRULE_COMPOSE_TARGET_DIR:-$ROOT/target/compose}
BIN=$TARGET_DIR/$TRIPLE/release
TAG=dev
IMAGES=(control-plane:ferrule-control-plane proxy:ferrule-proxy ferrulectl:ferrulectl) # image:binary
TD=demo.local
LABEL=com.docker.compose.project=$PROJECT

log() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { echo "demo.sh: $*" >&2; exit 1; }
# shellcheck source=../lib/images.sh
. "$ROOT/deploy/lib/images.sh"

# --- Docker and Compose -------------------------------------------------------------------

COMPOSE=()
WHY=
docker_usable() {
  command -v docker >/dev/null 2>&1 || { WHY="the docker command is not installed"; return 1; }
  docker info >/dev/null 2>&1 || { WHY="the Docker daemon is not reachable ('docker info' failed)"; return 1; }
  if docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
  elif command -v docker-compose >/dev/null 2>&1; then
    COMPOSE=(docker-compose)
  else
    WHY="neither 'docker compose' nor 'docker-compose' is installed"; return 1
  fi
}

compose() {
  local files=(-f "$HERE/docker-compose.yml")
  if [ "${FERRULE_COMPOSE_TRANSPARENT:-0}" = 1 ]; then
    files+=(-f "$HERE/docker-compose.transparent.yml")
  fi
  "${COMPOSE[@]}" -p "$PROJECT" --project-directory "$HERE" "${files[@]}" "$@"
}

# The container of a service (Compose v1 and v2 name containers differently; the labels
# are the same).
cid() {
  docker ps -aq --filter "label=$LABEL" --filter "label=com.docker.compose.service=$1" \
    --filter "label=com.docker.compose.oneoff=False"
}

# ferrulectl as the control plane's user, with the control plane's data volume (admin socket).
ctl() { compose run --rm -T --no-deps bootstrap "$@"; }

# GET on a sidecar's admin endpoint from inside its pod. Scratch images have no shell or
# curl, so this runs our own ferrulectl image in the pod's network namespace; it prints
# "call 1: 200 OK <body> (N ms)" and exits 0 only on 200.
admin_get() { # service, path
  local c
  c=$(cid "$1"); [ -n "$c" ] || { echo "no container for $1" >&2; return 1; }
  docker run --rm --network "container:$c" --user 65534:65534 --label "$LABEL" \
    "$PROJECT/ferrulectl:$TAG" demo call --target 127.0.0.1:15000 --path "$2" --count 1
}

wait_for() { # description, seconds, command...
  local what=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { echo "timed out after ${secs}s waiting for $what" >&2; return 1; }
    sleep 1
  done
}

# --- up -----------------------------------------------------------------------------------

build_binaries() {
  if [ "${FERRULE_COMPOSE_SKIP_BUILD:-0}" = 1 ]; then
    log "using the static binaries in $BIN"
  else
    build_static_binaries "$TARGET_DIR"
  fi
  local pair
  for pair in "${IMAGES[@]}"; do
    check_static_binary "$BIN/${pair#*:}"
  done
}

build_images() {
  local ctx pair name bin
  ctx=$(mktemp -d)
  for pair in "${IMAGES[@]}"; do
    name=${pair%%:*}; bin=${pair#*:}
    log "building image $PROJECT/$name:$TAG (FROM scratch + $bin)"
    # The context holds only the binary and an empty directory (for mount points), so the
    # build sends a few MiB to the daemon, not the repository.
    mkdir -p "$ctx/$name/empty"
    stage_binary "$BIN/$bin" "$ctx/$name"
    docker_build_quiet --label "$LABEL" -t "$PROJECT/$name:$TAG" \
      -f "$HERE/images/$name.Dockerfile" "$ctx/$name"
  done
  rm -rf "$ctx"
}

# Creates a join token for <pod> over the admin socket and puts it into the sidecar's token
# volume, owner 1337 (the sidecar's uid), mode 0400. ferrulectl prints the secret on stdout
# and a scratch image has no shell to redirect it into a file, so this hand-off happens
# here: stdout -> a private temp file -> a tar stream (owner and mode set) -> docker cp.
hand_token() { # pod
  local pod=$1 token tmp
  token=$(ctl token create --spiffe-id "spiffe://$TD/ns/default/sa/$pod" --ttl 1h --uses 5) \
    || die "could not create the join token for $pod"
  tmp=$(mktemp -d)
  (umask 077; printf '%s\n' "$token" >"$tmp/join-token")
  tar -C "$tmp" --owner=1337 --group=1337 --numeric-owner --mode=0400 -cf - join-token \
    | docker cp - "$(cid "$pod-proxy"):/run/ferrule/token"
  rm -rf "$tmp"
}

up() {
  docker_usable || fallback up
  if [ -n "$(docker ps -aq --filter "label=$LABEL")" ]; then
    die "the demo is already running (project $PROJECT); run '$0 down' first"
  fi
  if [ "${FERRULE_COMPOSE_PREBUILT:-0}" = 1 ]; then
    local pair
    for pair in "${IMAGES[@]}"; do
      docker image inspect "$PROJECT/${pair%%:*}:$TAG" >/dev/null 2>&1 \
        || die "FERRULE_COMPOSE_PREBUILT=1 but image $PROJECT/${pair%%:*}:$TAG does not exist"
    done
    log "using the existing images $PROJECT/{control-plane,proxy,ferrulectl}:$TAG"
  else
    build_binaries
    build_images
  fi
  log "creating the network, the volumes, the control plane and the sidecars (project $PROJECT, ${COMPOSE[*]})"
  # Not the apps yet: Compose v1 puts an app on the default network instead of into its
  # sidecar's namespace if the sidecar is not running when the app container is created.
  compose up --no-start control-plane api-proxy web-proxy
  log "starting the control plane (trust domain $TD)"
  compose up -d control-plane
  if ! wait_for "the control plane's admin socket" 60 ctl ca status; then
    compose logs control-plane; exit 1
  fi
  log "creating join tokens (as the control plane's user) and handing them to the sidecars"
  hand_token api
  hand_token web
  log "starting the pods: the sidecars and api, then web once its sidecar is ready"
  compose up -d api-proxy api web-proxy
  wait_for "api's sidecar /ready" 60 admin_get api-proxy /ready || { compose logs api-proxy; exit 1; }
  wait_for "web's sidecar /ready" 60 admin_get web-proxy /ready || { compose logs web-proxy; exit 1; }
  compose up -d web
  sleep 3
  log "web calls api every second through the mesh:"
  docker logs --tail 3 "$(cid web)"
  cat <<TXT

Next:
  $0 logs                # follow the caller (any service: logs api-proxy, ...)
  $0 status              # containers, identities, certificates, last calls
  $0 test                # check the demo works
  $0 down                # remove everything it created
TXT
}

# --- status / test / logs -----------------------------------------------------------------

running() {
  [ -n "$(docker ps -aq --filter "label=$LABEL")" ] || { echo "demo not running (project $PROJECT)"; exit 1; }
}

status() {
  docker_usable || fallback status
  running
  compose ps
  echo
  local pod line
  for pod in api web; do
    line=$(admin_get "$pod-proxy" /identity 2>&1 || true)
    echo "$pod sidecar /identity: ${line#call 1: }"
  done
  echo
  ctl certs 2>/dev/null || true
  echo
  docker logs --tail 5 "$(cid web)" 2>&1
}

test_running() {
  docker_usable || fallback test
  running
  local pod rc=0 last
  for pod in api web; do
    if admin_get "$pod-proxy" /ready >/dev/null 2>&1; then
      echo "ok: $pod's sidecar is ready"
    else
      echo "FAIL: $pod's sidecar is not ready"; rc=1
    fi
  done
  last=$(docker logs --tail 3 "$(cid web)" 2>&1 || true)
  if [ "$(grep -c '200 OK hello from api' <<<"$last")" = 3 ]; then
    echo "ok: web's last 3 calls reached api through the mesh"
  else
    echo "FAIL: web's last calls did not all succeed:"; echo "$last"; rc=1
  fi
  return $rc
}

logs() {
  docker_usable || fallback logs
  compose logs -f "${1:-web}"
}

# --- down ---------------------------------------------------------------------------------

down() {
  docker_usable || fallback down
  log "removing the containers, network and volumes of project $PROJECT"
  compose down --volumes --remove-orphans --timeout 5
  # Anything else labelled with the project (e.g. a probe or run container left behind by
  # an interrupted command), then the images.
  local left
  left=$(docker ps -aq --filter "label=$LABEL")
  [ -z "$left" ] || docker rm -f $left >/dev/null
  left=$(docker volume ls -q --filter "label=$LABEL")
  [ -z "$left" ] || docker volume rm $left >/dev/null
  left=$(docker network ls -q --filter "label=$LABEL")
  [ -z "$left" ] || docker network rm $left >/dev/null
  left=$(docker image ls -q --filter "label=$LABEL" | sort -u)
  [ -z "$left" ] || docker image rm -f $left >/dev/null
  log "project $PROJECT removed (containers, network, volumes, images)"
}

# --- no Docker: the local-process demo ----------------------------------------------------

fallback() {
  echo "demo.sh: Docker is not available: $WHY." >&2
  echo "demo.sh: running the local-process demo instead: deploy/local/demo.sh $1" >&2
  local log=${FERRULE_DEMO_DIR:-${TMPDIR:-/tmp}/ferrule-demo}/web-app.log
  case $1 in
    test)
      # The local demo has no test command: check its caller's last lines the same way.
      [ "$(tail -n 3 "$log" 2>/dev/null | grep -c '200 OK hello from api')" = 3 ] \
        && { echo "ok: web's last 3 calls reached api through the mesh"; exit 0; }
      echo "FAIL: no successful calls at the end of $log"; exit 1 ;;
    logs) exec tail -f "$log" ;;
    *) exec "$ROOT/deploy/local/demo.sh" "$1" ;;
  esac
}

case "${1:-}" in
  ctl)
    shift
    docker_usable || { echo "demo.sh: Docker is not available: $WHY; with the local demo run target/debug/ferrulectl with FERRULE_ADMIN_SOCKET=\${TMPDIR:-/tmp}/ferrule-demo/cp/admin.sock" >&2; exit 69; }
    ctl "$@" ;;
  up) up ;;
  down) down ;;
  status) status ;;
  test) test_running ;;
  logs) logs "${2:-}" ;;
  *) echo "usage: $0 up|status|test|logs [service]|ctl ARGS...|down" >&2; exit 64 ;;
esac
