//! `ferrule-bench-propagate`: policy propagation time, from `ApplyPolicies` on the admin
//! socket (what `ferrulectl apply` sends) to 1, 100, 1,000 connected proxies, and to
//! enforcement through a real proxy pair.
//!
//! **Simulated proxies** (`--counts`, cumulative: the mesh grows from one round to the
//! next). Each one does what a proxy's control-plane client does, over the real APIs:
//! a fresh P-256 key, `Certify` with the join token (`--token-file`, bound to
//! `--spiffe-id`: the proxies are replicas of one workload, each registering its own
//! inbound port `--inbound-port-base + i`), then its own mTLS channel with that
//! certificate and a `Mesh/Sync` session: `Register`, then an `Ack` for every discovery
//! snapshot and policy it receives, as `proxy/src/control/sync.rs` does. It does not
//! compile the policy (a real proxy's work after receipt; the enforcement part below
//! covers that). Once every proxy has its initial policy, the tool applies a changed
//! policy selecting their identity (`--changes` times, for at most `--seconds` per
//! round, `--gap-ms` apart) and records, per change, when each proxy received the new
//! version (checked: that version's documents contain the change). The clock starts
//! just before `ApplyPolicies` is sent.
//!
//! **Enforcement** (`--probe`, before the simulated rounds): a real client proxy's
//! upstream listener whose `GET /` must answer 200. Each cycle applies a DENY for
//! `--probe-from` → `--probe-to` and probes, one request on a new connection after the
//! other, until one is refused; then applies a DENY that matches nobody and probes until
//! one succeeds. Probing starts with the apply; the time is the end of the first probe
//! showing the new behaviour (an upper bound, by at most one probe). With
//! `--probe-metrics`, once refused, the server proxy's `ferrule_proxy_policy_version`
//! must show the applied version and its `ferrule_proxy_authz_decisions_total` must
//! count a new denial by the benchmark's policy, else the run fails: a refusal for
//! another reason (a reset, an error) is not taken for enforcement. (Only the probes
//! reach that proxy, so the new denial is a probe's; it is not proven to be the first
//! refused one's.)
//!
//! Any proxy that does not receive a version within `--timeout`, a session that ends,
//! wrong policy content, or an enforcement that does not happen makes the tool exit
//! non-zero with the reason; each round's lines are printed as soon as it completes.
//! Prints `key value` lines:
//!
//! ```text
//! cp_rss_base_mib 13.2        control-plane RSS before any simulated proxy (--cp-pid)
//! enforce.cycles 10           DENY/undo cycles through the real pair
//! enforce_deny.p50_ms 1.966   ApplyPolicies sent -> first refused request
//! enforce_deny.max_ms 2.671
//! enforce_allow.p50_ms 1.282  ApplyPolicies sent -> first successful request again
//! enforce_allow.max_ms 1.520
//! enforce.probes 59           requests made
//! enforce.probe_timeouts 0    probes without an answer within 2 s
//! n100.connect_s 0.18         this round's new proxies: Certify, session, initial policy
//! n100.changes 20
//! n100.all_p50_ms 4.009       per change: the last of the N proxies has the new version
//! n100.all_p99_ms 5.128
//! n100.all_max_ms 5.128
//! n100.each_p50_ms 2.943      per change and proxy: that proxy has it
//! n100.each_p99_ms 4.488
//! n100.each_max_ms 5.128
//! n100.apply_p50_ms 1.788     ApplyPolicies round trip (stored, published)
//! n100.cp_cpu_ms_per_change 3.5   control-plane CPU during the round / changes (--cp-pid)
//! n100.cp_cpu_cores 0.063
//! n100.cp_rss_mib 21.9
//! n100.client_cpu_cores 0.045 this tool's CPU during the round (it shares the machine)
//! ```

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Parser;
use ferrule_benches::control::{
    ControlPlane, ControlPlaneArgs, certify, credentials, key_and_csr, read_tokens,
};
use ferrule_benches::stats::{cpu_ticks, percentile_ms, rss_kib};
use ferrule_proto::admin::v1 as admin_pb;
use ferrule_proto::admin::v1::admin_client::AdminClient;
use ferrule_proto::identity::v1::identity_client::IdentityClient;
use ferrule_proto::mesh::v1 as pb;
use ferrule_proto::mesh::v1::mesh_client::MeshClient;
use ferrule_tls::Credentials;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc};
use tonic::transport::Channel;

/// Name of the policy the simulated rounds change.
const SIM_POLICY: &str = "bench-propagate";
/// Name of the policy the enforcement cycles change.
const ENFORCE_POLICY: &str = "bench-enforce";
/// Bootstrap channels for the `Certify` calls of a round.
const CERTIFY_CHANNELS: usize = 8;
/// Time allowed for one probe request through the real pair.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Parser)]
#[command(
    about = "Policy propagation time: ApplyPolicies -> N connected proxies, and -> enforcement"
)]
struct Args {
    #[command(flatten)]
    cp: ControlPlaneArgs,
    /// The control plane's admin socket (as for ferrulectl).
    #[arg(long, env = "FERRULE_ADMIN_SOCKET")]
    admin_socket: PathBuf,
    /// File holding a join token with at least max(--counts) uses (first line).
    #[arg(long)]
    token_file: PathBuf,
    /// The SPIFFE ID the token is bound to: every simulated proxy is a replica of it.
    #[arg(long)]
    spiffe_id: String,
    /// Connected simulated proxies per round, ascending (the mesh grows between rounds).
    #[arg(long, value_delimiter = ',', default_value = "1,100,1000")]
    counts: Vec<usize>,
    /// Policy changes per round.
    #[arg(long, default_value_t = 20)]
    changes: usize,
    /// Time bound of a round's changes in seconds (at least one change is made).
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Seconds a change may take to reach every proxy (or to be enforced) before the
    /// run fails.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Seconds a round's new proxies have to connect and receive their initial policy.
    #[arg(long, default_value_t = 90.0)]
    connect_timeout: f64,
    /// Pause between changes, milliseconds (acknowledgements settle).
    #[arg(long, default_value_t = 50)]
    gap_ms: u64,
    /// Simulated proxy i registers inbound port BASE + i (a registration only; nothing
    /// listens there). Must not collide with real proxies' mesh ports.
    #[arg(long, default_value_t = 40000)]
    inbound_port_base: u16,
    /// Sessions being opened at once while a round connects.
    #[arg(long, default_value_t = 32)]
    connect_concurrency: usize,
    /// Control-plane PID, for its CPU time and RSS.
    #[arg(long)]
    cp_pid: Option<u32>,
    /// Clock ticks per second of /proc/PID/stat (`getconf CLK_TCK`).
    #[arg(long, default_value_t = 100.0)]
    clk_tck: f64,
    /// A real client proxy's upstream listener, host:port, where `GET /` answers 200:
    /// enables the enforcement cycles.
    #[arg(long, requires_all = ["probe_from", "probe_to"])]
    probe: Option<String>,
    /// SPIFFE ID of that client proxy (the DENY's source).
    #[arg(long)]
    probe_from: Option<String>,
    /// SPIFFE ID of the server proxy behind it (the DENY's selector).
    #[arg(long)]
    probe_to: Option<String>,
    /// The server proxy's admin listener, host:port (`/metrics`), to confirm refusals.
    #[arg(long)]
    probe_metrics: Option<String>,
    /// Enforcement cycles (each: DENY, then undo); 0 skips them.
    #[arg(long, default_value_t = 10)]
    probe_cycles: usize,
    /// Bound on the whole run in seconds.
    #[arg(long, default_value_t = 240.0)]
    max_seconds: f64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(
        !args.counts.is_empty() && args.counts.windows(2).all(|w| w[0] < w[1]),
        "--counts must be ascending, e.g. 1,100,1000"
    );
    ensure!(args.counts[0] > 0, "--counts must be positive");
    let max_n = *args.counts.last().unwrap_or(&0);
    ensure!(
        usize::from(args.inbound_port_base) + max_n <= 65535,
        "--inbound-port-base {} + {max_n} proxies exceeds port 65535",
        args.inbound_port_base
    );
    // Finite and below ~31 years: `Duration::from_secs_f64` panics on infinity.
    let seconds = |v: f64| v > 0.0 && v < 1e9;
    ensure!(
        args.changes > 0
            && seconds(args.seconds)
            && seconds(args.timeout)
            && seconds(args.connect_timeout)
            && seconds(args.max_seconds)
            && seconds(args.clk_tck),
        "--changes, --seconds, --timeout, --connect-timeout, --max-seconds and --clk-tck must be positive and finite (durations below 1e9 s)"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let limit = Duration::from_secs_f64(args.max_seconds);
    rt.block_on(async { tokio::time::timeout(limit, run(args)).await })
        .context("benchmark exceeded --max-seconds")?
}

async fn run(args: Args) -> anyhow::Result<()> {
    let cp = args.cp.control_plane()?;
    let mut admin = ferrule_control_plane::ctl::connect(&args.admin_socket)
        .await
        .with_context(|| {
            format!(
                "connecting to the admin socket {}",
                args.admin_socket.display()
            )
        })?;
    let token = read_tokens(&args.token_file)?.swap_remove(0);
    // Distinguishes this run's policy documents from any earlier run's on the same
    // control plane (an unchanged document would not make a new version).
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    if let Some(pid) = args.cp_pid {
        println!("cp_rss_base_mib {:.1}", rss_kib(pid)? as f64 / 1024.0);
    }
    if let Some(target) = args.probe.as_ref().filter(|_| args.probe_cycles > 0) {
        enforce(&args, &mut admin, target, nonce).await?;
    }
    let mut fleet = Fleet::new();
    for &n in &args.counts {
        let t = Instant::now();
        fleet
            .grow(&cp, &args, &token, n)
            .await
            .with_context(|| format!("connecting {n} simulated proxies"))?;
        println!("n{n}.connect_s {:.2}", t.elapsed().as_secs_f64());
        round(&args, &mut admin, &mut fleet, n, nonce)
            .await
            .with_context(|| format!("round with {n} connected proxies"))?;
    }
    delete(&mut admin, SIM_POLICY).await?;
    fleet.shutdown();
    Ok(())
}

/// A policy document selecting `selector`, denying `from`.
fn deny_yaml(name: &str, selector: &str, from: &str) -> String {
    format!(
        "apiVersion: ferrule.dev/v1alpha1
kind: AuthorizationPolicy
metadata:
  name: {name}
spec:
  selector:
    spiffeId: {selector}
  action: DENY
  rules:
    - from:
        - spiffeId: {from}
"
    )
}

/// Applies `yaml` (one document named `name`); returns the new policy-set version. A
/// document the control plane reports unchanged is an error: no version would follow.
async fn apply(admin: &mut AdminClient<Channel>, yaml: String, name: &str) -> anyhow::Result<u64> {
    let out = admin
        .apply_policies(admin_pb::PolicyDocumentsRequest { yaml })
        .await
        .map_err(|s| anyhow::anyhow!("ApplyPolicies: {:?} {}", s.code(), s.message()))?
        .into_inner();
    if !out.created.iter().chain(&out.updated).any(|n| n == name) {
        bail!(
            "ApplyPolicies did not change {name:?} (created {:?}, updated {:?}, unchanged {:?})",
            out.created,
            out.updated,
            out.unchanged
        );
    }
    Ok(out.version)
}

/// Deletes the benchmark's policy `name` (what `ferrulectl policy delete` sends).
async fn delete(admin: &mut AdminClient<Channel>, name: &str) -> anyhow::Result<()> {
    admin
        .delete_policies(admin_pb::DeletePoliciesRequest {
            names: vec![name.to_string()],
        })
        .await
        .map_err(|s| anyhow::anyhow!("DeletePolicies: {:?} {}", s.code(), s.message()))?;
    Ok(())
}

// ---------------------------------------------------------------- simulated proxies

/// What a simulated proxy's session reports.
enum Event {
    /// A policy arrived (`at`: when it was decoded).
    Policy {
        proxy: usize,
        version: u64,
        documents: Vec<String>,
        at: Instant,
    },
    /// The session ended or could not start.
    Ended { proxy: usize, error: String },
}

/// The connected simulated proxies and what each has received.
struct Fleet {
    events_tx: mpsc::UnboundedSender<Event>,
    events: mpsc::UnboundedReceiver<Event>,
    /// Newest policy version each proxy received.
    latest: Vec<Option<u64>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Fleet {
    fn new() -> Self {
        let (events_tx, events) = mpsc::unbounded_channel();
        Self {
            events_tx,
            events,
            latest: Vec::new(),
            tasks: Vec::new(),
        }
    }

    /// Adds proxies until `n` are connected and have their initial policy.
    async fn grow(
        &mut self,
        cp: &ControlPlane,
        args: &Args,
        token: &str,
        n: usize,
    ) -> anyhow::Result<()> {
        let start = self.latest.len();
        let deadline = Instant::now() + Duration::from_secs_f64(args.connect_timeout);
        let creds = certify_many(cp, token, &args.spiffe_id, n - start).await?;
        let service = args
            .spiffe_id
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let permits = std::sync::Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
        for (i, c) in (start..n).zip(creds) {
            let client = cp.client(Some(c))?;
            let register = pb::Register {
                service: service.clone(),
                inbound_port: u32::from(args.inbound_port_base) + i as u32,
                app_ports: Vec::new(),
                proxy_version: "ferrule-bench-propagate".to_string(),
                advertise_address: String::new(),
            };
            let (events, permits) = (self.events_tx.clone(), permits.clone());
            self.latest.push(None);
            self.tasks.push(tokio::spawn(async move {
                let channel = {
                    let _permit = permits.acquire().await;
                    client.connect().await
                };
                match channel {
                    Ok(ch) => session(i, ch, register, events).await,
                    Err(e) => {
                        let _ = events.send(Event::Ended {
                            proxy: i,
                            error: e.to_string(),
                        });
                    }
                }
            }));
        }
        self.await_version(start..n, 0, None, None, deadline)
            .await
            .context("initial policy")?;
        Ok(())
    }

    /// Waits until every proxy in `range` has a policy of version `version` or newer
    /// (exactly `version`: its documents contain `marker`); returns when each got it.
    async fn await_version(
        &mut self,
        range: std::ops::Range<usize>,
        version: u64,
        marker: Option<&str>,
        since: Option<Instant>,
        deadline: Instant,
    ) -> anyhow::Result<Vec<Duration>> {
        let mut got: Vec<Option<Duration>> = vec![None; range.len()];
        let mut missing = range.len();
        for i in range.clone() {
            if self.latest[i].is_some_and(|v| v >= version) && since.is_some() {
                bail!(
                    "proxy {i} had policy version {version} before it was applied (another policy change?)"
                );
            }
        }
        while missing > 0 {
            let ev = match tokio::time::timeout_at(deadline.into(), self.events.recv()).await {
                Ok(Some(ev)) => ev,
                Ok(None) => bail!("every session task is gone"),
                Err(_) => {
                    let i = range
                        .clone()
                        .find(|i| got[i - range.start].is_none())
                        .unwrap_or(range.start);
                    bail!(
                        "{missing} of {} simulated proxies did not receive policy version {version} in time \
                         (e.g. proxy {i}: newest version {})",
                        range.len(),
                        self.latest[i].map_or("none".to_string(), |v| v.to_string())
                    );
                }
            };
            match ev {
                Event::Ended { proxy, error } => {
                    bail!("simulated proxy {proxy}'s session ended: {error}")
                }
                Event::Policy {
                    proxy,
                    version: v,
                    documents,
                    at,
                } => {
                    self.latest[proxy] = Some(self.latest[proxy].map_or(v, |l| l.max(v)));
                    if !range.contains(&proxy) || v < version || got[proxy - range.start].is_some()
                    {
                        continue;
                    }
                    if let Some(m) = marker
                        && v == version
                        && !documents.iter().any(|d| d.contains(m))
                    {
                        bail!(
                            "proxy {proxy} received policy version {v} without the applied change ({m})"
                        );
                    }
                    got[proxy - range.start] =
                        Some(since.map_or(Duration::ZERO, |s| at.saturating_duration_since(s)));
                    missing -= 1;
                }
            }
        }
        Ok(got.into_iter().flatten().collect())
    }

    fn shutdown(self) {
        for t in self.tasks {
            t.abort();
        }
    }
}

/// `count` certificates for `spiffe_id` with the join token, over a few bootstrap
/// channels (a proxy's first `Certify`; not part of what is measured).
async fn certify_many(
    cp: &ControlPlane,
    token: &str,
    spiffe_id: &str,
    count: usize,
) -> anyhow::Result<Vec<Credentials>> {
    let bootstrap = cp.client(None)?;
    let workers = CERTIFY_CHANNELS.min(count.max(1));
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (bootstrap, token, id) = (bootstrap.clone(), token.to_string(), spiffe_id.to_string());
        let mine = (w..count).step_by(workers).count();
        tasks.push(tokio::spawn(async move {
            let mut ch = IdentityClient::new(bootstrap.connect().await?);
            let mut out = Vec::with_capacity(mine);
            for _ in 0..mine {
                let (key, csr) = key_and_csr()?;
                let resp = certify(&mut ch, &csr, &token, &id).await?;
                out.push(credentials(resp, &key)?);
            }
            anyhow::Ok(out)
        }));
    }
    let mut all = Vec::with_capacity(count);
    for t in tasks {
        all.extend(t.await.context("Certify task")??);
    }
    Ok(all)
}

/// One simulated proxy's `Mesh/Sync` session, as `proxy/src/control/sync.rs` runs it:
/// register, then acknowledge every discovery snapshot and policy.
async fn session(
    proxy: usize,
    channel: Channel,
    register: pb::Register,
    events: mpsc::UnboundedSender<Event>,
) {
    let ended = |error: String| {
        let _ = events.send(Event::Ended { proxy, error });
    };
    let (tx, rx) = mpsc::channel(8);
    let first = pb::ProxyMessage {
        msg: Some(pb::proxy_message::Msg::Register(register)),
    };
    if tx.send(first).await.is_err() {
        return ended("request stream closed".into());
    }
    let mut stream = match MeshClient::new(channel)
        .sync(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(s) => return ended(format!("Sync: {:?} {}", s.code(), s.message())),
    };
    let (mut discovery_version, mut policy_version) = (0, 0);
    loop {
        let msg = match stream.message().await {
            Ok(Some(m)) => m,
            Ok(None) => return ended("the control plane closed the session".into()),
            Err(s) => return ended(format!("Sync stream: {:?} {}", s.code(), s.message())),
        };
        match msg.msg {
            Some(pb::control_message::Msg::Policy(p)) => {
                let at = Instant::now();
                policy_version = p.version;
                let _ = events.send(Event::Policy {
                    proxy,
                    version: p.version,
                    documents: p.documents_json,
                    at,
                });
            }
            Some(pb::control_message::Msg::Discovery(d)) => discovery_version = d.version,
            None => continue,
        }
        let ack = pb::ProxyMessage {
            msg: Some(pb::proxy_message::Msg::Ack(pb::Ack {
                discovery_version,
                policy_version,
            })),
        };
        if tx.send(ack).await.is_err() {
            return ended("request stream closed".into());
        }
    }
}

/// One round: `--changes` policy changes with `n` proxies connected.
async fn round(
    args: &Args,
    admin: &mut AdminClient<Channel>,
    fleet: &mut Fleet,
    n: usize,
    nonce: u128,
) -> anyhow::Result<()> {
    let td = &args.cp.trust_domain;
    let (mut all, mut each, mut applies) = (Vec::new(), Vec::new(), Vec::new());
    let budget = Duration::from_secs_f64(args.seconds);
    let cpu = |pid: Option<u32>| pid.map(cpu_ticks).transpose();
    let (cp0, me0, t_round) = (
        cpu(args.cp_pid)?,
        cpu(Some(std::process::id()))?,
        Instant::now(),
    );
    for k in 0..args.changes {
        if k > 0 && t_round.elapsed() >= budget {
            break;
        }
        let marker = format!("change-{nonce}-{n}-{k}");
        let yaml = deny_yaml(
            SIM_POLICY,
            &args.spiffe_id,
            &format!("spiffe://{td}/ns/bench/sa/{marker}"),
        );
        let t0 = Instant::now();
        let version = apply(admin, yaml, SIM_POLICY).await?;
        applies.push(t0.elapsed());
        let deadline = t0 + Duration::from_secs_f64(args.timeout);
        let got = fleet
            .await_version(0..n, version, Some(&marker), Some(t0), deadline)
            .await
            .with_context(|| format!("change {k} (policy version {version})"))?;
        let last = got.iter().copied().max().unwrap_or_default();
        eprintln!(
            "# n{n} change {k}: version {version}, ApplyPolicies {:.3} ms, all {n} have it at {:.3} ms",
            applies[k].as_secs_f64() * 1e3,
            last.as_secs_f64() * 1e3
        );
        all.push(last);
        each.extend(got);
        tokio::time::sleep(Duration::from_millis(args.gap_ms)).await;
    }
    let wall = t_round.elapsed().as_secs_f64();
    let (cp1, me1) = (cpu(args.cp_pid)?, cpu(Some(std::process::id()))?);
    for v in [&mut all, &mut each, &mut applies] {
        v.sort();
    }
    let p = |v: &[Duration], q: f64| percentile_ms(v, q);
    println!("n{n}.changes {}", all.len());
    println!("n{n}.all_p50_ms {:.3}", p(&all, 0.5));
    println!("n{n}.all_p99_ms {:.3}", p(&all, 0.99));
    println!("n{n}.all_max_ms {:.3}", p(&all, 1.0));
    println!("n{n}.each_p50_ms {:.3}", p(&each, 0.5));
    println!("n{n}.each_p99_ms {:.3}", p(&each, 0.99));
    println!("n{n}.each_max_ms {:.3}", p(&each, 1.0));
    println!("n{n}.apply_p50_ms {:.3}", p(&applies, 0.5));
    if let (Some(a), Some(b), Some(pid)) = (cp0, cp1, args.cp_pid) {
        let secs = b.saturating_sub(a) as f64 / args.clk_tck;
        println!(
            "n{n}.cp_cpu_ms_per_change {:.3}",
            secs * 1e3 / all.len() as f64
        );
        println!("n{n}.cp_cpu_cores {:.3}", secs / wall);
        println!("n{n}.cp_rss_mib {:.1}", rss_kib(pid)? as f64 / 1024.0);
    }
    if let (Some(a), Some(b)) = (me0, me1) {
        println!(
            "n{n}.client_cpu_cores {:.3}",
            b.saturating_sub(a) as f64 / args.clk_tck / wall
        );
    }
    Ok(())
}

// ---------------------------------------------------------------- enforcement through a real pair

/// Outcome of one request through the real pair.
#[derive(Debug, PartialEq, Eq)]
enum Probe {
    /// `HTTP/1.1 200`.
    Allowed,
    /// Anything else: closed without an answer, an error status, connection refused.
    Refused,
    /// No answer within [`PROBE_TIMEOUT`] (counted; shows neither state).
    TimedOut,
}

async fn probe(target: &str) -> Probe {
    let work = async {
        let mut s = tokio::net::TcpStream::connect(target).await?;
        s.set_nodelay(true)?;
        s.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        std::io::Result::Ok(buf)
    };
    match tokio::time::timeout(PROBE_TIMEOUT, work).await {
        Ok(Ok(buf)) if buf.starts_with(b"HTTP/1.1 200") => Probe::Allowed,
        Ok(_) => Probe::Refused,
        Err(_) => Probe::TimedOut,
    }
}

/// A proxy's admin `/metrics` page.
async fn fetch_metrics(admin: &str) -> anyhow::Result<String> {
    let mut s = tokio::net::TcpStream::connect(admin)
        .await
        .with_context(|| format!("connecting to {admin}"))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .await?;
    let mut buf = String::new();
    tokio::time::timeout(PROBE_TIMEOUT, s.read_to_string(&mut buf))
        .await
        .context("/metrics: no answer")??;
    Ok(buf)
}

/// `ferrule_proxy_policy_version` from a proxy's admin `/metrics`.
async fn proxy_policy_version(admin: &str) -> anyhow::Result<u64> {
    fetch_metrics(admin)
        .await?
        .lines()
        .find_map(|l| l.strip_prefix("ferrule_proxy_policy_version "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .with_context(|| format!("no ferrule_proxy_policy_version in {admin}/metrics"))
}

/// Denials the proxy counted for `policy` (`ferrule_proxy_authz_decisions_total` with
/// `decision="deny"`), summed over rules and reasons.
async fn proxy_denials(admin: &str, policy: &str) -> anyhow::Result<u64> {
    let policy_label = format!("policy=\"{policy}\"");
    Ok(fetch_metrics(admin)
        .await?
        .lines()
        .filter(|l| l.starts_with("ferrule_proxy_authz_decisions_total{"))
        .filter(|l| l.contains("decision=\"deny\"") && l.contains(&policy_label))
        .filter_map(|l| l.rsplit(' ').next()?.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .sum())
}

/// Applies `yaml` while probing back to back (the first probe starts with the apply)
/// until the pair shows `want`; returns the time from sending the apply to the end of
/// the first probe that did, and the version applied.
async fn until(
    admin: &mut AdminClient<Channel>,
    yaml: String,
    target: &str,
    want: Probe,
    timeout: Duration,
    probes: &mut (u64, u64),
) -> anyhow::Result<(Duration, u64)> {
    let t0 = Instant::now();
    let probing = async {
        loop {
            let p = probe(target).await;
            probes.0 += 1;
            if p == Probe::TimedOut {
                probes.1 += 1;
            }
            // A probe without an answer shows neither state: keep probing.
            if p == want {
                return anyhow::Ok(t0.elapsed());
            }
            if t0.elapsed() > timeout {
                bail!(
                    "not enforced within {:.1} s: requests through {target} still {}",
                    timeout.as_secs_f64(),
                    if want == Probe::Allowed {
                        "refused"
                    } else {
                        "allowed"
                    }
                );
            }
        }
    };
    let (version, took) = tokio::try_join!(apply(admin, yaml, ENFORCE_POLICY), probing)?;
    Ok((took, version))
}

/// Apply -> enforcement through the real pair (`--probe`), DENY and undo, `--probe-cycles` times.
async fn enforce(
    args: &Args,
    admin: &mut AdminClient<Channel>,
    target: &str,
    nonce: u128,
) -> anyhow::Result<()> {
    let (Some(from), Some(to)) = (&args.probe_from, &args.probe_to) else {
        bail!("--probe needs --probe-from and --probe-to");
    };
    let timeout = Duration::from_secs_f64(args.timeout);
    let t = Instant::now();
    while probe(target).await != Probe::Allowed {
        if t.elapsed() > timeout {
            bail!("GET / through {target} does not answer 200 before any policy change");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let td = &args.cp.trust_domain;
    let (mut deny, mut allow, mut probes) = (Vec::new(), Vec::new(), (0u64, 0u64));
    for k in 0..args.probe_cycles {
        let denied_before = match &args.probe_metrics {
            Some(m) => proxy_denials(m, ENFORCE_POLICY).await?,
            None => 0,
        };
        let (d, version) = until(
            admin,
            deny_yaml(ENFORCE_POLICY, to, from),
            target,
            Probe::Refused,
            timeout,
            &mut probes,
        )
        .await
        .with_context(|| format!("enforcement cycle {k}: DENY {from} -> {to}"))?;
        if let Some(m) = &args.probe_metrics {
            let seen = proxy_policy_version(m).await?;
            ensure!(
                seen >= version,
                "requests were refused but the server proxy reports policy version {seen} < {version}: refused for another reason"
            );
            // A refusal counts as enforcement only if the server proxy denied a connection
            // by this policy (not a reset or an error from something else).
            let denied = proxy_denials(m, ENFORCE_POLICY).await?;
            ensure!(
                denied > denied_before,
                "requests were refused but the server proxy counted no denial by policy {ENFORCE_POLICY} ({denied_before} -> {denied}): refused for another reason"
            );
        }
        eprintln!(
            "# enforcement cycle {k}: DENY (version {version}) enforced at {:.3} ms",
            d.as_secs_f64() * 1e3
        );
        deny.push(d);
        let nobody = format!("spiffe://{td}/ns/bench/sa/nobody-{nonce}-{k}");
        let (a, _) = until(
            admin,
            deny_yaml(ENFORCE_POLICY, to, &nobody),
            target,
            Probe::Allowed,
            timeout,
            &mut probes,
        )
        .await
        .with_context(|| format!("enforcement cycle {k}: undo the DENY"))?;
        eprintln!(
            "# enforcement cycle {k}: undo enforced at {:.3} ms",
            a.as_secs_f64() * 1e3
        );
        allow.push(a);
        tokio::time::sleep(Duration::from_millis(args.gap_ms)).await;
    }
    delete(admin, ENFORCE_POLICY).await?;
    deny.sort();
    allow.sort();
    println!("enforce.cycles {}", deny.len());
    println!("enforce_deny.p50_ms {:.3}", percentile_ms(&deny, 0.5));
    println!("enforce_deny.max_ms {:.3}", percentile_ms(&deny, 1.0));
    println!("enforce_allow.p50_ms {:.3}", percentile_ms(&allow, 0.5));
    println!("enforce_allow.max_ms {:.3}", percentile_ms(&allow, 1.0));
    println!("enforce.probes {}", probes.0);
    println!("enforce.probe_timeouts {}", probes.1);
    Ok(())
}
