#!/usr/bin/env bash
# The machine's physical limits, as the shared harness's tools/physical.sh measures them but
# only what the report uses: AEAD throughput per core on 16 KiB blocks (one TLS record), ECDSA
# P-256 and X25519 rates, direct loopback iperf3 with 1 and 4 streams. The same commands and the
# same output format (lib/ferrule.sh parses it), without the other block sizes and without the
# shared script's 2-second idle checks before each step: ~15 s instead of ~42 s of the budget.
# Usage: lib/physical.sh OUT_DIR   (env: SPEED_SECONDS, IPERF_SECONDS, PORT). Loopback only.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=$1; mkdir -p "$out"
: "${SPEED_SECONDS:=1}"; : "${IPERF_SECONDS:=3}"; : "${PORT:=21299}"
echo "# $(date -Is) $(openssl version); cpu: $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo); flags: $(grep -o -w -E 'aes|vaes|vpclmulqdq|avx2|avx512f|sha_ni' /proc/cpuinfo | sort -u | tr '\n' ' ')"
for alg in aes-128-gcm aes-256-gcm chacha20-poly1305; do
  echo "## openssl speed -evp $alg -bytes 16384"
  timeout 60 openssl speed -seconds "$SPEED_SECONDS" -bytes 16384 -evp "$alg" 2>/dev/null | grep -E "^(type|AES|ChaCha)" | tail -2
done
echo "## openssl speed ecdsap256 ecdhp256 ecdhx25519"
timeout 60 openssl speed -seconds "$SPEED_SECONDS" ecdsap256 ecdhp256 ecdhx25519 2>/dev/null | grep -E 'sign|verify|op/s|nistp256|X25519|256 bits' | tail -6
for p in 1 4; do
  echo "## iperf3 loopback direct -P $p, ${IPERF_SECONDS}s"
  iperf3 -s -1 -p "$PORT" >/dev/null 2>&1 & sp=$!
  sleep 0.5
  timeout $((IPERF_SECONDS + 20)) iperf3 -c 127.0.0.1 -p "$PORT" -t "$IPERF_SECONDS" -P "$p" -J > "$out/iperf-P$p.json" || true
  wait "$sp" 2>/dev/null || true
  python3 "$HERE/tools/parse.py" iperf "$out/iperf-P$p.json"
done
