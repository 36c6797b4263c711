//! The iptables fallback: chains `FERRULE_OUTPUT` / `FERRULE_PREROUTING` in the `nat`
//! table of iptables and ip6tables, jumped to (for TCP) from `OUTPUT` / `PREROUTING`.
//!
//! Everything goes through `iptables-restore -w --noflush` (and the ip6 twin), one atomic
//! transaction per family, so it works with either iptables backend (legacy or nft) and
//! never flushes anything but our own chains. The current state is read with
//! `iptables-save -t nat`:
//!
//! * install declares our chains (`:FERRULE_OUTPUT - [0:0]` flushes an existing one under
//!   `--noflush`), fills them, keeps one existing jump or appends it, and removes duplicate
//!   jumps and the chain of a direction no longer captured;
//! * cleanup deletes every jump to our chains, then flushes and deletes the chains.

use std::io::Write;
use std::process::{Command, ExitStatus, Stdio};

use super::rules::{Action, Hook, Match, Rule, RuleSet};

/// Our chain for `hook`.
pub fn chain_name(hook: Hook) -> &'static str {
    match hook {
        Hook::Output => "FERRULE_OUTPUT",
        Hook::Prerouting => "FERRULE_PREROUTING",
    }
}

fn builtin_chain(hook: Hook) -> &'static str {
    match hook {
        Hook::Output => "OUTPUT",
        Hook::Prerouting => "PREROUTING",
    }
}

const HOOKS: [Hook; 2] = [Hook::Output, Hook::Prerouting];

/// What went wrong in the iptables backend.
#[derive(Debug, thiserror::Error)]
pub enum IptablesError {
    /// The tool is not installed (not on `PATH`).
    #[error("{tool} not found on PATH")]
    NotFound {
        /// The missing program.
        tool: &'static str,
    },
    /// The tool could not be started.
    #[error("cannot run {tool}: {source}")]
    Spawn {
        /// The program.
        tool: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The tool ran and failed (for `*-restore`: nothing was changed in that family).
    #[error("{tool} failed ({status}): {stderr}")]
    Failed {
        /// The program.
        tool: &'static str,
        /// Its exit status.
        status: ExitStatus,
        /// What it printed on stderr.
        stderr: String,
    },
}

/// An IP family and its tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn save(self) -> &'static str {
        match self {
            Family::V4 => "iptables-save",
            Family::V6 => "ip6tables-save",
        }
    }

    fn restore(self) -> &'static str {
        match self {
            Family::V4 => "iptables-restore",
            Family::V6 => "ip6tables-restore",
        }
    }

    /// Whether the kernel has this family at all (IPv6 may be disabled).
    fn enabled(self) -> bool {
        match self {
            Family::V4 => true,
            Family::V6 => std::path::Path::new("/proc/net/if_inet6").exists(),
        }
    }
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// Whether the iptables tools are installed.
pub fn available() -> bool {
    ["iptables-save", "iptables-restore"]
        .iter()
        .all(|t| on_path(t))
}

fn families() -> Result<Vec<Family>, IptablesError> {
    let mut out = Vec::new();
    for family in [Family::V4, Family::V6] {
        if !family.enabled() {
            tracing::warn!(
                ?family,
                "IPv6 is disabled in this kernel; skipping ip6tables"
            );
            continue;
        }
        for tool in [family.save(), family.restore()] {
            if !on_path(tool) {
                return Err(IptablesError::NotFound { tool });
            }
        }
        out.push(family);
    }
    Ok(out)
}

/// Runs `tool args`, feeding `stdin`; returns stdout.
fn run(tool: &'static str, args: &[&str], stdin: Option<&str>) -> Result<String, IptablesError> {
    let mut child = Command::new(tool)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| IptablesError::Spawn { tool, source })?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .map_err(|source| IptablesError::Spawn { tool, source })?;
    }
    let out = child
        .wait_with_output()
        .map_err(|source| IptablesError::Spawn { tool, source })?;
    if !out.status.success() {
        return Err(IptablesError::Failed {
            tool,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The part of `iptables-save -t nat` that concerns us.
#[derive(Debug, Default, PartialEq, Eq)]
struct NatState {
    /// Our chains that exist.
    chains: Vec<&'static str>,
    /// Rules (as `-A CHAIN spec...`) in other chains that jump to ours.
    jumps: Vec<String>,
}

fn parse_save(save: &str) -> NatState {
    let mut state = NatState::default();
    let mut in_nat = false;
    for line in save.lines().map(str::trim) {
        if let Some(table) = line.strip_prefix('*') {
            in_nat = table == "nat";
            continue;
        }
        if !in_nat {
            continue;
        }
        for hook in HOOKS {
            let ours = chain_name(hook);
            if line
                .strip_prefix(':')
                .and_then(|l| l.split_whitespace().next())
                == Some(ours)
            {
                state.chains.push(ours);
            }
            let jumps_to_ours =
                line.ends_with(&format!(" -j {ours}")) || line.contains(&format!(" -j {ours} "));
            let chain = line
                .strip_prefix("-A ")
                .and_then(|l| l.split_whitespace().next());
            if jumps_to_ours && chain.is_some_and(|c| !c.starts_with("FERRULE_")) {
                state.jumps.push(line.to_string());
            }
        }
    }
    state
}

fn read_state(family: Family) -> Result<NatState, IptablesError> {
    match run(family.save(), &["-t", "nat"], None) {
        Ok(out) => Ok(parse_save(&out)),
        // iptables-nft reports a missing nat table as an error: then nothing of ours exists.
        Err(IptablesError::Failed { stderr, .. }) if stderr.contains("does not exist") => {
            Ok(NatState::default())
        }
        Err(e) => Err(e),
    }
}

/// The jump rule we add from the built-in chain.
fn jump_rule(hook: Hook) -> String {
    format!("-A {} -p tcp -j {}", builtin_chain(hook), chain_name(hook))
}

fn rule_spec(rule: &Rule, family: Family) -> Option<String> {
    let m = match rule.matches {
        Match::NotTcp => "! -p tcp".to_string(),
        Match::SocketUid(uid) => format!("-m owner --uid-owner {uid}"),
        Match::Mark(mark) => format!("-m mark --mark {mark:#x}"),
        Match::DestCidr(c) => {
            if c.addr().is_ipv4() != (family == Family::V4) {
                return None;
            }
            format!("-d {c}")
        }
        Match::TcpDestPort(p) => format!("-p tcp -m tcp --dport {p}"),
        Match::SourceTcpDestPort(c, p) => {
            if c.addr().is_ipv4() != (family == Family::V4) {
                return None;
            }
            format!("-s {c} -p tcp -m tcp --dport {p}")
        }
        Match::Tcp => "-p tcp".to_string(),
    };
    let action = match rule.action {
        Action::Return => "-j RETURN".to_string(),
        Action::Redirect(p) => format!("-j REDIRECT --to-ports {p}"),
    };
    Some(format!("{m} {action}"))
}

/// `iptables-restore --noflush` input that makes `state` match `rules`.
fn install_script(rules: &RuleSet, family: Family, state: &NatState) -> String {
    let mut s = String::from("*nat\n");
    for hook in HOOKS {
        if rules.chains.iter().any(|c| c.hook == hook) || state.chains.contains(&chain_name(hook)) {
            s.push_str(&format!(":{} - [0:0]\n", chain_name(hook)));
        }
    }
    for hook in HOOKS {
        let ours = chain_name(hook);
        let wanted = rules.chains.iter().find(|c| c.hook == hook);
        // Keep the first jump that is exactly ours (its position stays), drop any other.
        let mut kept = false;
        for jump in state
            .jumps
            .iter()
            .filter(|j| j.contains(&format!("-j {ours}")))
        {
            if wanted.is_some() && !kept && *jump == jump_rule(hook) {
                kept = true;
            } else {
                s.push_str(&format!("-D{}\n", &jump[2..]));
            }
        }
        match wanted {
            Some(chain) => {
                for rule in &chain.rules {
                    if let Some(spec) = rule_spec(rule, family) {
                        s.push_str(&format!("-A {ours} {spec}\n"));
                    }
                }
                if !kept {
                    s.push_str(&jump_rule(hook));
                    s.push('\n');
                }
            }
            None if state.chains.contains(&ours) => s.push_str(&format!("-X {ours}\n")),
            None => {}
        }
    }
    s.push_str("COMMIT\n");
    s
}

/// `iptables-restore --noflush` input removing everything of ours in `state`, or `None`.
fn cleanup_script(state: &NatState) -> Option<String> {
    if state.chains.is_empty() && state.jumps.is_empty() {
        return None;
    }
    let mut s = String::from("*nat\n");
    for jump in &state.jumps {
        s.push_str(&format!("-D{}\n", &jump[2..]));
    }
    for chain in &state.chains {
        s.push_str(&format!("-F {chain}\n-X {chain}\n"));
    }
    s.push_str("COMMIT\n");
    Some(s)
}

/// Installs `rules` in the `nat` tables of iptables and ip6tables.
pub fn install(rules: &RuleSet) -> Result<(), IptablesError> {
    for family in families()? {
        let state = read_state(family)?;
        let script = install_script(rules, family, &state);
        tracing::debug!(tool = family.restore(), %script, "applying");
        run(family.restore(), &["-w", "--noflush"], Some(&script))?;
    }
    Ok(())
}

/// Removes our jumps and chains; `Ok(false)` if there were none.
pub fn cleanup() -> Result<bool, IptablesError> {
    let mut found = false;
    for family in families()? {
        let state = read_state(family)?;
        if let Some(script) = cleanup_script(&state) {
            tracing::debug!(tool = family.restore(), %script, "applying");
            run(family.restore(), &["-w", "--noflush"], Some(&script))?;
            found = true;
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intercept::InitConfig;

    const SAVE: &str = "# Generated by iptables-save\n*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
        :FERRULE_OUTPUT - [0:0]\n:OTHER - [0:0]\n-A OUTPUT -p tcp -j FERRULE_OUTPUT\n\
        -A OUTPUT -p tcp -j FERRULE_OUTPUT\n-A OUTPUT -j OTHER\n-A FERRULE_OUTPUT -p tcp -j REDIRECT --to-ports 15001\n\
        COMMIT\n*filter\n-A OUTPUT -j FERRULE_OUTPUT\nCOMMIT\n";

    #[test]
    fn parses_only_our_nat_objects() {
        let state = parse_save(SAVE);
        assert_eq!(state.chains, ["FERRULE_OUTPUT"]);
        assert_eq!(
            state.jumps,
            [jump_rule(Hook::Output), jump_rule(Hook::Output)]
        );
    }

    #[test]
    fn reinstall_keeps_one_jump_and_drops_duplicates() {
        let rules = RuleSet::from_config(&InitConfig::default(), &[]);
        let script = install_script(&rules, Family::V4, &parse_save(SAVE));
        assert_eq!(
            script.matches("-A OUTPUT -p tcp -j FERRULE_OUTPUT").count(),
            0,
            "{script}"
        );
        assert_eq!(
            script.matches("-D OUTPUT -p tcp -j FERRULE_OUTPUT").count(),
            1,
            "{script}"
        );
        assert!(
            script.contains("-A PREROUTING -p tcp -j FERRULE_PREROUTING\n"),
            "{script}"
        );
        assert!(
            script.contains("-A FERRULE_OUTPUT -d 127.0.0.0/8 -j RETURN\n"),
            "{script}"
        );
        assert!(
            !script.contains("::1"),
            "IPv6 CIDRs stay out of iptables: {script}"
        );
        assert!(script.contains("-A FERRULE_OUTPUT -p tcp -j REDIRECT --to-ports 15001\n"));
        assert!(!script.contains("OTHER"));
    }

    #[test]
    fn direction_no_longer_captured_is_removed() {
        let rules = RuleSet::from_config(
            &InitConfig {
                outbound: false,
                ..InitConfig::default()
            },
            &[],
        );
        let script = install_script(&rules, Family::V6, &parse_save(SAVE));
        assert_eq!(
            script.matches("-D OUTPUT -p tcp -j FERRULE_OUTPUT").count(),
            2,
            "{script}"
        );
        assert!(script.contains("-X FERRULE_OUTPUT\n"), "{script}");
    }

    #[test]
    fn probe_rules_go_to_their_family_only() {
        let c = InitConfig {
            probe_ports: vec![8080],
            ..InitConfig::default()
        };
        let sources = ["10.0.0.5".parse().unwrap(), "fd00::5".parse().unwrap()];
        let rules = RuleSet::from_config(&c, &sources);
        let v4 = install_script(&rules, Family::V4, &NatState::default());
        let v6 = install_script(&rules, Family::V6, &NatState::default());
        let line = |a: &str| {
            format!("-A FERRULE_PREROUTING -s {a} -p tcp -m tcp --dport 8080 -j RETURN\n")
        };
        assert!(v4.contains(&line("10.0.0.5/32")), "{v4}");
        assert!(!v4.contains("fd00::5"), "{v4}");
        assert!(v6.contains(&line("fd00::5/128")), "{v6}");
        assert!(!v6.contains("10.0.0.5"), "{v6}");
        // Before the catch-all redirect.
        let redirect = v4.find("-j REDIRECT --to-ports 15006").unwrap();
        assert!(v4.find("--dport 8080").unwrap() < redirect, "{v4}");
    }

    #[test]
    fn cleanup_removes_jumps_then_chains() {
        let script = cleanup_script(&parse_save(SAVE)).unwrap();
        assert_eq!(
            script,
            "*nat\n-D OUTPUT -p tcp -j FERRULE_OUTPUT\n-D OUTPUT -p tcp -j FERRULE_OUTPUT\n\
             -F FERRULE_OUTPUT\n-X FERRULE_OUTPUT\nCOMMIT\n"
        );
        assert_eq!(cleanup_script(&NatState::default()), None);
    }
}
