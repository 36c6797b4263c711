//! Authorities and CA rotation.
//!
//! An **authority** is a self-signed root plus the intermediate ("issuer") it signed, which
//! signs workload leaves. Each has a short hex id and a state:
//!
//! ```text
//!             prepare()             activate(new)
//!   (none) ─────────────► prepared ───────────────► active
//!                            │                        │  activate(other): the previous
//!                            │                        ▼  active authority steps down
//!                            │                     standby ──► activate(it) again (rollback)
//!                            │ retire()               │ retire()
//!                            └────────► retired ◄─────┘
//! ```
//!
//! - Exactly one authority is **active**: it signs every new certificate.
//! - **prepared** and **standby** authorities sign nothing, but their roots are in the trust
//!   bundle: a prepared root is distributed before it signs anything (so peers already trust
//!   it when it does), and a standby root keeps certificates it issued earlier valid until
//!   they expire. Standby is the only difference from prepared in name: it says "was
//!   active", and both may be (re-)activated.
//! - **retired** is terminal: the root leaves the bundle and the private keys are deleted
//!   from the store. Retiring the active authority is refused; retiring one that still has
//!   unexpired issued certificates is refused unless forced.
//!
//! The trust bundle is the roots of all non-retired authorities, oldest first. Its version
//! is bumped (in the same transaction as the state change) whenever that set changes:
//! `prepare` and `retire` bump it, `activate` does not (the set of roots is unchanged).
//!
//! A rotation is therefore: `prepare` → wait until every proxy has fetched the new bundle →
//! `activate` → wait until every certificate of the old authority expired (`status` shows
//! the live count) → `retire` the old one.
//!
//! The intermediate of the active authority is renewed under the same root when less than a
//! third of its lifetime remains ([`CertificateAuthority::renew_issuer_if_due`]); the bundle
//! does not change.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use aws_lc_rs::digest;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SerialNumber,
};
use rusqlite::Connection;
use rustls_pki_types::CertificateDer;
use spiffe::TrustDomain;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::kek::{Kek, SCHEME_AES_256_GCM, SCHEME_NONE};
use super::sign::Signer;
use super::{AuthorityStatus, CaError, CaParams, CertificateAuthority};
use crate::store::{self, AuthorityRow, StoreError, authorities as rows};

/// Lifecycle state of an authority (see the module docs for the transitions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthorityState {
    /// Generated; root in the bundle; not signing yet.
    Prepared,
    /// Signs all new certificates. Exactly one authority is active.
    Active,
    /// Was active; root still in the bundle; may be re-activated or retired.
    Standby,
    /// Root removed from the bundle, keys deleted. Terminal.
    Retired,
}

impl AuthorityState {
    /// The name stored in the database and shown to operators.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthorityState::Prepared => "prepared",
            AuthorityState::Active => "active",
            AuthorityState::Standby => "standby",
            AuthorityState::Retired => "retired",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "prepared" => AuthorityState::Prepared,
            "active" => AuthorityState::Active,
            "standby" => AuthorityState::Standby,
            "retired" => AuthorityState::Retired,
            other => return Err(StoreError::Corrupt(format!("authority state {other:?}"))),
        })
    }

    /// Whether the authority's root is part of the trust bundle.
    pub fn in_bundle(self) -> bool {
        self != AuthorityState::Retired
    }
}

impl fmt::Display for AuthorityState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which of an authority's two keys.
#[derive(Clone, Copy)]
pub(super) enum KeyRole {
    Root,
    Issuer,
}

/// Associated data binding a sealed key to its authority and role.
fn aad(id: &str, role: KeyRole) -> String {
    let role = match role {
        KeyRole::Root => "root",
        KeyRole::Issuer => "issuer",
    };
    format!("ferrule-ca-key:v1:{id}:{role}")
}

fn seal(kek: Option<&Kek>, id: &str, role: KeyRole, pkcs8: &[u8]) -> Vec<u8> {
    match kek {
        Some(kek) => kek.seal(pkcs8, &aad(id, role)),
        None => pkcs8.to_vec(),
    }
}

fn scheme(kek: Option<&Kek>) -> &'static str {
    if kek.is_some() {
        SCHEME_AES_256_GCM
    } else {
        SCHEME_NONE
    }
}

/// Recovers a private key of `row`.
pub(super) fn open_key(
    row: &AuthorityRow,
    role: KeyRole,
    kek: Option<&Kek>,
) -> Result<KeyPair, CaError> {
    let blob = match role {
        KeyRole::Root => &row.root_key,
        KeyRole::Issuer => &row.issuer_key,
    };
    let pkcs8 = match (row.key_encryption.as_str(), kek) {
        (SCHEME_NONE, _) => blob.clone(),
        (SCHEME_AES_256_GCM, Some(kek)) => {
            kek.open(blob, &aad(&row.id, role))
                .ok_or_else(|| CaError::WrongKek {
                    authority: row.id.clone(),
                })?
        }
        (SCHEME_AES_256_GCM, None) => {
            return Err(CaError::KekRequired {
                authority: row.id.clone(),
            });
        }
        (other, _) => {
            return Err(StoreError::Corrupt(format!("key_encryption {other:?}")).into());
        }
    };
    KeyPair::try_from(pkcs8.as_slice())
        .map_err(|e| CaError::Corrupt(format!("private key of authority {} unusable: {e}", row.id)))
}

/// Makes sure the keys of every non-retired authority can be opened with `kek`, and seals
/// keys stored in plaintext when a KEK is now configured.
pub(super) fn check_and_upgrade_keys(
    conn: &Connection,
    kek: Option<&Kek>,
    now: SystemTime,
) -> Result<(), CaError> {
    for row in rows::list(conn)? {
        if AuthorityState::parse(&row.state)? == AuthorityState::Retired {
            continue;
        }
        let root = open_key(&row, KeyRole::Root, kek)?;
        let issuer = open_key(&row, KeyRole::Issuer, kek)?;
        if row.key_encryption == SCHEME_NONE
            && let Some(kek) = kek
        {
            rows::replace_keys(
                conn,
                &row.id,
                &seal(Some(kek), &row.id, KeyRole::Root, root.serialized_der()),
                &seal(Some(kek), &row.id, KeyRole::Issuer, issuer.serialized_der()),
                SCHEME_AES_256_GCM,
                now,
            )?;
            tracing::info!(authority = %row.id, "CA keys encrypted with the configured KEK");
        }
    }
    Ok(())
}

fn random_id() -> String {
    let mut b = [0u8; 4];
    aws_lc_rs::rand::fill(&mut b).expect("system random number generator failed");
    hex::encode(b)
}

fn random_serial() -> SerialNumber {
    let mut s = [0u8; 16];
    aws_lc_rs::rand::fill(&mut s).expect("system random number generator failed");
    s[0] = (s[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&s)
}

fn ca_name(kind: &str, id: &str, td: &TrustDomain) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("Ferrule {kind} CA {id}"));
    dn.push(DnType::OrganizationName, td.as_str());
    dn
}

/// How far CA certificates are backdated, so that leaves (backdated by minutes) always
/// start within their issuer's validity even with clock skew.
const CA_BACKDATE: time::Duration = time::Duration::hours(1);

fn std_to_time(d: std::time::Duration) -> time::Duration {
    time::Duration::try_from(d).unwrap_or(time::Duration::MAX)
}

/// Signs a new intermediate for authority `id` under its root.
fn new_intermediate(
    id: &str,
    td: &TrustDomain,
    root_der: &CertificateDer<'_>,
    root_key: &KeyPair,
    params: &CaParams,
    now: OffsetDateTime,
) -> Result<(CertificateDer<'static>, KeyPair), CaError> {
    let root_not_after = not_after(root_der)?;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut p = CertificateParams::default();
    p.distinguished_name = ca_name("Intermediate", id, td);
    // Path length 0: it signs leaves only. No name constraints: webpki rejects URI ones.
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.serial_number = Some(random_serial());
    p.not_before = now - CA_BACKDATE;
    p.not_after = (now + std_to_time(params.intermediate_lifetime)).min(root_not_after);
    p.use_authority_key_identifier_extension = true;
    let root = Issuer::from_ca_cert_der(root_der, root_key)?;
    let cert = p.signed_by(&key, &root)?;
    Ok((cert.der().clone(), key))
}

/// Generates a new authority (root + intermediate, ECDSA P-256) as a row in `state`.
pub(super) fn generate(
    td: &TrustDomain,
    params: &CaParams,
    kek: Option<&Kek>,
    state: AuthorityState,
    now: SystemTime,
) -> Result<AuthorityRow, CaError> {
    let id = random_id();
    let now_odt = OffsetDateTime::from(now);
    let root_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut p = CertificateParams::default();
    p.distinguished_name = ca_name("Root", &id, td);
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.serial_number = Some(random_serial());
    p.not_before = now_odt - CA_BACKDATE;
    p.not_after = now_odt + std_to_time(params.root_lifetime);
    let root = p.self_signed(&root_key)?;
    let (issuer_der, issuer_key) =
        new_intermediate(&id, td, root.der(), &root_key, params, now_odt)?;
    Ok(AuthorityRow {
        root_key: seal(kek, &id, KeyRole::Root, root_key.serialized_der()),
        issuer_key: seal(kek, &id, KeyRole::Issuer, issuer_key.serialized_der()),
        key_encryption: scheme(kek).to_string(),
        id,
        state: state.as_str().to_string(),
        root_der: root.der().to_vec(),
        issuer_der: issuer_der.to_vec(),
        created_at: store::from_unix(store::to_unix(now)),
    })
}

fn not_after(der: &[u8]) -> Result<OffsetDateTime, CaError> {
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| CaError::Corrupt(format!("stored certificate does not parse: {e}")))?;
    Ok(cert.validity().not_after.to_datetime())
}

/// Builds the signer of a stored authority.
pub(super) fn signer_for(row: &AuthorityRow, kek: Option<&Kek>) -> Result<Signer, CaError> {
    let key = open_key(row, KeyRole::Issuer, kek)?;
    Signer::new(
        row.id.clone(),
        CertificateDer::from(row.issuer_der.clone()),
        key,
        Vec::new(),
        not_after(&row.root_der)?,
    )
    .map_err(|source| CaError::Issuer {
        authority: row.id.clone(),
        source,
    })
}

/// Roots of all non-retired authorities, oldest first.
pub(super) fn bundle_roots(all: &[AuthorityRow]) -> Result<Vec<CertificateDer<'static>>, CaError> {
    let mut roots = Vec::new();
    for row in all {
        if AuthorityState::parse(&row.state)?.in_bundle() {
            roots.push(CertificateDer::from(row.root_der.clone()));
        }
    }
    Ok(roots)
}

/// Content digest of a list of roots (hex SHA-256 over length-prefixed DER).
pub(super) fn bundle_digest(roots: &[CertificateDer<'_>]) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for r in roots {
        ctx.update(&(r.len() as u64).to_be_bytes());
        ctx.update(r);
    }
    hex::encode(ctx.finish())
}

/// Lowercase hex SHA-256 of a certificate.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, der))
}

/// Status of one stored authority.
pub(super) fn status_of(
    row: &AuthorityRow,
    live_certificates: u64,
) -> Result<AuthorityStatus, CaError> {
    let parse = |der: &[u8]| -> Result<(String, SystemTime), CaError> {
        let (_, c) = X509Certificate::from_der(der)
            .map_err(|e| CaError::Corrupt(format!("stored certificate does not parse: {e}")))?;
        Ok((
            c.subject().to_string(),
            SystemTime::from(c.validity().not_after.to_datetime()),
        ))
    };
    let (root_subject, root_not_after) = parse(&row.root_der)?;
    let (issuer_subject, issuer_not_after) = parse(&row.issuer_der)?;
    Ok(AuthorityStatus {
        id: row.id.clone(),
        state: AuthorityState::parse(&row.state)?,
        root_subject,
        root_not_after,
        issuer_subject,
        issuer_not_after,
        root_fingerprint: fingerprint(&row.root_der),
        live_certificates,
    })
}

/// The active authority among `all`.
pub(super) fn active(all: &[AuthorityRow]) -> Result<Option<&AuthorityRow>, CaError> {
    for row in all {
        if AuthorityState::parse(&row.state)? == AuthorityState::Active {
            return Ok(Some(row));
        }
    }
    Ok(None)
}

/// Re-issues the intermediate of `row` if less than a third of its lifetime remains and a
/// new one would last meaningfully longer (it cannot outlive the root). Returns the updated
/// row if it did.
pub(super) fn renew_issuer_if_due(
    conn: &Connection,
    row: &AuthorityRow,
    td: &TrustDomain,
    params: &CaParams,
    kek: Option<&Kek>,
    now: SystemTime,
) -> Result<Option<AuthorityRow>, CaError> {
    let now_odt = OffsetDateTime::from(now);
    let lifetime = std_to_time(params.intermediate_lifetime);
    let issuer_end = not_after(&row.issuer_der)?;
    let root_end = not_after(&row.root_der)?;
    let possible_end = (now_odt + lifetime).min(root_end);
    // Not due, or the root is too close to its end for a new intermediate to help (then
    // only a new authority does; `warn_if_root_expiring` says so at start-up).
    if issuer_end - now_odt >= lifetime / 3 || possible_end - issuer_end < lifetime / 10 {
        return Ok(None);
    }
    // Both keys of a row use one scheme; with a KEK configured, check_and_upgrade_keys
    // already sealed any plaintext row.
    if row.key_encryption != scheme(kek) {
        return Err(CaError::Corrupt(format!(
            "authority {} keys use {:?}, expected {:?}",
            row.id,
            row.key_encryption,
            scheme(kek)
        )));
    }
    let root_key = open_key(row, KeyRole::Root, kek)?;
    let root_der = CertificateDer::from(row.root_der.as_slice());
    let (issuer_der, issuer_key) =
        new_intermediate(&row.id, td, &root_der, &root_key, params, now_odt)?;
    let sealed = seal(kek, &row.id, KeyRole::Issuer, issuer_key.serialized_der());
    rows::replace_issuer(conn, &row.id, &issuer_der, &sealed, now)?;
    tracing::info!(authority = %row.id, old_not_after = %issuer_end,
        new_not_after = %not_after(&issuer_der)?, "CA intermediate renewed");
    Ok(Some(AuthorityRow {
        issuer_der: issuer_der.to_vec(),
        issuer_key: sealed,
        ..row.clone()
    }))
}

/// Logs a warning when the root of `row` ends within one intermediate lifetime: time to
/// rotate to a new authority.
pub(super) fn warn_if_root_expiring(row: &AuthorityRow, params: &CaParams, now: SystemTime) {
    let Ok(root_end) = not_after(&row.root_der) else {
        return;
    };
    if root_end - OffsetDateTime::from(now) < std_to_time(params.intermediate_lifetime) {
        tracing::warn!(authority = %row.id, root_not_after = %root_end,
            "the active CA root expires soon: prepare and activate a new authority");
    }
}

impl CertificateAuthority {
    fn kek(&self) -> Result<Option<&Kek>, CaError> {
        match &self.backend {
            super::Backend::Internal { kek } => Ok(kek.as_ref()),
            super::Backend::External(_) => Err(CaError::ExternalMode),
        }
    }

    /// Generates a new authority in state `prepared` and adds its root to the trust bundle
    /// (bumping the bundle version). It signs nothing until [`activate`](Self::activate)d.
    ///
    /// # Errors
    /// [`CaError::ExternalMode`] in external-issuer mode; store errors.
    pub fn prepare(&self) -> Result<AuthorityStatus, CaError> {
        let kek = self.kek()?;
        let _serial = self.lock_maintenance();
        let now = SystemTime::now();
        let row = generate(
            &self.trust_domain,
            &self.params,
            kek,
            AuthorityState::Prepared,
            now,
        )?;
        let (roots, version) = self.store.immediate(|tx| {
            rows::insert(tx, &row)?;
            let roots = bundle_roots(&rows::list(tx)?)?;
            let version = store::publish_bundle(tx, &bundle_digest(&roots))?;
            Ok::<_, CaError>((roots, version))
        })?;
        self.publish(roots, version);
        tracing::info!(authority = %row.id, bundle_version = version, "CA authority prepared");
        status_of(&row, 0)
    }

    /// Makes authority `id` (prepared or standby) the one that signs; the previously active
    /// authority becomes `standby` (its root stays in the bundle). Activating the active
    /// authority is a no-op.
    ///
    /// # Errors
    /// [`CaError::NotFound`], [`CaError::InvalidState`] for a retired authority,
    /// [`CaError::ExternalMode`], key errors ([`CaError::WrongKek`], ...), store errors.
    pub fn activate(&self, id: &str) -> Result<AuthorityStatus, CaError> {
        let kek = self.kek()?;
        let _serial = self.lock_maintenance();
        let now = SystemTime::now();
        // Hold the state lock across the change so no signature is in flight with the old
        // authority once it has stepped down (see `retire`'s live-certificate check).
        let mut state = self.write_state();
        let (row, signer) = self.store.immediate(|tx| {
            let row = rows::get(tx, id)?.ok_or_else(|| CaError::NotFound(id.to_string()))?;
            match AuthorityState::parse(&row.state)? {
                AuthorityState::Retired => {
                    return Err(CaError::InvalidState(format!(
                        "authority {id} is retired and cannot be activated"
                    )));
                }
                AuthorityState::Active => {
                    let signer = signer_for(&row, kek)?;
                    return Ok((row, signer));
                }
                AuthorityState::Prepared | AuthorityState::Standby => {}
            }
            let row = renew_issuer_if_due(tx, &row, &self.trust_domain, &self.params, kek, now)?
                .unwrap_or(row);
            let signer = signer_for(&row, kek)?;
            if let Some(previous) = active(&rows::list(tx)?)? {
                rows::set_state(tx, &previous.id, AuthorityState::Standby.as_str(), now)?;
                tracing::info!(authority = %previous.id, "CA authority stepped down to standby");
            }
            rows::set_state(tx, id, AuthorityState::Active.as_str(), now)?;
            Ok((
                AuthorityRow {
                    state: AuthorityState::Active.as_str().to_string(),
                    ..row
                },
                signer,
            ))
        })?;
        state.signer = Some(Arc::new(signer));
        drop(state);
        tracing::info!(authority = %id, "CA authority active");
        let live = self.store.count_live(id, now)?;
        status_of(&row, live)
    }

    /// Retires authority `id`: its root leaves the trust bundle (version bumped) and its
    /// private keys are deleted. `now` decides which issued certificates are still live.
    ///
    /// # Errors
    /// [`CaError::InvalidState`] if `id` is the active authority (activate another first) or
    /// already retired; [`CaError::StillInUse`] if certificates it issued are unexpired at
    /// `now` and `force` is false; [`CaError::NotFound`]; [`CaError::ExternalMode`].
    pub fn retire(
        &self,
        id: &str,
        force: bool,
        now: SystemTime,
    ) -> Result<AuthorityStatus, CaError> {
        self.kek()?;
        let _serial = self.lock_maintenance();
        let state = self.write_state();
        let (row, live, roots, version) = self.store.immediate(|tx| {
            let row = rows::get(tx, id)?.ok_or_else(|| CaError::NotFound(id.to_string()))?;
            match AuthorityState::parse(&row.state)? {
                AuthorityState::Active => {
                    return Err(CaError::InvalidState(format!(
                        "authority {id} is active; activate another authority before retiring it"
                    )));
                }
                AuthorityState::Retired => {
                    return Err(CaError::InvalidState(format!(
                        "authority {id} is already retired"
                    )));
                }
                AuthorityState::Prepared | AuthorityState::Standby => {}
            }
            let live: i64 = tx
                .query_row(
                    "SELECT COUNT(*) FROM issued_certs WHERE authority_id = ?1 AND not_after > ?2",
                    rusqlite::params![id, store::to_unix(now)],
                    |r| r.get(0),
                )
                .map_err(StoreError::from)?;
            let live = u64::try_from(live).unwrap_or(0);
            if live > 0 && !force {
                return Err(CaError::StillInUse {
                    id: id.to_string(),
                    live,
                });
            }
            rows::set_state(tx, id, AuthorityState::Retired.as_str(), now)?;
            // The keys are of no further use; do not keep them around.
            rows::replace_keys(tx, id, &[], &[], SCHEME_NONE, now)?;
            let roots = bundle_roots(&rows::list(tx)?)?;
            let version = store::publish_bundle(tx, &bundle_digest(&roots))?;
            Ok::<_, CaError>((row, live, roots, version))
        })?;
        drop(state);
        self.publish(roots, version);
        if live > 0 {
            tracing::warn!(authority = %id, live, "CA authority force-retired with live certificates");
        }
        tracing::info!(authority = %id, bundle_version = version, "CA authority retired");
        status_of(
            &AuthorityRow {
                state: AuthorityState::Retired.as_str().to_string(),
                ..row
            },
            live,
        )
    }

    /// Renews the active authority's intermediate if it is due (internal mode; a no-op
    /// returning `false` in external mode). Returns whether it was renewed. Called by
    /// [`reload_if_changed`](Self::reload_if_changed), so a periodic call of that is enough.
    pub fn renew_issuer_if_due(&self, now: SystemTime) -> Result<bool, CaError> {
        let Ok(kek) = self.kek() else {
            return Ok(false);
        };
        let _serial = self.lock_maintenance();
        let renewed = self.store.immediate(|tx| {
            let all = rows::list(tx)?;
            let Some(row) = active(&all)? else {
                return Ok(None);
            };
            match renew_issuer_if_due(tx, row, &self.trust_domain, &self.params, kek, now)? {
                Some(row) => Ok::<_, CaError>(Some(signer_for(&row, kek)?)),
                None => Ok(None),
            }
        })?;
        match renewed {
            Some(signer) => {
                self.write_state().signer = Some(Arc::new(signer));
                Ok(true)
            }
            None => Ok(false),
        }
    }
}
