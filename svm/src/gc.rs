//! Garbage collection of unmapped ranges, and teardown.
//!
//! A callback cannot remove its own notifier (`mmu_interval_notifier_remove()` may sleep and
//! waits for callbacks), so `MMU_NOTIFY_UNMAP` only marks the range; the driver's worker calls
//! [`Engine::gc`], which re-checks under the range lock that nothing is mapped and no fault is
//! in flight, kills the range, frees its leaf tables after a flush, unpublishes it, and only
//! then — holding no engine lock — removes the notifier.

use super::engine::{Engine, RangeRef};
use super::pgtable::table::{Flush, HUGE_SHIFT};
use super::pgtable::Lock;
use super::platform::{Mm, Platform, RangeMap};
use super::stats::Counters;
use super::sync::{fence, Ordering};
use super::trace::Trace;

impl<P: Platform> Engine<P> {
    /// Removes ranges marked by `MMU_NOTIFY_UNMAP` that are unused. Call from a worker with no
    /// lock held, never concurrently with [`Engine::teardown`]. Returns how many it removed.
    pub fn gc(&self) -> usize {
        let mut n = 0;
        self.each_range(|k, r| {
            if r.gc_pending.swap(false, Ordering::AcqRel) && self.retire(k, r, false) {
                n += 1;
            }
        });
        self.trace(|ctx| Trace::Gc { ctx, removed: n });
        n
    }

    /// Calls `f` on every published range in key order, letting others run every 64 ranges
    /// (a context may hold `Config::max_ranges` of them; `cond_resched()` in the kernel).
    pub(crate) fn each_range(&self, mut f: impl FnMut(u64, &RangeRef<P>)) {
        let mut key = 0;
        let mut seen = 0u32;
        while let Some((k, r)) = self.ranges.next_from(key) {
            // k <= VA_LIMIT >> MIN_RANGE_SHIFT: no overflow.
            key = k + 1;
            f(k, &r);
            seen = seen.wrapping_add(1);
            if seen & 63 == 0 {
                self.plat.relax();
            }
        }
    }

    /// Removes `r` if it maps nothing and no fault is in flight on it: what a failed fault or
    /// a snapshot leaves behind is collected at once, so holes and PROT_NONE cost no range.
    /// Call with no lock held and without an `InFlight` on `r`.
    pub(crate) fn retire_if_empty(&self, r: &RangeRef<P>) {
        if self.retire(self.range_key(r.start), r, false) {
            Counters::add(&self.stats.ranges_reaped_empty, 1);
        }
    }

    /// Removes every range that maps nothing and has no fault in flight (the range budget
    /// ran out); each counts in `ranges_reaped_empty`.
    pub(crate) fn collect_empty(&self) {
        self.each_range(|k, r| {
            if self.retire(k, r, false) {
                Counters::add(&self.stats.ranges_reaped_empty, 1);
            }
        });
    }

    /// Removes every range, releasing every device mapping (TLB flushed, DMA unmapped, pages
    /// dirtied as needed). Call once no fault can start any more and the GC worker is stopped;
    /// works before and after the mm exited. Idempotent.
    pub fn teardown(&self) {
        self.each_range(|k, r| {
            self.retire(k, r, true);
        });
    }

    /// Kills range `r` (at `key`) and removes its notifier. Without `force` (GC) a range with
    /// mappings or faults in flight is left alone; with it (teardown) its mappings are
    /// released. Returns whether this call removed it.
    fn retire(&self, key: u64, r: &RangeRef<P>, force: bool) -> bool {
        {
            let _serial = self.serial.invalidate();
            let mut st = r.lock.lock();
            if st.dead {
                return false;
            }
            // Dead first, then look for walkers (see `InFlight`): a fault or walk that entered
            // before this store is seen below; one that enters after it sees `dead` and backs
            // off, so nothing walks the leaf tables freed below.
            st.dead = true;
            r.dead.store(true, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            if !force && !cfg!(feature = "teeth-no-gc-recheck") {
                let busy = r.inflight.load(Ordering::SeqCst) > 0
                    && !cfg!(feature = "teeth-gc-ignores-walkers");
                if busy || st.mapped > 0 {
                    // In use (a fault in flight, or faulted in again since the unmap): alive
                    // again. A fault that saw the transient `dead` looks the range up again
                    // and finds it (`range_for` re-checks under this lock).
                    st.dead = false;
                    r.dead.store(false, Ordering::SeqCst);
                    if busy {
                        // Look again on the next pass.
                        r.gc_pending.store(true, Ordering::Release);
                    }
                    return false;
                }
            }
            if force {
                self.evict(&mut st, r.start, r.end);
            }
            if self.cfg.range_shift >= HUGE_SHIFT {
                let d = self.pt.unlink_leaf_tables(r.start, r.end);
                if !d.is_empty() {
                    self.flush(Flush {
                        start: r.start,
                        end: r.end,
                    });
                    // SAFETY: unlinked above and the device TLB (with its page-walk cache) was
                    // flushed for their span. No engine walk can be in them: walks outside this
                    // lock hold an `InFlight`, none was held when `dead` was set (or GC, which
                    // alone frees here, backed off above; teardown runs when no fault can
                    // start), and later ones see `dead` and walk nothing.
                    unsafe { self.pt.free_deferred(d) };
                }
            }
        }
        self.unpublish(key, r);
        self.mm.interval_remove(r.interval());
        Counters::add(&self.stats.ranges_removed, 1);
        true
    }
}
