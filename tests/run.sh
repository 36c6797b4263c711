#!/usr/bin/env bash
# Ferrule's test command (the README's and CI's): installs what the tests need on Debian
# when run as root, builds the binaries the end-to-end tests start, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
have() { command -v "$1" >/dev/null 2>&1; }
have openssl || need_pkgs+=(openssl)
have nft || need_pkgs+=(nftables)
have ip || need_pkgs+=(iproute2)
have iptables || need_pkgs+=(iptables)
have tcpdump || need_pkgs+=(tcpdump)      # transparent.rs: what is on the wire
have gnutls-cli || need_pkgs+=(gnutls-bin) # tls_negative.rs: a second TLS implementation
have promtool || need_pkgs+=(prometheus)
have curl || need_pkgs+=(curl)             # policy.rs: an HTTP/2 client
have testssl || need_pkgs+=(testssl.sh)    # graders.rs: TLS protocol/cipher enumeration
have nmap || need_pkgs+=(nmap)             # graders.rs: ssl-enum-ciphers
# prlimit: resource_limits.rs; setpriv: transparent.rs, intercept.rs, kubernetes_files.rs;
# nsenter: compose.rs.
{ have prlimit && have setpriv && have nsenter; } || need_pkgs+=(util-linux)
have kill || need_pkgs+=(procps)           # the harness signals the processes it starts
python3 -c 'import venv, ensurepip' 2>/dev/null || need_pkgs+=(python3-venv) # tests/ci/python-tools.sh
# compose.rs drives the real Docker engine where there is one: it also needs Compose.
if [ "${FERRULE_SKIP_DOCKER_TESTS:-}" != 1 ] && have docker; then
  docker compose version >/dev/null 2>&1 || have docker-compose || need_pkgs+=(docker-compose)
fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && have apt-get; then
    echo "tests/run.sh: installing ${need_pkgs[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
  else
    echo "tests/run.sh: missing ${need_pkgs[*]} (install them, or run as root on Debian)" >&2
    exit 1
  fi
fi

# A Docker engine that is installed but not running is started (compose.rs would skip).
if [ "${FERRULE_SKIP_DOCKER_TESTS:-}" != 1 ] && have docker && [ "$(id -u)" = 0 ] \
  && ! docker info >/dev/null 2>&1; then
  echo "tests/run.sh: starting the Docker daemon"
  service docker start >/dev/null 2>&1 || true
  for _ in $(seq 30); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || echo "tests/run.sh: the Docker daemon did not start; compose.rs will skip" >&2
fi

# Pinned Python tools (sslyze, h2, slowloris, ...) in a venv; the tests find them here.
FERRULE_TOOLS_BIN="$(tests/ci/python-tools.sh)"
export FERRULE_TOOLS_BIN

# Alert rules: cases that must fire and cases that must not.
promtool check rules deploy/prometheus/ferrule-alerts.yml
promtool test rules deploy/prometheus/ferrule-alerts.test.yml

# The end-to-end tests start these binaries from target/debug.
cargo build --workspace --bins

# Kubernetes manifests: schemas, flags against this build, CRD vs policy engine, checkov.
tests/ci/k8s-validate.sh
cargo test --workspace "$@"

# Fuzzing (fuzz/README.md): a short bounded run of every target, opt-in with
# FERRULE_FUZZ=1 (or when the default toolchain is a nightly). Not in the default run:
# the instrumented build of the fuzz workspace is its own cold build (measured: about
# 6.5 CPU-minutes, 13.5 with AddressSanitizer), and 12 targets at 15 s add 3 minutes;
# about 7 minutes on top of a ~18-minute cold run on 2 cores leaves too little margin
# under the 30-minute budget. The 1 GiB transfers need FERRULE_LONG_TESTS=1.
if [ "${FERRULE_FUZZ:-}" = 1 ] || rustc --version | grep -q nightly; then
  fuzz/run.sh "${FERRULE_FUZZ_SECONDS:-15}"
fi
