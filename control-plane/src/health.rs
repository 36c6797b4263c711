//! The checks behind `ferrulectl check`: is the mesh healthy right now?
//!
//! Each check passes or fails; there is no "warning" verdict, because operators have had
//! outages where a check only warned. Pure functions over a snapshot of state, so each
//! verdict is unit-tested.

use std::time::{Duration, SystemTime};

use crate::ca::AuthorityStatus;
use crate::discovery::Entry;
use crate::metrics::EXPIRY_WARNING;
use crate::store::IssuedCertRecord;

/// A check's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// What was checked.
    pub name: &'static str,
    /// Pass or fail.
    pub ok: bool,
    /// Why, in one line.
    pub detail: String,
}

/// Everything the checks look at.
pub struct Inputs<'a> {
    pub now: SystemTime,
    pub authorities: &'a [AuthorityStatus],
    pub chains: &'a [(String, Result<(), String>)],
    pub workloads: &'a [Entry],
    pub latest_certs: &'a [IssuedCertRecord],
    pub policy_version: u64,
}

/// A proxy that has not renewed by this fraction of its certificate's lifetime is late
/// (proxies renew at about half).
const RENEWAL_DEADLINE: f64 = 0.75;

/// Runs every check.
pub fn run(i: &Inputs<'_>) -> Vec<CheckResult> {
    vec![
        CheckResult {
            name: "control plane reachable",
            ok: true,
            detail: "the admin API answered".into(),
        },
        chains(i),
        expiry(i),
        renewals(i),
        policy(i),
    ]
}

fn chains(i: &Inputs<'_>) -> CheckResult {
    let bad: Vec<String> = i
        .chains
        .iter()
        .filter_map(|(id, r)| r.as_ref().err().map(|e| format!("{id}: {e}")))
        .collect();
    CheckResult {
        name: "CA chain valid",
        ok: bad.is_empty() && !i.chains.is_empty(),
        detail: if i.chains.is_empty() {
            "no authority".into()
        } else if bad.is_empty() {
            format!("{} authority chain(s) verified", i.chains.len())
        } else {
            bad.join("; ")
        },
    }
}

fn expiry(i: &Inputs<'_>) -> CheckResult {
    let horizon = i.now + EXPIRY_WARNING;
    let mut soon = Vec::new();
    for a in i.authorities {
        for (kind, t) in [("root", a.root_not_after), ("issuer", a.issuer_not_after)] {
            if t <= horizon {
                let days = t.duration_since(i.now).unwrap_or_default().as_secs() / 86_400;
                soon.push(format!("{} {kind} expires in {days} day(s)", a.id));
            }
        }
    }
    CheckResult {
        name: "nothing expires within 14 days",
        ok: soon.is_empty(),
        detail: if soon.is_empty() {
            format!(
                "{} authority(ies): roots and issuers valid beyond 14 days",
                i.authorities.len()
            )
        } else {
            soon.join("; ")
        },
    }
}

fn renewals(i: &Inputs<'_>) -> CheckResult {
    let mut late = Vec::new();
    let mut checked = 0;
    for w in i.workloads.iter().filter(|w| w.session.is_some()) {
        checked += 1;
        let cert = i
            .latest_certs
            .iter()
            .find(|c| c.spiffe_id == w.reg.spiffe_id);
        match cert {
            None => late.push(format!("{}: no certificate on record", w.reg.spiffe_id)),
            Some(c) => {
                let life = c.not_after.duration_since(c.issued_at).unwrap_or_default();
                let deadline = c.issued_at + life.mul_f64(RENEWAL_DEADLINE);
                if i.now > deadline {
                    let overdue = i.now.duration_since(deadline).unwrap_or(Duration::ZERO);
                    late.push(format!(
                        "{}: newest certificate {} is {}s past its renewal deadline",
                        w.reg.spiffe_id,
                        c.serial_hex,
                        overdue.as_secs()
                    ));
                }
            }
        }
    }
    CheckResult {
        name: "proxies renewed on time",
        ok: late.is_empty(),
        detail: if late.is_empty() {
            format!("{checked} connected proxy(ies) renewed on time")
        } else {
            late.join("; ")
        },
    }
}

fn policy(i: &Inputs<'_>) -> CheckResult {
    let stale: Vec<String> = i
        .workloads
        .iter()
        .filter(|w| w.session.is_some() && w.acked_policy != i.policy_version)
        .map(|w| format!("{} runs policy version {}", w.reg.spiffe_id, w.acked_policy))
        .collect();
    CheckResult {
        name: "proxies run the current policy",
        ok: stale.is_empty(),
        detail: if stale.is_empty() {
            format!("current policy version {}", i.policy_version)
        } else {
            format!("current is {}: {}", i.policy_version, stale.join("; "))
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::AuthorityState;
    use crate::discovery::Registration;
    use spiffe::SpiffeId;

    const DAY: Duration = Duration::from_secs(86_400);

    fn authority(now: SystemTime, issuer_days: u64) -> AuthorityStatus {
        AuthorityStatus {
            id: "a1".into(),
            state: AuthorityState::Active,
            root_subject: "CN=root".into(),
            root_not_after: now + DAY * 3650,
            issuer_subject: "CN=issuer".into(),
            issuer_not_after: now + DAY * issuer_days as u32,
            root_fingerprint: "00".into(),
            live_certificates: 1,
        }
    }

    fn entry(connected: bool, acked_policy: u64) -> Entry {
        Entry {
            reg: Registration {
                spiffe_id: SpiffeId::new("spiffe://td/ns/a/sa/web").unwrap(),
                service: "web".into(),
                address: "127.0.0.1".parse().unwrap(),
                inbound_port: 15006,
                app_ports: vec![],
                proxy_version: "t".into(),
            },
            session: connected.then_some(1),
            since: SystemTime::now(),
            cert_not_after: None,
            acked_discovery: 0,
            acked_policy,
        }
    }

    fn cert(issued_ago: Duration, life: Duration, now: SystemTime) -> IssuedCertRecord {
        IssuedCertRecord {
            serial_hex: "01".into(),
            spiffe_id: SpiffeId::new("spiffe://td/ns/a/sa/web").unwrap(),
            authority_id: "a1".into(),
            not_before: now - issued_ago,
            not_after: now - issued_ago + life,
            issued_at: now - issued_ago,
        }
    }

    fn verdicts(i: &Inputs<'_>) -> Vec<bool> {
        run(i).iter().map(|r| r.ok).collect()
    }

    #[test]
    fn healthy_mesh_passes_everything() {
        let now = SystemTime::now();
        let a = [authority(now, 300)];
        let chains = [("a1".to_string(), Ok(()))];
        let w = [entry(true, 3)];
        let c = [cert(
            Duration::from_secs(600),
            Duration::from_secs(3600),
            now,
        )];
        let i = Inputs {
            now,
            authorities: &a,
            chains: &chains,
            workloads: &w,
            latest_certs: &c,
            policy_version: 3,
        };
        assert_eq!(verdicts(&i), vec![true; 5]);
    }

    #[test]
    fn each_problem_fails_its_check() {
        let now = SystemTime::now();
        let chains_ok = [("a1".to_string(), Ok(()))];
        let fresh = [cert(
            Duration::from_secs(600),
            Duration::from_secs(3600),
            now,
        )];
        let connected = [entry(true, 3)];
        // Issuer expiring in 10 days.
        let a = [authority(now, 10)];
        let i = Inputs {
            now,
            authorities: &a,
            chains: &chains_ok,
            workloads: &connected,
            latest_certs: &fresh,
            policy_version: 3,
        };
        assert_eq!(verdicts(&i), vec![true, true, false, true, true]);
        // Broken chain.
        let a = [authority(now, 300)];
        let bad = [(
            "a1".to_string(),
            Err("issuer is not signed by the root".to_string()),
        )];
        let i = Inputs {
            now,
            authorities: &a,
            chains: &bad,
            workloads: &connected,
            latest_certs: &fresh,
            policy_version: 3,
        };
        assert_eq!(verdicts(&i), vec![true, false, true, true, true]);
        // Late renewal: issued 50 minutes ago with a 1 h lifetime.
        let late = [cert(
            Duration::from_secs(3000),
            Duration::from_secs(3600),
            now,
        )];
        let i = Inputs {
            now,
            authorities: &a,
            chains: &chains_ok,
            workloads: &connected,
            latest_certs: &late,
            policy_version: 3,
        };
        assert_eq!(verdicts(&i), vec![true, true, true, false, true]);
        // Stale policy; disconnected proxies are not judged.
        let stale = [entry(true, 2), entry(false, 1)];
        let i = Inputs {
            now,
            authorities: &a,
            chains: &chains_ok,
            workloads: &stale,
            latest_certs: &fresh,
            policy_version: 3,
        };
        assert_eq!(verdicts(&i), vec![true, true, true, true, false]);
    }
}
