//! The engine-wide lock of the baseline lock scopes ([`LockScope`]).
//!
//! This design needs none: each range's lock serialises its faults with its invalidations,
//! and nothing else does. The reference designs add one lock for the whole device context:
//! test_hmm's `dmirror->mutex` (taken by every fault commit and every invalidation) and
//! drm_gpusvm's `notifier_lock` (read side to check the seq and commit PTEs, write side in
//! the invalidation callback). [`Serial`] is that lock, so the same engine code can run as
//! each of them and be measured against them. It is taken *outside* the range lock and only
//! adds serialisation: the per-range protocol runs unchanged inside it.
//!
//! Lock order: `mmap_lock` → engine lock → range lock → table lock. Like the range lock, it is
//! never held across `read_begin`, `mmap_lock`, `hmm_range_fault()`, a notifier insert or
//! remove, or a `GFP_KERNEL` allocation (reclaim runs invalidation callbacks, which take it).

use super::config::LockScope;
use super::pgtable::{Errno, Lock, LockClass, LockFamily, RwLock};
use super::platform::{Platform, SharedPtr};

type MutexOf<P> = <<P as Platform>::Locks as LockFamily>::Mutex<()>;
type RwsemOf<P> = <<P as Platform>::Locks as LockFamily>::RwLock<()>;

/// The engine-wide lock, of the kind the configuration's [`LockScope`] names.
pub(crate) enum Serial<P: Platform> {
    /// [`LockScope::PerRange`]: nothing to take.
    None,
    /// [`LockScope::EngineMutex`] (in its own allocation: a lock never moves, and the engine
    /// is built by value).
    Mutex(P::Arc<MutexOf<P>>),
    /// [`LockScope::EngineRwsem`].
    Rwsem(P::Arc<RwsemOf<P>>),
}

/// Holding the engine-wide lock (or nothing, under [`LockScope::PerRange`]); releases it when
/// dropped. The guards are kept only for their `Drop`.
pub(crate) enum SerialGuard<'a, P: Platform + 'a> {
    None,
    Mutex {
        _g: <MutexOf<P> as Lock<()>>::Guard<'a>,
    },
    Read {
        _g: <RwsemOf<P> as RwLock<()>>::ReadGuard<'a>,
    },
    Write {
        _g: <RwsemOf<P> as RwLock<()>>::WriteGuard<'a>,
    },
}

impl<P: Platform> Serial<P> {
    /// The lock for `scope`. May allocate: call it when the engine is created.
    pub(crate) fn new(scope: LockScope) -> Result<Self, Errno> {
        Ok(match scope {
            LockScope::PerRange => Serial::None,
            // SAFETY (both): `new_init` hands a fresh slot that stays put for the lock's life.
            LockScope::EngineMutex => Serial::Mutex(P::Arc::new_init(|p| unsafe {
                MutexOf::<P>::init(p, (), LockClass::Engine)
            })?),
            LockScope::EngineRwsem => Serial::Rwsem(P::Arc::new_init(|p| unsafe {
                RwsemOf::<P>::init(p, (), LockClass::Engine)
            })?),
        })
    }

    /// The fault side: taken before the range lock around a fault's commit (`read_retry` and
    /// the leaf writes). Shared under [`LockScope::EngineRwsem`], as drm_gpusvm's
    /// `drm_gpusvm_notifier_lock()` around its seq check and PTE commit.
    pub(crate) fn fault(&self) -> SerialGuard<'_, P> {
        match self {
            Serial::None => SerialGuard::None,
            Serial::Mutex(m) => SerialGuard::Mutex { _g: m.lock() },
            Serial::Rwsem(s) => SerialGuard::Read { _g: s.read() },
        }
    }

    /// The invalidation side: taken before the range lock by a blockable invalidation
    /// callback, GC and teardown. Exclusive in every scope.
    pub(crate) fn invalidate(&self) -> SerialGuard<'_, P> {
        match self {
            Serial::None => SerialGuard::None,
            Serial::Mutex(m) => SerialGuard::Mutex { _g: m.lock() },
            Serial::Rwsem(s) => SerialGuard::Write { _g: s.write() },
        }
    }

    /// The invalidation side for a non-blockable callback: `None` if it is contended now (the
    /// callback then refuses, as test_hmm does with `mutex_trylock()`).
    pub(crate) fn try_invalidate(&self) -> Option<SerialGuard<'_, P>> {
        match self {
            Serial::None => Some(SerialGuard::None),
            Serial::Mutex(m) => m.try_lock().map(|g| SerialGuard::Mutex { _g: g }),
            Serial::Rwsem(s) => s.try_write().map(|g| SerialGuard::Write { _g: g }),
        }
    }
}
