// SPDX-License-Identifier: GPL-2.0
//! User-mode queues (Documentation/kernel.rst, "User-mode queues"): a ring, a doorbell word
//! and a fence word in the bound process's own memory, and a command processor per queue
//! that reads them, runs the jobs and writes the fence through the device's memory access
//! path ([`Ctx::access`]), as the device would: a ring page that was swapped out, migrated
//! or COW-broken is a device fault like any other.
//!
//! The command processor is a work item on the queue workqueues (`svm_queue`, and
//! `svm_queue_hi` for high priority), sized for every queue the device allows, so queues
//! never wait behind each other or starve the fault workers. It polls the doorbell: at once
//! after work, backing off to [`POLL_MAX_NS`] when idle; WAIT and resume kick it. It never
//! sleeps without watching its halt flags, so stopping one (DESTROY, suspend, teardown)
//! waits for at most one device access.
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
use kernel::sync::UniqueArc;

const EIO: Errno = Errno(5);
const EACCES: Errno = Errno(13);
const ETIME: Errno = Errno(62);
const EOVERFLOW: Errno = Errno(75);

/// Bytes of a ring entry (`struct drm_svm_accel_qentry`): entries never straddle a page.
const ENTRY: u64 = core::mem::size_of::<uapi::QEntry>() as u64;
/// Jobs a processor runs per doorbell read before it reads the doorbell again.
const BURST: u64 = 64;
/// After work, the processor polls without sleeping for this long...
const POLL_SPIN_NS: u64 = 50_000;
/// ... then sleeps between polls, backing off from this...
const POLL_MIN_NS: u64 = 4_000;
/// ... to this.
const POLL_MAX_NS: u64 = 1_000_000;
/// Trace-only states of `svm:svm_queue` (svm_trace.h), after the uAPI's.
const TRACE_CREATED: u32 = 4;
const TRACE_DESTROYED: u32 = 5;

/// Queues over every context, against the `max_queues` module parameter.
static QUEUES: AtomicU32 = AtomicU32::new(0);

/// A user-mode queue.
///
/// # Invariants
/// `ctx` is the context whose table held the queue: it outlives the queue's processor,
/// since the context halts every queue and waits for its processor before it goes
/// ([`Ctx::stop_queues`]). `work` runs [`Queue::run`] with this queue as data; it is the
/// first field, so dropping the queue cancels it (waiting for a running processor) before
/// any other field goes. The queue holds one count of [`QUEUES`], given back on drop.
pub(super) struct Queue {
    work: WorkItem,
    ctx: *const Ctx,
    id: u32,
    ring: u64,
    entries: u64,
    doorbell: u64,
    fence: u64,
    high: bool,
    /// Set once, by DESTROY or teardown: the processor stops at its next access.
    stop: AtomicBool,
    /// Set by a suspend: the processor stops at its next access; resume queues it again.
    suspended: AtomicBool,
    /// Bumped to end an idle poll early (WAIT, resume).
    kick: AtomicU32,
    /// WAITs and the idle processor sleep here.
    waitq: WaitQueue,
    /// `uapi::QUEUE_*`; `QUEUE_ERROR` is final.
    state: AtomicU32,
    /// Jobs completed: the fence word's value, the kernel's own copy (WAIT reads this one).
    completed: AtomicU64,
    error: AtomicI32,
    fault_addr: AtomicU64,
    polls: AtomicU64,
    doorbells: AtomicU64,
}

// SAFETY: `ctx` is only read, and outlives every use (invariant); the rest is atomics, and
// the work item and wait queue, which are `Send + Sync`.
unsafe impl Send for Queue {}
// SAFETY: as above.
unsafe impl Sync for Queue {}

/// A context's queues.
pub(super) struct QueueTable {
    slots: [Option<Arc<Queue>>; uapi::MAX_QUEUES as usize],
    next_id: u32,
}

impl QueueTable {
    pub(super) const fn new() -> Self {
        QueueTable {
            slots: [const { None }; uapi::MAX_QUEUES as usize],
            next_id: 1,
        }
    }

    fn find(&self, id: u32) -> Option<&Arc<Queue>> {
        self.slots.iter().flatten().find(|q| q.id == id)
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        // The processor of a queue dropped without a halt (a failed CREATE never queued it)
        // must not start now; `work`'s drop waits for a running one.
        self.stop.store(true, Ordering::Relaxed);
        QUEUES.fetch_sub(1, Ordering::Relaxed);
    }
}

fn now_ns() -> u64 {
    // SAFETY: no preconditions.
    unsafe { ffi::svm_now_ns() }
}

fn valid_word(a: u64, task_size: u64) -> bool {
    a & 7 == 0 && a.checked_add(8).is_some_and(|e| e <= task_size)
}

impl Queue {
    pub(super) fn halted(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.suspended.load(Ordering::Relaxed)
    }

    fn ctx(&self) -> &Ctx {
        // SAFETY: the context outlives the queue's processor and every ioctl (invariant).
        unsafe { &*self.ctx }
    }

    fn trace(&self, state: u32) {
        // SAFETY: plain tracepoint call; `ctx` is only printed (hashed).
        unsafe {
            ffi::svm_trace_queue(
                self.ctx.cast(),
                self.id,
                state,
                self.error.load(Ordering::Relaxed),
                self.fault_addr.load(Ordering::Relaxed),
                self.completed.load(Ordering::Relaxed),
            )
        }
    }

    /// Ends an idle poll early.
    fn kick(&self) {
        self.kick.fetch_add(1, Ordering::Release);
        self.waitq.wake();
    }

    /// Stops the processor for good and waits for it. From an ioctl or teardown, never from
    /// the processor.
    fn halt(&self) {
        self.stop.store(true, Ordering::Release);
        self.waitq.wake();
        // A processor waiting for a device fault sleeps on the context's queue.
        self.ctx().waitq.wake();
        self.work.cancel_sync();
    }

    /// The error state: the processor stops; WAIT reports `e` at `addr`.
    fn fail(&self, e: Errno, addr: u64) {
        self.error.store(-e.0, Ordering::Relaxed);
        self.fault_addr.store(addr, Ordering::Relaxed);
        self.state.store(uapi::QUEUE_ERROR, Ordering::Release);
        self.trace(uapi::QUEUE_ERROR);
        self.waitq.wake();
    }

    /// Suspends the queue (an `ERROR` stays so); the processor stops at its next access.
    fn suspend(&self) {
        self.suspended.store(true, Ordering::Release);
        if self
            .state
            .compare_exchange(
                uapi::QUEUE_ACTIVE,
                uapi::QUEUE_SUSPENDED,
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_ok()
        {
            self.trace(uapi::QUEUE_SUSPENDED);
        }
        self.waitq.wake();
        self.ctx().waitq.wake();
    }

    /// One device read of the u64 at `va`.
    fn load(&self, b: &Binding, va: u64) -> Result<u64, JobErr> {
        self.ctx().access(b, Exec::Queue(self), &[(va, Access::Read)], |p| {
            // SAFETY: in the mapped page, 8-byte aligned (checked at CREATE, or an entry's).
            unsafe { AtomicU64::from_ptr(p[0].cast()) }.load(Ordering::Acquire)
        })
    }

    /// One device write of the u64 at `va`.
    fn store(&self, b: &Binding, va: u64, v: u64) -> Result<(), JobErr> {
        self.ctx().access(b, Exec::Queue(self), &[(va, Access::Write)], |p| {
            // SAFETY: as in `load`.
            unsafe { AtomicU64::from_ptr(p[0].cast()) }.store(v, Ordering::Release)
        })
    }

    /// Reads ring entry `slot`'s op, word by word (the process may be writing it).
    fn read_op(&self, b: &Binding, slot: u64) -> Result<uapi::Op, JobErr> {
        let w = self
            .ctx()
            .access(b, Exec::Queue(self), &[(slot, Access::Read)], |p| {
                let mut w = [0u64; 6];
                for (k, x) in w.iter_mut().enumerate() {
                    // SAFETY: the entry is 64-byte aligned, so all of it is in the page.
                    *x = unsafe { AtomicU64::from_ptr(p[0].add(k * 8).cast()) }
                        .load(Ordering::Relaxed);
                }
                w
            })?;
        let b0 = w[0].to_ne_bytes();
        Ok(uapi::Op {
            kind: u32::from_ne_bytes([b0[0], b0[1], b0[2], b0[3]]),
            flags: u32::from_ne_bytes([b0[4], b0[5], b0[6], b0[7]]),
            src: w[1],
            dst: w[2],
            len: w[3],
            value: w[4],
            result: w[5],
        })
    }

    /// The command processor (the work item's function): polls the doorbell and runs the
    /// jobs until halted, the device goes, or the queue fails.
    fn run(&self) {
        let c = self.ctx();
        let Some(b) = c.bound() else {
            return;
        };
        if self.state.load(Ordering::Acquire) != uapi::QUEUE_ACTIVE {
            return;
        }
        let task_size = b.engine().config().task_size;
        let mut idle_ns = POLL_MIN_NS;
        let mut last_work = now_ns();
        loop {
            if self.halted() || c.gone.load(Ordering::Relaxed) {
                return;
            }
            resched();
            let kick = self.kick.load(Ordering::Acquire);
            let r = self.load(b, self.doorbell).and_then(|db| {
                self.polls.fetch_add(1, Ordering::Relaxed);
                let done = self.completed.load(Ordering::Relaxed);
                let pending = db.wrapping_sub(done);
                if pending > self.entries {
                    return Err(JobErr::Fault(EOVERFLOW, self.doorbell));
                }
                if pending > 0 {
                    self.doorbells.fetch_add(1, Ordering::Relaxed);
                    self.burst(b, done, pending.min(BURST), task_size)?;
                }
                Ok(pending)
            });
            match r {
                // Just after work: poll on without sleeping for a while, as a device's
                // command processor spins on its doorbell before it idles.
                Ok(0) if now_ns().saturating_sub(last_work) < POLL_SPIN_NS => {}
                Ok(0) => {
                    let woken = || {
                        self.kick.load(Ordering::Acquire) != kick
                            || self.halted()
                            || c.gone.load(Ordering::Relaxed)
                    };
                    // ETIME is the poll's tick.
                    let _ = self.waitq.wait_until(idle_ns, false, &woken);
                    idle_ns = if woken() {
                        POLL_MIN_NS
                    } else {
                        (idle_ns * 2).min(POLL_MAX_NS)
                    };
                }
                Ok(_) => {
                    idle_ns = POLL_MIN_NS;
                    last_work = now_ns();
                }
                // The address space is gone (exit): suspend, as a device would on losing its
                // context; teardown follows with the file's release.
                Err(JobErr::Fault(Errno::ESRCH, _)) => return self.suspend(),
                Err(JobErr::Fault(e, va)) => return self.fail(e, va),
                // Halted or unplugged: whoever did it set the state.
                Err(JobErr::Intr) | Err(JobErr::Gone) => return,
            }
        }
    }

    /// Runs `n` jobs from job `done` on.
    fn burst(&self, b: &Binding, done: u64, n: u64, task_size: u64) -> Result<(), JobErr> {
        let c = self.ctx();
        for i in 0..n {
            let job = done + i;
            // Within the ring (checked at CREATE): `job & (entries - 1)` < entries.
            let slot = self.ring + (job & (self.entries - 1)) * ENTRY;
            let op = self.read_op(b, slot)?;
            Ctx::check_op(&op, task_size).map_err(|e| JobErr::Fault(e, slot))?;
            let r = c.run_op(b, Exec::Queue(self), &op)?;
            if op.kind == uapi::OP_ADD || op.kind == uapi::OP_READ {
                self.store(b, slot + uapi::OP_RESULT_OFFSET as u64, r)?;
            }
            // The fence word first, then the kernel's count: a WAIT that returns has the
            // fence written.
            self.store(b, self.fence, job + 1)?;
            self.completed.store(job + 1, Ordering::Release);
            self.waitq.wake();
        }
        c.queue_jobs.fetch_add(n, Ordering::Relaxed);
        // SAFETY: plain tracepoint call.
        unsafe { ffi::svm_trace_queue_run(self.ctx.cast(), self.id, n, done + n) };
        Ok(())
    }
}

impl Ctx {
    fn find_queue(&self, id: u32) -> Option<Arc<Queue>> {
        self.queues.lock().find(id).cloned()
    }

    pub(super) fn create_queue(&self, a: &mut uapi::CreateQueue) -> Result<(), Errno> {
        let b = self.bound_here()?;
        let ts = b.engine().config().task_size;
        let n = a.ring_entries;
        let ring_ok = a.ring & (ENTRY - 1) == 0
            && (n as u64)
                .checked_mul(ENTRY)
                .and_then(|l| a.ring.checked_add(l))
                .is_some_and(|e| e <= ts);
        if a.flags != 0
            || a.priority > uapi::QUEUE_PRIORITY_HIGH
            || n == 0
            || n > uapi::MAX_RING
            || !n.is_power_of_two()
            || !ring_ok
            || !valid_word(a.doorbell, ts)
            || !valid_word(a.fence, ts)
        {
            return Err(Errno::EINVAL);
        }
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
        let mut u = match UniqueArc::<Queue>::new_uninit(GFP) {
            Ok(u) => u,
            Err(_) => {
                QUEUES.fetch_sub(1, Ordering::Relaxed);
                return Err(Errno::ENOMEM);
            }
        };
        let p = u.as_mut_ptr();
        // SAFETY: the queue outlives its work item (its first field; see `Queue`).
        let work = unsafe { WorkItem::new_queue(svm_rs_queue_work, p.cast(), high) };
        let (work, waitq) = match (work, WaitQueue::new()) {
            (Ok(w), Ok(q)) => (w, q),
            _ => {
                QUEUES.fetch_sub(1, Ordering::Relaxed);
                return Err(Errno::ENOMEM);
            }
        };
        let mut t = self.queues.lock();
        let Some(slot) = t.slots.iter().position(Option::is_none) else {
            drop(t);
            QUEUES.fetch_sub(1, Ordering::Relaxed);
            return Err(Errno::ENOSPC);
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
                ring: a.ring,
                entries: n as u64,
                doorbell: a.doorbell,
                fence: a.fence,
                high,
                stop: AtomicBool::new(false),
                suspended: AtomicBool::new(false),
                kick: AtomicU32::new(0),
                waitq,
                state: AtomicU32::new(uapi::QUEUE_ACTIVE),
                completed: AtomicU64::new(0),
                error: AtomicI32::new(0),
                fault_addr: AtomicU64::new(0),
                polls: AtomicU64::new(0),
                doorbells: AtomicU64::new(0),
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
            q.halt();
            q.trace(TRACE_DESTROYED);
        }
        Ok(())
    }

    pub(super) fn wait(&self, a: &mut uapi::Wait) -> Result<(), Errno> {
        self.bound_here()?;
        if a.flags != 0 {
            return Err(Errno::EINVAL);
        }
        let q = self.find_queue(a.queue_id).ok_or(Errno::ENOENT)?;
        q.kick();
        let v = a.value;
        let done = || q.completed.load(Ordering::Acquire) >= v;
        let over = || q.state.load(Ordering::Acquire) == uapi::QUEUE_ERROR || q.stop.load(Ordering::Acquire);
        let r = q.waitq.wait_until(a.timeout_ns, true, &|| done() || over());
        a.completed = q.completed.load(Ordering::Acquire);
        a.state = q.state.load(Ordering::Acquire);
        a.error = q.error.load(Ordering::Relaxed);
        a.fault_addr = q.fault_addr.load(Ordering::Relaxed);
        if q.stop.load(Ordering::Acquire) {
            return Err(Errno::ENOENT);
        }
        if done() {
            return Ok(());
        }
        if a.state == uapi::QUEUE_ERROR {
            return Err(EIO);
        }
        r.and(Err(ETIME))
    }

    /// Suspends every queue of the context and waits until no processor runs: then the
    /// device touches none of their memory until [`Ctx::resume_queues`].
    pub(super) fn suspend_queues(&self) {
        let _g = self.qctl.lock();
        let mut held: [Option<Arc<Queue>>; uapi::MAX_QUEUES as usize] = [const { None }; 16];
        {
            let t = self.queues.lock();
            for (h, q) in held.iter_mut().zip(t.slots.iter()) {
                if let Some(q) = q {
                    q.suspend();
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
            if !q.suspended.swap(false, Ordering::AcqRel) {
                continue;
            }
            if q
                .state
                .compare_exchange(
                    uapi::QUEUE_SUSPENDED,
                    uapi::QUEUE_ACTIVE,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                q.trace(uapi::QUEUE_ACTIVE);
                // Under the table lock: a DESTROY that takes it out later cancels this.
                q.work.queue();
            }
        }
    }

    /// Teardown: suspends every queue, waiting for the processors, then frees them. No
    /// ioctl runs any more.
    pub(super) fn stop_queues(&self) {
        self.suspend_queues();
        let mut t = self.queues.lock();
        let mut held: [Option<Arc<Queue>>; uapi::MAX_QUEUES as usize] = [const { None }; 16];
        for (h, s) in held.iter_mut().zip(t.slots.iter_mut()) {
            *h = s.take();
        }
        drop(t);
        for q in held.iter().flatten() {
            q.halt();
            q.trace(TRACE_DESTROYED);
        }
    }

    /// debugfs `queues`: one line per queue.
    pub(super) fn show_queues(&self, w: &mut debugfs::Seq) -> core::fmt::Result {
        use core::fmt::Write;
        let t = self.queues.lock();
        for q in t.slots.iter().flatten() {
            let state = match q.state.load(Ordering::Relaxed) {
                uapi::QUEUE_ACTIVE => "active",
                uapi::QUEUE_ERROR => "error",
                _ => "suspended",
            };
            writeln!(
                w,
                "queue={} prio={} state={} completed={} error={} addr={:#x} ring={:#x} \
                 entries={} doorbell={:#x} fence={:#x} polls={} doorbells={}",
                q.id,
                if q.high { "high" } else { "normal" },
                state,
                q.completed.load(Ordering::Relaxed),
                q.error.load(Ordering::Relaxed),
                q.fault_addr.load(Ordering::Relaxed),
                q.ring,
                q.entries,
                q.doorbell,
                q.fence,
                q.polls.load(Ordering::Relaxed),
                q.doorbells.load(Ordering::Relaxed),
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
    let q = unsafe { &*data.cast::<Queue>() };
    // What the processor's faults allocate is charged to the bound mm's memory cgroup.
    let Some(b) = q.ctx().bound() else {
        return;
    };
    let _charge = b.engine().mm().charge_scope();
    q.run();
}
