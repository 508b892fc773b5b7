//! Device atomics through the dmirror front end (issue 10): EXCLUSIVE hands pages over to the
//! device (`make_device_exclusive_range()`, atomic leaves), CHECK_EXCLUSIVE says whether the
//! device still has any, and every CPU access, fork, mprotect and munmap takes them back.
//! A THP-backed buffer is handed over too (test_hmm's `-EBUSY` there is 6.12's
//! `make_device_exclusive_range()` refusing large folios; the engine's glue splits them).

use crate::devmem::{check_words, fill, word, Dm};
use crate::{ename, errno, Buf, TResult, PAGE};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const EXCLUSIVE: u64 = 5;
const CHECK_EXCLUSIVE: u64 = 6;

fn exclusive(d: &Dm, addr: u64, npages: u64, out: &mut [u8]) -> Result<u64, i32> {
    assert!(out.len() as u64 >= npages * PAGE as u64);
    d.cmd(EXCLUSIVE, addr, npages, out.as_mut_ptr() as u64)
        .map(|c| c.cpages)
}

/// Whether the device has atomic access to any page of the span (CHECK_EXCLUSIVE's EPERM).
fn held(d: &Dm, addr: u64, npages: u64) -> Result<bool, String> {
    match d.cmd(CHECK_EXCLUSIVE, addr, npages, 0) {
        Ok(_) => Ok(false),
        Err(libc::EPERM) => Ok(true),
        Err(e) => Err(format!("CHECK_EXCLUSIVE: {}", ename(e))),
    }
}

/// Hand over, read through the device, take back page by page with the CPU; twice in a row;
/// a THP-backed buffer; fork, mprotect and munmap after a hand-over; shared memory refused.
pub(crate) fn t_exclusive() -> TResult {
    let d = Dm::open(0)?;
    const N: usize = 32;
    let b = Buf::new(N * PAGE);
    fill(&b, N, 10);
    let mut out = vec![0u8; N * PAGE];
    let r = exclusive(&d, b.addr(), N as u64, &mut out);
    check!(r == Ok(N as u64), "EXCLUSIVE: {r:?}");
    for p in 0..N {
        check!(word(&out, p) == 10 + p as u64, "read back page {p}");
    }
    check!(
        held(&d, b.addr(), N as u64)?,
        "no atomic access after EXCLUSIVE"
    );
    // A device READ goes through the atomic leaves; it takes nothing back.
    d.read(b.addr(), N as u64, &mut out)?;
    check!(held(&d, b.addr(), N as u64)?, "READ took the pages back");
    // The CPU takes page 0 back: only page 0.
    check!(b.words()[0].load(Ordering::Relaxed) == 10);
    check!(
        !held(&d, b.addr(), 1)?,
        "page 0 still held after a CPU read"
    );
    check!(held(&d, b.addr() + PAGE as u64, N as u64 - 1)?);
    fill(&b, N, 20);
    check!(!held(&d, b.addr(), N as u64)?, "held after CPU writes");
    // Twice in a row: the second takes the first's entries back first (no EBUSY).
    for round in 0..2 {
        let r = exclusive(&d, b.addr(), N as u64, &mut out);
        check!(r == Ok(N as u64), "EXCLUSIVE round {round}: {r:?}");
    }
    check_words(&b, N, 20, "after two hand-overs")?;

    // A THP-backed buffer (split by the glue, page by page).
    let t = Buf::aligned(4 << 20, 2 << 20);
    // SAFETY: our mapping.
    unsafe { libc::madvise(t.addr() as *mut _, 4 << 20, libc::MADV_HUGEPAGE) };
    let tn = (4 << 20) / PAGE;
    fill(&t, tn, 1000);
    let mut tout = vec![0u8; 4 << 20];
    let r = exclusive(&d, t.addr(), tn as u64, &mut tout);
    check!(r == Ok(tn as u64), "EXCLUSIVE of a THP buffer: {r:?}");
    check!(word(&tout, tn - 1) == 1000 + tn as u64 - 1);
    check_words(&t, tn, 1000, "THP buffer after the hand-over")?;

    // fork takes the pages back; the child sees the data, the parent keeps its own.
    check!(exclusive(&d, b.addr(), N as u64, &mut out) == Ok(N as u64));
    // SAFETY: fork; the child only reads and writes its copy of `b`, then exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let ok = (0..N).all(|p| b.words()[p * PAGE / 8].load(Ordering::Relaxed) == 20 + p as u64);
        fill(&b, N, 90);
        // SAFETY: exit the child.
        unsafe { libc::_exit(if ok { 0 } else { 3 }) };
    }
    check!(pid > 0, "fork: {}", ename(errno()));
    let mut st = 0;
    // SAFETY: our child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    check!(st == 0, "child: status {st:#x} (3: it read wrong data)");
    check!(!held(&d, b.addr(), N as u64)?, "held after fork");
    check_words(&b, N, 20, "parent after the child wrote")?;

    // mprotect(PROT_READ) takes them back; the device may not write; no hand-over of
    // read-only memory.
    check!(exclusive(&d, b.addr(), N as u64, &mut out) == Ok(N as u64));
    // SAFETY: our mapping.
    let rc = unsafe { libc::mprotect(b.addr() as *mut _, N * PAGE, libc::PROT_READ) };
    check!(rc == 0, "mprotect: {}", ename(errno()));
    check!(!held(&d, b.addr(), N as u64)?, "held after mprotect");
    check!(d.write(b.addr(), 1, &out) == Err(libc::EPERM));
    let r = exclusive(&d, b.addr(), 1, &mut out);
    check!(
        r == Err(libc::EBUSY),
        "EXCLUSIVE of read-only memory: {r:?}"
    );
    // SAFETY: our mapping.
    unsafe {
        libc::mprotect(
            b.addr() as *mut _,
            N * PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
        )
    };

    // munmap takes them back; a hole is EBUSY.
    check!(exclusive(&d, b.addr(), N as u64, &mut out) == Ok(N as u64));
    // SAFETY: the second half of our mapping.
    unsafe { libc::munmap((b.addr() + (N * PAGE / 2) as u64) as *mut _, N * PAGE / 2) };
    check!(!held(&d, b.addr() + (N * PAGE / 2) as u64, N as u64 / 2)?);
    check!(held(&d, b.addr(), N as u64 / 2)?);
    let r = exclusive(&d, b.addr(), N as u64, &mut out);
    check!(r == Err(libc::EBUSY), "EXCLUSIVE over a hole: {r:?}");

    // Shared memory cannot be handed over.
    // SAFETY: a new shared anonymous mapping, unmapped below.
    let sh = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4 * PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    check!(sh != libc::MAP_FAILED);
    let r = exclusive(&d, sh as u64, 4, &mut out);
    // SAFETY: ours.
    unsafe { libc::munmap(sh, 4 * PAGE) };
    check!(r == Err(libc::EBUSY), "EXCLUSIVE of shared memory: {r:?}");
    Ok(())
}

/// `secs` seconds of hand-overs racing CPU increments of the same pages (and a second device
/// reading them): every increment lands, every hand-over either succeeds or is `EBUSY`.
pub(crate) fn t_exclusive_storm(secs: u64) -> TResult {
    const N: usize = 16;
    let b = Arc::new(Buf::new(N * PAGE));
    for p in 0..N {
        b.words()[p * PAGE / 8].store(0, Ordering::Relaxed);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let incs = Arc::new(AtomicU64::new(0));
    let cpu = {
        let (b, stop, incs) = (b.clone(), stop.clone(), incs.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for p in 0..N {
                    b.words()[p * PAGE / 8].fetch_add(1, Ordering::Relaxed);
                }
                n += 1;
            }
            incs.store(n, Ordering::Relaxed);
        })
    };
    let reader = {
        let (b, stop) = (b.clone(), stop.clone());
        std::thread::spawn(move || -> TResult {
            let d = Dm::open(1)?;
            let mut out = vec![0u8; N * PAGE];
            while !stop.load(Ordering::Relaxed) {
                d.read(b.addr(), N as u64, &mut out)?;
            }
            Ok(())
        })
    };
    let d = Dm::open(0)?;
    let mut out = vec![0u8; N * PAGE];
    let (mut ok, mut busy) = (0u64, 0u64);
    let t0 = Instant::now();
    let mut res = Ok(());
    while t0.elapsed() < Duration::from_secs(secs) {
        match exclusive(&d, b.addr(), N as u64, &mut out) {
            Ok(_) => ok += 1,
            Err(libc::EBUSY) => busy += 1,
            Err(e) => {
                res = Err(format!("EXCLUSIVE: {}", ename(e)));
                break;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    cpu.join().unwrap();
    reader.join().unwrap()?;
    res?;
    let n = incs.load(Ordering::Relaxed);
    for p in 0..N {
        let v = b.words()[p * PAGE / 8].load(Ordering::Relaxed);
        check!(
            v == n,
            "page {p}: {v} after {n} increments (an increment was lost)"
        );
    }
    check!(
        !held(&d, b.addr(), N as u64)?,
        "held after the CPU's last touch"
    );
    println!("    ({ok} hand-overs, {busy} EBUSY, {n} CPU passes)");
    check!(ok > 0, "no hand-over succeeded");
    Ok(())
}
