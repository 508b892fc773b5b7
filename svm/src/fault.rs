//! Fault service (BRIEF §2, "Fault service"), batch service and prefetch.
//!
//! One fault: find or create the range; `read_begin`; under `mmap_read_lock` clamp the window
//! to VMA, range and fault-around block and run `hmm_range_fault()` with a per-pfn request
//! for the faulting page only; allocate page-table pages; take the range lock; `read_retry`;
//! DMA-map and write the leaves under the lock. Any retry goes back to `read_begin`, within a
//! time budget that ends in `EBUSY`.

use super::config::MAX_WINDOW_PAGES;
use super::engine::{
    leaf_aux, leaf_pfn, Access, DeviceFault, Engine, Scratch, AUX_DMA_WRITE, AUX_LOCAL,
};
use super::migrate::Place;
use super::pgtable::table::{HUGE_SHIFT, PAGE_SHIFT};
use super::pgtable::{Conflict, Errno, Leaf, LeafTable, Lock, MapError, NewLeaf, Perm, PteFormat};
use super::platform::{
    hmm_order, hmm_pfn, Devmem, Dma, Event, HmmRequest, Interval, Mm, Platform, RangeMap, Vma,
    HMM_PFN_REQ_FAULT, HMM_PFN_REQ_WRITE, HMM_PFN_VALID, HMM_PFN_WRITE,
};
use super::range::{InFlight, Range, RangeState};
use super::stats::Counters;
use super::trace::Trace;

const PAGE: u64 = 1 << PAGE_SHIFT;
const HUGE: u64 = 1 << HUGE_SHIFT;
const HUGE_ORDER: u32 = HUGE_SHIFT - PAGE_SHIFT;

/// Leaves a window's fault-around writes per table-lock hold.
const FILL_BATCH: usize = 16;

/// Neighbour leaves DMA-mapped and waiting to be written ([`Engine::fill_flush`]); each
/// leaf's `aux` also says how to undo its DMA mapping (pfn and direction).
struct Fill {
    leaves: [NewLeaf; FILL_BATCH],
    n: usize,
}

impl Default for Fill {
    fn default() -> Self {
        let empty = NewLeaf {
            va: 0,
            addr: 0,
            perm: Perm::RO,
            aux: 0,
        };
        Fill {
            leaves: [empty; FILL_BATCH],
            n: 0,
        }
    }
}

impl Fill {
    fn push(&mut self, l: NewLeaf) {
        self.leaves[self.n] = l;
        self.n += 1;
    }
}

/// How a commit attempt ended, short of an error.
enum Commit {
    /// Leaves written.
    Done,
    /// The table layout does not fit (a 2 MiB leaf where 4 KiB pages go, or a leaf table
    /// where a 2 MiB leaf would go): go round again, mapping 4 KiB pages.
    Relayout,
}

/// Per-fault retry bookkeeping.
struct Retry {
    deadline: u64,
    /// Our own COW break has been counted once already.
    cow_seen: bool,
    /// Prefetch: fault every page of `[page, span_end)` the window reaches, not just `page`
    /// (0: a device fault, which faults only its own page).
    span_end: u64,
    /// Map 4 KiB pages even where a 2 MiB leaf would do.
    small: bool,
}

impl<P: Platform> Engine<P> {
    /// Services one device fault at `va` (any byte of the page) for `access`.
    ///
    /// Errors: `EINVAL` for addresses at or above `task_size`; `EFAULT` for holes, PROT_NONE
    /// and VM_IO/VM_PFNMAP memory; `EPERM` for a write to memory the CPU may only read;
    /// `EBUSY` when invalidations kept racing the fault past the retry budget; `ESRCH` once the
    /// mm is gone; `ENOMEM`.
    pub fn fault(&self, scratch: &mut Scratch, va: u64, access: Access) -> Result<(), Errno> {
        let page = va & !(PAGE - 1);
        let t0 = self.trace_start(page, access, 1);
        let r = self.fault_page(scratch, page, access, 0);
        self.count_fault(&r);
        self.trace_end(t0, page, access, &r);
        r
    }

    /// Services `page` for `access` together with the pages after it up to `span_end`, as far
    /// as one window reaches (the VMA, the range, [`MAX_WINDOW_PAGES`]): every page in the
    /// window is requested, in one `hmm_range_fault()`, because the caller wants them all.
    /// If that call fails, `page` alone is serviced as a device fault would be, so the error
    /// (if any) is `page`'s own.
    ///
    /// [`MAX_WINDOW_PAGES`]: super::config::MAX_WINDOW_PAGES
    fn fault_span(
        &self,
        scratch: &mut Scratch,
        page: u64,
        span_end: u64,
        access: Access,
    ) -> Result<(), Errno> {
        let t0 = self.trace_start(page, access, (span_end - page) >> PAGE_SHIFT);
        let r = match self.fault_page(scratch, page, access, span_end) {
            Err(Errno::EFAULT | Errno::EPERM) => self.fault_page(scratch, page, access, 0),
            r => r,
        };
        self.count_fault(&r);
        self.trace_end(t0, page, access, &r);
        r
    }

    pub(crate) fn count_fault(&self, r: &Result<(), Errno>) {
        let c = if r.is_ok() {
            &self.stats.faults
        } else {
            &self.stats.fault_errors
        };
        Counters::add(c, 1);
    }

    fn fault_page(
        &self,
        scratch: &mut Scratch,
        page: u64,
        access: Access,
        span_end: u64,
    ) -> Result<(), Errno> {
        if page >= self.cfg.task_size {
            return Err(Errno::EINVAL);
        }
        let mut retry = Retry {
            deadline: self.plat.now_ns().saturating_add(self.cfg.retry_timeout_ns),
            cow_seen: false,
            span_end,
            small: false,
        };
        loop {
            let range = self.range_for(page, true)?;
            let r = match InFlight::enter(&range) {
                Some(_inflight) => self.fault_in(&range, scratch, page, access, &mut retry),
                None => Ok(false),
            };
            match r {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => {
                    self.retire_if_empty(&range);
                    return Err(e);
                }
            }
            // The range was removed under us: look it up again.
            if self.plat.now_ns() > retry.deadline {
                Counters::add(&self.stats.retry_timeouts, 1);
                return Err(Errno::EBUSY);
            }
            self.plat.relax();
        }
    }

    /// Ok(true): serviced. Ok(false): the range died; the caller looks it up again.
    fn fault_in(
        &self,
        range: &Range<P>,
        scratch: &mut Scratch,
        page: u64,
        access: Access,
        retry: &mut Retry,
    ) -> Result<bool, Errno> {
        let iv = range.interval();
        let write = access == Access::Write;
        loop {
            if self.plat.now_ns() > retry.deadline {
                Counters::add(&self.stats.retry_timeouts, 1);
                return Err(Errno::EBUSY);
            }
            // Step 2: no engine lock held (it may sleep while an invalidation runs).
            let seq = iv.read_begin();

            // Step 3.
            let (ws, n, vma) = {
                let mut g = self.mm.mmap_read()?;
                let vma = self.mm.vma(&g, page).ok_or(Errno::EFAULT)?;
                if vma.io || !vma.read {
                    return Err(Errno::EFAULT);
                }
                if write && !vma.write {
                    return Err(Errno::EPERM);
                }
                let (ws, n) = self.window(range, &vma, page, retry.span_end);
                let fi = ((page - ws) >> PAGE_SHIFT) as usize;
                let pfns = &mut scratch.pfns[..n];
                let r = if retry.span_end > page {
                    self.hmm_span(&mut g, iv, seq, ws, pfns, write)
                } else {
                    self.hmm_window(&mut g, iv, seq, ws, pfns, fi, write)
                };
                match r {
                    Ok(()) => {}
                    Err(Errno::EBUSY) => {
                        drop(g);
                        self.count_retry(range, None, page, access, retry);
                        continue;
                    }
                    Err(e) => return Err(e),
                }
                (ws, n, vma)
            };

            // Step 4: cheap early exit before allocating or locking.
            if iv.check_retry(seq) {
                self.count_retry(range, None, page, access, retry);
                continue;
            }
            let fpfn = scratch.pfns[((page - ws) >> PAGE_SHIFT) as usize];
            if fpfn & HMM_PFN_VALID == 0 {
                return Err(Errno::EFAULT);
            }
            if write && fpfn & HMM_PFN_WRITE == 0 {
                let pfn = hmm_pfn(fpfn);
                let peer = self.devmem.peer_page(pfn) && !cfg!(feature = "teeth-peer-no-ro-move");
                if self.devmem.local_addr(pfn).is_none() && !peer {
                    return Err(Errno::EPERM);
                }
                // Our own device page or a peer's, mapped read-only by the CPU (shared since a fork):
                // hmm hands it back as it is, never faulting it. Move it to system memory,
                // where the next round's write request breaks COW as for any page.
                self.migrate_step(scratch, page, page + PAGE, Place::System, &mut 0)?;
                self.count_retry(range, None, page, access, retry);
                continue;
            }
            let block = self.huge_block(range, &vma, page, fpfn, retry.small);

            // Page-table pages are allocated before the range lock (may sleep).
            let prep = match block {
                Some(b) => self.pt.prepare(b, 1),
                None => self.pt.prepare(ws, 0),
            };
            match prep {
                Ok(()) => {}
                Err(MapError::Layout(Conflict::HugeLeaf)) => {
                    // A 2 MiB leaf covers pages we will map as 4 KiB: release it first.
                    let _serial = self.serial.fault();
                    let mut st = range.lock.lock();
                    if st.dead {
                        return Ok(false);
                    }
                    st.owner = true;
                    let b = page & !(HUGE - 1);
                    self.evict(&mut st, b, b + HUGE);
                    continue;
                }
                Err(e) => return Err(e.into()),
            }

            // Step 5. The engine-wide lock of a baseline lock scope (none by default) goes
            // outside the range lock and is held to the end of the commit.
            let _serial = self.serial.fault();
            let mut st = range.lock.lock();
            if st.dead {
                return Ok(false);
            }
            // Only published ranges reach a commit (the loser of a creation race never does),
            // and one unpublished since is dead: this range owns its span now.
            st.owner = true;
            if !cfg!(feature = "teeth-no-read-retry") && iv.read_retry(seq) {
                self.count_retry(range, Some(&st), page, access, retry);
                continue;
            }
            let (cs, ce) = match block {
                Some(b) => (b, b + HUGE),
                None => (ws, ws + ((n as u64) << PAGE_SHIFT)),
            };
            if Self::claimed(&st, cs, ce) {
                // A migration is collecting pages here: come back once it has (hmm then
                // waits on its migration entries).
                drop(st);
                self.count_retry(range, None, page, access, retry);
                self.plat.relax();
                continue;
            }
            if cfg!(feature = "teeth-commit-unlocked") {
                // Teeth: commit after dropping the lock, as if read_retry and the PTE writes
                // were not one critical section.
                drop(st);
                let mut fake = RangeState {
                    dead: false,
                    owner: true,
                    mapped: 0,
                    last: None,
                    migrating: None,
                };
                let r = match block {
                    Some(b) => self.commit_huge(&mut fake, b, page, fpfn, access),
                    None => self.commit_pages(&mut fake, ws, &scratch.pfns[..n], page, access),
                };
                let mut st = range.lock.lock();
                st.mapped = st.mapped.wrapping_add(fake.mapped);
                match r? {
                    Commit::Done => return Ok(true),
                    Commit::Relayout => {
                        retry.small = true;
                        continue;
                    }
                }
            }
            let r = match block {
                Some(b) => self.commit_huge(&mut st, b, page, fpfn, access),
                None => self.commit_pages(&mut st, ws, &scratch.pfns[..n], page, access),
            };
            match r? {
                Commit::Done => return Ok(true),
                Commit::Relayout => {
                    drop(st);
                    retry.small = true;
                }
            }
        }
    }

    /// Fills `pfns` (the window at `ws`) with hmm pfns, faulting in only page `fi`.
    ///
    /// One `hmm_range_fault()` with a request on `fi` alone is not enough: on a page that needs
    /// a fault, 6.12's `hmm_vma_handle_pte()` has `hmm_vma_fault()` call `handle_mm_fault()` for
    /// every page from it to the end of the walk, whatever their request flags, which would
    /// allocate or COW-break neighbours the device never asked for. So: snapshot the window
    /// with no requests, and only if the faulting page is absent (or read-only for a write)
    /// fault that one page in a second call under the same `seq`, then snapshot the window
    /// again to see what that fault brought in.
    #[allow(clippy::too_many_arguments)]
    fn hmm_window(
        &self,
        g: &mut <P::Mm as Mm>::ReadGuard<'_>,
        iv: &<P::Mm as Mm>::Interval,
        seq: u64,
        ws: u64,
        pfns: &mut [u64],
        fi: usize,
        write: bool,
    ) -> Result<(), Errno> {
        let want = HMM_PFN_VALID | if write { HMM_PFN_WRITE } else { 0 };
        let snapshot = |g: &mut <P::Mm as Mm>::ReadGuard<'_>, pfns: &mut [u64]| {
            pfns.fill(0);
            self.mm.hmm_range_fault(
                g,
                &mut HmmRequest {
                    notifier: iv,
                    seq,
                    start: ws,
                    pfns,
                    dev_private_owner: self.devmem.owner(),
                },
            )
        };
        if pfns.len() > 1 {
            snapshot(g, &mut *pfns)?;
            if pfns[fi] & want == want {
                return Ok(());
            }
        }
        let one = &mut pfns[fi..=fi];
        one[0] = HMM_PFN_REQ_FAULT | if write { HMM_PFN_REQ_WRITE } else { 0 };
        let start = ws + ((fi as u64) << PAGE_SHIFT);
        self.mm.hmm_range_fault(
            g,
            &mut HmmRequest {
                notifier: iv,
                seq,
                start,
                pfns: one,
                dev_private_owner: self.devmem.owner(),
            },
        )?;
        if pfns.len() > 1 {
            // Pick up what the fault brought in (a THP fault populates 512 pages).
            snapshot(g, &mut *pfns)?;
        }
        Ok(())
    }

    /// Fills `pfns` (the window at `ws`) with hmm pfns, faulting in every page of it: the
    /// prefetch case, where hmm's faulting of everything after the first absent page is
    /// exactly what the caller asked for.
    fn hmm_span(
        &self,
        g: &mut <P::Mm as Mm>::ReadGuard<'_>,
        iv: &<P::Mm as Mm>::Interval,
        seq: u64,
        ws: u64,
        pfns: &mut [u64],
        write: bool,
    ) -> Result<(), Errno> {
        pfns.fill(HMM_PFN_REQ_FAULT | if write { HMM_PFN_REQ_WRITE } else { 0 });
        self.mm.hmm_range_fault(
            g,
            &mut HmmRequest {
                notifier: iv,
                seq,
                start: ws,
                pfns,
                dev_private_owner: self.devmem.owner(),
            },
        )
    }

    /// The window one fault services, clamped to the VMA and the range. A device fault
    /// (`span_end` 0) gets the naturally aligned block of `fault_around_pages` around `page`; a
    /// prefetch gets `[page, span_end)`, at most [`MAX_WINDOW_PAGES`]. Returns (start, pages).
    fn window(&self, range: &Range<P>, vma: &Vma, page: u64, span_end: u64) -> (u64, usize) {
        if span_end > page {
            let we = span_end
                .min(vma.end)
                .min(range.end)
                .min(page + ((MAX_WINDOW_PAGES as u64) << PAGE_SHIFT));
            return (page, ((we - page) >> PAGE_SHIFT) as usize);
        }
        let fa = (self.cfg.fault_around_pages as u64) << PAGE_SHIFT;
        let b = page & !(fa - 1);
        let ws = b.max(vma.start).max(range.start);
        let we = (b + fa).min(vma.end).min(range.end);
        (ws, ((we - ws) >> PAGE_SHIFT) as usize)
    }

    /// The 2 MiB block to map with one leaf, if hmm reports a PMD-mapped folio there and the
    /// block lies wholly inside the VMA and the range.
    fn huge_block(
        &self,
        range: &Range<P>,
        vma: &Vma,
        page: u64,
        fpfn: u64,
        small: bool,
    ) -> Option<u64> {
        if small || !self.cfg.huge || !P::Fmt::HUGE || hmm_order(fpfn) < HUGE_ORDER {
            return None;
        }
        let b = page & !(HUGE - 1);
        let inside = |s: u64, e: u64| s <= b && b + HUGE <= e;
        let head = hmm_pfn(fpfn) - ((page - b) >> PAGE_SHIFT);
        if !inside(vma.start, vma.end)
            || !inside(range.start, range.end)
            || head & ((1 << HUGE_ORDER) - 1) != 0
        {
            return None;
        }
        Some(b)
    }

    /// Classifies and counts one retry. A write fault's first retry after a `CLEAR` of at most
    /// one folio overlapping the pages it faulted is taken as its own COW break (and restarts
    /// the retry budget); everything else is foreign.
    fn count_retry(
        &self,
        range: &Range<P>,
        st: Option<&RangeState>,
        page: u64,
        access: Access,
        retry: &mut Retry,
    ) {
        // The pages this fault asked hmm to fault: its own, or a prefetch's whole window.
        let hi = retry.span_end.max(page + PAGE);
        let own_cow = |st: &RangeState| match st.last {
            Some((s, e, Event::Clear)) => s < hi && page < e && e - s <= HUGE,
            _ => false,
        };
        let own = access == Access::Write
            && !retry.cow_seen
            && match st {
                Some(st) => own_cow(st),
                None => own_cow(&range.lock.lock()),
            };
        if own {
            retry.cow_seen = true;
            // Not charged to the retry budget: the attempt made progress (hmm broke COW on
            // our pages). A prefetch window's COW breaks under a slow kernel can take longer
            // than the whole budget, and the retry that follows would then never run. Once
            // per fault (`cow_seen`), so the budget still bounds everything else.
            retry.deadline = self.plat.now_ns().saturating_add(self.cfg.retry_timeout_ns);
            Counters::add(&self.stats.retries_own, 1);
        } else {
            Counters::add(&self.stats.retries_foreign, 1);
        }
        self.trace(|ctx| Trace::Retry { ctx, va: page, own });
    }

    /// Whether a migration of the engine claims part of `[start, end)` (see
    /// `RangeState::migrating`).
    pub(crate) fn claimed(st: &RangeState, start: u64, end: u64) -> bool {
        match st.migrating {
            Some((s, e, _)) => {
                s < end && start < e && !cfg!(feature = "teeth-migrate-fault-ignores-claim")
            }
            None => false,
        }
    }

    /// What a leaf for the hmm pfn `v` may grant: write only to a write fault on a page the CPU
    /// may write; and the direction of its DMA mapping, `DMA_BIDIRECTIONAL` whenever the CPU may
    /// write (so a read leaf can be upgraded in place), else `DMA_TO_DEVICE`.
    fn rights(v: u64, access: Access) -> (Perm, bool) {
        let cpu_write = v & HMM_PFN_WRITE != 0;
        let perm = Perm {
            write: access == Access::Write && cpu_write,
            local: false,
            atomic: false,
        };
        (
            perm,
            cpu_write || cfg!(feature = "teeth-dma-always-bidirectional"),
        )
    }

    /// Under the range lock, before mapping `pfn` at `va` (`level` 0: 4 KiB, 1: 2 MiB) with
    /// `perm`: Ok(true) if the leaf there already maps `pfn` and now grants `perm` (upgraded to
    /// writable in place, and counted as written, when its DMA mapping allows the device to
    /// write); Ok(false) if a new leaf must be written, after releasing the old one the safe
    /// way (another page, which cannot be without an invalidation, or a `DMA_TO_DEVICE`
    /// mapping that must become writable).
    fn keep_leaf(
        &self,
        st: &mut RangeState,
        va: u64,
        level: u8,
        pfn: u64,
        perm: Perm,
        lt: Option<&LeafTable<'_, P::Fmt, P::Mem>>,
    ) -> Result<bool, Errno> {
        let Some(l) = self.leaf_get(lt, va, level) else {
            return Ok(false);
        };
        if l.valid && leaf_pfn(l.aux) == pfn {
            if !perm.write || l.perm.write {
                return Ok(true);
            }
            if l.aux & AUX_DMA_WRITE != 0 {
                let perm = if l.aux & AUX_LOCAL != 0 {
                    perm.local()
                } else {
                    perm
                };
                self.leaf_map(lt, va, level, l.addr, perm, l.aux)?;
                let c = if level == 1 {
                    &self.stats.huge_mapped
                } else {
                    &self.stats.pages_mapped
                };
                Counters::add(c, 1);
                return Ok(true);
            }
        }
        let span = if level == 1 { HUGE } else { PAGE };
        self.evict(st, va, va + span);
        Ok(false)
    }

    /// The leaf at `va` and `level`, through the window's leaf table `lt` when there is one
    /// (a 4 KiB leaf: no walk), else through the page table.
    fn leaf_get(
        &self,
        lt: Option<&LeafTable<'_, P::Fmt, P::Mem>>,
        va: u64,
        level: u8,
    ) -> Option<Leaf> {
        match lt.filter(|_| level == 0) {
            Some(t) => t.get(va),
            None => self.pt.get(va, level),
        }
    }

    /// Writes a leaf as [`PageTable::map`] does, through `lt` as [`Engine::leaf_get`] reads.
    fn leaf_map(
        &self,
        lt: Option<&LeafTable<'_, P::Fmt, P::Mem>>,
        va: u64,
        level: u8,
        addr: u64,
        perm: Perm,
        aux: u64,
    ) -> Result<Option<Leaf>, MapError> {
        match lt.filter(|_| level == 0) {
            Some(t) => t.map(va, addr, perm, aux),
            None => self.pt.map(va, level, addr, perm, aux),
        }
    }

    /// Writes one 2 MiB leaf for `block`, under the range lock.
    fn commit_huge(
        &self,
        st: &mut RangeState,
        block: u64,
        page: u64,
        fpfn: u64,
        access: Access,
    ) -> Result<Commit, Errno> {
        let head = hmm_pfn(fpfn) - ((page - block) >> PAGE_SHIFT);
        let (perm, dma_write) = Self::rights(fpfn, access);
        if self.keep_leaf(st, block, 1, head, perm, None)? {
            return Ok(Commit::Done);
        }
        let addr = self.dma.map(head, HUGE_ORDER, dma_write)?;
        match self.pt.map(block, 1, addr, perm, leaf_aux(head, dma_write)) {
            Ok(_) => {
                st.mapped += 1;
                Counters::add(&self.stats.huge_mapped, 1);
                Ok(Commit::Done)
            }
            Err(e) => {
                self.dma.unmap(addr, head, HUGE_ORDER, dma_write);
                match e {
                    // Whatever is in the way (a table of 4 KiB leaves, a missing table, a DMA
                    // address off a 2 MiB boundary): map the block as 4 KiB pages.
                    MapError::Layout(_) => Ok(Commit::Relayout),
                    MapError::Fail(e) => Err(e),
                }
            }
        }
    }

    /// Writes 4 KiB leaves for the window's valid pfns, the faulting page first, under the
    /// range lock. Never grants more than hmm reported, and write only to a write fault.
    /// Not inlined: its batch buffer must not sit in the frame that calls `hmm_range_fault()`.
    #[inline(never)]
    fn commit_pages(
        &self,
        st: &mut RangeState,
        ws: u64,
        pfns: &[u64],
        page: u64,
        access: Access,
    ) -> Result<Commit, Errno> {
        let fi = ((page - ws) >> PAGE_SHIFT) as usize;
        // One walk to the window's leaf table instead of two per page (read, then write):
        // the range lock we hold keeps the table linked.
        let lt = self.pt.leaf_table(ws);
        let lt = lt.as_ref();
        match self.commit_page(st, page, pfns[fi], access, lt)? {
            Commit::Done => {}
            Commit::Relayout => return Ok(Commit::Relayout),
        }
        // The device used this page (not its fault-around neighbours): one of our device
        // pages becomes the most recently used for eviction.
        if !cfg!(feature = "teeth-no-touch") {
            self.devmem.touch(hmm_pfn(pfns[fi]));
        }
        // Neighbours are best effort: the first that does not fit ends fault-around. Those
        // whose slot is empty (the common case) are DMA-mapped one by one and written in
        // batches, one table-lock hold and one counter update per batch.
        let mut fill = Fill::default();
        for (i, &v) in pfns.iter().enumerate() {
            if i == fi || v & HMM_PFN_VALID == 0 {
                continue;
            }
            let va = ws + ((i as u64) << PAGE_SHIFT);
            if let Some(t) = lt.filter(|t| t.covers(va) && t.get(va).is_none()) {
                let (perm, dma_write) = Self::rights(v, access);
                let Ok((addr, perm, aux)) = self.map_page(hmm_pfn(v), perm, dma_write) else {
                    break;
                };
                fill.push(NewLeaf {
                    va,
                    addr,
                    perm,
                    aux,
                });
                if fill.n == FILL_BATCH && !self.fill_flush(st, t, &mut fill) {
                    return Ok(Commit::Done);
                }
                continue;
            }
            if let Some(t) = lt {
                if !self.fill_flush(st, t, &mut fill) {
                    return Ok(Commit::Done);
                }
            }
            match self.commit_page(st, va, v, access, lt) {
                Ok(Commit::Done) => {}
                _ => break,
            }
        }
        if let Some(t) = lt {
            self.fill_flush(st, t, &mut fill);
        }
        Ok(Commit::Done)
    }

    /// Writes the pending leaves of `fill` into `t`; DMA-unmaps any it could not write.
    /// Returns whether all were written.
    fn fill_flush(
        &self,
        st: &mut RangeState,
        t: &LeafTable<'_, P::Fmt, P::Mem>,
        fill: &mut Fill,
    ) -> bool {
        let n = fill.n;
        if n == 0 {
            return true;
        }
        let w = t.fill(&fill.leaves[..n]);
        st.mapped += w;
        Counters::add(&self.stats.pages_mapped, w as u64);
        for l in &fill.leaves[w..n] {
            self.unmap_leaf(l.addr, l.aux, 0);
        }
        fill.n = 0;
        w == n
    }

    /// What a 4 KiB leaf for `pfn` holds: one of our device pages is reached locally at its
    /// device address (no DMA mapping; a local leaf), any other page (a peer's device page
    /// too: P2P) through a new DMA mapping. Returns the address, `perm` with `local` set accordingly, and the leaf's `aux`.
    pub(crate) fn map_page(
        &self,
        pfn: u64,
        perm: Perm,
        dma_write: bool,
    ) -> Result<(u64, Perm, u64), Errno> {
        // Teeth: a peer's page taken for ours (an owner check where the pgmap's is needed).
        let local = if cfg!(feature = "teeth-peer-as-local") && self.devmem.peer_page(pfn) {
            Some(pfn << PAGE_SHIFT)
        } else {
            self.devmem.local_addr(pfn)
        };
        if let Some(addr) = local {
            Counters::add(&self.stats.local_mapped, 1);
            return Ok((addr, perm.local(), leaf_aux(pfn, dma_write) | AUX_LOCAL));
        }
        let addr = self.dma.map(pfn, 0, dma_write)?;
        if self.devmem.peer_page(pfn) {
            Counters::add(&self.stats.peer_mapped, 1);
        }
        Ok((addr, perm, leaf_aux(pfn, dma_write)))
    }

    /// Undoes [`Engine::map_page`] (or a 2 MiB DMA mapping, `order` 9) for a leaf whose
    /// software word is `aux`: a local leaf has nothing to undo.
    pub(crate) fn unmap_leaf(&self, addr: u64, aux: u64, order: u32) {
        if aux & AUX_LOCAL == 0 {
            self.dma
                .unmap(addr, leaf_pfn(aux), order, aux & AUX_DMA_WRITE != 0);
        }
    }

    fn commit_page(
        &self,
        st: &mut RangeState,
        va: u64,
        v: u64,
        access: Access,
        lt: Option<&LeafTable<'_, P::Fmt, P::Mem>>,
    ) -> Result<Commit, Errno> {
        let pfn = hmm_pfn(v);
        let (perm, dma_write) = Self::rights(v, access);
        if self.keep_leaf(st, va, 0, pfn, perm, lt)? {
            return Ok(Commit::Done);
        }
        let (addr, perm, aux) = self.map_page(pfn, perm, dma_write)?;
        match self.leaf_map(lt, va, 0, addr, perm, aux) {
            Ok(_) => {
                st.mapped += 1;
                Counters::add(&self.stats.pages_mapped, 1);
                Ok(Commit::Done)
            }
            Err(e) => {
                self.unmap_leaf(addr, aux, 0);
                match e {
                    // A huge leaf mapped (or the table freed) since `prepare`: lay out again.
                    MapError::Layout(Conflict::HugeLeaf | Conflict::NoTable) => {
                        Ok(Commit::Relayout)
                    }
                    e => Err(e.into()),
                }
            }
        }
    }

    /// Services a batch of device faults as a hardware fault buffer delivers them: sorts the
    /// batch by page (writes first), services each page once with the strongest access asked
    /// for it, skips pages the device can already access (an earlier fault's fault-around or
    /// window mapped them), and fills every entry's `result`. Returns how many pages needed
    /// service.
    ///
    /// Queued faults close together are serviced as one window, as hardware fault batches
    /// are (UVM services up to 256 faults per batch): a page needing service takes the queued
    /// pages after it with the same access into its window while each lies at most
    /// `fault_around_pages` pages past the previous one (and in the window's range and VMA,
    /// within [`MAX_WINDOW_PAGES`]), and the window gets one `hmm_range_fault()` and one
    /// range-lock hold ([`Engine::fault_span`]). 6.12's hmm faults every page from the first
    /// absent one to the end of the window, so the pages between queued faults are faulted
    /// in too: the gap bound keeps that to a fault-around block per fault. Should the window
    /// fail, its first page is serviced alone for its own errno; every other page of the
    /// group then comes round in this loop, found mapped or serviced on its own.
    ///
    /// [`MAX_WINDOW_PAGES`]: super::config::MAX_WINDOW_PAGES
    pub fn fault_batch(&self, scratch: &mut Scratch, batch: &mut [DeviceFault]) -> usize {
        batch.sort_unstable_by(|a, b| {
            (a.va >> PAGE_SHIFT)
                .cmp(&(b.va >> PAGE_SHIFT))
                .then(b.access.cmp(&a.access))
        });
        let mut serviced = 0;
        let mut i = 0;
        while i < batch.len() {
            let page = batch[i].va & !(PAGE - 1);
            let access = batch[i].access;
            let j = Self::page_end(batch, i);
            Counters::add(&self.stats.batch_duplicates, (j - i - 1) as u64);
            let res = if self.mapped_for(page, access) {
                Ok(())
            } else {
                serviced += 1;
                match self.window_end(batch, j, page, access) {
                    Some(end) => {
                        Counters::add(&self.stats.batch_windows, 1);
                        self.fault_span(scratch, page, end, access)
                    }
                    None => self.fault(scratch, page, access),
                }
            };
            for f in &mut batch[i..j] {
                f.result = Some(res);
            }
            i = j;
        }
        serviced
    }

    /// The index past the entries of the (sorted) batch's page at `i`.
    fn page_end(batch: &[DeviceFault], i: usize) -> usize {
        let page = batch[i].va >> PAGE_SHIFT;
        let mut j = i + 1;
        while j < batch.len() && batch[j].va >> PAGE_SHIFT == page {
            j += 1;
        }
        j
    }

    /// The end of the window that serves `page` (for `access`) together with the queued pages
    /// from index `j` on (see [`Engine::fault_batch`]); `None` if none joins it. The range,
    /// VMA and [`MAX_WINDOW_PAGES`] bounds are the window's own ([`Engine::window`]): pages
    /// past them are serviced after it.
    ///
    /// [`MAX_WINDOW_PAGES`]: super::config::MAX_WINDOW_PAGES
    fn window_end(
        &self,
        batch: &[DeviceFault],
        mut j: usize,
        page: u64,
        access: Access,
    ) -> Option<u64> {
        let gap = u64::from(self.cfg.fault_around_pages) << PAGE_SHIFT;
        let mut last = page;
        while j < batch.len() {
            let p = batch[j].va & !(PAGE - 1);
            // The first entry of a page carries its strongest access.
            if batch[j].access != access || p - last > gap {
                break;
            }
            last = p;
            j = Self::page_end(batch, j);
        }
        (last > page).then_some(last + PAGE)
    }

    /// Whether the device can already perform `access` at `page` (a hint: the device retries).
    /// The walk holds an [`InFlight`] on the page's range, so GC cannot free the leaf table
    /// under it; no range, no mapping.
    fn mapped_for(&self, page: u64, access: Access) -> bool {
        let Some(r) = self.ranges.get(self.range_key(page)) else {
            return false;
        };
        let Some(_walk) = InFlight::enter(&r) else {
            return false;
        };
        matches!(self.pt.translate(page), Some(t) if t.perm.write || access == Access::Read)
    }

    /// Populates `[start, start + len)` for `access` without a device access. Restartable:
    /// `done` always says how many bytes from `start` are populated, so an interrupted or
    /// failed call can be resumed at `start + done`. `EINVAL` for a misaligned, empty,
    /// overflowing or kernel range; otherwise the first fault's error.
    pub fn prefetch(
        &self,
        scratch: &mut Scratch,
        start: u64,
        len: u64,
        access: Access,
        done: &mut u64,
    ) -> Result<(), Errno> {
        *done = 0;
        let end = start.checked_add(len).ok_or(Errno::EINVAL)?;
        if start & (PAGE - 1) != 0 || len & (PAGE - 1) != 0 || len == 0 || end > self.cfg.task_size
        {
            return Err(Errno::EINVAL);
        }
        let mut va = start;
        loop {
            va = self.mapped_run(va, end, access);
            *done = va - start;
            if va == end {
                return Ok(());
            }
            self.fault_span(scratch, va, end, access)?;
            // Counted as populated even if an invalidation took it back already: a storm on
            // one page must not hold the prefetch there.
            va += PAGE;
        }
    }

    /// The first page from `va` on (at most `end`) the device cannot access for `access`:
    /// one range lookup per range and one walk per leaf (a 2 MiB leaf is skipped whole),
    /// where a page-by-page check would look the range up and walk the table for each of
    /// the 512 pages of a window.
    fn mapped_run(&self, mut va: u64, end: u64, access: Access) -> u64 {
        while va < end {
            let Some(r) = self.ranges.get(self.range_key(va)) else {
                return va;
            };
            let Some(_walk) = InFlight::enter(&r) else {
                return va;
            };
            let stop = end.min(r.end);
            if stop <= va {
                // Not the range of `va` after all (cannot happen): check no further.
                return va;
            }
            while va < stop {
                match self.pt.translate(va) {
                    Some(t) if t.perm.write || access == Access::Read => {
                        let span = if t.level == 1 { HUGE } else { PAGE };
                        va = ((va & !(span - 1)) + span).min(end);
                    }
                    _ => return va,
                }
            }
        }
        end
    }

    /// Reads the CPU page table for `[start, start + out.len() pages)` without faulting
    /// anything in, as `hmm_range_fault()` reports it (`HMM_PFN_*` flags and map order per
    /// page; absent pages 0 or `HMM_PFN_ERROR`), consistent under the range's notifier: the
    /// walk is repeated until no invalidation of the range raced it. The span must lie in
    /// one range and hold at most [`MAX_WINDOW_PAGES`] pages; `EINVAL` otherwise. Nothing
    /// is mapped for the device.
    pub fn snapshot(&self, start: u64, out: &mut [u64]) -> Result<(), Errno> {
        let len = (out.len() as u64) << PAGE_SHIFT;
        let end = start.checked_add(len).ok_or(Errno::EINVAL)?;
        if start & (PAGE - 1) != 0
            || out.is_empty()
            || out.len() > MAX_WINDOW_PAGES
            || end > self.cfg.task_size
            || self.range_key(start) != self.range_key(end - 1)
        {
            return Err(Errno::EINVAL);
        }
        let deadline = self.plat.now_ns().saturating_add(self.cfg.retry_timeout_ns);
        loop {
            let range = self.range_for(start, false)?;
            let r = match InFlight::enter(&range) {
                Some(_inflight) => self.snapshot_in(&range, start, out, deadline),
                None => Ok(false),
            };
            match r {
                Ok(true) => {}
                // The range was removed under us: look it up again.
                Ok(false) => {
                    self.plat.relax();
                    continue;
                }
                Err(e) => {
                    self.retire_if_empty(&range);
                    return Err(e);
                }
            }
            // A snapshot maps nothing: a range created for it alone goes again.
            self.retire_if_empty(&range);
            return Ok(());
        }
    }

    /// One range's part of [`Engine::snapshot`]. Ok(false): the range died.
    fn snapshot_in(
        &self,
        range: &Range<P>,
        start: u64,
        out: &mut [u64],
        deadline: u64,
    ) -> Result<bool, Errno> {
        let iv = range.interval();
        loop {
            if self.plat.now_ns() > deadline {
                Counters::add(&self.stats.retry_timeouts, 1);
                return Err(Errno::EBUSY);
            }
            let seq = iv.read_begin();
            {
                let mut g = self.mm.mmap_read()?;
                out.fill(0);
                let mut req = HmmRequest {
                    notifier: iv,
                    seq,
                    start,
                    pfns: &mut *out,
                    dev_private_owner: self.devmem.owner(),
                };
                match self.mm.hmm_range_fault(&mut g, &mut req) {
                    Ok(()) => {}
                    Err(Errno::EBUSY) => continue,
                    Err(e) => return Err(e),
                }
            }
            // The lock orders this check against the callbacks' `set_seq`.
            let st = range.lock.lock();
            if st.dead {
                return Ok(false);
            }
            if !iv.read_retry(seq) {
                return Ok(true);
            }
        }
    }
}
