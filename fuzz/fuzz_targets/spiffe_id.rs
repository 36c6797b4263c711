//! SPIFFE ID parsing as Ferrule uses it: `SpiffeId::new` (certificates, tokens, wire
//! messages), the policy engine's `IdPrefix` / `IdSelector` (who a rule admits), and
//! the service name a proxy registers for its identity.
//!
//! Invariants:
//! * a parsed ID prints in a form that parses back to the same ID, with a path free of
//!   empty, `.` and `..` segments;
//! * a prefix is a whole-segment prefix: `<prefix>x` is under it, but the ID the prefix
//!   was written from (`spiffe://td/ns/prod` for `spiffe://td/ns/prod/`) and its
//!   sibling `spiffe://td/ns/prod-x` are not; prefixes and selectors print and re-parse
//!   to themselves;
//! * the service name a proxy registers by default is the one the control plane binds
//!   to the identity, and the control plane accepts it (for segments of up to 255
//!   characters, the service-name limit).
#![no_main]

use ferrule_control_plane::discovery::validate_service;
use ferrule_policy::{IdPrefix, IdSelector};
use ferrule_proxy::control::sync::default_service;
use libfuzzer_sys::fuzz_target;
use spiffe::SpiffeId;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(id) = SpiffeId::new(s) {
        let text = id.to_string();
        assert_eq!(
            SpiffeId::new(&text).as_ref(),
            Ok(&id),
            "{text} does not re-parse"
        );
        assert!(text.starts_with("spiffe://"));
        let path = id.path();
        if !path.is_empty() {
            for seg in path[1..].split('/') {
                assert!(
                    !seg.is_empty() && seg != "." && seg != "..",
                    "segment {seg:?} in {text}"
                );
            }
            let last = path.rsplit('/').next().expect("a segment");
            assert_eq!(default_service(&id), last);
            if last.len() <= 255 {
                assert_eq!(validate_service(last), Ok(()), "{text}: cannot register");
            }
        }
    }
    if let Ok(prefix) = IdPrefix::parse(s) {
        let text = prefix.to_string();
        assert_eq!(IdPrefix::parse(&text).as_ref(), Ok(&prefix));
        assert!(prefix.path().starts_with('/') && prefix.path().ends_with('/'));
        // (IDs are at most 2048 bytes: leave room for the suffixes.)
        if text.len() < 2000 {
            let child = SpiffeId::new(format!("{text}x")).expect("child of a prefix");
            assert!(prefix.matches(&child), "{child} not under {text}");
        }
        if prefix.path() != "/" && text.len() < 2000 {
            let base = text.trim_end_matches('/');
            let itself = SpiffeId::new(base).expect("the prefix's own ID");
            assert!(!prefix.matches(&itself), "{base} counted as under {text}");
            let sibling = SpiffeId::new(format!("{base}-x")).expect("sibling");
            assert!(
                !prefix.matches(&sibling),
                "{sibling} counted as under {text}"
            );
        }
    }
    if let Ok(sel) = IdSelector::parse(s) {
        let text = sel.to_string();
        assert_eq!(IdSelector::parse(&text).as_ref(), Ok(&sel), "{text}");
    }
});
