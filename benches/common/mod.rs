//! Helpers for the benches (each bench uses some of them).
#![allow(dead_code)]

pub mod inline;
pub mod peer_adapters;
