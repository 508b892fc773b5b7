//! The fault storm: device threads hammer a large buffer while mutator threads migrate, swap,
//! fork, split THPs and mprotect it, and churn a second buffer with munmap/mmap/mprotect/
//! MADV_DONTNEED/MADV_FREE, and a GC thread collects unmapped ranges. Every device access is
//! checked by the model's device (I1 stale page, I2 privilege, I4 DMA use-after-unmap); every
//! device thread owns a slice of the data buffer and checks that its own writes are never lost
//! (I3), through device reads during the storm and CPU reads at the end; teardown must leave
//! no DMA mapping, no zapped leaf and no violation.

use crate::rng::Rng;
use model::{MapFlags, MmConfig, Prot, World};
use pgtable::Errno;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use svm::{Access, Config, DeviceFault, Place, Scratch, Stats};

const PAGE: u64 = 4096;
const M2: u64 = 2 << 20;

/// What to run.
#[derive(Clone, Debug)]
pub struct StormConfig {
    /// Device threads.
    pub device_threads: usize,
    /// Mutator threads (data and churn buffers).
    pub mutator_threads: usize,
    /// Device accesses per device thread.
    pub accesses_per_thread: u64,
    /// Size of the data buffer (THP-eligible; contents are checked).
    pub data_bytes: u64,
    /// Size of the churn buffer (mapped and unmapped at random).
    pub churn_bytes: u64,
    /// Seed of every thread's generator.
    pub seed: u64,
    /// Engine configuration.
    pub engine: Config,
    /// Device memory, in pages (0: none). With it the mutators also move spans of the data
    /// buffer to the device and back, and touch device-resident pages from the CPU.
    pub devmem_pages: usize,
    /// Device threads make 1 in 16 of their own-page writes a device-exclusive add (the CPU
    /// hands the page over). Off in the storms the teeth calibrate against: it changes their
    /// timing (`scripts/teeth.sh`).
    pub exclusive: bool,
}

impl Default for StormConfig {
    fn default() -> Self {
        StormConfig {
            device_threads: 3,
            mutator_threads: 2,
            accesses_per_thread: 400_000,
            data_bytes: 16 * M2,
            churn_bytes: 8 * M2,
            seed: 1,
            engine: Config::default(),
            devmem_pages: 0,
            exclusive: false,
        }
    }
}

/// What happened.
#[derive(Clone, Debug)]
pub struct StormReport {
    /// Wall time of the storm (threads running).
    pub elapsed: Duration,
    /// Device accesses made (each checked for I1, I2, I4 by the device).
    pub accesses: u64,
    /// Accesses that missed the device TLB.
    pub tlb_misses: u64,
    /// Device reads of a thread's own page compared with the last value it wrote (I3).
    pub own_checks: u64,
    /// Own pages compared through the CPU after the storm (I3).
    pub final_checks: u64,
    /// Device accesses refused with an errno (churn buffer, mprotected pages, EBUSY).
    pub refused: u64,
    /// Of those, `EBUSY` (retry budget exhausted).
    pub busy: u64,
    /// Mutator operations done.
    pub mutations: u64,
    /// GC passes and ranges collected.
    pub gc_ranges: u64,
    /// The engine's counters at the end (before teardown).
    pub engine: Stats,
    /// Invariant violations recorded (must be 0).
    pub violations: usize,
    /// Messages of the first violations.
    pub violation_messages: Vec<String>,
    /// Lost writes found (must be 0).
    pub lost_writes: u64,
    /// DMA mappings left after teardown (must be 0).
    pub dma_leaks: usize,
    /// `check_quiescent` result after teardown.
    pub quiescent: Result<(), String>,
}

impl StormReport {
    /// Whether every check held.
    pub fn clean(&self) -> bool {
        self.violations == 0
            && self.engine.accounting_errors == 0
            && self.lost_writes == 0
            && self.dma_leaks == 0
            && self.quiescent.is_ok()
    }

    /// Faults serviced per second of storm.
    pub fn faults_per_sec(&self) -> f64 {
        self.engine.faults as f64 / self.elapsed.as_secs_f64()
    }
}

struct Shared {
    w: World,
    data: u64,
    churn: u64,
    cfg: StormConfig,
    stop: AtomicBool,
    refused: AtomicU64,
    busy: AtomicU64,
    own_checks: AtomicU64,
    lost: AtomicU64,
    mutations: AtomicU64,
    gc_ranges: AtomicU64,
}

/// Value a device thread writes: its id in the top bits, a sequence below.
fn tag(id: usize, n: u64) -> u64 {
    ((id as u64 + 1) << 48) | (n & ((1 << 48) - 1))
}

fn device_thread(s: &Shared, id: usize) -> Vec<(u64, u64)> {
    let _v = s.w.violations.scope();
    let mut d = s.w.device();
    let mut scratch = Box::new(Scratch::new());
    let mut rng = Rng::new(s.cfg.seed ^ ((id as u64 + 1) * 0x1234_5678));
    let pages = s.cfg.data_bytes / PAGE;
    let n = s.cfg.device_threads as u64;
    // Own pages: p % n == id. Expected value of each, once written.
    let own = (pages - id as u64).div_ceil(n);
    let mut expect: Vec<Option<u64>> = vec![None; own as usize];
    let mut seq = 0;
    let refuse = |e: Errno| {
        s.refused.fetch_add(1, Ordering::Relaxed);
        if e == Errno::EBUSY {
            s.busy.fetch_add(1, Ordering::Relaxed);
        }
    };
    // A read of an own page: `got` must be what this thread wrote last, `want`.
    let check_own = |what: &str, va: u64, got: u64, want: u64| {
        s.own_checks.fetch_add(1, Ordering::Relaxed);
        if got != want {
            s.lost.fetch_add(1, Ordering::Relaxed);
            s.w.violations.record(
                "I3",
                format!("{what} read {got:#x} at {va:#x}, wrote {want:#x}"),
            );
        }
    };
    for _ in 0..s.cfg.accesses_per_thread {
        let r = rng.below(100);
        if r < 70 {
            // Own page: write or verify.
            let k = rng.below(own);
            let va = s.data + (k * n + id as u64) * PAGE;
            if s.cfg.exclusive && rng.one_in(16) {
                // A device atomic in device-exclusive mode: the CPU hands the page over, and
                // takes it back at its next touch (a fork, a migration, a swap-out).
                match d.exclusive_add(va, 1) {
                    Ok(old) => {
                        if let Some(v) = expect[k as usize] {
                            check_own("device atomic", va, old, v);
                        }
                        expect[k as usize] = Some(old.wrapping_add(1));
                    }
                    Err(e) => refuse(e),
                }
            } else if rng.one_in(2) {
                seq += 1;
                let v = tag(id, seq);
                match d.write(va, v) {
                    Ok(()) => expect[k as usize] = Some(v),
                    Err(e) => refuse(e),
                }
            } else if let Some(v) = expect[k as usize] {
                match d.read(va) {
                    Ok(got) => check_own("device", va, got, v),
                    Err(e) => refuse(e),
                }
            }
        } else if r < 85 {
            // Anybody's data page: read only (the value is not ours to predict).
            let va = s.data + rng.below(pages) * PAGE;
            if let Err(e) = d.read(va) {
                refuse(e);
            }
        } else if r < 88 {
            // Prefetch or a fault batch in the churn buffer (where GC frees leaf tables): their
            // lock-free "already mapped?" walks race table freeing; the model's table memory
            // reports a walk into a freed table. Errors are expected here.
            let pages = rng.below(32) + 1;
            let va = s.churn + rng.below(s.cfg.churn_bytes / PAGE - pages) * PAGE;
            let access = if rng.one_in(2) {
                Access::Write
            } else {
                Access::Read
            };
            if rng.one_in(2) {
                let mut done = 0;
                let _ =
                    s.w.engine
                        .prefetch(&mut scratch, va, pages * PAGE, access, &mut done);
            } else {
                let mut batch: Vec<DeviceFault> = (0..pages)
                    .map(|i| DeviceFault::new(va + rng.below(pages) * PAGE + i % 2, access))
                    .collect();
                s.w.engine.fault_batch(&mut scratch, &mut batch);
            }
        } else {
            // Churn buffer: anything may fail; the device still checks every access it makes.
            let va = s.churn + rng.below(s.cfg.churn_bytes / PAGE) * PAGE;
            let res = if rng.one_in(2) {
                d.write(va, rng.next_u64())
            } else {
                d.read(va).map(|_| ())
            };
            if let Err(e) = res {
                refuse(e);
            }
        }
    }
    expect
        .iter()
        .enumerate()
        .filter_map(|(k, v)| v.map(|v| (s.data + (k as u64 * n + id as u64) * PAGE, v)))
        .collect()
}

fn mutator_thread(s: &Shared, id: usize) {
    let mut rng = Rng::new(s.cfg.seed ^ 0xdead_beef ^ id as u64);
    let mm = &s.w.mm;
    let data_pages = s.cfg.data_bytes / PAGE;
    let churn_pages = s.cfg.churn_bytes / PAGE;
    let mut scratch = Box::new(Scratch::new());
    let ops = if s.cfg.devmem_pages > 0 { 13 } else { 10 };
    while !s.stop.load(Ordering::Relaxed) {
        let page = s.data + rng.below(data_pages) * PAGE;
        // Operations on the data buffer preserve its contents; on the churn buffer they need not.
        match rng.below(ops) {
            10 | 11 => {
                let to = if rng.one_in(3) {
                    Place::System
                } else {
                    Place::Device
                };
                let n = (1 + rng.below(32)).min(data_pages - (page - s.data) / PAGE);
                let mut done = 0;
                let _v = s.w.violations.scope();
                match s
                    .w
                    .engine
                    .migrate(&mut scratch, page, n * PAGE, to, &mut done)
                {
                    Ok(_) | Err(Errno::ENOMEM) => {}
                    Err(e) => {
                        s.w.violations
                            .record("storm", format!("migration of {page:#x}+{n} failed: {e}"));
                    }
                }
            }
            12 => drop(mm.cpu_read(page)),
            0 | 1 => drop(mm.migrate(page)),
            2 | 3 => drop(mm.swap_out(page)),
            4 => drop(mm.split_thp(page & !(M2 - 1))),
            5 => {
                if let Ok(child) = mm.fork() {
                    let _ = child.cpu_write(page, rng.next_u64());
                    child.exit();
                }
            }
            6 => {
                let len = (1 + rng.below(8)) * PAGE;
                let _ = mm.mprotect(page, len.min(s.data + s.cfg.data_bytes - page), Prot::READ);
                std::thread::yield_now();
                let _ = mm.mprotect(page, len.min(s.data + s.cfg.data_bytes - page), Prot::RW);
            }
            7 => {
                // A whole range (or 2 MiB) of the churn buffer unmapped and mapped again: GC
                // collects the range while device faults re-create it, so range death, range
                // creation races and deferred notifier removal meet invalidations.
                let span = s.cfg.engine.range_size().clamp(M2, s.cfg.churn_bytes);
                let va = s.churn + rng.below(s.cfg.churn_bytes / span) * span;
                let _ = mm
                    .munmap(va, span)
                    .and_then(|_| mm.mmap_fixed(va, span, Prot::RW, MapFlags::THP).map(|_| ()));
            }
            _ => {
                let start = rng.below(churn_pages);
                let len = (1 + rng.below(64)).min(churn_pages - start) * PAGE;
                let va = s.churn + start * PAGE;
                let _ = match rng.below(5) {
                    0 => mm
                        .munmap(va, len)
                        .and_then(|_| mm.mmap_fixed(va, len, Prot::RW, MapFlags::THP).map(|_| ())),
                    1 => mm.mprotect(
                        va,
                        len,
                        if rng.one_in(2) {
                            Prot::READ
                        } else {
                            Prot::NONE
                        },
                    ),
                    2 => mm.mprotect(va, len, Prot::RW),
                    3 => mm.madvise_dontneed(va, len),
                    _ => mm.madvise_free(va, len),
                };
            }
        }
        s.mutations.fetch_add(1, Ordering::Relaxed);
        // Think time: back-to-back mmap_lock writers with none would starve the faults' readers
        // on an idle machine (the storm measures the engine, not rwsem fairness).
        std::thread::sleep(Duration::from_micros(300));
    }
}

/// Runs a storm.
pub fn run(cfg: StormConfig) -> StormReport {
    let w: World = World::builder()
        .config(cfg.engine)
        .devmem_pages(cfg.devmem_pages)
        .mm_config(MmConfig {
            notifier_jitter_us: 50,
            ..MmConfig::default()
        })
        .build()
        .expect("world");
    let data =
        w.mm.mmap(cfg.data_bytes, Prot::RW, MapFlags::THP)
            .expect("data buffer");
    let churn =
        w.mm.mmap(cfg.churn_bytes, Prot::RW, MapFlags::THP)
            .expect("churn buffer");
    let s = Arc::new(Shared {
        w,
        data,
        churn,
        cfg: cfg.clone(),
        stop: AtomicBool::new(false),
        refused: AtomicU64::new(0),
        busy: AtomicU64::new(0),
        own_checks: AtomicU64::new(0),
        lost: AtomicU64::new(0),
        mutations: AtomicU64::new(0),
        gc_ranges: AtomicU64::new(0),
    });
    let t0 = Instant::now();
    let muts: Vec<_> = (0..cfg.mutator_threads)
        .map(|i| {
            let s = s.clone();
            std::thread::spawn(move || {
                let _v = s.w.violations.scope();
                mutator_thread(&s, i)
            })
        })
        .collect();
    let gc = {
        let s = s.clone();
        std::thread::spawn(move || {
            let _v = s.w.violations.scope();
            while !s.stop.load(Ordering::Relaxed) {
                s.gc_ranges.fetch_add(s.w.gc() as u64, Ordering::Relaxed);
                // QUERY's census walks the table while GC frees leaf tables.
                let _ = s.w.engine.census();
                std::thread::sleep(Duration::from_micros(500));
            }
        })
    };
    let devs: Vec<_> = (0..cfg.device_threads)
        .map(|i| {
            let s = s.clone();
            std::thread::spawn(move || device_thread(&s, i))
        })
        .collect();
    let owned: Vec<Vec<(u64, u64)>> = devs
        .into_iter()
        .map(|h| h.join().expect("device thread"))
        .collect();
    let elapsed = t0.elapsed();
    s.stop.store(true, Ordering::Relaxed);
    for h in muts {
        h.join().expect("mutator thread");
    }
    gc.join().expect("gc thread");

    let _v = s.w.violations.scope();
    // I3 through the CPU: every own page holds the last value its thread wrote.
    let mut final_checks = 0;
    for (va, v) in owned.iter().flatten() {
        final_checks += 1;
        match s.w.mm.cpu_read(*va) {
            Ok(got) if got == *v => {}
            other => {
                s.lost.fetch_add(1, Ordering::Relaxed);
                s.w.violations.record(
                    "I3",
                    format!("CPU read {other:?} at {va:#x}, device wrote {v:#x}"),
                );
            }
        }
    }
    let engine = s.w.engine.stats();
    let dev = s.w.device_stats();
    s.w.teardown();
    let quiescent = s.w.check_quiescent();
    StormReport {
        elapsed,
        accesses: dev.accesses,
        tlb_misses: dev.tlb_misses,
        own_checks: s.own_checks.load(Ordering::Relaxed),
        final_checks,
        refused: s.refused.load(Ordering::Relaxed),
        busy: s.busy.load(Ordering::Relaxed),
        mutations: s.mutations.load(Ordering::Relaxed),
        gc_ranges: s.gc_ranges.load(Ordering::Relaxed),
        engine,
        violations: s.w.violations.count(),
        violation_messages: s.w.violations.messages().into_iter().take(10).collect(),
        lost_writes: s.lost.load(Ordering::Relaxed),
        dma_leaks: s.w.dma.live(),
        quiescent,
    }
}

/// The report as a table.
pub fn table(r: &StormReport) -> String {
    let e = &r.engine;
    let secs = r.elapsed.as_secs_f64();
    let rows: Vec<(&str, String)> = vec![
        ("wall time", format!("{secs:.2} s")),
        (
            "device accesses (each checked for I1, I2, I4)",
            format!("{}", r.accesses),
        ),
        (
            "device accesses / s",
            format!("{:.0}", r.accesses as f64 / secs),
        ),
        ("device TLB misses", format!("{}", r.tlb_misses)),
        ("faults serviced", format!("{}", e.faults)),
        ("faults / s", format!("{:.0}", r.faults_per_sec())),
        (
            "fault errors (EFAULT/EPERM/EBUSY)",
            format!("{}", e.fault_errors),
        ),
        (
            "  of which retry budget exhausted (EBUSY)",
            format!("{}", e.retry_timeouts),
        ),
        ("4 KiB leaves written", format!("{}", e.pages_mapped)),
        ("2 MiB leaves written", format!("{}", e.huge_mapped)),
        ("retries: own COW break", format!("{}", e.retries_own)),
        (
            "retries: foreign invalidation",
            format!("{}", e.retries_foreign),
        ),
        (
            "invalidation callbacks (with work)",
            format!("{} ({})", e.invalidations, e.invalidations_hit),
        ),
        ("device TLB flushes", format!("{}", e.tlb_flushes)),
        (
            "pages to device / back (engine)",
            format!("{} / {}", e.migrated_to_device, e.migrated_to_system),
        ),
        ("local leaves written", format!("{}", e.local_mapped)),
        ("device pages evicted", format!("{}", e.evicted)),
        ("DMA mappings released", format!("{}", e.dma_unmapped)),
        (
            "ranges created / removed by GC",
            format!("{} / {}", e.ranges_created, r.gc_ranges),
        ),
        ("range creation races lost", format!("{}", e.range_races)),
        ("mutator operations", format!("{}", r.mutations)),
        (
            "own-write checks during storm (I3)",
            format!("{}", r.own_checks),
        ),
        (
            "own-write checks through the CPU at the end (I3)",
            format!("{}", r.final_checks),
        ),
        ("lost writes", format!("{}", r.lost_writes)),
        (
            "engine accounting errors",
            format!("{}", e.accounting_errors),
        ),
        ("invariant violations", format!("{}", r.violations)),
        (
            "DMA mappings left after teardown",
            format!("{}", r.dma_leaks),
        ),
        (
            "quiescent after teardown",
            match &r.quiescent {
                Ok(()) => "yes".to_string(),
                Err(e) => format!("NO: {e}"),
            },
        ),
    ];
    let mut out = String::new();
    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    out.push_str(&format!("| {:w$} | {:>14} |\n", "storm", "value"));
    out.push_str(&format!("|-{}-|-{}-|\n", "-".repeat(w), "-".repeat(14)));
    for (k, v) in rows {
        out.push_str(&format!("| {k:w$} | {v:>14} |\n"));
    }
    for m in &r.violation_messages {
        out.push_str(&format!("violation: {m}\n"));
    }
    out
}
