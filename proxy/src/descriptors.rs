//! The process's file-descriptor budget, and the connection caps that fit in it.
//!
//! Every proxied connection costs descriptors: an inbound one holds the mesh socket and
//! the application socket, an outbound one the application socket and the mesh socket.
//! If the caps allowed more connections than `RLIMIT_NOFILE` can hold, a flood would
//! run the process into `EMFILE`, and then *every* `accept` fails, the admin endpoint
//! included, so `/live` and `/ready` stop answering while the flood lasts. Instead the
//! proxy raises its soft limit to the hard limit at start-up (as Go's runtime does) and
//! lowers `limits.max_connections` until both directions fit with [`RESERVED`]
//! descriptors to spare; a flood then meets the connection cap (accepted and closed at
//! once, logged and counted) while the admin endpoint and the control-plane session keep
//! working.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Descriptors kept outside the connection caps: listeners, the admin endpoint's own
/// connections, the control-plane session, the runtime (epoll, timers), stdio.
pub const RESERVED: u64 = 64;
/// Descriptors one proxied connection holds (its two sockets).
pub const PER_CONNECTION: u64 = 2;
/// Connection caps sharing the budget (one per direction, see `app`).
pub const CAPS: u64 = 2;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the soft limit now in
/// force (`None` if it cannot be read).
pub fn raise_nofile_limit() -> Option<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return Some(hard);
    }
    Some(soft)
}

/// The per-direction connection cap: `configured`, lowered (to at least 1) so that
/// [`CAPS`] caps of [`PER_CONNECTION`] descriptors each fit in `nofile` with
/// [`RESERVED`] to spare.
pub fn connection_cap(nofile: u64, configured: usize) -> usize {
    let fits = nofile.saturating_sub(RESERVED) / (PER_CONNECTION * CAPS);
    let fits = usize::try_from(fits).unwrap_or(usize::MAX).max(1);
    configured.min(fits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_fit_the_descriptor_limit() {
        // A generous limit leaves the configured cap alone.
        assert_eq!(connection_cap(1 << 20, 10_000), 10_000);
        // 256 descriptors: (256 - 64) / 4 = 48 per direction.
        assert_eq!(connection_cap(256, 10_000), 48);
        assert_eq!(connection_cap(256, 10), 10);
        // Absurdly small limits still allow one connection rather than none.
        assert_eq!(connection_cap(10, 10_000), 1);
    }

    #[test]
    fn raising_never_lowers_the_limit() {
        let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert!(raise_nofile_limit().unwrap() >= soft);
    }
}
