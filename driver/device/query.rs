// SPDX-License-Identifier: GPL-2.0
//! QUERY: the device's description and the context's statistics.

use super::*;
use crate::stats::Stats;

impl Ctx {
    pub(super) fn query(&self, q: &mut uapi::Query) -> Result<(), Errno> {
        // SAFETY: `Query` is plain integers and bytes: all-zero is valid.
        *q = unsafe { core::mem::zeroed() };
        let cfg = Config::default();
        q.range_shift = cfg.range_shift;
        q.fault_around_pages = cfg.fault_around_pages;
        q.pte_format = uapi::PTE_X86;
        q.page_sizes = (1 << PAGE_SHIFT) | if X86Format::HUGE { 1 << HUGE_SHIFT } else { 0 };
        q.fault_queue_depth = QDEPTH as u32;
        q.tlb_entries = TLB_ENTRIES as u32;
        let name = <<KPlat as Platform>::Fmt as PteFormat>::NAME.as_bytes();
        let l = name.len().min(15);
        q.pte_format_name[..l].copy_from_slice(&name[..l]);
        let Some(b) = self.bound() else {
            return Ok(());
        };
        let e = b.engine();
        q.flags = uapi::QUERY_BOUND;
        q.range_shift = e.config().range_shift;
        q.fault_around_pages = e.config().fault_around_pages;
        // Counted under each range's walk guard: GC may be freeing leaf tables right now.
        let c = e.census();
        q.pt_tables = c.tables as u64;
        q.pt_pages = c.pages as u64;
        q.pt_huge = c.huge as u64;
        q.pt_zapped = c.zapped as u64;
        q.pt_local = c.local as u64;
        q.ranges = e.range_count() as u64;
        q.dma_live = e.dma().live() as u64;
        q.jobs = self.jobs.load(Ordering::Relaxed);
        q.device_faults = self.device_faults.load(Ordering::Relaxed);
        q.fault_batches = self.fault_batches.load(Ordering::Relaxed);
        q.tlb_hits = e.tlb().hits();
        q.tlb_misses = e.tlb().misses();
        q.gc_removed = b.gc_removed();
        // Every engine statistic, by name: no `..`, so a new field of `Stats` does not build
        // until QUERY (and the uAPI header) carries it.
        let Stats {
            faults,
            fault_errors,
            pages_mapped,
            huge_mapped,
            dma_unmapped,
            retries_own,
            retries_foreign,
            retry_timeouts,
            invalidations,
            invalidations_hit,
            nonblock_refused,
            tlb_flushes,
            ranges_created,
            ranges_removed,
            range_races,
            batch_duplicates,
            batch_windows,
            ranges_reaped_empty,
            range_limit_hits,
            accounting_errors,
            local_mapped,
            migrated_to_device,
            migrated_to_system,
            migrate_failed,
            // The engine's own bookkeeping (debugfs shows it).
            migrate_skips: _,
            evicted,
            atomic_mapped,
            peer_mapped,
        } = e.stats();
        q.faults = faults;
        q.fault_errors = fault_errors;
        q.pages_mapped = pages_mapped;
        q.huge_mapped = huge_mapped;
        q.dma_unmapped = dma_unmapped;
        q.retries_own = retries_own;
        q.retries_foreign = retries_foreign;
        q.retry_timeouts = retry_timeouts;
        q.invalidations = invalidations;
        q.invalidations_hit = invalidations_hit;
        q.nonblock_refused = nonblock_refused;
        q.tlb_flushes = tlb_flushes;
        q.ranges_created = ranges_created;
        q.ranges_removed = ranges_removed;
        q.range_races = range_races;
        q.batch_duplicates = batch_duplicates;
        q.batch_windows = batch_windows;
        q.ranges_reaped_empty = ranges_reaped_empty;
        q.range_limit_hits = range_limit_hits;
        q.accounting_errors = accounting_errors;
        if let Some(d) = &e.devmem().0 {
            q.devmem_pages = d.pages();
            q.devmem_used = d.used() as u64;
        }
        q.migrated_to_device = migrated_to_device;
        q.migrated_to_system = migrated_to_system;
        q.migrate_failed = migrate_failed;
        q.evicted = evicted;
        q.local_mapped = local_mapped;
        q.atomic_mapped = atomic_mapped;
        q.peer_mapped = peer_mapped;
        Ok(())
    }

    // ---- close --------------------------------------------------------------------
}
