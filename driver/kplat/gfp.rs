// SPDX-License-Identifier: GPL-2.0
//! Allocation flags, memory-cgroup scopes and the module-wide leak counters.

use crate::ffi;
use core::ffi::c_void;
use core::sync::atomic::AtomicI64;
use kernel::alloc::Flags;

/// The raw `gfp_t` of [`GFP`]: `GFP_KERNEL_ACCOUNT | __GFP_RETRY_MAYFAIL | __GFP_NOWARN`,
/// the flags of the glue's `SVM_GFP` (module init checks that the two agree).
pub const GFP_RAW: u32 = kernel::bindings::GFP_KERNEL_ACCOUNT
    | kernel::bindings::__GFP_NOWARN
    | (1u32 << kernel::bindings::___GFP_RETRY_MAYFAIL_BIT);

/// The flags of every allocation the driver makes for a context (the engine's ranges and
/// index nodes through [`KArc`] and [`KMap`], the driver's own per-file and per-job memory;
/// the glue allocates its locks, notifiers, page-table pages and work items with the same):
/// charged to the memory cgroup of the task, or of the bound mm inside a [`MemcgScope`];
/// at the cgroup's limit, or when the system is out of memory, `ENOMEM` for the caller rather
/// than the OOM killer run from a device fault; no allocation-failure splat.
pub const GFP: Flags = gfp_raw(GFP_RAW);

/// `GFP_NOWAIT | __GFP_ACCOUNT | __GFP_NOWARN`: for what must be allocated under a range
/// lock (the DMA cache's entries), where nothing may wait for reclaim; charged like [`GFP`]
/// (a memcg at its limit fails it at once).
pub const GFP_NOWAIT_ACCOUNT: Flags = gfp_raw(
    kernel::bindings::GFP_NOWAIT
        | kernel::bindings::__GFP_NOWARN
        | (1u32 << kernel::bindings::___GFP_ACCOUNT_BIT),
);

/// `Flags` from raw `gfp_t` bits. 6.12's `kernel::alloc::flags` has neither
/// `__GFP_RETRY_MAYFAIL` nor `__GFP_ACCOUNT` alone, and `Flags` no constructor from raw bits
/// (nor `const` operators), hence the transmute.
const fn gfp_raw(raw: u32) -> Flags {
    const _: () = assert!(core::mem::size_of::<Flags>() == core::mem::size_of::<u32>());
    // SAFETY: `Flags` is a struct whose only field is the raw `u32` flags, and it is no
    // larger than that field (asserted above), so the field is all of its bytes and every
    // `u32` is a valid `Flags` standing for those raw bits.
    unsafe { core::mem::transmute::<u32, Flags>(raw) }
}

/// While it lives, the current task's accounted allocations ([`GFP`]) are charged to the
/// memory cgroup of a bound mm: the work items (fault worker, GC) run as kworkers, whose own
/// cgroup is the root. Made by [`KMm::charge_scope`]; not `Send` (the scope is the task's),
/// and scopes end in the reverse order of their making (they are guards on the stack).
pub struct MemcgScope {
    pub(super) memcg: *mut c_void,
    pub(super) old: *mut c_void,
}

impl Drop for MemcgScope {
    fn drop(&mut self) {
        // SAFETY: the values `svm_memcg_enter` returned, restored and released once.
        unsafe { ffi::svm_memcg_exit(self.memcg, self.old) }
    }
}

/// Page-table pages currently allocated, by all contexts (checked at module exit).
pub static TABLES_LIVE: AtomicI64 = AtomicI64::new(0);
/// DMA mappings currently held, by all contexts (checked at module exit).
pub static DMA_LIVE: AtomicI64 = AtomicI64::new(0);
