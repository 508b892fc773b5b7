// SPDX-License-Identifier: GPL-2.0
//! Kernel locks for the engine (`LockFamily`): a `spinlock_t`, `struct mutex` or
//! `struct rw_semaphore` embedded in the lock next to the data it protects, built in place
//! (never moved, never allocated on its own), one named lockdep class per `LockClass`.
//!
//! 6.12's `kernel::sync::{SpinLock, Mutex}` are built in place the same way (pin-init) but
//! offer no `try_lock` (the non-blockable invalidation path needs it) and 6.12 has no rwsem
//! binding, so the C glue does the locking on the embedded C object.

use crate::ffi;
use crate::pgtable::{Errno, Lock, LockClass, LockFamily, RwLock};
use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::marker::{PhantomData, PhantomPinned};
use core::ops::{Deref, DerefMut};
use core::ptr::addr_of_mut;
use kernel::bindings;
use kernel::prelude::*;
use kernel::types::Opaque;

/// The glue's lockdep class (`ffi::LC_*`) for an engine lock class.
fn glue_class(class: LockClass) -> u32 {
    match class {
        LockClass::Table => ffi::LC_TABLE,
        LockClass::Range => ffi::LC_RANGE,
        LockClass::Index => ffi::LC_INDEX,
        LockClass::Engine => ffi::LC_ENGINE,
        LockClass::Tlb => ffi::LC_TLB,
    }
}

/// A kind of kernel lock: its C object and the glue's calls on it.
///
/// # Safety
/// `init` must initialise a lock of this kind at `raw`, and the other calls must be that
/// lock's operations, releasing only what the matching acquisition took.
pub unsafe trait Kind {
    /// The C lock object.
    type Raw;
    /// Initialises `raw` with lockdep class `cls`.
    ///
    /// # Safety
    /// `raw` is valid for writes and will not move until `destroy`.
    unsafe fn init(raw: *mut Self::Raw, cls: u32);
    /// Tears an unlocked lock down.
    ///
    /// # Safety
    /// `raw` was initialised by `init` and is not held.
    unsafe fn destroy(raw: *mut Self::Raw);
    /// Acquires (spins or sleeps).
    ///
    /// # Safety
    /// `raw` is an initialised lock.
    unsafe fn lock(raw: *mut Self::Raw);
    /// Acquires if free now.
    ///
    /// # Safety
    /// As `lock`.
    unsafe fn try_lock(raw: *mut Self::Raw) -> bool;
    /// Releases.
    ///
    /// # Safety
    /// The caller holds it.
    unsafe fn unlock(raw: *mut Self::Raw);
}

/// `spinlock_t`: never held across a sleep.
pub struct Spin;
/// `struct mutex`.
pub struct Mtx;

// SAFETY: the glue's `svm_spin_*` are `spin_lock_init()` + class, `spin_lock()`,
// `spin_trylock()` and `spin_unlock()` on the object passed.
unsafe impl Kind for Spin {
    type Raw = bindings::spinlock_t;
    unsafe fn init(raw: *mut Self::Raw, cls: u32) {
        // SAFETY: forwarded contract.
        unsafe { ffi::svm_spin_init(raw.cast(), cls) }
    }
    unsafe fn destroy(_raw: *mut Self::Raw) {}
    unsafe fn lock(raw: *mut Self::Raw) {
        // SAFETY: forwarded contract.
        unsafe { ffi::svm_spin_lock(raw.cast()) }
    }
    unsafe fn try_lock(raw: *mut Self::Raw) -> bool {
        // SAFETY: forwarded contract.
        unsafe { ffi::svm_spin_trylock(raw.cast()) }
    }
    unsafe fn unlock(raw: *mut Self::Raw) {
        // SAFETY: forwarded contract.
        unsafe { ffi::svm_spin_unlock(raw.cast()) }
    }
}

// SAFETY: the glue's `svm_mutex_*` are `__mutex_init()` with the class, `mutex_destroy()`,
// `mutex_lock()`, `mutex_trylock()` and `mutex_unlock()` on the object passed.
unsafe impl Kind for Mtx {
    type Raw = bindings::mutex;
    unsafe fn init(raw: *mut Self::Raw, cls: u32) {
        // SAFETY: forwarded contract.
        unsafe { ffi::svm_mutex_init(raw.cast(), cls) }
    }
    unsafe fn destroy(raw: *mut Self::Raw) {
        // SAFETY: forwarded contract.
        unsafe { ffi::svm_mutex_destroy(raw.cast()) }
    }
    unsafe fn lock(raw: *mut Self::Raw) {
        // SAFETY: forwarded contract.
        unsafe { ffi::svm_mutex_lock(raw.cast()) }
    }
    unsafe fn try_lock(raw: *mut Self::Raw) -> bool {
        // SAFETY: forwarded contract.
        unsafe { ffi::svm_mutex_trylock(raw.cast()) }
    }
    unsafe fn unlock(raw: *mut Self::Raw) {
        // SAFETY: forwarded contract.
        unsafe { ffi::svm_mutex_unlock(raw.cast()) }
    }
}

/// A kernel lock of kind `K` protecting a `T`, both in this struct.
///
/// # Invariants
/// `raw` was initialised in place by `K::init` and has not moved since (the type is
/// `!Unpin`, and only [`Lock::init`] / [`KLock::init_class`] build one, at its final address);
/// `data` is only accessed with `raw` held, or through `&mut self`.
pub struct KLock<T, K: Kind> {
    raw: Opaque<K::Raw>,
    data: UnsafeCell<T>,
    _pin: PhantomPinned,
}

/// A spinlock (`LockClass::Table`, `LockClass::Tlb`, the driver's spinlocks).
pub type KSpin<T> = KLock<T, Spin>;
/// A mutex (`LockClass::Range`, `Index`, `Engine`, the driver's mutexes).
pub type KMutex<T> = KLock<T, Mtx>;

// SAFETY: the lock serialises all access to `data`; the C lock may be used from any thread.
unsafe impl<T: Send, K: Kind> Send for KLock<T, K> {}
// SAFETY: as above: shared access only yields `&mut T` under the lock.
unsafe impl<T: Send, K: Kind> Sync for KLock<T, K> {}

impl<T, K: Kind> KLock<T, K> {
    /// Builds a lock of glue class `cls` (`ffi::LC_*`) holding `data` at `slot`.
    ///
    /// # Safety
    /// `slot` must be valid for writes and the lock must stay there until dropped in place.
    pub unsafe fn init_class(slot: *mut Self, data: T, cls: u32) {
        // SAFETY: `slot` is valid and stays put (caller contract); each field is written once.
        unsafe {
            addr_of_mut!((*slot).data).write(UnsafeCell::new(data));
            addr_of_mut!((*slot).raw).write(Opaque::uninit());
            K::init(Opaque::raw_get(addr_of_mut!((*slot).raw)), cls);
        }
    }

    fn raw(&self) -> *mut K::Raw {
        self.raw.get()
    }

    /// A lock of glue class `cls` holding `data`, in its own allocation (for a lock that is
    /// not part of a larger structure).
    pub fn boxed(data: T, cls: u32, flags: kernel::alloc::Flags) -> Result<KBox<Self>, Errno> {
        let mut b = KBox::<Self>::new_uninit(flags).map_err(|_| Errno::ENOMEM)?;
        // SAFETY: a fresh allocation, which the returned box keeps in place.
        unsafe {
            Self::init_class(b.as_mut_ptr(), data, cls);
            Ok(b.assume_init())
        }
    }

    /// Acquires the lock (spins or sleeps).
    pub fn lock(&self) -> KGuard<'_, T, K> {
        // SAFETY: `raw` is an initialised lock (type invariant).
        unsafe { K::lock(self.raw()) };
        KGuard {
            lock: self,
            _not_send: PhantomData,
        }
    }

    /// Acquires the lock only if it is free now.
    pub fn try_lock(&self) -> Option<KGuard<'_, T, K>> {
        // SAFETY: `raw` is an initialised lock (type invariant).
        let ok = unsafe { K::try_lock(self.raw()) };
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

impl<T, K: Kind> Drop for KLock<T, K> {
    fn drop(&mut self) {
        // SAFETY: initialised (type invariant) and unlocked: no guard outlives `&self`.
        unsafe { K::destroy(self.raw()) }
    }
}

/// Holding a [`KLock`]. Not `Send`: a kernel lock is released by the task that took it.
pub struct KGuard<'a, T, K: Kind> {
    lock: &'a KLock<T, K>,
    _not_send: PhantomData<*mut ()>,
}

impl<T, K: Kind> Deref for KGuard<'_, T, K> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the lock is held.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T, K: Kind> DerefMut for KGuard<'_, T, K> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the lock is held, and `&mut self` makes this the only reference.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T, K: Kind> Drop for KGuard<'_, T, K> {
    fn drop(&mut self) {
        // SAFETY: this guard holds the lock.
        unsafe { K::unlock(self.lock.raw()) }
    }
}

impl<T, K: Kind> Lock<T> for KLock<T, K> {
    type Guard<'a>
        = KGuard<'a, T, K>
    where
        Self: 'a;

    unsafe fn init(slot: *mut Self, data: T, class: LockClass) -> Result<(), Errno> {
        // SAFETY: forwarded contract.
        unsafe { Self::init_class(slot, data, glue_class(class)) };
        Ok(())
    }

    fn lock(&self) -> KGuard<'_, T, K> {
        KLock::lock(self)
    }

    fn try_lock(&self) -> Option<KGuard<'_, T, K>> {
        KLock::try_lock(self)
    }
}

/// A `struct rw_semaphore` protecting a `T`, both in this struct. The engine uses it only as
/// the engine-wide lock of `LockScope::EngineRwsem` (drm_gpusvm's `notifier_lock`), so every
/// instance gets the `svm_engine_rwsem` lockdep class whatever [`LockClass`] asks for.
///
/// # Invariants
/// `raw` was initialised in place and has not moved since; `data` is only read with the read
/// or write side held, and only written with the write side held (or through `&mut self`).
pub struct KRwLock<T> {
    raw: Opaque<bindings::rw_semaphore>,
    data: UnsafeCell<T>,
    _pin: PhantomPinned,
}

// SAFETY: the rwsem serialises writers against everyone; it may be used from any thread.
unsafe impl<T: Send> Send for KRwLock<T> {}
// SAFETY: readers share `&T` concurrently (hence `T: Sync`); writers get `&mut T` only
// exclusively (hence `T: Send`).
unsafe impl<T: Send + Sync> Sync for KRwLock<T> {}

impl<T> KRwLock<T> {
    fn raw(&self) -> *mut c_void {
        self.raw.get().cast()
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
        unsafe { ffi::svm_rwsem_up_read(self.lock.raw()) }
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
        unsafe { ffi::svm_rwsem_up_write(self.lock.raw()) }
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

    unsafe fn init(slot: *mut Self, data: T, _class: LockClass) -> Result<(), Errno> {
        // SAFETY: `slot` is valid and stays put (caller contract); each field is written once.
        unsafe {
            addr_of_mut!((*slot).data).write(UnsafeCell::new(data));
            addr_of_mut!((*slot).raw).write(Opaque::uninit());
            ffi::svm_rwsem_init(
                Opaque::raw_get(addr_of_mut!((*slot).raw)).cast(),
                ffi::LC_ENGINE_RW,
            );
        }
        Ok(())
    }

    fn read(&self) -> KRwReadGuard<'_, T> {
        // SAFETY: `raw` is an initialised rwsem.
        unsafe { ffi::svm_rwsem_down_read(self.raw()) };
        KRwReadGuard {
            lock: self,
            _not_send: PhantomData,
        }
    }

    fn write(&self) -> KRwWriteGuard<'_, T> {
        // SAFETY: `raw` is an initialised rwsem.
        unsafe { ffi::svm_rwsem_down_write(self.raw()) };
        KRwWriteGuard {
            lock: self,
            _not_send: PhantomData,
        }
    }

    fn try_write(&self) -> Option<KRwWriteGuard<'_, T>> {
        // SAFETY: `raw` is an initialised rwsem.
        let ok = unsafe { ffi::svm_rwsem_down_write_trylock(self.raw()) };
        ok.then(|| KRwWriteGuard {
            lock: self,
            _not_send: PhantomData,
        })
    }
}

/// The engine's lock family: the kind is the type.
pub struct KLocks;

impl LockFamily for KLocks {
    type Spin<T: Send> = KSpin<T>;
    type Mutex<T: Send> = KMutex<T>;
    type RwLock<T: Send + Sync> = KRwLock<T>;
}
