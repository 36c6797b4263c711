//! The control plane's files as the kubelet lays them out for deploy/kubernetes: the
//! real binary, run as uid/gid 65532 (the Deployment's runAsUser/runAsGroup) with
//! `setpriv`, on the ownership and modes the kubelet produces for a pod with
//! `fsGroup: 65532` and `fsGroupChangePolicy: OnRootMismatch`:
//!
//! * the state volume's root after the first mount: `root:65532`, mode `2775` (setgid,
//!   group rwx);
//! * the KEK Secret volume: file `root:65532`, mode `0440` (`defaultMode: 0400` plus the
//!   group read the kubelet adds for fsGroup, kubernetes/kubernetes#57923).
//!
//! No Kubernetes here: the modes come from the kubelet's documented behaviour
//! (`SetVolumeOwnership`: files `|0440` read-only / `|0660`, directories also setgid and
//! `|0110`). Needs root (to create root-owned files and drop to 65532).

use std::io::Read;
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ferrule_tests::bin_path;
use ferrule_tests::process::{free_port, wait_for};

const UID: u32 = 65532;

/// The pod's file system: state volume root, data dir inside it, KEK file.
struct Layout {
    _dir: tempfile::TempDir,
    state: PathBuf,
    kek: PathBuf,
}

impl Layout {
    fn data_dir(&self) -> PathBuf {
        self.state.join("data")
    }
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A fresh layout with the KEK file at `kek_mode`, owned `root:<kek_gid>`.
fn layout(kek_mode: u32, kek_gid: u32) -> Layout {
    let dir = tempfile::tempdir().unwrap();
    // The process runs as 65532: let it traverse the temp dir.
    chmod(dir.path(), 0o755);
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    chown(&state, 0, UID);
    chmod(&state, 0o2775);
    let secret = dir.path().join("kek-volume");
    std::fs::create_dir(&secret).unwrap();
    chown(&secret, 0, UID);
    chmod(&secret, 0o2755);
    let kek = secret.join("kek");
    std::fs::write(&kek, "ab".repeat(32)).unwrap();
    chown(&kek, 0, kek_gid);
    chmod(&kek, kek_mode);
    Layout {
        _dir: dir,
        state,
        kek,
    }
}

/// The control plane as the Deployment runs it (flags from deploy/kubernetes), as
/// 65532:65532 with no supplementary groups. Killed on drop.
struct Cp(Child);

impl Drop for Cp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(l: &Layout, listen: u16) -> Cp {
    let child = Command::new("setpriv")
        .arg(format!("--reuid={UID}"))
        .arg(format!("--regid={UID}"))
        .arg("--clear-groups")
        .arg(bin_path("ferrule-control-plane"))
        .arg(format!("--data-dir={}", l.data_dir().display()))
        .arg(format!("--kek-file={}", l.kek.display()))
        .arg("--trust-domain=cluster.local")
        .arg(format!("--listen=127.0.0.1:{listen}"))
        .arg(format!("--metrics-listen=127.0.0.1:{}", free_port()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    Cp(child)
}

/// Starts the control plane and waits until its identity API accepts connections (the
/// store and the CA are open by then); stops it again. On failure, its stderr.
fn starts(l: &Layout) -> Result<(), String> {
    let port = free_port();
    let mut cp = spawn(l, port);
    let up = wait_for(Duration::from_secs(20), || {
        if let Ok(Some(_)) = cp.0.try_wait() {
            return Some(false);
        }
        TcpStream::connect(("127.0.0.1", port)).ok().map(|_| true)
    });
    if up == Some(true) {
        return Ok(());
    }
    let _ = cp.0.kill();
    let mut stderr = String::new();
    if let Some(mut e) = cp.0.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    Err(stderr)
}

/// Why these tests cannot run here, if they cannot.
fn skip_reason() -> Option<&'static str> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (root-owned files, setpriv to uid 65532)");
    }
    // A missing setpriv fails the test unless missing tools are skipped.
    if ferrule_tests::tools::system_tool("setpriv", "util-linux").is_none() {
        return Some("needs setpriv (util-linux)");
    }
    None
}

#[test]
fn starts_on_the_kubelet_layout_and_again_after_a_restart() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let l = layout(0o440, UID);
    starts(&l).unwrap();
    // The control plane created its data directory itself: ours, no group or other
    // access (the setgid bit is inherited from the volume root and harmless).
    let meta = std::fs::metadata(l.data_dir()).unwrap();
    assert_eq!(meta.uid(), UID);
    assert_eq!(meta.mode() & 0o777, 0o700, "{:o}", meta.mode());
    // A pod restart with OnRootMismatch changes nothing on the volume: the CA keys,
    // sealed under the KEK, open again.
    starts(&l).unwrap();
}

#[test]
fn kek_file_modes_the_kubelet_must_not_produce_are_refused() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    // Group-writable, or readable by others: refused, naming the file.
    for mode in [0o460, 0o444] {
        let l = layout(mode, UID);
        let err = starts(&l).unwrap_err();
        assert!(err.contains("key-encryption key"), "{mode:o}: {err}");
        assert!(err.contains(&format!("{mode:04o}")), "{mode:o}: {err}");
    }
    // Without fsGroup the Secret is 0400 root:root: unreadable for 65532, a clear error
    // rather than a CA without its key.
    let l = layout(0o400, 0);
    let err = starts(&l).unwrap_err();
    assert!(err.contains("key-encryption key"), "{err}");
}

#[test]
fn a_recursive_fs_group_walk_would_be_refused() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    // Why the Deployment sets fsGroupChangePolicy: OnRootMismatch. Without it the
    // kubelet adds group read/write to every file on each mount; the control plane
    // then refuses its own database rather than run with exposed key material.
    let l = layout(0o440, UID);
    starts(&l).unwrap();
    let db = l.data_dir().join("ferrule.db");
    chown(&db, UID, UID);
    chmod(&db, 0o660);
    let err = starts(&l).unwrap_err();
    assert!(err.contains("ferrule.db"), "{err}");
}
