// SPDX-License-Identifier: GPL-2.0
//! debugfs: `/sys/kernel/debug/svm_accel/ctx-N/{stats,ranges}` for each open accel file
//! (driver/debugfs.c makes the files; the text comes from here). `stats` has one `name value`
//! line per QUERY field; `ranges` one line per range of the engine. Both say `unbound` before
//! BIND.

use super::*;
use core::fmt::Write;

/// A `seq_file` as a `fmt::Write` (seq_file retries a show with a larger buffer on overflow).
struct Seq(*mut c_void);

impl Write for Seq {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        // SAFETY: `self.0` is the `seq_file` of the running show; `s` is valid for its length.
        unsafe { ffi::svm_seq_write(self.0, s.as_ptr(), s.len()) };
        Ok(())
    }
}

/// `writeln!(w, "name value")` for each named field of a QUERY struct.
macro_rules! fields {
    ($w:expr, $q:expr, $($f:ident),* $(,)?) => {
        $( writeln!($w, "{} {}", stringify!($f), $q.$f)?; )*
    };
}

impl Ctx {
    /// The directory's files, by `what` (`SVM_DBG_*`), written to the `seq_file` `m`.
    pub(super) fn debugfs_show(&self, what: u32, m: *mut c_void) -> core::fmt::Result {
        let mut w = Seq(m);
        if self.bound().is_none() {
            return writeln!(w, "unbound");
        }
        match what {
            0 => self.show_stats(&mut w),
            _ => self.show_ranges(&mut w),
        }
    }

    fn show_stats(&self, w: &mut Seq) -> core::fmt::Result {
        // SAFETY: `Query` is plain integers and bytes: all-zero is valid.
        let mut q: uapi::Query = unsafe { core::mem::zeroed() };
        if self.query(&mut q).is_err() {
            return writeln!(w, "error");
        }
        fields!(
            w,
            q,
            range_shift,
            fault_around_pages,
            pt_tables,
            pt_pages,
            pt_huge,
            pt_zapped,
            ranges,
            dma_live,
            jobs,
            device_faults,
            fault_batches,
            tlb_hits,
            tlb_misses,
            gc_removed,
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
        );
        Ok(())
    }

    fn show_ranges(&self, w: &mut Seq) -> core::fmt::Result {
        let Some(b) = self.bound() else {
            return Ok(());
        };
        let mut r = Ok(());
        b.engine().for_each_range_info(|i| {
            if r.is_ok() {
                r = writeln!(
                    w,
                    "{:#x}-{:#x} mapped={} owner={} dead={} gc_pending={} inflight={}",
                    i.start,
                    i.end,
                    i.mapped,
                    u8::from(i.owner),
                    u8::from(i.dead),
                    u8::from(i.gc_pending),
                    i.inflight
                );
            }
        });
        r
    }
}
