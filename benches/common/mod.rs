//! Helpers for the benches.

pub mod peer_adapters;
