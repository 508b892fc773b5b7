//! The multi-level device page table.
//!
//! Four levels of 512 entries translate a 48-bit device VA: level 0 maps 4 KiB pages, level 1
//! points to level-0 tables or maps 2 MiB, levels 2 and 3 point to tables. Each table carries,
//! beside its hardware entries, one software word per entry (`aux`) that the user of the table
//! owns (the engine keeps the page frame number and mapping flags there: the page-centric
//! bookkeeping that `umem_odp` keeps in `pfn_list`), and its own lock.
//!
//! Concurrency, per table:
//! - The device walk ([`PageTable::translate`]) takes no lock: it reads entries with acquire
//!   loads, as a hardware walker reads memory.
//! - Every writer of a table's entries or aux words holds that table's lock, and never holds
//!   two table locks at once. Installing a missing table locks only its parent, so faults on
//!   different 2 MiB blocks never meet on a tree-wide lock.
//! - Tables are freed only once unlinked *and* after the device TLB (and page-walk cache) was
//!   flushed for their span: [`PageTable::unlink_leaf_tables`] hands them back in a
//!   [`Deferred`] list that the caller frees after its flush.
//!
//! Leaves are released in two phases so that a DMA address is never unmapped while a TLB entry
//! may still use it: [`PageTable::zap`] clears the valid bit (the entry keeps its address), the
//! caller flushes the device TLB, then [`PageTable::reap`] clears the entries and reports each
//! released address.

use super::errno::Errno;
use super::format::{Entry, Perm, PteFormat};
use super::lock::{Lock, LockClass};
use core::marker::PhantomData;
use core::ptr::{addr_of_mut, NonNull};
use core::sync::atomic::{AtomicU64, Ordering};

/// Entries per table.
pub const ENTRIES: usize = 512;
/// Number of levels (root is level `LEVELS - 1`).
pub const LEVELS: u8 = 4;
/// Base page shift (4 KiB).
pub const PAGE_SHIFT: u32 = 12;
/// Huge leaf shift (2 MiB, a level-1 leaf).
pub const HUGE_SHIFT: u32 = 21;
/// One past the highest device VA the table translates.
pub const VA_LIMIT: u64 = 1 << (PAGE_SHIFT + 9 * LEVELS as u32);

/// Shift of the span one entry at `level` covers.
pub const fn level_shift(level: u8) -> u32 {
    PAGE_SHIFT + 9 * level as u32
}

fn index(va: u64, level: u8) -> usize {
    ((va >> level_shift(level)) as usize) & (ENTRIES - 1)
}

/// A table's hardware page: exactly the 512 entries a device walks, one 4 KiB page (an
/// order-0 allocation in the kernel).
#[repr(C, align(4096))]
pub struct HwTable {
    /// The device-visible entries.
    pub pte: [AtomicU64; ENTRIES],
}

/// A table's software words, one per entry, in a page of their own (so the hardware page stays
/// exactly one page and no allocation is larger than a page).
#[repr(C, align(4096))]
pub struct AuxTable {
    /// The owner's words.
    pub aux: [AtomicU64; ENTRIES],
}

const _: () = assert!(core::mem::size_of::<HwTable>() == 4096);
const _: () = assert!(core::mem::size_of::<AuxTable>() == 4096);

/// One page-table node: where its hardware page and software words are, and its lock. Links
/// between tables hold the hardware page's device address; [`PtMem::va`] finds the node from
/// it (the kernel keeps the node in the hardware page's `struct page`, as `page->private`).
///
/// # Invariants
/// - `hw` and `aux` point to pages owned by this node, valid for as long as it lives.
/// - `pte()[i]` and `aux()[i]` are written only with `lock` held.
/// - A table is reachable from the root through exactly one parent entry, or from none once
///   unlinked; an unlinked table is freed only after the caller's device TLB flush.
pub struct Table<L> {
    hw: NonNull<HwTable>,
    aux: NonNull<AuxTable>,
    lock: L,
}

impl<L: Lock<()>> Table<L> {
    /// Builds a node over the pages `hw` and `aux` at `slot`, every entry cleared, its lock in
    /// place. Nothing is initialised on an error.
    ///
    /// # Safety
    /// `slot` must be valid for writes and stay where it is until the node is dropped there;
    /// `hw` and `aux` must be valid for reads and writes, not used by anything else, and stay
    /// so until the node is dropped (the platform frees them after it).
    pub unsafe fn init(
        slot: *mut Self,
        hw: NonNull<HwTable>,
        aux: NonNull<AuxTable>,
    ) -> Result<(), Errno> {
        // SAFETY: `slot` is valid and stays put (caller contract).
        unsafe { L::init(addr_of_mut!((*slot).lock), (), LockClass::Table)? };
        // SAFETY: the caller gives us both pages exclusively; all-zero is a valid
        // `AtomicU64` array. The other fields are plain writes into the slot.
        unsafe {
            hw.as_ptr().write_bytes(0, 1);
            aux.as_ptr().write_bytes(0, 1);
            addr_of_mut!((*slot).hw).write(hw);
            addr_of_mut!((*slot).aux).write(aux);
        }
        Ok(())
    }

    /// The hardware page (for the platform: its address, and freeing it).
    pub fn hw_page(&self) -> NonNull<HwTable> {
        self.hw
    }

    /// The software words' page (for the platform, to free it).
    pub fn aux_page(&self) -> NonNull<AuxTable> {
        self.aux
    }

    fn pte(&self) -> &[AtomicU64; ENTRIES] {
        // SAFETY: `hw` is valid while the node lives (type invariant).
        unsafe { &(*self.hw.as_ptr()).pte }
    }

    fn aux(&self) -> &[AtomicU64; ENTRIES] {
        // SAFETY: `aux` is valid while the node lives (type invariant).
        unsafe { &(*self.aux.as_ptr()).aux }
    }
}

// SAFETY: the pages are reached only through atomics, written under `lock`.
unsafe impl<L: Send> Send for Table<L> {}
// SAFETY: as above.
unsafe impl<L: Sync> Sync for Table<L> {}

/// Memory for page-table pages, supplied by the platform.
///
/// # Safety
/// Implementations must return tables (nodes built with [`Table::init`] over two pages) that
/// stay valid until passed to `free`; `pa` must give the device address of a table's hardware
/// page, and `va` the node whose hardware page is at that address, for every live table.
pub unsafe trait PtMem: Send + Sync {
    /// The per-table lock: a spinlock (`LockFamily::Spin`), taken on the non-blockable
    /// invalidation path.
    type Lock: Lock<()> + Send + Sync;
    /// Allocates an empty table: a node and its two zeroed pages (may sleep: never called
    /// under an engine lock).
    fn alloc(&self) -> Result<NonNull<Table<Self::Lock>>, Errno>;
    /// Frees a table.
    ///
    /// # Safety
    /// `t` came from `alloc`, is unlinked, the device TLB was flushed for its span, and no walk
    /// can reach it any more.
    unsafe fn free(&self, t: NonNull<Table<Self::Lock>>);
    /// The address the device uses to reach `t` (kernel: its physical address).
    fn pa(&self, t: NonNull<Table<Self::Lock>>) -> u64;
    /// The table at device address `pa`.
    ///
    /// # Safety
    /// `pa` was returned by `self.pa` for a table not yet freed.
    unsafe fn va(&self, pa: u64) -> NonNull<Table<Self::Lock>>;
}

/// A device-side translation of one address.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Translation {
    /// DMA address of the byte at the translated VA's page (page aligned).
    pub addr: u64,
    /// Rights of the leaf.
    pub perm: Perm,
    /// 0 for a 4 KiB leaf, 1 for a 2 MiB leaf.
    pub level: u8,
    /// The leaf's software word (the engine keeps the pfn of the mapped page or folio head
    /// there: a software device reaches memory through the page, never by dereferencing a DMA
    /// address).
    pub aux: u64,
}

/// One level-0 table of a [`PageTable`], found once ([`PageTable::leaf_table`]): its leaves
/// read and written without a walk each. Only for addresses in its 2 MiB span; anything else
/// goes through the page table.
///
/// # Invariants
/// `t` is the level-0 table of `pt` for `[base, base + 2 MiB)`, and stays linked while the
/// handle lives (the caller owns the span).
pub struct LeafTable<'a, F: PteFormat, M: PtMem> {
    pt: &'a PageTable<F, M>,
    t: NonNull<Table<M::Lock>>,
    base: u64,
}

/// A 4 KiB leaf to write into an empty slot ([`LeafTable::fill`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct NewLeaf {
    /// VA of the page.
    pub va: u64,
    /// DMA address of the page.
    pub addr: u64,
    /// Rights.
    pub perm: Perm,
    /// Software word.
    pub aux: u64,
}

impl<F: PteFormat, M: PtMem> LeafTable<'_, F, M> {
    /// Whether `va` lies in this table's 2 MiB span.
    pub fn covers(&self, va: u64) -> bool {
        va >= self.base && va - self.base < 1u64 << HUGE_SHIFT
    }

    /// [`PageTable::get`] of the 4 KiB leaf at `va`.
    pub fn get(&self, va: u64) -> Option<Leaf> {
        if !self.covers(va) {
            return self.pt.get(va, 0);
        }
        self.pt.get_in(self.t, va, 0)
    }

    /// Writes `leaves` (4 KiB, in this table's span, into empty slots) under one hold of the
    /// table's lock, in order; stops at the first that is out of the span, misaligned or whose
    /// slot is not empty, and returns how many it wrote. The caller owns the span (no other
    /// writer), so a slot it saw empty is still empty.
    pub fn fill(&self, leaves: &[NewLeaf]) -> usize {
        let tb = self.pt.table(self.t);
        let _g = tb.lock.lock();
        for (n, l) in leaves.iter().enumerate() {
            if !self.covers(l.va) || l.va & 0xfff != 0 || l.addr & 0xfff != 0 {
                return n;
            }
            let i = index(l.va, 0);
            if F::decode(tb.pte()[i].load(Ordering::Relaxed), 0) != Entry::None {
                return n;
            }
            tb.aux()[i].store(l.aux, Ordering::Relaxed);
            tb.pte()[i].store(F::leaf(l.addr, l.perm, 0), Ordering::Release);
        }
        leaves.len()
    }

    /// [`PageTable::map`] of a 4 KiB leaf at `va`.
    pub fn map(&self, va: u64, addr: u64, perm: Perm, aux: u64) -> Result<Option<Leaf>, MapError> {
        if !self.covers(va) {
            return self.pt.map(va, 0, addr, perm, aux);
        }
        PageTable::<F, M>::check_align(va, 0, addr)?;
        self.pt.map_in(self.t, va, 0, addr, perm, aux)
    }
}

/// What in the tree's layout kept [`PageTable::prepare`] or [`PageTable::map`] from acting.
/// The caller can change the layout (zap a huge leaf, map 4 KiB leaves instead) and retry;
/// nothing was changed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Conflict {
    /// `map`: a table on the way down to the leaf's level is missing (`prepare` first).
    NoTable,
    /// A 2 MiB leaf covers the address where a 4 KiB table or leaf is wanted.
    HugeLeaf,
    /// `map` at level 1: the slot holds a table of 4 KiB leaves.
    Table,
    /// `map`: the address is not aligned to the leaf's size.
    AddrAlign,
}

/// Why [`PageTable::prepare`] or [`PageTable::map`] failed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MapError {
    /// The layout is in the way ([`Conflict`]): a signal to the caller, not a failure.
    Layout(Conflict),
    /// Misuse (`EINVAL`: a VA out of range or misaligned, an unsupported level) or no memory
    /// (`ENOMEM`).
    Fail(Errno),
}

impl From<Errno> for MapError {
    fn from(e: Errno) -> Self {
        MapError::Fail(e)
    }
}

impl From<MapError> for Errno {
    /// The errno a caller with no use for the layout reports.
    fn from(e: MapError) -> Errno {
        match e {
            MapError::Layout(Conflict::NoTable) => Errno::ENOENT,
            MapError::Layout(Conflict::HugeLeaf) => Errno::EBUSY,
            MapError::Layout(Conflict::Table | Conflict::AddrAlign) => Errno::EINVAL,
            MapError::Fail(e) => e,
        }
    }
}

/// A leaf as the table holds it, for the owner's bookkeeping.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Leaf {
    /// VA of the first byte the leaf maps.
    pub va: u64,
    /// 0 for 4 KiB, 1 for 2 MiB.
    pub level: u8,
    /// DMA address.
    pub addr: u64,
    /// Rights.
    pub perm: Perm,
    /// The owner's software word.
    pub aux: u64,
    /// Whether the device can still walk it (false for a zapped leaf).
    pub valid: bool,
}

impl Leaf {
    /// The leaf an entry holds at `va` (its first byte) and `level`, with software word `aux`:
    /// `None` for an empty slot or a table link.
    fn of(e: Entry, va: u64, level: u8, aux: u64) -> Option<Leaf> {
        let (addr, perm, valid) = match e {
            Entry::Leaf { addr, perm } => (addr, perm, true),
            Entry::Zapped { addr, perm } => (addr, perm, false),
            _ => return None,
        };
        Some(Leaf {
            va,
            level,
            addr,
            perm,
            aux,
            valid,
        })
    }
}

/// A VA span the device TLB must be flushed for, `[start, end)`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Flush {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

impl Flush {
    fn add(acc: &mut Option<Flush>, start: u64, end: u64) {
        *acc = Some(match *acc {
            None => Flush { start, end },
            Some(f) => Flush {
                start: f.start.min(start),
                end: f.end.max(end),
            },
        });
    }
}

/// What [`PageTable::update`] does at each leaf it visits.
trait Rewrite {
    /// Under the leaf's table lock: the leaf's new (raw pte, aux), or `None` to leave it.
    fn leaf(&mut self, l: &Leaf) -> Option<(u64, u64)>;
    /// Whether [`Rewrite::unlocked`] should run now, after the table lock is dropped.
    fn full(&self) -> bool {
        false
    }
    /// Runs with no table lock held, when [`Rewrite::full`] asked for it.
    fn unlocked(&mut self) {}
}

impl<G: FnMut(&Leaf) -> Option<(u64, u64)>> Rewrite for G {
    fn leaf(&mut self, l: &Leaf) -> Option<(u64, u64)> {
        self(l)
    }
}

/// Leaves [`PageTable::reap`] clears under one table lock before handing them over.
pub const REAP_BATCH: usize = 16;

/// [`PageTable::reap`]'s visitor: clears each zapped leaf under the lock, and hands the
/// cleared ones to `f` in batches, with no table lock held.
struct Reaped<'a> {
    leaves: [Leaf; REAP_BATCH],
    len: usize,
    total: usize,
    f: &'a mut dyn FnMut(&Leaf),
}

impl Reaped<'_> {
    const EMPTY: Leaf = Leaf {
        va: 0,
        level: 0,
        addr: 0,
        perm: Perm::RO,
        aux: 0,
        valid: false,
    };
}

impl Rewrite for Reaped<'_> {
    fn leaf(&mut self, l: &Leaf) -> Option<(u64, u64)> {
        if l.valid {
            return None;
        }
        self.leaves[self.len] = *l;
        self.len += 1;
        Some((0, 0))
    }

    fn full(&self) -> bool {
        self.len == REAP_BATCH
    }

    fn unlocked(&mut self) {
        for l in &self.leaves[..self.len] {
            (self.f)(l);
        }
        self.total += self.len;
        self.len = 0;
    }
}

/// Tables unlinked from the tree, waiting for the TLB flush that makes freeing them safe.
/// The list is threaded through the unlinked tables' first entry.
#[must_use = "unlinked tables must be freed after the device TLB flush"]
pub struct Deferred {
    head: u64,
    count: usize,
}

impl Deferred {
    /// How many tables wait.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether none wait.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// The page table.
///
/// # Invariants
/// - `root` is a live level-3 table owned by this page table.
/// - Every table reachable from `root` was allocated by `mem`.
pub struct PageTable<F: PteFormat, M: PtMem> {
    mem: M,
    root: NonNull<Table<M::Lock>>,
    _fmt: PhantomData<F>,
}

// SAFETY: tables are shared between threads only through atomics and their own locks; `M` is
// `Send + Sync` and the format is a pure marker.
unsafe impl<F: PteFormat, M: PtMem> Send for PageTable<F, M> {}
// SAFETY: as above: every `&self` method synchronises through table locks or atomics.
unsafe impl<F: PteFormat, M: PtMem> Sync for PageTable<F, M> {}

impl<F: PteFormat, M: PtMem> PageTable<F, M> {
    /// Creates an empty page table (one root table).
    pub fn new(mem: M) -> Result<Self, Errno> {
        let root = mem.alloc()?;
        Ok(PageTable {
            mem,
            root,
            _fmt: PhantomData,
        })
    }

    /// The memory provider.
    pub fn mem(&self) -> &M {
        &self.mem
    }

    /// The device address of the root table (what a device's page-table base register holds).
    pub fn root_pa(&self) -> u64 {
        self.mem.pa(self.root)
    }

    fn table(&self, t: NonNull<Table<M::Lock>>) -> &Table<M::Lock> {
        // SAFETY: by the type invariant every table we hold a pointer to is live until it is
        // unlinked and freed, which happens only after no walk can reach it.
        unsafe { t.as_ref() }
    }

    fn child(&self, pte: u64, level: u8) -> Option<NonNull<Table<M::Lock>>> {
        match F::decode(pte, level) {
            // SAFETY: a table entry holds the `pa` of a live table linked in this tree.
            Entry::Table(pa) => Some(unsafe { self.mem.va(pa) }),
            _ => None,
        }
    }

    /// Walks to the table at `level` covering `va`, without allocating. `Err(None)`: a table is
    /// missing; `Err(Some(e))`: a leaf above `level` covers `va`.
    fn walk(&self, va: u64, level: u8) -> Result<NonNull<Table<M::Lock>>, Option<Entry>> {
        let mut t = self.root;
        for l in (level + 1..LEVELS).rev() {
            let pte = self.table(t).pte()[index(va, l)].load(Ordering::Acquire);
            match self.child(pte, l) {
                Some(c) => t = c,
                None => match F::decode(pte, l) {
                    Entry::None => return Err(None),
                    e => return Err(Some(e)),
                },
            }
        }
        Ok(t)
    }

    fn check_va(va: u64) -> Result<(), MapError> {
        if va >= VA_LIMIT {
            return Err(MapError::Fail(Errno::EINVAL));
        }
        Ok(())
    }

    /// Makes sure the table at `level` (0 for 4 KiB leaves, 1 for 2 MiB leaves) covering `va`
    /// exists, allocating missing tables. Only the parent of each installed table is locked.
    /// May sleep: call it with no engine lock held.
    ///
    /// Returns [`Conflict::HugeLeaf`] when a 2 MiB leaf sits where a level-0 table is wanted:
    /// the caller must first zap that leaf.
    pub fn prepare(&self, va: u64, level: u8) -> Result<(), MapError> {
        Self::check_va(va)?;
        let mut t = self.root;
        for l in (level + 1..LEVELS).rev() {
            let slot = &self.table(t).pte()[index(va, l)];
            let pte = slot.load(Ordering::Acquire);
            if let Some(c) = self.child(pte, l) {
                t = c;
                continue;
            }
            if F::decode(pte, l) != Entry::None {
                return Err(MapError::Layout(Conflict::HugeLeaf));
            }
            let new = self.mem.alloc()?;
            let guard = self.table(t).lock.lock();
            let pte = slot.load(Ordering::Acquire);
            let next = match F::decode(pte, l) {
                Entry::None => {
                    // Release: the device walk that sees the pointer sees the zeroed table.
                    slot.store(F::table(self.mem.pa(new)), Ordering::Release);
                    Ok(new)
                }
                Entry::Table(pa) => Err(pa),
                _ => {
                    drop(guard);
                    // SAFETY: `new` was never linked, so nothing can reach it.
                    unsafe { self.mem.free(new) };
                    return Err(MapError::Layout(Conflict::HugeLeaf));
                }
            };
            drop(guard);
            t = match next {
                Ok(n) => n,
                Err(pa) => {
                    // Lost the race to another installer: use theirs.
                    // SAFETY: `new` was never linked.
                    unsafe { self.mem.free(new) };
                    // SAFETY: `pa` was just read from a table entry of this tree.
                    unsafe { self.mem.va(pa) }
                }
            };
        }
        Ok(())
    }

    /// Reads the leaf at `va` for `level` (0 or 1), if any, with its software word.
    pub fn get(&self, va: u64, level: u8) -> Option<Leaf> {
        let t = self.walk(va, level).ok()?;
        self.get_in(t, va, level)
    }

    /// [`PageTable::get`] in table `t`, the one at `level` covering `va`.
    fn get_in(&self, t: NonNull<Table<M::Lock>>, va: u64, level: u8) -> Option<Leaf> {
        let i = index(va, level);
        let tb = self.table(t);
        let pte = tb.pte()[i].load(Ordering::Acquire);
        let base = va & !((1u64 << level_shift(level)) - 1);
        let aux = tb.aux()[i].load(Ordering::Relaxed);
        Leaf::of(F::decode(pte, level), base, level, aux)
    }

    /// Writes a valid leaf at `va` (4 KiB at level 0, 2 MiB at level 1) with software word
    /// `aux`, replacing whatever leaf was there; never allocates. The tables down to `level`
    /// must exist ([`PageTable::prepare`]). A layout in the way is a [`MapError::Layout`]:
    /// a missing table, a huge leaf over `va` when `level` is 0, a table in the level-1 slot,
    /// or an `addr` not aligned to the leaf size (a 2 MiB DMA mapping an IOMMU placed off a
    /// 2 MiB boundary). A misaligned `va` or an unsupported level is `Fail(EINVAL)`.
    ///
    /// Returns the leaf it replaced. Replacing a valid leaf by one with fewer rights or another
    /// address needs a TLB flush the caller owes; raising rights does not.
    pub fn map(
        &self,
        va: u64,
        level: u8,
        addr: u64,
        perm: Perm,
        aux: u64,
    ) -> Result<Option<Leaf>, MapError> {
        Self::check_va(va)?;
        if level > 1 || (level == 1 && !F::HUGE) {
            return Err(MapError::Fail(Errno::EINVAL));
        }
        Self::check_align(va, level, addr)?;
        let t = match self.walk(va, level) {
            Ok(t) => t,
            Err(None) => return Err(MapError::Layout(Conflict::NoTable)),
            Err(Some(_)) => return Err(MapError::Layout(Conflict::HugeLeaf)),
        };
        self.map_in(t, va, level, addr, perm, aux)
    }

    fn check_align(va: u64, level: u8, addr: u64) -> Result<(), MapError> {
        let size = 1u64 << level_shift(level);
        if va & (size - 1) != 0 {
            return Err(MapError::Fail(Errno::EINVAL));
        }
        if addr & (size - 1) != 0 {
            return Err(MapError::Layout(Conflict::AddrAlign));
        }
        Ok(())
    }

    /// [`PageTable::map`] in table `t`, the one at `level` covering `va`, arguments checked.
    fn map_in(
        &self,
        t: NonNull<Table<M::Lock>>,
        va: u64,
        level: u8,
        addr: u64,
        perm: Perm,
        aux: u64,
    ) -> Result<Option<Leaf>, MapError> {
        let tb = self.table(t);
        let i = index(va, level);
        let _g = tb.lock.lock();
        let old_pte = tb.pte()[i].load(Ordering::Relaxed);
        let old_aux = tb.aux()[i].load(Ordering::Relaxed);
        let old = match F::decode(old_pte, level) {
            Entry::Table(_) => return Err(MapError::Layout(Conflict::Table)),
            e => Leaf::of(e, va, level, old_aux),
        };
        tb.aux()[i].store(aux, Ordering::Relaxed);
        tb.pte()[i].store(F::leaf(addr, perm, level), Ordering::Release);
        Ok(old)
    }

    /// The level-0 table of `va`'s 2 MiB span, found by one walk, to read and write many of
    /// its 512 leaves without walking again (a fault's window). `None` when the table is
    /// missing or a 2 MiB leaf covers the span. The caller must own the span as for an
    /// [`PageTable::unlink_leaf_tables`] (the engine holds the lock of the range that owns
    /// it), so that the table is not unlinked while the handle is used.
    pub fn leaf_table(&self, va: u64) -> Option<LeafTable<'_, F, M>> {
        if va >= VA_LIMIT {
            return None;
        }
        let t = self.walk(va, 0).ok()?;
        Some(LeafTable {
            pt: self,
            t,
            base: va & !((1u64 << HUGE_SHIFT) - 1),
        })
    }

    /// Visits, under each leaf table's lock, every slot of `[start, end)` that holds a leaf
    /// (valid or zapped) at level 0 or 1, letting `v` rewrite it: `v` gets the leaf's
    /// description and returns the new (raw pte, aux). Huge leaves are visited whole when
    /// touched at all. After a leaf, `v` may ask to run with no table lock held
    /// ([`Rewrite::full`]); the walk drops the lock for that and takes it again.
    fn update(&self, start: u64, end: u64, v: &mut impl Rewrite) {
        let end = end.min(VA_LIMIT);
        if start >= end {
            return;
        }
        self.update_in(self.root, LEVELS - 1, start, end, v);
    }

    fn update_in(
        &self,
        t: NonNull<Table<M::Lock>>,
        level: u8,
        start: u64,
        end: u64,
        v: &mut impl Rewrite,
    ) {
        let span = 1u64 << level_shift(level);
        let tb = self.table(t);
        // A level-0 table is rewritten under its lock, held across the loop (dropped only
        // while the visitor runs unlocked); above level 0 only huge leaves are rewritten, each
        // under the lock, and descending holds no lock, so no thread ever holds two table
        // locks.
        let mut whole = if level == 0 {
            Some(tb.lock.lock())
        } else {
            None
        };
        let mut va = start & !(span - 1);
        while va < end {
            let i = index(va, level);
            let pte = tb.pte()[i].load(Ordering::Acquire);
            match F::decode(pte, level) {
                Entry::None => {}
                Entry::Table(pa) if level > 0 => {
                    // SAFETY: a table entry holds the `pa` of a live table of this tree.
                    let c = unsafe { self.mem.va(pa) };
                    self.update_in(c, level - 1, start.max(va), end.min(va + span), v);
                }
                Entry::Table(_) => {}
                Entry::Leaf { .. } | Entry::Zapped { .. } => {
                    let one = if level > 0 {
                        Some(tb.lock.lock())
                    } else {
                        None
                    };
                    let pte = tb.pte()[i].load(Ordering::Relaxed);
                    let aux = tb.aux()[i].load(Ordering::Relaxed);
                    let Some(leaf) = Leaf::of(F::decode(pte, level), va, level, aux) else {
                        va += span;
                        continue;
                    };
                    if let Some((npte, naux)) = v.leaf(&leaf) {
                        tb.aux()[i].store(naux, Ordering::Relaxed);
                        tb.pte()[i].store(npte, Ordering::Release);
                    }
                    drop(one);
                    if v.full() {
                        let relock = whole.take().is_some();
                        v.unlocked();
                        if relock {
                            whole = Some(tb.lock.lock());
                        }
                    }
                }
            }
            va += span;
        }
    }

    /// Phase 1 of releasing leaves: clears the valid bit of every valid leaf intersecting
    /// `[start, end)` (a 2 MiB leaf touched at all is zapped whole). Returns the span the
    /// device TLB must be flushed for, or `None` if nothing the device could walk was there.
    pub fn zap(&self, start: u64, end: u64) -> Option<Flush> {
        let mut flush = None;
        self.update(start, end, &mut |l: &Leaf| {
            if !l.valid {
                return None;
            }
            let size = 1u64 << level_shift(l.level);
            Flush::add(&mut flush, l.va, l.va + size);
            Some((F::zap(F::leaf(l.addr, l.perm, l.level)), l.aux))
        });
        flush
    }

    /// Removes write permission from every valid writable leaf intersecting `[start, end)`,
    /// letting `f` see each one first (the engine marks the page dirty). Returns the span to
    /// flush, or `None` if no leaf lost a right.
    pub fn write_protect(&self, start: u64, end: u64, mut f: impl FnMut(&Leaf)) -> Option<Flush> {
        let mut flush = None;
        self.update(start, end, &mut |l: &Leaf| {
            if !l.valid || !l.perm.write {
                return None;
            }
            f(l);
            let size = 1u64 << level_shift(l.level);
            Flush::add(&mut flush, l.va, l.va + size);
            // The write right goes, and with it atomics (the CPU is taking the page back: a
            // write-protect comes from fork or writeback, which restore an exclusive entry
            // first); a leaf of device memory stays one.
            let ro = Perm {
                write: false,
                atomic: false,
                ..l.perm
            };
            Some((F::leaf(l.addr, ro, l.level), l.aux))
        });
        flush
    }

    /// Phase 2: after the TLB flush for a [`PageTable::zap`], clears every zapped leaf
    /// intersecting `[start, end)` and hands each to `f` (to unmap its DMA address).
    ///
    /// `f` runs with no table lock held: leaves are cleared under their table's lock and
    /// handed over in batches of up to [`REAP_BATCH`] once it is dropped, so the unmapping
    /// (an IOMMU unmap, marking a page dirty) never lengthens a spinlock's hold nor nests its
    /// locks under it. The caller must keep other writers off the span meanwhile (the engine
    /// holds the owning range's lock), as for every rewrite of its leaves.
    pub fn reap(&self, start: u64, end: u64, mut f: impl FnMut(&Leaf)) -> usize {
        let mut r = Reaped {
            leaves: [Reaped::EMPTY; REAP_BATCH],
            len: 0,
            total: 0,
            f: &mut f,
        };
        self.update(start, end, &mut r);
        r.unlocked();
        r.total
    }

    /// Visits every leaf (valid or zapped) intersecting `[start, end)` without changing it.
    pub fn for_each_leaf(&self, start: u64, end: u64, mut f: impl FnMut(&Leaf)) {
        self.update(start, end, &mut |l: &Leaf| {
            f(l);
            None
        });
    }

    /// The device's walk: translates `va` without taking any lock.
    pub fn translate(&self, va: u64) -> Option<Translation> {
        if va >= VA_LIMIT {
            return None;
        }
        let mut t = self.root;
        let mut level = LEVELS - 1;
        loop {
            let tb = self.table(t);
            let i = index(va, level);
            let pte = tb.pte()[i].load(Ordering::Acquire);
            match F::decode(pte, level) {
                Entry::Table(pa) if level > 0 => {
                    // SAFETY: the entry links a live table; the device TLB flush protocol keeps it
                    // alive for the duration of any walk that read the link.
                    t = unsafe { self.mem.va(pa) };
                    level -= 1;
                }
                Entry::Leaf { addr, perm } if level <= 1 => {
                    let off = va & ((1u64 << level_shift(level)) - 1) & !((1u64 << PAGE_SHIFT) - 1);
                    // The acquire load of the entry orders this after the writer's aux store.
                    let aux = tb.aux()[i].load(Ordering::Relaxed);
                    return Some(Translation {
                        addr: addr + off,
                        perm,
                        level,
                        aux,
                    });
                }
                _ => return None,
            }
        }
    }

    /// Unlinks every level-0 table whose whole 2 MiB span lies in `[start, end)` and holds no
    /// leaf. The caller must own the span exclusively (no other writer of those leaf tables:
    /// the engine holds the lock of the range that owns them) and must flush the device TLB
    /// (page-walk caches included) for the span before calling [`PageTable::free_deferred`].
    ///
    /// The span may be as large as the whole address space (a range of `1 << 47` bytes): the
    /// walk descends only into linked tables, so its cost is bounded by the tables present,
    /// not by the span (a blind 2 MiB stride over 128 TiB would be 2^26 walks).
    pub fn unlink_leaf_tables(&self, start: u64, end: u64) -> Deferred {
        let mut d = Deferred { head: 0, count: 0 };
        let span = 1u64 << HUGE_SHIFT;
        // Only level-0 tables wholly inside the span: round the start up, the end down.
        let first = match start.checked_add(span - 1) {
            Some(s) => s & !(span - 1),
            None => return d,
        };
        let last = end.min(VA_LIMIT) & !(span - 1);
        if first < last {
            self.unlink_in(self.root, LEVELS - 1, first, last, &mut d);
        }
        d
    }

    /// [`PageTable::unlink_leaf_tables`] below table `t` at `level` (>= 1), for the 2 MiB
    /// aligned `[start, end)`.
    fn unlink_in(
        &self,
        t: NonNull<Table<M::Lock>>,
        level: u8,
        start: u64,
        end: u64,
        d: &mut Deferred,
    ) {
        let span = 1u64 << level_shift(level);
        let tb = self.table(t);
        let mut va = start & !(span - 1);
        while va < end {
            let i = index(va, level);
            if level > 1 {
                let pte = tb.pte()[i].load(Ordering::Acquire);
                if let Some(c) = self.child(pte, level) {
                    self.unlink_in(c, level - 1, start.max(va), end.min(va + span), d);
                }
            } else {
                // Level 1: entry `i` links the leaf table of one 2 MiB block. The lock of this
                // level-1 table serialises us with `prepare()` installing a sibling entry.
                let _g = tb.lock.lock();
                let pte = tb.pte()[i].load(Ordering::Acquire);
                if let Some(c) = self.child(pte, 1) {
                    let ct = self.table(c);
                    // The child's writers hold the range lock our caller holds, so its entries
                    // cannot change; no need to take a second table lock here.
                    let empty = ct.pte().iter().all(|e| e.load(Ordering::Acquire) == 0);
                    if empty {
                        tb.pte()[i].store(0, Ordering::Release);
                        ct.pte()[0].store(d.head, Ordering::Relaxed);
                        d.head = self.mem.pa(c);
                        d.count += 1;
                    }
                }
            }
            va = match va.checked_add(span) {
                Some(v) => v,
                None => break,
            };
        }
    }

    /// Frees tables unlinked by [`PageTable::unlink_leaf_tables`].
    ///
    /// # Safety
    /// The device TLB and page-walk caches were flushed for the span they covered since they
    /// were unlinked.
    pub unsafe fn free_deferred(&self, d: Deferred) {
        let mut pa = d.head;
        while pa != 0 {
            // SAFETY: `pa` threads tables this page table unlinked and no walk can reach.
            let t = unsafe { self.mem.va(pa) };
            pa = self.table(t).pte()[0].swap(0, Ordering::Relaxed);
            // SAFETY: unlinked and flushed, per the caller.
            unsafe { self.mem.free(t) };
        }
    }

    fn free_tree(&mut self, t: NonNull<Table<M::Lock>>, level: u8) {
        if level > 0 {
            for i in 0..ENTRIES {
                let pte = self.table(t).pte()[i].load(Ordering::Relaxed);
                if let Some(c) = self.child(pte, level) {
                    self.free_tree(c, level - 1);
                }
            }
        }
        // SAFETY: `&mut self` means no walk or writer is running, and teardown of the owner
        // has flushed the device.
        unsafe { self.mem.free(t) };
    }

    /// Counts tables and leaves (valid and zapped), for tests at rest: the walk follows every
    /// link without any protection, so no level-0 table may be freed meanwhile. A live
    /// engine counts with [`PageTable::census_guarded`].
    pub fn census(&self) -> Census {
        self.census_guarded(|_, descend| descend())
    }

    /// [`PageTable::census`], safe while level-0 tables are being freed: tables above level 0
    /// are freed only when the page table is dropped, and a level-0 table is descended into
    /// only inside `guard(va, descend)`, which must call `descend` only while nobody can free
    /// the level-0 table of the 2 MiB block at `va` (the engine holds the owning range's
    /// walk guard). A table not descended into is still counted as one table.
    pub fn census_guarded(&self, mut guard: impl FnMut(u64, &mut dyn FnMut())) -> Census {
        let mut c = Census::default();
        self.census_in(self.root, LEVELS - 1, 0, &mut c, &mut guard);
        c
    }

    fn census_in(
        &self,
        t: NonNull<Table<M::Lock>>,
        level: u8,
        base: u64,
        c: &mut Census,
        guard: &mut dyn FnMut(u64, &mut dyn FnMut()),
    ) {
        c.tables += 1;
        for i in 0..ENTRIES {
            let va = base + ((i as u64) << level_shift(level));
            let pte = self.table(t).pte()[i].load(Ordering::Acquire);
            match F::decode(pte, level) {
                Entry::Table(_) if level == 1 => {
                    let mut seen = false;
                    guard(va, &mut || {
                        seen = true;
                        // Read again under the guard: it may have been freed since.
                        let pte = self.table(t).pte()[i].load(Ordering::Acquire);
                        if let Some(leaf) = self.child(pte, 1) {
                            self.census_in(leaf, 0, va, c, &mut |_, d| d());
                        }
                    });
                    if !seen {
                        c.tables += 1;
                    }
                }
                Entry::Table(pa) if level > 0 => {
                    // SAFETY: linked tables above level 0 are live until the table is dropped.
                    self.census_in(unsafe { self.mem.va(pa) }, level - 1, va, c, guard)
                }
                Entry::Leaf { .. } if level == 1 => c.huge += 1,
                Entry::Leaf { perm, .. } => {
                    c.pages += 1;
                    if perm.local {
                        c.local += 1;
                    }
                }
                Entry::Zapped { .. } => c.zapped += 1,
                _ => {}
            }
        }
    }
}

/// What a page table holds.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Census {
    /// Table pages, root included.
    pub tables: usize,
    /// Valid 4 KiB leaves.
    pub pages: usize,
    /// Of which map the device's own memory (no DMA mapping behind them).
    pub local: usize,
    /// Valid 2 MiB leaves.
    pub huge: usize,
    /// Zapped leaves still waiting to be reaped (must be 0 outside an invalidation).
    pub zapped: usize,
}

impl<F: PteFormat, M: PtMem> Drop for PageTable<F, M> {
    fn drop(&mut self) {
        let root = self.root;
        self.free_tree(root, LEVELS - 1);
    }
}
