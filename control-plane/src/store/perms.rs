//! File-permission checks for secrets at rest.
//!
//! The data directory holds CA private keys (plaintext when no KEK is configured), so it and
//! every secret file the control plane reads (database, KEK file, external issuer key) must
//! not be readable or writable by group or others. We check instead of silently `chmod`ing:
//! a too-open file may already have leaked, and an operator should know.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Permission bits that must be clear: read or write for group or others.
const FORBIDDEN: u32 = 0o066;

/// A secret file or directory is exposed, or could not be inspected.
#[derive(Debug, thiserror::Error)]
pub enum PermissionError {
    /// The path is readable or writable by group or others.
    #[error(
        "{path} has mode {mode:04o}, which lets group or others read or write it; \
         run `chmod {fix:o} {path}` (or stricter)"
    )]
    TooOpen {
        /// The offending file or directory.
        path: PathBuf,
        /// Its permission bits (`st_mode & 0o7777`).
        mode: u32,
        /// The mode we would suggest (`0600` for files, `0700` for directories).
        fix: u32,
    },
    /// The path exists but is not the expected kind (a directory where a file is expected,
    /// or the reverse).
    #[error("{path} is not a {expected}")]
    WrongKind {
        /// The offending path.
        path: PathBuf,
        /// `"regular file"` or `"directory"`.
        expected: &'static str,
    },
    /// The path could not be inspected (missing, or no permission to `stat` it).
    #[error("cannot inspect {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The underlying I/O error.
        source: io::Error,
    },
}

/// Checks that `path` is a regular file (symlinks followed, as with Kubernetes secret
/// volumes) that group and others can neither read nor write (`0600`, `0400` or stricter).
pub fn check_private_file(path: &Path) -> Result<(), PermissionError> {
    check(path, false)
}

/// Checks that `path` is a directory that group and others can neither read nor write.
pub fn check_private_dir(path: &Path) -> Result<(), PermissionError> {
    check(path, true)
}

fn check(path: &Path, dir: bool) -> Result<(), PermissionError> {
    let meta = fs::metadata(path).map_err(|source| PermissionError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let (kind_ok, expected, fix) = if dir {
        (meta.is_dir(), "directory", 0o700)
    } else {
        (meta.is_file(), "regular file", 0o600)
    };
    if !kind_ok {
        return Err(PermissionError::WrongKind {
            path: path.to_path_buf(),
            expected,
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & FORBIDDEN != 0 {
        return Err(PermissionError::TooOpen {
            path: path.to_path_buf(),
            mode,
            fix,
        });
    }
    Ok(())
}

/// Sets SQLite's companion files (`-wal`, `-shm`, `-journal`) of `db` to `0600` where they
/// exist. SQLite copies the database's mode onto them, so this only matters if someone
/// loosened them by hand; it is cheap insurance.
pub(super) fn tighten_companions(db: &Path) -> Result<(), PermissionError> {
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        let path = PathBuf::from(name);
        match fs::metadata(&path) {
            Ok(m) if m.permissions().mode() & 0o077 != 0 => {
                fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
                    .map_err(|source| PermissionError::Io { path, source })?;
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(PermissionError::Io { path, source }),
        }
    }
    Ok(())
}
