// SPDX-License-Identifier: GPL-2.0
//! The context's fault worker: jobs queue device faults and sleep (killably); the worker
//! drains the queue in batches through `Engine::fault_batch`, answers every waiter and queues
//! GC.

use super::ops::Exec;
use super::*;

impl Ctx {
    pub(super) fn queue_work(&self) {
        self.work.queue()
    }

    pub(super) fn wake(&self) {
        self.waitq.wake()
    }

    /// Sleeps until `*p != old`; `Intr` on a fatal signal (an ioctl) or a halt (a queue's
    /// command processor, which takes no signals: a halt wakes the context's wait queue).
    pub(super) fn wait_ne(&self, x: Exec<'_>, p: &AtomicU32, old: u32) -> Result<(), JobErr> {
        match x {
            // SAFETY: `p` outlives the wait.
            Exec::Ioctl => match unsafe { self.waitq.wait_ne_killable(p.as_ptr(), old) } {
                0 => Ok(()),
                _ => Err(JobErr::Intr),
            },
            Exec::Queue(q) => {
                let ne = || p.load(Ordering::Acquire) != old;
                // No timeout: the worker answers every fault it dequeued.
                let _ = self.waitq.wait_until(u64::MAX, false, &|| ne() || q.interrupted());
                if ne() {
                    Ok(())
                } else {
                    Err(JobErr::Intr)
                }
            }
        }
    }

    // ---- BIND ---------------------------------------------------------------

    /// Raises a device fault and sleeps until the fault worker answered it, or until a fatal
    /// signal (`Intr`; the worker may still answer the waiter, which it co-owns).
    pub(super) fn device_fault(
        &self,
        x: Exec<'_>,
        va: u64,
        access: Access,
        atomic: bool,
    ) -> Result<(), JobErr> {
        self.device_faults.fetch_add(1, Ordering::Relaxed);
        let w = Arc::new(
            Waiter {
                done: AtomicU32::new(0),
                err: AtomicI32::new(0),
            },
            GFP,
        )
        .map_err(|_| JobErr::Fault(Errno::ENOMEM, va))?;
        loop {
            let gen = self.drained.load(Ordering::Acquire);
            // Made before the spinlock; dropped after it if the queue is full.
            let e = QEntry {
                va,
                access,
                atomic,
                w: w.clone(),
            };
            {
                let mut q = self.fq.lock();
                if q.q.len() < QDEPTH {
                    // Within capacity: never allocates.
                    q.q.push(e, GFP_ATOMIC)
                        .map_err(|_| JobErr::Fault(Errno::ENOMEM, va))?;
                    break;
                }
            }
            // Full: let the worker drain it, then try again.
            self.queue_work();
            self.wait_ne(x, &self.drained, gen)?;
        }
        self.queue_work();
        self.wait_ne(x, &w.done, 0)?;
        match w.err.load(Ordering::Acquire) {
            0 => Ok(()),
            e => Err(JobErr::Fault(Errno(e), va)),
        }
    }

    /// The fault worker (one work item per context, on the module's workqueue).
    pub(super) fn work(&self) {
        let Some(b) = self.bound() else {
            return;
        };
        // What the fault service allocates (ranges, notifiers, page-table pages) is charged
        // to the bound mm's memory cgroup, not to this kworker's.
        let _charge = b.engine().mm().charge_scope();
        let mut g = self.worker.lock();
        let ws = &mut *g;
        loop {
            // Jobs keep faulting while the worker runs: let others have the CPU between
            // batches (a workqueue worker is not preempted on a voluntary kernel).
            resched();
            // SAFETY: `DeviceFault` is `Copy`: nothing to drop.
            unsafe { ws.batch.set_len(0) };
            {
                let mut q = self.fq.lock();
                let n = q.q.len();
                // SAFETY: moves the `n` initialised entries out; the length is 0 first, so
                // none stays behind to be dropped twice.
                unsafe {
                    q.q.set_len(0);
                    let src = q.q.as_ptr();
                    for i in 0..n {
                        let e = core::ptr::read(src.add(i));
                        // Within capacity (all three hold QDEPTH and `ws`'s are empty):
                        // never allocate, never fail. Atomic faults are served on their own.
                        if !e.atomic {
                            let _ = ws.batch.push(DeviceFault::new(e.va, e.access), GFP_ATOMIC);
                        }
                        let _ = ws.waiters.push(e, GFP_ATOMIC);
                    }
                }
            }
            self.drained.fetch_add(1, Ordering::Release);
            self.wake();
            if ws.waiters.is_empty() {
                break;
            }
            // SAFETY: no preconditions (0 unless a test set the module parameter).
            unsafe { ffi::svm_fault_delay() };
            self.place_batch(b, ws);
            b.engine().fault_batch(&mut ws.scratch, &mut ws.batch);
            for w in ws.waiters.iter() {
                let page = w.va >> PAGE_SHIFT;
                // `fault_batch` sorted the batch by page; entries of one page share a result.
                let i = ws.batch.partition_point(|f| (f.va >> PAGE_SHIFT) < page);
                let res = if w.atomic {
                    b.engine().fault_atomic(&mut ws.scratch, w.va)
                } else {
                    match ws.batch.get(i) {
                        Some(f) if f.va >> PAGE_SHIFT == page => f.result.unwrap_or(Ok(())),
                        _ => Ok(()),
                    }
                };
                let err = match res {
                    Ok(()) => 0,
                    // A read merged into a write that the CPU forbids: the read itself may be
                    // fine. Let the job replay; it faults again, as a read, if it must.
                    Err(Errno::EPERM) if w.access == Access::Read => 0,
                    Err(e) => e.0,
                };
                w.w.err.store(err, Ordering::Relaxed);
                w.w.done.store(1, Ordering::Release);
            }
            self.wake();
            // Our references to the waiters, including those of jobs that were killed.
            clear_entries(&mut ws.waiters);
            self.fault_batches.fetch_add(1, Ordering::Relaxed);
            // A range GC passed over while this batch's faults were in flight is collected
            // now, on the GC work item, so no fault waits for a notifier removal.
            b.queue_gc();
        }
    }

    // ---- SUBMIT -----------------------------------------------------------------
}
