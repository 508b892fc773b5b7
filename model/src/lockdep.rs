//! A small lockdep: per-thread bookkeeping of the locks the engine and the model hold, checked
//! against the locking rules of the brief (section 2) and of the kernel APIs the engine calls.
//!
//! The kernel finds these bugs with lockdep and `might_sleep()`; the model checks them on every
//! call, so a rule broken on a path the tests reach is reported on first use. Reports go to the
//! [`Violations`] log of the current [`Scope`] (device accesses, `MmHandle` operations and
//! `World` helpers open one); a thread with no scope panics, like `panic_on_warn`.
//!
//! Rules checked (each names the kernel check it stands for):
//! - nothing is taken under a page-table lock (`LockClass::Table` is innermost), nor any
//!   engine lock under a device TLB unit's lock (`LockClass::Tlb`: the flush takes it under a
//!   range lock, so a device servicing a fault while holding its unit deadlocks);
//! - never two range locks at once (lockdep: same class nested without annotation);
//! - the engine-wide lock of a baseline lock scope (`LockClass::Engine`) never under a range
//!   or table lock (it is outside them), never twice (a recursive read of a rwsem deadlocks
//!   behind a waiting writer), never blocking in a non-blockable invalidation;
//! - a blocking range-lock acquisition inside a non-blockable invalidation
//!   (`non_block_start()` + `might_sleep()` in `mutex_lock()`);
//! - `mmap_lock` taken under an engine lock, recursively, or inside an invalidation callback
//!   (the callback may run under `mmap_write_lock`: self-deadlock);
//! - `mmu_interval_read_begin()`, `mmu_interval_notifier_insert()`/`_remove()` under an engine
//!   lock or from a callback (`lock_map_acquire(&__mmu_notifier_invalidate_range_start_map)`);
//!   insert also under `mmap_lock` (`might_lock(&mm->mmap_lock)`);
//! - a `GFP_KERNEL` allocation (page-table page, `Arc`, index node) under a range, engine or
//!   table lock,
//!   inside a callback, or in a non-blockable section (`fs_reclaim` priming, `might_alloc()`);
//! - `dma_map_page()` outside the range lock (I4);
//! - a sleeping TLB flush in a non-blockable invalidation;
//! - `mmu_interval_read_retry()` outside the range lock, `mmu_interval_set_seq()` outside a
//!   callback.

use crate::violations::Violations;
use pgtable::LockClass;
use std::cell::RefCell;

const TABLE: usize = 0;
const RANGE: usize = 1;
const INDEX: usize = 2;
const MMAP_READ: usize = 3;
const MMAP_WRITE: usize = 4;
const ENGINE: usize = 5;
const TLB: usize = 6;

#[derive(Default)]
struct ThreadState {
    held: [u32; 7],
    in_callback: u32,
    non_block: u32,
    sink: Option<Violations>,
}

crate::sync::thread_local! {
    static STATE: RefCell<ThreadState> = RefCell::new(ThreadState::default());
}

fn with<R>(f: impl FnOnce(&mut ThreadState) -> R) -> R {
    STATE.with(|s| f(&mut s.borrow_mut()))
}

fn idx(c: LockClass) -> usize {
    match c {
        LockClass::Table => TABLE,
        LockClass::Range => RANGE,
        LockClass::Index => INDEX,
        LockClass::Engine => ENGINE,
        LockClass::Tlb => TLB,
    }
}

/// Reports a broken locking rule to the current scope's log, or panics without one.
pub(crate) fn report(msg: String) {
    let sink = with(|s| s.sink.clone());
    match sink {
        Some(v) => v.record("lockdep", msg),
        None => panic!("lockdep (no Violations scope on this thread): {msg}"),
    }
}

/// Routes this thread's lockdep reports to a [`Violations`] log while alive.
pub struct Scope {
    prev: Option<Violations>,
}

impl Scope {
    pub(crate) fn enter(v: &Violations) -> Scope {
        let prev = with(|s| s.sink.replace(v.clone()));
        Scope { prev }
    }
}

/// Makes `v` this thread's sink from now on, without restoring anything (a device thread's
/// hot path: no reference-count traffic per access once set).
pub(crate) fn adopt(v: &Violations) {
    with(|s| {
        if !s.sink.as_ref().is_some_and(|c| Violations::same(c, v)) {
            s.sink = Some(v.clone());
        }
    });
}

impl Drop for Scope {
    fn drop(&mut self) {
        let prev = self.prev.take();
        with(|s| s.sink = prev);
    }
}

fn engine_locks(s: &ThreadState) -> Option<&'static str> {
    if s.held[RANGE] > 0 {
        Some("a range lock")
    } else if s.held[TABLE] > 0 {
        Some("a page-table lock")
    } else if s.held[INDEX] > 0 {
        Some("the range-index lock")
    } else if s.held[ENGINE] > 0 {
        Some("the engine lock")
    } else if s.held[TLB] > 0 {
        Some("a device TLB unit's lock")
    } else {
        None
    }
}

/// An engine lock of `class` is about to be taken (`blocking`: `lock()`, else `try_lock()`).
pub(crate) fn acquire(class: LockClass, blocking: bool) {
    let mut msgs = Vec::new();
    with(|s| {
        if s.held[TABLE] > 0 {
            msgs.push(format!(
                "{class:?} lock taken while holding a page-table lock (Table is innermost)"
            ));
        }
        if s.held[TLB] > 0 {
            msgs.push(format!(
                "{class:?} lock taken while holding a device TLB unit's lock (a device never services a fault holding its unit: the flush takes it under a range lock)"
            ));
        }
        if class == LockClass::Range && s.held[RANGE] > 0 && blocking {
            msgs.push("second range lock taken while holding one (never two range locks)".into());
        }
        if class == LockClass::Engine && s.held[RANGE] > 0 {
            msgs.push(
                "engine lock taken while holding a range lock (the engine lock is outside every range lock)".into(),
            );
        }
        if class == LockClass::Engine && s.held[ENGINE] > 0 && blocking {
            msgs.push(
                "engine lock taken while holding it (a recursive rwsem read deadlocks behind a waiting writer)".into(),
            );
        }
        if class == LockClass::Engine && blocking && s.non_block > 0 {
            msgs.push(
                "blocking engine-lock acquisition in a non-blockable invalidation (must try and return false)".into(),
            );
        }
        if class == LockClass::Range && blocking && s.non_block > 0 {
            msgs.push(
                "blocking range-lock acquisition in a non-blockable invalidation (must try_lock and return false)".into(),
            );
        }
    });
    for m in msgs {
        report(m);
    }
}

/// The acquisition of `class` succeeded.
pub(crate) fn acquired(class: LockClass) {
    with(|s| s.held[idx(class)] += 1);
}

/// A lock of `class` was released.
pub(crate) fn release(class: LockClass) {
    with(|s| s.held[idx(class)] = s.held[idx(class)].saturating_sub(1));
}

/// `mmap_lock` is about to be taken by `what`.
pub(crate) fn mmap_acquire(what: &str) {
    let mut msgs = Vec::new();
    with(|s| {
        if let Some(l) = engine_locks(s) {
            msgs.push(format!("{what}: mmap_lock taken while holding {l}"));
        }
        if s.held[MMAP_READ] + s.held[MMAP_WRITE] > 0 {
            msgs.push(format!(
                "{what}: recursive mmap_lock (deadlocks against a waiting writer)"
            ));
        }
        if s.in_callback > 0 {
            msgs.push(format!(
                "{what}: mmap_lock taken inside an invalidation callback"
            ));
        }
    });
    for m in msgs {
        report(m);
    }
}

/// `mmap_lock` was taken (`write`: exclusively).
pub(crate) fn mmap_acquired(write: bool) {
    with(|s| s.held[if write { MMAP_WRITE } else { MMAP_READ }] += 1);
}

/// `mmap_lock` was released.
pub(crate) fn mmap_release(write: bool) {
    let i = if write { MMAP_WRITE } else { MMAP_READ };
    with(|s| s.held[i] = s.held[i].saturating_sub(1));
}

/// A call that may sleep on invalidation progress (`read_begin`, notifier insert/remove):
/// no engine lock, not from a callback; `no_mmap`: not under `mmap_lock` either.
pub(crate) fn check_may_wait_for_invalidation(what: &str, no_mmap: bool) {
    let mut msgs = Vec::new();
    with(|s| {
        if let Some(l) = engine_locks(s) {
            msgs.push(format!("{what} called while holding {l}"));
        }
        if s.in_callback > 0 {
            msgs.push(format!("{what} called from an invalidation callback"));
        }
        if no_mmap && s.held[MMAP_READ] + s.held[MMAP_WRITE] > 0 {
            msgs.push(format!("{what} called while holding mmap_lock"));
        }
    });
    for m in msgs {
        report(m);
    }
}

/// A `GFP_KERNEL` allocation by `what`.
pub(crate) fn check_alloc(what: &str) {
    let mut msgs = Vec::new();
    with(|s| {
        if s.held[RANGE] > 0 {
            msgs.push(format!(
                "{what}: GFP_KERNEL allocation under a range lock (reclaim takes it)"
            ));
        }
        if s.held[TABLE] > 0 {
            msgs.push(format!(
                "{what}: GFP_KERNEL allocation under a page-table lock"
            ));
        }
        if s.held[ENGINE] > 0 {
            msgs.push(format!(
                "{what}: GFP_KERNEL allocation under the engine lock (reclaim takes it)"
            ));
        }
        if s.held[TLB] > 0 {
            msgs.push(format!(
                "{what}: GFP_KERNEL allocation under a device TLB unit's spinlock"
            ));
        }
        if s.in_callback > 0 {
            msgs.push(format!(
                "{what}: GFP_KERNEL allocation inside an invalidation callback"
            ));
        }
        if s.non_block > 0 {
            msgs.push(format!("{what}: allocation in a non-blockable section"));
        }
    });
    for m in msgs {
        report(m);
    }
}

/// `dma_map_page()`: must be made under the range lock (I4).
pub(crate) fn check_dma_map() {
    if with(|s| s.held[RANGE] == 0) {
        report("dma_map_page() outside the range lock (I4)".into());
    }
}

/// A device TLB flush; `may_sleep`: the flush sleeps.
pub(crate) fn check_flush(may_sleep: bool) {
    let mut msgs = Vec::new();
    with(|s| {
        if may_sleep && s.non_block > 0 {
            msgs.push("sleeping device-TLB flush inside a non-blockable invalidation".to_string());
        }
        if s.held[INDEX] > 0 {
            msgs.push("device-TLB flush while holding the range-index lock".to_string());
        }
    });
    for m in msgs {
        report(m);
    }
}

/// An invalidation is about to start on this thread (core mm code): no engine lock may be held,
/// since the callbacks take them.
pub(crate) fn check_invalidate_start(what: &str) {
    if let Some(l) = with(|s| engine_locks(s)) {
        report(format!(
            "{what}: invalidation started while holding {l} (the callback would deadlock)"
        ));
    }
}

/// Whether this thread holds a range lock.
pub(crate) fn holds_range() -> bool {
    with(|s| s.held[RANGE] > 0)
}

/// Whether this thread holds the engine-wide lock of a baseline lock scope.
pub(crate) fn holds_engine() -> bool {
    with(|s| s.held[ENGINE] > 0)
}

/// Whether this thread runs inside an invalidation callback.
pub(crate) fn in_callback() -> bool {
    with(|s| s.in_callback > 0)
}

/// Marks this thread as running an invalidation callback until dropped
/// (`non_block_start()`/`non_block_end()` around non-blockable ones).
pub(crate) struct CallbackGuard {
    blockable: bool,
}

pub(crate) fn enter_callback(blockable: bool) -> CallbackGuard {
    with(|s| {
        s.in_callback += 1;
        if !blockable {
            s.non_block += 1;
        }
    });
    CallbackGuard { blockable }
}

impl Drop for CallbackGuard {
    fn drop(&mut self) {
        let b = self.blockable;
        with(|s| {
            s.in_callback -= 1;
            if !b {
                s.non_block -= 1;
            }
        });
    }
}
