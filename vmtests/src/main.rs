//! svm-vmtests: drives /dev/accel/accel0 (the svm_accel sample driver) through its uAPI inside
//! the test VM, and checks what the device sees against what the CPU sees.
//!
//! Built static (`scripts/vm-test.sh`), run by vm/init.sh. Prints one line per test and
//! `N passed, M failed` last; exits non-zero on any failure. The last test is the fault storm
//! (`storm.rs`); `--storm` runs only the storm (`scripts/vm-storm.sh`), see `USAGE`.

#![allow(non_camel_case_types, non_upper_case_globals, dead_code)]

mod uapi {
    #![allow(
        non_camel_case_types,
        non_upper_case_globals,
        non_snake_case,
        dead_code
    )]
    include!(concat!(env!("OUT_DIR"), "/uapi.rs"));
}

mod dmirror_uapi;
mod storm;
mod svmstat;

use dmirror_uapi::{dm_iowr, DmCmd};
use std::ffi::CString;
use std::io::Write;
use std::ptr::null_mut;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uapi::*;

const PAGE: usize = 4096;
const HUGE: usize = 2 << 20;
const DEV: &str = "/dev/accel/accel0";

type TResult = Result<(), String>;

macro_rules! check {
    ($c:expr) => {
        if !$c {
            return Err(format!("{}:{}: check failed: {}", file!(), line!(), stringify!($c)));
        }
    };
    ($c:expr, $($fmt:tt)*) => {
        if !$c {
            return Err(format!("{}:{}: {}", file!(), line!(), format!($($fmt)*)));
        }
    };
}

mod devmem;
mod distro;
mod exclusive;
mod peer;
mod placement;
mod queues;
mod resources;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn ename(e: i32) -> String {
    match e {
        0 => "0".into(),
        libc::EPERM => "EPERM".into(),
        libc::ESRCH => "ESRCH".into(),
        libc::EINTR => "EINTR".into(),
        libc::ENOMEM => "ENOMEM".into(),
        libc::EFAULT => "EFAULT".into(),
        libc::EBUSY => "EBUSY".into(),
        libc::EXDEV => "EXDEV".into(),
        libc::EINVAL => "EINVAL".into(),
        libc::ENOTCONN => "ENOTCONN".into(),
        libc::ENOTTY => "ENOTTY".into(),
        libc::EBADF => "EBADF".into(),
        libc::ENOENT => "ENOENT".into(),
        libc::EOPNOTSUPP => "EOPNOTSUPP".into(),
        e => format!("errno {e}"),
    }
}

// ---- the device ----------------------------------------------------------------------

struct Dev {
    fd: i32,
}

impl Dev {
    fn open() -> Result<Dev, String> {
        let p = CString::new(DEV).unwrap();
        // SAFETY: plain syscall.
        let fd = unsafe { libc::open(p.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(format!("open {DEV}: {}", ename(errno())));
        }
        Ok(Dev { fd })
    }

    /// `/dev/accel/accel<n>`, bound.
    fn bound_at(n: u32) -> Result<Dev, String> {
        let path = format!("/dev/accel/accel{n}");
        let p = CString::new(path.clone()).unwrap();
        // SAFETY: plain syscall.
        let fd = unsafe { libc::open(p.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(format!("open {path}: {}", ename(errno())));
        }
        let d = Dev { fd };
        d.bind().map_err(|e| format!("BIND {path}: {}", ename(e)))?;
        Ok(d)
    }

    fn bound() -> Result<Dev, String> {
        let d = Dev::open()?;
        d.bind().map_err(|e| format!("BIND: {}", ename(e)))?;
        Ok(d)
    }

    fn ioctl<T>(&self, req: u64, arg: &mut T) -> Result<(), i32> {
        // SAFETY: `arg` is the struct the request number encodes.
        let r = unsafe { libc::ioctl(self.fd, req as libc::c_ulong, arg as *mut T) };
        if r < 0 {
            Err(errno())
        } else {
            Ok(())
        }
    }

    fn bind(&self) -> Result<(), i32> {
        let mut b = drm_svm_accel_bind::default();
        self.ioctl(DRM_IOCTL_SVM_ACCEL_BIND as u64, &mut b)
    }

    fn submit(&self, ops: &mut [drm_svm_accel_op]) -> Result<drm_svm_accel_submit, i32> {
        let mut s = drm_svm_accel_submit {
            ops_ptr: ops.as_mut_ptr() as u64,
            op_count: ops.len() as u32,
            ..Default::default()
        };
        self.ioctl(DRM_IOCTL_SVM_ACCEL_SUBMIT as u64, &mut s)?;
        Ok(s)
    }

    /// Runs a job that must succeed.
    fn run(&self, ops: &mut [drm_svm_accel_op]) -> TResult {
        let s = self
            .submit(ops)
            .map_err(|e| format!("SUBMIT ioctl: {}", ename(e)))?;
        if s.error != 0 {
            return Err(format!(
                "job failed: {} at op {} addr {:#x}",
                ename(-s.error),
                s.failed_op,
                s.fault_addr
            ));
        }
        Ok(())
    }

    fn prefetch(&self, start: u64, len: u64, write: bool) -> (Result<(), i32>, u64) {
        let mut p = drm_svm_accel_prefetch {
            start,
            len,
            flags: if write { SVM_ACCEL_PREFETCH_WRITE } else { 0 },
            ..Default::default()
        };
        let r = self.ioctl(DRM_IOCTL_SVM_ACCEL_PREFETCH as u64, &mut p);
        (r, p.done)
    }

    fn query(&self) -> Result<drm_svm_accel_query, String> {
        let mut q = drm_svm_accel_query::default();
        self.ioctl(DRM_IOCTL_SVM_ACCEL_QUERY as u64, &mut q)
            .map_err(|e| format!("QUERY: {}", ename(e)))?;
        Ok(q)
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        // SAFETY: our fd.
        unsafe { libc::close(self.fd) };
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

fn fill(dst: u64, len: u64, value: u64) -> drm_svm_accel_op {
    op(SVM_ACCEL_OP_FILL, 0, dst, len, value)
}

fn copy(src: u64, dst: u64, len: u64) -> drm_svm_accel_op {
    op(SVM_ACCEL_OP_COPY, src, dst, len, 0)
}

fn add(dst: u64, value: u64) -> drm_svm_accel_op {
    op(SVM_ACCEL_OP_ADD, 0, dst, 8, value)
}

fn read(src: u64, len: u64) -> drm_svm_accel_op {
    op(SVM_ACCEL_OP_READ, src, 0, len, 0)
}

/// The device's checksum of [a, a+len).
fn dev_sum(d: &Dev, a: u64, len: u64) -> Result<u64, String> {
    let mut ops = [read(a, len)];
    d.run(&mut ops)?;
    Ok(ops[0].result)
}

// ---- memory --------------------------------------------------------------------------

/// An anonymous private mapping.
struct Buf {
    p: *mut u8,
    len: usize,
    /// Unmapped on drop.
    owned: bool,
}

unsafe impl Send for Buf {}
unsafe impl Sync for Buf {}

impl Buf {
    fn new(len: usize) -> Buf {
        // SAFETY: anonymous mapping.
        let p = unsafe {
            libc::mmap(
                null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert!(p != libc::MAP_FAILED, "mmap: {}", ename(errno()));
        Buf {
            p: p.cast(),
            len,
            owned: true,
        }
    }

    /// `len` bytes aligned to `align`, carved out of a larger mapping (the rest unmapped).
    fn aligned(len: usize, align: usize) -> Buf {
        let big = Buf::new(len + align);
        let start = (big.p as usize + align - 1) & !(align - 1);
        let end = start + len;
        let bend = big.p as usize + big.len;
        // SAFETY: trimming our own mapping.
        unsafe {
            if start > big.p as usize {
                libc::munmap(big.p.cast(), start - big.p as usize);
            }
            if bend > end {
                libc::munmap(end as *mut _, bend - end);
            }
        }
        std::mem::forget(big);
        Buf {
            p: start as *mut u8,
            len,
            owned: true,
        }
    }

    fn addr(&self) -> u64 {
        self.p as u64
    }

    fn words(&self) -> &[AtomicU64] {
        // SAFETY: our mapping, 8-aligned; atomics so the device's concurrent writes are fine.
        unsafe { std::slice::from_raw_parts(self.p.cast(), self.len / 8) }
    }

    fn sum(&self, off: usize, len: usize) -> u64 {
        self.words()[off / 8..(off + len) / 8]
            .iter()
            .fold(0u64, |s, w| s.wrapping_add(w.load(Ordering::Relaxed)))
    }

    fn unmap(&mut self) {
        // SAFETY: our mapping.
        unsafe { libc::munmap(self.p.cast(), self.len) };
        self.owned = false;
    }

    fn protect(&self, prot: i32) -> TResult {
        // SAFETY: our mapping.
        let r = unsafe { libc::mprotect(self.p.cast(), self.len, prot) };
        check!(r == 0, "mprotect: {}", ename(errno()));
        Ok(())
    }

    fn advise(&self, off: usize, len: usize, advice: i32) -> TResult {
        // SAFETY: our mapping.
        let r = unsafe { libc::madvise(self.p.add(off).cast(), len, advice) };
        check!(r == 0, "madvise({advice}): {}", ename(errno()));
        Ok(())
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        if self.owned {
            self.unmap();
        }
    }
}

// ---- tests ---------------------------------------------------------------------------

fn t_query_unbound() -> TResult {
    let d = Dev::open()?;
    let q = d.query()?;
    check!(
        q.flags & SVM_ACCEL_QUERY_BOUND == 0,
        "unbound file reports BOUND"
    );
    check!(q.range_shift == 21, "range_shift {}", q.range_shift);
    check!(
        q.page_sizes == (4096 | (2 << 20)),
        "page_sizes {:#x}",
        q.page_sizes
    );
    check!(q.pte_format == SVM_ACCEL_PTE_X86);
    let name: Vec<u8> = q
        .pte_format_name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    check!(
        name == b"x86-64",
        "pte name {:?}",
        String::from_utf8_lossy(&name)
    );
    check!(q.fault_queue_depth == 256 && q.tlb_entries > 0);
    Ok(())
}

fn t_unbound_refused() -> TResult {
    let d = Dev::open()?;
    let b = Buf::new(PAGE);
    let r = d.submit(&mut [fill(b.addr(), 8, 1)]);
    check!(
        r.err() == Some(libc::ENOTCONN),
        "SUBMIT unbound: {:?}",
        r.err().map(ename)
    );
    let (r, _) = d.prefetch(b.addr(), PAGE as u64, false);
    check!(
        r == Err(libc::ENOTCONN),
        "PREFETCH unbound: {:?}",
        r.err().map(ename)
    );
    Ok(())
}

fn t_bind_twice() -> TResult {
    let d = Dev::bound()?;
    check!(d.bind() == Err(libc::EBUSY), "second BIND not EBUSY");
    check!(d.query()?.flags & SVM_ACCEL_QUERY_BOUND != 0);
    let d2 = Dev::open()?;
    let mut b = drm_svm_accel_bind {
        flags: 1,
        ..Default::default()
    };
    let r = d2.ioctl(DRM_IOCTL_SVM_ACCEL_BIND as u64, &mut b);
    check!(
        r == Err(libc::EINVAL),
        "BIND flags=1: {:?}",
        r.err().map(ename)
    );
    Ok(())
}

fn t_fill_cpu_reads(d: &Dev) -> TResult {
    let b = Buf::new(64 << 10);
    let pat = 0x5a5a_0000_1234_5678u64;
    d.run(&mut [fill(b.addr(), b.len as u64, pat)])?;
    for (i, w) in b.words().iter().enumerate() {
        let v = w.load(Ordering::Relaxed);
        check!(v == pat, "word {i}: {v:#x} != {pat:#x}");
    }
    let q = d.query()?;
    check!(
        q.faults > 0 && q.pages_mapped >= 16,
        "faults {} pages_mapped {}",
        q.faults,
        q.pages_mapped
    );
    check!(
        q.dma_live > 0 && q.pt_pages > 0,
        "dma_live {} pt_pages {}",
        q.dma_live,
        q.pt_pages
    );
    Ok(())
}

fn t_cpu_writes_dev_reads(d: &Dev) -> TResult {
    let b = Buf::new(48 << 10);
    for (i, w) in b.words().iter().enumerate() {
        w.store(
            (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            Ordering::Relaxed,
        );
    }
    let want = b.sum(0, b.len);
    let got = dev_sum(d, b.addr(), b.len as u64)?;
    check!(got == want, "device sum {got:#x}, CPU sum {want:#x}");
    // Not page aligned: 8-byte aligned start and length crossing pages.
    let (off, len) = (4096 - 24, 8192 + 48);
    let got = dev_sum(d, b.addr() + off as u64, len as u64)?;
    check!(got == b.sum(off, len), "unaligned span sum mismatch");
    // The device sees later CPU writes (same pages, still mapped).
    b.words()[3].fetch_add(1000, Ordering::Relaxed);
    let got = dev_sum(d, b.addr(), b.len as u64)?;
    check!(got == want.wrapping_add(1000), "device missed a CPU write");
    Ok(())
}

fn t_copy(d: &Dev) -> TResult {
    let src = Buf::new(40 << 10);
    let dst = Buf::new(40 << 10);
    for (i, w) in src.words().iter().enumerate() {
        w.store(i as u64 ^ 0xdead_beef, Ordering::Relaxed);
    }
    // Offsets that make source and destination cross pages at different places.
    let (so, dof, len) = (8usize, 4096 - 16, 32 << 10);
    d.run(&mut [copy(
        src.addr() + so as u64,
        dst.addr() + dof as u64,
        len as u64,
    )])?;
    let (s, t) = (src.words(), dst.words());
    for k in 0..len / 8 {
        let (a, b) = (
            s[so / 8 + k].load(Ordering::Relaxed),
            t[dof / 8 + k].load(Ordering::Relaxed),
        );
        check!(a == b, "word {k}: {b:#x} != {a:#x}");
    }
    check!(
        t[dof / 8 - 1].load(Ordering::Relaxed) == 0,
        "COPY wrote before dst"
    );
    check!(
        t[(dof + len) / 8].load(Ordering::Relaxed) == 0,
        "COPY wrote past the end"
    );
    Ok(())
}

fn t_add(d: &Dev) -> TResult {
    let b = Buf::new(PAGE * 2);
    let w = b.words();
    w[0].store(40, Ordering::Relaxed);
    w[600].store(u64::MAX, Ordering::Relaxed);
    let mut ops = [
        add(b.addr(), 2),
        add(b.addr(), 5),
        add(b.addr() + 600 * 8, 3),
    ];
    d.run(&mut ops)?;
    check!(
        ops[0].result == 40 && ops[1].result == 42,
        "old values {} {}",
        ops[0].result,
        ops[1].result
    );
    check!(ops[2].result == u64::MAX, "old value {:#x}", ops[2].result);
    check!(
        w[0].load(Ordering::Relaxed) == 47,
        "CPU sees {}",
        w[0].load(Ordering::Relaxed)
    );
    check!(w[600].load(Ordering::Relaxed) == 2, "wrapping add");
    // Device and CPU atomics interleave without losing an update.
    let stop = Arc::new(AtomicBool::new(false));
    let bp = b.addr() as usize;
    let t = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            // SAFETY: the buffer outlives the thread (joined below).
            let w = unsafe { &*(bp as *const AtomicU64).add(1) };
            while !stop.load(Ordering::Relaxed) {
                w.fetch_add(1, Ordering::SeqCst);
                n += 1;
            }
            n
        })
    };
    let mut dev_n = 0u64;
    for _ in 0..50 {
        let mut ops = [add(b.addr() + 8, 1), add(b.addr() + 8, 1)];
        d.run(&mut ops)?;
        dev_n += 2;
    }
    stop.store(true, Ordering::Relaxed);
    let cpu_n = t.join().unwrap();
    check!(
        w[1].load(Ordering::Relaxed) == cpu_n + dev_n,
        "lost updates: {} != {}+{}",
        w[1].load(Ordering::Relaxed),
        cpu_n,
        dev_n
    );
    Ok(())
}

/// debugfs (`/sys/kernel/debug/svm_accel/ctx-N/{stats,ranges}`) shows this context as QUERY
/// does and its ranges with their leaves; svm-stat's table (its core, `svmstat.rs`) lists it;
/// an unbound file's directory says `unbound`.
fn t_debugfs(d: &Dev) -> TResult {
    let b = Buf::new(64 << 10);
    d.run(&mut [fill(b.addr(), b.len as u64, 3)])?;
    let key = |q: &drm_svm_accel_query| {
        (
            q.jobs, q.faults, q.ranges, q.dma_live, q.pt_pages, q.pt_huge,
        )
    };
    // GC of earlier tests' ranges may still run: compare only a snapshot QUERY brackets.
    let mut last = String::new();
    for _ in 0..50 {
        let q = d.query()?;
        let snap = svmstat::snapshot(svmstat::ROOT)?;
        let q2 = d.query()?;
        if key(&q) != key(&q2) {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let Some((name, st)) = snap
            .iter()
            .find(|(_, s)| s.get("jobs") == Some(&q.jobs) && s.get("faults") == Some(&q.faults))
        else {
            last = format!(
                "no context with QUERY's jobs {} and faults {} in {snap:?}",
                q.jobs, q.faults
            );
            continue;
        };
        let ranges = std::fs::read_to_string(format!("{}/{name}/ranges", svmstat::ROOT))
            .map_err(|e| e.to_string())?;
        if key(&d.query()?) != key(&q) {
            continue;
        }
        for (k, v) in [
            ("ranges", q.ranges),
            ("dma_live", q.dma_live),
            ("pt_pages", q.pt_pages),
            ("accounting_errors", 0),
        ] {
            check!(
                st.get(k) == Some(&v),
                "{name}/stats: {k} {:?}, QUERY {v}",
                st.get(k)
            );
        }
        let mut mapped = 0;
        for l in ranges.lines() {
            let m = l
                .split_whitespace()
                .find_map(|f| f.strip_prefix("mapped="))
                .and_then(|m| m.parse::<u64>().ok())
                .ok_or_else(|| format!("{name}/ranges line {l:?}"))?;
            mapped += m;
        }
        check!(
            ranges.lines().count() as u64 == q.ranges,
            "{name}/ranges:\n{ranges}"
        );
        check!(
            mapped == q.pt_pages + q.pt_huge,
            "mapped {mapped} != leaves {} + {}",
            q.pt_pages,
            q.pt_huge
        );
        let t = svmstat::table(&snap, None);
        print!("svm-stat:\n{t}");
        check!(
            t.lines().any(|l| l.starts_with(name.as_str())),
            "svm-stat table lacks {name}:\n{t}"
        );
        let u = Dev::open()?;
        let unbound = std::fs::read_dir(svmstat::ROOT)
            .map_err(|e| e.to_string())?
            .filter_map(|e| e.ok())
            .filter(|e| {
                std::fs::read_to_string(e.path().join("stats")).is_ok_and(|t| t == "unbound\n")
            })
            .count();
        drop(u);
        check!(
            unbound >= 1,
            "no directory of the unbound file says unbound"
        );
        // Readers racing files that bind, fault and close: a directory goes (waiting for its
        // readers) before its engine does; KASAN would see a reader use a freed binding.
        let stop = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(AtomicU64::new(0));
        let reader = {
            let (stop, reads) = (stop.clone(), reads.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    for e in std::fs::read_dir(svmstat::ROOT)
                        .into_iter()
                        .flatten()
                        .flatten()
                    {
                        for f in ["stats", "ranges"] {
                            if std::fs::read_to_string(e.path().join(f)).is_ok() {
                                reads.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
            })
        };
        let churn = (|| -> TResult {
            for _ in 0..20 {
                let f = Dev::bound()?;
                let c = Buf::new(64 << 10);
                f.run(&mut [fill(c.addr(), c.len as u64, 1)])?;
            }
            Ok(())
        })();
        stop.store(true, Ordering::Relaxed);
        reader.join().map_err(|_| "reader panicked")?;
        churn?;
        check!(reads.load(Ordering::Relaxed) > 0, "the reader read nothing");
        t_debugfs_dmirror_and_device()?;
        return Ok(());
    }
    Err(format!("debugfs never matched a quiet QUERY: {last}"))
}

/// debugfs' `device` file counts the open files, and a dmirror file (`dm-N`) shows its
/// engine's statistics and ranges after a READ.
fn t_debugfs_dmirror_and_device() -> TResult {
    let dev =
        std::fs::read_to_string(format!("{}/device", svmstat::ROOT)).map_err(|e| e.to_string())?;
    let val = |text: &str, k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix(' ')?.parse::<u64>().ok())
    };
    check!(
        val(&dev, "accel_files").is_some_and(|n| n >= 1),
        "device file:\n{dev}"
    );
    check!(dev.contains("pte_format x86-64"), "device file:\n{dev}");
    // Before the open: the file's directory appears with it.
    let before: std::collections::BTreeSet<String> =
        svmstat::snapshot(svmstat::ROOT)?.into_keys().collect();
    let p = CString::new(DMIRROR).unwrap();
    // SAFETY: plain open.
    let fd = unsafe { libc::open(p.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Ok(()); // no dmirror front end loaded
    }
    let b = Buf::new(8 * PAGE);
    b.words()[0].store(5, Ordering::Relaxed);
    let mut out = vec![0u8; 8 * PAGE];
    let r = dm(
        fd,
        0,
        DmCmd {
            addr: b.addr(),
            ptr: out.as_mut_ptr() as u64,
            npages: 8,
            ..DmCmd::default()
        },
    );
    let after = svmstat::snapshot(svmstat::ROOT);
    let dev2 =
        std::fs::read_to_string(format!("{}/device", svmstat::ROOT)).map_err(|e| e.to_string());
    // SAFETY: ours.
    unsafe { libc::close(fd) };
    r.map_err(|e| format!("dmirror READ: {}", ename(e)))?;
    let after = after?;
    let dev2 = dev2?;
    check!(
        val(&dev2, "dmirror_files").is_some_and(|n| n >= 1),
        "device file:\n{dev2}"
    );
    let (name, st) = after
        .iter()
        .find(|(n, _)| n.starts_with("dm-") && !before.contains(*n))
        .ok_or_else(|| {
            format!(
                "no new dm-N directory: {:?}",
                after.keys().collect::<Vec<_>>()
            )
        })?;
    check!(
        st.get("faults").is_some_and(|f| *f >= 1) && st.get("ranges").is_some_and(|r| *r >= 1),
        "{name}: {st:?}"
    );
    check!(
        st.get("pt_pages").is_some_and(|n| *n >= 8),
        "{name}: {st:?}"
    );
    Ok(())
}

/// The engine's tracepoints (system `svm`, driver/svm_trace.h): a job's faults start and end
/// (errno, latency), a fault on a hole ends with `EFAULT`, the munmap's invalidation reports
/// its hit, and GC passes are reported.
fn t_tracepoints(d: &Dev) -> TResult {
    let root = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .into_iter()
        .find(|r| std::path::Path::new(&format!("{r}/events/svm")).exists())
        .ok_or("no events/svm in tracefs (tracepoints not registered?)")?;
    let put = |f: &str, v: &str| {
        std::fs::write(format!("{root}/{f}"), v).map_err(|e| format!("{root}/{f}: {e}"))
    };
    put("events/svm/enable", "1")?;
    put("trace", "")?;
    let mut b = Buf::new(4 * PAGE);
    let a = b.addr();
    let r = (|| -> TResult {
        d.run(&mut [fill(a, b.len as u64, 7)])?;
        b.unmap();
        let s = d.submit(&mut [fill(a, 8, 1)]).map_err(ename)?;
        check!(
            s.error == -libc::EFAULT,
            "job on the hole: {}",
            ename(-s.error)
        );
        Ok(())
    })();
    // GC runs on a work item after the fault batch: give it a moment to report.
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut t = String::new();
    while Instant::now() < deadline {
        t = std::fs::read_to_string(format!("{root}/trace")).map_err(|e| e.to_string())?;
        if t.contains("svm_gc:") {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    put("events/svm/enable", "0")?;
    r?;
    let has = |what: &str, parts: &[&str]| {
        t.lines()
            .any(|l| l.contains(what) && parts.iter().all(|p| l.contains(p)))
    };
    let va = format!("va={a:#x}");
    check!(
        has("svm_fault_start:", &[&va, "write", "pages=1"]),
        "no fault start at {a:#x}:\n{t}"
    );
    check!(
        has("svm_fault_end:", &[&va, "write", "err=0", "ns="]),
        "no fault end at {a:#x}:\n{t}"
    );
    check!(
        has("svm_fault_end:", &[&va, "err=14"]),
        "no EFAULT fault end:\n{t}"
    );
    check!(
        has("svm_invalidate:", &["unmap", "hit=1"]),
        "no unmap invalidation with a hit:\n{t}"
    );
    check!(has("svm_gc:", &["removed="]), "no GC pass:\n{t}");
    Ok(())
}

fn t_munmap_efault(d: &Dev) -> TResult {
    let mut b = Buf::new(64 << 10);
    let a = b.addr();
    d.run(&mut [fill(a, b.len as u64, 7)])?;
    let before = d.query()?;
    b.unmap();
    let q = d.query()?;
    check!(
        q.dma_live < before.dma_live,
        "munmap left the DMA mappings: {} -> {}",
        before.dma_live,
        q.dma_live
    );
    check!(q.invalidations > before.invalidations);
    let s = d
        .submit(&mut [fill(a, 4096, 1), fill(a + 8192, 4096, 2)])
        .map_err(ename)?;
    check!(
        s.error == -libc::EFAULT,
        "error {} (want -EFAULT)",
        ename(-s.error)
    );
    check!(
        s.failed_op == 0 && s.fault_addr == a,
        "failed_op {} fault_addr {:#x} (want 0, {a:#x})",
        s.failed_op,
        s.fault_addr
    );
    // A hole in the middle: ops before it complete, the failing one is reported.
    let b2 = Buf::new(3 * PAGE);
    // SAFETY: punching a hole in our own mapping.
    unsafe { libc::munmap(b2.p.add(PAGE).cast(), PAGE) };
    let s = d
        .submit(&mut [fill(b2.addr(), 8, 9), fill(b2.addr(), 3 * PAGE as u64, 5)])
        .map_err(ename)?;
    check!(
        s.error == -libc::EFAULT && s.failed_op == 1,
        "error {} op {}",
        ename(-s.error),
        s.failed_op
    );
    check!(
        s.fault_addr == b2.addr() + PAGE as u64,
        "fault_addr {:#x}",
        s.fault_addr
    );
    check!(
        b2.words()[0].load(Ordering::Relaxed) == 5,
        "op before the hole not done"
    );
    Ok(())
}

fn t_gc_after_munmap(d: &Dev) -> TResult {
    let mut b = Buf::aligned(HUGE, HUGE);
    d.run(&mut [fill(b.addr(), PAGE as u64, 1)])?;
    let before = d.query()?;
    b.unmap();
    // GC runs from the fault worker after the unmap callback: give it a moment.
    let t0 = Instant::now();
    loop {
        let q = d.query()?;
        if q.ranges_removed > before.ranges_removed {
            check!(
                q.ranges < before.ranges,
                "ranges {} -> {}",
                before.ranges,
                q.ranges
            );
            return Ok(());
        }
        if t0.elapsed() > Duration::from_secs(5) {
            return Err(format!(
                "range not collected: ranges {} removed {}",
                q.ranges, q.ranges_removed
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn t_mprotect_eperm(d: &Dev) -> TResult {
    let b = Buf::new(16 << 10);
    d.run(&mut [fill(b.addr(), b.len as u64, 3)])?;
    b.protect(libc::PROT_READ)?;
    let s = d
        .submit(&mut [fill(b.addr() + 4096, 8, 4)])
        .map_err(ename)?;
    check!(
        s.error == -libc::EPERM,
        "FILL on PROT_READ: {} (want -EPERM)",
        ename(-s.error)
    );
    check!(s.fault_addr == b.addr() + 4096);
    // Reading is still fine, and the failed FILL wrote nothing.
    let sum = dev_sum(d, b.addr(), b.len as u64)?;
    check!(sum == 3 * (b.len as u64 / 8), "sum {sum}");
    b.protect(libc::PROT_NONE)?;
    let s = d.submit(&mut [read(b.addr(), 8)]).map_err(ename)?;
    check!(
        s.error == -libc::EFAULT,
        "READ on PROT_NONE: {}",
        ename(-s.error)
    );
    b.protect(libc::PROT_READ | libc::PROT_WRITE)?;
    d.run(&mut [fill(b.addr(), 8, 4)])?;
    check!(b.words()[0].load(Ordering::Relaxed) == 4);
    Ok(())
}

fn t_madv_dontneed(d: &Dev) -> TResult {
    let b = Buf::new(32 << 10);
    d.run(&mut [fill(b.addr(), b.len as u64, 0x77)])?;
    b.advise(0, b.len, libc::MADV_DONTNEED)?;
    // The old pages are gone: the device must see the new zero pages, not stale ones.
    let sum = dev_sum(d, b.addr(), b.len as u64)?;
    check!(
        sum == 0,
        "device read stale data after MADV_DONTNEED: sum {sum:#x}"
    );
    d.run(&mut [fill(b.addr(), b.len as u64, 1)])?;
    check!(
        b.sum(0, b.len) == (b.len / 8) as u64,
        "CPU lost device writes"
    );
    Ok(())
}

fn t_fork(d: &Dev) -> TResult {
    let b = Buf::new(16 << 10);
    let n = (b.len / 8) as u64;
    d.run(&mut [fill(b.addr(), b.len as u64, 5)])?;
    let fd = d.fd;
    // SAFETY: the child only makes syscalls and atomic stores, then _exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        for w in b.words() {
            w.store(99, Ordering::Relaxed);
        }
        // The inherited fd belongs to the parent's mm.
        let mut s = drm_svm_accel_submit::default();
        let mut ops = [read(b.addr(), 8)];
        s.ops_ptr = ops.as_mut_ptr() as u64;
        s.op_count = 1;
        // SAFETY: plain ioctl.
        let r = unsafe { libc::ioctl(fd, DRM_IOCTL_SVM_ACCEL_SUBMIT as libc::c_ulong, &mut s) };
        let code = if r < 0 && errno() == libc::EXDEV {
            0
        } else {
            3
        };
        // SAFETY: leave without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    check!(pid > 0, "fork: {}", ename(errno()));
    let mut st = 0;
    // SAFETY: our child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    check!(
        libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
        "child: status {st:#x} (3: SUBMIT from the child was not EXDEV)"
    );
    let sum = dev_sum(d, b.addr(), b.len as u64)?;
    check!(
        sum == 5 * n,
        "parent's device view changed by the child's writes: {sum} != {}",
        5 * n
    );
    check!(b.sum(0, b.len) == 5 * n, "parent's CPU view changed");
    // After the fork the device writes again (write fault breaks COW or reuses the page);
    // the CPU must see it.
    d.run(&mut [fill(b.addr(), b.len as u64, 6)])?;
    check!(
        b.sum(0, b.len) == 6 * n,
        "CPU does not see the device's post-fork write"
    );
    // And the CPU writes after the device: the device must see them.
    b.words()[0].store(0, Ordering::Relaxed);
    let sum = dev_sum(d, b.addr(), b.len as u64)?;
    check!(sum == 6 * n - 6, "device sum {sum} after a CPU write");
    Ok(())
}

fn t_fork_cow_while_child_lives(d: &Dev) -> TResult {
    // The parent writes through the CPU while the child still shares the pages: COW gives
    // the parent new pages, and the device must follow (its old leaves point at the pages the
    // child keeps).
    let b = Buf::new(8 << 10);
    let n = (b.len / 8) as u64;
    d.run(&mut [fill(b.addr(), b.len as u64, 1)])?;
    let mut pipe = [0i32; 2];
    // SAFETY: plain syscall.
    check!(unsafe { libc::pipe(pipe.as_mut_ptr()) } == 0);
    // SAFETY: the child blocks on the pipe, then _exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let mut c = 0u8;
        // SAFETY: plain syscalls.
        unsafe {
            libc::read(pipe[0], (&mut c as *mut u8).cast(), 1);
            let ok = b.sum(0, b.len) == n;
            libc::_exit(if ok { 0 } else { 4 });
        }
    }
    check!(pid > 0);
    for w in b.words() {
        w.store(2, Ordering::Relaxed);
    }
    let sum = dev_sum(d, b.addr(), b.len as u64)?;
    d.run(&mut [fill(b.addr(), 8, 7)])?;
    let parent_word = b.words()[0].load(Ordering::Relaxed);
    // SAFETY: plain syscalls.
    unsafe {
        libc::write(pipe[1], b"x".as_ptr().cast(), 1);
    }
    let mut st = 0;
    // SAFETY: our child.
    unsafe {
        libc::waitpid(pid, &mut st, 0);
        libc::close(pipe[0]);
        libc::close(pipe[1]);
    }
    check!(
        sum == 2 * n,
        "device read {sum}, parent's CPU wrote {}",
        2 * n
    );
    check!(
        parent_word == 7,
        "device FILL not visible to the parent: {parent_word}"
    );
    check!(
        libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
        "child saw the parent's or the device's writes (status {st:#x})"
    );
    Ok(())
}

fn t_madv_free_pageout(d: &Dev) -> TResult {
    // MADV_FREE leaves the CPU PTEs writable but clean; a device write then dirties nothing
    // on the CPU side. When reclaim comes for the lazily freed pages, the invalidation must
    // mark them dirty (the device wrote them), or reclaim discards the device's data.
    let b = Buf::new(64 << 10);
    let n = (b.len / 8) as u64;
    for w in b.words() {
        w.store(1, Ordering::Relaxed);
    }
    // MADV_FREE queues the folios in a per-CPU batch that MADV_PAGEOUT drains only on its own
    // CPU: stay on one CPU so reclaim really sees them.
    let _pin = Pin::cpu0();
    b.advise(0, b.len, libc::MADV_FREE)?;
    d.run(&mut [fill(b.addr(), b.len as u64, 0x1234)])?;
    let (lf0, sc0) = (
        vmstat("pglazyfreed "),
        vmstat("pgsteal_anon ") + vmstat("pgsteal_file "),
    );
    b.advise(0, b.len, libc::MADV_PAGEOUT)?;
    let (lf, sc) = (
        vmstat("pglazyfreed ") - lf0,
        vmstat("pgsteal_anon ") + vmstat("pgsteal_file ") - sc0,
    );
    println!("    (pages lazily freed {lf}, reclaimed {sc})");
    let cpu = b.sum(0, b.len);
    check!(
        cpu == 0x1234 * n,
        "device writes lost across MADV_FREE + reclaim: CPU sum {cpu:#x}, want {:#x}",
        0x1234 * n
    );
    check!(dev_sum(d, b.addr(), b.len as u64)? == 0x1234 * n);
    Ok(())
}

/// Pins the calling thread to CPU 0 until dropped.
struct Pin(libc::cpu_set_t);

impl Pin {
    fn cpu0() -> Pin {
        // SAFETY: plain syscalls on the calling thread with a zeroed cpu_set_t.
        unsafe {
            let mut old: libc::cpu_set_t = std::mem::zeroed();
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut old);
            let mut one: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(0, &mut one);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &one);
            Pin(old)
        }
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        // SAFETY: restores the saved mask.
        unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &self.0) };
    }
}

fn swap_on() -> Result<bool, String> {
    use std::process::Command;
    if std::fs::read_to_string("/proc/swaps").is_ok_and(|s| s.lines().count() > 1) {
        return Ok(true);
    }
    if std::fs::write("/sys/block/zram0/disksize", "64M").is_err() {
        return Ok(false);
    }
    let ok = |c: &mut Command| c.status().is_ok_and(|s| s.success());
    if !ok(Command::new("mkswap")
        .arg("/dev/zram0")
        .stdout(std::process::Stdio::null()))
        || !ok(Command::new("swapon").arg("/dev/zram0"))
    {
        return Err("zram0 present but mkswap/swapon failed".into());
    }
    Ok(true)
}

fn vmstat(key: &str) -> u64 {
    std::fs::read_to_string("/proc/vmstat")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key).and_then(|r| r.trim().parse().ok()))
        })
        .unwrap_or(0)
}

fn t_swap(d: &Dev) -> TResult {
    // Device-written pages swapped out (zram) and back in: nothing lost, and the device
    // follows the new pages.
    if !swap_on()? {
        println!("    (no zram0: swap test skipped)");
        return Ok(());
    }
    let _pin = Pin::cpu0();
    let b = Buf::new(256 << 10);
    let n = (b.len / 8) as u64;
    b.advise(0, b.len, libc::MADV_NOHUGEPAGE)?;
    d.run(&mut [fill(b.addr(), b.len as u64, 0x5eed)])?;
    let out0 = vmstat("pswpout ");
    b.advise(0, b.len, libc::MADV_PAGEOUT)?;
    let out = vmstat("pswpout ") - out0;
    check!(out > 0, "MADV_PAGEOUT swapped nothing out");
    let sum = dev_sum(d, b.addr(), b.len as u64)?;
    check!(
        sum == 0x5eed * n,
        "device read {sum:#x} after swap-in, want {:#x} ({out} pages were swapped out)",
        0x5eed * n
    );
    // Device writes, swap out again, CPU reads.
    d.run(&mut [fill(b.addr(), b.len as u64, 0x600d)])?;
    b.advise(0, b.len, libc::MADV_PAGEOUT)?;
    check!(
        b.sum(0, b.len) == 0x600d * n,
        "CPU lost device writes across swap"
    );
    println!("    ({out} pages swapped out)");
    Ok(())
}

fn t_shared_alias(d: &Dev) -> TResult {
    // A memfd mapped twice: the same pages at two addresses (two DMA mappings of each page),
    // file-backed (shmem) rather than anonymous.
    let len = 32 << 10;
    let name = CString::new("svm").unwrap();
    // SAFETY: plain syscalls on our own fd and mappings.
    let (fd, a, b) = unsafe {
        let fd = libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC);
        check!(fd >= 0, "memfd_create: {}", ename(errno()));
        check!(libc::ftruncate(fd, len as i64) == 0);
        let m = |_: ()| {
            libc::mmap(
                null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        let (a, b) = (m(()), m(()));
        check!(a != libc::MAP_FAILED && b != libc::MAP_FAILED);
        (fd, a as u64, b as u64)
    };
    let res = (|| -> TResult {
        d.run(&mut [fill(a, len as u64, 0x11)])?;
        let sa = dev_sum(d, a, len as u64)?;
        let sb = dev_sum(d, b, len as u64)?;
        let n = (len / 8) as u64;
        check!(
            sa == 0x11 * n && sb == 0x11 * n,
            "sums through the two aliases: {sa:#x} {sb:#x}"
        );
        // SAFETY: our mapping.
        let wb = unsafe { &*(b as *const AtomicU64) };
        check!(
            wb.load(Ordering::Relaxed) == 0x11,
            "CPU alias does not see the device write"
        );
        // Truncating the file away under the device: both aliases are invalidated.
        // SAFETY: our fd.
        check!(unsafe { libc::ftruncate(fd, 0) } == 0);
        let s = d.submit(&mut [read(a, 8)]).map_err(ename)?;
        check!(
            s.error == -libc::EFAULT,
            "read of a truncated shared page: {}",
            ename(-s.error)
        );
        Ok(())
    })();
    // SAFETY: ours.
    unsafe {
        libc::munmap(a as *mut _, len);
        libc::munmap(b as *mut _, len);
        libc::close(fd);
    }
    res
}

fn t_pfnmap(d: &Dev) -> TResult {
    // [vvar] is a VM_PFNMAP | VM_IO mapping: hmm refuses it, so must the device.
    let maps = std::fs::read_to_string("/proc/self/maps").map_err(|e| e.to_string())?;
    let Some(line) = maps.lines().find(|l| l.ends_with("[vvar]")) else {
        println!("    (no [vvar] mapping: skipped)");
        return Ok(());
    };
    let start =
        u64::from_str_radix(line.split('-').next().unwrap(), 16).map_err(|e| e.to_string())?;
    let s = d.submit(&mut [read(start, 8)]).map_err(ename)?;
    check!(
        s.error == -libc::EFAULT,
        "device READ of [vvar]: {}",
        ename(-s.error)
    );
    let (r, done) = d.prefetch(start, PAGE as u64, false);
    check!(
        r == Err(libc::EFAULT) && done == 0,
        "prefetch of [vvar]: {:?}",
        r.err().map(ename)
    );
    Ok(())
}

fn t_zero_pages(d: &Dev) -> TResult {
    // Reads of untouched memory map the shared zero page (and, for THP, the huge zero page)
    // again and again: dozens of DMA mappings of one page must be fine.
    let small = Buf::new(64 * PAGE);
    small.advise(0, small.len, libc::MADV_NOHUGEPAGE)?;
    check!(dev_sum(d, small.addr(), small.len as u64)? == 0);
    let big = Buf::aligned(10 * HUGE, HUGE);
    big.advise(0, big.len, libc::MADV_HUGEPAGE)?;
    let before = d.query()?;
    let mut ops: Vec<_> = (0..10)
        .map(|i| read(big.addr() + (i * HUGE) as u64, 64))
        .collect();
    d.run(&mut ops)?;
    check!(ops.iter().all(|o| o.result == 0));
    let q = d.query()?;
    println!(
        "    (2 MiB leaves over untouched THP memory: {})",
        q.pt_huge - before.pt_huge
    );
    // The CPU writes: COW away from the zero pages; the device follows.
    small.words()[PAGE / 8 * 3].store(5, Ordering::Relaxed);
    big.words()[HUGE / 8 * 4 + 1].store(6, Ordering::Relaxed);
    check!(
        dev_sum(d, small.addr(), small.len as u64)? == 5,
        "device missed the CPU's write over a zero page"
    );
    check!(
        dev_sum(d, big.addr(), big.len as u64)? == 6,
        "device missed the CPU's write over a huge zero page"
    );
    Ok(())
}

fn t_thp(d: &Dev) -> TResult {
    let b = Buf::aligned(2 * HUGE, HUGE);
    b.advise(0, b.len, libc::MADV_HUGEPAGE)?;
    let before = d.query()?;
    d.run(&mut [fill(b.addr(), HUGE as u64, 0xabcd)])?;
    let q = d.query()?;
    check!(
        q.huge_mapped > before.huge_mapped && q.pt_huge > before.pt_huge,
        "no 2 MiB device mapping: huge_mapped {} -> {}, pt_huge {} -> {} (THP not allocated?)",
        before.huge_mapped,
        q.huge_mapped,
        before.pt_huge,
        q.pt_huge
    );
    check!(
        b.sum(0, HUGE) == 0xabcd * (HUGE / 8) as u64,
        "CPU view of the THP"
    );
    // Split it: unmap one 4 KiB page in the middle. The 2 MiB leaf goes whole; the rest is
    // still reachable through 4 KiB faults.
    // SAFETY: our mapping.
    unsafe { libc::munmap(b.p.add(HUGE / 2).cast(), PAGE) };
    let q2 = d.query()?;
    check!(
        q2.pt_huge < q.pt_huge,
        "huge leaf survived a partial munmap"
    );
    let sum = dev_sum(d, b.addr(), (HUGE / 2) as u64)?;
    check!(sum == 0xabcd * (HUGE / 16) as u64, "after split: {sum:#x}");
    let s = d
        .submit(&mut [read(b.addr() + (HUGE / 2) as u64, 8)])
        .map_err(ename)?;
    check!(
        s.error == -libc::EFAULT,
        "hole in split THP: {}",
        ename(-s.error)
    );
    Ok(())
}

fn t_prefetch(d: &Dev) -> TResult {
    let b = Buf::new(256 << 10);
    let before = d.query()?;
    let (r, done) = d.prefetch(b.addr(), b.len as u64, true);
    check!(
        r.is_ok() && done == b.len as u64,
        "prefetch: {:?} done {done}",
        r.err().map(ename)
    );
    let q = d.query()?;
    check!(
        q.pages_mapped >= before.pages_mapped + 64,
        "pages_mapped {} -> {}",
        before.pages_mapped,
        q.pages_mapped
    );
    // Jobs on prefetched memory need no device fault.
    let f0 = q.device_faults;
    d.run(&mut [fill(b.addr(), b.len as u64, 1)])?;
    let q = d.query()?;
    check!(
        q.device_faults == f0,
        "device faulted {} times on prefetched memory",
        q.device_faults - f0
    );
    Ok(())
}

fn t_bad_input(d: &Dev) -> TResult {
    let b = Buf::new(4 * PAGE);
    let a = b.addr();
    let pf = |s: u64, l: u64| d.prefetch(s, l, false).0.err();
    check!(
        pf(a + 8, PAGE as u64) == Some(libc::EINVAL),
        "misaligned prefetch start"
    );
    check!(pf(a, 100) == Some(libc::EINVAL), "misaligned prefetch len");
    check!(pf(a, 0) == Some(libc::EINVAL), "empty prefetch");
    check!(
        pf(0xffff_8880_0000_0000, PAGE as u64) == Some(libc::EINVAL),
        "kernel address prefetch"
    );
    check!(
        pf(u64::MAX - 4095, 8192) == Some(libc::EINVAL),
        "overflowing prefetch"
    );
    // Unmapped: EFAULT, and `done` says where it stopped.
    let hole = Buf::new(PAGE);
    let ha = hole.addr();
    drop(hole);
    let (r, done) = d.prefetch(ha, PAGE as u64, false);
    check!(
        r == Err(libc::EFAULT) && done == 0,
        "unmapped prefetch: {:?} done {done}",
        r.err().map(ename)
    );
    // SAFETY: punching a hole into our own mapping.
    unsafe { libc::munmap(b.p.add(2 * PAGE).cast(), PAGE) };
    let (r, done) = d.prefetch(a, 4 * PAGE as u64, false);
    check!(
        r == Err(libc::EFAULT) && done == 2 * PAGE as u64,
        "partial prefetch: {:?} done {done}",
        r.err().map(ename)
    );

    let sub = |ops: &mut [drm_svm_accel_op]| d.submit(ops).err();
    check!(
        sub(&mut [fill(0xffff_8880_0000_0000, 8, 1)]) == Some(libc::EINVAL),
        "kernel address FILL"
    );
    check!(
        sub(&mut [fill(a + 4, 8, 1)]) == Some(libc::EINVAL),
        "misaligned FILL"
    );
    check!(
        sub(&mut [read(a, 12)]) == Some(libc::EINVAL),
        "misaligned READ length"
    );
    check!(
        sub(&mut [op(99, 0, a, 8, 0)]) == Some(libc::EINVAL),
        "bad op kind"
    );
    let mut o = fill(a, 8, 1);
    o.flags = 1;
    check!(sub(&mut [o]) == Some(libc::EINVAL), "op flags");
    check!(sub(&mut []) == Some(libc::EINVAL), "zero ops");
    // A bad op anywhere refuses the whole job before it runs.
    b.words()[0].store(0, Ordering::Relaxed);
    check!(sub(&mut [fill(a, 8, 1), op(0, 0, 0, 0, 0)]) == Some(libc::EINVAL));
    check!(
        b.words()[0].load(Ordering::Relaxed) == 0,
        "a refused job ran"
    );
    let mut s = drm_svm_accel_submit {
        ops_ptr: 8,
        op_count: 1,
        ..Default::default()
    };
    let r = d.ioctl(DRM_IOCTL_SVM_ACCEL_SUBMIT as u64, &mut s);
    check!(
        r == Err(libc::EFAULT),
        "unreadable ops array: {:?}",
        r.err().map(ename)
    );
    // Device access to a VM_PFNMAP/VM_IO mapping is refused like a hole: none here to test
    // without another driver, so the vDSO's vvar page stands in when present.
    Ok(())
}

/// SUBMIT with a hand-made struct (pointers and counts `Dev::submit` cannot express).
fn raw_submit(d: &Dev, ops_ptr: u64, op_count: u32) -> Result<drm_svm_accel_submit, i32> {
    let mut s = drm_svm_accel_submit {
        ops_ptr,
        op_count,
        ..Default::default()
    };
    d.ioctl(DRM_IOCTL_SVM_ACCEL_SUBMIT as u64, &mut s)
        .map(|_| s)
}

fn t_bad_overflow(d: &Dev) -> TResult {
    // Wrapping start+len / src+len / dst+len, huge lengths, ranges past TASK_SIZE, misaligned
    // ADD, op kinds out of range: all EINVAL before anything runs.
    let b = Buf::new(4 * PAGE);
    let a = b.addr();
    for w in b.words() {
        w.store(0x77, Ordering::Relaxed);
    }
    let top = 0xffff_ffff_ffff_f000u64; // page aligned, top + 4096 == 2^64
    for (s, l, what) in [
        (a, !4095, "len 2^64-4096 (start+len wraps)"),
        (top, 4096, "start+len == 2^64"),
        (top, 8192, "start+len wraps past 0"),
        (a, 1 << 62, "len 2^62"),
        (a, 1 << 47, "len 2^47 (past TASK_SIZE)"),
        (0x7fff_ffff_f000, 0x2000, "range crossing TASK_SIZE"),
        (1 << 47, 4096, "start 2^47"),
    ] {
        for write in [false, true] {
            let (r, done) = d.prefetch(s, l, write);
            check!(
                r == Err(libc::EINVAL) && done == 0,
                "PREFETCH {what} (write {write}): {:?} done {done}",
                r.err().map(ename)
            );
        }
    }
    // 8: an unknown flag; 6: both destinations.
    for (flags, pad) in [(8u32, 0u32), (6, 0), (0, 1)] {
        let mut p = drm_svm_accel_prefetch {
            start: a,
            len: PAGE as u64,
            flags,
            pad,
            ..Default::default()
        };
        let r = d.ioctl(DRM_IOCTL_SVM_ACCEL_PREFETCH as u64, &mut p);
        check!(
            r == Err(libc::EINVAL),
            "PREFETCH flags {flags} pad {pad}: {:?}",
            r.err().map(ename)
        );
    }
    let wrap = u64::MAX - 7; // 8-byte aligned, wrap + 8 == 2^64
    let cases = [
        (fill(wrap, 16, 1), "FILL dst+len wraps"),
        (fill(top, 4096, 1), "FILL dst+len == 2^64"),
        (copy(a, wrap, 16), "COPY dst+len wraps"),
        (copy(wrap, a, 16), "COPY src+len wraps"),
        (copy(top, a, 8192), "COPY src+len wraps past 0"),
        (read(wrap, 16), "READ src+len wraps"),
        (add(wrap, 1), "ADD at 2^64-8 (dst+8 wraps)"),
        (add(u64::MAX - 15, 1), "ADD above TASK_SIZE"),
        (fill(a, 1 << 62, 1), "FILL len 2^62"),
        (copy(a, a + 8192, 1 << 62), "COPY len 2^62"),
        (read(a, 1 << 62), "READ len 2^62"),
        (fill(a, !7, 1), "FILL len 2^64-8"),
        (read(a, (1 << 30) + 8), "READ len 1 GiB + 8"),
        (fill(0x7fff_ffff_f000, 0x2000, 1), "FILL crossing TASK_SIZE"),
        (add(a + 4, 1), "ADD at a 4-byte aligned address"),
        (add(a + 1, 1), "ADD at an odd address"),
        (op(0, 0, a, 8, 0), "kind 0"),
        (op(SVM_ACCEL_OP_READ + 1, a, a, 8, 0), "kind READ+1"),
        (op(u32::MAX, a, a, 8, 0), "kind u32::MAX"),
    ];
    for (o, what) in cases {
        let r = d.submit(&mut [o]).err();
        check!(
            r == Some(libc::EINVAL),
            "{what}: {:?} (want EINVAL)",
            r.map(ename)
        );
        // Behind a good op: the whole job is refused before its first op runs.
        let r = d.submit(&mut [fill(a, 8, 0x99), o]).err();
        check!(
            r == Some(libc::EINVAL),
            "{what} as op 1: {:?}",
            r.map(ename)
        );
        check!(
            b.words()[0].load(Ordering::Relaxed) == 0x77,
            "{what}: a refused job ran its first op"
        );
    }
    // The largest length is accepted and runs up to the first hole: READ 1 GiB from a page
    // followed by a hole.
    let g = Buf::new(2 * PAGE);
    // SAFETY: punching a hole in our own mapping.
    unsafe { libc::munmap(g.p.add(PAGE).cast(), PAGE) };
    let s = d.submit(&mut [read(g.addr(), 1 << 30)]).map_err(ename)?;
    check!(
        s.error == -libc::EFAULT && s.failed_op == 0 && s.fault_addr == g.addr() + PAGE as u64,
        "READ of 1 GiB over one page: error {} op {} addr {:#x}",
        ename(-s.error),
        s.failed_op,
        s.fault_addr
    );
    Ok(())
}

fn t_bad_submit(d: &Dev) -> TResult {
    let b = Buf::new(PAGE);
    let a = b.addr();
    let mut ops = [fill(a, 8, 5)];
    let p = ops.as_mut_ptr() as u64;
    // op_count 0 and op_count past the maximum: EINVAL at once (nothing allocated or copied,
    // whatever ops_ptr is).
    for (ptr, n) in [
        (p, 0),
        (0, 0),
        (p, SVM_ACCEL_MAX_OPS + 1),
        (p, 1 << 31),
        (0, 1 << 31),
        (p, u32::MAX),
    ] {
        let t = Instant::now();
        let r = raw_submit(d, ptr, n).err();
        let us = t.elapsed().as_micros();
        check!(
            r == Some(libc::EINVAL),
            "op_count {n} ops_ptr {ptr:#x}: {:?} (want EINVAL)",
            r.map(ename)
        );
        check!(us < 100_000, "op_count {n}: refused only after {us} us");
    }
    let mut s = drm_svm_accel_submit {
        ops_ptr: p,
        op_count: 1,
        flags: 1,
        ..Default::default()
    };
    let r = d.ioctl(DRM_IOCTL_SVM_ACCEL_SUBMIT as u64, &mut s);
    check!(
        r == Err(libc::EINVAL),
        "SUBMIT flags 1: {:?}",
        r.err().map(ename)
    );
    // ops_ptr at unmapped memory, NULL, a kernel address, the top of the address space: EFAULT.
    let hole = Buf::new(PAGE).addr(); // unmapped again at once
    for (ptr, what) in [
        (hole, "unmapped page"),
        (0, "NULL"),
        (0xffff_8880_0000_0000, "kernel address"),
        (!7, "2^64-8"),
    ] {
        for n in [1, SVM_ACCEL_MAX_OPS] {
            let r = raw_submit(d, ptr, n).err();
            check!(
                r == Some(libc::EFAULT),
                "ops_ptr {what} x{n}: {:?} (want EFAULT)",
                r.map(ename)
            );
        }
    }
    // An array running into a hole: op 0 readable, op 1 not. EFAULT, and op 0 did not run.
    let arr = Buf::new(2 * PAGE);
    // SAFETY: punching a hole in our own mapping; writing an op into its first page.
    let at = unsafe {
        libc::munmap(arr.p.add(PAGE).cast(), PAGE);
        let at = arr.p.add(PAGE - std::mem::size_of::<drm_svm_accel_op>());
        std::ptr::write_unaligned(at.cast(), fill(a, 8, 6));
        at as u64
    };
    let r = raw_submit(d, at, 2).err();
    check!(
        r == Some(libc::EFAULT),
        "ops array running into a hole: {:?}",
        r.map(ename)
    );
    check!(
        b.words()[0].load(Ordering::Relaxed) == 0,
        "an unreadable job ran"
    );
    // An ops array needs no alignment: one at an odd address runs.
    // SAFETY: our mapping; moves the op one byte down.
    unsafe { std::ptr::write_unaligned((at - 1) as *mut drm_svm_accel_op, fill(a, 8, 6)) };
    let s = raw_submit(d, at - 1, 1).map_err(ename)?;
    check!(
        s.error == 0 && b.words()[0].load(Ordering::Relaxed) == 6,
        "op at an odd address: error {}",
        ename(-s.error)
    );
    // The maximum op_count runs: 4096 ADDs on one word, each returning the previous sum.
    let mut many = vec![add(a + 8, 1); SVM_ACCEL_MAX_OPS as usize];
    d.run(&mut many)?;
    check!(
        many.iter().enumerate().all(|(i, o)| o.result == i as u64),
        "ADD results of a 4096-op job"
    );
    check!(b.words()[1].load(Ordering::Relaxed) == SVM_ACCEL_MAX_OPS as u64);
    // A driver ioctl number past the last one (DRM_COMMAND_BASE + 4): EINVAL from DRM.
    let mut bind = drm_svm_accel_bind::default();
    let r = d.ioctl(DRM_IOCTL_SVM_ACCEL_BIND as u64 + 4, &mut bind);
    check!(
        r == Err(libc::EINVAL),
        "unknown driver ioctl: {:?}",
        r.err().map(ename)
    );
    Ok(())
}

fn t_bad_fd() -> TResult {
    // The driver's ioctls on files that are not the device, and on closed fds.
    let b = Buf::new(PAGE);
    let ops = [fill(b.addr(), 8, 1)];
    let sub = |fd: i32| -> i32 {
        let mut s = drm_svm_accel_submit {
            ops_ptr: ops.as_ptr() as u64,
            op_count: 1,
            ..Default::default()
        };
        // SAFETY: plain ioctl with the struct the request encodes.
        let r = unsafe { libc::ioctl(fd, DRM_IOCTL_SVM_ACCEL_SUBMIT as libc::c_ulong, &mut s) };
        if r < 0 {
            errno()
        } else {
            0
        }
    };
    let null = CString::new("/dev/null").unwrap();
    // SAFETY: plain syscalls.
    let fd = unsafe { libc::open(null.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    check!(fd >= 0, "open /dev/null: {}", ename(errno()));
    let r = sub(fd);
    let mut q = drm_svm_accel_query::default();
    // SAFETY: plain ioctl.
    let rq = unsafe { libc::ioctl(fd, DRM_IOCTL_SVM_ACCEL_QUERY as libc::c_ulong, &mut q) };
    let eq = errno();
    // SAFETY: ours.
    unsafe { libc::close(fd) };
    check!(r == libc::ENOTTY, "SUBMIT on /dev/null: {}", ename(r));
    check!(
        rq < 0 && eq == libc::ENOTTY,
        "QUERY on /dev/null: {}",
        ename(eq)
    );
    // A regular (tmpfs) file: ENOTTY too.
    let name = CString::new("svm-bad-fd").unwrap();
    // SAFETY: plain syscalls.
    let mfd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    check!(mfd >= 0);
    let r = sub(mfd);
    // SAFETY: ours.
    unsafe { libc::close(mfd) };
    check!(r == libc::ENOTTY, "SUBMIT on a memfd: {}", ename(r));
    // A closed fd (of the device, bound), -1 and an fd number never opened: EBADF.
    let d = Dev::bound()?;
    let closed = d.fd;
    drop(d);
    for fd in [closed, -1, 1 << 20] {
        let r = sub(fd);
        check!(r == libc::EBADF, "SUBMIT on fd {fd}: {}", ename(r));
    }
    check!(
        b.words()[0].load(Ordering::Relaxed) == 0,
        "a job ran through a bad fd"
    );
    Ok(())
}

fn t_mprotect_up(d: &Dev) -> TResult {
    // Writable device leaves, mprotect down to PROT_READ (FILL and PREFETCH_WRITE: EPERM,
    // reads fine), then back up to RW: FILL succeeds again, with and without device faults.
    let b = Buf::new(16 << 10);
    let (a, len, n) = (b.addr(), b.len as u64, (b.len / 8) as u64);
    d.run(&mut [fill(a, len, 1)])?;
    b.protect(libc::PROT_READ)?;
    let s = d.submit(&mut [fill(a, len, 2)]).map_err(ename)?;
    check!(
        s.error == -libc::EPERM && s.failed_op == 0 && s.fault_addr == a,
        "FILL after mprotect(PROT_READ): {} at {:#x}",
        ename(-s.error),
        s.fault_addr
    );
    let (r, done) = d.prefetch(a, len, true);
    check!(
        r == Err(libc::EPERM) && done == 0,
        "PREFETCH_WRITE on PROT_READ: {:?} done {done}",
        r.err().map(ename)
    );
    let (r, done) = d.prefetch(a, len, false);
    check!(
        r.is_ok() && done == len,
        "read PREFETCH on PROT_READ: {:?}",
        r.err().map(ename)
    );
    check!(dev_sum(d, a, len)? == n, "device sum on PROT_READ");
    b.protect(libc::PROT_READ | libc::PROT_WRITE)?;
    d.run(&mut [fill(a, len, 3)])?;
    check!(b.sum(0, b.len) == 3 * n, "CPU after FILL on RW again");
    check!(dev_sum(d, a, len)? == 3 * n);
    // Down and up again, then PREFETCH_WRITE: the next FILL needs no device fault.
    b.protect(libc::PROT_READ)?;
    b.protect(libc::PROT_READ | libc::PROT_WRITE)?;
    let (r, done) = d.prefetch(a, len, true);
    check!(
        r.is_ok() && done == len,
        "PREFETCH_WRITE after mprotect up: {:?} done {done}",
        r.err().map(ename)
    );
    let f0 = d.query()?.device_faults;
    d.run(&mut [fill(a, len, 4)])?;
    let f1 = d.query()?.device_faults;
    check!(f1 == f0, "{} device faults after PREFETCH_WRITE", f1 - f0);
    check!(b.sum(0, b.len) == 4 * n, "CPU after the prefetched FILL");
    Ok(())
}

fn t_devmem(d: &Dev) -> TResult {
    // /dev/mem mappings are VM_IO | VM_PFNMAP (remap_pfn_range): the device must refuse them.
    let p = CString::new("/dev/mem").unwrap();
    // SAFETY: plain syscall.
    let fd = unsafe { libc::open(p.as_ptr(), libc::O_RDONLY | libc::O_SYNC | libc::O_CLOEXEC) };
    if fd < 0 {
        let e = errno();
        check!(e == libc::ENOENT, "open /dev/mem: {}", ename(e));
        println!("    (no /dev/mem: CONFIG_DEVMEM is off; pfnmap covers VM_PFNMAP with [vvar])");
        return Ok(());
    }
    // The BIOS area below 1 MiB may be mapped even with STRICT_DEVMEM.
    // SAFETY: a read-only shared mapping of /dev/mem.
    let m = unsafe {
        libc::mmap(
            null_mut(),
            PAGE,
            libc::PROT_READ,
            libc::MAP_SHARED,
            fd,
            0xf0000,
        )
    };
    let res = (|| -> TResult {
        check!(m != libc::MAP_FAILED, "mmap /dev/mem: {}", ename(errno()));
        let s = d.submit(&mut [read(m as u64, 8)]).map_err(ename)?;
        check!(
            s.error == -libc::EFAULT,
            "device READ of /dev/mem: {}",
            ename(-s.error)
        );
        let (r, done) = d.prefetch(m as u64, PAGE as u64, false);
        check!(
            r == Err(libc::EFAULT) && done == 0,
            "PREFETCH of /dev/mem: {:?}",
            r.err().map(ename)
        );
        Ok(())
    })();
    // SAFETY: ours.
    unsafe {
        if m != libc::MAP_FAILED {
            libc::munmap(m, PAGE);
        }
        libc::close(fd);
    }
    res
}

fn t_close_live(_d: &Dev) -> TResult {
    // Close a bound file whose device still maps pages: teardown releases everything.
    let b = Buf::new(64 << 10);
    {
        let d2 = Dev::bound()?;
        d2.run(&mut [fill(b.addr(), b.len as u64, 8)])?;
        let q = d2.query()?;
        check!(q.dma_live > 0);
    }
    check!(
        b.sum(0, b.len) == 8 * (b.len / 8) as u64,
        "data lost at close"
    );
    // Two files bound to the same mm see the same memory.
    let d3 = Dev::bound()?;
    let d4 = Dev::bound()?;
    d3.run(&mut [fill(b.addr(), 8, 11)])?;
    check!(dev_sum(&d4, b.addr(), 8)? == 11);
    Ok(())
}

fn t_exit_with_live(_d: &Dev) -> TResult {
    // A child binds its own file, maps pages on the device and exits without closing: its mm
    // goes away (MMU_NOTIFY_RELEASE) before the file is released.
    // SAFETY: the child only makes syscalls and _exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let code = match (|| -> TResult {
            let d = Dev::bound()?;
            let b = Buf::new(64 << 10);
            d.run(&mut [fill(b.addr(), b.len as u64, 3)])?;
            std::mem::forget(d);
            std::mem::forget(b);
            Ok(())
        })() {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("child: {e}");
                5
            }
        };
        // SAFETY: exit with the file still open.
        unsafe { libc::_exit(code) };
    }
    check!(pid > 0);
    let mut st = 0;
    // SAFETY: our child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    check!(
        libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
        "child status {st:#x}"
    );
    Ok(())
}

fn t_kill_during_jobs(_d: &Dev) -> TResult {
    // A child loops on jobs that fault; SIGKILL it mid-job.
    // SAFETY: the child only makes syscalls.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let d = match Dev::bound() {
            Ok(d) => d,
            Err(_) => unsafe { libc::_exit(6) },
        };
        loop {
            let b = Buf::new(1 << 20);
            let _ = d.submit(&mut [fill(b.addr(), b.len as u64, 1)]);
        }
    }
    check!(pid > 0);
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: our child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    let mut st = 0;
    // SAFETY: our child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    check!(
        libc::WIFSIGNALED(st) && libc::WTERMSIG(st) == libc::SIGKILL,
        "child status {st:#x}"
    );
    Ok(())
}

fn t_prefetch_race(d: &Arc<Dev>) -> TResult {
    // Several threads prefetch pages of the same fresh ranges at once (faults from the ioctl
    // threads, beside the fault worker): racing range creation, one notifier per range.
    let b = Arc::new(Buf::aligned(4 * HUGE, HUGE));
    let before = d.query()?;
    let start = Arc::new(std::sync::Barrier::new(4));
    let hs: Vec<_> = (0..4u64)
        .map(|t| {
            let (d, b, start) = (d.clone(), b.clone(), start.clone());
            std::thread::spawn(move || -> TResult {
                start.wait();
                for r in 0..4u64 {
                    let a = b.addr() + r * HUGE as u64 + t * 64 * PAGE as u64;
                    let len = 64 * PAGE as u64;
                    // The threads' faults invalidate each other (zero page, then a THP); the
                    // retry budget is wall time (hmm's 1 s), which a loaded TCG host can run
                    // out of: EBUSY is then the documented answer, and PREFETCH resumes at
                    // `done`. A bounded number of resumes: a livelock still fails.
                    let mut off = 0;
                    let mut resumes = 0;
                    while off < len {
                        let (res, done) = d.prefetch(a + off, len - off, t % 2 == 0);
                        off += done;
                        match res {
                            Ok(()) => check!(off == len, "prefetch done {off:#x} of {len:#x}"),
                            Err(e) if e == libc::EBUSY && resumes < 5 => resumes += 1,
                            Err(e) => {
                                check!(false, "prefetch: {} after {resumes} resumes", ename(e))
                            }
                        }
                    }
                }
                Ok(())
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap()?;
    }
    let q = d.query()?;
    // One range per 2 MiB block, however many threads raced for it (fewer if a range of an
    // earlier buffer at the same address is still published).
    check!(
        q.ranges_created - before.ranges_created <= 4,
        "ranges created {} for 4 blocks",
        q.ranges_created - before.ranges_created
    );
    let sum = dev_sum(d, b.addr(), (4 * HUGE) as u64)?;
    check!(sum == 0, "fresh memory reads {sum:#x}");
    println!(
        "    (range creation races lost: {})",
        q.range_races - before.range_races
    );
    Ok(())
}

fn t_concurrent(d: &Arc<Dev>) -> TResult {
    // Jobs on distinct ranges from several threads, while other threads churn the mm:
    // mprotect toggling under a reader, munmap/mmap under a writer.
    let stop = Arc::new(AtomicBool::new(false));
    let mut hs = Vec::new();
    for t in 0..3u64 {
        let d = d.clone();
        hs.push(std::thread::spawn(move || -> TResult {
            let b = Buf::aligned(HUGE, HUGE);
            for i in 0..15u64 {
                let v = t * 1000 + i;
                d.run(&mut [fill(b.addr(), 256 << 10, v)])?;
                let s = dev_sum(&d, b.addr(), 256 << 10)?;
                check!(s == v * (32 << 10), "thread {t} iter {i}: sum {s}");
                check!(b.sum(0, 256 << 10) == v * (32 << 10));
            }
            Ok(())
        }));
    }
    let ro = Arc::new(Buf::new(64 << 10));
    for w in ro.words() {
        w.store(1, Ordering::Relaxed);
    }
    {
        let (d, ro, stop) = (d.clone(), ro.clone(), stop.clone());
        hs.push(std::thread::spawn(move || -> TResult {
            while !stop.load(Ordering::Relaxed) {
                let s = dev_sum(&d, ro.addr(), ro.len as u64)?;
                check!(s == (ro.len / 8) as u64, "reader under mprotect churn: {s}");
            }
            Ok(())
        }));
    }
    {
        let (ro, stop) = (ro.clone(), stop.clone());
        hs.push(std::thread::spawn(move || -> TResult {
            while !stop.load(Ordering::Relaxed) {
                ro.protect(libc::PROT_READ)?;
                ro.protect(libc::PROT_READ | libc::PROT_WRITE)?;
            }
            Ok(())
        }));
    }
    let efaults = Arc::new(AtomicU64::new(0));
    {
        let (d, stop, efaults) = (d.clone(), stop.clone(), efaults.clone());
        hs.push(std::thread::spawn(move || -> TResult {
            while !stop.load(Ordering::Relaxed) {
                let mut b = Buf::new(1 << 20);
                let a = b.addr();
                let (d2, bl) = (d.clone(), b.len as u64);
                let go = Arc::new(AtomicBool::new(false));
                let g2 = go.clone();
                let w = std::thread::spawn(move || {
                    g2.store(true, Ordering::Release);
                    d2.submit(&mut [fill(a, bl, 2)])
                });
                while !go.load(Ordering::Acquire) {
                    std::hint::spin_loop();
                }
                std::thread::sleep(Duration::from_micros(
                    500 * (efaults.load(Ordering::Relaxed) % 4),
                ));
                b.unmap();
                match w.join().unwrap() {
                    Ok(s) if s.error == 0 => {}
                    Ok(s) if s.error == -libc::EFAULT => {
                        efaults.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(s) => return Err(format!("FILL racing munmap: {}", ename(-s.error))),
                    Err(e) => return Err(format!("FILL racing munmap: ioctl {}", ename(e))),
                }
            }
            Ok(())
        }));
    }
    let mut res = Ok(());
    for (i, h) in hs.into_iter().enumerate() {
        if i == 3 {
            // The three job threads are done: stop the churn.
            stop.store(true, Ordering::Relaxed);
        }
        if let Err(e) = h.join().unwrap() {
            stop.store(true, Ordering::Relaxed);
            res = res.and(Err(e));
        }
    }
    stop.store(true, Ordering::Relaxed);
    res?;
    let q = d.query()?;
    check!(q.pt_zapped == 0, "zapped leaves left: {}", q.pt_zapped);
    println!(
        "    (munmap races ending in EFAULT: {}; retries own/foreign {}/{}; invalidations {})",
        efaults.load(Ordering::Relaxed),
        q.retries_own,
        q.retries_foreign,
        q.invalidations
    );
    Ok(())
}

fn t_dma_accounting(d: &Dev) -> TResult {
    // Every DMA mapping the engine holds is a valid leaf (the census) — none leaked.
    let q = d.query()?;
    check!(q.pt_zapped == 0, "zapped leaves at rest: {}", q.pt_zapped);
    check!(
        q.dma_live == q.pt_pages + q.pt_huge,
        "dma_live {} != pages {} + huge {}",
        q.dma_live,
        q.pt_pages,
        q.pt_huge
    );
    Ok(())
}

// ---- issue 9: hostile values, long jobs, killable waits, memory the device must refuse ----

/// x86-64 `TASK_SIZE_MAX` (4-level paging): user addresses lie below it.
const TASK_TOP: u64 = (1 << 47) - 4096;

/// Hostile values for a 64-bit length, count or address field: 0, every bit position alone,
/// one and eight and a page above and one below it, and every all-ones prefix.
fn hostile_u64() -> Vec<u64> {
    let mut v = vec![
        0,
        u64::MAX,
        TASK_TOP,
        TASK_TOP + 4096,
        0xffff_8880_0000_0000,
    ];
    for k in 0..64 {
        let b = 1u64 << k;
        v.extend([
            b,
            b.wrapping_add(1),
            b.wrapping_sub(1),
            b.wrapping_add(8),
            b.wrapping_add(4096),
            u64::MAX << k,
        ]);
    }
    v.sort_unstable();
    v.dedup();
    v
}

/// The same for a 32-bit field.
fn hostile_u32() -> Vec<u32> {
    let mut v = vec![0, u32::MAX];
    for k in 0..32 {
        let b = 1u32 << k;
        v.extend([b, b.wrapping_add(1), b.wrapping_sub(1), u32::MAX << k]);
    }
    v.sort_unstable();
    v.dedup();
    v
}

/// Whether `[a, a + l)` is a span the driver must accept: `align`-aligned, at most `max` long,
/// not wrapping, below `TASK_TOP`.
fn span_ok(a: u64, l: u64, align: u64, max: u64) -> bool {
    a.is_multiple_of(align)
        && l.is_multiple_of(align)
        && l <= max
        && a.checked_add(l).is_some_and(|e| e <= TASK_TOP)
}

/// `len` bytes of fresh read-write memory followed by a `PROT_NONE` guard page, so an access
/// past the end faults (`EFAULT`) whatever else gets mapped meanwhile.
struct Guarded {
    /// The memory and its guard page.
    buf: Buf,
    len: usize,
}

impl Guarded {
    fn new(len: usize) -> Result<Guarded, String> {
        let buf = Buf::new(len + PAGE);
        // SAFETY: our own mapping.
        let r = unsafe { libc::mprotect(buf.p.add(len).cast(), PAGE, libc::PROT_NONE) };
        check!(r == 0, "mprotect guard: {}", ename(errno()));
        Ok(Guarded { buf, len })
    }

    fn addr(&self) -> u64 {
        self.buf.addr()
    }

    /// The words before the guard.
    fn words(&self) -> &[AtomicU64] {
        &self.buf.words()[..self.len / 8]
    }
}

/// What a job or ioctl returned, for messages: the ioctl errno, or the job's error.
fn job_res(r: &Result<drm_svm_accel_submit, i32>) -> String {
    match r {
        Err(e) => format!("ioctl {}", ename(*e)),
        Ok(s) => format!(
            "job error {} op {} addr {:#x}",
            ename(-s.error),
            s.failed_op,
            s.fault_addr
        ),
    }
}

fn t_hostile_accel(d: &Dev) -> TResult {
    // Every length, count, address, kind and flags field of every accel ioctl, at every bit
    // position: refused with EINVAL before anything runs exactly when the span is bad, and
    // otherwise bounded by the memory really there (a 64 KiB buffer before a guard page).
    const LEN: u64 = 64 << 10;
    let b = Guarded::new(LEN as usize)?;
    let a = b.addr();
    let sent = Buf::new(PAGE); // a job refused as a whole must not run its first op
    let sentinel = sent.words()[0].as_ptr() as u64;
    let hv = hostile_u64();
    let t0 = Instant::now();
    let mut n = 0u64;

    // PREFETCH: every length from a good start, every start with a page and with 2 MiB.
    for &l in &hv {
        for write in [false, true] {
            n += 1;
            let (r, done) = d.prefetch(a, l, write);
            let want = if !span_ok(a, l, 4096, u64::MAX) || l == 0 {
                (Err(libc::EINVAL), 0)
            } else if l <= LEN {
                (Ok(()), l)
            } else {
                (Err(libc::EFAULT), LEN)
            };
            check!(
                (r, done) == want,
                "PREFETCH {a:#x}+{l:#x} (write {write}): {:?} done {done:#x}, want {:?} {:#x}",
                r.err().map(ename),
                want.0.err().map(ename),
                want.1
            );
        }
    }
    for &s in &hv {
        for l in [4096, HUGE as u64] {
            n += 1;
            let (r, done) = d.prefetch(s, l, false);
            if !span_ok(s, l, 4096, u64::MAX) {
                check!(
                    r == Err(libc::EINVAL) && done == 0,
                    "PREFETCH at {s:#x}+{l:#x}: {:?} done {done:#x} (want EINVAL)",
                    r.err().map(ename)
                );
            } else {
                check!(
                    matches!(r, Ok(()) | Err(libc::EFAULT) | Err(libc::EPERM))
                        && done <= l
                        && done % 4096 == 0
                        && (r.is_err() || done == l),
                    "PREFETCH at {s:#x}+{l:#x}: {:?} done {done:#x}",
                    r.err().map(ename)
                );
            }
        }
    }
    for x in hostile_u32() {
        let mut p = drm_svm_accel_prefetch {
            start: a,
            len: 4096,
            flags: x,
            ..Default::default()
        };
        let r = d.ioctl(DRM_IOCTL_SVM_ACCEL_PREFETCH as u64, &mut p);
        let dest = SVM_ACCEL_PREFETCH_TO_DEVICE | SVM_ACCEL_PREFETCH_TO_SYSTEM;
        let ok = x & !(SVM_ACCEL_PREFETCH_WRITE | dest) == 0 && x & dest != dest;
        check!(
            r.is_ok() == ok && (ok || r == Err(libc::EINVAL)),
            "PREFETCH flags {x:#x}: {:?}",
            r.err().map(ename)
        );
        p.flags = 0;
        p.pad = x;
        let r = d.ioctl(DRM_IOCTL_SVM_ACCEL_PREFETCH as u64, &mut p);
        check!(
            if x == 0 {
                r.is_ok()
            } else {
                r == Err(libc::EINVAL)
            },
            "PREFETCH pad {x:#x}: {:?}",
            r.err().map(ename)
        );
        n += 2;
    }

    // SUBMIT op_count: an array of exactly SVM_ACCEL_MAX_OPS READs before a guard page, so
    // a count past the maximum that got through would fault on the guard.
    let max = SVM_ACCEL_MAX_OPS as usize;
    let osz = std::mem::size_of::<drm_svm_accel_op>();
    let arr_len = (max * osz).div_ceil(PAGE) * PAGE;
    let arr = Guarded::new(arr_len)?;
    let ops_ptr = arr.addr() + (arr_len - max * osz) as u64;
    for w in b.words().iter().take(2) {
        w.store(3, Ordering::Relaxed);
    }
    for i in 0..max {
        // SAFETY: inside `arr`.
        unsafe {
            std::ptr::write_unaligned((ops_ptr as *mut drm_svm_accel_op).add(i), read(a, 16))
        };
    }
    for c in hostile_u32() {
        n += 1;
        let t = Instant::now();
        let r = raw_submit(d, ops_ptr, c);
        if c == 0 || c > SVM_ACCEL_MAX_OPS {
            check!(
                r.err() == Some(libc::EINVAL) && t.elapsed() < Duration::from_millis(100),
                "op_count {c:#x}: {} after {:?} (want EINVAL at once)",
                job_res(&r),
                t.elapsed()
            );
        } else {
            check!(
                matches!(r, Ok(s) if s.error == 0),
                "op_count {c}: {}",
                job_res(&r)
            );
            for i in 0..c as usize {
                // SAFETY: inside `arr`.
                let o = unsafe {
                    std::ptr::read_unaligned((ops_ptr as *const drm_svm_accel_op).add(i))
                };
                check!(o.result == 6, "op_count {c}: op {i} read {}", o.result);
            }
        }
    }
    for x in hostile_u32().into_iter().filter(|&x| x != 0) {
        let mut ops = [read(a, 8)];
        let mut s = drm_svm_accel_submit {
            ops_ptr: ops.as_mut_ptr() as u64,
            op_count: 1,
            flags: x,
            ..Default::default()
        };
        let r = d.ioctl(DRM_IOCTL_SVM_ACCEL_SUBMIT as u64, &mut s);
        check!(
            r == Err(libc::EINVAL),
            "SUBMIT flags {x:#x}: {:?}",
            r.err().map(ename)
        );
        n += 1;
    }
    // Output fields are outputs: garbage in them is ignored.
    let mut ops = [read(a, 8)];
    let mut s = drm_svm_accel_submit {
        ops_ptr: ops.as_mut_ptr() as u64,
        op_count: 1,
        error: -1,
        failed_op: u32::MAX,
        fault_addr: u64::MAX,
        ..Default::default()
    };
    let r = d.ioctl(DRM_IOCTL_SVM_ACCEL_SUBMIT as u64, &mut s);
    check!(
        r.is_ok() && s.error == 0 && s.failed_op == 0 && s.fault_addr == 0 && ops[0].result == 3,
        "SUBMIT with garbage in its output fields: {:?} error {}",
        r.err().map(ename),
        s.error
    );

    // Each op's length at every bit position, alone and behind a good op that must not run
    // when the job is refused.
    let sub = |o: drm_svm_accel_op| d.submit(&mut [o]);
    for kind in [SVM_ACCEL_OP_FILL, SVM_ACCEL_OP_COPY, SVM_ACCEL_OP_READ] {
        for &l in &hv {
            n += 1;
            let o = op(kind, a, a, l, 0);
            let r = sub(o);
            if !span_ok(a, l, 8, 1 << 30) {
                check!(
                    r.err() == Some(libc::EINVAL),
                    "kind {kind} len {l:#x}: {} (want EINVAL)",
                    job_res(&r)
                );
                sent.words()[0].store(0x77, Ordering::Relaxed);
                let r = d.submit(&mut [fill(sentinel, 8, 0x99), o]);
                check!(
                    r.err() == Some(libc::EINVAL)
                        && sent.words()[0].load(Ordering::Relaxed) == 0x77,
                    "kind {kind} len {l:#x} behind a good op: {}, first op ran: {}",
                    job_res(&r),
                    sent.words()[0].load(Ordering::Relaxed) != 0x77
                );
            } else if l <= LEN {
                check!(
                    matches!(r, Ok(s) if s.error == 0),
                    "kind {kind} len {l:#x}: {}",
                    job_res(&r)
                );
            } else {
                check!(
                    matches!(r, Ok(s) if s.error == -libc::EFAULT && s.failed_op == 0 && s.fault_addr == a + LEN),
                    "kind {kind} len {l:#x}: {} (want EFAULT at the guard page)",
                    job_res(&r)
                );
            }
        }
    }

    // Addresses at every bit position (kernel, non-canonical, unaligned, user). Only READ
    // and COPY's source go anywhere valid; a device write goes to a valid address only as
    // an ADD of 0 or with length 0, so the test never scribbles over its own memory.
    for &x in &hv {
        n += 5;
        let ok8 = span_ok(x, 8, 8, u64::MAX);
        let any = |r: &Result<drm_svm_accel_submit, i32>, errs: &[i32]| matches!(r, Ok(s) if s.error == 0 || errs.contains(&-s.error));
        let r = sub(read(x, 8));
        check!(
            if ok8 {
                any(&r, &[libc::EFAULT])
            } else {
                r.err() == Some(libc::EINVAL)
            },
            "READ at {x:#x}: {}",
            job_res(&r)
        );
        let r = sub(copy(x, a, 8));
        check!(
            if ok8 {
                any(&r, &[libc::EFAULT])
            } else {
                r.err() == Some(libc::EINVAL)
            },
            "COPY from {x:#x}: {}",
            job_res(&r)
        );
        let r = sub(add(x, 0));
        check!(
            if ok8 {
                any(&r, &[libc::EFAULT, libc::EPERM])
            } else {
                r.err() == Some(libc::EINVAL)
            },
            "ADD 0 at {x:#x}: {}",
            job_res(&r)
        );
        let r = sub(fill(x, 0, 1));
        check!(
            if span_ok(x, 0, 8, u64::MAX) {
                any(&r, &[])
            } else {
                r.err() == Some(libc::EINVAL)
            },
            "FILL of length 0 at {x:#x}: {}",
            job_res(&r)
        );
        if !ok8 {
            let r = sub(fill(x, 8, 1));
            check!(
                r.err() == Some(libc::EINVAL),
                "FILL at {x:#x}: {}",
                job_res(&r)
            );
            let r = sub(copy(a, x, 8));
            check!(
                r.err() == Some(libc::EINVAL),
                "COPY to {x:#x}: {}",
                job_res(&r)
            );
        }
    }
    // Op kind and flags at every bit position.
    for x in hostile_u32() {
        n += 2;
        let r = sub(op(x, a, a, 8, 0));
        check!(
            if (1..=4).contains(&x) {
                any_ok(&r)
            } else {
                r.err() == Some(libc::EINVAL)
            },
            "kind {x:#x}: {}",
            job_res(&r)
        );
        let mut o = read(a, 8);
        o.flags = x;
        let r = sub(o);
        check!(
            if x == 0 {
                any_ok(&r)
            } else {
                r.err() == Some(libc::EINVAL)
            },
            "op flags {x:#x}: {}",
            job_res(&r)
        );
    }

    // BIND flags and pad, on a fresh file each time it must fail; QUERY ignores its input.
    let fresh = Dev::open()?;
    for x in hostile_u32().into_iter().filter(|&x| x != 0) {
        for (flags, pad) in [(x, 0), (0, x)] {
            let mut bd = drm_svm_accel_bind { flags, pad };
            let r = fresh.ioctl(DRM_IOCTL_SVM_ACCEL_BIND as u64, &mut bd);
            check!(
                r == Err(libc::EINVAL),
                "BIND flags {flags:#x} pad {pad:#x}: {:?}",
                r.err().map(ename)
            );
            n += 1;
        }
    }
    fresh
        .bind()
        .map_err(|e| format!("BIND after refused ones: {}", ename(e)))?;
    let mut q = drm_svm_accel_query::default();
    // SAFETY: plain integers: any bytes are a valid value.
    unsafe {
        std::ptr::write_bytes(
            &mut q as *mut drm_svm_accel_query as *mut u8,
            0xff,
            std::mem::size_of_val(&q),
        )
    };
    fresh
        .ioctl(DRM_IOCTL_SVM_ACCEL_QUERY as u64, &mut q)
        .map_err(|e| format!("QUERY with garbage input: {}", ename(e)))?;
    check!(
        q.flags == SVM_ACCEL_QUERY_BOUND
            && q.pte_format == SVM_ACCEL_PTE_X86
            && q.pte_format_name[15] == 0
            && q.jobs == 0
            && q.tlb_entries == 16,
        "QUERY output after garbage input: flags {:#x} format {} jobs {}",
        q.flags,
        q.pte_format,
        q.jobs
    );
    println!(
        "    ({n} hostile requests in {:.1} s)",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A job that ran (with or without a fault error).
fn any_ok(r: &Result<drm_svm_accel_submit, i32>) -> bool {
    matches!(r, Ok(s) if s.error == 0)
}

/// Whether the kernel command line has `arg`.
fn cmdline_has(arg: &str) -> bool {
    std::fs::read_to_string("/proc/cmdline")
        .map(|c| c.split_whitespace().any(|a| a == arg))
        .unwrap_or(false)
}

fn write_file(path: &str, v: &str) -> TResult {
    std::fs::write(path, v).map_err(|e| format!("write {v:?} to {path}: {e}"))
}

fn t_long_job(d: &Dev) -> TResult {
    // One SUBMIT and one PREFETCH of several seconds each over memory that is mapped already,
    // so neither ever sleeps: on a voluntary-preemption kernel (vm-test.sh's second pass,
    // `preempt=voluntary`) only the driver's cond_resched() lets others run, and the
    // soft-lockup detector (here at 2 s: watchdog_thresh 1) would report the CPU stuck.
    let voluntary = cmdline_has("preempt=voluntary");
    let target = if voluntary { 4.0 } else { 0.3 };
    let thresh = std::fs::read_to_string("/proc/sys/kernel/watchdog_thresh")
        .map_err(|e| format!("watchdog_thresh: {e}"))?;
    if voluntary {
        write_file("/proc/sys/kernel/watchdog_thresh", "1")?;
    }
    let res = (|| -> TResult {
        let b = Buf::aligned(8 << 20, HUGE);
        b.advise(0, b.len, libc::MADV_HUGEPAGE)?;
        for (i, w) in b.words().iter().enumerate() {
            w.store(i as u64, Ordering::Relaxed);
        }
        let (a, len) = (b.addr(), b.len as u64);
        let want = b.sum(0, b.len);
        check!(dev_sum(d, a, len)? == want, "first READ");
        let t = Instant::now();
        check!(dev_sum(d, a, len)? == want, "second READ");
        let one = t.elapsed().as_secs_f64();
        // One READ predicts a job of many poorly when the host is busy (the VM's CPUs are
        // threads of a loaded host): a job too short to outlast the detector is sized again
        // from its own time per READ, a few times at most. Every job of any length must pass.
        let mut nops = 1;
        let mut job = 0.0;
        let mut per_op = one;
        for _ in 0..4 {
            nops = ((target / per_op).ceil() as usize).clamp(1, SVM_ACCEL_MAX_OPS as usize);
            let mut ops = vec![read(a, len); nops];
            let t = Instant::now();
            d.run(&mut ops)?;
            job = t.elapsed().as_secs_f64();
            check!(
                ops.iter().all(|o| o.result == want),
                "a long job's READ sums"
            );
            if !voluntary || job > 2.5 || nops == SVM_ACCEL_MAX_OPS as usize {
                break;
            }
            per_op = job / nops as f64;
        }
        // PREFETCH: untouched THP memory (1 GiB when it counts) maps the huge zero page in
        // every 2 MiB; again, the PREFETCH only walks the page table, page by page.
        let zlen: usize = if voluntary { 1 << 30 } else { 64 << 20 };
        let z = Buf::aligned(zlen, HUGE);
        z.advise(0, z.len, libc::MADV_HUGEPAGE)?;
        let mut pf = [0f64; 2];
        for t in pf.iter_mut() {
            let t0 = Instant::now();
            let (r, done) = d.prefetch(z.addr(), zlen as u64, false);
            *t = t0.elapsed().as_secs_f64();
            check!(
                r.is_ok() && done == zlen as u64,
                "PREFETCH {} MiB: {:?} done {done:#x}",
                zlen >> 20,
                r.err().map(ename)
            );
        }
        println!(
            "    (SUBMIT of {nops} READs of 8 MiB: {job:.1} s; PREFETCH {} MiB: {:.1} s, again {:.1} s; voluntary {voluntary})",
            zlen >> 20,
            pf[0],
            pf[1]
        );
        if voluntary {
            // Without teeth the test proves nothing: the job must outlast the detector.
            let long_enough = job > 2.5;
            check!(long_enough, "the long job took only {job:.1} s");
        }
        Ok(())
    })();
    if voluntary {
        write_file("/proc/sys/kernel/watchdog_thresh", thresh.trim())?;
    }
    res
}

const FAULT_DELAY: &str = "/sys/module/svm_accel/parameters/fault_delay_ms";

fn t_kill_stuck_fault() -> TResult {
    // A job whose device fault never gets serviced (the fault worker stalls, as on a fault
    // stuck in FUSE or NFS: the module's fault_delay_ms test hook) must die at SIGKILL at
    // once, and its process exit (the file's release) must not wait for the worker either.
    // When the stall ends, the worker answers the dead job's waiter and the deferred
    // teardown runs: KASAN, kmemleak and the module's leak check watch that.
    check!(
        std::path::Path::new(FAULT_DELAY).exists(),
        "{FAULT_DELAY} missing"
    );
    let mut p = [0i32; 2];
    // SAFETY: plain syscall.
    check!(unsafe { libc::pipe(p.as_mut_ptr()) } == 0);
    write_file(FAULT_DELAY, "60000")?;
    // SAFETY: the child only makes syscalls and _exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let d = Dev::bound().unwrap_or_else(|_| unsafe { libc::_exit(6) });
        let b = Buf::new(PAGE);
        // SAFETY: plain syscalls.
        unsafe { libc::write(p[1], b"r".as_ptr().cast(), 1) };
        let _ = d.submit(&mut [read(b.addr(), 8)]);
        // Only if the job came back while its fault was stalled.
        unsafe { libc::_exit(7) };
    }
    // SAFETY: ours: the child alone keeps the write end, so a child that dies early is EOF.
    unsafe { libc::close(p[1]) };
    let res = (|| -> TResult {
        check!(pid > 0, "fork: {}", ename(errno()));
        let mut c = 0u8;
        // SAFETY: plain syscall into a local.
        let r = unsafe { libc::read(p[0], (&mut c as *mut u8).cast(), 1) };
        check!(r == 1, "the child did not get to SUBMIT (BIND failed?)");
        std::thread::sleep(Duration::from_millis(300));
        let mut st = 0;
        // SAFETY: our child.
        let w = unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) };
        check!(
            w == 0,
            "the job did not wait for its stalled fault (status {st:#x})"
        );
        // SAFETY: our child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let t = Instant::now();
        let mut seen = String::new();
        loop {
            // SAFETY: our child.
            if unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) } == pid {
                break;
            }
            // Where it waits, for the message (the kernel stack while it exits).
            if let Ok(k) = std::fs::read_to_string(format!("/proc/{pid}/stack")) {
                if !k.is_empty() {
                    seen = k;
                }
            }
            check!(
                t.elapsed() < Duration::from_secs(5),
                "the killed job's process has not exited after 5 s; its kernel stack:\n{seen}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        if t.elapsed() > Duration::from_secs(1) {
            println!("    (slow exit; last kernel stack seen:\n{seen})");
        }
        check!(
            libc::WIFSIGNALED(st) && libc::WTERMSIG(st) == libc::SIGKILL,
            "child status {st:#x}"
        );
        println!("    (exited {} ms after SIGKILL)", t.elapsed().as_millis());
        Ok(())
    })();
    write_file(FAULT_DELAY, "0")?;
    // SAFETY: ours.
    unsafe {
        libc::close(p[0]);
        if pid > 0 {
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    }
    res?;
    // Faults are serviced again: a new context faults and reads.
    let d = Dev::bound()?;
    let b = Buf::new(PAGE);
    b.words()[0].store(7, Ordering::Relaxed);
    check!(
        dev_sum(&d, b.addr(), 8)? == 7,
        "device READ after the stall"
    );
    Ok(())
}

// userfaultfd's uAPI (linux/userfaultfd.h), which the libc crate lacks.
#[repr(C)]
#[derive(Default)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct UffdioRange {
    start: u64,
    len: u64,
}
#[repr(C)]
#[derive(Default)]
struct UffdioRegister {
    range: UffdioRange,
    mode: u64,
    ioctls: u64,
}
#[repr(C)]
#[derive(Default)]
struct UffdioCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}
const fn uffd_ioc(dir: u64, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | (0xaa << 8) | nr
}
const UFFDIO_API: u64 = uffd_ioc(3, 0x3f, std::mem::size_of::<UffdioApi>());
const UFFDIO_REGISTER: u64 = uffd_ioc(3, 0x00, std::mem::size_of::<UffdioRegister>());
const UFFDIO_UNREGISTER: u64 = uffd_ioc(2, 0x01, std::mem::size_of::<UffdioRange>());
const UFFDIO_COPY: u64 = uffd_ioc(3, 0x03, std::mem::size_of::<UffdioCopy>());

/// A dmirror READ of `npages` at `addr` through a fresh `/dev/hmm_dmirror0` file, if the
/// front end is loaded: `None` without it.
fn dm_read_once(addr: u64, npages: u64) -> Option<Result<DmCmd, i32>> {
    let p = CString::new(DMIRROR).unwrap();
    // SAFETY: plain open.
    let fd = unsafe { libc::open(p.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    let mut out = vec![0u8; npages as usize * PAGE];
    let r = dm(
        fd,
        0,
        DmCmd {
            addr,
            ptr: out.as_mut_ptr() as u64,
            npages,
            ..DmCmd::default()
        },
    );
    // SAFETY: ours.
    unsafe { libc::close(fd) };
    Some(r)
}

fn t_uffd(d: &Dev) -> TResult {
    // Memory registered with userfaultfd: 6.12's hmm_range_fault() faults without
    // FAULT_FLAG_ALLOW_RETRY, so a missing page would be SIGBUS (and a DEBUG_VM stack dump),
    // never a wait for the handler. The device refuses the whole armed VMA with EFAULT, its
    // present pages too, through both front ends; once unregistered it mirrors it again.
    let b = Buf::new(4 * PAGE);
    let a = b.addr();
    b.words()[0].store(11, Ordering::Relaxed); // page 0 present, pages 1..4 missing
                                               // SAFETY: plain syscall.
    let uffd =
        unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK) } as i32;
    check!(uffd >= 0, "userfaultfd: {}", ename(errno()));
    let res = (|| -> TResult {
        let mut api = UffdioApi {
            api: 0xaa,
            ..Default::default()
        };
        // SAFETY: the struct the request encodes.
        check!(
            unsafe { libc::ioctl(uffd, UFFDIO_API as _, &mut api) } == 0,
            "UFFDIO_API: {}",
            ename(errno())
        );
        let range = UffdioRange {
            start: a,
            len: b.len as u64,
        };
        let mut reg = UffdioRegister {
            range,
            mode: 1, // UFFDIO_REGISTER_MODE_MISSING
            ..Default::default()
        };
        // SAFETY: as above.
        check!(
            unsafe { libc::ioctl(uffd, UFFDIO_REGISTER as _, &mut reg) } == 0,
            "UFFDIO_REGISTER: {}",
            ename(errno())
        );
        for (o, what) in [
            (read(a, 8), "READ of a present page"),
            (read(a + PAGE as u64, 8), "READ of a missing page"),
            (fill(a + 2 * PAGE as u64, 8, 1), "FILL of a missing page"),
        ] {
            let s = d.submit(&mut [o]).map_err(ename)?;
            check!(
                s.error == -libc::EFAULT,
                "{what} under userfaultfd: {}",
                ename(-s.error)
            );
        }
        let (r, done) = d.prefetch(a, b.len as u64, true);
        check!(
            r == Err(libc::EFAULT) && done == 0,
            "PREFETCH under userfaultfd: {:?} done {done}",
            r.err().map(ename)
        );
        if let Some(r) = dm_read_once(a, 4) {
            check!(
                r.err() == Some(libc::EFAULT),
                "dmirror READ under userfaultfd: {:?}",
                r.map(|_| ()).map_err(ename)
            );
        }
        // Resolve page 1 as a handler would, then unregister: mirrored again, data intact.
        let src = vec![5u64; PAGE / 8];
        let mut cp = UffdioCopy {
            dst: a + PAGE as u64,
            src: src.as_ptr() as u64,
            len: PAGE as u64,
            ..Default::default()
        };
        // SAFETY: as above; `src` is a readable page.
        check!(
            unsafe { libc::ioctl(uffd, UFFDIO_COPY as _, &mut cp) } == 0,
            "UFFDIO_COPY: {}",
            ename(errno())
        );
        let mut r = range;
        // SAFETY: as above.
        check!(
            unsafe { libc::ioctl(uffd, UFFDIO_UNREGISTER as _, &mut r) } == 0,
            "UFFDIO_UNREGISTER: {}",
            ename(errno())
        );
        check!(
            dev_sum(d, a, 2 * PAGE as u64)? == 11 + 5 * (PAGE / 8) as u64,
            "device READ after unregistering"
        );
        Ok(())
    })();
    // SAFETY: ours.
    unsafe { libc::close(uffd) };
    res
}

fn t_secretmem(d: &Dev) -> TResult {
    // memfd_secret(2) pages are taken out of the kernel's direct map: hmm_range_fault()
    // returns them (GUP would refuse), and the software device's kmap of one would oops with
    // the TLB lock held. Both front ends refuse them with EFAULT.
    // SAFETY: plain syscalls.
    let fd = unsafe { libc::syscall(libc::SYS_memfd_secret, libc::O_CLOEXEC) } as i32;
    check!(
        fd >= 0,
        "memfd_secret: {} (the test kernel has SECRETMEM=y)",
        ename(errno())
    );
    let len = 2 * PAGE;
    // SAFETY: our fd.
    let m = unsafe {
        check!(
            libc::ftruncate(fd, len as i64) == 0,
            "ftruncate: {}",
            ename(errno())
        );
        libc::mmap(
            null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    let res = (|| -> TResult {
        check!(
            m != libc::MAP_FAILED,
            "mmap memfd_secret: {}",
            ename(errno())
        );
        let a = m as u64;
        // SAFETY: our mapping: the CPU faults the secret pages in.
        unsafe {
            *(m as *mut u64) = 0x5ec;
            *(m as *mut u64).add(PAGE / 8) = 0x5ec;
        }
        for (o, what) in [
            (read(a, 8), "READ"),
            (fill(a, 8, 1), "FILL"),
            (copy(a, a + PAGE as u64, 8), "COPY"),
            (add(a, 1), "ADD"),
        ] {
            let s = d.submit(&mut [o]).map_err(ename)?;
            check!(
                s.error == -libc::EFAULT && s.fault_addr == a,
                "{what} of memfd_secret memory: {} at {:#x}",
                ename(-s.error),
                s.fault_addr
            );
        }
        for write in [false, true] {
            let (r, done) = d.prefetch(a, len as u64, write);
            check!(
                r == Err(libc::EFAULT) && done == 0,
                "PREFETCH (write {write}) of memfd_secret memory: {:?}",
                r.err().map(ename)
            );
        }
        if let Some(r) = dm_read_once(a, 2) {
            check!(
                r.err() == Some(libc::EFAULT),
                "dmirror READ of memfd_secret memory: {:?}",
                r.map(|_| ()).map_err(ename)
            );
        }
        // SAFETY: our mapping.
        check!(
            unsafe { *(m as *const u64) } == 0x5ec,
            "the CPU's secret changed"
        );
        Ok(())
    })();
    // SAFETY: ours.
    unsafe {
        if m != libc::MAP_FAILED {
            libc::munmap(m, len);
        }
        libc::close(fd);
    }
    res
}

fn t_dma_mask(d: &Dev) -> TResult {
    // The device's PTEs hold 52 address bits (x86-64 format): its DMA mask must not be wider,
    // or dma_map_page() could return an address the PTE truncates.
    let q = d.query()?;
    check!(
        q.pte_format == SVM_ACCEL_PTE_X86,
        "PTE format {}",
        q.pte_format
    );
    let p = "/sys/bus/platform/devices/svm_accel/dma_mask_bits";
    let bits = std::fs::read_to_string(p).map_err(|e| format!("{p}: {e}"))?;
    check!(
        bits.trim() == "52",
        "DMA mask {} bits, the x86-64 PTE holds 52",
        bits.trim()
    );
    Ok(())
}

const USAGE: &str =
    "usage: svm-vmtests [--storm] [--only NAME,NAME...] [--qbench N] [--threads N] [--seconds S]
                   [--mib M] [--seed X] [--churn munmap,mprotect,fork|none] [--placement] [--peer]
  no --storm: every test, the storm last (with these options)
  --placement: the storm under a placement policy (MADVISE: device memory, device atomics)
  --peer:     the peer device (accel1) runs the odd slices' jobs and half the zone's
  --storm:    only the storm (the main job: scripts/vm-storm.sh)
  --only:     only the named tests (scripts/vm-test.sh's preempt=voluntary pass)
  --qbench N: only the queue benchmark, N jobs each way (scripts/vm-qbench.sh)
  --qstorm S: only the queue storm, for S seconds (the suite runs 5)";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut cfg = storm::StormCfg::default();
    let mut storm_only = false;
    let mut only: Option<Vec<String>> = None;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--storm" => {
                storm_only = true;
                i += 1;
            }
            "--qbench" if i + 1 < args.len() => {
                let jobs = args[i + 1].parse().unwrap_or(20_000);
                match queues::qbench(jobs, 7) {
                    Ok(()) => std::process::exit(0),
                    Err(e) => {
                        eprintln!("qbench: {e}");
                        std::process::exit(1);
                    }
                }
            }
            "--qstorm" if i + 1 < args.len() => {
                let secs = args[i + 1].parse().unwrap_or(30);
                let r = queues::t_queue_storm(secs);
                println!(
                    "queue storm: {}",
                    r.as_ref().map_or_else(|e| e.as_str(), |_| "ok")
                );
                std::process::exit(if r.is_ok() { 0 } else { 1 });
            }
            "--only" if i + 1 < args.len() => {
                only = Some(args[i + 1].split(',').map(str::to_string).collect());
                i += 2;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return;
            }
            _ => match cfg.parse_opt(&args, &mut i) {
                Ok(true) => {}
                Ok(false) => {
                    eprintln!("unknown argument {:?}\n{USAGE}", args[i]);
                    std::process::exit(2);
                }
                Err(e) => {
                    eprintln!("{e}\n{USAGE}");
                    std::process::exit(2);
                }
            },
        }
    }
    let t0 = Instant::now();
    let mut pass = 0;
    let mut fail = 0;
    let mut run = |name: &str, f: &dyn Fn() -> TResult| {
        if only.as_ref().is_some_and(|o| !o.iter().any(|n| n == name)) {
            return;
        }
        let t = Instant::now();
        let r = f();
        let ms = t.elapsed().as_millis();
        match r {
            Ok(()) => {
                pass += 1;
                println!("ok   {name} ({ms} ms)");
            }
            Err(e) => {
                fail += 1;
                println!("FAIL {name} ({ms} ms): {e}");
            }
        }
        let _ = std::io::stdout().flush();
    };

    if storm_only {
        run("storm", &|| storm::run(&cfg));
    } else {
        suite(&mut run, &cfg);
    }
    println!("time: {:.1} s", t0.elapsed().as_secs_f64());
    println!("{pass} passed, {fail} failed");
    let _ = std::io::stdout().flush();
    std::process::exit(if fail == 0 { 0 } else { 1 });
}

// ---- the dmirror front end (svm_accel dmirror=1; hmm-tests covers the rest) ---------

const DMIRROR: &str = "/dev/hmm_dmirror0";

/// One dmirror command: Ok(cmd as written back) or Err(errno).
fn dm(fd: i32, nr: u64, c: DmCmd) -> Result<DmCmd, i32> {
    let mut c = c;
    // SAFETY: plain ioctl on a command struct.
    let r = unsafe { libc::ioctl(fd, dm_iowr(nr) as libc::c_ulong, &mut c) };
    if r == 0 {
        Ok(c)
    } else {
        Err(errno())
    }
}

/// `move_pages(2)` of `pages` (page addresses) of this process to `node`; pages that cannot
/// move (busy, already there) are fine.
fn move_pages(pages: &[u64], node: i32) -> TResult {
    let ptrs: Vec<*mut libc::c_void> = pages.iter().map(|&a| a as *mut libc::c_void).collect();
    let nodes = vec![node; pages.len()];
    let mut status = vec![0i32; pages.len()];
    // SAFETY: arrays of `pages.len()` entries each; pid 0 is ourselves; MPOL_MF_MOVE (2).
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_pages,
            0,
            pages.len(),
            ptrs.as_ptr(),
            nodes.as_ptr(),
            status.as_mut_ptr(),
            2,
        )
    };
    check!(r >= 0, "move_pages: {}", ename(errno()));
    Ok(())
}

/// hmm-tests' `anon_write_child` flake (issue 9): between a dmirror WRITE's fault round and
/// its copy, an invalidation from outside (compaction, khugepaged, NUMA migration) may take
/// freshly faulted pages away again; faulting them in once more is a retry, not a second
/// device fault. Here a thread migrates the buffer between the two fake NUMA nodes
/// (`numa=fake=2`) while WRITE and READ commands run: `faults` must stay at most 1 per
/// command, and every word must arrive.
fn t_dmirror_refault_under_migration() -> TResult {
    check!(
        std::path::Path::new("/sys/devices/system/node/node1").exists(),
        "no second NUMA node: the VM boots with numa=fake=2"
    );
    let p = CString::new(DMIRROR).unwrap();
    // SAFETY: plain open.
    let fd = unsafe { libc::open(p.as_ptr(), libc::O_RDWR) };
    check!(fd >= 0, "open {DMIRROR}: {}", ename(errno()));
    const NP: usize = 256;
    let b = Arc::new(Buf::aligned(NP * PAGE, HUGE));
    let stop = Arc::new(AtomicBool::new(false));
    let migrator = {
        let (b, stop) = (b.clone(), stop.clone());
        std::thread::spawn(move || -> Result<u64, String> {
            // A few pages at a time, then a pause: migrating the whole buffer back to back
            // would be a livelock no device can get through (each pass takes away pages a
            // command just faulted in, until its bound of rounds ends it with EBUSY minutes
            // later under TCG), not the occasional outside invalidation this test is about.
            let mut n = 0u64;
            let mut x = 0x2545_f491_4f6c_dd1du64;
            while !stop.load(Ordering::Relaxed) {
                let pages: Vec<u64> = (0..8)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        b.addr() + (x % NP as u64) * PAGE as u64
                    })
                    .collect();
                move_pages(&pages, (n % 2) as i32)?;
                n += 1;
                std::thread::sleep(Duration::from_millis(3));
            }
            Ok(n)
        })
    };
    let mut src = vec![0u64; NP * PAGE / 8];
    let mut back = vec![0u64; NP * PAGE / 8];
    let mut worst = 0;
    let mut res: TResult = Ok(());
    let t0 = Instant::now();
    for round in 0..40u64 {
        if t0.elapsed() > Duration::from_secs(60) {
            println!("    (stopped after {round} rounds: 60 s)");
            break;
        }
        for (i, w) in src.iter_mut().enumerate() {
            *w = round << 32 | i as u64;
        }
        let cmd = DmCmd {
            addr: b.addr(),
            ptr: src.as_mut_ptr() as u64,
            npages: NP as u64,
            ..DmCmd::default()
        };
        let r = dm(fd, 1, cmd).and_then(|w| {
            dm(
                fd,
                0,
                DmCmd {
                    ptr: back.as_mut_ptr() as u64,
                    ..cmd
                },
            )
            .map(|r| (w, r))
        });
        match r {
            Ok((w, r)) => {
                worst = worst.max(w.faults).max(r.faults);
                if w.faults > 1 || r.faults > 1 || w.cpages != NP as u64 {
                    res = Err(format!(
                        "round {round}: WRITE faults {} cpages {}, READ faults {}",
                        w.faults, w.cpages, r.faults
                    ));
                    break;
                }
                if back != src
                    || b.words()[NP * PAGE / 8 - 1].load(Ordering::Relaxed)
                        != src[NP * PAGE / 8 - 1]
                {
                    res = Err(format!("round {round}: data lost"));
                    break;
                }
            }
            Err(e) => {
                res = Err(format!("round {round}: {}", ename(e)));
                break;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let moves = migrator.join().unwrap()?;
    // SAFETY: our fd.
    unsafe { libc::close(fd) };
    println!("    ({moves} move_pages passes of 8 pages, most faults per command {worst})");
    res
}

/// The front end's own contract (driver/dmirror.rs) beyond what hmm-tests asserts: every
/// bad command is refused with an errno, a command
/// from another mm with EXDEV; good ones still work after all that.
fn t_dmirror_bad_input() -> TResult {
    let p = CString::new(DMIRROR).unwrap();
    // SAFETY: plain open.
    let fd = unsafe { libc::open(p.as_ptr(), libc::O_RDWR) };
    check!(fd >= 0, "open {DMIRROR}: {}", ename(errno()));
    let b = Buf::new(16 << 10);
    let mut out = vec![0u8; 16 << 10];
    let good = DmCmd {
        addr: b.addr(),
        ptr: out.as_mut_ptr() as u64,
        npages: 4,
        ..DmCmd::default()
    };
    let expect = |what: &str, r: Result<DmCmd, i32>, e: i32| -> TResult {
        match r {
            Err(got) if got == e => Ok(()),
            Err(got) => Err(format!("{what}: {} (expected {})", ename(got), ename(e))),
            Ok(_) => Err(format!("{what}: succeeded (expected {})", ename(e))),
        }
    };
    let (read, write, snapshot) = (0, 1, 4);
    expect(
        "misaligned addr",
        dm(
            fd,
            read,
            DmCmd {
                addr: good.addr + 8,
                ..good
            },
        ),
        libc::EINVAL,
    )?;
    expect(
        "0 pages",
        dm(fd, read, DmCmd { npages: 0, ..good }),
        libc::EINVAL,
    )?;
    expect(
        "wrapping",
        dm(
            fd,
            read,
            DmCmd {
                npages: u64::MAX >> 12,
                ..good
            },
        ),
        libc::EINVAL,
    )?;
    expect(
        "over 1 GiB",
        dm(
            fd,
            read,
            DmCmd {
                npages: (1 << 18) + 1,
                ..good
            },
        ),
        libc::EINVAL,
    )?;
    expect(
        "kernel address",
        dm(
            fd,
            read,
            DmCmd {
                addr: 0xffff_8880_0000_0000,
                ..good
            },
        ),
        libc::EINVAL,
    )?;
    expect(
        "hole",
        dm(
            fd,
            read,
            DmCmd {
                addr: 4096,
                npages: 1,
                ..good
            },
        ),
        libc::EFAULT,
    )?;
    expect(
        "unwritable ptr",
        dm(fd, read, DmCmd { ptr: 8, ..good }),
        libc::EFAULT,
    )?;
    expect(
        "unreadable ptr",
        dm(fd, write, DmCmd { ptr: 8, ..good }),
        libc::EFAULT,
    )?;
    expect(
        "snapshot, unwritable ptr",
        dm(fd, snapshot, DmCmd { ptr: 8, ..good }),
        libc::EFAULT,
    )?;
    expect(
        "EXCLUSIVE of a hole",
        dm(
            fd,
            5,
            DmCmd {
                addr: 4096,
                npages: 1,
                ..good
            },
        ),
        libc::EBUSY,
    )?;
    check!(
        dm(fd, 6, good).is_ok(),
        "CHECK_EXCLUSIVE of untouched memory"
    );
    expect(
        "EXCLUSIVE, unwritable ptr",
        dm(fd, 5, DmCmd { ptr: 8, ..good }),
        libc::EFAULT,
    )?;
    // As test_hmm's: the pages were handed over before the read back failed.
    expect("CHECK_EXCLUSIVE after it", dm(fd, 6, good), libc::EPERM)?;
    expect(
        "MIGRATE_TO_DEV of a hole",
        dm(
            fd,
            2,
            DmCmd {
                addr: 4096,
                npages: 1,
                ..good
            },
        ),
        libc::EINVAL,
    )?;
    expect("unknown command", dm(fd, 8, good), libc::EINVAL)?;
    // SAFETY: a NULL argument: the driver must fault, not oops.
    let r = unsafe { libc::ioctl(fd, dm_iowr(read) as libc::c_ulong, 0usize) };
    check!(
        r < 0 && errno() == libc::EFAULT,
        "NULL cmd: {}",
        ename(errno())
    );
    check!(
        dm(fd, 7, good).is_ok(),
        "RELEASE: nothing to release, succeeds"
    );
    // The good command works, once, with one fault round, and sees the CPU's data.
    for (i, w) in b.words().iter().enumerate() {
        w.store(i as u64, Ordering::Relaxed);
    }
    let c = dm(fd, read, good).map_err(|e| format!("READ: {}", ename(e)))?;
    check!(
        c.cpages == 4 && c.faults == 1,
        "READ: cpages {} faults {}",
        c.cpages,
        c.faults
    );
    for (i, c) in out.chunks_exact(8).enumerate() {
        let v = u64::from_ne_bytes(c.try_into().unwrap());
        check!(v == i as u64, "READ: word {i} is {v}");
    }
    let c = dm(fd, read, good).map_err(|e| format!("READ again: {}", ename(e)))?;
    check!(c.faults == 0, "READ again faulted {} times", c.faults);
    // A child may not use the parent's mirror (another mm).
    // SAFETY: the child only makes an ioctl, then _exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let code = match dm(fd, read, good) {
            Err(e) if e == libc::EXDEV => 0,
            _ => 3,
        };
        // SAFETY: leave without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    check!(pid > 0, "fork: {}", ename(errno()));
    let mut st = 0;
    // SAFETY: our child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    check!(
        libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
        "child: status {st:#x} (3: READ through the parent's mirror was not EXDEV)"
    );
    // SAFETY: our fd.
    check!(unsafe { libc::close(fd) } == 0, "close: {}", ename(errno()));
    Ok(())
}

fn t_dmirror_hostile() -> TResult {
    // Every field of a dmirror command at every bit position: npages (2^52 + 1 pages once
    // shifted to 4 KiB and overran the bounce buffer), addr (kernel, non-canonical,
    // unaligned) and ptr; refused before any allocation when bad, bounded by the memory
    // really there otherwise (16 pages before a guard page, a user buffer of 16 pages before
    // one, SNAPSHOT's 64 bytes before one).
    let p = CString::new(DMIRROR).unwrap();
    // SAFETY: plain open.
    let fd = unsafe { libc::open(p.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    check!(fd >= 0, "open {DMIRROR}: {}", ename(errno()));
    let res = (|| -> TResult {
        const NP: u64 = 16;
        let b = Guarded::new(NP as usize * PAGE)?;
        let out = Guarded::new(NP as usize * PAGE)?;
        let a = b.addr();
        let snap = out.addr() + (NP as usize * PAGE) as u64 - 64;
        let (read, write, snapshot, release, migrate) = (0u64, 1, 4, 7, 2);
        let hv = hostile_u64();
        let t0 = Instant::now();
        let mut n = 0u64;
        let fmt = |r: &Result<DmCmd, i32>| match r {
            Ok(c) => format!("ok (cpages {})", c.cpages),
            Err(e) => ename(*e),
        };
        let max_pages = 1u64 << 18;
        let valid = |addr: u64, np: u64| {
            addr.is_multiple_of(4096)
                && (1..=max_pages).contains(&np)
                && addr.checked_add(np << 12).is_some_and(|e| e <= TASK_TOP)
        };
        for &np in &hv {
            for (nr, ptr, room) in [
                (read, out.addr(), NP),
                (write, out.addr(), NP),
                (snapshot, snap, 64),
                (release, out.addr(), u64::MAX),
                (migrate, out.addr(), NP),
            ] {
                n += 1;
                let c = DmCmd {
                    addr: a,
                    ptr,
                    npages: np,
                    ..DmCmd::default()
                };
                let t = Instant::now();
                let r = dm(fd, nr, c);
                let want = if !valid(a, np) {
                    Err(libc::EINVAL)
                } else if nr == migrate && np > NP {
                    // Past the buffer's end: the guard page, no readable VMA there.
                    Err(libc::EINVAL)
                } else if np > room || ((nr == read || nr == write) && np > NP) {
                    Err(libc::EFAULT)
                } else {
                    Ok(())
                };
                check!(
                    r.map(|_| ()) == want,
                    "command {nr} npages {np:#x}: {} (want {:?})",
                    fmt(&r),
                    want.err().map(ename)
                );
                if let Ok(c) = r {
                    check!(
                        nr != read && nr != write || c.cpages == np,
                        "command {nr} npages {np}: cpages {}",
                        c.cpages
                    );
                }
                // Cheap checks before expensive work: no bounce buffer of the command's
                // size, no copy of it.
                check!(
                    t.elapsed() < Duration::from_millis(500),
                    "command {nr} npages {np:#x} took {:?}",
                    t.elapsed()
                );
            }
        }
        // addr at every bit position; WRITE only where nothing can be written.
        for &x in &hv {
            n += 3;
            let c = DmCmd {
                addr: x,
                ptr: out.addr(),
                npages: 1,
                ..DmCmd::default()
            };
            let r = dm(fd, read, c);
            check!(
                if valid(x, 1) {
                    matches!(r, Ok(_) | Err(libc::EFAULT))
                } else {
                    r.err() == Some(libc::EINVAL)
                },
                "READ at {x:#x}: {}",
                fmt(&r)
            );
            let r = dm(fd, snapshot, DmCmd { ptr: snap, ..c });
            check!(
                if valid(x, 1) {
                    r.is_ok()
                } else {
                    r.err() == Some(libc::EINVAL)
                },
                "SNAPSHOT at {x:#x}: {}",
                fmt(&r)
            );
            if !valid(x, 1) {
                let t = Instant::now();
                let r = dm(
                    fd,
                    write,
                    DmCmd {
                        npages: max_pages,
                        ..c
                    },
                );
                check!(
                    r.err() == Some(libc::EINVAL) && t.elapsed() < Duration::from_millis(100),
                    "WRITE of 1 GiB at {x:#x}: {} after {:?} (want EINVAL at once)",
                    fmt(&r),
                    t.elapsed()
                );
            }
        }
        // ptr at every bit position; READ and SNAPSHOT (which write it) only where nothing
        // can be written: past TASK_SIZE or in the unmapped first 64 KiB.
        for &x in &hv {
            n += 1;
            let c = DmCmd {
                addr: a,
                ptr: x,
                npages: 1,
                ..DmCmd::default()
            };
            let r = dm(fd, write, c);
            check!(
                matches!(r, Ok(_) | Err(libc::EFAULT)),
                "WRITE from ptr {x:#x}: {}",
                fmt(&r)
            );
            if x < 64 << 10 || x.checked_add(4096).is_none_or(|e| e > TASK_TOP) {
                n += 2;
                for nr in [read, snapshot] {
                    let r = dm(fd, nr, c);
                    check!(
                        r.err() == Some(libc::EFAULT),
                        "command {nr} to ptr {x:#x}: {}",
                        fmt(&r)
                    );
                }
            }
        }
        // The good command still works and reads what the CPU wrote.
        for (i, w) in b.words().iter().enumerate() {
            w.store(i as u64, Ordering::Relaxed);
        }
        let c = dm(
            fd,
            read,
            DmCmd {
                addr: a,
                ptr: out.addr(),
                npages: NP,
                ..DmCmd::default()
            },
        )
        .map_err(|e| format!("good READ: {}", ename(e)))?;
        check!(c.cpages == NP);
        check!(
            out.words()[..NP as usize * PAGE / 8]
                .iter()
                .enumerate()
                .all(|(i, w)| w.load(Ordering::Relaxed) == i as u64),
            "good READ: wrong data"
        );
        println!(
            "    ({n} hostile commands in {:.1} s)",
            t0.elapsed().as_secs_f64()
        );
        Ok(())
    })();
    // SAFETY: ours.
    unsafe { libc::close(fd) };
    res
}

/// The engine's baseline configurations in the kernel (module parameters `range_shift` and
/// `lock_scope`, read at BIND): drm_gpusvm's 512 MiB notifiers under an rwsem, test_hmm's one
/// notifier per mm under a mutex. A context bound under each reports its range size and runs
/// the functional tests that hold for any granularity; values the engine refuses fail BIND
/// with `EINVAL`; the defaults are restored whatever happens.
fn t_baseline_configs() -> TResult {
    const P: &str = "/sys/module/svm_accel/parameters";
    let set = |name: &str, v: u32| -> TResult {
        std::fs::write(format!("{P}/{name}"), v.to_string())
            .map_err(|e| format!("write {name}={v}: {e}"))
    };
    let run = || -> TResult {
        for (shift, scope) in [(29u32, 2u32), (47, 1), (16, 0)] {
            set("range_shift", shift)?;
            set("lock_scope", scope)?;
            let d = Arc::new(Dev::bound()?);
            let q = d.query()?;
            check!(
                q.range_shift == shift,
                "QUERY range_shift {} under range_shift={shift}",
                q.range_shift
            );
            let with = |t: &str, r: TResult| {
                r.map_err(|e| format!("{t} (range_shift {shift}, lock_scope {scope}): {e}"))
            };
            with("fill_cpu_reads", t_fill_cpu_reads(&d))?;
            with("copy", t_copy(&d))?;
            with("mprotect_eperm", t_mprotect_eperm(&d))?;
            with("madv_dontneed", t_madv_dontneed(&d))?;
            with("fork", t_fork(&d))?;
            with("concurrent", t_concurrent(&d))?;
        }
        for (name, bad) in [
            ("range_shift", 15u32),
            ("range_shift", 48),
            ("lock_scope", 3),
        ] {
            set(name, bad)?;
            let r = Dev::open()?.bind();
            check!(
                r == Err(libc::EINVAL),
                "BIND with {name}={bad}: {:?}, expected EINVAL",
                r.map_err(ename)
            );
            set("range_shift", 21)?;
            set("lock_scope", 0)?;
        }
        Ok(())
    };
    let r = run();
    let restored = set("range_shift", 21).and(set("lock_scope", 0));
    r?;
    restored
}

/// Every test, in order; the storm last.
fn suite(run: &mut dyn FnMut(&str, &dyn Fn() -> TResult), cfg: &storm::StormCfg) {
    run("query_unbound", &t_query_unbound);
    run("unbound_refused", &t_unbound_refused);
    run("bind_twice", &t_bind_twice);
    run("bad_fd", &t_bad_fd);
    run("madvise_bad_input", &placement::t_madvise_bad_input);
    run("madvise_location", &placement::t_madvise_location);
    run("madvise_atomic", &placement::t_madvise_atomic);
    run("prefetch_to", &placement::t_prefetch_to);
    run("peer_devices", &peer::t_peer_devices);
    run("peer_evict", &peer::t_peer_evict);
    run("peer_evict_race", &peer::t_peer_evict_race);
    run("peer_ksm_fork", &peer::t_peer_ksm_fork);
    if std::path::Path::new(DMIRROR).exists() {
        run("dmirror_bad_input", &t_dmirror_bad_input);
        run("dmirror_hostile", &t_dmirror_hostile);
        run(
            "dmirror_refault_under_migration",
            &t_dmirror_refault_under_migration,
        );
        run("devmem_migrate", &devmem::t_devmem_migrate);
        run("devmem_fork_cow", &devmem::t_devmem_fork_cow);
        run(
            "devmem_mprotect_munmap_exit",
            &devmem::t_devmem_mprotect_munmap_exit,
        );
        run("devmem_two_devices", &devmem::t_devmem_two_devices);
        run("devmem_ksm", &devmem::t_devmem_ksm);
        run("devmem_evict", &devmem::t_devmem_evict);
        run("devmem_storm", &|| devmem::t_devmem_storm(5));
        run("exclusive", &exclusive::t_exclusive);
        run("exclusive_storm", &|| exclusive::t_exclusive_storm(4));
        run("ksm", &distro::t_ksm);
        run("fd_passing", &distro::t_fd_passing);
        run("fail_nth", &distro::t_fail_nth);
        run("dma_aliases", &distro::t_dma_aliases);
        run("dma_share_modes", &distro::t_dma_share_modes);
        run("hostile_faults_bounded", &distro::t_hostile_faults_bounded);
    }
    // Before the long-lived bound file below: `unplug` rebinds the device, which gets its
    // accel node back only when no file of the old one is open.
    run("memcg", &resources::t_memcg);
    run("baseline_configs", &t_baseline_configs);
    run("table_memory", &resources::t_table_memory);
    run("bind_many_vmas", &resources::t_bind_many_vmas);
    run("unplug", &resources::t_unplug);
    match Dev::bound() {
        Ok(d) => {
            let d = Arc::new(d);
            run("fill_cpu_reads", &|| t_fill_cpu_reads(&d));
            run("cpu_writes_dev_reads", &|| t_cpu_writes_dev_reads(&d));
            run("copy", &|| t_copy(&d));
            run("add", &|| t_add(&d));
            run("munmap_efault", &|| t_munmap_efault(&d));
            run("gc_after_munmap", &|| t_gc_after_munmap(&d));
            run("mprotect_eperm", &|| t_mprotect_eperm(&d));
            run("madv_dontneed", &|| t_madv_dontneed(&d));
            run("fork", &|| t_fork(&d));
            run("fork_cow_while_child_lives", &|| {
                t_fork_cow_while_child_lives(&d)
            });
            run("madv_free_pageout", &|| t_madv_free_pageout(&d));
            run("swap", &|| t_swap(&d));
            run("shared_alias", &|| t_shared_alias(&d));
            run("pfnmap", &|| t_pfnmap(&d));
            run("zero_pages", &|| t_zero_pages(&d));
            run("thp", &|| t_thp(&d));
            run("prefetch", &|| t_prefetch(&d));
            run("bad_input", &|| t_bad_input(&d));
            run("bad_overflow", &|| t_bad_overflow(&d));
            run("bad_submit", &|| t_bad_submit(&d));
            run("hostile_accel", &|| t_hostile_accel(&d));
            run("mprotect_up", &|| t_mprotect_up(&d));
            run("devmem", &|| t_devmem(&d));
            run("uffd", &|| t_uffd(&d));
            run("secretmem", &|| t_secretmem(&d));
            run("dma_mask", &|| t_dma_mask(&d));
            run("long_job", &|| t_long_job(&d));
            run("kill_stuck_fault", &t_kill_stuck_fault);
            run("close_live", &|| t_close_live(&d));
            run("exit_with_live", &|| t_exit_with_live(&d));
            run("kill_during_jobs", &|| t_kill_during_jobs(&d));
            run("prefetch_race", &|| t_prefetch_race(&d));
            run("concurrent", &|| t_concurrent(&d));
            run("dma_accounting", &|| t_dma_accounting(&d));
            run("tracepoints", &|| t_tracepoints(&d));
            run("debugfs", &|| t_debugfs(&d));
            run("queue_basic", &|| queues::t_queue_basic(&d));
            run("queue_bad_input", &|| queues::t_queue_bad_input(&d));
            run("queue_high_priority", &|| queues::t_queue_high_priority(&d));
            run("queue_error_state", &|| queues::t_queue_error_state(&d));
            run("queue_munmap_mprotect", &|| {
                queues::t_queue_munmap_mprotect(&d)
            });
            run("queue_migrate_swap", &|| queues::t_queue_migrate_swap(&d));
            run("queue_fork", &|| queues::t_queue_fork(&d));
            run("queue_destroy_running", &|| {
                queues::t_queue_destroy_running(&d)
            });
            run("queue_suspend_resume", &|| {
                queues::t_queue_suspend_resume(&d)
            });
            run("queue_many_faulting", &|| queues::t_queue_many_faulting(&d));
            run("queue_exit_close_kill", &queues::t_queue_exit_close_kill);
            run("queue_wait_signal", &|| queues::t_queue_wait_signal(&d));
            run("queue_tracepoints", &|| queues::t_queue_tracepoints(&d));
            run("queue_storm", &|| queues::t_queue_storm(5));
            run("queue_bench_short", &|| queues::t_queue_bench_short(&d));
            if let Ok(q) = d.query() {
                println!(
                    "stats: jobs {} device_faults {} batches {} faults {} errors {} pages {} huge {} dma_unmapped {} invalidations {} (hit {}) flushes {} ranges +{} -{} races {} gc {} tlb hit/miss {}/{}",
                    q.jobs, q.device_faults, q.fault_batches, q.faults, q.fault_errors, q.pages_mapped,
                    q.huge_mapped, q.dma_unmapped, q.invalidations, q.invalidations_hit, q.tlb_flushes,
                    q.ranges_created, q.ranges_removed, q.range_races, q.gc_removed, q.tlb_hits, q.tlb_misses
                );
            }
            // `d` stays open with live mappings: process exit releases it (mm first, then file).
            std::mem::forget(d);
        }
        Err(e) => run("bind", &|| Err(e.clone())),
    }
    // The storm under a placement policy (device memory preferred, device atomics), with the
    // peer device running half the slices over accel0's memory: 5 s.
    let placed = storm::StormCfg {
        seconds: 5.0,
        placement: true,
        peer: true,
        ..cfg.clone()
    };
    run("storm_placement", &|| storm::run(&placed));
    // Last: its own file and buffer, several seconds of churn.
    run("storm", &|| storm::run(cfg));
}
