//! `hmm_range_fault()` with the semantics of 6.12 `mm/hmm.c`, for `default_flags = 0` and
//! `pfn_flags_mask = ~0` (per-pfn requests).
//!
//! The walk follows `walk_page_range()` with `hmm_walk_ops`: VMA by VMA (`hmm_vma_walk_test`
//! refuses I/O and unreadable VMAs), then 2 MiB by 2 MiB (`hmm_vma_walk_pmd`): a PMD-mapped
//! folio (`hmm_vma_handle_pmd`, order 9), a block without a PTE table (`hmm_vma_walk_hole`),
//! or PTE by PTE (`hmm_vma_handle_pte`). A page that needs a fault makes `hmm_vma_fault()`
//! call `handle_mm_fault()` for *every* page from it to the end of the current 2 MiB block
//! (or from the start of a hole), then the walk restarts at that page with `-EBUSY` after
//! `mmu_interval_check_retry()`, exactly as the kernel loops.
//!
//! Approximation: the kernel reads PTEs locklessly; the model reads each 2 MiB block under the
//! machine lock (a subset of the kernel's interleavings).

use crate::lockdep;
use crate::mm::state::{huge_down, Pte, HPAGE_SIZE, PAGE_SIZE};
use crate::mm::MmShared;
use crate::notifier::Interval;
use pgtable::Errno;
use svm::platform::{
    HmmRequest, Interval as _, HMM_PFN_ERROR, HMM_PFN_ORDER_SHIFT, HMM_PFN_REQ_FAULT,
    HMM_PFN_REQ_WRITE, HMM_PFN_VALID, HMM_PFN_WRITE,
};

const NEED_FAULT: u32 = 1;
const NEED_WRITE_FAULT: u32 = 2;

/// `hmm_pte_need_fault()`.
fn need_fault(req: u64, cpu_flags: u64) -> u32 {
    if req & HMM_PFN_REQ_FAULT == 0 {
        return 0;
    }
    if req & HMM_PFN_REQ_WRITE != 0 && cpu_flags & HMM_PFN_WRITE == 0 {
        return NEED_FAULT | NEED_WRITE_FAULT;
    }
    if cpu_flags & HMM_PFN_VALID == 0 {
        return NEED_FAULT;
    }
    0
}

/// `hmm_range_need_fault()`.
fn range_need_fault(reqs: &[u64], cpu_flags: u64) -> u32 {
    reqs.iter()
        .fold(0, |acc, r| acc | need_fault(*r, cpu_flags))
}

enum Stop {
    /// -EBUSY from `hmm_vma_fault()`: restart the walk at this address.
    Again(u64),
    Err(Errno),
}

struct Walk<'a, 'b> {
    mm: &'a MmShared,
    start: u64,
    pfns: &'b mut [u64],
    /// `range->dev_private_owner`.
    owner: u64,
}

impl Walk<'_, '_> {
    fn idx(&self, va: u64) -> usize {
        ((va - self.start) / PAGE_SIZE) as usize
    }

    fn slice(&self, a: u64, b: u64) -> &[u64] {
        &self.pfns[self.idx(a)..self.idx(b)]
    }

    fn fill(&mut self, a: u64, b: u64, v: u64) {
        let (i, j) = (self.idx(a), self.idx(b));
        self.pfns[i..j].fill(v);
    }

    /// `hmm_vma_fault()`: faults every page of `[addr, end)`, then -EBUSY to re-walk.
    fn fault(&mut self, addr: u64, end: u64, required: u32, vma_write: bool) -> Stop {
        let write = required & NEED_WRITE_FAULT != 0;
        if write && !vma_write {
            return Stop::Err(Errno::EPERM);
        }
        let mut a = addr;
        while a < end {
            if self.mm.handle_mm_fault(a, write).is_err() {
                return Stop::Err(Errno::EFAULT);
            }
            a += PAGE_SIZE;
        }
        Stop::Again(addr)
    }

    /// `walk_page_range(mm, from, end, &hmm_walk_ops, ...)`.
    fn walk(&mut self, from: u64, end: u64) -> Result<(), Stop> {
        let mut addr = from;
        while addr < end {
            let found = self.mm.machine.st.lock().mm_ref(self.mm.id).find_vma(addr);
            let (vstart, vma) = match found {
                Some((s, v)) if s < end => (s, v),
                _ => {
                    // A hole with no VMA (`hmm_vma_walk_hole()`, walk->vma == NULL).
                    if range_need_fault(self.slice(addr, end), 0) != 0 {
                        return Err(Stop::Err(Errno::EFAULT));
                    }
                    self.fill(addr, end, HMM_PFN_ERROR);
                    return Ok(());
                }
            };
            if vstart > addr {
                if range_need_fault(self.slice(addr, vstart), 0) != 0 {
                    return Err(Stop::Err(Errno::EFAULT));
                }
                self.fill(addr, vstart, HMM_PFN_ERROR);
                addr = vstart;
            }
            let vend = vma.end.min(end);
            // hmm_vma_walk_test()
            if vma.io || !vma.read {
                if range_need_fault(self.slice(addr, vend), 0) != 0 {
                    return Err(Stop::Err(Errno::EFAULT));
                }
                self.fill(addr, vend, HMM_PFN_ERROR);
                addr = vend;
                continue;
            }
            while addr < vend {
                let next = (huge_down(addr) + HPAGE_SIZE).min(vend);
                self.walk_pmd(addr, next, vma.write)?;
                addr = next;
            }
        }
        Ok(())
    }

    /// `hmm_vma_walk_pmd()` for `[addr, next)` inside one 2 MiB block of one VMA.
    fn walk_pmd(&mut self, addr: u64, next: u64, vma_write: bool) -> Result<(), Stop> {
        let m = self.mm.machine.st.lock();
        let st = m.mm_ref(self.mm.id);
        let h = huge_down(addr);
        if let Some(pmd) = st.pmds.get(&h).copied() {
            // hmm_vma_handle_pmd(); pmd_to_hmm_pfn_flags()
            let cpu = if !pmd.accessible {
                0
            } else {
                HMM_PFN_VALID
                    | if pmd.writable { HMM_PFN_WRITE } else { 0 }
                    | 9u64 << HMM_PFN_ORDER_SHIFT
            };
            let req = range_need_fault(self.slice(addr, next), cpu);
            drop(m);
            if req != 0 {
                return Err(self.fault(addr, next, req, vma_write));
            }
            let mut a = addr;
            while a < next {
                let i = self.idx(a);
                self.pfns[i] = (pmd.head + (a - h) / PAGE_SIZE) | cpu;
                a += PAGE_SIZE;
            }
            return Ok(());
        }
        if !st.tables.contains(&h) {
            // pmd_none(): hmm_vma_walk_hole() with a VMA: faults from the hole's start.
            let req = range_need_fault(self.slice(addr, next), 0);
            drop(m);
            if req != 0 {
                return Err(self.fault(addr, next, req, vma_write));
            }
            self.fill(addr, next, 0);
            return Ok(());
        }
        // Each PTE with the owner of the device page it names (0: none).
        let ptes: Vec<(u64, Option<Pte>, u64)> = {
            let mut v = Vec::with_capacity(((next - addr) / PAGE_SIZE) as usize);
            let mut a = addr;
            while a < next {
                let pte = st.ptes.get(&a).copied();
                let owner = match pte {
                    Some(Pte::Device { pfn, .. }) => m.owner_of(pfn),
                    _ => 0,
                };
                v.push((a, pte, owner));
                a += PAGE_SIZE;
            }
            v
        };
        drop(m);
        for (a, pte, owner) in ptes {
            let i = self.idx(a);
            let req = self.pfns[i];
            match pte {
                // Our own device page: its pfn, whatever the request (no fault).
                Some(Pte::Device { pfn, writable }) if owner != 0 && owner == self.owner => {
                    self.pfns[i] = pfn | HMM_PFN_VALID | if writable { HMM_PFN_WRITE } else { 0 };
                }
                // A migration entry: wait for the migration, then walk again from here.
                Some(Pte::Migration { .. }) if need_fault(req, 0) != 0 => {
                    self.mm.wait_migration(a);
                    return Err(Stop::Again(a));
                }
                // pte_none(), a swap entry, a foreign device page (faulting it calls its
                // owner's migrate_to_ram), a migration entry, a device-exclusive entry
                // (faulting it takes the page back): fault if requested, else 0.
                None
                | Some(
                    Pte::Swap { .. }
                    | Pte::Device { .. }
                    | Pte::Migration { .. }
                    | Pte::Exclusive { .. },
                ) => {
                    let r = need_fault(req, 0);
                    if r != 0 {
                        return Err(self.fault(a, next, r, vma_write));
                    }
                    self.pfns[i] = 0;
                }
                Some(Pte::Present(p)) => {
                    // pte_to_hmm_pfn_flags(); the zero page is reported like a normal page.
                    let cpu = if !p.accessible {
                        0
                    } else {
                        HMM_PFN_VALID | if p.writable { HMM_PFN_WRITE } else { 0 }
                    };
                    let r = need_fault(req, cpu);
                    if r != 0 {
                        return Err(self.fault(a, next, r, vma_write));
                    }
                    self.pfns[i] = p.pfn | cpu;
                }
            }
        }
        Ok(())
    }
}

/// `hmm_range_fault()`; the caller holds the mm's read guard.
pub(crate) fn hmm_range_fault(
    mm: &MmShared,
    req: &mut HmmRequest<'_, Interval>,
) -> Result<(), Errno> {
    if lockdep::holds_range() {
        lockdep::report(
            "hmm_range_fault() under a range lock (its faults call the callbacks that take it)"
                .into(),
        );
    }
    if lockdep::holds_engine() {
        lockdep::report(
            "hmm_range_fault() under the engine lock (its faults call the callbacks that take it)"
                .into(),
        );
    }
    if !req.notifier.belongs_to(mm) {
        mm.violations
            .record("mm", "hmm_range_fault() with a notifier of another mm");
        return Err(Errno::EINVAL);
    }
    let n = req.pfns.len() as u64;
    if req.start & (PAGE_SIZE - 1) != 0 {
        // The kernel does not check this: it walks from the unaligned address and fills the
        // array off by a fraction of a page. A caller that gets here has a bug the kernel
        // would not report, so the model does.
        mm.violations.record(
            "mm",
            "hmm_range_fault() with a start that is not page aligned",
        );
        return Err(Errno::EINVAL);
    }
    let Some(end) = n
        .checked_mul(PAGE_SIZE)
        .and_then(|l| req.start.checked_add(l))
    else {
        return Err(Errno::EINVAL);
    };
    let (notifier, seq) = (req.notifier, req.seq);
    let mut w = Walk {
        mm,
        start: req.start,
        pfns: req.pfns,
        owner: req.dev_private_owner,
    };
    let mut last = w.start;
    loop {
        // If the range is no longer valid, force a retry.
        if notifier.check_retry(seq) {
            return Err(Errno::EBUSY);
        }
        match w.walk(last, end) {
            Ok(()) => return Ok(()),
            Err(Stop::Again(a)) => last = a,
            Err(Stop::Err(e)) => return Err(e),
        }
    }
}
