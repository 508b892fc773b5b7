//! Device atomics: the CPU hands pages over (`make_device_exclusive_range()`) and the device
//! maps them with atomic leaves. See `Documentation/design.rst`, "Device atomics".
//!
//! A step covers at most [`MIGRATE_CHUNK`] pages of one range, one VMA and one 2 MiB block:
//!
//! 1. Fault the pages in for writing with `hmm_range_fault()`. An exclusive entry this engine
//!    left earlier is taken back here (its page restored, the atomic leaf zapped) before the
//!    seq is read: `make_device_exclusive_range()`'s own `get_user_pages` would take it back
//!    after, under an ownerless `MMU_NOTIFY_EXCLUSIVE`, and every round would then fail its
//!    seq check.
//! 2. `read_begin`, then `make_device_exclusive_range()` with the engine's own owner. Its
//!    `MMU_NOTIFY_EXCLUSIVE` callbacks are skipped whole (no seq, no zap, as nouveau does): the
//!    CPU entry keeps the same page, so a leaf already mapping it stays right, and a seq set
//!    here would fail the step's own check every time.
//! 3. Under the range lock, `read_retry`, then write an atomic leaf per page (an existing
//!    writable leaf of the page keeps its DMA mapping and gains the atomic bit).
//! 4. Release the pages. Until then a CPU access to one waits for its lock, so it cannot take
//!    the page back between the check and the leaves; after, it takes it back under an
//!    `MMU_NOTIFY_EXCLUSIVE` with no owner, which zaps the atomic leaf as any invalidation
//!    does.

use super::engine::{leaf_pfn, Engine, Scratch, AUX_DMA_WRITE, AUX_LOCAL, MIGRATE_CHUNK};
use super::pgtable::table::{HUGE_SHIFT, PAGE_SHIFT};
use super::pgtable::{Conflict, Errno, Lock, MapError, Perm};
use super::platform::{
    Event, HmmRequest, Interval, Invalidation, Mm, Platform, RangeMap, HMM_PFN_REQ_FAULT,
    HMM_PFN_REQ_WRITE,
};
use super::range::{InFlight, Range};
use super::stats::Counters;

const PAGE: u64 = 1 << PAGE_SHIFT;
const HUGE: u64 = 1 << HUGE_SHIFT;

/// How one round of a step ended.
enum Round {
    /// Atomic leaves written for the whole step.
    Done,
    /// Something changed under the round (or a page was not handed over): go round again.
    Again,
    /// The range was removed: look it up again.
    Dead,
}

impl<P: Platform> Engine<P> {
    /// The owner this engine passes to `make_device_exclusive_range()`: its own address, so
    /// the callbacks it skips are those of its own hand-overs only (another engine's, even of
    /// the same device, zap as any invalidation does).
    pub(crate) fn exclusive_owner(&self) -> u64 {
        self as *const Self as u64
    }

    /// Services a device atomic fault at `va` (any byte of the page): the page is handed over
    /// and mapped with an atomic leaf. Errors as [`Engine::make_exclusive`].
    pub fn fault_atomic(&self, scratch: &mut Scratch, va: u64) -> Result<(), Errno> {
        let page = va & !(PAGE - 1);
        let r = self.make_exclusive(scratch, page, PAGE, &mut 0);
        self.count_fault(&r);
        r
    }

    /// Hands the pages of `[start, start + len)` over to the device for atomics and maps
    /// them with atomic leaves, until the CPU (or any other invalidation) takes them back.
    /// Restartable: `done` says how many bytes from `start` were handled. `EINVAL` for a
    /// misaligned, empty, overflowing or kernel range; `EFAULT` for a hole, PROT_NONE or I/O
    /// memory; `EPERM` for memory the CPU may not write, or that is not private; `EBUSY` when
    /// the pages kept being taken back past the retry budget, or for a page of a large folio
    /// mapped by PTEs (6.12 hands over none, and the kernel glue can split only a THP still
    /// mapped by its PMD); `ESRCH` once the mm is gone;
    /// `EOPNOTSUPP` on a platform without device-exclusive entries.
    pub fn make_exclusive(
        &self,
        scratch: &mut Scratch,
        start: u64,
        len: u64,
        done: &mut u64,
    ) -> Result<(), Errno> {
        *done = 0;
        let end = self.user_span(start, len)?;
        // A step of 0: the range was removed under us.
        self.by_steps(start, end, done, |va, deadline| {
            self.exclusive_step(scratch, va, end, deadline)
        })
    }

    /// Whether any page of `[start, end)` has an atomic leaf now. Each range's leaves are read
    /// inside its walk guard (`InFlight`), as `census` reads them: GC may be freeing the leaf
    /// tables of a range that is going.
    pub fn has_atomic(&self, start: u64, end: u64) -> bool {
        let size = 1u64 << self.cfg.range_shift;
        let mut va = start & !(size - 1);
        while va < end {
            if let Some(r) = self.ranges.get(self.range_key(va)) {
                if let Some(_walk) = InFlight::enter(&r) {
                    let mut any = false;
                    self.pt
                        .for_each_leaf(start.max(r.start), end.min(r.end), |l| {
                            any |= l.valid && l.perm.atomic
                        });
                    if any {
                        return true;
                    }
                }
            }
            match va.checked_add(size) {
                Some(v) => va = v,
                None => break,
            }
        }
        false
    }

    /// One step from `va`: the bytes handled, or 0 if the range died.
    fn exclusive_step(
        &self,
        scratch: &mut Scratch,
        va: u64,
        end: u64,
        deadline: u64,
    ) -> Result<u64, Errno> {
        let range = self.range_for(va, true)?;
        let Some(_inflight) = InFlight::enter(&range) else {
            return Ok(0);
        };
        let iv = range.interval();
        let ce = end
            .min(range.end)
            .min((va | (HUGE - 1)) + 1)
            .min(va + ((MIGRATE_CHUNK as u64) << PAGE_SHIFT));
        loop {
            if self.plat.now_ns() > deadline {
                Counters::add(&self.stats.retry_timeouts, 1);
                return Err(Errno::EBUSY);
            }
            let ce = self.exclusive_prefault(iv, scratch, va, ce)?;
            let n = ((ce - va) >> PAGE_SHIFT) as usize;
            let seq = iv.read_begin();
            let mut g = self.mm.mmap_read()?;
            if self.mm.vma(&g, va).is_none_or(|v| v.end < ce) {
                // The VMA changed since the prefault: look again.
                continue;
            }
            let pages = &mut scratch.src[..n];
            pages.fill(0);
            let got = self
                .mm
                .make_exclusive(&mut g, va, pages, self.exclusive_owner());
            let r = match got {
                Ok(got) if got == n && pages.iter().all(|&p| p != 0) => {
                    self.exclusive_commit(&range, seq, va, pages)
                }
                Ok(_) => Ok(Round::Again),
                Err(e) => Err(e),
            };
            // Only now may the CPU take the pages back (and zap the leaves just written).
            self.mm.release_exclusive(pages);
            drop(g);
            match r? {
                Round::Done => return Ok(ce - va),
                Round::Dead => return Ok(0),
                Round::Again => {
                    Counters::add(&self.stats.retries_foreign, 1);
                    self.plat.relax();
                }
            }
        }
    }

    /// Step 1: faults `[va, ce)` in for writing (clamped to the VMA; returned), taking back
    /// any page still handed over, and our own device pages to system memory (only system
    /// pages can be handed over).
    fn exclusive_prefault(
        &self,
        iv: &<P::Mm as Mm>::Interval,
        scratch: &mut Scratch,
        va: u64,
        ce: u64,
    ) -> Result<u64, Errno> {
        let mut g = self.mm.mmap_read()?;
        let vma = self.mm.vma(&g, va).ok_or(Errno::EFAULT)?;
        if vma.io || !vma.read {
            return Err(Errno::EFAULT);
        }
        if !vma.write {
            return Err(Errno::EPERM);
        }
        let ce = ce.min(vma.end);
        if cfg!(feature = "teeth-exclusive-no-prefault") {
            return Ok(ce);
        }
        let n = ((ce - va) >> PAGE_SHIFT) as usize;
        let pfns = &mut scratch.pfns[..n];
        pfns.fill(HMM_PFN_REQ_FAULT | HMM_PFN_REQ_WRITE);
        let mut req = HmmRequest {
            notifier: iv,
            seq: iv.read_begin(),
            start: va,
            pfns,
            dev_private_owner: 0,
        };
        match self.mm.hmm_range_fault(&mut g, &mut req) {
            // A seq that moved only means something changed meanwhile: step 2 reads it anew.
            Ok(()) | Err(Errno::EBUSY) => Ok(ce),
            Err(e) => Err(e),
        }
    }

    /// Step 3: under the range lock, if nothing changed since `seq`, maps each handed-over
    /// page of `pages` (at `va` on) with an atomic leaf.
    fn exclusive_commit(
        &self,
        range: &Range<P>,
        seq: u64,
        va: u64,
        pages: &[u64],
    ) -> Result<Round, Errno> {
        let iv = range.interval();
        let prep = self.pt.prepare(va, 0);
        let _serial = self.serial.fault();
        let mut st = range.lock.lock();
        if st.dead {
            return Ok(Round::Dead);
        }
        st.owner = true;
        match prep {
            Ok(()) => {}
            Err(MapError::Layout(Conflict::HugeLeaf)) => {
                // A 2 MiB leaf covers the pages: release it, and go round.
                let b = va & !(HUGE - 1);
                self.evict(&mut st, b, b + HUGE);
                return Ok(Round::Again);
            }
            Err(e) => return Err(e.into()),
        }
        if !cfg!(feature = "teeth-exclusive-no-seq") && iv.read_retry(seq) {
            return Ok(Round::Again);
        }
        let end = va + ((pages.len() as u64) << PAGE_SHIFT);
        if Self::claimed(&st, va, end) {
            return Ok(Round::Again);
        }
        let lt = self.pt.leaf_table(va);
        let Some(lt) = lt.as_ref() else {
            return Ok(Round::Again);
        };
        for (i, &pfn) in pages.iter().enumerate() {
            let a = va + ((i as u64) << PAGE_SHIFT);
            if let Some(l) = lt.get(a) {
                let dma_write = l.aux & (AUX_DMA_WRITE | AUX_LOCAL) == AUX_DMA_WRITE;
                if l.valid && leaf_pfn(l.aux) == pfn && dma_write {
                    // The page's own writable mapping: only the atomic bit is new.
                    lt.map(a, l.addr, Perm::ATOMIC, l.aux)?;
                    Counters::add(&self.stats.atomic_mapped, 1);
                    continue;
                }
                self.evict(&mut st, a, a + PAGE);
            }
            let (addr, perm, aux) = self.map_page(pfn, Perm::ATOMIC, true)?;
            if let Err(e) = lt.map(a, addr, perm, aux) {
                self.unmap_leaf(addr, aux, 0);
                return match e {
                    MapError::Layout(_) => Ok(Round::Again),
                    MapError::Fail(e) => Err(e),
                };
            }
            st.mapped += 1;
            Counters::add(&self.stats.atomic_mapped, 1);
        }
        Ok(Round::Done)
    }

    /// Whether `inv` is the `MMU_NOTIFY_EXCLUSIVE` of one of this engine's own hand-overs
    /// (see the module documentation): nothing to do, not even the seq.
    pub(crate) fn own_exclusive(&self, inv: &Invalidation) -> bool {
        inv.event == Event::Exclusive
            && (inv.owner == self.exclusive_owner() || cfg!(feature = "teeth-exclusive-skip-any"))
    }
}
