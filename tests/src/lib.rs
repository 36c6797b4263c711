//! Test harness: starts the real Ferrule binaries and talks to them.
