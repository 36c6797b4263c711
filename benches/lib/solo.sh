# shellcheck shell=bash
# What count.sh and profile.sh share: find the shared peer harness, install valgrind if it is
# missing, and run lib/ferrule.sh once on its own pair in one mode, without the comparison run.
# Sourced by them after setting HERE (benches/).

# solo_run MODE : MODE `count` (FERRULE_COUNT=1) or `profile` (FERRULE_PROFILE=1); exports
# RUN_ID=MODE-<timestamp> and RESULTS_DIR=$FERRULE_BENCH_STATE/results/$RUN_ID.
solo_run() {
  if [[ -z ${PEERS_DIR:-} ]]; then
    for d in /work/shared/peers "$HERE/../../shared/peers"; do [[ -x $d/run.sh ]] && { PEERS_DIR=$(cd "$d" && pwd); break; }; done
  fi
  export PEERS_DIR
  command -v valgrind >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind; }
  # Not under /root: nginx workers (www-data) must be able to read the /bulk file.
  : "${FERRULE_BENCH_STATE:=/var/tmp/ferrule-benches}"
  RUN_ID=$1-$(date +%Y%m%d-%H%M%S)
  export RUN_ID RESULTS_DIR=$FERRULE_BENCH_STATE/results/$RUN_ID FERRULE_PHYSICAL=0
  export PATH="$PATH:$HOME/.cargo/bin"
  case $1 in
    count) export FERRULE_COUNT=1 ;;
    profile) export FERRULE_PROFILE=1 ;;
  esac
  "$HERE/lib/ferrule.sh"
}
