// SPDX-License-Identifier: GPL-2.0
//! Work items and wait queues as owned values: created with their function and data, freed
//! (and, for a work item, cancelled first) when dropped, so the structures that hold them need
//! no null checks and no hand-written teardown of them.

use crate::ffi;
use crate::pgtable::Errno;
use core::ffi::c_void;
use core::ptr::NonNull;

/// A work item on the module's unbound workqueue, running `f(data)`.
///
/// # Invariants
/// `w` is a live work item of the glue, freed only by `Drop`; when `self_freeing` is false,
/// `Drop` cancels it first, so it never runs after its owner dropped it.
pub struct WorkItem {
    w: NonNull<ffi::Work>,
    self_freeing: bool,
}

// SAFETY: the glue's work calls may be made from any task; the item is only reached through
// them.
unsafe impl Send for WorkItem {}
// SAFETY: as above: `queue` and `cancel_sync` may race (the workqueue core serialises them).
unsafe impl Sync for WorkItem {}

impl WorkItem {
    /// A work item running `f(data)`. Dropping it cancels it (waiting for a running `f`)
    /// and frees it.
    ///
    /// # Safety
    /// `data` must be valid for `f` every time the item runs: until the item is dropped.
    pub unsafe fn new(
        f: unsafe extern "C" fn(*mut c_void),
        data: *mut c_void,
    ) -> Result<Self, Errno> {
        // SAFETY: plain allocation; NULL on failure.
        let w = unsafe { ffi::svm_work_new(f, data) };
        Ok(WorkItem {
            w: NonNull::new(w).ok_or(Errno::ENOMEM)?,
            self_freeing: false,
        })
    }

    /// A queue's command processor, on the (high-priority when `high`) queue workqueue.
    /// Dropping it cancels it (waiting for a running `f`) and frees it.
    ///
    /// # Safety
    /// As [`WorkItem::new`].
    pub unsafe fn new_queue(
        f: unsafe extern "C" fn(*mut c_void),
        data: *mut c_void,
        high: bool,
    ) -> Result<Self, Errno> {
        // SAFETY: plain allocation; NULL on failure.
        let w = unsafe { ffi::svm_work_new_queue(f, data, high) };
        Ok(WorkItem {
            w: NonNull::new(w).ok_or(Errno::ENOMEM)?,
            self_freeing: false,
        })
    }

    /// A teardown work item (on the glue's teardown queue) whose function drops its own
    /// owner: dropping it only frees it, since it is the one running (a work function may
    /// free its own item; the workqueue core does not touch it after the call).
    ///
    /// # Safety
    /// As [`WorkItem::new`]; in addition its owner must be dropped only by `f` or before the
    /// item was ever queued.
    pub unsafe fn new_teardown(
        f: unsafe extern "C" fn(*mut c_void),
        data: *mut c_void,
    ) -> Result<Self, Errno> {
        // SAFETY: plain allocation; NULL on failure.
        let w = unsafe { ffi::svm_work_new_teardown(f, data) };
        Ok(WorkItem {
            w: NonNull::new(w).ok_or(Errno::ENOMEM)?,
            self_freeing: true,
        })
    }

    /// Queues it (no-op if already queued).
    pub fn queue(&self) {
        // SAFETY: live work item (invariant).
        unsafe { ffi::svm_work_queue(self.w.as_ptr()) }
    }

    /// Cancels it and waits for a running `f` to return. Must not be called from `f`.
    pub fn cancel_sync(&self) {
        // SAFETY: live work item (invariant).
        unsafe { ffi::svm_work_cancel_sync(self.w.as_ptr()) }
    }

    /// The glue's work item, for a callback that queues it (the mm's notifiers).
    pub fn as_ptr(&self) -> *mut ffi::Work {
        self.w.as_ptr()
    }
}

impl Drop for WorkItem {
    fn drop(&mut self) {
        if !self.self_freeing {
            self.cancel_sync();
        }
        // SAFETY: live (invariant), not queued or running any more (cancelled, or the
        // teardown item running this drop), freed once here.
        unsafe { ffi::svm_work_free(self.w.as_ptr()) }
    }
}

/// A wait queue (`wait_queue_head_t`).
///
/// # Invariants
/// `q` is a live wait queue of the glue, freed only by `Drop`.
pub struct WaitQueue {
    q: NonNull<ffi::Waitq>,
}

// SAFETY: waiting and waking may happen from any task.
unsafe impl Send for WaitQueue {}
// SAFETY: as above.
unsafe impl Sync for WaitQueue {}

impl WaitQueue {
    /// An empty wait queue.
    pub fn new() -> Result<Self, Errno> {
        // SAFETY: plain allocation; NULL on failure.
        let q = unsafe { ffi::svm_waitq_new() };
        Ok(WaitQueue {
            q: NonNull::new(q).ok_or(Errno::ENOMEM)?,
        })
    }

    /// Sleeps (killable) until `*word != old`; the glue's return code (0, or `-EINTR`).
    ///
    /// # Safety
    /// `word` must stay valid while this sleeps.
    pub unsafe fn wait_ne_killable(&self, word: *const u32, old: u32) -> i32 {
        // SAFETY: live queue (invariant); `word` per the contract.
        unsafe { ffi::svm_waitq_wait_ne_killable(self.q.as_ptr(), word, old) }
    }

    /// Sleeps until `cond()` holds, for at most `timeout_ns` (`u64::MAX`: no limit):
    /// interruptibly (any signal: `EINTR`) or, for a worker, in `TASK_IDLE`. `ETIME` when
    /// the time ran out. `cond` is evaluated after every wake-up, in this task.
    pub fn wait_until(
        &self,
        timeout_ns: u64,
        interruptible: bool,
        cond: &dyn Fn() -> bool,
    ) -> Result<(), Errno> {
        unsafe extern "C" fn tramp(data: *const c_void) -> bool {
            // SAFETY: `data` is the `&&dyn Fn` passed below, alive for the whole wait.
            let f = unsafe { &*data.cast::<&dyn Fn() -> bool>() };
            f()
        }
        let data: *const &dyn Fn() -> bool = &cond;
        // SAFETY: live queue (invariant); `data` outlives the call, which evaluates it only
        // while it runs.
        let r = unsafe {
            ffi::svm_waitq_wait_cond(self.q.as_ptr(), tramp, data.cast(), timeout_ns, interruptible)
        };
        match r {
            0 => Ok(()),
            e => Err(Errno(-e)),
        }
    }

    /// Wakes every waiter.
    pub fn wake(&self) {
        // SAFETY: live queue (invariant).
        unsafe { ffi::svm_waitq_wake(self.q.as_ptr()) }
    }
}

impl Drop for WaitQueue {
    fn drop(&mut self) {
        // SAFETY: live (invariant); no waiter is left (its owner is being dropped, and every
        // waiter holds a reference to the owner); freed once here.
        unsafe { ffi::svm_waitq_free(self.q.as_ptr()) }
    }
}
