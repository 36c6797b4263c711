#!/usr/bin/env bash
# Builds every fuzz target and runs each for a bounded time (default 20 s):
#
#   fuzz/run.sh [seconds-per-target] [target...]
#
# Uses cargo-fuzz (installed into ~/.cargo/bin if missing). On a stable toolchain the
# nightly-only flags are unlocked with RUSTC_BOOTSTRAP=1. Each target starts from its
# checked-in seeds (fuzz/seeds/<target>, read-only) plus what earlier runs found
# (fuzz/corpus/<target>, not checked in). A crash leaves its input in
# fuzz/artifacts/<target>/ and fails the script. FERRULE_FUZZ_SANITIZER picks the
# sanitizer (default: none, see fuzz/README.md).
set -euo pipefail
cd "$(dirname "$0")"

secs="${1:-20}"
shift || true
sanitizer="${FERRULE_FUZZ_SANITIZER:-none}"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz/run.sh: installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
if ! rustc --version | grep -q nightly; then
  export RUSTC_BOOTSTRAP=1
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi

# The control-plane targets keep a store under TMPDIR; libFuzzer exits without
# running destructors, so give them a scratch directory and remove it afterwards.
scratch="$(mktemp -d "${TMPDIR:-/tmp}/ferrule-fuzz.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT

# Build once, then run the binaries directly (`cargo fuzz run` would rebuild whenever
# the tree changes under it).
cargo fuzz build -s "$sanitizer"
bin="target/$(rustc -vV | sed -n 's/^host: //p')/release"

failed=()
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "seeds/$t" "artifacts/$t"
  echo "fuzz/run.sh: $t for ${secs}s"
  if ! TMPDIR="$scratch" "$bin/$t" "corpus/$t" "seeds/$t" \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=4096 -max_len=65536 \
    -artifact_prefix="artifacts/$t/" -print_final_stats=1 2>"$scratch/$t.log"; then
    failed+=("$t")
    tail -n 60 "$scratch/$t.log" >&2
  else
    grep -E '^(stat::number_of_executed_units|stat::new_units_added)' "$scratch/$t.log" | tr '\n' ' ' || true
    echo
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz/run.sh: FAILED: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
echo "fuzz/run.sh: ${#targets[@]} targets, ${secs}s each, no failures"
