//! A control plane's moving parts, in-process, for the control-plane targets: the real
//! store (SQLite in a temporary directory), the internal CA, the policy service and the
//! registry, plus join tokens the targets can refer to by placeholder.
//!
//! The directory comes from `TMPDIR` (`fuzz/run.sh` points it at a scratch directory
//! and removes it afterwards: libFuzzer exits without running destructors).

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use ferrule_control_plane::attest::join_token;
use ferrule_control_plane::ca::{CaMode, CaParams, CertificateAuthority};
use ferrule_control_plane::discovery::Registry;
use ferrule_control_plane::policy::PolicyService;
use ferrule_control_plane::store::Store;
use ferrule_policy::MeshDefault;
use spiffe::{SpiffeId, TrustDomain};

/// The identity the placeholder token [`TOKEN_PLACEHOLDER`] attests.
pub const TOKEN_ID: &str = "spiffe://fuzz.test/ns/default/sa/web";
/// The identity the placeholder token [`OTHER_TOKEN_PLACEHOLDER`] attests.
pub const OTHER_TOKEN_ID: &str = "spiffe://fuzz.test/ns/prod/sa/api";
/// A join token equal to this string is replaced by a live token for [`TOKEN_ID`].
pub const TOKEN_PLACEHOLDER: &str = "@token";
/// A join token equal to this string is replaced by a live token for [`OTHER_TOKEN_ID`].
pub const OTHER_TOKEN_PLACEHOLDER: &str = "@other";

/// The control plane's services over one store.
pub struct ControlPlane {
    /// Keeps the data directory alive for the process.
    pub dir: tempfile::TempDir,
    /// The SQLite store.
    pub store: Arc<Store>,
    /// The internal CA.
    pub ca: Arc<CertificateAuthority>,
    /// The policy service.
    pub policies: Arc<PolicyService>,
    /// The discovery registry.
    pub registry: Arc<Registry>,
}

/// The fixture, built on first use.
pub fn control_plane() -> &'static ControlPlane {
    static CP: OnceLock<ControlPlane> = OnceLock::new();
    CP.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = Arc::new(Store::open(&dir.path().join("data")).expect("store"));
        let td = TrustDomain::new(crate::TRUST_DOMAIN).expect("trust domain");
        let ca = CertificateAuthority::open(
            store.clone(),
            td,
            CaMode::Internal { kek: None },
            CaParams::default(),
        )
        .expect("CA");
        let policies =
            PolicyService::open(store.clone(), MeshDefault::AllowAuthenticated).expect("policies");
        ControlPlane {
            dir,
            store,
            ca: Arc::new(ca),
            policies: Arc::new(policies),
            registry: Arc::new(Registry::new(Duration::from_secs(60))),
        }
    })
}

/// A live join token for `id` with uses left: the secret and its public id. A new one is
/// created when the last one runs low.
pub fn live_token(id: &str) -> (String, String) {
    use std::sync::Mutex;
    static TOKENS: Mutex<Vec<(String, String, String)>> = Mutex::new(Vec::new());
    let cp = control_plane();
    let mut tokens = TOKENS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, secret, tid)) = tokens.iter().find(|(i, _, _)| i == id)
        && uses_left(tid).is_some_and(|n| n > 1)
    {
        return (secret.clone(), tid.clone());
    }
    tokens.retain(|(i, _, _)| i != id);
    let spiffe_id = SpiffeId::new(id).expect("fixture id");
    let (secret, info) = join_token::create(
        &cp.store,
        &spiffe_id,
        Duration::from_secs(86_400),
        1_000,
        SystemTime::now(),
    )
    .expect("join token");
    let secret = secret.expose().to_string();
    tokens.push((id.to_string(), secret.clone(), info.id.clone()));
    (secret, info.id)
}

/// Uses left on the token with public id `tid`.
pub fn uses_left(tid: &str) -> Option<u32> {
    join_token::list(&control_plane().store)
        .expect("list tokens")
        .into_iter()
        .find(|t| t.id == tid)
        .map(|t| t.uses_left)
}
