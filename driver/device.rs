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
//! Locks of this file (glue.h classes): `svm_registry_lock` (open, close, unplug; outside
//! everything a teardown takes), `svm_ctx_lock` (BIND only), `svm_faultq_lock`
//! (spinlock, queue only, nothing nested), `svm_worker_lock` (the worker's scratch; held across
//! fault service, so it is outside every engine lock), `svm_tlb_lock` (innermost, never held
//! while waiting).

use crate::config::{Config, LockScope};
use crate::dmirror::Mirror;
use crate::engine::{Access, DeviceFault, Parts, Scratch};
use crate::ffi;
use crate::kplat::{KArc, KDma, KEngine, KLock, KMem, KMm, KPlat, KTlb, GFP, TLB_ENTRIES};
use crate::pgtable::table::{HUGE_SHIFT, PAGE_SHIFT};
use crate::pgtable::{Errno, PteFormat, X86Format};
use crate::platform::Platform;
use crate::uapi;
use core::ffi::c_void;
use core::ptr::null_mut;
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use kernel::prelude::*;
use kernel::sync::Arc;
use kernel::uaccess::UserSlice;

/// Device fault queue entries.
pub const QDEPTH: usize = 256;
/// Replays of one access before the job gives up with `EBUSY` (each replay follows a fault
/// the engine serviced successfully, so only invalidation storms get here).
const MAX_REPLAYS: u32 = 1000;
/// Longest op (1 GiB).
const MAX_LEN: u64 = 1 << 30;
/// Prefetch works in chunks of this size, checking for a fatal signal between them.
const PREFETCH_CHUNK: u64 = 2 << 20;

const PAGE: u64 = 1 << PAGE_SHIFT;

const ENOTCONN: Errno = Errno(107);
/// The device was unplugged.
pub(crate) const ENODEV: Errno = Errno(19);

/// One raised device fault and the job waiting for it.
struct QEntry {
    va: u64,
    access: Access,
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

/// What BIND creates.
struct Bound {
    mm: *mut ffi::MmStruct,
    engine: KArc<KEngine>,
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
/// `work`, `gc_work`, `release_work` and `waitq` are live until drop; `bound` is null or a
/// `KBox<Bound>` leaked by BIND, set once and freed in [`Ctx::shutdown`] (at close, or at
/// unplug), when no ioctl can run any more. A context published to the glue is in the
/// registry until [`Ctx::close`].
pub struct Ctx {
    dev: *mut ffi::Device,
    work: *mut ffi::Work,
    /// Runs [`Ctx::close`] after the file's release, which must not wait for the worker.
    release_work: *mut ffi::Work,
    /// GC, queued by `MMU_NOTIFY_UNMAP` callbacks: its own work item, because
    /// `mmu_interval_notifier_remove()` waits for every running invalidation of the mm, and
    /// faults must not wait behind an unrelated munmap.
    gc_work: *mut ffi::Work,
    waitq: *mut ffi::Waitq,
    bind_lock: KLock<()>,
    bound: AtomicPtr<Bound>,
    closing: AtomicBool,
    /// The device is being unplugged: jobs and prefetches stop with `ENODEV`.
    gone: AtomicBool,
    fq: KLock<FaultQueue>,
    drained: AtomicU32,
    worker: KLock<WorkerState>,
    jobs: AtomicU64,
    device_faults: AtomicU64,
    fault_batches: AtomicU64,
    gc_removed: AtomicU64,
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

/// An engine for the device `dev`, configured by the module parameters, mirroring `mm`;
/// `gc_work` is queued after every `MMU_NOTIFY_UNMAP` callback. Shared by BIND and the dmirror
/// front end.
///
/// # Safety
/// `mm` is the calling task's live `current->mm`; `dev` is the module's platform device,
/// registered while any file is open; `gc_work` outlives every notifier of the engine (its
/// owner tears the engine down before freeing it).
pub(crate) unsafe fn new_engine(
    dev: *mut ffi::Device,
    mm: *mut ffi::MmStruct,
    gc_work: *mut ffi::Work,
) -> Result<KArc<KEngine>, Errno> {
    // SAFETY: per the contract.
    let kmm = unsafe { KMm::bind(mm, gc_work)? };
    let parts = Parts::<KPlat> {
        mm: kmm,
        // SAFETY: per the contract.
        dma: unsafe { KDma::new(dev)? },
        tlb: KTlb::new()?,
        mem: KMem,
    };
    let cfg = Config {
        // SAFETY: no preconditions.
        task_size: unsafe { ffi::svm_task_size() },
        // SAFETY: no preconditions.
        max_ranges: unsafe { ffi::svm_max_ranges() } as usize,
        // SAFETY: no preconditions.
        range_shift: unsafe { ffi::svm_range_shift() },
        // SAFETY: no preconditions.
        lock_scope: match unsafe { ffi::svm_lock_scope() } {
            0 => LockScope::PerRange,
            1 => LockScope::EngineMutex,
            2 => LockScope::EngineRwsem,
            _ => return Err(Errno::EINVAL),
        },
        ..Config::default()
    };
    KEngine::new(KPlat, parts, cfg)
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
        if fatal_signal_pending() {
            return Err(Errno::EINTR);
        }
        if gone.load(Ordering::Relaxed) {
            return Err(ENODEV);
        }
        resched();
        let s = start + *done;
        let l = (len - *done).min(PREFETCH_CHUNK - (s & (PREFETCH_CHUNK - 1)));
        let mut d = 0;
        let r = e.prefetch(&mut scratch, s, l, access, &mut d);
        *done += d;
        r?;
    }
    Ok(())
}

impl Ctx {
    fn new(dev: *mut ffi::Device) -> Result<*mut Ctx, Errno> {
        let fq = KVec::with_capacity(QDEPTH, GFP).map_err(|_| Errno::ENOMEM)?;
        let ws = WorkerState {
            scratch: zeroed_scratch()?,
            batch: KVec::with_capacity(QDEPTH, GFP).map_err(|_| Errno::ENOMEM)?,
            waiters: KVec::with_capacity(QDEPTH, GFP).map_err(|_| Errno::ENOMEM)?,
        };
        let mut ctx = Ctx {
            dev,
            work: null_mut(),
            release_work: null_mut(),
            gc_work: null_mut(),
            waitq: null_mut(),
            bind_lock: KLock::new_mutex((), ffi::LC_CTX)?,
            bound: AtomicPtr::new(null_mut()),
            closing: AtomicBool::new(false),
            gone: AtomicBool::new(false),
            fq: KLock::new_spin(FaultQueue { q: fq }, ffi::LC_FAULTQ)?,
            drained: AtomicU32::new(0),
            worker: KLock::new_mutex(ws, ffi::LC_WORKER)?,
            jobs: AtomicU64::new(0),
            device_faults: AtomicU64::new(0),
            fault_batches: AtomicU64::new(0),
            gc_removed: AtomicU64::new(0),
        };
        // SAFETY: plain allocation.
        ctx.waitq = unsafe { ffi::svm_waitq_new() };
        if ctx.waitq.is_null() {
            return Err(Errno::ENOMEM);
        }
        let mut b = KBox::new(ctx, GFP).map_err(|_| Errno::ENOMEM)?;
        // SAFETY: plain allocation; the work item's data is the context it belongs to, whose
        // address the box fixes.
        b.work = unsafe { ffi::svm_work_new(svm_rs_work, (&*b as *const Ctx).cast_mut().cast()) };
        if b.work.is_null() {
            return Err(Errno::ENOMEM);
        }
        // SAFETY: as above.
        b.gc_work = unsafe { ffi::svm_work_new(svm_rs_gc, (&*b as *const Ctx).cast_mut().cast()) };
        if b.gc_work.is_null() {
            return Err(Errno::ENOMEM);
        }
        // SAFETY: as above. Allocated now so that the release cannot fail.
        b.release_work = unsafe {
            ffi::svm_work_new_teardown(svm_rs_release, (&*b as *const Ctx).cast_mut().cast())
        };
        if b.release_work.is_null() {
            return Err(Errno::ENOMEM);
        }
        // Registered before the glue publishes it, so an unplug finds it from now on.
        registry()
            .lock()
            .ctxs
            .push(&*b as *const Ctx, GFP_KERNEL)
            .map_err(|_| Errno::ENOMEM)?;
        Ok(KBox::into_raw(b))
    }

    fn bound(&self) -> Option<&Bound> {
        let p = self.bound.load(Ordering::Acquire);
        // SAFETY: a published `Bound` lives until `shutdown`, which no ioctl or worker
        // outlives.
        (!p.is_null()).then(|| unsafe { &*p })
    }

    /// The bound state, for a caller that must be in the bound mm.
    fn bound_here(&self) -> Result<&Bound, Errno> {
        let b = self.bound().ok_or(ENOTCONN)?;
        // SAFETY: no preconditions.
        if unsafe { ffi::svm_current_mm() } != b.mm {
            return Err(Errno::EXDEV);
        }
        Ok(b)
    }

    fn queue_work(&self) {
        // SAFETY: live work item (invariant).
        unsafe { ffi::svm_work_queue(self.work) }
    }

    fn wake(&self) {
        // SAFETY: live wait queue (invariant).
        unsafe { ffi::svm_waitq_wake(self.waitq) }
    }

    /// Sleeps until `*p != old`; `Intr` on a fatal signal.
    fn wait_ne(&self, p: &AtomicU32, old: u32) -> Result<(), JobErr> {
        // SAFETY: live wait queue; `p` outlives the wait.
        match unsafe { ffi::svm_waitq_wait_ne_killable(self.waitq, p.as_ptr(), old) } {
            0 => Ok(()),
            _ => Err(JobErr::Intr),
        }
    }

    // ---- BIND ---------------------------------------------------------------

    fn bind(&self, a: &uapi::Bind) -> Result<(), Errno> {
        if a.flags != 0 || a.pad != 0 {
            return Err(Errno::EINVAL);
        }
        let _g = self.bind_lock.lock();
        if self.bound().is_some() {
            return Err(Errno::EBUSY);
        }
        // SAFETY: no preconditions.
        let mm = unsafe { ffi::svm_current_mm() };
        // SAFETY: `current->mm` of the calling task is live; `dev` is the DRM device's parent,
        // alive while a file is open; the work item outlives every notifier (close removes
        // them before freeing it).
        let engine = unsafe { new_engine(self.dev, mm, self.gc_work)? };
        let b = KBox::new(Bound { mm, engine }, GFP).map_err(|_| Errno::ENOMEM)?;
        self.bound.store(KBox::into_raw(b), Ordering::Release);
        Ok(())
    }

    // ---- the device's memory access ---------------------------------------------

    /// Performs one device access to the pages holding each `(va, access)` of `reqs` (at most
    /// two): translates them under the TLB lock, maps the pages with `kmap_local_page()` and
    /// runs `f` on pointers to the bytes at each va, still under the lock. A miss raises a
    /// device fault, waits for it, and replays.
    fn access<R>(
        &self,
        b: &Bound,
        reqs: &[(u64, Access)],
        mut f: impl FnMut(&[*mut u8; 2]) -> R,
    ) -> Result<R, JobErr> {
        let pt = b.engine.page_table();
        let tlb = b.engine.tlb();
        let mut replays = 0;
        loop {
            if fatal_signal_pending() {
                return Err(JobErr::Intr);
            }
            if self.gone.load(Ordering::Relaxed) {
                return Err(JobErr::Gone);
            }
            resched();
            let (va, acc) = {
                let mut cur = tlb.begin();
                let mut pfns = [0u64; 2];
                let mut miss = None;
                for (i, &(va, acc)) in reqs.iter().enumerate() {
                    match cur.translate(pt, va, acc == Access::Write) {
                        Some(p) => pfns[i] = p,
                        None => {
                            miss = Some((va, acc));
                            break;
                        }
                    }
                }
                match miss {
                    Some(m) => m,
                    None => {
                        let mut base = [null_mut::<u8>(); 2];
                        let mut ptrs = [null_mut::<u8>(); 2];
                        for (i, &(va, _)) in reqs.iter().enumerate() {
                            // SAFETY: the pfn is a page the device may access now: its leaf
                            // is valid, and a flush (which precedes any unmap or free of the
                            // page) waits for the TLB lock we hold.
                            base[i] = unsafe { ffi::svm_kmap_pfn(pfns[i]) };
                            // SAFETY: in-page offset.
                            ptrs[i] = unsafe { base[i].add((va & (PAGE - 1)) as usize) };
                        }
                        let r = f(&ptrs);
                        for i in (0..reqs.len()).rev() {
                            // SAFETY: mapped above, unmapped in reverse order.
                            unsafe { ffi::svm_kunmap(base[i]) };
                        }
                        return Ok(r);
                    }
                }
            };
            replays += 1;
            if replays > MAX_REPLAYS {
                return Err(JobErr::Fault(Errno::EBUSY, va));
            }
            self.device_fault(va, acc)?;
        }
    }

    /// Raises a device fault and sleeps until the fault worker answered it, or until a fatal
    /// signal (`Intr`; the worker may still answer the waiter, which it co-owns).
    fn device_fault(&self, va: u64, access: Access) -> Result<(), JobErr> {
        self.device_faults.fetch_add(1, Ordering::Relaxed);
        let w = Arc::new(
            Waiter {
                done: AtomicU32::new(0),
                err: AtomicI32::new(0),
            },
            GFP,
        )
        .map_err(|_| JobErr::Fault(Errno::ENOMEM, va))?;
        loop {
            let gen = self.drained.load(Ordering::Acquire);
            // Made before the spinlock; dropped after it if the queue is full.
            let e = QEntry {
                va,
                access,
                w: w.clone(),
            };
            {
                let mut q = self.fq.lock();
                if q.q.len() < QDEPTH {
                    // Within capacity: never allocates.
                    q.q.push(e, GFP_ATOMIC)
                        .map_err(|_| JobErr::Fault(Errno::ENOMEM, va))?;
                    break;
                }
            }
            // Full: let the worker drain it, then try again.
            self.queue_work();
            self.wait_ne(&self.drained, gen)?;
        }
        self.queue_work();
        self.wait_ne(&w.done, 0)?;
        match w.err.load(Ordering::Acquire) {
            0 => Ok(()),
            e => Err(JobErr::Fault(Errno(e), va)),
        }
    }

    /// The fault worker (one work item per context, on the module's workqueue).
    fn work(&self) {
        let Some(b) = self.bound() else {
            return;
        };
        // What the fault service allocates (ranges, notifiers, page-table pages) is charged
        // to the bound mm's memory cgroup, not to this kworker's.
        let _charge = b.engine.mm().charge_scope();
        let mut g = self.worker.lock();
        let ws = &mut *g;
        loop {
            // Jobs keep faulting while the worker runs: let others have the CPU between
            // batches (a workqueue worker is not preempted on a voluntary kernel).
            resched();
            // SAFETY: `DeviceFault` is `Copy`: nothing to drop.
            unsafe { ws.batch.set_len(0) };
            {
                let mut q = self.fq.lock();
                let n = q.q.len();
                // SAFETY: moves the `n` initialised entries out; the length is 0 first, so
                // none stays behind to be dropped twice.
                unsafe {
                    q.q.set_len(0);
                    let src = q.q.as_ptr();
                    for i in 0..n {
                        let e = core::ptr::read(src.add(i));
                        // Within capacity (all three hold QDEPTH and `ws`'s are empty):
                        // never allocate, never fail.
                        let _ = ws.batch.push(DeviceFault::new(e.va, e.access), GFP_ATOMIC);
                        let _ = ws.waiters.push(e, GFP_ATOMIC);
                    }
                }
            }
            self.drained.fetch_add(1, Ordering::Release);
            self.wake();
            if ws.waiters.is_empty() {
                break;
            }
            // SAFETY: no preconditions (0 unless a test set the module parameter).
            unsafe { ffi::svm_fault_delay() };
            b.engine.fault_batch(&mut ws.scratch, &mut ws.batch);
            for w in ws.waiters.iter() {
                let page = w.va >> PAGE_SHIFT;
                // `fault_batch` sorted the batch by page; entries of one page share a result.
                let i = ws.batch.partition_point(|f| (f.va >> PAGE_SHIFT) < page);
                let res = match ws.batch.get(i) {
                    Some(f) if f.va >> PAGE_SHIFT == page => f.result.unwrap_or(Ok(())),
                    _ => Ok(()),
                };
                let err = match res {
                    Ok(()) => 0,
                    // A read merged into a write that the CPU forbids: the read itself may be
                    // fine. Let the job replay; it faults again, as a read, if it must.
                    Err(Errno::EPERM) if w.access == Access::Read => 0,
                    Err(e) => e.0,
                };
                w.w.err.store(err, Ordering::Relaxed);
                w.w.done.store(1, Ordering::Release);
            }
            self.wake();
            // Our references to the waiters, including those of jobs that were killed.
            clear_entries(&mut ws.waiters);
            self.fault_batches.fetch_add(1, Ordering::Relaxed);
            // A range GC passed over while this batch's faults were in flight is collected
            // now, on the GC work item, so no fault waits for a notifier removal.
            // SAFETY: live work item (invariant).
            unsafe { ffi::svm_work_queue(self.gc_work) };
        }
    }

    /// The GC work item.
    fn gc(&self) {
        let Some(b) = self.bound() else {
            return;
        };
        if !self.closing.load(Ordering::Acquire) {
            // GC frees; should it ever allocate, the bound mm's cgroup pays.
            let _charge = b.engine.mm().charge_scope();
            let n = b.engine.gc();
            self.gc_removed.fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    // ---- SUBMIT -----------------------------------------------------------------

    fn check_op(op: &uapi::Op, task_size: u64) -> Result<(), Errno> {
        let span = |a: u64, l: u64| -> Result<(), Errno> {
            let end = a.checked_add(l).ok_or(Errno::EINVAL)?;
            if a & 7 != 0 || l & 7 != 0 || l > MAX_LEN || end > task_size {
                return Err(Errno::EINVAL);
            }
            Ok(())
        };
        if op.flags != 0 {
            return Err(Errno::EINVAL);
        }
        match op.kind {
            uapi::OP_FILL => span(op.dst, op.len),
            uapi::OP_COPY => {
                span(op.src, op.len)?;
                span(op.dst, op.len)
            }
            uapi::OP_ADD => span(op.dst, 8),
            uapi::OP_READ => span(op.src, op.len),
            _ => Err(Errno::EINVAL),
        }
    }

    /// Runs one op; returns its result word.
    fn run_op(&self, b: &Bound, op: &uapi::Op) -> Result<u64, JobErr> {
        let mut off = 0u64;
        let in_page = |va: u64| PAGE - (va & (PAGE - 1));
        match op.kind {
            uapi::OP_FILL => {
                while off < op.len {
                    let va = op.dst + off;
                    let n = (op.len - off).min(in_page(va));
                    self.access(b, &[(va, Access::Write)], |p| {
                        for k in 0..(n / 8) as usize {
                            // SAFETY: in the mapped page, 8-byte aligned (va and n are).
                            let w = unsafe { AtomicU64::from_ptr(p[0].add(k * 8).cast()) };
                            w.store(op.value, Ordering::Relaxed);
                        }
                    })?;
                    off += n;
                }
                Ok(0)
            }
            uapi::OP_COPY => {
                while off < op.len {
                    let (s, d) = (op.src + off, op.dst + off);
                    let n = (op.len - off).min(in_page(s)).min(in_page(d));
                    self.access(b, &[(s, Access::Read), (d, Access::Write)], |p| {
                        for k in 0..(n / 8) as usize {
                            // SAFETY: both in their mapped pages, 8-byte aligned.
                            let (sw, dw) = unsafe {
                                (
                                    AtomicU64::from_ptr(p[0].add(k * 8).cast()),
                                    AtomicU64::from_ptr(p[1].add(k * 8).cast()),
                                )
                            };
                            dw.store(sw.load(Ordering::Relaxed), Ordering::Relaxed);
                        }
                    })?;
                    off += n;
                }
                Ok(0)
            }
            uapi::OP_ADD => self.access(b, &[(op.dst, Access::Write)], |p| {
                // SAFETY: in the mapped page, 8-byte aligned.
                let w = unsafe { AtomicU64::from_ptr(p[0].cast()) };
                w.fetch_add(op.value, Ordering::SeqCst)
            }),
            uapi::OP_READ => {
                let mut sum = 0u64;
                while off < op.len {
                    let va = op.src + off;
                    let n = (op.len - off).min(in_page(va));
                    sum = self.access(b, &[(va, Access::Read)], |p| {
                        let mut s = sum;
                        for k in 0..(n / 8) as usize {
                            // SAFETY: in the mapped page, 8-byte aligned.
                            let w = unsafe { AtomicU64::from_ptr(p[0].add(k * 8).cast()) };
                            s = s.wrapping_add(w.load(Ordering::Relaxed));
                        }
                        s
                    })?;
                    off += n;
                }
                Ok(sum)
            }
            _ => Ok(0),
        }
    }

    fn submit(&self, a: &mut uapi::Submit) -> Result<(), Errno> {
        let b = self.bound_here()?;
        a.error = 0;
        a.failed_op = 0;
        a.fault_addr = 0;
        let n = a.op_count;
        if a.flags != 0 || n == 0 || n > uapi::MAX_OPS {
            return Err(Errno::EINVAL);
        }
        let n = n as usize;
        let sz = core::mem::size_of::<uapi::Op>();
        let bytes = n * sz;
        let mut ops: KVVec<uapi::Op> = KVVec::with_capacity(n, GFP).map_err(|_| Errno::ENOMEM)?;
        {
            let spare = ops.spare_capacity_mut();
            // SAFETY: the spare capacity holds `n` ops = `bytes` bytes.
            let raw = unsafe {
                core::slice::from_raw_parts_mut(
                    spare.as_mut_ptr().cast::<core::mem::MaybeUninit<u8>>(),
                    bytes,
                )
            };
            UserSlice::new(a.ops_ptr as usize, bytes)
                .reader()
                .read_raw(raw)
                .map_err(|_| Errno::EFAULT)?;
        }
        // SAFETY: initialised by the copy above; `Op` is plain integers (any bits are valid).
        unsafe { ops.set_len(n) };
        let task_size = b.engine.config().task_size;
        for op in ops.iter() {
            Self::check_op(op, task_size)?;
        }
        self.jobs.fetch_add(1, Ordering::Relaxed);
        for (i, op) in ops.iter().enumerate() {
            // Ops of length 0 make no access: check between ops too.
            if fatal_signal_pending() {
                return Err(Errno::EINTR);
            }
            if self.gone.load(Ordering::Relaxed) {
                return Err(ENODEV);
            }
            resched();
            match self.run_op(b, op) {
                Ok(r) => {
                    if op.kind == uapi::OP_ADD || op.kind == uapi::OP_READ {
                        // The array was readable, so this cannot wrap; checked all the same,
                        // as everything derived from a user pointer.
                        let at = (a.ops_ptr as usize)
                            .checked_add(i * sz + uapi::OP_RESULT_OFFSET)
                            .ok_or(Errno::EFAULT)?;
                        UserSlice::new(at, 8)
                            .writer()
                            .write_slice(&r.to_ne_bytes())
                            .map_err(|_| Errno::EFAULT)?;
                    }
                }
                Err(JobErr::Intr) => return Err(Errno::EINTR),
                Err(JobErr::Gone) => return Err(ENODEV),
                Err(JobErr::Fault(e, va)) => {
                    a.error = -e.0;
                    a.failed_op = i as u32;
                    a.fault_addr = va;
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    // ---- PREFETCH -----------------------------------------------------------------

    fn prefetch(&self, a: &mut uapi::Prefetch) -> Result<(), Errno> {
        let b = self.bound_here()?;
        a.done = 0;
        if a.flags & !uapi::PREFETCH_WRITE != 0 || a.pad != 0 {
            return Err(Errno::EINVAL);
        }
        let end = a.start.checked_add(a.len).ok_or(Errno::EINVAL)?;
        if a.start & (PAGE - 1) != 0
            || a.len & (PAGE - 1) != 0
            || a.len == 0
            || end > b.engine.config().task_size
        {
            return Err(Errno::EINVAL);
        }
        let access = if a.flags & uapi::PREFETCH_WRITE != 0 {
            Access::Write
        } else {
            Access::Read
        };
        prefetch_killable(&b.engine, a.start, a.len, access, &mut a.done, &self.gone)
    }

    // ---- QUERY ----------------------------------------------------------------------

    fn query(&self, q: &mut uapi::Query) -> Result<(), Errno> {
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
        let e = &b.engine;
        q.flags = uapi::QUERY_BOUND;
        q.range_shift = e.config().range_shift;
        q.fault_around_pages = e.config().fault_around_pages;
        // Counted under each range's walk guard: GC may be freeing leaf tables right now.
        let c = e.census();
        q.pt_tables = c.tables as u64;
        q.pt_pages = c.pages as u64;
        q.pt_huge = c.huge as u64;
        q.pt_zapped = c.zapped as u64;
        q.ranges = e.range_count() as u64;
        q.dma_live = e.dma().live() as u64;
        q.jobs = self.jobs.load(Ordering::Relaxed);
        q.device_faults = self.device_faults.load(Ordering::Relaxed);
        q.fault_batches = self.fault_batches.load(Ordering::Relaxed);
        q.tlb_hits = e.tlb().hits.load(Ordering::Relaxed);
        q.tlb_misses = e.tlb().misses.load(Ordering::Relaxed);
        q.gc_removed = self.gc_removed.load(Ordering::Relaxed);
        let s = e.stats();
        q.faults = s.faults;
        q.fault_errors = s.fault_errors;
        q.pages_mapped = s.pages_mapped;
        q.huge_mapped = s.huge_mapped;
        q.dma_unmapped = s.dma_unmapped;
        q.retries_own = s.retries_own;
        q.retries_foreign = s.retries_foreign;
        q.retry_timeouts = s.retry_timeouts;
        q.invalidations = s.invalidations;
        q.invalidations_hit = s.invalidations_hit;
        q.nonblock_refused = s.nonblock_refused;
        q.tlb_flushes = s.tlb_flushes;
        q.ranges_created = s.ranges_created;
        q.ranges_removed = s.ranges_removed;
        q.range_races = s.range_races;
        q.batch_duplicates = s.batch_duplicates;
        Ok(())
    }

    // ---- close --------------------------------------------------------------------

    /// Tears the context down, from `release_work`: no ioctl runs any more (the file is
    /// gone), though the worker may still be servicing the faults of jobs that were killed.
    /// The mm may have exited long ago (its `MMU_NOTIFY_RELEASE` already zapped everything):
    /// teardown then only removes the notifiers.
    fn close(self: KBox<Self>) {
        // Out of the registry first: an unplug running now finishes with this context before
        // it is freed, and none can start on it any more.
        unregister(&mut registry().lock().ctxs, &*self);
        self.shutdown();
        // `Drop` frees the work items and the wait queue.
    }

    /// Releases the engine and everything it holds (DMA mappings, notifiers, page table, the
    /// device and mm references), after stopping the workers; the context itself stays, with
    /// no bound state. Runs when no ioctl can run any more: at close, and at unplug once the
    /// glue waited for every ioctl to leave. Idempotent; never concurrent with itself (close
    /// and unplug serialise on the registry).
    fn shutdown(&self) {
        self.closing.store(true, Ordering::Release);
        // SAFETY: live work items; this waits for a running worker (here, in a work item,
        // not in the exiting task).
        unsafe {
            ffi::svm_work_cancel_sync(self.work);
            ffi::svm_work_cancel_sync(self.gc_work);
        }
        let p = self.bound.swap(null_mut(), Ordering::AcqRel);
        if !p.is_null() {
            // SAFETY: leaked by BIND, reclaimed once here.
            let b = unsafe { KBox::from_raw(p) };
            b.engine.teardown();
            // Every notifier is gone, so nothing can queue the work items again.
            // SAFETY: live work items.
            unsafe {
                ffi::svm_work_cancel_sync(self.work);
                ffi::svm_work_cancel_sync(self.gc_work);
            }
            drop(b);
        }
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        // SAFETY: no bound state, no queued or running work item and no waiter are left
        // (`close`, or a `new` that failed before publishing the context); each freed once.
        // `release_work` may be the work item running this: a work function may free its own
        // work item (the workqueue core does not touch it after the call).
        unsafe {
            if !self.release_work.is_null() {
                ffi::svm_work_free(self.release_work);
            }
            if !self.gc_work.is_null() {
                ffi::svm_work_free(self.gc_work);
            }
            if !self.work.is_null() {
                ffi::svm_work_free(self.work);
            }
            if !self.waitq.is_null() {
                ffi::svm_waitq_free(self.waitq);
            }
        }
    }
}

// ---- entry points called by glue.c --------------------------------------------------------

/// DRM `open`: a new context, not bound yet, in the registry. NULL on allocation failure.
#[no_mangle]
pub extern "C" fn svm_rs_open(dev: *mut ffi::Device) -> *mut c_void {
    Ctx::new(dev).map(|p| p.cast()).unwrap_or(null_mut())
}

// ---- the registry of open files, for unplug -----------------------------------------------------

/// Every open file's state. Entries are added when a file is opened, before the glue
/// publishes it, and removed at its release, before it is freed, both under the registry
/// lock, so a pointer found under the lock is live.
pub(crate) struct Registry {
    ctxs: KVec<*const Ctx>,
    pub(crate) mirrors: KVec<*const Mirror>,
}

// SAFETY: the pointers are dereferenced only under the registry lock (see `Registry`), from
// whichever task holds it; what they point to is used from any thread anyway.
unsafe impl Send for Registry {}

/// Removes `p` from a registry list (order is not kept; 6.12's `KVec` has no `swap_remove`).
pub(crate) fn unregister<T>(v: &mut KVec<*const T>, p: *const T) {
    if let Some(i) = v.iter().position(|&x| x == p) {
        let last = v.len() - 1;
        v.as_mut_slice().swap(i, last);
        // SAFETY: drops the last element from the length; a raw pointer needs no drop.
        unsafe { v.set_len(last) };
    }
}

/// The registry (a module-lifetime allocation: `registry_init` .. `registry_free`).
static REGISTRY: AtomicPtr<KLock<Registry>> = AtomicPtr::new(null_mut());

/// Module init, before the glue registers the device (and so before any file opens).
pub(crate) fn registry_init() -> Result<(), Errno> {
    let r = Registry {
        ctxs: KVec::new(),
        mirrors: KVec::new(),
    };
    // Shared by every process: not charged to any one's cgroup.
    let l =
        KBox::new(KLock::new_mutex(r, ffi::LC_REGISTRY)?, GFP_KERNEL).map_err(|_| Errno::ENOMEM)?;
    REGISTRY.store(KBox::into_raw(l), Ordering::Release);
    Ok(())
}

/// Module exit, after the glue unregistered everything (no file is open).
pub(crate) fn registry_free() {
    let p = REGISTRY.swap(null_mut(), Ordering::AcqRel);
    if !p.is_null() {
        // SAFETY: made by `registry_init`, freed once; no user is left.
        drop(unsafe { KBox::from_raw(p) });
    }
}

/// The registry lock. Callers run between `registry_init` and `registry_free`.
pub(crate) fn registry() -> &'static KLock<Registry> {
    // SAFETY: set by module init before any file, probe or unplug, freed after all of them.
    unsafe { &*REGISTRY.load(Ordering::Acquire) }
}

/// First half of unplug: every running job, prefetch and dmirror copy stops at its next page
/// with `ENODEV`, so the glue's wait for the ioctls to leave is short.
#[no_mangle]
pub extern "C" fn svm_rs_unplug_begin() {
    let r = registry().lock();
    for &c in r.ctxs.iter() {
        // SAFETY: registered, hence live (see `Registry`).
        unsafe { &*c }.gone.store(true, Ordering::Relaxed);
    }
    for &m in r.mirrors.iter() {
        // SAFETY: as above.
        unsafe { &*m }.set_gone();
    }
}

/// Second half: no ioctl, open or mmap runs or will run on any file of the device (the glue
/// waited for them), so every engine is torn down, the files staying open: DMA mappings
/// unmapped, notifiers removed, workers stopped, device and mm references dropped.
#[no_mangle]
pub extern "C" fn svm_rs_unplug_finish() {
    let r = registry().lock();
    for &c in r.ctxs.iter() {
        // SAFETY: registered, hence live; no ioctl runs on it.
        let c = unsafe { &*c };
        c.gone.store(true, Ordering::Relaxed);
        c.shutdown();
    }
    for &m in r.mirrors.iter() {
        // SAFETY: as above.
        let m = unsafe { &*m };
        m.set_gone();
        m.shutdown();
    }
}

/// DRM `postclose`: queues the teardown. Tearing down waits for the fault worker, which may
/// be stuck on a fault of a job that was killed; the task releasing the file (often an exiting
/// one) must not wait for it. Module exit flushes the workqueue.
///
/// # Safety
/// `ctx` came from `svm_rs_open`, and no ioctl on it runs or will run.
#[no_mangle]
pub unsafe extern "C" fn svm_rs_postclose(ctx: *mut c_void) {
    if !ctx.is_null() {
        // SAFETY: per the contract; the context lives until `release_work` frees it.
        let c = unsafe { &*ctx.cast::<Ctx>() };
        // GC stops now; the worker, if running, finishes its batch.
        c.closing.store(true, Ordering::Release);
        // SAFETY: live work item (invariant), queued once: the file is released once.
        unsafe { ffi::svm_work_queue(c.release_work) };
    }
}

/// The release work item's function: the context's teardown.
///
/// # Safety
/// `data` is the context the work item was created for, released (`svm_rs_postclose`).
#[no_mangle]
pub unsafe extern "C" fn svm_rs_release(data: *mut c_void) {
    // SAFETY: per the contract; nothing else frees it.
    unsafe { KBox::from_raw(data.cast::<Ctx>()) }.close();
}

/// # Safety
/// `ctx` from `svm_rs_open`; `data` the DRM core's kernel copy of the ioctl struct.
#[no_mangle]
pub unsafe extern "C" fn svm_rs_bind(ctx: *mut c_void, data: *mut c_void) -> i32 {
    // SAFETY: per the contract.
    let (c, a) = unsafe { (&*ctx.cast::<Ctx>(), &*data.cast::<uapi::Bind>()) };
    ret(c.bind(a))
}

/// # Safety
/// As [`svm_rs_bind`].
#[no_mangle]
pub unsafe extern "C" fn svm_rs_submit(ctx: *mut c_void, data: *mut c_void) -> i32 {
    // SAFETY: per the contract.
    let (c, a) = unsafe { (&*ctx.cast::<Ctx>(), &mut *data.cast::<uapi::Submit>()) };
    ret(c.submit(a))
}

/// # Safety
/// As [`svm_rs_bind`].
#[no_mangle]
pub unsafe extern "C" fn svm_rs_prefetch(ctx: *mut c_void, data: *mut c_void) -> i32 {
    // SAFETY: per the contract.
    let (c, a) = unsafe { (&*ctx.cast::<Ctx>(), &mut *data.cast::<uapi::Prefetch>()) };
    ret(c.prefetch(a))
}

/// # Safety
/// As [`svm_rs_bind`].
#[no_mangle]
pub unsafe extern "C" fn svm_rs_query(ctx: *mut c_void, data: *mut c_void) -> i32 {
    // SAFETY: per the contract.
    let (c, a) = unsafe { (&*ctx.cast::<Ctx>(), &mut *data.cast::<uapi::Query>()) };
    ret(c.query(a))
}

/// The GC work item's function.
///
/// # Safety
/// `data` is the live context the work item was created for.
#[no_mangle]
pub unsafe extern "C" fn svm_rs_gc(data: *mut c_void) {
    // SAFETY: per the contract (close cancels the work before freeing the context).
    unsafe { &*data.cast::<Ctx>() }.gc();
}

/// The fault worker's function.
///
/// # Safety
/// `data` is the live context the work item was created for.
#[no_mangle]
pub unsafe extern "C" fn svm_rs_work(data: *mut c_void) {
    // SAFETY: per the contract (close cancels the work before freeing the context).
    unsafe { &*data.cast::<Ctx>() }.work();
}
