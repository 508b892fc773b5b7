//! The simulated device's TLBs: the shared `svm::devtlb::DevTlb` (the code the kernel's
//! software device runs) over the model's locks, plus what the model checks around it: a
//! sleeping flush in a non-blockable invalidation, and a count of flushes.

use crate::lockdep;
use crate::locks::ModelLocks;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use svm::devtlb::DevTlb;

pub(crate) struct TlbInner {
    pub(crate) dev: DevTlb<ModelLocks>,
    flushes: AtomicU64,
    /// The unit the next device gets.
    next_unit: AtomicU64,
}

/// The device TLBs (one per execution unit): `svm::platform::DeviceTlb`.
#[derive(Clone)]
pub struct Tlb(pub(crate) Arc<TlbInner>);

impl Tlb {
    /// `units` execution units of `entries` entries each (both clamped to the shared TLB's
    /// bounds); `flush_may_sleep` is what `flush_may_sleep()` reports.
    pub fn new(units: usize, entries: usize, flush_may_sleep: bool) -> Self {
        let dev = DevTlb::new(units, entries, flush_may_sleep)
            .expect("the model's locks do not allocate");
        Tlb(Arc::new(TlbInner {
            dev,
            flushes: AtomicU64::new(0),
            next_unit: AtomicU64::new(0),
        }))
    }

    /// The execution unit for a new device: round robin.
    pub(crate) fn take_unit(&self) -> usize {
        self.0.next_unit.fetch_add(1, Ordering::Relaxed) as usize
    }

    /// Cached entries now, over all units.
    pub fn len(&self) -> usize {
        self.0.dev.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.0.dev.is_empty()
    }

    /// Flushes issued.
    pub fn flushes(&self) -> u64 {
        self.0.flushes.load(Ordering::Relaxed)
    }
}

impl svm::platform::DeviceTlb for Tlb {
    fn flush(&self, start: u64, end: u64) {
        lockdep::check_flush(self.0.dev.flush_may_sleep());
        self.0.flushes.fetch_add(1, Ordering::Relaxed);
        self.0.dev.flush(start, end);
    }

    fn flush_may_sleep(&self) -> bool {
        self.0.dev.flush_may_sleep()
    }
}
