//! The engine of one device context bound to one mm: its page table, its ranges, and the
//! services it calls. Fault service lives in `fault.rs`, the notifier callback in
//! `invalidate.rs`, GC and teardown in `gc.rs`.

use super::config::{Config, MAX_WINDOW_PAGES};
use super::pgtable::table::{Census, HUGE_SHIFT};
use super::pgtable::{Errno, Lock, PageTable};
use super::platform::{Mm, Platform, RangeMap, SharedPtr};
use super::range::{InFlight, Range};
use super::serial::Serial;
use super::stats::{Counters, Stats};
use core::sync::atomic::{AtomicUsize, Ordering};

/// In a leaf's software word (`aux`, beside the pfn of its (head) page): the leaf's DMA
/// mapping is `DMA_BIDIRECTIONAL` (the CPU could write the page when it was mapped); without
/// it, `DMA_TO_DEVICE`, and the leaf can only become writable through a new mapping.
pub(crate) const AUX_DMA_WRITE: u64 = 1 << 63;
/// In a leaf's software word: the page is one of the device's own (a local leaf, no DMA
/// mapping to undo). `AUX_DMA_WRITE` then says the CPU entry was writable when it was mapped.
pub(crate) const AUX_LOCAL: u64 = 1 << 62;

/// The pfn of the (head) page behind a leaf, from its software word
/// ([`pgtable::table::Translation::aux`]).
pub const fn leaf_pfn(aux: u64) -> u64 {
    aux & !(AUX_DMA_WRITE | AUX_LOCAL)
}

/// A leaf's software word: its page and the direction of its DMA mapping.
pub(crate) const fn leaf_aux(pfn: u64, dma_write: bool) -> u64 {
    pfn | if dma_write { AUX_DMA_WRITE } else { 0 }
}

/// Kind of device access.
#[derive(Clone, Copy, PartialEq, Eq, Debug, PartialOrd, Ord, Hash)]
pub enum Access {
    /// Read.
    Read,
    /// Write (implies read).
    Write,
}

/// A range as [`Engine::for_each_range_info`] reports it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RangeInfo {
    /// The span `[start, end)`.
    pub start: u64,
    pub end: u64,
    /// Device leaves it maps (4 KiB or 2 MiB each).
    pub mapped: usize,
    /// It owns its span (a fault committed through it).
    pub owner: bool,
    /// Killed by GC or teardown, not yet unpublished.
    pub dead: bool,
    /// An `MMU_NOTIFY_UNMAP` marked it for GC.
    pub gc_pending: bool,
    /// Faults or walks in it now.
    pub inflight: usize,
}

/// One device fault as a hardware fault buffer reports it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct DeviceFault {
    /// Faulting VA (any byte of the page).
    pub va: u64,
    /// Access that missed.
    pub access: Access,
    /// Outcome, filled by [`Engine::fault_batch`].
    pub result: Option<Result<(), Errno>>,
}

impl DeviceFault {
    /// A fault not yet serviced.
    pub const fn new(va: u64, access: Access) -> Self {
        DeviceFault {
            va,
            access,
            result: None,
        }
    }
}

/// Pages one migration step moves (one `migrate_vma_setup()` call).
pub const MIGRATE_CHUNK: usize = 64;

/// Per-worker scratch memory for fault service and migration (5 KiB: too large for a kernel
/// stack frame).
pub struct Scratch {
    pub(crate) pfns: [u64; MAX_WINDOW_PAGES],
    pub(crate) src: [u64; MIGRATE_CHUNK],
    pub(crate) dst: [u64; MIGRATE_CHUNK],
}

impl Scratch {
    /// Empty scratch.
    pub const fn new() -> Self {
        Scratch {
            pfns: [0; MAX_WINDOW_PAGES],
            src: [0; MIGRATE_CHUNK],
            dst: [0; MIGRATE_CHUNK],
        }
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

/// The services an engine is built from.
pub struct Parts<P: Platform> {
    /// The bound mm.
    pub mm: P::Mm,
    /// DMA.
    pub dma: P::Dma,
    /// Device TLB.
    pub tlb: P::Tlb,
    /// Page-table memory.
    pub mem: P::Mem,
    /// Device memory.
    pub devmem: P::Devmem,
}

pub(crate) type RangeRef<P> = <P as Platform>::Arc<Range<P>>;

/// The mirroring engine.
///
/// # Invariants
/// - Every range in `ranges` has its notifier registered and points back to `self`.
/// - `self` does not move once a range exists (it lives in the `P::Arc` that
///   [`Engine::new`] returns), and is torn down before it is dropped.
pub struct Engine<P: Platform> {
    pub(crate) plat: P,
    pub(crate) cfg: Config,
    pub(crate) mm: P::Mm,
    pub(crate) dma: P::Dma,
    pub(crate) tlb: P::Tlb,
    pub(crate) devmem: P::Devmem,
    pub(crate) pt: PageTable<P::Fmt, P::Mem>,
    pub(crate) ranges: P::Map<RangeRef<P>>,
    /// The engine-wide lock of `cfg.lock_scope` (none for the default, per-range scope).
    pub(crate) serial: Serial<P>,
    pub(crate) stats: Counters,
    /// Ranges published in `ranges` now (bounded by `cfg.max_ranges`).
    pub(crate) live: AtomicUsize,
}

impl<P: Platform> Engine<P> {
    /// Creates an engine for the device whose page table lives in `parts.mem`, mirroring
    /// `parts.mm`. `EINVAL` for a bad configuration.
    pub fn new(plat: P, parts: Parts<P>, cfg: Config) -> Result<P::Arc<Self>, Errno> {
        cfg.validate()?;
        let pt = PageTable::new(parts.mem)?;
        P::Arc::new(Engine {
            plat,
            cfg,
            mm: parts.mm,
            dma: parts.dma,
            tlb: parts.tlb,
            devmem: parts.devmem,
            pt,
            ranges: RangeMap::new()?,
            serial: Serial::new(cfg.lock_scope)?,
            stats: Counters::default(),
            live: AtomicUsize::new(0),
        })
    }

    /// The device page table (the device walks it with `translate`).
    pub fn page_table(&self) -> &PageTable<P::Fmt, P::Mem> {
        &self.pt
    }

    /// Configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The bound mm.
    pub fn mm(&self) -> &P::Mm {
        &self.mm
    }

    /// The DMA service.
    pub fn dma(&self) -> &P::Dma {
        &self.dma
    }

    /// The device TLB.
    pub fn tlb(&self) -> &P::Tlb {
        &self.tlb
    }

    /// Device memory.
    pub fn devmem(&self) -> &P::Devmem {
        &self.devmem
    }

    /// The platform.
    pub fn platform(&self) -> &P {
        &self.plat
    }

    /// Statistics snapshot.
    pub fn stats(&self) -> Stats {
        self.stats.snapshot()
    }

    /// Number of ranges published now.
    pub fn range_count(&self) -> usize {
        let mut n = 0;
        self.each_range(|_, _| n += 1);
        n
    }

    /// What the device page table holds now, counted while faults, invalidations and GC run
    /// (QUERY, debugfs): a level-0 table is counted inside only under its range's walk guard
    /// (see `InFlight`), so GC cannot free it under the count.
    pub fn census(&self) -> Census {
        let huge_ranges = self.cfg.range_shift >= HUGE_SHIFT;
        self.pt.census_guarded(|va, descend| {
            if !huge_ranges {
                // Leaf tables are freed only by GC of ranges of 2 MiB or more.
                return descend();
            }
            if let Some(r) = self.ranges.get(self.range_key(va)) {
                if let Some(_walk) = InFlight::enter(&r) {
                    descend();
                }
            }
        })
    }

    /// Calls `f` on a summary of every published range, in address order, each read under
    /// its range lock (debugfs; may sleep).
    pub fn for_each_range_info(&self, mut f: impl FnMut(RangeInfo)) {
        self.each_range(|_, r| {
            let st = r.lock.lock();
            f(RangeInfo {
                start: r.start,
                end: r.end,
                mapped: st.mapped,
                owner: st.owner,
                dead: st.dead,
                gc_pending: r.gc_pending.load(Ordering::Relaxed),
                inflight: r.inflight.load(Ordering::Relaxed),
            });
        });
    }

    /// Bytes of engine metadata per range (the `Range` itself; its notifier is the
    /// platform's, its mappings live in the page table), for memory accounting.
    pub fn range_metadata_bytes(&self) -> usize {
        core::mem::size_of::<Range<P>>()
    }

    pub(crate) fn range_key(&self, va: u64) -> u64 {
        va >> self.cfg.range_shift
    }

    /// Unpublishes `r` from `key` if it is still there; keeps the live count.
    pub(crate) fn unpublish(&self, key: u64, r: &RangeRef<P>) {
        if self
            .ranges
            .remove_if(key, |v| P::Arc::ptr_eq(v, r))
            .is_some()
        {
            self.live.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Whether a VMA covers `va` now: a range is created only where one does (a fault on a
    /// hole must not leave a notifier, a lock and an index node behind).
    fn vma_at(&self, va: u64) -> Result<(), Errno> {
        let g = self.mm.mmap_read()?;
        self.mm.vma(&g, va).map(|_| ()).ok_or(Errno::EFAULT)
    }

    /// Finds the live range covering `va`, or creates one (`need_vma`: only where a VMA is,
    /// else `EFAULT`). `ENOSPC` when the engine holds `Config::max_ranges` ranges that are
    /// all in use.
    ///
    /// Creation registers the notifier *before* publishing the range, with no lock held
    /// (`mmu_interval_notifier_insert()` may sleep and takes `mmap_lock`); of two racing
    /// creators one publishes, the other removes its own notifier, again outside every lock.
    pub(crate) fn range_for(&self, va: u64, need_vma: bool) -> Result<RangeRef<P>, Errno> {
        let key = self.range_key(va);
        loop {
            if let Some(r) = self.ranges.get(key) {
                if !r.is_dead() {
                    return Ok(r);
                }
                // GC killed it but has not unpublished it yet: do that part for it, so the
                // fault need not wait for the GC worker. But only once GC has left the dead
                // range's critical section: it unlinks and frees the range's leaf tables
                // under that lock, and a successor range must not map into a table of this
                // span that is about to be freed (no engine lock is held here).
                // GC may also have found it in use and revived it: only a range still dead
                // under its lock is unpublished.
                if r.lock.lock().dead {
                    self.unpublish(key, &r);
                }
                continue;
            }
            if need_vma {
                self.vma_at(va)?;
            }
            if self.live.load(Ordering::Acquire) >= self.cfg.max_ranges {
                self.collect_empty();
                if self.live.load(Ordering::Acquire) >= self.cfg.max_ranges {
                    Counters::add(&self.stats.range_limit_hits, 1);
                    return Err(Errno::ENOSPC);
                }
            }
            let start = key << self.cfg.range_shift;
            let size = self.cfg.range_size();
            // SAFETY: `new_init` hands a fresh slot that stays put for the range's life.
            let r = P::Arc::new_init(|p| unsafe { Range::init(p, self, start, start + size) })?;
            let cookie = &*r as *const Range<P> as *const ();
            let iv = self.mm.interval_insert(
                start,
                size,
                cookie,
                super::invalidate::invalidate_cb::<P>,
            )?;
            r.interval.put(iv);
            match self.ranges.insert(key, r.clone()) {
                Ok(Ok(())) => {
                    // Counted after the fact: racing creators may overshoot the limit by
                    // their number, never more.
                    self.live.fetch_add(1, Ordering::AcqRel);
                    Counters::add(&self.stats.ranges_created, 1);
                    return Ok(r);
                }
                Ok(Err(_winner)) => {
                    Counters::add(&self.stats.range_races, 1);
                    self.mm.interval_remove(r.interval());
                }
                Err(e) => {
                    self.mm.interval_remove(r.interval());
                    return Err(e);
                }
            }
        }
    }
}

impl<P: Platform> Drop for Engine<P> {
    fn drop(&mut self) {
        // Ranges point back here: none may outlive the engine, and their notifiers must be gone.
        self.teardown();
    }
}
