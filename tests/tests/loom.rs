//! Loom models: every interleaving (up to the preemption bound) of small concurrent scenarios,
//! running the real engine over the model, whose locks, condition variables and protocol
//! atomics are loom's under `--cfg loom`. Run with:
//!
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test --release -p svm-tests --test loom`
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use model::{MapFlags, Prot, World};
use pgtable::Errno;
use svm::{Config, LockScope};

const PAGE: u64 = 4096;
const M2: u64 = 2 << 20;

/// One page per fault keeps the state small; the protocol is the same.
fn world() -> Arc<World> {
    world_with(Config::default())
}

/// [`world`] with another range size or lock scope.
fn world_with(cfg: Config) -> Arc<World> {
    let cfg = Config {
        fault_around_pages: 1,
        ..cfg
    };
    Arc::new(
        World::builder()
            .config(cfg)
            .tlb_entries(4)
            .clock_step(1)
            .build()
            .unwrap(),
    )
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(3);
    }
    let runs = std::sync::Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    b.check(move || {
        r.fetch_add(1, Ordering::Relaxed);
        f()
    });
    let name = std::thread::current().name().unwrap_or("?").to_string();
    println!(
        "loom: {name}: {} interleavings explored",
        runs.load(Ordering::Relaxed)
    );
}

fn finish(w: &World) {
    w.check_quiescent()
        .unwrap_or_else(|e| panic!("not quiescent: {e}"));
    w.teardown();
    w.check_quiescent()
        .unwrap_or_else(|e| panic!("not quiescent after teardown: {e}"));
}

/// A device write faulting while the page migrates: the fault must not commit the old page
/// (read_retry under the lock after set_seq in the callback), and the write must land.
#[test]
fn fault_vs_invalidate_same_range() {
    model(|| {
        let w = world();
        let a = w.mm.mmap(PAGE, Prot::RW, MapFlags::ANON).unwrap();
        w.mm.cpu_write(a, 1).unwrap();
        let w2 = w.clone();
        let t = thread::spawn(move || {
            let mut d = w2.device();
            d.write(a, 2).unwrap();
            d.read(a).unwrap()
        });
        w.mm.migrate(a).unwrap();
        assert_eq!(t.join().unwrap(), 2);
        assert_eq!(w.mm.cpu_read(a).unwrap(), 2, "device write lost");
        finish(&w);
    });
}

/// The device holds a TLB entry while the page is unmapped: the DMA mapping may be released
/// only after the TLB flush.
#[test]
fn tlb_entry_live_during_invalidation() {
    model(|| tlb_entry_live_on_unit(0));
}

/// As [`tlb_entry_live_during_invalidation`], on the device's second execution unit: the
/// flush must reach, and wait for, every unit's TLB, not only the first.
#[test]
fn flush_waits_for_every_unit() {
    model(|| tlb_entry_live_on_unit(1));
}

/// A device context on execution unit `unit` reads a page it has cached while the page is
/// unmapped: each read sees the value or faults, never the freed page.
fn tlb_entry_live_on_unit(unit: usize) {
    let w = world();
    let a = w.mm.mmap(PAGE, Prot::RW, MapFlags::ANON).unwrap();
    // Devices take the units round robin: the ones before `unit` only hold theirs.
    let _before: Vec<_> = (0..unit).map(|_| w.device()).collect();
    let mut d = w.device();
    d.write(a, 1).unwrap();
    let t = thread::spawn(move || {
        for _ in 0..2 {
            match d.read(a) {
                Ok(v) => assert_eq!(v, 1),
                Err(e) => assert_eq!(e, Errno::EFAULT),
            }
        }
    });
    w.mm.munmap(a, PAGE).unwrap();
    t.join().unwrap();
    finish(&w);
}

/// Two faults on the same range, one read and one write of neighbouring pages.
#[test]
fn two_faults_same_range() {
    model(|| {
        let w = world();
        let a = w.mm.mmap(2 * PAGE, Prot::RW, MapFlags::ANON).unwrap();
        w.mm.cpu_write(a, 5).unwrap();
        let w2 = w.clone();
        let t = thread::spawn(move || w2.device().write(a + PAGE, 6).unwrap());
        assert_eq!(w.device().read(a).unwrap(), 5);
        t.join().unwrap();
        assert_eq!(w.mm.cpu_read(a + PAGE).unwrap(), 6);
        assert_eq!(w.engine.range_count(), 1);
        finish(&w);
    });
}

/// Two faults creating the same range: one notifier survives, the loser's is removed.
#[test]
fn two_creators_of_one_range() {
    model(|| {
        let w = world();
        let a = w.mm.mmap(2 * PAGE, Prot::RW, MapFlags::ANON).unwrap();
        let w2 = w.clone();
        let t = thread::spawn(move || w2.device().write(a, 1).unwrap());
        w.device().write(a + PAGE, 2).unwrap();
        t.join().unwrap();
        assert_eq!(w.engine.range_count(), 1);
        let s = w.engine.stats();
        assert_eq!(s.ranges_created, 1);
        assert!(s.range_races <= 1);
        assert_eq!(w.mm.cpu_read(a).unwrap(), 1);
        finish(&w);
    });
}

/// A fault on one range while another range is invalidated: no retry, no wait on its lock.
#[test]
fn faults_on_other_ranges_do_not_retry() {
    model(|| {
        let w = world();
        let a = w.mm.mmap(2 * M2, Prot::RW, MapFlags::ANON).unwrap();
        let b = a + M2;
        let mut d = w.device();
        d.write(a, 1).unwrap();
        d.read(b).unwrap();
        let before = w.engine.stats();
        let w2 = w.clone();
        let t = thread::spawn(move || w2.device().write(b + PAGE, 2).unwrap());
        w.mm.migrate(a).unwrap();
        t.join().unwrap();
        let s = w.engine.stats();
        assert_eq!(
            s.retries_foreign, before.retries_foreign,
            "a fault retried for another range"
        );
        assert_eq!(s.retries_own, before.retries_own);
        finish(&w);
    });
}

/// A 2 MiB range the device mirrored, then unmapped (its range marked for GC) and mapped
/// again, fresh: what GC races a new fault on.
fn remapped_range(w: &World) -> u64 {
    let a = w.mm.mmap(M2, Prot::RW, MapFlags::ANON).unwrap();
    w.device().write(a, 1).unwrap();
    w.mm.munmap(a, M2).unwrap();
    w.mm.mmap_fixed(a, M2, Prot::RW, MapFlags::ANON).unwrap();
    a
}

/// GC racing a fault on a range that was unmapped and mapped again.
#[test]
fn fault_vs_gc() {
    model(|| {
        let w = world();
        let a = remapped_range(&w);
        let w2 = w.clone();
        let t = thread::spawn(move || w2.device().write(a, 7).unwrap());
        w.gc();
        t.join().unwrap();
        assert_eq!(w.mm.cpu_read(a).unwrap(), 7);
        w.mm.munmap(a, M2).unwrap();
        assert!(
            w.engine.page_table().translate(a).is_none(),
            "munmap did not reach the device"
        );
        w.gc();
        finish(&w);
    });
}

/// [`world`] with loom's walk jitter: every page-table walk step and every table free is a
/// loom scheduling point, so a walk can be preempted between reading a link and following it.
fn jitter_world() -> Arc<World> {
    Arc::new(
        model::WorldBuilder::new()
            .config(Config {
                fault_around_pages: 1,
                ..Config::default()
            })
            .tlb_entries(4)
            .clock_step(1)
            .walk_jitter(true)
            .build()
            .unwrap(),
    )
}

/// QUERY's census walking a range's leaf table while GC retires the range (unmapped and mapped
/// again, nothing mapped): the census enters a leaf table only under an `InFlight`, and GC frees
/// it only when no walker is in. Loom orders every walk step against every table free here
/// (walk jitter), so a walker that entered after GC looked for walkers, and followed a link
/// GC then freed, is a use-after-free the model reports.
#[test]
fn census_vs_gc() {
    model(|| {
        let w = jitter_world();
        let a = remapped_range(&w);
        let w2 = w.clone();
        let t = thread::spawn(move || {
            let c = w2.engine.census();
            assert_eq!(
                (c.pages, c.huge),
                (0, 0),
                "{c:?} {:?}",
                w2.violations.messages()
            );
        });
        w.gc();
        t.join().unwrap();
        w.gc();
        assert_eq!(w.engine.range_count(), 0);
        let _ = a;
        finish(&w);
    });
}

/// PREFETCH's check of what is already mapped walks a range's leaf table only under that
/// range's `InFlight`: a prefetch ending exactly where a range GC is retiring begins must not
/// walk into the next range's table (GC may be freeing it). Loom orders every walk step
/// against the table free (walk jitter), so such a walk is a use-after-free the model reports.
#[test]
fn prefetch_walk_stays_in_its_range_vs_gc() {
    model(|| {
        let w = jitter_world();
        let b = 64 * M2;
        w.mm.mmap_fixed(b, 2 * M2, Prot::RW, MapFlags::ANON)
            .unwrap();
        // The last page of the first range, mapped for the device.
        w.mm.cpu_write(b + M2 - PAGE, 3).unwrap();
        assert_eq!(w.device().read(b + M2 - PAGE).unwrap(), 3);
        // The next range: mirrored, unmapped (marked for GC) and mapped again, fresh.
        w.device().write(b + M2, 1).unwrap();
        w.mm.munmap(b + M2, M2).unwrap();
        w.mm.mmap_fixed(b + M2, M2, Prot::RW, MapFlags::ANON)
            .unwrap();
        let w2 = w.clone();
        let t = thread::spawn(move || {
            let mut s = Box::new(svm::Scratch::new());
            let mut done = 0;
            w2.engine
                .prefetch(&mut s, b + M2 - PAGE, PAGE, svm::Access::Read, &mut done)
                .unwrap();
            assert_eq!(done, PAGE);
        });
        w.gc();
        t.join().unwrap();
        w.gc();
        finish(&w);
    });
}

/// Two creators of one range, and an invalidation of the winner's page while the loser's
/// notifier is still registered: the loser's callback runs (its notifier overlaps the span)
/// but must leave the winner's leaves alone; only the winner's callback, under the winner's
/// lock, may zap them (issue 9: a loser zapping and reaping them underflowed its count).
#[test]
fn loser_callback_spares_winner() {
    model(|| {
        let w = world();
        let a = w.mm.mmap(2 * PAGE, Prot::RW, MapFlags::ANON).unwrap();
        let w2 = w.clone();
        let t = thread::spawn(move || w2.device().write(a, 1).unwrap());
        w.device().write(a + PAGE, 2).unwrap();
        w.mm.migrate(a + PAGE).unwrap();
        t.join().unwrap();
        assert_eq!(w.mm.cpu_read(a).unwrap(), 1);
        assert_eq!(w.mm.cpu_read(a + PAGE).unwrap(), 2);
        assert!(w.engine.page_table().translate(a + PAGE).is_none());
        finish(&w);
    });
}

/// GC retiring a range while a fault re-creates its span and an invalidation hits the new
/// mapping: the dead range's notifier stays registered until `interval_remove` returns (and
/// the kernel defers that past a running invalidation), so its callback still runs, and must
/// not zap or reap the successor's leaves under the dead range's lock.
#[test]
fn dead_range_callback_spares_successor() {
    model(|| {
        let w = world();
        let a = remapped_range(&w);
        let w2 = w.clone();
        let t = thread::spawn(move || {
            w2.gc();
        });
        w.device().write(a, 7).unwrap();
        w.mm.migrate(a).unwrap();
        t.join().unwrap();
        assert_eq!(w.mm.cpu_read(a).unwrap(), 7);
        assert!(
            w.engine.page_table().translate(a).is_none(),
            "migration did not reach the device"
        );
        w.gc();
        finish(&w);
    });
}

/// An invalidation racing teardown.
#[test]
fn invalidate_vs_teardown() {
    model(|| {
        let w = world();
        let a = w.mm.mmap(2 * PAGE, Prot::RW, MapFlags::ANON).unwrap();
        let mut d = w.device();
        d.write(a, 1).unwrap();
        d.write(a + PAGE, 2).unwrap();
        let w2 = w.clone();
        let t = thread::spawn(move || w2.mm.munmap(a, PAGE).unwrap());
        w.teardown();
        t.join().unwrap();
        assert_eq!(w.dma.live(), 0);
        assert_eq!(w.mm.cpu_read(a + PAGE).unwrap(), 2);
        finish(&w);
    });
}

/// The OOM reaper's non-blockable invalidation while a fault holds the range lock: it either
/// refuses having changed nothing, or does the whole job.
#[test]
fn nonblockable_invalidation_under_contention() {
    model(|| {
        let w = world();
        let a = w.mm.mmap(2 * PAGE, Prot::RW, MapFlags::ANON).unwrap();
        w.device().write(a, 1).unwrap();
        let w2 = w.clone();
        let t = thread::spawn(move || {
            let _ = w2.device().write(a + PAGE, 2);
        });
        let r = w.mm.oom_reap().unwrap();
        t.join().unwrap();
        if r.skipped == 0 && !r.contended {
            assert!(
                w.engine.page_table().translate(a).is_none(),
                "reaped page still mapped"
            );
        }
        w.check_quiescent().unwrap_or_else(|e| panic!("{r:?}: {e}"));
        finish(&w);
    });
}

/// The baseline lock scopes add an engine-wide lock outside the range lock: a fault's commit
/// (read side / mutex) racing an invalidation (write side / mutex) of the same range must
/// still never commit the old page, and must not deadlock.
#[test]
fn baseline_scopes_fault_vs_invalidate() {
    for (shift, scope) in [(29, LockScope::EngineRwsem), (47, LockScope::EngineMutex)] {
        model(move || {
            let w = world_with(Config {
                range_shift: shift,
                lock_scope: scope,
                ..Config::default()
            });
            let a = w.mm.mmap(PAGE, Prot::RW, MapFlags::ANON).unwrap();
            w.mm.cpu_write(a, 1).unwrap();
            let w2 = w.clone();
            let t = thread::spawn(move || {
                let mut d = w2.device();
                d.write(a, 2).unwrap();
                d.read(a).unwrap()
            });
            w.mm.migrate(a).unwrap();
            assert_eq!(t.join().unwrap(), 2);
            assert_eq!(w.mm.cpu_read(a).unwrap(), 2, "device write lost");
            finish(&w);
        });
    }
}

/// The OOM reaper under the engine mutex while a fault may hold it: the non-blockable
/// callback only tries the engine lock, and either refuses having changed nothing or does the
/// whole job.
#[test]
fn nonblockable_invalidation_vs_engine_mutex() {
    model(|| {
        let w = world_with(Config {
            range_shift: 47,
            lock_scope: LockScope::EngineMutex,
            ..Config::default()
        });
        let a = w.mm.mmap(2 * PAGE, Prot::RW, MapFlags::ANON).unwrap();
        w.device().write(a, 1).unwrap();
        let w2 = w.clone();
        let t = thread::spawn(move || {
            let _ = w2.device().write(a + PAGE, 2);
        });
        let r = w.mm.oom_reap().unwrap();
        t.join().unwrap();
        if r.skipped == 0 && !r.contended {
            assert!(
                w.engine.page_table().translate(a).is_none(),
                "reaped page still mapped"
            );
        }
        w.check_quiescent().unwrap_or_else(|e| panic!("{r:?}: {e}"));
        finish(&w);
    });
}

/// A write fault retried because the CPU dropped *another* page of its range (the page just
/// after it, or the page just before it) or a span larger than a folio, or a read fault
/// retried because its own page was dropped, is retried as foreign: only a write fault's first
/// retry after a `CLEAR` of at most one folio overlapping its own page is its own COW break
/// (which restarts the budget).
#[test]
fn retries_for_other_pages_or_reads_are_foreign() {
    let big = 2 * M2 / PAGE;
    for (write, drop_at, drop_pages) in [(true, 2, 1), (true, 0, 1), (true, 0, big), (false, 1, 1)]
    {
        model(move || {
            let w = world();
            let a = w.mm.mmap(2 * M2, Prot::RW, MapFlags::ANON).unwrap();
            for i in 0..3 {
                w.mm.cpu_write(a + i * PAGE, 1 + i).unwrap();
            }
            let w2 = w.clone();
            let t = thread::spawn(move || {
                w2.mm
                    .madvise_dontneed(a + drop_at * PAGE, drop_pages * PAGE)
                    .unwrap();
            });
            let mut d = w.device();
            if write {
                d.write(a + PAGE, 9).unwrap();
            } else {
                d.read(a + PAGE).unwrap();
            }
            t.join().unwrap();
            let s = w.engine.stats();
            assert_eq!(
                s.retries_own, 0,
                "write {write}, dropped {drop_pages} pages at {drop_at}: {s:?}"
            );
            finish(&w);
        });
    }
}

/// A batch window (two queued write faults, one `hmm_range_fault()`, one lock hold) racing the
/// migration of its second page: the window's `read_retry` covers every page it commits, so
/// neither the old page nor a stale translation survives, and a device write afterwards lands
/// in the page the CPU maps (a freed page with a live DMA mapping is reported by the model).
#[test]
fn batch_window_vs_invalidate() {
    use svm::{Access, DeviceFault, Scratch};
    model(|| {
        let w = world();
        let a = w.mm.mmap(2 * PAGE, Prot::RW, MapFlags::ANON).unwrap();
        w.mm.cpu_write(a, 1).unwrap();
        w.mm.cpu_write(a + PAGE, 2).unwrap();
        let w2 = w.clone();
        let t = thread::spawn(move || {
            let mut s = Box::new(Scratch::new());
            let mut batch = [
                DeviceFault::new(a, Access::Write),
                DeviceFault::new(a + PAGE, Access::Write),
            ];
            w2.engine.fault_batch(&mut s, &mut batch);
            batch.iter().all(|f| f.result == Some(Ok(())))
        });
        w.mm.migrate(a + PAGE).unwrap();
        assert!(t.join().unwrap(), "every queued fault answered Ok");
        assert_eq!(w.engine.stats().batch_windows, 1);
        let mut d = w.device();
        d.write(a + PAGE, 3).unwrap();
        assert_eq!(w.mm.cpu_read(a + PAGE).unwrap(), 3, "device write lost");
        finish(&w);
    });
}

// ---- user-mode queues (svm/src/userq.rs) ---------------------------------------------------
//
// The queue's command processor and a WAIT, a DESTROY or a suspend/resume, over a device whose
// memory is a handful of words (the queue protocol does not depend on the engine's; SUBMIT's
// access path is what the other models check). The device's accesses fail with `Halted`
// once the queue is halted, as the kernel's access path does; its idle poll sleeps until a
// kick or a halt (no timeout: loom has no clock, so a doorbell store alone is never noticed;
// the process WAITs, which kicks). A DESTROY interrupts a job at its next access, a suspend
// waits for the job to end.

mod userq {
    use super::model;
    use loom::sync::atomic::{AtomicU64, Ordering};
    use loom::sync::{Arc, Condvar, Mutex};
    use loom::thread;
    use pgtable::Errno;
    use svm::userq::{QErr, QueueDevice, UserQueue, ACTIVE, ERROR, SUSPENDED};

    const RING: u64 = 0x1000;
    const DOORBELL: u64 = 0x2000;
    const FENCE: u64 = 0x2008;
    const DATA: u64 = 0x3000;
    const HOLE: u64 = 0x4000;
    const ADD: u64 = 3;
    const TASK_SIZE: u64 = 1 << 47;

    struct Dev {
        q: UserQueue,
        /// Two ring entries of eight words, then the doorbell, the fence and a data word.
        words: Vec<AtomicU64>,
        gen: Mutex<u64>,
        cv: Condvar,
        clock: std::sync::atomic::AtomicU64,
    }

    impl Dev {
        fn new() -> Arc<Dev> {
            Arc::new(Dev {
                q: UserQueue::new(RING, 2, DOORBELL, FENCE, TASK_SIZE).unwrap(),
                words: (0..19).map(|_| AtomicU64::new(0)).collect(),
                gen: Mutex::new(0),
                cv: Condvar::new(),
                clock: std::sync::atomic::AtomicU64::new(0),
            })
        }

        fn word(&self, va: u64) -> Result<&AtomicU64, QErr> {
            let i = match va {
                v if (RING..RING + 128).contains(&v) => (v - RING) / 8,
                DOORBELL => 16,
                FENCE => 17,
                DATA => 18,
                _ => return Err(QErr::Fault(Errno::EFAULT, va)),
            };
            Ok(&self.words[i as usize])
        }

        fn read(&self, va: u64) -> u64 {
            self.word(va).unwrap().load(Ordering::Acquire)
        }

        /// The process: job `job` adds 1 at `dst`, announced with the doorbell.
        fn submit(&self, job: u64, dst: u64) {
            let slot = RING + (job % 2) * 64;
            self.word(slot).unwrap().store(ADD, Ordering::Relaxed);
            self.word(slot + 16).unwrap().store(dst, Ordering::Relaxed);
            self.word(slot + 32).unwrap().store(1, Ordering::Relaxed);
            self.word(DOORBELL)
                .unwrap()
                .store(job + 1, Ordering::Release);
        }

        /// WAIT, as the driver's: kick, wake, sleep until `wait_over`.
        fn wait(&self, v: u64) -> Result<(), Errno> {
            self.q.kick();
            self.wake();
            let mut g = self.gen.lock().unwrap();
            while !self.q.wait_over(v) {
                g = self.cv.wait(g).unwrap();
            }
            drop(g);
            self.q.wait_result(v, Ok(()))
        }

        /// DESTROY's halt, as the driver's (its cancel_sync is the caller's join).
        fn halt(&self) {
            self.q.halt();
            self.wake();
        }
    }

    impl QueueDevice for Dev {
        fn load(&self, va: u64) -> Result<u64, QErr> {
            if self.q.interrupted() {
                return Err(QErr::Halted);
            }
            Ok(self.word(va)?.load(Ordering::Acquire))
        }
        fn store(&self, va: u64, v: u64) -> Result<(), QErr> {
            if self.q.interrupted() {
                return Err(QErr::Halted);
            }
            self.word(va)?.store(v, Ordering::Release);
            Ok(())
        }
        fn read_entry(&self, va: u64) -> Result<[u64; 6], QErr> {
            if self.q.interrupted() {
                return Err(QErr::Halted);
            }
            let mut w = [0; 6];
            for (k, x) in w.iter_mut().enumerate() {
                *x = self.word(va + 8 * k as u64)?.load(Ordering::Relaxed);
            }
            Ok(w)
        }
        fn run(&self, slot: u64, op: &[u64; 6]) -> Result<Option<u64>, QErr> {
            if op[0] != ADD {
                return Err(QErr::Fault(Errno::EINVAL, slot));
            }
            if self.q.interrupted() {
                return Err(QErr::Halted);
            }
            Ok(Some(self.word(op[2])?.fetch_add(op[4], Ordering::SeqCst)))
        }
        fn wake(&self) {
            *self.gen.lock().unwrap() += 1;
            self.cv.notify_all();
        }
        fn idle(&self, _ns: u64, cond: &dyn Fn() -> bool) {
            let mut g = self.gen.lock().unwrap();
            while !cond() {
                g = self.cv.wait(g).unwrap();
            }
        }
        fn now_ns(&self) -> u64 {
            // Past the spin window at every look: the processor idles at once.
            self.clock
                .fetch_add(1 << 30, std::sync::atomic::Ordering::Relaxed)
        }
    }

    fn processor(d: &Arc<Dev>) -> thread::JoinHandle<()> {
        let d = d.clone();
        thread::spawn(move || d.q.run(&*d))
    }

    /// A WAIT that returns has the fence word written (the processor writes it before it
    /// publishes its count), and is woken (no lost wake-up between the two).
    #[test]
    fn queue_wait_sees_the_fence() {
        model(|| {
            let d = Dev::new();
            let p = processor(&d);
            d.submit(0, DATA);
            assert_eq!(d.wait(1), Ok(()));
            assert_eq!(
                d.read(FENCE),
                1,
                "WAIT returned before the fence was written"
            );
            assert_eq!(d.read(DATA), 1);
            assert_eq!(d.read(RING + 40), 0, "ADD's old value written back");
            d.halt();
            p.join().unwrap();
            assert_eq!(d.q.state(), ACTIVE);
        });
    }

    /// A job that faults puts the queue into the error state, and the WAIT learns it.
    #[test]
    fn queue_error_reaches_the_waiter() {
        model(|| {
            let d = Dev::new();
            let p = processor(&d);
            d.submit(0, HOLE);
            assert_eq!(d.wait(1), Err(Errno(5)));
            p.join().unwrap();
            let s = d.q.status();
            assert_eq!((s.state, s.error, s.fault_addr), (ERROR, -14, HOLE));
            assert_eq!((s.completed, d.read(FENCE)), (0, 0));
        });
    }

    /// DESTROY while jobs run and a WAIT sleeps: the processor ends, the WAIT returns, and
    /// every job counted as completed has its fence written.
    #[test]
    fn queue_destroy_vs_running_jobs() {
        model(|| {
            let d = Dev::new();
            let p = processor(&d);
            d.submit(0, DATA);
            d.submit(1, DATA);
            let w = {
                let d = d.clone();
                thread::spawn(move || d.wait(2))
            };
            d.halt();
            p.join().unwrap();
            let r = w.join().unwrap();
            assert!(r == Ok(()) || r == Err(Errno::ENOENT), "WAIT: {r:?}");
            let done = d.q.completed();
            assert_eq!(d.read(FENCE), done, "a completed job without its fence");
            let ran = d.read(DATA);
            assert!(
                ran == done || ran == done + 1,
                "ran {ran}, completed {done}"
            );
        });
    }

    /// Suspend while a job may be running, waiting for the processor; a job announced while
    /// suspended does not run; resume starts the processor again, and every job runs once
    /// (a suspend in the middle of a job that a resume then runs again would add twice).
    #[test]
    fn queue_suspend_then_resume() {
        model(|| {
            let d = Dev::new();
            let p = processor(&d);
            d.submit(0, DATA);
            d.q.kick();
            d.wake();
            d.q.suspend();
            d.wake();
            p.join().unwrap();
            assert_eq!(d.q.state(), SUSPENDED);
            let before = d.read(DATA);
            d.submit(1, DATA);
            assert_eq!(d.read(DATA), before, "a suspended queue ran a job");
            assert!(d.q.resume());
            let p = processor(&d);
            assert_eq!(d.wait(2), Ok(()));
            d.halt();
            p.join().unwrap();
            assert_eq!(d.read(DATA), 2, "a job ran twice, or not at all");
        });
    }
}

/// Device memory: an engine migration against a device access and against an munmap, and a
/// CPU fault's `migrate_to_ram` against a device access of the same page.
mod devmem {
    use super::*;
    use svm::{Place, Scratch};

    fn world() -> Arc<World> {
        world_pages(2)
    }

    /// A world whose device has `pages` pages of its own memory.
    fn world_pages(pages: usize) -> Arc<World> {
        let cfg = Config {
            fault_around_pages: 1,
            ..Config::default()
        };
        Arc::new(
            World::builder()
                .config(cfg)
                .tlb_entries(4)
                .clock_step(1)
                .devmem_pages(pages)
                .build()
                .unwrap(),
        )
    }

    fn migrate(w: &World, a: u64, to: Place) -> Result<(), Errno> {
        let _s = w.violations.scope();
        let mut done = 0;
        w.engine
            .migrate(&mut Scratch::new(), a, PAGE, to, &mut done)
            .map(|_| ())
    }

    /// The device writes a page while the engine moves it to device memory. A fault that read
    /// the old page before the migration collected it must fail its seq check (the callback of
    /// the engine's own migration still sets the seq), and a leaf made before must be zapped by
    /// the migration before the copy: otherwise the write lands in a page `finalize` frees.
    #[test]
    fn migration_vs_device_write() {
        model(|| {
            let w = world();
            let a = w.mm.mmap(PAGE, Prot::RW, MapFlags::ANON).unwrap();
            w.mm.cpu_write(a, 1).unwrap();
            let w2 = w.clone();
            let t = thread::spawn(move || {
                let mut d = w2.device();
                d.write(a, 2).unwrap();
                d.read(a).unwrap()
            });
            migrate(&w, a, Place::Device).unwrap();
            assert_eq!(t.join().unwrap(), 2);
            assert!(w.mm.device_pte(a).is_some(), "page not moved");
            w.check_quiescent()
                .unwrap_or_else(|e| panic!("not quiescent: {e}"));
            assert_eq!(w.mm.cpu_read(a).unwrap(), 2, "device write lost");
            finish(&w);
        });
    }

    /// The page is dropped (`MADV_DONTNEED`, under the read lock as the migration is) while it
    /// migrates: before setup, between setup and finalize (the migration entry goes, the
    /// migration must not put a page back), or after (the device page goes). Nothing leaks,
    /// the device memory comes back, the page reads 0.
    #[test]
    fn migration_vs_dontneed() {
        model(|| {
            let w = world();
            let a = w.mm.mmap(PAGE, Prot::RW, MapFlags::ANON).unwrap();
            w.mm.cpu_write(a, 1).unwrap();
            w.device().read(a).unwrap();
            let w2 = w.clone();
            let t = thread::spawn(move || w2.mm.madvise_dontneed(a, PAGE).unwrap());
            migrate(&w, a, Place::Device).unwrap();
            t.join().unwrap();
            let left = w.devmem.used();
            assert!(left <= 1, "{left}");
            assert_eq!(w.device().read(a).unwrap(), 0, "dropped page came back");
            assert_eq!(w.mm.cpu_read(a).unwrap(), 0);
            assert_eq!(w.devmem.used(), 0, "device page leaked");
            finish(&w);
        });
    }

    /// Device memory of one page, in use by page `a`, which the device keeps writing, while
    /// the engine moves page `b` in: `a` is evicted (every mapper notified, the device's leaf
    /// zapped as for any invalidation) and its data goes back with it.
    #[test]
    fn eviction_vs_device_write() {
        model(|| {
            let w = world_pages(1);
            let a = w.mm.mmap(2 * PAGE, Prot::RW, MapFlags::ANON).unwrap();
            let b = a + PAGE;
            w.mm.cpu_write(a, 1).unwrap();
            w.mm.cpu_write(b, 7).unwrap();
            migrate(&w, a, Place::Device).unwrap();
            w.device().read(a).unwrap();
            let w2 = w.clone();
            let t = thread::spawn(move || w2.device().write(a, 2).unwrap());
            migrate(&w, b, Place::Device).unwrap();
            t.join().unwrap();
            assert!(w.mm.device_pte(b).is_some(), "b did not move in");
            w.check_quiescent()
                .unwrap_or_else(|e| panic!("not quiescent: {e}"));
            assert_eq!(w.mm.cpu_read(a).unwrap(), 2, "device write lost");
            assert_eq!(w.mm.cpu_read(b).unwrap(), 7);
            finish(&w);
        });
    }

    /// Device B reaches page `a` in its peer A's memory (one page) through a DMA mapping and
    /// writes it while A moves page `b` in, evicting `a`: B hears the eviction as any mapper
    /// does, its P2P leaf goes before the page is freed (the DMA-live detector), and its write
    /// lands in the device page before the copy or in the new system page after it.
    #[test]
    fn peer_eviction_vs_peer_write() {
        model(|| {
            let w = world_pages(1);
            let v = Arc::new(
                World::<pgtable::X86Format>::builder()
                    .config(Config {
                        fault_around_pages: 1,
                        ..Config::default()
                    })
                    .tlb_entries(4)
                    .clock_step(1)
                    .share_mm(&w.mm)
                    .peer_of(&w.devmem)
                    .devmem_pages(1)
                    .build()
                    .unwrap(),
            );
            let a = w.mm.mmap(2 * PAGE, Prot::RW, MapFlags::ANON).unwrap();
            let b = a + PAGE;
            w.mm.cpu_write(a, 1).unwrap();
            w.mm.cpu_write(b, 7).unwrap();
            migrate(&w, a, Place::Device).unwrap();
            v.device().read(a).unwrap();
            let v2 = v.clone();
            let t = thread::spawn(move || v2.device().write(a, 2).unwrap());
            migrate(&w, b, Place::Device).unwrap();
            t.join().unwrap();
            assert!(w.mm.device_pte(b).is_some(), "b did not move in");
            v.check_quiescent()
                .unwrap_or_else(|e| panic!("peer not quiescent: {e}"));
            assert_eq!(w.mm.cpu_read(a).unwrap(), 2, "peer's write lost");
            v.teardown();
            finish(&w);
        });
    }

    /// A device write to a device-resident page while the CPU faults it back: the write lands
    /// in device memory before the copy, or in the new system page after it; never in between.
    #[test]
    fn cpu_touch_vs_device_write() {
        model(|| {
            let w = world();
            let a = w.mm.mmap(PAGE, Prot::RW, MapFlags::ANON).unwrap();
            w.mm.cpu_write(a, 1).unwrap();
            migrate(&w, a, Place::Device).unwrap();
            w.device().read(a).unwrap();
            let w2 = w.clone();
            let t = thread::spawn(move || w2.device().write(a, 2).unwrap());
            let seen = w.mm.cpu_read(a).unwrap();
            assert!(seen == 1 || seen == 2, "{seen}");
            t.join().unwrap();
            assert_eq!(w.mm.cpu_read(a).unwrap(), 2, "device write lost");
            finish(&w);
        });
    }
}

/// Device atomics: the engine hands a page over (`make_device_exclusive_range()`) while the
/// CPU takes it back or drops it.
mod exclusive {
    use super::*;

    /// A device atomic and a CPU atomic on one page: both land, and the atomic leaf never
    /// outlives the hand-over (the CPU's take-back zaps it; a fault that handed the page over
    /// before the CPU took it back must not map it after).
    #[test]
    fn device_atomic_vs_cpu_atomic() {
        model(|| {
            let w = world();
            let a = w.mm.mmap(PAGE, Prot::RW, MapFlags::ANON).unwrap();
            w.mm.cpu_write(a, 1).unwrap();
            let w2 = w.clone();
            let t = thread::spawn(move || {
                let _s = w2.violations.scope();
                w2.device().exclusive_add(a, 10).unwrap()
            });
            let old = w.mm.cpu_add(a, 100).unwrap();
            let dev_old = t.join().unwrap();
            assert!(
                (old == 1 && dev_old == 101) || (old == 11 && dev_old == 1),
                "{old} {dev_old}"
            );
            w.check_quiescent()
                .unwrap_or_else(|e| panic!("not quiescent: {e}"));
            assert_eq!(w.mm.cpu_read(a).unwrap(), 111, "an atomic was lost");
            finish(&w);
        });
    }

    /// The page is dropped (`MADV_DONTNEED`) while the engine hands it over: a hand-over that
    /// the drop undid must not end in an atomic leaf of the old page.
    #[test]
    fn device_atomic_vs_dontneed() {
        model(|| {
            let w = world();
            let a = w.mm.mmap(PAGE, Prot::RW, MapFlags::ANON).unwrap();
            w.mm.cpu_write(a, 1).unwrap();
            let w2 = w.clone();
            let t = thread::spawn(move || w2.mm.madvise_dontneed(a, PAGE).unwrap());
            let old = {
                let _s = w.violations.scope();
                w.device().exclusive_add(a, 10).unwrap()
            };
            t.join().unwrap();
            assert!(old == 1 || old == 0, "{old}");
            w.check_quiescent()
                .unwrap_or_else(|e| panic!("not quiescent: {e}"));
            let now = w.mm.cpu_read(a).unwrap();
            assert!(now == 0 || now == 10, "{now}");
            finish(&w);
        });
    }
}
