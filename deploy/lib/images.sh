# Sourced by deploy/compose/demo.sh and deploy/kubernetes/build-images.sh: the static
# build of Ferrule's binaries and the FROM-scratch images made from them. Defines
# functions only; the caller provides ROOT, TRIPLE, log and die.

# build_static_binaries TARGET_DIR: the control plane, proxy and ferrulectl, release,
# statically linked (an image FROM scratch has no libc), in TARGET_DIR/TRIPLE/release.
build_static_binaries() {
  log "building static binaries (release, +crt-static, $TRIPLE) in $1"
  (cd "$ROOT" && RUSTFLAGS='-C target-feature=+crt-static' CARGO_TARGET_DIR="$1" \
    cargo build --release --target "$TRIPLE" -p ferrule-control-plane -p ferrule-proxy --bins)
}

# check_static_binary PATH: dies unless PATH exists and is statically linked.
check_static_binary() {
  [ -x "$1" ] || die "$1 is missing"
  # A dynamically linked binary would not start in an empty image: say so here.
  if command -v file >/dev/null 2>&1 && file -L "$1" | grep -q 'dynamically linked'; then
    die "$1 is dynamically linked; build with RUSTFLAGS='-C target-feature=+crt-static'"
  fi
}

# stage_binary PATH DIR: copies the binary into the image context DIR, stripped (debug
# info and symbols stay in target/).
stage_binary() {
  if command -v strip >/dev/null 2>&1; then
    strip -o "$2/$(basename "$1")" "$1"
  else
    cp "$1" "$2/"
  fi
}

# docker_build_quiet ARGS...: `docker build --quiet --pull=false ARGS...` (nothing is
# pulled), without the legacy builder's deprecation notice (FROM scratch needs nothing
# BuildKit adds).
docker_build_quiet() {
  docker build --quiet --pull=false "$@" >/dev/null \
    2> >(grep -v -e 'legacy builder is deprecated' -e 'Install the buildx' \
                 -e 'docs.docker.com/go/buildx' -e '^ *$' >&2 || true)
}
