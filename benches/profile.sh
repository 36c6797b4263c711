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
if [[ -z ${PEERS_DIR:-} ]]; then
  for d in /work/shared/peers "$HERE/../../shared/peers"; do [[ -x $d/run.sh ]] && { PEERS_DIR=$(cd "$d" && pwd); break; }; done
fi
export PEERS_DIR
command -v valgrind >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind; }
# Not under /root: nginx workers (www-data) must be able to read the /bulk file.
: "${FERRULE_BENCH_STATE:=/var/tmp/ferrule-benches}"
RUN=profile-$(date +%Y%m%d-%H%M%S)
export RESULTS_DIR=$FERRULE_BENCH_STATE/results/$RUN RUN_ID=$RUN FERRULE_PROFILE=1 FERRULE_PHYSICAL=0
export PATH="$PATH:$HOME/.cargo/bin"
"$HERE/lib/ferrule.sh"
mkdir -p "$HERE/results/profile"
rm -f "$HERE/results/profile/"*.txt
cp "$RESULTS_DIR"/profile/{cgtop,syscalls}.*.txt "$RESULTS_DIR"/profile/diag.txt "$HERE/results/profile/" 2>/dev/null || true
echo "profile summaries: $HERE/results/profile/ (full data: $RESULTS_DIR/profile)"
