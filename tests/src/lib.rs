//! Shared test machinery: the fault storm (used by `tests/storm.rs` and the `storm` demo
//! binary), the granularity benchmark (the `bench` binary) and a small deterministic random
//! number generator.

pub mod bench;
pub mod rng;
pub mod storm;

use model::World;
use pgtable::PteFormat;

/// Panics unless `w` is at rest and clean (`World::check_quiescent`).
pub fn quiet<F: PteFormat>(w: &World<F>) {
    w.check_quiescent()
        .unwrap_or_else(|e| panic!("not quiescent: {e}"));
}

/// [`quiet`], then the engine's teardown, then [`quiet`] again (nothing left behind).
pub fn done<F: PteFormat>(w: &World<F>) {
    quiet(w);
    w.teardown();
    quiet(w);
}
