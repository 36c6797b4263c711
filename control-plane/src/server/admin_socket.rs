//! The admin API's transport: a Unix socket only the control plane's user can open.
//!
//! Authentication is the file system: the socket is created mode 0600 inside the 0700
//! data directory, so only the control plane's own user (or root) can connect. The
//! caller's uid (from `SO_PEERCRED`) is recorded in the audit log as "who".

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tokio::net::UnixListener;
use tonic::transport::server::UdsConnectInfo;

/// Binds the admin socket at `path` with mode 0600, replacing a stale socket file.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) => {
            use std::os::unix::fs::FileTypeExt;
            if !meta.file_type().is_socket() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "{} exists and is not a socket; refusing to replace it",
                        path.display()
                    ),
                ));
            }
            std::fs::remove_file(path)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    // Bind under a restrictive umask window: set the mode right after bind, before
    // anyone can connect through the 0700 directory.
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Describes the caller of an admin request for the audit log: `uid:<n>` or `unknown`.
pub fn caller<T>(req: &tonic::Request<T>) -> String {
    req.extensions()
        .get::<UdsConnectInfo>()
        .and_then(|i| i.peer_cred)
        .map(|c| format!("uid:{}", c.uid()))
        .unwrap_or_else(|| "unknown".into())
}
