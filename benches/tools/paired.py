#!/usr/bin/env python3
"""Rows and table of benches/paired.sh.

  paired.py row ROUND TEST CONFIG OUT.json OUT.perf CPU_SECONDS
                                                      -> TSV rows (round, test, config, metric, value)
  paired.py table paired.tsv                          -> Markdown: every round, then medians and ratios

OUT.json is oha's JSON (test `lat`), iperf3's (-J, tests `bulk`, `bulk-down`) or wrk's text
report (test `wrk`, despite the name); OUT.perf is
`perf stat -x,` over both proxies of the pair; CPU_SECONDS their user + system time over the
same window (from /proc, tick-sampled, as the main report's CPU figures: `cpu_*`); `oncpu_*` is
perf's task-clock, the scheduler's own account of time on a CPU (more exact for short bursts;
measured for the Ferrule and Envoy pairs only: perf does not follow the threads a relay creates
per connection). Per-unit figures divide by the requests oha completed or by the MiB
iperf3 moved; the window (test + 1 s) includes up to a second of idle proxies, which costs them
next to nothing.
"""
import json
import re
import statistics
import sys


def perf_counters(path):
    """event -> value from `perf stat -x,` output; missing or uncounted events are left out."""
    out = {}
    try:
        f = open(path)
    except OSError as e:
        print(f"paired.py: {e}; no perf counters for this test", file=sys.stderr)
        return out
    with f:
        for line in f:
            fields = line.strip().split(",")
            if len(fields) > 2 and fields[0] and fields[0][0].isdigit():
                out[fields[2]] = float(fields[0])
    return out


def wrk_report(path):
    """(requests, req/s, non-2xx responses, socket errors) from wrk's text report, or None."""
    try:
        t = open(path).read()
    except OSError as e:
        print(f"paired.py: {path}: {e}", file=sys.stderr)
        return None
    n = re.search(r"(\d+) requests in", t)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", t)
    if not n or not rps:
        print(f"paired.py: {path}: not a wrk report", file=sys.stderr)
        return None
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", t)
    return int(n.group(1)), float(rps.group(1)), int(bad.group(1)) if bad else 0, sum(map(int, errs.groups())) if errs else 0


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        print(f"paired.py: {path}: {e}", file=sys.stderr)
        return None


def measured_wrk(path):
    """(rows, unit, units) of a wrk report, or None."""
    w = wrk_report(path)
    if not w or not w[0]:
        return None
    n, rps, bad, errs = w
    rows = []
    if bad:
        print(f"paired.py: {path}: {bad} responses other than 2xx/3xx", file=sys.stderr)
        rows.append(("non_2xx", bad))
    if errs:
        print(f"paired.py: {path}: {errs} socket errors (connect, read, write, timeout)", file=sys.stderr)
        rows.append(("socket_errors", errs))
    return rows + [("req_s", rps), ("requests", n)], "req", n


def measured_lat(path):
    """(rows, unit, units) of oha's JSON (fixed rate), or None."""
    j = read_json(path)
    if j is None:
        return None
    lp = j.get("latencyPercentiles") or {}
    codes = j.get("statusCodeDistribution") or {}
    done = sum(v for k, v in codes.items() if str(k).startswith("2"))
    other = sum(codes.values()) - done
    if not done or lp.get("p50") is None:
        print(f"paired.py: {path}: no successful requests", file=sys.stderr)
        return None
    rows = []
    if other:
        print(f"paired.py: {path}: {other} responses other than 2xx", file=sys.stderr)
        rows.append(("non_2xx", other))
    return rows + [("p50_ms", lp["p50"] * 1000), ("p99_ms", lp["p99"] * 1000), ("requests", done)], "req", done


def measured_bulk(path):
    """(rows, unit, units) of iperf3's JSON, or None."""
    j = read_json(path)
    if j is None:
        return None
    s = (j.get("end") or {}).get("sum_received")
    if not s:
        print(f"paired.py: {path}: no result ({j.get('error', 'unknown error')})", file=sys.stderr)
        return None
    mib = s["bytes"] / 2**20
    if mib <= 0:
        print(f"paired.py: {path}: nothing transferred", file=sys.stderr)
        return None
    return [("gbit_s", s["bits_per_second"] / 1e9), ("mib", mib)], "mib", mib


def row(rnd, test, config, out_json, out_perf, cpu_seconds):
    p = perf_counters(out_perf)
    measured = {"wrk": measured_wrk, "lat": measured_lat}.get(test, measured_bulk)(out_json)
    if measured is None:
        return
    rows, unit, n = measured
    if config != "direct":  # no proxies
        try:
            rows.append((f"cpu_us_per_{unit}", float(cpu_seconds) * 1e6 / n))
        except ValueError:
            print(f"paired.py: no CPU time for {out_json} ({cpu_seconds!r})", file=sys.stderr)
    if "task-clock" in p:  # ms on CPU, from the scheduler's clock rather than sampled ticks
        rows.append((f"oncpu_us_per_{unit}", p["task-clock"] * 1000 / n))
    if "context-switches" in p:
        rows.append((f"cs_per_{unit}", p["context-switches"] / n))
    if "raw_syscalls:sys_enter" in p:
        rows.append((f"syscalls_per_{unit}", p["raw_syscalls:sys_enter"] / n))
    for m, v in rows:
        print(f"{rnd}\t{test}\t{config}\t{m}\t{v:.4f}")


COLUMNS = {
    "lat": ["p50_ms", "p50_added_ms", "p99_ms", "p99_added_ms", "cpu_us_per_req", "oncpu_us_per_req",
            "cs_per_req", "syscalls_per_req", "non_2xx"],
    "bulk": ["gbit_s", "cpu_us_per_mib", "oncpu_us_per_mib", "cs_per_mib", "syscalls_per_mib"],
    "wrk": ["req_s", "cpu_us_per_req", "oncpu_us_per_req", "cs_per_req", "syscalls_per_req", "non_2xx", "socket_errors"],
}
CONFIGS = ["direct", "envoy-tcp", "ferrule-tcp", "tls-floor-relay"]
# (numerator, denominator) of the ratio rows, when both are in the run.
RATIOS = [("ferrule-tcp", "envoy-tcp"), ("ferrule-tcp", "tls-floor-relay"), ("tls-floor-relay", "envoy-tcp")]


def fmt(v):
    return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}" if abs(v) < 1000 else f"{v:.0f}"


def table(path):
    data = {}  # (test, config, metric) -> {round: value}
    with open(path) as f:
        for line in f:
            fields = line.rstrip("\n").split("\t")
            if len(fields) != 5 or fields[0] == "round":
                continue
            rnd, test, config, metric, value = fields
            data.setdefault((test, config, metric), {})[int(rnd)] = float(value)
    if not data:
        sys.exit(f"paired.py: {path}: no results (see the .err files beside it)")
    # Latency added over direct, round by round (both measured within the same round).
    for (test, config, metric), vals in list(data.items()):
        if test == "lat" and metric in ("p50_ms", "p99_ms") and config != "direct":
            d = data.get((test, "direct", metric), {})
            added = {r: v - d[r] for r, v in vals.items() if r in d}
            if added:
                data[(test, config, metric.replace("_ms", "_added_ms"))] = added
    order = ["lat", "wrk", "bulk", "bulk-down"]
    tests = sorted({k[0] for k in data}, key=lambda t: order.index(t) if t in order else len(order))
    for test in tests:
        configs = [c for c in CONFIGS if any(k[0] == test and k[1] == c for k in data)]
        cols = [m for m in COLUMNS.get(test, COLUMNS["bulk"]) if any((test, c, m) in data for c in configs)]
        print(f"**{test}**" + {"lat": " (fixed rate; latency of the whole request, and added over direct in the same round; per request)",
                               "wrk": " (closed loop, wrk 2 threads, 64 connections; per request)"}.get(test, " (iperf3 1 stream; per MiB)"))
        print()
        print("| config | " + " | ".join(cols) + " |")
        print("|---|" + "---:|" * len(cols))
        rounds = sorted({r for c in configs for m in cols for r in data.get((test, c, m), {})})
        for c in configs:
            for r in rounds:
                cells = [fmt(data[(test, c, m)][r]) if r in data.get((test, c, m), {}) else "-" for m in cols]
                print(f"| {c} round {r} | " + " | ".join(cells) + " |")
        med = {}
        for c in configs:
            med[c] = {m: statistics.median(data[(test, c, m)].values()) for m in cols if data.get((test, c, m))}
            print(f"| **{c} median** | " + " | ".join(fmt(med[c][m]) if m in med[c] else "-" for m in cols) + " |")
        for a_name, b_name in RATIOS:
            if a_name not in configs or b_name not in configs:
                continue
            medians, ranges = [], []
            for m in cols:
                fa, fb = data.get((test, a_name, m), {}), data.get((test, b_name, m), {})
                both = [r for r in rounds if r in fa and r in fb]  # the same rounds on both sides
                ma = statistics.median([fa[r] for r in both]) if both else None
                mb = statistics.median([fb[r] for r in both]) if both else None
                ok = ma is not None and ma >= 0 and mb and mb > 0  # a negative "added" has no ratio
                medians.append(f"{ma / mb:.2f}×" if ok else "-")
                ratios = [fa[r] / fb[r] for r in both if fb[r] > 0 and fa[r] >= 0]
                ranges.append(f"{min(ratios):.2f}–{max(ratios):.2f}×" if ratios else "-")
            print(f"| {a_name} / {b_name} (medians) | " + " | ".join(medians) + " |")
            print(f"| {a_name} / {b_name} (per round, range) | " + " | ".join(ranges) + " |")
        print()


if __name__ == "__main__":
    if len(sys.argv) == 8 and sys.argv[1] == "row":
        row(*sys.argv[2:])
    elif len(sys.argv) == 3 and sys.argv[1] == "table":
        table(sys.argv[2])
    else:
        sys.exit(__doc__)
