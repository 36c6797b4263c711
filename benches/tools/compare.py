#!/usr/bin/env python3
"""Several runs of benches/run.sh -> the issue's targets across runs, as a Markdown table.

Usage: compare.py RESULTS_TSV...   (each /var/tmp/ferrule-benches/results/bench-<run>/results.tsv;
       runs measured with other durations or sizes than most of them, e.g. smoke runs, are skipped
       with a warning: their "ferrule measured with:" line in env.txt differs)

One run is one sample on a noisy VM; benches/README.md quotes this table (every cell computed
from the runs' raw rows, as report.py computes them) rather than hand-copied numbers. Cells:
Ferrule (ferrule-tcp) relative to Envoy (envoy-tcp), and the floor relay's in brackets; for
latency, the milliseconds each configuration adds over direct at the same percentile.
"""
import csv, os, sys

THRESHOLDS = (0.25, 0.5, 1.5)


def num(x):
    """Two decimals, or three where two would round across a target's threshold (1.497 is not 1.50)."""
    for t in THRESHOLDS:
        if round(x, 2) == t and x != t:
            return f"{x:.3f}"
    return f"{x:.2f}"


def load(path):
    v = {}
    for r in csv.DictReader(open(path), delimiter="\t"):
        try:
            v[(r["config"], r["metric"])] = float(r["value"])
        except (ValueError, TypeError):  # a unit row, or a short row
            pass
    for c in sorted({k[0] for k in v}):
        for name, cores, rate, scale in (
                ("wrk.pair_cpu_us_per_req", "wrk.proxy_cpu_cores", "wrk.max_rps", 1),
                ("conn.pair_cpu_us_per_conn", "conn.proxy_cpu_cores", "conn.new_conn_rps", 1),
                ("iperf_P1.pair_cpu_us_per_mib", "iperf_P1.proxy_cpu_cores", "iperf_P1.gbit_s", 1e9 / 8 / 2**20),
                ("bulk_http.pair_cpu_us_per_mib", "bulk_http.proxy_cpu_cores", "bulk_http.gbit_s", 1e9 / 8 / 2**20)):
            if (c, cores) in v and v.get((c, rate)):
                v[(c, name)] = v[(c, cores)] / (v[(c, rate)] * scale) * 1e6
        idle = [x for (cc, mm), x in v.items() if cc == c and mm.startswith("rss_idle.") and mm != "rss_idle.pair"]
        if idle:
            v[(c, "rss_idle.pair")] = sum(idle)
    return v


def measured_with(path):
    """The run's "ferrule measured with:" line (its durations and sizes) from env.txt beside it."""
    try:
        with open(os.path.join(os.path.dirname(os.path.abspath(path)), "env.txt")) as f:
            return next((line.strip() for line in f if line.startswith("ferrule measured with:")), None)
    except OSError:
        return None


def comparable(paths):
    """The runs measured like most of them: a smoke run (shorter tests) or a directory that is not
    a full run (no env.txt line) matches `bench-*` too, and would skew the table."""
    lines = {p: measured_with(p) for p in paths}
    known = [l for l in lines.values() if l]
    if not known:
        sys.exit("compare.py: none of the runs has an env.txt with a 'ferrule measured with:' line")
    common = max(set(known), key=known.count)
    keep = []
    for p in paths:
        if lines[p] == common:
            keep.append(p)
        else:
            print(f"compare.py: skipping {p}: measured with other parameters ({lines[p] or 'no env.txt line'}; "
                  f"the others: {common})", file=sys.stderr)
    return keep


def main(paths):
    paths = comparable(paths)
    runs = [(os.path.basename(os.path.dirname(os.path.abspath(p))), load(p)) for p in paths]
    P = print
    P("| target | " + " | ".join(f"`{n}`" for n, _ in runs) + " |")
    P("|---|" + "---|" * len(runs))

    def row(label, cellf):
        cells = []
        for _, v in runs:
            try:
                cells.append(cellf(lambda c, m: v[(c, m)]))
            except (KeyError, ZeroDivisionError):
                cells.append("-")
        P(f"| {label} | " + " | ".join(cells) + " |")

    def ratio(m, floor=True):
        def f(g):
            s = f"{num(g('ferrule-tcp', m) / g('envoy-tcp', m))}×"
            if floor:
                try:
                    s += f" ({num(g('floor-relay', m) / g('envoy-tcp', m))}×)"
                except KeyError:
                    pass
            return s
        return f

    def added(m):
        def f(g):
            cells = []
            for c in ("envoy-tcp", "ferrule-tcp", "floor-relay"):
                try:
                    cells.append(f"{g(c, m) - g('direct', m):+.2f}")
                except KeyError:
                    if c != "floor-relay":  # the floor relay is optional (RELAY_CONFIGS)
                        raise
                    cells.append("-")
            return " / ".join(cells)
        return f

    for rate in ("500", "2000"):
        for p in ("p50", "p99"):
            row(f"latency added @{rate} rps {p}, ms: Envoy / Ferrule / floor (Ferrule ≤ ½ Envoy)", added(f"lat{rate}.{p}_ms"))
    row("pair vCPU per 1000 req/s @500 (≤ 0.5×)", ratio("lat500.proxy_vcpu_per_1krps_pair"))
    row("pair vCPU per 1000 req/s @2000 (≤ 0.5×)", ratio("lat2000.proxy_vcpu_per_1krps_pair"))
    row("closed-loop req/s (≥ 1.5×)", ratio("wrk.max_rps"))
    row("… pair CPU per request, closed loop", ratio("wrk.pair_cpu_us_per_req"))
    row("new connections/s (≥ 1.5×)", ratio("conn.new_conn_rps", False))
    row("… pair CPU per new connection", ratio("conn.pair_cpu_us_per_conn", False))
    row("iperf3 1 stream (≥ 1.5×)", ratio("iperf_P1.gbit_s"))
    row("iperf3 4 streams (≥ 1.5×)", ratio("iperf_P4.gbit_s"))
    row("1 GiB download (≥ 1.5×)", ratio("bulk_http.gbit_s"))
    row("idle RSS of the pair (≤ 0.25×)", ratio("rss_idle.pair", False))

    def phys(m):
        def f(g):
            lim = min(g("physical", "aes_256_gcm.16k_gbit_s"), g("physical", "loopback_iperf_P1.gbit_s"))
            try:
                fl = f"{num(g('floor-relay', m) / lim)}"
            except KeyError:  # the floor relay is optional (RELAY_CONFIGS)
                fl = "-"
            return f"{num(g('ferrule-tcp', m) / lim)} ({fl})"
        return f
    row("iperf3 1 stream ÷ physical limit (≥ 0.5)", phys("iperf_P1.gbit_s"))
    row("download ÷ physical limit (≥ 0.5)", phys("bulk_http.gbit_s"))
    row("physical limit, Gbit/s: AES-256-GCM per core / loopback iperf3",
        lambda g: f"{g('physical', 'aes_256_gcm.16k_gbit_s'):.1f} / {g('physical', 'loopback_iperf_P1.gbit_s'):.1f}")
    row("hypervisor steal, % (shared harness / Ferrule part)",
        lambda g: f"{g('machine', 'steal_pct.peer_harness'):.1f} / {g('machine', 'steal_pct.ferrule'):.1f}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
