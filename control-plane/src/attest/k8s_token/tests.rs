//! Tests of service-account token attestation with real JWTs in the exact shape the
//! Kubernetes API server issues projected tokens, signed by keys generated per test.

mod jwks;
mod review;
mod support;
