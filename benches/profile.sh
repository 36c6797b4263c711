#!/usr/bin/env bash
# Profile the ferrule-tcp pair under load (see README "Where the cost goes"): perf when hardware
# counters work here (`perf stat -e instructions true`), else valgrind --tool=callgrind; then a
# second pass without valgrind counts syscalls (`perf trace -s`). Scenarios, each on a fresh pair:
# keep-alive requests (wrk -t1 -c16) through ferrule-tcp (`wrk`) and ferrule-http (`http`), new
# connections (oha --disable-keepalive -c8) and bulk (iperf3, 1 stream). Not part of run.sh
# (valgrind is ~50x slower).
#   benches/profile.sh                 PROF_SECONDS=10 PROF_SCENARIOS="wrk http conn bulk"
# Summaries (top functions by self and inclusive cost) are copied to benches/results/profile/.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib/solo.sh
source "$HERE/lib/solo.sh"
solo_run profile
mkdir -p "$HERE/results/profile"
rm -f "$HERE/results/profile/"*.txt
cp "$RESULTS_DIR"/profile/{cgtop,syscalls}.*.txt "$RESULTS_DIR"/profile/diag.txt "$HERE/results/profile/" 2>/dev/null || true
echo "profile summaries: $HERE/results/profile/ (full data: $RESULTS_DIR/profile)"
