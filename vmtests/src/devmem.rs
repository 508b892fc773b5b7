//! Device memory through the dmirror front end (issue 10): pages moved into a dmirror device's
//! `MEMORY_DEVICE_PRIVATE` memory (MIGRATE_TO_DEV) and back (MIGRATE_TO_SYS, a CPU touch,
//! RELEASE), with fork, COW, mprotect, munmap and exit in between, and two devices. The
//! debugfs `device` file counts each device's pages in use (`dmirrorN_devmem used total`):
//! every test ends with the count it started with, or a page leaked.

use crate::dmirror_uapi::*;
use crate::{dm, ename, errno, svmstat, Buf, TResult, PAGE};
use std::ffi::CString;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MIGRATE_TO_DEV: u64 = 2;
const MIGRATE_TO_SYS: u64 = 3;
const SNAPSHOT: u64 = 4;
const RELEASE: u64 = 7;
const PROT_READ: u8 = 0x01;
const PROT_WRITE: u8 = 0x02;
const PROT_DEV_PRIVATE_LOCAL: u8 = 0x20;

/// An open `/dev/hmm_dmirrorN`.
pub(crate) struct Dm(pub(crate) i32);

impl Dm {
    pub(crate) fn open(n: u32) -> Result<Dm, String> {
        let p = CString::new(format!("/dev/hmm_dmirror{n}")).unwrap();
        // SAFETY: plain open.
        let fd = unsafe { libc::open(p.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(format!("open hmm_dmirror{n}: {}", ename(errno())));
        }
        Ok(Dm(fd))
    }

    pub(crate) fn cmd(&self, nr: u64, addr: u64, npages: u64, ptr: u64) -> Result<DmCmd, i32> {
        dm(
            self.0,
            nr,
            DmCmd {
                addr,
                ptr,
                npages,
                ..DmCmd::default()
            },
        )
    }

    /// MIGRATE_TO_DEV: the pages move, and what the device read back lands in `out`.
    fn to_dev(&self, addr: u64, npages: u64, out: &mut [u8]) -> Result<u64, String> {
        assert!(out.len() as u64 >= npages * PAGE as u64);
        self.cmd(MIGRATE_TO_DEV, addr, npages, out.as_mut_ptr() as u64)
            .map(|c| c.cpages)
            .map_err(|e| format!("MIGRATE_TO_DEV {addr:#x}+{npages}: {}", ename(e)))
    }

    /// MIGRATE_TO_SYS: how many pages moved back.
    fn to_sys(&self, addr: u64, npages: u64) -> Result<u64, String> {
        self.cmd(MIGRATE_TO_SYS, addr, npages, 0)
            .map(|c| c.cpages)
            .map_err(|e| format!("MIGRATE_TO_SYS {addr:#x}+{npages}: {}", ename(e)))
    }

    fn snapshot(&self, addr: u64, npages: u64) -> Result<Vec<u8>, String> {
        let mut v = vec![0u8; npages as usize];
        self.cmd(SNAPSHOT, addr, npages, v.as_mut_ptr() as u64)
            .map_err(|e| format!("SNAPSHOT: {}", ename(e)))?;
        Ok(v)
    }

    pub(crate) fn read(&self, addr: u64, npages: u64, out: &mut [u8]) -> Result<(), String> {
        self.cmd(0, addr, npages, out.as_mut_ptr() as u64)
            .map(|_| ())
            .map_err(|e| format!("READ: {}", ename(e)))
    }

    pub(crate) fn write(&self, addr: u64, npages: u64, src: &[u8]) -> Result<(), i32> {
        self.cmd(1, addr, npages, src.as_ptr() as u64).map(|_| ())
    }
}

impl Drop for Dm {
    fn drop(&mut self) {
        // SAFETY: ours.
        unsafe { libc::close(self.0) };
    }
}

/// Device `n`'s pages in use, from debugfs (`None`: no device memory).
fn used(n: u32) -> Option<u64> {
    devmem_field(n, 0)
}

/// Field `k` of debugfs' `dmirrorN_devmem USED TOTAL` line for device `n`.
fn devmem_field(n: u32, k: usize) -> Option<u64> {
    let dev = std::fs::read_to_string(format!("{}/device", svmstat::ROOT)).ok()?;
    dev.lines().find_map(|l| {
        let rest = l.strip_prefix(&format!("dmirror{n}_devmem "))?;
        rest.split(' ').nth(k)?.parse().ok()
    })
}

/// Waits (a CPU fault or a free may still be finishing) until device `n` holds `want` pages.
fn settle(n: u32, want: u64) -> TResult {
    let t = Instant::now();
    loop {
        let u = used(n).ok_or("no device memory in debugfs")?;
        if u == want {
            return Ok(());
        }
        if t.elapsed() > Duration::from_secs(5) {
            return Err(format!("dmirror{n}: {u} device pages in use, want {want}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The page's first word, as the device read it into `out`.
pub(crate) fn word(out: &[u8], page: usize) -> u64 {
    u64::from_ne_bytes(out[page * PAGE..page * PAGE + 8].try_into().unwrap())
}

pub(crate) fn fill(b: &Buf, pages: usize, base: u64) {
    let w = b.words();
    for p in 0..pages {
        w[p * PAGE / 8].store(base + p as u64, Ordering::Relaxed);
    }
}

pub(crate) fn check_words(b: &Buf, pages: usize, base: u64, what: &str) -> TResult {
    let w = b.words();
    for p in 0..pages {
        let v = w[p * PAGE / 8].load(Ordering::Relaxed);
        check!(v == base + p as u64, "{what}: page {p} holds {v:#x}");
    }
    Ok(())
}

/// `[addr, addr + n pages)` holds KSM-merged pages (and others): MIGRATE_TO_DEV must leave
/// the merged ones where they are (`ENOENT`, as for any page that did not move), and ksmd,
/// which keeps scanning for 300 ms, must not trip over one (the kernel oopsed comparing a
/// device page's bytes when one moved: found by the fuzzer). No-op without device memory.
pub(crate) fn ksm_pages_stay(addr: u64, n: u64) -> TResult {
    if !have_devmem() {
        return Ok(());
    }
    let d = Dm::open(0)?;
    let mut out = vec![0u8; n as usize * PAGE];
    let r = d.cmd(MIGRATE_TO_DEV, addr, n, out.as_mut_ptr() as u64);
    check!(
        r.as_ref().err() == Some(&libc::ENOENT) || r.is_ok(),
        "MIGRATE_TO_DEV over KSM pages: {:?}",
        r.map(|c| c.cpages).map_err(ename)
    );
    std::thread::sleep(Duration::from_millis(300));
    check!(d.to_sys(addr, n).is_ok(), "MIGRATE_TO_SYS");
    Ok(())
}

/// A KSM page mapped once (its twin was written since) is asked to move to the device, then
/// fresh pages with its content appear, so ksmd compares them with the stable node's page.
/// 6.12 would move the page and the stable node with it, and ksmd would `memcmp()` a
/// device-private page that has no bytes in the direct map (the fuzzer's oops): the page must
/// stay (`ENOENT`) and ksmd must find the twins.
pub(crate) fn t_devmem_ksm() -> TResult {
    use crate::distro::{read_u64, write_file, KSM};
    if !have_devmem() || !std::path::Path::new(KSM).exists() {
        return Ok(());
    }
    let d = Dm::open(0)?;
    const NP: usize = 8;
    let b = Buf::new(NP * PAGE);
    // SAFETY: our mapping.
    unsafe { libc::madvise(b.p.cast(), b.len, libc::MADV_NOHUGEPAGE) };
    let w = b.words();
    let pat = |page: usize, v: u64| {
        for x in &w[page * PAGE / 8..(page + 1) * PAGE / 8] {
            x.store(v, Ordering::Relaxed);
        }
    };
    for p in 0..NP {
        pat(p, 0x7000 + p as u64);
    }
    pat(0, 0xabcd);
    pat(1, 0xabcd);
    // SAFETY: our mapping.
    let r = unsafe { libc::madvise(b.p.cast(), b.len, libc::MADV_MERGEABLE) };
    check!(r == 0, "MADV_MERGEABLE: {}", ename(errno()));
    write_file(&format!("{KSM}/pages_to_scan"), "10000")?;
    write_file(&format!("{KSM}/sleep_millisecs"), "0")?;
    write_file(&format!("{KSM}/run"), "1")?;
    let res = (|| -> TResult {
        let t0 = Instant::now();
        while read_u64(&format!("{KSM}/pages_sharing"))? < 1 {
            check!(
                t0.elapsed() < Duration::from_secs(30),
                "KSM merged nothing in 30 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // Page 1 leaves the KSM page; page 0 maps it alone.
        pat(1, 0x1111);
        let mut out = vec![0u8; PAGE];
        let r = d.cmd(MIGRATE_TO_DEV, b.addr(), 1, out.as_mut_ptr() as u64);
        check!(
            r.as_ref().err() == Some(&libc::ENOENT),
            "MIGRATE_TO_DEV of a KSM page: {:?}",
            r.map(|c| c.cpages).map_err(ename)
        );
        // Twins for ksmd to compare with the stable page.
        for p in 2..NP {
            pat(p, 0xabcd);
        }
        std::thread::sleep(Duration::from_millis(500));
        for p in [0, 2, 5] {
            check!(
                w[p * PAGE / 8].load(Ordering::Relaxed) == 0xabcd,
                "page {p} lost its data"
            );
        }
        Ok(())
    })();
    write_file(&format!("{KSM}/run"), "2")?;
    res
}

/// Device `n`'s pages in all, from debugfs.
fn total(n: u32) -> Option<u64> {
    devmem_field(n, 1)
}

/// A working set twice device 0's memory, moved in 1 MiB at a time, twice over: each step
/// evicts the least recently used pages (whatever maps them), the data survives every move,
/// device memory never overflows, and all of it comes back at the end.
pub(crate) fn t_devmem_evict() -> TResult {
    if !have_devmem() {
        return Ok(());
    }
    let (u0, cap) = (used(0).unwrap(), total(0).ok_or("no total")?);
    let d = Dm::open(0)?;
    let pages = (2 * cap) as usize;
    let b = Buf::new(pages * PAGE);
    fill(&b, pages, 0x5000);
    const STEP: usize = 256;
    let mut out = vec![0u8; STEP * PAGE];
    let t = Instant::now();
    for round in 0..2 {
        for first in (0..pages).step_by(STEP) {
            let a = b.addr() + (first * PAGE) as u64;
            let c = d.to_dev(a, STEP as u64, &mut out).map_err(|e| {
                // What stayed behind, by SNAPSHOT state (a page left in a THP reads PMD).
                let states = d.snapshot(a, STEP as u64).map_or_else(
                    |e| e,
                    |v| {
                        let mut h = std::collections::BTreeMap::new();
                        v.iter().for_each(|&x| *h.entry(x).or_insert(0) += 1);
                        format!("{h:x?}")
                    },
                );
                format!("round {round} page {first}: {e}; snapshot (state: pages) {states}")
            })?;
            check!(c == STEP as u64, "round {round} page {first}: cpages {c}");
            for p in 0..STEP {
                check!(
                    word(&out, p) == 0x5000 + (first + p) as u64,
                    "device read page {}",
                    first + p
                );
            }
            let u = used(0).ok_or("debugfs")?;
            check!(u <= cap, "{u} device pages in use of {cap}");
        }
    }
    println!(
        "    ({} MiB through {} MiB of device memory twice in {:.1} s)",
        pages * PAGE >> 20,
        (cap as usize * PAGE) >> 20,
        t.elapsed().as_secs_f64()
    );
    check_words(&b, pages, 0x5000, "after the eviction rounds")?;
    drop(b);
    settle(0, u0)?;
    Ok(())
}

/// Skips (Ok) when the module has no device memory (dmirror=0, or dmirror_devmem_mib=0).
fn have_devmem() -> bool {
    used(0).is_some() && used(1).is_some()
}

/// In, out by the engine, out by CPU faults; SNAPSHOT shows where each page is.
pub(crate) fn t_devmem_migrate() -> TResult {
    if !have_devmem() {
        return Ok(());
    }
    let (u0, d) = (used(0).unwrap(), Dm::open(0)?);
    const N: usize = 64;
    let b = Buf::new(N * PAGE);
    fill(&b, N, 1000);
    let mut out = vec![0u8; N * PAGE];
    check!(d.to_dev(b.addr(), N as u64, &mut out)? == N as u64);
    for p in 0..N {
        check!(word(&out, p) == 1000 + p as u64, "device read page {p}");
    }
    settle(0, u0 + N as u64)?;
    let s = d.snapshot(b.addr(), N as u64)?;
    check!(
        s.iter().all(|&x| x == PROT_DEV_PRIVATE_LOCAL | PROT_WRITE),
        "SNAPSHOT after MIGRATE_TO_DEV: {s:x?}"
    );
    // The device writes device memory; half comes back through the engine, half by CPU faults.
    let src: Vec<u8> = (0..N * PAGE).map(|i| (i / PAGE) as u8).collect();
    d.write(b.addr(), N as u64, &src)
        .map_err(|e| format!("WRITE: {}", ename(e)))?;
    check!(d.to_sys(b.addr(), N as u64 / 2)? == N as u64 / 2);
    settle(0, u0 + N as u64 / 2)?;
    for p in 0..N {
        let v = b.words()[p * PAGE / 8].load(Ordering::Relaxed) & 0xff;
        check!(v == p as u64 & 0xff, "page {p} after moving back: {v:#x}");
    }
    settle(0, u0)?;
    let s = d.snapshot(b.addr(), N as u64)?;
    check!(
        s.iter().all(|&x| x == PROT_WRITE),
        "SNAPSHOT after moving back: {s:x?}"
    );
    // Moving back what is in system memory moves nothing.
    check!(d.to_sys(b.addr(), N as u64)? == 0);
    // A hole ends MIGRATE_TO_DEV with EINVAL (test_hmm's errno).
    check!(
        d.cmd(MIGRATE_TO_DEV, 4096, 1, out.as_mut_ptr() as u64)
            .err()
            == Some(libc::EINVAL),
        "MIGRATE_TO_DEV of a hole"
    );
    Ok(())
}

/// fork with device pages: both see the data; a CPU write in either copies on write; the
/// device memory is free once both are done.
pub(crate) fn t_devmem_fork_cow() -> TResult {
    if !have_devmem() {
        return Ok(());
    }
    let (u0, d) = (used(0).unwrap(), Dm::open(0)?);
    const N: usize = 16;
    let b = Buf::new(N * PAGE);
    fill(&b, N, 7);
    let mut out = vec![0u8; N * PAGE];
    check!(d.to_dev(b.addr(), N as u64, &mut out)? == N as u64);
    // SAFETY: fork; the child only touches its copy of `b` and exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let w = b.words();
        let mut ok = true;
        for p in 0..N {
            ok &= w[p * PAGE / 8].load(Ordering::Relaxed) == 7 + p as u64;
            w[p * PAGE / 8].store(100 + p as u64, Ordering::Relaxed);
        }
        // SAFETY: exit the child.
        unsafe { libc::_exit(if ok { 0 } else { 3 }) };
    }
    check!(pid > 0, "fork: {}", ename(errno()));
    let mut st = 0;
    // SAFETY: our child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    check!(st == 0, "child: status {st:#x} (3: it read wrong data)");
    // The parent's pages are its own, still on the device (now read-only: shared until the
    // child wrote) or back in system memory.
    check_words(&b, N, 7, "parent after the child wrote")?;
    fill(&b, N, 200);
    check_words(&b, N, 200, "parent after its own writes")?;
    d.read(b.addr(), N as u64, &mut out)?;
    for p in 0..N {
        check!(word(&out, p) == 200 + p as u64, "device read page {p}");
    }
    settle(0, u0)?;
    Ok(())
}

/// mprotect, munmap and exit with device pages.
pub(crate) fn t_devmem_mprotect_munmap_exit() -> TResult {
    if !have_devmem() {
        return Ok(());
    }
    let (u0, d) = (used(0).unwrap(), Dm::open(0)?);
    const N: usize = 16;
    let b = Buf::new(N * PAGE);
    fill(&b, N, 50);
    let mut out = vec![0u8; N * PAGE];
    check!(d.to_dev(b.addr(), N as u64, &mut out)? == N as u64);
    // SAFETY: our mapping.
    let rc = unsafe { libc::mprotect(b.addr() as *mut _, N * PAGE, libc::PROT_READ) };
    check!(rc == 0, "mprotect: {}", ename(errno()));
    let s = d.snapshot(b.addr(), N as u64)?;
    check!(
        s.iter().all(|&x| x == PROT_DEV_PRIVATE_LOCAL | PROT_READ),
        "SNAPSHOT after mprotect(PROT_READ): {s:x?}"
    );
    check!(
        d.write(b.addr(), 1, &out) == Err(libc::EPERM),
        "WRITE to a read-only device page"
    );
    d.read(b.addr(), N as u64, &mut out)?;
    check!(word(&out, 3) == 53);
    // SAFETY: our mapping.
    let rc = unsafe {
        libc::mprotect(
            b.addr() as *mut _,
            N * PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
        )
    };
    check!(rc == 0, "mprotect: {}", ename(errno()));
    // munmap frees the device pages of the span (page_free), the others stay.
    // SAFETY: the first half of our mapping.
    let rc = unsafe { libc::munmap(b.addr() as *mut _, N / 2 * PAGE) };
    check!(rc == 0, "munmap: {}", ename(errno()));
    settle(0, u0 + N as u64 / 2)?;
    let rc = unsafe {
        libc::madvise(
            (b.addr() + (N / 2 * PAGE) as u64) as *mut _,
            PAGE,
            libc::MADV_DONTNEED,
        )
    };
    check!(rc == 0, "madvise: {}", ename(errno()));
    settle(0, u0 + N as u64 / 2 - 1)?;
    drop(b);
    settle(0, u0)?;
    // A child that moves pages to the device and exits without unmapping them.
    // SAFETY: fork; the child uses its own file and memory and exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let code = (|| -> Result<(), String> {
            let d = Dm::open(0)?;
            let b = Buf::new(N * PAGE);
            fill(&b, N, 1);
            let mut out = vec![0u8; N * PAGE];
            d.to_dev(b.addr(), N as u64, &mut out)?;
            std::mem::forget(b);
            Ok(())
        })();
        // SAFETY: exit the child.
        unsafe { libc::_exit(if code.is_ok() { 0 } else { 3 }) };
    }
    check!(pid > 0, "fork: {}", ename(errno()));
    let mut st = 0;
    // SAFETY: our child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    check!(st == 0, "child: status {st:#x}");
    settle(0, u0)?;
    Ok(())
}

/// Two devices: a page on device 1 is not device 0's (MIGRATE_TO_DEV to 0: `ENOENT`;
/// SNAPSHOT on 0: absent); device 0's READ faults it back; RELEASE of device 1 evicts the
/// rest.
pub(crate) fn t_devmem_two_devices() -> TResult {
    if !have_devmem() {
        return Ok(());
    }
    let (u0, u1) = (used(0).unwrap(), used(1).unwrap());
    let (d0, d1) = (Dm::open(0)?, Dm::open(1)?);
    const N: usize = 8;
    let b = Buf::new(N * PAGE);
    fill(&b, N, 300);
    let mut out = vec![0u8; N * PAGE];
    check!(d1.to_dev(b.addr(), N as u64, &mut out)? == N as u64);
    settle(1, u1 + N as u64)?;
    check!(
        d0.cmd(MIGRATE_TO_DEV, b.addr(), 1, out.as_mut_ptr() as u64)
            .err()
            == Some(libc::ENOENT),
        "MIGRATE_TO_DEV of the other device's page"
    );
    let s = d0.snapshot(b.addr(), N as u64)?;
    check!(
        s.iter().all(|&x| x == 0),
        "device 0's SNAPSHOT of device 1's pages: {s:x?}"
    );
    // Device 0 reads the first half: hmm faults them back from device 1.
    d0.read(b.addr(), N as u64 / 2, &mut out)?;
    for p in 0..N / 2 {
        check!(word(&out, p) == 300 + p as u64, "device 0 read page {p}");
    }
    settle(1, u1 + N as u64 / 2)?;
    // Device 0 takes the first half; RELEASE of device 1 evicts the second.
    check!(d0.to_dev(b.addr(), N as u64 / 2, &mut out)? == N as u64 / 2);
    settle(0, u0 + N as u64 / 2)?;
    d1.cmd(RELEASE, b.addr(), 1, 0)
        .map_err(|e| format!("RELEASE: {}", ename(e)))?;
    settle(1, u1)?;
    check_words(&b, N, 300, "after RELEASE")?;
    settle(0, u0)?;
    Ok(())
}

/// Threads moving spans to either device and back, CPU threads reading and writing their
/// own pages, a device thread reading through dmirror READ, forks: every page ends with
/// what its writer wrote last, and every device page comes back.
pub(crate) fn t_devmem_storm(secs: u64) -> TResult {
    if !have_devmem() {
        return Ok(());
    }
    let (u0, u1) = (used(0).unwrap(), used(1).unwrap());
    const N: usize = 256;
    let b = Arc::new(Buf::new(N * PAGE));
    let base = b.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let moves = Arc::new(AtomicU64::new(0));
    let errs = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut hs = Vec::new();
    for t in 0..2u32 {
        let (stop, moves, errs) = (stop.clone(), moves.clone(), errs.clone());
        hs.push(std::thread::spawn(move || {
            let d = match Dm::open(t) {
                Ok(d) => d,
                Err(e) => return errs.lock().unwrap().push(e),
            };
            let mut out = vec![0u8; 32 * PAGE];
            let mut x = 0x9e37_79b9_u64 ^ u64::from(t);
            while !stop.load(Ordering::Relaxed) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let n = 1 + x % 32;
                let p = (x >> 8) % (N as u64 - n + 1);
                let a = base + p * PAGE as u64;
                let r = if x & 1 == 0 {
                    d.cmd(MIGRATE_TO_DEV, a, n, out.as_mut_ptr() as u64)
                        .map(|_| ())
                } else {
                    d.cmd(MIGRATE_TO_SYS, a, n, 0).map(|_| ())
                };
                match r {
                    // ENOENT: a page in the other device's memory; ENOMEM: memory full.
                    Ok(()) | Err(libc::ENOENT) | Err(libc::ENOMEM) => {
                        moves.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => errs
                        .lock()
                        .unwrap()
                        .push(format!("dev {t} migrate: {}", ename(e))),
                }
            }
        }));
    }
    // CPU writers: each owns the pages p % 2 == id, writes and reads them back.
    for id in 0..2u64 {
        let (b, stop, errs) = (b.clone(), stop.clone(), errs.clone());
        hs.push(std::thread::spawn(move || {
            let w = b.words();
            let mut gen = 1u64;
            while !stop.load(Ordering::Relaxed) {
                for p in (id as usize..N).step_by(2) {
                    let v = (id << 56) | (gen << 16) | p as u64;
                    w[p * PAGE / 8].store(v, Ordering::Relaxed);
                }
                for p in (id as usize..N).step_by(2) {
                    let v = (id << 56) | (gen << 16) | p as u64;
                    let got = w[p * PAGE / 8].load(Ordering::Relaxed);
                    if got != v {
                        errs.lock()
                            .unwrap()
                            .push(format!("page {p}: {got:#x}, wrote {v:#x}"));
                        return;
                    }
                }
                gen += 1;
            }
        }));
    }
    let t = Instant::now();
    let mut forks = 0;
    while t.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_millis(200));
        // SAFETY: fork; the child reads its copy and exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let w = b.words();
            let mut s = 0u64;
            for p in 0..N {
                s = s.wrapping_add(w[p * PAGE / 8].load(Ordering::Relaxed));
            }
            // SAFETY: exit the child.
            unsafe { libc::_exit(if s == u64::MAX { 1 } else { 0 }) };
        }
        if pid > 0 {
            let mut st = 0;
            // SAFETY: our child.
            unsafe { libc::waitpid(pid, &mut st, 0) };
            forks += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for h in hs {
        let _ = h.join();
    }
    let e = errs.lock().unwrap().clone();
    check!(e.is_empty(), "{} errors, first: {}", e.len(), e[0]);
    println!(
        "    (migrations {}, forks {forks})",
        moves.load(Ordering::Relaxed)
    );
    drop(b);
    settle(0, u0)?;
    settle(1, u1)?;
    Ok(())
}
