//! `ferrulectl`, the admin CLI.
//!
//! It talks to the control plane's admin API over the local Unix socket (see
//! `admin_api`): whoever can open that socket (file mode 0600, the control plane's own
//! user) is an administrator, and the control plane records the caller's uid in its
//! audit log. Output is a human-readable table by default and `-o json` for scripts.
//!
//! Exit codes: 0 success, 1 the operation failed (or a check failed), 64 usage error,
//! 69 the control plane is unreachable.

mod client;
pub mod demo;
mod output;
mod policy;
pub mod webhook;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use ferrule_proto::admin::v1 as pb;

pub use client::connect;
use output::{Table, fmt_unix, print_json};

/// Exit code for "the control plane could not be reached".
pub const EXIT_UNAVAILABLE: u8 = 69;
/// Exit code for usage errors (bad flags, unreadable files).
pub const EXIT_USAGE: u8 = 64;

/// Command-line interface of `ferrulectl`.
#[derive(Debug, Parser)]
#[command(name = "ferrulectl", version, about = "Administer a Ferrule mesh")]
pub struct Cli {
    /// Path of the control plane's admin socket.
    #[arg(
        long,
        global = true,
        env = "FERRULE_ADMIN_SOCKET",
        default_value = "/var/lib/ferrule/admin.sock"
    )]
    pub socket: PathBuf,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
    #[command(subcommand)]
    pub command: Command,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for humans.
    Table,
    /// JSON for scripts.
    Json,
    /// YAML for scripts and for policy documents.
    Yaml,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Join tokens: bootstrap credentials for a proxy's first certificate.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Certificate authority status and rotation.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Every identity's current certificate, issuer and expiry, sorted by expiry.
    Certs,
    /// Registered workloads: identity, address, session, certificate expiry, versions;
    /// with `--k8s-watch`, also every meshed pod IP read from Kubernetes.
    Workloads,
    /// Health checks; exits 1 if any fails (there are no warnings).
    Check,
    /// Create or update authorization policies (atomic: all documents or none).
    Apply {
        /// A YAML file, a directory of *.yaml/*.yml files, or `-` for stdin.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
    },
    /// Check policy documents without applying them.
    Validate {
        /// A YAML file, a directory of *.yaml/*.yml files, or `-` for stdin.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
    },
    /// Show one policy as YAML.
    Get {
        /// Policy name.
        name: String,
    },
    /// List policies.
    List,
    /// Delete policies (atomic: all named policies or none).
    Delete {
        /// Policy names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Explain the decision for a request: which policy and rule decide it, and why.
    Explain {
        /// Source SPIFFE ID (omit with --unauthenticated).
        #[arg(long, required_unless_present = "unauthenticated")]
        from: Option<String>,
        /// A plaintext source on a permissive port.
        #[arg(long)]
        unauthenticated: bool,
        /// Source IP for CIDR rules (with --unauthenticated).
        #[arg(long)]
        source_ip: Option<String>,
        /// Destination SPIFFE ID.
        #[arg(long)]
        to: String,
        /// Destination application port.
        #[arg(long)]
        port: u16,
        /// HTTP method (with --path, for http ports).
        #[arg(long, requires = "path")]
        method: Option<String>,
        /// HTTP request path (with --method).
        #[arg(long, requires = "method")]
        path: Option<String>,
    },
    /// The audit log of administrative changes, newest first.
    Audit {
        /// How many entries.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// The demo applications (plain HTTP; they need no control plane).
    #[command(subcommand)]
    Demo(DemoCommand),
    /// What the injection webhook's MutatingWebhookConfiguration needs (caBundle).
    #[command(subcommand)]
    Webhook(webhook::WebhookCommand),
}

/// `ferrulectl demo ...`
#[derive(Debug, Subcommand)]
pub enum DemoCommand {
    /// Serve plain HTTP, answering every request with a greeting.
    Serve {
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Name in the greeting.
        #[arg(long, default_value = "api")]
        name: String,
    },
    /// Call a plain HTTP service repeatedly and print each answer.
    Call {
        /// Address to call, host:port (e.g. the local upstream port of the proxy, or a
        /// Kubernetes Service name). A name is resolved again for every call.
        #[arg(long, default_value = "127.0.0.1:9001")]
        target: String,
        /// Request path.
        #[arg(long, default_value = "/")]
        path: String,
        /// Interval between calls.
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        every: Duration,
        /// Stop after this many calls (exit 1 if the last failed).
        #[arg(long)]
        count: Option<u64>,
    },
}

/// `ferrulectl token ...`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token bound to one SPIFFE ID. Prints the secret token once.
    Create {
        /// The identity the token attests, e.g. spiffe://demo.local/ns/default/sa/web.
        #[arg(long)]
        spiffe_id: String,
        /// Token lifetime, e.g. 30m, 1h, 7d.
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        ttl: Duration,
        /// How many first certificates the token may obtain (one per proxy start).
        #[arg(long, default_value_t = 1)]
        uses: u32,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token by its public id.
    Revoke {
        /// The token's public id (the `ID` column of `token list`).
        id: String,
    },
}

/// `ferrulectl ca ...`
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Show every authority (root and issuer) with its state and expiry.
    Status,
    /// Rotation step 1: create a new authority; its root joins the trust bundle now.
    Prepare,
    /// Rotation step 2: issue new certificates from this authority.
    Activate {
        /// Authority id (from `ca status`).
        id: String,
    },
    /// Rotation step 3: remove an inactive authority from the trust bundle.
    Retire {
        /// Authority id (from `ca status`).
        id: String,
        /// Retire even though unexpired certificates still chain to it (they stop working).
        #[arg(long)]
        force: bool,
    },
}

/// Parses `90s`, `15m`, `1h`, `7d` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 90s, 15m, 1h, 7d"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("invalid duration unit in {s:?}: use s, m, h or d")),
    };
    n.checked_mul(mult)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("duration {s:?} is too large"))
}

/// Runs one `ferrulectl` invocation and maps the outcome to an exit code.
pub async fn run(cli: Cli) -> ExitCode {
    if let Command::Demo(d) = &cli.command {
        return run_demo(d).await;
    }
    if let Command::Webhook(w) = &cli.command {
        return webhook::run(w, &cli.socket);
    }
    let mut client = match connect(&cli.socket).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "ferrulectl: cannot reach the control plane at {}: {e:#}",
                cli.socket.display()
            );
            return ExitCode::from(EXIT_UNAVAILABLE);
        }
    };
    match dispatch(&mut client, &cli).await {
        Ok(code) => code,
        Err(status) => {
            eprintln!(
                "ferrulectl: {}: {}",
                code_name(status.code()),
                status.message()
            );
            if status.code() == tonic::Code::Unavailable {
                ExitCode::from(EXIT_UNAVAILABLE)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

async fn run_demo(cmd: &DemoCommand) -> ExitCode {
    let result = match cmd {
        DemoCommand::Serve { listen, name } => {
            demo::serve(*listen, name.clone()).await.map(|_| true)
        }
        DemoCommand::Call {
            target,
            path,
            every,
            count,
        } => demo::call(target.clone(), path.clone(), *every, *count).await,
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("ferrulectl demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn code_name(code: tonic::Code) -> String {
    format!("{code:?}")
}

type Client = pb::admin_client::AdminClient<tonic::transport::Channel>;

async fn dispatch(client: &mut Client, cli: &Cli) -> Result<ExitCode, tonic::Status> {
    let json = cli.output != Format::Table;
    match &cli.command {
        Command::Token(TokenCommand::Create {
            spiffe_id,
            ttl,
            uses,
        }) => {
            let resp = client
                .create_join_token(pb::CreateJoinTokenRequest {
                    spiffe_id: spiffe_id.clone(),
                    ttl_seconds: ttl.as_secs(),
                    uses: *uses,
                })
                .await?
                .into_inner();
            if json {
                let info = resp.info.unwrap_or_default();
                print_json(&serde_json::json!({
                    "token": resp.token,
                    "id": info.id,
                    "spiffe_id": info.spiffe_id,
                    "expires_at": info.expires_at_unix,
                    "uses_left": info.uses_left,
                }));
            } else {
                // The token alone on stdout, so `TOKEN=$(ferrulectl token create ...)` works.
                println!("{}", resp.token);
            }
        }
        Command::Token(TokenCommand::List) => {
            let resp = client
                .list_join_tokens(pb::ListJoinTokensRequest {})
                .await?
                .into_inner();
            if json {
                let rows: Vec<_> = resp
                    .tokens
                    .iter()
                    .map(|t| {
                        serde_json::json!({
                            "id": t.id, "spiffe_id": t.spiffe_id,
                            "expires_at": t.expires_at_unix, "uses_left": t.uses_left,
                            "created_at": t.created_at_unix,
                        })
                    })
                    .collect();
                print_json(&serde_json::Value::Array(rows));
            } else {
                let mut t = Table::new(["ID", "SPIFFE ID", "USES LEFT", "EXPIRES"]);
                for tok in &resp.tokens {
                    t.row([
                        tok.id.clone(),
                        tok.spiffe_id.clone(),
                        tok.uses_left.to_string(),
                        fmt_unix(tok.expires_at_unix),
                    ]);
                }
                t.print();
            }
        }
        Command::Token(TokenCommand::Revoke { id }) => {
            client
                .revoke_join_token(pb::RevokeJoinTokenRequest { id: id.clone() })
                .await?;
            if !json {
                println!("token {id} revoked");
            } else {
                print_json(&serde_json::json!({"revoked": id}));
            }
        }
        Command::Ca(CaCommand::Status) => {
            let resp = client.ca_status(pb::CaStatusRequest {}).await?.into_inner();
            if json {
                print_json(&serde_json::json!({
                    "trust_domain": resp.trust_domain,
                    "mode": resp.mode,
                    "bundle_version": resp.bundle_version,
                    "authorities": resp.authorities.iter().map(authority_json).collect::<Vec<_>>(),
                }));
            } else {
                println!(
                    "trust domain: {}   mode: {}   bundle version: {}",
                    resp.trust_domain, resp.mode, resp.bundle_version
                );
                print_authorities(&resp.authorities);
            }
        }
        Command::Ca(CaCommand::Prepare) => {
            let a = client
                .prepare_authority(pb::PrepareAuthorityRequest {})
                .await?
                .into_inner();
            print_authority(json, &a);
        }
        Command::Ca(CaCommand::Activate { id }) => {
            let a = client
                .activate_authority(pb::ActivateAuthorityRequest { id: id.clone() })
                .await?
                .into_inner();
            print_authority(json, &a);
        }
        Command::Ca(CaCommand::Retire { id, force }) => {
            let a = client
                .retire_authority(pb::RetireAuthorityRequest {
                    id: id.clone(),
                    force: *force,
                })
                .await?
                .into_inner();
            print_authority(json, &a);
        }
        // Handled in `run` before connecting.
        Command::Demo(_) | Command::Webhook(_) => {}
        Command::Apply { .. }
        | Command::Validate { .. }
        | Command::Get { .. }
        | Command::List
        | Command::Delete { .. }
        | Command::Explain { .. }
        | Command::Audit { .. } => return policy::dispatch(client, cli).await,
        Command::Workloads => {
            let resp = client
                .list_workloads(pb::ListWorkloadsRequest {})
                .await?
                .into_inner();
            if json {
                let rows: Vec<_> = resp
                    .workloads
                    .iter()
                    .map(|w| {
                        serde_json::json!({
                            "spiffe_id": w.spiffe_id, "service": w.service, "address": w.address,
                            "inbound_port": w.inbound_port, "app_ports": w.app_ports,
                            "connected": w.connected, "since": w.since_unix,
                            "cert_not_after": w.cert_not_after_unix,
                            "discovery_version": w.acked_discovery_version,
                            "policy_version": w.acked_policy_version,
                            "proxy_version": w.proxy_version,
                            "kubernetes_pod": w.kubernetes_pod,
                        })
                    })
                    .collect();
                print_json(&serde_json::Value::Array(rows));
            } else {
                let mut t = Table::new([
                    "SPIFFE ID",
                    "SERVICE",
                    "ADDRESS",
                    "SESSION",
                    "CERT EXPIRES",
                    "POLICY",
                ]);
                for w in &resp.workloads {
                    t.row([
                        w.spiffe_id.clone(),
                        w.service.clone(),
                        format!("{}:{}", w.address, w.inbound_port),
                        if !w.kubernetes_pod.is_empty() {
                            format!("pod {}", w.kubernetes_pod)
                        } else if w.connected {
                            "connected".into()
                        } else {
                            format!("gone since {}", fmt_unix(w.since_unix))
                        },
                        fmt_unix(w.cert_not_after_unix),
                        w.acked_policy_version.to_string(),
                    ]);
                }
                t.print();
            }
        }
        Command::Check => {
            let resp = client.check(pb::CheckRequest {}).await?.into_inner();
            let failed = resp.results.iter().filter(|r| !r.ok).count();
            if json {
                let rows: Vec<_> = resp
                    .results
                    .iter()
                    .map(|r| serde_json::json!({"name": r.name, "ok": r.ok, "detail": r.detail}))
                    .collect();
                print_json(&serde_json::json!({"ok": failed == 0, "checks": rows}));
            } else {
                for r in &resp.results {
                    println!(
                        "[{}] {}: {}",
                        if r.ok { "PASS" } else { "FAIL" },
                        r.name,
                        r.detail
                    );
                }
            }
            if failed > 0 {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Certs => {
            let resp = client
                .list_certificates(pb::ListCertificatesRequest {})
                .await?
                .into_inner();
            if json {
                let rows: Vec<_> = resp
                    .certificates
                    .iter()
                    .map(|c| {
                        serde_json::json!({
                            "spiffe_id": c.spiffe_id, "serial": c.serial_hex,
                            "authority": c.authority_id, "not_before": c.not_before_unix,
                            "not_after": c.not_after_unix,
                        })
                    })
                    .collect();
                print_json(&serde_json::Value::Array(rows));
            } else {
                let mut t = Table::new(["SPIFFE ID", "SERIAL", "AUTHORITY", "EXPIRES"]);
                for c in &resp.certificates {
                    t.row([
                        c.spiffe_id.clone(),
                        c.serial_hex.clone(),
                        c.authority_id.clone(),
                        fmt_unix(c.not_after_unix),
                    ]);
                }
                t.print();
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn authority_json(a: &pb::AuthorityInfo) -> serde_json::Value {
    serde_json::json!({
        "id": a.id, "state": a.state,
        "root_subject": a.root_subject, "root_not_after": a.root_not_after_unix,
        "issuer_subject": a.issuer_subject, "issuer_not_after": a.issuer_not_after_unix,
        "root_fingerprint": a.root_fingerprint, "live_certificates": a.live_certificates,
    })
}

fn print_authority(json: bool, a: &pb::AuthorityInfo) {
    if json {
        print_json(&authority_json(a));
    } else {
        print_authorities(std::slice::from_ref(a));
    }
}

fn print_authorities(list: &[pb::AuthorityInfo]) {
    let mut t = Table::new([
        "ID",
        "STATE",
        "ROOT EXPIRES",
        "ISSUER EXPIRES",
        "LIVE CERTS",
        "ROOT SHA-256",
    ]);
    for a in list {
        t.row([
            a.id.clone(),
            a.state.clone(),
            fmt_unix(a.root_not_after_unix),
            fmt_unix(a.issuer_not_after_unix),
            a.live_certificates.to_string(),
            a.root_fingerprint.chars().take(16).collect(),
        ]);
    }
    t.print();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("42"), Ok(Duration::from_secs(42)));
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }
}
