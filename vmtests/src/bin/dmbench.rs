//! dmbench: the same workload through the dmirror uAPI (`lib/test_hmm_uapi.h`) of whichever
//! driver owns `/dev/hmm_dmirror0` -- `test_hmm.ko`, or svm_accel loaded with `dmirror=1` --
//! so the two can be compared side by side in one VM run (scripts/vm-run.sh prints the
//! table). Every result is one line:
//!
//! `DMBENCH driver=<name> metric=<metric> value=<median> unit=<unit> trials=<n>`
//!
//! `hmm_range_fault()` calls are counted by the hmmcount kprobe module when it is loaded
//! (`/sys/module/hmmcount/parameters/calls`); a retry after an invalidation is one more
//! call, so calls with an unrelated munmap storm minus calls without it are the storm's
//! false retries, measured the same way for both drivers.
//!
//! With svm_accel loaded, the device's own execution path is measured too: FILL jobs through
//! `/dev/accel/accel0`'s SUBMIT, every access through the device TLB, from one thread and
//! from two threads on disjoint buffers of one context (test_hmm has no such path).
//!
//! usage: dmbench --driver NAME [--mib M] [--trials N]

#[path = "../dmirror_uapi.rs"]
mod dmirror_uapi;

mod uapi {
    #![allow(
        non_camel_case_types,
        non_upper_case_globals,
        non_snake_case,
        dead_code
    )]
    include!(concat!(env!("OUT_DIR"), "/uapi.rs"));
}

use dmirror_uapi::{DmCmd as Cmd, HMM_DMIRROR_READ};
use std::fs;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Instant;

const PAGE: usize = 4096;
const M2: usize = 2 << 20;

const COUNTER: &str = "/sys/module/hmmcount/parameters/calls";
const HMM_NS: &str = "/sys/module/hmmcount/parameters/ns";

fn calls() -> Option<u64> {
    fs::read_to_string(COUNTER).ok()?.trim().parse().ok()
}

/// ns the driver spent in its fault service: svm_accel's own count for its dmirror front
/// end, or hmmcount's probe on test_hmm's `dmirror_fault()`.
fn engine_ns() -> Option<u64> {
    fs::read_to_string("/sys/module/svm_accel/parameters/fault_ns")
        .or_else(|_| fs::read_to_string("/sys/module/hmmcount/parameters/dmirror_fault_ns"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// ns spent inside `hmm_range_fault()` since hmmcount was loaded (all callers).
fn hmm_ns() -> Option<u64> {
    fs::read_to_string(HMM_NS).ok()?.trim().parse().ok()
}

fn die(msg: &str) -> ! {
    eprintln!("dmbench: {msg}: {}", std::io::Error::last_os_error());
    std::process::exit(1)
}

/// An anonymous private mapping, `align`-aligned, CPU-written so every page is a real page
/// (the device reads memory, not the zero page).
struct Buf {
    map: *mut u8,
    map_len: usize,
    ptr: *mut u8,
    len: usize,
}

// SAFETY: a plain memory region; the threads using it only read it through the device.
unsafe impl Send for Buf {}
// SAFETY: as above.
unsafe impl Sync for Buf {}

impl Buf {
    fn new(len: usize, thp: bool) -> Buf {
        let map_len = len + M2;
        // SAFETY: a fresh anonymous mapping.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            die("mmap");
        }
        let ptr = ((map as usize + M2 - 1) & !(M2 - 1)) as *mut u8;
        let advice = if thp {
            libc::MADV_HUGEPAGE
        } else {
            libc::MADV_NOHUGEPAGE
        };
        // SAFETY: inside the mapping.
        if unsafe { libc::madvise(ptr.cast(), len, advice) } != 0 {
            die("madvise");
        }
        for off in (0..len).step_by(PAGE) {
            // SAFETY: inside the mapping.
            unsafe { ptr.add(off).write_volatile((off / PAGE) as u8 | 1) };
        }
        Buf {
            map: map.cast(),
            map_len,
            ptr,
            len,
        }
    }

    fn unmap(self) -> f64 {
        let t = Instant::now();
        // SAFETY: our mapping, unmapped once.
        if unsafe { libc::munmap(self.map.cast(), self.map_len) } != 0 {
            die("munmap");
        }
        let s = t.elapsed().as_secs_f64();
        std::mem::forget(self);
        s
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        // SAFETY: our mapping.
        unsafe { libc::munmap(self.map.cast(), self.map_len) };
    }
}

/// HMM_DMIRROR_READ of `[addr, addr + len)` into `out`; returns the command's `faults`.
fn read(fd: i32, addr: *const u8, len: usize, out: &mut [u8]) -> u64 {
    let mut c = Cmd {
        addr: addr as u64,
        ptr: out.as_mut_ptr() as u64,
        npages: (len / PAGE) as u64,
        ..Cmd::default()
    };
    loop {
        // SAFETY: `c` is a valid command; `out` holds `len` bytes.
        let r = unsafe { libc::ioctl(fd, HMM_DMIRROR_READ as _, &mut c) };
        if r == 0 {
            break;
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            die("HMM_DMIRROR_READ");
        }
    }
    if c.cpages as usize != len / PAGE {
        eprintln!("dmbench: READ copied {} of {} pages", c.cpages, len / PAGE);
        std::process::exit(1);
    }
    c.faults
}

fn open_dev() -> i32 {
    // SAFETY: a NUL-terminated path.
    let fd = unsafe { libc::open(c"/dev/hmm_dmirror0".as_ptr(), libc::O_RDWR) };
    if fd < 0 {
        die("open /dev/hmm_dmirror0");
    }
    fd
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

struct Out {
    driver: String,
    trials: usize,
}

impl Out {
    fn put(&self, metric: &str, mut v: Vec<f64>, unit: &str) {
        let m = median(&mut v);
        println!(
            "DMBENCH driver={} metric={metric} value={m:.3} unit={unit} trials={}",
            self.driver, self.trials
        );
        let _ = std::io::stdout().flush();
    }
}

/// Fault-in (first READ), re-read (second READ) and munmap of `mib` MiB.
fn single(o: &Out, mib: usize, thp: bool) {
    let len = mib << 20;
    let mut out = vec![0u8; len];
    let tag = if thp { "thp" } else { "4k" };
    let (mut fin, mut rer, mut unm, mut fcalls) = (vec![], vec![], vec![], vec![]);
    let (mut fhmm, mut feng) = (vec![], vec![]);
    for _ in 0..o.trials {
        let fd = open_dev();
        let b = Buf::new(len, thp);
        let (c0, h0, e0) = (calls(), hmm_ns(), engine_ns());
        let t = Instant::now();
        let faults = read(fd, b.ptr, b.len, &mut out);
        fin.push(t.elapsed().as_secs_f64() * 1e6 / mib as f64);
        if let (Some(a), Some(z)) = (c0, calls()) {
            fcalls.push((z - a) as f64 * 1000.0 / (len / PAGE) as f64);
        }
        if let (Some(a), Some(z)) = (h0, hmm_ns()) {
            fhmm.push((z - a) as f64 / 1e3 / mib as f64);
        }
        if let (Some(a), Some(z)) = (e0, engine_ns()) {
            feng.push((z - a) as f64 / 1e3 / mib as f64);
        }
        if faults != 1 {
            eprintln!("dmbench: fault-in took {faults} rounds (expected 1)");
        }
        for (i, off) in (0..len).step_by(PAGE).enumerate() {
            if out[off] != (i as u8 | 1) {
                eprintln!("dmbench: wrong data at page {i}");
                std::process::exit(1);
            }
        }
        let t = Instant::now();
        let faults = read(fd, b.ptr, b.len, &mut out);
        rer.push(t.elapsed().as_secs_f64() * 1e6 / mib as f64);
        if faults != 0 {
            eprintln!("dmbench: re-read faulted {faults} times (expected 0)");
        }
        unm.push(b.unmap() * 1e6 / mib as f64);
        // SAFETY: our fd.
        unsafe { libc::close(fd) };
    }
    // The mirroring cost of each trial: its fault-in minus its own re-read of the same buffer
    // (the copy through the device is the same in both; what remains is the fault service).
    // Paired per trial, so a slow trial slows both terms alike; the medians of the two
    // columns differ by more than the pairs do.
    let cost: Vec<f64> = fin.iter().zip(&rer).map(|(f, r)| f - r).collect();
    // What is left of it outside `hmm_range_fault()` (the kernel's walk, the same work for
    // both drivers): the driver's own share, paired per trial as well.
    let own: Vec<f64> = cost.iter().zip(&fhmm).map(|(c, h)| c - h).collect();
    o.put(&format!("fault_in_{tag}"), fin, "us/MiB");
    o.put(&format!("reread_{tag}"), rer, "us/MiB");
    o.put(&format!("mirror_cost_{tag}"), cost, "us/MiB");
    if !fhmm.is_empty() {
        o.put(&format!("hmm_time_{tag}"), fhmm, "us/MiB");
        o.put(&format!("mirror_cost_outside_hmm_{tag}"), own, "us/MiB");
    }
    if !feng.is_empty() {
        // The driver's whole fault service, hmm included: timed inside svm_accel, or by
        // hmmcount's probe on test_hmm's dmirror_fault().
        o.put(&format!("fault_service_{tag}"), feng, "us/MiB");
    }
    o.put(&format!("munmap_{tag}"), unm, "us/MiB");
    if !fcalls.is_empty() {
        o.put(
            &format!("hmm_calls_fault_in_{tag}"),
            fcalls,
            "calls/1000 pages",
        );
    }
}

/// One dmirror command; Err(errno).
fn dm_cmd(fd: i32, nr: u64, addr: *const u8, len: usize, out: *mut u8) -> Result<Cmd, i32> {
    let mut c = Cmd {
        addr: addr as u64,
        ptr: out as u64,
        npages: (len / PAGE) as u64,
        ..Cmd::default()
    };
    loop {
        // SAFETY: `c` is a valid command; `out` holds `len` bytes where the command writes.
        let r = unsafe { libc::ioctl(fd, dmirror_uapi::dm_iowr(nr) as _, &mut c) };
        if r == 0 {
            return Ok(c);
        }
        let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        if e != libc::EINTR {
            return Err(e);
        }
    }
}

/// Device memory (4 KiB pages): MIGRATE_TO_DEV of `mib` MiB (which reads the span back, for
/// both drivers), a READ of the resident pages (against `reread_4k`: the same READ of mirrored
/// system memory), a CPU touch per page (each a `migrate_to_ram`), then MIGRATE_TO_DEV again
/// and MIGRATE_TO_SYS. Nothing is printed if the driver cannot migrate.
fn devmem(o: &Out, mib: usize) {
    let len = mib << 20;
    let pages = len / PAGE;
    let mut out = vec![0u8; len];
    let (mut to_dev, mut resident, mut back, mut to_sys) = (vec![], vec![], vec![], vec![]);
    for _ in 0..o.trials {
        let fd = open_dev();
        let b = Buf::new(len, false);
        let t = Instant::now();
        match dm_cmd(fd, 2, b.ptr, len, out.as_mut_ptr()) {
            Ok(c) if c.cpages as usize == pages => {}
            r => {
                eprintln!(
                    "dmbench: MIGRATE_TO_DEV of {mib} MiB: {:?}: no device-memory numbers",
                    r.map(|c| c.cpages)
                );
                // SAFETY: our fd.
                unsafe { libc::close(fd) };
                return;
            }
        }
        to_dev.push(mib as f64 / t.elapsed().as_secs_f64());
        let t = Instant::now();
        read(fd, b.ptr, b.len, &mut out);
        resident.push(t.elapsed().as_secs_f64() * 1e6 / mib as f64);
        let t = Instant::now();
        for off in (0..len).step_by(PAGE) {
            // SAFETY: inside the buffer; the load faults the page back to system memory.
            unsafe { std::ptr::read_volatile(b.ptr.add(off)) };
        }
        back.push(t.elapsed().as_secs_f64() * 1e6 / pages as f64);
        if dm_cmd(fd, 2, b.ptr, len, out.as_mut_ptr()).is_ok() {
            let t = Instant::now();
            if dm_cmd(fd, 3, b.ptr, len, std::ptr::null_mut()).is_ok() {
                to_sys.push(mib as f64 / t.elapsed().as_secs_f64());
            }
        }
        for (i, off) in (0..len).step_by(PAGE).enumerate() {
            // SAFETY: inside the buffer.
            if unsafe { b.ptr.add(off).read_volatile() } != (i as u8 | 1) {
                eprintln!("dmbench: wrong data at page {i} after the migrations");
                std::process::exit(1);
            }
        }
        drop(b);
        // SAFETY: our fd.
        unsafe { libc::close(fd) };
    }
    o.put("migrate_to_dev_4k", to_dev, "MiB/s");
    // Oversubscribed: 32 MiB (twice the engine's default device memory, 16 MiB) moved in
    // 1 MiB at a time, twice over; the engine evicts the oldest pages at every step once full
    // (test_hmm allocates more device memory instead: it has no limit).
    let mut over = vec![];
    for _ in 0..o.trials {
        let fd = open_dev();
        let len = 32 << 20;
        let b = Buf::new(len, false);
        let mut out = vec![0u8; 1 << 20];
        let t = Instant::now();
        let mut ok = true;
        for _ in 0..2 {
            for off in (0..len).step_by(1 << 20) {
                // SAFETY: inside the buffer.
                let a = unsafe { b.ptr.add(off) };
                ok &= dm_cmd(fd, 2, a, 1 << 20, out.as_mut_ptr()).is_ok();
            }
        }
        if ok {
            over.push(64.0 / t.elapsed().as_secs_f64());
        }
        drop(b);
        // SAFETY: our fd.
        unsafe { libc::close(fd) };
    }
    if !over.is_empty() {
        o.put("migrate_to_dev_32mib_2x", over, "MiB/s");
    }
    o.put("read_resident_4k", resident, "us/MiB");
    o.put("cpu_fault_back_4k", back, "us/page");
    if !to_sys.is_empty() {
        o.put("migrate_to_sys_4k", to_sys, "MiB/s");
    }
}

/// `threads` threads fault disjoint buffers (READ in 256 KiB steps) through one device file
/// (or one each, `fd_each`: separate mirrors, so nothing of the driver is shared),
/// with or without another thread that mmaps, touches and munmaps 64 KiB elsewhere in a
/// loop. Returns (MiB/s over all faulting threads, hmm calls, storm operations).
fn disjoint(
    threads: usize,
    mib_each: usize,
    storm: bool,
    fd_each: bool,
) -> (f64, Option<u64>, u64) {
    let len = mib_each << 20;
    let step = 256 << 10;
    let fd = open_dev();
    let fds: Vec<i32> = (0..threads)
        .map(|_| if fd_each { open_dev() } else { fd })
        .collect();
    let bufs: Vec<Arc<Buf>> = (0..threads)
        .map(|_| Arc::new(Buf::new(len, false)))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let stormer = storm.then(|| {
        let (stop, ops) = (stop.clone(), ops.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let b = Buf::new(64 << 10, false);
                drop(b);
                ops.fetch_add(1, Ordering::Relaxed);
            }
        })
    });
    let c0 = calls();
    let t = Instant::now();
    let workers: Vec<_> = bufs
        .iter()
        .zip(fds.iter())
        .map(|(b, &fd)| {
            let b = b.clone();
            thread::spawn(move || {
                let mut out = vec![0u8; step];
                for off in (0..b.len).step_by(step) {
                    // SAFETY: inside the buffer.
                    read(fd, unsafe { b.ptr.add(off) }, step, &mut out);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    let c1 = calls();
    stop.store(true, Ordering::Relaxed);
    if let Some(s) = stormer {
        s.join().unwrap();
    }
    drop(bufs);
    for &f in fds.iter().filter(|&&f| f != fd) {
        // SAFETY: our fd.
        unsafe { libc::close(f) };
    }
    // SAFETY: our fd.
    unsafe { libc::close(fd) };
    let calls = c0.zip(c1).map(|(a, z)| z - a);
    // Every faulting thread read `mib_each`: one thread moved half what two did.
    (
        (threads * mib_each) as f64 / secs,
        calls,
        ops.load(Ordering::Relaxed),
    )
}

/// The same stores as [`accel_fill`] by the CPU itself, 8 bytes at a time: how far two
/// threads of this VM scale on this work at all (TCG and the host bound it, not the driver).
fn cpu_fill(threads: usize, mib_each: usize, passes: usize) -> f64 {
    let len = mib_each << 20;
    let bufs: Vec<Arc<Buf>> = (0..threads)
        .map(|_| Arc::new(Buf::new(len, false)))
        .collect();
    let secs = timed_threads(&bufs, move |b: &Buf| {
        for p in 0..passes {
            for off in (0..b.len).step_by(8) {
                // SAFETY: an aligned word inside the buffer, which only this thread touches.
                let w = unsafe { &*(b.ptr.add(off) as *const AtomicU64) };
                w.store(p as u64, Ordering::Relaxed);
            }
        }
    });
    (threads * mib_each * passes) as f64 / secs
}

/// Runs `work` on each buffer in a thread of its own, all started together; returns the
/// seconds from the first start to the last end.
fn timed_threads(bufs: &[Arc<Buf>], work: impl Fn(&Buf) + Clone + Send + 'static) -> f64 {
    let go = Arc::new(std::sync::Barrier::new(bufs.len()));
    let hs: Vec<_> = bufs
        .iter()
        .map(|b| {
            let (b, go, work) = (b.clone(), go.clone(), work.clone());
            thread::spawn(move || {
                go.wait();
                let t = Instant::now();
                work(&b);
                (t, Instant::now())
            })
        })
        .collect();
    let r: Vec<(Instant, Instant)> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    let t0 = r.iter().map(|x| x.0).min().unwrap();
    let t1 = r.iter().map(|x| x.1).max().unwrap();
    (t1 - t0).as_secs_f64()
}

/// FILL jobs through the accel uAPI over already mirrored buffers, `threads` threads on one
/// bound context, each on its own `mib_each` MiB: the device's execution path alone (every
/// access a TLB hit after the first pass). Returns MiB/s over all threads, or `None` without
/// `/dev/accel/accel0`.
fn accel_fill(threads: usize, mib_each: usize, passes: usize) -> Option<f64> {
    use uapi::*;
    // SAFETY: a NUL-terminated path.
    let fd = unsafe { libc::open(c"/dev/accel/accel0".as_ptr(), libc::O_RDWR) };
    if fd < 0 {
        return None;
    }
    let ioctl = |req: u32, arg: *mut libc::c_void| {
        // SAFETY: `arg` is the struct the request number encodes.
        if unsafe { libc::ioctl(fd, req as libc::c_ulong, arg) } < 0 {
            die("accel ioctl");
        }
    };
    let mut b = drm_svm_accel_bind::default();
    ioctl(
        DRM_IOCTL_SVM_ACCEL_BIND,
        (&mut b as *mut drm_svm_accel_bind).cast(),
    );
    let len = mib_each << 20;
    let bufs: Vec<Arc<Buf>> = (0..threads)
        .map(|_| Arc::new(Buf::new(len, false)))
        .collect();
    let fill = move |b: &Buf, v: u64| {
        let mut op = drm_svm_accel_op {
            kind: SVM_ACCEL_OP_FILL,
            dst: b.ptr as u64,
            len: b.len as u64,
            value: v,
            ..Default::default()
        };
        let mut sub = drm_svm_accel_submit {
            ops_ptr: &mut op as *mut drm_svm_accel_op as u64,
            op_count: 1,
            ..Default::default()
        };
        // SAFETY: `sub` is a SUBMIT argument naming one op that lives across the call.
        let r = unsafe {
            libc::ioctl(
                fd,
                DRM_IOCTL_SVM_ACCEL_SUBMIT as libc::c_ulong,
                &mut sub as *mut drm_svm_accel_submit,
            )
        };
        if r < 0 || sub.error != 0 {
            die("FILL job");
        }
    };
    // Mirror every buffer first: the timed passes measure access, not faults.
    for b in &bufs {
        fill(b, 1);
    }
    let secs = timed_threads(&bufs, move |b: &Buf| {
        for p in 0..passes {
            fill(b, p as u64 + 2);
        }
    });
    drop(bufs);
    // SAFETY: our fd.
    unsafe { libc::close(fd) };
    Some((threads * mib_each * passes) as f64 / secs)
}

fn main() {
    let mut driver = None;
    let mut mib = 32usize;
    let mut trials = 3usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| die("missing value"));
        match a.as_str() {
            "--driver" => driver = Some(val()),
            "--mib" => mib = val().parse().unwrap_or_else(|_| die("--mib")),
            "--trials" => trials = val().parse().unwrap_or_else(|_| die("--trials")),
            _ => {
                eprintln!("usage: dmbench --driver NAME [--mib M] [--trials N]");
                std::process::exit(2);
            }
        }
    }
    let o = Out {
        driver: driver.unwrap_or_else(|| "unknown".into()),
        trials,
    };
    if calls().is_none() {
        eprintln!("dmbench: {COUNTER} missing: no hmm_range_fault() counts");
    }
    single(&o, mib, false);
    single(&o, mib, true);
    devmem(&o, mib.min(16));
    let pages = 2 * ((mib / 2) << 20) / PAGE;
    let (mut one, mut quiet, mut busy, mut extra, mut rate) =
        (vec![], vec![], vec![], vec![], vec![]);
    let mut two_fds = vec![];
    let (mut scale, mut scale_fds) = (vec![], vec![]);
    for _ in 0..o.trials {
        let (q1, _, _) = disjoint(1, mib / 2, false, false);
        let (q, cq, _) = disjoint(2, mib / 2, false, false);
        let (q2, _, _) = disjoint(2, mib / 2, false, true);
        let (b, cb, ops) = disjoint(2, mib / 2, true, false);
        // Paired within the round, so the VM's drift between rounds cancels.
        scale.push(q / q1);
        scale_fds.push(q2 / q1);
        one.push(q1);
        two_fds.push(q2);
        quiet.push(q);
        busy.push(b);
        rate.push(ops as f64);
        if let (Some(cq), Some(cb)) = (cq, cb) {
            extra.push((cb as f64 - cq as f64) * 1000.0 / pages as f64);
        }
    }
    o.put("disjoint1_quiet", one, "MiB/s");
    o.put("disjoint2_quiet", quiet, "MiB/s");
    o.put("disjoint2_quiet_2fds", two_fds, "MiB/s");
    o.put("disjoint2_storm", busy, "MiB/s");
    let (mut a1, mut a2, mut ascale, mut cscale) = (vec![], vec![], vec![], vec![]);
    for _ in 0..o.trials {
        let (Some(x1), Some(x2)) = (accel_fill(1, mib / 2, 4), accel_fill(2, mib / 2, 4)) else {
            break;
        };
        a1.push(x1);
        a2.push(x2);
        ascale.push(x2 / x1);
        cscale.push(cpu_fill(2, mib / 2, 4) / cpu_fill(1, mib / 2, 4));
    }
    if !a1.is_empty() {
        o.put("device_fill_1t", a1, "MiB/s");
        o.put("device_fill_2t", a2, "MiB/s");
        o.put("scale_device_2t_over_1t", ascale, "x");
        o.put("scale_cpu_stores_2t_over_1t", cscale, "x");
    }
    o.put("scale_2t_over_1t", scale, "x");
    o.put("scale_2t_over_1t_2fds", scale_fds, "x");
    o.put("storm_ops", rate, "munmaps");
    if !extra.is_empty() {
        o.put("storm_extra_hmm_calls", extra, "calls/1000 pages");
    }
}
