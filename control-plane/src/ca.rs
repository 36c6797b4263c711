//! The control plane's certificate authority.
//!
//! [`CertificateAuthority`] signs X.509-SVIDs for attested identities and publishes the
//! trust bundle. It runs in one of two modes ([`CaMode`]):
//!
//! - **Internal** (default): on first start it generates a root and an intermediate
//!   (ECDSA P-256) and keeps them in the [`Store`]; later starts load the same CA. Keys are
//!   sealed with a [`Kek`] when one is configured (see [`kek`] for what that does and does
//!   not protect). Supports rotation ([`authority`]: prepare → activate → retire).
//! - **External**: signs with an intermediate whose files are managed elsewhere
//!   ([`external`]); [`CertificateAuthority::reload_if_changed`] picks up new files.
//!
//! Files: `sign.rs` — where a CSR becomes a certificate; `authority.rs` — authorities and
//! rotation; `external.rs` — external issuer files; `kek.rs` — encryption of keys at rest.
//!
//! Sharing: wrap it in an `Arc`. Signing takes a read lock on the current signer; rotation
//! and reloads swap it under a write lock, so a certificate is always signed by a
//! consistent issuer, and new signatures use the new issuer as soon as the swap returns.
//! Bundle changes are pushed to [`CertificateAuthority::subscribe_bundle`] receivers.

pub mod authority;
pub mod external;
pub mod kek;
pub mod sign;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use spiffe::{SpiffeId, TrustDomain};
use time::OffsetDateTime;
use tokio::sync::watch;
use x509_parser::prelude::{FromDer, X509Certificate};

pub use authority::{AuthorityState, fingerprint};
pub use external::ExternalIssuerError;
use external::ExternalIssuerPaths;
pub use kek::{Kek, KekError};
pub use sign::{CheckedCsr, KeyKind, SignError, SignerError, check_csr};

use crate::store::{self, IssuedCertRecord, Store, StoreError, authorities as rows};
use sign::{LeafRequest, Signer};

/// Where the CA's signing key comes from.
#[derive(Debug)]
pub enum CaMode {
    /// Generate and keep the CA in the store; seal its keys with `kek` if given.
    Internal {
        /// Key-encryption key for the CA private keys at rest (`None`: plaintext).
        kek: Option<Kek>,
    },
    /// Sign with an externally managed issuer loaded from PEM files (see [`external`]).
    External {
        /// Certificate chain: the issuer first, then up towards the root.
        cert_chain: PathBuf,
        /// The issuer's private key (mode `0600` or stricter).
        key: PathBuf,
        /// Trust anchors to distribute; `None`: the last certificate of the chain.
        bundle: Option<PathBuf>,
    },
}

/// Lifetimes and tolerances of the internal CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaParams {
    /// Lifetime of generated roots. Default: 10 years.
    pub root_lifetime: Duration,
    /// Lifetime of generated intermediates (renewed automatically when a third remains).
    /// Default: 1 year.
    pub intermediate_lifetime: Duration,
    /// How far leaf `notBefore` is set in the past, for clock skew. Default: 5 minutes.
    pub backdate: Duration,
}

impl Default for CaParams {
    fn default() -> Self {
        const DAY: u64 = 86_400;
        Self {
            root_lifetime: Duration::from_secs(3650 * DAY),
            intermediate_lifetime: Duration::from_secs(365 * DAY),
            backdate: Duration::from_secs(5 * 60),
        }
    }
}

/// Errors from CA set-up, rotation and reloads. (Signing has its own [`SignError`].)
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// The store failed (including [`StoreError::TrustDomainMismatch`] at start-up).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stored CA keys are encrypted but no key-encryption key is configured.
    #[error(
        "the CA keys of authority {authority} are encrypted, but no key-encryption key (KEK) \
         is configured; start with the KEK that was used to store them"
    )]
    KekRequired {
        /// The authority whose keys could not be opened.
        authority: String,
    },
    /// The configured key-encryption key does not open the stored CA keys.
    #[error(
        "the configured key-encryption key (KEK) cannot decrypt the CA keys of authority \
         {authority}: wrong KEK, or the database was altered"
    )]
    WrongKek {
        /// The authority whose keys could not be opened.
        authority: String,
    },
    /// Rotation is not available: the issuer is managed externally.
    #[error("not supported in external-issuer mode: the issuer is managed outside Ferrule")]
    ExternalMode,
    /// No authority has this id.
    #[error("no CA authority with id {0:?}")]
    NotFound(String),
    /// The operation does not apply to the authority's current state.
    #[error("{0}")]
    InvalidState(String),
    /// The authority still has unexpired issued certificates (retire with `force`, or wait).
    #[error(
        "authority {id} still has {live} unexpired certificate(s); wait for them to expire \
         or force"
    )]
    StillInUse {
        /// The authority.
        id: String,
        /// How many certificates are still live.
        live: u64,
    },
    /// The external issuer files are unusable (the previous issuer, if any, stays in use).
    #[error("external issuer rejected: {0}")]
    External(#[from] ExternalIssuerError),
    /// A stored authority's certificate and key do not form a usable issuer.
    #[error("authority {authority}: {source}")]
    Issuer {
        /// The authority.
        authority: String,
        /// What is wrong.
        source: SignerError,
    },
    /// Key generation or certificate encoding failed.
    #[error("CA certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// The store holds CA data this binary cannot use (e.g. no active authority).
    #[error("corrupt CA state: {0}")]
    Corrupt(String),
}

/// The trust bundle: roots to trust for this trust domain, and a version that increases on
/// every change (persisted, so it keeps increasing across restarts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleSnapshot {
    /// Root certificates (DER).
    pub roots: Vec<CertificateDer<'static>>,
    /// Monotonic version.
    pub version: u64,
}

impl BundleSnapshot {
    /// The roots as concatenated PEM `CERTIFICATE` blocks (e.g. for a bootstrap file).
    pub fn to_pem(&self) -> String {
        self.roots
            .iter()
            .map(|root| to_pem("CERTIFICATE", root))
            .collect()
    }

    /// The bundle as `ferrule-tls` verifies with it.
    pub fn to_tls_bundle(
        &self,
        trust_domain: &TrustDomain,
    ) -> Result<ferrule_tls::TrustBundle, ferrule_tls::BundleError> {
        ferrule_tls::TrustBundle::new(trust_domain.clone(), self.roots.clone(), self.version)
    }
}

/// One PEM block with `label` (e.g. `CERTIFICATE`) around `der`.
pub fn to_pem(label: &str, der: &[u8]) -> String {
    let mut out = format!("-----BEGIN {label}-----\n");
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Operator view of one authority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorityStatus {
    /// Short hex id (`ext-<8 hex>` in external mode, derived from the issuer certificate).
    pub id: String,
    /// Lifecycle state.
    pub state: AuthorityState,
    /// Root subject, e.g. `CN=Ferrule Root CA 1a2b3c4d, O=example.org`.
    pub root_subject: String,
    /// Root expiry.
    pub root_not_after: SystemTime,
    /// Issuer (intermediate) subject.
    pub issuer_subject: String,
    /// Issuer expiry.
    pub issuer_not_after: SystemTime,
    /// Lowercase hex SHA-256 of the root certificate.
    pub root_fingerprint: String,
    /// Unexpired certificates issued under this authority.
    pub live_certificates: u64,
}

/// A signed workload certificate (X.509-SVID).
#[derive(Debug, Clone)]
pub struct IssuedSvid {
    /// The leaf certificate.
    pub leaf_der: CertificateDer<'static>,
    /// Certificates to present after the leaf: the issuer, then further intermediates.
    pub intermediates: Vec<CertificateDer<'static>>,
    /// Serial number, lowercase hex.
    pub serial_hex: String,
    /// The identity in the certificate.
    pub spiffe_id: SpiffeId,
    /// Start of validity (backdated).
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// `not_after` as Unix seconds (for wire types).
    pub not_after_unix: i64,
    /// Id of the signing authority.
    pub authority_id: String,
}

/// The control plane's own serving certificate and its key.
pub struct ServerCert {
    /// Leaf first, then the intermediates.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key (PKCS#8), generated by the CA.
    pub key: PrivateKeyDer<'static>,
    /// End of validity: re-issue well before.
    pub not_after: SystemTime,
    /// Serial number, lowercase hex.
    pub serial_hex: String,
}

impl std::fmt::Debug for ServerCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerCert")
            .field("chain_len", &self.chain.len())
            .field("not_after", &self.not_after)
            .field("serial_hex", &self.serial_hex)
            .field("key", &"[redacted]")
            .finish()
    }
}

enum Backend {
    Internal { kek: Option<Kek> },
    External(ExternalIssuerPaths),
}

struct State {
    signer: Option<Arc<Signer>>,
    /// External mode: what was loaded, for status and change detection.
    external: Option<ExternalState>,
}

struct ExternalState {
    stamp: external::FilesStamp,
    anchor: CertificateDer<'static>,
}

/// The certificate authority. Share as `Arc<CertificateAuthority>`.
pub struct CertificateAuthority {
    store: Arc<Store>,
    trust_domain: TrustDomain,
    params: CaParams,
    backend: Backend,
    state: RwLock<State>,
    bundle: watch::Sender<BundleSnapshot>,
    /// Serialises rotation, renewal and reloads.
    maintenance: Mutex<()>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("trust_domain", &self.trust_domain)
            .field("mode", &self.mode_name())
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Opens the CA of `trust_domain` over `store`.
    ///
    /// Internal mode: creates the first authority (root + intermediate) if the store has
    /// none, checks that the stored keys open with the configured KEK (encrypting plaintext
    /// keys if a KEK is now configured), and renews the active intermediate if due.
    /// External mode: loads and validates the issuer files.
    ///
    /// # Errors
    /// [`StoreError::TrustDomainMismatch`] (as [`CaError::Store`]) if the store belongs to
    /// another trust domain; [`CaError::KekRequired`] / [`CaError::WrongKek`];
    /// [`CaError::External`] for unusable external files; store and generation errors.
    pub fn open(
        store: Arc<Store>,
        trust_domain: TrustDomain,
        mode: CaMode,
        params: CaParams,
    ) -> Result<Self, CaError> {
        store.ensure_trust_domain(&trust_domain)?;
        let now = SystemTime::now();
        let (backend, signer, roots, version, external) = match mode {
            CaMode::Internal { kek } => {
                let (signer, roots, version) = store.immediate(|tx| {
                    authority::check_and_upgrade_keys(tx, kek.as_ref(), now)?;
                    let mut all = rows::list(tx)?;
                    if all.is_empty() {
                        let row = authority::generate(
                            &trust_domain,
                            &params,
                            kek.as_ref(),
                            AuthorityState::Active,
                            now,
                        )?;
                        rows::insert(tx, &row)?;
                        tracing::info!(authority = %row.id, %trust_domain, "CA created");
                        all.push(row);
                    }
                    let active = authority::active(&all)?
                        .ok_or_else(|| CaError::Corrupt("no authority is active".into()))?;
                    let active = authority::renew_issuer_if_due(
                        tx,
                        active,
                        &trust_domain,
                        &params,
                        kek.as_ref(),
                        now,
                    )?
                    .unwrap_or_else(|| active.clone());
                    authority::warn_if_root_expiring(&active, &params, now);
                    let signer = authority::signer_for(&active, kek.as_ref())?;
                    let roots = authority::bundle_roots(&all)?;
                    let version = store::publish_bundle(tx, &authority::bundle_digest(&roots))?;
                    Ok::<_, CaError>((signer, roots, version))
                })?;
                (Backend::Internal { kek }, signer, roots, version, None)
            }
            CaMode::External {
                cert_chain,
                key,
                bundle,
            } => {
                let paths = ExternalIssuerPaths {
                    cert_chain,
                    key,
                    bundle,
                };
                let loaded = external::load(&paths, now)?;
                let version = store.immediate(|tx| {
                    store::publish_bundle(tx, &authority::bundle_digest(&loaded.roots))
                })?;
                let ext = ExternalState {
                    stamp: loaded.stamp,
                    anchor: loaded.anchor,
                };
                (
                    Backend::External(paths),
                    loaded.signer,
                    loaded.roots,
                    version,
                    Some(ext),
                )
            }
        };
        tracing::info!(
            authority = %signer.authority_id,
            bundle_version = version,
            roots = roots.len(),
            "CA ready"
        );
        let (bundle, _) = watch::channel(BundleSnapshot { roots, version });
        Ok(Self {
            store,
            trust_domain,
            params,
            backend,
            state: RwLock::new(State {
                signer: Some(Arc::new(signer)),
                external,
            }),
            bundle,
            maintenance: Mutex::new(()),
        })
    }

    /// The trust domain this CA issues for.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// `"internal"` or `"external"`.
    pub fn mode_name(&self) -> &'static str {
        match self.backend {
            Backend::Internal { .. } => "internal",
            Backend::External(_) => "external",
        }
    }

    /// Signs the public key of `csr_der` for the attested identity `id`, valid for
    /// `lifetime` (clamped to the issuer's expiry), and records it in the store.
    ///
    /// Only the CSR's public key is used; see [`sign`] for everything else that goes in.
    /// Blocking (signature plus an SQLite write): call it from `spawn_blocking` in async code.
    pub fn sign_svid(
        &self,
        csr_der: &[u8],
        id: &SpiffeId,
        lifetime: Duration,
    ) -> Result<IssuedSvid, SignError> {
        let csr = check_csr(csr_der)?;
        self.issue(id, &[], lifetime, true, |signer, req| {
            sign::sign_csr(signer, &csr, req)
        })
    }

    /// Issues the control plane's own serving certificate for `id` (which must be
    /// `spiffe://<trust domain>/ferrule/control-plane`), with extra `dns_names` (DNS names
    /// or IP addresses) for clients that verify by name. The CA generates the P-256 key.
    pub fn issue_server_cert(
        &self,
        id: &SpiffeId,
        dns_names: &[String],
        lifetime: Duration,
    ) -> Result<ServerCert, SignError> {
        let expected =
            SpiffeId::from_segments(self.trust_domain.clone(), &["ferrule", "control-plane"])
                .expect("static path segments are valid");
        if *id != expected {
            return Err(SignError::NotControlPlaneIdentity {
                id: id.to_string(),
                expected: expected.to_string(),
            });
        }
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        // Not recorded: the control plane replaces its own certificate whenever the
        // active authority changes, so it never holds up retiring an authority.
        let issued = self.issue(id, dns_names, lifetime, false, |signer, req| {
            sign::sign_leaf(signer, &key, req)
        })?;
        let mut chain = vec![issued.leaf_der];
        chain.extend(issued.intermediates);
        Ok(ServerCert {
            chain,
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            not_after: issued.not_after,
            serial_hex: issued.serial_hex,
        })
    }

    fn issue(
        &self,
        id: &SpiffeId,
        dns_names: &[String],
        lifetime: Duration,
        record_it: bool,
        sign_with: impl FnOnce(&Signer, &LeafRequest<'_>) -> Result<sign::SignedLeaf, SignError>,
    ) -> Result<IssuedSvid, SignError> {
        if !id.is_member_of(&self.trust_domain) {
            return Err(SignError::ForeignTrustDomain {
                id: id.to_string(),
                trust_domain: self.trust_domain.to_string(),
            });
        }
        let now = SystemTime::now();
        // Held until the record is written: rotation waits for in-flight signatures, so
        // `retire` never misses a certificate of the authority it retires.
        let state = self.read_state();
        let signer = state.signer.as_ref().ok_or(SignError::NoActiveAuthority)?;
        let req = LeafRequest {
            id,
            dns_names,
            lifetime,
            backdate: self.params.backdate,
            now: OffsetDateTime::from(now),
        };
        let leaf = sign_with(signer, &req)?;
        let record = IssuedCertRecord {
            serial_hex: leaf.serial_hex.clone(),
            spiffe_id: id.clone(),
            authority_id: signer.authority_id.clone(),
            not_before: SystemTime::from(leaf.not_before),
            not_after: SystemTime::from(leaf.not_after),
            issued_at: now,
        };
        if record_it {
            self.store.record_issued(&record)?;
        }
        Ok(IssuedSvid {
            leaf_der: leaf.der,
            intermediates: signer.intermediates.clone(),
            serial_hex: leaf.serial_hex,
            spiffe_id: id.clone(),
            not_before: record.not_before,
            not_after: record.not_after,
            not_after_unix: leaf.not_after.unix_timestamp(),
            authority_id: record.authority_id,
        })
    }

    /// The current trust bundle.
    pub fn trust_bundle(&self) -> BundleSnapshot {
        self.bundle.borrow().clone()
    }

    /// A receiver that sees every new trust bundle (and starts with the current one).
    pub fn subscribe_bundle(&self) -> watch::Receiver<BundleSnapshot> {
        self.bundle.subscribe()
    }

    /// All authorities, oldest first, with live-certificate counts at the current time. In
    /// external mode, one entry describing the loaded issuer.
    pub fn status(&self) -> Result<Vec<AuthorityStatus>, CaError> {
        let now = SystemTime::now();
        match &self.backend {
            Backend::Internal { .. } => {
                let all = self.store.with_conn(rows::list)?;
                all.iter()
                    .map(|row| authority::status_of(row, self.store.count_live(&row.id, now)?))
                    .collect()
            }
            Backend::External(_) => {
                let state = self.read_state();
                let (Some(signer), Some(ext)) = (&state.signer, &state.external) else {
                    return Ok(Vec::new());
                };
                let describe = |der: &[u8]| -> Result<(String, SystemTime), CaError> {
                    let (_, c) = X509Certificate::from_der(der)
                        .map_err(|e| CaError::Corrupt(e.to_string()))?;
                    Ok((
                        c.subject().to_string(),
                        SystemTime::from(c.validity().not_after.to_datetime()),
                    ))
                };
                let (root_subject, root_not_after) = describe(&ext.anchor)?;
                let (issuer_subject, issuer_not_after) = describe(signer.issuer_der())?;
                Ok(vec![AuthorityStatus {
                    id: signer.authority_id.clone(),
                    state: AuthorityState::Active,
                    root_subject,
                    root_not_after,
                    issuer_subject,
                    issuer_not_after,
                    root_fingerprint: fingerprint(&ext.anchor),
                    live_certificates: self.store.count_live(&signer.authority_id, now)?,
                }])
            }
        }
    }

    /// Checks every non-retired authority's chain: the issuer is a CA signed by the
    /// root, the root is self-signed, and both are within their validity at `now`.
    /// Returns one verdict per authority id.
    pub fn verify_chains(&self, now: SystemTime) -> Result<Vec<ChainVerdict>, CaError> {
        let pairs: Vec<(String, Vec<u8>, Vec<u8>)> = match &self.backend {
            Backend::Internal { .. } => self
                .store
                .with_conn(rows::list)?
                .into_iter()
                .filter(|r| r.state != "retired")
                .map(|r| (r.id, r.root_der, r.issuer_der))
                .collect(),
            Backend::External(_) => {
                let state = self.read_state();
                match (&state.signer, &state.external) {
                    (Some(signer), Some(ext)) => vec![(
                        signer.authority_id.clone(),
                        ext.anchor.to_vec(),
                        signer.issuer_der().to_vec(),
                    )],
                    _ => Vec::new(),
                }
            }
        };
        Ok(pairs
            .into_iter()
            .map(|(id, root, issuer)| {
                let verdict = check_pair(&root, &issuer, now);
                (id, verdict)
            })
            .collect())
    }

    /// Periodic maintenance; run it on a timer (e.g. every 10 s).
    ///
    /// External mode: if any of the issuer files changed (inode, mtime or size), loads and
    /// validates them and swaps the new issuer in; returns `Ok(true)` if it did. On error the
    /// previous issuer stays in use, and the error is returned again on every call until the
    /// files are fixed. Internal mode: renews the active intermediate when due
    /// ([`renew_issuer_if_due`](Self::renew_issuer_if_due)); returns whether it did.
    pub fn reload_if_changed(&self) -> Result<bool, CaError> {
        let now = SystemTime::now();
        let paths = match &self.backend {
            Backend::Internal { .. } => return self.renew_issuer_if_due(now),
            Backend::External(paths) => paths,
        };
        let _serial = self.lock_maintenance();
        let current = external::stamp(paths);
        if self
            .read_state()
            .external
            .as_ref()
            .is_some_and(|e| e.stamp == current)
        {
            return Ok(false);
        }
        let loaded = external::load(paths, now).inspect_err(|e| {
            tracing::warn!(error = %e, "external issuer files changed but are unusable; keeping the previous issuer");
        })?;
        let digest = authority::bundle_digest(&loaded.roots);
        let version = self
            .store
            .immediate(|tx| store::publish_bundle(tx, &digest))?;
        {
            let mut state = self.write_state();
            tracing::info!(
                old = state.signer.as_ref().map(|s| s.authority_id.as_str()).unwrap_or("-"),
                new = %loaded.signer.authority_id,
                bundle_version = version,
                "external issuer reloaded"
            );
            state.signer = Some(Arc::new(loaded.signer));
            state.external = Some(ExternalState {
                stamp: loaded.stamp,
                anchor: loaded.anchor,
            });
        }
        self.publish(loaded.roots, version);
        Ok(true)
    }

    /// Sends a new bundle to subscribers if its version changed.
    fn publish(&self, roots: Vec<CertificateDer<'static>>, version: u64) {
        self.bundle.send_if_modified(|b| {
            if b.version == version {
                return false;
            }
            *b = BundleSnapshot { roots, version };
            true
        });
    }

    // Lock helpers. The guarded data is replaced wholesale, never left half-updated, so a
    // poisoned lock is safe to recover.
    fn read_state(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_state(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_maintenance(&self) -> MutexGuard<'_, ()> {
        self.maintenance
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// An authority id and whether its chain verified (else why not).
pub type ChainVerdict = (String, Result<(), String>);

/// One authority's chain check (see [`CertificateAuthority::verify_chains`]).
fn check_pair(root_der: &[u8], issuer_der: &[u8], now: SystemTime) -> Result<(), String> {
    let (_, root) = X509Certificate::from_der(root_der).map_err(|e| format!("root: {e}"))?;
    let (_, issuer) = X509Certificate::from_der(issuer_der).map_err(|e| format!("issuer: {e}"))?;
    let t = x509_parser::time::ASN1Time::from_timestamp(store::to_unix(now))
        .map_err(|e| format!("time: {e}"))?;
    if !root.validity().is_valid_at(t) {
        return Err(format!("root {} is outside its validity", root.subject()));
    }
    if !issuer.validity().is_valid_at(t) {
        return Err(format!(
            "issuer {} is outside its validity",
            issuer.subject()
        ));
    }
    root.verify_signature(None)
        .map_err(|e| format!("root is not validly self-signed: {e}"))?;
    issuer
        .verify_signature(Some(root.public_key()))
        .map_err(|e| format!("issuer is not signed by the root: {e}"))?;
    if !issuer.is_ca() {
        return Err("issuer is not a CA certificate".into());
    }
    if issuer.issuer() != root.subject() {
        return Err("issuer's issuer name differs from the root's subject".into());
    }
    Ok(())
}
