//! `ferrulectl` authorization-policy commands: apply, validate, get, list, delete,
//! explain, audit.

use std::path::PathBuf;
use std::process::ExitCode;

use ferrule_proto::admin::v1 as pb;

use super::output::{Table, fmt_unix, print_json};
use super::{Cli, Client, Command, EXIT_USAGE, Format};

/// Reads policy YAML from a file, every *.yaml/*.yml file of a directory (sorted), or
/// stdin (`-`), joined as one document stream.
pub(super) fn read_documents(path: &std::path::Path) -> Result<String, String> {
    use std::io::Read;
    if path == std::path::Path::new("-") {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| format!("stdin: {e}"))?;
        return Ok(s);
    }
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_dir() {
        return std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()));
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!("{}: no *.yaml or *.yml files", path.display()));
    }
    let mut out = String::new();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        out.push_str("\n---\n");
        out.push_str(&text);
    }
    Ok(out)
}

pub(super) fn print_value(format: Format, v: &serde_json::Value) {
    match format {
        Format::Yaml => print!("{}", serde_yaml_ng::to_string(v).unwrap_or_default()),
        _ => print_json(v),
    }
}

/// Runs one policy command.
pub(super) async fn dispatch(client: &mut Client, cli: &Cli) -> Result<ExitCode, tonic::Status> {
    let json = cli.output != Format::Table;
    match &cli.command {
        Command::Apply { file } | Command::Validate { file } => {
            let yaml = match read_documents(file) {
                Ok(y) => y,
                Err(e) => {
                    eprintln!("ferrulectl: {e}");
                    return Ok(ExitCode::from(EXIT_USAGE));
                }
            };
            if matches!(cli.command, Command::Apply { .. }) {
                let r = client
                    .apply_policies(pb::PolicyDocumentsRequest { yaml })
                    .await?
                    .into_inner();
                if json {
                    print_value(
                        cli.output,
                        &serde_json::json!({
                            "version": r.version, "created": r.created,
                            "updated": r.updated, "unchanged": r.unchanged,
                        }),
                    );
                } else {
                    for n in &r.created {
                        println!("policy/{n} created");
                    }
                    for n in &r.updated {
                        println!("policy/{n} updated");
                    }
                    for n in &r.unchanged {
                        println!("policy/{n} unchanged");
                    }
                    println!("policy version {}", r.version);
                }
            } else {
                let r = client
                    .validate_policies(pb::PolicyDocumentsRequest { yaml })
                    .await?
                    .into_inner();
                if json {
                    print_value(cli.output, &serde_json::json!({"valid": r.names}));
                } else {
                    for n in &r.names {
                        println!("policy/{n} valid");
                    }
                }
            }
        }
        Command::Get { name } => {
            let p = client
                .get_policy(pb::GetPolicyRequest { name: name.clone() })
                .await?
                .into_inner();
            match cli.output {
                Format::Json => {
                    let doc: serde_json::Value =
                        serde_yaml_ng::from_str(&p.yaml).unwrap_or_default();
                    print_json(&doc);
                }
                _ => print!("{}", p.yaml),
            }
        }
        Command::List => {
            let r = client
                .list_policies(pb::ListPoliciesRequest {})
                .await?
                .into_inner();
            if json {
                let rows: Vec<_> = r
                    .policies
                    .iter()
                    .map(|p| serde_json::json!({
                        "name": p.name, "action": p.action, "selector": p.selector,
                        "version": p.version, "updated_at": p.updated_at_unix, "updated_by": p.updated_by,
                    }))
                    .collect();
                print_value(
                    cli.output,
                    &serde_json::json!({
                        "version": r.version, "mesh_default": r.mesh_default, "policies": rows,
                    }),
                );
            } else {
                println!(
                    "policy version {}   mesh default: {}",
                    r.version, r.mesh_default
                );
                let mut t = Table::new(["NAME", "ACTION", "SELECTOR", "VERSION", "UPDATED", "BY"]);
                for p in &r.policies {
                    t.row([
                        p.name.clone(),
                        p.action.clone(),
                        p.selector.clone(),
                        p.version.to_string(),
                        fmt_unix(p.updated_at_unix),
                        p.updated_by.clone(),
                    ]);
                }
                t.print();
            }
        }
        Command::Delete { names } => {
            let r = client
                .delete_policies(pb::DeletePoliciesRequest {
                    names: names.clone(),
                })
                .await?
                .into_inner();
            if json {
                print_value(
                    cli.output,
                    &serde_json::json!({"deleted": names, "version": r.version}),
                );
            } else {
                for n in names {
                    println!("policy/{n} deleted");
                }
                println!("policy version {}", r.version);
            }
        }
        Command::Explain {
            from,
            unauthenticated,
            source_ip,
            to,
            port,
            method,
            path,
        } => {
            let r = client
                .explain(pb::ExplainRequest {
                    from: from.clone().unwrap_or_default(),
                    unauthenticated: *unauthenticated,
                    source_ip: source_ip.clone().unwrap_or_default(),
                    to: to.clone(),
                    port: u32::from(*port),
                    method: method.clone().unwrap_or_default(),
                    path: path.clone().unwrap_or_default(),
                })
                .await?
                .into_inner();
            if json {
                print_value(
                    cli.output,
                    &serde_json::json!({
                        "allow": r.allow, "policy": r.policy,
                        "rule": if r.rule < 0 { serde_json::Value::Null } else { r.rule.into() },
                        "reason": r.reason, "explanation": r.explanation, "version": r.version,
                    }),
                );
            } else {
                println!("{}", if r.allow { "ALLOW" } else { "DENY" });
                let rule = if r.rule < 0 {
                    String::new()
                } else {
                    format!(" rule {}", r.rule)
                };
                println!("decided by: {}{rule} (reason {})", r.policy, r.reason);
                println!("why: {}", r.explanation);
                println!("policy version {}", r.version);
            }
        }
        Command::Audit { limit } => {
            let r = client
                .list_audit(pb::ListAuditRequest { limit: *limit })
                .await?
                .into_inner();
            if json {
                let rows: Vec<_> = r
                    .entries
                    .iter()
                    .map(|e| {
                        serde_json::json!({
                            "at": e.at_unix, "who": e.who, "action": e.action,
                            "target": e.target, "detail": e.detail,
                        })
                    })
                    .collect();
                print_value(cli.output, &serde_json::Value::Array(rows));
            } else {
                let mut t = Table::new(["AT", "WHO", "ACTION", "TARGET"]);
                for e in &r.entries {
                    t.row([
                        fmt_unix(e.at_unix),
                        e.who.clone(),
                        e.action.clone(),
                        e.target.clone(),
                    ]);
                }
                t.print();
            }
        }
        _ => {}
    }
    Ok(ExitCode::SUCCESS)
}
