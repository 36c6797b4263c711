use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::ca::authority::{KeyRole, open_key};

fn kek_bytes(b: u8) -> Kek {
    Kek::from_bytes([b; 32])
}

/// The issuer key of the only authority, as plaintext PKCS#8.
fn issuer_pkcs8(data: &Path, kek: Option<&Kek>) -> Vec<u8> {
    let rows = open_store(data).with_conn(rows::list).unwrap();
    open_key(&rows[0], KeyRole::Issuer, kek)
        .unwrap()
        .serialized_der()
        .to_vec()
}

#[test]
fn keys_are_encrypted_at_rest_with_a_kek() {
    let tmp = tempdir();
    let data = tmp.path().join("data");
    let ca = internal(&data, Some(kek_bytes(1))).unwrap();
    issue_and_verify(&ca, "/web");
    drop(ca);
    let pkcs8 = issuer_pkcs8(&data, Some(&kek_bytes(1)));
    assert!(pkcs8.len() > 100);
    assert!(
        !contains(&db_bytes(&data), &pkcs8),
        "plaintext key found in the database"
    );
    let rows = open_store(&data).with_conn(rows::list).unwrap();
    assert_eq!(rows[0].key_encryption, "aes-256-gcm");

    // Sanity check of the search: without a KEK the key is in the file.
    let plain = tmp.path().join("plain");
    drop(internal(&plain, None).unwrap());
    assert!(contains(&db_bytes(&plain), &issuer_pkcs8(&plain, None)));
}

#[test]
fn wrong_or_missing_kek_is_a_clear_error() {
    let tmp = tempdir();
    let ca = internal(tmp.path(), Some(kek_bytes(1))).unwrap();
    let authority = ca.status().unwrap()[0].id.clone();
    drop(ca);

    let err = internal(tmp.path(), Some(kek_bytes(2))).unwrap_err();
    assert!(
        matches!(&err, CaError::WrongKek { authority: a } if *a == authority),
        "{err:?}"
    );
    assert!(err.to_string().contains("cannot decrypt"), "{err}");

    let err = internal(tmp.path(), None).unwrap_err();
    assert!(matches!(&err, CaError::KekRequired { .. }), "{err:?}");

    // The right KEK still works.
    let ca = internal(tmp.path(), Some(kek_bytes(1))).unwrap();
    issue_and_verify(&ca, "/web");
}

#[test]
fn plaintext_keys_are_encrypted_when_a_kek_appears() {
    let tmp = tempdir();
    let ca = internal(tmp.path(), None).unwrap();
    let fp = ca.status().unwrap()[0].root_fingerprint.clone();
    let pkcs8 = issuer_pkcs8(tmp.path(), None);
    drop(ca);

    let ca = internal(tmp.path(), Some(kek_bytes(9))).unwrap();
    assert_eq!(ca.status().unwrap()[0].root_fingerprint, fp);
    issue_and_verify(&ca, "/web");
    drop(ca);
    let rows = open_store(tmp.path()).with_conn(rows::list).unwrap();
    assert_eq!(rows[0].key_encryption, "aes-256-gcm");
    assert_eq!(issuer_pkcs8(tmp.path(), Some(&kek_bytes(9))), pkcs8);
    // Now the KEK is required.
    assert!(matches!(
        internal(tmp.path(), None),
        Err(CaError::KekRequired { .. })
    ));
}

#[test]
fn sealed_keys_are_bound_to_their_row_and_role() {
    let kek = kek_bytes(3);
    let sealed = kek.seal(b"secret key", "ferrule-ca-key:v1:aaaa:root");
    assert_eq!(
        kek.open(&sealed, "ferrule-ca-key:v1:aaaa:root").unwrap(),
        b"secret key"
    );
    assert!(kek.open(&sealed, "ferrule-ca-key:v1:aaaa:issuer").is_none());
    assert!(kek.open(&sealed, "ferrule-ca-key:v1:bbbb:root").is_none());
    assert!(
        kek_bytes(4)
            .open(&sealed, "ferrule-ca-key:v1:aaaa:root")
            .is_none()
    );
    assert!(kek.open(&sealed[..10], "x").is_none());
    // Fresh nonce each time.
    assert_ne!(
        sealed,
        kek.seal(b"secret key", "ferrule-ca-key:v1:aaaa:root")
    );
}

#[test]
fn kek_formats_and_file_permissions() {
    let raw = [0xabu8; 32];
    let aad = "t";
    let reference = Kek::from_bytes(raw).seal(b"m", aad);
    let forms: Vec<Vec<u8>> = vec![
        raw.to_vec(),
        hex::encode(raw).into_bytes(),
        format!("{}\n", hex::encode_upper(raw)).into_bytes(),
        base64::engine::general_purpose::STANDARD
            .encode(raw)
            .into_bytes(),
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(raw)
            .into_bytes(),
    ];
    for form in forms {
        let kek = Kek::parse(&form, "test").unwrap();
        assert_eq!(kek.open(&reference, aad).unwrap(), b"m");
    }
    for bad in [
        &b"short"[..],
        &[0u8; 31],
        &[b'a'; 64 + 2],
        b"not base64 at all!!!!",
    ] {
        assert!(matches!(
            Kek::parse(bad, "test"),
            Err(KekError::BadFormat { .. })
        ));
    }
    assert_eq!(format!("{:?}", Kek::from_bytes(raw)), "Kek([redacted])");

    let tmp = tempdir();
    let file = tmp.path().join("kek");
    std::fs::write(&file, hex::encode(raw)).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = Kek::from_file(&file).unwrap_err();
    assert!(matches!(err, KekError::Permission(_)), "{err:?}");
    assert!(err.to_string().contains("0644"), "{err}");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let kek = Kek::from_file(&file).unwrap();
    assert_eq!(kek.open(&reference, aad).unwrap(), b"m");
}
