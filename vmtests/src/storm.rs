//! The in-VM fault storm: `svm-vmtests --storm [--threads N] [--seconds S] [--mib M]
//! [--seed X] [--churn munmap,mprotect,fork|none]`; also the last test (`storm`) of the normal
//! suite, with the same defaults (4 job threads, 10 s, 64 MiB, all three churn threads).
//!
//! One bound file (one device context, one fault worker) and one large buffer, 2 MiB aligned,
//! its first half `MADV_HUGEPAGE`, its second half `MADV_NOHUGEPAGE`:
//!
//! - the first three quarters are split into one slice per job thread. A job thread writes the
//!   first half of its slice through the CPU (the rest stays untouched: zero page, huge zero
//!   page), then submits jobs of 1–6 FILL/COPY/ADD/READ ops on its own slice, 85% of them in a
//!   64-page hot window that moves now and then, the rest anywhere in the slice. It keeps a
//!   shadow copy of the slice and checks every READ sum and every ADD's old value against it;
//!   now and then it writes a run of words, or checks a page, through the CPU. A job that fails
//!   with `-EPERM`/`-EFAULT` while an mprotect down of its slice was in flight (or with
//!   `-EBUSY`) is resubmitted from the failing op: FILL and COPY (source and destination never
//!   overlap) are idempotent and a failed ADD did nothing, so the shadow stays exact. Any other
//!   error, or one while no mprotect was in flight, fails the storm.
//! - the last quarter is the munmap zone: the job threads also run single FILL/READ ops there
//!   (`-EFAULT` expected, nothing checked) while a churn thread munmaps and re-mmaps
//!   (`MAP_FIXED_NOREPLACE`, randomly THP-advised) or `MADV_DONTNEED`s pieces of it: a 2 MiB
//!   chunk or 1–128 pages.
//! - a second churn thread mprotects 1–32 (sometimes up to 512) pages of a slice down
//!   (`PROT_READ`, 1 in 4 `PROT_NONE`) for up to 2 ms and back up; a third forks about once a
//!   second: the child makes its copy of the slices writable, writes a marker into every
//!   256 KiB, sometimes lives on for 5 ms (COW breaks in both orders), and exits.
//!
//! Under TCG with the debug kernel mapping a page costs about a millisecond and every churn
//! operation holds `mmap_lock` for writing (which the fault worker waits for), so the churn
//! rates are tuned to leave the job threads some throughput; the hot window keeps most ops on
//! mapped pages, where the invalidations hit them.
//!
//! When the time is up the churn threads stop (every page is RW again), then each job thread
//! checks its slice: through the device, a READ sum per run of pages it touched plus the first
//! page of every 256 KiB (prefetched first), and through the CPU, every word. Finally the
//! device page table must be at rest (no zapped leaves, one DMA mapping per valid leaf). Prints
//! a summary table; any lost write, unexpected error or failed check fails the storm.

use crate::uapi::*;
use crate::{add, copy, ename, errno, fill, read, Buf, Dev, TResult, HUGE, PAGE};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

const CHURNS: [&str; 3] = ["munmap", "mprotect", "fork"];

#[derive(Clone, Debug)]
pub struct StormCfg {
    /// Job threads (one slice each).
    pub threads: usize,
    /// Storm duration (the final checks come on top).
    pub seconds: f64,
    /// Buffer size in MiB (multiple of 8, at least 8).
    pub mib: usize,
    pub seed: u64,
    /// Churn threads to run: any of "munmap", "mprotect", "fork".
    pub churn: Vec<String>,
    /// A placement policy (MADVISE) over the buffer: the even slices and the munmap zone
    /// prefer device memory (every device fault moves a block there, and a buffer larger
    /// than device memory keeps evicting), and the last slice, if it is wholly
    /// `MADV_NOHUGEPAGE`, has device-exclusive atomics.
    pub placement: bool,
    /// A second device (`/dev/accel/accel1`, a peer) runs the odd slices' jobs and half the
    /// munmap zone's; with `placement`, its slices prefer accel0's memory (reached over the
    /// interconnect) and its zone its own, so both memories fill, evict and are read by both
    /// devices.
    pub peer: bool,
}

impl Default for StormCfg {
    fn default() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        StormCfg {
            threads: 4,
            seconds: 10.0,
            mib: 64,
            seed: seed | 1,
            churn: CHURNS.iter().map(|s| s.to_string()).collect(),
            placement: false,
            peer: false,
        }
    }
}

impl StormCfg {
    /// Applies `--threads/--seconds/--mib/--seed VALUE` at `args[i]`; returns false if the
    /// option is not one of them.
    pub fn parse_opt(&mut self, args: &[String], i: &mut usize) -> Result<bool, String> {
        let opt = args[*i].as_str();
        if opt == "--placement" {
            self.placement = true;
            *i += 1;
            return Ok(true);
        }
        if opt == "--peer" {
            self.peer = true;
            *i += 1;
            return Ok(true);
        }
        if !matches!(
            opt,
            "--threads" | "--seconds" | "--mib" | "--seed" | "--churn"
        ) {
            return Ok(false);
        }
        let v = args
            .get(*i + 1)
            .ok_or_else(|| format!("{opt} needs a value"))?;
        let bad = || format!("{opt}: bad value {v:?}");
        match opt {
            "--threads" => self.threads = v.parse().map_err(|_| bad())?,
            "--seconds" => self.seconds = v.parse().map_err(|_| bad())?,
            "--mib" => self.mib = v.parse().map_err(|_| bad())?,
            "--churn" => {
                self.churn = v
                    .split(',')
                    .filter(|c| !c.is_empty() && *c != "none")
                    .map(|c| c.to_string())
                    .collect();
                if let Some(c) = self.churn.iter().find(|c| !CHURNS.contains(&c.as_str())) {
                    return Err(format!(
                        "--churn: unknown {c:?} (munmap,mprotect,fork or none)"
                    ));
                }
            }
            _ => {
                self.seed = match v.strip_prefix("0x") {
                    Some(h) => u64::from_str_radix(h, 16),
                    None => v.parse(),
                }
                .map_err(|_| bad())?
            }
        }
        if self.threads == 0 || self.threads > 64 {
            return Err("--threads: 1..=64".into());
        }
        if self.mib < 8 || !self.mib.is_multiple_of(8) || self.mib > 4096 {
            return Err("--mib: a multiple of 8 in 8..=4096".into());
        }
        if !(self.seconds > 0.0 && self.seconds < 86400.0) {
            return Err("--seconds: > 0".into());
        }
        *i += 2;
        Ok(true)
    }
}

// ---- bits -----------------------------------------------------------------------------

/// xorshift64*.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64, stream: u64) -> Rng {
        let mut r = Rng((seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1);
        for _ in 0..4 {
            r.next();
        }
        r
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in 0..n (n > 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub(crate) fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    /// A span length in words, mostly small: ≤ 512 B (50%), ≤ 4 KiB (30%), ≤ 32 KiB (15%),
    /// ≤ 256 KiB (5%). (Under TCG a fault costs milliseconds: big spans would leave few jobs.)
    fn words(&mut self, max: u64) -> u64 {
        let cap = match self.below(20) {
            0..=9 => 64,
            10..=15 => 512,
            16..=18 => 4096,
            _ => 32768,
        };
        1 + self.below(cap.min(max))
    }
}

fn sleep_us(us: u64) {
    std::thread::sleep(Duration::from_micros(us));
}

const MARKER: u64 = 0xc41d_c41d_c41d_c41d;
const NERR: usize = 256;

fn errs_new() -> [AtomicU64; NERR] {
    std::array::from_fn(|_| AtomicU64::new(0))
}

fn errs_fmt(e: &[AtomicU64; NERR]) -> String {
    let v: Vec<String> = e
        .iter()
        .enumerate()
        .filter(|(_, n)| n.load(Relaxed) > 0)
        .map(|(i, n)| format!("{} {}", ename(i as i32), n.load(Relaxed)))
        .collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

struct Slice {
    base: u64,
    len: usize,
    /// Held by the mprotect thread while (part of) the slice is down, and by the owner for
    /// its CPU accesses (a CPU access to a PROT_READ/PROT_NONE page would be a SIGSEGV).
    lock: Mutex<()>,
    /// Odd while an mprotect down is in flight; +2 per down/up cycle.
    downs: AtomicU64,
}

impl Slice {
    fn words(&self) -> &[AtomicU64] {
        // SAFETY: part of the storm buffer, which outlives every thread; 8-byte aligned.
        unsafe { std::slice::from_raw_parts(self.base as *const AtomicU64, self.len / 8) }
    }
}

#[derive(Default)]
struct Counters {
    submits: AtomicU64,
    own_jobs: AtomicU64,
    zone_jobs: AtomicU64,
    cpu_writes: AtomicU64,
    cpu_checks: AtomicU64,
    dev_checks: AtomicU64,
    munmaps: AtomicU64,
    dontneeds: AtomicU64,
    mprotects: AtomicU64,
    forks: AtomicU64,
    lost_during: AtomicU64,
    unexpected: AtomicU64,
}

struct Shared {
    dev: Dev,
    /// `StormCfg::peer`: accel1, bound to this process too.
    peer: Option<Dev>,
    stop: AtomicBool,
    problems: Mutex<Vec<String>>,
    own_err: [AtomicU64; NERR],
    zone_err: [AtomicU64; NERR],
    c: Counters,
    slices: Vec<Slice>,
    /// The slices, contiguous.
    owned: (u64, usize),
    /// The munmap zone.
    zone: (u64, usize),
    /// Held by a munmap churn thread across one munmap, and across one mmap with its madvise
    /// and CPU touch: the two threads interleave those steps on the same pieces, but neither
    /// unmaps a piece between the other's mmap and its touch (a SIGSEGV in the storm).
    zone_map: Mutex<()>,
}

impl Shared {
    /// The device running thread `t`'s jobs: the peer for odd slices, if there is one.
    fn dev_of(&self, t: usize) -> &Dev {
        match &self.peer {
            Some(p) if t % 2 == 1 => p,
            _ => &self.dev,
        }
    }

    /// Records a problem (the first 20 are kept) and stops the storm.
    fn problem(&self, msg: String) {
        let mut p = self.problems.lock().unwrap();
        if p.len() < 20 {
            p.push(msg);
        }
        self.stop.store(true, SeqCst);
    }

    fn stopped(&self) -> bool {
        self.stop.load(Relaxed)
    }
}

// ---- job threads ------------------------------------------------------------------------

fn kind_name(k: u32) -> &'static str {
    match k {
        SVM_ACCEL_OP_FILL => "FILL",
        SVM_ACCEL_OP_COPY => "COPY",
        SVM_ACCEL_OP_ADD => "ADD",
        SVM_ACCEL_OP_READ => "READ",
        _ => "?",
    }
}

/// The span an op writes, if any.
fn write_span(o: &drm_svm_accel_op) -> Option<(u64, u64)> {
    match o.kind {
        SVM_ACCEL_OP_FILL | SVM_ACCEL_OP_COPY => Some((o.dst, o.dst + o.len)),
        SVM_ACCEL_OP_ADD => Some((o.dst, o.dst + 8)),
        _ => None,
    }
}

/// Runs a job on the owner's slice to completion: resubmits from the failing op while the
/// failure is explained by an mprotect down in flight (or is EBUSY).
fn run_own(sh: &Shared, t: usize, ops: &mut [drm_svm_accel_op]) -> TResult {
    let s = &sh.slices[t];
    let mut k = 0;
    let t0 = Instant::now();
    loop {
        let seq0 = s.downs.load(SeqCst);
        sh.c.submits.fetch_add(1, Relaxed);
        let r = sh
            .dev_of(t)
            .submit(&mut ops[k..])
            .map_err(|e| format!("SUBMIT ioctl: {}", ename(e)))?;
        if r.error == 0 {
            return Ok(());
        }
        let e = -r.error;
        sh.own_err[(e as usize).min(NERR - 1)].fetch_add(1, Relaxed);
        let seq1 = s.downs.load(SeqCst);
        let failed = k + r.failed_op as usize;
        let o = ops.get(failed).copied().unwrap_or_default();
        let down = seq0 != seq1 || seq0 & 1 == 1;
        let in_write = write_span(&o).is_some_and(|(a, b)| (a & !4095..b).contains(&r.fault_addr));
        let explained = match e {
            libc::EPERM => down && in_write,
            libc::EFAULT => down,
            libc::EBUSY => true,
            _ => false,
        };
        if !explained {
            sh.c.unexpected.fetch_add(1, Relaxed);
            return Err(format!(
                "unexpected {} on an own slice: op {failed} {} addr {:#x} ({})",
                ename(e),
                kind_name(o.kind),
                r.fault_addr,
                if down {
                    "mprotect was in flight"
                } else {
                    "no mprotect in flight"
                }
            ));
        }
        k = failed;
        if t0.elapsed() > Duration::from_secs(30) {
            return Err(format!(
                "job stuck for 30 s: {} at op {failed} addr {:#x}",
                ename(e),
                r.fault_addr
            ));
        }
        sleep_us(200);
    }
}

/// What a job thread's final check found.
#[derive(Default)]
struct Final {
    /// Pages read through the device.
    dev_pages: u64,
    /// Spans (≤ 64 KiB) whose device READ sum differs from the shadow.
    dev_bad: u64,
    /// Words that differ through the CPU.
    cpu_bad: u64,
}

/// A job thread: sets up its slice, storms until stopped, waits at `fin` until the churn
/// threads are gone, then checks its whole slice through the device and the CPU.
fn owner(sh: &Shared, t: usize, seed: u64, start: &Barrier, fin: &Barrier) -> Final {
    let (mut shadow, mut touched) = (Vec::new(), Vec::new());
    // A panic must still reach `fin`, or the main thread would wait there forever.
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        storm_loop(sh, t, seed, start, &mut shadow, &mut touched)
    }))
    .unwrap_or_else(|_| Err(format!("thread {t} panicked")));
    fin.wait();
    match r {
        Ok(()) => final_check(sh, t, &shadow, &touched),
        Err(e) => {
            sh.problem(e);
            Final::default()
        }
    }
}

fn final_check(sh: &Shared, t: usize, shadow: &[u64], touched: &[bool]) -> Final {
    let s = &sh.slices[t];
    let mut f = Final::default();
    // Through the device: every page an op or a CPU write touched, and the first page of every
    // 256 KiB (where the fork children write their marker). Each run of such pages is
    // prefetched from this thread (faster than device faults through the one fault worker),
    // then summed by READs of at most 64 KiB.
    let sample = |p: usize| touched[p] || p.is_multiple_of(64);
    let mut ops = Vec::new();
    let mut p = 0;
    while p < touched.len() {
        if !sample(p) {
            p += 1;
            continue;
        }
        let q = (p..touched.len())
            .find(|&q| !sample(q))
            .unwrap_or(touched.len());
        let (a, len) = (s.base + (p * PAGE) as u64, ((q - p) * PAGE) as u64);
        let (r, done) = sh.dev_of(t).prefetch(a, len, false);
        if r.is_err() || done != len {
            sh.problem(format!(
                "thread {t}: final PREFETCH of [{a:#x}, +{len:#x}): {:?} done {done:#x}",
                r.err().map(ename)
            ));
            return f;
        }
        let mut off = 0;
        while off < len {
            let l = (len - off).min(64 << 10);
            ops.push(read(a + off, l));
            off += l;
        }
        p = q;
    }
    f.dev_pages = ops.iter().map(|o| o.len / PAGE as u64).sum();
    for chunk in ops.chunks_mut(SVM_ACCEL_MAX_OPS as usize) {
        if let Err(e) = sh.dev_of(t).run(chunk) {
            sh.problem(format!("thread {t}: final device READ: {e}"));
            return f;
        }
    }
    for o in &ops {
        let i = ((o.src - s.base) / 8) as usize;
        let want = shadow[i..i + (o.len / 8) as usize]
            .iter()
            .fold(0u64, |a, &w| a.wrapping_add(w));
        if o.result != want {
            f.dev_bad += 1;
            sh.problem(format!(
                "thread {t}: final device READ of [{:#x}, +{:#x}): {:#x} != shadow {want:#x}",
                o.src, o.len, o.result
            ));
        }
    }
    // Through the CPU: every word.
    let w = s.words();
    let mut first = None;
    for (j, &want) in shadow.iter().enumerate() {
        let got = w[j].load(Relaxed);
        if got != want {
            f.cpu_bad += 1;
            first.get_or_insert((j, got, want));
        }
    }
    if let Some((j, got, want)) = first {
        sh.problem(format!(
            "thread {t}: {} words differ through the CPU, first at {:#x}: {got:#x} != shadow {want:#x}{}",
            f.cpu_bad,
            s.base + 8 * j as u64,
            if got == MARKER { " (a fork child's marker)" } else { "" }
        ));
    }
    f
}

/// Where a job thread's ops go: 85% into a hot window of 64 pages (moved now and then), the
/// rest anywhere in the slice. Under TCG mapping a page costs about a millisecond, so ops spread
/// uniformly over 12 MiB would spend the storm mapping fresh pages; the window keeps most ops
/// on mapped pages, where the churn's invalidations (mprotect, fork) hit them.
struct Picker {
    /// Slice words.
    nw: u64,
    /// Window start (words).
    win: u64,
    /// Pages an op or a CPU write touched (the final device check reads these).
    touched: Vec<bool>,
}

const WINW: u64 = 64 * 512; // 64 pages, in words

impl Picker {
    fn new(nw: u64, rng: &mut Rng) -> Picker {
        let mut p = Picker {
            nw,
            win: 0,
            touched: vec![false; (nw / 512) as usize],
        };
        p.move_window(rng);
        p
    }
    fn move_window(&mut self, rng: &mut Rng) {
        self.win = rng.below(self.nw.saturating_sub(WINW) / 512 + 1) * 512;
    }
    /// Start of a span of `n` words (marked touched).
    fn place(&mut self, rng: &mut Rng, n: u64) -> u64 {
        let ww = WINW.min(self.nw);
        let off = if n <= ww && rng.chance(85) {
            self.win + rng.below(ww - n + 1)
        } else {
            rng.below(self.nw - n + 1)
        };
        for p in off / 512..(off + n).div_ceil(512) {
            self.touched[p as usize] = true;
        }
        off
    }
}

fn storm_loop(
    sh: &Shared,
    t: usize,
    seed: u64,
    start: &Barrier,
    shadow: &mut Vec<u64>,
    touched: &mut Vec<bool>,
) -> TResult {
    let s = &sh.slices[t];
    let nw = (s.len / 8) as u64;
    let base = s.base;
    let mut rng = Rng::new(seed, 100 + t as u64);
    // The first half through the CPU (THP or 4 KiB pages allocated now), the second half
    // untouched (the device's reads see the zero page or huge zero page first).
    *shadow = vec![0u64; nw as usize];
    let w = s.words();
    for i in 0..(nw / 2) as usize {
        let v = (t as u64) << 56 | i as u64;
        w[i].store(v, Relaxed);
        shadow[i] = v;
    }
    let mut pk = Picker::new(nw, &mut rng);
    start.wait();
    let mut res = Ok(());
    while !sh.stopped() {
        let r = rng.below(100);
        if r < 3 {
            pk.move_window(&mut rng);
        }
        if r < 8 {
            // A single op in the munmap zone: EFAULT is fine, nothing is checked.
            let (zb, zl) = sh.zone;
            let zw = (zl / 8) as u64;
            let n = rng.words(zw);
            let a = zb + 8 * rng.below(zw - n + 1);
            let mut o = [if rng.chance(50) {
                fill(a, 8 * n, rng.next())
            } else {
                read(a, 8 * n)
            }];
            sh.c.submits.fetch_add(1, Relaxed);
            sh.c.zone_jobs.fetch_add(1, Relaxed);
            let zdev = if rng.chance(50) {
                sh.dev_of(1)
            } else {
                &sh.dev
            };
            match zdev.submit(&mut o) {
                Ok(r) if r.error == 0 => {}
                Ok(r) => {
                    let e = -r.error;
                    sh.zone_err[(e as usize).min(NERR - 1)].fetch_add(1, Relaxed);
                    if e != libc::EFAULT && e != libc::EBUSY {
                        sh.c.unexpected.fetch_add(1, Relaxed);
                        res = Err(format!(
                            "unexpected {} in the munmap zone at {:#x}",
                            ename(e),
                            r.fault_addr
                        ));
                        break;
                    }
                }
                Err(e) => {
                    res = Err(format!("SUBMIT ioctl (zone): {}", ename(e)));
                    break;
                }
            }
            continue;
        }
        if r < 14 {
            // CPU writes a run of words (the device must see them).
            let n = 1 + rng.below(64);
            let i = pk.place(&mut rng, n) as usize;
            let _g = s.lock.lock().unwrap();
            for j in i..i + n as usize {
                let v = rng.next();
                w[j].store(v, Relaxed);
                shadow[j] = v;
            }
            sh.c.cpu_writes.fetch_add(1, Relaxed);
            continue;
        }
        if r < 18 {
            // CPU checks a page (it must see the device's writes).
            let p = (pk.place(&mut rng, 512) / 512 * 512) as usize;
            let _g = s.lock.lock().unwrap();
            let bad = (p..p + 512)
                .filter(|&j| w[j].load(Relaxed) != shadow[j])
                .count();
            sh.c.cpu_checks.fetch_add(1, Relaxed);
            if bad > 0 {
                sh.c.lost_during.fetch_add(bad as u64, Relaxed);
                let j = (p..p + 512)
                    .find(|&j| w[j].load(Relaxed) != shadow[j])
                    .unwrap();
                res = Err(format!(
                    "thread {t}: CPU check: {bad} words of the page at {:#x} differ, first at {:#x}: {:#x} != {:#x}",
                    base + 8 * p as u64,
                    base + 8 * j as u64,
                    w[j].load(Relaxed),
                    shadow[j]
                ));
                break;
            }
            continue;
        }
        // A job on the own slice.
        let nops = 1 + rng.below(6) as usize;
        let mut ops = Vec::with_capacity(nops);
        for _ in 0..nops {
            let o = match rng.below(100) {
                0..=34 => {
                    let n = rng.words(nw);
                    fill(base + 8 * pk.place(&mut rng, n), 8 * n, rng.next())
                }
                35..=54 => {
                    // Source and destination never overlap (a resubmitted COPY must redo the
                    // same thing).
                    let n = rng.words(nw / 2);
                    let (s0, d0) = loop {
                        let (a, b) = (pk.place(&mut rng, n), pk.place(&mut rng, n));
                        if a.abs_diff(b) >= n {
                            break (a, b);
                        }
                    };
                    copy(base + 8 * s0, base + 8 * d0, 8 * n)
                }
                55..=74 => add(base + 8 * pk.place(&mut rng, 1), rng.next()),
                _ => {
                    let n = rng.words(nw);
                    read(base + 8 * pk.place(&mut rng, n), 8 * n)
                }
            };
            ops.push(o);
        }
        if let Err(e) = run_own(sh, t, &mut ops) {
            res = Err(format!("thread {t}: {e}"));
            break;
        }
        sh.c.own_jobs.fetch_add(1, Relaxed);
        // The job completed: replay it on the shadow, checking what the device returned.
        for o in &ops {
            let i = ((o.dst.max(o.src) - base) / 8) as usize; // dst for writes, src for READ
            match o.kind {
                SVM_ACCEL_OP_FILL => shadow[i..i + (o.len / 8) as usize].fill(o.value),
                SVM_ACCEL_OP_COPY => {
                    let (si, di, n) = (
                        ((o.src - base) / 8) as usize,
                        ((o.dst - base) / 8) as usize,
                        (o.len / 8) as usize,
                    );
                    shadow.copy_within(si..si + n, di);
                }
                SVM_ACCEL_OP_ADD => {
                    let old = shadow[i];
                    if o.result != old {
                        sh.c.lost_during.fetch_add(1, Relaxed);
                        res = Err(format!(
                            "thread {t}: ADD at {:#x} saw {:#x}, shadow {old:#x}",
                            o.dst, o.result
                        ));
                    }
                    shadow[i] = o.result.wrapping_add(o.value);
                }
                _ => {
                    let want = shadow[i..i + (o.len / 8) as usize]
                        .iter()
                        .fold(0u64, |a, &w| a.wrapping_add(w));
                    sh.c.dev_checks.fetch_add(1, Relaxed);
                    if o.result != want {
                        sh.c.lost_during.fetch_add(1, Relaxed);
                        res = Err(format!(
                            "thread {t}: READ [{:#x}, +{:#x}) device sum {:#x}, shadow {want:#x}",
                            o.src, o.len, o.result
                        ));
                    }
                }
            }
        }
        if res.is_err() {
            break;
        }
    }
    *touched = std::mem::take(&mut pk.touched);
    res
}

// ---- churn threads ----------------------------------------------------------------------

/// munmap + mmap (MAP_FIXED_NOREPLACE) or MADV_DONTNEED of zone pieces. Two of these run
/// (`stream` 1 and 2), so the same 2 MiB range is unmapped and mapped again from two threads
/// while jobs fault in it: range death, GC, the creation race and notifier removal deferred
/// past a running invalidation all meet (issue 9 reproduced a kernel panic that way).
fn churn_munmap_stream(sh: &Shared, seed: u64, stream: u64) {
    let mut rng = Rng::new(seed, stream);
    let (zb, zl) = sh.zone;
    while !sh.stopped() {
        let (a, len) = if rng.chance(30) {
            let n = (zl / HUGE) as u64;
            (zb + rng.below(n) * HUGE as u64, HUGE)
        } else {
            let pages = (zl / PAGE) as u64;
            let n = 1 + rng.below(128.min(pages));
            (
                zb + rng.below(pages - n + 1) * PAGE as u64,
                n as usize * PAGE,
            )
        };
        let p = a as *mut libc::c_void;
        if rng.chance(25) {
            // SAFETY: a piece of the zone (mapped or a hole: then EINVAL/ENOMEM is fine).
            unsafe { libc::madvise(p, len, libc::MADV_DONTNEED) };
            sh.c.dontneeds.fetch_add(1, Relaxed);
        } else {
            let unmapped = {
                let _g = sh.zone_map.lock().unwrap();
                // SAFETY: the zone is ours; nothing but zone jobs (that may fail with EFAULT)
                // and the other churn thread (under `zone_map`) touches it.
                unsafe { libc::munmap(p, len) }
            };
            if unmapped != 0 {
                sh.problem(format!("munmap {a:#x}+{len:#x}: {}", ename(errno())));
                return;
            }
            sh.c.munmaps.fetch_add(1, Relaxed);
            sleep_us(rng.below(2000));
            let g = sh.zone_map.lock().unwrap();
            // SAFETY: re-creates the piece we just unmapped; NOREPLACE never clobbers a
            // mapping someone else put in the hole meanwhile.
            let q = unsafe {
                libc::mmap(
                    p,
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                    -1,
                    0,
                )
            };
            if q == libc::MAP_FAILED && errno() == libc::EEXIST {
                // The other munmap thread mapped an overlapping piece again first: what is
                // left of ours stays a hole until a later piece covers it.
                drop(g);
                sleep_us(3000 + rng.below(7000));
                continue;
            }
            if q != p {
                sh.problem(format!(
                    "re-mmap of the zone piece {a:#x}+{len:#x}: {} (a foreign mapping in the hole?)",
                    if q == libc::MAP_FAILED {
                        ename(errno())
                    } else {
                        format!("got {q:p}")
                    }
                ));
                return;
            }
            let adv = if rng.chance(50) {
                libc::MADV_HUGEPAGE
            } else {
                libc::MADV_NOHUGEPAGE
            };
            // SAFETY: our fresh mapping (`zone_map` held: nobody unmaps it meanwhile).
            unsafe { libc::madvise(p, len, adv) };
            if rng.chance(50) {
                // CPU touch: allocates the page (a THP for an advised 2 MiB piece).
                // SAFETY: mapped RW just now, and still (`zone_map` held).
                unsafe { (p as *mut u64).write_volatile(rng.next()) };
            }
            drop(g);
        }
        sleep_us(3000 + rng.below(7000));
    }
}

fn churn_munmap(sh: &Shared, seed: u64) {
    churn_munmap_stream(sh, seed, 1)
}

fn churn_munmap2(sh: &Shared, seed: u64) {
    churn_munmap_stream(sh, seed, 2)
}

/// mprotect a page range of a slice down (PROT_READ, 1 in 4 PROT_NONE) and back up.
fn churn_mprotect(sh: &Shared, seed: u64) {
    let mut rng = Rng::new(seed, 2);
    while !sh.stopped() {
        let s = &sh.slices[rng.below(sh.slices.len() as u64) as usize];
        let pages = (s.len / PAGE) as u64;
        // Mostly a few pages, sometimes up to 2 MiB: each mprotect holds mmap_lock for writing
        // and invalidates its range, which under TCG costs tens of µs per mapped page.
        let max = if rng.chance(80) { 32 } else { 512 };
        let n = 1 + rng.below(max.min(pages));
        let a = s.base + rng.below(pages - n + 1) * PAGE as u64;
        let len = n as usize * PAGE;
        let prot = if rng.chance(25) {
            libc::PROT_NONE
        } else {
            libc::PROT_READ
        };
        {
            let _g = s.lock.lock().unwrap();
            s.downs.fetch_add(1, SeqCst);
            // SAFETY: a page range of a slice; the owner's CPU accesses wait for the lock.
            let r1 = unsafe { libc::mprotect(a as *mut _, len, prot) };
            let e1 = errno();
            sleep_us(rng.below(2000));
            // SAFETY: as above.
            let r2 =
                unsafe { libc::mprotect(a as *mut _, len, libc::PROT_READ | libc::PROT_WRITE) };
            let e2 = errno();
            s.downs.fetch_add(1, SeqCst);
            if r1 != 0 || r2 != 0 {
                sh.problem(format!(
                    "mprotect {a:#x}+{len:#x}: down {}, up {}",
                    if r1 == 0 { "ok".into() } else { ename(e1) },
                    if r2 == 0 { "ok".into() } else { ename(e2) }
                ));
                return;
            }
        }
        sh.c.mprotects.fetch_add(1, Relaxed);
        sleep_us(10_000 + rng.below(20_000));
    }
}

/// fork: the child makes its copy of the slices writable, writes a marker into every 256 KiB,
/// sometimes lives on a little (COW breaks in both orders), and exits.
fn churn_fork(sh: &Shared, seed: u64) {
    let mut rng = Rng::new(seed, 3);
    let (ob, ol) = sh.owned;
    while !sh.stopped() {
        // A fork write-protects the whole buffer (every writable device leaf is invalidated)
        // under mmap_lock for writing, and the child COW-faults its markers: about one a second.
        let pause = 500_000 + rng.below(500_000);
        let t = Instant::now();
        while !sh.stopped() && t.elapsed() < Duration::from_micros(pause) {
            sleep_us(10_000);
        }
        if sh.stopped() {
            break;
        }
        let linger = rng.chance(50);
        // SAFETY: the child only makes raw syscalls and volatile stores, then _exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: the child's own copy of the slices.
            unsafe {
                let ok = libc::mprotect(ob as *mut _, ol, libc::PROT_READ | libc::PROT_WRITE) == 0;
                let mut off = 0;
                while off < ol {
                    let w = ob as usize + off + (off >> 18) % 512 * 8;
                    (w as *mut u64).write_volatile(MARKER);
                    off += 256 << 10;
                }
                if linger {
                    libc::usleep(5000);
                }
                libc::_exit(if ok { 0 } else { 7 });
            }
        }
        if pid < 0 {
            sh.problem(format!("fork: {}", ename(errno())));
            return;
        }
        let mut st = 0;
        // SAFETY: our child.
        unsafe { libc::waitpid(pid, &mut st, 0) };
        if !(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0) {
            sh.problem(format!("fork child: status {st:#x}"));
            return;
        }
        sh.c.forks.fetch_add(1, Relaxed);
    }
}

// ---- the storm ----------------------------------------------------------------------------

/// `StormCfg::placement`: MADVISE over the buffer (see there).
fn advise_placement(
    sh: &Shared,
    base: u64,
    total: usize,
    slice_len: usize,
    threads: usize,
    owned_len: usize,
) -> TResult {
    // `device` 0: a peer's SVM_ACCEL_LOC_PEER names accel0's memory.
    let advise = |dev: &Dev, start: u64, len: usize, location: u32, atomic: u32| {
        crate::placement::madvise_on(dev, start, len as u64, (location, 0), atomic, 0)
            .map(|_| ())
            .map_err(|e| format!("MADVISE {start:#x}+{len:#x}: {}", ename(e)))
    };
    for t in 0..threads {
        let s = base + (t * slice_len) as u64;
        let last = t == threads - 1 && threads > 1;
        let dev = sh.dev_of(t);
        // 6.12 hands over no page of a THP split earlier (mprotect churn splits them):
        // device-exclusive atomics only where no THP can be.
        if last && s >= base + (total / 2) as u64 {
            advise(
                dev,
                s,
                slice_len,
                SVM_ACCEL_LOC_SYSTEM,
                SVM_ACCEL_ATOMIC_DEVICE,
            )?;
        } else if t % 2 == 0 {
            advise(
                dev,
                s,
                slice_len,
                SVM_ACCEL_LOC_DEVICE,
                SVM_ACCEL_ATOMIC_GLOBAL,
            )?;
        } else if sh.peer.is_some() {
            // The peer's slices prefer accel0's memory: placed there, reached over the
            // interconnect, evicting accel0's own slices' pages and evicted by them.
            advise(
                dev,
                s,
                slice_len,
                SVM_ACCEL_LOC_PEER,
                SVM_ACCEL_ATOMIC_GLOBAL,
            )?;
        }
    }
    // The zone: each device prefers its own memory, so its pages move between the two.
    let (zs, zl) = (base + owned_len as u64, total - owned_len);
    advise(
        &sh.dev,
        zs,
        zl,
        SVM_ACCEL_LOC_DEVICE,
        SVM_ACCEL_ATOMIC_GLOBAL,
    )?;
    if let Some(p) = &sh.peer {
        advise(p, zs, zl, SVM_ACCEL_LOC_DEVICE, SVM_ACCEL_ATOMIC_GLOBAL)?;
    }
    Ok(())
}

pub fn run(cfg: &StormCfg) -> TResult {
    let total = cfg.mib << 20;
    let zone_len = (total / 4).max(HUGE) & !(HUGE - 1);
    let owned_len = total - zone_len;
    let slice_len = if owned_len / cfg.threads >= HUGE {
        (owned_len / cfg.threads) & !(HUGE - 1)
    } else {
        (owned_len / cfg.threads) & !(PAGE - 1)
    };
    if slice_len < 2 * PAGE {
        return Err(format!(
            "{} MiB is too small for {} threads",
            cfg.mib, cfg.threads
        ));
    }
    println!(
        "storm: {} job threads, churn: {}; {} MiB buffer ({} x {} KiB slices, {} MiB munmap zone, first half MADV_HUGEPAGE){}; {:.1} s; seed {:#x}",
        cfg.threads,
        if cfg.churn.is_empty() { "none".into() } else { cfg.churn.join(", ") },
        cfg.mib,
        cfg.threads,
        slice_len >> 10,
        zone_len >> 20,
        match (cfg.placement, cfg.peer) {
            (true, true) => "; placement policy; peer device",
            (true, false) => "; placement policy",
            (false, true) => "; peer device",
            (false, false) => "",
        },
        cfg.seconds,
        cfg.seed
    );
    let dev = Dev::bound()?;
    let peer = if cfg.peer {
        Some(Dev::bound_at(1)?)
    } else {
        None
    };
    let buf = Buf::aligned(total, HUGE);
    buf.advise(0, total / 2, libc::MADV_HUGEPAGE)?;
    buf.advise(total / 2, total - total / 2, libc::MADV_NOHUGEPAGE)?;
    let base = buf.addr();
    let slices = (0..cfg.threads)
        .map(|t| Slice {
            base: base + (t * slice_len) as u64,
            len: slice_len,
            lock: Mutex::new(()),
            downs: AtomicU64::new(0),
        })
        .collect();
    let sh = Arc::new(Shared {
        dev,
        peer,
        stop: AtomicBool::new(false),
        problems: Mutex::new(Vec::new()),
        own_err: errs_new(),
        zone_err: errs_new(),
        c: Counters::default(),
        slices,
        owned: (base, cfg.threads * slice_len),
        zone: (base + owned_len as u64, zone_len),
        zone_map: Mutex::new(()),
    });
    if cfg.placement {
        advise_placement(&sh, base, total, slice_len, cfg.threads, owned_len)?;
    }

    let t_setup = Instant::now();
    // Every thread exists (stacks mapped) before the munmap churn starts, so no thread stack
    // can land in a zone hole.
    type Churn = fn(&Shared, u64);
    let churn_fns: Vec<Churn> = [
        churn_munmap as Churn,
        churn_munmap2,
        churn_mprotect,
        churn_fork,
    ]
    .into_iter()
    .zip(["munmap", "munmap", "mprotect", "fork"])
    .filter(|(_, name)| cfg.churn.iter().any(|c| c == name))
    .map(|(f, _)| f)
    .collect();
    let start = Arc::new(Barrier::new(cfg.threads + churn_fns.len() + 1));
    let fin = Arc::new(Barrier::new(cfg.threads + 1));
    let owners: Vec<_> = (0..cfg.threads)
        .map(|t| {
            let (sh, start, fin, seed) = (sh.clone(), start.clone(), fin.clone(), cfg.seed);
            std::thread::spawn(move || owner(&sh, t, seed, &start, &fin))
        })
        .collect();
    let churns: Vec<_> = churn_fns
        .into_iter()
        .map(|f| {
            let (sh, start, seed) = (sh.clone(), start.clone(), cfg.seed);
            std::thread::spawn(move || {
                start.wait();
                f(&sh, seed)
            })
        })
        .collect();
    start.wait();
    let setup_secs = t_setup.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let mut next_report = 5.0;
    while !sh.stopped() {
        std::thread::sleep(Duration::from_millis(50));
        let el = t0.elapsed().as_secs_f64();
        if el >= cfg.seconds {
            break;
        }
        if el >= next_report {
            next_report += 5.0;
            if let Ok(q) = sh.dev.query() {
                println!(
                    "storm: {el:.0} s: jobs {} device faults {} faults {} invalidations {} forks {} mprotects {} munmaps {}",
                    q.jobs,
                    q.device_faults,
                    q.faults,
                    q.invalidations,
                    sh.c.forks.load(Relaxed),
                    sh.c.mprotects.load(Relaxed),
                    sh.c.munmaps.load(Relaxed)
                );
            }
        }
    }
    sh.stop.store(true, SeqCst);
    for h in churns {
        if h.join().is_err() {
            sh.problem("a churn thread panicked".into());
        }
    }
    // The churn is over (every page RW, no fork child left): the job threads check.
    let storm_secs = t0.elapsed().as_secs_f64();
    let qs = sh.dev.query()?;
    fin.wait();
    let t_fin = Instant::now();
    let (mut dev_bad, mut cpu_bad, mut dev_pages) = (0u64, 0u64, 0u64);
    for h in owners {
        match h.join() {
            Ok(f) => {
                dev_pages += f.dev_pages;
                dev_bad += f.dev_bad;
                cpu_bad += f.cpu_bad;
            }
            Err(_) => sh.problem("a job thread panicked".into()),
        }
    }
    let fin_secs = t_fin.elapsed().as_secs_f64();
    let q = sh.dev.query()?;
    let qp = match &sh.peer {
        Some(p) => Some(p.query()?),
        None => None,
    };
    for (name, q) in [("accel0", Some(&q)), ("accel1", qp.as_ref())] {
        let Some(q) = q else { continue };
        // Leaves of device memory have no DMA mapping behind them (a peer's have one).
        let at_rest = q.pt_zapped == 0 && q.dma_live + q.pt_local == q.pt_pages + q.pt_huge;
        if !at_rest {
            sh.problem(format!(
                "{name}'s page table not at rest: zapped {}, dma_live {} + local {} != pages {} + huge {}",
                q.pt_zapped, q.dma_live, q.pt_local, q.pt_pages, q.pt_huge
            ));
        }
        if q.accounting_errors != 0 {
            sh.problem(format!(
                "{name}'s engine accounting errors: {} (a range reaped more leaves than it mapped)",
                q.accounting_errors
            ));
        }
    }
    let c = &sh.c;
    let lost_during = c.lost_during.load(Relaxed);
    let lost = lost_during + dev_bad + cpu_bad;
    let n = |a: &AtomicU64| a.load(Relaxed).to_string();
    let rows: Vec<(&str, String)> = vec![
        (
            "threads: jobs + churn",
            format!(
                "{} + {} ({})",
                cfg.threads,
                cfg.churn.len(),
                if cfg.churn.is_empty() {
                    "none".into()
                } else {
                    cfg.churn.join(", ")
                }
            ),
        ),
        (
            "buffer: slices + munmap zone",
            format!(
                "{} MiB: {} x {} KiB + {} MiB",
                cfg.mib,
                cfg.threads,
                slice_len >> 10,
                zone_len >> 20
            ),
        ),
        ("seed", format!("{:#x}", cfg.seed)),
        (
            "(counters: the storm phase, without the final checks)",
            String::new(),
        ),
        ("jobs (driver count)", qs.jobs.to_string()),
        (
            "  own-slice jobs / zone jobs / submits incl. resubmits",
            format!(
                "{} / {} / {}",
                n(&c.own_jobs),
                n(&c.zone_jobs),
                n(&c.submits)
            ),
        ),
        ("device faults", qs.device_faults.to_string()),
        ("fault batches", qs.fault_batches.to_string()),
        (
            "  windows serving several queued faults",
            qs.batch_windows.to_string(),
        ),
        ("faults serviced (engine)", qs.faults.to_string()),
        (
            "faults / s",
            format!("{:.0}", qs.faults as f64 / storm_secs),
        ),
        (
            "fault errors (engine) / retry budget exhausted",
            format!("{} / {}", qs.fault_errors, qs.retry_timeouts),
        ),
        ("retries: own COW break", qs.retries_own.to_string()),
        (
            "retries: foreign invalidation",
            qs.retries_foreign.to_string(),
        ),
        (
            "invalidations (with work)",
            format!("{} ({})", qs.invalidations, qs.invalidations_hit),
        ),
        ("device TLB flushes", qs.tlb_flushes.to_string()),
        (
            "device TLB hits / misses",
            format!("{} / {}", qs.tlb_hits, qs.tlb_misses),
        ),
        ("4 KiB leaves mapped", qs.pages_mapped.to_string()),
        ("2 MiB leaves mapped (huge)", qs.huge_mapped.to_string()),
        ("DMA unmaps", qs.dma_unmapped.to_string()),
        (
            "ranges created / removed by GC / races",
            format!(
                "{} / {} / {}",
                qs.ranges_created, qs.gc_removed, qs.range_races
            ),
        ),
        (
            "munmap+mmap / MADV_DONTNEED / mprotect down+up / fork",
            format!(
                "{} / {} / {} / {}",
                n(&c.munmaps),
                n(&c.dontneeds),
                n(&c.mprotects),
                n(&c.forks)
            ),
        ),
        (
            "CPU writes / CPU page checks / device READ checks",
            format!(
                "{} / {} / {}",
                n(&c.cpu_writes),
                n(&c.cpu_checks),
                n(&c.dev_checks)
            ),
        ),
        ("job errors on own slices (mprotect)", errs_fmt(&sh.own_err)),
        ("job errors in the munmap zone", errs_fmt(&sh.zone_err)),
        ("unexpected errors", n(&c.unexpected)),
        (
            "final check: pages via device READ / via CPU",
            format!("{dev_pages} / {}", cfg.threads * slice_len / PAGE),
        ),
        (
            "lost writes: during / device at end / CPU at end",
            format!("{lost_during} / {dev_bad} / {cpu_bad}"),
        ),
        ("lost writes", lost.to_string()),
        (
            "after the checks: zapped leaves, dma_live = leaves",
            format!(
                "{}, {} = {}",
                q.pt_zapped,
                q.dma_live,
                q.pt_pages + q.pt_huge
            ),
        ),
        (
            "device memory: moved in / back / evicted / atomic leaves",
            format!(
                "{} / {} / {} / {}",
                q.migrated_to_device, q.migrated_to_system, q.evicted, q.atomic_mapped
            ),
        ),
        (
            "peer (accel1): moved in / back / evicted / atomic / peer leaves",
            qp.as_ref().map_or("none".into(), |p| {
                format!(
                    "{} / {} / {} / {} / {}",
                    p.migrated_to_device,
                    p.migrated_to_system,
                    p.evicted,
                    p.atomic_mapped,
                    p.peer_mapped
                )
            }),
        ),
        (
            "elapsed: setup / storm / final checks",
            format!("{setup_secs:.1} s / {storm_secs:.1} s / {fin_secs:.1} s"),
        ),
    ];
    let kw = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let vw = rows.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
    println!(
        "| {:kw$} | {:>vw$} |",
        "storm (svm_accel, in the VM)", "value"
    );
    println!("|-{}-|-{}-|", "-".repeat(kw), "-".repeat(vw));
    for (k, v) in &rows {
        println!("| {k:kw$} | {v:>vw$} |");
    }
    let problems = sh.problems.lock().unwrap().clone();
    for p in &problems {
        println!("storm problem: {p}");
    }
    drop(buf);
    if problems.is_empty() && lost == 0 {
        println!(
            "storm: clean: {} jobs, {} faults ({:.0}/s), lost writes 0, {storm_secs:.1} s",
            qs.jobs,
            qs.faults,
            qs.faults as f64 / storm_secs
        );
        Ok(())
    } else {
        println!(
            "storm: FAILED ({} problems, {lost} lost writes)",
            problems.len()
        );
        Err(problems
            .first()
            .cloned()
            .unwrap_or_else(|| format!("{lost} lost writes")))
    }
}
