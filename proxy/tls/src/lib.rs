//! Ferrule's TLS settings and SPIFFE peer verification.
