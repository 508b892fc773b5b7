//! The accel device's placement policy (issue 10): MADVISE's preferred location and atomic
//! mode per span, migrate on first device fault, PREFETCH with a destination, and the QUERY
//! counters that show them. Every test ends with the device's memory back where it started.

use crate::devmem::fill;
use crate::uapi::*;
use crate::{add, dev_sum, ename, errno, read, Buf, Dev, TResult, PAGE};
use std::sync::atomic::Ordering;

pub(crate) fn madvise(
    d: &Dev,
    start: u64,
    len: u64,
    location: u32,
    atomic: u32,
    flags: u32,
) -> Result<u64, i32> {
    madvise_on(d, start, len, (location, 0), atomic, flags)
}

/// [`madvise`] with `(location, device)`: `device` names a peer for `SVM_ACCEL_LOC_PEER`.
pub(crate) fn madvise_on(
    d: &Dev,
    start: u64,
    len: u64,
    (location, device): (u32, u32),
    atomic: u32,
    flags: u32,
) -> Result<u64, i32> {
    let mut m = drm_svm_accel_madvise {
        start,
        len,
        location,
        atomic,
        flags,
        device,
        ..Default::default()
    };
    d.ioctl(DRM_IOCTL_SVM_ACCEL_MADVISE as u64, &mut m)
        .map(|_| m.done)
}

fn prefetch_to(d: &Dev, start: u64, len: u64, flags: u32) -> (Result<(), i32>, u64) {
    let mut p = drm_svm_accel_prefetch {
        start,
        len,
        flags,
        ..Default::default()
    };
    let r = d.ioctl(DRM_IOCTL_SVM_ACCEL_PREFETCH as u64, &mut p);
    (r, p.done)
}

/// The device's sum of the first word of every page of `b` (a READ of the whole buffer sums
/// every word; only the first of each page is non-zero).
pub(crate) fn expect_sum(pages: usize, base: u64) -> u64 {
    (0..pages as u64).map(|p| base + p).sum()
}

/// Waits (briefly) for the device's pages in use to drop back to `want` (page frees run as
/// the CPU unmaps).
pub(crate) fn settle(d: &Dev, want: u64) -> TResult {
    for _ in 0..100 {
        if d.query()?.devmem_used <= want {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Err(format!(
        "device memory: {} pages in use, {want} before",
        d.query()?.devmem_used
    ))
}

/// Bad MADVISE input; the span bound; a span advised and forgotten.
pub(crate) fn t_madvise_bad_input() -> TResult {
    let d = Dev::bound()?;
    let b = Buf::new(64 * PAGE);
    let a = b.addr();
    let (dev, sys, glob) = (
        SVM_ACCEL_LOC_DEVICE,
        SVM_ACCEL_LOC_SYSTEM,
        SVM_ACCEL_ATOMIC_GLOBAL,
    );
    let cases: [(&str, u64, u64, u32, u32, u32); 9] = [
        ("misaligned", a + 8, PAGE as u64, dev, glob, 0),
        ("empty", a, 0, dev, glob, 0),
        ("wrapping", a, !4095, dev, glob, 0),
        ("kernel", 0xffff_8000_0000_0000, PAGE as u64, dev, glob, 0),
        ("len not page aligned", a, 100, dev, glob, 0),
        ("location 3", a, PAGE as u64, 3, glob, 0),
        ("atomic 2", a, PAGE as u64, sys, 2, 0),
        ("flags 2", a, PAGE as u64, dev, glob, 2),
        ("flags hostile", a, PAGE as u64, dev, glob, 0x8000_0001),
    ];
    for (what, s, l, loc, at, fl) in cases {
        let r = madvise(&d, s, l, loc, at, fl);
        check!(r == Err(libc::EINVAL), "MADVISE {what}: {r:?}");
    }
    let r = madvise_on(&d, a, PAGE as u64, (sys, 1), glob, 0);
    check!(
        r == Err(libc::EINVAL),
        "MADVISE device without LOC_PEER: {r:?}"
    );
    // Unbound: ENOTCONN.
    let u = Dev::open()?;
    let r = madvise(&u, a, PAGE as u64, dev, glob, 0);
    check!(r == Err(libc::ENOTCONN), "unbound MADVISE: {r:?}");
    // At most SVM_ACCEL_MAX_ADVICE spans: every other page, then one more.
    let max = SVM_ACCEL_MAX_ADVICE as u64;
    for i in 0..max {
        let r = madvise(&d, a + i * 2 * PAGE as u64, PAGE as u64, dev, glob, 0);
        check!(r.is_ok(), "span {i}: {r:?}");
    }
    let r = madvise(&d, a + max * 2 * PAGE as u64, PAGE as u64, dev, glob, 0);
    check!(r == Err(libc::ENOSPC), "span {max}: {r:?}");
    // One span over them all replaces them; SYSTEM + GLOBAL forgets it.
    check!(madvise(&d, a, 64 * PAGE as u64, dev, glob, 0).is_ok());
    check!(madvise(
        &d,
        a + PAGE as u64,
        PAGE as u64,
        sys,
        SVM_ACCEL_ATOMIC_DEVICE,
        0
    )
    .is_ok());
    check!(madvise(&d, a, 64 * PAGE as u64, sys, glob, 0).is_ok());
    for i in 0..max {
        check!(madvise(&d, a + i * 2 * PAGE as u64, PAGE as u64, dev, glob, 0).is_ok());
    }
    Ok(())
}

/// MADVISE(DEVICE, MIGRATE) moves a span now; MADVISE(DEVICE) alone moves what the device
/// faults on; the data survives both ways, and the CPU brings pages back.
pub(crate) fn t_madvise_location() -> TResult {
    let d = Dev::bound()?;
    let q0 = d.query()?;
    check!(
        q0.devmem_pages > 0,
        "the accel device has no memory of its own"
    );
    const N: usize = 64;
    let b = Buf::aligned(N * PAGE, 256 << 10);
    fill(&b, N, 100);
    let done = madvise(
        &d,
        b.addr(),
        (N * PAGE) as u64,
        SVM_ACCEL_LOC_DEVICE,
        SVM_ACCEL_ATOMIC_GLOBAL,
        SVM_ACCEL_MADVISE_MIGRATE,
    )
    .map_err(|e| format!("MADVISE MIGRATE: {}", ename(e)))?;
    check!(done == (N * PAGE) as u64, "done {done:#x}");
    let q = d.query()?;
    check!(
        q.migrated_to_device >= q0.migrated_to_device + N as u64,
        "moved {} (was {})",
        q.migrated_to_device,
        q0.migrated_to_device
    );
    check!(
        q.devmem_used >= q0.devmem_used + N as u64,
        "used {}",
        q.devmem_used
    );
    check!(
        dev_sum(&d, b.addr(), (N * PAGE) as u64)? == expect_sum(N, 100),
        "device sum"
    );
    check!(d.query()?.local_mapped > q0.local_mapped, "no local leaf");
    // The CPU brings every page back.
    for p in 0..N {
        let v = b.words()[p * PAGE / 8].load(Ordering::Relaxed);
        check!(v == 100 + p as u64, "CPU page {p}: {v}");
    }
    settle(&d, q0.devmem_used)?;

    // Migrate on first device fault: the policy alone, then a device READ.
    let c = Buf::aligned(N * PAGE, 256 << 10);
    fill(&c, N, 500);
    let q1 = d.query()?;
    madvise(
        &d,
        c.addr(),
        (N * PAGE) as u64,
        SVM_ACCEL_LOC_DEVICE,
        SVM_ACCEL_ATOMIC_GLOBAL,
        0,
    )
    .map_err(|e| format!("MADVISE: {}", ename(e)))?;
    check!(
        d.query()?.migrated_to_device == q1.migrated_to_device,
        "moved before a fault"
    );
    check!(
        dev_sum(&d, c.addr(), (N * PAGE) as u64)? == expect_sum(N, 500),
        "device sum"
    );
    let q2 = d.query()?;
    check!(
        q2.migrated_to_device >= q1.migrated_to_device + N as u64,
        "first fault moved {} pages",
        q2.migrated_to_device - q1.migrated_to_device
    );
    // A device write to a device page, read back by the CPU.
    let mut ops = [crate::fill(c.addr() + PAGE as u64, 8, 77)];
    d.run(&mut ops)?;
    check!(
        c.words()[PAGE / 8].load(Ordering::Relaxed) == 77,
        "device write lost"
    );
    // Back to system memory: MADVISE(SYSTEM, MIGRATE).
    let done = madvise(
        &d,
        c.addr(),
        (N * PAGE) as u64,
        SVM_ACCEL_LOC_SYSTEM,
        SVM_ACCEL_ATOMIC_GLOBAL,
        SVM_ACCEL_MADVISE_MIGRATE,
    )
    .map_err(|e| format!("MADVISE SYSTEM MIGRATE: {}", ename(e)))?;
    check!(done == (N * PAGE) as u64);
    check!(
        d.query()?.migrated_to_system > q2.migrated_to_system,
        "nothing moved back"
    );
    drop(c);
    drop(b);
    settle(&d, q0.devmem_used)?;
    Ok(())
}

/// ATOMIC_DEVICE: ADD hands the page over (an atomic leaf), the CPU takes it back, the next
/// ADD hands it over again; shared memory cannot be handed over (EPERM).
pub(crate) fn t_madvise_atomic() -> TResult {
    let d = Dev::bound()?;
    let b = Buf::new(4 * PAGE);
    let a = b.addr();
    b.words()[0].store(5, Ordering::Relaxed);
    madvise(
        &d,
        a,
        4 * PAGE as u64,
        SVM_ACCEL_LOC_SYSTEM,
        SVM_ACCEL_ATOMIC_DEVICE,
        0,
    )
    .map_err(|e| format!("MADVISE: {}", ename(e)))?;
    let q0 = d.query()?;
    let mut ops = [add(a, 1), add(a, 2), add(a, 3)];
    d.run(&mut ops)?;
    check!(
        ops[0].result == 5 && ops[2].result == 8,
        "ADD results {:?}",
        ops.map(|o| o.result)
    );
    let q1 = d.query()?;
    check!(q1.atomic_mapped > q0.atomic_mapped, "no atomic leaf");
    check!(
        b.words()[0].load(Ordering::Relaxed) == 11,
        "CPU sees the ADDs"
    );
    let mut ops = [add(a, 100)];
    d.run(&mut ops)?;
    check!(ops[0].result == 11);
    check!(
        d.query()?.atomic_mapped > q1.atomic_mapped,
        "not handed over again"
    );
    check!(b.words()[0].load(Ordering::Relaxed) == 111);
    // Global atomics elsewhere: no hand-over.
    let g = Buf::new(PAGE);
    let before = d.query()?.atomic_mapped;
    let mut ops = [add(g.addr(), 1)];
    d.run(&mut ops)?;
    check!(
        d.query()?.atomic_mapped == before,
        "a global ADD handed the page over"
    );
    // Shared memory: EPERM from the job.
    // SAFETY: a new shared anonymous mapping, unmapped below.
    let sh = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    check!(sh != libc::MAP_FAILED, "mmap: {}", ename(errno()));
    let r = madvise(
        &d,
        sh as u64,
        PAGE as u64,
        SVM_ACCEL_LOC_SYSTEM,
        SVM_ACCEL_ATOMIC_DEVICE,
        0,
    );
    let mut ops = [add(sh as u64, 1)];
    let s = d.submit(&mut ops);
    // SAFETY: ours.
    unsafe { libc::munmap(sh, PAGE) };
    check!(r.is_ok());
    let s = s.map_err(|e| format!("SUBMIT: {}", ename(e)))?;
    check!(
        s.error == -libc::EPERM,
        "ADD on shared memory: {}",
        ename(-s.error)
    );
    Ok(())
}

/// PREFETCH with a destination; both destinations at once is EINVAL.
pub(crate) fn t_prefetch_to() -> TResult {
    let d = Dev::bound()?;
    let q0 = d.query()?;
    const N: usize = 32;
    let b = Buf::new(N * PAGE);
    fill(&b, N, 9);
    let len = (N * PAGE) as u64;
    let both = SVM_ACCEL_PREFETCH_TO_DEVICE | SVM_ACCEL_PREFETCH_TO_SYSTEM;
    check!(prefetch_to(&d, b.addr(), len, both).0 == Err(libc::EINVAL));
    let (r, done) = prefetch_to(&d, b.addr(), len, SVM_ACCEL_PREFETCH_TO_DEVICE);
    check!(
        r.is_ok() && done == len,
        "PREFETCH TO_DEVICE: {r:?} done {done:#x}"
    );
    let q1 = d.query()?;
    check!(q1.migrated_to_device >= q0.migrated_to_device + N as u64);
    // Populated: a READ needs no fault.
    let faults = q1.device_faults;
    let mut ops = [read(b.addr(), len)];
    d.run(&mut ops)?;
    check!(ops[0].result == expect_sum(N, 9));
    check!(
        d.query()?.device_faults == faults,
        "the READ faulted after PREFETCH"
    );
    let (r, done) = prefetch_to(
        &d,
        b.addr(),
        len,
        SVM_ACCEL_PREFETCH_TO_SYSTEM | SVM_ACCEL_PREFETCH_WRITE,
    );
    check!(
        r.is_ok() && done == len,
        "PREFETCH TO_SYSTEM: {r:?} done {done:#x}"
    );
    check!(d.query()?.migrated_to_system >= q1.migrated_to_system + N as u64);
    drop(b);
    settle(&d, q0.devmem_used)?;
    Ok(())
}
