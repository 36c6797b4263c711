//! `ferrule-bench-oha`: a drop-in replacement for the subset of [oha](https://github.com/hatoo/oha)
//! that `benches/run.sh` and the shared peers harness use through `$OHA_BIN`:
//!
//! ```text
//! ferrule-bench-oha --no-tui -w --output-format json -z 10s -c 16 -q 500 --latency-correction URL
//! ferrule-bench-oha --no-tui -w --output-format json -z 5s -c 16 --disable-keepalive URL
//! ```
//!
//! Why: building oha from source takes ~3 minutes of the benchmark command's 15-minute budget on
//! this 2-core machine; this binary is built with the rest of the workspace for free. It speaks
//! plain HTTP/1.1 over TCP only (`http://` + IP literal or `localhost`, which means 127.0.0.1).
//!
//! Reproduced from oha 1.16.0 (`src/client.rs`, `src/result_data.rs`, `src/printer.rs`,
//! `src/lib.rs`):
//! * `-q R`: one global schedule, slot `i` released at `t0 + i/R` into an unbounded queue that
//!   the `-c` workers drain (slots queue up behind busy workers; those still queued at the
//!   deadline are not sent, as in oha; `work_until_with_qps_latency_correction`). With
//!   `--latency-correction` a latency runs from the slot's *release* instant (oha sends
//!   `Instant::now()` after its `sleep_until`), otherwise from the actual send: a release late
//!   because the scheduling thread itself was late is not counted, as in oha. oha releases on tokio's 1 ms timer ticks, so at 2000 req/s it sends
//!   pairs; here a dedicated thread sleeps with `nanosleep` (~50 µs slack) and releases every slot
//!   that is due, so slots stay spaced. Without `-q` each worker sends back to back.
//! * `-z D`: no request starts after `t0 + D`; with `-w` requests in flight then finish and count,
//!   without it they end as `aborted due to deadline` (not reproduced: oha's `-q` mode counts
//!   that error also for each worker idle at the deadline).
//! * Keep-alive: one connection per worker, opened lazily by its first request; a connection the
//!   server closed (`Connection: close`, EOF seen while idle) is replaced before the next request,
//!   and, as in oha's `work_http1`, the connect time is part of that request's latency.
//!   `--disable-keepalive`: oha adds `connection: close` and drops the connection after each
//!   response; every latency includes the TCP connect. Connect timeout 5 s (oha's default); a
//!   30 s per-request timeout (oha has none by default). Both report `timeout`.
//! * Request headers as oha sends them (`accept`, `accept-encoding`, `user-agent`, `host`).
//! * Results (`ResultData`): every response is a success whatever its status; failures are keyed
//!   by message in `errorDistribution`. `successRate` = successes / (successes + errors other
//!   than deadline aborts); `requestsPerSec` = (successes + all errors) / `total`, `total` being
//!   the wall time from start until the last worker stopped; percentiles index the sorted
//!   success latencies at `floor(p/100 * n)`; `totalData` counts decoded body bytes.

use std::collections::{BTreeMap, VecDeque};
use std::io::ErrorKind::WouldBlock;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use httparse::Status;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// oha's default `--connect-timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound for one request, connect included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response head, or chunk-size/trailer line, accepted.
const MAX_HEAD: usize = 64 * 1024;
/// oha's error message for requests cut off by `-z` without `-w`.
const DEADLINE: &str = "aborted due to deadline";
/// Percentiles reported, as oha's `percentile_iter`.
const PERCENTILES: [f64; 9] = [10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9, 99.99];

/// `--output-format`.
#[derive(Debug, Clone, Copy, PartialEq, ValueEnum)]
enum Format {
    Text,
    Json,
}

/// The command line: oha's flags, those the harnesses use.
#[derive(Debug, Parser)]
#[command(
    name = "ferrule-bench-oha",
    version = concat!(env!("CARGO_PKG_VERSION"), " (oha-compatible subset)"),
    about = "HTTP/1.1 load generator: the subset of oha used by the benchmark harnesses"
)]
struct Args {
    /// Target URL: http://IP[:PORT][/PATH].
    url: String,
    /// Run for this long (e.g. 10s, 500ms, 1m); no request starts later.
    #[arg(short = 'z', value_parser = parse_duration)]
    duration: Duration,
    /// Concurrent connections (workers).
    #[arg(short = 'c', default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    connections: u32,
    /// Open-loop rate for all workers together, requests per second (absent or 0: closed loop).
    #[arg(short = 'q')]
    qps: Option<f64>,
    /// Measure latency from each request's release by the `-q` schedule.
    #[arg(long)]
    latency_correction: bool,
    /// Finish and count the requests in flight at the deadline.
    #[arg(short = 'w', long = "wait-ongoing-requests-after-deadline")]
    wait: bool,
    /// A new TCP connection for every request.
    #[arg(long)]
    disable_keepalive: bool,
    /// Accepted for compatibility: there is no TUI.
    #[arg(long)]
    no_tui: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    output_format: Format,
}

/// Parses a humantime-style duration (`10s`, `500ms`, `1m30s`).
fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?} (expected e.g. 10s, 500ms, 1m)");
    let (mut rest, mut secs) = (s.trim(), 0.0);
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'));
        let (num, tail) = rest.split_at(digits.unwrap_or(rest.len()));
        let (unit, tail) = tail.split_at(
            tail.find(|c: char| c.is_ascii_digit())
                .unwrap_or(tail.len()),
        );
        let scale = match unit.trim() {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" | "sec" | "secs" => 1.0,
            "m" | "min" | "mins" => 60.0,
            "h" | "hr" | "hour" | "hours" => 3600.0,
            _ => return Err(bad()),
        };
        secs += num.parse::<f64>().map_err(|_| bad())? * scale;
        rest = tail;
    }
    let d = Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| !d.is_zero());
    d.ok_or_else(bad)
}

/// Where to connect, and the `Host` header (oha's `url.authority()`: port 80 left out) and
/// request target (path and query) to send there.
#[derive(Debug)]
struct Target(SocketAddr, String, String);

/// Parses `http://HOST[:PORT][/PATH]` with HOST an IP literal or `localhost` (127.0.0.1).
fn parse_url(url: &str) -> Result<Target, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or("only http:// URLs are supported")?;
    let (auth, tail) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    let path = match tail.split('#').next().unwrap_or_default() {
        "" => "/".to_string(),
        t if t.starts_with('?') => format!("/{t}"),
        t => t.to_string(),
    };
    if path.bytes().any(|b| b <= b' ' || b >= 0x7f) {
        return Err("the URL path must be printable ASCII without spaces".into());
    }
    let (host, port) = match auth.rfind(':') {
        Some(i) if !auth[i..].contains(']') => {
            let port = auth[i + 1..].parse::<u16>().ok().filter(|p| *p != 0);
            (&auth[..i], port.ok_or(format!("invalid port in {url:?}"))?)
        }
        _ => (auth, 80),
    };
    let bad = || format!("host {host:?} must be an IP literal or localhost");
    let ip: IpAddr = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        _ if host.eq_ignore_ascii_case("localhost") => Ipv4Addr::LOCALHOST.into(),
        Some(v6) => v6.parse::<Ipv6Addr>().map_err(|_| bad())?.into(),
        None => host.parse::<Ipv4Addr>().map_err(|_| bad())?.into(),
    };
    let authority = if port == 80 {
        host.to_string()
    } else {
        format!("{host}:{port}")
    };
    Ok(Target(SocketAddr::new(ip, port), authority, path))
}

/// How a response body is delimited (RFC 9112 §6.3).
#[derive(Debug, PartialEq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilEof,
}

/// Parses the response head at the start of `buf`: `None` while incomplete, else its length,
/// status, body framing and whether the connection can carry another request.
fn parse_head(buf: &[u8]) -> Result<Option<(usize, u16, Framing, bool)>, String> {
    // As many header lines as hyper accepts by default (oha's client is hyper).
    let mut headers = [httparse::EMPTY_HEADER; 100];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(Status::Complete(n)) => n,
        Ok(Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("invalid HTTP response: {e}")),
    };
    let (mut length, mut te, mut chunked, mut close, mut ka) = (None, false, false, false, false);
    for h in resp.headers.iter() {
        let tokens = || h.value.split(|b| *b == b',').map(<[u8]>::trim_ascii);
        if h.name.eq_ignore_ascii_case("content-length") {
            // 1*DIGIT (RFC 9110 8.6): no sign, nothing but the surrounding whitespace.
            let v = Some(h.value.trim_ascii())
                .filter(|v| !v.is_empty() && v.iter().all(u8::is_ascii_digit))
                .and_then(|v| std::str::from_utf8(v).ok()?.parse::<u64>().ok());
            if v.is_none() || length.is_some_and(|l| Some(l) != v) {
                return Err("invalid content-length".into());
            }
            length = v;
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            te = true;
            chunked = tokens()
                .next_back()
                .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            close |= tokens().any(|t| t.eq_ignore_ascii_case(b"close"));
            ka |= tokens().any(|t| t.eq_ignore_ascii_case(b"keep-alive"));
        }
    }
    let status = resp.code.unwrap_or_default();
    let framing = match (status, te, chunked, length) {
        (100..=199 | 204 | 304, ..) => Framing::Empty,
        (_, true, true, _) => Framing::Chunked,
        (_, false, _, Some(n)) => Framing::Length(n),
        _ => Framing::UntilEof,
    };
    let keep = !close && (resp.version == Some(1) || ka) && framing != Framing::UntilEof;
    Ok(Some((len, status, framing, keep)))
}

/// Incremental decoder of a chunked body (RFC 9112 §7.1) that counts and discards the payload.
#[derive(Debug, Default)]
struct Chunked {
    state: ChunkState,
    /// Payload bytes left in the current chunk.
    left: u64,
    /// Payload bytes seen.
    payload: u64,
}

/// Where a [`Chunked`] decoder is.
#[derive(Debug, Default, PartialEq, Clone, Copy)]
enum ChunkState {
    #[default]
    Size,
    Data,
    DataEnd,
    Trailer,
    Done,
}

impl Chunked {
    /// Consumes what it can of `data`; returns how many bytes it used.
    fn feed(&mut self, data: &[u8]) -> Result<usize, String> {
        let bad = || Err("invalid chunked body".to_string());
        let mut pos = 0;
        loop {
            let rest = &data[pos..];
            pos += match self.state {
                ChunkState::Done => return Ok(pos),
                ChunkState::Size => match httparse::parse_chunk_size(rest) {
                    Ok(Status::Complete((n, size))) => {
                        self.left = size;
                        self.state = if size == 0 {
                            ChunkState::Trailer
                        } else {
                            ChunkState::Data
                        };
                        n
                    }
                    Ok(Status::Partial) if rest.len() < MAX_HEAD => return Ok(pos),
                    _ => return bad(),
                },
                ChunkState::Data if rest.is_empty() => return Ok(pos),
                ChunkState::Data => {
                    let n = self.left.min(rest.len() as u64);
                    (self.left, self.payload) = (self.left - n, self.payload + n);
                    if self.left == 0 {
                        self.state = ChunkState::DataEnd;
                    }
                    n as usize
                }
                ChunkState::DataEnd => match rest {
                    [b'\r', b'\n', ..] => {
                        self.state = ChunkState::Size;
                        2
                    }
                    [] | [b'\r'] => return Ok(pos),
                    _ => return bad(),
                },
                ChunkState::Trailer => match rest.iter().position(|b| *b == b'\n') {
                    Some(nl) => {
                        if rest[..nl].trim_ascii().is_empty() {
                            self.state = ChunkState::Done;
                        }
                        nl + 1
                    }
                    None if rest.len() < MAX_HEAD => return Ok(pos),
                    None => return bad(),
                },
            };
        }
    }
}

/// Reads more of the response into `buf`; the peer closing the connection here is an error.
async fn fill(conn: &mut TcpStream, buf: &mut Vec<u8>) -> Result<usize, String> {
    buf.reserve(16 * 1024);
    match conn.read_buf(buf).await.map_err(|e| e.to_string())? {
        0 => Err("connection closed before message completed".into()),
        n => Ok(n),
    }
}

/// Reads one response from `conn` (reusing `buf`), discarding its body. Returns its status,
/// body bytes (decoded) and whether the connection can carry another request.
async fn read_response(
    conn: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> Result<(u16, u64, bool), String> {
    buf.clear();
    let (len, status, framing, mut keep) = loop {
        match parse_head(buf)? {
            Some((_, 101, ..)) => return Err("unexpected protocol upgrade".into()),
            Some((len, 100..=199, ..)) => drop(buf.drain(..len)), // a final response follows
            Some(head) => break head,
            None if buf.len() > MAX_HEAD => return Err("response head too large".into()),
            None => _ = fill(conn, buf).await?,
        }
    };
    buf.drain(..len);
    let body = match framing {
        Framing::Empty => 0,
        Framing::Length(n) => {
            let mut got = buf.len() as u64;
            while got < n {
                buf.clear();
                got += fill(conn, buf).await? as u64;
            }
            buf.clear();
            keep &= got == n; // more would be a response to no request
            n
        }
        Framing::Chunked => {
            let mut dec = Chunked::default();
            while dec.state != ChunkState::Done {
                let used = dec.feed(buf)?;
                buf.drain(..used);
                if dec.state != ChunkState::Done {
                    fill(conn, buf).await?;
                }
            }
            dec.payload
        }
        Framing::UntilEof => {
            let mut got = buf.len() as u64;
            loop {
                buf.clear();
                buf.reserve(16 * 1024);
                match conn.read_buf(buf).await.map_err(|e| e.to_string())? {
                    0 => break got,
                    n => got += n as u64,
                }
            }
        }
    };
    Ok((status, body, keep && buf.is_empty()))
}

/// Locks `m`; a panicked holder cannot leave these plain collections inconsistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The `-q` schedule: release instants of the slots not yet taken, one permit per slot.
struct Slots {
    permits: Semaphore,
    released: Mutex<VecDeque<Instant>>,
}

impl Slots {
    /// Releases slot `i` at `t0 + i/rate` until `deadline`, every due slot at each wake-up,
    /// then closes the schedule. Runs on its own thread: `nanosleep` is precise to ~50 µs where
    /// tokio's timer has 1 ms ticks.
    fn run(&self, t0: Instant, rate: f64, deadline: Instant) {
        // Closes the schedule however this ends, so that no worker waits for a slot forever.
        struct CloseOnExit<'a>(&'a Semaphore);
        impl Drop for CloseOnExit<'_> {
            fn drop(&mut self) {
                self.0.close();
            }
        }
        let _close = CloseOnExit(&self.permits);
        // `None` once a slot's time is beyond what an `Instant` holds (a tiny `-q`).
        let due = |i: u64| {
            Duration::try_from_secs_f64(i as f64 / rate)
                .ok()
                .and_then(|d| t0.checked_add(d))
        };
        let mut i = 0;
        while let Some(next) = due(i).filter(|t| *t < deadline) {
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
            let (now, first) = (Instant::now(), i);
            let mut q = lock(&self.released);
            while due(i).is_some_and(|t| t <= now && t < deadline) {
                q.push_back(now);
                i += 1;
            }
            drop(q);
            self.permits.add_permits((i - first) as usize);
        }
        std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
    }
}

/// The results (oha's `ResultData`): latencies in seconds of the successes, body bytes,
/// responses by status, failures by message.
#[derive(Default)]
struct Stats {
    latencies: Vec<f64>,
    bytes: u64,
    statuses: BTreeMap<u16, usize>,
    errors: BTreeMap<String, usize>,
}

/// What the workers share.
struct Plan {
    addr: SocketAddr,
    request: Vec<u8>,
    keep_alive: bool,
    deadline: Instant,
    wait: bool,
    latency_correction: bool,
    slots: Option<Slots>,
    stats: Mutex<Stats>,
}

/// One request on the worker's connection, opened (or replaced, if the server closed it) first.
async fn exchange(
    plan: &Plan,
    conn: &mut Option<TcpStream>,
    buf: &mut Vec<u8>,
) -> Result<(u16, u64, bool), String> {
    // An idle keep-alive connection has nothing to read: EOF means the server closed it (hyper
    // notices that in its connection task; oha then reconnects without an error).
    let closed =
        |c: &TcpStream| !matches!(c.try_read(&mut [0; 1]), Err(e) if e.kind() == WouldBlock);
    if conn.as_ref().is_some_and(closed) {
        *conn = None;
    }
    let c = match conn {
        Some(c) => c,
        None => {
            let c = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(plan.addr)).await;
            let c = c.map_err(|_| "timeout")?.map_err(|e| e.to_string())?;
            c.set_nodelay(true).map_err(|e| e.to_string())?;
            conn.insert(c)
        }
    };
    c.write_all(&plan.request)
        .await
        .map_err(|e| e.to_string())?;
    read_response(c, buf).await
}

/// A worker: takes `-q` slots (or runs back to back) until the deadline.
async fn worker(plan: Arc<Plan>) {
    let (mut conn, mut buf) = (None, Vec::with_capacity(16 * 1024));
    loop {
        let released = match &plan.slots {
            Some(slots) => match slots.permits.acquire().await {
                Ok(permit) => {
                    permit.forget();
                    lock(&slots.released).pop_front()
                }
                Err(_) => return, // the schedule closed at the deadline
            },
            None => None,
        };
        let start = Instant::now();
        if start >= plan.deadline {
            return;
        }
        let limit = start + REQUEST_TIMEOUT;
        let limit = if plan.wait {
            limit
        } else {
            limit.min(plan.deadline)
        };
        let res = tokio::time::timeout_at(limit.into(), exchange(&plan, &mut conn, &mut buf)).await;
        let end = Instant::now();
        let mut st = lock(&plan.stats);
        let error = match res {
            // Without `-w` a request unfinished at the deadline is abandoned, however it ends.
            _ if !plan.wait && end >= plan.deadline => {
                *st.errors.entry(DEADLINE.into()).or_default() += 1;
                return;
            }
            Ok(Ok((status, body, keep))) => {
                let from = released
                    .filter(|_| plan.latency_correction)
                    .unwrap_or(start);
                st.latencies.push((end - from).as_secs_f64());
                st.bytes += body;
                *st.statuses.entry(status).or_default() += 1;
                if !keep || !plan.keep_alive {
                    conn = None;
                }
                continue;
            }
            Ok(Err(e)) => e,
            Err(_) => "timeout".into(),
        };
        *st.errors.entry(error).or_default() += 1;
        conn = None;
    }
}

/// Value at oha's index `floor(p/100 * n)` of the sorted `values`, NaN (`null`) if none.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = (p / 100.0 * sorted.len() as f64) as usize;
    sorted.get(i).copied().unwrap_or(f64::NAN)
}

/// The results as oha prints them: its JSON schema (a subset; seconds) or a short text summary.
fn report(st: &mut Stats, total: f64, format: Format) -> String {
    st.latencies.sort_by(f64::total_cmp);
    let (lat, n_ok) = (&st.latencies, st.latencies.len());
    let n_err: usize = st.errors.values().sum();
    let counted = n_ok + n_err - st.errors.get(DEADLINE).copied().unwrap_or(0);
    let (rate, rps) = (n_ok as f64 / counted as f64, (n_ok + n_err) as f64 / total);
    let (min, max) = (
        percentile(lat, 0.0),
        lat.last().copied().unwrap_or(f64::NAN),
    );
    let mean = lat.iter().sum::<f64>() / n_ok as f64;
    let pct: BTreeMap<_, _> = PERCENTILES
        .map(|p| (format!("p{p}"), percentile(lat, p)))
        .into();
    let codes: BTreeMap<_, _> = st
        .statuses
        .iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    if format == Format::Json {
        let summary = serde_json::json!({
            "successRate": rate, "total": total, "slowest": max, "fastest": min, "average": mean,
            "requestsPerSec": rps, "totalData": st.bytes,
            "sizePerRequest": st.bytes.checked_div(n_ok as u64),
            "sizePerSec": st.bytes as f64 / total,
        });
        let out = serde_json::json!({"summary": summary, "latencyPercentiles": pct,
            "statusCodeDistribution": codes, "errorDistribution": st.errors});
        return serde_json::to_string_pretty(&out).unwrap_or_default() + "\n";
    }
    let mut o = format!(
        "Summary:\n  Success rate:\t{:.2}%\n  Total:\t{total:.4} s\n  Slowest:\t{:.4} ms\n  \
         Fastest:\t{:.4} ms\n  Average:\t{:.4} ms\n  Requests/sec:\t{rps:.4}\n  Total data:\t{} B\n\n\
         Response time distribution:\n",
        100.0 * rate,
        max * 1e3,
        min * 1e3,
        mean * 1e3,
        st.bytes
    );
    PERCENTILES
        .iter()
        .for_each(|p| o += &format!("  {p}%:\t{:.4} ms\n", percentile(lat, *p) * 1e3));
    o += "\nStatus code distribution:\n";
    codes
        .iter()
        .for_each(|(k, v)| o += &format!("  [{k}] {v} responses\n"));
    o += "\nError distribution:\n";
    st.errors
        .iter()
        .for_each(|(k, v)| o += &format!("  [{v}] {k}\n"));
    o
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(out) => {
            // Not `print!`: a closed stdout (EPIPE) is an error to report, not a panic.
            match std::io::Write::write_all(&mut std::io::stdout().lock(), out.as_bytes()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ferrule-bench-oha: writing the report: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            eprintln!("ferrule-bench-oha: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the load on a current-thread runtime (measured as cheap as a 1-worker multi-thread
/// one) plus, with `-q`, the scheduler thread; returns the report.
fn run(args: &Args) -> Result<String, String> {
    let Target(addr, authority, path) =
        parse_url(&args.url).map_err(|e| format!("{}: {e}", args.url))?;
    if args.qps.is_some_and(|q| !q.is_finite() || q < 0.0) {
        return Err("-q must be a non-negative number of requests per second".into());
    }
    let close = if args.disable_keepalive {
        "connection: close\r\n"
    } else {
        ""
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\naccept: */*\r\naccept-encoding: gzip, compress, deflate, br\r\n\
         user-agent: ferrule-bench-oha/{}\r\n{close}host: {authority}\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let rt = rt.map_err(|e| format!("tokio runtime: {e}"))?;
    let (t0, rate) = (Instant::now(), args.qps.filter(|q| *q > 0.0));
    let plan = Arc::new(Plan {
        addr,
        request: request.into_bytes(),
        keep_alive: !args.disable_keepalive,
        deadline: t0 + args.duration,
        wait: args.wait,
        latency_correction: args.latency_correction,
        slots: rate.map(|_| Slots {
            permits: Semaphore::new(0),
            released: Mutex::default(),
        }),
        stats: Mutex::default(),
    });
    if let (Some(rate), plan) = (rate, plan.clone()) {
        let run = move || plan.slots.as_ref().map(|s| s.run(t0, rate, plan.deadline));
        std::thread::Builder::new()
            .name("schedule".into())
            .spawn(run)
            .map_err(|e| e.to_string())?;
    }
    rt.block_on(async {
        let workers: Vec<_> = (0..args.connections)
            .map(|_| tokio::spawn(worker(plan.clone())))
            .collect();
        for w in workers {
            w.await.map_err(|e| format!("worker: {e}"))?;
        }
        Ok::<_, String>(())
    })?;
    let total = t0.elapsed().as_secs_f64();
    Ok(report(&mut lock(&plan.stats), total, args.output_format))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `parse_head` on a complete head.
    fn head(raw: &[u8]) -> (usize, u16, Framing, bool) {
        parse_head(raw)
            .ok()
            .flatten()
            .expect("a complete, valid head")
    }

    #[test]
    fn percentiles_follow_oha_index() {
        let sorted: Vec<f64> = (1..=10).map(f64::from).collect();
        let got = PERCENTILES.map(|p| percentile(&sorted, p));
        assert_eq!(got, [2.0, 3.0, 6.0, 8.0, 10.0, 10.0, 10.0, 10.0, 10.0]);
        assert_eq!(percentile(&sorted[..1], 99.99), 1.0);
        assert!(percentile(&[], 50.0).is_nan());
        let mut st = Stats {
            latencies: vec![0.003, 0.001, 0.002],
            bytes: 30,
            ..Stats::default()
        };
        st.statuses.insert(200, 3);
        st.errors.insert(DEADLINE.into(), 1);
        st.errors.insert("timeout".into(), 1);
        let v: serde_json::Value =
            serde_json::from_str(&report(&mut st, 2.0, Format::Json)).expect("JSON");
        assert_eq!(v["summary"]["successRate"], 0.75); // deadline aborts are left out
        assert_eq!(v["summary"]["requestsPerSec"], 2.5); // ... but counted as requests
        assert_eq!(
            (&v["summary"]["fastest"], &v["summary"]["sizePerRequest"]),
            (&0.001.into(), &10.into())
        );
        assert_eq!(
            (
                &v["latencyPercentiles"]["p50"],
                &v["statusCodeDistribution"]["200"]
            ),
            (&0.002.into(), &3.into())
        );
        let empty = report(&mut Stats::default(), 1.0, Format::Json);
        assert!(empty.contains("\"p99.99\": null") && empty.contains("\"sizePerRequest\": null"));
    }

    #[test]
    fn content_length_and_keep_alive() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(head(r), (38, 200, Framing::Length(5), true));
        assert!(matches!(parse_head(&r[..20]), Ok(None)));
        let r = b"HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(head(r), (64, 404, Framing::Length(0), false));
        assert_eq!(head(b"HTTP/1.0 200 OK\r\n\r\n").2, Framing::UntilEof);
        assert!(!head(b"HTTP/1.0 200 OK\r\n\r\n").3);
        assert!(head(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n").3);
        assert_eq!(head(b"HTTP/1.1 204 No Content\r\n\r\n").2, Framing::Empty);
    }

    #[test]
    fn chunked_body() {
        let h = head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert_eq!((h.2, h.3), (Framing::Chunked, true));
        let body = b"5;ext=1\r\nhello\r\nB\r\n world!!!!!\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
        let mut dec = Chunked::default();
        assert_eq!(dec.feed(body), Ok(body.len() - 4));
        assert_eq!((dec.state, dec.payload), (ChunkState::Done, 16));
        // One byte at a time, as a slow server could send it.
        let (mut dec, mut buf) = (Chunked::default(), Vec::new());
        for b in body {
            buf.push(*b);
            let used = dec.feed(&buf).expect("valid");
            buf.drain(..used);
        }
        assert_eq!(
            (dec.state, dec.payload, &buf[..]),
            (ChunkState::Done, 16, &b"NEXT"[..])
        );
    }

    #[test]
    fn malformed_is_an_error_not_a_panic() {
        for bad in [
            &b"HTTP/1.1 2000 OK\r\n\r\n"[..],
            b"garbage\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5 5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        ] {
            assert!(parse_head(bad).is_err(), "{bad:?}");
        }
        for bad in [
            &b"zz\r\n"[..],
            b"5\r\nhelloXX",
            b"fffffffffffffffff\r\n",
            &[b'1'; 20],
        ] {
            assert!(Chunked::default().feed(bad).is_err(), "{bad:?}");
        }
    }

    /// Serves `reply` to one request, then closes.
    async fn serve(reply: &'static [u8]) -> Result<(u16, u64, bool), String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await?;
            s.read_exact(&mut [0; 18]).await?; // the request below
            s.write_all(reply).await
        });
        let mut conn = Some(TcpStream::connect(addr).await.map_err(|e| e.to_string())?);
        let plan = Plan {
            addr,
            request: b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            keep_alive: true,
            deadline: Instant::now(),
            wait: true,
            latency_correction: false,
            slots: None,
            stats: Mutex::default(),
        };
        exchange(&plan, &mut conn, &mut Vec::new()).await
    }

    #[tokio::test]
    async fn responses_over_tcp() {
        let ok = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc").await;
        assert_eq!(ok, Ok((200, 3, true)));
        let chunked = b"HTTP/1.1 503 No\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        assert_eq!(serve(chunked).await, Ok((503, 3, true)));
        let ok = serve(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n").await;
        assert_eq!(ok, Ok((204, 0, true)));
        assert_eq!(
            serve(b"HTTP/1.1 200 OK\r\n\r\nuntil eof").await,
            Ok((200, 9, false))
        );
        let cut = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc").await;
        assert_eq!(
            cut,
            Err("connection closed before message completed".into())
        );
        assert!(serve(b"\x00\x01garbage\r\n\r\n").await.is_err());
    }

    #[test]
    fn arguments() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("10").is_err() && parse_duration("0s").is_err());
        let Target(addr, host, path) = parse_url("http://127.0.0.1:8080").expect("valid");
        assert_eq!(
            (addr.port(), &host[..], &path[..]),
            (8080, "127.0.0.1:8080", "/")
        );
        let Target(addr, host, path) = parse_url("http://[::1]/a?b=1#frag").expect("valid");
        assert_eq!((addr.port(), &host[..], &path[..]), (80, "[::1]", "/a?b=1"));
        for bad in [
            "https://127.0.0.1/",
            "http://example.com/",
            "http://127.0.0.1:0/",
            "http://1.2.3.4/a b",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
        let args = Args::try_parse_from([
            "x",
            "--no-tui",
            "-w",
            "--output-format",
            "json",
            "-z",
            "10s",
            "-c",
            "16",
            "-q",
            "500",
            "--latency-correction",
            "http://127.0.0.1:1/",
        ]);
        assert!(args.is_ok_and(|a| a.wait && a.qps == Some(500.0) && a.connections == 16));
        assert!(
            Args::try_parse_from([
                "x",
                "-z",
                "5s",
                "--disable-keepalive",
                "--wait-ongoing-requests-after-deadline",
                "http://127.0.0.1:1/"
            ])
            .is_ok()
        );
        assert!(
            Args::try_parse_from(["x", "-z", "5s", "-H", "a: b", "http://127.0.0.1:1/"]).is_err()
        );
    }
}
