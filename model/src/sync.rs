//! Synchronisation shim, after tokio's `src/loom/`: `std` primitives normally, `loom`'s under
//! `--cfg loom`, behind one API so the rest of the model is written once.
//!
//! Only the state whose interleavings matter to the protocol goes through here (the machine
//! state lock, the notifier lock and wait queue, `mmap_lock`, the device TLB lock, the engine's
//! locks and `Arc`). Bookkeeping that is atomic in the kernel's own terms (counters, the DMA
//! tracker, the violation log) uses `std` directly, so loom has fewer points to permute.
//!
//! Lock poisoning is ignored: the first panic is the interesting one, and a poisoned lock would
//! only turn it into a cascade of unrelated ones.

#[cfg(not(loom))]
use std::sync as imp;

#[cfg(loom)]
use loom::sync as imp;

pub use imp::Arc;

/// Atomics (loom's under `--cfg loom`).
pub mod atomic {
    #[cfg(loom)]
    pub use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
    pub use std::sync::atomic::Ordering;
    #[cfg(not(loom))]
    pub use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
}

/// Threads (loom's under `--cfg loom`).
pub mod thread {
    #[cfg(loom)]
    pub use loom::thread::{spawn, yield_now, JoinHandle};
    #[cfg(not(loom))]
    pub use std::thread::{spawn, yield_now, JoinHandle};
}

static NEXT_TASK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

#[cfg(loom)]
loom::thread_local! {
    static TASK: u64 = NEXT_TASK.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

#[cfg(not(loom))]
std::thread_local! {
    static TASK: u64 = NEXT_TASK.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// The calling thread's id (`current`): distinct for every thread (loom's too), never 0.
pub fn task_id() -> u64 {
    TASK.with(|t| *t)
}

/// A mutex whose `lock` never reports poisoning.
#[derive(Debug, Default)]
pub struct Mutex<T>(imp::Mutex<T>);

/// Guard of [`Mutex`].
pub type MutexGuard<'a, T> = imp::MutexGuard<'a, T>;

impl<T> Mutex<T> {
    /// A new unlocked mutex.
    pub fn new(v: T) -> Self {
        Mutex(imp::Mutex::new(v))
    }

    /// Locks, waiting as long as needed.
    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Locks only if free now.
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        match self.0.try_lock() {
            Ok(g) => Some(g),
            Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }
}

/// A reader/writer lock whose methods never report poisoning. `std`'s (futex-based on Linux)
/// lets a waiting writer hold off new readers, as the kernel's rwsem does.
#[derive(Debug, Default)]
pub struct RwLock<T>(imp::RwLock<T>);

/// Read guard of [`RwLock`].
pub type RwLockReadGuard<'a, T> = imp::RwLockReadGuard<'a, T>;
/// Write guard of [`RwLock`].
pub type RwLockWriteGuard<'a, T> = imp::RwLockWriteGuard<'a, T>;

impl<T> RwLock<T> {
    /// A new unlocked lock.
    pub fn new(v: T) -> Self {
        RwLock(imp::RwLock::new(v))
    }

    /// Takes the read side, waiting as long as needed.
    pub fn read(&self) -> RwLockReadGuard<'_, T> {
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the write side, waiting as long as needed.
    pub fn write(&self) -> RwLockWriteGuard<'_, T> {
        self.0.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the write side only if it is free now.
    pub fn try_write(&self) -> Option<RwLockWriteGuard<'_, T>> {
        match self.0.try_write() {
            Ok(g) => Some(g),
            Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }
}

/// A condition variable paired with [`Mutex`].
#[derive(Debug, Default)]
pub struct Condvar(imp::Condvar);

impl Condvar {
    /// A new condition variable.
    pub fn new() -> Self {
        Condvar(imp::Condvar::new())
    }

    /// Atomically releases `g` and waits for a notification (spurious wakeups happen: loop).
    pub fn wait<'a, T>(&self, g: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        self.0.wait(g).unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes every waiter.
    pub fn notify_all(&self) {
        self.0.notify_all()
    }
}

#[cfg(not(loom))]
pub(crate) use std::thread_local;

#[cfg(loom)]
pub(crate) use loom::thread_local;
