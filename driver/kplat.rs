// SPDX-License-Identifier: GPL-2.0
//! The kernel platform: `crate::platform::Platform` over real kernel services.
//!
//! C (driver/glue.c) owns every kernel struct the 6.12 Rust bindings don't cover; this file
//! wraps them in the engine's traits:
//!
//! | trait | kernel |
//! |---|---|
//! | `LockFamily` → [`KLock`], [`KRwLock`] | a kmalloc'd `spinlock_t` (`LockClass::Table`) or `struct mutex` (`Range`, `Index`, `Engine`), or `struct rw_semaphore` (the engine-wide rwsem), one static lockdep class each |
//! | `SharedPtr` → [`KArc`] | `kernel::sync::Arc` |
//! | `RangeMap` → [`KMap`] | `kernel::rbtree::RBTree` under a mutex of the index class |
//! | `Mm` → [`KMm`], `Interval` → [`KInterval`] | `mm_struct` (mmgrab), `mmu_interval_notifier`, `hmm_range_fault()` |
//! | `Dma` → [`KDma`] | `dma_map_page()` on the platform device, `set_page_dirty()` |
//! | `PtMem` → [`KMem`] | per table two order-0 pages (entries, software words) and a kmalloc'd node, found from the entries' page through `page->private` |
//! | `DeviceTlb` → [`KTlb`] | the software device's TLB behind a spinlock the device holds across each access |

use crate::dmacache;
use crate::engine::{leaf_pfn, Engine};
use crate::ffi;
use crate::pgtable::{
    AuxTable, Errno, HwTable, Lock, LockClass, LockFamily, PageTable, PtMem, RwLock, Table,
    X86Format,
};
use crate::platform::{
    DeviceTlb, Dma, Event, HmmRequest, Interval, InvalidateFn, Invalidation, Mm, Platform,
    RangeMap, SharedPtr, Vma,
};
use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::marker::PhantomData;
use core::mem::ManuallyDrop;
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use kernel::alloc::Flags;
use kernel::prelude::*;
use kernel::rbtree::{RBTree, RBTreeNode};

// ---- memory accounting ------------------------------------------------------

/// The raw `gfp_t` of [`GFP`]: `GFP_KERNEL_ACCOUNT | __GFP_RETRY_MAYFAIL | __GFP_NOWARN`,
/// the flags of the glue's `SVM_GFP` (module init checks that the two agree).
pub const GFP_RAW: u32 = kernel::bindings::GFP_KERNEL_ACCOUNT
    | kernel::bindings::__GFP_NOWARN
    | (1u32 << kernel::bindings::___GFP_RETRY_MAYFAIL_BIT);

/// The flags of every allocation the driver makes for a context (the engine's ranges and
/// index nodes through [`KArc`] and [`KMap`], the driver's own per-file and per-job memory;
/// the glue allocates its locks, notifiers, page-table pages and work items with the same):
/// charged to the memory cgroup of the task, or of the bound mm inside a [`MemcgScope`];
/// at the cgroup's limit, or when the system is out of memory, `ENOMEM` for the caller rather
/// than the OOM killer run from a device fault; no allocation-failure splat.
pub const GFP: Flags = gfp_raw(GFP_RAW);

/// `GFP_NOWAIT | __GFP_ACCOUNT | __GFP_NOWARN`: for what must be allocated under a range
/// lock (the DMA cache's entries), where nothing may wait for reclaim; charged like [`GFP`]
/// (a memcg at its limit fails it at once).
pub const GFP_NOWAIT_ACCOUNT: Flags = gfp_raw(
    kernel::bindings::GFP_NOWAIT
        | kernel::bindings::__GFP_NOWARN
        | (1u32 << kernel::bindings::___GFP_ACCOUNT_BIT),
);

/// `Flags` from raw `gfp_t` bits. 6.12's `kernel::alloc::flags` has neither
/// `__GFP_RETRY_MAYFAIL` nor `__GFP_ACCOUNT` alone, and `Flags` no constructor from raw bits
/// (nor `const` operators), hence the transmute.
const fn gfp_raw(raw: u32) -> Flags {
    const _: () = assert!(core::mem::size_of::<Flags>() == core::mem::size_of::<u32>());
    // SAFETY: `Flags` is a struct whose only field is the raw `u32` flags, and it is no
    // larger than that field (asserted above), so the field is all of its bytes and every
    // `u32` is a valid `Flags` standing for those raw bits.
    unsafe { core::mem::transmute::<u32, Flags>(raw) }
}

/// While it lives, the current task's accounted allocations ([`GFP`]) are charged to the
/// memory cgroup of a bound mm: the work items (fault worker, GC) run as kworkers, whose own
/// cgroup is the root. Made by [`KMm::charge_scope`]; not `Send` (the scope is the task's),
/// and scopes end in the reverse order of their making (they are guards on the stack).
pub struct MemcgScope {
    memcg: *mut c_void,
    old: *mut c_void,
}

impl Drop for MemcgScope {
    fn drop(&mut self) {
        // SAFETY: the values `svm_memcg_enter` returned, restored and released once.
        unsafe { ffi::svm_memcg_exit(self.memcg, self.old) }
    }
}

/// Page-table pages currently allocated, by all contexts (checked at module exit).
pub static TABLES_LIVE: AtomicI64 = AtomicI64::new(0);
/// DMA mappings currently held, by all contexts (checked at module exit).
pub static DMA_LIVE: AtomicI64 = AtomicI64::new(0);

// ---- locks ----------------------------------------------------------------

/// A kernel lock owned by the C glue: a `spinlock_t` or a `struct mutex`, kmalloc'd (6.12's
/// `kernel::sync::Lock` needs pin-init and has no `try_lock`), protecting a `T`.
///
/// The engine's single `LockFamily` picks the kind by [`LockClass`]: `Table` is a spinlock
/// (taken inside `non_block_start()` on the OOM path, never held across a sleep), `Range` and
/// `Index` are mutexes. The driver's own locks pick a class of `glue.h` directly.
///
/// # Invariants
/// `raw` is a live lock of kind `spin`, created by the glue and freed on drop; `data` is only
/// accessed with it held (or through `&mut self`).
pub struct KLock<T> {
    raw: NonNull<c_void>,
    spin: bool,
    data: UnsafeCell<T>,
}

// SAFETY: the lock serialises all access to `data`; the raw lock may be used from any thread.
unsafe impl<T: Send> Send for KLock<T> {}
// SAFETY: as above: shared access only yields `&mut T` under the lock.
unsafe impl<T: Send> Sync for KLock<T> {}

impl<T> KLock<T> {
    /// A spinlock of glue class `cls` (`ffi::LC_*`).
    pub fn new_spin(data: T, cls: u32) -> Result<Self, Errno> {
        // SAFETY: plain allocation; NULL on failure.
        let raw = unsafe { ffi::svm_spin_new(cls) };
        Ok(KLock {
            raw: NonNull::new(raw).ok_or(Errno::ENOMEM)?,
            spin: true,
            data: UnsafeCell::new(data),
        })
    }

    /// A mutex of glue class `cls`. May sleep (allocates with `GFP_KERNEL`).
    pub fn new_mutex(data: T, cls: u32) -> Result<Self, Errno> {
        // SAFETY: plain allocation; NULL on failure.
        let raw = unsafe { ffi::svm_mutex_new(cls) };
        Ok(KLock {
            raw: NonNull::new(raw).ok_or(Errno::ENOMEM)?,
            spin: false,
            data: UnsafeCell::new(data),
        })
    }

    /// Acquires the lock (spins or sleeps).
    pub fn lock(&self) -> KGuard<'_, T> {
        // SAFETY: `raw` is a live lock of the recorded kind.
        unsafe {
            if self.spin {
                ffi::svm_spin_lock(self.raw.as_ptr())
            } else {
                ffi::svm_mutex_lock(self.raw.as_ptr())
            }
        }
        KGuard {
            lock: self,
            _not_send: PhantomData,
        }
    }

    /// Acquires the lock only if it is free now.
    pub fn try_lock(&self) -> Option<KGuard<'_, T>> {
        // SAFETY: `raw` is a live lock of the recorded kind.
        let ok = unsafe {
            if self.spin {
                ffi::svm_spin_trylock(self.raw.as_ptr())
            } else {
                ffi::svm_mutex_trylock(self.raw.as_ptr())
            }
        };
        ok.then(|| KGuard {
            lock: self,
            _not_send: PhantomData,
        })
    }

    /// The data, through exclusive access (no locking needed).
    pub fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
    }
}

impl<T> Drop for KLock<T> {
    fn drop(&mut self) {
        // SAFETY: `raw` is live, unlocked (no guard can outlive `&self`), and freed once here.
        unsafe {
            if self.spin {
                ffi::svm_spin_free(self.raw.as_ptr())
            } else {
                ffi::svm_mutex_free(self.raw.as_ptr())
            }
        }
    }
}

/// Holding a [`KLock`]. Not `Send`: a kernel lock is released by the task that took it.
pub struct KGuard<'a, T> {
    lock: &'a KLock<T>,
    _not_send: PhantomData<*mut ()>,
}

impl<T> Deref for KGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the lock is held.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> DerefMut for KGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the lock is held, and `&mut self` makes this the only reference.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T> Drop for KGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: this guard holds the lock.
        unsafe {
            if self.lock.spin {
                ffi::svm_spin_unlock(self.lock.raw.as_ptr())
            } else {
                ffi::svm_mutex_unlock(self.lock.raw.as_ptr())
            }
        }
    }
}

impl<T> Lock<T> for KLock<T> {
    type Guard<'a>
        = KGuard<'a, T>
    where
        Self: 'a;

    fn new(data: T, class: LockClass) -> Result<Self, Errno> {
        match class {
            LockClass::Table => KLock::new_spin(data, ffi::LC_TABLE),
            LockClass::Range => KLock::new_mutex(data, ffi::LC_RANGE),
            LockClass::Index => KLock::new_mutex(data, ffi::LC_INDEX),
            // The engine-wide mutex of `LockScope::EngineMutex`: a sleeping lock, since the
            // invalidation callback waits for the device TLB flush under it.
            LockClass::Engine => KLock::new_mutex(data, ffi::LC_ENGINE),
        }
    }

    fn lock(&self) -> KGuard<'_, T> {
        KLock::lock(self)
    }

    fn try_lock(&self) -> Option<KGuard<'_, T>> {
        KLock::try_lock(self)
    }
}

/// A kernel `struct rw_semaphore` owned by the C glue (kmalloc'd; 6.12's Rust bindings have
/// no rwsem), protecting a `T`. The engine uses it only as the engine-wide lock of
/// `LockScope::EngineRwsem` (drm_gpusvm's `notifier_lock`), so every instance gets the
/// `svm_engine_rwsem` lockdep class whatever [`LockClass`] asks for.
///
/// # Invariants
/// `raw` is a live rwsem created by the glue and freed on drop; `data` is only read with the
/// read or write side held, and only written with the write side held (or through
/// `&mut self`).
pub struct KRwLock<T> {
    raw: NonNull<c_void>,
    data: UnsafeCell<T>,
}

// SAFETY: the rwsem serialises writers against everyone; the raw lock may be used from any
// thread.
unsafe impl<T: Send> Send for KRwLock<T> {}
// SAFETY: readers share `&T` concurrently (hence `T: Sync`); writers get `&mut T` only
// exclusively (hence `T: Send`).
unsafe impl<T: Send + Sync> Sync for KRwLock<T> {}

impl<T> Drop for KRwLock<T> {
    fn drop(&mut self) {
        // SAFETY: `raw` is live, unlocked (no guard can outlive `&self`), and freed once here.
        unsafe { ffi::svm_rwsem_free(self.raw.as_ptr()) }
    }
}

/// Holding the read side of a [`KRwLock`]. Not `Send`: released by the task that took it.
pub struct KRwReadGuard<'a, T> {
    lock: &'a KRwLock<T>,
    _not_send: PhantomData<*mut ()>,
}

impl<T> Deref for KRwReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the read side is held: no writer can run.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> Drop for KRwReadGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: this guard holds the read side.
        unsafe { ffi::svm_rwsem_up_read(self.lock.raw.as_ptr()) }
    }
}

/// Holding the write side of a [`KRwLock`]. Not `Send`: released by the task that took it.
pub struct KRwWriteGuard<'a, T> {
    lock: &'a KRwLock<T>,
    _not_send: PhantomData<*mut ()>,
}

impl<T> Deref for KRwWriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the write side is held.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> DerefMut for KRwWriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the write side is held, and `&mut self` makes this the only reference.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T> Drop for KRwWriteGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: this guard holds the write side.
        unsafe { ffi::svm_rwsem_up_write(self.lock.raw.as_ptr()) }
    }
}

impl<T> RwLock<T> for KRwLock<T> {
    type ReadGuard<'a>
        = KRwReadGuard<'a, T>
    where
        Self: 'a;
    type WriteGuard<'a>
        = KRwWriteGuard<'a, T>
    where
        Self: 'a;

    fn new(data: T, _class: LockClass) -> Result<Self, Errno> {
        // SAFETY: plain allocation; NULL on failure.
        let raw = unsafe { ffi::svm_rwsem_new(ffi::LC_ENGINE_RW) };
        Ok(KRwLock {
            raw: NonNull::new(raw).ok_or(Errno::ENOMEM)?,
            data: UnsafeCell::new(data),
        })
    }

    fn read(&self) -> KRwReadGuard<'_, T> {
        // SAFETY: `raw` is a live rwsem.
        unsafe { ffi::svm_rwsem_down_read(self.raw.as_ptr()) };
        KRwReadGuard {
            lock: self,
            _not_send: PhantomData,
        }
    }

    fn write(&self) -> KRwWriteGuard<'_, T> {
        // SAFETY: `raw` is a live rwsem.
        unsafe { ffi::svm_rwsem_down_write(self.raw.as_ptr()) };
        KRwWriteGuard {
            lock: self,
            _not_send: PhantomData,
        }
    }

    fn try_write(&self) -> Option<KRwWriteGuard<'_, T>> {
        // SAFETY: `raw` is a live rwsem.
        let ok = unsafe { ffi::svm_rwsem_down_write_trylock(self.raw.as_ptr()) };
        ok.then(|| KRwWriteGuard {
            lock: self,
            _not_send: PhantomData,
        })
    }
}

/// The engine's lock family.
pub struct KLocks;

impl LockFamily for KLocks {
    type Lock<T: Send> = KLock<T>;
    type RwLock<T: Send + Sync> = KRwLock<T>;
}

// ---- Arc ------------------------------------------------------------------

/// `kernel::sync::Arc`.
pub struct KArc<T>(kernel::sync::Arc<T>);

impl<T> Clone for KArc<T> {
    fn clone(&self) -> Self {
        KArc(self.0.clone())
    }
}

impl<T> Deref for KArc<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: Send + Sync> SharedPtr<T> for KArc<T> {
    fn new(v: T) -> Result<Self, Errno> {
        kernel::sync::Arc::new(v, GFP)
            .map(KArc)
            .map_err(|_| Errno::ENOMEM)
    }

    fn ptr_eq(a: &Self, b: &Self) -> bool {
        core::ptr::eq(&*a.0 as *const T, &*b.0 as *const T)
    }
}

// ---- range index ------------------------------------------------------------

/// The range index: an rbtree under a mutex of the index class. Nodes are allocated before
/// the lock is taken, values are dropped after it is released, and no other lock is ever
/// taken under it, so a lookup waits only for another short index operation.
pub struct KMap<V>(KLock<RBTree<u64, V>>);

impl<V: Clone + Send + Sync + 'static> RangeMap<V> for KMap<V> {
    fn new() -> Result<Self, Errno> {
        Ok(KMap(KLock::new(RBTree::new(), LockClass::Index)?))
    }

    fn get(&self, key: u64) -> Option<V> {
        self.0.lock().get(&key).cloned()
    }

    fn insert(&self, key: u64, v: V) -> Result<Result<(), V>, Errno> {
        let node = RBTreeNode::new(key, v, GFP).map_err(|_| Errno::ENOMEM)?;
        let mut t = self.0.lock();
        if let Some(old) = t.get(&key) {
            let old = old.clone();
            drop(t);
            drop(node);
            return Ok(Err(old));
        }
        t.insert(node);
        Ok(Ok(()))
    }

    fn remove_if(&self, key: u64, is_it: impl FnOnce(&V) -> bool) -> Option<V> {
        let mut t = self.0.lock();
        if !is_it(t.get(&key)?) {
            return None;
        }
        let v = t.remove(&key);
        drop(t);
        v
    }

    fn next_from(&self, key: u64) -> Option<(u64, V)> {
        let mut t = self.0.lock();
        let c = t.cursor_lower_bound(&key)?;
        let (k, v) = c.current();
        Some((*k, v.clone()))
    }
}

// ---- mm, notifiers, hmm -------------------------------------------------------

/// The bound `struct mm_struct`, pinned with `mmgrab()` (the struct, not the address space)
/// for the context's lifetime.
///
/// # Invariants
/// `mm` holds an `mm_count` reference owned by this value; `unmap_work` (may be null) is the
/// context's work item, alive while any notifier inserted through this value is.
pub struct KMm {
    mm: NonNull<ffi::MmStruct>,
    unmap_work: *mut ffi::Work,
}

// SAFETY: an mm_struct pointer may be used from any thread; the glue serialises what needs it.
unsafe impl Send for KMm {}
// SAFETY: as above.
unsafe impl Sync for KMm {}

impl KMm {
    /// Binds `mm` (takes the `mmgrab` reference and registers the mm with the notifier core).
    /// `unmap_work` is queued after every `MMU_NOTIFY_UNMAP` callback (the GC trigger).
    ///
    /// # Safety
    /// `mm` is a live mm (the caller's `current->mm`); `unmap_work` outlives every notifier.
    pub unsafe fn bind(mm: *mut ffi::MmStruct, unmap_work: *mut ffi::Work) -> Result<Self, Errno> {
        let mm = NonNull::new(mm).ok_or(Errno::ESRCH)?;
        // SAFETY: live mm, per the caller.
        let rc = unsafe { ffi::svm_mm_bind(mm.as_ptr()) };
        if rc != 0 {
            return Err(Errno(-rc));
        }
        Ok(KMm { mm, unmap_work })
    }

    /// The raw mm, for identity checks.
    pub fn raw(&self) -> *mut ffi::MmStruct {
        self.mm.as_ptr()
    }

    /// Charges what the current task allocates with [`GFP`] to this mm's memory cgroup (its
    /// owner's, looked up now) until the returned scope drops.
    pub fn charge_scope(&self) -> MemcgScope {
        let mut old = core::ptr::null_mut();
        // SAFETY: live mm_struct (mmgrab); `old` is written before the call returns.
        let memcg = unsafe { ffi::svm_memcg_enter(self.raw(), &mut old) };
        MemcgScope { memcg, old }
    }
}

impl Drop for KMm {
    fn drop(&mut self) {
        // SAFETY: the reference taken by `bind`, dropped once.
        unsafe { ffi::svm_mm_drop(self.mm.as_ptr()) };
    }
}

/// A registered `struct mmu_interval_notifier` (inside the glue's `struct svm_notifier`).
///
/// # Invariants
/// `n` is a live notifier; the owning value frees it on drop, after `interval_remove`.
pub struct KInterval {
    n: NonNull<ffi::Notifier>,
}

// SAFETY: the notifier functions may be called from any thread.
unsafe impl Send for KInterval {}
// SAFETY: as above.
unsafe impl Sync for KInterval {}

impl Interval for KInterval {
    fn read_begin(&self) -> u64 {
        // SAFETY: live notifier.
        unsafe { ffi::svm_notifier_read_begin(self.n.as_ptr()) }
    }

    fn read_retry(&self, seq: u64) -> bool {
        // SAFETY: live notifier.
        unsafe { ffi::svm_notifier_read_retry(self.n.as_ptr(), seq) }
    }

    fn check_retry(&self, seq: u64) -> bool {
        // SAFETY: live notifier.
        unsafe { ffi::svm_notifier_check_retry(self.n.as_ptr(), seq) }
    }

    fn set_seq(&self, cur_seq: u64) {
        // SAFETY: live notifier.
        unsafe { ffi::svm_notifier_set_seq(self.n.as_ptr(), cur_seq) }
    }
}

impl Drop for KInterval {
    fn drop(&mut self) {
        // SAFETY: the owner frees its notifier once; the glue WARNs (and leaks) if it is
        // still inserted.
        unsafe { ffi::svm_notifier_free(self.n.as_ptr()) };
    }
}

/// The C notifier's `invalidate` op lands here: rebuild the engine's callback, a borrowed
/// [`KInterval`] and the [`Invalidation`], and run it.
///
/// # Safety
/// Called only by glue.c's `svm_mni_invalidate` with the values `interval_insert` stored.
#[no_mangle]
pub unsafe extern "C" fn svm_rs_invalidate(
    cb: *const c_void,
    cookie: *const c_void,
    n: *mut ffi::Notifier,
    start: u64,
    end: u64,
    event: u32,
    blockable: bool,
    cur_seq: u64,
) -> bool {
    // SAFETY: `cb` was made from an `InvalidateFn<KInterval>` in `interval_insert`.
    let f: InvalidateFn<KInterval> = unsafe { core::mem::transmute(cb) };
    // Borrowed: the owner (the range) frees the notifier, never this copy.
    let iv = ManuallyDrop::new(KInterval {
        // SAFETY: the core passes its live notifier.
        n: unsafe { NonNull::new_unchecked(n) },
    });
    let event = match event {
        0 => Event::Unmap,
        1 => Event::Clear,
        2 => Event::ProtectionVma,
        3 => Event::ProtectionPage,
        4 => Event::SoftDirty,
        5 => Event::Release,
        6 => Event::Migrate,
        7 => Event::Exclusive,
        _ => Event::Clear,
    };
    let inv = Invalidation {
        start,
        end,
        event,
        blockable,
        cur_seq,
    };
    // SAFETY: the notifier is registered (the core is calling it), so its cookie is live.
    unsafe { f(cookie as *const (), &iv, &inv) }
}

/// `mmap_read_lock` held plus the `mmget_not_zero()` reference taken for it.
pub struct KReadGuard<'a> {
    mm: &'a KMm,
}

impl Drop for KReadGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: taken by `mmap_read`; released once (mmput_async: may be the last user).
        unsafe { ffi::svm_mmap_read_unlock(self.mm.raw()) };
    }
}

impl Mm for KMm {
    type Interval = KInterval;
    type ReadGuard<'a> = KReadGuard<'a>;

    fn interval_insert(
        &self,
        start: u64,
        len: u64,
        cookie: *const (),
        ops: InvalidateFn<KInterval>,
    ) -> Result<KInterval, Errno> {
        let mut out: *mut ffi::Notifier = core::ptr::null_mut();
        // SAFETY: live mm; `ops` and `cookie` come back to `svm_rs_invalidate` unchanged.
        let rc = unsafe {
            ffi::svm_notifier_insert(
                self.raw(),
                start,
                len,
                ops as *const c_void,
                cookie as *const c_void,
                self.unmap_work,
                &mut out,
            )
        };
        if rc != 0 {
            return Err(Errno(-rc));
        }
        Ok(KInterval {
            n: NonNull::new(out).ok_or(Errno::ENOMEM)?,
        })
    }

    fn interval_remove(&self, interval: &KInterval) {
        // SAFETY: live, inserted notifier; we hold no engine lock (engine contract).
        unsafe { ffi::svm_notifier_remove(interval.n.as_ptr()) }
    }

    fn mmap_read(&self) -> Result<KReadGuard<'_>, Errno> {
        // SAFETY: live mm_struct (mmgrab).
        let rc = unsafe { ffi::svm_mmap_read_lock(self.raw()) };
        if rc != 0 {
            return Err(Errno(-rc));
        }
        Ok(KReadGuard { mm: self })
    }

    fn vma(&self, _guard: &KReadGuard<'_>, va: u64) -> Option<Vma> {
        let mut v = ffi::VmaInfo::default();
        // SAFETY: the read lock is held (the guard proves it).
        if !unsafe { ffi::svm_vma_lookup(self.raw(), va, &mut v) } {
            return None;
        }
        Some(Vma {
            start: v.start,
            end: v.end,
            read: v.read != 0,
            write: v.write != 0,
            // The engine refuses `io` VMAs with `EFAULT` before calling hmm on them: so must
            // it refuse memfd_secret memory (not in the direct map: the device's kmap would
            // oops) and userfaultfd-armed memory (hmm cannot wait for the handler; see glue.h).
            io: v.io != 0 || v.refuse != 0,
        })
    }

    fn hmm_range_fault(
        &self,
        _guard: &mut KReadGuard<'_>,
        req: &mut HmmRequest<'_, KInterval>,
    ) -> Result<(), Errno> {
        // SAFETY: read lock held; `pfns` is valid for its length; the notifier is live.
        let rc = unsafe {
            ffi::svm_hmm_range_fault(
                req.notifier.n.as_ptr(),
                req.seq,
                req.start,
                req.pfns.len() as u64,
                req.pfns.as_mut_ptr(),
            )
        };
        if rc != 0 {
            return Err(Errno(-rc));
        }
        Ok(())
    }
}

// ---- DMA ------------------------------------------------------------------------

/// DMA against the platform device (`struct device`, referenced for our lifetime).
pub struct KDma {
    dev: NonNull<ffi::Device>,
    live: AtomicI64,
}

// SAFETY: the DMA API may be used from any thread.
unsafe impl Send for KDma {}
// SAFETY: as above.
unsafe impl Sync for KDma {}

impl KDma {
    /// # Safety
    /// `dev` is a live device.
    pub unsafe fn new(dev: *mut ffi::Device) -> Result<Self, Errno> {
        // SAFETY: live device, per the caller.
        let dev = unsafe { ffi::svm_get_device(dev) };
        Ok(KDma {
            dev: NonNull::new(dev).ok_or(Errno::EINVAL)?,
            live: AtomicI64::new(0),
        })
    }

    /// Mappings held now.
    pub fn live(&self) -> i64 {
        self.live.load(Ordering::Relaxed)
    }
}

impl Drop for KDma {
    fn drop(&mut self) {
        let live = self.live.load(Ordering::Relaxed);
        if live != 0 {
            pr_err!("BUG: context dropped with {} DMA mappings\n", live);
        }
        // SAFETY: the reference taken in `new`.
        unsafe { ffi::svm_put_device(self.dev.as_ptr()) };
    }
}

impl Dma for KDma {
    fn map(&self, pfn: u64, order: u32, write: bool) -> Result<u64, Errno> {
        // SAFETY: `pfn` is a page hmm just returned, under the range lock (engine contract);
        // the device is live (referenced for our lifetime).
        let a = unsafe { dmacache::get().map(self.dev.as_ptr(), pfn, order, write)? };
        self.live.fetch_add(1, Ordering::Relaxed);
        DMA_LIVE.fetch_add(1, Ordering::Relaxed);
        Ok(a)
    }

    fn unmap(&self, addr: u64, pfn: u64, order: u32, write: bool) {
        // SAFETY: `addr` came from `map` of `pfn` with this order and direction, unmapped
        // once, after the flush of its leaf (engine contract).
        unsafe { dmacache::get().unmap(self.dev.as_ptr(), addr, pfn, order, write) };
        self.live.fetch_sub(1, Ordering::Relaxed);
        DMA_LIVE.fetch_sub(1, Ordering::Relaxed);
    }

    fn set_dirty(&self, pfn: u64) {
        // SAFETY: the page is still mapped by the CPU (called from the notifier, before the
        // core frees it).
        unsafe { ffi::svm_set_page_dirty(pfn) };
    }
}

// ---- page-table memory ---------------------------------------------------------------

/// The page table's lock type (a spinlock: `LockClass::Table`).
pub type TableLock = KLock<()>;

/// Page-table memory: each table is an order-0 page of hardware entries (what the device
/// walks, by physical address), an order-0 page of software words, and a small kmalloc'd node
/// holding the lock and both pages' addresses. The hardware page's `struct page` keeps the
/// node's address in `private`, so a walk goes from a link (a physical address) to the node.
/// About 8.1 KiB per table, 4.05 MiB per mirrored GiB at 4 KiB pages.
pub struct KMem;

impl KMem {
    /// Bytes one table costs in page allocations (its node is counted by the slab).
    pub const PAGE_BYTES: usize = 2 * PAGE_SIZE;
}

const PAGE_SIZE: usize = 4096;

fn free_pages_of(hw: NonNull<HwTable>, aux: NonNull<AuxTable>) {
    // SAFETY: both came from `svm_table_alloc(PAGE_SIZE)` and nothing uses them any more.
    unsafe {
        ffi::svm_page_set_private(hw.as_ptr().cast(), 0);
        ffi::svm_table_free(hw.as_ptr().cast(), PAGE_SIZE);
        ffi::svm_table_free(aux.as_ptr().cast(), PAGE_SIZE);
    }
}

// SAFETY: tables stay valid until `free`; `pa` is the hardware page's physical address and
// `va` reads the node from that page's `struct page`, where `alloc` stored it.
unsafe impl PtMem for KMem {
    type Lock = TableLock;

    fn alloc(&self) -> Result<NonNull<Table<TableLock>>, Errno> {
        // SAFETY: plain page allocations (may sleep: never called under an engine lock).
        let (hw, aux) = unsafe {
            (
                ffi::svm_table_alloc(PAGE_SIZE) as *mut HwTable,
                ffi::svm_table_alloc(PAGE_SIZE) as *mut AuxTable,
            )
        };
        let (hw, aux) = match (NonNull::new(hw), NonNull::new(aux)) {
            (Some(hw), Some(aux)) => (hw, aux),
            (hw, aux) => {
                for p in [hw.map(NonNull::cast), aux.map(NonNull::cast)].into_iter().flatten() {
                    // SAFETY: allocated above, never shared.
                    unsafe { ffi::svm_table_free(p.as_ptr(), PAGE_SIZE) };
                }
                return Err(Errno::ENOMEM);
            }
        };
        // SAFETY: two fresh pages, ours alone until `free`.
        let node = unsafe { Table::new(hw, aux) }
            .and_then(|t| KBox::new(t, GFP).map_err(|_| Errno::ENOMEM));
        let node = match node {
            Ok(n) => n,
            Err(e) => {
                free_pages_of(hw, aux);
                return Err(e);
            }
        };
        let node = KBox::into_raw(node);
        // SAFETY: `hw` is a page of ours; its `private` is ours to use until it is freed.
        unsafe { ffi::svm_page_set_private(hw.as_ptr().cast(), node as usize) };
        TABLES_LIVE.fetch_add(1, Ordering::Relaxed);
        // SAFETY: `into_raw` never returns null.
        Ok(unsafe { NonNull::new_unchecked(node) })
    }

    unsafe fn free(&self, t: NonNull<Table<TableLock>>) {
        // SAFETY: `t` came from `alloc` (a `KBox`) and is unreachable (caller contract): drop
        // the node (frees its lock), then its pages.
        let node = unsafe { KBox::from_raw(t.as_ptr()) };
        let (hw, aux) = (node.hw_page(), node.aux_page());
        drop(node);
        free_pages_of(hw, aux);
        TABLES_LIVE.fetch_sub(1, Ordering::Relaxed);
    }

    fn pa(&self, t: NonNull<Table<TableLock>>) -> u64 {
        // SAFETY: `t` is live (trait contract); its hardware page is in the direct map.
        unsafe { ffi::svm_virt_to_phys(t.as_ref().hw_page().as_ptr().cast()) }
    }

    unsafe fn va(&self, pa: u64) -> NonNull<Table<TableLock>> {
        // SAFETY: `pa` is the hardware page of a live table (caller contract), whose
        // `private` holds its node.
        let p = unsafe { ffi::svm_phys_page_private(pa) } as *mut Table<TableLock>;
        // SAFETY: set to the node (non-null) by `alloc` and kept until `free`.
        unsafe { NonNull::new_unchecked(p) }
    }
}

// ---- the software device's TLB ---------------------------------------------------------

/// Entries of the device TLB.
pub const TLB_ENTRIES: usize = 16;

#[derive(Clone, Copy)]
struct TlbEntry {
    /// First VA the entry maps; `shift == 0` marks an empty entry.
    base: u64,
    shift: u32,
    write: bool,
    /// pfn of the first 4 KiB page (the leaf's `aux`: page, or 2 MiB folio head).
    pfn: u64,
}

/// What the TLB lock protects.
pub struct TlbState {
    e: [TlbEntry; TLB_ENTRIES],
    next: usize,
}

/// The device TLB: entries behind a spinlock that the device also holds across every memory
/// access it makes (translation, `kmap_local_page()`, the access, `kunmap_local()`), so
/// [`DeviceTlb::flush`], which takes it, returns only once no access can still use a dropped
/// entry or a page-table page read before the zap. It never sleeps (`flush_may_sleep` is
/// false), so even the OOM reaper's non-blockable callback can flush.
pub struct KTlb {
    inner: KLock<TlbState>,
    /// Translations served from an entry.
    pub hits: AtomicU64,
    /// Translations that walked the page table.
    pub misses: AtomicU64,
}

impl KTlb {
    /// An empty TLB.
    pub fn new() -> Result<Self, Errno> {
        let empty = TlbEntry {
            base: 0,
            shift: 0,
            write: false,
            pfn: 0,
        };
        Ok(KTlb {
            inner: KLock::new_spin(
                TlbState {
                    e: [empty; TLB_ENTRIES],
                    next: 0,
                },
                ffi::LC_TLB,
            )?,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    /// Locks the TLB for one device access (see [`TlbCursor`]).
    pub fn begin(&self) -> TlbCursor<'_> {
        TlbCursor {
            tlb: self,
            g: self.inner.lock(),
        }
    }
}

impl DeviceTlb for KTlb {
    fn flush(&self, start: u64, end: u64) {
        let mut g = self.inner.lock();
        for e in g.e.iter_mut() {
            if e.shift != 0 && e.base < end && start < e.base + (1u64 << e.shift) {
                e.shift = 0;
            }
        }
    }

    fn flush_may_sleep(&self) -> bool {
        false
    }
}

/// The device's view while it holds the TLB lock: translations made through it stay valid
/// until it is dropped (a flush waits for the lock).
pub struct TlbCursor<'a> {
    tlb: &'a KTlb,
    g: KGuard<'a, TlbState>,
}

impl TlbCursor<'_> {
    /// The pfn of the 4 KiB page holding `va`, if the device may access it (`write`: for
    /// writing), by a page-table walk that bypasses and does not fill the TLB: the access
    /// path of a copy engine without a TLB (the dmirror front end). Holding the TLB lock is
    /// what makes it safe: a flush, which follows every zap, waits for the lock, so the leaf
    /// read here cannot be released while the caller still uses the page.
    pub fn walk(&mut self, pt: &PageTable<X86Format, KMem>, va: u64, write: bool) -> Option<u64> {
        let t = pt.translate(va)?;
        if write && !t.perm.write {
            return None;
        }
        let span = if t.level == 1 { 1u64 << 21 } else { 1u64 << 12 };
        Some(leaf_pfn(t.aux) + ((va & (span - 1)) >> 12))
    }

    /// The pfn of the 4 KiB page holding `va`, if the device may access it (`write`: for
    /// writing): from a TLB entry, else by walking `pt` and caching the leaf. `None` is a
    /// device fault (no leaf, or a read-only leaf for a write).
    pub fn translate(
        &mut self,
        pt: &PageTable<X86Format, KMem>,
        va: u64,
        write: bool,
    ) -> Option<u64> {
        for e in self.g.e.iter() {
            if e.shift != 0 && e.base <= va && va < e.base + (1u64 << e.shift) {
                if write && !e.write {
                    // Maybe upgraded since: walk again.
                    break;
                }
                self.tlb.hits.fetch_add(1, Ordering::Relaxed);
                return Some(e.pfn + ((va - e.base) >> 12));
            }
        }
        self.tlb.misses.fetch_add(1, Ordering::Relaxed);
        let t = pt.translate(va)?;
        if write && !t.perm.write {
            return None;
        }
        let shift = if t.level == 1 { 21 } else { 12 };
        let base = va & !((1u64 << shift) - 1);
        let st = &mut *self.g;
        // Replace an entry for the same span, else round-robin.
        let slot =
            st.e.iter()
                .position(|e| e.shift != 0 && e.base <= va && va < e.base + (1u64 << e.shift))
                .unwrap_or_else(|| {
                    let s = st.next;
                    st.next = (s + 1) % TLB_ENTRIES;
                    s
                });
        st.e[slot] = TlbEntry {
            base,
            shift,
            write: t.perm.write,
            pfn: leaf_pfn(t.aux),
        };
        Some(leaf_pfn(t.aux) + ((va - base) >> 12))
    }
}

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
