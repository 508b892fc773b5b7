// SPDX-License-Identifier: GPL-2.0
//! debugfs text (driver/debugfs.c makes the files): `/sys/kernel/debug/svm_accel/device`, and
//! `stats` and `ranges` in `ctx-N/` for each open accel file and `dm-N/` for each dmirror file,
//! and `queues` in `ctx-N/` (written by `queue.rs`). `stats` has one `name value` line per
//! counter, `ranges` one line per range of the engine;
//! an accel file says `unbound` before BIND, a dmirror file `unplugged` after an unplug.

use super::*;
use crate::kplat::{DMA_LIVE, TABLES_LIVE};
use core::fmt::Write;

/// A file's debugfs directory (`ctx-N` or `dm-N`): made once its owner is built, removed
/// (waiting for running readers) before anything its files read goes, at the latest when
/// dropped; so an owner declares it before what the files read.
///
/// # Invariants
/// `d` is null or a directory made by `svm_debugfs_ctx_add`, not yet removed.
pub(crate) struct DebugfsDir {
    d: AtomicPtr<c_void>,
}

impl DebugfsDir {
    /// No directory yet.
    pub(crate) const fn none() -> Self {
        DebugfsDir {
            d: AtomicPtr::new(null_mut()),
        }
    }

    /// Makes the directory of `obj`, an accel context or (`mirror`) a dmirror file, named by
    /// its kind and a count of opens since load. Without debugfs it stays none.
    ///
    /// # Safety
    /// `obj` is fully built and stays valid until this directory is removed.
    pub(crate) unsafe fn create(&self, obj: *mut c_void, mirror: bool) {
        static NEXT_ID: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
        let id = NEXT_ID[usize::from(mirror)].fetch_add(1, Ordering::Relaxed);
        // SAFETY: `obj` per the contract: the files' show may run on it from now on.
        let d = unsafe { ffi::svm_debugfs_ctx_add(obj, id, mirror) };
        self.d.store(d, Ordering::Release);
    }

    /// Removes the directory, if there is one, waiting for running readers. Idempotent.
    pub(crate) fn remove(&self) {
        let d = self.d.swap(null_mut(), Ordering::AcqRel);
        if !d.is_null() {
            // SAFETY: made by `svm_debugfs_ctx_add` (invariant), removed once here.
            unsafe { ffi::svm_debugfs_remove(d) };
        }
    }
}

impl Drop for DebugfsDir {
    fn drop(&mut self) {
        self.remove();
    }
}

/// A `seq_file` as a `fmt::Write` (seq_file retries a show with a larger buffer on overflow).
pub(crate) struct Seq(pub(crate) *mut c_void);

impl Write for Seq {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        // SAFETY: `self.0` is the `seq_file` of the running show; `s` is valid for its length.
        unsafe { ffi::svm_seq_write(self.0, s.as_ptr(), s.len()) };
        Ok(())
    }
}

/// An engine's census and every statistic (`Stats::for_each`), `name value` per line.
pub(crate) fn show_engine(e: &KEngine, w: &mut Seq) -> core::fmt::Result {
    let cfg = e.config();
    let c = e.census();
    writeln!(w, "range_shift {}", cfg.range_shift)?;
    writeln!(w, "fault_around_pages {}", cfg.fault_around_pages)?;
    writeln!(w, "pt_tables {}", c.tables)?;
    writeln!(w, "pt_pages {}", c.pages)?;
    writeln!(w, "pt_huge {}", c.huge)?;
    writeln!(w, "pt_zapped {}", c.zapped)?;
    writeln!(w, "ranges {}", e.range_count())?;
    writeln!(w, "dma_live {}", e.dma().live())?;
    let mut r = Ok(());
    e.stats().for_each(|k, v| {
        if r.is_ok() {
            r = writeln!(w, "{k} {v}");
        }
    });
    r
}

/// One line per range of `e`, in address order, each read under its range lock.
pub(crate) fn show_ranges(e: &KEngine, w: &mut Seq) -> core::fmt::Result {
    let mut r = Ok(());
    e.for_each_range_info(|i| {
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

/// `device`: the module's configuration and what all its files hold together.
pub(crate) fn show_device(w: &mut Seq) -> core::fmt::Result {
    let (ctxs, mirrors, dm, accel) = {
        let r = registry().lock();
        (
            r.ctxs.len(),
            r.mirrors.len(),
            r.dm_devmem.clone(),
            r.accel_devmem.clone(),
        )
    };
    writeln!(w, "accel_files {ctxs}")?;
    writeln!(w, "dmirror_files {mirrors}")?;
    // Device memory of each dmirror device: pages in use of pages in all.
    for (i, d) in dm.iter().enumerate() {
        if let Some(d) = d {
            writeln!(w, "dmirror{i}_devmem {} {}", d.used(), d.pages())?;
        }
    }
    // Of each accel device, by its number (its order of registration).
    for (i, d) in accel.iter().enumerate() {
        if let Some(d) = d {
            writeln!(w, "accel{i}_devmem {} {}", d.used(), d.pages())?;
        }
    }
    // SAFETY: no preconditions (module parameters).
    let (shift, scope, max) = unsafe {
        (
            ffi::svm_range_shift(),
            ffi::svm_lock_scope(),
            ffi::svm_max_ranges(),
        )
    };
    writeln!(w, "range_shift {shift}")?;
    let scope = match scope {
        0 => "per_range",
        1 => "engine_mutex",
        _ => "engine_rwsem",
    };
    writeln!(w, "lock_scope {scope}")?;
    writeln!(w, "max_ranges {max}")?;
    writeln!(
        w,
        "pte_format {}",
        <<KPlat as Platform>::Fmt as PteFormat>::NAME
    )?;
    writeln!(w, "dma_live {}", DMA_LIVE.load(Ordering::Relaxed))?;
    writeln!(
        w,
        "table_pages_live {}",
        TABLES_LIVE.load(Ordering::Relaxed)
    )
}

impl Ctx {
    /// A context's files, by `what` (`SVM_DBG_STATS` or `_RANGES`).
    pub(super) fn debugfs_show(&self, what: u32, w: &mut Seq) -> core::fmt::Result {
        let Some(b) = self.bound() else {
            return writeln!(w, "unbound");
        };
        if what == ffi::SVM_DBG_RANGES {
            return show_ranges(b.engine(), w);
        }
        writeln!(w, "jobs {}", self.jobs.load(Ordering::Relaxed))?;
        writeln!(
            w,
            "device_faults {}",
            self.device_faults.load(Ordering::Relaxed)
        )?;
        writeln!(
            w,
            "fault_batches {}",
            self.fault_batches.load(Ordering::Relaxed)
        )?;
        writeln!(w, "tlb_hits {}", b.engine().tlb().hits())?;
        writeln!(w, "tlb_misses {}", b.engine().tlb().misses())?;
        writeln!(w, "gc_removed {}", b.gc_removed())?;
        writeln!(w, "queue_jobs {}", self.queue_jobs.load(Ordering::Relaxed))?;
        show_engine(b.engine(), w)
    }
}
