//! A range: the unit of notification and locking.
//!
//! Each range covers a naturally aligned span and owns one interval notifier (so its own
//! sequence number), one lock, and the device mappings of its span (the leaves of the shared
//! page table, whose software words hold the pfn each DMA address maps). Faults and
//! invalidations of different ranges share no engine lock.

use super::engine::Engine;
use super::pgtable::{Errno, Lock, LockClass, LockFamily};
use super::platform::{Event, Mm, Platform};
use super::sync::{fence, AtomicBool, AtomicUsize, Ordering};
use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::ptr::addr_of_mut;
use core::sync::atomic::AtomicBool as PlainBool;

/// What the range lock protects.
pub(crate) struct RangeState {
    /// Removed (by GC or teardown): a fault that finds this must look the range up again.
    pub(crate) dead: bool,
    /// The range owns its span: it was published, and a fault has committed through it or its
    /// creator saw the publication succeed. Until then nothing can be mapped through it (a
    /// commit sets this first, under the lock), and the loser of a creation race never gets
    /// here. Its callback zaps and reaps leaves of the shared page table only while this is
    /// set and `dead` is not: a notifier stays registered, and its callback keeps running,
    /// both before its range is published (or lost the race) and after GC unpublished it
    /// until `mmu_interval_notifier_remove()` returns, which the kernel defers past a running
    /// invalidation. A successor range owns the span's leaves then, under its own lock.
    pub(crate) owner: bool,
    /// Device leaves of this range holding a DMA mapping (4 KiB or 2 MiB each).
    pub(crate) mapped: usize,
    /// The last invalidation seen `(start, end, event)`, to tell a fault's own COW break from
    /// foreign invalidations when counting retries.
    pub(crate) last: Option<(u64, u64, Event)>,
    /// The engine's own migration of `(start, end)` by task `task` is collecting pages: the
    /// span was zapped when this was set, no fault commits a leaf there until it is cleared,
    /// and the `MMU_NOTIFY_MIGRATE` callback that task's `migrate_vma_setup()` makes, with our
    /// owner, inside the span, has nothing to zap (see `migrate.rs`).
    pub(crate) migrating: Option<(u64, u64, u64)>,
}

/// A value written once before the owner is published, read-only afterwards.
///
/// # Invariants
/// `val` is initialised iff `set` is true; `set` goes false → true once.
pub(crate) struct OnceSlot<T> {
    set: PlainBool,
    val: UnsafeCell<MaybeUninit<T>>,
}

// SAFETY: after the single write (before publication, which synchronises through the range
// map's lock) the value is only read; `T: Sync` makes shared reads safe.
unsafe impl<T: Send + Sync> Sync for OnceSlot<T> {}
// SAFETY: owning a `T: Send`.
unsafe impl<T: Send> Send for OnceSlot<T> {}

impl<T> OnceSlot<T> {
    pub(crate) const fn new() -> Self {
        OnceSlot {
            set: PlainBool::new(false),
            val: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }

    /// Stores the value. Must be called at most once, before any other thread can see `self`.
    pub(crate) fn put(&self, v: T) {
        assert!(!self.set.load(Ordering::Relaxed), "OnceSlot written twice");
        // SAFETY: not yet set and not yet shared (caller contract), so no reader exists.
        unsafe { (*self.val.get()).write(v) };
        self.set.store(true, Ordering::Release);
    }

    pub(crate) fn get(&self) -> Option<&T> {
        if self.set.load(Ordering::Acquire) {
            // SAFETY: `set` is true, so `val` is initialised and never written again.
            Some(unsafe { (*self.val.get()).assume_init_ref() })
        } else {
            None
        }
    }
}

impl<T> Drop for OnceSlot<T> {
    fn drop(&mut self) {
        if *self.set.get_mut() {
            // SAFETY: initialised (invariant), dropped once here.
            unsafe { self.val.get_mut().assume_init_drop() };
        }
    }
}

type MmInterval<P> = <<P as Platform>::Mm as Mm>::Interval;
type RangeLock<P> = <<P as Platform>::Locks as LockFamily>::Mutex<RangeState>;

/// One range.
///
/// # Invariants
/// - `engine` points to the engine that created the range, which outlives it: ranges are
///   dropped by GC or teardown, and the engine tears down before it is dropped.
/// - While the notifier is registered, the range sits in a `P::Arc` that someone owns (the
///   range map, or the creator until it removes a losing notifier), so the callback's cookie
///   stays valid.
pub(crate) struct Range<P: Platform> {
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) engine: *const Engine<P>,
    pub(crate) interval: OnceSlot<MmInterval<P>>,
    pub(crate) lock: RangeLock<P>,
    /// Faults currently working on this range (GC leaves it alone while any are).
    pub(crate) inflight: AtomicUsize,
    /// Mirror of `RangeState::dead`, readable without the lock (lookup hint only).
    pub(crate) dead: AtomicBool,
    /// An `MMU_NOTIFY_UNMAP` touched the range: GC should look at it.
    pub(crate) gc_pending: AtomicBool,
}

// SAFETY: `engine` is only dereferenced as `&Engine<P>`, and `Engine<P>` is `Sync`; every
// other field is `Send + Sync` by its own bounds.
unsafe impl<P: Platform> Send for Range<P> {}
// SAFETY: as above.
unsafe impl<P: Platform> Sync for Range<P> {}

impl<P: Platform> Range<P> {
    /// Builds a range at `slot`, its lock in place. Nothing is initialised on an error.
    ///
    /// # Safety
    /// `slot` must be valid for writes and stay put until the range is dropped there.
    pub(crate) unsafe fn init(
        slot: *mut Self,
        engine: &Engine<P>,
        start: u64,
        end: u64,
    ) -> Result<(), Errno> {
        let state = RangeState {
            dead: false,
            owner: false,
            mapped: 0,
            last: None,
            migrating: None,
        };
        // SAFETY: `slot` is valid and stays put (caller contract); every field is written
        // once, the lock first (the only one that can fail).
        unsafe {
            RangeLock::<P>::init(addr_of_mut!((*slot).lock), state, LockClass::Range)?;
            addr_of_mut!((*slot).start).write(start);
            addr_of_mut!((*slot).end).write(end);
            addr_of_mut!((*slot).engine).write(engine as *const Engine<P>);
            addr_of_mut!((*slot).interval).write(OnceSlot::new());
            addr_of_mut!((*slot).inflight).write(AtomicUsize::new(0));
            addr_of_mut!((*slot).dead).write(AtomicBool::new(false));
            addr_of_mut!((*slot).gc_pending).write(AtomicBool::new(false));
        }
        Ok(())
    }

    /// The notifier. Only published ranges are handed out, and they always have one.
    pub(crate) fn interval(&self) -> &MmInterval<P> {
        self.interval
            .get()
            .expect("published range without a notifier")
    }

    pub(crate) fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }
}

/// Counts a fault (or a walk of the range's leaf tables) as in flight on a live range for as
/// long as it lives: GC neither kills the range nor frees its leaf tables meanwhile.
///
/// The handshake with [`Engine::retire`](super::engine::Engine) is Dekker's: this side
/// increments `inflight` and then reads `dead`; GC sets `dead` and then reads `inflight`, each
/// side with a full fence between its store and its load (`smp_mb()`), so at least one of them
/// sees the other. Either GC backs off, or this side does and walks nothing; a page-table walk
/// outside every lock (prefetch's and batch service's "already mapped?" check, QUERY's census,
/// `prepare` before the range lock) is safe only under this. `SeqCst` on the accesses alone
/// would do in the language's memory model, but loom models such accesses as acquire/release
/// only (and would see both sides miss each other); the fences are what it checks.
pub(crate) struct InFlight<'a, P: Platform>(pub(crate) &'a Range<P>);

impl<'a, P: Platform> InFlight<'a, P> {
    /// Enters `r` unless GC is killing or has killed it (then: look the range up again).
    pub(crate) fn enter(r: &'a Range<P>) -> Option<Self> {
        r.inflight.fetch_add(1, Ordering::SeqCst);
        let f = InFlight(r);
        fence(Ordering::SeqCst);
        if r.dead.load(Ordering::SeqCst) && !cfg!(feature = "teeth-gc-ignores-walkers") {
            return None;
        }
        Some(f)
    }
}

impl<P: Platform> Drop for InFlight<'_, P> {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::SeqCst);
    }
}
