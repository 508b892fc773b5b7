//! Per-engine statistics: plain relaxed counters, never part of any protocol.

use core::sync::atomic::{AtomicU64, Ordering};

macro_rules! stats {
    ($($(#[$m:meta])* $f:ident),* $(,)?) => {
        /// Live counters (relaxed atomics).
        #[derive(Default)]
        pub struct Counters { $($(#[$m])* pub(crate) $f: AtomicU64,)* }

        /// A snapshot of the counters.
        #[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
        pub struct Stats { $($(#[$m])* pub $f: u64,)* }

        impl Counters {
            /// Reads every counter.
            pub fn snapshot(&self) -> Stats {
                Stats { $($f: self.$f.load(Ordering::Relaxed),)* }
            }
        }

        impl Stats {
            /// Calls `f` with every counter's name and value, in declaration order (debugfs
            /// lists them all without a list of its own).
            pub fn for_each(&self, mut f: impl FnMut(&'static str, u64)) {
                $( f(stringify!($f), self.$f); )*
            }
        }
    };
}

stats! {
    /// Faults serviced successfully (each call of `fault`, batches count their unique pages).
    faults,
    /// Faults that failed with an errno.
    fault_errors,
    /// 4 KiB device leaves written (new or upgraded).
    pages_mapped,
    /// 2 MiB device leaves written.
    huge_mapped,
    /// DMA mappings released.
    dma_unmapped,
    /// Retries after an invalidation our own write fault caused (COW break).
    retries_own,
    /// Retries after any other invalidation of the fault's range.
    retries_foreign,
    /// Faults that ran out of retry budget (`EBUSY`).
    retry_timeouts,
    /// Invalidation callbacks run.
    invalidations,
    /// Invalidation callbacks that found device mappings to remove or downgrade.
    invalidations_hit,
    /// Non-blockable callbacks refused (lock contended or the flush would sleep).
    nonblock_refused,
    /// Device TLB flushes issued.
    tlb_flushes,
    /// Ranges created.
    ranges_created,
    /// Ranges removed by GC or teardown.
    ranges_removed,
    /// Range creations lost to a concurrent creator.
    range_races,
    /// Device faults dropped as duplicates by batch service.
    batch_duplicates,
    /// Windows of batch service that took several queued faults into one
    /// `hmm_range_fault()` and one range-lock hold.
    batch_windows,
    /// Broken bookkeeping invariants caught and survived (a range reaping more leaves than it
    /// mapped). Always 0 unless the engine has a bug; the tests require 0.
    accounting_errors,
    /// Ranges removed because they mapped nothing: created by a fault that failed (PROT_NONE,
    /// read-only) or a snapshot, or collected when the range budget ran out.
    ranges_reaped_empty,
    /// Range creations refused because the engine holds `Config::max_ranges` ranges in use.
    range_limit_hits,
    /// 4 KiB leaves written for the device's own memory (no DMA mapping).
    local_mapped,
    /// Pages migrated to device memory.
    migrated_to_device,
    /// Pages migrated back to system memory by the engine (a CPU fault's `migrate_to_ram`
    /// is not an engine's).
    migrated_to_system,
    /// Pages a migration collected but could not move (device memory full, a copy failed,
    /// the CPU entry changed meanwhile).
    migrate_failed,
    /// `MMU_NOTIFY_MIGRATE` callbacks of the engine's own migrations, whose zap the migration
    /// does itself.
    migrate_skips,
    /// Device pages a migration to the device evicted back to system memory to make room.
    evicted,
    /// Atomic leaves written: pages the CPU handed over for device atomics.
    atomic_mapped,
    /// 4 KiB leaves written for a peer's device memory (through a DMA mapping: P2P).
    peer_mapped,
}

impl Counters {
    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}
