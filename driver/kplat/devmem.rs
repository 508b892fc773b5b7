// SPDX-License-Identifier: GPL-2.0
//! `Devmem` over a `MEMORY_DEVICE_PRIVATE` pagemap (glue.c's `struct svm_devmem`): the
//! simulated device's own memory, as `lib/test_hmm.c` makes it. Each page in use is backed by
//! a system page the driver owns (`zone_device_data`), which holds its bytes; the copy engine
//! copies between those. The allocator is a bitmap of atomics, because pages come back through
//! the pagemap's `page_free`, which may run in any context.

use super::{KArc, KMm, GFP};
use crate::ffi;
use crate::pgtable::Errno;
use crate::platform::{
    migrate_pfn, migrate_pfn_pfn, Devmem, SharedPtr, MIGRATE_PFN_MIGRATE, MIGRATE_PFN_WRITE,
};
use core::ffi::c_void;
use core::mem::ManuallyDrop;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use kernel::prelude::*;

const PAGE_SHIFT: u32 = 12;
/// Pages evicted per `migrate_device_range()` call.
const EVICT_CHUNK: usize = 64;

/// One device's memory.
///
/// # Invariants
/// `dm` is the glue's pagemap, live until `Drop` (which evicts every page first); its `rs`
/// pointer is this value, which never moves (it lives in a `KArc`). Bit `i` of `map` is set
/// while page `first + i` is in use (allocated, not yet back through `page_free`); `born[i]`
/// is when it was last allocated or `touch`ed (a tick of `clock`), the order eviction
/// follows.
pub struct KDevmem {
    dm: *mut ffi::Devmem,
    first: u64,
    npages: u64,
    owner: u64,
    map: KVec<AtomicU64>,
    born: KVec<AtomicU64>,
    clock: AtomicU64,
    hint: AtomicUsize,
    used: AtomicUsize,
}

// SAFETY: the pagemap may be used from any thread; everything else is atomics.
unsafe impl Send for KDevmem {}
// SAFETY: as above.
unsafe impl Sync for KDevmem {}

impl KDevmem {
    /// A device memory of `mib` MiB (1 ..= 65536), whose pagemap owner is `owner` (a peer
    /// memory's [`Devmem::owner`]: one interconnect), or its own (0).
    pub fn new(mib: u64, owner: u64) -> Result<KArc<KDevmem>, Errno> {
        if !(1..=65536).contains(&mib) {
            return Err(Errno::EINVAL);
        }
        let npages = mib << (20 - PAGE_SHIFT);
        let words = (npages / 64) as usize;
        let mut map = KVec::with_capacity(words, GFP).map_err(|_| Errno::ENOMEM)?;
        for _ in 0..words {
            map.push(AtomicU64::new(0), GFP).map_err(|_| Errno::ENOMEM)?;
        }
        let mut born = KVec::with_capacity(npages as usize, GFP).map_err(|_| Errno::ENOMEM)?;
        for _ in 0..npages {
            born.push(AtomicU64::new(0), GFP).map_err(|_| Errno::ENOMEM)?;
        }
        let mut first = 0;
        let mut dm = core::ptr::null_mut();
        // SAFETY: no preconditions; `first` and `dm` are written on success.
        let rc =
            unsafe { ffi::svm_devmem_create(npages << PAGE_SHIFT, owner, &mut first, &mut dm) };
        if rc != 0 {
            return Err(Errno(-rc));
        }
        // SAFETY: `dm` was just created.
        let owner = unsafe { ffi::svm_devmem_owner(dm) };
        let d = KArc::new(KDevmem {
            dm,
            first,
            npages,
            owner,
            map,
            born,
            clock: AtomicU64::new(1),
            hint: AtomicUsize::new(0),
            used: AtomicUsize::new(0),
        });
        match d {
            Ok(d) => {
                // SAFETY: no page is in use, so no callback can run yet; `d` never moves.
                unsafe { ffi::svm_devmem_set_rs(dm, &*d as *const KDevmem as *mut c_void) };
                Ok(d)
            }
            Err(e) => {
                // SAFETY: no page was ever handed out.
                unsafe { ffi::svm_devmem_destroy(dm) };
                Err(e)
            }
        }
    }

    /// Pages in use.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Pages in all.
    pub fn pages(&self) -> u64 {
        self.npages
    }

    fn index(&self, pfn: u64) -> Option<usize> {
        pfn.checked_sub(self.first)
            .filter(|i| *i < self.npages)
            .map(|i| i as usize)
    }

    /// A free page, its bit set (no page struct touched yet).
    fn take(&self) -> Option<u64> {
        let words = self.map.len();
        let start = self.hint.load(Ordering::Relaxed) % words.max(1);
        for k in 0..words {
            let w = (start + k) % words;
            let mut cur = self.map[w].load(Ordering::Relaxed);
            while cur != u64::MAX {
                let bit = (!cur).trailing_zeros();
                match self.map[w].compare_exchange_weak(
                    cur,
                    cur | 1 << bit,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        self.hint.store(w, Ordering::Relaxed);
                        self.used.fetch_add(1, Ordering::Relaxed);
                        return Some(self.first + (w as u64) * 64 + u64::from(bit));
                    }
                    Err(now) => cur = now,
                }
            }
        }
        None
    }

    /// Gives page `pfn` back (the pagemap's `page_free`, or an allocation that failed).
    fn give_back(&self, pfn: u64) {
        let Some(i) = self.index(pfn) else {
            return;
        };
        let old = self.map[i / 64].fetch_and(!(1 << (i % 64)), Ordering::Release);
        if old & 1 << (i % 64) != 0 {
            self.used.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Moves every page in use back to system memory, whatever maps it (`RELEASE`; before the
    /// pagemap goes). Pages a migration holds right now are skipped by the kernel; they come
    /// back to the free list when it finishes.
    pub fn evict_all(&self) -> Result<(), Errno> {
        let mut buf = Evict::new()?;
        let mut pfn = self.first;
        while pfn < self.first + self.npages {
            let n = (self.first + self.npages - pfn).min(EVICT_CHUNK as u64);
            buf.range(pfn, n, true)?;
            pfn += n;
        }
        Ok(())
    }

    /// Fills `out` (its length: how many) with the pages in use used longest ago (allocated or
    /// `touch`ed), oldest first, as (tick, pfn); unused slots keep tick `u64::MAX`.
    fn oldest(&self, out: &mut [(u64, u64)]) {
        out.fill((u64::MAX, 0));
        let Some(last) = out.len().checked_sub(1) else {
            return;
        };
        for w in 0..self.map.len() {
            let mut bits = self.map[w].load(Ordering::Relaxed);
            while bits != 0 {
                let b = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let i = w * 64 + b;
                let t = self.born[i].load(Ordering::Relaxed);
                if t >= out[last].0 {
                    continue;
                }
                let pos = out.iter().position(|&(bt, _)| t < bt).unwrap_or(last);
                out.copy_within(pos..last, pos + 1);
                out[pos] = (t, self.first + i as u64);
            }
        }
    }
}

/// The arrays of one eviction (`migrate_device_range()` and friends, and its victims).
struct Evict {
    src: KVec<u64>,
    dst: KVec<u64>,
    victims: KVec<(u64, u64)>,
}

impl Evict {
    fn new() -> Result<Self, Errno> {
        let mut src = KVec::with_capacity(EVICT_CHUNK, GFP).map_err(|_| Errno::ENOMEM)?;
        let mut dst = KVec::with_capacity(EVICT_CHUNK, GFP).map_err(|_| Errno::ENOMEM)?;
        let mut victims = KVec::with_capacity(EVICT_CHUNK, GFP).map_err(|_| Errno::ENOMEM)?;
        for _ in 0..EVICT_CHUNK {
            src.push(0u64, GFP).map_err(|_| Errno::ENOMEM)?;
            dst.push(0u64, GFP).map_err(|_| Errno::ENOMEM)?;
            victims.push((u64::MAX, 0), GFP).map_err(|_| Errno::ENOMEM)?;
        }
        Ok(Evict { src, dst, victims })
    }

    /// Moves the pages in use among `[pfn, pfn + n)` (`n` at most [`EVICT_CHUNK`]) back to
    /// new system pages (`nofail`: `__GFP_NOFAIL`, else a page that gets none stays). Returns
    /// how many moved.
    fn range(&mut self, pfn: u64, n: u64, nofail: bool) -> Result<usize, Errno> {
        let (s, d) = (&mut self.src[..n as usize], &mut self.dst[..n as usize]);
        s.fill(0);
        d.fill(0);
        // SAFETY: `s` holds `n` entries; the pfns are this pagemap's.
        let rc = unsafe { ffi::svm_migrate_device_range(s.as_mut_ptr(), pfn, n) };
        if rc != 0 {
            return Err(Errno(-rc));
        }
        for i in 0..n as usize {
            if s[i] & MIGRATE_PFN_MIGRATE == 0 {
                continue;
            }
            let Some(from) = migrate_pfn_pfn(s[i]) else {
                continue;
            };
            // SAFETY: no preconditions (may sleep; no lock of ours is held).
            let to = unsafe { ffi::svm_alloc_locked_page(nofail) };
            if to == 0 {
                continue;
            }
            // SAFETY: both pages are live and locked for this migration.
            unsafe { ffi::svm_copy_pfn(to, from) };
            d[i] = migrate_pfn(to) | (s[i] & MIGRATE_PFN_WRITE);
        }
        // SAFETY: `s`, `d` hold `n` entries, filled as the kernel expects.
        unsafe { ffi::svm_migrate_device_pages(s.as_mut_ptr(), d.as_mut_ptr(), n) };
        let moved = s
            .iter()
            .zip(d.iter())
            .filter(|(s, d)| *s & MIGRATE_PFN_MIGRATE != 0 && **d != 0)
            .count();
        // SAFETY: as above.
        unsafe { ffi::svm_migrate_device_finalize(s.as_mut_ptr(), d.as_mut_ptr(), n) };
        Ok(moved)
    }
}

impl Drop for KDevmem {
    fn drop(&mut self) {
        // memunmap_pages() waits for every page: bring them all back first. Failing that
        // (no memory for the src/dst arrays) would hang the unload: retry until it works.
        while self.evict_all().is_err() {
            crate::device::resched();
        }
        // SAFETY: created in `new`; every page is free now, no callback can come.
        unsafe { ffi::svm_devmem_destroy(self.dm) };
    }
}

impl Devmem for KDevmem {
    fn owner(&self) -> u64 {
        self.owner
    }

    fn local_addr(&self, pfn: u64) -> Option<u64> {
        self.index(pfn).map(|i| (i as u64) << PAGE_SHIFT)
    }

    fn peer_page(&self, pfn: u64) -> bool {
        // SAFETY: `pfn` is a page hmm reported (its struct page exists for as long as the
        // kernel runs: system memory, or a pagemap of ours, which lives until module exit).
        self.index(pfn).is_none() && unsafe { ffi::svm_pfn_private_owner(pfn) } == self.owner
    }

    fn alloc_device(&self) -> Option<u64> {
        let pfn = self.take()?;
        // SAFETY: `pfn` is ours and was free: nothing else touches its page struct.
        if unsafe { ffi::svm_devmem_page_init(pfn) } != 0 {
            self.give_back(pfn);
            return None;
        }
        if let Some(i) = self.index(pfn) {
            let t = self.clock.fetch_add(1, Ordering::Relaxed);
            self.born[i].store(t, Ordering::Relaxed);
        }
        Some(pfn)
    }

    fn touch(&self, pfn: u64) {
        if let Some(i) = self.index(pfn) {
            let t = self.clock.fetch_add(1, Ordering::Relaxed);
            self.born[i].store(t, Ordering::Relaxed);
        }
    }

    fn evict(&self, pages: usize) -> usize {
        let want = pages.min(EVICT_CHUNK);
        let Ok(mut buf) = Evict::new() else {
            return 0;
        };
        let mut victims = core::mem::take(&mut buf.victims);
        self.oldest(&mut victims[..want]);
        victims[..want]
            .iter()
            .filter(|&&(t, _)| t != u64::MAX)
            .map(|&(_, pfn)| buf.range(pfn, 1, false).unwrap_or(0))
            .sum()
    }

    fn alloc_system(&self, _va: u64) -> Option<u64> {
        // SAFETY: no preconditions.
        let pfn = unsafe { ffi::svm_alloc_locked_page(false) };
        (pfn != 0).then_some(pfn)
    }

    fn free_unused(&self, pfn: u64) {
        // SAFETY: a page `alloc_device` or `alloc_system` returned, still locked and unused.
        unsafe { ffi::svm_put_locked_page(pfn) };
    }

    fn copy(&self, dst: u64, src: Option<u64>) -> Result<(), Errno> {
        // SAFETY: both are live pages held for the migration (locked, referenced).
        unsafe { ffi::svm_copy_pfn(dst, src.unwrap_or(0)) };
        Ok(())
    }
}

/// A context's device memory: a device's, or none.
pub struct KDevRef(pub Option<KArc<KDevmem>>);

impl Devmem for KDevRef {
    fn owner(&self) -> u64 {
        self.0.as_ref().map_or(0, |d| d.owner())
    }
    fn local_addr(&self, pfn: u64) -> Option<u64> {
        self.0.as_ref()?.local_addr(pfn)
    }
    fn peer_page(&self, pfn: u64) -> bool {
        self.0.as_ref().is_some_and(|d| d.peer_page(pfn))
    }
    fn alloc_device(&self) -> Option<u64> {
        self.0.as_ref()?.alloc_device()
    }
    fn alloc_system(&self, va: u64) -> Option<u64> {
        self.0.as_ref()?.alloc_system(va)
    }
    fn free_unused(&self, pfn: u64) {
        if let Some(d) = &self.0 {
            d.free_unused(pfn)
        }
    }
    fn touch(&self, pfn: u64) {
        if let Some(d) = &self.0 {
            d.touch(pfn)
        }
    }
    fn evict(&self, pages: usize) -> usize {
        self.0.as_ref().map_or(0, |d| d.evict(pages))
    }
    fn copy(&self, dst: u64, src: Option<u64>) -> Result<(), Errno> {
        match &self.0 {
            Some(d) => d.copy(dst, src),
            None => Err(Errno::EOPNOTSUPP),
        }
    }
}

/// The pagemap's `page_free`: page `pfn` is free again.
///
/// # Safety
/// `rs` is the `KDevmem` the pagemap was created for (`svm_devmem_set_rs`).
#[no_mangle]
pub unsafe extern "C" fn svm_rs_devmem_free(rs: *mut c_void, pfn: u64) {
    // SAFETY: per the contract; it outlives its pagemap.
    let d = unsafe { &*(rs as *const KDevmem) };
    d.give_back(pfn);
}

/// The pagemap's `migrate_to_ram`: a CPU fault at `addr` of `mm` found page `fault_pfn`,
/// which the fault holds locked. 0 or -errno.
///
/// # Safety
/// `rs` as above; `mm` is the faulting mm, its `mmap_lock` held for read.
#[no_mangle]
pub unsafe extern "C" fn svm_rs_migrate_to_ram(
    rs: *mut c_void,
    mm: *mut ffi::MmStruct,
    addr: u64,
    fault_pfn: u64,
) -> i32 {
    // SAFETY: per the contract.
    let d = unsafe { &*(rs as *const KDevmem) };
    // Borrowed: the fault holds the mm; never dropped (no mmdrop).
    // SAFETY: `mm` is live for the call.
    let m = ManuallyDrop::new(unsafe { KMm::borrowed(mm) });
    match crate::migrate::migrate_to_ram(&*m, d, addr, fault_pfn) {
        Ok(()) => 0,
        Err(e) => -e.0,
    }
}
