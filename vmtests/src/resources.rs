//! Accounted, bounded resources and the device's lifetime (issue 9, item 5 and "Bounded,
//! accounted resources"):
//!
//! - `memcg`: a forked child in a memory cgroup of its own faults one page in each of many
//!   2 MiB ranges of a sparse buffer whose CPU page tables were populated before it joined
//!   the cgroup, so that the engine's allocations (range, lock, notifier, index node, a leaf
//!   page-table page per range) are the only memory that cgroup gains. They must be charged
//!   to it (`memory.current` grows per range; a second pass over the same ranges, which
//!   allocates nothing, does not grow it), and at `memory.max` the device faults must fail
//!   with `-ENOMEM`, without a memcg OOM kill (`memory.events`), and the child exits
//!   normally. Without the accounting its faults cost the cgroup nothing and run past any
//!   limit.
//! - `bind_many_vmas`: open + BIND + close of the accel device, and open + close of
//!   `/dev/hmm_dmirror0`, 1000 times each in a process with 5000 VMAs, timed against the
//!   same with a handful of VMAs: a registration of the mm with the notifier core per file
//!   (`mmu_notifier_register()`: `mmap_write_lock` and `mm_take_all_locks()`, a walk of
//!   every VMA) would make each one cost in proportion to the VMAs.
//! - `unplug`: the platform device is unbound from its driver (sysfs `unbind`) while accel
//!   files (bound, with device mappings, one of them running jobs in another thread, the
//!   other a user-mode queue's jobs) and a dmirror file are open: the queue stops, no DMA mapping of the device may survive (the DMA-API debug
//!   `dump`), every ioctl afterwards is `ENODEV` (new opens too), the CPU still sees what the
//!   device wrote, close works; then the device is bound again and works.

use crate::{
    dev_sum, dm, ename, errno, fill, read, Buf, Dev, DmCmd, TResult, DEV, DMIRROR, HUGE, PAGE,
};
use std::ffi::CString;
use std::path::Path;
use std::ptr::null_mut;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn write_file(path: &str, v: &str) -> TResult {
    std::fs::write(path, v).map_err(|e| format!("write {v:?} to {path}: {e}"))
}

fn read_u64(path: &str) -> Result<u64, String> {
    let s = std::fs::read_to_string(path).map_err(|e| format!("read {path}: {e}"))?;
    s.trim().parse().map_err(|e| format!("{path}: {s:?}: {e}"))
}

/// `key value` lines of a cgroup file such as `memory.events`.
fn keyed(path: &str, key: &str) -> Result<u64, String> {
    let s = std::fs::read_to_string(path).map_err(|e| format!("read {path}: {e}"))?;
    s.lines()
        .find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some(key)).then(|| w.next().and_then(|v| v.parse().ok()))?
        })
        .ok_or(format!("{path}: no {key}"))
}

fn open_path(path: &str) -> Result<i32, i32> {
    let p = CString::new(path).unwrap();
    // SAFETY: plain open.
    let fd = unsafe { libc::open(p.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        Err(errno())
    } else {
        Ok(fd)
    }
}

fn close(fd: i32) {
    // SAFETY: our fd.
    unsafe { libc::close(fd) };
}

// ---- memcg accounting ---------------------------------------------------------------------

const CGROOT: &str = "/sys/fs/cgroup";

/// cgroup v2 at /sys/fs/cgroup with the memory controller enabled for children.
fn cgroup2_memory() -> TResult {
    if !Path::new(&format!("{CGROOT}/cgroup.controllers")).exists() {
        let _ = std::fs::create_dir_all(CGROOT);
        let (src, dir, fs) = (
            CString::new("none").unwrap(),
            CString::new(CGROOT).unwrap(),
            CString::new("cgroup2").unwrap(),
        );
        // SAFETY: plain mount(2) with NUL-terminated strings.
        let r = unsafe { libc::mount(src.as_ptr(), dir.as_ptr(), fs.as_ptr(), 0, null_mut()) };
        check!(r == 0, "mount cgroup2 on {CGROOT}: {}", ename(errno()));
    }
    let ctl = format!("{CGROOT}/cgroup.subtree_control");
    let cur = std::fs::read_to_string(&ctl).map_err(|e| format!("read {ctl}: {e}"))?;
    if !cur.split_whitespace().any(|c| c == "memory") {
        write_file(&ctl, "+memory")?;
    }
    Ok(())
}

/// What the child of `t_memcg` and its parent share (a `MAP_SHARED` page the parent touched
/// first, so the child's writes charge nothing).
#[repr(C)]
struct Shared {
    /// Protocol step, see `t_memcg`; `ABORT` makes the child exit.
    state: AtomicU64,
    /// Faults of phase A / B that succeeded.
    ok_a: AtomicU64,
    ok_b: AtomicU64,
    /// Phase C: ranges faulted before the first failure, and its errno (0: none).
    ok_c: AtomicU64,
    err_c: AtomicU64,
    /// Phase A/B: the first failure's errno.
    err_ab: AtomicU64,
}

const ABORT: u64 = 1000;
/// Ranges of phase A (and B), and of the whole buffer.
const MEMCG_A: usize = 128;
const MEMCG_RANGES: usize = 1024;
/// `memory.max` is set this far above `memory.current` after phase A.
const MEMCG_HEADROOM: u64 = 2 << 20;

/// Touches `n` bytes of stack below the caller, so the child's later calls never fault a
/// fresh stack page (which would be charged to the limited cgroup, and at its limit would
/// call the memcg OOM killer: user page faults are not `__GFP_RETRY_MAYFAIL`).
#[inline(never)]
fn touch_stack() {
    let mut a = [0u8; 256 << 10];
    for i in (0..a.len()).step_by(PAGE) {
        // SAFETY: in bounds.
        unsafe { std::ptr::write_volatile(a.as_mut_ptr().add(i), 1) };
    }
    std::hint::black_box(&mut a);
}

/// The child: no heap allocation, file I/O or fresh stack page after it joined the cgroup,
/// only device ioctls and writes to `sh`.
fn memcg_child(sh: &Shared) -> i32 {
    let wait = |s: u64| loop {
        let v = sh.state.load(Ordering::Acquire);
        if v >= s {
            return v != ABORT;
        }
        // SAFETY: plain sleep.
        unsafe { libc::usleep(1000) };
    };
    let d = match Dev::bound() {
        Ok(d) => d,
        Err(_) => return 3,
    };
    // The sparse buffer: read-only, no THP (a read would map the huge zero page and the
    // device a 2 MiB leaf, with no leaf table). One page of each 2 MiB is read by the CPU
    // now, which maps the zero page and allocates the CPU page tables: charged to the
    // cgroup we are in now, not the test cgroup.
    let b = Buf::aligned(MEMCG_RANGES * HUGE, HUGE);
    // SAFETY: our mapping.
    unsafe {
        libc::madvise(b.p.cast(), b.len, libc::MADV_NOHUGEPAGE);
        libc::mprotect(b.p.cast(), b.len, libc::PROT_READ);
    }
    for i in 0..MEMCG_RANGES {
        // SAFETY: in our (readable) mapping.
        unsafe { std::ptr::read_volatile(b.p.add(i * HUGE)) };
    }
    touch_stack();
    let fault = |i: usize| -> u64 {
        let mut ops = [read(b.addr() + (i * HUGE) as u64, 8)];
        match d.submit(&mut ops) {
            Ok(s) if s.error == 0 => 0,
            Ok(s) => (-s.error) as u64,
            Err(e) => e as u64,
        }
    };
    sh.state.store(1, Ordering::Release);
    if !wait(2) {
        return 0;
    }
    // Phase A: MEMCG_A ranges, never faulted before.
    for i in 0..MEMCG_A {
        match fault(i) {
            0 => {
                sh.ok_a.fetch_add(1, Ordering::Relaxed);
            }
            e => {
                sh.err_ab.store(e, Ordering::Relaxed);
                break;
            }
        }
    }
    sh.state.store(3, Ordering::Release);
    if !wait(4) {
        return 0;
    }
    // Phase B: the same ranges again: mapped already, nothing to allocate.
    for i in 0..MEMCG_A {
        match fault(i) {
            0 => {
                sh.ok_b.fetch_add(1, Ordering::Relaxed);
            }
            e => {
                sh.err_ab.store(e, Ordering::Relaxed);
                break;
            }
        }
    }
    sh.state.store(5, Ordering::Release);
    if !wait(6) {
        return 0;
    }
    // Phase C: fresh ranges until a fault fails (memory.max is set now).
    for i in MEMCG_A..MEMCG_RANGES {
        match fault(i) {
            0 => {
                sh.ok_c.fetch_add(1, Ordering::Relaxed);
            }
            e => {
                sh.err_c.store(e, Ordering::Relaxed);
                break;
            }
        }
    }
    sh.state.store(7, Ordering::Release);
    wait(8);
    // The file and the buffer go with the process (the file's teardown frees the charges).
    std::mem::forget(d);
    std::mem::forget(b);
    0
}

pub(crate) fn t_memcg() -> TResult {
    cgroup2_memory()?;
    // SAFETY: getpid has no preconditions.
    let cg = format!("{CGROOT}/svm-memcg-{}", unsafe { libc::getpid() });
    std::fs::create_dir(&cg).map_err(|e| format!("mkdir {cg}: {e}"))?;
    let r = memcg_in(&cg);
    // The child is gone (memcg_in reaps it on every path); its charges may outlive it in an
    // offline memcg until the file's teardown frees them, which does not keep rmdir from
    // working.
    let removed = remove_cgroup(&cg);
    r?;
    removed
}

/// Removes the (empty) cgroup `cg`, retrying for 2 s while its last task is still leaving.
fn remove_cgroup(cg: &str) -> TResult {
    for _ in 0..200 {
        if std::fs::remove_dir(cg).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(format!("rmdir {cg} failed"))
}

fn memcg_in(cg: &str) -> TResult {
    // SAFETY: a fresh shared anonymous page.
    let p = unsafe {
        libc::mmap(
            null_mut(),
            PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    check!(p != libc::MAP_FAILED, "mmap: {}", ename(errno()));
    // SAFETY: zero-filled page, suitably aligned; `Shared` is atomics only. Written now, so
    // the page is allocated (and charged) here, in the parent's cgroup.
    let sh: &Shared = unsafe { &*(p as *const Shared) };
    sh.state.store(0, Ordering::SeqCst);
    // SAFETY: the child runs `memcg_child` (syscalls and atomics) and _exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let code = memcg_child(sh);
        // SAFETY: leave without running the parent's atexit handlers or destructors.
        unsafe { libc::_exit(code) };
    }
    check!(pid > 0, "fork: {}", ename(errno()));
    let r = memcg_parent(cg, sh, pid);
    if r.is_err() {
        sh.state.store(ABORT, Ordering::Release);
    }
    let mut st = 0;
    let t = Instant::now();
    loop {
        // SAFETY: our child.
        let w = unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) };
        if w == pid {
            break;
        }
        if t.elapsed() > Duration::from_secs(30) {
            // SAFETY: our child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut st, 0);
            }
            r?;
            return Err("child did not exit".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: our mapping.
    unsafe { libc::munmap(p, PAGE) };
    r?;
    check!(
        libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
        "child status {st:#x} (signal {}: a memcg OOM kill?)",
        if libc::WIFSIGNALED(st) {
            libc::WTERMSIG(st)
        } else {
            0
        }
    );
    Ok(())
}

fn memcg_parent(cg: &str, sh: &Shared, pid: i32) -> TResult {
    let wait = |s: u64| -> TResult {
        let t = Instant::now();
        while sh.state.load(Ordering::Acquire) < s {
            check!(
                t.elapsed() < Duration::from_secs(60),
                "child stuck before step {s}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    };
    let cur = format!("{cg}/memory.current");
    wait(1)?;
    write_file(&format!("{cg}/cgroup.procs"), &pid.to_string())?;
    let c0 = read_u64(&cur)?;
    sh.state.store(2, Ordering::Release);
    wait(3)?;
    let c1 = read_u64(&cur)?;
    let ok_a = sh.ok_a.load(Ordering::Relaxed);
    check!(
        ok_a == MEMCG_A as u64,
        "phase A: {ok_a} of {MEMCG_A} faults, then {}",
        ename(sh.err_ab.load(Ordering::Relaxed) as i32)
    );
    write_file(
        &format!("{cg}/memory.max"),
        &(c1 + MEMCG_HEADROOM).to_string(),
    )?;
    sh.state.store(4, Ordering::Release);
    wait(5)?;
    let c2 = read_u64(&cur)?;
    let ok_b = sh.ok_b.load(Ordering::Relaxed);
    sh.state.store(6, Ordering::Release);
    wait(7)?;
    let c3 = read_u64(&cur)?;
    let ev = format!("{cg}/memory.events");
    let (max, oom, oom_kill) = (
        keyed(&ev, "max")?,
        keyed(&ev, "oom")?,
        keyed(&ev, "oom_kill")?,
    );
    sh.state.store(8, Ordering::Release);
    let (ok_c, err_c) = (
        sh.ok_c.load(Ordering::Relaxed),
        sh.err_c.load(Ordering::Relaxed),
    );
    let per_range = c1.saturating_sub(c0) / MEMCG_A as u64;
    println!(
        "  memcg: {MEMCG_A} device faults on fresh ranges charged {} KiB ({} KiB per range); \
         again on the same ranges: {:+} KiB; with memory.max {} KiB above: {ok_c} more ranges, \
         then {} (memory.current {} KiB of max {} KiB; events: max {max}, oom {oom}, oom_kill {oom_kill})",
        (c1 - c0.min(c1)) >> 10,
        per_range >> 10,
        (c2 as i64 - c1 as i64) >> 10,
        MEMCG_HEADROOM >> 10,
        if err_c == 0 {
            "no failure".to_string()
        } else {
            ename(err_c as i32)
        },
        c3 >> 10,
        (c1 + MEMCG_HEADROOM) >> 10
    );
    // Each fresh range costs at least its leaf page-table (two pages: entries and software
    // words), plus its node, notifier, lock and index node.
    check!(
        per_range >= 8 << 10,
        "device faults on {MEMCG_A} fresh ranges charged {} bytes to the cgroup ({} per range): \
         the engine's allocations are not accounted to the bound mm's memcg",
        c1.saturating_sub(c0),
        per_range
    );
    check!(
        ok_b == MEMCG_A as u64,
        "phase B: {ok_b} of {MEMCG_A} faults, then {}",
        ename(sh.err_ab.load(Ordering::Relaxed) as i32)
    );
    // Per-cpu charge batching can move memory.current by up to 64 pages per CPU.
    check!(
        c2 <= c1 + (c1 - c0) / 2,
        "re-reading mapped ranges grew the cgroup from {c1} to {c2}"
    );
    check!(
        err_c == libc::ENOMEM as u64,
        "at memory.max the device faults went on for {ok_c} ranges and ended with {} \
         (expected ENOMEM)",
        if err_c == 0 {
            "no failure".to_string()
        } else {
            ename(err_c as i32)
        }
    );
    // The limit holds: no more ranges than the headroom pays for (at >= 8 KiB each, with
    // the per-cpu batching's slack).
    check!(
        ok_c <= (MEMCG_HEADROOM + (1 << 20)) / (8 << 10),
        "{ok_c} ranges faulted within {} KiB of headroom",
        MEMCG_HEADROOM >> 10
    );
    check!(
        oom == 0 && oom_kill == 0,
        "memcg OOM ({oom}) / OOM kill ({oom_kill}): the engine's allocations must fail \
         with ENOMEM rather than invoke the OOM killer"
    );
    check!(max > 0, "memory.events max is 0: the limit was never hit");
    Ok(())
}

// ---- one notifier registration per mm -----------------------------------------------------

/// µs per open + BIND + close of the accel device and per open + close of the dmirror
/// device (0 without one), over `n` rounds each; stops early past `limit`.
fn bind_rounds(n: usize, limit: Duration) -> Result<(f64, f64, usize), String> {
    let t = Instant::now();
    let mut done = 0;
    for _ in 0..n {
        let d = Dev::bound()?;
        drop(d);
        done += 1;
        if t.elapsed() > limit {
            break;
        }
    }
    let accel = t.elapsed().as_secs_f64() * 1e6 / done as f64;
    let mut dmirror = 0.0;
    if Path::new(DMIRROR).exists() {
        let t = Instant::now();
        let mut k = 0;
        for _ in 0..n {
            let fd = open_path(DMIRROR).map_err(|e| format!("open {DMIRROR}: {}", ename(e)))?;
            close(fd);
            k += 1;
            if t.elapsed() > limit {
                break;
            }
        }
        dmirror = t.elapsed().as_secs_f64() * 1e6 / k as f64;
        done = done.min(k);
    }
    Ok((accel, dmirror, done))
}

pub(crate) fn t_bind_many_vmas() -> TResult {
    const VMAS: usize = 5000;
    const ROUNDS: usize = 1000;
    // Warm up (first registration of this mm, module caches), then the baseline.
    bind_rounds(20, Duration::from_secs(30))?;
    let (few_a, few_d, _) = bind_rounds(200, Duration::from_secs(30))?;
    // 5000 anonymous VMAs, each written (so each has an anon_vma: mm_take_all_locks() takes
    // every one's lock), one page apart so none merge.
    let span = VMAS * 2 * PAGE;
    let area = Buf::new(span);
    let base = area.addr() as usize;
    drop(area);
    let mut maps = Vec::with_capacity(VMAS);
    for i in 0..VMAS {
        let a = base + i * 2 * PAGE;
        // SAFETY: a fresh anonymous page in a hole we just made.
        let p = unsafe {
            libc::mmap(
                a as *mut libc::c_void,
                PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            for &m in &maps {
                // SAFETY: ours.
                unsafe { libc::munmap(m as *mut libc::c_void, PAGE) };
            }
            return Err(format!("mmap {i}: {}", ename(errno())));
        }
        // SAFETY: our page.
        unsafe { std::ptr::write_volatile(p.cast::<u64>(), i as u64) };
        maps.push(p as usize);
    }
    let vmas = std::fs::read_to_string("/proc/self/maps")
        .map(|m| m.lines().count())
        .unwrap_or(0);
    let r = bind_rounds(ROUNDS, Duration::from_secs(60));
    for &m in &maps {
        // SAFETY: ours.
        unsafe { libc::munmap(m as *mut libc::c_void, PAGE) };
    }
    let (many_a, many_d, done) = r?;
    // The baseline again, so a machine that got busier meanwhile does not fail the test.
    let (few2_a, few2_d, _) = bind_rounds(200, Duration::from_secs(30))?;
    println!(
        "  bind_many_vmas: open+BIND+close {few_a:.0} us with few VMAs ({few2_a:.0} us after), \
         {many_a:.0} us with {vmas} VMAs ({done} rounds); dmirror open+close {few_d:.0} us \
         ({few2_d:.0} us after) / {many_d:.0} us"
    );
    let (few_a, few_d) = (few_a.max(few2_a), few_d.max(few2_d));
    check!(vmas >= VMAS, "only {vmas} VMAs");
    check!(
        done == ROUNDS,
        "only {done} of {ROUNDS} rounds in 60 s with {vmas} VMAs"
    );
    // Nothing per file may walk the VMAs: allow noise, not a cost per VMA (a registration
    // per file made it 4.5 times slower here, and lockdep warned).
    let bound = |few: f64| 2.5 * few + 300.0;
    let (ok_a, ok_d) = (many_a <= bound(few_a), many_d <= bound(few_d));
    check!(
        ok_a,
        "open+BIND+close: {many_a:.0} us with {vmas} VMAs vs {few_a:.0} us with few"
    );
    check!(
        ok_d,
        "dmirror open+close: {many_d:.0} us with {vmas} VMAs vs {few_d:.0} us with few"
    );
    Ok(())
}

// ---- unplug ----------------------------------------------------------------------------

const DRV: &str = "/sys/bus/platform/drivers/svm_accel";
const PDEV: &str = "svm_accel";
const DMA_DUMP: &str = "/sys/kernel/debug/dma-api/dump";

/// Live DMA mappings of our platform device, per DMA-API debugging (`None` without it).
pub(crate) fn dma_mappings() -> Option<usize> {
    let s = std::fs::read_to_string(DMA_DUMP).ok()?;
    Some(
        s.lines()
            .filter(|l| l.split_whitespace().nth(1) == Some(PDEV))
            .count(),
    )
}

fn is_bound() -> bool {
    Path::new(&format!("{DRV}/{PDEV}")).exists()
}

/// Binds the device to the driver again if it is not, and waits for its accel node.
fn rebind() -> TResult {
    if !is_bound() {
        write_file(&format!("{DRV}/bind"), PDEV)?;
    }
    let t = Instant::now();
    while !Path::new(DEV).exists() {
        check!(
            t.elapsed() < Duration::from_secs(5),
            "{DEV} did not come back after bind"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

pub(crate) fn t_unplug() -> TResult {
    check!(is_bound(), "{DRV}/{PDEV} missing: device not bound");
    let r = unplug_with_files();
    // Whatever happened, leave the device bound for the tests after this one.
    let rb = rebind();
    r?;
    rb?;
    // The device works again, through both front ends.
    let d = Dev::bound()?;
    let b = Buf::new(16 * PAGE);
    d.run(&mut [fill(b.addr(), b.len as u64, 5)])?;
    check!(dev_sum(&d, b.addr(), b.len as u64)? == 5 * (b.len / 8) as u64);
    if Path::new(DMIRROR).exists() {
        let fd =
            open_path(DMIRROR).map_err(|e| format!("open {DMIRROR} after bind: {}", ename(e)))?;
        let mut out = vec![0u8; b.len];
        let r = dm(
            fd,
            0,
            DmCmd {
                addr: b.addr(),
                ptr: out.as_mut_ptr() as u64,
                npages: (b.len / PAGE) as u64,
                ..DmCmd::default()
            },
        );
        close(fd);
        check!(
            r.is_ok(),
            "dmirror READ after bind: {}",
            ename(r.err().unwrap_or(0))
        );
        check!(
            out.iter().step_by(8).all(|&x| x == 5),
            "dmirror READ after bind: wrong data"
        );
    }
    Ok(())
}

fn unplug_with_files() -> TResult {
    let d = Arc::new(Dev::bound()?);
    let d2 = Dev::bound()?;
    let unbound = Dev::open()?;
    let b = Buf::new(64 * PAGE);
    let len = b.len as u64;
    d.run(&mut [fill(b.addr(), len, 7)])?;
    check!(dev_sum(&d2, b.addr(), len)? == 7 * len / 8);
    // Another thread keeps the device busy: jobs that fault (fresh memory each round).
    let stop = Arc::new(AtomicBool::new(false));
    let jobs = {
        let (d, stop) = (d.clone(), stop.clone());
        std::thread::spawn(move || -> Result<u64, String> {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let bb = Buf::new(32 * PAGE);
                match d.submit(&mut [fill(bb.addr(), bb.len as u64, 1)]) {
                    Ok(s) if s.error == 0 => n += 1,
                    Ok(s) => return Err(format!("job error {}", ename(-s.error))),
                    Err(libc::ENODEV) => return Ok(n),
                    Err(e) => return Err(format!("SUBMIT: {}", ename(e))),
                }
            }
            Err("still running after the unplug".into())
        })
    };
    let dmf = if Path::new(DMIRROR).exists() {
        let fd = open_path(DMIRROR).map_err(|e| format!("open {DMIRROR}: {}", ename(e)))?;
        let mut out = vec![0u8; 16 * PAGE];
        let r = dm(
            fd,
            0,
            DmCmd {
                addr: b.addr(),
                ptr: out.as_mut_ptr() as u64,
                npages: 16,
                ..DmCmd::default()
            },
        );
        check!(r.is_ok(), "dmirror READ: {}", ename(r.err().unwrap_or(0)));
        Some(fd)
    } else {
        None
    };
    // A queue of the second file runs jobs through the unplug: its processor must stop.
    let qb = Buf::new(32 << 20);
    let mut uq = crate::queues::Q::new(&d2, 64, 0)?;
    uq.fills(qb.addr(), 1 << 20, 64, 32, |i| i + 1);
    let before = dma_mappings();
    if let Some(n) = before {
        check!(n > 0, "no DMA mapping of {PDEV} before the unplug");
    }
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    write_file(&format!("{DRV}/unbind"), PDEV)?;
    let unplug_ms = t.elapsed().as_millis();
    stop.store(true, Ordering::Relaxed);
    let after = dma_mappings();
    let jobs_done = jobs.join().map_err(|_| "job thread panicked".to_string())?;
    println!(
        "  unplug: unbind took {unplug_ms} ms; DMA mappings of {PDEV} before {before:?}, after \
         {after:?} (files still open); the job thread ran {jobs_done:?} jobs"
    );
    check!(!is_bound(), "still bound after unbind");
    // No DMA mapping survives, though every file is still open.
    check!(
        after.unwrap_or(0) == 0,
        "{} DMA mappings of {PDEV} survived the unplug",
        after.unwrap_or(0)
    );
    jobs_done?;
    // Every ioctl of every file is ENODEV now.
    let enodev = |what: &str, r: Result<(), i32>| -> TResult {
        match r {
            Err(libc::ENODEV) => Ok(()),
            Err(e) => Err(format!(
                "{what} after unplug: {} (expected ENODEV)",
                ename(e)
            )),
            Ok(()) => Err(format!("{what} after unplug: succeeded (expected ENODEV)")),
        }
    };
    enodev("SUBMIT", d.submit(&mut [fill(b.addr(), 8, 9)]).map(|_| ()))?;
    enodev(
        "SUBMIT (2nd file)",
        d2.submit(&mut [read(b.addr(), 8)]).map(|_| ()),
    )?;
    enodev("PREFETCH", d.prefetch(b.addr(), len, false).0)?;
    enodev("BIND", unbound.bind())?;
    let f = uq.fence();
    std::thread::sleep(Duration::from_millis(50));
    check!(uq.fence() == f, "the queue ran on after the unplug");
    enodev("WAIT", uq.wait(0, 0).0)?;
    enodev("DESTROY_QUEUE", d2.destroy_queue(uq.id))?;
    println!("  unplug: the queue had completed {f} of 64 jobs");
    let mut q = crate::uapi::drm_svm_accel_query::default();
    enodev(
        "QUERY",
        d.ioctl(crate::uapi::DRM_IOCTL_SVM_ACCEL_QUERY as u64, &mut q),
    )?;
    match open_path(DEV) {
        Ok(fd) => {
            close(fd);
            return Err(format!("open {DEV} after unplug succeeded"));
        }
        Err(e) => check!(
            e == libc::ENOENT || e == libc::ENODEV || e == libc::ENXIO,
            "open {DEV} after unplug: {}",
            ename(e)
        ),
    }
    if let Some(fd) = dmf {
        let mut out = vec![0u8; PAGE];
        let r = dm(
            fd,
            0,
            DmCmd {
                addr: b.addr(),
                ptr: out.as_mut_ptr() as u64,
                npages: 1,
                ..DmCmd::default()
            },
        );
        enodev("dmirror READ", r.map(|_| ()))?;
        enodev("dmirror open", open_path(DMIRROR).map(close))?;
        close(fd);
    }
    // What the device wrote is the CPU's.
    check!(b.sum(0, b.len) == 7 * len / 8, "data lost at unplug");
    // The engines' notifiers are gone: the mm changes freely, the files close.
    drop(b);
    drop(unbound);
    drop(uq);
    drop(d2);
    drop(Arc::try_unwrap(d).map_err(|_| "device still shared".to_string())?);
    Ok(())
}

// ---- kernel memory per mirrored GiB -------------------------------------------------------

/// One `memory.stat` sample of a cgroup: accounted kernel memory, its slab part, and the CPU
/// page tables.
struct KmemSample {
    kernel: u64,
    slab: u64,
    pagetables: u64,
}

fn kmem_sample(cg: &str) -> Result<KmemSample, String> {
    // memory.stat is flushed from the per-CPU counters every 2 s (and on reads only past a
    // threshold of pending updates, up to 64 pages per CPU): wait for the periodic flush so
    // the sample is exact to the page.
    std::thread::sleep(Duration::from_millis(2300));
    let stat = format!("{cg}/memory.stat");
    Ok(KmemSample {
        kernel: keyed(&stat, "kernel")?,
        slab: keyed(&stat, "slab")?,
        pagetables: keyed(&stat, "pagetables")?,
    })
}

/// Kernel memory the module allocates to mirror 1 GiB, counted by the memory cgroup its
/// allocations are charged to (`GFP_KERNEL_ACCOUNT`), at 4 KiB pages and with THP (2 MiB
/// leaves). The buffer and its CPU page tables are charged before the process joins the
/// measuring cgroup, so that cgroup gains only what the device's PREFETCH allocates:
/// page-allocator pages (`kernel - slab - pagetables`: the device page-table pages) and slab
/// objects (page-table nodes and locks, ranges with their notifiers and index nodes, the DMA
/// cache's entries). Issue 11's targets for the device page table: at most 4.5 MiB per GiB at
/// 4 KiB pages, 64 KiB with 2 MiB leaves; the slab part is reported beside it.
pub(crate) fn t_table_memory() -> TResult {
    cgroup2_memory()?;
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let cg = format!("{CGROOT}/svm-kmem-{pid}");
    std::fs::create_dir(&cg).map_err(|e| format!("mkdir {cg}: {e}"))?;
    let r = table_memory_in(&cg, pid);
    // Back to the root cgroup whatever happened, then remove ours (its remaining charges
    // went with the buffers and the file).
    let back = write_file(&format!("{CGROOT}/cgroup.procs"), &pid.to_string());
    let removed = remove_cgroup(&cg);
    r?;
    back?;
    removed
}

fn table_memory_in(cg: &str, pid: i32) -> TResult {
    const GIB: u64 = 1 << 30;
    let mut rows = Vec::new();
    // 4 KiB pages over 128 MiB (a 1 GiB run takes minutes under TCG and the debug kernel;
    // the cost is linear, one leaf table per 2 MiB, and the few upper tables only count
    // against us when scaled up), 2 MiB leaves over the whole GiB.
    for (huge, len, limit) in [
        (false, 128usize << 20, 4608u64 << 10),
        (true, 1 << 30, 64 << 10),
    ] {
        let d = Dev::bound()?;
        let b = Buf::aligned(len, HUGE);
        b.advise(
            0,
            b.len,
            if huge {
                libc::MADV_HUGEPAGE
            } else {
                libc::MADV_NOHUGEPAGE
            },
        )?;
        // One write per page: the CPU's pages and page tables, charged here.
        for w in b.words().iter().step_by(PAGE / 8) {
            w.store(0x5a, Ordering::Relaxed);
        }
        write_file(&format!("{cg}/cgroup.procs"), &pid.to_string())?;
        let q0 = d.query()?;
        let s0 = kmem_sample(cg)?;
        let (r, done) = d.prefetch(b.addr(), len as u64, true);
        check!(
            r.is_ok() && done == len as u64,
            "PREFETCH {} MiB: {:?}, {done} bytes",
            len >> 20,
            r.map_err(ename)
        );
        let s1 = kmem_sample(cg)?;
        let q1 = d.query()?;
        write_file(&format!("{CGROOT}/cgroup.procs"), &pid.to_string())?;
        let tables = q1.pt_tables - q0.pt_tables;
        let kernel = s1.kernel.saturating_sub(s0.kernel);
        let slab = s1.slab.saturating_sub(s0.slab);
        let cpu_pt = s1.pagetables.saturating_sub(s0.pagetables);
        let pages = kernel.saturating_sub(slab).saturating_sub(cpu_pt);
        let mapped = if huge {
            q1.pt_huge * HUGE as u64
        } else {
            q1.pt_pages * PAGE as u64
        };
        check!(
            mapped == len as u64,
            "the device maps {mapped} bytes of {len} (huge {huge}: {} 4 KiB, {} 2 MiB leaves)",
            q1.pt_pages,
            q1.pt_huge
        );
        // Page-table pages: two per table (entries, software words), nothing larger.
        check!(
            pages.abs_diff(tables * 8192) <= 64 << 10,
            "{pages} bytes of accounted pages for {tables} new tables (expected 8 KiB each)"
        );
        let per_gib = |x: u64| (x * (GIB / len as u64)) >> 10;
        rows.push(format!(
            "{:<5} {:>5} MiB {:>7} {:>12} {:>10} {:>8}",
            if huge { "2 MiB" } else { "4 KiB" },
            len >> 20,
            tables,
            per_gib(pages),
            per_gib(slab),
            per_gib(pages + slab)
        ));
        check!(
            per_gib(pages) <= limit >> 10,
            "device page table: {} KiB per mirrored GiB, target {} KiB (huge {huge})",
            per_gib(pages),
            limit >> 10
        );
        drop(b);
        drop(d);
    }
    println!("    kernel memory per mirrored GiB (memcg-accounted, KiB per GiB):");
    println!("    leaf  mirrored  tables  table pages       slab    total");
    for r in rows {
        println!("    {r}");
    }
    Ok(())
}
