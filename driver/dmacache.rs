// SPDX-License-Identifier: GPL-2.0
//! One DMA mapping per page, direction and size for the whole device, shared by every leaf of
//! every context that maps it (reference counted). Used by contexts bound while the module
//! parameter `dma_share` says so (by default: where DMA-API debugging is built in); the others
//! map per device leaf.
//!
//! A page can sit behind many device leaves at once: a `MAP_SHARED` page mapped at several
//! addresses, one page mirrored by several open files, a page a forked child and its parent
//! both mirror. Mapping it once per leaf is legal, but it spends an IOVA per alias with an
//! IOMMU, and DMA-API debugging WARNs past 7 device-writable mappings of one cacheline ("potentially
//! leaking dma-mappings"), which a user can then trigger at will (issue 9: the fuzzer found it
//! with 9 aliases of one memfd page). The engine's `Dma::map`/`unmap` pairs stay exactly as
//! they were (each under the range lock, each unmap after the flush of its leaf); this table
//! turns them into one `dma_map_page()` for the first user and one `dma_unmap_page()` after
//! the last, so the address is unmapped only once no leaf of any context can use it.
//!
//! The table is a fixed array of buckets, each an rbtree under a spinlock of its own lockdep
//! class (taken under a range lock, never under a page-table lock: `reap` unmaps after
//! dropping it; nothing is taken under it). A new entry is allocated with `GFP_NOWAIT`: `map`
//! runs under the range lock, where nothing may wait for reclaim; failing that is `ENOMEM`, as
//! a failed `dma_map_page()` is. It is accounted (`__GFP_ACCOUNT`) like the rest of a
//! context's memory, to the cgroup of the context that mapped the page first (a shared entry
//! stays charged there, as a page-cache page stays charged to the cgroup that read it in).

use crate::ffi;
use crate::kplat::{KSpin, GFP_NOWAIT_ACCOUNT};
use crate::pgtable::Errno;
use core::sync::atomic::{AtomicPtr, Ordering};
use kernel::prelude::*;
use kernel::rbtree::{RBTree, RBTreeNode};

const BUCKETS: usize = 64;

struct Mapping {
    addr: u64,
    refs: u64,
}

/// The table.
///
/// # Invariants
/// Each entry holds a live `dma_map_page()` of its key's page, order and direction, whose
/// address it records, and `refs` >= 1 users that will each call [`DmaCache::unmap`] once.
pub struct DmaCache {
    /// Built in place (locks never move).
    buckets: KBox<[KSpin<RBTree<u64, Mapping>>; BUCKETS]>,
}

/// The module's table, set by [`init`] and freed by [`exit`].
static CACHE: AtomicPtr<DmaCache> = AtomicPtr::new(core::ptr::null_mut());

/// Creates the table (module init, before any device file can open).
pub fn init() -> Result<(), Errno> {
    let mut buckets = KBox::<[KSpin<RBTree<u64, Mapping>>; BUCKETS]>::new_uninit(GFP_KERNEL)
        .map_err(|_| Errno::ENOMEM)?;
    let first = buckets.as_mut_ptr().cast::<KSpin<RBTree<u64, Mapping>>>();
    for i in 0..BUCKETS {
        // SAFETY: element `i` of the fresh array, which the box keeps in place.
        unsafe { KSpin::init_class(first.add(i), RBTree::new(), ffi::LC_DMA) };
    }
    // SAFETY: every element was initialised just above.
    let buckets = unsafe { buckets.assume_init() };
    let b = KBox::new(DmaCache { buckets }, GFP_KERNEL).map_err(|_| Errno::ENOMEM)?;
    CACHE.store(KBox::into_raw(b), Ordering::Release);
    Ok(())
}

/// Frees the table (module exit, after every device file is gone).
pub fn exit() {
    let p = CACHE.swap(core::ptr::null_mut(), Ordering::AcqRel);
    if !p.is_null() {
        // SAFETY: made by `KBox::into_raw` in `init`; no user is left (module exit).
        let c = unsafe { KBox::from_raw(p) };
        let left: usize = c.buckets.iter().map(|b| b.lock().iter().count()).sum();
        if left != 0 {
            pr_err!("BUG: {} shared DMA mappings left at exit\n", left);
        }
    }
}

/// The table. Only called between [`init`] and [`exit`], by contexts that exist only then.
pub fn get() -> &'static DmaCache {
    let p = CACHE.load(Ordering::Acquire);
    assert!(!p.is_null(), "svm DMA cache used outside module init..exit");
    // SAFETY: set in `init`, freed in `exit` once no context is left.
    unsafe { &*p }
}

fn key(pfn: u64, order: u32, write: bool) -> u64 {
    // pfn < 2^52, order <= 9: the fields do not overlap.
    pfn << 6 | u64::from(order) << 1 | u64::from(write)
}

impl DmaCache {
    fn bucket(&self, pfn: u64) -> &KSpin<RBTree<u64, Mapping>> {
        let h = pfn.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58;
        &self.buckets[h as usize % BUCKETS]
    }

    /// The device address of `pfn` (`PAGE_SIZE << order` bytes, `DMA_BIDIRECTIONAL` if
    /// `write`, else `DMA_TO_DEVICE`), mapped now or shared with its other users.
    ///
    /// # Safety
    /// `dev` is a live device; `pfn` is a page hmm just returned, under the range lock.
    pub unsafe fn map(
        &self,
        dev: *mut ffi::Device,
        pfn: u64,
        order: u32,
        write: bool,
    ) -> Result<u64, Errno> {
        let k = key(pfn, order, write);
        let b = self.bucket(pfn);
        if let Some(m) = b.lock().get_mut(&k) {
            m.refs += 1;
            return Ok(m.addr);
        }
        let mut err = 0;
        // SAFETY: per the contract.
        let addr = unsafe { ffi::svm_dma_map(dev, pfn, order, write, &mut err) };
        if err != 0 {
            return Err(Errno::ENOMEM);
        }
        let node = match RBTreeNode::new(k, Mapping { addr, refs: 1 }, GFP_NOWAIT_ACCOUNT) {
            Ok(n) => n,
            Err(_) => {
                // SAFETY: mapped just above, used by nobody.
                unsafe { ffi::svm_dma_unmap(dev, addr, order, write) };
                return Err(Errno::ENOMEM);
            }
        };
        let mut t = b.lock();
        if let Some(m) = t.get_mut(&k) {
            // Another context mapped it meanwhile: share theirs, drop ours.
            m.refs += 1;
            let shared = m.addr;
            drop(t);
            drop(node);
            // SAFETY: mapped just above, used by nobody.
            unsafe { ffi::svm_dma_unmap(dev, addr, order, write) };
            return Ok(shared);
        }
        t.insert(node);
        Ok(addr)
    }

    /// Drops one user of the mapping `addr` of `pfn`; the last one unmaps it.
    ///
    /// # Safety
    /// `dev` is a live device; `addr` came from [`DmaCache::map`] with these arguments, this
    /// user calls it once, and no leaf or TLB entry of its own uses `addr` any more.
    pub unsafe fn unmap(
        &self,
        dev: *mut ffi::Device,
        addr: u64,
        pfn: u64,
        order: u32,
        write: bool,
    ) {
        let k = key(pfn, order, write);
        let mut t = self.bucket(pfn).lock();
        match t.get_mut(&k) {
            Some(m) if m.addr == addr => {
                m.refs = m.refs.saturating_sub(1);
                if m.refs > 0 {
                    return;
                }
                t.remove(&k);
                drop(t);
                // SAFETY: the last user is gone (type invariant), per the contract.
                unsafe { ffi::svm_dma_unmap(dev, addr, order, write) };
            }
            _ => {
                drop(t);
                pr_err!(
                    "BUG: DMA unmap of {:#x} (pfn {:#x}, order {}) that the table does not hold\n",
                    addr,
                    pfn,
                    order
                );
            }
        }
    }
}
