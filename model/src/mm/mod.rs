//! A simulated process address space (`struct mm_struct`) and the machine it lives on.
//!
//! [`MmHandle`] is the model's `mm_struct` reference: the engine's `svm::platform::Mm`, and the
//! test's handle for driving the process (mmap, munmap, mprotect, madvise, fork, swap,
//! migration, CPU loads and stores, exit, the OOM reaper). Every change of a present CPU PTE
//! follows the kernel's order: `mmu_notifier_invalidate_range_start()` (callbacks run with no
//! model lock held), the PTE change under the machine lock, then
//! `mmu_notifier_invalidate_range_end()`. Raising permissions alone needs no notifier.
//!
//! The sub-modules hold: [`state`] the data structures, `fault` the page-fault handler and CPU
//! accesses, `ops` the mapping system calls and fork, `reclaim` swap-out, migration, THP split,
//! exit and the OOM reaper, `rwsem` the `mmap_lock`.

mod exclusive;
mod fault;
pub(crate) mod migrate;
mod ops;
mod reclaim;
mod rwsem;
pub(crate) mod state;

pub use ops::{MapFlags, Prot};
pub use reclaim::{OomReport, SwapOutcome};
pub use state::{is_zero_pfn, HPAGE_SIZE, HUGE_ZERO_PFN, PAGE_SIZE, POISON, ZERO_PFN};

use crate::lockdep;
use crate::notifier::{Interval, InvRange, Notifier, NotifierStats, TraceEntry};
use crate::sync::atomic::{AtomicUsize, Ordering as SOrdering};
use crate::sync::{Condvar, Mutex};
use crate::violations::Violations;
use pgtable::Errno;
use rwsem::Rwsem;
use state::{DetMap, MachineState, MmId, MmState};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use svm::platform::{Event, HmmRequest, InvalidateFn, Vma as PVma};

/// The machine: frames, swap, and the page tables of every mm forked from one root.
pub(crate) struct Machine {
    pub st: Mutex<MachineState>,
    /// Signalled when a migration ends (`migration_entry_wait()` waiters).
    pub migr_cv: Condvar,
    /// `dev_pagemap_ops.migrate_to_ram` of each device memory, by owner.
    pub devmem_ops: std::sync::Mutex<DetMap<u64, migrate::MigrateToRam>>,
    /// The mms on this machine, for reverse-map walks that must notify another mm.
    mms: std::sync::Mutex<DetMap<MmId, Weak<MmShared>>>,
    next_id: AtomicU64,
}

impl Machine {
    fn new() -> Arc<Self> {
        Arc::new(Machine {
            st: Mutex::new(MachineState::new()),
            migr_cv: Condvar::new(),
            devmem_ops: std::sync::Mutex::new(DetMap::default()),
            mms: std::sync::Mutex::new(DetMap::default()),
            next_id: AtomicU64::new(1),
        })
    }

    fn mm(&self, id: MmId) -> Option<Arc<MmShared>> {
        self.mms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)?
            .upgrade()
    }
}

/// Options of a simulated mm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmConfig {
    /// `/sys/kernel/mm/transparent_hugepage/use_zero_page` (kernel default 1): a read fault on
    /// an empty THP-eligible block maps the huge zero folio instead of allocating.
    pub huge_zero_page: bool,
    /// `TASK_SIZE`.
    pub task_size: u64,
    /// Where `mmap` starts looking for free space.
    pub mmap_base: u64,
    /// Sleep this many µs right after `mmu_interval_notifier_insert()` and right before
    /// `mmu_interval_notifier_remove()` (0: never; ignored under loom). The kernel may sleep
    /// or be preempted at both points, and defers a remove past a running invalidation, so a
    /// notifier whose range is not (or no longer) published lives on while invalidations run;
    /// the storms widen those windows with this (issue 9: the model found range death and the
    /// creation race only once they were wide). A world built with it also yields in every
    /// page-table walk step (`TableMem::set_walk_jitter`), so a walk that follows a link
    /// while another thread frees the table behind it is caught.
    pub notifier_jitter_us: u32,
}

impl Default for MmConfig {
    fn default() -> Self {
        MmConfig {
            huge_zero_page: true,
            task_size: 1 << 47,
            mmap_base: 0x1000_0000,
            notifier_jitter_us: 0,
        }
    }
}

/// The shared part of an mm.
pub(crate) struct MmShared {
    pub id: MmId,
    pub machine: Arc<Machine>,
    pub mmap_lock: Rwsem,
    pub notifier: Arc<Notifier>,
    /// `mm_users`.
    users: AtomicUsize,
    /// The process called `exit()` (its own `mm_users` reference is gone).
    exited: AtomicBool,
    exit_done: Mutex<bool>,
    exit_cv: Condvar,
    pub violations: Violations,
    pub cfg: MmConfig,
    /// `hmm_range_fault()` calls, for tests of what a fault costs (not part of any protocol).
    hmm_calls: AtomicU64,
}

/// A handle to a simulated mm (cheap to clone; all clones are the same mm).
#[derive(Clone)]
pub struct MmHandle(pub(crate) Arc<MmShared>);

impl core::fmt::Debug for MmHandle {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MmHandle").field("id", &self.0.id).finish()
    }
}

/// `mmap_read_lock()` held (no `mmget`: the process's own reference keeps the mm alive).
pub(crate) struct MmapRead<'a> {
    mm: &'a MmShared,
}

impl Drop for MmapRead<'_> {
    fn drop(&mut self) {
        self.mm.mmap_lock.read_unlock();
        lockdep::mmap_release(false);
    }
}

/// `mmap_write_lock()` held.
pub(crate) struct MmapWrite<'a> {
    mm: &'a MmShared,
}

impl<'a> MmapWrite<'a> {
    /// `mmap_write_downgrade()`.
    pub fn downgrade(self) -> MmapRead<'a> {
        let mm = self.mm;
        core::mem::forget(self);
        mm.mmap_lock.downgrade();
        lockdep::mmap_release(true);
        lockdep::mmap_acquired(false);
        MmapRead { mm }
    }
}

impl Drop for MmapWrite<'_> {
    fn drop(&mut self) {
        self.mm.mmap_lock.write_unlock();
        lockdep::mmap_release(true);
    }
}

/// An invalidation in progress: `invalidate_range_end()` when dropped.
pub(crate) struct Inv<'a> {
    notifier: &'a Notifier,
}

impl Drop for Inv<'_> {
    fn drop(&mut self) {
        self.notifier.invalidate_range_end();
    }
}

/// The engine's read guard: `mmget_not_zero()` + `mmap_read_lock()`.
pub struct ReadGuard<'a> {
    lock: Option<MmapRead<'a>>,
    mm: &'a Arc<MmShared>,
}

impl ReadGuard<'_> {
    pub(crate) fn mm(&self) -> &MmShared {
        self.mm
    }
}

impl Drop for ReadGuard<'_> {
    fn drop(&mut self) {
        drop(self.lock.take());
        // A worker dropping the last reference must not run exit_mmap() in its own context.
        self.mm.mmput(true);
    }
}

impl MmShared {
    pub fn mmap_read(&self, what: &str) -> MmapRead<'_> {
        lockdep::mmap_acquire(what);
        self.mmap_lock.read();
        lockdep::mmap_acquired(false);
        MmapRead { mm: self }
    }

    pub fn mmap_write(&self, what: &str) -> MmapWrite<'_> {
        lockdep::mmap_acquire(what);
        self.mmap_lock.write();
        lockdep::mmap_acquired(true);
        MmapWrite { mm: self }
    }

    /// `mmap_read_trylock()`.
    pub fn mmap_try_read(&self, what: &str) -> Option<MmapRead<'_>> {
        lockdep::mmap_acquire(what);
        if !self.mmap_lock.try_read() {
            return None;
        }
        lockdep::mmap_acquired(false);
        Some(MmapRead { mm: self })
    }

    /// A blockable invalidation of `[start, end)`: callbacks have run when this returns.
    pub fn inv(&self, start: u64, end: u64, event: Event) -> Inv<'_> {
        self.inv_owner(start, end, event, 0)
    }

    /// A blockable invalidation carrying `owner` (`mmu_notifier_range_init_owner()`).
    pub fn inv_owner(&self, start: u64, end: u64, event: Event, owner: u64) -> Inv<'_> {
        let r = InvRange {
            start,
            end,
            event,
            blockable: true,
            owner,
        };
        let _ = self.notifier.invalidate_range_start(&r);
        Inv {
            notifier: &self.notifier,
        }
    }

    /// `mmu_notifier_invalidate_range_start_nonblock()`: `None` if a callback refused.
    pub fn inv_nonblock(&self, start: u64, end: u64, event: Event) -> Option<Inv<'_>> {
        let r = InvRange {
            start,
            end,
            event,
            blockable: false,
            owner: 0,
        };
        self.notifier.invalidate_range_start(&r).ok()?;
        Some(Inv {
            notifier: &self.notifier,
        })
    }

    /// `mmget_not_zero()`.
    fn mmget_not_zero(&self) -> bool {
        let mut n = self.users.load(SOrdering::Acquire);
        loop {
            if n == 0 {
                return false;
            }
            match self
                .users
                .compare_exchange(n, n + 1, SOrdering::AcqRel, SOrdering::Acquire)
            {
                Ok(_) => return true,
                Err(m) => n = m,
            }
        }
    }

    /// `mmput()` / `mmput_async()`: the last reference runs `exit_mmap()`.
    fn mmput(self: &Arc<Self>, is_async: bool) {
        if self.users.fetch_sub(1, SOrdering::AcqRel) != 1 {
            return;
        }
        if is_async {
            let mm = self.clone();
            let _detached = crate::sync::thread::spawn(move || mm.exit_mmap());
        } else {
            self.exit_mmap();
        }
    }

    /// Whether the process exited (its operations fail with `ESRCH`).
    pub fn gone(&self) -> bool {
        self.exited.load(Ordering::Acquire)
    }

    /// The mm of `id` on the same machine (for reverse-map walks).
    pub fn other(&self, id: MmId) -> Option<Arc<MmShared>> {
        if id == self.id {
            return None;
        }
        self.machine.mm(id)
    }
}

impl MmHandle {
    /// A new empty mm on its own machine, reporting to its own violation log.
    pub fn new() -> Self {
        Self::with_config(MmConfig::default(), Violations::new())
    }

    /// A new empty mm on its own machine.
    pub fn with_config(cfg: MmConfig, violations: Violations) -> Self {
        Self::on_machine(Machine::new(), cfg, violations)
    }

    pub(crate) fn on_machine(machine: Arc<Machine>, cfg: MmConfig, violations: Violations) -> Self {
        let id = machine.next_id.fetch_add(1, Ordering::Relaxed);
        machine.st.lock().mms.insert(id, MmState::default());
        let shared = Arc::new(MmShared {
            id,
            machine: machine.clone(),
            mmap_lock: Rwsem::default(),
            notifier: Arc::new(Notifier::new(violations.clone())),
            users: AtomicUsize::new(1),
            exited: AtomicBool::new(false),
            hmm_calls: AtomicU64::new(0),
            exit_done: Mutex::new(false),
            exit_cv: Condvar::new(),
            violations,
            cfg,
        });
        machine
            .mms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Arc::downgrade(&shared));
        MmHandle(shared)
    }

    /// The violation log this mm (and its device, in a `World`) reports to.
    pub fn violations(&self) -> &Violations {
        &self.0.violations
    }

    /// The configuration.
    pub fn config(&self) -> MmConfig {
        self.0.cfg
    }

    /// Whether both handles are the same mm.
    pub fn same(a: &Self, b: &Self) -> bool {
        Arc::ptr_eq(&a.0, &b.0)
    }

    /// `mmu_notifier_register(NULL, mm)`: what a driver does when a context binds to the mm.
    /// Takes `mmap_write_lock`. Done lazily by the first interval insert otherwise.
    pub fn mmu_notifier_register(&self) -> Result<(), Errno> {
        let _s = self.0.violations.scope();
        if self.0.notifier.registered() {
            return Ok(());
        }
        if !self.0.mmget_not_zero() {
            return Err(Errno::ESRCH);
        }
        {
            let _w = self.0.mmap_write("mmu_notifier_register()");
            self.0.notifier.set_registered();
        }
        self.0.mmput(true);
        Ok(())
    }

    /// How many times `hmm_range_fault()` was called on this mm.
    pub fn hmm_calls(&self) -> u64 {
        self.0.hmm_calls.load(Ordering::Relaxed)
    }

    /// Notifier counters.
    pub fn notifier_stats(&self) -> NotifierStats {
        self.0.notifier.stats()
    }

    /// The mm-wide `invalidate_seq` (odd while an invalidation that hit an interval runs).
    pub fn notifier_seq(&self) -> u64 {
        self.0.notifier.mm_seq()
    }

    /// Starts (or stops) recording every `invalidate_range_start` of this mm.
    pub fn set_notifier_trace(&self, on: bool) {
        self.0.notifier.set_trace(on)
    }

    /// The recorded invalidations since the last call.
    pub fn take_notifier_trace(&self) -> Vec<TraceEntry> {
        self.0.notifier.take_trace()
    }

    /// Runs a blockable invalidation of `[start, end)` with `event` and no PTE change (tests:
    /// drive callbacks directly, e.g. to race them with a fault).
    pub fn invalidate(&self, start: u64, end: u64, event: Event) {
        let _s = self.0.violations.scope();
        drop(self.0.inv(start, end, event));
    }

    /// Like [`MmHandle::invalidate`] but holds the invalidation open while `f` runs, so tests
    /// can observe the odd seq, `read_begin` waiting, and deferred inserts.
    pub fn with_invalidation<R>(
        &self,
        start: u64,
        end: u64,
        event: Event,
        f: impl FnOnce() -> R,
    ) -> R {
        let _s = self.0.violations.scope();
        let g = self.0.inv(start, end, event);
        let r = f();
        drop(g);
        r
    }

    /// Fault injection for detector self-tests: while on, invalidations run (seq, deferral)
    /// but call no callback, as if the driver had forgotten to register one. The device's
    /// checks must then report the stale accesses.
    pub fn inject_skip_callbacks(&self, on: bool) {
        self.0.notifier.set_skip_callbacks(on)
    }

    /// `mm_users` now.
    pub fn users(&self) -> usize {
        self.0.users.load(SOrdering::Acquire)
    }

    /// Whether `exit_mmap()` has completed.
    pub fn is_dead(&self) -> bool {
        *self.0.exit_done.lock()
    }
}

impl MmHandle {
    /// See [`MmConfig::notifier_jitter_us`].
    fn jitter(&self) {
        #[cfg(not(loom))]
        if self.0.cfg.notifier_jitter_us != 0 {
            std::thread::sleep(std::time::Duration::from_micros(
                self.0.cfg.notifier_jitter_us.into(),
            ));
        }
    }
}

impl Default for MmHandle {
    fn default() -> Self {
        Self::new()
    }
}

impl svm::platform::Mm for MmHandle {
    type Interval = Interval;
    type ReadGuard<'a> = ReadGuard<'a>;

    fn interval_insert(
        &self,
        start: u64,
        len: u64,
        cookie: *const (),
        ops: InvalidateFn<Interval>,
    ) -> Result<Interval, Errno> {
        lockdep::check_may_wait_for_invalidation("mmu_interval_notifier_insert()", true);
        // The caller's mmget(): the model takes it here (kernel: WARN + -EINVAL without one).
        if !self.0.mmget_not_zero() {
            return Err(Errno::ESRCH);
        }
        if !self.0.notifier.registered() {
            // mmu_notifier_register(NULL, mm) takes mmap_write_lock.
            let _w = self.0.mmap_write("mmu_interval_notifier_insert()");
            self.0.notifier.set_registered();
        }
        let r = self.0.notifier.insert(start, len, cookie as usize, ops);
        self.0.mmput(true);
        self.jitter();
        // -EOVERFLOW in the kernel.
        r.map_err(|_| Errno::EINVAL)
    }

    fn interval_remove(&self, interval: &Interval) {
        if !interval.belongs_to(&self.0) {
            self.0
                .violations
                .record("notifier", "interval removed through another mm");
        }
        self.jitter();
        interval.remove();
    }

    fn mmap_read(&self) -> Result<ReadGuard<'_>, Errno> {
        lockdep::mmap_acquire("mmap_read_lock_killable()");
        if !self.0.mmget_not_zero() {
            return Err(Errno::ESRCH);
        }
        self.0.mmap_lock.read();
        lockdep::mmap_acquired(false);
        Ok(ReadGuard {
            lock: Some(MmapRead { mm: &self.0 }),
            mm: &self.0,
        })
    }

    fn vma(&self, guard: &ReadGuard<'_>, va: u64) -> Option<PVma> {
        if !core::ptr::eq(guard.mm(), &*self.0) {
            self.0
                .violations
                .record("mm", "vma() with another mm's read guard");
        }
        let m = self.0.machine.st.lock();
        let (start, v) = m.mm_ref(self.0.id).vma(va)?;
        Some(PVma {
            start,
            end: v.end,
            read: v.read,
            write: v.write,
            io: v.io,
        })
    }

    fn hmm_range_fault(
        &self,
        guard: &mut ReadGuard<'_>,
        req: &mut HmmRequest<'_, Interval>,
    ) -> Result<(), Errno> {
        if !core::ptr::eq(guard.mm(), &*self.0) {
            self.0
                .violations
                .record("mm", "hmm_range_fault() with another mm's read guard");
        }
        self.0.hmm_calls.fetch_add(1, Ordering::Relaxed);
        crate::hmm::hmm_range_fault(&self.0, req)
    }

    fn migrate_setup(&self, req: &mut svm::platform::MigrateReq<'_>) -> Result<usize, Errno> {
        self.0.migrate_setup(req)
    }

    fn migrate_pages(&self, req: &mut svm::platform::MigrateReq<'_>) {
        self.0.migrate_pages(req)
    }

    fn migrate_finalize(&self, req: &mut svm::platform::MigrateReq<'_>) {
        self.0.migrate_finalize(req)
    }

    fn make_exclusive(
        &self,
        guard: &mut ReadGuard<'_>,
        start: u64,
        pages: &mut [u64],
        owner: u64,
    ) -> Result<usize, Errno> {
        if !core::ptr::eq(guard.mm(), &*self.0) {
            self.0
                .violations
                .record("mm", "make_exclusive() with another mm's read guard");
        }
        self.0.make_exclusive(start, pages, owner)
    }

    fn release_exclusive(&self, pages: &[u64]) {
        self.0.release_exclusive(pages)
    }
}
