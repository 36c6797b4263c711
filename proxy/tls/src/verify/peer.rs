//! [`VerifiedPeer`]: the identity a handshake proved, kept for a long-lived connection that
//! carries many application connections (the proxy's pooled, multiplexed mesh hop), and
//! re-checked before each new use.
//!
//! A handshake verifies the peer once. A connection that lives on and is reused for new
//! work must not outlive that verification's premises, or reuse becomes a bypass (the
//! failure behind Envoy CVE-2022-21654, where resumed sessions skipped re-validation
//! after the trust configuration changed). So before every new use, [`VerifiedPeer::check`]
//! requires that:
//! * no certificate of the peer's chain has expired (checked against the current time);
//! * the chain still verifies against the trust bundle in force *now*: when the bundle
//!   changed since the last validation (any [`IdentityHandle::set_bundle`], compared by
//!   identity of the published bundle, not by version number), the whole chain is
//!   verified again with [`verify_svid`] and must prove the same SPIFFE ID. A peer the
//!   new bundle rejects is rejected, for this and every later use.
//!
//! [`IdentityHandle::set_bundle`]: crate::IdentityHandle::set_bundle

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::pki_types::{CertificateDer, UnixTime};
use spiffe::SpiffeId;

use super::{Usage, VerifyError, verify_svid};
use crate::identity::{IdentityHandle, TrustBundle};
use crate::svid;

/// A peer authenticated by a completed handshake: its SPIFFE ID, its certificate chain
/// and the trust bundle that chain was last validated against.
pub struct VerifiedPeer {
    id: SpiffeId,
    chain: Vec<CertificateDer<'static>>,
    not_after: SystemTime,
    usage: Usage,
    /// The bundle the chain was last validated against. Compared by pointer: every
    /// published bundle is a new `Arc`, and holding it here keeps its address unique.
    validated: Mutex<Arc<TrustBundle>>,
}

impl VerifiedPeer {
    /// Records the peer of a handshake that a Ferrule verifier accepted.
    ///
    /// `bundle_before` is `identity.bundle()` read *before* the handshake started: if the
    /// handle still holds that same bundle afterwards, the verifier necessarily used it.
    /// Otherwise (the bundle changed during the handshake, or none was read) the chain is
    /// verified again here against the current bundle, so the result never rests on a
    /// bundle that was replaced. `peer_certs` is the connection's `peer_certificates()`.
    pub fn after_handshake(
        identity: &IdentityHandle,
        bundle_before: Option<Arc<TrustBundle>>,
        peer_certs: Option<&[CertificateDer<'_>]>,
        usage: Usage,
    ) -> Result<Self, VerifyError> {
        let chain: Vec<CertificateDer<'static>> = peer_certs
            .filter(|c| !c.is_empty())
            .ok_or(VerifyError::NoCertificate)?
            .iter()
            .map(|c| c.clone().into_owned())
            .collect();
        let mut not_after: Option<SystemTime> = None;
        for der in &chain {
            let cert = svid::parse(der)?;
            let t = svid::system_time(cert.validity().not_after);
            not_after = Some(not_after.map_or(t, |n| n.min(t)));
        }
        let leaf = svid::parse(&chain[0])?;
        let id = svid::spiffe_id(&leaf)?;
        drop(leaf);
        let current = identity.bundle().ok_or(VerifyError::NoBundle)?;
        let peer = Self {
            id,
            chain,
            not_after: not_after.unwrap_or(UNIX_EPOCH),
            usage,
            validated: Mutex::new(current.clone()),
        };
        match bundle_before {
            Some(before) if Arc::ptr_eq(&before, &current) => {}
            _ => peer.revalidate(&current, SystemTime::now())?,
        }
        Ok(peer)
    }

    /// The peer's SPIFFE ID.
    pub fn id(&self) -> &SpiffeId {
        &self.id
    }

    /// The earliest notAfter of the certificates the peer presented: after it, the
    /// connection must not be used for new work.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// Whether the peer may still be trusted for new work at `now` (see the module docs):
    /// its chain has not expired and verifies against the bundle `identity` holds now.
    /// Cheap when nothing changed (a time comparison and a pointer comparison); a full
    /// chain verification after a bundle change.
    pub fn check(&self, identity: &IdentityHandle, now: SystemTime) -> Result<(), VerifyError> {
        if now > self.not_after {
            return Err(VerifyError::Expired {
                not_after: unix_secs(self.not_after),
                now: unix_secs(now),
            });
        }
        let current = identity.bundle().ok_or(VerifyError::NoBundle)?;
        if Arc::ptr_eq(&self.validated_bundle(), &current) {
            return Ok(());
        }
        self.revalidate(&current, now)
    }

    fn validated_bundle(&self) -> Arc<TrustBundle> {
        self.validated
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Verifies the whole chain against `bundle` at `now`; on success remembers `bundle`.
    fn revalidate(&self, bundle: &Arc<TrustBundle>, now: SystemTime) -> Result<(), VerifyError> {
        let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let id = verify_svid(
            &self.chain[0],
            &self.chain[1..],
            bundle,
            UnixTime::since_unix_epoch(since_epoch),
            self.usage,
        )?;
        if id != self.id {
            // The same bytes cannot prove another ID; refuse rather than assume.
            return Err(VerifyError::IdentityMismatch {
                expected: vec![self.id.clone()],
                got: id,
            });
        }
        *self.validated.lock().unwrap_or_else(|p| p.into_inner()) = bundle.clone();
        Ok(())
    }
}

impl std::fmt::Debug for VerifiedPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedPeer")
            .field("id", &self.id.to_string())
            .field("chain_len", &self.chain.len())
            .field("not_after", &self.not_after)
            .field("usage", &self.usage)
            .finish()
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
