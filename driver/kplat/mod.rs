// SPDX-License-Identifier: GPL-2.0
//! The kernel platform: `crate::platform::Platform` over real kernel services.
//!
//! C (driver/glue.c) owns every kernel struct the 6.12 Rust bindings don't cover; the files
//! of this module wrap them in the engine's traits, one file per trait:
//!
//! | trait | kernel |
//! |---|---|
//! | `LockFamily` → [`KSpin`], [`KMutex`], [`KRwLock`] | a `spinlock_t` (`Spin`: `LockClass::Table`, `Tlb`), `struct mutex` (`Mutex`: `Range`, `Index`, `Engine`) or `struct rw_semaphore` (the engine-wide rwsem) embedded next to its data and built in place (no allocation per lock), one static lockdep class each |
//! | `SharedPtr` → [`KArc`] | `kernel::sync::Arc` |
//! | `RangeMap` → [`KMap`] | `kernel::rbtree::RBTree` under a mutex of the index class |
//! | `Mm` → [`KMm`], `Interval` → [`KInterval`] | `mm_struct` (mmgrab), `mmu_interval_notifier`, `hmm_range_fault()` |
//! | `Dma` → [`KDma`] | `dma_map_page()` on the platform device, `set_page_dirty()` |
//! | `PtMem` → [`KMem`] | per table two order-0 pages (entries, software words) and a kmalloc'd node, found from the entries' page through `page->private` |
//! | `DeviceTlb` → [`KTlb`] | the shared `crate::devtlb::DevTlb`: one TLB per CPU (execution unit), each behind a spinlock the device holds across each access |

mod arc;
mod devmem;
mod dma;
mod gfp;
mod lock;
mod map;
mod mem;
mod mm;
mod tlb;

pub use arc::*;
pub use devmem::*;
pub use dma::*;
pub use gfp::*;
pub use lock::*;
pub use map::*;
pub use mem::*;
pub use mm::*;
pub use tlb::*;

use crate::engine::{Access, Engine};
use crate::ffi;
use crate::pgtable::X86Format;
use crate::platform::Platform;
use crate::trace::Trace;
use core::ffi::c_void;

// ---- the platform ------------------------------------------------------------------

/// The kernel platform.
pub struct KPlat;

impl Platform for KPlat {
    type Fmt = X86Format;
    type Mem = KMem;
    type Locks = KLocks;
    type Arc<T: Send + Sync + 'static> = KArc<T>;
    type Map<V: Clone + Send + Sync + 'static> = KMap<V>;
    type Mm = KMm;
    type Dma = KDma;
    type Tlb = KTlb;
    type Devmem = KDevRef;

    fn now_ns(&self) -> u64 {
        // SAFETY: no preconditions.
        unsafe { ffi::svm_now_ns() }
    }

    fn relax(&self) {
        // SAFETY: called with no lock held (engine contract).
        unsafe { ffi::svm_cond_resched() }
    }

    fn task(&self) -> u64 {
        // SAFETY: no preconditions.
        unsafe { ffi::svm_current_task() }
    }

    fn tracing(&self) -> bool {
        // SAFETY: no preconditions (static-key checks).
        unsafe { ffi::svm_tracing() }
    }

    fn trace(&self, ev: &Trace) {
        let c = |ctx: usize| ctx as *const c_void;
        let w = |a: Access| a == Access::Write;
        // SAFETY: the tracepoints only record their arguments (`ctx` is printed hashed,
        // never dereferenced); they neither sleep nor take locks of ours.
        unsafe {
            match *ev {
                Trace::FaultStart {
                    ctx,
                    va,
                    access,
                    pages,
                } => ffi::svm_trace_fault_start(c(ctx), va, w(access), pages),
                Trace::FaultEnd {
                    ctx,
                    va,
                    access,
                    err,
                    ns,
                } => ffi::svm_trace_fault_end(c(ctx), va, w(access), err, ns),
                Trace::Retry { ctx, va, own } => ffi::svm_trace_retry(c(ctx), va, own),
                Trace::Invalidate {
                    ctx,
                    start,
                    end,
                    event,
                    hit,
                } => ffi::svm_trace_invalidate(c(ctx), start, end, mm::event_code(event), hit),
                Trace::Gc { ctx, removed } => ffi::svm_trace_gc(c(ctx), removed as u64),
            }
        }
    }
}

/// The engine as this driver instantiates it.
pub type KEngine = Engine<KPlat>;
