//! Migration between system memory and the device's own memory, and the CPU fault on a
//! device page (`migrate_to_ram`). See `Documentation/design.rst`, "Device memory".
//!
//! A migration step is one `migrate_vma_setup()` / `_pages()` / `_finalize()` over at most
//! [`MIGRATE_CHUNK`] pages of one range and one VMA. Under the range lock it claims the span
//! (`RangeState::migrating`) and zaps it, in one critical section; while the claim lasts no
//! fault commits a leaf in the span (it retries). So when setup's `MMU_NOTIFY_MIGRATE`
//! callback runs, in this same task, the span holds no leaf, and the callback only sets the
//! seq (a fault that read the old pages before fails its check) and skips the zap: the
//! migration does not invalidate itself. Once setup returns the CPU maps migration entries
//! there and faults wait in hmm, so the claim goes. The device copies the pages only after
//! that, so no device write can be lost in the copy or land in a page `finalize` frees. The
//! notifications of `migrate_vma_pages()` (holes filled) and of anyone else's migration with
//! our owner (a CPU fault's `migrate_to_ram`) are zapped as any invalidation is.

use super::engine::{Engine, Scratch, MIGRATE_CHUNK};
use super::pgtable::table::PAGE_SHIFT;
use super::pgtable::{Errno, Lock};
use super::platform::{
    hmm_pfn, migrate_pfn, migrate_pfn_pfn, Devmem, MigrateReq, Mm, Platform, RangeMap, Select,
    HMM_PFN_VALID, MIGRATE_PFN_MIGRATE,
};
use super::range::{InFlight, Range};
use super::stats::Counters;

const PAGE: u64 = 1 << PAGE_SHIFT;

/// Where a migration moves pages.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Place {
    /// System memory (pages of the device's own memory come back).
    System,
    /// The device's own memory (system pages and holes go there).
    Device,
}

/// The range's migration slot, claimed for one step; released (under the range lock) when
/// dropped.
struct Claim<'a, P: Platform>(&'a Range<P>);

impl<P: Platform> Drop for Claim<'_, P> {
    fn drop(&mut self) {
        self.0.lock.lock().migrating = None;
    }
}

impl<P: Platform> Engine<P> {
    /// Moves the pages of `[start, start + len)` to `to`, as far as they can move: pages the
    /// CPU shares with another mapping than this one may stay, as may a page whose CPU entry
    /// changed meanwhile, and memory `migrate_vma_setup()` refuses (hugetlb, special
    /// mappings) is passed over. Restartable: `done` says how many bytes from `start` were handled.
    /// `EINVAL` for a misaligned, empty, overflowing or kernel range; `EOPNOTSUPP` without
    /// device memory; `EFAULT` for a hole or I/O memory; `ENOMEM` when device memory (or
    /// system memory, moving back) ran out; `ESRCH` once the mm is gone. Returns how many
    /// pages moved.
    pub fn migrate(
        &self,
        scratch: &mut Scratch,
        start: u64,
        len: u64,
        to: Place,
        done: &mut u64,
    ) -> Result<u64, Errno> {
        self.migrate_into(scratch, start, len, to, &self.devmem, done)
    }

    /// [`Engine::migrate`], with `Place::Device` meaning `mem`: this device's memory or a
    /// peer's (`Devmem::peer_page`), whose pages this device then reaches through DMA
    /// mappings. `EXDEV` for memory of another owner: hmm would hand its pages back to
    /// system memory at this device's next fault, so they must not go there through us.
    pub fn migrate_into(
        &self,
        scratch: &mut Scratch,
        start: u64,
        len: u64,
        to: Place,
        mem: &P::Devmem,
        done: &mut u64,
    ) -> Result<u64, Errno> {
        let mut moved = 0;
        *done = 0;
        let end = self.user_span(start, len)?;
        if self.devmem.owner() == 0 || mem.owner() == 0 {
            return Err(Errno::EOPNOTSUPP);
        }
        if mem.owner() != self.devmem.owner() {
            return Err(Errno::EXDEV);
        }
        // A step of 0: the range died, or another migration holds it.
        self.by_steps(start, end, done, |va, _| {
            self.migrate_step_into(scratch, va, end, to, mem, &mut moved)
        })?;
        Ok(moved)
    }

    /// The end of `[start, start + len)`, a span a caller may name: page aligned, not empty,
    /// not wrapping, below `task_size` (else `EINVAL`). Drivers check their uAPI's spans with
    /// it too.
    pub fn user_span(&self, start: u64, len: u64) -> Result<u64, Errno> {
        let end = start.checked_add(len).ok_or(Errno::EINVAL)?;
        if start & (PAGE - 1) != 0 || len & (PAGE - 1) != 0 || len == 0 || end > self.cfg.task_size
        {
            return Err(Errno::EINVAL);
        }
        Ok(end)
    }

    /// Runs `step(va, deadline)` from `start` until `end`, each call returning the bytes it
    /// handled; `done` follows. A step of 0 goes round again (after `relax`) until the retry
    /// budget's `deadline`, then `EBUSY`.
    pub(crate) fn by_steps(
        &self,
        start: u64,
        end: u64,
        done: &mut u64,
        mut step: impl FnMut(u64, u64) -> Result<u64, Errno>,
    ) -> Result<(), Errno> {
        let deadline = self.plat.now_ns().saturating_add(self.cfg.retry_timeout_ns);
        let mut va = start;
        while va < end {
            let n = step(va, deadline)?;
            if n == 0 {
                if self.plat.now_ns() > deadline {
                    Counters::add(&self.stats.retry_timeouts, 1);
                    return Err(Errno::EBUSY);
                }
                self.plat.relax();
                continue;
            }
            va += n;
            *done = va - start;
        }
        Ok(())
    }

    /// One step from `va`: returns the bytes handled (0: try again); adds what moved to
    /// `moved`.
    pub(crate) fn migrate_step(
        &self,
        scratch: &mut Scratch,
        va: u64,
        end: u64,
        to: Place,
        moved: &mut u64,
    ) -> Result<u64, Errno> {
        self.migrate_step_into(scratch, va, end, to, &self.devmem, moved)
    }

    /// [`Engine::migrate_step`] into `mem` (ours or a peer's, of our owner) for
    /// `Place::Device`.
    fn migrate_step_into(
        &self,
        scratch: &mut Scratch,
        va: u64,
        end: u64,
        to: Place,
        mem: &P::Devmem,
        moved: &mut u64,
    ) -> Result<u64, Errno> {
        let range = self.range_for(va, true)?;
        let Some(_inflight) = InFlight::enter(&range) else {
            return Ok(0);
        };
        let g = self.mm.mmap_read()?;
        let vma = self.mm.vma(&g, va).ok_or(Errno::EFAULT)?;
        if vma.io || !vma.read {
            return Err(Errno::EFAULT);
        }
        let ce = end
            .min(range.end)
            .min(vma.end)
            .min(va + ((MIGRATE_CHUNK as u64) << PAGE_SHIFT));
        let claim = {
            let mut st = range.lock.lock();
            if st.dead || st.migrating.is_some() {
                return Ok(0);
            }
            st.migrating = Some((va, ce, self.plat.task()));
            // Dead: teardown took the leaves. Not the owner: there are none to take.
            if st.owner && !cfg!(feature = "teeth-migrate-no-zap") {
                self.evict(&mut st, va, ce);
            }
            Claim(&*range)
        };
        let n = ((ce - va) >> PAGE_SHIFT) as usize;
        let (src, dst) = (&mut scratch.src[..n], &mut scratch.dst[..n]);
        src.fill(0);
        dst.fill(0);
        let mut req = MigrateReq {
            start: va,
            src,
            dst,
            select: match to {
                Place::Device => Select::System,
                Place::System => Select::DevicePrivate,
            },
            owner: self.devmem.owner(),
            fault_page: 0,
        };
        let collected = self.mm.migrate_setup(&mut req);
        drop(claim);
        // Whatever it counted, `pages` and `finalize` follow: a page the platform dropped
        // from the migration after collecting it stays locked behind a migration entry until
        // `finalize` (the kernel's KSM pages: a hung task in the VM when this step skipped
        // both for a count of 0).
        match collected {
            Ok(_) => {}
            // A well-formed request in one VMA that `migrate_vma_setup()` refuses whole
            // (hugetlb, `VM_SPECIAL`, DAX): nothing here can move, as for shared pages.
            Err(Errno::EINVAL) => return Ok(ce - va),
            Err(e) => return Err(e),
        }
        let short = self.migrate_copy(&mut req, to, mem);
        self.mm.migrate_pages(&mut req);
        let n = req
            .src
            .iter()
            .zip(req.dst.iter())
            .filter(|(s, d)| *s & MIGRATE_PFN_MIGRATE != 0 && **d != 0)
            .count() as u64;
        let c = match to {
            Place::Device => &self.stats.migrated_to_device,
            Place::System => &self.stats.migrated_to_system,
        };
        Counters::add(c, n);
        *moved += n;
        if !cfg!(feature = "teeth-migrate-no-finalize") {
            self.mm.migrate_finalize(&mut req);
        }
        drop(g);
        if short {
            return Err(Errno::ENOMEM);
        }
        Ok(ce - va)
    }

    /// Allocates and fills a destination for every collected entry; returns whether memory
    /// ran out for one (it stays where it is, as do those whose copy failed). Device memory
    /// that is full is made room in by eviction, once per step: as many of the device's least
    /// recently used pages as the rest of the step needs go back to system memory
    /// (`Devmem::evict`).
    fn migrate_copy(&self, req: &mut MigrateReq<'_>, to: Place, mem: &P::Devmem) -> bool {
        let mut short = false;
        let mut evicted = false;
        for i in 0..req.src.len() {
            let s = req.src[i];
            if s & MIGRATE_PFN_MIGRATE == 0 {
                continue;
            }
            let va = req.start + ((i as u64) << PAGE_SHIFT);
            let mut d = match to {
                Place::Device => mem.alloc_device(),
                Place::System => self.devmem.alloc_system(va),
            };
            if d.is_none() && to == Place::Device && !evicted && !cfg!(feature = "teeth-no-evict") {
                evicted = true;
                let need = req.src[i..]
                    .iter()
                    .filter(|s| *s & MIGRATE_PFN_MIGRATE != 0)
                    .count();
                let n = mem.evict(need) as u64;
                Counters::add(&self.stats.evicted, n);
                if n > 0 {
                    d = mem.alloc_device();
                }
            }
            let Some(d) = d else {
                short = true;
                Counters::add(&self.stats.migrate_failed, 1);
                continue;
            };
            // The destination's copy engine (a peer's pulls over the interconnect).
            let copier = if to == Place::Device {
                mem
            } else {
                &self.devmem
            };
            if copier.copy(d, migrate_pfn_pfn(s)).is_err() {
                copier.free_unused(d);
                Counters::add(&self.stats.migrate_failed, 1);
                continue;
            }
            req.dst[i] = migrate_pfn(d);
        }
        short
    }
}

/// `dev_pagemap_ops.migrate_to_ram` for the page at `va`: a CPU access found one of
/// `devmem`'s pages there, `fault_page` (its pfn, which the fault holds locked; 0 if it
/// does not). Called from the page fault, `mmap_lock` held for read. Moves the page back to a
/// new system page; every engine mirroring it sees the `MMU_NOTIFY_MIGRATE` and zaps it (none
/// of them runs this migration). Ok also when someone else moved it first: the fault is
/// retried. `ENOMEM` (`VM_FAULT_OOM`) without a system page.
pub fn migrate_to_ram<M: Mm, D: Devmem>(
    mm: &M,
    devmem: &D,
    va: u64,
    fault_page: u64,
) -> Result<(), Errno> {
    let mut src = [0u64; 1];
    let mut dst = [0u64; 1];
    let mut req = MigrateReq {
        start: va & !(PAGE - 1),
        src: &mut src,
        dst: &mut dst,
        select: Select::DevicePrivate,
        owner: devmem.owner(),
        // Teeth: lose the fault's page, as the first kernel glue did between the three calls.
        fault_page: if cfg!(feature = "teeth-m2r-no-fault-page") {
            0
        } else {
            fault_page
        },
    };
    if mm.migrate_setup(&mut req)? == 0 {
        return Ok(());
    }
    let mut r = Ok(());
    if req.src[0] & MIGRATE_PFN_MIGRATE != 0 {
        match devmem.alloc_system(req.start) {
            Some(d) => match devmem.copy(d, migrate_pfn_pfn(req.src[0])) {
                Ok(()) => req.dst[0] = migrate_pfn(d),
                Err(e) => {
                    devmem.free_unused(d);
                    r = Err(e);
                }
            },
            None => r = Err(Errno::ENOMEM),
        }
    }
    mm.migrate_pages(&mut req);
    mm.migrate_finalize(&mut req);
    r
}

impl<P: Platform> Engine<P> {
    /// Before servicing a device fault at `va` in a span whose preferred location is the
    /// device's memory (`[start, end)`, see `policy.rs`): moves the [`MIGRATE_CHUNK`]-aligned
    /// block holding `va`, clamped to the span, to device memory. Best effort: whatever does
    /// not move (device memory full after eviction, a page the CPU shares) is served from
    /// system memory by the fault that follows, which reports the errors that matter.
    /// Returns how many pages moved.
    pub fn place_for_fault(&self, scratch: &mut Scratch, va: u64, start: u64, end: u64) -> u64 {
        self.place_for_fault_in(scratch, va, start, end, &self.devmem)
    }

    /// [`Engine::place_for_fault`] for a span whose preferred location is `mem`: this
    /// device's memory or a peer's (of our owner; any other: nothing moves).
    pub fn place_for_fault_in(
        &self,
        scratch: &mut Scratch,
        va: u64,
        start: u64,
        end: u64,
        mem: &P::Devmem,
    ) -> u64 {
        const BLOCK: u64 = (MIGRATE_CHUNK as u64) << PAGE_SHIFT;
        if self.devmem.owner() == 0 || mem.owner() != self.devmem.owner() || va < start || va >= end
        {
            return 0;
        }
        // Already ours: nothing to move, and a migration step would zap the whole block (its
        // claim does), taking away the leaves of the pages the device faulted in just before,
        // round after round for an access that needs two pages of it.
        let mut v = [0u64; 1];
        let whole = cfg!(feature = "teeth-place-whole-block");
        if !whole
            && self.snapshot(va & !(PAGE - 1), &mut v).is_ok()
            && v[0] & HMM_PFN_VALID != 0
            && mem.local_addr(hmm_pfn(v[0])).is_some()
        {
            return 0;
        }
        let b = (va & !(BLOCK - 1)).max(start & !(PAGE - 1));
        let e = ((va & !(BLOCK - 1)) + BLOCK).min(end);
        // Only the pages around `va` the device has no leaf for: a page it maps needs no
        // fault (and could not move without losing its leaf to the step's claim, which for an
        // access of two pages that cannot move would take the other's leaf every round).
        let (b, e) = if whole {
            (b, e)
        } else {
            self.unmapped_run(va, b, e)
        };
        let mut done = 0;
        self.migrate_into(scratch, b, e - b, Place::Device, mem, &mut done)
            .unwrap_or(0)
    }

    /// The run of pages around `va` in `[b, e)`, within its range, that have no device leaf
    /// (read in the range's walk guard: GC may be freeing its leaf tables).
    fn unmapped_run(&self, va: u64, b: u64, e: u64) -> (u64, u64) {
        let page = va & !(PAGE - 1);
        let Some(r) = self.ranges.get(self.range_key(va)) else {
            // No range: nothing is mapped there.
            return (b, e);
        };
        let Some(_walk) = InFlight::enter(&r) else {
            return (page, page + PAGE);
        };
        let (b, e) = (b.max(r.start), e.min(r.end));
        let free = |a: u64| self.pt.translate(a).is_none();
        let mut s = page;
        while s > b && free(s - PAGE) {
            s -= PAGE;
        }
        let mut t = page + PAGE;
        while t < e && free(t) {
            t += PAGE;
        }
        (s, t)
    }
}
