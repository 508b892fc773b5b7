//! The lock abstraction shared by the page table and the engine.
//!
//! Modelled on `rust/kernel/sync/lock.rs`: the code that needs a lock is generic over a backend
//! family, the kind of lock (spin, mutex, rwsem) is in its type, and a lock is built in place
//! (pinned), never moved. Each platform supplies the real thing: in the module a `spinlock_t`,
//! `struct mutex` or `struct rw_semaphore` embedded in the lock (no allocation per lock), with
//! a named lockdep class per [`LockClass`]; `std::sync::Mutex` in the model;
//! `loom::sync::Mutex` under `--cfg loom` so loom sees every acquisition. Unlike 6.12's
//! `kernel::sync::Lock`, the backend must offer `try_lock`: the non-blockable invalidation path
//! (the OOM reaper) depends on it.

use super::errno::Errno;
use core::ops::{Deref, DerefMut};

/// Which lock this is, so a platform can give each kind its own lockdep class and name.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum LockClass {
    /// A page-table page's lock (innermost: nothing is taken under it). The non-blockable
    /// invalidation path (the OOM reaper, inside `non_block_start()`) takes it, and critical
    /// sections under it never sleep, so a kernel backend must make it a spinlock.
    Table,
    /// A range's lock (outer to [`LockClass::Table`]; never two at once). A mutex in the
    /// kernel: the notifier callback waits for the device TLB flush under it.
    Range,
    /// The engine's range index (short critical sections, never held across a call out).
    Index,
    /// The engine-wide lock of the baseline lock scopes (`svm::config::LockScope`): a mutex
    /// (test_hmm's `dmirror->mutex`) or a reader/writer semaphore (drm_gpusvm's
    /// `notifier_lock`). Outside every range lock, inside `mmap_lock`; a kernel backend makes
    /// it a sleeping lock (the callback waits for the device TLB flush under it).
    Engine,
    /// An execution unit's TLB in a software device (`svm::devtlb`), held across each device
    /// access and taken, one unit at a time, by the TLB flush under a range lock. Nothing of
    /// the engine is taken under it (a device never services its own fault holding it), and
    /// it is taken in the non-blockable invalidation path, so a kernel backend makes it a
    /// spinlock.
    Tlb,
}

/// A lock protecting a `T`, built in place.
///
/// A kernel lock cannot move once initialised (lockdep's map and a mutex's wait list point
/// into it), so a lock is never built by value: [`Lock::init`] writes it into its final slot,
/// and the slot's owner keeps it there until it drops it (it is pinned). A backend whose locks
/// may move (the model's) states so, and only then may its owner move an initialised lock.
pub trait Lock<T>: Sized {
    /// Proof of holding the lock; releases it when dropped.
    type Guard<'a>: DerefMut<Target = T>
    where
        Self: 'a;

    /// Builds an unlocked lock of `class` holding `data` at `slot`. Nothing is initialised on
    /// an error.
    ///
    /// # Safety
    /// `slot` must be valid for writes and aligned, and its owner must not move the lock
    /// until it is dropped in place (unless the backend allows it).
    unsafe fn init(slot: *mut Self, data: T, class: LockClass) -> Result<(), Errno>;

    /// Acquires the lock, waiting (or sleeping, for a mutex backend) as long as needed.
    fn lock(&self) -> Self::Guard<'_>;

    /// Acquires the lock only if it is free now; never waits.
    fn try_lock(&self) -> Option<Self::Guard<'_>>;
}

/// A reader/writer lock protecting a `T` (kernel: `struct rw_semaphore`), built in place as
/// [`Lock`] is. Like the kernel's rwsem, a backend should let a waiting writer hold off new
/// readers, so a stream of readers cannot starve it.
pub trait RwLock<T>: Sized {
    /// Proof of holding the read side.
    type ReadGuard<'a>: Deref<Target = T>
    where
        Self: 'a;
    /// Proof of holding the write side.
    type WriteGuard<'a>: DerefMut<Target = T>
    where
        Self: 'a;

    /// Builds an unlocked lock at `slot`, as [`Lock::init`].
    ///
    /// # Safety
    /// As [`Lock::init`].
    unsafe fn init(slot: *mut Self, data: T, class: LockClass) -> Result<(), Errno>;

    /// Acquires the read side (`down_read()`), sleeping as long as needed.
    fn read(&self) -> Self::ReadGuard<'_>;

    /// Acquires the write side (`down_write()`), sleeping as long as needed.
    fn write(&self) -> Self::WriteGuard<'_>;

    /// Acquires the write side only if it is free now (`down_write_trylock()`).
    fn try_write(&self) -> Option<Self::WriteGuard<'_>>;
}

/// A family of locks: how a platform builds each kind of lock for any protected type. The
/// kind is in the type: code that holds a lock across a sleep asks for a [`LockFamily::Mutex`],
/// code on the non-blockable invalidation path or under another spinlock for a
/// [`LockFamily::Spin`].
pub trait LockFamily: 'static {
    /// A lock that spins (kernel: `spinlock_t`): never held across a sleep. The page table's
    /// ([`LockClass::Table`]) and the device TLB's ([`LockClass::Tlb`]).
    type Spin<T: Send>: Lock<T> + Send + Sync;
    /// A sleeping lock (kernel: `struct mutex`): a range's, the index's, the engine's.
    type Mutex<T: Send>: Lock<T> + Send + Sync;
    /// A reader/writer lock (kernel: `struct rw_semaphore`).
    type RwLock<T: Send + Sync>: RwLock<T> + Send + Sync;
}
