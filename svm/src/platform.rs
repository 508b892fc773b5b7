//! What the engine needs from its platform: the kernel services it calls and the types it
//! stores. The kernel module implements these over `hmm_range_fault()`,
//! `mmu_interval_notifier`, `dma_map_page()` and kernel locks (C glue owns the structs); the
//! `model` crate implements them over a faithful userspace simulation of the same semantics.
//!
//! Everything here mirrors a kernel API one to one, with its context rules restated, because
//! the engine's correctness argument rests on exactly those rules.

use super::pgtable::{Errno, LockFamily, PtMem, PteFormat};
use core::ops::Deref;

/// `HMM_PFN_VALID` (6.12 `include/linux/hmm.h`, 64-bit): the pfn is a present page.
pub const HMM_PFN_VALID: u64 = 1 << 63;
/// `HMM_PFN_WRITE`: the CPU may write the page.
pub const HMM_PFN_WRITE: u64 = 1 << 62;
/// `HMM_PFN_ERROR`: the address cannot be accessed (hole, PROT_NONE, VM_IO...).
pub const HMM_PFN_ERROR: u64 = 1 << 61;
/// `HMM_PFN_ORDER_SHIFT`: the order of the CPU mapping (0, or 9 for a PMD-mapped THP).
pub const HMM_PFN_ORDER_SHIFT: u32 = 56;
/// `HMM_PFN_FLAGS`: the flag byte.
pub const HMM_PFN_FLAGS: u64 = 0xff << HMM_PFN_ORDER_SHIFT;
/// `HMM_PFN_REQ_FAULT`: input flag, fault the page in if it is not present.
pub const HMM_PFN_REQ_FAULT: u64 = HMM_PFN_VALID;
/// `HMM_PFN_REQ_WRITE`: input flag, fault it in writable (breaking COW).
pub const HMM_PFN_REQ_WRITE: u64 = HMM_PFN_WRITE;

/// The pfn bits of an hmm pfn (`hmm_pfn_to_page()`'s input).
pub const fn hmm_pfn(v: u64) -> u64 {
    v & !HMM_PFN_FLAGS
}

/// `hmm_pfn_to_map_order()`.
pub const fn hmm_order(v: u64) -> u32 {
    ((v >> HMM_PFN_ORDER_SHIFT) & 0x1f) as u32
}

/// `enum mmu_notifier_event` (6.12 `include/linux/mmu_notifier.h`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Event {
    /// `MMU_NOTIFY_UNMAP`: the range is being unmapped (munmap, mremap source).
    Unmap,
    /// `MMU_NOTIFY_CLEAR`: pages cleared (MADV_DONTNEED, COW break, THP split, swap, reclaim).
    Clear,
    /// `MMU_NOTIFY_PROTECTION_VMA`: mprotect (may remove read access too).
    ProtectionVma,
    /// `MMU_NOTIFY_PROTECTION_PAGE`: write-protect only (fork's COW, `folio_mkclean`).
    ProtectionPage,
    /// `MMU_NOTIFY_SOFT_DIRTY`.
    SoftDirty,
    /// `MMU_NOTIFY_RELEASE`: exit_mmap, `[0, ULONG_MAX)`.
    Release,
    /// `MMU_NOTIFY_MIGRATE`.
    Migrate,
    /// `MMU_NOTIFY_EXCLUSIVE`.
    Exclusive,
}

/// One invalidation callback's arguments (`struct mmu_notifier_range` + `cur_seq`).
#[derive(Clone, Copy, Debug)]
pub struct Invalidation {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// Why.
    pub event: Event,
    /// `mmu_notifier_range_blockable()`: false only for the OOM reaper.
    pub blockable: bool,
    /// The sequence number to hand to `mmu_interval_set_seq()`.
    pub cur_seq: u64,
    /// `range->owner` (0: none): the `pgmap_owner` a `migrate_vma_setup()` passed, or the
    /// owner a `make_device_exclusive_range()` passed. Only an `Event::Migrate` or an
    /// `Event::Exclusive` carries one (the CPU taking an exclusive page back passes none).
    pub owner: u64,
}

/// The callback an interval notifier runs (`mmu_interval_notifier_ops.invalidate`). `cookie`
/// is what was passed to [`Mm::interval_insert`]; `interval` is the notifier being invalidated
/// (the kernel passes the `mni`): the callback may run before `interval_insert` has even
/// returned to the inserter, and must still `set_seq` on it. Returns false only for a
/// non-blockable call it could not serve, having changed nothing.
///
/// # Safety
/// `cookie` must be the cookie registered with this callback, and the registration must not
/// have been removed (`mmu_interval_notifier_remove()` waits for running callbacks).
pub type InvalidateFn<I> = unsafe fn(cookie: *const (), interval: &I, inv: &Invalidation) -> bool;

/// A registered `struct mmu_interval_notifier`.
pub trait Interval: Send + Sync {
    /// `mmu_interval_read_begin()`: may sleep until no invalidation of the mm is running; never
    /// call it holding an engine lock.
    fn read_begin(&self) -> u64;
    /// `mmu_interval_read_retry()`: call under the lock the callback takes for `set_seq`.
    fn read_retry(&self, seq: u64) -> bool;
    /// `mmu_interval_check_retry()`: a lock-free early hint.
    fn check_retry(&self, seq: u64) -> bool;
    /// `mmu_interval_set_seq()`: only from the callback, under the same lock as `read_retry`.
    fn set_seq(&self, cur_seq: u64);
}

/// What a VMA allows (`vm_flags` bits the engine cares about).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Vma {
    /// `vm_start`.
    pub start: u64,
    /// `vm_end`.
    pub end: u64,
    /// `VM_READ`.
    pub read: bool,
    /// `VM_WRITE`.
    pub write: bool,
    /// `VM_IO | VM_PFNMAP`: no `struct page` behind it; hmm refuses it.
    pub io: bool,
}

/// One `hmm_range_fault()` request: `[start, start + 4096 * pfns.len())`, with per-pfn
/// request flags in `pfns` on entry (`default_flags = 0`, `pfn_flags_mask = ~0`) and hmm pfns
/// on return.
pub struct HmmRequest<'a, I> {
    /// `range.notifier`.
    pub notifier: &'a I,
    /// `range.notifier_seq`.
    pub seq: u64,
    /// `range.start`.
    pub start: u64,
    /// `range.hmm_pfns`.
    pub pfns: &'a mut [u64],
    /// `range.dev_private_owner`: device-private pages of this owner come back as their
    /// device pfns (`HMM_PFN_VALID`, and `HMM_PFN_WRITE` if the CPU entry is writable) instead
    /// of being faulted back to system memory (0: none; every device-private page is foreign).
    pub dev_private_owner: u64,
}

/// `MIGRATE_PFN_VALID` (6.12 `include/linux/migrate.h`): the entry holds a pfn.
pub const MIGRATE_PFN_VALID: u64 = 1 << 0;
/// `MIGRATE_PFN_MIGRATE`: the page (or the hole) can be migrated.
pub const MIGRATE_PFN_MIGRATE: u64 = 1 << 1;
/// `MIGRATE_PFN_WRITE`: the CPU mapped the page writable.
pub const MIGRATE_PFN_WRITE: u64 = 1 << 3;
/// `MIGRATE_PFN_SHIFT`.
pub const MIGRATE_PFN_SHIFT: u32 = 6;

/// `migrate_pfn()`.
pub const fn migrate_pfn(pfn: u64) -> u64 {
    (pfn << MIGRATE_PFN_SHIFT) | MIGRATE_PFN_VALID
}

/// `migrate_pfn_to_page()`'s pfn; `None` without `MIGRATE_PFN_VALID`.
pub const fn migrate_pfn_pfn(v: u64) -> Option<u64> {
    if v & MIGRATE_PFN_VALID != 0 {
        Some(v >> MIGRATE_PFN_SHIFT)
    } else {
        None
    }
}

/// Which pages a migration collects (`MIGRATE_VMA_SELECT_*`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Select {
    /// `MIGRATE_VMA_SELECT_SYSTEM`: system pages and holes (to device memory).
    System,
    /// `MIGRATE_VMA_SELECT_DEVICE_PRIVATE`: device-private pages of `owner` (to system memory).
    DevicePrivate,
}

/// One `struct migrate_vma`: `[start, start + 4096 * src.len())` of one VMA. `setup` fills
/// `src` (`MIGRATE_PFN_MIGRATE` on what it collected: the CPU maps a migration entry there
/// until `finalize`); the caller fills `dst` for the entries it migrates (`migrate_pfn()` of a
/// locked page it allocated and copied into, else 0), then calls `pages` and `finalize`.
pub struct MigrateReq<'a> {
    /// `args->start`.
    pub start: u64,
    /// `args->src`.
    pub src: &'a mut [u64],
    /// `args->dst`.
    pub dst: &'a mut [u64],
    /// `args->flags`.
    pub select: Select,
    /// `args->pgmap_owner`: passed to the `MMU_NOTIFY_MIGRATE` callbacks, and the owner of the
    /// device-private pages `Select::DevicePrivate` collects.
    pub owner: u64,
    /// `args->fault_page`: in `migrate_to_ram`, the pfn of the page the CPU fault holds locked
    /// and referenced (0: none).
    pub fault_page: u64,
}

/// The process address space a context is bound to (`struct mm_struct`, held by `mmgrab`).
pub trait Mm: Send + Sync {
    /// An interval notifier registration.
    type Interval: Interval;
    /// `mmap_read_lock` held, plus the `mmget_not_zero()` reference taken to hold it.
    type ReadGuard<'a>
    where
        Self: 'a;

    /// `mmu_interval_notifier_insert()`: may sleep and takes `mmap_lock` itself, so call it
    /// holding neither `mmap_lock` nor any engine lock. The platform takes `mmget_not_zero()`
    /// around it and returns `ESRCH` once the mm is gone (the kernel would WARN and return
    /// `-EINVAL` for an insert into an exited mm). Inserting during a running
    /// invalidation is deferred by the core; the seq it starts with forces a retry.
    fn interval_insert(
        &self,
        start: u64,
        len: u64,
        cookie: *const (),
        ops: InvalidateFn<Self::Interval>,
    ) -> Result<Self::Interval, Errno>;

    /// `mmu_interval_notifier_remove()`: may sleep; waits for a running callback of this
    /// notifier. After it returns the callback will not run again. Never call it from a
    /// callback or under an engine lock.
    fn interval_remove(&self, interval: &Self::Interval);

    /// `mmget_not_zero()` + `mmap_read_lock_killable()`: `ESRCH` if the mm is gone, `EINTR`
    /// on a fatal signal. A platform whose caller may drop the last reference from a worker
    /// releases it with `mmput_async()`.
    fn mmap_read(&self) -> Result<Self::ReadGuard<'_>, Errno>;

    /// `vma_lookup()` under the read lock.
    fn vma(&self, guard: &Self::ReadGuard<'_>, va: u64) -> Option<Vma>;

    /// `hmm_range_fault()` under the read lock: `EBUSY` when the notifier's seq moved (restart
    /// from `read_begin`), `EFAULT` when a page that had `HMM_PFN_REQ_FAULT` cannot be
    /// faulted, `EPERM` per hmm for a write request to a read-only mapping of a non-writable
    /// VMA. Pages without request flags that are absent come back as 0 or `HMM_PFN_ERROR`.
    fn hmm_range_fault(
        &self,
        guard: &mut Self::ReadGuard<'_>,
        req: &mut HmmRequest<'_, Self::Interval>,
    ) -> Result<(), Errno>;

    /// `migrate_vma_setup()`, the caller holding the read lock (a guard of
    /// [`Mm::mmap_read`], or the page fault's own in `migrate_to_ram`): collects and unmaps
    /// what can migrate, under an `MMU_NOTIFY_MIGRATE` invalidation carrying `req.owner`.
    /// Returns how many entries it collected (`cpages`); whatever it returns, a successful
    /// setup is followed by `migrate_pages` and `migrate_finalize` (a platform that drops a
    /// collected entry from the migration, as the kernel's keeps KSM pages, still needs
    /// `finalize` to put it back). `EINVAL` for a span that is not in one anonymous VMA;
    /// `EOPNOTSUPP` on a platform without device memory.
    fn migrate_setup(&self, req: &mut MigrateReq<'_>) -> Result<usize, Errno> {
        let _ = req;
        Err(Errno::EOPNOTSUPP)
    }

    /// `migrate_vma_pages()`: moves each collected entry that has a `dst` to it; clears
    /// `MIGRATE_PFN_MIGRATE` on those that could not move.
    fn migrate_pages(&self, req: &mut MigrateReq<'_>) {
        let _ = req;
    }

    /// `migrate_vma_finalize()`: the CPU maps the new pages where they moved and the old ones
    /// elsewhere; frees the pages no longer used (the old ones, unused `dst` pages).
    fn migrate_finalize(&self, req: &mut MigrateReq<'_>) {
        let _ = req;
    }

    /// `make_device_exclusive_range()` over `[start, start + 4096 * pages.len())` under the
    /// read lock: faults each page in for writing (`get_user_pages_remote()`, splitting a
    /// huge PMD) and replaces every CPU mapping of it with a device-exclusive entry, under an
    /// `MMU_NOTIFY_EXCLUSIVE` invalidation carrying `owner`. `pages[i]` is the pfn handed over,
    /// locked and referenced, or 0 where that failed (the page is locked by someone else, or
    /// mapped elsewhere too). Returns how many pages it looked at; a CPU access to a handed-over
    /// page waits for [`Mm::release_exclusive`], then takes the page back under an
    /// `MMU_NOTIFY_EXCLUSIVE` with no owner. A THP its PMD still maps is split first (under
    /// an invalidation), and nothing is handed over in that call. `EFAULT` if a page cannot be
    /// faulted in; `EPERM` for a mapping that is not private (only anonymous pages can be
    /// handed over); `EBUSY` for a page of a large folio PTEs map (the pages already handed
    /// over are in `pages`, to release); `EOPNOTSUPP` on a platform without it.
    fn make_exclusive(
        &self,
        guard: &mut Self::ReadGuard<'_>,
        start: u64,
        pages: &mut [u64],
        owner: u64,
    ) -> Result<usize, Errno> {
        let _ = (guard, start, pages, owner);
        Err(Errno::EOPNOTSUPP)
    }

    /// Unlocks and puts every page `make_exclusive` handed over (the non-zero pfns of
    /// `pages`); from then on a CPU access may take them back.
    fn release_exclusive(&self, pages: &[u64]) {
        let _ = pages;
    }
}

/// The device's own memory, as `MEMORY_DEVICE_PRIVATE` pages of one `dev_pagemap`
/// (`memremap_pages()`): the CPU cannot reach them, so the CPU page table holds a
/// device-private entry where one is mapped, and a CPU access calls `migrate_to_ram`.
pub trait Devmem: Send + Sync {
    /// `pgmap->owner` (0: this device has no device memory, and nothing migrates).
    fn owner(&self) -> u64;
    /// The device address of `pfn` if it is one of this device's pages (`page->pgmap` is ours:
    /// the owner alone does not tell, a peer's pages share it), for a local leaf: no DMA
    /// mapping.
    fn local_addr(&self, pfn: u64) -> Option<u64>;
    /// Whether `pfn` is a peer's device page: another device's memory under our owner (a
    /// fast interconnect, as Xe's `drm_pagemap_owner` of peers), which hmm hands back as it
    /// is. The engine maps it through [`Dma::map`] (the platform maps the peer's memory for
    /// P2P); it moves to system memory with our own pages.
    fn peer_page(&self, pfn: u64) -> bool {
        let _ = pfn;
        false
    }
    /// A free device page, locked and referenced for a migration (`zone_device_page_init()`);
    /// `None` when device memory is full.
    fn alloc_device(&self) -> Option<u64>;
    /// A new system page for `va` (`alloc_page_vma(GFP_HIGHUSER_MOVABLE)`), locked.
    fn alloc_system(&self, va: u64) -> Option<u64>;
    /// Returns a `dst` page that did not migrate (unlock + put).
    fn free_unused(&self, pfn: u64);
    /// Marks `pfn` used now, if it is one of our device pages (any other pfn: nothing): the
    /// engine maps it for a device fault on it (not for its fault-around). Eviction
    /// takes the pages used (or moved in) least recently first. The device's accesses through
    /// leaves it already has are not seen: a device with access counters would report them
    /// here too.
    fn touch(&self, pfn: u64) {
        let _ = pfn;
    }
    /// Moves up to `pages` of this device's pages in use back to system memory, least
    /// recently used (`touch`) or moved in first, whatever process maps them (`migrate_device_range()`): every
    /// mapper hears an `MMU_NOTIFY_CLEAR`, so every engine zaps its leaves as for any
    /// invalidation. Pages held by a migration or a fault are skipped. May sleep; call with
    /// no engine lock held. Returns how many pages it freed.
    fn evict(&self, pages: usize) -> usize;
    /// Copies page `src` to page `dst` through the device's copy engine, waiting for it;
    /// `src` `None`: zero-fills `dst` (a hole migrating to the device).
    fn copy(&self, dst: u64, src: Option<u64>) -> Result<(), Errno>;
}

/// A device without device memory.
pub struct NoDevmem;

impl Devmem for NoDevmem {
    fn owner(&self) -> u64 {
        0
    }
    fn local_addr(&self, _pfn: u64) -> Option<u64> {
        None
    }
    fn alloc_device(&self) -> Option<u64> {
        None
    }
    fn alloc_system(&self, _va: u64) -> Option<u64> {
        None
    }
    fn free_unused(&self, _pfn: u64) {}
    fn evict(&self, _pages: usize) -> usize {
        0
    }
    fn copy(&self, _dst: u64, _src: Option<u64>) -> Result<(), Errno> {
        Err(Errno::EOPNOTSUPP)
    }
}

/// DMA mapping against the device (`dma_map_page()` family). A page the CPU may write (hmm
/// reports `HMM_PFN_WRITE`) is mapped `DMA_BIDIRECTIONAL`, even for a read fault, so its leaf
/// can be upgraded to writable without a remap; a page the CPU may only read (the zero page,
/// a KSM page, a COW-shared page) is mapped `DMA_TO_DEVICE`: the device can never write it,
/// and many such mappings of one page are legitimate (DMA-API debugging warns past 7
/// overlapping device-writable ones). Every unmap passes the size and direction of its map.
pub trait Dma: Send + Sync {
    /// `dma_map_page(dev, pfn_to_page(pfn), 0, PAGE_SIZE << order, dir)` with `dir`
    /// `DMA_BIDIRECTIONAL` if `write`, else `DMA_TO_DEVICE`; must not sleep (called under the
    /// range lock). `ENOMEM` on `dma_mapping_error()`.
    fn map(&self, pfn: u64, order: u32, write: bool) -> Result<u64, Errno>;
    /// `dma_unmap_page(dev, addr, PAGE_SIZE << order, dir)`, as mapped.
    fn unmap(&self, addr: u64, pfn: u64, order: u32, write: bool);
    /// `set_page_dirty()` of the (head) page: the device may have written it.
    fn set_dirty(&self, pfn: u64);
}

/// The device's translation caches.
pub trait DeviceTlb: Send + Sync {
    /// Invalidates TLB and page-walk-cache entries for `[start, end)` and waits until the
    /// device can no longer use them, in-flight walks included. Must not wait on the fault
    /// worker or on any job that can block on a fault.
    fn flush(&self, start: u64, end: u64);
    /// Whether [`DeviceTlb::flush`] may sleep (then a non-blockable invalidation that needs a
    /// flush is refused).
    fn flush_may_sleep(&self) -> bool;
}

/// A reference-counted pointer (`kernel::sync::Arc`, `std::sync::Arc`, `loom::sync::Arc`).
pub trait SharedPtr<T>: Clone + Deref<Target = T> + Send + Sync {
    /// Allocates.
    fn new(v: T) -> Result<Self, Errno>;
    /// Allocates and builds the value in place, for a value holding locks (which never move):
    /// `init` writes a valid `T` at the pointer, or fails having initialised nothing. A
    /// platform whose locks may move may build it elsewhere and move it in.
    fn new_init(init: impl FnOnce(*mut T) -> Result<(), Errno>) -> Result<Self, Errno>;
    /// Whether both point to the same allocation.
    fn ptr_eq(a: &Self, b: &Self) -> bool;
}

/// An ordered map from range index to range, for lookup on faults and walks by GC/teardown.
/// Lookups must not block behind anything slower than another lookup (kernel: xarray).
pub trait RangeMap<V>: Send + Sync + Sized {
    /// An empty map.
    fn new() -> Result<Self, Errno>;
    /// The value at `key`.
    fn get(&self, key: u64) -> Option<V>;
    /// Inserts `v` at `key` unless occupied; on conflict returns the present value.
    fn insert(&self, key: u64, v: V) -> Result<Result<(), V>, Errno>;
    /// Removes the value at `key` if `is_it` says it is the expected one.
    fn remove_if(&self, key: u64, is_it: impl FnOnce(&V) -> bool) -> Option<V>;
    /// The first entry with key `>= key`.
    fn next_from(&self, key: u64) -> Option<(u64, V)>;
}

/// A platform: the types and services above, bundled.
pub trait Platform: Send + Sync + Sized + 'static {
    /// The device PTE format.
    type Fmt: PteFormat;
    /// Page-table memory.
    type Mem: PtMem;
    /// Locks (the range lock: a mutex in the kernel).
    type Locks: LockFamily;
    /// Reference counting.
    type Arc<T: Send + Sync + 'static>: SharedPtr<T>;
    /// The range index.
    type Map<V: Clone + Send + Sync + 'static>: RangeMap<V>;
    /// The bound mm.
    type Mm: Mm;
    /// DMA.
    type Dma: Dma;
    /// The device TLB.
    type Tlb: DeviceTlb;
    /// Device memory ([`NoDevmem`] for a device without).
    type Devmem: Devmem;

    /// A monotonic clock in ns (`ktime_get_ns()`), for the retry budget.
    fn now_ns(&self) -> u64;
    /// Lets others run between retries (`cond_resched()`).
    fn relax(&self);
    /// The calling task (`current`), to tell an engine's own migration from anyone else's in
    /// the notifier callback it runs.
    fn task(&self) -> u64;
    /// Reports a broken engine invariant that the engine survived (kernel: `WARN_ONCE`-style
    /// log line). Counted in [`super::stats::Stats::accounting_errors`] as well.
    fn warn(&self, what: &str) {
        let _ = what;
    }
    /// Whether trace events are wanted now (kernel: an `svm` tracepoint is enabled). Cheap:
    /// asked once per fault.
    fn tracing(&self) -> bool {
        false
    }
    /// Reports an event ([`super::trace::Trace`]); called only after [`Platform::tracing`]
    /// said yes, possibly under a range lock, so it must not sleep or take engine locks.
    fn trace(&self, ev: &super::trace::Trace) {
        let _ = ev;
    }
}
