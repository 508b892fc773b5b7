// SPDX-License-Identifier: GPL-2.0
//! An engine bound to an mm, together with the GC work item its notifiers queue: the one
//! place that knows the order a binding is torn down in. Both front ends hold one: the accel
//! context from BIND on, a dmirror file from open on.
//!
//! The order, in [`Binding`]'s `Drop`: stop GC (a run queued from now on does nothing), wait
//! for a running one, tear the engine down (DMA mappings released, notifiers removed), wait
//! for GC again (a callback that ran before the removals may have queued it), then free the
//! engine and only after it the work item its notifiers pointed to. GC must never run
//! concurrently with teardown (`Engine::gc`'s contract), and the work item must outlive
//! every notifier that can queue it.

use crate::config::{Config, LockScope};
use crate::engine::Parts;
use crate::ffi;
use crate::kplat::{KArc, KDevRef, KDma, KEngine, KMem, KMm, KPlat, KTlb, GFP};
use crate::pgtable::Errno;
use crate::work::WorkItem;
use core::ffi::c_void;
use core::ptr::addr_of_mut;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use kernel::prelude::*;

/// An engine mirroring `mm` for the device, and its GC.
///
/// # Invariants
/// - `gc_work` runs [`Binding::gc`] on this binding, which lives in a `KBox` (its address is
///   the work item's data) and outlives the item.
/// - `engine`'s notifiers queue `gc_work`; `Drop` removes them all (teardown) before the
///   work item is freed (it is declared after `engine`, so it is dropped after it).
pub(crate) struct Binding {
    mm: *mut ffi::MmStruct,
    engine: KArc<KEngine>,
    gc_work: WorkItem,
    /// Set when teardown begins: a GC run queued from then on does nothing.
    closing: AtomicBool,
    /// Ranges GC removed.
    gc_removed: AtomicU64,
}

// SAFETY: `mm` is only compared with `current->mm`, never dereferenced here; every other field
// is `Send + Sync` (the engine and the work item by their own impls).
unsafe impl Send for Binding {}
// SAFETY: as above.
unsafe impl Sync for Binding {}

impl Binding {
    /// Binds the calling task's mm for the device `dev`, whose own memory is `devmem`.
    ///
    /// # Safety
    /// `dev` is the module's platform device, registered while any file is open (and so
    /// while this binding lives).
    pub(crate) unsafe fn new(
        dev: *mut ffi::Device,
        devmem: KDevRef,
    ) -> Result<KBox<Binding>, Errno> {
        // SAFETY: no preconditions.
        let mm = unsafe { ffi::svm_current_mm() };
        let mut slot = KBox::<Binding>::new_uninit(GFP).map_err(|_| Errno::ENOMEM)?;
        let p = slot.as_mut_ptr();
        // SAFETY: the item's data is the binding, at the address the box fixes; it is a field
        // of the binding, so it never runs after the binding is gone (dropping it cancels it).
        let gc_work = unsafe { WorkItem::new(svm_rs_binding_gc, p.cast())? };
        // SAFETY: `current->mm` is the caller's own, live (or null: `ESRCH`); `dev` per the
        // contract; `gc_work` outlives every notifier (`Drop` tears down first). On an
        // error the work item was never queued (no notifier exists) and is dropped here.
        let engine = unsafe { new_engine(dev, mm, gc_work.as_ptr(), devmem)? };
        // SAFETY: a fresh allocation the box keeps in place; every field is written once.
        // Nothing can queue the work item yet: only range notifiers do, and ranges come from
        // faults through the binding, which is not published before this returns.
        unsafe {
            addr_of_mut!((*p).mm).write(mm);
            addr_of_mut!((*p).engine).write(engine);
            addr_of_mut!((*p).gc_work).write(gc_work);
            addr_of_mut!((*p).closing).write(AtomicBool::new(false));
            addr_of_mut!((*p).gc_removed).write(AtomicU64::new(0));
        }
        // SAFETY: every field was initialised just above.
        Ok(unsafe { slot.assume_init() })
    }

    pub(crate) fn engine(&self) -> &KEngine {
        &self.engine
    }

    /// The mm bound.
    pub(crate) fn mm(&self) -> *mut ffi::MmStruct {
        self.mm
    }

    /// Whether the calling task runs in the bound mm.
    pub(crate) fn is_current(&self) -> bool {
        // SAFETY: no preconditions.
        unsafe { ffi::svm_current_mm() == self.mm }
    }

    /// Queues GC (after a fault batch: a range GC passed over while its faults were in
    /// flight is collected now, on its own work item, so no fault waits for a notifier
    /// removal).
    pub(crate) fn queue_gc(&self) {
        self.gc_work.queue();
    }

    /// GC stops now (the file is being released); teardown follows.
    pub(crate) fn stop_gc(&self) {
        self.closing.store(true, Ordering::Release);
    }

    /// Ranges GC removed so far.
    pub(crate) fn gc_removed(&self) -> u64 {
        self.gc_removed.load(Ordering::Relaxed)
    }

    fn gc(&self) {
        if self.closing.load(Ordering::Acquire) {
            return;
        }
        // Runs as a kworker: GC frees, and should it ever allocate, the bound mm's cgroup
        // pays.
        let _charge = self.engine.mm().charge_scope();
        let n = self.engine.gc();
        self.gc_removed.fetch_add(n as u64, Ordering::Relaxed);
    }
}

impl Drop for Binding {
    fn drop(&mut self) {
        self.stop_gc();
        self.gc_work.cancel_sync();
        self.engine.teardown();
        // Every notifier is gone: nothing can queue the work item again.
        self.gc_work.cancel_sync();
        // The fields drop now: the engine, then the work item.
    }
}

/// An engine for the device `dev`, configured by the module parameters, mirroring `mm`;
/// `gc_work` is queued after every `MMU_NOTIFY_UNMAP` callback.
///
/// # Safety
/// `mm` is the calling task's live `current->mm`; `dev` is the module's platform device,
/// registered while any file is open; `gc_work` outlives every notifier of the engine (its
/// owner tears the engine down before freeing it).
unsafe fn new_engine(
    dev: *mut ffi::Device,
    mm: *mut ffi::MmStruct,
    gc_work: *mut ffi::Work,
    devmem: KDevRef,
) -> Result<KArc<KEngine>, Errno> {
    // SAFETY: per the contract.
    let kmm = unsafe { KMm::bind(mm, gc_work)? };
    let parts = Parts::<KPlat> {
        mm: kmm,
        // SAFETY: per the contract.
        dma: unsafe { KDma::new(dev)? },
        tlb: KTlb::new()?,
        mem: KMem,
        devmem,
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

/// The GC work item's function.
///
/// # Safety
/// `data` is the binding the work item was created for (live while the item can run).
unsafe extern "C" fn svm_rs_binding_gc(data: *mut c_void) {
    // SAFETY: per the contract.
    unsafe { &*data.cast::<Binding>() }.gc();
}
