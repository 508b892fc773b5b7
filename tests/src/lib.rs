//! Shared test machinery: the fault storm (used by `tests/storm.rs` and the `storm` demo
//! binary) and a small deterministic random number generator.

pub mod rng;
pub mod storm;
