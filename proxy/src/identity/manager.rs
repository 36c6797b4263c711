//! Obtains the proxy's certificate at start and renews it before it expires.
//!
//! * A fresh ECDSA P-256 key is generated in memory for every certificate.
//! * First contact presents the bootstrap credential (a join token, or the Kubernetes
//!   service-account token file, re-read at every attempt because the kubelet rotates
//!   it); renewals authenticate with the current, still-valid certificate over mTLS
//!   (proof of possession) and no token.
//! * Renewal happens at `renew_fraction` of the lifetime, ±10% jitter (so a fleet
//!   started together does not renew together).
//! * On failure: capped exponential backoff; the current certificate stays in use until
//!   it expires, then it is withdrawn (handshakes fail closed) while retries continue.
//! * New credentials are published atomically: new handshakes use them, established
//!   connections are untouched.

use std::time::{Duration, SystemTime};

use ferrule_proto::identity::v1 as pb;
use ferrule_proto::identity::v1::identity_client::IdentityClient;
use ferrule_tls::{Credentials, IdentityHandle, TrustBundle, Usage};
use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use spiffe::{SpiffeId, TrustDomain};
use tokio::sync::watch;

use super::BootstrapCredential;
use crate::config::{RETRY_MAX, RETRY_MIN};
use crate::control::ControlClient;
use crate::control::client::ControlError;
use crate::metrics::{Metrics, RenewalLabels};
use crate::telemetry::Backoff;

/// Why obtaining a certificate failed.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// No valid certificate to renew with, and no bootstrap credential configured.
    #[error(
        "no valid certificate to renew with and no join token or service-account token configured"
    )]
    NoCredential,
    /// The service-account token file could not be read (or is empty / oversized).
    #[error("reading the service-account token {path}: {reason}")]
    SaToken {
        /// The token file.
        path: std::path::PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Key or CSR generation failed.
    #[error("generating the key or CSR: {0}")]
    KeyGen(#[from] rcgen::Error),
    /// The control plane could not be reached.
    #[error(transparent)]
    Connect(#[from] ControlError),
    /// The control plane refused or failed the request.
    #[error("control plane refused: {code:?}: {message}")]
    Refused { code: tonic::Code, message: String },
    /// The control plane answered with something unusable.
    #[error("invalid response from the control plane: {0}")]
    InvalidResponse(String),
    /// The attempt did not finish in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Deadline of one issuance attempt (connect, TLS, Certify).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(20);

impl IdentityError {
    /// Stable label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NoCredential => "no_credential",
            Self::SaToken { .. } => "sa_token_unreadable",
            Self::KeyGen(_) => "keygen",
            Self::Connect(_) => "unreachable",
            Self::Refused { code, .. } if *code == tonic::Code::Unavailable => "unreachable",
            Self::Refused { .. } => "refused",
            Self::InvalidResponse(_) => "invalid_response",
            Self::Timeout(_) => "timeout",
        }
    }
}

/// What the admin endpoint shows about the identity.
#[derive(Debug, Clone, Default)]
pub struct IdentityStatus {
    /// SPIFFE ID of the current certificate.
    pub spiffe_id: Option<String>,
    /// Serial number (hex) of the current certificate.
    pub serial: Option<String>,
    /// notAfter of the current certificate.
    pub not_after: Option<SystemTime>,
    /// Successful issuances (first certificate and renewals).
    pub renewals_ok: u64,
    /// Failed attempts.
    pub renewals_failed: u64,
    /// Reason of the last failure, if the last attempt failed.
    pub last_error: Option<String>,
}

/// Keeps the proxy's certificate fresh.
pub struct IdentityManager {
    client: ControlClient,
    handle: IdentityHandle,
    trust_domain: TrustDomain,
    token: Option<BootstrapCredential>,
    expected: Option<SpiffeId>,
    renew_fraction: f64,
    status: watch::Sender<IdentityStatus>,
    metrics: Metrics,
}

impl IdentityManager {
    /// Creates the manager; `status()` can be subscribed to before `run`.
    pub fn new(
        client: ControlClient,
        handle: IdentityHandle,
        trust_domain: TrustDomain,
        token: Option<BootstrapCredential>,
        expected: Option<SpiffeId>,
        renew_fraction: f64,
        metrics: Metrics,
    ) -> Self {
        Self {
            metrics,
            client,
            handle,
            trust_domain,
            token,
            expected,
            renew_fraction,
            status: watch::Sender::new(IdentityStatus::default()),
        }
    }

    /// Subscribes to status changes.
    pub fn status(&self) -> watch::Receiver<IdentityStatus> {
        self.status.subscribe()
    }

    /// Runs forever: obtain, sleep until renewal time, renew; retry with backoff.
    pub async fn run(self) {
        let mut backoff = Backoff::new(RETRY_MIN, RETRY_MAX);
        loop {
            // A control plane that accepts the call but never answers must not keep an
            // expiring certificate in place: every attempt has a deadline.
            let attempt = match tokio::time::timeout(ATTEMPT_TIMEOUT, self.obtain()).await {
                Ok(r) => r,
                Err(_) => Err(IdentityError::Timeout(ATTEMPT_TIMEOUT)),
            };
            match attempt {
                Ok(creds) => {
                    backoff.reset();
                    let next = renewal_delay(&creds, self.renew_fraction, SystemTime::now());
                    tracing::info!(
                        spiffe_id = %creds.spiffe_id(),
                        serial = %creds.serial_hex(),
                        expires_in_s = creds.not_after().duration_since(SystemTime::now()).unwrap_or_default().as_secs(),
                        renew_in_s = next.as_secs(),
                        "certificate obtained"
                    );
                    self.metrics
                        .cert_renewals
                        .get_or_create(&RenewalLabels {
                            result: "success",
                            reason: "",
                        })
                        .inc();
                    self.metrics.cert_expiry.set(unix_secs(creds.not_after()));
                    self.status.send_modify(|s| {
                        s.spiffe_id = Some(creds.spiffe_id().to_string());
                        s.serial = Some(creds.serial_hex().to_string());
                        s.not_after = Some(creds.not_after());
                        s.renewals_ok += 1;
                        s.last_error = None;
                    });
                    self.handle.set_credentials(creds);
                    tokio::time::sleep(next).await;
                }
                Err(e) => {
                    self.metrics
                        .cert_renewals
                        .get_or_create(&RenewalLabels {
                            result: "failure",
                            reason: e.reason(),
                        })
                        .inc();
                    let mut delay = backoff.next_delay();
                    let current = self.handle.credentials();
                    let now = SystemTime::now();
                    match &current {
                        Some(c) if c.not_after() > now => {
                            // Never sleep past expiry: wake up in time to withdraw it.
                            let left = c.not_after().duration_since(now).unwrap_or_default();
                            delay = delay.min(left.max(Duration::from_millis(100)));
                            tracing::warn!(reason = e.reason(), error = %e, retry_in_ms = delay.as_millis() as u64, expires_in_s = left.as_secs(), "certificate renewal failed; keeping the current certificate");
                        }
                        Some(_) => {
                            self.handle.clear_credentials();
                            self.metrics.cert_expiry.set(0);
                            tracing::error!(reason = e.reason(), error = %e, "certificate expired and renewal failed; mesh handshakes fail closed until a new certificate arrives");
                        }
                        None => {
                            tracing::warn!(reason = e.reason(), error = %e, retry_in_ms = delay.as_millis() as u64, "cannot obtain a certificate yet");
                        }
                    }
                    self.status.send_modify(|s| {
                        s.renewals_failed += 1;
                        s.last_error = Some(format!("{}: {e}", e.reason()));
                        if current.as_ref().is_none_or(|c| c.not_after() <= now) {
                            s.spiffe_id = None;
                            s.serial = None;
                            s.not_after = None;
                        }
                    });
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// One issuance attempt: new key, CSR, `Certify`, and validation of the answer.
    async fn obtain(&self) -> Result<Credentials, IdentityError> {
        let now = SystemTime::now();
        let renewing = self
            .handle
            .credentials()
            .filter(|c| c.not_after() > now + Duration::from_secs(1));
        let credential = match (&renewing, &self.token) {
            (Some(_), _) => None,
            (None, Some(BootstrapCredential::JoinToken(t))) => Some(
                pb::certify_request::Credential::JoinToken(t.expose().to_string()),
            ),
            (None, Some(BootstrapCredential::SaTokenFile(path))) => Some(
                pb::certify_request::Credential::K8sSaToken(read_sa_token(path).await?),
            ),
            (None, None) => return Err(IdentityError::NoCredential),
        };
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let csr = CertificateParams::default().serialize_request(&key)?;
        // On renewal, insist on keeping the same identity.
        let expected = self
            .expected
            .clone()
            .or_else(|| renewing.as_ref().map(|c| c.spiffe_id().clone()));
        let channel = self.client.connect().await?;
        let resp = IdentityClient::new(channel)
            .certify(pb::CertifyRequest {
                csr_der: csr.der().to_vec(),
                credential,
                expected_spiffe_id: expected.as_ref().map(|i| i.to_string()).unwrap_or_default(),
            })
            .await
            .map_err(|s| IdentityError::Refused {
                code: s.code(),
                message: s.message().to_string(),
            })?
            .into_inner();
        self.accept(resp, &key, expected.as_ref())
    }

    /// Checks the response really is a usable certificate for our key and identity.
    fn accept(
        &self,
        resp: pb::CertifyResponse,
        key: &KeyPair,
        expected: Option<&SpiffeId>,
    ) -> Result<Credentials, IdentityError> {
        let bad = |m: String| IdentityError::InvalidResponse(m);
        let pb_bundle = resp.bundle.ok_or_else(|| bad("no trust bundle".into()))?;
        if pb_bundle.trust_domain != self.trust_domain.as_str() {
            return Err(bad(format!(
                "bundle for trust domain {:?}",
                pb_bundle.trust_domain
            )));
        }
        let bundle = TrustBundle::new(
            self.trust_domain.clone(),
            pb_bundle
                .roots_der
                .into_iter()
                .map(CertificateDer::from)
                .collect(),
            pb_bundle.version,
        )
        .map_err(|e| bad(format!("bundle: {e}")))?;
        let leaf = CertificateDer::from(resp.leaf_der);
        let intermediates: Vec<CertificateDer<'static>> = resp
            .intermediates_der
            .into_iter()
            .map(CertificateDer::from)
            .collect();
        let id = ferrule_tls::verify_svid(
            &leaf,
            &intermediates,
            &bundle,
            UnixTime::now(),
            Usage::Client,
        )
        .map_err(|e| bad(format!("issued certificate does not verify: {e}")))?;
        if let Some(expected) = expected
            && &id != expected
        {
            return Err(bad(format!("issued for {id}, expected {expected}")));
        }
        if !leaf_matches_key(&leaf, key) {
            return Err(bad("certificate is not for our key".into()));
        }
        let mut chain = vec![leaf];
        chain.extend(intermediates);
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let creds = Credentials::new(chain, key_der).map_err(|e| bad(e.to_string()))?;
        // The bundle that came with the certificate is at least as fresh as ours.
        if self
            .handle
            .bundle()
            .is_none_or(|b| b.version() <= bundle.version())
        {
            self.handle.set_bundle(bundle);
        }
        Ok(creds)
    }
}

fn unix_secs(t: SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Compares the certificate's public key with ours.
fn leaf_matches_key(leaf: &CertificateDer<'_>, key: &KeyPair) -> bool {
    match x509_parser::parse_x509_certificate(leaf) {
        Ok((_, cert)) => cert.public_key().subject_public_key.data.as_ref() == key.public_key_raw(),
        Err(_) => false,
    }
}

/// How long to wait before renewing `creds`: `fraction` (±10% jitter) of the lifetime
/// *remaining* at `now`, at least one second. The remaining lifetime is used rather than
/// notBefore..notAfter because the issuer back-dates notBefore for clock skew.
pub fn renewal_delay(creds: &Credentials, fraction: f64, now: SystemTime) -> Duration {
    let remaining = creds.not_after().duration_since(now).unwrap_or_default();
    let jitter = 1.0 + (rand::random::<f64>() - 0.5) * 0.2;
    remaining
        .mul_f64((fraction * jitter).clamp(0.05, 0.95))
        .max(Duration::from_secs(1))
}

/// Largest service-account token file read (projected tokens are ~1-2 KiB).
const MAX_SA_TOKEN_BYTES: u64 = 64 * 1024;

/// Reads the projected service-account token afresh (it rotates underneath us).
async fn read_sa_token(path: &std::path::Path) -> Result<String, IdentityError> {
    use tokio::io::AsyncReadExt as _;
    let fail = |reason: String| IdentityError::SaToken {
        path: path.to_path_buf(),
        reason,
    };
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let mut token = String::new();
    file.take(MAX_SA_TOKEN_BYTES + 1)
        .read_to_string(&mut token)
        .await
        .map_err(|e| fail(e.to_string()))?;
    if token.len() as u64 > MAX_SA_TOKEN_BYTES {
        return Err(fail(format!("larger than {MAX_SA_TOKEN_BYTES} bytes")));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(fail("the file is empty".into()));
    }
    Ok(token.to_string())
}
