//! Follows the control plane's trust-bundle stream and publishes each new bundle to the
//! TLS layer, so a CA rotation reaches the proxy without a restart.

use ferrule_proto::identity::v1::{WatchBundleRequest, identity_client::IdentityClient};
use ferrule_tls::{IdentityHandle, TrustBundle};
use rustls::pki_types::CertificateDer;
use spiffe::TrustDomain;

use super::ControlClient;
use crate::config::{RETRY_MAX, RETRY_MIN};
use crate::telemetry::Backoff;

/// Watches the bundle forever, reconnecting with capped exponential backoff. The last
/// good bundle stays in force while the control plane is unreachable.
pub async fn watch(client: ControlClient, identity: IdentityHandle, td: TrustDomain) {
    let mut backoff = Backoff::new(RETRY_MIN, RETRY_MAX);
    loop {
        match watch_once(&client, &identity, &td, &mut backoff).await {
            Ok(()) => tracing::info!("trust bundle stream ended; reconnecting"),
            Err(e) => {
                tracing::warn!(error = %e, "trust bundle stream failed; keeping the current bundle")
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

async fn watch_once(
    client: &ControlClient,
    identity: &IdentityHandle,
    td: &TrustDomain,
    backoff: &mut Backoff,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let channel = client.connect().await?;
    let mut stream = IdentityClient::new(channel)
        .watch_bundle(WatchBundleRequest {})
        .await?
        .into_inner();
    while let Some(msg) = stream.message().await? {
        backoff.reset();
        if msg.trust_domain != td.as_str() {
            tracing::error!(got = %msg.trust_domain, expected = %td, "bundle for another trust domain ignored");
            continue;
        }
        let current = identity.bundle().map(|b| b.version()).unwrap_or(0);
        let roots: Vec<CertificateDer<'static>> = msg
            .roots_der
            .into_iter()
            .map(CertificateDer::from)
            .collect();
        if msg.version < current {
            // Never go back to an older bundle (it may still trust a retired root).
            tracing::warn!(version = msg.version, current, "older trust bundle ignored");
            continue;
        }
        match TrustBundle::new(td.clone(), roots, msg.version) {
            Ok(bundle) => {
                if msg.version != current {
                    tracing::info!(
                        version = msg.version,
                        roots = bundle.roots().len(),
                        "trust bundle updated"
                    );
                }
                identity.set_bundle(bundle);
            }
            Err(e) => {
                tracing::error!(error = %e, version = msg.version, "invalid bundle from the control plane ignored")
            }
        }
    }
    Ok(())
}
