//! The interval-notifier callback (BRIEF §2, "Invalidation callback").
//!
//! Under the range lock, unconditionally: `set_seq`, zap the leaves (valid bit off, address
//! kept), flush the device TLB and wait, then release each DMA mapping, marking the page dirty
//! if the device could have written it. Everything happens before the callback returns: pages
//! are not pinned, so nothing may be deferred. The flush is made under the lock so that a
//! second, concurrent invalidation of the same range cannot return while the first one's zapped
//! entries may still sit in the TLB.

use super::engine::{leaf_pfn, Engine};
use super::pgtable::table::{Flush, HUGE_SHIFT, PAGE_SHIFT};
use super::pgtable::Lock;
use super::platform::{DeviceTlb, Devmem, Dma, Event, Interval, Invalidation, Mm, Platform};
use super::range::{Range, RangeState};
use super::stats::Counters;
use super::sync::Ordering;
use super::trace::Trace;

/// The callback registered with every range's notifier.
///
/// # Safety
/// `cookie` is the `Range<P>` this callback was registered for, whose notifier is still
/// registered (so the range and, by its invariant, its engine are alive).
pub(crate) unsafe fn invalidate_cb<P: Platform>(
    cookie: *const (),
    interval: &<P::Mm as Mm>::Interval,
    inv: &Invalidation,
) -> bool {
    // SAFETY: per the contract, `cookie` points to a live `Range<P>`.
    let range = unsafe { &*(cookie as *const Range<P>) };
    // SAFETY: a range never outlives its engine (type invariant of `Range`).
    let engine = unsafe { &*range.engine };
    engine.invalidate(range, interval, inv)
}

impl<P: Platform> Engine<P> {
    fn invalidate(
        &self,
        range: &Range<P>,
        iv: &<P::Mm as Mm>::Interval,
        inv: &Invalidation,
    ) -> bool {
        Counters::add(&self.stats.invalidations, 1);
        if self.own_exclusive(inv) {
            // Our own hand-over to the device (`exclusive.rs`): the CPU entry keeps its page.
            return true;
        }
        let start = inv.start.max(range.start);
        let end = inv.end.min(range.end);
        // The engine-wide lock of a baseline lock scope (none by default) goes outside the
        // range lock (declared first, so it is released last); a non-blockable call only
        // tries either.
        let _serial = if inv.blockable {
            self.serial.invalidate()
        } else {
            match self.serial.try_invalidate() {
                Some(g) => g,
                None => {
                    Counters::add(&self.stats.nonblock_refused, 1);
                    return false;
                }
            }
        };
        let mut st = if inv.blockable {
            range.lock.lock()
        } else {
            match range.lock.try_lock() {
                Some(g) => g,
                None => {
                    Counters::add(&self.stats.nonblock_refused, 1);
                    return false;
                }
            }
        };
        if !inv.blockable && self.tlb.flush_may_sleep() && self.has_leaves(start, end) {
            Counters::add(&self.stats.nonblock_refused, 1);
            return false;
        }
        if cfg!(feature = "teeth-migrate-skip-no-seq") && self.own_migration(&st, inv, start, end) {
            // Teeth: skip our own migration's callback whole, seq and all.
            return true;
        }
        if !cfg!(feature = "teeth-no-set-seq") {
            iv.set_seq(inv.cur_seq);
        }
        st.last = Some((inv.start, inv.end, inv.event));
        let trace = |hit| {
            self.trace(|ctx| Trace::Invalidate {
                ctx,
                start,
                end,
                event: inv.event,
                hit,
            })
        };
        if (st.dead || !st.owner) && !cfg!(feature = "teeth-stale-callback-zaps") {
            // Not (or no longer) the owner of its span: nothing was mapped through it, and
            // the leaves there, if any, belong to the owner, whose own callback zaps them
            // under its own lock for this same invalidation (see `RangeState::owner`).
            trace(false);
            return true;
        }
        if self.own_migration(&st, inv, start, end) {
            // Our own `migrate_vma_setup()` (this task, our owner, inside the span it
            // claimed): the seq is set above, so a fault that read the old pages retries; the
            // span was zapped when it was claimed, and no fault has committed there since
            // (`migrate.rs`).
            Counters::add(&self.stats.migrate_skips, 1);
            trace(false);
            return true;
        }
        let hit = if inv.event == Event::ProtectionPage && self.cfg.downgrade_on_wrprotect {
            self.write_protect(start, end)
        } else {
            self.evict(&mut st, start, end)
        };
        if hit {
            Counters::add(&self.stats.invalidations_hit, 1);
        }
        if inv.event == Event::Unmap {
            range.gc_pending.store(true, Ordering::Release);
        }
        trace(hit);
        true
    }

    /// Whether `inv` is the `MMU_NOTIFY_MIGRATE` of this engine's own running migration of
    /// `[start, end)` (see `RangeState::migrating`). Anyone else's migration, even with our
    /// owner (a CPU fault's `migrate_to_ram`, another context of the same device), is zapped
    /// here: only the migration that runs this callback knows it will zap the span itself.
    fn own_migration(&self, st: &RangeState, inv: &Invalidation, start: u64, end: u64) -> bool {
        if inv.event != Event::Migrate || inv.owner == 0 || inv.owner != self.devmem.owner() {
            return false;
        }
        if cfg!(feature = "teeth-migrate-skip-any") {
            return true;
        }
        matches!(st.migrating, Some((s, e, task))
            if s <= start && end <= e && task == self.plat.task())
    }

    fn has_leaves(&self, start: u64, end: u64) -> bool {
        let mut any = false;
        self.pt.for_each_leaf(start, end, |l| any |= l.valid);
        any
    }

    /// Revokes device write access in `[start, end)` (fork's COW, `folio_mkclean`): read
    /// mappings stay. The device may have written each page until now, so each is dirtied.
    fn write_protect(&self, start: u64, end: u64) -> bool {
        if cfg!(feature = "teeth-no-wp-downgrade") {
            return false;
        }
        match self.pt.write_protect(start, end, |l| {
            if !l.perm.local {
                self.dma.set_dirty(leaf_pfn(l.aux))
            }
        }) {
            Some(f) => {
                self.flush(f);
                true
            }
            None => false,
        }
    }

    /// Releases every device leaf in `[start, end)` (a 2 MiB leaf touched is released whole):
    /// zap, flush, then unmap the DMA addresses. Call under the range lock.
    pub(crate) fn evict(&self, st: &mut RangeState, start: u64, end: u64) -> bool {
        let Some(f) = self.pt.zap(start, end) else {
            return false;
        };
        let unmap_first = cfg!(feature = "teeth-unmap-before-flush");
        if !unmap_first {
            self.flush(f);
        }
        let n = self.release(f);
        // Only the owner reaps its span, under its lock, so its count covers every leaf it
        // reaps. A shortfall is a broken invariant: counted (the tests require 0) and
        // reported, never an oops.
        st.mapped = match st.mapped.checked_sub(n) {
            Some(m) => m,
            None => {
                Counters::add(&self.stats.accounting_errors, 1);
                self.plat
                    .warn("range reaped more device leaves than it mapped");
                0
            }
        };
        if unmap_first {
            self.flush(f);
        }
        true
    }

    /// Reaps the zapped leaves of `f`: each DMA mapping is unmapped with the size it was
    /// mapped with, after marking the page dirty if the device could write it.
    fn release(&self, f: Flush) -> usize {
        let n = self.pt.reap(f.start, f.end, |l| {
            // A device page has no dirty bit to set: it is the only copy.
            if l.perm.write && !l.perm.local && !cfg!(feature = "teeth-no-set-dirty") {
                self.dma.set_dirty(leaf_pfn(l.aux));
            }
            let order = if l.level == 1 {
                HUGE_SHIFT - PAGE_SHIFT
            } else {
                0
            };
            self.unmap_leaf(l.addr, l.aux, order);
        });
        Counters::add(&self.stats.dma_unmapped, n as u64);
        n
    }

    /// Flushes the device TLB for `f` and waits for it.
    pub(crate) fn flush(&self, f: Flush) {
        Counters::add(&self.stats.tlb_flushes, 1);
        if !cfg!(feature = "teeth-no-tlb-flush") {
            self.tlb.flush(f.start, f.end);
        }
    }
}
