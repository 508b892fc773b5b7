//! The DMA tracker and page-table memory.

use super::PG;
use crate::tablemem::POISON_DMA;
use crate::{DmaTracker, MapFlags, MmHandle, ModelLock, Prot, TableMem};
use pgtable::{Entry, Lock, LockClass, PtMem, PteFormat, X86Format};
use svm::platform::Dma;

fn pages(mm: &MmHandle, n: u64) -> Vec<u64> {
    let a = mm.mmap(n * PG, Prot::RW, MapFlags::ANON).unwrap();
    (0..n)
        .map(|i| {
            mm.cpu_write(a + i * PG, i).unwrap();
            mm.cpu_pte(a + i * PG).unwrap().0
        })
        .collect()
}

#[test]
fn map_unmap_resolve_and_misuse() {
    let mm = MmHandle::new();
    let v = mm.violations().clone();
    let _s = v.scope();
    let dma = DmaTracker::new(&mm, v.clone());
    let p = pages(&mm, 2);
    let range = ModelLock::new((), LockClass::Range);
    let g = range.lock();
    let a = dma.map(p[0], 0, true).unwrap();
    let b = dma.map(p[1], 0, true).unwrap();
    assert!(a >= 1 << 40 && a.is_multiple_of(PG) && b != a);
    assert_eq!(dma.resolve(a + 100), Some(p[0]));
    assert_eq!(dma.live(), 2);
    dma.unmap(a, p[0], 0, true);
    assert_eq!(dma.resolve(a), None);
    assert!(v.is_empty());
    dma.unmap(a, p[0], 0, true);
    assert_eq!(v.count(), 1, "double unmap");
    dma.unmap(b, p[1], 9, true);
    assert_eq!(v.count(), 2, "size mismatch");
    dma.unmap(b, p[1], 0, true);
    drop(g);
    mm.munmap(mm.vmas()[0].0, 2 * PG).unwrap();
    let g = range.lock();
    dma.map(p[0], 0, true).unwrap();
    assert_eq!(v.count(), 3, "mapping a freed page");
    dma.set_dirty(p[1]);
    assert_eq!(v.count(), 4, "set_page_dirty of a freed page");
    drop(g);
    assert_eq!(dma.leaks().len(), 1);
}

#[test]
fn huge_mapping_alignment() {
    let mm = MmHandle::new();
    let v = mm.violations().clone();
    let _s = v.scope();
    let dma = DmaTracker::new(&mm, v.clone());
    let t = mm.mmap(2 << 20, Prot::RW, MapFlags::THP).unwrap();
    mm.cpu_write(t, 1).unwrap();
    let head = mm.cpu_pte(t).unwrap().0;
    let small = pages(&mm, 1)[0];
    let range = ModelLock::new((), LockClass::Range);
    let _g = range.lock();
    dma.map(small, 0, true).unwrap();
    let a = dma.map(head, 9, true).unwrap();
    assert_eq!(a % (2 << 20), 0);
    assert_eq!(dma.resolve(a + 5 * PG + 7), Some(head + 5));
    assert!(v.is_empty());
}

#[test]
fn dma_map_outside_the_range_lock_is_reported() {
    let mm = MmHandle::new();
    let v = mm.violations().clone();
    let _s = v.scope();
    let dma = DmaTracker::new(&mm, v.clone());
    let p = pages(&mm, 1);
    dma.map(p[0], 0, true).unwrap();
    assert_eq!(v.count(), 1);
    assert!(v.messages()[0].contains("outside the range lock"));
}

#[test]
fn table_mem_counts_poisons_and_checks_frees() {
    let v = crate::Violations::new();
    let _s = v.scope();
    let mem = TableMem::new::<X86Format>(v.clone());
    let t = mem.alloc().unwrap();
    let t2 = mem.alloc().unwrap();
    assert_eq!(mem.live_tables(), 2);
    assert_eq!(unsafe { mem.va(mem.pa(t)) }, t);
    assert_eq!(mem.pa(t) % 4096, 0, "the hardware page is page aligned");
    let hw = mem.pa(t) as *const u64;
    unsafe { mem.free(t) };
    assert_eq!(mem.live_tables(), 1);
    // The freed table's hardware page decodes as a leaf to the poison address at the leaf
    // levels (it stays allocated in quarantine).
    let first = unsafe { *hw };
    assert_eq!(
        X86Format::decode(first, 0),
        Entry::Leaf {
            addr: POISON_DMA,
            perm: pgtable::Perm::RW
        }
    );
    assert!(matches!(X86Format::decode(first, 1), Entry::Leaf { .. }));
    unsafe { mem.free(t) };
    assert_eq!(v.count(), 1, "double free");
    unsafe { mem.free(t2) };
    assert_eq!(mem.live_tables(), 0);
}

/// Directions: an unmap must name the direction of its map, and more than 7 device-writable
/// mappings of one page at once is what DMA-API debugging WARNs about; read-only
/// (`DMA_TO_DEVICE`) mappings of one page may be many.
#[test]
fn directions_and_overlapping_writable_mappings() {
    let mm = MmHandle::new();
    let v = mm.violations().clone();
    let _s = v.scope();
    let dma = DmaTracker::new(&mm, v.clone());
    let p = pages(&mm, 1);
    let range = ModelLock::new((), LockClass::Range);
    let g = range.lock();
    let ro: Vec<u64> = (0..20).map(|_| dma.map(p[0], 0, false).unwrap()).collect();
    assert!(v.is_empty(), "read-only mappings may overlap");
    let rw: Vec<u64> = (0..8).map(|_| dma.map(p[0], 0, true).unwrap()).collect();
    assert!(v.is_empty(), "8 writable mappings are still fine");
    let ninth = dma.map(p[0], 0, true).unwrap();
    assert_eq!(v.count(), 1, "a 9th writable mapping of one page");
    dma.unmap(ro[0], p[0], 0, true);
    assert_eq!(v.count(), 2, "direction mismatch");
    for a in ro.into_iter().skip(1) {
        dma.unmap(a, p[0], 0, false);
    }
    for a in rw.into_iter().chain([ninth]) {
        dma.unmap(a, p[0], 0, true);
    }
    dma.unmap(dma.map(p[0], 0, false).unwrap(), p[0], 0, false);
    drop(g);
    assert_eq!(v.count(), 2);
    assert_eq!(dma.live(), 1, "the mismatched unmap did not unmap");
}

/// A page freed while a DMA mapping of it is live is reported at the free (the invalidation
/// before it returned without releasing the mapping); one unmapped first is not.
#[test]
fn page_freed_while_dma_mapped_is_reported() {
    let mm = MmHandle::new();
    let v = mm.violations().clone();
    let _s = v.scope();
    let dma = DmaTracker::new(&mm, v.clone());
    let a = mm.mmap(2 * PG, Prot::RW, MapFlags::ANON).unwrap();
    mm.cpu_write(a, 1).unwrap();
    mm.cpu_write(a + PG, 2).unwrap();
    let p0 = mm.cpu_pte(a).unwrap().0;
    let p1 = mm.cpu_pte(a + PG).unwrap().0;
    let range = ModelLock::new((), LockClass::Range);
    let (d0, d1) = {
        let _g = range.lock();
        (
            dma.map(p0, 0, false).unwrap(),
            dma.map(p1, 0, true).unwrap(),
        )
    };
    dma.unmap(d0, p0, 0, false);
    mm.munmap(a, 2 * PG).unwrap();
    assert_eq!(v.count(), 1, "{:?}", v.messages());
    assert!(v.messages()[0].contains(&format!("pfn {p1:#x} freed with 1 DMA mapping")));
    dma.unmap(d1, p1, 0, true);
}
