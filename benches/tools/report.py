#!/usr/bin/env python3
"""results.tsv (one run) -> benches/results/latest.md + latest.tsv.

Usage: report.py RESULTS_TSV RUN_ID OUT_MD OUT_TSV [ENV_TXT] [TIMINGS]
  TIMINGS: "key=value;..." (e.g. measure_s=612;build_s=35;total_s=700), printed in the header.

Tables: (1) configuration x metric, each cell `value (x direct, x envoy-tcp)`; (2) the issue's
targets, Ferrule vs Envoy, met or not; (3) idle-connection memory, control plane (issuance, policy
propagation), micro-benchmarks, physical limits, Ferrule diagnostics; (4) every row of the run. A
value marked `*` was measured while processes outside the harness used more than FOREIGN_MAX %
(default 10) of the machine.
"""
import csv, os, re, sys
from collections import OrderedDict

FOREIGN_MAX = float(os.environ.get("FOREIGN_MAX", "10"))
ORDER = ["direct", "envoy-tcp", "envoy-http", "haproxy-tcp", "ferrule-tcp", "ferrule-http", "ferrule-tcp-nopool", "floor-relay", "tls-floor-relay", "plain-relay"]
# Reference pairs without TLS (lib/relay.sh), first present wins the targets table's column
# (the TLS floor relay, tls-floor-relay, has a column of its own):
# (column header, verdict note when it misses a target Ferrule misses, when only it misses).
REFS = OrderedDict([
    ("floor-relay", ("floor relay pair (no TLS, blocking)",
                     "unreachable here: even a blocking read/write relay misses it by over 20 %",
                     "bound violated: the floor relay misses it, noise?")),
    ("plain-relay", ("plain relay pair (no TLS)", "the plain relay misses it by over 20 % too", "the plain relay misses it")),
])
HEADLINE = [
    ("lat500.p50_ms", "latency @500 rps p50 (ms)"), ("lat500.p90_ms", "latency @500 rps p90 (ms)"),
    ("lat500.p99_ms", "latency @500 rps p99 (ms)"), ("lat500.p999_ms", "latency @500 rps p99.9 (ms)"),
    ("lat2000.p50_ms", "latency @2000 rps p50 (ms)"), ("lat2000.p90_ms", "latency @2000 rps p90 (ms)"),
    ("lat2000.p99_ms", "latency @2000 rps p99 (ms)"), ("lat2000.p999_ms", "latency @2000 rps p99.9 (ms)"),
    ("lat500.proxy_vcpu_per_1krps_pair", "proxy pair vCPU per 1000 rps (@500 rps)"),
    ("lat2000.proxy_vcpu_per_1krps_pair", "proxy pair vCPU per 1000 rps (@2000 rps)"),
    ("wrk.max_rps", "max req/s closed loop (wrk 2t/64c)"),
    ("wrk.proxy_cpu_cores", "proxy pair CPU during wrk (cores)"),
    ("conn.new_conn_rps", "new connections/s (no keep-alive, 16c)"),
    ("conn.p50_ms", "new-connection request p50 (ms)"),
    ("conn.mesh_handshakes", "mesh handshakes in the conn test"),
    ("conn.mesh_resumed", "… of which resumed"),
    ("conn.mesh_connections", "application connections carried (Ferrule; pooled: streams)"),
    ("iperf_P1.gbit_s", "iperf3 1 stream (Gbit/s)"), ("iperf_P4.gbit_s", "iperf3 4 streams (Gbit/s)"),
    ("bulk_http.gbit_s", "1 GiB HTTP download (Gbit/s)"),
    ("wrk.pair_cpu_us_per_req", "pair CPU per request, closed loop (µs)"),
    ("conn.pair_cpu_us_per_conn", "pair CPU per new connection (µs)"),
    ("iperf_P1.pair_cpu_us_per_mib", "pair CPU per MiB, iperf3 1 stream (µs)"),
    ("bulk_http.pair_cpu_us_per_mib", "pair CPU per MiB, HTTP download (µs; CPU over 3 downloads / median rate)"),
    ("bulk_http.proxy_minflt_per_mib", "pair minor page faults per MiB, HTTP download (Ferrule)"),
    ("rss_idle.pair", "RSS idle, pair (MiB)"), ("rss_peak.pair", "RSS peak (VmHWM), pair (MiB)"),
    ("anon_idle.pair", "RssAnon idle, pair (MiB)"), ("anon_peak.pair", "RssAnon after load, pair (MiB)"),
]


def fmt(v):
    if v is None:
        return "-"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3f}"


def main(path, run_id, out_md, out_tsv, env_txt=None, timings=""):
    rows = [r for r in csv.DictReader(open(path), delimiter="\t") if r["run"] == run_id]
    if not rows:
        sys.exit(f"no rows for run {run_id} in {path}")
    vals, units, order = {}, {}, OrderedDict()
    for r in rows:
        try:
            v = float(r["value"])
        except ValueError:
            continue
        vals[(r["config"], r["metric"])] = v
        units[r["metric"]] = r["unit"]
        order.setdefault(r["metric"], None)
    for (c, m), v in list(vals.items()):  # pair sums of per-proxy memory (as the shared summarize.py)
        if m.startswith(("rss_idle.", "rss_peak.", "anon_idle.", "anon_peak.")) and not m.endswith(".pair"):
            pm = m.split(".")[0] + ".pair"
            vals[(c, pm)] = vals.get((c, pm), 0.0) + v
            units[pm] = "MiB"
            order.setdefault(pm, None)
    # Derived: CPU of the proxy pair per unit of work (same run, same load, so contention affects
    # all configurations alike), from the shared harness's proxy_cpu_cores and the achieved rates.
    for c in sorted({k[0] for k in vals}):  # sorted: the same rows in the same order every time
        def _d(name, cores_m, rate_m, scale, unit):
            cores, rate = vals.get((c, cores_m)), vals.get((c, rate_m))
            if cores is not None and rate:
                vals[(c, name)] = cores / (rate * scale) * 1e6
                units[name] = unit
                order.setdefault(name, None)
        _d("wrk.pair_cpu_us_per_req", "wrk.proxy_cpu_cores", "wrk.max_rps", 1, "µs")
        _d("conn.pair_cpu_us_per_conn", "conn.proxy_cpu_cores", "conn.new_conn_rps", 1, "µs")
        _d("iperf_P1.pair_cpu_us_per_mib", "iperf_P1.proxy_cpu_cores", "iperf_P1.gbit_s", 1e9 / 8 / 2**20, "µs")
        _d("bulk_http.pair_cpu_us_per_mib", "bulk_http.proxy_cpu_cores", "bulk_http.gbit_s", 1e9 / 8 / 2**20, "µs")
    configs = [c for c in ORDER if any(k[0] == c for k in vals)]
    g = lambda c, m: vals.get((c, m))

    def flagged(c, m):
        f = g(c, m.split(".")[0] + ".foreign_busy_pct")
        return f is not None and f > FOREIGN_MAX

    def cell(c, m):
        v = g(c, m)
        if v is None:
            return "n/a"
        s = fmt(v) + ("*" if flagged(c, m) else "")
        rs = []
        d, e = g("direct", m), g("envoy-tcp", m)
        if c != "direct" and d:
            rs.append(f"{v / d:.2f}× direct")
        if c != "envoy-tcp" and e and c != "direct":
            rs.append(f"{v / e:.2f}× envoy")
        return s + (f" ({', '.join(rs)})" if rs else "")

    out = []
    P = out.append
    env = open(env_txt).read().strip() if env_txt and os.path.exists(env_txt) else ""
    P(f"# Ferrule benchmark — run `{run_id}`\n")
    if timings:
        P("Timings: " + ", ".join(f"{k} = {v}" for k, v in (t.split("=", 1) for t in timings.split(";") if "=" in t)) + "\n")
    if env:
        P("```\n" + env + "\n```\n")
    st = [(m.split(".", 1)[1], v) for (c, m), v in vals.items() if c == "machine" and m.startswith("steal_pct.")]
    if st:
        P("CPU time stolen by the hypervisor (not visible as foreign load): " + ", ".join(f"{k} part {v:.1f} %" for k, v in st) + "\n")
    P(f"`*` = more than {FOREIGN_MAX:.0f} % of the machine was used by processes outside the harness during that test.\n")
    P("## Configuration × metric (ratios to direct and to envoy-tcp)\n")
    P("| metric | " + " | ".join(configs) + " |")
    P("|---|" + "---:|" * len(configs))
    for m, label in HEADLINE:
        if not any(g(c, m) is not None for c in configs):
            continue
        P(f"| {label} | " + " | ".join(cell(c, m) for c in configs) + " |")

    # ------------------------------------------------------------------ targets
    P("\n## Targets (issue “Benchmarks”): Ferrule vs Envoy on this machine\n")
    # The reference relay pair (lib/relay.sh): floor-relay (blocking, a thread per direction, no
    # TLS: the least a sleeping user-space relay does per message) bounds from below what any
    # user-space proxy pair achieves here; plain-relay (the proxy's copy loop, no TLS) is not a
    # lower bound (the pooled hop batches more per system call and can beat it).
    ref = next((c for c in REFS if any(k[0] == c for k in vals)), "floor-relay")
    ref_head, ref_both, ref_only = REFS[ref]
    # The TLS floor relay (src/tls_floor.rs: the floor relay plus TLS 1.3 sealed and opened in
    # place after a rustls handshake with Ferrule's configuration) bounds a user-space *mTLS* pair:
    # a target it clearly misses is out of reach of any sidecar pair that encrypts in user space.
    tref = "tls-floor-relay" if any(k[0] == "tls-floor-relay" for k in vals) else None
    tg = (lambda m: g(tref, m) if tref else None)   # the TLS floor relay's value of metric m
    tcol = " TLS floor relay pair (blocking, TLS in place) |" if tref else ""
    P(f"| target | envoy-tcp | ferrule-tcp | ferrule-http | {ref_head} |{tcol} required (ferrule-tcp) | met? |")
    P("|---|---:|---:|---:|---:|" + ("---:|" if tref else "") + "---:|:---:|")
    targets_met = []

    def floor_verdict(rv, req, higher):
        """True if the floor relay meets the requirement; False only if it misses it by more than
        20 % of the requirement (rv < 0.8 x req where higher is better, rv > 1.2 x req where lower
        is: a clear miss, the target is out of reach of any user-space relay pair here); None (no
        verdict) in between, where one run's noise decides."""
        ok = rv >= req if higher else rv <= req
        if ok:
            return True
        far = rv < req * 0.8 if higher else rv > req * 1.2
        return False if far else None

    def add(label, ev, fv, hv, req_txt, ok, m=None, rv=None, relay_ok=None, info=False, tv=None, tok=None):
        # tv, tok: the TLS floor relay's value and floor_verdict (None: not judged).
        # relay_ok: floor_verdict's answer, or None where the relay is no bound (not judged).
        # info: shown with its verdict but not counted in "N of M target rows met".
        s = "n/a" if ok is None else ("yes" if ok else "**no**")
        if relay_ok is False and ok is not None:
            s += f" ({ref_both})" if ok is False else f" ({ref_only})"
        elif tok is False and ok is False:
            s += " (unreachable here for a user-space mTLS pair: the TLS floor relay misses it by over 20 %)"
        elif tok is False and ok:
            s += " (bound violated: the TLS floor relay misses it, noise?)"
        if not info:
            targets_met.append((label, ok))
        fl = (lambda c: "*" if m and flagged(c, m) else "")
        tc = f" {fmt(tv)}{fl(tref)} |" if tref else ""
        P(f"| {label} | {fmt(ev)}{fl('envoy-tcp')} | {fmt(fv)}{fl('ferrule-tcp')} | {fmt(hv)}{fl('ferrule-http')} | "
          f"{fmt(rv)}{fl(ref)} |{tc} {req_txt} | {s} |")

    for rate in ("500", "2000"):
        for p in ("p50", "p99"):
            m = f"lat{rate}.{p}_ms"
            d = g("direct", m)
            if d is None:
                continue
            de = (g("envoy-tcp", m) or float("nan")) - d
            df = (g("ferrule-tcp", m) or float("nan")) - d
            dh = (g("ferrule-http", m) or float("nan")) - d if g("ferrule-http", m) is not None else None
            # No verdict where Envoy or Ferrule "adds" nothing or less than nothing: a proxy pair
            # cannot beat the direct connection, so that is noise, and half of it no requirement.
            ok = None if not (de > 0 and df > 0) else df <= 0.5 * de
            dr = g(ref, m) - d if g(ref, m) is not None else None
            # The floor relay is judged on p50 only: a p99 of one 10-second test is decided by a
            # handful of requests, too few to call a target unreachable.
            fok = None if dr is None or not de > 0 or p != "p50" else floor_verdict(dr, 0.5 * de, higher=False)
            tv = tg(m) - d if tg(m) is not None else None
            tok = None if tv is None or not de > 0 or p != "p50" else floor_verdict(tv, 0.5 * de, higher=False)
            add(f"latency added over direct @{rate} rps {p} (ms)", de, df, dh, f"≤ {fmt(0.5 * de)} (½ Envoy's)", ok, m, dr, fok, tv=tv, tok=tok)
    for m, label in (("wrk.max_rps", "closed-loop req/s (wrk)"), ("conn.new_conn_rps", "new connections/s"),
                     ("iperf_P1.gbit_s", "bulk iperf3 1 stream (Gbit/s)"), ("iperf_P4.gbit_s", "bulk iperf3 4 streams (Gbit/s)"),
                     ("bulk_http.gbit_s", "bulk 1 GiB HTTP download (Gbit/s)")):
        e, f, h, r = g("envoy-tcp", m), g("ferrule-tcp", m), g("ferrule-http", m), g(ref, m)
        # Closed loop: the pooled hop batches many connections' requests per system call, so the
        # relay's rate is no bound for it; shown, not judged.
        # Nor for 4 streams (the relay's 8 threads contend for 2 cores) or handshakes (not measured for relays).
        bound = m not in ("wrk.max_rps", "iperf_P4.gbit_s", "conn.new_conn_rps")
        tv = tg(m)
        add(label, e, f, h, f"≥ {fmt(1.5 * e) if e else '-'} (1.5× Envoy)", None if not e or f is None else f >= 1.5 * e, m,
            r, None if not bound or not e or r is None else floor_verdict(r, 1.5 * e, higher=True),
            tv=tv, tok=None if not bound or not e or tv is None else floor_verdict(tv, 1.5 * e, higher=True))
    for m, label in (("rss_idle.pair", "idle RSS of the pair (MiB)"), ("anon_idle.pair", "idle RssAnon of the pair (MiB, informational)")):
        e, f, h = g("envoy-tcp", m), g("ferrule-tcp", m), g("ferrule-http", m)
        ok = None if e is None or f is None else f <= 0.25 * e
        add(label, e, f, h, f"≤ {fmt(0.25 * e) if e else '-'} (¼ Envoy's)", ok, info=m.startswith("anon_"))
    for rate in ("500", "2000"):
        m = f"lat{rate}.proxy_vcpu_per_1krps_pair"
        e, f, h, r = g("envoy-tcp", m), g("ferrule-tcp", m), g("ferrule-http", m), g(ref, m)
        add(f"pair vCPU per 1000 req/s @{rate} rps", e, f, h, f"≤ {fmt(0.5 * e) if e else '-'} (½ Envoy's)",
            None if e is None or f is None else f <= 0.5 * e, m, r, None if e is None or r is None else floor_verdict(r, 0.5 * e, higher=False),
            tv=tg(m), tok=None if e is None or tg(m) is None else floor_verdict(tg(m), 0.5 * e, higher=False))
    for m, label in (("wrk.pair_cpu_us_per_req", "pair CPU per request at max load (µs, wrk; informational)"),):
        e, f, h, r = g("envoy-tcp", m), g("ferrule-tcp", m), g("ferrule-http", m), g(ref, m)
        # At max load the same batching applies: the relay's CPU per request is no bound; not judged.
        add(label, e, f, h, f"≤ {fmt(0.5 * e) if e else '-'} (½ Envoy's)", None if e is None or f is None else f <= 0.5 * e, m,
            r, None, info=True, tv=tg(m))
    aes = g("physical", "aes_256_gcm.16k_gbit_s")
    lo = g("physical", "loopback_iperf_P1.gbit_s") or g("direct", "iperf_P1.gbit_s")
    if aes or lo:
        limit = min(x for x in (aes, lo) if x)
        for m, label in (("iperf_P1.gbit_s", "bulk iperf3 1 stream vs physical limit"), ("bulk_http.gbit_s", "bulk HTTP download vs physical limit")):
            e, f, h, r = g("envoy-tcp", m), g("ferrule-tcp", m), g("ferrule-http", m), g(ref, m)
            add(label + f" (limit {fmt(limit)} Gbit/s = min(AES-256-GCM 16 KiB/core {fmt(aes)}, loopback iperf3 {fmt(lo)}))",
                e, f, h, f"≥ {fmt(limit / 2)} (within 2×)", None if f is None else f >= limit / 2, m,
                r, None if r is None else floor_verdict(r, limit / 2, higher=True),
                tv=tg(m), tok=None if tg(m) is None else floor_verdict(tg(m), limit / 2, higher=True))
    met = sum(1 for _, ok in targets_met if ok)
    P(f"\n{met} of {sum(1 for _, ok in targets_met if ok is not None)} target rows with a verdict met "
      "(informational rows not counted).")

    # ------------------------------------------------------------------ idle connections
    idle = {m: v for (c, m), v in vals.items() if c == "ferrule-idle" and m.startswith(("idle.", "idle_local."))}
    if idle:
        P("\n## Idle established connections through the Ferrule pair\n")
        P("Waves of idle connections opened, held and closed one after the other on one fresh pair (no byte sent). "
          "*growth* = RSS increase during the wave / connections; *held* = RSS with the wave open minus the pair's RSS "
          "before the first wave / connections (a later wave reuses memory the allocator kept from earlier ones, as a "
          f"long-running proxy with connection churn does). Hard fd limit here: {fmt(idle.get('idle.fd_limit'))}.\n")
        # fds still open after a wave's connections closed (pooled mesh connections; a leak if it grows).
        has_left = any(".fds_left." in m for m in idle)
        P("| wave | connections | established | client proxy growth B/conn | server proxy growth B/conn | pair growth B/conn | pair held B/conn | pair RSS held (MiB) | pair RSS after close (MiB) |" + (" fds left after close (client / server proxy) |" if has_left else ""))
        P("|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if has_left else ""))
        def waves(prefix):
            ks = set()
            for m in idle:
                mm = re.match(re.escape(prefix) + r"w(\d+)_n(\d+)\.", m)
                if mm:
                    ks.add((int(mm.group(1)), int(mm.group(2))))
            return sorted(ks)
        cnt_ = lambda v: "-" if v is None else f"{v:.0f}"
        for w, n in waves("idle."):
            k = lambda s_: idle.get(f"idle.w{w}_n{n}.{s_}")
            held = (k("rss_after_mib.ferrule-out") or 0) + (k("rss_after_mib.ferrule-in") or 0)
            closed = (k("rss_closed_mib.ferrule-out") or 0) + (k("rss_closed_mib.ferrule-in") or 0)
            P(f"| {w} | {n} | {fmt(k('established'))} | {fmt(k('bytes_per_conn.ferrule-out'))} | {fmt(k('bytes_per_conn.ferrule-in'))} | "
              f"{fmt(k('bytes_per_conn.pair'))} | {fmt(k('held_bytes_per_conn.pair'))} | {fmt(held)} | {fmt(closed)} |"
              + (f" {cnt_(k('fds_left.ferrule-out'))} / {cnt_(k('fds_left.ferrule-in'))} |" if has_left else ""))
        lw = waves("idle_local.")
        if lw:
            P("\nBaseline, the copy loop alone (`ferrule-bench-hold --local-copy`: in one process, plain TCP, "
              "`copy_bidirectional` per connection, plus the client and sink sockets):\n")
            P("| wave | connections | growth B/conn | held B/conn | RSS held (MiB) |")
            P("|---:|---:|---:|---:|---:|")
            for w, n in lw:
                k = lambda s_: idle.get(f"idle_local.w{w}_n{n}.{s_}")
                P(f"| {w} | {n} | {fmt(k('bytes_per_conn.local-copy'))} | {fmt(k('held_bytes_per_conn.local-copy'))} | {fmt(k('rss_after_mib.local-copy'))} |")
    # ------------------------------------------------------------------ control plane
    cp = {m: v for (c, m), v in vals.items() if c == "ferrule-cp"}
    if any(m.startswith("certify.") for m in cp):
        P("\n## Control plane: certificates issued per second\n")
        P("| certs/s | Certify p50 (ms) | p99 (ms) | issued | errors | CP CPU (cores) | CP CPU per cert (ms) | CP RSS before → after (MiB) |")
        P("|---:|---:|---:|---:|---:|---:|---:|---|")
        k = lambda s: cp.get("certify." + s)
        P(f"| {fmt(k('certs_per_s'))} | {fmt(k('p50_ms'))} | {fmt(k('p99_ms'))} | {fmt(k('issued'))} | {fmt(k('errors'))} | "
          f"{fmt(k('cp_cpu_cores'))} | {fmt(k('cp_cpu_ms_per_cert'))} | {fmt(k('cp_rss_before_mib'))} → {fmt(k('cp_rss_after_mib'))} |")
    # ------------------------------------------------------------------ policy propagation
    pr = {m[len("propagate."):]: v for m, v in cp.items() if m.startswith("propagate.")}
    if pr:
        k = lambda s_: pr.get(s_)
        cnt = lambda s_: "-" if k(s_) is None else f"{k(s_):.0f}"
        trio = lambda a, b, c_: f"{fmt(k(a))} / {fmt(k(b))} / {fmt(k(c_))}"
        P("\n## Policy propagation: ApplyPolicies → proxies\n")
        P("Time from sending `ApplyPolicies` on the admin socket (what `ferrulectl apply` sends) until the change is "
          "in force (`ferrule-bench-propagate`, see the README's method).\n")
        if k("enforce.cycles"):
            P("Enforcement through a real `ferrule-tcp` pair (1 client proxy → 1 server proxy): a DENY for the client's "
              "identity, then its undo; the time until the first request through the pair is refused / answered again.\n")
            P("| DENY/undo cycles | DENY enforced p50 / max (ms) | undo enforced p50 / max (ms) | probe requests | probes without answer |")
            P("|---:|---:|---:|---:|---:|")
            P(f"| {cnt('enforce.cycles')} | {fmt(k('enforce_deny.p50_ms'))} / {fmt(k('enforce_deny.max_ms'))} | "
              f"{fmt(k('enforce_allow.p50_ms'))} / {fmt(k('enforce_allow.max_ms'))} | {cnt('enforce.probes')} | "
              f"{cnt('enforce.probe_timeouts')} |")
        ns = sorted({int(mm.group(1)) for m in pr for mm in [re.match(r"n(\d+)\.", m)] if mm})
        if ns:
            P("\nDelivery to N connected simulated proxies (each its own certificate, mTLS channel and `Mesh/Sync` "
              "session; receipt = the policy message decoded by that proxy). *all N* = per change, the last proxy to "
              f"get it; *each* = every proxy of every change. Control-plane RSS before any simulated proxy: "
              f"{fmt(k('cp_rss_base_mib'))} MiB.\n")
            P("| connected proxies | changes | all N have it p50 / p99 / max (ms) | each proxy p50 / p99 / max (ms) | "
              "ApplyPolicies round trip p50 (ms) | CP CPU per change (ms) | CP CPU (cores) | CP RSS (MiB) | "
              "tool CPU (cores) | connect N (s) |")
            P("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
            for n in ns:
                q = f"n{n}."
                P(f"| {n} | {cnt(q + 'changes')} | {trio(q + 'all_p50_ms', q + 'all_p99_ms', q + 'all_max_ms')} | "
                  f"{trio(q + 'each_p50_ms', q + 'each_p99_ms', q + 'each_max_ms')} | {fmt(k(q + 'apply_p50_ms'))} | "
                  f"{fmt(k(q + 'cp_cpu_ms_per_change'))} | {fmt(k(q + 'cp_cpu_cores'))} | {fmt(k(q + 'cp_rss_mib'))} | "
                  f"{fmt(k(q + 'client_cpu_cores'))} | {fmt(k(q + 'connect_s'))} |")
        if k("failed"):
            P("\n**ferrule-bench-propagate FAILED** (see `ferrule-propagate.txt.err` in the run's raw data): the rows "
              "above are the parts that completed before the failure.")
    # ------------------------------------------------------------------ micro
    micro = [(m, v) for (c, m), v in vals.items() if c == "micro" and m.endswith(".ns_per_iter")]
    if micro:
        P("\n## Micro-benchmarks (criterion)\n")
        P("| benchmark | time per iteration | throughput |")
        P("|---|---:|---:|")
        for m, v in micro:
            name = m[: -len(".ns_per_iter")]
            thr = g("micro", name + ".gbit_s")
            t = f"{v / 1e3:.2f} µs" if v >= 1e3 else f"{v:.0f} ns"
            P(f"| {name} | {t} | {fmt(thr) + ' Gbit/s' if thr else '-'} |")
    # ------------------------------------------------------------------ physical
    phys = [(m, v) for (c, m), v in vals.items() if c == "physical"]
    if phys:
        P("\n## Physical limits of this machine (lib/physical.sh: the shared tools/physical.sh's commands, 16 KiB blocks only)\n")
        P("| metric | value |")
        P("|---|---:|")
        for m, v in phys:
            P(f"| {m} ({units.get(m, '')}) | {fmt(v)} |")
    # ------------------------------------------------------------------ diagnostics
    diag = [(c, m, v) for (c, m), v in vals.items() if c.startswith("ferrule-") and
            re.search(r"(syscalls_per|cpu_us_per|user_pct|l7\.|mesh_failures)", m)]
    if diag:
        P("\n## Ferrule diagnostics (pair CPU per unit of work and user-space share, from /proc/PID/stat utime/stime)\n")
        P("| config | metric | value |")
        P("|---|---|---:|")
        for c, m, v in diag:
            P(f"| {c} | {m} ({units.get(m, '')}) | {fmt(v)} |")
    # ------------------------------------------------------------------ all rows
    P("\n## Every number of the run\n")
    P("| config | metric | value | × direct | × envoy-tcp |")
    P("|---|---|---:|---:|---:|")
    allc = configs + sorted({c for c, _ in vals} - set(configs))
    for m in order:
        for c in allc:
            v = g(c, m)
            if v is None:
                continue
            d, e = g("direct", m), g("envoy-tcp", m)
            rd = f"{v / d:.2f}" if d and c != "direct" else ""
            re_ = f"{v / e:.2f}" if e and c not in ("direct", "envoy-tcp") else ""
            P(f"| {c} | {m} ({units[m]}) | {fmt(v)}{'*' if flagged(c, m) else ''} | {rd} | {re_} |")
    text = "\n".join(out) + "\n"
    open(out_md, "w").write(text)
    with open(out_tsv, "w") as f:
        f.write("run\tconfig\tmetric\tvalue\tunit\n")
        for r in rows:
            f.write("\t".join(r[k] for k in ("run", "config", "metric", "value", "unit")) + "\n")
    print(text)


if __name__ == "__main__":
    a = sys.argv[1:]
    if len(a) < 4:
        sys.exit(__doc__)
    main(*a[:6])
