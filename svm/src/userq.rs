//! A user-mode queue: its command processor and its states, shared by the kernel driver
//! (`driver/device/queue.rs`, which supplies the device access path, the work item and the
//! wait queue) and the loom models (`tests/tests/loom.rs`, "user-mode queues"). See
//! `Documentation/kernel.rst`, "User-mode queues".
//!
//! The protocol with the process: job *i* lives in ring entry *i* mod `entries`; the process
//! stores the number of jobs written in the doorbell word, the device the number completed in
//! the fence word. For each job the processor reads the entry, runs it, writes its result,
//! then the fence word, and only then publishes its own count ([`UserQueue::completed`]) and
//! wakes the waiters: a WAIT that saw the count sees the fence written.
//!
//! Halting (DESTROY, teardown): the platform's access path checks
//! [`UserQueue::interrupted`] before every device access, and its waits for a fault's answer
//! watch it too, so a halt followed by a wake-up and a wait for the processor's work item
//! ends the processor within one access, abandoning the job it ran. A suspend is a job
//! boundary instead ([`UserQueue::halted`]): the processor finishes the job it runs, so that
//! a resume does not run it twice (an ADD would add twice).

use super::pgtable::Errno;
use super::sync::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};

/// `SVM_ACCEL_QUEUE_ACTIVE`: the processor runs (or will at the next doorbell).
pub const ACTIVE: u32 = 1;
/// `SVM_ACCEL_QUEUE_ERROR`: stopped on an error, for good.
pub const ERROR: u32 = 2;
/// `SVM_ACCEL_QUEUE_SUSPENDED`: stopped by the kernel until a resume.
pub const SUSPENDED: u32 = 3;

/// Bytes of a ring entry (`struct drm_svm_accel_qentry`: an op of six words, two user words):
/// 64-byte aligned entries never straddle a page.
pub const ENTRY: u64 = 64;
/// Most entries of a ring.
pub const MAX_ENTRIES: u32 = 4096;
/// Jobs run per doorbell read before the doorbell is read again.
pub const BURST: u64 = 64;
/// After work, the processor polls without sleeping for this long...
pub const POLL_SPIN_NS: u64 = 50_000;
/// ... then sleeps between polls, backing off from this...
pub const POLL_MIN_NS: u64 = 4_000;
/// ... to this.
pub const POLL_MAX_NS: u64 = 1_000_000;

const ESRCH: Errno = Errno::ESRCH;
const EOVERFLOW: Errno = Errno(75);

/// Why a device access did not complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QErr {
    /// A fault that could not be serviced (errno, address); `ESRCH`: the mm is gone.
    Fault(Errno, u64),
    /// The queue was halted, or the device unplugged, before or during the access.
    Halted,
}

/// What the processor needs from the platform: device accesses through its page table, the
/// queue's wait queue and a clock.
pub trait QueueDevice {
    /// Device read of the `u64` at `va` (may fault, and retries until served or halted).
    fn load(&self, va: u64) -> Result<u64, QErr>;
    /// Device write of the `u64` at `va`.
    fn store(&self, va: u64, v: u64) -> Result<(), QErr>;
    /// Device read of the six op words of the entry at `va` (one page).
    fn read_entry(&self, va: u64) -> Result<[u64; 6], QErr>;
    /// Checks and runs the job whose op words were read from the entry at `slot`: the result
    /// word to write back into the entry, for the jobs that have one (ADD and READ). An
    /// invalid op is `Fault(EINVAL, slot)`.
    fn run(&self, slot: u64, op: &[u64; 6]) -> Result<Option<u64>, QErr>;
    /// Wakes every waiter of the queue (WAITs and the idle processor).
    fn wake(&self);
    /// Sleeps until `cond()` holds or `ns` passed (a poll's tick).
    fn idle(&self, ns: u64, cond: &dyn Fn() -> bool);
    fn now_ns(&self) -> u64;
    /// A scheduling point.
    fn resched(&self) {}
    /// The device was unplugged.
    fn gone(&self) -> bool {
        false
    }
    /// A state change (tracing): a `state` of this module, or created/destroyed.
    fn trace_state(&self, _q: &UserQueue, _state: u32) {}
    /// `jobs` jobs ran from one doorbell read (tracing).
    fn trace_run(&self, _q: &UserQueue, _jobs: u64) {}
}

/// A queue's shared state.
///
/// # Invariants
/// `ring` is `ENTRY`-aligned and `entries` a power of two (checked by [`UserQueue::new`]);
/// `state` goes `ACTIVE` <-> `SUSPENDED`, and to `ERROR` for good; `completed` only grows, and
/// the fence word was written with a value at least as large before it was published.
pub struct UserQueue {
    pub ring: u64,
    pub entries: u64,
    pub doorbell: u64,
    pub fence: u64,
    stop: AtomicBool,
    suspended: AtomicBool,
    kick: AtomicU32,
    state: AtomicU32,
    completed: AtomicU64,
    error: AtomicI32,
    fault_addr: AtomicU64,
    polls: AtomicU64,
    doorbells: AtomicU64,
}

/// What a WAIT reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Status {
    pub completed: u64,
    pub state: u32,
    /// Negative errno in the error state, else 0.
    pub error: i32,
    pub fault_addr: u64,
}

fn word_ok(a: u64, task_size: u64) -> bool {
    a & 7 == 0 && a.checked_add(8).is_some_and(|e| e <= task_size)
}

impl UserQueue {
    /// A queue at job 0, after CREATE_QUEUE's checks: `EINVAL` for a misaligned, wrapping or
    /// kernel (at or above `task_size`) ring, doorbell or fence, or `entries` not a power of
    /// two in `1..=MAX_ENTRIES`.
    pub fn new(
        ring: u64,
        entries: u32,
        doorbell: u64,
        fence: u64,
        task_size: u64,
    ) -> Result<Self, Errno> {
        let ring_ok = ring & (ENTRY - 1) == 0
            && (entries as u64)
                .checked_mul(ENTRY)
                .and_then(|l| ring.checked_add(l))
                .is_some_and(|e| e <= task_size);
        if entries == 0
            || entries > MAX_ENTRIES
            || !entries.is_power_of_two()
            || !ring_ok
            || !word_ok(doorbell, task_size)
            || !word_ok(fence, task_size)
        {
            return Err(Errno::EINVAL);
        }
        Ok(UserQueue {
            ring,
            entries: entries as u64,
            doorbell,
            fence,
            stop: AtomicBool::new(false),
            suspended: AtomicBool::new(false),
            kick: AtomicU32::new(0),
            state: AtomicU32::new(ACTIVE),
            completed: AtomicU64::new(0),
            error: AtomicI32::new(0),
            fault_addr: AtomicU64::new(0),
            polls: AtomicU64::new(0),
            doorbells: AtomicU64::new(0),
        })
    }

    /// Told to stop (halt or suspend): the processor leaves before its next job or poll.
    pub fn halted(&self) -> bool {
        self.stop.load(Ordering::Acquire) || self.suspended.load(Ordering::Acquire)
    }

    /// Halted for good: the access path abandons the job at its next access.
    pub fn interrupted(&self) -> bool {
        #[cfg(feature = "teeth-queue-suspend-mid-job")]
        return self.halted();
        #[cfg(not(feature = "teeth-queue-suspend-mid-job"))]
        self.stop.load(Ordering::Acquire)
    }

    /// Destroyed (or being): WAITs end with `ENOENT`.
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    pub fn state(&self) -> u32 {
        self.state.load(Ordering::Acquire)
    }

    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::Acquire)
    }

    pub fn status(&self) -> Status {
        Status {
            completed: self.completed(),
            state: self.state(),
            error: self.error.load(Ordering::Relaxed),
            fault_addr: self.fault_addr.load(Ordering::Relaxed),
        }
    }

    /// Doorbell reads, and those that found jobs.
    pub fn polls(&self) -> (u64, u64) {
        (
            self.polls.load(Ordering::Relaxed),
            self.doorbells.load(Ordering::Relaxed),
        )
    }

    /// Halts the queue for good. The caller then wakes the processor's waits and waits for
    /// its work item.
    pub fn halt(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// Ends an idle poll early (WAIT, resume); the caller wakes the queue.
    pub fn kick(&self) {
        self.kick.fetch_add(1, Ordering::Release);
    }

    /// Suspends the queue (an `ERROR` stays so): the processor leaves when the job it runs is
    /// done. True if it was `ACTIVE`. The caller wakes the processor's idle wait.
    pub fn suspend(&self) -> bool {
        self.suspended.store(true, Ordering::Release);
        self.state
            .compare_exchange(ACTIVE, SUSPENDED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Resumes a suspended queue: true if the caller must start the processor again.
    pub fn resume(&self) -> bool {
        if !self.suspended.swap(false, Ordering::AcqRel) {
            return false;
        }
        let ok = self
            .state
            .compare_exchange(SUSPENDED, ACTIVE, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if ok {
            self.kick();
        }
        ok
    }

    /// WAIT's condition: `value` jobs completed, or the queue failed or was destroyed.
    pub fn wait_over(&self, value: u64) -> bool {
        self.completed() >= value || self.state() == ERROR || self.stopped()
    }

    /// WAIT's result once its sleep ended with `slept` (`ETIME`/`EINTR`, or `Ok`).
    pub fn wait_result(&self, value: u64, slept: Result<(), Errno>) -> Result<(), Errno> {
        if self.stopped() {
            return Err(Errno::ENOENT);
        }
        if self.completed() >= value {
            return Ok(());
        }
        if self.state() == ERROR {
            return Err(Errno(5)); // EIO
        }
        slept.and(Err(Errno(62))) // ETIME
    }

    fn fail<D: QueueDevice>(&self, dev: &D, e: Errno, addr: u64) {
        self.error.store(-e.0, Ordering::Relaxed);
        self.fault_addr.store(addr, Ordering::Relaxed);
        self.state.store(ERROR, Ordering::Release);
        dev.trace_state(self, ERROR);
        dev.wake();
    }

    /// The command processor: polls the doorbell and runs the jobs until halted, the device
    /// goes, or the queue fails (then it is in `ERROR`) or its mm is gone (then `SUSPENDED`).
    pub fn run<D: QueueDevice>(&self, dev: &D) {
        if self.state() != ACTIVE {
            return;
        }
        let mut idle_ns = POLL_MIN_NS;
        let mut last_work = dev.now_ns();
        loop {
            if self.halted() || dev.gone() {
                return;
            }
            dev.resched();
            let kick = self.kick.load(Ordering::Acquire);
            let r = dev.load(self.doorbell).and_then(|db| {
                self.polls.fetch_add(1, Ordering::Relaxed);
                let done = self.completed.load(Ordering::Relaxed);
                let pending = db.wrapping_sub(done);
                if pending > self.entries {
                    return Err(QErr::Fault(EOVERFLOW, self.doorbell));
                }
                if pending > 0 {
                    self.doorbells.fetch_add(1, Ordering::Relaxed);
                    self.burst(dev, done, pending.min(BURST))?;
                }
                Ok(pending)
            });
            match r {
                // Just after work: poll on without sleeping for a while, as a device's command
                // processor spins on its doorbell before it idles.
                Ok(0) if dev.now_ns().saturating_sub(last_work) < POLL_SPIN_NS => {}
                Ok(0) => {
                    let woken =
                        || self.kick.load(Ordering::Acquire) != kick || self.halted() || dev.gone();
                    dev.idle(idle_ns, &woken);
                    idle_ns = if woken() {
                        POLL_MIN_NS
                    } else {
                        (idle_ns * 2).min(POLL_MAX_NS)
                    };
                }
                Ok(_) => {
                    idle_ns = POLL_MIN_NS;
                    last_work = dev.now_ns();
                }
                // The address space is gone (the process exited while the queue ran):
                // suspend, as a device does on losing its context.
                Err(QErr::Fault(ESRCH, _)) => {
                    if self.suspend() {
                        dev.trace_state(self, SUSPENDED);
                    }
                    dev.wake();
                    return;
                }
                Err(QErr::Fault(e, va)) => return self.fail(dev, e, va),
                // Halted or unplugged: whoever did it set the state.
                Err(QErr::Halted) => return,
            }
        }
    }

    /// Runs `n` jobs from job `done` on.
    fn burst<D: QueueDevice>(&self, dev: &D, done: u64, n: u64) -> Result<(), QErr> {
        let mut ran = 0;
        let r = (|| {
            for i in 0..n {
                // A suspend takes effect between jobs.
                if self.halted() {
                    return Err(QErr::Halted);
                }
                let job = done + i;
                // In the ring: `job & (entries - 1)` < entries (a power of two, invariant).
                let slot = self.ring + (job & (self.entries - 1)) * ENTRY;
                let op = dev.read_entry(slot)?;
                if let Some(r) = dev.run(slot, &op)? {
                    dev.store(slot + 40, r)?;
                }
                #[cfg(feature = "teeth-queue-publish-before-fence")]
                self.completed.store(job + 1, Ordering::Release);
                // The fence word first, then the count WAIT reads: a WAIT that returns has
                // the fence written.
                dev.store(self.fence, job + 1)?;
                self.completed.store(job + 1, Ordering::Release);
                #[cfg(not(feature = "teeth-queue-no-completion-wake"))]
                dev.wake();
                ran += 1;
            }
            Ok(())
        })();
        if ran > 0 {
            dev.trace_run(self, ran);
        }
        r
    }
}
