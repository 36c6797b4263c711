use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime};

use spiffe::{SpiffeId, TrustDomain};

use super::*;

fn tempdir() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    chmod(t.path(), 0o700);
    t
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn open_creates_private_dir_and_files() {
    let tmp = tempdir();
    let dir = tmp.path().join("data");
    let store = Store::open(&dir).unwrap();
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(store.path()), 0o600);
    // Force the WAL and shared-memory files into existence, then check them too.
    store
        .ensure_trust_domain(&TrustDomain::new("example.org").unwrap())
        .unwrap();
    for suffix in ["-wal", "-shm"] {
        let p = PathBuf::from(format!("{}{suffix}", store.path().display()));
        assert!(p.exists(), "{} missing", p.display());
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
}

#[test]
fn open_refuses_open_directory_and_database() {
    let tmp = tempdir();
    let dir = tmp.path().join("data");
    fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o755);
    let err = Store::open(&dir).unwrap_err();
    match &err {
        StoreError::Permission(PermissionError::TooOpen { path, mode, .. }) => {
            assert_eq!(path, &dir);
            assert_eq!(*mode, 0o755);
        }
        other => panic!("unexpected {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("0755") && msg.contains(&dir.display().to_string()),
        "{msg}"
    );

    chmod(&dir, 0o700);
    drop(Store::open(&dir).unwrap());
    let db = dir.join(DB_FILE_NAME);
    chmod(&db, 0o644);
    let err = Store::open(&dir).unwrap_err();
    assert!(
        matches!(&err, StoreError::Permission(PermissionError::TooOpen { path, mode: 0o644, .. }) if *path == db),
        "{err:?}"
    );
}

#[test]
fn check_private_file_modes() {
    let tmp = tempdir();
    let f = tmp.path().join("key");
    fs::write(&f, b"x").unwrap();
    for ok in [0o600, 0o400, 0o700] {
        chmod(&f, ok);
        check_private_file(&f).unwrap();
    }
    for bad in [0o644, 0o640, 0o604, 0o620, 0o666] {
        chmod(&f, bad);
        let err = check_private_file(&f).unwrap_err();
        assert!(
            matches!(err, PermissionError::TooOpen { mode, .. } if mode == bad),
            "{bad:o}: {err:?}"
        );
    }
    assert!(matches!(
        check_private_file(&tmp.path().join("missing")),
        Err(PermissionError::Io { .. })
    ));
    assert!(matches!(
        check_private_file(tmp.path()),
        Err(PermissionError::WrongKind { .. })
    ));
}

#[test]
fn schema_is_migrated_once_and_newer_schema_refused() {
    let tmp = tempdir();
    let store = Store::open(tmp.path()).unwrap();
    let v: i64 = store
        .with_conn(|c| Ok::<_, StoreError>(c.query_row("PRAGMA user_version", [], |r| r.get(0))?))
        .unwrap();
    assert_eq!(v, schema::latest());
    drop(store);
    // Reopening applies nothing and keeps data.
    let store = Store::open(tmp.path()).unwrap();
    store
        .with_conn(|c| Ok::<_, StoreError>(c.pragma_update(None, "user_version", 99)?))
        .unwrap();
    drop(store);
    assert!(matches!(
        Store::open(tmp.path()),
        Err(StoreError::SchemaTooNew { found: 99, .. })
    ));
}

#[test]
fn trust_domain_is_pinned() {
    let tmp = tempdir();
    let store = Store::open(tmp.path()).unwrap();
    let a = TrustDomain::new("a.example").unwrap();
    let b = TrustDomain::new("b.example").unwrap();
    store.ensure_trust_domain(&a).unwrap();
    store.ensure_trust_domain(&a).unwrap();
    let err = store.ensure_trust_domain(&b).unwrap_err();
    assert!(
        matches!(err, StoreError::TrustDomainMismatch { ref stored, .. } if stored == "a.example")
    );
}

#[test]
fn bundle_version_only_moves_on_change() {
    let tmp = tempdir();
    let store = Store::open(tmp.path()).unwrap();
    assert_eq!(store.bundle_version().unwrap(), 0);
    let v1 = store.immediate(|tx| publish_bundle(tx, "aa")).unwrap();
    let again = store.immediate(|tx| publish_bundle(tx, "aa")).unwrap();
    let v2 = store.immediate(|tx| publish_bundle(tx, "bb")).unwrap();
    assert_eq!((v1, again, v2), (1, 1, 2));
    drop(store);
    assert_eq!(
        Store::open(tmp.path()).unwrap().bundle_version().unwrap(),
        2
    );
}

fn rec(serial: &str, id: &str, authority: &str, issued: u64, ttl: u64) -> IssuedCertRecord {
    let issued_at = UNIX_EPOCH + Duration::from_secs(1_700_000_000 + issued);
    IssuedCertRecord {
        serial_hex: serial.into(),
        spiffe_id: SpiffeId::new(id).unwrap(),
        authority_id: authority.into(),
        not_before: issued_at - Duration::from_secs(300),
        not_after: issued_at + Duration::from_secs(ttl),
        issued_at,
    }
}

#[test]
fn issued_certificate_records() {
    let tmp = tempdir();
    let store = Store::open(tmp.path()).unwrap();
    let records = [
        rec("01", "spiffe://example.org/a", "aaaa", 0, 3600),
        rec("02", "spiffe://example.org/a", "aaaa", 1800, 3600), // a's latest
        rec("03", "spiffe://example.org/b", "bbbb", 100, 600),   // b's only, expires first
        rec("04", "spiffe://example.org/c", "aaaa", 200, 7200),
    ];
    for r in &records {
        store.record_issued(r).unwrap();
    }
    let latest = store.list_latest_per_identity().unwrap();
    let serials: Vec<_> = latest.iter().map(|r| r.serial_hex.as_str()).collect();
    assert_eq!(serials, ["03", "02", "04"]);
    assert_eq!(latest[1], records[1]);

    let t = |s: u64| UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s);
    assert_eq!(store.count_live("aaaa", t(0)).unwrap(), 3);
    assert_eq!(store.count_live("aaaa", t(3600)).unwrap(), 2);
    assert_eq!(store.count_live("aaaa", t(10_000)).unwrap(), 0);
    assert_eq!(store.count_live("bbbb", t(0)).unwrap(), 1);
    assert_eq!(store.count_live("nope", t(0)).unwrap(), 0);

    assert_eq!(store.prune_issued(t(4000)).unwrap(), 2); // 01 and 03
    assert_eq!(store.list_latest_per_identity().unwrap().len(), 2);
}

#[test]
fn unix_time_round_trip() {
    for secs in [-86_400i64, 0, 1, 1_700_000_000] {
        assert_eq!(to_unix(from_unix(secs)), secs);
    }
    let now = SystemTime::now();
    assert!(now.duration_since(from_unix(to_unix(now))).unwrap() < Duration::from_secs(1));
}
