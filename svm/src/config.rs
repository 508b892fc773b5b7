//! Engine configuration.

use super::pgtable::table::{HUGE_SHIFT, PAGE_SHIFT};
use super::pgtable::Errno;

/// Most pages one fault services (fault-around window), and the scratch buffer size.
pub const MAX_WINDOW_PAGES: usize = 512;

/// Tunables a driver sets once, when it creates an engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// log2 of a range's span: each range owns one interval notifier, one lock, and the device
    /// mappings of that span. 21 (2 MiB) by default; 16 (64 KiB) ..= 30 (1 GiB).
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
        }
    }
}

impl Config {
    /// Refuses settings the engine cannot honour.
    pub fn validate(&self) -> Result<(), Errno> {
        let fa = self.fault_around_pages;
        if !(16..=30).contains(&self.range_shift)
            || fa == 0
            || !fa.is_power_of_two()
            || fa as usize > MAX_WINDOW_PAGES
            || self.task_size > super::pgtable::table::VA_LIMIT
            || self.task_size & ((1 << PAGE_SHIFT) - 1) != 0
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
