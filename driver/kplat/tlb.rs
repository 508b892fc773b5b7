// SPDX-License-Identifier: GPL-2.0
//! The software device's TLBs: the shared `crate::devtlb::DevTlb` (the code the model checks)
//! over kernel spinlocks, one execution unit per possible CPU up to `MAX_UNITS`. A device
//! access runs on the unit of the CPU it starts on, so device threads on different CPUs do
//! not wait for each other; a flush takes each unit's spinlock in turn and never sleeps, so
//! even the OOM reaper's non-blockable callback can flush.

use super::KLocks;
use crate::devtlb::{Cursor, DevTlb, MAX_ENTRIES};
use crate::ffi;
use crate::pgtable::Errno;

/// Entries of each unit's TLB.
pub const TLB_ENTRIES: usize = MAX_ENTRIES;

/// The device TLBs.
pub type KTlb = DevTlb<KLocks>;

/// One device access in progress (see `crate::devtlb::Cursor`).
pub type TlbCursor<'a> = Cursor<'a, KLocks>;

/// A device with one TLB unit per possible CPU (up to `MAX_UNITS`).
pub fn new_tlb() -> Result<KTlb, Errno> {
    // SAFETY: no preconditions.
    let cpus = unsafe { ffi::svm_nr_cpu_ids() } as usize;
    DevTlb::new(cpus, TLB_ENTRIES, false)
}

/// The unit for an access starting now: this CPU's. Only a hint (the caller may migrate
/// right after): correctness rests on the unit's lock, not on which unit is used.
pub fn this_unit() -> usize {
    // SAFETY: no preconditions.
    unsafe { ffi::svm_this_cpu() as usize }
}
