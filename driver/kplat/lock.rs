// SPDX-License-Identifier: GPL-2.0
//! Kernel locks for the engine (`LockFamily`): kmalloc'd C locks, one lockdep class each.

use crate::ffi;
use crate::pgtable::{Errno, Lock, LockClass, LockFamily, RwLock};
use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;
use kernel::prelude::*;

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
            // Held across each device access and taken by the flush of a non-blockable
            // invalidation: a spinlock.
            LockClass::Tlb => KLock::new_spin(data, ffi::LC_TLB),
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
