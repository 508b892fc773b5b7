//! The lock abstraction shared by the page table and the engine.
//!
//! Modelled on `rust/kernel/sync/lock.rs`: the code that needs a lock is generic over a backend
//! family, and each platform supplies the real thing — a kernel `struct mutex` (through the C
//! glue, with a named lockdep class per [`LockClass`]) in the module, `std::sync::Mutex` in the
//! model, `loom::sync::Mutex` under `--cfg loom` so loom sees every acquisition. Unlike 6.12's
//! `kernel::sync::Lock`, the backend must offer `try_lock`: the non-blockable invalidation path
//! (the OOM reaper) depends on it.

use super::errno::Errno;
use core::ops::DerefMut;

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
}

/// A lock protecting a `T`.
pub trait Lock<T>: Sized {
    /// Proof of holding the lock; releases it when dropped.
    type Guard<'a>: DerefMut<Target = T>
    where
        Self: 'a;

    /// Creates an unlocked lock. Fallible because a kernel backend may allocate.
    fn new(data: T, class: LockClass) -> Result<Self, Errno>;

    /// Acquires the lock, waiting (or sleeping, for a mutex backend) as long as needed.
    fn lock(&self) -> Self::Guard<'_>;

    /// Acquires the lock only if it is free now; never waits.
    fn try_lock(&self) -> Option<Self::Guard<'_>>;
}

/// A family of locks: how a platform builds a [`Lock`] for any protected type.
pub trait LockFamily: 'static {
    /// The lock type for data `T`.
    type Lock<T: Send>: Lock<T> + Send + Sync;
}
