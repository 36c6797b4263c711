//! `ferrulectl webhook ...`: what the injection webhook's MutatingWebhookConfiguration
//! needs from the control plane.
//!
//! `ca-bundle` prints the `caBundle` value: the base64 of the trust bundle PEM (the
//! roots that the webhook's serving certificate chains to). It reads the file the
//! control plane keeps current (`--bundle-out`, default `<data-dir>/bundle.pem`, next to
//! the admin socket), so it works wherever the admin socket is reachable:
//!
//! ```sh
//! kubectl patch mutatingwebhookconfiguration ferrule-injector --type json -p \
//!   "[{\"op\":\"replace\",\"path\":\"/webhooks/0/clientConfig/caBundle\",\"value\":\"$(ferrulectl webhook ca-bundle)\"}]"
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use base64::Engine as _;
use clap::Subcommand;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// `ferrulectl webhook ...`
#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// Print the MutatingWebhookConfiguration's caBundle (base64 of the trust bundle PEM).
    CaBundle {
        /// The trust bundle file the control plane writes (default: bundle.pem in the
        /// admin socket's directory, i.e. <data-dir>/bundle.pem).
        #[arg(long, env = "FERRULE_BUNDLE_OUT")]
        bundle_file: Option<PathBuf>,
        /// Print the PEM itself instead of its base64.
        #[arg(long)]
        pem: bool,
    },
}

/// Runs a `webhook` command. `socket` locates the data directory by default.
pub fn run(cmd: &WebhookCommand, socket: &Path) -> ExitCode {
    let WebhookCommand::CaBundle { bundle_file, pem } = cmd;
    let path = bundle_file.clone().unwrap_or_else(|| {
        socket
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join("bundle.pem")
    });
    match read_bundle(&path) {
        Ok(bytes) if *pem => {
            print!("{}", String::from_utf8_lossy(&bytes));
            ExitCode::SUCCESS
        }
        Ok(bytes) => {
            println!(
                "{}",
                base64::engine::general_purpose::STANDARD.encode(bytes)
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ferrulectl webhook ca-bundle: {}: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}

/// Reads the bundle and checks it holds at least one parsable certificate and nothing
/// else, so a truncated or wrong file is never handed to the API server.
fn read_bundle(path: &Path) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let mut n = 0;
    for cert in CertificateDer::pem_slice_iter(&bytes) {
        let cert = cert.map_err(|e| format!("not a PEM certificate bundle: {e}"))?;
        x509_parser::parse_x509_certificate(&cert)
            .map_err(|e| format!("certificate {}: {e}", n + 1))?;
        n += 1;
    }
    if n == 0 {
        return Err("no certificate in the file".into());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundle_must_hold_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bundle.pem");
        let root = rcgen::generate_simple_self_signed(vec!["r".into()]).unwrap();
        std::fs::write(&path, root.cert.pem()).unwrap();
        assert_eq!(read_bundle(&path).unwrap(), root.cert.pem().as_bytes());
        std::fs::write(&path, "").unwrap();
        assert!(read_bundle(&path).unwrap_err().contains("no certificate"));
        std::fs::write(
            &path,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert!(read_bundle(&path).is_err());
        assert!(read_bundle(&dir.path().join("missing.pem")).is_err());
    }
}
