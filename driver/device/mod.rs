// SPDX-License-Identifier: GPL-2.0
//! The software device and the per-file context behind /dev/accel/accelN.
//!
//! A job (SUBMIT) runs in the calling thread, which plays the device's execution engine: every
//! memory access goes through the device TLB and the engine's page table ([`TlbCursor`]), and
//! touches the page with `kmap_local_page()` while holding the TLB lock, so a flush waits for
//! it. A miss (or a write to a read-only leaf) is a device fault: the job drops the TLB lock,
//! queues the fault in the context's bounded fault queue and sleeps (killably); the context's
//! fault worker drains the queue in batches through `Engine::fault_batch`, answers every
//! waiter, queues GC (its own work item: a notifier removal waits for every running
//! invalidation of the mm), and the job replays the access.
//!
//! Nothing a job or the file's release does waits for the fault worker uninterruptibly: a
//! fault may sit in `handle_mm_fault()` as long as its backing store likes (FUSE, NFS), and a
//! killed process must still exit. A waiter is refcounted, so a killed job leaves while the
//! worker may still answer it, and the release of the file hands the teardown (which waits
//! for the worker) to a work item.
//!
//! Unplug (the platform device unbound with files open, `svm_rs_unplug_begin`/`_finish`):
//! every open file's context is in a registry; running jobs and prefetches stop at their next
//! page with `ENODEV`, the glue waits for every ioctl to leave (`drm_dev_unplug()`), then each
//! context's engine is torn down as at close (DMA unmapped, notifiers removed, workers
//! stopped) while its file stays open; later ioctls fail with `ENODEV` in the glue.
//!
//! Files: this one holds the context (`Ctx`: open, BIND, close, teardown); `worker.rs` the
//! fault queue's worker and GC; `ops.rs` the op interpreter (SUBMIT, PREFETCH); `queue.rs`
//! the user-mode queues and their command processors; `query.rs`
//! QUERY; `registry.rs` the open files, for unplug; `entry.rs` the functions glue.c calls.
//!
//! Locks of this module (glue.h classes): `svm_registry_lock` (open, close, unplug; outside
//! everything a teardown takes), `svm_ctx_lock` (BIND only), `svm_faultq_lock`
//! (spinlock, queue only, nothing nested), `svm_qctl_lock` and `svm_queues_lock` (queue
//! suspend/resume and the queue table, see `queue.rs`), `svm_worker_lock` (the worker's scratch; held across
//! fault service, so it is outside every engine lock), `svm_tlb_lock` (innermost, never held
//! while waiting).

use crate::binding::Binding;
use crate::config::Config;
use crate::dmirror::Mirror;
use crate::engine::{Access, DeviceFault, Scratch};
use crate::ffi;
use crate::kplat::{
    this_unit, KArc, KDevRef, KDevmem, KEngine, KMutex, KPlat, KSpin, GFP, TLB_ENTRIES,
};
use crate::pgtable::table::{HUGE_SHIFT, PAGE_SHIFT};
use crate::pgtable::{Errno, PteFormat, X86Format};
use crate::migrate::Place;
use crate::platform::Platform;
use crate::policy::{AtomicMode, Location, Policy};
use crate::uapi;
use crate::work::{WaitQueue, WorkItem};
use core::ffi::c_void;
use core::ptr::{addr_of_mut, null_mut};
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use kernel::prelude::*;
use kernel::sync::Arc;
use kernel::uaccess::UserSlice;

pub(crate) mod debugfs;
use debugfs::DebugfsDir;
mod entry;
mod ops;
mod placement;
mod query;
mod queue;
mod registry;
mod worker;

use entry::{svm_rs_release, svm_rs_work};
use queue::QueueTable;
pub(crate) use registry::{
    accel_devmem, devmem_exit, devmem_init, registry, registry_free, registry_init, unregister,
};

/// Device fault queue entries.
pub const QDEPTH: usize = 256;
/// Replays of one access before the job gives up with `EBUSY` (each replay follows a fault
/// the engine serviced successfully, so only invalidation storms get here).
const MAX_REPLAYS: u32 = 1000;
/// Longest op (1 GiB).
const MAX_LEN: u64 = 1 << 30;
/// Prefetch and migration work in chunks of this size, checking for a fatal signal between
/// them.
const PREFETCH_CHUNK: u64 = 2 << 20;

const PAGE: u64 = 1 << PAGE_SHIFT;

const ENOTCONN: Errno = Errno(107);
/// The device was unplugged.
pub(crate) const ENODEV: Errno = Errno(19);

/// One raised device fault and the job waiting for it.
struct QEntry {
    va: u64,
    access: Access,
    /// An atomic in device-exclusive mode: the page must be handed over (`fault_atomic`),
    /// outside the batch.
    atomic: bool,
    w: Arc<Waiter>,
}

/// A job's wait slot, shared by the job and its queue entry: a job killed while its fault is
/// outstanding leaves, and the worker answers into the slot all the same.
struct Waiter {
    done: AtomicU32,
    err: AtomicI32,
}

/// Drops every entry of `v` (answered or orphaned waiters), keeping its capacity.
fn clear_entries(v: &mut KVec<QEntry>) {
    let n = v.len();
    // SAFETY: the length is 0 before the `n` initialised entries are dropped in place, so
    // none can be dropped twice.
    unsafe {
        v.set_len(0);
        core::ptr::drop_in_place(core::ptr::slice_from_raw_parts_mut(v.as_mut_ptr(), n));
    }
}

struct FaultQueue {
    q: KVec<QEntry>,
}

struct WorkerState {
    scratch: KBox<Scratch>,
    batch: KVec<DeviceFault>,
    waiters: KVec<QEntry>,
}

/// Why a job stopped.
enum JobErr {
    /// A fault the engine could not service: errno and address.
    Fault(Errno, u64),
    /// A fatal signal.
    Intr,
    /// The device was unplugged.
    Gone,
}

/// Per open file.
///
/// # Invariants
/// `bound` is null or a `KBox<Binding>` leaked by BIND, set once and freed in
/// [`Ctx::shutdown`] (at close, or at unplug), when no ioctl can run any more and the fault
/// worker is stopped. A context published to the glue is in the
/// registry until [`Ctx::close`].
pub struct Ctx {
    dev: *mut ffi::Device,
    /// Which accel device the file is of (its memory is `accel_devmem(index)`).
    index: usize,
    work: WorkItem,
    /// Runs [`Ctx::close`] after the file's release, which must not wait for the worker.
    release_work: WorkItem,
    waitq: WaitQueue,
    bind_lock: KMutex<()>,
    /// Its debugfs directory (`ctx-<id>`): removed before the binding goes, since its files
    /// read the binding.
    dbg: DebugfsDir,
    /// The engine and its GC (its own work item, because `mmu_interval_notifier_remove()`
    /// waits for every running invalidation of the mm, and faults must not wait behind an
    /// unrelated munmap).
    bound: AtomicPtr<Binding>,
    /// The device is being unplugged: jobs and prefetches stop with `ENODEV`.
    gone: AtomicBool,
    fq: KSpin<FaultQueue>,
    drained: AtomicU32,
    worker: KMutex<WorkerState>,
    jobs: AtomicU64,
    device_faults: AtomicU64,
    fault_batches: AtomicU64,
    /// User-mode queues (`queue.rs`): stopped before the binding goes.
    queues: KMutex<QueueTable>,
    qctl: KMutex<()>,
    queue_jobs: AtomicU64,
    /// MADVISE's placement policy (`placement.rs`).
    policy: KSpin<Policy<{ uapi::MAX_ADVICE }>>,
}

fn ret(r: Result<(), Errno>) -> i32 {
    match r {
        Ok(()) => 0,
        Err(e) => -e.0,
    }
}

fn fatal_signal_pending() -> bool {
    // SAFETY: no preconditions.
    unsafe { ffi::svm_fatal_signal_pending() }
}

/// A scheduling point for the loops a user can make long (a voluntary-preemption kernel
/// preempts nowhere else; spinlock sections end with no reschedule there).
pub(crate) fn resched() {
    // SAFETY: no preconditions; every caller holds no spinlock.
    unsafe { ffi::svm_cond_resched() }
}

pub(crate) fn zeroed_scratch() -> Result<KBox<Scratch>, Errno> {
    // 4 KiB: allocated zeroed in place rather than built on the stack.
    let b = KBox::<Scratch>::new_uninit(GFP | __GFP_ZERO).map_err(|_| Errno::ENOMEM)?;
    // SAFETY: `Scratch` is an array of `u64`, for which all-zero is valid.
    Ok(unsafe { b.assume_init() })
}

/// `Engine::prefetch` of `[start, start + len)` in chunks, stopping with `EINTR` at a fatal
/// signal between them, and with `ENODEV` once `gone` (unplug). `done` says how many bytes
/// from `start` are populated, as the engine's does.
pub(crate) fn prefetch_killable(
    e: &KEngine,
    start: u64,
    len: u64,
    access: Access,
    done: &mut u64,
    gone: &AtomicBool,
) -> Result<(), Errno> {
    *done = 0;
    let mut scratch = zeroed_scratch()?;
    while *done < len {
        between_chunks(gone)?;
        let s = start + *done;
        let l = (len - *done).min(PREFETCH_CHUNK - (s & (PREFETCH_CHUNK - 1)));
        let mut d = 0;
        let r = e.prefetch(&mut scratch, s, l, access, &mut d);
        *done += d;
        r?;
    }
    Ok(())
}

/// `Engine::migrate_into` of `[start, end)` to `to` (`Place::Device`: `mem`, this device's
/// memory or a peer's), a 2 MiB-aligned chunk at a time, running
/// `then(scratch, chunk start, chunk length)` after each chunk moved; `done` counts the bytes
/// handled. Stops between chunks as [`between_chunks`] does. Returns how many pages moved.
pub(crate) fn migrate_killable(
    e: &KEngine,
    start: u64,
    end: u64,
    to: Place,
    mem: &KDevRef,
    done: &mut u64,
    gone: &AtomicBool,
    mut then: impl FnMut(&mut Scratch, u64, u64) -> Result<(), Errno>,
) -> Result<u64, Errno> {
    let mut s = zeroed_scratch()?;
    let mut moved = 0;
    let mut va = start;
    while va < end {
        between_chunks(gone)?;
        let l = (end - va).min(PREFETCH_CHUNK - (va & (PREFETCH_CHUNK - 1)));
        let mut d = 0;
        let r = e.migrate_into(&mut s, va, l, to, mem, &mut d);
        *done += d;
        moved += r?;
        then(&mut s, va, l)?;
        va += l;
    }
    Ok(moved)
}

/// Between two chunks of a long call: `EINTR` at a fatal signal (the OOM killer's), `ENODEV`
/// once an unplug began (`gone`); otherwise a `cond_resched()`.
pub(crate) fn between_chunks(gone: &AtomicBool) -> Result<(), Errno> {
    if fatal_signal_pending() {
        return Err(Errno::EINTR);
    }
    if gone.load(Ordering::Relaxed) {
        return Err(ENODEV);
    }
    resched();
    Ok(())
}

impl Ctx {
    fn new(dev: *mut ffi::Device, index: usize) -> Result<*mut Ctx, Errno> {
        let fq = KVec::with_capacity(QDEPTH, GFP).map_err(|_| Errno::ENOMEM)?;
        let ws = WorkerState {
            scratch: zeroed_scratch()?,
            batch: KVec::with_capacity(QDEPTH, GFP).map_err(|_| Errno::ENOMEM)?,
            waiters: KVec::with_capacity(QDEPTH, GFP).map_err(|_| Errno::ENOMEM)?,
        };
        let mut slot = KBox::<Ctx>::new_uninit(GFP).map_err(|_| Errno::ENOMEM)?;
        let p = slot.as_mut_ptr();
        // The work items' data is the context, at the address the box fixes; they only run
        // once the context is published, and dropping them (with it) cancels them.
        // SAFETY: the context outlives its work items (they are its fields).
        let work = unsafe { WorkItem::new(svm_rs_work, p.cast())? };
        // SAFETY: as above; it drops the context from its own function (`close`), and it
        // exists now so that the release cannot fail.
        let release_work = unsafe { WorkItem::new_teardown(svm_rs_release, p.cast())? };
        let waitq = WaitQueue::new()?;
        // SAFETY: a fresh allocation the box keeps in place; every field is written once, the
        // locks in place (they never move).
        unsafe {
            addr_of_mut!((*p).dev).write(dev);
            addr_of_mut!((*p).index).write(index);
            addr_of_mut!((*p).work).write(work);
            addr_of_mut!((*p).release_work).write(release_work);
            addr_of_mut!((*p).waitq).write(waitq);
            KMutex::init_class(addr_of_mut!((*p).bind_lock), (), ffi::LC_CTX);
            addr_of_mut!((*p).dbg).write(DebugfsDir::none());
            addr_of_mut!((*p).bound).write(AtomicPtr::new(null_mut()));
            addr_of_mut!((*p).gone).write(AtomicBool::new(false));
            KSpin::init_class(addr_of_mut!((*p).fq), FaultQueue { q: fq }, ffi::LC_FAULTQ);
            addr_of_mut!((*p).drained).write(AtomicU32::new(0));
            KMutex::init_class(addr_of_mut!((*p).worker), ws, ffi::LC_WORKER);
            addr_of_mut!((*p).jobs).write(AtomicU64::new(0));
            addr_of_mut!((*p).device_faults).write(AtomicU64::new(0));
            addr_of_mut!((*p).fault_batches).write(AtomicU64::new(0));
            KMutex::init_class(addr_of_mut!((*p).queues), QueueTable::new(), ffi::LC_QUEUES);
            KMutex::init_class(addr_of_mut!((*p).qctl), (), ffi::LC_QCTL);
            addr_of_mut!((*p).queue_jobs).write(AtomicU64::new(0));
            KSpin::init_class(addr_of_mut!((*p).policy), Policy::new(), ffi::LC_POLICY);
        }
        // SAFETY: every field was initialised just above.
        let b = unsafe { slot.assume_init() };
        // Registered before the glue publishes it, so an unplug finds it from now on.
        registry()
            .lock()
            .ctxs
            .push(&*b as *const Ctx, GFP_KERNEL)
            .map_err(|_| Errno::ENOMEM)?;
        let p = KBox::into_raw(b);
        // SAFETY: the context is fully built and lives until `close`, whose `shutdown`
        // removes the directory (waiting for its readers) first.
        unsafe { (*p).dbg.create(p.cast(), false) };
        Ok(p)
    }

    fn bound(&self) -> Option<&Binding> {
        let p = self.bound.load(Ordering::Acquire);
        // SAFETY: a published `Binding` lives until `shutdown`, which no ioctl or worker
        // outlives.
        (!p.is_null()).then(|| unsafe { &*p })
    }

    /// The bound state, for a caller that must be in the bound mm.
    fn bound_here(&self) -> Result<&Binding, Errno> {
        let b = self.bound().ok_or(ENOTCONN)?;
        if !b.is_current() {
            return Err(Errno::EXDEV);
        }
        Ok(b)
    }

    fn bind(&self, a: &uapi::Bind) -> Result<(), Errno> {
        if a.flags != 0 || a.pad != 0 {
            return Err(Errno::EINVAL);
        }
        let _g = self.bind_lock.lock();
        if self.bound().is_some() {
            return Err(Errno::EBUSY);
        }
        let devmem = accel_devmem(self.index);
        // SAFETY: `dev` is the platform device (the DMA device of every accel device), alive
        // while a file is open.
        let b = unsafe { Binding::new(self.dev, KDevRef(devmem))? };
        self.bound.store(KBox::into_raw(b), Ordering::Release);
        Ok(())
    }

    // ---- the device's memory access ---------------------------------------------

    /// Tears the context down, from `release_work`: no ioctl runs any more (the file is
    /// gone), though the worker may still be servicing the faults of jobs that were killed.
    /// The mm may have exited long ago (its `MMU_NOTIFY_RELEASE` already zapped everything):
    /// teardown then only removes the notifiers.
    fn close(self: KBox<Self>) {
        // Out of the registry first: an unplug running now finishes with this context before
        // it is freed, and none can start on it any more.
        unregister(&mut registry().lock().ctxs, &*self);
        self.shutdown();
        // Dropping the context frees the work items (this one included) and the wait queue.
    }

    /// Releases the engine and everything it holds (DMA mappings, notifiers, page table, the
    /// device and mm references), after stopping the workers; the context itself stays, with
    /// no bound state. Runs when no ioctl can run any more: at close, and at unplug once the
    /// glue waited for every ioctl to leave. Idempotent; never concurrent with itself (close
    /// and unplug serialise on the registry).
    fn shutdown(&self) {
        // First the debugfs files, which read the binding: this waits for running readers.
        self.dbg.remove();
        // The queues' processors raise device faults and read the binding: stop them before
        // the fault worker and GC.
        self.stop_queues();
        if let Some(b) = self.bound() {
            b.stop_gc();
        }
        // The fault worker uses the binding: stop it first. This waits for a running worker
        // (here, in a work item, not in the exiting task); only jobs queue it, and none runs.
        self.work.cancel_sync();
        let p = self.bound.swap(null_mut(), Ordering::AcqRel);
        if !p.is_null() {
            // SAFETY: leaked by BIND, reclaimed once here; nothing uses it any more (no
            // ioctl, no worker). Dropping it tears the engine down (`Binding`'s order).
            drop(unsafe { KBox::from_raw(p) });
        }
    }
}
