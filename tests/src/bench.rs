//! The granularity benchmark: this design against the reference designs' granularities, with
//! the same engine code on the userspace model (`Documentation/design.rst`, "Granularity and
//! the baselines"; `bench/RESULTS.md` for a run and the commands).
//!
//! Three configurations of one engine:
//! - `ours`: 2 MiB ranges, each with its own notifier and lock ([`LockScope::PerRange`]);
//! - `gpusvm-like`: 512 MiB ranges (drm_gpusvm's notifier size) and one engine rwsem (its
//!   `notifier_lock`: read side around fault commit, write side in the callback);
//! - `test_hmm-like`: one range over the whole address space (test_hmm's single notifier) and
//!   one engine mutex (its `dmirror->mutex`).
//!
//! Every measurement calls [`Engine::fault`](svm::Engine::fault) directly on a world's engine
//! (no simulated device access, whose per-access invariant checks would dominate), so what is
//! timed is fault service: range lookup/creation, `read_begin`, `mmap_read_lock`, the VMA
//! lookup, the simulated `hmm_range_fault()`, page-table preparation, the locks, `read_retry`,
//! the simulated `dma_map_page()` and the leaf writes, plus the model's own bookkeeping
//! (machine lock, lockdep). Trials are interleaved across configurations (trial 1 of each,
//! then trial 2 of each, ..., each trial starting with the next configuration), after one
//! untimed warm-up trial of each, and every figure is the median over trials. Nothing here
//! asserts on time: `tests/tests/bench.rs` only checks that the benchmark runs and reports.

use model::{MapFlags, Prot, World};
use pgtable::table::VA_LIMIT;
use pgtable::Errno;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use svm::platform::Event;
use svm::{Access, Config, LockScope, Scratch};

const PAGE: u64 = 4096;
const M2: u64 = 2 << 20;

/// Where the benchmark's buffers go: 512 MiB aligned (a gpusvm-like range), far from the
/// model's `mmap` area, and each thread's throughput buffer 4 GiB from the next, so threads
/// never share a range at any of the three granularities but the whole-address-space one.
const BASE: u64 = 0x20_0000_0000;
const THREAD_STRIDE: u64 = 1 << 32;

/// Bytes of the kernel's per-range notifier allocation: `struct svm_notifier` of
/// `driver/glue.c` on x86-64 is `struct mmu_interval_notifier` (88 bytes in 6.12) plus three
/// pointers and a bool, 120 bytes, from kmalloc-128.
pub const KERNEL_NOTIFIER_BYTES: usize = 128;
/// Bytes of the kernel's range-index node per range: an `RBTreeNode<u64, Arc<Range>>` (rb_node
/// 24 + key 8 + value 8), from kmalloc-64.
pub const KERNEL_INDEX_NODE_BYTES: usize = 64;

/// One configuration under test.
#[derive(Clone, Copy, Debug)]
pub struct Flavor {
    /// Row name.
    pub name: &'static str,
    /// Short name for `--config` and the callgrind script.
    pub key: &'static str,
    /// The engine configuration.
    pub engine: Config,
}

/// The three configurations, with fault-around `fault_around` (the same for all three, so
/// only granularity and lock scope differ).
pub fn flavors(fault_around: u32) -> Vec<Flavor> {
    let c = |range_shift, lock_scope| Config {
        range_shift,
        lock_scope,
        fault_around_pages: fault_around,
        ..Config::default()
    };
    vec![
        Flavor {
            name: "ours",
            key: "ours",
            engine: c(21, LockScope::PerRange),
        },
        Flavor {
            name: "gpusvm-like",
            key: "gpusvm",
            engine: c(29, LockScope::EngineRwsem),
        },
        Flavor {
            name: "test_hmm-like",
            key: "test_hmm",
            engine: c(47, LockScope::EngineMutex),
        },
    ]
}

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// Trials per configuration (the figures are medians).
    pub trials: usize,
    /// Fault-around window of every configuration (1: one fault maps one 4 KiB page).
    pub fault_around: u32,
    /// 4 KiB faults timed per trial.
    pub faults_4k: u64,
    /// 2 MiB (THP) faults timed per trial.
    pub faults_2m: u64,
    /// 4 KiB faults per thread in the throughput runs.
    pub tput_pages: u64,
    /// 4 KiB pages of the faulting thread's buffer under the invalidation storm (faulted pass
    /// after pass).
    pub storm_pages: u64,
    /// How long each storm runs, in ms.
    pub storm_ms: u64,
    /// Invalidating operations per second of the storm's mutator (the table's storm columns).
    pub storm_rate: u64,
    /// Storm rates of the sweep (for the plot); empty: no sweep.
    pub sweep_rates: Vec<u64>,
    /// MiB mirrored with 4 KiB pages for the memory columns.
    pub mirror_mib: u64,
    /// Configuration keys to run (empty: all).
    pub only: Vec<String>,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            trials: 7,
            fault_around: 1,
            faults_4k: 16384,
            faults_2m: 256,
            tput_pages: 32768,
            storm_pages: 8192,
            storm_ms: 250,
            storm_rate: 2000,
            sweep_rates: Vec::new(),
            mirror_mib: 256,
            only: Vec::new(),
        }
    }
}

/// Medians (and every trial) of one configuration.
#[derive(Clone, Debug, Default)]
pub struct Row {
    /// Which configuration.
    pub name: String,
    /// Its key.
    pub key: String,
    /// `range_shift`.
    pub range_shift: u32,
    /// Lock scope.
    pub lock_scope: String,
    /// ns per 4 KiB fault, per trial.
    pub ns_4k: Vec<f64>,
    /// ns per 2 MiB fault, per trial.
    pub ns_2m: Vec<f64>,
    /// Faults/s with one faulting thread, per trial.
    pub tput_1: Vec<f64>,
    /// Faults/s with two faulting threads on disjoint ranges, per trial.
    pub tput_2: Vec<f64>,
    /// Faulting thread's faults/s under the storm, per trial.
    pub storm_tput: Vec<f64>,
    /// Retries (own + foreign) per 1000 faults under the storm, per trial.
    pub storm_retries: Vec<f64>,
    /// Of those, foreign, per 1000 faults.
    pub storm_foreign: Vec<f64>,
    /// `read_begin` calls that waited for an invalidation, per 1000 faults under the storm.
    pub storm_waits: Vec<f64>,
    /// Invalidating operations per second the mutator achieved.
    pub storm_ops: Vec<f64>,
    /// Memory per mirrored GiB (bytes): page-table pages.
    pub mem_pt: f64,
    /// Range metadata (engine `Range`, kernel notifier, index node).
    pub mem_ranges: f64,
    /// DMA address storage outside the page table (0: kept in the leaf).
    pub mem_dma: f64,
    /// Ranges and page-table pages after mirroring.
    pub mem_counts: (usize, usize),
    /// Instructions per 4 KiB / 2 MiB fault (callgrind), if measured.
    pub ir_4k: Option<f64>,
    /// See `ir_4k`.
    pub ir_2m: Option<f64>,
    /// Problems found (violations, failed faults); must stay empty.
    pub problems: Vec<String>,
}

/// One point of the storm-rate sweep.
#[derive(Clone, Debug)]
pub struct SweepPoint {
    /// Configuration key.
    pub key: String,
    /// Target invalidating operations per second.
    pub rate: u64,
    /// Median retries per 1000 faults.
    pub retries: f64,
    /// Median faulting-thread faults/s.
    pub tput: f64,
    /// Median `read_begin` waits per 1000 faults.
    pub waits: f64,
    /// Median invalidating operations per second the mutator achieved.
    pub ops: f64,
}

/// The median of `v` (NaN for none).
pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn world(cfg: Config) -> World {
    World::builder().config(cfg).build().expect("world")
}

/// Writes every page of `[va, va + len)` from the CPU, so device faults find present pages
/// (a THP buffer gets one PMD-mapped folio per 2 MiB on the first write of each block).
fn populate(w: &World, va: u64, len: u64, thp: bool) {
    let step = if thp { M2 } else { PAGE };
    let mut a = va;
    while a < va + len {
        w.mm.cpu_write(a, a).expect("populate");
        a += step;
    }
}

/// Services one read fault at each of `vas`, returning how many succeeded. The one function
/// callgrind measures (`scripts/bench-callgrind.sh` toggles collection on it): keep it out of
/// line and free of setup.
#[inline(never)]
pub fn measured_faults(w: &World, scratch: &mut Scratch, vas: &[u64]) -> u64 {
    let mut ok = 0;
    for &va in vas {
        if w.engine.fault(scratch, va, Access::Read).is_ok() {
            ok += 1;
        }
    }
    ok
}

fn pages(start: u64, n: u64, step: u64) -> Vec<u64> {
    (0..n).map(|i| start + i * step).collect()
}

/// Checks a world at the end of a measurement, tears it down, and records any problem.
fn finish(w: World, what: &str, problems: &mut Vec<String>) {
    let _s = w.violations.scope();
    if let Err(e) = w.check_quiescent() {
        problems.push(format!("{what}: not quiescent: {e}"));
    }
    w.teardown();
    if let Err(e) = w.check_quiescent() {
        problems.push(format!("{what}: not quiescent after teardown: {e}"));
    }
}

/// A world with `n` faults of `kind` ready: `(world, addresses)`. `kind` is `4k` (read faults
/// on present 4 KiB pages of a plain anonymous buffer) or `2m` (one read fault per 2 MiB block
/// of a THP buffer, each block a PMD-mapped folio: one 2 MiB device leaf each).
pub fn prepare_faults(f: &Flavor, kind: &str, n: u64) -> (World, Vec<u64>) {
    let w = world(f.engine);
    let _s = w.violations.scope();
    let vas = match kind {
        "4k" => {
            let len = (n * PAGE).next_multiple_of(M2);
            let a =
                w.mm.mmap_fixed(BASE, len, Prot::RW, MapFlags::ANON)
                    .unwrap();
            populate(&w, a, len, false);
            pages(a, n, PAGE)
        }
        "2m" => {
            let a =
                w.mm.mmap_fixed(BASE, n * M2, Prot::RW, MapFlags::THP)
                    .unwrap();
            populate(&w, a, n * M2, true);
            assert!(w.mm.is_pmd_mapped(a), "THP buffer is PMD-mapped");
            pages(a, n, M2)
        }
        _ => panic!("fault kind {kind}: 4k or 2m"),
    };
    drop(_s);
    (w, vas)
}

/// ns per fault of `kind`.
fn time_faults(f: &Flavor, kind: &str, n: u64, problems: &mut Vec<String>) -> f64 {
    let (w, vas) = prepare_faults(f, kind, n);
    let mut scratch = Box::new(Scratch::new());
    let s = w.violations.scope();
    let before = w.engine.stats();
    let t = Instant::now();
    let ok = measured_faults(&w, &mut scratch, &vas);
    let dt = t.elapsed();
    let st = w.engine.stats();
    drop(s);
    if ok != n {
        problems.push(format!("{kind}: {} of {n} faults failed", n - ok));
    }
    let leaves = if kind == "2m" {
        st.huge_mapped - before.huge_mapped
    } else {
        st.pages_mapped - before.pages_mapped
    };
    if leaves < n {
        problems.push(format!("{kind}: {leaves} leaves for {n} faults"));
    }
    finish(w, kind, problems);
    dt.as_nanos() as f64 / n as f64
}

/// Faults/s of `threads` threads, each faulting its own buffer of `per` 4 KiB pages, in
/// ranges no other thread uses (except for the whole-address-space range).
fn throughput(f: &Flavor, threads: usize, per: u64, problems: &mut Vec<String>) -> f64 {
    let w = Arc::new(world(f.engine));
    let len = (per * PAGE).next_multiple_of(M2);
    let bufs: Vec<u64> = (0..threads as u64)
        .map(|t| {
            let _s = w.violations.scope();
            let a =
                w.mm.mmap_fixed(BASE + t * THREAD_STRIDE, len, Prot::RW, MapFlags::ANON)
                    .unwrap();
            populate(&w, a, len, false);
            a
        })
        .collect();
    let go = Arc::new(Barrier::new(threads + 1));
    let hs: Vec<_> = bufs
        .iter()
        .map(|&a| {
            let (w, go) = (w.clone(), go.clone());
            std::thread::spawn(move || {
                let _s = w.violations.scope();
                let vas = pages(a, per, PAGE);
                let mut scratch = Box::new(Scratch::new());
                go.wait();
                // Each thread times itself: the spawner may be descheduled right after the
                // barrier, and must not start the clock late.
                let t = Instant::now();
                let ok = measured_faults(&w, &mut scratch, &vas);
                (t, Instant::now(), ok)
            })
        })
        .collect();
    go.wait();
    let res: Vec<(Instant, Instant, u64)> =
        hs.into_iter().map(|h| h.join().expect("faulter")).collect();
    let ok: u64 = res.iter().map(|r| r.2).sum();
    let t0 = res.iter().map(|r| r.0).min().expect("a thread");
    let t1 = res.iter().map(|r| r.1).max().expect("a thread");
    let dt = t1 - t0;
    if ok != per * threads as u64 {
        problems.push(format!("{threads} threads: {ok} faults succeeded"));
    }
    let w = Arc::into_inner(w).expect("threads joined");
    finish(w, "throughput", problems);
    ok as f64 / dt.as_secs_f64()
}

/// What one storm trial measured.
struct StormResult {
    tput: f64,
    retries: f64,
    foreign: f64,
    waits: f64,
    ops: f64,
}

/// One thread faults the `n` 4 KiB pages of its buffer, pass after pass for `ms` ms, while a
/// mutator, at `rate` operations per second, invalidates *other* ranges nearby: it alternately
/// unmaps a 64 KiB piece of a 2 MiB region beside the buffer (then maps it again and has the
/// device fault one page of it, so the region is mirrored as a device's working set would be)
/// and mprotects a piece read-only (then back). The region is in another 2 MiB range than the
/// buffer, but inside the same 512 MiB range, and the whole-address-space range covers
/// everything. Between passes (untimed) the faulter invalidates its own buffer, so the next
/// pass faults again.
fn storm(f: &Flavor, n: u64, ms: u64, rate: u64, problems: &mut Vec<String>) -> StormResult {
    let w = Arc::new(world(f.engine));
    let len = (n * PAGE).next_multiple_of(M2);
    let churn = BASE + len + M2;
    {
        let _s = w.violations.scope();
        w.mm.mmap_fixed(BASE, len, Prot::RW, MapFlags::ANON)
            .unwrap();
        populate(&w, BASE, len, false);
        w.mm.mmap_fixed(churn, M2, Prot::RW, MapFlags::ANON)
            .unwrap();
        let mut scratch = Scratch::new();
        for p in 0..32 {
            w.engine
                .fault(&mut scratch, churn + p * (64 << 10), Access::Write)
                .unwrap();
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let go = Arc::new(Barrier::new(2));
    let mutator = {
        let (w, stop, ops, go) = (w.clone(), stop.clone(), ops.clone(), go.clone());
        std::thread::spawn(move || {
            let _s = w.violations.scope();
            let mut scratch = Box::new(Scratch::new());
            let period = Duration::from_nanos(1_000_000_000 / rate.max(1));
            go.wait();
            let mut next = Instant::now();
            let mut i = 0u64;
            let mut errs = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let piece = churn + (i / 2 % 32) * (64 << 10);
                let r = if i.is_multiple_of(2) {
                    w.mm.munmap(piece, 64 << 10)
                        .and_then(|_| {
                            w.mm.mmap_fixed(piece, 64 << 10, Prot::RW, MapFlags::ANON)
                                .map(|_| ())
                        })
                        .and_then(|_| w.engine.fault(&mut scratch, piece, Access::Write))
                } else {
                    w.mm.mprotect(piece, 64 << 10, Prot::READ)
                        .and_then(|_| w.mm.mprotect(piece, 64 << 10, Prot::RW))
                };
                if let Err(e) = r {
                    errs.push(e);
                }
                if i % 16 == 15 {
                    // The driver's GC worker, woken by the unmaps.
                    w.engine.gc();
                }
                i += 1;
                ops.fetch_add(1, Ordering::Relaxed);
                next += period;
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                } else if now - next > 16 * period {
                    // Far behind (the machine is busy): do not build a backlog.
                    next = now;
                }
            }
            errs
        })
    };
    let _s = w.violations.scope();
    let vas = pages(BASE, n, PAGE);
    let mut scratch = Box::new(Scratch::new());
    let before = w.engine.stats();
    let nb = w.mm.notifier_stats();
    go.wait();
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_millis(ms);
    let ops0 = ops.load(Ordering::Relaxed);
    let (mut ok, mut faults, mut busy) = (0, 0, Duration::ZERO);
    loop {
        let t = Instant::now();
        ok += measured_faults(&w, &mut scratch, &vas);
        busy += t.elapsed();
        faults += n;
        if Instant::now() >= deadline {
            break;
        }
        // Untimed: drop this buffer's device mappings so the next pass faults again.
        w.mm.invalidate(BASE, BASE + len, Event::Clear);
    }
    let dt = t0.elapsed();
    let ops1 = ops.load(Ordering::Relaxed);
    let st = w.engine.stats();
    let na = w.mm.notifier_stats();
    stop.store(true, Ordering::Relaxed);
    let errs: Vec<Errno> = mutator.join().expect("mutator");
    drop(_s);
    if ok != faults {
        problems.push(format!("storm: {} of {faults} faults failed", faults - ok));
    }
    if !errs.is_empty() {
        problems.push(format!(
            "storm mutator: {} errors, first {:?}",
            errs.len(),
            errs[0]
        ));
    }
    let w = Arc::into_inner(w).expect("threads joined");
    finish(w, "storm", problems);
    let k = 1000.0 / faults as f64;
    StormResult {
        tput: faults as f64 / busy.as_secs_f64(),
        retries: (st.retries_own + st.retries_foreign - before.retries_own - before.retries_foreign)
            as f64
            * k,
        foreign: (st.retries_foreign - before.retries_foreign) as f64 * k,
        waits: (na.read_begin_waits - nb.read_begin_waits) as f64 * k,
        ops: (ops1 - ops0) as f64 / dt.as_secs_f64(),
    }
}

/// Memory per mirrored GiB after mirroring `mib` MiB with 4 KiB pages: (page tables, range
/// metadata, DMA addresses outside the table, (ranges, tables)).
fn memory(f: &Flavor, mib: u64, problems: &mut Vec<String>) -> (f64, f64, f64, (usize, usize)) {
    // Fault-around over a whole 2 MiB block maps the same 4 KiB leaves with 512 times fewer
    // faults; the layout does not depend on how many faults built it.
    let cfg = Config {
        fault_around_pages: 512,
        ..f.engine
    };
    let w = world(cfg);
    let len = mib << 20;
    {
        let _s = w.violations.scope();
        w.mm.mmap_fixed(BASE, len, Prot::RW, MapFlags::ANON)
            .unwrap();
        populate(&w, BASE, len, false);
        let mut scratch = Box::new(Scratch::new());
        let vas = pages(BASE, len / M2, M2);
        let ok = measured_faults(&w, &mut scratch, &vas);
        if ok != len / M2 {
            problems.push(format!("memory: {ok} faults succeeded"));
        }
    }
    let c = w.engine.page_table().census();
    if c.pages as u64 != len / PAGE {
        problems.push(format!("memory: {} 4 KiB leaves for {mib} MiB", c.pages));
    }
    let ranges = w.engine.range_count();
    let table_bytes = model::TableMem::table_bytes();
    let scale = (1u64 << 30) as f64 / len as f64;
    let pt = (c.tables * table_bytes) as f64 * scale;
    let meta = (ranges
        * (w.engine.range_metadata_bytes() + KERNEL_NOTIFIER_BYTES + KERNEL_INDEX_NODE_BYTES))
        as f64
        * scale;
    finish(w, "memory", problems);
    // The DMA address of each page is in its leaf PTE (and the pfn in the leaf's aux word):
    // nothing beside the page table.
    (pt, meta, 0.0, (ranges, c.tables))
}

/// Runs the benchmark: every trial of every configuration, interleaved; then the sweep.
pub fn run(cfg: &BenchConfig, mut progress: impl FnMut(&str)) -> (Vec<Row>, Vec<SweepPoint>) {
    let fl: Vec<Flavor> = flavors(cfg.fault_around)
        .into_iter()
        .filter(|f| cfg.only.is_empty() || cfg.only.iter().any(|k| k == f.key))
        .collect();
    let mut rows: Vec<Row> = fl
        .iter()
        .map(|f| Row {
            name: f.name.into(),
            key: f.key.into(),
            range_shift: f.engine.range_shift,
            lock_scope: format!("{:?}", f.engine.lock_scope),
            ..Row::default()
        })
        .collect();
    for (f, r) in fl.iter().zip(rows.iter_mut()) {
        progress(&format!("memory: {}", f.name));
        let (pt, meta, dma, counts) = memory(f, cfg.mirror_mib, &mut r.problems);
        (r.mem_pt, r.mem_ranges, r.mem_dma, r.mem_counts) = (pt, meta, dma, counts);
    }
    // One untimed warm-up trial of every configuration first: the allocator's state (glibc
    // raises its mmap threshold as large blocks are freed) and the page cache of a fresh
    // process otherwise favour whichever configuration runs later.
    for f in &fl {
        progress(&format!("warm-up: {}", f.name));
        let mut p = Vec::new();
        time_faults(f, "4k", cfg.faults_4k, &mut p);
        time_faults(f, "2m", cfg.faults_2m, &mut p);
        throughput(f, 2, cfg.tput_pages, &mut p);
        storm(
            f,
            cfg.storm_pages,
            cfg.storm_ms / 4 + 1,
            cfg.storm_rate,
            &mut p,
        );
    }
    for t in 0..cfg.trials {
        // Interleaved, and each trial starts with the next configuration, so that no
        // configuration always runs right after the same other one.
        for k in 0..fl.len() {
            let i = (t + k) % fl.len();
            let (f, r) = (&fl[i], &mut rows[i]);
            progress(&format!("trial {}/{}: {}", t + 1, cfg.trials, f.name));
            let p = &mut r.problems;
            r.ns_4k.push(time_faults(f, "4k", cfg.faults_4k, p));
            r.ns_2m.push(time_faults(f, "2m", cfg.faults_2m, p));
            r.tput_1.push(throughput(f, 1, cfg.tput_pages, p));
            r.tput_2.push(throughput(f, 2, cfg.tput_pages, p));
            let s = storm(f, cfg.storm_pages, cfg.storm_ms, cfg.storm_rate, p);
            r.storm_tput.push(s.tput);
            r.storm_retries.push(s.retries);
            r.storm_foreign.push(s.foreign);
            r.storm_waits.push(s.waits);
            r.storm_ops.push(s.ops);
        }
    }
    let mut sweep = Vec::new();
    for &rate in &cfg.sweep_rates {
        let mut per: Vec<[Vec<f64>; 4]> = vec![Default::default(); fl.len()];
        for t in 0..cfg.trials {
            for k in 0..fl.len() {
                let i = (t + k) % fl.len();
                let (f, r) = (&fl[i], &mut rows[i]);
                progress(&format!(
                    "sweep {rate}/s, trial {}/{}: {}",
                    t + 1,
                    cfg.trials,
                    f.name
                ));
                let s = storm(f, cfg.storm_pages, cfg.storm_ms, rate, &mut r.problems);
                for (v, x) in per[i].iter_mut().zip([s.retries, s.tput, s.waits, s.ops]) {
                    v.push(x);
                }
            }
        }
        for (f, [re, tp, wa, op]) in fl.iter().zip(per) {
            sweep.push(SweepPoint {
                key: f.key.into(),
                rate,
                retries: median(&re),
                tput: median(&tp),
                waits: median(&wa),
                ops: median(&op),
            });
        }
    }
    (rows, sweep)
}

/// The machine, for the report: (nproc, CPU model, load average).
pub fn machine() -> (usize, String, String) {
    let n = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into());
    (n, cpu, load)
}

/// The git commit of the working tree (`-dirty` if it has changes), or `unknown`.
pub fn commit() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(c) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{c}-dirty")
            } else {
                c
            }
        }
        None => "unknown".into(),
    }
}

fn human_range(shift: u32) -> String {
    match shift {
        s if s >= 40 => format!("{} TiB", 1u64 << (s - 40)),
        s if s >= 30 => format!("{} GiB", 1u64 << (s - 30)),
        s if s >= 20 => format!("{} MiB", 1u64 << (s - 20)),
        s => format!("{} KiB", 1u64 << (s - 10)),
    }
}

fn scope_name(s: &str) -> &'static str {
    match s {
        "PerRange" => "per range",
        "EngineRwsem" => "engine rwsem",
        "EngineMutex" => "engine mutex",
        _ => "?",
    }
}

/// The columns of the table: (header, value of a row). `None` prints `-`.
#[allow(clippy::type_complexity)]
fn columns() -> Vec<(&'static str, Box<dyn Fn(&Row) -> Option<f64>>)> {
    vec![
        ("4K fault ns", Box::new(|r| Some(median(&r.ns_4k)))),
        ("2M fault ns", Box::new(|r| Some(median(&r.ns_2m)))),
        ("4K fault Ir", Box::new(|r| r.ir_4k)),
        ("2M fault Ir", Box::new(|r| r.ir_2m)),
        ("1T faults/s", Box::new(|r| Some(median(&r.tput_1)))),
        ("2T faults/s", Box::new(|r| Some(median(&r.tput_2)))),
        (
            "2T/1T",
            Box::new(|r| Some(median(&r.tput_2) / median(&r.tput_1))),
        ),
        ("storm faults/s", Box::new(|r| Some(median(&r.storm_tput)))),
        (
            "storm retries/1k",
            Box::new(|r| Some(median(&r.storm_retries))),
        ),
        (
            "storm rb waits/1k",
            Box::new(|r| Some(median(&r.storm_waits))),
        ),
        ("storm ops/s", Box::new(|r| Some(median(&r.storm_ops)))),
        ("PT KiB/GiB", Box::new(|r| Some(r.mem_pt / 1024.0))),
        ("ranges KiB/GiB", Box::new(|r| Some(r.mem_ranges / 1024.0))),
        ("DMA KiB/GiB", Box::new(|r| Some(r.mem_dma / 1024.0))),
        (
            "mem KiB/GiB",
            Box::new(|r| Some((r.mem_pt + r.mem_ranges + r.mem_dma) / 1024.0)),
        ),
    ]
}

fn fmt_num(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v.is_nan() => "-".into(),
        Some(v) if v.is_infinite() => "inf".into(),
        Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

fn fmt_ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if !a.is_nan() && !b.is_nan() => {
            if b == 0.0 {
                if a == 0.0 {
                    "=".into()
                } else {
                    "inf".into()
                }
            } else {
                format!("{:.2}x", a / b)
            }
        }
        _ => "-".into(),
    }
}

/// The one table: a row per configuration, then a row per baseline with ours ÷ that baseline.
pub fn table(rows: &[Row]) -> String {
    let cols = columns();
    let mut head = vec![
        "config".to_string(),
        "range".to_string(),
        "lock".to_string(),
    ];
    head.extend(cols.iter().map(|(h, _)| h.to_string()));
    let mut body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut v = vec![
                r.name.clone(),
                human_range(r.range_shift),
                scope_name(&r.lock_scope).to_string(),
            ];
            v.extend(cols.iter().map(|(_, f)| fmt_num(f(r))));
            v
        })
        .collect();
    if let Some(ours) = rows.iter().find(|r| r.key == "ours") {
        for b in rows.iter().filter(|r| r.key != "ours") {
            let mut v = vec![format!("ours ÷ {}", b.name), String::new(), String::new()];
            v.extend(cols.iter().map(|(_, f)| fmt_ratio(f(ours), f(b))));
            body.push(v);
        }
    }
    let w: Vec<usize> = (0..head.len())
        .map(|i| {
            body.iter()
                .map(|r| r[i].chars().count())
                .chain([head[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        let mut s = String::from("|");
        for (i, c) in cells.iter().enumerate() {
            let pad = w[i] - c.chars().count();
            if i < 3 {
                let _ = write!(s, " {c}{} |", " ".repeat(pad));
            } else {
                let _ = write!(s, " {}{c} |", " ".repeat(pad));
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(&head);
    out.push('|');
    for (i, wi) in w.iter().enumerate() {
        let dashes = "-".repeat(*wi);
        if i < 3 {
            let _ = write!(out, "-{dashes}-|");
        } else {
            let _ = write!(out, "-{dashes}:|");
        }
    }
    out.push('\n');
    for r in &body {
        out.push_str(&line(r));
    }
    out
}

/// The legend printed under the table.
pub fn legend(cfg: &BenchConfig) -> String {
    format!(
        "Medians of {trials} interleaved trials. All rows run the same engine code; only \
Config::range_shift and Config::lock_scope differ (fault-around {fa} page(s) for all).\n\
- 4K/2M fault ns: Engine::fault() per read fault ({n4} faults on present 4 KiB pages; {n2} \
faults on PMD-mapped THP blocks, one 2 MiB device leaf each), range creation amortised in. \
Ir: instructions per fault under callgrind (scripts/bench-callgrind.sh), '-' if not run.\n\
- 1T/2T faults/s: {tp} 4 KiB faults per thread, each thread on its own buffer 4 GiB from the \
other's (disjoint ranges at 2 MiB and 512 MiB granularity; one shared range at 128 TiB).\n\
- storm: for {sms} ms one thread faults a {sp}-page buffer pass after pass (its own \
mappings dropped between passes, untimed) while a mutator does {rate} invalidating ops/s \
(munmap+mmap of a 64 KiB piece, then a device fault in it; or mprotect RO then RW) in a \
2 MiB region beside the buffer: other 2 MiB ranges, the same 512 MiB range. faults/s: the \
faulter's, over its fault time. retries/1k: read_begin restarts (hmm EBUSY, check_retry, \
read_retry) per 1000 faults, engine-wide (the mutator's few faults included); rb waits/1k: \
read_begin calls that slept for an invalidation; ops/s: what the mutator achieved.\n\
- memory: after mirroring {mib} MiB with 4 KiB leaves, scaled to 1 GiB. PT: page-table pages \
(per table a 4 KiB page of PTEs, a 4 KiB page of aux words and the node with the lock, as \
the kernel module allocates them: two order-0 pages and a small slab object). ranges: engine Range + kernel notifier \
({nb} B) + index node ({ib} B) per range. DMA: 0, the DMA address is in the leaf PTE and the \
pfn in its aux word (counted in PT); the kernel module's DMA cache (one entry per mapped \
page, shared by aliases) is not modelled.\n\
- ours ÷ X rows: ours divided by X, column by column ('=' both zero, 'inf' X zero).\n\
- Included in every fault: the model's simulated kernel (mmap_lock rwsem, the notifier core's \
lock and mm-wide read_begin wait, the hmm walk under the model's single machine lock, DMA \
tracker) and its lockdep bookkeeping; no device access and no per-access invariant checks \
are timed. The model's machine lock serialises hmm walks of all threads, which the kernel \
does not: 2T/1T understates every configuration's scaling alike.\n",
        trials = cfg.trials,
        fa = cfg.fault_around,
        n4 = cfg.faults_4k,
        n2 = cfg.faults_2m,
        tp = cfg.tput_pages,
        sp = cfg.storm_pages,
        sms = cfg.storm_ms,
        rate = cfg.storm_rate,
        mib = cfg.mirror_mib,
        nb = KERNEL_NOTIFIER_BYTES,
        ib = KERNEL_INDEX_NODE_BYTES,
    )
}

fn json_num(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        "null".into()
    }
}

fn json_list(v: &[f64]) -> String {
    let items: Vec<String> = v.iter().map(|x| json_num(*x)).collect();
    format!("[{}]", items.join(", "))
}

fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// Everything as JSON (for `scripts/bench-plot.py`).
pub fn json(cfg: &BenchConfig, rows: &[Row], sweep: &[SweepPoint]) -> String {
    let (n, cpu, load) = machine();
    let mut o = String::from("{\n");
    let _ = writeln!(
        o,
        "  \"machine\": {{\"nproc\": {n}, \"cpu\": {}, \"loadavg\": {}}},",
        json_str(&cpu),
        json_str(&load)
    );
    let _ = writeln!(o, "  \"commit\": {},", json_str(&commit()));
    let _ = writeln!(
        o,
        "  \"params\": {{\"trials\": {}, \"fault_around\": {}, \"faults_4k\": {}, \"faults_2m\": {}, \"tput_pages\": {}, \"storm_pages\": {}, \"storm_ms\": {}, \"storm_rate\": {}, \"mirror_mib\": {}}},",
        cfg.trials,
        cfg.fault_around,
        cfg.faults_4k,
        cfg.faults_2m,
        cfg.tput_pages,
        cfg.storm_pages,
        cfg.storm_ms,
        cfg.storm_rate,
        cfg.mirror_mib
    );
    o.push_str("  \"configs\": [\n");
    for (i, r) in rows.iter().enumerate() {
        let opt = |v: Option<f64>| v.map_or("null".into(), json_num);
        let _ = write!(
            o,
            "    {{\"name\": {}, \"key\": {}, \"range_shift\": {}, \"lock_scope\": {},\n\
             \x20     \"ns_4k\": {}, \"ns_2m\": {}, \"ir_4k\": {}, \"ir_2m\": {},\n\
             \x20     \"tput_1\": {}, \"tput_2\": {},\n\
             \x20     \"storm_tput\": {}, \"storm_retries\": {}, \"storm_foreign\": {}, \"storm_waits\": {}, \"storm_ops\": {},\n\
             \x20     \"mem_pt\": {}, \"mem_ranges\": {}, \"mem_dma\": {}, \"ranges\": {}, \"tables\": {},\n\
             \x20     \"problems\": [{}]}}",
            json_str(&r.name),
            json_str(&r.key),
            r.range_shift,
            json_str(&r.lock_scope),
            json_list(&r.ns_4k),
            json_list(&r.ns_2m),
            opt(r.ir_4k),
            opt(r.ir_2m),
            json_list(&r.tput_1),
            json_list(&r.tput_2),
            json_list(&r.storm_tput),
            json_list(&r.storm_retries),
            json_list(&r.storm_foreign),
            json_list(&r.storm_waits),
            json_list(&r.storm_ops),
            json_num(r.mem_pt),
            json_num(r.mem_ranges),
            json_num(r.mem_dma),
            r.mem_counts.0,
            r.mem_counts.1,
            r.problems
                .iter()
                .map(|p| json_str(p))
                .collect::<Vec<_>>()
                .join(", ")
        );
        o.push_str(if i + 1 < rows.len() { ",\n" } else { "\n" });
    }
    o.push_str("  ],\n  \"sweep\": [\n");
    for (i, p) in sweep.iter().enumerate() {
        let _ = write!(
            o,
            "    {{\"key\": {}, \"rate\": {}, \"retries\": {}, \"tput\": {}, \"waits\": {}, \"ops\": {}}}",
            json_str(&p.key),
            p.rate,
            json_num(p.retries),
            json_num(p.tput),
            json_num(p.waits),
            json_num(p.ops)
        );
        o.push_str(if i + 1 < sweep.len() { ",\n" } else { "\n" });
    }
    o.push_str("  ]\n}\n");
    o
}

/// The table's medians as CSV, one line per configuration.
pub fn csv(rows: &[Row]) -> String {
    let cols = columns();
    let mut o = String::from("config,range_shift,lock_scope");
    for (h, _) in &cols {
        let _ = write!(o, ",{h}");
    }
    o.push('\n');
    for r in rows {
        let _ = write!(o, "{},{},{}", r.name, r.range_shift, r.lock_scope);
        for (_, f) in &cols {
            let _ = write!(o, ",{}", f(r).map_or(String::new(), |v| format!("{v}")));
        }
        o.push('\n');
    }
    o
}

/// Guards against a silent change of the buffers' placement: they must fit the device VA.
const _: () = assert!(BASE + 2 * THREAD_STRIDE < VA_LIMIT);

/// One line of the batch-service table ([`batch_service`]).
#[derive(Clone, Debug)]
pub struct BatchRow {
    /// What was queued.
    pub pattern: &'static str,
    /// Queued faults (distinct pages) per batch.
    pub faults: u64,
    /// `hmm_range_fault()` calls per batch: one by one, and through `fault_batch`.
    pub hmm_single: u64,
    pub hmm_batch: u64,
    /// Windows `fault_batch` formed.
    pub windows: u64,
    /// Median µs per batch: one by one, and through `fault_batch`.
    pub us_single: f64,
    pub us_batch: f64,
}

/// A hardware fault buffer's worth of first-touch write faults (pages absent from the CPU, as
/// a kernel filling a fresh buffer sees them) on `ours`, serviced one fault at a time (what
/// batch service did before windows: sort, skip what is mapped, fault each page) and through
/// [`Engine::fault_batch`](svm::Engine::fault_batch), which serves queued faults close
/// together as one window. `dense`: 256 consecutive pages; `strided`: every 4th page (gaps
/// the window faults in too); `sparse`: every 32nd page (gaps wider than a fault-around
/// block: no window). Each trial uses a fresh world; medians over `trials`.
pub fn batch_service(trials: usize, problems: &mut Vec<String>) -> Vec<BatchRow> {
    let f = flavors(16)[0];
    let mut rows = Vec::new();
    for (pattern, step) in [("dense", 1u64), ("strided 4", 4), ("sparse 32", 32)] {
        let n = 256u64;
        let (mut single, mut batch) = (Vec::new(), Vec::new());
        let (mut hs, mut hb, mut wins) = (0, 0, 0);
        for _ in 0..trials.max(1) {
            for windows in [false, true] {
                let w = world(f.engine);
                let va =
                    w.mm.mmap_fixed(BASE, n * step * PAGE, Prot::RW, MapFlags::ANON)
                        .expect("mmap");
                let mut scratch = Box::new(Scratch::new());
                let mut q: Vec<svm::DeviceFault> = (0..n)
                    .rev()
                    .map(|i| svm::DeviceFault::new(va + i * step * PAGE, Access::Write))
                    .collect();
                let calls = w.mm.hmm_calls();
                let t = Instant::now();
                let ok = {
                    let _s = w.violations.scope();
                    if windows {
                        w.engine.fault_batch(&mut scratch, &mut q);
                        q.iter().filter(|f| f.result == Some(Ok(()))).count() as u64
                    } else {
                        q.sort_by_key(|f| f.va);
                        let mut ok = 0;
                        for f in &q {
                            let mapped = w
                                .engine
                                .page_table()
                                .translate(f.va)
                                .is_some_and(|t| t.perm.write);
                            if mapped || w.engine.fault(&mut scratch, f.va, Access::Write).is_ok() {
                                ok += 1;
                            }
                        }
                        ok
                    }
                };
                let us = t.elapsed().as_secs_f64() * 1e6;
                let calls = w.mm.hmm_calls() - calls;
                if ok != n {
                    problems.push(format!("batch {pattern}: {ok} of {n} faults serviced"));
                }
                if windows {
                    batch.push(us);
                    hb = calls;
                    wins = w.engine.stats().batch_windows;
                } else {
                    single.push(us);
                    hs = calls;
                }
                finish(w, "batch service", problems);
            }
        }
        rows.push(BatchRow {
            pattern,
            faults: n,
            hmm_single: hs,
            hmm_batch: hb,
            windows: wins,
            us_single: median(&single),
            us_batch: median(&batch),
        });
    }
    rows
}

/// The batch-service table.
pub fn batch_table(rows: &[BatchRow]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| queued write faults (first touch) | faults | hmm calls: one by one / windows | windows | µs per batch: one by one / windows | speed-up |"
    );
    let _ = writeln!(s, "|---|--:|--:|--:|--:|--:|");
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} / {} | {} | {:.0} / {:.0} | {:.2}x |",
            r.pattern,
            r.faults,
            r.hmm_single,
            r.hmm_batch,
            r.windows,
            r.us_single,
            r.us_batch,
            r.us_single / r.us_batch
        );
    }
    s
}
