//! The device's translation caches and its access protocol, shared by every software device:
//! the model's simulated device and the kernel module's sample device run this code, so loom
//! and the storms check what the kernel runs.
//!
//! A device has up to [`MAX_UNITS`] execution units, each with its own small TLB behind its
//! own lock (a spinlock in the kernel: [`LockClass::Tlb`]). An access holds its unit's lock
//! across the translation and the memory access itself ([`Cursor`]); a flush
//! ([`DevTlb::flush`]) takes every unit's lock in turn. That is the whole of I1 on the device
//! side (`Documentation/design.rst`):
//!
//! - an access that held its unit when the flush took it has finished before the flush goes
//!   on, so it no longer uses a page or a page-table page read before the zap;
//! - an access that takes its unit after the flush released it walks the page table after the
//!   zap (the lock orders the two), so it sees the zapped leaf, and the flushed unit holds no
//!   entry it could use instead.
//!
//! Units do not share a cache line or a lock, so device threads on different units never wait
//! for each other; only a flush touches them all. The flush never sleeps, so even the OOM
//! reaper's non-blockable invalidation can flush (unless a platform says otherwise).
//!
//! The walk reads page-table pages without their locks; the same argument keeps them alive:
//! a table is freed only after a flush that followed its unlinking.

use super::engine::leaf_pfn;
use super::pgtable::{Errno, Lock, LockClass, LockFamily, PageTable, PtMem, PteFormat};
use super::platform::DeviceTlb;
use core::mem::MaybeUninit;
use core::ptr::addr_of_mut;
use core::sync::atomic::{AtomicU64, Ordering};

/// Most execution units a device has.
pub const MAX_UNITS: usize = 8;
/// Most entries a unit's TLB holds.
pub const MAX_ENTRIES: usize = 16;

/// One translation as the device uses it: the 4 KiB page holding the translated address.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Xlate {
    /// DMA address of the page (what a hardware device would put on the bus).
    pub addr: u64,
    /// The page's pfn (what a software device maps to reach the bytes).
    pub pfn: u64,
    /// Whether the leaf allows writes.
    pub write: bool,
    /// 0 for a 4 KiB leaf, 1 for a 2 MiB leaf.
    pub level: u8,
    /// `addr` is in the device's own memory (a local leaf), not a DMA address.
    pub local: bool,
    /// The leaf allows atomics (the CPU handed the page over).
    pub atomic: bool,
}

/// A cached leaf, in three words (a unit's TLB is small enough to sit inline).
///
/// # Invariants
/// `tag` is the leaf's first VA (aligned to its size) with the `VALID`, `HUGE`, `WRITE`, `LOCAL` and `ATOMIC`
/// flags in its low bits, or 0 for an empty entry; `addr`/`pfn` describe the leaf's first
/// 4 KiB page.
#[derive(Clone, Copy)]
struct Entry {
    tag: u64,
    addr: u64,
    pfn: u64,
}

const VALID: u64 = 1;
const HUGE: u64 = 2;
const WRITE: u64 = 4;
const LOCAL: u64 = 8;
const ATOMIC: u64 = 16;
const FLAGS: u64 = 0xfff;

impl Entry {
    const EMPTY: Entry = Entry {
        tag: 0,
        addr: 0,
        pfn: 0,
    };

    fn base(&self) -> u64 {
        self.tag & !FLAGS
    }

    fn size(&self) -> u64 {
        if self.tag & HUGE != 0 {
            1 << 21
        } else {
            1 << 12
        }
    }

    fn write(&self) -> bool {
        self.tag & WRITE != 0
    }

    fn covers(&self, va: u64) -> bool {
        self.tag & VALID != 0 && self.base() <= va && va - self.base() < self.size()
    }

    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.tag & VALID != 0 && self.base() < end && start < self.base() + self.size()
    }

    fn xlate(&self, va: u64) -> Xlate {
        let off = (va - self.base()) >> 12;
        Xlate {
            addr: self.addr + (off << 12),
            pfn: self.pfn + off,
            write: self.write(),
            level: u8::from(self.tag & HUGE != 0),
            local: self.tag & LOCAL != 0,
            atomic: self.tag & ATOMIC != 0,
        }
    }
}

/// What a unit's lock protects.
pub struct UnitState {
    e: [Entry; MAX_ENTRIES],
    /// Entries in use: `e[..cap]`.
    cap: usize,
    /// Round-robin victim.
    next: usize,
}

/// One execution unit: its TLB and counters, alone on its cache lines.
#[repr(align(64))]
struct Unit<L: LockFamily> {
    st: L::Spin<UnitState>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// The device's TLBs, one per execution unit.
///
/// # Invariants
/// `1 <= n <= MAX_UNITS`; `units[..n]` are initialised, the rest are not.
pub struct DevTlb<L: LockFamily> {
    units: [MaybeUninit<Unit<L>>; MAX_UNITS],
    n: usize,
    may_sleep: bool,
}

// SAFETY: `DevTlb` is a collection of `Unit`s (locks and atomics); the `MaybeUninit` wrapper
// only hides which are initialised, and only initialised ones are ever touched.
unsafe impl<L: LockFamily> Send for DevTlb<L> where L::Spin<UnitState>: Send {}
// SAFETY: as above; every shared access goes through a unit's lock or an atomic.
unsafe impl<L: LockFamily> Sync for DevTlb<L> where L::Spin<UnitState>: Sync {}

impl<L: LockFamily> DevTlb<L> {
    /// A device with `units` execution units (clamped to `1..=MAX_UNITS`) of `entries` TLB
    /// entries each (clamped to `1..=MAX_ENTRIES`). `flush_may_sleep` is what
    /// [`DeviceTlb::flush_may_sleep`] reports: false for a spinlock backend. The value is a
    /// few KiB, and its locks are moved with it: only for a platform whose locks may move (the
    /// model); a kernel builds it in place with [`DevTlb::init`].
    pub fn new(units: usize, entries: usize, flush_may_sleep: bool) -> Result<Self, Errno> {
        let mut slot = MaybeUninit::uninit();
        Self::init(&mut slot, units, entries, flush_may_sleep)?;
        // SAFETY: `init` succeeded, so the slot holds a valid `DevTlb`.
        Ok(unsafe { slot.assume_init() })
    }

    /// [`DevTlb::new`] in place: builds the TLBs in `slot` (kernel: a fresh allocation), one
    /// unit at a time and each lock in place, so no copy of the whole ever sits on a kernel
    /// stack. On error `slot` is left uninitialised, with every unit built so far dropped.
    /// The slot must stay put until the TLBs are dropped there (their locks never move).
    pub fn init(
        slot: &mut MaybeUninit<Self>,
        units: usize,
        entries: usize,
        flush_may_sleep: bool,
    ) -> Result<&mut Self, Errno> {
        let n = units.clamp(1, MAX_UNITS);
        let cap = entries.clamp(1, MAX_ENTRIES);
        let p = slot.as_mut_ptr();
        // SAFETY: `p` is valid for writes; fields are written through raw pointers, never
        // read before. `units` needs no initialisation (an array of `MaybeUninit`), so after
        // these two writes the slot is a valid `DevTlb` with no unit (the invariant holds for
        // `n == 0` as far as `Drop` is concerned).
        unsafe {
            addr_of_mut!((*p).n).write(0);
            addr_of_mut!((*p).may_sleep).write(flush_may_sleep);
        }
        while {
            // SAFETY: initialised above and only changed here.
            unsafe { (*p).n }
        } < n
        {
            // SAFETY: `n < MAX_UNITS`; unit `n` is not initialised yet: its lock is built in
            // place (the slot stays put: the caller's contract), then its counters; it is
            // counted only once whole, so a later error drops exactly the built units.
            unsafe {
                let i = (*p).n;
                let u = (*p).units[i].as_mut_ptr();
                let st = UnitState {
                    e: [Entry::EMPTY; MAX_ENTRIES],
                    cap,
                    next: 0,
                };
                if let Err(e) = L::Spin::init(addr_of_mut!((*u).st), st, LockClass::Tlb) {
                    // The slot is a valid `DevTlb` of `n` units; dropping it drops exactly
                    // those, and the caller treats the slot as uninitialised again.
                    core::ptr::drop_in_place(p);
                    return Err(e);
                }
                addr_of_mut!((*u).hits).write(AtomicU64::new(0));
                addr_of_mut!((*u).misses).write(AtomicU64::new(0));
                (*p).n = i + 1;
            }
        }
        // SAFETY: every field is initialised and `units[..n]` are (type invariant).
        Ok(unsafe { slot.assume_init_mut() })
    }

    fn units(&self) -> &[Unit<L>] {
        // SAFETY: `units[..n]` are initialised (type invariant); `MaybeUninit<T>` has `T`'s
        // layout.
        unsafe { core::slice::from_raw_parts(self.units.as_ptr().cast::<Unit<L>>(), self.n) }
    }

    /// Execution units.
    pub fn unit_count(&self) -> usize {
        self.n
    }

    /// Begins one device access on execution unit `unit` (any number: taken modulo the unit
    /// count, so a caller may pass a CPU number). Translations made through the cursor stay
    /// valid until it is dropped.
    pub fn begin(&self, unit: usize) -> Cursor<'_, L> {
        let u = &self.units()[unit % self.n];
        Cursor { u, g: u.st.lock() }
    }

    /// Translations served from an entry, over all units.
    pub fn hits(&self) -> u64 {
        self.units()
            .iter()
            .map(|u| u.hits.load(Ordering::Relaxed))
            .sum()
    }

    /// Translations that walked the page table, over all units.
    pub fn misses(&self) -> u64 {
        self.units()
            .iter()
            .map(|u| u.misses.load(Ordering::Relaxed))
            .sum()
    }

    /// Cached entries now, over all units.
    pub fn len(&self) -> usize {
        self.units()
            .iter()
            .map(|u| u.st.lock().e.iter().filter(|e| e.tag & VALID != 0).count())
            .sum()
    }

    /// Whether no unit caches anything.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<L: LockFamily> Drop for DevTlb<L> {
    fn drop(&mut self) {
        for u in &mut self.units[..self.n] {
            // SAFETY: `units[..n]` are initialised (type invariant) and dropped once, here.
            unsafe { u.assume_init_drop() };
        }
    }
}

impl<L: LockFamily> DeviceTlb for DevTlb<L>
where
    L::Spin<UnitState>: Send + Sync,
{
    fn flush(&self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        // One unit at a time: each lock is held only while its entries are dropped, and taking
        // it is what waits for the access running on that unit (see the module comment).
        for (i, u) in self.units().iter().enumerate() {
            if cfg!(feature = "teeth-flush-first-unit-only") && i > 0 {
                break;
            }
            let mut g = if cfg!(feature = "teeth-flush-skips-busy-unit") {
                match u.st.try_lock() {
                    Some(g) => g,
                    None => continue,
                }
            } else {
                u.st.lock()
            };
            let cap = g.cap;
            for e in g.e[..cap].iter_mut() {
                if e.overlaps(start, end) {
                    *e = Entry::EMPTY;
                }
            }
        }
    }

    fn flush_may_sleep(&self) -> bool {
        self.may_sleep
    }
}

/// One device access in progress on one execution unit: its lock is held, so a flush waits
/// for the cursor to be dropped.
pub struct Cursor<'a, L: LockFamily> {
    u: &'a Unit<L>,
    g: <L::Spin<UnitState> as Lock<UnitState>>::Guard<'a>,
}

impl<L: LockFamily> Cursor<'_, L> {
    /// The page holding `va`, if the device may access it (`write`: for writing), by a walk
    /// that bypasses and does not fill the TLB: the access path of a copy engine without one
    /// (the dmirror front end). Holding the unit's lock is what makes the result usable until
    /// the cursor is dropped.
    pub fn walk<F: PteFormat, M: PtMem>(
        &mut self,
        pt: &PageTable<F, M>,
        va: u64,
        write: bool,
    ) -> Option<Xlate> {
        let t = pt.translate(va)?;
        if write && !t.perm.write {
            return None;
        }
        let span = if t.level == 1 { 1u64 << 21 } else { 1u64 << 12 };
        let off = (va & (span - 1)) >> 12;
        Some(Xlate {
            addr: t.addr,
            pfn: leaf_pfn(t.aux) + off,
            write: t.perm.write,
            level: t.level,
            local: t.perm.local,
            atomic: t.perm.atomic,
        })
    }

    /// The page holding `va`, if the device may access it (`write`: for writing): from an
    /// entry, else by walking `pt` and caching the leaf. `None` is a device fault (no leaf, or
    /// a read-only leaf for a write); the stale entry of a permission fault is dropped.
    pub fn translate<F: PteFormat, M: PtMem>(
        &mut self,
        pt: &PageTable<F, M>,
        va: u64,
        write: bool,
    ) -> Option<Xlate> {
        self.translate_for(pt, va, write, false)
    }

    /// [`Cursor::translate`] for an access that needs atomics too (`atomic`): a leaf without
    /// the atomic bit is a permission fault.
    pub fn translate_for<F: PteFormat, M: PtMem>(
        &mut self,
        pt: &PageTable<F, M>,
        va: u64,
        write: bool,
        atomic: bool,
    ) -> Option<Xlate> {
        let st = &mut *self.g;
        let cap = st.cap;
        let hit = st.e[..cap].iter().position(|e| e.covers(va));
        if let Some(i) = hit {
            let e = &st.e[i];
            if (!write || e.write()) && (!atomic || e.tag & ATOMIC != 0) {
                self.u.hits.fetch_add(1, Ordering::Relaxed);
                return Some(st.e[i].xlate(va));
            }
        }
        self.u.misses.fetch_add(1, Ordering::Relaxed);
        let t = pt.translate(va);
        let t = match t {
            Some(t) if (!write || t.perm.write) && (!atomic || t.perm.atomic) => t,
            _ => {
                // A permission fault (or a leaf gone since) drops the entry before the replay.
                if let Some(i) = hit {
                    st.e[i] = Entry::EMPTY;
                }
                return None;
            }
        };
        let (size, huge) = if t.level == 1 {
            (1u64 << 21, HUGE)
        } else {
            (1u64 << 12, 0)
        };
        let base = va & !(size - 1);
        let off = (va - base) >> 12;
        let slot = hit.unwrap_or_else(|| {
            let s = st.next;
            st.next = (s + 1) % cap;
            s
        });
        st.e[slot] = Entry {
            tag: base
                | VALID
                | huge
                | if t.perm.write { WRITE } else { 0 }
                | if t.perm.local { LOCAL } else { 0 }
                | if t.perm.atomic { ATOMIC } else { 0 },
            addr: t.addr - (off << 12),
            pfn: leaf_pfn(t.aux),
        };
        Some(st.e[slot].xlate(va))
    }
}
