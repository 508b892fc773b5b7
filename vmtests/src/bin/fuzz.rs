//! fuzz: a seeded, syzkaller-style fuzzer of the svm_accel module's two front ends, run in the
//! test VM (issue 9). `scripts/vm-test.sh` runs a short run, `scripts/vm-fuzz.sh` the soak.
//!
//! What it calls: every ioctl of `/dev/accel/accel0` and of its peer `accel1` (BIND, SUBMIT with ops of every kind,
//! PREFETCH, QUERY, CREATE_QUEUE/WAIT/DESTROY_QUEUE with hostile rings, words, sizes, ids,
//! values and timeouts, unknown command numbers, known numbers with wrong sizes, directions and
//! type bytes) and of `/dev/hmm_dmirror0`/`1` (READ, WRITE, SNAPSHOT, RELEASE, MIGRATE_TO_DEV,
//! MIGRATE_TO_SYS, the unsupported EXCLUSIVE/CHECK_EXCLUSIVE, unknown numbers and sizes), with
//! hostile values: lengths and counts with each single bit 0..63 set (and +-1, +-page), 0,
//! `u64::MAX`, 2^52(+1), 2^47, TASK_SIZE, 1 GiB(+8); addresses that are NULL, kernel,
//! non-canonical, unaligned, PROT_NONE, read-only, unmapped, `[vvar]`, text; ops arrays and
//! argument structs that are unaligned, read-only, unmapped or run into a guard page. Between
//! them, from several threads and from forked children: mmap (anonymous private/shared,
//! memfd, hugetlb, the dmirror file's own mmap, memfd_secret), munmap, mprotect, mremap
//! (moving, DONTUNMAP, shrinking, growing), madvise (DONTNEED, HUGEPAGE, COLLAPSE, FREE,
//! POPULATE, MERGEABLE, PAGEOUT, ...), CPU writes, fork, close and reopen of the device files,
//! and process exit with everything live.
//!
//! What it checks (a failure is an *invariant break*; the exit code is non-zero only then):
//! an ioctl returns 0 or -1 with an errno from the documented set; a request the uAPI says is
//! invalid (bad flags, misaligned, empty, overflowing, over 1 GiB, above TASK_SIZE, unknown
//! command) never succeeds; a SUBMIT's `error` is 0 or a documented negative errno, with
//! `failed_op` < `op_count` and `fault_addr` inside the failing op; PREFETCH's `done` is
//! page aligned, at most `len`, `len` on success and 0 on `EINVAL`; a successful dmirror
//! command reports `cpages == npages`; QUERY's capabilities are constant; a child never uses
//! its parent's device files (`EXDEV`/`ENOTCONN`). And an *oracle* per thread: a 2 MiB THP
//! buffer no other call may touch, with a shadow copy, read and written through the CPU, the
//! accel device (READ sums, FILL, ADD, COPY) and the dmirror device (READ, WRITE), across
//! MADV_DONTNEED, mprotect and fork (the child checks its COW copy, the parent that the
//! child's device writes did not reach it): any difference is a lost or stale write. Kernel
//! reports (KASAN, BUG, WARNING, lockdep, ...) are judged by `scripts/vm-run.sh`.
//!
//! Safety of the fuzzer itself: the device writes where it is told, so every address a call
//! may write through (FILL/COPY/ADD destinations, result write-back, dmirror READ buffers,
//! dmirror WRITE targets, copied-back argument structs) is either inside the *arena* (a
//! reservation with PROT_NONE guards around it, the only memory the churn changes) or checked
//! against the writable mappings of `/proc/self/maps` and replaced when it would hit one.
//!
//! Process layout: the program forks a *worker* that fuzzes, and stays as the *supervisor*: a
//! watchdog over each call in flight (worker threads and their children publish what they are
//! doing in shared memory), so a hang is reported with the call that hangs and the worker is
//! killed; at the end it prints the per-call errno table and the summary line
//! `fuzz: calls=<n> seed=<s> ... result=PASS|FAIL`.
//!
//! Determinism: each thread draws from its own generator seeded from `--seed` and its index,
//! so with `--threads 1` the sequence of calls is a function of the seed (up to results that
//! depend on kernel timing, such as `EBUSY`). `--trace` prints every call before it is made,
//! so the last line before a kernel oops names it.
//!
//! usage: fuzz [--seed S] [--calls N] [--seconds S] [--threads T] [--arena-mib M]
//!             [--child-calls K] [--hang-secs H] [--skip A,B] [--only A,B] [--trace]
//!             [--keep-going] [--ksm] [--require-dmirror] [--allow-missing]

mod uapi {
    #![allow(
        non_camel_case_types,
        non_upper_case_globals,
        non_snake_case,
        dead_code
    )]
    include!(concat!(env!("OUT_DIR"), "/uapi.rs"));
}

#[path = "../dmirror_uapi.rs"]
#[allow(dead_code)]
mod dmirror_uapi;

use dmirror_uapi::{dm_iowr, DmCmd};
use std::ffi::CString;
use std::io::Write as _;
use std::mem::size_of;
use std::ptr::null_mut;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicU8, AtomicUsize, Ordering::*};
use std::sync::{Barrier, Mutex};
use uapi::*;

const PAGE: u64 = 4096;
const HUGE: u64 = 2 << 20;
/// x86-64 `TASK_SIZE_MAX` with 4-level paging (the VM's CPU model has no LA57).
const TASK_SIZE: u64 = 0x7fff_ffff_f000;
/// Largest SUBMIT op and dmirror command.
const MAX_LEN: u64 = 1 << 30;
const ACCEL: &str = "/dev/accel/accel0";
const ACCEL_PEER: &str = "/dev/accel/accel1";
const DMIRROR: [&str; 2] = ["/dev/hmm_dmirror0", "/dev/hmm_dmirror1"];
/// Fixed homes of the arena and the per-thread private areas, so addresses repeat from run
/// to run (a fallback address is used if taken).
const ARENA_HINT: u64 = 0x2000_0000_0000;
const PRIV_HINT: u64 = 0x2100_0000_0000;
const PRIV_STRIDE: u64 = 64 << 20;
const PRIV_LEN: u64 = 4 << 20;
const OP_SIZE: u64 = size_of::<drm_svm_accel_op>() as u64;
const MAX_OPS: usize = SVM_ACCEL_MAX_OPS as usize;
/// Pages of the ops scratch: 4096 ops plus room for an unaligned start.
const SCRATCH_PAGES: u64 = (MAX_OPS as u64 * OP_SIZE).div_ceil(PAGE) + 1;
/// Oracle buffer sizes.
const OD_LEN: u64 = HUGE;
const OB_LEN: u64 = 64 << 10;
/// A dmirror command at least this big serialises with other big ones (the kernel's bounce
/// buffer is as big as the command: four 1 GiB ones at once would OOM the VM).
const BIG_DM: u128 = 64 << 20;

// madvise advice the libc crate may not have.
const MADV_COLD: i32 = 20;
const MADV_PAGEOUT: i32 = 21;
const MADV_POPULATE_READ: i32 = 22;
const MADV_POPULATE_WRITE: i32 = 23;
const MADV_COLLAPSE: i32 = 25;

// ---- the accel uAPI, from the generated constants ------------------------------------

const fn ioc(dir: u64, ty: u64, nr: u64, size: u64) -> u64 {
    (dir << 30) | ((size & 0x3fff) << 16) | ((ty & 0xff) << 8) | (nr & 0xff)
}
const A_BIND: u64 = DRM_IOCTL_SVM_ACCEL_BIND as u64;
const A_SUBMIT: u64 = DRM_IOCTL_SVM_ACCEL_SUBMIT as u64;
const A_PREFETCH: u64 = DRM_IOCTL_SVM_ACCEL_PREFETCH as u64;
const A_QUERY: u64 = DRM_IOCTL_SVM_ACCEL_QUERY as u64;
const A_CREATE_QUEUE: u64 = DRM_IOCTL_SVM_ACCEL_CREATE_QUEUE as u64;
const A_DESTROY_QUEUE: u64 = DRM_IOCTL_SVM_ACCEL_DESTROY_QUEUE as u64;
const A_WAIT: u64 = DRM_IOCTL_SVM_ACCEL_WAIT as u64;
const A_MADVISE: u64 = DRM_IOCTL_SVM_ACCEL_MADVISE as u64;
/// The driver's command numbers in use: BIND .. MADVISE.
const A_NRS: u64 = 8;
/// `DRM_COMMAND_BASE` and the DRM ioctl type byte, as the header encodes them.
const A_BASE_NR: u64 = A_BIND & 0xff;
const A_TYPE: u64 = (A_BIND >> 8) & 0xff;
const A_REQS: [u64; 4] = [A_BIND, A_SUBMIT, A_PREFETCH, A_QUERY];
const DM_TYPE: u64 = b'H' as u64;
const DM_SIZE: u64 = size_of::<DmCmd>() as u64;

// ---- errnos ----------------------------------------------------------------------------

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn ename(e: i32) -> String {
    let n = match e {
        0 => "ok",
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::EBADF => "EBADF",
        libc::ECHILD => "ECHILD",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENODEV => "ENODEV",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ENOTTY => "ENOTTY",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::ERANGE => "ERANGE",
        libc::ENOSYS => "ENOSYS",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::ETIME => "ETIME",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ENOTCONN => "ENOTCONN",
        libc::ETIMEDOUT => "ETIMEDOUT",
        _ => return format!("errno{e}"),
    };
    n.into()
}

/// What the accel ioctls may return (the uAPI header, Documentation/kernel.rst), plus the
/// limits the hardening work may add (`ENOSPC`, `E2BIG`, `EOVERFLOW`).
const E_ACCEL: &[i32] = &[
    libc::EOPNOTSUPP,
    libc::EINVAL,
    libc::EFAULT,
    libc::ENOTCONN,
    libc::EXDEV,
    libc::EBUSY,
    libc::EINTR,
    libc::ENOMEM,
    libc::ENOSPC,
    libc::EPERM,
    libc::ESRCH,
    libc::EAGAIN,
    libc::EOVERFLOW,
    libc::E2BIG,
    libc::ENODEV,
];
/// What the queue ioctls may return besides.
const E_QUEUE: &[i32] = &[
    libc::EINVAL,
    libc::EFAULT,
    libc::ENOTCONN,
    libc::EXDEV,
    libc::EINTR,
    libc::ENOMEM,
    libc::ENOSPC,
    libc::ENODEV,
    libc::EACCES,
    libc::ETIME,
    libc::EIO,
    libc::ENOENT,
];
/// What the dmirror commands may return.
const E_DM: &[i32] = &[
    libc::EINVAL,
    libc::EFAULT,
    libc::EXDEV,
    libc::EBUSY,
    libc::EINTR,
    libc::ENOMEM,
    libc::ENOSPC,
    libc::EPERM,
    libc::ESRCH,
    libc::EOPNOTSUPP,
    libc::EAGAIN,
    libc::EOVERFLOW,
    libc::E2BIG,
    libc::ENODEV,
    // MIGRATE_TO_DEV: a page that did not move to the device (shared memory, the other
    // device's page).
    libc::ENOENT,
];
/// A SUBMIT job's `error` (negated).
const E_JOB: &[i32] = &[
    libc::EFAULT,
    libc::EPERM,
    libc::EBUSY,
    libc::ENOMEM,
    libc::ENOSPC,
    libc::ESRCH,
    libc::EINTR,
    libc::EAGAIN,
];
/// Results an oracle call treats as "try again later" rather than as wrong.
const E_TRANSIENT: &[i32] = &[
    libc::EBUSY,
    libc::ENOMEM,
    libc::ENOSPC,
    libc::EINTR,
    libc::EAGAIN,
];
/// Unknown commands: refused.
const E_BADNR: &[i32] = &[libc::EINVAL, libc::ENOTTY, libc::EOPNOTSUPP, libc::EFAULT];

// ---- statistics kinds (rows of the table) ----------------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum K {
    ABind,
    ASubmit,
    AJob,
    APrefetch,
    AQuery,
    ACreateQueue,
    AWait,
    ADestroyQueue,
    AMadvise,
    ABadNr,
    ABadSize,
    ABadFd,
    DRead,
    DWrite,
    DMigDev,
    DMigSys,
    DSnapshot,
    DExcl,
    DCheckExcl,
    DRelease,
    DBadNr,
    Open,
    Reopen,
    Mmap,
    Munmap,
    Mprotect,
    Mremap,
    Madvise,
    CpuWrite,
    DmMmap,
    Secret,
    Fork,
    Child,
    Inherited,
    Oracle,
}
const KINDS: [&str; 35] = [
    "accel.BIND",
    "accel.SUBMIT",
    "accel.SUBMIT.job",
    "accel.PREFETCH",
    "accel.QUERY",
    "accel.CREATE_QUEUE",
    "accel.WAIT",
    "accel.DESTROY_QUEUE",
    "accel.MADVISE",
    "accel.badnr",
    "accel.badsize",
    "accel.badfd",
    "dm.READ",
    "dm.WRITE",
    "dm.MIGRATE_TO_DEV",
    "dm.MIGRATE_TO_SYS",
    "dm.SNAPSHOT",
    "dm.EXCLUSIVE",
    "dm.CHECK_EXCLUSIVE",
    "dm.RELEASE",
    "dm.badnr",
    "open+close",
    "reopen",
    "mmap",
    "munmap",
    "mprotect",
    "mremap",
    "madvise",
    "cpuwrite",
    "dm.mmap",
    "secret",
    "fork",
    "child.exit",
    "child.inherited_fd",
    "oracle",
];
const NK: usize = KINDS.len();
const DM_KIND: [K; 8] = [
    K::DRead,
    K::DWrite,
    K::DMigDev,
    K::DMigSys,
    K::DSnapshot,
    K::DExcl,
    K::DCheckExcl,
    K::DRelease,
];

/// The fuzzer's actions and their weights; `--skip`/`--only` match prefixes of these names.
const ACTIONS: &[(&str, u32)] = &[
    ("accel.BIND", 3),
    ("accel.SUBMIT", 24),
    ("accel.PREFETCH", 8),
    ("accel.MADVISE", 4),
    ("accel.QUERY", 3),
    ("accel.queue", 4),
    ("accel.badnr", 3),
    ("accel.badfd", 1),
    ("dm.READ", 8),
    ("dm.WRITE", 6),
    ("dm.SNAPSHOT", 5),
    ("dm.migrate_exclusive", 3),
    ("dm.RELEASE", 1),
    ("dm.badnr", 2),
    ("open", 1),
    ("reopen", 2),
    ("mmap", 5),
    ("munmap", 2),
    ("mprotect", 5),
    ("mremap", 3),
    ("madvise", 6),
    ("cpuwrite", 2),
    ("dm.mmap", 1),
    ("secret", 1),
    ("fork", 1),
    ("oracle", 8),
];

// ---- shared memory (supervisor, worker, children) --------------------------------------

/// Errno buckets: 0 = success, 1..=133 errnos, then "positive return" and "bad errno".
const NERR: usize = 136;
const B_POSITIVE: usize = 134;
const B_BADERR: usize = 135;
const NSLOT: usize = 64;
const LOG_LEN: usize = 16 << 10;

/// One thread's (or child's) call in flight, for the watchdog.
#[repr(C)]
struct Slot {
    start_ns: AtomicU64,
    pid: AtomicU64,
    desc: [AtomicU64; 40],
}

impl Slot {
    fn set(&self, s: &str) {
        let b = s.as_bytes();
        for (i, w) in self.desc.iter().enumerate() {
            let mut x = [0u8; 8];
            for (j, c) in x.iter_mut().enumerate() {
                *c = *b.get(i * 8 + j).unwrap_or(&0);
            }
            w.store(u64::from_le_bytes(x), Relaxed);
        }
        // SAFETY: no preconditions.
        self.pid.store(unsafe { libc::getpid() } as u64, Relaxed);
        self.start_ns.store(now_ns(), Release);
    }

    fn get(&self) -> String {
        let mut v = Vec::new();
        for w in &self.desc {
            v.extend_from_slice(&w.load(Relaxed).to_le_bytes());
        }
        let n = v.iter().position(|&c| c == 0).unwrap_or(v.len());
        String::from_utf8_lossy(&v[..n]).into_owned()
    }
}

#[repr(C)]
struct Shared {
    counts: [[AtomicU64; NERR]; NK],
    /// Actions claimed (may overshoot `--calls` by the thread count) and completed.
    claimed: AtomicU64,
    done: AtomicU64,
    child_calls: AtomicU64,
    breaks: AtomicU64,
    warnings: AtomicU64,
    redirected: AtomicU64,
    oracle_checks: AtomicU64,
    stop: AtomicU64,
    t_start: AtomicU64,
    t_end: AtomicU64,
    log_len: AtomicUsize,
    log: [AtomicU8; LOG_LEN],
    slots: [Slot; NSLOT],
}

impl Shared {
    fn map() -> &'static Shared {
        // SAFETY: a fresh shared anonymous mapping; all-zero bytes are valid atomics.
        unsafe {
            let p = libc::mmap(
                null_mut(),
                size_of::<Shared>(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert!(p != libc::MAP_FAILED, "mmap shared: {}", ename(errno()));
            &*(p as *const Shared)
        }
    }

    fn count(&self, k: K, bucket: usize) {
        self.counts[k as usize][bucket.min(NERR - 1)].fetch_add(1, Relaxed);
    }

    /// Prints a line at once (stderr, unbuffered) and keeps it for the summary.
    fn note(&self, sev: &str, msg: &str) {
        let line = format!("fuzz: {sev}: {msg}\n");
        raw_write(2, &line);
        let at = self.log_len.fetch_add(line.len(), Relaxed);
        if at + line.len() <= LOG_LEN {
            for (i, b) in line.bytes().enumerate() {
                self.log[at + i].store(b, Relaxed);
            }
        }
    }

    fn log_text(&self) -> String {
        let n = self.log_len.load(Relaxed).min(LOG_LEN);
        let v: Vec<u8> = self.log[..n].iter().map(|b| b.load(Relaxed)).collect();
        String::from_utf8_lossy(&v).into_owned()
    }
}

fn raw_write(fd: i32, s: &str) {
    let mut b = s.as_bytes();
    while !b.is_empty() {
        // SAFETY: writing our own buffer.
        let n = unsafe { libc::write(fd, b.as_ptr().cast(), b.len()) };
        if n <= 0 {
            return;
        }
        b = &b[n as usize..];
    }
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: plain syscall into a local.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

// ---- random numbers --------------------------------------------------------------------

struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64) -> Rng {
        let mut r = Rng(seed ^ stream.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        r.next();
        r
    }

    /// splitmix64.
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }

    fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }

    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
}

// ---- configuration ---------------------------------------------------------------------

struct Cfg {
    seed: u64,
    calls: u64,
    seconds: f64,
    threads: usize,
    arena_mib: u64,
    child_calls: u64,
    hang_secs: u64,
    trace: bool,
    keep_going: bool,
    ksm: bool,
    require_dmirror: bool,
    allow_missing: bool,
    skip: Vec<String>,
    only: Vec<String>,
}

const USAGE: &str = "usage: fuzz [--seed S] [--calls N] [--seconds S] [--threads T] [--arena-mib M]
            [--child-calls K] [--hang-secs H] [--skip A,B] [--only A,B] [--trace]
            [--keep-going] [--ksm] [--require-dmirror] [--allow-missing]
  --seed S         generator seed (decimal or 0x hex; default: from the clock, printed)
  --calls N        stop after N actions of the worker threads (default 100000)
  --seconds S      or after S seconds (default 600), whichever comes first
  --threads T      worker threads (default 3); 1 makes the call sequence a function of the seed
  --arena-mib M    size of the churned arena (default 8, even)
  --child-calls K  actions of each forked child (default 16)
  --hang-secs H    a call in flight this long is a hang: reported, the worker killed (default 120)
  --skip A,B       leave out actions whose names start with A or B (see --list)
  --only A,B       only these actions
  --trace          print every call before making it (to find the one a kernel oops hit)
  --keep-going     do not stop at the first invariant break
  --ksm            run ksmd during the run (MADV_MERGEABLE'd arena pages get merged)
  --require-dmirror  fail if /dev/hmm_dmirror0 is missing (svm_accel without dmirror=1)
  --allow-missing  run without the devices (to try the fuzzer itself outside the VM)
  --list           list the actions and exit";

fn parse_num(s: &str) -> Option<u64> {
    if let Some(h) = s.strip_prefix("0x") {
        u64::from_str_radix(h, 16).ok()
    } else {
        s.parse().ok()
    }
}

fn parse_args() -> Cfg {
    let mut c = Cfg {
        seed: now_ns() ^ (u64::from(std::process::id()) << 32),
        calls: 100_000,
        seconds: 600.0,
        threads: 3,
        arena_mib: 8,
        child_calls: 16,
        hang_secs: 120,
        trace: false,
        keep_going: false,
        ksm: false,
        require_dmirror: false,
        allow_missing: false,
        skip: Vec::new(),
        only: Vec::new(),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    let bad = |m: &str| -> ! {
        eprintln!("fuzz: {m}\n{USAGE}");
        std::process::exit(2)
    };
    while i < args.len() {
        let a = args[i].as_str();
        let mut val = || {
            i += 1;
            args.get(i)
                .cloned()
                .unwrap_or_else(|| bad(&format!("{a} needs a value")))
        };
        let num = |v: String| parse_num(&v).unwrap_or_else(|| bad(&format!("bad number {v}")));
        match a {
            "--seed" => c.seed = num(val()),
            "--calls" => c.calls = num(val()),
            "--seconds" => {
                let v = val();
                c.seconds = v
                    .parse()
                    .unwrap_or_else(|_| bad(&format!("bad seconds {v}")))
            }
            "--threads" => c.threads = (num(val()) as usize).clamp(1, NSLOT / 2),
            "--arena-mib" => c.arena_mib = (num(val()).max(4) + 1) & !1,
            "--child-calls" => c.child_calls = num(val()),
            "--hang-secs" => c.hang_secs = num(val()).max(1),
            "--skip" => c.skip.extend(val().split(',').map(String::from)),
            "--only" => c.only.extend(val().split(',').map(String::from)),
            "--trace" => c.trace = true,
            "--keep-going" => c.keep_going = true,
            "--ksm" => c.ksm = true,
            "--require-dmirror" => c.require_dmirror = true,
            "--allow-missing" => c.allow_missing = true,
            "--no-fork" => c.skip.push("fork".into()),
            "--list" => {
                for (n, w) in ACTIONS {
                    println!("{n:18} weight {w}");
                }
                std::process::exit(0)
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0)
            }
            _ => bad(&format!("unknown argument {a}")),
        }
        i += 1;
    }
    c.skip.retain(|s| !s.is_empty());
    c.only.retain(|s| !s.is_empty());
    c
}

// ---- the worker's context ---------------------------------------------------------------

/// The churned memory: `[base, base + len)` inside a PROT_NONE reservation `[res, res_end)`
/// whose untouched edges are the guards that stop any device access running off the arena.
struct Arena {
    res: u64,
    res_end: u64,
    base: u64,
    len: u64,
}

impl Arena {
    fn end(&self) -> u64 {
        self.base + self.len
    }
    fn pages(&self) -> u64 {
        self.len / PAGE
    }
}

struct Ctx {
    cfg: Cfg,
    sh: &'static Shared,
    arena: Arena,
    accel: Option<[i32; 2]>,
    dm: Option<[i32; 2]>,
    null_fd: i32,
    memfd: i32,
    secret_fd: i32,
    ro_area: u64,
    none_area: u64,
    /// A read-only page of zeros: a queue's doorbell there never announces a job.
    zero_page: u64,
    special: Vec<u64>,
    /// Writable mappings outside the arena, sorted (`/proc/self/maps`); replaced, never freed.
    forbidden: AtomicPtr<Vec<(u64, u64)>>,
    big: Mutex<()>,
    /// The 2 MiB chunk of the arena (one engine range) where half of the calls and churn
    /// go, so that faults, invalidations, GC and range re-creation meet; thread 0 moves it.
    hot: AtomicU64,
    deadline_ns: u64,
    actions: Vec<(usize, u32)>,
    weight: u32,
}

fn map(addr: u64, len: u64, prot: i32, flags: i32, fd: i32, off: u64) -> Result<u64, i32> {
    // SAFETY: callers pass MAP_FIXED only over memory of their own arena or reservation.
    let p = unsafe { libc::mmap(addr as *mut _, len as usize, prot, flags, fd, off as i64) };
    if p == libc::MAP_FAILED {
        Err(errno())
    } else {
        Ok(p as u64)
    }
}

fn protect(addr: u64, len: u64, prot: i32) -> i32 {
    // SAFETY: our own mapping.
    unsafe { libc::mprotect(addr as *mut _, len as usize, prot) }
}

/// `len` bytes at `hint` if free there, else anywhere aligned to `align`.
fn map_at(hint: u64, len: u64, align: u64, prot: i32) -> u64 {
    let fl = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
    if let Ok(p) = map(hint, len, prot, fl | libc::MAP_FIXED_NOREPLACE, -1, 0) {
        if p == hint {
            return p;
        }
        // SAFETY: the mapping just made.
        unsafe { libc::munmap(p as *mut _, len as usize) };
    }
    let p = map(0, len + align, prot, fl, -1, 0).expect("mmap");
    let a = (p + align - 1) & !(align - 1);
    // SAFETY: trimming the mapping just made.
    unsafe {
        if a > p {
            libc::munmap(p as *mut _, (a - p) as usize);
        }
        libc::munmap((a + len) as *mut _, (p + align - a) as usize);
    }
    a
}

fn open(path: &str) -> i32 {
    let p = CString::new(path).unwrap();
    // SAFETY: plain open.
    unsafe { libc::open(p.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) }
}

fn close(fd: i32) {
    // SAFETY: an fd of ours.
    unsafe { libc::close(fd) };
}

fn maps_line_range(l: &str) -> Option<(u64, u64, &str)> {
    let mut it = l.split_whitespace();
    let (a, b) = it.next()?.split_once('-')?;
    let perms = it.next()?;
    Some((
        u64::from_str_radix(a, 16).ok()?,
        u64::from_str_radix(b, 16).ok()?,
        perms,
    ))
}

fn write_sys(path: &str, v: &str) {
    let _ = std::fs::write(path, v);
}

impl Ctx {
    fn new(cfg: Cfg, sh: &'static Shared) -> Result<Ctx, String> {
        let accel = {
            // The second file is of the peer device when the module has one (its default).
            let peer = if std::path::Path::new(ACCEL_PEER).exists() {
                ACCEL_PEER
            } else {
                ACCEL
            };
            let (a, b) = (open(ACCEL), open(peer));
            if a < 0 || b < 0 {
                if !cfg.allow_missing {
                    return Err(format!("open {ACCEL}: {}", ename(errno())));
                }
                None
            } else {
                let mut bind = drm_svm_accel_bind::default();
                // SAFETY: BIND on our fd with its struct.
                if unsafe { libc::ioctl(a, A_BIND as _, &mut bind) } != 0 {
                    return Err(format!("BIND: {}", ename(errno())));
                }
                Some([a, b])
            }
        };
        let dm = {
            let (a, b) = (open(DMIRROR[0]), open(DMIRROR[1]));
            if a < 0 || b < 0 {
                if cfg.require_dmirror {
                    return Err(format!(
                        "open {} / {}: {} (load svm_accel with dmirror=1)",
                        DMIRROR[0],
                        DMIRROR[1],
                        ename(errno())
                    ));
                }
                None
            } else {
                Some([a, b])
            }
        };
        let null_fd = open("/dev/null");
        let len = cfg.arena_mib << 20;
        let res_len = len + 2 * HUGE;
        let res = map_at(ARENA_HINT - HUGE, res_len, HUGE, libc::PROT_NONE);
        let base = res + HUGE;
        map(
            base,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
            -1,
            0,
        )
        .map_err(|e| format!("arena: {}", ename(e)))?;
        // SAFETY: the arena just mapped.
        unsafe {
            libc::madvise(base as *mut _, (len / 2) as usize, libc::MADV_HUGEPAGE);
            libc::madvise(
                (base + len / 2) as *mut _,
                (len / 2) as usize,
                libc::MADV_NOHUGEPAGE,
            );
        }
        let name = CString::new("fuzz").unwrap();
        // SAFETY: plain syscalls.
        let memfd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        if memfd >= 0 {
            // SAFETY: our memfd.
            unsafe { libc::ftruncate(memfd, len as i64) };
        }
        // SAFETY: plain syscall (ENOSYS or ENOSPC without secretmem: then the action skips).
        let secret_fd = unsafe { libc::syscall(libc::SYS_memfd_secret, libc::O_CLOEXEC) } as i32;
        if secret_fd >= 0 {
            // SAFETY: our fd.
            unsafe { libc::ftruncate(secret_fd, HUGE as i64) };
        }
        let rw = libc::PROT_READ | libc::PROT_WRITE;
        let anon = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
        let ro_area = map(0, 16 * PAGE, rw, anon, -1, 0).map_err(ename)?;
        for i in 0..(16 * PAGE / 8) {
            // SAFETY: inside the mapping just made.
            unsafe { ((ro_area + i * 8) as *mut u64).write(0x5a5a_0000_0000_0000 | i) };
        }
        protect(ro_area, 16 * PAGE, libc::PROT_READ);
        let none_area = map(0, 16 * PAGE, libc::PROT_NONE, anon, -1, 0).map_err(ename)?;
        let zero_page = map(0, PAGE, libc::PROT_READ, anon, -1, 0).map_err(ename)?;
        let text = (parse_num as fn(&str) -> Option<u64>) as usize as u64;
        // vvar (VM_PFNMAP|VM_IO) and vdso: places the device must refuse or may only read.
        let mut special = Vec::new();
        if let Ok(m) = std::fs::read_to_string("/proc/self/maps") {
            for l in m.lines() {
                if l.ends_with("[vvar]") || l.ends_with("[vdso]") || l.ends_with("[vsyscall]") {
                    if let Some((a, _, _)) = maps_line_range(l) {
                        special.push(a);
                    }
                }
            }
        }
        special.push(text & !(PAGE - 1));
        let mut actions = Vec::new();
        for (i, &(n, w)) in ACTIONS.iter().enumerate() {
            let pre = |l: &Vec<String>| l.iter().any(|s| n.starts_with(s.as_str()));
            let dev_ok = if n.starts_with("dm.") {
                dm.is_some()
            } else if n.starts_with("accel.") || n == "open" || n == "oracle" {
                accel.is_some()
            } else {
                true
            };
            let secret_ok = n != "secret" || secret_fd >= 0;
            if dev_ok && secret_ok && !pre(&cfg.skip) && (cfg.only.is_empty() || pre(&cfg.only)) {
                actions.push((i, w));
            }
        }
        if actions.is_empty() {
            return Err("no actions left (--skip/--only, devices)".into());
        }
        let weight = actions.iter().map(|a| a.1).sum();
        let deadline_ns = now_ns() + (cfg.seconds * 1e9) as u64;
        Ok(Ctx {
            cfg,
            sh,
            arena: Arena {
                res,
                res_end: res + res_len,
                base,
                len,
            },
            accel,
            dm,
            null_fd,
            memfd,
            secret_fd,
            ro_area,
            none_area,
            zero_page,
            special,
            forbidden: AtomicPtr::new(Box::into_raw(Box::default())),
            big: Mutex::new(()),
            hot: AtomicU64::new(0),
            deadline_ns,
            actions,
            weight,
        })
    }

    fn refresh_forbidden(&self) {
        let Ok(m) = std::fs::read_to_string("/proc/self/maps") else {
            return;
        };
        let mut v = Vec::new();
        for l in m.lines() {
            if let Some((a, b, perms)) = maps_line_range(l) {
                let in_res = a >= self.arena.res && b <= self.arena.res_end;
                if perms.as_bytes().get(1) == Some(&b'w') && !in_res {
                    v.push((a, b));
                }
            }
        }
        v.sort_unstable();
        // The old list is leaked: another thread may still be reading it.
        self.forbidden.store(Box::into_raw(Box::new(v)), Release);
    }

    /// May a call write `len` bytes at `a` without hitting the fuzzer's own memory?
    fn write_ok(&self, a: u64, len: u64) -> bool {
        if a >= self.arena.res && a < self.arena.res_end {
            // The arena: a device access stops at its PROT_NONE guards.
            return true;
        }
        let end = a.saturating_add(len.max(1));
        // SAFETY: lists are never freed.
        let f = unsafe { &*self.forbidden.load(Acquire) };
        !f.iter().any(|&(s, e)| a < e && end > s)
    }

    fn pick(&self, r: &mut Rng) -> usize {
        let mut x = r.below(u64::from(self.weight)) as u32;
        for &(i, w) in &self.actions {
            if x < w {
                return i;
            }
            x -= w;
        }
        self.actions[0].0
    }
}

// ---- per-thread state -------------------------------------------------------------------

/// A thread's private memory: the oracle's buffers, argument and ops scratch, a read-only
/// page and a guard page. Nothing but its own thread touches it; other threads' hostile
/// writes are kept off it by `write_ok`.
#[derive(Clone, Copy)]
struct Priv {
    od: u64,
    oc: u64,
    ob: u64,
    argp: u64,
    ro: u64,
    scratch: u64,
    guard: u64,
}

impl Priv {
    fn new(tid: usize) -> Priv {
        let p = map_at(
            PRIV_HINT + tid as u64 * PRIV_STRIDE,
            PRIV_LEN,
            HUGE,
            libc::PROT_READ | libc::PROT_WRITE,
        );
        let od = p;
        let oc = od + OD_LEN;
        let ob = oc + OB_LEN;
        let argp = ob + OB_LEN;
        let ro = argp + PAGE;
        let scratch = ro + PAGE;
        let guard = scratch + SCRATCH_PAGES * PAGE;
        protect(guard, p + PRIV_LEN - guard, libc::PROT_NONE);
        protect(ro, PAGE, libc::PROT_READ);
        // SAFETY: our mapping.
        unsafe { libc::madvise(od as *mut _, OD_LEN as usize, libc::MADV_HUGEPAGE) };
        Priv {
            od,
            oc,
            ob,
            argp,
            ro,
            scratch,
            guard,
        }
    }
}

fn words(addr: u64, len: u64) -> &'static [AtomicU64] {
    // SAFETY: callers pass RW memory of their own private area; atomics, so the device's
    // writes (from the kernel, while no Rust reference is being read) are fine.
    unsafe { std::slice::from_raw_parts(addr as *const AtomicU64, (len / 8) as usize) }
}

/// What a request should do according to the uAPI.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Pred {
    /// Valid (may still fail on memory: EFAULT, EPERM, ...).
    Valid,
    /// Must be refused (EINVAL, or EFAULT for an unreadable array/struct).
    Refuse,
    Unknown,
}

/// Where an argument struct goes.
#[derive(Clone, Copy, PartialEq)]
enum ArgAt {
    /// A normal, aligned, private RW place.
    Normal,
    /// Unaligned, but readable and writable.
    Unaligned(u64),
    /// Read-only: copy-in works, copy-back fails.
    ReadOnly(u64),
    /// Unreadable (NULL, kernel, non-canonical, PROT_NONE, straddling a guard).
    Bad(u64),
    /// Somewhere in the arena: whatever is there (or nothing).
    Arena(u64),
}

struct Kid {
    pid: i32,
    kill_after: Option<u64>,
    calls: u64,
}

struct T<'a> {
    cx: &'a Ctx,
    sh: &'static Shared,
    tid: usize,
    slot: usize,
    child: bool,
    r: Rng,
    p: Priv,
    accel: [i32; 2],
    dm: Option<[i32; 2]>,
    shadow: Vec<u64>,
    shadow_c: Vec<u64>,
    ops: Vec<drm_svm_accel_op>,
    kid: Option<Kid>,
    /// Queues this thread created: (fd, id).
    queues: Vec<(i32, u32)>,
    n: u64,
    cur: String,
}

fn op_valid(op: &drm_svm_accel_op) -> bool {
    let span = |a: u64, l: u64| match a.checked_add(l) {
        Some(end) => a & 7 == 0 && l & 7 == 0 && l <= MAX_LEN && end <= TASK_SIZE,
        None => false,
    };
    op.flags == 0
        && match op.kind {
            SVM_ACCEL_OP_FILL => span(op.dst, op.len),
            SVM_ACCEL_OP_COPY => span(op.src, op.len) && span(op.dst, op.len),
            SVM_ACCEL_OP_ADD => span(op.dst, 8),
            SVM_ACCEL_OP_READ => span(op.src, op.len),
            _ => false,
        }
}

fn op_kind_name(k: u32) -> String {
    match k {
        SVM_ACCEL_OP_FILL => "FILL".into(),
        SVM_ACCEL_OP_COPY => "COPY".into(),
        SVM_ACCEL_OP_ADD => "ADD".into(),
        SVM_ACCEL_OP_READ => "READ".into(),
        k => format!("kind{k:#x}"),
    }
}

fn op_desc(o: &drm_svm_accel_op) -> String {
    format!(
        "{}(src={:#x} dst={:#x} len={:#x}{})",
        op_kind_name(o.kind),
        o.src,
        o.dst,
        o.len,
        if o.flags != 0 {
            format!(" flags={:#x}", o.flags)
        } else {
            String::new()
        }
    )
}

const SPECIAL_LENS: [u64; 26] = [
    1 << 52,
    (1 << 52) + 1,
    (1 << 52) + 8,
    (1 << 52) + PAGE,
    (1 << 52) - PAGE,
    1 << 47,
    (1 << 47) - PAGE,
    (1 << 47) + PAGE,
    TASK_SIZE,
    TASK_SIZE + PAGE,
    TASK_SIZE - PAGE,
    MAX_LEN,
    MAX_LEN + 8,
    MAX_LEN + PAGE,
    MAX_LEN - 8,
    u32::MAX as u64,
    1 << 32,
    (1 << 32) + 8,
    i64::MAX as u64,
    1 << 63,
    u64::MAX - 7,
    u64::MAX - PAGE + 1,
    0x8000_0000,
    1 << 21,
    (1 << 21) + 8,
    (1 << 12) + 8,
];
const SPECIAL_NPAGES: [u64; 14] = [
    (1 << 52) + 1,
    1 << 52,
    (1 << 52) - 1,
    1 << 18,
    (1 << 18) + 1,
    (1 << 18) - 1,
    u64::MAX >> 12,
    (u64::MAX >> 12) + 1,
    1 << 51,
    1 << 35,
    (1 << 35) + 1,
    (TASK_SIZE >> 12) + 1,
    1 << 20,
    (1 << 16) + 1,
];
const KERNEL_ADDRS: [u64; 8] = [
    0xffff_8880_0000_0000,
    0xffff_8000_0000_0000,
    0xffff_ffff_8100_0000,
    0xffff_ffff_ffff_f000,
    u64::MAX - 7,
    0xffff_c900_0000_0000,
    0xffff_ea00_0000_0000,
    0xffff_ffff_ff60_0000,
];
const NONCANON: [u64; 7] = [
    0x0000_8000_0000_0000,
    0x8000_0000_0000_0000,
    0x1234_5678_9abc_d000,
    0x00ff_ffff_ffff_f000,
    0xdead_beef_dead_b000,
    0x7fff_ffff_ffff_f000,
    0xfffe_ffff_ffff_f000,
];
const TASKISH: [u64; 7] = [
    TASK_SIZE - PAGE,
    TASK_SIZE - 8,
    TASK_SIZE,
    TASK_SIZE + PAGE,
    (1 << 47) - 8,
    TASK_SIZE - HUGE,
    TASK_SIZE - 2 * PAGE,
];

impl<'a> T<'a> {
    fn new(cx: &'a Ctx, tid: usize) -> T<'a> {
        let p = Priv::new(tid);
        T {
            cx,
            sh: cx.sh,
            tid,
            slot: tid,
            child: false,
            r: Rng::new(cx.cfg.seed, tid as u64),
            p,
            accel: cx.accel.unwrap_or([-1, -1]),
            dm: cx.dm,
            shadow: vec![0; (OD_LEN / 8) as usize],
            shadow_c: vec![0; (OB_LEN / 8) as usize],
            ops: Vec::with_capacity(MAX_OPS),
            kid: None,
            queues: Vec::new(),
            n: 0,
            cur: String::new(),
        }
    }

    // ---- bookkeeping -----------------------------------------------------------------

    fn tag(&self) -> String {
        if self.child {
            format!("c{}#{}", self.tid, self.n)
        } else {
            format!("t{}#{}", self.tid, self.n)
        }
    }

    /// Publishes the call about to be made (watchdog; `--trace`).
    fn begin(&mut self, desc: String) {
        self.cur = format!("{} {desc}", self.tag());
        if self.cx.cfg.trace {
            raw_write(1, &format!("{}\n", self.cur));
        }
        self.sh.slots[self.slot].set(&self.cur);
    }

    fn end(&self) {
        self.sh.slots[self.slot].start_ns.store(0, Release);
    }

    fn brk(&self, msg: String) {
        self.sh.breaks.fetch_add(1, Relaxed);
        self.sh.note(
            "INVARIANT BREAK",
            &format!(
                "{msg}\n    call: {}\n    seed={:#x}",
                self.cur, self.cx.cfg.seed
            ),
        );
        if !self.cx.cfg.keep_going {
            self.sh.stop.store(1, Relaxed);
        }
    }

    fn warn(&self, msg: String) {
        if self.sh.warnings.fetch_add(1, Relaxed) < 20 {
            self.sh
                .note("warning", &format!("{msg}\n    call: {}", self.cur));
        }
    }

    /// Records an ioctl's result and checks it is 0 or an allowed errno.
    fn ioctl(&mut self, k: K, fd: i32, req: u64, arg: u64, allowed: &[i32]) -> Result<(), i32> {
        // SAFETY: the request and argument were chosen so that whatever the kernel writes
        // lands in memory the fuzzer gave up (arena, scratch) or nowhere (see `write_ok`).
        let r = unsafe { libc::syscall(libc::SYS_ioctl, fd as libc::c_long, req, arg) };
        let e = if r < 0 { errno() } else { 0 };
        self.end();
        if r > 0 {
            self.sh.count(k, B_POSITIVE);
            self.brk(format!(
                "{} returned {r}: not 0 or -errno",
                KINDS[k as usize]
            ));
            return Ok(());
        }
        if r == 0 {
            self.sh.count(k, 0);
            return Ok(());
        }
        if !(1..B_POSITIVE as i32).contains(&e) {
            self.sh.count(k, B_BADERR);
        } else {
            self.sh.count(k, e as usize);
        }
        if !allowed.contains(&e) {
            self.brk(format!(
                "{} failed with {}, not an errno its uAPI documents",
                KINDS[k as usize],
                ename(e)
            ));
        }
        Err(e)
    }

    /// Records a plain syscall's result (any errno is fine: the kernel's own mm calls).
    fn sys(&mut self, k: K, r: i64) -> Result<i64, i32> {
        let e = if r < 0 { errno() } else { 0 };
        self.end();
        if r < 0 {
            self.sh.count(k, e as usize);
            Err(e)
        } else {
            self.sh.count(k, 0);
            Ok(r)
        }
    }

    // ---- value generators ------------------------------------------------------------

    fn hostile_u32(&mut self) -> u32 {
        match self.r.below(5) {
            0 => u32::MAX,
            1 => 1 << self.r.below(32),
            2 => self.r.next() as u32,
            3 => (1u32 << self.r.below(32)).wrapping_sub(1),
            _ => 1 + self.r.below(8) as u32,
        }
    }

    fn sane_len(&mut self) -> u64 {
        match self.r.below(10) {
            0..=5 => 8 * (1 + self.r.below(64)),
            6..=8 => PAGE * (1 + self.r.below(16)),
            _ => PAGE * (1 + self.r.below(512)),
        }
    }

    fn len_any(&mut self) -> u64 {
        let one = 1u64 << self.r.below(64);
        match self.r.below(20) {
            0 => 0,
            1 => u64::MAX,
            2..=6 => one,
            7 => one.wrapping_sub(1),
            8 => one.wrapping_add(1),
            9 => one.wrapping_add(PAGE),
            10 => one.wrapping_sub(8),
            11 => !one,
            12 | 13 => self.r.pick(&SPECIAL_LENS),
            14 => self.r.next(),
            15 => 8 * self.r.below(1024),
            16 => PAGE * self.r.below(1024),
            _ => self.sane_len(),
        }
    }

    fn npages_any(&mut self) -> u64 {
        match self.r.below(10) {
            0..=2 => self.r.pick(&SPECIAL_NPAGES),
            3..=6 => 1u64 << self.r.below(64),
            7 => (1u64 << self.r.below(64)).wrapping_add(1),
            8 => self.len_any(),
            _ => 1 + self.r.below(64),
        }
    }

    /// An arena address aligned to `align` (8 or a page).
    fn sane_addr(&mut self, align: u64) -> u64 {
        let a = &self.cx.arena;
        let pg = if self.r.chance(50) {
            a.base + self.cx.hot.load(Relaxed) * HUGE + PAGE * self.r.below(HUGE / PAGE)
        } else {
            a.base + PAGE * self.r.below(a.pages())
        };
        if align >= PAGE {
            pg
        } else {
            pg + 8 * self.r.below(PAGE / 8)
        }
    }

    /// Any address: arena, guards, read-only, PROT_NONE, text, vvar/vdso, the private
    /// oracle (readable), NULL-ish, single bits, kernel, non-canonical, around TASK_SIZE.
    fn addr_any(&mut self, align: u64) -> u64 {
        let cx = self.cx;
        let b = self.r.below(64);
        let a = match self.r.below(100) {
            0..=39 => self.sane_addr(align),
            40..=44 => self.sane_addr(PAGE) + 1 + self.r.below(7),
            45..=47 => cx.arena.end() - 8 * (1 + self.r.below(4)),
            48..=49 => cx.arena.base - PAGE * (1 + self.r.below(4)),
            50..=53 => cx.ro_area + 8 * self.r.below(16 * PAGE / 8),
            54..=55 => cx.none_area + 8 * self.r.below(16 * PAGE / 8),
            56..=59 => self.r.pick(&cx.special) + PAGE * self.r.below(2),
            60..=61 => self.p.od + 8 * self.r.below(OD_LEN / 8),
            62..=66 => self.r.pick(&[0, 8, PAGE, 0xf000, 0x10000, PAGE - 8]),
            67..=74 => 1u64 << b,
            75..=76 => (1u64 << b).wrapping_sub(8),
            77..=83 => self.r.pick(&KERNEL_ADDRS),
            84..=89 => self.r.pick(&NONCANON),
            90..=95 => self.r.pick(&TASKISH),
            _ => self.r.next() | (1 << 63),
        };
        if align > 1 && self.r.chance(85) {
            a & !(align - 1)
        } else {
            a
        }
    }

    /// `a` if a call may write `len` bytes there, else a fresh arena address.
    fn safe_dst(&mut self, a: u64, len: u64, align: u64) -> u64 {
        if self.cx.write_ok(a, len) {
            a
        } else {
            self.sh.redirected.fetch_add(1, Relaxed);
            self.sane_addr(align)
        }
    }

    /// Where an argument struct of `size` bytes goes; writes `bytes` there unless Normal.
    fn place_arg(&mut self, bytes: &[u8]) -> (ArgAt, u64) {
        let size = bytes.len() as u64;
        let at = match self.r.below(100) {
            0..=89 => return (ArgAt::Normal, 0),
            90..=92 => ArgAt::Unaligned(self.p.argp + 1 + self.r.below(7)),
            93..=94 => ArgAt::ReadOnly(self.p.ro + 8 * self.r.below(8)),
            // Straddling the guard page whatever the size (`guard - 8` left an 8-byte BIND
            // wholly readable: a random seed found that as "BIND with an unreadable argument
            // succeeded").
            95 => ArgAt::Bad(self.p.guard - (size / 2).max(1)),
            96 => ArgAt::Bad(self.r.pick(&[0, 8, self.cx.none_area])),
            97 => ArgAt::Bad(self.r.pick(&KERNEL_ADDRS)),
            98 => ArgAt::Bad(self.r.pick(&NONCANON)),
            _ => ArgAt::Arena(self.sane_addr(8)),
        };
        match at {
            ArgAt::Unaligned(p) => {
                // SAFETY: inside the private argument page.
                unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p as *mut u8, bytes.len()) };
                (at, p)
            }
            ArgAt::ReadOnly(p) => {
                protect(self.p.ro, PAGE, libc::PROT_READ | libc::PROT_WRITE);
                // SAFETY: inside the private read-only page, writable for now.
                unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p as *mut u8, bytes.len()) };
                protect(self.p.ro, PAGE, libc::PROT_READ);
                (at, p)
            }
            ArgAt::Bad(p) => (at, p),
            ArgAt::Arena(p) => {
                if self.cx.write_ok(p, size) {
                    (at, p)
                } else {
                    (ArgAt::Bad(0), 0)
                }
            }
            ArgAt::Normal => unreachable!(),
        }
    }

    fn accel_fd(&mut self) -> i32 {
        if self.r.chance(80) {
            self.accel[0]
        } else {
            self.accel[1]
        }
    }

    fn dm_fd(&mut self) -> Option<i32> {
        let d = self.dm?;
        Some(if self.r.chance(75) { d[0] } else { d[1] })
    }

    // ---- the main loop ---------------------------------------------------------------

    fn run(&mut self) {
        loop {
            if self.sh.stop.load(Relaxed) != 0 || now_ns() > self.cx.deadline_ns {
                break;
            }
            if self.sh.claimed.fetch_add(1, Relaxed) >= self.cx.cfg.calls {
                break;
            }
            self.n += 1;
            self.reap(false);
            if self.tid == 0 && self.n.is_multiple_of(2048) {
                self.cx.refresh_forbidden();
            }
            if self.tid == 0 && self.n.is_multiple_of(256) {
                let c = self.r.below(self.cx.arena.len / HUGE);
                self.cx.hot.store(c, Relaxed);
            }
            let a = self.cx.pick(&mut self.r);
            self.act(a);
            self.sh.done.fetch_add(1, Relaxed);
        }
        self.reap(true);
    }

    fn act(&mut self, a: usize) {
        match ACTIONS[a].0 {
            "accel.BIND" => self.a_bind(),
            "accel.SUBMIT" => self.a_submit(),
            "accel.PREFETCH" => self.a_prefetch(),
            "accel.MADVISE" => self.a_accel_madvise(),
            "accel.QUERY" => self.a_query(),
            "accel.queue" => self.a_queue(),
            "accel.badnr" => self.a_badnr(),
            "accel.badfd" => self.a_badfd(),
            "dm.READ" => self.a_dm(0),
            "dm.WRITE" => self.a_dm(1),
            "dm.SNAPSHOT" => self.a_dm(4),
            "dm.migrate_exclusive" => {
                let nr = self.r.pick(&[2, 3, 5, 6]);
                self.a_dm(nr)
            }
            "dm.RELEASE" => self.a_dm(7),
            "dm.badnr" => self.a_dm_badnr(),
            "open" => self.a_open(),
            "reopen" => self.a_reopen(),
            "mmap" => self.a_mmap(),
            "munmap" => self.a_munmap(),
            "mprotect" => self.a_mprotect(),
            "mremap" => self.a_mremap(),
            "madvise" => self.a_madvise(),
            "cpuwrite" => self.a_cpuwrite(),
            "dm.mmap" => self.a_dm_mmap(),
            "secret" => self.a_secret(),
            "fork" => self.a_fork(),
            "oracle" => self.oracle(),
            n => unreachable!("action {n}"),
        }
    }

    // ---- accel -----------------------------------------------------------------------

    fn a_bind(&mut self) {
        let fd = self.accel_fd();
        let mut b = drm_svm_accel_bind::default();
        let hostile = self.r.chance(25);
        if hostile {
            b.flags = self.hostile_u32();
            b.pad = if self.r.chance(50) {
                0
            } else {
                self.hostile_u32()
            };
        }
        let bad = b.flags != 0 || b.pad != 0;
        // SAFETY: the struct is plain integers.
        let bytes = unsafe { as_bytes(&b) }.to_vec();
        let (at, p) = self.place_arg(&bytes);
        let arg = if at == ArgAt::Normal {
            &mut b as *mut _ as u64
        } else {
            p
        };
        self.begin(format!(
            "accel.BIND fd={fd} flags={:#x} pad={:#x} arg={}",
            b.flags,
            b.pad,
            arg_desc(at, arg)
        ));
        let r = self.ioctl(K::ABind, fd, A_BIND, arg, E_ACCEL);
        if r.is_ok() && matches!(at, ArgAt::Normal | ArgAt::Unaligned(_)) && bad {
            self.brk("BIND with non-zero flags/pad succeeded".into());
        }
        if r.is_ok() && matches!(at, ArgAt::Bad(_)) {
            self.brk("BIND with an unreadable argument succeeded".into());
        }
    }

    /// CREATE_QUEUE, WAIT or DESTROY_QUEUE with hostile arguments. The device never runs a
    /// job of these queues (its writes would land anywhere): the doorbell is a word that
    /// reads 0 for good, or one the device cannot read (the queue then fails). The ring and
    /// the fence are anything.
    fn a_queue(&mut self) {
        let fd = self.accel_fd();
        match self.r.below(3) {
            0 => {
                let entries = if self.r.chance(60) {
                    1 << self.r.below(13)
                } else {
                    self.hostile_u32()
                };
                let doorbell = match self.r.below(6) {
                    0..=2 => self.cx.zero_page + 8 * self.r.below(PAGE / 8),
                    3 => self.cx.none_area + 8 * self.r.below(16 * PAGE / 8),
                    4 => self.r.pick(&KERNEL_ADDRS),
                    _ => self
                        .r
                        .pick(&[0, 8, PAGE, 0x10000, TASK_SIZE - 8, u64::MAX - 7]),
                };
                let ring = self.addr_any(64);
                let fence = self.addr_any(8);
                let priority = match self.r.below(8) {
                    0 => 1,
                    1 => self.hostile_u32(),
                    _ => 0,
                };
                let flags = if self.r.chance(90) {
                    0
                } else {
                    self.hostile_u32()
                };
                let mut c = drm_svm_accel_create_queue {
                    ring,
                    doorbell,
                    fence,
                    ring_entries: entries,
                    priority,
                    flags,
                    queue_id: self.r.next() as u32,
                };
                let ring_ok = ring % 64 == 0
                    && (entries as u64)
                        .checked_mul(64)
                        .and_then(|l| ring.checked_add(l))
                        .is_some_and(|e| e <= TASK_SIZE);
                let word_ok =
                    |a: u64| a % 8 == 0 && a.checked_add(8).is_some_and(|e| e <= TASK_SIZE);
                let bad = flags != 0
                    || priority > 1
                    || entries == 0
                    || entries > SVM_ACCEL_MAX_RING
                    || !entries.is_power_of_two()
                    || !ring_ok
                    || !word_ok(doorbell)
                    || !word_ok(fence);
                self.begin(format!(
                    "accel.CREATE_QUEUE fd={fd} ring={ring:#x} entries={entries} doorbell={doorbell:#x} fence={fence:#x} prio={priority} flags={flags:#x}"
                ));
                let r = self.ioctl(
                    K::ACreateQueue,
                    fd,
                    A_CREATE_QUEUE,
                    &mut c as *mut _ as u64,
                    E_QUEUE,
                );
                if r.is_ok() {
                    if bad {
                        self.brk("CREATE_QUEUE with invalid arguments succeeded".into());
                    }
                    if c.queue_id == 0 {
                        self.brk("CREATE_QUEUE returned queue id 0".into());
                    }
                    self.queues.push((fd, c.queue_id));
                    if self.queues.len() > 64 {
                        let (f, id) = self.queues.remove(0);
                        self.destroy_queue(f, id);
                    }
                }
            }
            1 => {
                let (fd, id) = self.pick_queue(fd);
                let mut w = drm_svm_accel_wait {
                    queue_id: id,
                    flags: if self.r.chance(95) {
                        0
                    } else {
                        self.hostile_u32()
                    },
                    value: if self.r.chance(50) {
                        self.r.below(4)
                    } else {
                        self.r.next()
                    },
                    timeout_ns: self.r.pick(&[0, 1, 1000, 100_000, 1_000_000]),
                    ..Default::default()
                };
                let bad = w.flags != 0;
                self.begin(format!(
                    "accel.WAIT fd={fd} id={id} value={} timeout={}",
                    w.value, w.timeout_ns
                ));
                let r = self.ioctl(K::AWait, fd, A_WAIT, &mut w as *mut _ as u64, E_QUEUE);
                if r.is_ok() && bad {
                    self.brk("WAIT with non-zero flags succeeded".into());
                }
                if r.is_ok() && w.completed < w.value {
                    self.brk(format!(
                        "WAIT returned 0 with completed {} < {}",
                        w.completed, w.value
                    ));
                }
                if matches!(r, Ok(()) | Err(libc::ETIME) | Err(libc::EIO))
                    && !(1..=3).contains(&w.state)
                {
                    self.brk(format!("WAIT reported state {}", w.state));
                }
            }
            _ => {
                let (fd, id) = if !self.queues.is_empty() && self.r.chance(70) {
                    let i = self.r.below(self.queues.len() as u64) as usize;
                    self.queues.swap_remove(i)
                } else {
                    self.pick_queue(fd)
                };
                self.destroy_queue(fd, id);
            }
        }
    }

    /// A queue this thread created (on its own file) half the time, else `fd` with an id
    /// that is hostile or probably not there.
    fn pick_queue(&mut self, fd: i32) -> (i32, u32) {
        match self.r.below(4) {
            0 | 1 if !self.queues.is_empty() => {
                // Its own file: `reopen` keeps the descriptor numbers (dup2), so a reopened
                // file answers ENOENT.
                self.queues[self.r.below(self.queues.len() as u64) as usize]
            }
            2 => (fd, self.hostile_u32()),
            _ => (fd, self.r.below(40) as u32),
        }
    }

    fn destroy_queue(&mut self, fd: i32, id: u32) {
        let mut d = drm_svm_accel_destroy_queue {
            queue_id: id,
            pad: if self.r.chance(95) {
                0
            } else {
                self.hostile_u32()
            },
        };
        let bad = d.pad != 0;
        self.begin(format!(
            "accel.DESTROY_QUEUE fd={fd} id={id} pad={:#x}",
            d.pad
        ));
        let r = self.ioctl(
            K::ADestroyQueue,
            fd,
            A_DESTROY_QUEUE,
            &mut d as *mut _ as u64,
            E_QUEUE,
        );
        if r.is_ok() && bad {
            self.brk("DESTROY_QUEUE with non-zero pad succeeded".into());
        }
    }

    fn gen_op(&mut self, sane: bool) -> drm_svm_accel_op {
        let kind = if self.r.chance(92) {
            1 + self.r.below(4) as u32
        } else {
            let b = 1u32 << self.r.below(32);
            self.r.pick(&[0, 5, u32::MAX, b, 0x101])
        };
        let flags = if self.r.chance(97) {
            0
        } else {
            self.hostile_u32()
        };
        let (src, dst, len) = if sane {
            (self.sane_addr(8), self.sane_addr(8), self.sane_len())
        } else {
            let s = if self.r.chance(50) {
                self.sane_addr(8)
            } else {
                self.addr_any(8)
            };
            let d = if self.r.chance(50) {
                self.sane_addr(8)
            } else {
                self.addr_any(8)
            };
            let l = if self.r.chance(40) {
                self.sane_len()
            } else {
                self.len_any()
            };
            (s, d, l)
        };
        let value = if self.r.chance(50) {
            self.r.next()
        } else {
            self.len_any()
        };
        let mut o = drm_svm_accel_op {
            kind,
            flags,
            src,
            dst,
            len,
            value,
            result: self.r.next(),
        };
        // Device writes: FILL and COPY write [dst, dst + len), ADD 8 bytes at dst.
        let wlen = if o.kind == SVM_ACCEL_OP_ADD { 8 } else { o.len };
        if matches!(
            o.kind,
            SVM_ACCEL_OP_FILL | SVM_ACCEL_OP_COPY | SVM_ACCEL_OP_ADD
        ) || o.kind > 4
        {
            o.dst = self.safe_dst(o.dst, wlen, 8);
        }
        o
    }

    /// Rough bytes a valid op makes the device touch (for the per-job budget).
    fn op_cost(&self, o: &drm_svm_accel_op) -> u64 {
        let a = &self.cx.arena;
        let one = |s: u64, l: u64| {
            if s >= a.base && s < a.end() {
                l.min(a.end() - s)
            } else {
                l.min(4 << 20)
            }
        };
        match o.kind {
            SVM_ACCEL_OP_FILL => one(o.dst, o.len),
            SVM_ACCEL_OP_COPY => one(o.src, o.len).min(one(o.dst, o.len)),
            SVM_ACCEL_OP_READ => one(o.src, o.len),
            _ => 8,
        }
    }

    fn a_submit(&mut self) {
        let fd = self.accel_fd();
        let sane = self.r.chance(50);
        let count: u32 = match self.r.below(100) {
            0..=59 => 1 + self.r.below(4) as u32,
            60..=79 => 1 + self.r.below(64) as u32,
            80..=84 => 1 + self.r.below(MAX_OPS as u64) as u32,
            _ => {
                let b = 1u32 << self.r.below(32);
                self.r
                    .pick(&[0, 4095, 4096, 4097, 1 << 31, u32::MAX, b, b + 1])
            }
        };
        let flags = if self.r.chance(96) {
            0
        } else {
            self.hostile_u32()
        };
        let n = (count as usize).min(MAX_OPS);
        let mut ops = std::mem::take(&mut self.ops);
        ops.clear();
        for i in 0..n {
            // Big arrays mostly repeat their first 16 ops: the device's TLB keeps them cheap.
            if i >= 16 && self.r.chance(90) {
                let o = ops[i % 16];
                ops.push(o);
            } else {
                let o = self.gen_op(sane);
                ops.push(o);
            }
        }
        // Budget: about one pass over the arena per job (TCG: a page is ~1 ms to fault).
        let mut budget = self.cx.arena.len + (4 << 20);
        for o in ops.iter_mut() {
            if op_valid(o) {
                let c = self.op_cost(o);
                if c > budget {
                    o.len = 8;
                    budget = budget.saturating_sub(8);
                } else {
                    budget -= c;
                }
            }
        }
        // The ops array: private scratch (aligned, unaligned, running into the guard page,
        // read-only), or a hostile address.
        let bytes = n as u64 * OP_SIZE;
        let (ops_ptr, ours, into_guard) = match self.r.below(100) {
            0..=79 => (self.p.scratch, true, false),
            80..=87 => (self.p.scratch + 1 + self.r.below(7), true, false),
            88..=91 if n > 0 => {
                // `fit` < n whole ops before the guard page (plus half of the next).
                let fit = self.r.below(n as u64);
                (
                    self.p.guard - fit * OP_SIZE - self.r.pick(&[0, 24]),
                    false,
                    true,
                )
            }
            92..=93 if bytes <= PAGE => (self.p.ro, true, false),
            _ => {
                let a = self.addr_any(8);
                let a = if self.cx.write_ok(a, bytes) { a } else { 0 };
                (a, false, false)
            }
        };
        if ours || into_guard {
            let off = ops_ptr;
            let room = if ops_ptr == self.p.ro {
                PAGE
            } else {
                self.p.guard - off
            };
            let nb = bytes.min(room) as usize;
            if ops_ptr == self.p.ro {
                protect(self.p.ro, PAGE, libc::PROT_READ | libc::PROT_WRITE);
            }
            // SAFETY: `nb` bytes of our own ops into our private scratch or read-only page
            // (writable for now); both hold them (`room`).
            unsafe { std::ptr::copy_nonoverlapping(ops.as_ptr() as *const u8, off as *mut u8, nb) };
            if ops_ptr == self.p.ro {
                protect(self.p.ro, PAGE, libc::PROT_READ);
            }
        }
        let mut s = drm_svm_accel_submit {
            ops_ptr,
            op_count: count,
            flags,
            error: self.r.next() as i32,
            failed_op: self.r.next() as u32,
            fault_addr: self.r.next(),
        };
        // SAFETY: the struct is plain integers.
        let sb = unsafe { as_bytes(&s) }.to_vec();
        let (at, p) = self.place_arg(&sb);
        let arg = if at == ArgAt::Normal {
            &mut s as *mut _ as u64
        } else {
            p
        };
        let header_bad = flags != 0 || count == 0 || count as usize > MAX_OPS;
        let pred = if header_bad {
            Pred::Refuse
        } else if ours {
            if ops.iter().all(op_valid) {
                Pred::Valid
            } else {
                Pred::Refuse
            }
        } else if into_guard {
            Pred::Refuse
        } else {
            Pred::Unknown
        };
        let mut d = format!(
            "accel.SUBMIT fd={fd} ops_ptr={ops_ptr:#x} op_count={count:#x} flags={flags:#x} arg={}",
            arg_desc(at, arg)
        );
        for o in ops.iter().take(3) {
            d.push(' ');
            d.push_str(&op_desc(o));
        }
        if n > 3 {
            d.push_str(" ...");
        }
        self.begin(d);
        let r = self.ioctl(K::ASubmit, fd, A_SUBMIT, arg, E_ACCEL);
        let arg_good = matches!(at, ArgAt::Normal | ArgAt::Unaligned(_));
        if r.is_ok() && matches!(at, ArgAt::Bad(_)) {
            self.brk("SUBMIT with an unreadable argument struct succeeded".into());
        }
        if arg_good {
            if let ArgAt::Unaligned(p) = at {
                // SAFETY: the private argument page.
                s = unsafe { std::ptr::read_unaligned(p as *const drm_svm_accel_submit) };
            }
            match r {
                Ok(()) => {
                    if pred == Pred::Refuse {
                        self.brk(format!(
                            "SUBMIT ran a job the uAPI says must be refused (header_bad={header_bad}, into_guard={into_guard})"
                        ));
                    }
                    self.check_job(&s, ours.then_some(&ops[..]));
                }
                Err(libc::EINVAL) if pred == Pred::Valid => {
                    self.warn("SUBMIT refused a job with EINVAL that looks valid".into())
                }
                Err(_) => {}
            }
        }
        self.ops = ops;
    }

    /// The job result of a SUBMIT that returned 0.
    fn check_job(&mut self, s: &drm_svm_accel_submit, ops: Option<&[drm_svm_accel_op]>) {
        let e = s.error;
        if e == 0 {
            self.sh.count(K::AJob, 0);
            return;
        }
        if !(-4095..=0).contains(&e) {
            self.sh.count(K::AJob, B_BADERR);
            self.brk(format!("SUBMIT job error {e} is not a negative errno"));
            return;
        }
        self.sh.count(K::AJob, (-e) as usize);
        if !E_JOB.contains(&-e) {
            self.brk(format!(
                "SUBMIT job error {} is not one the uAPI documents",
                ename(-e)
            ));
        }
        if let Some(ops) = ops {
            let Some(o) = ops.get(s.failed_op as usize) else {
                self.brk(format!(
                    "SUBMIT failed_op {} >= op_count {}",
                    s.failed_op,
                    ops.len()
                ));
                return;
            };
            let within = |a: u64, l: u64| {
                let lo = a & !(PAGE - 1);
                s.fault_addr >= lo && s.fault_addr < a.saturating_add(l.max(1))
            };
            let ok = match o.kind {
                SVM_ACCEL_OP_FILL => within(o.dst, o.len),
                SVM_ACCEL_OP_COPY => within(o.src, o.len) || within(o.dst, o.len),
                SVM_ACCEL_OP_ADD => within(o.dst, 8),
                SVM_ACCEL_OP_READ => within(o.src, o.len),
                _ => false,
            };
            if !ok {
                self.brk(format!(
                    "SUBMIT fault_addr {:#x} ({}) is outside failed op {}: {}",
                    s.fault_addr,
                    ename(-e),
                    s.failed_op,
                    op_desc(o)
                ));
            }
        }
    }

    /// MADVISE: sane spans of the arena (and their policy's effect on later jobs), and
    /// hostile spans, values, flags and padding, with every errno checked.
    fn a_accel_madvise(&mut self) {
        let fd = self.accel_fd();
        let sane = self.r.chance(60);
        let start = if sane {
            self.sane_addr(PAGE)
        } else {
            self.addr_any(PAGE)
        };
        let len = if sane {
            PAGE * (1 + self.r.below(512))
        } else {
            self.len_any()
        };
        let location = if self.r.chance(90) {
            self.r.below(3) as u32
        } else {
            self.hostile_u32()
        };
        let atomic = if self.r.chance(90) {
            self.r.below(2) as u32
        } else {
            self.hostile_u32()
        };
        // Migrating now is rare: a span of the arena can be large.
        let flags = if self.r.chance(95) {
            u32::from(self.r.chance(15))
        } else {
            self.hostile_u32()
        };
        // A peer's accel minor (0 or 1: the VM has no other accel driver), or hostile.
        let device = if location == SVM_ACCEL_LOC_PEER && self.r.chance(90) {
            self.r.below(2) as u32
        } else if self.r.chance(95) {
            0
        } else {
            self.hostile_u32()
        };
        let bad = location > SVM_ACCEL_LOC_PEER
            || atomic > SVM_ACCEL_ATOMIC_DEVICE
            || flags & !SVM_ACCEL_MADVISE_MIGRATE != 0
            || (location != SVM_ACCEL_LOC_PEER && device != 0)
            || (location == SVM_ACCEL_LOC_PEER && device > 1)
            || start % PAGE != 0
            || len % PAGE != 0
            || len == 0
            || start.checked_add(len).is_none_or(|e| e > TASK_SIZE);
        let mut m = drm_svm_accel_madvise {
            start,
            len,
            location,
            atomic,
            flags,
            device,
            done: self.r.next(),
        };
        self.begin(format!(
            "accel.MADVISE fd={fd} start={start:#x} len={len:#x} location={location} atomic={atomic} flags={flags:#x} device={device:#x}"
        ));
        let arg = &mut m as *mut _ as u64;
        let r = self.ioctl(K::AMadvise, fd, A_MADVISE, arg, E_ACCEL);
        match r {
            Ok(()) if bad => self.brk("MADVISE of an invalid span or value succeeded".into()),
            Ok(()) if flags & SVM_ACCEL_MADVISE_MIGRATE != 0 && m.done != len => self.brk(format!(
                "MADVISE MIGRATE succeeded with done {:#x} != len",
                m.done
            )),
            Err(libc::EINVAL) if m.done != 0 => {
                self.brk(format!("MADVISE EINVAL with done {:#x}", m.done))
            }
            Err(e) if !bad && m.done > len => self.brk(format!(
                "MADVISE {} with done {:#x} (len {len:#x})",
                ename(e),
                m.done
            )),
            _ => {}
        }
    }

    fn a_prefetch(&mut self) {
        let fd = self.accel_fd();
        let sane = self.r.chance(50);
        let start = if sane {
            self.sane_addr(PAGE)
        } else {
            self.addr_any(PAGE)
        };
        let mut len = if sane {
            if self.r.chance(20) {
                HUGE
            } else {
                PAGE * (1 + self.r.below(64))
            }
        } else {
            let l = self.len_any();
            if self.r.chance(80) {
                l & !(PAGE - 1)
            } else {
                l
            }
        };
        let a = &self.cx.arena;
        let in_arena = start >= a.base && start < a.end();
        if !in_arena
            && len > (4 << 20)
            && start < TASK_SIZE
            && start.checked_add(len).is_some_and(|e| e <= TASK_SIZE)
        {
            // A valid prefetch through the fuzzer's own mappings: keep it short.
            len = 4 << 20;
        }
        let flags = if self.r.chance(90) {
            self.r.below(8) as u32
        } else {
            self.hostile_u32()
        };
        let pad = if self.r.chance(95) {
            0
        } else {
            self.hostile_u32()
        };
        let dest = SVM_ACCEL_PREFETCH_TO_DEVICE | SVM_ACCEL_PREFETCH_TO_SYSTEM;
        let bad = flags & !(SVM_ACCEL_PREFETCH_WRITE | dest) != 0
            || flags & dest == dest
            || pad != 0
            || start % PAGE != 0
            || len % PAGE != 0
            || len == 0
            || start.checked_add(len).is_none_or(|e| e > TASK_SIZE);
        let mut p = drm_svm_accel_prefetch {
            start,
            len,
            flags,
            pad,
            done: self.r.next(),
        };
        // SAFETY: plain integers.
        let pb = unsafe { as_bytes(&p) }.to_vec();
        let (at, ap) = self.place_arg(&pb);
        let arg = if at == ArgAt::Normal {
            &mut p as *mut _ as u64
        } else {
            ap
        };
        self.begin(format!(
            "accel.PREFETCH fd={fd} start={start:#x} len={len:#x} flags={flags:#x} pad={pad:#x} arg={}",
            arg_desc(at, arg)
        ));
        let r = self.ioctl(K::APrefetch, fd, A_PREFETCH, arg, E_ACCEL);
        if r.is_ok() && matches!(at, ArgAt::Bad(_)) {
            self.brk("PREFETCH with an unreadable argument succeeded".into());
        }
        if !matches!(at, ArgAt::Normal | ArgAt::Unaligned(_)) {
            return;
        }
        if let ArgAt::Unaligned(q) = at {
            // SAFETY: the private argument page.
            p = unsafe { std::ptr::read_unaligned(q as *const drm_svm_accel_prefetch) };
        }
        match r {
            Ok(()) => {
                if bad {
                    self.brk("PREFETCH of an invalid range succeeded".into());
                } else if p.done != len {
                    self.brk(format!("PREFETCH succeeded with done {:#x} != len", p.done));
                }
            }
            Err(e) => {
                if e == libc::EINVAL && p.done != 0 {
                    self.brk(format!("PREFETCH EINVAL with done {:#x}", p.done));
                }
                if matches!(e, libc::ENOTCONN | libc::EXDEV) && p.done != 0 {
                    self.brk(format!("PREFETCH {} with done {:#x}", ename(e), p.done));
                }
                if matches!(e, libc::ENOTCONN | libc::EXDEV | libc::EINVAL) || bad {
                    return;
                }
                if p.done > len || !p.done.is_multiple_of(PAGE) {
                    self.brk(format!(
                        "PREFETCH {} with done {:#x} (len {len:#x})",
                        ename(e),
                        p.done
                    ));
                }
            }
        }
    }

    fn a_query(&mut self) {
        let fd = self.accel_fd();
        let mut q = drm_svm_accel_query::default();
        if self.r.chance(20) {
            // Garbage in the output fields: the kernel must overwrite all of it.
            q.pt_tables = self.r.next();
            q.range_shift = self.r.next() as u32;
            q.pte_format_name = [0x41; 16];
        }
        // SAFETY: plain integers and bytes.
        let qb = unsafe { as_bytes(&q) }.to_vec();
        let (at, p) = self.place_arg(&qb);
        let arg = if at == ArgAt::Normal {
            &mut q as *mut _ as u64
        } else {
            p
        };
        self.begin(format!("accel.QUERY fd={fd} arg={}", arg_desc(at, arg)));
        let r = self.ioctl(K::AQuery, fd, A_QUERY, arg, E_ACCEL);
        if r.is_ok() && matches!(at, ArgAt::Bad(_)) {
            self.brk("QUERY with an unreadable argument succeeded".into());
        }
        if r.is_err() || !matches!(at, ArgAt::Normal | ArgAt::Unaligned(_)) {
            return;
        }
        if let ArgAt::Unaligned(x) = at {
            // SAFETY: the private argument page.
            q = unsafe { std::ptr::read_unaligned(x as *const drm_svm_accel_query) };
        }
        let name: Vec<u8> = q
            .pte_format_name
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        if q.pte_format != SVM_ACCEL_PTE_X86
            || name != b"x86-64"
            || q.page_sizes != PAGE | HUGE
            || q.range_shift == 0
            || q.range_shift > 40
            || q.fault_queue_depth == 0
            || q.tlb_entries == 0
        {
            self.brk(format!(
                "QUERY capabilities changed: format {} name {:?} page_sizes {:#x} range_shift {} qdepth {} tlb {}",
                q.pte_format,
                String::from_utf8_lossy(&name),
                q.page_sizes,
                q.range_shift,
                q.fault_queue_depth,
                q.tlb_entries
            ));
        }
    }

    /// A sane argument for accel request `nr` in the private argument page (zeroed first):
    /// SUBMIT gets one op in its scratch, PREFETCH one arena page.
    fn sane_accel_arg(&mut self, nr: u64) -> u64 {
        // SAFETY: our private argument page.
        unsafe { std::ptr::write_bytes(self.p.argp as *mut u8, 0, PAGE as usize) };
        match nr {
            1 => {
                let o = self.gen_op(true);
                // SAFETY: private scratch and argument page.
                unsafe {
                    (self.p.scratch as *mut drm_svm_accel_op).write(o);
                    (self.p.argp as *mut drm_svm_accel_submit).write(drm_svm_accel_submit {
                        ops_ptr: self.p.scratch,
                        op_count: 1,
                        ..Default::default()
                    });
                }
            }
            2 => {
                let start = self.sane_addr(PAGE);
                // SAFETY: private argument page.
                unsafe {
                    (self.p.argp as *mut drm_svm_accel_prefetch).write(drm_svm_accel_prefetch {
                        start,
                        len: PAGE,
                        ..Default::default()
                    })
                };
            }
            _ => {}
        }
        self.p.argp
    }

    fn a_badnr(&mut self) {
        let fd = self.accel_fd();
        let sizes = [
            0u64, 1, 4, 7, 8, 16, 24, 31, 33, 40, 48, 64, 255, 256, 4096, 0x3fff,
        ];
        let (req, must_fail, k) = match self.r.below(3) {
            0 => {
                // Unknown driver command numbers (DRM_COMMAND_BASE + A_NRS .. DRM_COMMAND_END).
                let nr = A_BASE_NR + A_NRS + self.r.below(0x60 - A_NRS);
                let size = self.r.pick(&sizes);
                let dir = self.r.below(4);
                self.sane_accel_arg(0);
                (ioc(dir, A_TYPE, nr, size), true, K::ABadNr)
            }
            1 => {
                // Known numbers, other sizes or directions (DRM truncates or zero-extends).
                let nr = self.r.below(4);
                self.sane_accel_arg(nr);
                let mut size = self.r.pick(&sizes);
                if size > PAGE {
                    size = PAGE;
                }
                (
                    ioc(self.r.below(4), A_TYPE, A_BASE_NR + nr, size),
                    false,
                    K::ABadSize,
                )
            }
            _ => {
                // Known numbers with another type byte: DRM refuses them (ENOTTY).
                let nr = self.r.below(4);
                self.sane_accel_arg(nr);
                let ty = self.r.pick(&[DM_TYPE, 0x01, 0xff, b'a' as u64]);
                let size = (A_REQS[nr as usize] >> 16) & 0x3fff;
                (ioc(3, ty, A_BASE_NR + nr, size), true, K::ABadNr)
            }
        };
        let arg = self.p.argp;
        self.begin(format!(
            "{} fd={fd} req={req:#x} arg=argp",
            KINDS[k as usize]
        ));
        let allowed: Vec<i32> = E_ACCEL.iter().chain(E_BADNR).copied().collect();
        let r = self.ioctl(k, fd, req, arg, &allowed);
        if r.is_ok() && must_fail {
            self.brk(format!("unknown accel command {req:#x} succeeded"));
        }
    }

    fn a_badfd(&mut self) {
        let arg = self.sane_accel_arg(1);
        let nr = self.r.below(4) as usize;
        let mut req = A_REQS[nr];
        let (fd, what, must) = match self.r.below(5) {
            0 => (-1, "fd -1", libc::EBADF),
            1 => (i32::MAX, "fd INT_MAX", libc::EBADF),
            2 => (self.cx.null_fd, "/dev/null", libc::ENOTTY),
            3 if self.dm.is_some() => (self.dm.unwrap()[0], "dmirror fd", libc::EINVAL),
            _ => {
                // A dmirror command on the accel file: not a DRM ioctl type (ENOTTY).
                req = dm_iowr(self.r.below(8));
                (self.accel[0], "accel fd (dmirror command)", libc::ENOTTY)
            }
        };
        self.begin(format!("accel.badfd {what} req={req:#x}"));
        let r = self.ioctl(
            K::ABadFd,
            fd,
            req,
            arg,
            &[libc::EBADF, libc::ENOTTY, libc::EINVAL],
        );
        if r != Err(must) {
            self.brk(format!(
                "accel ioctl on {what}: {} (expected {})",
                match r {
                    Ok(()) => "success".into(),
                    Err(e) => ename(e),
                },
                ename(must)
            ));
        }
    }

    // ---- dmirror ---------------------------------------------------------------------

    fn a_dm(&mut self, nr: u64) {
        let Some(fd) = self.dm_fd() else {
            return;
        };
        let k = DM_KIND[nr as usize];
        let sane = self.r.chance(50);
        let mut npages = if sane {
            if self.r.chance(90) {
                1 + self.r.below(16)
            } else {
                1 + self.r.below(512)
            }
        } else {
            self.npages_any()
        };
        let mut addr = if sane {
            self.sane_addr(PAGE)
        } else {
            self.addr_any(PAGE)
        };
        let mut bytes = u128::from(npages) * u128::from(PAGE);
        // MIGRATE_TO_DEV reads what it moved back into `ptr`, as READ does.
        let copying = nr == 0 || nr == 1 || nr == 2;
        if copying && bytes >= BIG_DM && bytes <= u128::from(MAX_LEN) && self.child {
            npages = 1 + self.r.below(16);
            bytes = u128::from(npages) * u128::from(PAGE);
        }
        let wlen = |b: u128| u64::try_from(b).unwrap_or(u64::MAX);
        // `ptr`: READ writes `bytes` there, SNAPSHOT `npages` bytes, WRITE reads it.
        let ptr = match self.r.below(10) {
            0..=4 if bytes <= u128::from(OB_LEN) => self.p.ob,
            0..=6 => self.sane_addr(PAGE),
            _ => self.addr_any(8),
        };
        // The private bounce buffer is ours to give when it is big enough.
        let ptr = match nr {
            _ if ptr == self.p.ob && bytes <= u128::from(OB_LEN) => ptr,
            0 | 2 | 3 | 5 | 6 => self.safe_dst(ptr, wlen(bytes), PAGE),
            4 => self.safe_dst(ptr, npages, PAGE),
            _ => ptr,
        };
        if nr == 1 {
            addr = self.safe_dst(addr, wlen(bytes), PAGE);
        }
        let mut c = DmCmd {
            addr,
            ptr,
            npages,
            cpages: if self.r.chance(20) { self.r.next() } else { 0 },
            faults: if self.r.chance(20) { self.r.next() } else { 0 },
        };
        let end = u128::from(addr) + bytes;
        let mut bad = addr % PAGE != 0 || npages == 0 || end > 1u128 << 64;
        if nr != 7 {
            bad |= end > u128::from(TASK_SIZE);
        }
        if copying {
            bad |= bytes > u128::from(MAX_LEN);
        }
        // SAFETY: plain integers.
        let cb = unsafe { as_bytes(&c) }.to_vec();
        let (at, p) = self.place_arg(&cb);
        let arg = if at == ArgAt::Normal {
            &mut c as *mut _ as u64
        } else {
            p
        };
        let big = copying && !bad && bytes >= BIG_DM;
        let cx = self.cx;
        let _g = big.then(|| cx.big.lock().unwrap_or_else(|e| e.into_inner()));
        self.begin(format!(
            "{} fd={fd} addr={addr:#x} ptr={ptr:#x} npages={npages:#x} arg={}",
            KINDS[k as usize],
            arg_desc(at, arg)
        ));
        let r = self.ioctl(k, fd, dm_iowr(nr), arg, E_DM);
        drop(_g);
        if r.is_ok() && matches!(at, ArgAt::Bad(_)) {
            self.brk("dmirror command with an unreadable struct succeeded".into());
        }
        if r.is_err() || !matches!(at, ArgAt::Normal | ArgAt::Unaligned(_)) {
            return;
        }
        if let ArgAt::Unaligned(q) = at {
            // SAFETY: the private argument page.
            c = unsafe { std::ptr::read_unaligned(q as *const DmCmd) };
        }
        if bad {
            self.brk(format!(
                "{} of an invalid range succeeded (cpages {:#x})",
                KINDS[k as usize], c.cpages
            ));
            return;
        }
        // MIGRATE_TO_SYS counts the pages that moved back, which may be none; CHECK_EXCLUSIVE
        // counts nothing.
        if nr != 7 && nr != 3 && nr != 6 && c.cpages != npages {
            self.brk(format!(
                "{} succeeded with cpages {:#x} != npages {npages:#x}",
                KINDS[k as usize], c.cpages
            ));
        }
        if nr == 4 && ptr == self.p.ob {
            // SAFETY: the private bounce buffer, `npages` bytes written by the kernel.
            let v = unsafe { std::slice::from_raw_parts(ptr as *const u8, npages as usize) };
            // Flags below 0x20, plus DEV_PRIVATE_LOCAL (0x20); never REMOTE (0x30: hmm with our
            // owner does not return another device's pages).
            if let Some(i) = v
                .iter()
                .position(|&b| b != 0xff && (b & !0x3f != 0 || b & 0x30 == 0x30))
            {
                self.brk(format!(
                    "SNAPSHOT byte {i} is {:#x}, not an HMM_DMIRROR_PROT_* value",
                    v[i]
                ));
            }
        }
    }

    fn a_dm_badnr(&mut self) {
        let Some(fd) = self.dm_fd() else {
            return;
        };
        // SAFETY: our private argument page.
        unsafe { std::ptr::write_bytes(self.p.argp as *mut u8, 0, PAGE as usize) };
        let c = DmCmd {
            addr: self.sane_addr(PAGE),
            ptr: self.p.ob,
            npages: 1,
            ..Default::default()
        };
        // SAFETY: private argument page.
        unsafe { (self.p.argp as *mut DmCmd).write(c) };
        let req = match self.r.below(3) {
            0 => ioc(3, DM_TYPE, 8 + self.r.below(248), DM_SIZE),
            1 => {
                let mut size = self.r.pick(&[0u64, 8, 32, 39, 41, 48, 64, 4096]);
                let dir = self.r.below(4);
                if dir == 3 && size == DM_SIZE {
                    size = 0;
                }
                ioc(dir, DM_TYPE, self.r.below(8), size)
            }
            _ => ioc(
                3,
                self.r.pick(&[A_TYPE, 0x01, 0xff]),
                self.r.below(8),
                DM_SIZE,
            ),
        };
        self.begin(format!("dm.badnr fd={fd} req={req:#x}"));
        let r = self.ioctl(K::DBadNr, fd, req, self.p.argp, E_BADNR);
        if r.is_ok() {
            self.brk(format!("unknown dmirror command {req:#x} succeeded"));
        }
    }

    // ---- files -----------------------------------------------------------------------

    /// A private open, use and close: BIND (+ a job, a prefetch) on a fresh accel file, or a
    /// READ on a fresh dmirror file; closed with everything live.
    fn a_open(&mut self) {
        let use_dm = self.dm.is_some() && self.r.chance(30);
        let path = if use_dm {
            DMIRROR[self.r.below(2) as usize]
        } else {
            ACCEL
        };
        self.begin(format!("open {path}"));
        let fd = open(path);
        if self.sys(K::Open, fd as i64).is_err() {
            return;
        }
        if use_dm {
            let a = self.sane_addr(PAGE);
            let mut c = DmCmd {
                addr: a,
                ptr: self.p.ob,
                npages: 1 + self.r.below(16),
                ..Default::default()
            };
            self.begin(format!(
                "dm.READ fd={fd} (fresh) addr={a:#x} npages={}",
                c.npages
            ));
            let _ = self.ioctl(K::DRead, fd, dm_iowr(0), &mut c as *mut _ as u64, E_DM);
        } else {
            let mut b = drm_svm_accel_bind::default();
            self.begin(format!("accel.BIND fd={fd} (fresh)"));
            let r = self.ioctl(K::ABind, fd, A_BIND, &mut b as *mut _ as u64, E_ACCEL);
            if r.is_ok() {
                let mut ops = [self.gen_op(true), self.gen_op(true)];
                let mut s = drm_svm_accel_submit {
                    ops_ptr: ops.as_mut_ptr() as u64,
                    op_count: 2,
                    ..Default::default()
                };
                self.begin(format!(
                    "accel.SUBMIT fd={fd} (fresh) {} {}",
                    op_desc(&ops[0]),
                    op_desc(&ops[1])
                ));
                if self
                    .ioctl(K::ASubmit, fd, A_SUBMIT, &mut s as *mut _ as u64, E_ACCEL)
                    .is_ok()
                {
                    self.check_job(&s, Some(&ops));
                }
                if self.r.chance(50) {
                    let mut p = drm_svm_accel_prefetch {
                        start: self.sane_addr(PAGE),
                        len: PAGE * (1 + self.r.below(32)),
                        flags: self.r.below(2) as u32,
                        ..Default::default()
                    };
                    self.begin(format!(
                        "accel.PREFETCH fd={fd} (fresh) start={:#x}",
                        p.start
                    ));
                    let _ = self.ioctl(
                        K::APrefetch,
                        fd,
                        A_PREFETCH,
                        &mut p as *mut _ as u64,
                        E_ACCEL,
                    );
                }
            }
        }
        self.begin(format!("close fd={fd}"));
        // SAFETY: our fd.
        let r = unsafe { libc::close(fd) };
        let _ = self.sys(K::Open, r as i64);
    }

    /// Replaces one of the shared device files by a fresh one (dup2 over its number, so no
    /// other file can take the number in between); the old file is released when the last
    /// call on it returns.
    fn a_reopen(&mut self) {
        let i = self.r.below(2) as usize;
        let (path, fd) = match self.dm {
            Some(d) if self.r.chance(40) => (DMIRROR[i], d[i]),
            _ => (ACCEL, self.accel[i]),
        };
        if fd < 0 {
            return;
        }
        let bind = path == ACCEL && self.r.chance(60);
        self.begin(format!("reopen {path} over fd={fd} bind={bind}"));
        let nfd = open(path);
        if nfd < 0 {
            let _ = self.sys(K::Reopen, -1);
            return;
        }
        if bind {
            let mut b = drm_svm_accel_bind::default();
            // SAFETY: BIND on our fresh fd.
            unsafe { libc::ioctl(nfd, A_BIND as _, &mut b) };
        }
        // SAFETY: our fds.
        let r = unsafe { libc::dup2(nfd, fd) };
        close(nfd);
        let _ = self.sys(K::Reopen, r as i64);
    }

    // ---- memory churn (arena only) --------------------------------------------------

    fn span(&mut self) -> (u64, u64) {
        let a = &self.cx.arena;
        if self.r.chance(25) {
            let c = self.r.below(a.len / HUGE);
            return (a.base + c * HUGE, HUGE);
        }
        let start = if self.r.chance(40) {
            a.base + self.cx.hot.load(Relaxed) * HUGE + PAGE * self.r.below(HUGE / PAGE)
        } else {
            a.base + PAGE * self.r.below(a.pages())
        };
        let n = if self.r.chance(80) {
            1 + self.r.below(16)
        } else {
            1 + self.r.below(512)
        };
        (start, (n * PAGE).min(a.end() - start))
    }

    fn a_mmap(&mut self) {
        let (a, l) = self.span();
        let rw = libc::PROT_READ | libc::PROT_WRITE;
        let fixed = libc::MAP_FIXED;
        let anon = libc::MAP_ANONYMOUS;
        let memfd_off = |r: &mut Rng, arena_len: u64| PAGE * r.below((arena_len - l) / PAGE + 1);
        let (what, prot, flags, fd, off) = match self.r.below(11) {
            0 | 1 => ("anon", rw, libc::MAP_PRIVATE | anon, -1, 0),
            2 => ("anon-ro", libc::PROT_READ, libc::MAP_PRIVATE | anon, -1, 0),
            3 => (
                "anon-none",
                libc::PROT_NONE,
                libc::MAP_PRIVATE | anon,
                -1,
                0,
            ),
            4 => ("anon-shared", rw, libc::MAP_SHARED | anon, -1, 0),
            5 | 6 if self.cx.memfd >= 0 => {
                let off = memfd_off(&mut self.r, self.cx.arena.len);
                ("memfd-shared", rw, libc::MAP_SHARED, self.cx.memfd, off)
            }
            7 if self.cx.memfd >= 0 => {
                let off = memfd_off(&mut self.r, self.cx.arena.len);
                ("memfd-private", rw, libc::MAP_PRIVATE, self.cx.memfd, off)
            }
            8 if self.cx.memfd >= 0 => {
                let off = memfd_off(&mut self.r, self.cx.arena.len);
                (
                    "memfd-ro",
                    libc::PROT_READ,
                    libc::MAP_SHARED,
                    self.cx.memfd,
                    off,
                )
            }
            9 => (
                "anon-populate",
                rw,
                libc::MAP_PRIVATE | anon | libc::MAP_POPULATE,
                -1,
                0,
            ),
            _ if l == HUGE && a % HUGE == 0 => (
                "hugetlb",
                rw,
                libc::MAP_PRIVATE | anon | libc::MAP_HUGETLB,
                -1,
                0,
            ),
            _ => ("anon", rw, libc::MAP_PRIVATE | anon, -1, 0),
        };
        self.begin(format!("mmap {what} {a:#x}+{l:#x} off={off:#x}"));
        let r = map(a, l, prot, flags | fixed, fd, off);
        let _ = self.sys(K::Mmap, r.map(|x| x as i64).unwrap_or(-1));
    }

    fn a_munmap(&mut self) {
        let (a, l) = self.span();
        self.begin(format!("munmap {a:#x}+{l:#x}"));
        // SAFETY: inside the arena.
        let r = unsafe { libc::munmap(a as *mut _, l as usize) };
        let _ = self.sys(K::Munmap, r as i64);
    }

    fn a_mprotect(&mut self) {
        let (a, l) = self.span();
        let prot = self.r.pick(&[
            libc::PROT_NONE,
            libc::PROT_READ,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::PROT_READ | libc::PROT_EXEC,
        ]);
        self.begin(format!("mprotect {a:#x}+{l:#x} prot={prot}"));
        let r = protect(a, l, prot);
        let _ = self.sys(K::Mprotect, r as i64);
    }

    fn a_mremap(&mut self) {
        let (a, l) = self.span();
        let ar = &self.cx.arena;
        let (new_len, flags, dst, what) = match self.r.below(4) {
            0 | 1 => {
                let nl = if self.r.chance(70) {
                    l
                } else {
                    PAGE * (1 + self.r.below(64))
                };
                let d = ar.base + PAGE * self.r.below((ar.len - nl) / PAGE + 1);
                (nl, libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED, d, "move")
            }
            2 => {
                let d = ar.base + PAGE * self.r.below((ar.len - l) / PAGE + 1);
                (
                    l,
                    libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED | libc::MREMAP_DONTUNMAP,
                    d,
                    "dontunmap",
                )
            }
            _ => {
                if self.r.chance(50) && l > PAGE {
                    (l - PAGE * (1 + self.r.below(l / PAGE - 1)), 0, 0, "shrink")
                } else {
                    let nl = (l + PAGE * (1 + self.r.below(32))).min(ar.end() - a);
                    (nl, 0, 0, "grow")
                }
            }
        };
        self.begin(format!(
            "mremap {what} {a:#x}+{l:#x} -> {dst:#x}+{new_len:#x}"
        ));
        // SAFETY: source and destination inside the arena (no MAYMOVE without FIXED, so
        // nothing leaves it).
        let r = unsafe {
            libc::mremap(
                a as *mut _,
                l as usize,
                new_len as usize,
                flags,
                dst as *mut libc::c_void,
            )
        };
        let _ = self.sys(K::Mremap, if r == libc::MAP_FAILED { -1 } else { 0 });
    }

    fn a_madvise(&mut self) {
        let (a, l) = self.span();
        let (adv, name) = self.r.pick(&[
            (libc::MADV_DONTNEED, "DONTNEED"),
            (libc::MADV_DONTNEED, "DONTNEED"),
            (libc::MADV_HUGEPAGE, "HUGEPAGE"),
            (libc::MADV_HUGEPAGE, "HUGEPAGE"),
            (libc::MADV_NOHUGEPAGE, "NOHUGEPAGE"),
            (MADV_COLLAPSE, "COLLAPSE"),
            (libc::MADV_FREE, "FREE"),
            (MADV_POPULATE_READ, "POPULATE_READ"),
            (MADV_POPULATE_WRITE, "POPULATE_WRITE"),
            (MADV_POPULATE_WRITE, "POPULATE_WRITE"),
            (libc::MADV_MERGEABLE, "MERGEABLE"),
            (libc::MADV_UNMERGEABLE, "UNMERGEABLE"),
            (MADV_COLD, "COLD"),
            (MADV_PAGEOUT, "PAGEOUT"),
            (libc::MADV_REMOVE, "REMOVE"),
            (libc::MADV_WIPEONFORK, "WIPEONFORK"),
            (libc::MADV_KEEPONFORK, "KEEPONFORK"),
            (libc::MADV_DONTFORK, "DONTFORK"),
            (libc::MADV_DOFORK, "DOFORK"),
        ]);
        self.begin(format!("madvise {name} {a:#x}+{l:#x}"));
        // SAFETY: inside the arena.
        let r = unsafe { libc::madvise(a as *mut _, l as usize, adv) };
        let _ = self.sys(K::Madvise, r as i64);
    }

    /// A CPU write into the arena that cannot fault the fuzzer (process_vm_writev).
    fn a_cpuwrite(&mut self) {
        let (a, l) = self.span();
        let l = l.min(OB_LEN);
        let v = self.r.next();
        for w in words(self.p.ob, l) {
            w.store(v, Relaxed);
        }
        self.begin(format!("cpuwrite {a:#x}+{l:#x} value={v:#x}"));
        let local = libc::iovec {
            iov_base: self.p.ob as *mut _,
            iov_len: l as usize,
        };
        let remote = libc::iovec {
            iov_base: a as *mut _,
            iov_len: l as usize,
        };
        // SAFETY: writes only into the arena (the kernel checks the target).
        let r = unsafe { libc::process_vm_writev(libc::getpid(), &local, 1, &remote, 1, 0) };
        let _ = self.sys(K::CpuWrite, r as i64);
    }

    /// The dmirror file's own mmap (zeroed pages inserted with vm_insert_page, a mixed map).
    fn a_dm_mmap(&mut self) {
        let Some(fd) = self.dm_fd() else {
            return;
        };
        let (a, l) = self.span();
        let (prot, flags) = self.r.pick(&[
            (libc::PROT_READ, libc::MAP_PRIVATE),
            (libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE),
            (libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED),
        ]);
        self.begin(format!(
            "dm.mmap fd={fd} {a:#x}+{l:#x} prot={prot} flags={flags:#x}"
        ));
        let r = map(a, l, prot, flags | libc::MAP_FIXED, fd, 0);
        let _ = self.sys(K::DmMmap, r.map(|x| x as i64).unwrap_or(-1));
    }

    /// memfd_secret memory (not in the kernel's direct map) in the arena.
    fn a_secret(&mut self) {
        let (a, l) = self.span();
        let l = l.min(HUGE);
        self.begin(format!("secret mmap {a:#x}+{l:#x}"));
        let r = map(
            a,
            l,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_FIXED,
            self.cx.secret_fd,
            0,
        );
        let _ = self.sys(K::Secret, r.map(|x| x as i64).unwrap_or(-1));
    }

    // ---- fork and children -----------------------------------------------------------

    fn a_fork(&mut self) {
        let seed = self.r.next();
        let kill_after = self.r.chance(40).then(|| self.r.below(4));
        if self.child {
            return;
        }
        // One child at a time per thread: wait for the last one (it has a bounded number of
        // calls), so that whether this fork happens does not depend on timing.
        self.reap(true);
        self.begin("fork".into());
        // SAFETY: the child runs `child_main` only (no locks others may hold) and _exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            self.child_main(seed);
        }
        if self.sys(K::Fork, pid as i64).is_ok() {
            self.kid = Some(Kid {
                pid,
                kill_after,
                calls: 0,
            });
        }
    }

    fn reap(&mut self, last: bool) {
        let Some(k) = self.kid.as_mut() else {
            return;
        };
        k.calls += 1;
        let kill = (last && k.kill_after.is_some()) || k.kill_after.is_some_and(|n| k.calls > n);
        if kill {
            // SAFETY: our child.
            unsafe { libc::kill(k.pid, libc::SIGKILL) };
        }
        let pid = k.pid;
        let mut st = 0;
        let flags = if last || kill { 0 } else { libc::WNOHANG };
        // SAFETY: our child.
        let w = unsafe { libc::waitpid(pid, &mut st, flags) };
        if w != pid {
            return;
        }
        self.kid = None;
        if libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0 {
            self.sh.count(K::Child, 0);
        } else if libc::WIFSIGNALED(st) && libc::WTERMSIG(st) == libc::SIGKILL && kill {
            self.sh.count(K::Child, libc::EINTR as usize);
        } else {
            self.sh.count(K::Child, B_BADERR);
            self.cur = format!("{} child pid {pid}", self.tag());
            self.brk(format!("forked child ended with status {st:#x}"));
        }
        // The child's device writes went to its own copies: nothing of ours changed.
        self.o_full(true);
    }

    fn child_main(&mut self, seed: u64) -> ! {
        self.child = true;
        self.slot = self.cx.cfg.threads + self.tid;
        self.r = Rng::new(seed, 0);
        self.kid = None;
        self.n = 0;
        let sh = self.sh;
        // The parent's files: another mm.
        if self.cx.accel.is_some() {
            let fd = self.accel[0];
            let mut ops = [self.gen_op(true)];
            let mut s = drm_svm_accel_submit {
                ops_ptr: ops.as_mut_ptr() as u64,
                op_count: 1,
                ..Default::default()
            };
            self.begin(format!("accel.SUBMIT on the parent's fd={fd}"));
            let r = self.ioctl(K::Inherited, fd, A_SUBMIT, &mut s as *mut _ as u64, E_ACCEL);
            if !matches!(r, Err(libc::EXDEV) | Err(libc::ENOTCONN)) {
                self.brk(format!("child SUBMIT on its parent's device file: {r:?}"));
            }
        }
        if let Some(d) = self.dm {
            let mut c = DmCmd {
                addr: self.sane_addr(PAGE),
                ptr: self.p.ob,
                npages: 1,
                ..Default::default()
            };
            self.begin(format!("dm.READ on the parent's fd={}", d[0]));
            let r = self.ioctl(
                K::Inherited,
                d[0],
                dm_iowr(0),
                &mut c as *mut _ as u64,
                E_DM,
            );
            if r != Err(libc::EXDEV) {
                self.brk(format!("child dm.READ on its parent's dmirror file: {r:?}"));
            }
        }
        // Its own files (without them, nothing more to do: the oracle needs them).
        if self.cx.accel.is_some() {
            let fd = open(ACCEL);
            if fd < 0 {
                sh.note("child", &format!("open {ACCEL}: {}", ename(errno())));
                // SAFETY: leave at once.
                unsafe { libc::_exit(0) }
            }
            let mut b = drm_svm_accel_bind::default();
            self.begin(format!("accel.BIND fd={fd} (child)"));
            let _ = self.ioctl(K::ABind, fd, A_BIND, &mut b as *mut _ as u64, E_ACCEL);
            self.accel = [fd, self.accel[0]];
        }
        if let Some(d) = self.dm {
            let fd = open(DMIRROR[0]);
            self.dm = (fd >= 0).then_some([fd, d[0]]);
        }
        // The copy of the oracle buffer is the parent's as of the fork.
        self.o_full(false);
        for _ in 0..self.cx.cfg.child_calls {
            if sh.stop.load(Relaxed) != 0 {
                break;
            }
            self.n += 1;
            let a = self.cx.pick(&mut self.r);
            if ACTIONS[a].0 != "fork" {
                self.act(a);
            }
            sh.child_calls.fetch_add(1, Relaxed);
        }
        // SAFETY: leave without running the parent's destructors or atexit handlers; the
        // files and mappings are released by the exit.
        unsafe { libc::_exit(0) }
    }

    // ---- the oracle ------------------------------------------------------------------

    /// A span of the oracle buffer: (word offset, words), at most `max` bytes.
    fn ospan(&mut self, max: u64) -> (usize, usize) {
        let nw = 1 + self.r.below(max / 8);
        let off = self.r.below(OD_LEN / 8 - nw + 1);
        (off as usize, nw as usize)
    }

    /// A page-aligned span of the oracle buffer: (page, pages).
    fn opages(&mut self, max: u64) -> (u64, u64) {
        let n = 1 + self.r.below(max);
        let pg = self.r.below(OD_LEN / PAGE - n + 1);
        (pg, n)
    }

    fn sum(ws: &[u64]) -> u64 {
        ws.iter().fold(0u64, |s, &w| s.wrapping_add(w))
    }

    /// Re-reads the shadow of `[off, off + n)` from the CPU (after a device write whose
    /// completion is unknown).
    fn resync(&mut self, off: usize, n: usize) {
        let od = words(self.p.od, OD_LEN);
        for (s, w) in self.shadow[off..off + n].iter_mut().zip(&od[off..off + n]) {
            *s = w.load(Relaxed);
        }
    }

    /// The CPU view of `[off, off + n)` must be the shadow.
    fn cpu_check(&self, off: usize, n: usize, what: &str) -> bool {
        let od = words(self.p.od, OD_LEN);
        for (i, w) in od.iter().enumerate().skip(off).take(n) {
            let v = w.load(Relaxed);
            if v != self.shadow[i] {
                self.brk(format!(
                    "oracle {what}: CPU reads {v:#x} at {:#x} (word {i}), expected {:#x} (lost or stale write)",
                    self.p.od + 8 * i as u64,
                    self.shadow[i]
                ));
                return false;
            }
        }
        true
    }

    /// A SUBMIT of oracle ops on accel slot 0 (binding it if a reopen left it unbound; if a
    /// forked child, which shares the file, bound it first to its own mm, the parent gets
    /// EXDEV, as it must: slot 0 then gets a fresh file of its own).
    /// Some(error) when the job ran; None when it could not be judged (transient errors).
    fn o_submit(&mut self, ops: &mut [drm_svm_accel_op], what: &str) -> Option<i32> {
        let fd = self.accel[0];
        for attempt in 0..2 {
            let mut s = drm_svm_accel_submit {
                ops_ptr: ops.as_mut_ptr() as u64,
                op_count: ops.len() as u32,
                ..Default::default()
            };
            self.begin(format!("oracle {what} fd={fd} {}", op_desc(&ops[0])));
            let mut allowed = E_TRANSIENT.to_vec();
            allowed.push(libc::ENOTCONN);
            allowed.push(libc::EXDEV);
            match self.ioctl(K::Oracle, fd, A_SUBMIT, &mut s as *mut _ as u64, &allowed) {
                Ok(()) => {
                    self.sh.oracle_checks.fetch_add(1, Relaxed);
                    let e = s.error;
                    if e != 0 && !E_TRANSIENT.contains(&-e) {
                        self.brk(format!(
                            "oracle {what}: job on the private RW buffer failed with {} at op {} addr {:#x}",
                            ename(-e),
                            s.failed_op,
                            s.fault_addr
                        ));
                    }
                    return Some(e);
                }
                Err(libc::ENOTCONN) if attempt == 0 => {
                    let mut b = drm_svm_accel_bind::default();
                    // SAFETY: BIND on our fd.
                    unsafe { libc::ioctl(fd, A_BIND as _, &mut b) };
                }
                Err(libc::EXDEV) if attempt == 0 => {
                    let nfd = open(ACCEL);
                    if nfd < 0 {
                        return None;
                    }
                    let mut b = drm_svm_accel_bind::default();
                    // SAFETY: BIND on our fresh fd, then it replaces slot 0's number.
                    unsafe {
                        libc::ioctl(nfd, A_BIND as _, &mut b);
                        libc::dup2(nfd, fd);
                    }
                    close(nfd);
                }
                Err(libc::EXDEV) => {
                    self.brk(format!(
                        "oracle {what}: EXDEV on a file this process just bound"
                    ));
                    return None;
                }
                Err(_) => return None,
            }
        }
        None
    }

    /// dmirror command `nr` on `fd` over oracle pages `[pg, pg + n)`, the bounce buffer as
    /// `ptr`; errnos other than `allowed` break the invariant.
    fn o_dm_on(
        &mut self,
        fd: i32,
        nr: u64,
        pg: u64,
        n: u64,
        allowed: &[i32],
    ) -> (Result<(), i32>, DmCmd) {
        let mut c = DmCmd {
            addr: self.p.od + pg * PAGE,
            ptr: self.p.ob,
            npages: n,
            ..Default::default()
        };
        self.begin(format!(
            "oracle dm nr={nr} fd={fd} addr={:#x} npages={n}",
            c.addr
        ));
        let r = self.ioctl(K::Oracle, fd, dm_iowr(nr), &mut c as *mut _ as u64, allowed);
        self.sh.oracle_checks.fetch_add(1, Relaxed);
        (r, c)
    }

    /// A dmirror command on the oracle buffer. Some(()) when it succeeded.
    fn o_dm(&mut self, nr: u64, pg: u64, n: u64) -> Option<DmCmd> {
        let fd = self.dm?[0];
        let (r, c) = self.o_dm_on(fd, nr, pg, n, E_TRANSIENT);
        if r.is_err() {
            return None;
        }
        if c.cpages != n {
            self.brk(format!(
                "oracle dm nr={nr}: cpages {} != npages {n}",
                c.cpages
            ));
            return None;
        }
        Some(c)
    }

    /// MIGRATE_TO_DEV (then the read back must be the shadow) or MIGRATE_TO_SYS of oracle
    /// pages, through either dmirror device; the CPU must then read the shadow. `ENOENT` (a
    /// page on the other device, or shared with a forked child) and `ENOMEM` (device memory
    /// full) are fine; the data never changes.
    fn o_migrate(&mut self, to_dev: bool) {
        let Some(fds) = self.dm else {
            return;
        };
        // Either device; a forked child's second slot is its parent's file (`EXDEV` to it).
        let fd = if self.child {
            fds[0]
        } else {
            fds[self.r.below(2) as usize]
        };
        let (pg, n) = self.opages(OB_LEN / PAGE);
        let nr = if to_dev { 2 } else { 3 };
        let mut allowed = E_TRANSIENT.to_vec();
        allowed.push(libc::ENOENT);
        let (r, c) = self.o_dm_on(fd, nr, pg, n, &allowed);
        let (base, nw) = ((pg * PAGE / 8) as usize, (n * PAGE / 8) as usize);
        if r.is_ok() && to_dev {
            let obw = words(self.p.ob, OB_LEN);
            if let Some(i) = (0..nw).find(|&i| obw[i].load(Relaxed) != self.shadow[base + i]) {
                self.brk(format!(
                    "oracle dm.MIGRATE_TO_DEV {:#x}: read back word {i} is {:#x}, expected {:#x}",
                    c.addr,
                    obw[i].load(Relaxed),
                    self.shadow[base + i]
                ));
            }
        }
        if r.is_ok() && c.cpages > n {
            self.brk(format!(
                "oracle dm nr={nr}: cpages {} > npages {n}",
                c.cpages
            ));
        }
        self.cpu_check(
            base,
            nw,
            if to_dev {
                "dm.MIGRATE_TO_DEV"
            } else {
                "dm.MIGRATE_TO_SYS"
            },
        );
    }

    fn oracle(&mut self) {
        let odw = words(self.p.od, OD_LEN);
        match self.r.below(14) {
            12 => self.o_migrate(true),
            13 => self.o_migrate(false),
            0 | 1 => {
                // CPU writes.
                let (off, n) = self.ospan(16 << 10);
                self.cur = format!("{} oracle cpu write word {off}+{n}", self.tag());
                for (w, s) in odw[off..off + n].iter().zip(&mut self.shadow[off..off + n]) {
                    let v = self.r.next();
                    w.store(v, Relaxed);
                    *s = v;
                }
            }
            2 | 3 => {
                // Device READ: the sum of what the CPU knows.
                let (off, n) = if self.r.chance(10) {
                    (0, (OD_LEN / 8) as usize)
                } else {
                    self.ospan(64 << 10)
                };
                let src = self.p.od + 8 * off as u64;
                let mut ops = [op(SVM_ACCEL_OP_READ, src, 0, 8 * n as u64, 0)];
                if self.o_submit(&mut ops, "READ") == Some(0) {
                    let want = Self::sum(&self.shadow[off..off + n]);
                    if ops[0].result != want {
                        self.brk(format!(
                            "oracle READ {src:#x}+{:#x}: device sum {:#x}, CPU shadow sum {want:#x} (stale device view)",
                            8 * n,
                            ops[0].result
                        ));
                        self.cpu_check(off, n, "after READ mismatch");
                    }
                }
            }
            4 => {
                // Device FILL, CPU check.
                let (off, n) = self.ospan(64 << 10);
                let v = self.r.next();
                let dst = self.p.od + 8 * off as u64;
                let mut ops = [op(SVM_ACCEL_OP_FILL, 0, dst, 8 * n as u64, v)];
                match self.o_submit(&mut ops, "FILL") {
                    Some(0) => {
                        self.shadow[off..off + n].fill(v);
                        self.cpu_check(off, n, "FILL");
                    }
                    _ => self.resync(off, n),
                }
            }
            5 => {
                // Device ADD: old value, CPU check.
                let (off, _) = self.ospan(8);
                let v = self.r.next();
                let dst = self.p.od + 8 * off as u64;
                let mut ops = [op(SVM_ACCEL_OP_ADD, 0, dst, 8, v)];
                match self.o_submit(&mut ops, "ADD") {
                    Some(0) => {
                        if ops[0].result != self.shadow[off] {
                            self.brk(format!(
                                "oracle ADD {dst:#x}: old value {:#x}, expected {:#x}",
                                ops[0].result, self.shadow[off]
                            ));
                        }
                        self.shadow[off] = self.shadow[off].wrapping_add(v);
                        self.cpu_check(off, 1, "ADD");
                    }
                    _ => self.resync(off, 1),
                }
            }
            6 => {
                // Device COPY into the second buffer, then a FILL + READ in one job.
                let (off, n) = self.ospan(OB_LEN);
                let src = self.p.od + 8 * off as u64;
                let mut ops = [op(SVM_ACCEL_OP_COPY, src, self.p.oc, 8 * n as u64, 0)];
                if self.o_submit(&mut ops, "COPY") == Some(0) {
                    self.shadow_c[..n].copy_from_slice(&self.shadow[off..off + n]);
                    let ocw = words(self.p.oc, OB_LEN);
                    if let Some(i) = (0..n).find(|&i| ocw[i].load(Relaxed) != self.shadow_c[i]) {
                        self.brk(format!(
                            "oracle COPY {src:#x} -> {:#x}: word {i} is {:#x}, expected {:#x}",
                            self.p.oc,
                            ocw[i].load(Relaxed),
                            self.shadow_c[i]
                        ));
                    }
                }
                let (off, n) = self.ospan(16 << 10);
                let a = self.p.od + 8 * off as u64;
                let v = self.r.next();
                let mut ops = [
                    op(SVM_ACCEL_OP_FILL, 0, a, 8 * n as u64, v),
                    op(SVM_ACCEL_OP_READ, a, 0, 8 * n as u64, 0),
                ];
                match self.o_submit(&mut ops, "FILL+READ") {
                    Some(0) => {
                        self.shadow[off..off + n].fill(v);
                        let want = (n as u64).wrapping_mul(v);
                        if ops[1].result != want {
                            self.brk(format!(
                                "oracle FILL+READ {a:#x}: READ after FILL in one job summed {:#x}, expected {want:#x}",
                                ops[1].result
                            ));
                        }
                    }
                    _ => self.resync(off, n),
                }
            }
            7 if self.dm.is_some() => {
                // dmirror READ into the bounce buffer.
                let (pg, n) = self.opages(OB_LEN / PAGE);
                if self.o_dm(0, pg, n).is_some() {
                    let obw = words(self.p.ob, OB_LEN);
                    let base = (pg * PAGE / 8) as usize;
                    let nw = (n * PAGE / 8) as usize;
                    if let Some(i) =
                        (0..nw).find(|&i| obw[i].load(Relaxed) != self.shadow[base + i])
                    {
                        self.brk(format!(
                            "oracle dm.READ {:#x}: word {i} is {:#x}, expected {:#x} (stale device view)",
                            self.p.od + pg * PAGE,
                            obw[i].load(Relaxed),
                            self.shadow[base + i]
                        ));
                    }
                }
            }
            8 if self.dm.is_some() => {
                // dmirror WRITE from the bounce buffer; CPU check.
                let (pg, n) = self.opages(OB_LEN / PAGE);
                let obw = words(self.p.ob, OB_LEN);
                let nw = (n * PAGE / 8) as usize;
                for w in &obw[..nw] {
                    w.store(self.r.next(), Relaxed);
                }
                let base = (pg * PAGE / 8) as usize;
                if self.o_dm(1, pg, n).is_some() {
                    for (s, w) in self.shadow[base..base + nw].iter_mut().zip(obw) {
                        *s = w.load(Relaxed);
                    }
                    self.cpu_check(base, nw, "dm.WRITE");
                } else {
                    self.resync(base, nw);
                }
            }
            9 => {
                // MADV_DONTNEED: zeros, through the CPU and the device.
                let max = if self.r.chance(20) { 512 } else { 8 };
                let (pg, n) = self.opages(max);
                let (off, nw) = ((pg * PAGE / 8) as usize, (n * PAGE / 8) as usize);
                self.cur = format!("{} oracle DONTNEED page {pg}+{n}", self.tag());
                // SAFETY: our private oracle buffer.
                unsafe {
                    libc::madvise(
                        (self.p.od + pg * PAGE) as *mut _,
                        (n * PAGE) as usize,
                        libc::MADV_DONTNEED,
                    )
                };
                self.shadow[off..off + nw].fill(0);
                let mut ops = [op(SVM_ACCEL_OP_READ, self.p.od + pg * PAGE, 0, n * PAGE, 0)];
                if self.o_submit(&mut ops, "READ after DONTNEED") == Some(0) && ops[0].result != 0 {
                    self.brk(format!(
                        "oracle: device READ after MADV_DONTNEED of {:#x}+{:#x} sums {:#x}, not 0 (stale device mapping)",
                        self.p.od + pg * PAGE,
                        n * PAGE,
                        ops[0].result
                    ));
                }
                self.cpu_check(off, nw, "DONTNEED");
            }
            10 => {
                // mprotect down: no device write may land (I2); reads still work; up again.
                let (pg, n) = self.opages(8);
                let (off, nw) = ((pg * PAGE / 8) as usize, (n * PAGE / 8) as usize);
                let a = self.p.od + pg * PAGE;
                let none = self.r.chance(30);
                protect(
                    a,
                    n * PAGE,
                    if none {
                        libc::PROT_NONE
                    } else {
                        libc::PROT_READ
                    },
                );
                let mut ops = [op(SVM_ACCEL_OP_FILL, 0, a, n * PAGE, self.r.next() | 1)];
                let r = self.o_submit_expect_fail(&mut ops, "FILL on PROT_READ/NONE");
                if let Some(e) = r {
                    let want = if none { libc::EFAULT } else { libc::EPERM };
                    if e == 0 {
                        self.brk(format!(
                            "oracle: device FILL of {a:#x}+{:#x} succeeded on {} memory",
                            n * PAGE,
                            if none { "PROT_NONE" } else { "read-only" }
                        ));
                    } else if -e != want && !E_TRANSIENT.contains(&-e) {
                        self.brk(format!(
                            "oracle: device FILL of {} memory failed with {}, expected {}",
                            if none { "PROT_NONE" } else { "read-only" },
                            ename(-e),
                            ename(want)
                        ));
                    }
                }
                if !none {
                    let mut ops = [op(SVM_ACCEL_OP_READ, a, 0, n * PAGE, 0)];
                    if self.o_submit(&mut ops, "READ of PROT_READ") == Some(0) {
                        let want = Self::sum(&self.shadow[off..off + nw]);
                        if ops[0].result != want {
                            self.brk(format!(
                                "oracle READ of read-only {a:#x}: {:#x}, expected {want:#x}",
                                ops[0].result
                            ));
                        }
                    }
                }
                protect(a, n * PAGE, libc::PROT_READ | libc::PROT_WRITE);
                self.cpu_check(off, nw, "mprotect down/up");
            }
            _ => {
                // SNAPSHOT of the oracle buffer: every page is mapped RW, none is an error;
                // a page may be in this device's memory (MIGRATE_TO_DEV), never another's.
                if self.dm.is_some() {
                    let (pg, n) = self.opages(64);
                    if self.o_dm(4, pg, n).is_some() {
                        // SAFETY: the private bounce buffer, `n` bytes written by the kernel.
                        let v = unsafe {
                            std::slice::from_raw_parts(self.p.ob as *const u8, n as usize)
                        };
                        if let Some(i) = v
                            .iter()
                            .position(|&b| b == 0xff || b & !0x3f != 0 || b & 0x30 == 0x30)
                        {
                            self.brk(format!(
                                "oracle SNAPSHOT of the RW buffer: page {} is {:#x}",
                                pg + i as u64,
                                v[i]
                            ));
                        }
                    }
                }
            }
        }
    }

    /// Like `o_submit`, for a job that is expected to fail: no break on its job error.
    fn o_submit_expect_fail(&mut self, ops: &mut [drm_svm_accel_op], what: &str) -> Option<i32> {
        let fd = self.accel[0];
        let mut s = drm_svm_accel_submit {
            ops_ptr: ops.as_mut_ptr() as u64,
            op_count: ops.len() as u32,
            ..Default::default()
        };
        self.begin(format!("oracle {what} fd={fd} {}", op_desc(&ops[0])));
        let mut allowed = E_TRANSIENT.to_vec();
        allowed.push(libc::ENOTCONN);
        // A child that inherited the file while it was unbound may have bound it to its own
        // mm (the uAPI's documented EXDEV): no check this time; `o_submit` replaces the file.
        allowed.push(libc::EXDEV);
        self.ioctl(K::Oracle, fd, A_SUBMIT, &mut s as *mut _ as u64, &allowed)
            .ok()
            .map(|()| s.error)
    }

    /// The whole oracle buffer through the CPU (`cpu`) and the device.
    fn o_full(&mut self, cpu: bool) {
        if self.cx.accel.is_none() {
            return;
        }
        self.cur = format!("{} oracle full check", self.tag());
        if cpu && !self.cpu_check(0, (OD_LEN / 8) as usize, "full check") {
            return;
        }
        let mut ops = [op(SVM_ACCEL_OP_READ, self.p.od, 0, OD_LEN, 0)];
        if self.o_submit(&mut ops, "full READ") == Some(0) {
            let want = Self::sum(&self.shadow);
            if ops[0].result != want {
                self.brk(format!(
                    "oracle full READ{}: device sum {:#x}, expected {want:#x}",
                    if self.child {
                        " (child, COW copy)"
                    } else {
                        " (after a child)"
                    },
                    ops[0].result
                ));
            }
        }
    }
}

fn op(kind: u32, src: u64, dst: u64, len: u64, value: u64) -> drm_svm_accel_op {
    drm_svm_accel_op {
        kind,
        src,
        dst,
        len,
        value,
        ..Default::default()
    }
}

/// # Safety
/// `T` must be plain data without padding.
unsafe fn as_bytes<T>(t: &T) -> &[u8] {
    // SAFETY: per the contract.
    unsafe { std::slice::from_raw_parts(t as *const T as *const u8, size_of::<T>()) }
}

fn arg_desc(at: ArgAt, arg: u64) -> String {
    match at {
        ArgAt::Normal => format!("{arg:#x}"),
        ArgAt::Unaligned(p) => format!("unaligned:{p:#x}"),
        ArgAt::ReadOnly(p) => format!("readonly:{p:#x}"),
        ArgAt::Bad(p) => format!("bad:{p:#x}"),
        ArgAt::Arena(p) => format!("arena:{p:#x}"),
    }
}

// ---- worker and supervisor --------------------------------------------------------------

fn worker(cfg: Cfg, sh: &'static Shared) -> ! {
    // Its own process group, which the children join: the supervisor can kill them all.
    // SAFETY: plain syscall.
    unsafe { libc::setpgid(0, 0) };
    let ksm = cfg.ksm;
    if ksm {
        write_sys("/sys/kernel/mm/ksm/sleep_millisecs", "10");
        write_sys("/sys/kernel/mm/ksm/run", "1");
    }
    let cx = match Ctx::new(cfg, sh) {
        Ok(c) => c,
        Err(e) => {
            sh.note("setup failed", &e);
            // SAFETY: leave at once.
            unsafe { libc::_exit(2) }
        }
    };
    let nt = cx.cfg.threads;
    let barrier = Barrier::new(nt);
    sh.t_start.store(now_ns(), Relaxed);
    std::thread::scope(|s| {
        for tid in 0..nt {
            let cx = &cx;
            let barrier = &barrier;
            s.spawn(move || {
                let mut t = T::new(cx, tid);
                // Every thread's memory exists now: take the list of what calls must not write.
                if barrier.wait().is_leader() {
                    cx.refresh_forbidden();
                }
                barrier.wait();
                t.run();
            });
        }
    });
    sh.t_end.store(now_ns(), Relaxed);
    if let Some(a) = cx.accel {
        let mut q = drm_svm_accel_query::default();
        // SAFETY: QUERY on our fd with its struct.
        if unsafe { libc::ioctl(a[0], A_QUERY as _, &mut q) } == 0 {
            println!(
                "fuzz: engine (accel fd 0 at the end): bound {} ranges {} dma_live {} pt_pages {} pt_huge {} pt_zapped {} jobs {} device_faults {} faults {} fault_errors {} invalidations {} ranges +{} -{} races {} gc {}",
                q.flags & SVM_ACCEL_QUERY_BOUND != 0,
                q.ranges, q.dma_live, q.pt_pages, q.pt_huge, q.pt_zapped, q.jobs, q.device_faults,
                q.faults, q.fault_errors, q.invalidations, q.ranges_created, q.ranges_removed,
                q.range_races, q.gc_removed
            );
        }
    }
    if ksm {
        write_sys("/sys/kernel/mm/ksm/run", "2");
    }
    let _ = std::io::stdout().flush();
    // SAFETY: leave with every file and mapping live: process exit releases them (mm first,
    // then the files).
    unsafe { libc::_exit(0) }
}

fn print_table(sh: &Shared) {
    println!("fuzz: results per call (count by errno; ok = success; accel.SUBMIT.job = the `error` of jobs that ran)");
    println!("  {:<20} {:>9} {:>9}  errnos", "call", "total", "ok");
    for (k, name) in KINDS.iter().enumerate() {
        let c: Vec<u64> = sh.counts[k].iter().map(|x| x.load(Relaxed)).collect();
        let total: u64 = c.iter().sum();
        if total == 0 {
            continue;
        }
        let mut es: Vec<(u64, usize)> = c
            .iter()
            .enumerate()
            .skip(1)
            .filter(|(_, &n)| n > 0)
            .map(|(e, &n)| (n, e))
            .collect();
        es.sort_unstable_by(|a, b| b.cmp(a));
        let es: Vec<String> = es
            .iter()
            .map(|&(n, e)| {
                let name = match e {
                    B_POSITIVE => "POSITIVE".into(),
                    B_BADERR => "BAD".into(),
                    e => ename(e as i32),
                };
                format!("{name} {n}")
            })
            .collect();
        println!("  {name:<20} {total:>9} {:>9}  {}", c[0], es.join(", "));
    }
}

/// Processes of process group `pgid` that are not zombies (from /proc/*/stat).
fn group_alive(pgid: i32) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut n = 0;
    for e in dir.flatten() {
        let Ok(st) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid pgrp ...": comm may hold spaces, so split after ')'.
        let Some((_, rest)) = st.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() > 2 && f[2] == pgid.to_string() && f[0] != "Z" {
            n += 1;
        }
    }
    n
}

fn supervise(cfg: &Cfg, sh: &'static Shared, worker: i32) -> i32 {
    let t0 = now_ns();
    let hang_ns = cfg.hang_secs * 1_000_000_000;
    let give_up = t0 + (cfg.seconds * 1e9) as u64 + hang_ns + 60_000_000_000;
    let mut next_progress = t0 + 10_000_000_000;
    let mut killed_at = 0u64;
    let mut problems: Vec<String> = Vec::new();
    let status;
    loop {
        let mut st = 0;
        // SAFETY: our child.
        if unsafe { libc::waitpid(worker, &mut st, libc::WNOHANG) } == worker {
            status = st;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        let now = now_ns();
        if killed_at == 0 {
            for (i, s) in sh.slots.iter().enumerate() {
                let start = s.start_ns.load(Acquire);
                if start != 0 && now.saturating_sub(start) > hang_ns {
                    let pid = s.pid.load(Relaxed) as i32;
                    let msg = format!(
                        "HANG: a call has not returned for {} s (slot {i}, pid {pid}): {}",
                        (now - start) / 1_000_000_000,
                        s.get()
                    );
                    sh.breaks.fetch_add(1, Relaxed);
                    sh.note("INVARIANT BREAK", &msg);
                    problems.push(msg);
                    // SAFETY: killing our worker and its children.
                    unsafe {
                        if pid > 0 {
                            libc::kill(pid, libc::SIGKILL);
                        }
                        libc::kill(worker, libc::SIGKILL);
                    }
                    killed_at = now;
                    break;
                }
            }
            if killed_at == 0 && now > give_up {
                problems.push("the worker did not stop in time".into());
                // SAFETY: our worker.
                unsafe { libc::kill(worker, libc::SIGKILL) };
                killed_at = now;
            }
        } else if now - killed_at > 30_000_000_000 {
            problems.push(
                "UNKILLABLE: the worker did not die 30 s after SIGKILL (stuck in the kernel)"
                    .into(),
            );
            sh.note("INVARIANT BREAK", problems.last().unwrap());
            status = -1;
            break;
        }
        if now > next_progress {
            let secs = (now - t0) as f64 / 1e9;
            let done = sh.done.load(Relaxed);
            println!(
                "fuzz: progress {secs:.0} s: calls {done} ({:.0}/s) child calls {} breaks {}",
                done as f64 / secs,
                sh.child_calls.load(Relaxed),
                sh.breaks.load(Relaxed)
            );
            let _ = std::io::stdout().flush();
            next_progress = now + 10_000_000_000;
        }
    }
    if status != -1 && killed_at == 0 {
        if libc::WIFSIGNALED(status) {
            problems.push(format!(
                "the worker died of signal {}",
                libc::WTERMSIG(status)
            ));
        } else if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) != 0 {
            problems.push(format!(
                "the worker exited with {}",
                libc::WEXITSTATUS(status)
            ));
        }
    }
    // Whatever is left of the worker's process group (children of a killed worker) goes too,
    // so that nothing holds the device files when the module is unloaded.
    // SAFETY: our worker's process group.
    unsafe { libc::kill(-worker, libc::SIGKILL) };
    let t_kill = now_ns();
    loop {
        let left = group_alive(worker);
        if left == 0 {
            break;
        }
        if now_ns() - t_kill > 30_000_000_000 {
            problems.push(format!(
                "UNKILLABLE: {left} processes of the fuzzer still alive 30 s after SIGKILL"
            ));
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    print_table(sh);
    let log = sh.log_text();
    if !log.is_empty() {
        println!("fuzz: reports:");
        print!("{log}");
    }
    let (ts, te) = (sh.t_start.load(Relaxed), sh.t_end.load(Relaxed));
    let secs = if te > ts {
        (te - ts) as f64 / 1e9
    } else {
        (now_ns() - t0) as f64 / 1e9
    };
    let done = sh.done.load(Relaxed);
    let breaks = sh.breaks.load(Relaxed);
    let fail = breaks > 0 || !problems.is_empty();
    for p in &problems {
        println!("fuzz: FAIL: {p}");
    }
    println!(
        "fuzz: calls={done} seed={:#x} threads={} child_calls={} forks={} oracle_checks={} redirected={} warnings={} breaks={breaks} elapsed={secs:.1}s rate={:.0}/s result={}",
        cfg.seed,
        cfg.threads,
        sh.child_calls.load(Relaxed),
        sh.counts[K::Fork as usize][0].load(Relaxed),
        sh.oracle_checks.load(Relaxed),
        sh.redirected.load(Relaxed),
        sh.warnings.load(Relaxed),
        done as f64 / secs.max(1e-3),
        if fail { "FAIL" } else { "PASS" }
    );
    let _ = std::io::stdout().flush();
    i32::from(fail)
}

fn main() {
    let cfg = parse_args();
    let sh = Shared::map();
    println!(
        "fuzz: seed={:#x} calls={} seconds={} threads={} arena={}MiB child-calls={} hang={}s{}{}{}",
        cfg.seed,
        cfg.calls,
        cfg.seconds,
        cfg.threads,
        cfg.arena_mib,
        cfg.child_calls,
        cfg.hang_secs,
        if cfg.skip.is_empty() {
            String::new()
        } else {
            format!(" skip={}", cfg.skip.join(","))
        },
        if cfg.only.is_empty() {
            String::new()
        } else {
            format!(" only={}", cfg.only.join(","))
        },
        if cfg.trace { " trace" } else { "" }
    );
    println!(
        "fuzz: reproduce with: fuzz --seed {:#x} --threads 1 --trace (single thread: same call sequence)",
        cfg.seed
    );
    let _ = std::io::stdout().flush();
    // SAFETY: single-threaded here; the child becomes the worker.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        eprintln!("fuzz: fork: {}", ename(errno()));
        std::process::exit(2);
    }
    if pid == 0 {
        worker(cfg, sh);
    }
    let rc = supervise(&cfg, sh, pid);
    std::process::exit(rc);
}
