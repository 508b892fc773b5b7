// SPDX-License-Identifier: GPL-2.0
//! The software device's TLBs: the shared `crate::devtlb::DevTlb` (the code the model checks)
//! over kernel spinlocks, one execution unit per possible CPU up to `MAX_UNITS`. A device
//! access runs on the unit of the CPU it starts on, so device threads on different CPUs do
//! not wait for each other; a flush takes each unit's spinlock in turn and never sleeps, so
//! even the OOM reaper's non-blockable callback can flush.

use super::{KLocks, GFP};
use crate::devtlb::{Cursor, DevTlb, MAX_ENTRIES};
use crate::ffi;
use crate::pgtable::Errno;
use crate::platform::DeviceTlb;
use core::ops::Deref;
use kernel::prelude::*;

/// Entries of each unit's TLB.
pub const TLB_ENTRIES: usize = MAX_ENTRIES;

/// The device TLBs, in their own allocation: a few KiB, built in place (never on a stack).
pub struct KTlb(KBox<DevTlb<KLocks>>);

/// One device access in progress (see `crate::devtlb::Cursor`).
pub type TlbCursor<'a> = Cursor<'a, KLocks>;

impl KTlb {
    /// A device with one TLB unit per possible CPU (up to `MAX_UNITS`). May sleep.
    pub fn new() -> Result<Self, Errno> {
        // SAFETY: no preconditions.
        let cpus = unsafe { ffi::svm_nr_cpu_ids() } as usize;
        let mut b = KBox::<DevTlb<KLocks>>::new_uninit(GFP).map_err(|_| Errno::ENOMEM)?;
        DevTlb::init(&mut b, cpus, TLB_ENTRIES, false)?;
        // SAFETY: `init` succeeded, so the allocation holds a valid `DevTlb`.
        Ok(KTlb(unsafe { b.assume_init() }))
    }
}

impl Deref for KTlb {
    type Target = DevTlb<KLocks>;
    fn deref(&self) -> &DevTlb<KLocks> {
        &self.0
    }
}

impl DeviceTlb for KTlb {
    fn flush(&self, start: u64, end: u64) {
        self.0.flush(start, end)
    }

    fn flush_may_sleep(&self) -> bool {
        self.0.flush_may_sleep()
    }
}

/// The unit for an access starting now: this CPU's. Only a hint (the caller may migrate
/// right after): correctness rests on the unit's lock, not on which unit is used.
pub fn this_unit() -> usize {
    // SAFETY: no preconditions.
    unsafe { ffi::svm_this_cpu() as usize }
}
