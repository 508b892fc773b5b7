//! Shared test machinery: the fault storm (used by `tests/storm.rs` and the `storm` demo
//! binary), the granularity benchmark (the `bench` binary) and a small deterministic random
//! number generator.

pub mod bench;
pub mod rng;
pub mod storm;
