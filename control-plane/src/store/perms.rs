//! File-permission checks for secrets at rest.
//!
//! The data directory holds CA private keys (plaintext when no KEK is configured), so it and
//! every secret file the control plane reads (database, KEK file, external issuer key) must
//! not be readable or writable by group or others. We check instead of silently `chmod`ing:
//! a too-open file may already have leaked, and an operator should know.
//!
//! One exception, PostgreSQL's rule for its TLS key: a secret *file* owned by root may also
//! be readable by its group (`0440`, `0640`) when we are not root and that group is one of
//! ours (our effective or a supplementary group). Root chose to hand that
//! group read access, and it is how a non-root process is given a secret it must not own:
//! a Kubernetes Secret volume in a pod with an `fsGroup` is `root:<fsGroup>`, mode
//! `defaultMode | 0440` (the kubelet adds group read, kubernetes/kubernetes#57923), and a
//! Debian key in the `ssl-cert` group is `0640 root:ssl-cert`. Group *write* and any access
//! for others are still refused, and so is every group bit when we run as root ourselves
//! (then the group is somebody else).

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Permission bits that must be clear: read or write for group or others.
const FORBIDDEN: u32 = 0o066;
/// The group-read bit, allowed on a root-owned file read by a non-root process.
const GROUP_READ: u32 = 0o040;

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
/// volumes) that group and others can neither read nor write (`0600`, `0400` or stricter),
/// except that a root-owned file may be group-readable when we are not root (see the
/// module documentation).
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
    let euid = nix::unistd::geteuid().as_raw();
    let ours = group_is_ours(meta.gid());
    if mode & forbidden_bits(dir, meta.uid(), euid, ours) != 0 {
        return Err(PermissionError::TooOpen {
            path: path.to_path_buf(),
            mode,
            fix,
        });
    }
    Ok(())
}

/// Whether `gid` is our effective group or one of our supplementary groups (the
/// `fsGroup` case): only then does group read hand the file to us rather than to others.
fn group_is_ours(gid: u32) -> bool {
    let gid = nix::unistd::Gid::from_raw(gid);
    gid == nix::unistd::getegid() || nix::unistd::getgroups().is_ok_and(|g| g.contains(&gid))
}

/// The permission bits that must be clear on a secret file or directory owned by
/// `owner`, checked by a process whose effective uid is `euid`; `group_ours` says whether
/// the file's group is one of the process's groups.
fn forbidden_bits(dir: bool, owner: u32, euid: u32, group_ours: bool) -> u32 {
    if !dir && owner == 0 && euid != 0 && group_ours {
        FORBIDDEN & !GROUP_READ
    } else {
        FORBIDDEN
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `mode` passes for a file or directory owned by `owner`, read by `euid`.
    fn ok(dir: bool, mode: u32, owner: u32, euid: u32) -> bool {
        mode & forbidden_bits(dir, owner, euid, true) == 0
    }

    #[test]
    fn group_read_is_refused_when_the_group_is_not_ours() {
        // root:users 0640: every member of `users` could read the key.
        assert_eq!(0o640 & forbidden_bits(false, 0, 65532, false), 0o040);
        assert_eq!(0o440 & forbidden_bits(false, 0, 65532, true), 0);
    }

    #[test]
    fn own_files_must_be_private() {
        for mode in [0o600, 0o400, 0o700] {
            assert!(ok(false, mode, 65532, 65532), "{mode:o}");
        }
        for mode in [0o640, 0o440, 0o660, 0o604, 0o644, 0o606] {
            assert!(!ok(false, mode, 65532, 65532), "{mode:o}");
        }
    }

    #[test]
    fn root_owned_files_may_be_group_readable_for_a_non_root_reader() {
        // A Kubernetes Secret volume with fsGroup: defaultMode 0400 arrives as 0440.
        for mode in [0o440, 0o640, 0o400, 0o600] {
            assert!(ok(false, mode, 0, 65532), "{mode:o}");
        }
        // Group write and any access for others stay refused.
        for mode in [0o460, 0o660, 0o444, 0o442, 0o404, 0o644] {
            assert!(!ok(false, mode, 0, 65532), "{mode:o}");
        }
    }

    #[test]
    fn root_readers_and_directories_get_no_exception() {
        assert!(!ok(false, 0o440, 0, 0));
        assert!(!ok(false, 0o640, 0, 0));
        assert!(ok(false, 0o600, 0, 0));
        assert!(!ok(true, 0o750, 0, 65532));
        assert!(!ok(true, 0o2750, 0, 65532));
        assert!(ok(true, 0o2700, 65532, 65532));
    }
}
