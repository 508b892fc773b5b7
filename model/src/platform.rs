//! `ModelPlatform`: the `svm::platform::Platform` the engine runs on in userspace.
//!
//! Locks are the shim's mutexes and reader/writer locks (loom's under `--cfg loom`) with
//! lockdep bookkeeping; `Arc` is
//! the shim's `Arc`; the range index is a mutex-protected `BTreeMap`; page-table memory is
//! [`TableMem`]; the mm, DMA and TLB are the simulated kernel services of this crate.

use crate::dma::DmaTracker;
use crate::lockdep;
use crate::mm::MmHandle;
use crate::sync;
use crate::tablemem::TableMem;
use crate::tlb::Tlb;
use core::marker::PhantomData;
use core::ops::Deref;
use pgtable::{Errno, PteFormat, X86Format};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use svm::platform::{Platform, RangeMap, SharedPtr};

pub use crate::locks::{
    ModelGuard, ModelLock, ModelLocks, ModelReadGuard, ModelRwLock, ModelWriteGuard,
};

/// The engine's reference-counted pointer: the shim `Arc` (loom's under `--cfg loom`).
pub struct ModelArc<T>(sync::Arc<T>);

impl<T> Clone for ModelArc<T> {
    fn clone(&self) -> Self {
        ModelArc(self.0.clone())
    }
}

impl<T> Deref for ModelArc<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: Send + Sync> SharedPtr<T> for ModelArc<T> {
    fn new(v: T) -> Result<Self, Errno> {
        lockdep::check_alloc("Arc::new");
        Ok(ModelArc(sync::Arc::new(v)))
    }

    fn new_init(init: impl FnOnce(*mut T) -> Result<(), Errno>) -> Result<Self, Errno> {
        lockdep::check_alloc("Arc::new");
        // The model's locks may move (`ModelLock::new`): build the value here and move it in.
        let mut v = core::mem::MaybeUninit::<T>::uninit();
        init(v.as_mut_ptr())?;
        // SAFETY: `init` succeeded, so `v` holds a valid `T`.
        Ok(ModelArc(sync::Arc::new(unsafe { v.assume_init() })))
    }

    fn ptr_eq(a: &Self, b: &Self) -> bool {
        sync::Arc::ptr_eq(&a.0, &b.0)
    }
}

/// The range index: a `BTreeMap` behind the shim mutex (the kernel's: an rbtree under a mutex).
pub struct ModelMap<V>(sync::Mutex<BTreeMap<u64, V>>);

impl<V: Clone + Send + Sync + 'static> RangeMap<V> for ModelMap<V> {
    fn new() -> Result<Self, Errno> {
        Ok(ModelMap(sync::Mutex::new(BTreeMap::new())))
    }

    fn get(&self, key: u64) -> Option<V> {
        self.0.lock().get(&key).cloned()
    }

    fn insert(&self, key: u64, v: V) -> Result<Result<(), V>, Errno> {
        // xa_insert(..., GFP_KERNEL) may allocate and enter reclaim.
        lockdep::check_alloc("RangeMap::insert");
        let mut m = self.0.lock();
        if let Some(old) = m.get(&key) {
            return Ok(Err(old.clone()));
        }
        m.insert(key, v);
        drop(m);
        #[cfg(not(loom))]
        publish_hook::fire(key);
        Ok(Ok(()))
    }

    fn remove_if(&self, key: u64, is_it: impl FnOnce(&V) -> bool) -> Option<V> {
        let mut m = self.0.lock();
        if is_it(m.get(&key)?) {
            m.remove(&key)
        } else {
            None
        }
    }

    fn next_from(&self, key: u64) -> Option<(u64, V)> {
        self.0
            .lock()
            .range(key..)
            .next()
            .map(|(k, v)| (*k, v.clone()))
    }
}

/// A test's hook on range publication: what runs in the publishing thread right after a range
/// enters the index and before its creator can use it (between `range_for`'s insert and the
/// fault's `InFlight::enter`), a window no other thread can be made to hit deterministically.
#[cfg(not(loom))]
pub mod publish_hook {
    use std::cell::RefCell;

    type Hook = Box<dyn FnMut(u64)>;

    thread_local! {
        static HOOK: RefCell<Option<Hook>> = const { RefCell::new(None) };
    }

    /// Runs `f(key)` each time this thread publishes a range, until the guard is dropped. `f`
    /// may call into the engine (a publication inside `f` does not run it again).
    pub fn set(f: impl FnMut(u64) + 'static) -> Guard {
        HOOK.with(|h| *h.borrow_mut() = Some(Box::new(f)));
        Guard(())
    }

    /// Removes the hook when dropped.
    pub struct Guard(());

    impl Drop for Guard {
        fn drop(&mut self) {
            HOOK.with(|h| *h.borrow_mut() = None);
        }
    }

    pub(crate) fn fire(key: u64) {
        // Taken out while it runs, so the engine calls it makes cannot re-enter it.
        let Some(mut f) = HOOK.with(|h| h.borrow_mut().take()) else {
            return;
        };
        f(key);
        HOOK.with(|h| {
            let mut h = h.borrow_mut();
            if h.is_none() {
                *h = Some(f);
            }
        });
    }
}

impl<V> ModelMap<V> {
    /// Number of entries (tests).
    pub fn len(&self) -> usize {
        self.0.lock().len()
    }

    /// Whether empty (tests).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The model platform, generic over the device PTE format.
pub struct ModelPlatform<F: PteFormat = X86Format> {
    #[cfg(not(loom))]
    start: std::time::Instant,
    /// 0: real clock; else the fake clock advances this many ns per `now_ns` call (never 0
    /// under loom).
    step: u64,
    fake: AtomicU64,
    /// The engine's trace events, when recording ([`ModelPlatform::record_trace`]).
    trace: Option<std::sync::Mutex<Vec<svm::trace::Trace>>>,
    _fmt: PhantomData<fn() -> F>,
}

impl<F: PteFormat> Default for ModelPlatform<F> {
    fn default() -> Self {
        Self::new()
    }
}

impl<F: PteFormat> ModelPlatform<F> {
    /// A platform with the real monotonic clock (a deterministic 1 ms/call counter under loom).
    pub fn new() -> Self {
        #[cfg(loom)]
        let step = 1_000_000;
        #[cfg(not(loom))]
        let step = 0;
        Self::with_clock_step(step)
    }

    /// A platform whose clock advances `step_ns` per `now_ns()` call (0: real clock), so retry
    /// budgets are deterministic.
    pub fn with_clock_step(step_ns: u64) -> Self {
        // Loom needs determinism: no real clock there.
        #[cfg(loom)]
        let step_ns = if step_ns == 0 { 1_000_000 } else { step_ns };
        ModelPlatform {
            #[cfg(not(loom))]
            start: std::time::Instant::now(),
            step: step_ns,
            fake: AtomicU64::new(0),
            trace: None,
            _fmt: PhantomData,
        }
    }

    /// Records every trace event from now on ([`ModelPlatform::trace_log`]).
    pub fn record_trace(mut self) -> Self {
        self.trace = Some(Default::default());
        self
    }

    /// The trace events recorded so far, oldest first.
    pub fn trace_log(&self) -> Vec<svm::trace::Trace> {
        match &self.trace {
            Some(t) => t.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            None => Vec::new(),
        }
    }
}

impl<F: PteFormat> Platform for ModelPlatform<F> {
    type Fmt = F;
    type Mem = TableMem;
    type Locks = ModelLocks;
    type Arc<T: Send + Sync + 'static> = ModelArc<T>;
    type Map<V: Clone + Send + Sync + 'static> = ModelMap<V>;
    type Mm = MmHandle;
    type Dma = DmaTracker;
    type Tlb = Tlb;
    type Devmem = crate::devmem::ModelDevmem;

    fn now_ns(&self) -> u64 {
        if self.step != 0 {
            return self.fake.fetch_add(self.step, Ordering::Relaxed) + self.step;
        }
        #[cfg(not(loom))]
        {
            self.start.elapsed().as_nanos() as u64
        }
        #[cfg(loom)]
        {
            unreachable!("loom platforms always use the fake clock")
        }
    }

    fn relax(&self) {
        sync::thread::yield_now();
    }

    fn task(&self) -> u64 {
        sync::task_id()
    }

    fn warn(&self, what: &str) {
        // The kernel logs it; here it is a violation of the thread's world (or a panic).
        crate::lockdep::report(format!("engine invariant: {what}"));
    }

    fn tracing(&self) -> bool {
        self.trace.is_some()
    }

    fn trace(&self, ev: &svm::trace::Trace) {
        if let Some(t) = &self.trace {
            t.lock().unwrap_or_else(|e| e.into_inner()).push(*ev);
        }
    }
}
