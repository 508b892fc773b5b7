//! Peer devices (issue 10, "device N"): the module's accel devices share one simulated
//! interconnect, so MADVISE can name another device's memory (SVM_ACCEL_LOC_PEER), a device
//! reaches a peer's pages where they are (P2P leaves, QUERY's `peer_mapped`), and a peer's
//! memory fills and evicts under another device's placement without losing a word.

use crate::devmem::{check_words, fill};
use crate::placement::{expect_sum, madvise, madvise_on, settle};
use crate::uapi::*;
use crate::{dev_sum, ename, Buf, Dev, TResult, PAGE};
use std::sync::atomic::{AtomicBool, Ordering};

/// MADVISE of `location` (`device`: a peer's accel minor, for `SVM_ACCEL_LOC_PEER`), global
/// atomics.
fn advise(
    d: &Dev,
    start: u64,
    len: u64,
    location: u32,
    device: u32,
    flags: u32,
) -> Result<u64, i32> {
    madvise_on(
        d,
        start,
        len,
        (location, device),
        SVM_ACCEL_ATOMIC_GLOBAL,
        flags,
    )
}

/// MADVISE with a peer's memory as the location (`device` = its accel minor).
fn madvise_peer(d: &Dev, start: u64, len: u64, minor: u32, flags: u32) -> Result<u64, i32> {
    advise(d, start, len, SVM_ACCEL_LOC_PEER, minor, flags)
}

/// A MADVISE MIGRATE of one of the racing movers: `ENOMEM` is fine (the other device took
/// the room this step evicted for; what did not move stays in system memory), any other
/// errno stops the race.
fn race_step(
    d: &Dev,
    start: u64,
    len: u64,
    location: u32,
    device: u32,
    stop: &AtomicBool,
) -> TResult {
    match advise(d, start, len, location, device, SVM_ACCEL_MADVISE_MIGRATE) {
        Ok(_) | Err(libc::ENOMEM) => Ok(()),
        Err(e) => {
            stop.store(true, Ordering::Relaxed);
            Err(format!("MADVISE MIGRATE at {start:#x}: {}", ename(e)))
        }
    }
}

/// accel0 and accel1, both bound to this process; accel1's policies name accel0's memory.
pub(crate) fn t_peer_devices() -> TResult {
    let (d0, d1) = (Dev::bound_at(0)?, Dev::bound_at(1)?);
    let (p0, p1) = (d0.query()?, d1.query()?);
    check!(
        p0.devmem_pages > 0 && p1.devmem_pages > 0,
        "no device memory"
    );
    const N: usize = 64;
    let len = (N * PAGE) as u64;

    // Bad input: an unknown device, a device number without LOC_PEER.
    let b = Buf::aligned(N * PAGE, 256 << 10);
    let r = madvise_peer(&d1, b.addr(), len, 99, 0);
    check!(r == Err(libc::ENODEV), "LOC_PEER of device 99: {r:?}");
    let r = advise(&d1, b.addr(), len, SVM_ACCEL_LOC_DEVICE, 1, 0);
    check!(r == Err(libc::EINVAL), "LOC_DEVICE with a device: {r:?}");

    // MIGRATE now, into accel0's memory, by accel1.
    fill(&b, N, 100);
    let done = madvise_peer(&d1, b.addr(), len, 0, SVM_ACCEL_MADVISE_MIGRATE)
        .map_err(|e| format!("MADVISE PEER MIGRATE: {}", ename(e)))?;
    check!(done == len, "done {done:#x}");
    let (q0, q1) = (d0.query()?, d1.query()?);
    check!(
        q0.devmem_used >= p0.devmem_used + N as u64,
        "accel0 holds {} pages (was {})",
        q0.devmem_used,
        p0.devmem_used
    );
    check!(q1.devmem_used == p1.devmem_used, "accel1's memory used");
    check!(q1.migrated_to_device >= p1.migrated_to_device + N as u64);
    // accel1 reaches them over the interconnect, accel0 locally; they stay put.
    check!(
        dev_sum(&d1, b.addr(), len)? == expect_sum(N, 100),
        "accel1 sum"
    );
    let q1 = d1.query()?;
    check!(
        q1.peer_mapped >= p1.peer_mapped + N as u64,
        "peer leaves {} (was {})",
        q1.peer_mapped,
        p1.peer_mapped
    );
    check!(
        q1.local_mapped == p1.local_mapped,
        "accel1 mapped a peer page locally"
    );
    check!(
        dev_sum(&d0, b.addr(), len)? == expect_sum(N, 100),
        "accel0 sum"
    );
    check!(d0.query()?.local_mapped >= q0.local_mapped + N as u64);
    check!(
        d0.query()?.devmem_used >= p0.devmem_used + N as u64,
        "pages moved away"
    );
    // accel1 writes a peer page; accel0 and the CPU see it.
    let mut ops = [crate::fill(b.addr() + PAGE as u64, 8, 77)];
    d1.run(&mut ops)?;
    let mut ops = [crate::read(b.addr() + PAGE as u64, 8)];
    d0.run(&mut ops)?;
    check!(ops[0].result == 77, "accel0 reads {}", ops[0].result);
    check!(
        b.words()[PAGE / 8].load(Ordering::Relaxed) == 77,
        "CPU misses accel1's write"
    );

    // Migrate on accel1's first fault, into accel0's memory.
    let c = Buf::aligned(N * PAGE, 256 << 10);
    fill(&c, N, 500);
    let (r0, r1) = (d0.query()?, d1.query()?);
    madvise_peer(&d1, c.addr(), len, 0, 0).map_err(|e| format!("MADVISE PEER: {}", ename(e)))?;
    check!(
        dev_sum(&d1, c.addr(), len)? == expect_sum(N, 500),
        "accel1 sum after placement"
    );
    let (s0, s1) = (d0.query()?, d1.query()?);
    check!(
        s1.migrated_to_device >= r1.migrated_to_device + N as u64,
        "first fault moved {} pages",
        s1.migrated_to_device - r1.migrated_to_device
    );
    check!(
        s0.devmem_used >= r0.devmem_used + N as u64,
        "not in accel0's memory"
    );
    check!(s1.peer_mapped >= r1.peer_mapped + N as u64);
    // Back to system memory through accel1 (a peer's pages move with its own).
    let done = madvise(
        &d1,
        c.addr(),
        len,
        SVM_ACCEL_LOC_SYSTEM,
        SVM_ACCEL_ATOMIC_GLOBAL,
        SVM_ACCEL_MADVISE_MIGRATE,
    )
    .map_err(|e| format!("MADVISE SYSTEM MIGRATE: {}", ename(e)))?;
    check!(done == len);
    check!(d1.query()?.migrated_to_system >= s1.migrated_to_system + N as u64);
    check_words(&c, N, 500, "after moving back")?;
    drop(c);
    check_words(&b, 1, 100, "b")?;
    drop(b);
    settle(&d0, p0.devmem_used)?;
    settle(&d1, p1.devmem_used)?;
    Ok(())
}

/// accel1 places one and a half times accel0's memory there: accel0's memory evicts (its least
/// recently used pages go back to system memory, accel1's P2P leaves with them), and every
/// word survives.
pub(crate) fn t_peer_evict() -> TResult {
    let (d0, d1) = (Dev::bound_at(0)?, Dev::bound_at(1)?);
    let p0 = d0.query()?;
    let pages = (3 * p0.devmem_pages / 2) as usize;
    check!(pages > 0, "no device memory");
    let b = Buf::aligned(pages * PAGE, 2 << 20);
    fill(&b, pages, 1000);
    let p1 = d1.query()?;
    let done = madvise_peer(
        &d1,
        b.addr(),
        (pages * PAGE) as u64,
        0,
        SVM_ACCEL_MADVISE_MIGRATE,
    )
    .map_err(|e| format!("MADVISE PEER MIGRATE: {}", ename(e)))?;
    check!(done == (pages * PAGE) as u64, "done {done:#x}");
    let q1 = d1.query()?;
    check!(
        q1.evicted > p1.evicted,
        "nothing evicted: accel0 held {} pages",
        d0.query()?.devmem_used
    );
    // The policy forgotten (else each read moves its block in again, evicting another: the
    // thrash an oversubscribed preference asks for), every chunk read by accel1 where it
    // is (through P2P, or in system memory), then by the CPU.
    madvise(
        &d1,
        b.addr(),
        (pages * PAGE) as u64,
        SVM_ACCEL_LOC_SYSTEM,
        SVM_ACCEL_ATOMIC_GLOBAL,
        0,
    )
    .map_err(|e| format!("MADVISE SYSTEM: {}", ename(e)))?;
    const CHUNK: usize = 64;
    for c in (0..pages).step_by(CHUNK) {
        let a = b.addr() + (c * PAGE) as u64;
        let s = dev_sum(&d1, a, (CHUNK * PAGE) as u64)?;
        check!(
            s == expect_sum(CHUNK, 1000 + c as u64),
            "accel1 chunk {c}: sum {s}"
        );
    }
    check_words(&b, pages, 1000, "after eviction")?;
    drop(b);
    settle(&d0, p0.devmem_used)?;
    Ok(())
}

/// Both devices fill accel0's memory at once (accel0 for itself, accel1 as its peer), each
/// evicting what the other just moved in, while the CPU reads the buffer (faulting pages
/// back): concurrent evictions of one memory, and evictions racing a migration's finalize.
/// A page another migration already moved out must not be migrated again (6.12's
/// `migrate_device_range()` takes one in `migrate_device_finalize()`'s window and warns in
/// `mem_cgroup_migrate()`; the glue leaves such pages alone). Every word survives.
pub(crate) fn t_peer_evict_race() -> TResult {
    let (d0, d1) = (Dev::bound_at(0)?, Dev::bound_at(1)?);
    let p0 = d0.query()?;
    let pages = (p0.devmem_pages + p0.devmem_pages / 4) as usize;
    check!(pages > 0, "no device memory");
    let len = (pages * PAGE) as u64;
    let b = Buf::aligned(pages * PAGE, 2 << 20);
    fill(&b, pages, 7000);
    let a = b.addr();
    let stop = AtomicBool::new(false);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let r: Result<(), String> = std::thread::scope(|s| {
        let (stop, b_len) = (&stop, len);
        let mover = move |d: &Dev, loc: u32, minor: u32, rev: bool| -> TResult {
            let len = b_len;
            const STEP: usize = 512;
            while std::time::Instant::now() < until && !stop.load(Ordering::Relaxed) {
                for k in 0..pages.div_ceil(STEP) {
                    let k = if rev { pages.div_ceil(STEP) - 1 - k } else { k };
                    let off = (k * STEP * PAGE) as u64;
                    let l = (len - off).min((STEP * PAGE) as u64);
                    race_step(d, a + off, l, loc, minor, stop)?;
                }
            }
            Ok(())
        };
        let (d0, d1) = (&d0, &d1);
        let t0 = s.spawn(move || mover(d0, SVM_ACCEL_LOC_DEVICE, 0, false));
        let t1 = s.spawn(move || mover(d1, SVM_ACCEL_LOC_PEER, 0, true));
        let w = b.words();
        let mut p = 0;
        while std::time::Instant::now() < until && !stop.load(Ordering::Relaxed) {
            let v = w[p * PAGE / 8].load(Ordering::Relaxed);
            if v != 7000 + p as u64 {
                stop.store(true, Ordering::Relaxed);
                return Err(format!("CPU read page {p}: {v:#x}"));
            }
            p = (p + 97) % pages;
        }
        t0.join()
            .map_err(|_| "accel0 mover panicked".to_string())??;
        t1.join()
            .map_err(|_| "accel1 mover panicked".to_string())??;
        Ok(())
    });
    r?;
    check_words(&b, pages, 7000, "after the race")?;
    drop(b);
    settle(&d0, p0.devmem_used)?;
    Ok(())
}

/// KSM-mergeable memory under migration by both devices while the process forks: ksmd merges
/// and re-merges the buffer's identical pages, the devices keep asking to move it to device
/// memory and back, the CPU keeps rewriting it, and a thread forks children that exit at once
/// (fork copies every migration entry it meets, which must be of a locked page). 6.12's
/// `migrate_vma_setup()` left a migration entry behind for a page ksmd had just made KSM
/// (a kernel BUG in fork, every run), so mergeable memory never moves: nothing moves here,
/// and every word survives.
pub(crate) fn t_peer_ksm_fork() -> TResult {
    use crate::distro::{write_file, KSM};
    if !std::path::Path::new(KSM).exists() {
        return Ok(());
    }
    let (d0, d1) = (Dev::bound_at(0)?, Dev::bound_at(1)?);
    let (m0, m1) = (
        d0.query()?.migrated_to_device,
        d1.query()?.migrated_to_device,
    );
    const NP: usize = 256;
    let len = (NP * PAGE) as u64;
    let b = Buf::new(NP * PAGE);
    b.advise(0, NP * PAGE, libc::MADV_NOHUGEPAGE)?;
    // Groups of 8 identical pages: ksmd merges each group into one KSM page.
    let val = |p: usize| 0x5000 + (p / 8) as u64;
    let w = b.words();
    let pat = |p: usize| {
        for x in &w[p * PAGE / 8..(p + 1) * PAGE / 8] {
            x.store(val(p), Ordering::Relaxed);
        }
    };
    (0..NP).for_each(pat);
    b.advise(0, NP * PAGE, libc::MADV_MERGEABLE)?;
    write_file(&format!("{KSM}/pages_to_scan"), "10000")?;
    write_file(&format!("{KSM}/sleep_millisecs"), "0")?;
    write_file(&format!("{KSM}/run"), "1")?;
    let stop = AtomicBool::new(false);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(4);
    let a = b.addr();
    let r: TResult = std::thread::scope(|s| {
        let stop = &stop;
        let mover = move |d: &Dev, loc: u32, minor: u32| -> TResult {
            while std::time::Instant::now() < until && !stop.load(Ordering::Relaxed) {
                for (loc, minor) in [(loc, minor), (SVM_ACCEL_LOC_SYSTEM, 0)] {
                    race_step(d, a, len, loc, minor, stop)?;
                }
            }
            Ok(())
        };
        let (d0, d1) = (&d0, &d1);
        let t0 = s.spawn(move || mover(d0, SVM_ACCEL_LOC_DEVICE, 0));
        let t1 = s.spawn(move || mover(d1, SVM_ACCEL_LOC_PEER, 0));
        let forker = s.spawn(move || {
            let mut n = 0u64;
            while std::time::Instant::now() < until && !stop.load(Ordering::Relaxed) {
                // SAFETY: the child only calls _exit.
                let pid = unsafe { libc::fork() };
                if pid == 0 {
                    // SAFETY: async-signal-safe.
                    unsafe { libc::_exit(0) };
                }
                if pid > 0 {
                    let mut st = 0;
                    // SAFETY: our child.
                    unsafe { libc::waitpid(pid, &mut st, 0) };
                    n += 1;
                }
            }
            n
        });
        // The CPU rewrites pages with their own values (breaking and re-forming merges).
        let mut p = 0;
        while std::time::Instant::now() < until && !stop.load(Ordering::Relaxed) {
            let v = w[p * PAGE / 8].load(Ordering::Relaxed);
            if v != val(p) {
                stop.store(true, Ordering::Relaxed);
                return Err(format!("CPU read page {p}: {v:#x}"));
            }
            pat(p);
            p = (p + 13) % NP;
        }
        t0.join()
            .map_err(|_| "accel0 mover panicked".to_string())??;
        t1.join()
            .map_err(|_| "accel1 mover panicked".to_string())??;
        let forks = forker.join().map_err(|_| "forker panicked".to_string())?;
        println!("  peer_ksm_fork: {forks} forks");
        Ok(())
    });
    write_file(&format!("{KSM}/run"), "2")?;
    r?;
    let (n0, n1) = (
        d0.query()?.migrated_to_device,
        d1.query()?.migrated_to_device,
    );
    check!(
        n0 == m0 && n1 == m1,
        "mergeable memory moved: {} and {} pages",
        n0 - m0,
        n1 - m1
    );
    for p in 0..NP {
        let v = w[p * PAGE / 8].load(Ordering::Relaxed);
        check!(v == val(p), "page {p} holds {v:#x}");
    }
    Ok(())
}
