//! Test keys and tokens. Tokens are assembled and signed here with aws-lc-rs directly
//! (not with the `jsonwebtoken` crate the verifier uses), the way the API server's
//! go-jose signer lays them out: header `{"alg","kid"}`, claims as below.

use std::time::{Duration, SystemTime};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use spiffe::TrustDomain;
use x509_parser::prelude::FromDer as _;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

/// The issuer of a kubeadm cluster.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// Our audience.
pub const AUD: &str = "ferrule";

/// The trust domain of the tests.
pub fn td() -> TrustDomain {
    TrustDomain::new("example.org").unwrap()
}

/// A fixed "now" for claim checks (2027-01-15T08:00:00Z).
pub fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(NOW as u64)
}

/// [`now`] in Unix seconds.
pub const NOW: i64 = 1_800_000_000;

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

enum Key {
    Rsa(aws_lc_rs::rsa::KeyPair),
    Ec(EcdsaKeyPair),
}

/// A signing key of a simulated cluster.
pub struct TestKey {
    key: Key,
    /// Its key id, computed like the API server's: base64url(SHA-256(SPKI DER)).
    pub kid: String,
}

impl TestKey {
    /// An RSA-2048 key (kubeadm's default for service-account signing), RS256.
    pub fn rsa() -> Self {
        Self::new(Key::Rsa(
            aws_lc_rs::rsa::KeyPair::generate(KeySize::Rsa2048).unwrap(),
        ))
    }

    /// An EC P-256 key, ES256.
    pub fn ec() -> Self {
        Self::new(Key::Ec(
            EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap(),
        ))
    }

    fn new(key: Key) -> Self {
        let mut k = Self {
            key,
            kid: String::new(),
        };
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &k.spki_der());
        k.kid = b64(digest.as_ref());
        k
    }

    /// The JWS algorithm this key signs with.
    pub fn alg(&self) -> &'static str {
        match self.key {
            Key::Rsa(_) => "RS256",
            Key::Ec(_) => "ES256",
        }
    }

    /// DER SubjectPublicKeyInfo of the public key.
    pub fn spki_der(&self) -> Vec<u8> {
        match &self.key {
            Key::Rsa(k) => k.public_key().as_der().unwrap().as_ref().to_vec(),
            Key::Ec(k) => k.public_key().as_der().unwrap().as_ref().to_vec(),
        }
    }

    /// The key as `/openid/v1/jwks` publishes it.
    pub fn jwk(&self) -> Value {
        let der = self.spki_der();
        let (_, spki) = SubjectPublicKeyInfo::from_der(&der).unwrap();
        match spki.parsed().unwrap() {
            PublicKey::RSA(rsa) => json!({
                "use": "sig", "kty": "RSA", "kid": self.kid, "alg": "RS256",
                "n": b64(strip_zeros(rsa.modulus)), "e": b64(strip_zeros(rsa.exponent)),
            }),
            PublicKey::EC(point) => {
                let p = point.data();
                assert_eq!(p.len(), 65, "uncompressed P-256 point");
                json!({
                    "use": "sig", "kty": "EC", "crv": "P-256", "kid": self.kid, "alg": "ES256",
                    "x": b64(&p[1..33]), "y": b64(&p[33..]),
                })
            }
            other => panic!("unexpected key {other:?}"),
        }
    }

    /// Signs `msg` with this key's algorithm (JWS encoding of the signature).
    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match &self.key {
            Key::Rsa(k) => {
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, &rng, msg, &mut sig)
                    .unwrap();
                sig
            }
            Key::Ec(k) => k.sign(&rng, msg).unwrap().as_ref().to_vec(),
        }
    }

    /// A token as the API server would issue it with this key.
    pub fn token(&self, claims: &Value) -> String {
        self.token_with_header(&json!({"alg": self.alg(), "kid": self.kid}), claims)
    }

    /// A token with an arbitrary header, signed by this key.
    pub fn token_with_header(&self, header: &Value, claims: &Value) -> String {
        let input = signing_input(header, claims);
        format!("{input}.{}", b64(&self.sign(input.as_bytes())))
    }
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let i = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    &b[i..]
}

/// `base64url(header) . base64url(claims)`.
pub fn signing_input(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        b64(&serde_json::to_vec(header).unwrap()),
        b64(&serde_json::to_vec(claims).unwrap())
    )
}

/// A JWKS document holding `keys`.
pub fn jwks(keys: &[&TestKey]) -> Vec<u8> {
    serde_json::to_vec(&json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()})).unwrap()
}

/// The claims of a projected token for pod `web-5d8f7b9c4-x2x9q` running as `shop/web`,
/// issued at [`NOW`] for an hour, exactly as the API server (1.30+) lays them out.
pub fn claims() -> Value {
    json!({
        "aud": [AUD],
        "exp": NOW + 3600,
        "iat": NOW,
        "iss": ISSUER,
        "jti": "3c4f8a52-7d64-4d3e-9a53-0b8f2f6d7e11",
        "kubernetes.io": {
            "namespace": "shop",
            "node": {"name": "node-a", "uid": "6a1b2c3d-0000-4000-8000-000000000001"},
            "pod": {"name": "web-5d8f7b9c4-x2x9q", "uid": "0f9e8d7c-0000-4000-8000-000000000002"},
            "serviceaccount": {"name": "web", "uid": "1a2b3c4d-0000-4000-8000-000000000003"}
        },
        "nbf": NOW,
        "sub": "system:serviceaccount:shop:web"
    })
}
