#!/usr/bin/env bash
# Builds Ferrule's three images for Kubernetes, FROM scratch from static binaries (nothing
# is pulled), and optionally hands them to a cluster:
#
#   deploy/kubernetes/build-images.sh                  build <prefix>/{control-plane,proxy,ferrulectl}:<tag>
#   deploy/kubernetes/build-images.sh --kind NAME      ... and `kind load docker-image` them into cluster NAME
#   deploy/kubernetes/build-images.sh --push           ... and `docker push` them (set the prefix to your registry)
#
# Environment:
#   FERRULE_IMAGE_PREFIX     image name prefix (ferrule); e.g. registry.example.com/ferrule
#   FERRULE_IMAGE_TAG        tag (the workspace version, which is also the proxy image the
#                            control plane injects by default: --inject-proxy-image)
#   FERRULE_K8S_TARGET_DIR   cargo target dir of the static build (target/compose, shared
#                            with deploy/compose/demo.sh, apart from the debug builds)
#   FERRULE_K8S_SKIP_BUILD=1 use the static binaries already in that target dir
#
# The names and tag must match deploy/kubernetes/kustomization.yaml (images, and
# FERRULE_INJECT_PROXY_IMAGE): change both in an overlay if you change them here.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TRIPLE=x86_64-unknown-linux-gnu
TARGET_DIR=${FERRULE_K8S_TARGET_DIR:-$ROOT/target/compose}
BIN=$TARGET_DIR/$TRIPLE/release
PREFIX=${FERRULE_IMAGE_PREFIX:-ferrule}
VERSION=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml")
TAG=${FERRULE_IMAGE_TAG:-$VERSION}
# image name : Dockerfile : binaries in its context
IMAGES=(
  "control-plane:$HERE/images/control-plane.Dockerfile:ferrule-control-plane ferrulectl"
  "proxy:$ROOT/deploy/compose/images/proxy.Dockerfile:ferrule-proxy"
  "ferrulectl:$ROOT/deploy/compose/images/ferrulectl.Dockerfile:ferrulectl"
)

log() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { echo "build-images.sh: $*" >&2; exit 1; }
# shellcheck source=../lib/images.sh
. "$ROOT/deploy/lib/images.sh"

kind_cluster= push=0
while [ $# -gt 0 ]; do
  case $1 in
    --kind) [ $# -ge 2 ] || die "--kind needs a cluster name"; kind_cluster=$2; shift 2 ;;
    --push) push=1; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
command -v docker >/dev/null 2>&1 || die "docker is not installed"

if [ "${FERRULE_K8S_SKIP_BUILD:-0}" = 1 ]; then
  log "using the static binaries in $BIN"
else
  build_static_binaries "$TARGET_DIR"
fi

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
built=()
for entry in "${IMAGES[@]}"; do
  name=${entry%%:*}; rest=${entry#*:}
  dockerfile=${rest%%:*}; bins=${rest#*:}
  mkdir -p "$ctx/$name/empty"
  for b in $bins; do
    check_static_binary "$BIN/$b"
    stage_binary "$BIN/$b" "$ctx/$name"
  done
  log "building image $PREFIX/$name:$TAG"
  docker_build_quiet -t "$PREFIX/$name:$TAG" -f "$dockerfile" "$ctx/$name"
  built+=("$PREFIX/$name:$TAG")
done

if [ -n "$kind_cluster" ]; then
  command -v kind >/dev/null 2>&1 || die "kind is not installed"
  for image in "${built[@]}"; do
    log "loading $image into kind cluster $kind_cluster"
    kind load docker-image "$image" --name "$kind_cluster"
  done
fi
if [ "$push" = 1 ]; then
  for image in "${built[@]}"; do
    log "pushing $image"
    docker push "$image"
  done
fi
printf '%s\n' "${built[@]}"
