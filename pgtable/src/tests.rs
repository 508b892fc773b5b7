//! Unit tests over a std platform: both formats, concurrent installs, two-phase release,
//! table freeing and leak accounting.

extern crate std;

use super::errno::Errno;
use super::format::{Gfx9Format, Perm, PteFormat, X86Format};
use super::lock::{Lock, LockClass};
use super::table::{
    AuxTable, Conflict, HwTable, MapError, NewLeaf, PageTable, PtMem, Table, HUGE_SHIFT, VA_LIMIT,
};
use core::ptr::NonNull;
use std::boxed::Box;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::vec::Vec;

struct StdLock<T>(Mutex<T>);

std::thread_local! {
    /// Table locks this thread holds now.
    static HELD: core::cell::Cell<usize> = const { core::cell::Cell::new(0) };
}

fn locks_held() -> usize {
    HELD.with(|h| h.get())
}

/// A guard that counts itself in `HELD`.
struct StdGuard<'a, T>(MutexGuard<'a, T>);

impl<'a, T> StdGuard<'a, T> {
    fn new(g: MutexGuard<'a, T>) -> Self {
        HELD.with(|h| h.set(h.get() + 1));
        StdGuard(g)
    }
}

impl<T> Drop for StdGuard<'_, T> {
    fn drop(&mut self) {
        HELD.with(|h| h.set(h.get() - 1));
    }
}

impl<T> core::ops::Deref for StdGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> core::ops::DerefMut for StdGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

impl<T> Lock<T> for StdLock<T> {
    type Guard<'a>
        = StdGuard<'a, T>
    where
        Self: 'a;
    unsafe fn init(slot: *mut Self, data: T, _class: LockClass) -> Result<(), Errno> {
        // SAFETY: `slot` is valid for writes (caller contract).
        unsafe { slot.write(StdLock(Mutex::new(data))) };
        Ok(())
    }
    fn lock(&self) -> StdGuard<'_, T> {
        StdGuard::new(self.0.lock().unwrap())
    }
    fn try_lock(&self) -> Option<StdGuard<'_, T>> {
        self.0.try_lock().ok().map(StdGuard::new)
    }
}

#[derive(Clone, Default)]
struct Mem(Arc<AtomicIsize>);

/// A hardware page with room for its owner, as the kernel's `struct page` has `private`.
#[repr(C)]
struct HwPage {
    hw: HwTable,
    node: *mut Table<StdLock<()>>,
}

// SAFETY: nodes and both pages are boxed (stable); `pa` is the hardware page's address and
// `va` reads the node back from beside it.
unsafe impl PtMem for Mem {
    type Lock = StdLock<()>;
    fn alloc(&self) -> Result<NonNull<Table<Self::Lock>>, Errno> {
        self.0.fetch_add(1, Ordering::SeqCst);
        // SAFETY: all-zero is a valid `HwPage` (atomics and a null pointer) and `AuxTable`.
        let hw: Box<HwPage> = unsafe { Box::new_zeroed().assume_init() };
        let aux: Box<AuxTable> = unsafe { Box::new_zeroed().assume_init() };
        let hw = Box::leak(hw);
        let aux = NonNull::from(Box::leak(aux));
        let slot = Box::leak(Box::<Table<StdLock<()>>>::new_uninit()).as_mut_ptr();
        // SAFETY: a fresh box (stable until `free`); both pages are ours alone until `free`.
        unsafe { Table::init(slot, NonNull::from(&mut hw.hw), aux)? };
        hw.node = slot;
        // SAFETY: a box is never null.
        Ok(unsafe { NonNull::new_unchecked(slot) })
    }
    unsafe fn free(&self, t: NonNull<Table<Self::Lock>>) {
        self.0.fetch_sub(1, Ordering::SeqCst);
        // SAFETY: allocated by `alloc` above with `Box`, as were its pages (`hw` is the first
        // field of its `HwPage`).
        unsafe {
            let t = Box::from_raw(t.as_ptr());
            let (hw, aux) = (t.hw_page(), t.aux_page());
            drop(t);
            drop(Box::from_raw(hw.as_ptr() as *mut HwPage));
            drop(Box::from_raw(aux.as_ptr()));
        }
    }
    fn pa(&self, t: NonNull<Table<Self::Lock>>) -> u64 {
        // SAFETY: `t` is live.
        unsafe { t.as_ref() }.hw_page().as_ptr() as u64
    }
    unsafe fn va(&self, pa: u64) -> NonNull<Table<Self::Lock>> {
        // SAFETY: `pa` is the hardware page of a live table, the first field of its `HwPage`.
        NonNull::new(unsafe { (*(pa as *const HwPage)).node }).unwrap()
    }
}

const M2: u64 = 1 << HUGE_SHIFT;

fn basic<F: PteFormat>() {
    let mem = Mem::default();
    {
        let pt = PageTable::<F, _>::new(mem.clone()).unwrap();
        let va = 0x7f00_0012_3000;
        assert_eq!(
            pt.map(va, 0, 0x5000, Perm::RW, 7),
            Err(MapError::Layout(Conflict::NoTable))
        );
        pt.prepare(va, 0).unwrap();
        assert_eq!(mem.0.load(Ordering::SeqCst), 4, "root + three levels");
        pt.prepare(va, 0).unwrap();
        assert_eq!(mem.0.load(Ordering::SeqCst), 4, "prepare is idempotent");
        assert_eq!(
            pt.map(va + 1, 0, 0x5000, Perm::RW, 7),
            Err(MapError::Fail(Errno::EINVAL))
        );
        assert_eq!(pt.map(va, 0, 0x5000, Perm::RO, 7), Ok(None));
        let t = pt.translate(va + 0x123).unwrap();
        assert_eq!((t.addr, t.perm, t.level), (0x5000, Perm::RO, 0));
        // Upgrade returns the old leaf.
        let old = pt.map(va, 0, 0x5000, Perm::RW, 7).unwrap().unwrap();
        assert!(old.valid && old.aux == 7 && !old.perm.write);
        assert!(pt.translate(va).unwrap().perm.write);
        assert_eq!(pt.translate(va + 0x1000), None);

        // Huge leaf in another 2 MiB block.
        let hb = 0x7f00_0040_0000;
        pt.prepare(hb, 1).unwrap();
        pt.map(hb, 1, 0x4000_0000, Perm::RO, 99).unwrap();
        let t = pt.translate(hb + 0x12_3456).unwrap();
        assert_eq!((t.addr, t.level), (0x4000_0000 + 0x12_3000, 1));
        assert_eq!(
            pt.prepare(hb + 0x1000, 0),
            Err(MapError::Layout(Conflict::HugeLeaf)),
            "4K table under a huge leaf"
        );
        assert_eq!(
            pt.map(hb + 0x1000, 0, 0x1000, Perm::RO, 0),
            Err(MapError::Layout(Conflict::HugeLeaf))
        );

        // Partial zap of the huge leaf zaps it whole; flush span covers 2 MiB.
        let f = pt.zap(hb + 0x3000, hb + 0x4000).unwrap();
        assert_eq!((f.start, f.end), (hb, hb + M2));
        assert_eq!(pt.translate(hb), None);
        assert_eq!(pt.census().zapped, 1);
        assert_eq!(
            pt.zap(hb, hb + M2),
            None,
            "already zapped: nothing to flush"
        );
        let mut got = Vec::new();
        assert_eq!(
            pt.reap(f.start, f.end, |l| got.push((l.addr, l.level, l.aux))),
            1
        );
        assert_eq!(got, [(0x4000_0000, 1, 99)]);
        assert_eq!(pt.census().zapped, 0);

        // Write-protect keeps the mapping, removes write.
        let mut seen = 0;
        let f = pt.write_protect(0, VA_LIMIT, |l| {
            assert_eq!(l.aux, 7);
            seen += 1
        });
        assert_eq!(seen, 1);
        assert_eq!(f.map(|f| (f.start, f.end)), Some((va, va + 0x1000)));
        assert_eq!(pt.translate(va).unwrap().perm, Perm::RO);
        assert_eq!(
            pt.write_protect(0, VA_LIMIT, |_| {}),
            None,
            "nothing writable left"
        );

        // Empty leaf tables are unlinked, then freed after the (caller's) flush.
        assert!(pt.zap(va, va + 0x1000).is_some());
        assert_eq!(pt.reap(va & !(M2 - 1), (va & !(M2 - 1)) + M2, |_| {}), 1);
        let before = mem.0.load(Ordering::SeqCst);
        let d = pt.unlink_leaf_tables(va & !(M2 - 1), (va & !(M2 - 1)) + M2);
        assert_eq!(d.len(), 1);
        // SAFETY: no device walks this test's table.
        unsafe { pt.free_deferred(d) };
        assert_eq!(mem.0.load(Ordering::SeqCst), before - 1);
        assert_eq!(pt.translate(va), None);
        assert_eq!(pt.prepare(VA_LIMIT, 0), Err(MapError::Fail(Errno::EINVAL)));
    }
    assert_eq!(mem.0.load(Ordering::SeqCst), 0, "drop frees every table");
}

#[test]
fn x86_basic() {
    basic::<X86Format>();
}

#[test]
fn gfx9_basic() {
    basic::<Gfx9Format>();
}

#[test]
fn unlink_skips_tables_in_use() {
    let mem = Mem::default();
    let pt = PageTable::<X86Format, _>::new(mem.clone()).unwrap();
    pt.prepare(0x20_0000, 0).unwrap();
    pt.map(0x20_1000, 0, 0x1000, Perm::RO, 1).unwrap();
    assert!(pt.unlink_leaf_tables(0, 1 << 30).is_empty());
    // A span that does not cover the whole 2 MiB never unlinks its table.
    pt.prepare(0x40_0000, 0).unwrap();
    assert!(pt.unlink_leaf_tables(0x40_0000, 0x5f_f000).is_empty());
}

/// A span as large as the whole device address space (a range of `range_shift` 47 or 48)
/// unlinks only the empty leaf tables wholly inside it, far apart as they are, and visits only
/// linked tables: a blind 2 MiB stride over 2^48 bytes would be 2^27 walks, far too slow for a
/// unit test.
#[test]
fn unlink_over_the_whole_address_space_walks_only_linked_tables() {
    let mem = Mem::default();
    let pt = PageTable::<X86Format, _>::new(mem.clone()).unwrap();
    // Three leaf tables in three different level-3 slots, one of them still in use.
    let vas = [0x20_0000u64, 0x7f_ff00_0000 & !(M2 - 1), VA_LIMIT - M2];
    for va in vas {
        pt.prepare(va, 0).unwrap();
    }
    pt.map(vas[1] + 0x1000, 0, 0x1000, Perm::RO, 1).unwrap();
    let before = mem.0.load(Ordering::SeqCst);
    // Unaligned bounds round inwards: the first block is not wholly inside, the last is.
    let d = pt.unlink_leaf_tables(0x20_1000, VA_LIMIT);
    assert_eq!(d.len(), 1, "only the empty table wholly inside the span");
    // SAFETY: no device walks this test's table.
    unsafe { pt.free_deferred(d) };
    assert_eq!(mem.0.load(Ordering::SeqCst), before - 1);
    let d = pt.unlink_leaf_tables(0, u64::MAX);
    assert_eq!(d.len(), 1, "the first block; the one in use stays");
    // SAFETY: as above.
    unsafe { pt.free_deferred(d) };
    assert!(pt.translate(vas[1] + 0x1000).is_some());
    assert!(pt.unlink_leaf_tables(0, VA_LIMIT).is_empty());
    // A span too small to hold one whole 2 MiB block, and one at the very top of u64.
    assert!(pt.unlink_leaf_tables(vas[1], vas[1] + M2 - 1).is_empty());
    assert!(pt.unlink_leaf_tables(u64::MAX - 10, u64::MAX).is_empty());
}

#[test]
fn concurrent_prepare_installs_one_table_per_slot() {
    for _ in 0..200 {
        let mem = Mem::default();
        let pt = Arc::new(PageTable::<X86Format, _>::new(mem.clone()).unwrap());
        // Released together, so that losers of the install race (a table linked between their
        // unlocked look and their locked one) are common, not rare.
        let start = Arc::new(std::sync::Barrier::new(4));
        let hs: Vec<_> = (0..4)
            .map(|i| {
                let pt = pt.clone();
                let start = start.clone();
                std::thread::spawn(move || {
                    start.wait();
                    let va = 0x1000_0000 + i * 0x1000;
                    pt.prepare(va, 0).unwrap();
                    pt.map(va, 0, 0x10_0000 + i * 0x1000, Perm::RW, i).unwrap();
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        // Losers freed their tables: root + 3 levels.
        assert_eq!(mem.0.load(Ordering::SeqCst), 4);
        for i in 0..4u64 {
            assert_eq!(
                pt.translate(0x1000_0000 + i * 0x1000).unwrap().addr,
                0x10_0000 + i * 0x1000
            );
        }
        assert_eq!(pt.census().pages, 4);
    }
}

/// Edges the basic scenario does not reach (found by cargo-mutants).
fn edges<F: PteFormat>() {
    let mem = Mem::default();
    let pt = PageTable::<F, _>::new(mem.clone()).unwrap();
    let root = pt.root_pa();
    assert!(
        root != 0 && root % 4096 == 0,
        "root_pa is the root table's address"
    );
    // SAFETY: `root` came from `pa` of the live root.
    assert_eq!(mem.pa(unsafe { mem.va(root) }), root);

    // Argument validation of `map`.
    pt.prepare(0x40_0000, 1).unwrap();
    assert_eq!(
        pt.map(0x40_0000, 2, 0, Perm::RO, 0),
        Err(MapError::Fail(Errno::EINVAL)),
        "no level-2 leaves"
    );
    assert_eq!(
        pt.map(0x40_0000, 1, 0x1000, Perm::RO, 0),
        Err(MapError::Layout(Conflict::AddrAlign)),
        "misaligned 2 MiB address: map it as 4 KiB leaves"
    );
    assert_eq!(
        pt.map(0x40_1000, 1, 0x20_0000, Perm::RO, 0),
        Err(MapError::Fail(Errno::EINVAL)),
        "misaligned 2 MiB VA"
    );
    assert_eq!(pt.map(0x40_0000, 1, 0x20_0000, Perm::RO, 0), Ok(None));
    pt.prepare(0xc0_0000, 0).unwrap();
    assert_eq!(
        pt.map(0xc0_0000, 1, 0x20_0000, Perm::RO, 0),
        Err(MapError::Layout(Conflict::Table)),
        "a 2 MiB leaf where a table of 4 KiB leaves is"
    );

    // `get` reports the leaf's base VA and keeps reporting a zapped leaf until it is reaped.
    pt.prepare(0x80_0000, 0).unwrap();
    pt.map(0x80_3000, 0, 0x9000, Perm::RW, 3).unwrap();
    let l = pt.get(0x80_3123, 0).unwrap();
    assert_eq!((l.va, l.addr, l.aux, l.valid), (0x80_3000, 0x9000, 3, true));
    let h = pt.get(0x41_2345, 1).unwrap();
    assert_eq!((h.va, h.addr, h.level), (0x40_0000, 0x20_0000, 1));
    pt.zap(0x80_3000, 0x80_4000).unwrap();
    let z = pt.get(0x80_3000, 0).unwrap();
    assert_eq!(
        (z.valid, z.addr, z.perm, z.aux),
        (false, 0x9000, Perm::RW, 3)
    );
    assert_eq!(pt.translate(0x80_3000), None);
    let t = {
        pt.map(0x80_5000, 0, 0xa000, Perm::RO, 77).unwrap();
        pt.translate(0x80_5fff).unwrap()
    };
    assert_eq!(
        (t.addr, t.aux),
        (0xa000, 77),
        "translate hands out the software word"
    );
    pt.reap(0x80_0000, 0xa0_0000, |_| {});
    pt.zap(0x80_5000, 0x80_6000).unwrap();
    pt.reap(0x80_0000, 0xa0_0000, |_| {});

    // A zap stops at `end`: the next page survives; for_each_leaf sees valid and zapped leaves.
    pt.map(0x80_6000, 0, 0xb000, Perm::RO, 6).unwrap();
    pt.map(0x80_7000, 0, 0xc000, Perm::RO, 7).unwrap();
    let f = pt.zap(0x80_6000, 0x80_7000).unwrap();
    assert_eq!((f.start, f.end), (0x80_6000, 0x80_7000));
    assert!(pt.translate(0x80_7000).is_some(), "zap went past its end");
    let mut seen = Vec::new();
    pt.for_each_leaf(0x80_0000, 0xa0_0000, |l| seen.push((l.va, l.valid)));
    assert_eq!(seen, [(0x80_6000, false), (0x80_7000, true)]);
    let c = pt.census();
    assert_eq!((c.pages, c.huge, c.zapped), (1, 1, 1));
    assert_eq!(
        c.tables,
        mem.0.load(Ordering::SeqCst) as usize,
        "census counts every live table: {c:?}"
    );
    pt.reap(0x80_0000, 0xa0_0000, |_| {});
    pt.zap(0x80_7000, 0x80_8000).unwrap();
    pt.reap(0x80_0000, 0xa0_0000, |_| {});

    // Two empty leaf tables unlinked at once; the empty one at the span's end and the one
    // the span starts inside of are not wholly inside it, so they stay.
    pt.prepare(0xa0_0000, 0).unwrap();
    pt.prepare(0xc0_0000, 0).unwrap();
    let d = pt.unlink_leaf_tables(0x80_1000, 0xc0_0000);
    assert_eq!(
        d.len(),
        1,
        "a start inside a block rounds up to the next block"
    );
    // SAFETY: no device walks this test's table.
    unsafe { pt.free_deferred(d) };
    pt.prepare(0xa0_0000, 0).unwrap();
    let before = mem.0.load(Ordering::SeqCst);
    let d = pt.unlink_leaf_tables(0x80_0000, 0xc0_0000);
    assert_eq!(d.len(), 2);
    assert!(!d.is_empty());
    // SAFETY: no device walks this test's table.
    unsafe { pt.free_deferred(d) };
    assert_eq!(mem.0.load(Ordering::SeqCst), before - 2);
}

#[test]
fn x86_edges() {
    edges::<X86Format>();
    // Malformed entries: a non-present, non-leaf value is nothing, not a zapped leaf.
    assert_eq!(X86Format::decode(0x5000, 0), super::format::Entry::None);
    assert_eq!(
        X86Format::decode(0x5000 | 1 << 1, 1),
        super::format::Entry::None
    );
}

#[test]
fn gfx9_edges() {
    edges::<Gfx9Format>();
    use super::format::Entry;
    // A table pointer (V only) is never a leaf, at any level; a level-1 entry without PDE_PTE
    // is not a 2 MiB leaf even if it carries leaf bits.
    assert_eq!(
        Gfx9Format::decode(Gfx9Format::table(0x7000), 1),
        Entry::Table(0x7000)
    );
    assert_eq!(
        Gfx9Format::decode(Gfx9Format::table(0x7000), 2),
        Entry::Table(0x7000)
    );
    let small = Gfx9Format::leaf(0x20_0000, Perm::RW, 0);
    assert!(!matches!(Gfx9Format::decode(small, 1), Entry::Leaf { .. }));
    assert!(matches!(Gfx9Format::decode(small, 0), Entry::Leaf { .. }));
    assert_eq!(
        Gfx9Format::decode(Gfx9Format::table(0x7000), 0),
        Entry::Table(0x7000),
        "not even at level 0, where every leaf is a 4 KiB one"
    );
    // A zapped leaf keeps R, so it decodes as zapped; a cleared table pointer is nothing.
    assert_eq!(
        Gfx9Format::decode(Gfx9Format::table(0x7000) & !1, 1),
        Entry::None
    );
}

/// Levels above 1 (1 GiB leaves) are never mapped, and a format without huge leaves maps only
/// 4 KiB ones.
#[test]
fn map_refuses_levels_a_format_cannot_hold() {
    let g = 1u64 << 30;
    let pt = PageTable::<X86Format, _>::new(Mem::default()).unwrap();
    pt.prepare(g, 1).unwrap();
    assert_eq!(
        pt.map(g, 2, g, Perm::RW, 0),
        Err(MapError::Fail(Errno::EINVAL))
    );
    assert_eq!(
        pt.map(g, 3, 0, Perm::RW, 0),
        Err(MapError::Fail(Errno::EINVAL))
    );
    assert_eq!(pt.map(g, 1, g, Perm::RW, 0), Ok(None));

    /// X86Format's encoding, for a device that has no 2 MiB leaves.
    struct NoHuge;
    impl PteFormat for NoHuge {
        const NAME: &'static str = "no-huge";
        const HUGE: bool = false;
        fn table(pa: u64) -> u64 {
            X86Format::table(pa)
        }
        fn leaf(addr: u64, perm: Perm, level: u8) -> u64 {
            X86Format::leaf(addr, perm, level)
        }
        fn zap(pte: u64) -> u64 {
            X86Format::zap(pte)
        }
        fn decode(pte: u64, level: u8) -> super::format::Entry {
            X86Format::decode(pte, level)
        }
    }
    let pt = PageTable::<NoHuge, _>::new(Mem::default()).unwrap();
    pt.prepare(g, 1).unwrap();
    assert_eq!(
        pt.map(g, 1, g, Perm::RW, 0),
        Err(MapError::Fail(Errno::EINVAL))
    );
    pt.prepare(g, 0).unwrap();
    assert_eq!(pt.map(g, 0, g, Perm::RW, 0), Ok(None));
}

/// `census_guarded` asks the guard before descending into each leaf table, with the address
/// of its 2 MiB block, and counts a table it may not enter as one table and nothing else.
#[test]
fn census_guarded_enters_leaf_tables_only_through_the_guard() {
    let pt = PageTable::<X86Format, _>::new(Mem::default()).unwrap();
    let a = 0x7f12_3440_0000u64;
    let b = 0x0000_0040_0000u64;
    for (va, n) in [(a, 3u64), (b, 2)] {
        pt.prepare(va, 0).unwrap();
        for k in 0..n {
            pt.map(va + k * 0x1000, 0, 0x1000, Perm::RO, 0).unwrap();
        }
    }
    pt.prepare(a + M2, 1).unwrap();
    pt.map(a + M2, 1, 0x4000_0000, Perm::RW, 0).unwrap();
    let mut asked = Vec::new();
    let c = pt.census_guarded(|va, descend| {
        asked.push(va);
        if va == a {
            descend();
        }
    });
    asked.sort_unstable();
    assert_eq!(asked, [b, a]);
    assert_eq!((c.pages, c.huge, c.zapped), (3, 1, 0));
    // Root; levels 2 and 1 for each of the two level-3 slots; the two leaf tables.
    assert_eq!(c.tables, 1 + 2 * 2 + 2);
    assert_eq!(pt.census().pages, 5);
}

/// `reap` hands leaves over with no table lock held, in batches, every one exactly once, 4 KiB
/// and 2 MiB alike, whatever the batch boundaries.
#[test]
fn reap_hands_leaves_over_outside_the_table_locks() {
    use super::table::REAP_BATCH;
    let mem = Mem::default();
    let pt = PageTable::<X86Format, _>::new(mem.clone()).unwrap();
    let base = 0x40_0000u64;
    let n = 3 * REAP_BATCH as u64 + 5;
    pt.prepare(base, 0).unwrap();
    for k in 0..n {
        pt.map(base + k * 0x1000, 0, 0x10_0000 + k * 0x1000, Perm::RW, k)
            .unwrap();
    }
    pt.prepare(base + M2, 1).unwrap();
    pt.map(base + M2, 1, 0x4000_0000, Perm::RW, 99).unwrap();
    pt.zap(base, base + 2 * M2).unwrap();
    let mut got = Vec::new();
    let r = pt.reap(base, base + 2 * M2, |l| {
        assert_eq!(
            locks_held(),
            0,
            "a table lock is held while a leaf is handed over"
        );
        assert!(!l.valid);
        got.push((l.va, l.level, l.aux));
    });
    assert_eq!(r as u64, n + 1);
    let mut want: Vec<_> = (0..n).map(|k| (base + k * 0x1000, 0, k)).collect();
    want.push((base + M2, 1, 99));
    assert_eq!(got, want);
    assert_eq!(pt.census().zapped, 0);
    assert_eq!(pt.reap(base, base + 2 * M2, |_| panic!("reaped twice")), 0);
}

/// `reap` clears only zapped leaves inside `[start, end)`: a zapped neighbour on either side
/// belongs to an invalidation whose flush may not have happened yet.
#[test]
fn reap_stays_inside_its_span() {
    let mem = Mem::default();
    let pt = PageTable::<X86Format, _>::new(mem.clone()).unwrap();
    let base = 0x40_0000u64;
    pt.prepare(base, 0).unwrap();
    for k in 0..4u64 {
        pt.map(base + k * 0x1000, 0, 0x10_0000 + k * 0x1000, Perm::RW, k)
            .unwrap();
    }
    pt.zap(base, base + 4 * 0x1000).unwrap();
    let mut got = Vec::new();
    let n = pt.reap(base + 0x1000, base + 3 * 0x1000, |l| got.push(l.va));
    assert_eq!(n, 2);
    assert_eq!(got, [base + 0x1000, base + 0x2000]);
    assert_eq!(pt.census().zapped, 2, "the neighbours stay zapped");
    for va in [base, base + 3 * 0x1000] {
        assert!(!pt.get(va, 0).unwrap().valid, "{va:#x} was reaped");
    }
}

#[test]
fn leaf_table_reads_writes_and_fills_its_span_only() {
    let pt = PageTable::<X86Format, _>::new(Mem::default()).unwrap();
    let b = 0x40_0000u64;
    assert!(pt.leaf_table(b).is_none(), "no table yet");
    pt.prepare(b, 0).unwrap();
    let lt = pt.leaf_table(b + 0x5000).unwrap();
    assert!(lt.covers(b) && lt.covers(b + M2 - 0x1000));
    assert!(!lt.covers(b - 0x1000) && !lt.covers(b + M2));

    assert_eq!(lt.get(b + 0x1000), None);
    assert_eq!(lt.map(b + 0x1000, 0x9000, Perm::RO, 5), Ok(None));
    let l = lt.get(b + 0x1000).unwrap();
    assert_eq!(
        (l.va, l.addr, l.aux, l.valid),
        (b + 0x1000, 0x9000, 5, true)
    );
    assert_eq!(pt.get(b + 0x1000, 0), Some(l));
    assert_eq!(
        lt.map(b + 0x1001, 0x9000, Perm::RO, 5),
        Err(MapError::Fail(Errno::EINVAL))
    );
    assert_eq!(
        lt.map(b + 0x2000, 0x9800, Perm::RO, 5),
        Err(MapError::Layout(Conflict::AddrAlign))
    );

    // `fill` writes empty slots in order, under one lock hold, and stops at an occupied slot,
    // a misaligned address or a page outside the span.
    let nl = |va: u64, addr: u64| NewLeaf {
        va,
        addr,
        perm: Perm::RW,
        aux: addr >> 12,
    };
    assert_eq!(
        lt.fill(&[
            nl(b + 0x2000, 0xa000),
            nl(b + 0x3000, 0xb000),
            nl(b + 0x1000, 0xc000)
        ]),
        2
    );
    for (va, addr) in [
        (b + 0x2000, 0xa000),
        (b + 0x3000, 0xb000),
        (b + 0x1000, 0x9000),
    ] {
        let l = pt.get(va, 0).unwrap();
        assert_eq!((l.addr, l.valid), (addr, true), "leaf at {va:#x}");
    }
    assert_eq!(pt.translate(b + 0x3456).unwrap().addr, 0xb000);
    assert_eq!(lt.fill(&[nl(b + 0x4000, 0xd000), nl(b + M2, 0xe000)]), 1);
    assert_eq!(lt.fill(&[nl(b + 0x5000, 0xd800)]), 0, "misaligned address");
    assert_eq!(lt.fill(&[nl(b + 0x5800, 0xd000)]), 0, "misaligned VA");
    assert_eq!(pt.get(b + 0x5000, 0), None);
    assert_eq!(lt.fill(&[]), 0);

    // Outside its span, `get` and `map` go through the page table.
    assert_eq!(lt.get(b + M2), None);
    assert_eq!(
        lt.map(b + M2, 0xf000, Perm::RO, 1),
        Err(MapError::Layout(Conflict::NoTable))
    );
    pt.prepare(b + M2, 0).unwrap();
    assert_eq!(lt.map(b + M2, 0xf000, Perm::RO, 1), Ok(None));
    assert_eq!(lt.get(b + M2).unwrap().addr, 0xf000);

    // A 2 MiB leaf over the span: no leaf table.
    let h = 0x80_0000u64;
    pt.prepare(h, 1).unwrap();
    pt.map(h, 1, 0x4000_0000, Perm::RO, 0).unwrap();
    assert!(pt.leaf_table(h).is_none());
    assert!(pt.leaf_table(VA_LIMIT).is_none());
}
