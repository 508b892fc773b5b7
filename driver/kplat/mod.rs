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
mod dma;
mod gfp;
mod lock;
mod map;
mod mem;
mod mm;
mod tlb;

pub use arc::*;
pub use dma::*;
pub use gfp::*;
pub use lock::*;
pub use map::*;
pub use mem::*;
pub use mm::*;
pub use tlb::*;

use crate::engine::Engine;
use crate::ffi;
use crate::pgtable::X86Format;
use crate::platform::Platform;

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

    fn now_ns(&self) -> u64 {
        // SAFETY: no preconditions.
        unsafe { ffi::svm_now_ns() }
    }

    fn relax(&self) {
        // SAFETY: called with no lock held (engine contract).
        unsafe { ffi::svm_cond_resched() }
    }
}

/// The engine as this driver instantiates it.
pub type KEngine = Engine<KPlat>;
