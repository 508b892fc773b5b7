//! Interval notifiers with the exact rules of 6.12 `mm/mmu_notifier.c`.
//!
//! State per mm (`struct mmu_notifier_subscriptions`): `invalidate_seq` (odd while an
//! invalidation that hit an interval runs), `active_invalidate_ranges`, the interval tree, the
//! deferred list and the wait queue. The tree lock is the shim mutex, the wait queue its
//! condition variable. Callbacks run without the lock, as in the kernel (the tree cannot change
//! while the seq is odd: inserts and removes are deferred to the last `inv_end`).

use crate::lockdep;
use crate::mm::MmShared;
use crate::sync::atomic::{AtomicU64, Ordering as SOrdering};
use crate::sync::{Condvar, Mutex};
use crate::violations::Violations;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64 as StdU64, AtomicU8, Ordering};
use std::sync::Arc;
use svm::platform::{Event, InvalidateFn, Invalidation};

/// A registered interval notifier (`struct mmu_interval_notifier`), as the engine owns it.
///
/// The callback receives `&Interval` for the notifier it invalidates (the kernel passes the
/// `mni`), possibly before `interval_insert` has returned it to its owner: it is the tree
/// node itself, `repr(transparent)`, so the core can lend a reference to it.
#[repr(transparent)]
pub struct Interval(Arc<Node>);

impl Interval {
    fn from_node(n: &Arc<Node>) -> &Interval {
        // SAFETY: `Interval` is a `repr(transparent)` wrapper of `Arc<Node>`.
        unsafe { &*(n as *const Arc<Node> as *const Interval) }
    }

    /// `[start, last]` (inclusive, as the kernel's tree stores it).
    pub fn span(&self) -> (u64, u64) {
        self.0.span()
    }

    /// The interval's `invalidate_seq` (tests).
    pub fn seq(&self) -> u64 {
        self.0.seq()
    }

    /// Whether `mmu_interval_notifier_remove()` completed for it.
    pub fn is_removed(&self) -> bool {
        self.0.removed()
    }

    pub(crate) fn belongs_to(&self, mm: &MmShared) -> bool {
        Arc::ptr_eq(&self.0.notifier, &mm.notifier)
    }

    pub(crate) fn remove(&self) {
        self.0.notifier.remove(&self.0)
    }
}

impl Drop for Interval {
    fn drop(&mut self) {
        self.0.notifier.forget(&self.0);
    }
}

impl svm::platform::Interval for Interval {
    fn read_begin(&self) -> u64 {
        self.0.notifier.read_begin(&self.0)
    }

    fn read_retry(&self, seq: u64) -> bool {
        // mmu_interval_read_retry(): under the lock the callback takes for set_seq.
        if !lockdep::holds_range() {
            lockdep::report("mmu_interval_read_retry() outside the range lock".into());
        }
        self.0.seq() != seq
    }

    fn check_retry(&self, seq: u64) -> bool {
        self.0.seq() != seq
    }

    fn set_seq(&self, cur_seq: u64) {
        if !lockdep::in_callback() {
            lockdep::report("mmu_interval_set_seq() outside an invalidation callback".into());
        }
        if cur_seq & 1 == 0 {
            self.0.notifier.violations.record(
                "notifier",
                format!("mmu_interval_set_seq() with an even seq {cur_seq}"),
            );
        }
        self.0.set_seq(cur_seq);
    }
}

const NOT_INSERTED: u8 = 0;
const IN_TREE: u8 = 1;
const REMOVE_PENDING: u8 = 2;
const REMOVED: u8 = 3;

/// One `struct mmu_interval_notifier`.
pub(crate) struct Node {
    id: u64,
    start: u64,
    /// Inclusive, as the kernel's interval tree stores it.
    last: u64,
    cookie: usize,
    ops: InvalidateFn<Interval>,
    /// `interval_sub->invalidate_seq`.
    seq: AtomicU64,
    /// Position in the tree / deferred list (changed only under the notifier lock).
    status: AtomicU8,
    /// The handle was dropped without `remove`: never call the callback again.
    dead: AtomicBool,
    /// The notifier subsystem it is registered with (`mmgrab()` keeps it alive).
    notifier: Arc<Notifier>,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.notifier.nodes_alive.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Node {
    pub fn seq(&self) -> u64 {
        self.seq.load(SOrdering::Acquire)
    }

    pub fn set_seq(&self, s: u64) {
        self.seq.store(s, SOrdering::Release)
    }

    pub fn span(&self) -> (u64, u64) {
        (self.start, self.last)
    }

    pub fn removed(&self) -> bool {
        self.status.load(Ordering::Relaxed) == REMOVED
    }
}

struct State {
    /// `invalidate_seq` (starts at 2, as `__mmu_notifier_register()` sets it).
    seq: u64,
    /// `active_invalidate_ranges`.
    active: u64,
    /// `has_itree`.
    registered: bool,
    /// The interval tree, by (start, id).
    tree: BTreeMap<(u64, u64), Arc<Node>>,
    /// Longest interval ever inserted, to bound overlap searches.
    max_len: u64,
    /// `deferred_list`.
    deferred: Vec<Arc<Node>>,
    next_id: u64,
}

impl State {
    fn invalidating(&self) -> bool {
        self.seq & 1 == 1
    }

    fn overlapping(&self, start: u64, last: u64) -> Vec<Arc<Node>> {
        let lo = start.saturating_sub(self.max_len.saturating_sub(1));
        self.tree
            .range((lo, 0)..=(last, u64::MAX))
            .filter(|(_, n)| n.last >= start && n.start <= last)
            .map(|(_, n)| n.clone())
            .collect()
    }
}

/// One `invalidate_range_start` as the trace records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceEntry {
    /// Why.
    pub event: Event,
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// Blockable.
    pub blockable: bool,
    /// Callbacks it made.
    pub callbacks: usize,
}

/// Notifier counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NotifierStats {
    /// `invalidate_range_start` calls.
    pub invalidations: u64,
    /// Interval callbacks made.
    pub callbacks: u64,
    /// Non-blockable invalidations refused by a callback.
    pub refused: u64,
    /// `read_begin` calls.
    pub read_begins: u64,
    /// `read_begin` calls that had to wait.
    pub read_begin_waits: u64,
    /// Inserts deferred because an invalidation was running.
    pub deferred_inserts: u64,
    /// Removes that had to wait for an invalidation.
    pub deferred_removes: u64,
    /// Intervals registered now.
    pub intervals: u64,
    /// `struct mmu_interval_notifier`s still allocated (registered or not): their owner must
    /// free each one after removing it (kmemleak's view).
    pub nodes_alive: u64,
}

/// The per-mm notifier core.
pub(crate) struct Notifier {
    st: Mutex<State>,
    wq: Condvar,
    violations: Violations,
    invalidations: StdU64,
    callbacks: StdU64,
    refused: StdU64,
    read_begins: StdU64,
    waits: StdU64,
    deferred_inserts: StdU64,
    deferred_removes: StdU64,
    nodes_alive: StdU64,
    trace: std::sync::Mutex<Option<Vec<TraceEntry>>>,
    /// Fault injection: run invalidations without calling any callback (detector self-tests).
    skip_callbacks: AtomicBool,
}

/// A range under invalidation (`struct mmu_notifier_range`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct InvRange {
    pub start: u64,
    pub end: u64,
    pub event: Event,
    pub blockable: bool,
    /// `range->owner` (0: none).
    pub owner: u64,
}

impl Notifier {
    pub fn new(violations: Violations) -> Self {
        Notifier {
            st: Mutex::new(State {
                seq: 2,
                active: 0,
                registered: false,
                tree: BTreeMap::new(),
                max_len: 0,
                deferred: Vec::new(),
                next_id: 1,
            }),
            wq: Condvar::new(),
            violations,
            invalidations: StdU64::new(0),
            callbacks: StdU64::new(0),
            refused: StdU64::new(0),
            read_begins: StdU64::new(0),
            waits: StdU64::new(0),
            deferred_inserts: StdU64::new(0),
            deferred_removes: StdU64::new(0),
            nodes_alive: StdU64::new(0),
            trace: std::sync::Mutex::new(None),
            skip_callbacks: AtomicBool::new(false),
        }
    }

    pub fn set_skip_callbacks(&self, on: bool) {
        self.skip_callbacks.store(on, Ordering::Relaxed);
    }

    pub fn registered(&self) -> bool {
        self.st.lock().registered
    }

    pub fn set_registered(&self) {
        self.st.lock().registered = true;
    }

    pub fn stats(&self) -> NotifierStats {
        let st = self.st.lock();
        let intervals = st.tree.len() as u64
            + st.deferred
                .iter()
                .filter(|n| n.status.load(Ordering::Relaxed) == NOT_INSERTED)
                .count() as u64;
        drop(st);
        NotifierStats {
            invalidations: self.invalidations.load(Ordering::Relaxed),
            callbacks: self.callbacks.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            read_begins: self.read_begins.load(Ordering::Relaxed),
            read_begin_waits: self.waits.load(Ordering::Relaxed),
            deferred_inserts: self.deferred_inserts.load(Ordering::Relaxed),
            deferred_removes: self.deferred_removes.load(Ordering::Relaxed),
            intervals,
            nodes_alive: self.nodes_alive.load(Ordering::Relaxed),
        }
    }

    /// The mm-wide `invalidate_seq` (tests).
    pub fn mm_seq(&self) -> u64 {
        self.st.lock().seq
    }

    pub fn set_trace(&self, on: bool) {
        *self.trace.lock().unwrap_or_else(|e| e.into_inner()) = on.then(Vec::new);
    }

    pub fn take_trace(&self) -> Vec<TraceEntry> {
        let mut t = self.trace.lock().unwrap_or_else(|e| e.into_inner());
        match t.as_mut() {
            Some(v) => std::mem::take(v),
            None => Vec::new(),
        }
    }

    /// `__mmu_interval_notifier_insert()` (the caller did `mmget` and the registration).
    pub fn insert(
        self: &Arc<Self>,
        start: u64,
        len: u64,
        cookie: usize,
        ops: InvalidateFn<Interval>,
    ) -> Result<Interval, ()> {
        // length == 0 or start + length - 1 overflowing: -EOVERFLOW in the kernel.
        if len == 0 {
            return Err(());
        }
        let last = start.checked_add(len - 1).ok_or(())?;
        let mut st = self.st.lock();
        let node = Arc::new(Node {
            id: st.next_id,
            start,
            last,
            cookie,
            ops,
            seq: AtomicU64::new(0),
            status: AtomicU8::new(NOT_INSERTED),
            dead: AtomicBool::new(false),
            notifier: self.clone(),
        });
        st.next_id += 1;
        self.nodes_alive.fetch_add(1, Ordering::Relaxed);
        st.max_len = st.max_len.max(len);
        if st.active > 0 {
            if st.invalidating() {
                // Deferred to the last inv_end; the odd seq makes read_begin wait for it.
                st.deferred.push(node.clone());
                self.deferred_inserts.fetch_add(1, Ordering::Relaxed);
            } else {
                st.seq |= 1;
                st.tree.insert((start, node.id), node.clone());
                node.status.store(IN_TREE, Ordering::Relaxed);
            }
            node.set_seq(st.seq);
        } else {
            debug_assert!(!st.invalidating());
            // Odd, not equal to the current seq, and far from being reached by it.
            node.set_seq(st.seq.wrapping_sub(1));
            st.tree.insert((start, node.id), node.clone());
            node.status.store(IN_TREE, Ordering::Relaxed);
        }
        Ok(Interval(node))
    }

    /// Takes `node` out (or defers it); returns the seq to wait for, if any.
    fn remove_locked(&self, st: &mut State, node: &Arc<Node>) -> Option<u64> {
        match node.status.load(Ordering::Relaxed) {
            NOT_INSERTED => {
                // Removed after a deferred insert but before the deferred list ran.
                st.deferred.retain(|n| !Arc::ptr_eq(n, node));
                node.status.store(REMOVED, Ordering::Relaxed);
                None
            }
            IN_TREE if st.invalidating() => {
                node.status.store(REMOVE_PENDING, Ordering::Relaxed);
                st.deferred.push(node.clone());
                self.deferred_removes.fetch_add(1, Ordering::Relaxed);
                Some(st.seq)
            }
            IN_TREE => {
                st.tree.remove(&(node.start, node.id));
                node.status.store(REMOVED, Ordering::Relaxed);
                None
            }
            REMOVE_PENDING => {
                self.violations.record(
                    "notifier",
                    "mmu_interval_notifier_remove() twice (remove pending)",
                );
                Some(st.seq)
            }
            _ => {
                self.violations.record(
                    "notifier",
                    "mmu_interval_notifier_remove() of a removed notifier",
                );
                None
            }
        }
    }

    /// `mmu_interval_notifier_remove()`: after it returns the callback never runs again.
    pub fn remove(&self, node: &Arc<Node>) {
        lockdep::check_may_wait_for_invalidation("mmu_interval_notifier_remove()", false);
        let mut st = self.st.lock();
        if let Some(seq) = self.remove_locked(&mut st, node) {
            // mmu_interval_seq_released()
            while st.seq == seq {
                st = self.wq.wait(st);
            }
        }
    }

    /// A handle was dropped while registered: the kernel would free a live notifier (UAF).
    pub fn forget(&self, node: &Arc<Node>) {
        if node.removed() {
            return;
        }
        node.dead.store(true, Ordering::Relaxed);
        self.violations.record(
            "notifier",
            format!(
                "interval [{:#x}, {:#x}] dropped without mmu_interval_notifier_remove()",
                node.start, node.last
            ),
        );
        let mut st = self.st.lock();
        if node.status.load(Ordering::Relaxed) != REMOVE_PENDING {
            let _ = self.remove_locked(&mut st, node);
        }
    }

    /// `mmu_interval_read_begin()`.
    pub fn read_begin(&self, node: &Node) -> u64 {
        lockdep::check_may_wait_for_invalidation("mmu_interval_read_begin()", false);
        // A removed notifier whose memory is still owned is fine (a fault racing GC does
        // this): it reads its last seq, as the kernel would.
        self.read_begins.fetch_add(1, Ordering::Relaxed);
        let st = self.st.lock();
        let seq = node.seq();
        let is_invalidating = seq == st.seq;
        drop(st);
        if is_invalidating {
            self.waits.fetch_add(1, Ordering::Relaxed);
            let mut st = self.st.lock();
            // Waits for every invalidation of the mm to end, not only this interval's.
            while st.seq == seq {
                st = self.wq.wait(st);
            }
        }
        seq
    }

    /// `mn_itree_invalidate()` / `mn_itree_release()`: runs every overlapping interval's
    /// callback. `Err` only for a refused non-blockable call, after which `inv_end` already ran
    /// and the caller must not call [`Notifier::invalidate_range_end`] (-EAGAIN).
    pub fn invalidate_range_start(&self, r: &InvRange) -> Result<(), ()> {
        lockdep::check_invalidate_start("mmu_notifier_invalidate_range_start()");
        self.invalidations.fetch_add(1, Ordering::Relaxed);
        // mn_itree_inv_start_range()
        let (nodes, cur_seq) = {
            let mut st = self.st.lock();
            st.active += 1;
            let last = r.end.saturating_sub(1);
            let nodes = if r.start < r.end {
                st.overlapping(r.start, last)
            } else {
                Vec::new()
            };
            if !nodes.is_empty() {
                st.seq |= 1;
            }
            (nodes, st.seq)
        };
        if let Some(t) = self
            .trace
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            if t.len() < 4096 {
                t.push(TraceEntry {
                    event: r.event,
                    start: r.start,
                    end: r.end,
                    blockable: r.blockable,
                    callbacks: nodes.len(),
                });
            }
        }
        let inv = Invalidation {
            start: r.start,
            end: r.end,
            event: r.event,
            blockable: r.blockable,
            cur_seq,
            owner: r.owner,
        };
        for node in nodes {
            if node.dead.load(Ordering::Relaxed) || self.skip_callbacks.load(Ordering::Relaxed) {
                continue;
            }
            self.callbacks.fetch_add(1, Ordering::Relaxed);
            let before = node.seq();
            let ok = {
                let _cb = lockdep::enter_callback(r.blockable);
                // SAFETY: the cookie was registered with this callback, and the registration
                // is live: remove() waits for this invalidation to end before returning.
                unsafe { (node.ops)(node.cookie as *const (), Interval::from_node(&node), &inv) }
            };
            // A callback may skip an `MMU_NOTIFY_EXCLUSIVE` that carries an owner whole, seq
            // and all, as nouveau's does for its own (`Documentation/design.rst`, "Device
            // atomics"): the CPU entry keeps its page, and the caller that handed it over
            // would otherwise fail its own seq check every time.
            let may_skip = r.event == Event::Exclusive && r.owner != 0;
            if ok {
                if node.seq() != cur_seq && !may_skip {
                    self.violations.record(
                        "notifier",
                        format!(
                            "callback for [{:#x}, {:#x}] ({:?}) returned without mmu_interval_set_seq(cur_seq)",
                            node.start, node.last, r.event
                        ),
                    );
                }
            } else if r.blockable {
                // WARN_ON(mmu_notifier_range_blockable(range)); continue
                self.violations.record(
                    "notifier",
                    format!(
                        "blockable invalidation ({:?}) refused by a callback",
                        r.event
                    ),
                );
            } else {
                if node.seq() != before {
                    self.violations.record(
                        "notifier",
                        "non-blockable callback refused after calling set_seq",
                    );
                }
                self.refused.fetch_add(1, Ordering::Relaxed);
                self.invalidate_range_end();
                return Err(());
            }
        }
        Ok(())
    }

    /// `mn_itree_inv_end()`.
    pub fn invalidate_range_end(&self) {
        let mut st = self.st.lock();
        st.active -= 1;
        if st.active > 0 || !st.invalidating() {
            return;
        }
        // Make invalidate_seq even, then run the deferred inserts and removes.
        st.seq = st.seq.wrapping_add(1);
        let deferred = std::mem::take(&mut st.deferred);
        for n in deferred {
            match n.status.load(Ordering::Relaxed) {
                NOT_INSERTED => {
                    st.tree.insert((n.start, n.id), n.clone());
                    n.status.store(IN_TREE, Ordering::Relaxed);
                }
                REMOVE_PENDING => {
                    st.tree.remove(&(n.start, n.id));
                    n.status.store(REMOVED, Ordering::Relaxed);
                }
                _ => {}
            }
        }
        drop(st);
        self.wq.notify_all();
    }
}
