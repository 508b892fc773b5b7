//! `TableMem`: page-table pages for the engine's device page table (`pgtable::PtMem`).
//!
//! A table is three heap allocations, as in the kernel: its node (`Table`: the lock and where
//! its pages are), its hardware page and its software words' page. A table's "physical
//! address" is its hardware page's pointer value; the node's address sits just after that
//! page, where the kernel keeps it in the page's `struct page` (`page->private`). Freed tables
//! are not returned to the allocator at once: their entries are overwritten with a poison leaf
//! (a valid-looking 2 MiB leaf pointing at [`POISON_DMA`], an address the DMA tracker never
//! hands out) and they wait in a quarantine, like KASAN's. A device walk that still reaches a
//! freed table (freed before the TLB / page-walk-cache flush, I1) therefore translates to the
//! poison address, which the device's per-access check reports, instead of being undefined
//! behaviour in the test process.

use crate::inthash::IntBuild;
use crate::lockdep;
use crate::locks::ModelLock;
use crate::violations::Violations;
use core::ptr::NonNull;
use pgtable::{AuxTable, Errno, HwTable, Perm, PtMem, PteFormat, Table};
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The DMA address every entry of a freed (quarantined) table points to.
pub const POISON_DMA: u64 = 0xde_ad00_0000;

/// Freed tables kept poisoned before their memory is really released.
const QUARANTINE: usize = 1024;

type T = Table<ModelLock<()>>;

/// A hardware page and its `struct page`'s `private` word.
#[repr(C)]
struct HwPage {
    hw: HwTable,
    node: *mut T,
}

struct Inner {
    live: Mutex<HashSet<usize, IntBuild>>,
    quarantine: Mutex<VecDeque<usize>>,
    live_count: AtomicUsize,
    allocs: AtomicU64,
    frees: AtomicU64,
    poison: u64,
    violations: Violations,
    walk_jitter: std::sync::atomic::AtomicBool,
    /// Under loom with walk jitter on: touched by every walk step and every free, so loom
    /// orders each walk step against each free (see [`TableMem::set_walk_jitter`]).
    #[cfg(loom)]
    race: crate::sync::atomic::AtomicUsize,
    #[cfg_attr(loom, allow(dead_code))]
    walks: AtomicU64,
}

/// Page-table memory (cloneable handle; the engine owns one, tests keep another).
#[derive(Clone)]
pub struct TableMem(Arc<Inner>);

impl TableMem {
    /// Memory for tables of format `F`; bad frees are recorded in `violations`.
    pub fn new<F: PteFormat>(violations: Violations) -> Self {
        TableMem(Arc::new(Inner {
            live: Mutex::new(HashSet::default()),
            quarantine: Mutex::new(VecDeque::new()),
            live_count: AtomicUsize::new(0),
            allocs: AtomicU64::new(0),
            frees: AtomicU64::new(0),
            poison: F::leaf(POISON_DMA, Perm::RW, 1),
            violations,
            walk_jitter: std::sync::atomic::AtomicBool::new(false),
            #[cfg(loom)]
            race: crate::sync::atomic::AtomicUsize::new(0),
            walks: AtomicU64::new(0),
        }))
    }

    /// Yield in every eighth walk step ([`PtMem::va`]) before checking the table is still live: a
    /// walk that the protocol does not protect then meets a concurrent free often enough for
    /// the storms to see it. Under loom, every walk step and every free touch one loom atomic
    /// instead, so loom (which cannot otherwise preempt inside a walk) explores a free between
    /// a walk's reading of a link and its following it; off by default, as it multiplies the
    /// interleavings of every walk.
    pub fn set_walk_jitter(&self, on: bool) {
        self.0.walk_jitter.store(on, Ordering::Relaxed);
    }

    /// Tables allocated and not yet freed.
    pub fn live_tables(&self) -> usize {
        self.0.live_count.load(Ordering::Relaxed)
    }

    /// Total allocations and frees so far.
    pub fn totals(&self) -> (u64, u64) {
        (
            self.0.allocs.load(Ordering::Relaxed),
            self.0.frees.load(Ordering::Relaxed),
        )
    }

    /// Bytes one table costs: its hardware page, its software words' page and its node.
    pub const fn table_bytes() -> usize {
        core::mem::size_of::<HwTable>()
            + core::mem::size_of::<AuxTable>()
            + core::mem::size_of::<T>()
    }
}

fn lock<X>(m: &Mutex<X>) -> std::sync::MutexGuard<'_, X> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// # Safety
/// `p` is the node of a table allocated by `TableMem::alloc`, freed, and no longer used.
unsafe fn release(p: usize) {
    // SAFETY: per the caller, the node and its pages were boxed by `alloc` (`hw` is the first
    // field of its `HwPage`).
    unsafe {
        let t = Box::from_raw(p as *mut T);
        let (hw, aux) = (t.hw_page(), t.aux_page());
        drop(t);
        drop(Box::from_raw(hw.as_ptr() as *mut HwPage));
        drop(Box::from_raw(aux.as_ptr()));
    }
}

// SAFETY: tables stay valid until `free` (and longer, in quarantine); `pa` is the hardware
// page's address and `va` reads the node back from beside it.
unsafe impl PtMem for TableMem {
    type Lock = ModelLock<()>;

    fn alloc(&self) -> Result<NonNull<T>, Errno> {
        lockdep::check_alloc("PtMem::alloc");
        // SAFETY: all-zero is a valid `HwPage` (atomics, a null pointer) and `AuxTable`.
        let hw: &mut HwPage = Box::leak(unsafe { Box::new_zeroed().assume_init() });
        // SAFETY: as above.
        let aux: Box<AuxTable> = unsafe { Box::new_zeroed().assume_init() };
        let aux = NonNull::from(Box::leak(aux));
        let slot = Box::into_raw(Box::<T>::new_uninit()).cast::<T>();
        // SAFETY: a fresh box, stable until `free`; both pages are this table's alone until
        // `free`.
        if let Err(e) = unsafe { Table::init(slot, NonNull::from(&mut hw.hw), aux) } {
            // SAFETY: allocated just above, never shared; the node was not initialised.
            unsafe {
                drop(Box::from_raw(slot.cast::<core::mem::MaybeUninit<T>>()));
                drop(Box::from_raw(hw as *mut HwPage));
                drop(Box::from_raw(aux.as_ptr()));
            }
            return Err(e);
        }
        // SAFETY: initialised just above.
        let node: &mut T = unsafe { &mut *slot };
        hw.node = node;
        lock(&self.0.live).insert(&hw.hw as *const HwTable as usize);
        self.0.live_count.fetch_add(1, Ordering::Relaxed);
        self.0.allocs.fetch_add(1, Ordering::Relaxed);
        Ok(NonNull::from(node))
    }

    unsafe fn free(&self, t: NonNull<T>) {
        #[cfg(loom)]
        if self.0.walk_jitter.load(Ordering::Relaxed) {
            self.0.race.fetch_add(1, Ordering::SeqCst);
        }
        // SAFETY: the caller passes a table of ours, still allocated (possibly freed twice,
        // which the live set reports).
        let hw = unsafe { t.as_ref() }.hw_page();
        let p = hw.as_ptr() as usize;
        if !lock(&self.0.live).remove(&p) {
            self.0.violations.record(
                "pgtable",
                format!(
                    "PtMem::free of table {p:#x} that is not live here (double or foreign free)"
                ),
            );
            return;
        }
        self.0.live_count.fetch_sub(1, Ordering::Relaxed);
        self.0.frees.fetch_add(1, Ordering::Relaxed);
        // Poison the hardware entries.
        // SAFETY: the table is live (checked above).
        for e in unsafe { &(*hw.as_ptr()).pte } {
            e.store(self.0.poison, Ordering::Release);
        }
        let old = {
            let mut q = lock(&self.0.quarantine);
            q.push_back(t.as_ptr() as usize);
            if q.len() > QUARANTINE {
                q.pop_front()
            } else {
                None
            }
        };
        if let Some(o) = old {
            // SAFETY: `o` was freed by the engine long ago and has aged out of the quarantine.
            unsafe { release(o) };
        }
    }

    fn pa(&self, t: NonNull<T>) -> u64 {
        // SAFETY: `t` is live (trait contract).
        unsafe { t.as_ref() }.hw_page().as_ptr() as u64
    }

    unsafe fn va(&self, pa: u64) -> NonNull<T> {
        // KASAN's view: a walk that follows a link into a freed table is a use-after-free,
        // whatever it reads there (the poison, or a table already reused). Quarantine keeps
        // the memory valid, so the check can report instead of crashing.
        #[cfg(not(loom))]
        if self.0.walk_jitter.load(Ordering::Relaxed)
            && self.0.walks.fetch_add(1, Ordering::Relaxed) & 7 == 0
        {
            std::thread::yield_now();
        }
        #[cfg(loom)]
        if self.0.walk_jitter.load(Ordering::Relaxed) {
            self.0.race.fetch_add(1, Ordering::SeqCst);
        }
        if !lock(&self.0.live).contains(&(pa as usize)) {
            self.0.violations.record(
                "pgtable",
                format!("walk reached table {pa:#x} after it was freed (use-after-free)"),
            );
        }
        // SAFETY: per the trait contract `pa` is the hardware page of a table not yet freed
        // (and a table freed anyway sits in quarantine, still allocated): the first field of
        // its `HwPage`, whose `node` was set at allocation.
        unsafe { NonNull::new_unchecked((*(pa as *const HwPage)).node) }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        for p in lock(&self.quarantine).drain(..) {
            // SAFETY: quarantined tables were freed by their owner and are unreachable now that
            // the last handle (hence the page table) is gone.
            unsafe { release(p) };
        }
        // Tables still live here were leaked by the owner; keep them allocated (the owner may
        // still be around in a leaked engine), only report.
        let n = lock(&self.live).len();
        if n > 0 && !std::thread::panicking() {
            self.violations
                .record("pgtable", format!("{n} page-table page(s) never freed"));
        }
    }
}
