//! The proxy's YAML config file (`proxy/src/config/file.rs`) and its duration syntax.
//! A config file is written by an operator, not an attacker, but a typo must never
//! crash the proxy or yield a configuration that start-up validation claims to refuse.
//!
//! Invariants: an accepted file satisfies every rule `validate` states (ports not 0 and
//! declared once, upstreams with a service, a port and distinct listeners, at least one
//! connection, positive connect / handshake / detection timeouts, a non-blank service
//! name); an error names a field; a duration that parses prints back (in whole units)
//! to one that parses to the same value.
#![no_main]

use std::collections::HashSet;
use std::time::Duration;

use ferrule_proxy::config::file::{FileConfig, parse_duration};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(d) = parse_duration(text) {
        let again = if d.subsec_nanos() != 0 {
            parse_duration(&format!("{}ms", d.as_millis()))
        } else {
            parse_duration(&format!("{}s", d.as_secs()))
        };
        assert_eq!(again, Ok(d), "{text:?}");
        assert!(d <= Duration::from_secs(u64::MAX));
    }
    match FileConfig::parse(text) {
        Ok(c) => {
            let mut seen = HashSet::new();
            for p in &c.inbound.ports {
                assert!(
                    p.port != 0 && seen.insert(p.port),
                    "port {} accepted",
                    p.port
                );
            }
            let mut listens = HashSet::new();
            for u in &c.outbound.upstreams {
                assert!(!u.service.trim().is_empty() && u.port != 0);
                assert!(listens.insert(u.listen), "listener {} twice", u.listen);
            }
            assert!(c.limits.max_connections >= 1);
            assert!(!c.limits.connect_timeout.is_zero());
            assert!(!c.limits.handshake_timeout.is_zero());
            assert!(!c.limits.detect_timeout.is_zero());
            if let Some(s) = &c.service {
                assert!(!s.trim().is_empty());
            }
        }
        Err((field, reason)) => {
            assert!(
                !field.is_empty() && !reason.is_empty(),
                "error without a field or reason"
            );
        }
    }
});
