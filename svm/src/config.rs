//! Engine configuration.

use super::pgtable::table::{HUGE_SHIFT, PAGE_SHIFT};
use super::pgtable::Errno;

/// Most pages one fault services (fault-around window), and the scratch buffer size.
pub const MAX_WINDOW_PAGES: usize = 512;

/// Smallest `range_shift` (64 KiB).
pub const MIN_RANGE_SHIFT: u32 = 16;
/// Largest `range_shift`: one range over a whole 47-bit user address space (x86-64 without
/// LA57), which is test_hmm's one notifier over the mm.
pub const MAX_RANGE_SHIFT: u32 = 47;

/// What serialises fault commits and invalidations beside each range's own lock.
///
/// Every scope keeps the range lock and the whole per-range protocol; the engine-wide scopes
/// only add one lock around the range lock's critical sections, so correctness is the same
/// and only concurrency changes. They exist to measure this design against the reference
/// designs with the same code (`Documentation/design.rst`, "Granularity and the baselines").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LockScope {
    /// The range lock alone: faults and invalidations on different ranges share no engine
    /// lock (this design).
    #[default]
    PerRange,
    /// One engine-wide mutex taken around every critical section that takes a range lock:
    /// fault commit (with `read_retry`), invalidation (zap, flush, unmap), GC and teardown.
    /// test_hmm's `dmirror->mutex`.
    EngineMutex,
    /// One engine-wide reader/writer semaphore: the read side around fault commit (with
    /// `read_retry`), the write side around invalidation, GC and teardown. drm_gpusvm's
    /// `notifier_lock`.
    EngineRwsem,
}

/// Tunables a driver sets once, when it creates an engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// log2 of a range's span: each range owns one interval notifier, one lock, and the device
    /// mappings of that span. 21 (2 MiB) by default; 16 (64 KiB) ..= 47 (128 TiB: one range
    /// over the whole address space), and a range no larger than `task_size` rounded up to a
    /// power of two.
    pub range_shift: u32,
    /// Pages serviced per fault: the naturally aligned block of this many pages around the
    /// faulting one, clamped to its VMA and range. A power of two, 1 ..= 512.
    pub fault_around_pages: u32,
    /// Retry budget of one fault, in ns (`HMM_RANGE_DEFAULT_TIMEOUT` is 1000 ms).
    pub retry_timeout_ns: u64,
    /// Map 2 MiB device leaves where the CPU maps a 2 MiB folio with one PMD.
    pub huge: bool,
    /// Revoke only write access on `MMU_NOTIFY_PROTECTION_PAGE` (fork's COW, `folio_mkclean`)
    /// instead of zapping: read mappings survive a fork.
    pub downgrade_on_wrprotect: bool,
    /// Highest user address + 1 (`TASK_SIZE`); faults at or above it are `EINVAL`.
    pub task_size: u64,
    /// Engine-wide serialisation on top of the range locks ([`LockScope::PerRange`]: none).
    pub lock_scope: LockScope,
    /// Most ranges the engine holds at once (each costs a notifier, a lock and an index
    /// node). Creating one more first collects the ranges that map nothing; if every range
    /// is in use the fault fails with `ENOSPC`. 1 ..= 2^32; the default, 2^16, mirrors
    /// 128 GiB with 2 MiB ranges.
    pub max_ranges: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            range_shift: HUGE_SHIFT,
            fault_around_pages: 16,
            retry_timeout_ns: 1_000_000_000,
            huge: true,
            downgrade_on_wrprotect: true,
            task_size: 1 << 47,
            lock_scope: LockScope::PerRange,
            max_ranges: 1 << 16,
        }
    }
}

impl Config {
    /// Refuses settings the engine cannot honour.
    pub fn validate(&self) -> Result<(), Errno> {
        let fa = self.fault_around_pages;
        let task_ok = self.task_size != 0
            && self.task_size <= super::pgtable::table::VA_LIMIT
            && self.task_size & ((1 << PAGE_SHIFT) - 1) == 0;
        // Checked before `range_size()`, which shifts by it.
        let shift_ok = (MIN_RANGE_SHIFT..=MAX_RANGE_SHIFT).contains(&self.range_shift);
        // A range larger than the address space (rounded up: the kernel's TASK_SIZE is one
        // page short of a power of two) is meaningless. This also keeps every range,
        // `key << range_shift .. + range_size()`, at or below `VA_LIMIT`, without overflow.
        if !task_ok
            || !shift_ok
            || self.range_size() > self.task_size.next_power_of_two()
            || fa == 0
            || !fa.is_power_of_two()
            || fa as usize > MAX_WINDOW_PAGES
            || self.max_ranges == 0
            || self.max_ranges as u64 > 1 << 32
        {
            return Err(Errno::EINVAL);
        }
        Ok(())
    }

    /// A range's span in bytes.
    pub fn range_size(&self) -> u64 {
        1 << self.range_shift
    }
}
