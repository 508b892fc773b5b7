// SPDX-License-Identifier: GPL-2.0
//! User-mode queues (Documentation/kernel.rst, "User-mode queues"): a ring, a doorbell word
//! and a fence word in the bound process's own memory, and a command processor per queue
//! that reads them, runs the jobs and writes the fence through the device's memory access
//! path ([`Ctx::access`]), as the device would: a ring page that was swapped out, migrated
//! or COW-broken is a device fault like any other.
//!
//! The processor and the queue's states are the shared `svm/src/userq.rs` ([`UserQueue`],
//! checked by loom on the model); this file gives it the device ([`KDev`]), a work item on
//! the queue workqueues (`svm_queue`, and `svm_queue_hi` for high priority), sized for
//! every queue the device allows, so queues never wait behind each other or starve the
//! fault workers, and a wait queue. The processor never sleeps without watching its halt
//! flags, so stopping one (DESTROY, teardown) waits for at most one device access, and a
//! suspend for the end of the job it runs.
//!
//! Lifetime: a queue is an `Arc`, held by its context's table and by each WAIT on it; the
//! table's reference goes at DESTROY or teardown, which halt the processor and wait for it
//! first. The processor itself holds no reference: dropping the queue cancels its work item
//! (the first field) before anything else goes.
//!
//! Locks: `svm_qctl_lock` (suspend/resume, held across the wait for the processors) outside
//! `svm_queues_lock` (the table; nothing waits under it). A processor takes neither.

use super::ops::Exec;
use super::*;
use crate::userq::{self, QErr, QueueDevice, UserQueue};
use kernel::sync::UniqueArc;

const EACCES: Errno = Errno(13);
/// Trace-only states of `svm:svm_queue` (svm_trace.h), after the uAPI's.
const TRACE_CREATED: u32 = 4;
const TRACE_DESTROYED: u32 = 5;

// The shared queue code speaks the uAPI's numbers.
const _: () = assert!(
    userq::ACTIVE == uapi::QUEUE_ACTIVE
        && userq::ERROR == uapi::QUEUE_ERROR
        && userq::SUSPENDED == uapi::QUEUE_SUSPENDED
        && userq::ENTRY == core::mem::size_of::<uapi::QEntry>() as u64
        && userq::MAX_ENTRIES == uapi::MAX_RING
);

/// Queues per file.
const MAXQ: usize = uapi::MAX_QUEUES as usize;

/// Queues over every context, against the `max_queues` module parameter.
static QUEUES: AtomicU32 = AtomicU32::new(0);

/// A user-mode queue: the shared state and processor ([`UserQueue`]) with the kernel's work
/// item and wait queue.
///
/// # Invariants
/// `ctx` is the context whose table held the queue: it outlives the queue's processor,
/// since the context halts every queue and waits for its processor before it goes
/// ([`Ctx::stop_queues`]). `work` runs the processor with this queue as data; it is the
/// first field, so dropping the queue cancels it (waiting for a running processor) before
/// any other field goes. The queue holds one count of [`QUEUES`], given back on drop.
pub(super) struct Queue {
    work: WorkItem,
    ctx: *const Ctx,
    id: u32,
    high: bool,
    /// WAITs and the idle processor sleep here.
    waitq: WaitQueue,
    q: UserQueue,
}

// SAFETY: `ctx` is only read, and outlives every use (invariant); the rest is atomics, and
// the work item and wait queue, which are `Send + Sync`.
unsafe impl Send for Queue {}
// SAFETY: as above.
unsafe impl Sync for Queue {}

/// A context's queues.
pub(super) struct QueueTable {
    slots: [Option<Arc<Queue>>; MAXQ],
    next_id: u32,
}

impl QueueTable {
    pub(super) const fn new() -> Self {
        QueueTable {
            slots: [const { None }; MAXQ],
            next_id: 1,
        }
    }

    fn find(&self, id: u32) -> Option<&Arc<Queue>> {
        self.slots.iter().flatten().find(|q| q.id == id)
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        // A queue dropped without a halt (a failed CREATE never queued its processor) must
        // not start it now; `work`'s drop waits for a running one.
        self.q.halt();
        QUEUES.fetch_sub(1, Ordering::Relaxed);
    }
}

fn qerr(e: JobErr) -> QErr {
    match e {
        JobErr::Fault(e, va) => QErr::Fault(e, va),
        JobErr::Intr | JobErr::Gone => QErr::Halted,
    }
}

/// The op of an entry's six words (the process may be writing them: read word by word).
fn decode(w: &[u64; 6]) -> uapi::Op {
    let b0 = w[0].to_ne_bytes();
    uapi::Op {
        kind: u32::from_ne_bytes([b0[0], b0[1], b0[2], b0[3]]),
        flags: u32::from_ne_bytes([b0[4], b0[5], b0[6], b0[7]]),
        src: w[1],
        dst: w[2],
        len: w[3],
        value: w[4],
        result: w[5],
    }
}

/// The device as a queue's processor sees it: the context's access path, on behalf of the
/// queue (whose halt ends an access or a fault wait).
struct KDev<'a> {
    q: &'a Queue,
    c: &'a Ctx,
    b: &'a Binding,
    task_size: u64,
}

impl QueueDevice for KDev<'_> {
    fn load(&self, va: u64) -> Result<u64, QErr> {
        self.c
            .access(self.b, Exec::Queue(self.q), &[(va, Access::Read)], |p| {
                // SAFETY: in the mapped page, 8-byte aligned (checked at CREATE, or an
                // entry's word).
                unsafe { AtomicU64::from_ptr(p[0].cast()) }.load(Ordering::Acquire)
            })
            .map_err(qerr)
    }

    fn store(&self, va: u64, v: u64) -> Result<(), QErr> {
        self.c
            .access(self.b, Exec::Queue(self.q), &[(va, Access::Write)], |p| {
                // SAFETY: as in `load`.
                unsafe { AtomicU64::from_ptr(p[0].cast()) }.store(v, Ordering::Release)
            })
            .map_err(qerr)
    }

    fn read_entry(&self, va: u64) -> Result<[u64; 6], QErr> {
        self.c
            .access(self.b, Exec::Queue(self.q), &[(va, Access::Read)], |p| {
                let mut w = [0u64; 6];
                for (k, x) in w.iter_mut().enumerate() {
                    // SAFETY: the entry is 64-byte aligned, so all of it is in the page.
                    *x = unsafe { AtomicU64::from_ptr(p[0].add(k * 8).cast()) }
                        .load(Ordering::Relaxed);
                }
                w
            })
            .map_err(qerr)
    }

    fn run(&self, slot: u64, w: &[u64; 6]) -> Result<Option<u64>, QErr> {
        let op = decode(w);
        Ctx::check_op(&op, self.task_size).map_err(|e| QErr::Fault(e, slot))?;
        let r = self
            .c
            .run_op(self.b, Exec::Queue(self.q), &op)
            .map_err(qerr)?;
        Ok(matches!(op.kind, uapi::OP_ADD | uapi::OP_READ).then_some(r))
    }

    fn wake(&self) {
        self.q.waitq.wake()
    }

    fn idle(&self, ns: u64, cond: &dyn Fn() -> bool) {
        // ETIME is the poll's tick.
        let _ = self.q.waitq.wait_until(ns, false, cond);
    }

    fn now_ns(&self) -> u64 {
        // SAFETY: no preconditions.
        unsafe { ffi::svm_now_ns() }
    }

    fn resched(&self) {
        resched()
    }

    fn gone(&self) -> bool {
        self.c.gone.load(Ordering::Relaxed)
    }

    fn trace_state(&self, _q: &UserQueue, state: u32) {
        self.q.trace(state)
    }

    fn trace_run(&self, q: &UserQueue, jobs: u64) {
        self.c.queue_jobs.fetch_add(jobs, Ordering::Relaxed);
        // SAFETY: plain tracepoint call; `ctx` is only printed (hashed).
        unsafe { ffi::svm_trace_queue_run(self.q.ctx.cast(), self.q.id, jobs, q.completed()) };
    }
}

impl Queue {
    /// Halted for good: the access path abandons the job (see [`UserQueue::interrupted`]).
    pub(super) fn interrupted(&self) -> bool {
        self.q.interrupted()
    }

    fn ctx(&self) -> &Ctx {
        // SAFETY: the context outlives the queue's processor and every ioctl (invariant).
        unsafe { &*self.ctx }
    }

    fn trace(&self, state: u32) {
        let s = self.q.status();
        // SAFETY: plain tracepoint call; `ctx` is only printed (hashed).
        unsafe {
            ffi::svm_trace_queue(self.ctx.cast(), self.id, state, s.error, s.fault_addr, s.completed)
        }
    }

    /// Wakes every wait of the processor: its idle poll, and a device fault's answer (on the
    /// context's queue), so that it sees a halt.
    fn wake_all(&self) {
        self.waitq.wake();
        self.ctx().waitq.wake();
    }

    /// Stops the processor for good and waits for it (DESTROY, teardown; never from the
    /// processor).
    fn destroy(&self) {
        self.q.halt();
        self.wake_all();
        self.work.cancel_sync();
        self.trace(TRACE_DESTROYED);
    }

    /// The command processor (the work item's function).
    fn run(&self) {
        let c = self.ctx();
        let Some(b) = c.bound() else {
            return;
        };
        // What the processor's faults allocate is charged to the bound mm's memory cgroup.
        let _charge = b.engine().mm().charge_scope();
        let dev = KDev {
            q: self,
            c,
            b,
            task_size: b.engine().config().task_size,
        };
        self.q.run(&dev);
    }
}

impl Ctx {
    fn find_queue(&self, id: u32) -> Option<Arc<Queue>> {
        self.queues.lock().find(id).cloned()
    }

    pub(super) fn create_queue(&self, a: &mut uapi::CreateQueue) -> Result<(), Errno> {
        let b = self.bound_here()?;
        if a.flags != 0 || a.priority > uapi::QUEUE_PRIORITY_HIGH {
            return Err(Errno::EINVAL);
        }
        let uq = UserQueue::new(
            a.ring,
            a.ring_entries,
            a.doorbell,
            a.fence,
            b.engine().config().task_size,
        )?;
        let high = a.priority == uapi::QUEUE_PRIORITY_HIGH;
        // SAFETY: no preconditions.
        if high && !unsafe { ffi::svm_capable_sys_nice() } {
            return Err(EACCES);
        }
        // SAFETY: no preconditions.
        let max = unsafe { ffi::svm_max_queues() };
        if QUEUES.fetch_add(1, Ordering::Relaxed) >= max {
            QUEUES.fetch_sub(1, Ordering::Relaxed);
            return Err(Errno::ENOSPC);
        }
        // From here the count is the queue's (given back by its drop), or given back below.
        let give_back = |e: Errno| {
            QUEUES.fetch_sub(1, Ordering::Relaxed);
            Err(e)
        };
        let Ok(mut u) = UniqueArc::<Queue>::new_uninit(GFP) else {
            return give_back(Errno::ENOMEM);
        };
        let p = u.as_mut_ptr();
        // SAFETY: the queue outlives its work item (its first field; see `Queue`).
        let work = unsafe { WorkItem::new_queue(svm_rs_queue_work, p.cast(), high) };
        let (Ok(work), Ok(waitq)) = (work, WaitQueue::new()) else {
            return give_back(Errno::ENOMEM);
        };
        let mut t = self.queues.lock();
        let Some(slot) = t.slots.iter().position(Option::is_none) else {
            drop(t);
            return give_back(Errno::ENOSPC);
        };
        // Ids are never reused by the file (a WAIT on a destroyed queue's id must not find a
        // new one): 2^32 creations would wrap, so skip 0 and live ids.
        let mut id = t.next_id;
        while id == 0 || t.find(id).is_some() {
            id = id.wrapping_add(1);
        }
        t.next_id = id.wrapping_add(1);
        let q: Arc<Queue> = u
            .write(Queue {
                work,
                ctx: self,
                id,
                high,
                waitq,
                q: uq,
            })
            .into();
        q.trace(TRACE_CREATED);
        q.work.queue();
        t.slots[slot] = Some(q);
        a.queue_id = id;
        Ok(())
    }

    pub(super) fn destroy_queue(&self, a: &uapi::DestroyQueue) -> Result<(), Errno> {
        self.bound_here()?;
        if a.pad != 0 {
            return Err(Errno::EINVAL);
        }
        let q = {
            let mut t = self.queues.lock();
            let s = t
                .slots
                .iter_mut()
                .find(|s| s.as_ref().is_some_and(|q| q.id == a.queue_id))
                .ok_or(Errno::ENOENT)?;
            s.take()
        };
        if let Some(q) = q {
            q.destroy();
        }
        Ok(())
    }

    pub(super) fn wait(&self, a: &mut uapi::Wait) -> Result<(), Errno> {
        self.bound_here()?;
        if a.flags != 0 {
            return Err(Errno::EINVAL);
        }
        let q = self.find_queue(a.queue_id).ok_or(Errno::ENOENT)?;
        q.q.kick();
        q.waitq.wake();
        let v = a.value;
        let slept = q.waitq.wait_until(a.timeout_ns, true, &|| q.q.wait_over(v));
        let s = q.q.status();
        a.completed = s.completed;
        a.state = s.state;
        a.error = s.error;
        a.fault_addr = s.fault_addr;
        q.q.wait_result(v, slept)
    }

    /// Suspends every queue of the context and waits until no processor runs (each finishes
    /// the job it runs): then the device touches none of their memory until
    /// [`Ctx::resume_queues`].
    pub(super) fn suspend_queues(&self) {
        let _g = self.qctl.lock();
        let mut held: [Option<Arc<Queue>>; MAXQ] = [const { None }; MAXQ];
        {
            let t = self.queues.lock();
            for (h, q) in held.iter_mut().zip(t.slots.iter()) {
                if let Some(q) = q {
                    if q.q.suspend() {
                        q.trace(uapi::QUEUE_SUSPENDED);
                    }
                    q.wake_all();
                    *h = Some(q.clone());
                }
            }
        }
        for q in held.iter().flatten() {
            q.work.cancel_sync();
        }
    }

    /// Resumes the suspended queues (an `ERROR` stays so).
    pub(super) fn resume_queues(&self) {
        let _g = self.qctl.lock();
        let t = self.queues.lock();
        for q in t.slots.iter().flatten() {
            if q.q.resume() {
                q.trace(uapi::QUEUE_ACTIVE);
                // Under the table lock: a DESTROY that takes it out later cancels this.
                q.work.queue();
            }
        }
    }

    /// Teardown: halts every queue (a job running is abandoned), waiting for the processors,
    /// and frees them. No ioctl runs any more, nor a debugfs write (its directory is gone).
    pub(super) fn stop_queues(&self) {
        let mut t = self.queues.lock();
        let mut held: [Option<Arc<Queue>>; MAXQ] = [const { None }; MAXQ];
        for (h, s) in held.iter_mut().zip(t.slots.iter_mut()) {
            *h = s.take();
        }
        drop(t);
        for q in held.iter().flatten() {
            q.destroy();
        }
    }

    /// debugfs `queues`: one line per queue.
    pub(super) fn show_queues(&self, w: &mut debugfs::Seq) -> core::fmt::Result {
        use core::fmt::Write;
        let t = self.queues.lock();
        for q in t.slots.iter().flatten() {
            let s = q.q.status();
            let state = match s.state {
                uapi::QUEUE_ACTIVE => "active",
                uapi::QUEUE_ERROR => "error",
                _ => "suspended",
            };
            let (polls, doorbells) = q.q.polls();
            writeln!(
                w,
                "queue={} prio={} state={} completed={} error={} addr={:#x} ring={:#x} \
                 entries={} doorbell={:#x} fence={:#x} polls={} doorbells={}",
                q.id,
                if q.high { "high" } else { "normal" },
                state,
                s.completed,
                s.error,
                s.fault_addr,
                q.q.ring,
                q.q.entries,
                q.q.doorbell,
                q.q.fence,
                polls,
                doorbells,
            )?;
        }
        Ok(())
    }
}

/// A queue's command processor.
///
/// # Safety
/// `data` is the queue the work item was made for, alive while it runs (see [`Queue`]).
#[no_mangle]
pub unsafe extern "C" fn svm_rs_queue_work(data: *mut c_void) {
    // SAFETY: per the contract.
    unsafe { &*data.cast::<Queue>() }.run();
}
