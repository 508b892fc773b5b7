//! The model's engine locks (`LockFamily`): the shim's mutex and rwlock (loom's under
//! `--cfg loom`), with lockdep bookkeeping by class.

use crate::lockdep;
use crate::sync;
use core::ops::{Deref, DerefMut};
use pgtable::{Errno, Lock, LockClass, LockFamily, RwLock};

/// A lock of the engine or the page table: the shim mutex, with lockdep bookkeeping by class.
pub struct ModelLock<T> {
    inner: sync::Mutex<T>,
    class: LockClass,
}

/// Guard of [`ModelLock`].
pub struct ModelGuard<'a, T> {
    g: sync::MutexGuard<'a, T>,
    class: LockClass,
}

impl<T> Deref for ModelGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.g
    }
}

impl<T> DerefMut for ModelGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.g
    }
}

impl<T> Drop for ModelGuard<'_, T> {
    fn drop(&mut self) {
        lockdep::release(self.class);
    }
}

impl<T> ModelLock<T> {
    /// A lock of `class` holding `data`. The model's locks may move (a shim mutex), so tests
    /// and the model's own structures build them by value; the engine uses [`Lock::init`].
    pub fn new(data: T, class: LockClass) -> Self {
        ModelLock {
            inner: sync::Mutex::new(data),
            class,
        }
    }
}

impl<T> Lock<T> for ModelLock<T> {
    type Guard<'a>
        = ModelGuard<'a, T>
    where
        Self: 'a;

    unsafe fn init(slot: *mut Self, data: T, class: LockClass) -> Result<(), Errno> {
        // SAFETY: `slot` is valid for writes (caller contract).
        unsafe { slot.write(ModelLock::new(data, class)) };
        Ok(())
    }

    fn lock(&self) -> ModelGuard<'_, T> {
        lockdep::acquire(self.class, true);
        let g = self.inner.lock();
        lockdep::acquired(self.class);
        ModelGuard {
            g,
            class: self.class,
        }
    }

    fn try_lock(&self) -> Option<ModelGuard<'_, T>> {
        lockdep::acquire(self.class, false);
        let g = self.inner.try_lock()?;
        lockdep::acquired(self.class);
        Some(ModelGuard {
            g,
            class: self.class,
        })
    }
}

/// A reader/writer lock of the engine (the engine-wide rwsem of `LockScope::EngineRwsem`): the
/// shim's `RwLock` (loom's under `--cfg loom`), with lockdep bookkeeping by class.
pub struct ModelRwLock<T> {
    inner: sync::RwLock<T>,
    class: LockClass,
}

/// Read guard of [`ModelRwLock`].
pub struct ModelReadGuard<'a, T> {
    g: sync::RwLockReadGuard<'a, T>,
    class: LockClass,
}

impl<T> Deref for ModelReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.g
    }
}

impl<T> Drop for ModelReadGuard<'_, T> {
    fn drop(&mut self) {
        lockdep::release(self.class);
    }
}

/// Write guard of [`ModelRwLock`].
pub struct ModelWriteGuard<'a, T> {
    g: sync::RwLockWriteGuard<'a, T>,
    class: LockClass,
}

impl<T> Deref for ModelWriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.g
    }
}

impl<T> DerefMut for ModelWriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.g
    }
}

impl<T> Drop for ModelWriteGuard<'_, T> {
    fn drop(&mut self) {
        lockdep::release(self.class);
    }
}

impl<T> ModelRwLock<T> {
    /// A lock of `class` holding `data` (movable, as [`ModelLock::new`]).
    pub fn new(data: T, class: LockClass) -> Self {
        ModelRwLock {
            inner: sync::RwLock::new(data),
            class,
        }
    }
}

impl<T> RwLock<T> for ModelRwLock<T> {
    type ReadGuard<'a>
        = ModelReadGuard<'a, T>
    where
        Self: 'a;
    type WriteGuard<'a>
        = ModelWriteGuard<'a, T>
    where
        Self: 'a;

    unsafe fn init(slot: *mut Self, data: T, class: LockClass) -> Result<(), Errno> {
        // SAFETY: `slot` is valid for writes (caller contract).
        unsafe { slot.write(ModelRwLock::new(data, class)) };
        Ok(())
    }

    fn read(&self) -> ModelReadGuard<'_, T> {
        lockdep::acquire(self.class, true);
        let g = self.inner.read();
        lockdep::acquired(self.class);
        ModelReadGuard {
            g,
            class: self.class,
        }
    }

    fn write(&self) -> ModelWriteGuard<'_, T> {
        lockdep::acquire(self.class, true);
        let g = self.inner.write();
        lockdep::acquired(self.class);
        ModelWriteGuard {
            g,
            class: self.class,
        }
    }

    fn try_write(&self) -> Option<ModelWriteGuard<'_, T>> {
        lockdep::acquire(self.class, false);
        let g = self.inner.try_write()?;
        lockdep::acquired(self.class);
        Some(ModelWriteGuard {
            g,
            class: self.class,
        })
    }
}

/// The lock family of the model.
pub struct ModelLocks;

/// Spin and mutex are the same shim mutex here: lockdep's rules by class stand in for the
/// kernel's kind checks (nothing sleeps or is allocated under a `Table` or `Tlb` lock).
impl LockFamily for ModelLocks {
    type Spin<T: Send> = ModelLock<T>;
    type Mutex<T: Send> = ModelLock<T>;
    type RwLock<T: Send + Sync> = ModelRwLock<T>;
}
