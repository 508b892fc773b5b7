//! User-mode queues (issue 12): CREATE_QUEUE, DESTROY_QUEUE and WAIT, the doorbell protocol
//! (include/uapi/drm/svm_accel.h, "user-mode queues"), the error state, and queues while the
//! process forks, unmaps, protects, migrates, exits, closes and is killed. Plus `--qbench`:
//! small jobs through a queue against the same jobs through SUBMIT.

use crate::uapi::*;
use crate::{add, ename, fill, move_pages, read, svmstat, Buf, Dev, TResult, PAGE, TASK_TOP};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ENTRY: usize = std::mem::size_of::<drm_svm_accel_qentry>();
const SEC: u64 = 1_000_000_000;
/// A user address nothing can map (below `vm.mmap_min_addr`): a hole for good.
const HOLE: u64 = 0x1000;

impl Dev {
    pub(crate) fn create_queue(
        &self,
        ring: u64,
        entries: u32,
        doorbell: u64,
        fence: u64,
        priority: u32,
    ) -> Result<u32, i32> {
        let mut c = drm_svm_accel_create_queue {
            ring,
            doorbell,
            fence,
            ring_entries: entries,
            priority,
            ..Default::default()
        };
        self.ioctl(DRM_IOCTL_SVM_ACCEL_CREATE_QUEUE as u64, &mut c)?;
        Ok(c.queue_id)
    }

    pub(crate) fn destroy_queue(&self, id: u32) -> Result<(), i32> {
        let mut c = drm_svm_accel_destroy_queue {
            queue_id: id,
            pad: 0,
        };
        self.ioctl(DRM_IOCTL_SVM_ACCEL_DESTROY_QUEUE as u64, &mut c)
    }

    pub(crate) fn wait_queue(
        &self,
        id: u32,
        value: u64,
        timeout_ns: u64,
    ) -> (Result<(), i32>, drm_svm_accel_wait) {
        let mut w = drm_svm_accel_wait {
            queue_id: id,
            value,
            timeout_ns,
            ..Default::default()
        };
        let r = self.ioctl(DRM_IOCTL_SVM_ACCEL_WAIT as u64, &mut w);
        (r, w)
    }
}

/// A queue and its memory: the ring in a mapping of its own, the doorbell and the fence
/// words each on a page of their own in a second one.
pub(crate) struct Q<'a> {
    d: &'a Dev,
    pub id: u32,
    pub ring: Buf,
    pub words: Buf,
    entries: u64,
    /// Jobs written so far (the doorbell value the next `ring_doorbell` stores).
    pub next: u64,
}

impl<'a> Q<'a> {
    pub(crate) fn new(d: &'a Dev, entries: u32, priority: u32) -> Result<Q<'a>, String> {
        let ring = Buf::new((entries as usize * ENTRY).max(PAGE));
        let words = Buf::new(2 * PAGE);
        let id = d
            .create_queue(
                ring.addr(),
                entries,
                words.addr(),
                words.addr() + PAGE as u64,
                priority,
            )
            .map_err(|e| format!("CREATE_QUEUE: {}", ename(e)))?;
        Ok(Q {
            d,
            id,
            ring,
            words,
            entries: entries as u64,
            next: 0,
        })
    }

    pub(crate) fn doorbell_addr(&self) -> u64 {
        self.words.addr()
    }

    pub(crate) fn fence_addr(&self) -> u64 {
        self.words.addr() + PAGE as u64
    }

    pub(crate) fn slot_addr(&self, job: u64) -> u64 {
        self.ring.addr() + (job % self.entries) * ENTRY as u64
    }

    /// Writes `op` as the next job (not yet announced).
    pub(crate) fn push(&mut self, op: drm_svm_accel_op) {
        let e = drm_svm_accel_qentry {
            op,
            user: [self.next, 0],
        };
        // SAFETY: an entry of our ring mapping, 64-byte aligned; the device reads it only
        // after the doorbell store below publishes it.
        unsafe { std::ptr::write_volatile(self.slot_addr(self.next) as *mut _, e) };
        self.next += 1;
    }

    /// Announces `jobs` FILLs of `chunk` bytes: job i fills chunk i mod `chunks` from `base`
    /// with `value(i)`.
    pub(crate) fn fills(
        &mut self,
        base: u64,
        chunk: u64,
        jobs: u64,
        chunks: u64,
        value: impl Fn(u64) -> u64,
    ) {
        for i in 0..jobs {
            self.push(fill(base + (i % chunks) * chunk, chunk, value(i)));
        }
        self.ring_doorbell();
    }

    pub(crate) fn ring_doorbell(&self) {
        self.words.words()[0].store(self.next, Ordering::Release);
    }

    /// Pushes `ops` and rings the doorbell; returns the fence value that completes them.
    pub(crate) fn submit(&mut self, ops: &[drm_svm_accel_op]) -> u64 {
        for &o in ops {
            self.push(o);
        }
        self.ring_doorbell();
        self.next
    }

    pub(crate) fn fence(&self) -> u64 {
        self.words.words()[PAGE / 8].load(Ordering::Acquire)
    }

    /// The result word the device wrote back into job `job`'s entry.
    pub(crate) fn result(&self, job: u64) -> u64 {
        // SAFETY: in our ring mapping, 8-byte aligned.
        unsafe { (*((self.slot_addr(job) + 40) as *const AtomicU64)).load(Ordering::Acquire) }
    }

    pub(crate) fn wait(
        &self,
        value: u64,
        timeout_ns: u64,
    ) -> (Result<(), i32>, drm_svm_accel_wait) {
        self.d.wait_queue(self.id, value, timeout_ns)
    }

    /// Waits (up to 10 s) for `value`, which must come.
    pub(crate) fn wait_ok(&self, value: u64) -> TResult {
        let (r, w) = self.wait(value, 10 * SEC);
        r.map_err(|e| {
            format!(
                "WAIT {value}: {} (completed {}, state {}, error {}, addr {:#x})",
                ename(e),
                w.completed,
                w.state,
                ename(-w.error),
                w.fault_addr
            )
        })?;
        check!(w.completed >= value && self.fence() >= value);
        Ok(())
    }

    /// Waits for the error state; returns the WAIT record.
    pub(crate) fn wait_error(&self, value: u64) -> Result<drm_svm_accel_wait, String> {
        let (r, w) = self.wait(value, 10 * SEC);
        check!(
            r == Err(libc::EIO) && w.state == SVM_ACCEL_QUEUE_ERROR,
            "WAIT for the error state: {:?} state {} completed {}",
            r.map_err(ename),
            w.state,
            w.completed
        );
        Ok(w)
    }
}

impl Drop for Q<'_> {
    fn drop(&mut self) {
        // A test that failed half-way leaves no queue behind on the long-lived file (a later
        // test's ring could reuse this one's address); ENOENT when the test destroyed it.
        let _ = self.d.destroy_queue(self.id);
    }
}

/// The debugfs `ctx-N` directory and `queues` line of the queue whose ring is at `ring`.
fn queue_line(ring: u64) -> Result<(String, String), String> {
    for e in std::fs::read_dir(svmstat::ROOT).map_err(|e| e.to_string())? {
        let e = e.map_err(|e| e.to_string())?;
        let Ok(t) = std::fs::read_to_string(e.path().join("queues")) else {
            continue;
        };
        let key = format!("ring={ring:#x} ");
        if let Some(l) = t.lines().find(|l| l.contains(&key)) {
            return Ok((e.path().to_string_lossy().into_owned(), l.to_string()));
        }
    }
    Err(format!("no debugfs queues line with ring {ring:#x}"))
}

// ---- the protocol ------------------------------------------------------------------------

pub(crate) fn t_queue_basic(d: &Dev) -> TResult {
    let b = Buf::new(64 << 10);
    let mut q = Q::new(d, 64, SVM_ACCEL_QUEUE_PRIORITY_NORMAL)?;
    let n = q.submit(&[
        fill(b.addr(), b.len as u64, 7),
        add(b.addr(), 5),
        read(b.addr(), b.len as u64),
    ]);
    q.wait_ok(n)?;
    check!(q.fence() == 3, "fence {}", q.fence());
    check!(q.result(1) == 7, "ADD's old value {}", q.result(1));
    check!(
        q.result(2) == 7 * (b.len as u64 / 8) + 5,
        "READ's sum {}",
        q.result(2)
    );
    check!(b.words()[0].load(Ordering::Relaxed) == 12);
    // 1000 jobs more, in bursts that wrap the ring, with no system call: the process
    // polls the fence word, the device polls the doorbell.
    let t = Instant::now();
    let mut want = 12u64;
    while q.next < 1003 {
        let k = (1003 - q.next).min(40);
        for _ in 0..k {
            q.push(add(b.addr(), 1));
            want += 1;
        }
        q.ring_doorbell();
        while q.fence() < q.next {
            check!(
                t.elapsed() < Duration::from_secs(20),
                "fence stuck at {} of {}",
                q.fence(),
                q.next
            );
            std::hint::spin_loop();
        }
    }
    check!(b.words()[0].load(Ordering::Relaxed) == want);
    // A WAIT with timeout 0 is the queue query.
    let (r, w) = q.wait(0, 0);
    check!(r.is_ok() && w.state == SVM_ACCEL_QUEUE_ACTIVE && w.completed == 1003);
    let (r, w) = q.wait(1004, 0);
    check!(r == Err(libc::ETIME) && w.completed == 1003, "{r:?}");
    // Timeouts are honoured.
    let t = Instant::now();
    let (r, _) = q.wait(1004, 30_000_000);
    check!(r == Err(libc::ETIME) && t.elapsed() >= Duration::from_millis(30));
    let (dir, line) = queue_line(q.ring.addr())?;
    check!(
        line.contains("state=active") && line.contains("completed=1003"),
        "{dir}/queues: {line}"
    );
    d.destroy_queue(q.id).map_err(ename)?;
    check!(q.wait(0, 0).0 == Err(libc::ENOENT));
    check!(d.destroy_queue(q.id) == Err(libc::ENOENT));
    check!(
        queue_line(q.ring.addr()).is_err(),
        "destroyed queue still listed"
    );
    Ok(())
}

pub(crate) fn t_queue_bad_input(d: &Dev) -> TResult {
    let r = Buf::new(64 * ENTRY);
    let w = Buf::new(PAGE);
    let (ra, wa) = (r.addr(), w.addr());
    let cq = |ring, n, db, f, prio| d.create_queue(ring, n, db, f, prio);
    // Unbound.
    let u = Dev::open()?;
    check!(u.create_queue(ra, 64, wa, wa + 8, 0) == Err(libc::ENOTCONN));
    check!(u.wait_queue(1, 0, 0).0 == Err(libc::ENOTCONN));
    check!(u.destroy_queue(1) == Err(libc::ENOTCONN));
    drop(u);
    let bad: &[(u64, u32, u64, u64, u32, &str)] = &[
        (ra, 0, wa, wa + 8, 0, "0 entries"),
        (ra, 3, wa, wa + 8, 0, "3 entries"),
        (ra, 8192, wa, wa + 8, 0, "8192 entries"),
        (ra + 8, 64, wa, wa + 8, 0, "misaligned ring"),
        (ra, 64, wa + 4, wa + 8, 0, "misaligned doorbell"),
        (ra, 64, wa, wa + 9, 0, "misaligned fence"),
        (ra, 64, wa, wa + 8, 2, "priority 2"),
        (ra, 64, wa, wa + 8, u32::MAX, "priority ~0"),
        (TASK_TOP, 64, wa, wa + 8, 0, "ring past TASK_SIZE"),
        (u64::MAX - 63, 4096, wa, wa + 8, 0, "ring wrapping"),
        (ra, 64, u64::MAX - 7, wa + 8, 0, "doorbell wrapping"),
        (ra, 64, wa, 0xffff_8000_0000_0000, 0, "kernel fence"),
    ];
    for &(ring, n, db, f, prio, what) in bad {
        let e = cq(ring, n, db, f, prio);
        check!(e == Err(libc::EINVAL), "{what}: {e:?}");
    }
    let mut c = drm_svm_accel_create_queue {
        ring: ra,
        doorbell: wa,
        fence: wa + 8,
        ring_entries: 64,
        flags: 1,
        ..Default::default()
    };
    check!(d.ioctl(DRM_IOCTL_SVM_ACCEL_CREATE_QUEUE as u64, &mut c) == Err(libc::EINVAL));
    let mut x = drm_svm_accel_wait {
        queue_id: 1,
        flags: 1,
        ..Default::default()
    };
    check!(d.ioctl(DRM_IOCTL_SVM_ACCEL_WAIT as u64, &mut x) == Err(libc::EINVAL));
    let mut x = drm_svm_accel_destroy_queue {
        queue_id: 1,
        pad: 1,
    };
    check!(d.ioctl(DRM_IOCTL_SVM_ACCEL_DESTROY_QUEUE as u64, &mut x) == Err(libc::EINVAL));
    check!(d.wait_queue(0, 0, 0).0 == Err(libc::ENOENT));
    check!(d.wait_queue(u32::MAX, 0, 0).0 == Err(libc::ENOENT));
    check!(d.destroy_queue(12345) == Err(libc::ENOENT));
    // 16 queues per file (on one ring: the device only reads it once the doorbell moves),
    // then ENOSPC; ids are never reused.
    let mut ids = Vec::new();
    for i in 0..16 {
        let id = cq(ra, 64, wa, wa + 8, 0).map_err(|e| format!("queue {i}: {}", ename(e)))?;
        ids.push(id);
    }
    check!(cq(ra, 64, wa, wa + 8, 0) == Err(libc::ENOSPC));
    d.destroy_queue(ids[3]).map_err(ename)?;
    let id = cq(ra, 64, wa, wa + 8, 0).map_err(ename)?;
    check!(!ids.contains(&id), "id {id} reused");
    ids[3] = id;
    // A child that inherited the file is refused.
    // SAFETY: the child only makes syscalls.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let ok = cq(ra, 64, wa, wa + 8, 0) == Err(libc::EXDEV)
            && d.wait_queue(ids[0], 0, 0).0 == Err(libc::EXDEV)
            && d.destroy_queue(ids[0]) == Err(libc::EXDEV);
        // SAFETY: leaving the child.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut st = 0;
    // SAFETY: our child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    check!(
        libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
        "child {st:#x}"
    );
    // Hostile values: none may oops, hang or leak; every call returns.
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let picks = [
        0,
        1,
        8,
        63,
        64,
        ra,
        wa,
        TASK_TOP,
        u64::MAX,
        1 << 63,
        u64::MAX - 7,
    ];
    for _ in 0..2000 {
        let v = |r: u64| {
            if r & 1 == 0 {
                picks[(r >> 1) as usize % picks.len()]
            } else {
                r
            }
        };
        let mut c = drm_svm_accel_create_queue {
            ring: v(rnd()),
            doorbell: v(rnd()),
            fence: v(rnd()),
            ring_entries: v(rnd()) as u32,
            priority: (rnd() % 3) as u32,
            flags: (rnd() % 4 == 0) as u32,
            queue_id: rnd() as u32,
        };
        if d.ioctl(DRM_IOCTL_SVM_ACCEL_CREATE_QUEUE as u64, &mut c)
            .is_ok()
        {
            // The table was full: only after a destroy.
            d.destroy_queue(c.queue_id).map_err(ename)?;
        }
        let (_, _) = d.wait_queue(rnd() as u32 % 64, rnd(), rnd() % 1000);
        let _ = d.destroy_queue(rnd() as u32 % 64 + 10_000);
        if rnd() % 64 == 0 && !ids.is_empty() {
            let victim = ids.remove(rnd() as usize % ids.len());
            d.destroy_queue(victim).map_err(ename)?;
        }
    }
    for id in ids {
        d.destroy_queue(id).map_err(ename)?;
    }
    Ok(())
}

pub(crate) fn t_queue_high_priority(d: &Dev) -> TResult {
    let b = Buf::new(1 << 20);
    let mut hi = Q::new(d, 16, SVM_ACCEL_QUEUE_PRIORITY_HIGH)?;
    let mut lo = Q::new(d, 16, SVM_ACCEL_QUEUE_PRIORITY_NORMAL)?;
    let n1 = hi.submit(&[fill(b.addr(), 1 << 19, 1)]);
    let n2 = lo.submit(&[fill(b.addr() + (1 << 19), 1 << 19, 2)]);
    hi.wait_ok(n1)?;
    lo.wait_ok(n2)?;
    check!(b.sum(0, 1 << 20) == (1 << 16) + 2 * (1 << 16));
    let (_, line) = queue_line(hi.ring.addr())?;
    check!(line.contains("prio=high"), "{line}");
    // Without CAP_SYS_NICE: EACCES (the child drops every capability).
    // SAFETY: the child only makes syscalls.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let code = (|| {
            let d = Dev::bound().ok()?;
            // SAFETY: capset(2) clearing every set of this process.
            let hdr = [0x2008_0522u32, 0];
            let data = [0u32; 6];
            let r = unsafe { libc::syscall(libc::SYS_capset, hdr.as_ptr(), data.as_ptr()) };
            if r != 0 {
                return Some(2);
            }
            let r = Buf::new(PAGE);
            let e = d.create_queue(r.addr(), 16, r.addr() + 2048, r.addr() + 2056, 1);
            let ok = d.create_queue(r.addr(), 16, r.addr() + 2048, r.addr() + 2056, 0);
            Some(if e == Err(libc::EACCES) && ok.is_ok() {
                0
            } else {
                1
            })
        })()
        .unwrap_or(3);
        // SAFETY: leaving the child.
        unsafe { libc::_exit(code) };
    }
    let mut st = 0;
    // SAFETY: our child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    check!(
        libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
        "child {st:#x}"
    );
    Ok(())
}

// ---- failures ------------------------------------------------------------------------------

pub(crate) fn t_queue_error_state(d: &Dev) -> TResult {
    let b = Buf::new(64 << 10);
    let h = HOLE;
    let mut q1 = Q::new(d, 16, 0)?;
    let mut q2 = Q::new(d, 16, 0)?;
    // A job faulting on a hole: q1 stops with EFAULT there, after the job before it.
    let n = q1.submit(&[fill(b.addr(), 4096, 1), fill(h, 8, 2), fill(b.addr(), 8, 3)]);
    let w = q1.wait_error(n)?;
    check!(
        w.error == -libc::EFAULT && w.fault_addr == h && w.completed == 1,
        "error {} addr {:#x} (hole {h:#x}) completed {}",
        ename(-w.error),
        w.fault_addr,
        w.completed
    );
    check!(q1.fence() == 1 && b.words()[0].load(Ordering::Relaxed) == 1);
    // The other queue and the process go on.
    let n = q2.submit(&[fill(b.addr(), 8, 9)]);
    q2.wait_ok(n)?;
    check!(b.words()[0].load(Ordering::Relaxed) == 9);
    d.run(&mut [add(b.addr(), 1)])?;
    // q1 stays in the error state: new jobs do not run.
    let n = q1.submit(&[fill(b.addr() + 8192, 8, 5)]);
    std::thread::sleep(Duration::from_millis(20));
    check!(q1.wait(n, 0).0 == Err(libc::EIO) && b.words()[1024].load(Ordering::Relaxed) == 0);
    // An invalid entry: EINVAL at its slot.
    let mut q3 = Q::new(d, 16, 0)?;
    let mut bad = fill(b.addr(), 8, 1);
    bad.kind = 99;
    let n = q3.submit(&[add(b.addr(), 1), bad]);
    let w = q3.wait_error(n)?;
    check!(w.error == -libc::EINVAL && w.fault_addr == q3.slot_addr(1) && w.completed == 1);
    // A doorbell more than a ring ahead: EOVERFLOW at the doorbell.
    let q4 = Q::new(d, 16, 0)?;
    q4.words.words()[0].store(17, Ordering::Release);
    let w = q4.wait_error(17)?;
    check!(w.error == -libc::EOVERFLOW && w.fault_addr == q4.doorbell_addr());
    // A READ whose source is PROT_NONE, a queue of its own.
    let mut q5 = Q::new(d, 16, 0)?;
    let p = Buf::new(PAGE);
    p.protect(libc::PROT_NONE)?;
    let n = q5.submit(&[read(p.addr(), 8)]);
    let w = q5.wait_error(n)?;
    check!(w.error == -libc::EFAULT && w.fault_addr == p.addr());
    let (_, line) = queue_line(q1.ring.addr())?;
    check!(
        line.contains("state=error") && line.contains(&format!("addr={h:#x}")),
        "{line}"
    );
    for q in [&q1, &q2, &q3, &q4, &q5] {
        d.destroy_queue(q.id).map_err(ename)?;
    }
    Ok(())
}

/// The ring unmapped, the fence write-protected, while jobs run.
pub(crate) fn t_queue_munmap_mprotect(d: &Dev) -> TResult {
    let b = Buf::new(32 << 20);
    let mut q = Q::new(d, 64, 0)?;
    q.fills(b.addr(), 1 << 20, 32, 32, |i| i + 1);
    // One job more after the unmap, so the ring is read again for certain.
    q.ring.unmap();
    q.next += 1;
    q.ring_doorbell();
    let w = q.wait_error(q.next)?;
    let (lo, hi) = (q.ring.addr(), q.ring.addr() + q.ring.len as u64);
    check!(
        w.error == -libc::EFAULT && (lo..hi).contains(&w.fault_addr) && w.completed < 33,
        "error {} addr {:#x} ring {lo:#x}..{hi:#x} completed {}",
        ename(-w.error),
        w.fault_addr,
        w.completed
    );
    // What completed is in memory.
    for i in 0..w.completed {
        check!(b.words()[(i << 17) as usize].load(Ordering::Relaxed) == i + 1);
    }
    d.destroy_queue(q.id).map_err(ename)?;
    // The fence made read-only: the job runs, its completion cannot be written.
    let mut q = Q::new(d, 16, 0)?;
    let n = q.submit(&[fill(b.addr(), 8, 42)]);
    q.wait_ok(n)?;
    // SAFETY: the fence's page of our mapping.
    let r = unsafe { libc::mprotect((q.fence_addr()) as *mut _, PAGE, libc::PROT_READ) };
    check!(r == 0);
    let n = q.submit(&[fill(b.addr(), 8, 43)]);
    let w = q.wait_error(n)?;
    check!(
        w.error == -libc::EPERM && w.fault_addr == q.fence_addr() && w.completed == 1,
        "error {} addr {:#x} completed {}",
        ename(-w.error),
        w.fault_addr,
        w.completed
    );
    check!(b.words()[0].load(Ordering::Relaxed) == 43 && q.fence() == 1);
    d.destroy_queue(q.id).map_err(ename)?;
    Ok(())
}

/// Ring, doorbell and fence pages migrated between NUMA nodes and paged out while the queue
/// runs: the device faults them back in.
pub(crate) fn t_queue_migrate_swap(d: &Dev) -> TResult {
    let b = Buf::new(1 << 20);
    let mut q = Q::new(d, 256, 0)?;
    let pages: Vec<u64> = (0..q.ring.len / PAGE)
        .map(|i| q.ring.addr() + (i * PAGE) as u64)
        .chain([q.doorbell_addr(), q.fence_addr()])
        .collect();
    let two_nodes = std::path::Path::new("/sys/devices/system/node/node1").exists();
    let swap = crate::swap_on()?;
    let mut want = 0u64;
    for round in 0..40 {
        let k = 1 + round % 7;
        for _ in 0..k {
            q.push(add(b.addr() + (round as u64 % 128) * 8, 1));
            want += 1;
        }
        q.ring_doorbell();
        q.wait_ok(q.next)?;
        if two_nodes {
            move_pages(&pages, (round % 2) as i32)?;
        }
        if swap && round % 5 == 0 {
            q.ring.advise(0, q.ring.len, libc::MADV_PAGEOUT)?;
            q.words.advise(0, q.words.len, libc::MADV_PAGEOUT)?;
        }
        if round % 9 == 0 {
            // Zeroes the entries the device already ran, and drops the pages.
            q.ring.advise(0, q.ring.len, libc::MADV_DONTNEED)?;
        }
    }
    check!(b.sum(0, 1024) == want, "sum {} want {want}", b.sum(0, 1024));
    println!("    (numa moves: {two_nodes}, swap: {swap})");
    d.destroy_queue(q.id).map_err(ename)?;
    Ok(())
}

/// Fork while the device runs the queue: the device works on the parent's memory only,
/// COW-breaking the ring and fence the child shares; the child's copies are its own.
pub(crate) fn t_queue_fork(d: &Dev) -> TResult {
    let b = Buf::new(4 << 20);
    let mut q = Q::new(d, 64, 0)?;
    let n = q.submit(&[fill(b.addr(), 4 << 20, 1)]);
    q.wait_ok(n)?;
    q.fills(b.addr(), 128 << 10, 32, 32, |_| 2);
    // SAFETY: the child only touches its own memory and makes syscalls.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // The child's doorbell and ring are copies: announcing jobs there runs nothing.
        let f0 = q.fence();
        for _ in 0..8 {
            q.push(fill(b.addr(), 8, 99));
        }
        q.ring_doorbell();
        for w in b.words().iter().step_by(512) {
            w.store(7, Ordering::Relaxed);
        }
        std::thread::sleep(Duration::from_millis(50));
        let ok = q.fence() == f0 && b.words()[0].load(Ordering::Relaxed) == 7;
        // SAFETY: leaving the child (no destructors: the parent owns the queue).
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    check!(pid > 0);
    q.wait_ok(q.next)?;
    let mut st = 0;
    // SAFETY: our child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    check!(
        libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
        "child {st:#x}"
    );
    check!(
        b.sum(0, 4 << 20) == 2 * (4 << 17),
        "the parent's buffer is not all 2s"
    );
    check!(q.fence() == 33);
    // And the parent's queue goes on after the child left.
    let n = q.submit(&[add(b.addr(), 1)]);
    q.wait_ok(n)?;
    check!(b.words()[0].load(Ordering::Relaxed) == 3);
    d.destroy_queue(q.id).map_err(ename)?;
    Ok(())
}

/// DESTROY while a long job runs: when it returns, the device writes nothing more.
pub(crate) fn t_queue_destroy_running(d: &Dev) -> TResult {
    let b = Buf::new(64 << 20);
    let mut q = Q::new(d, 64, 0)?;
    q.fills(b.addr(), 1 << 20, 64, 64, |_| 5);
    std::thread::sleep(Duration::from_millis(5));
    let t = Instant::now();
    d.destroy_queue(q.id).map_err(ename)?;
    let took = t.elapsed();
    let f = q.fence();
    let s = b.sum(0, b.len);
    std::thread::sleep(Duration::from_millis(50));
    check!(
        q.fence() == f && b.sum(0, b.len) == s,
        "the device wrote after DESTROY"
    );
    println!(
        "    (destroyed after {f} of 64 jobs, in {} us)",
        took.as_micros()
    );
    Ok(())
}

/// The kernel's suspend and resume (debugfs `queues`): a suspended queue runs nothing.
pub(crate) fn t_queue_suspend_resume(d: &Dev) -> TResult {
    let b = Buf::new(PAGE);
    let mut q = Q::new(d, 16, 0)?;
    let n = q.submit(&[add(b.addr(), 1)]);
    q.wait_ok(n)?;
    let (dir, _) = queue_line(q.ring.addr())?;
    let ctl = format!("{dir}/queues");
    std::fs::write(&ctl, "suspend").map_err(|e| format!("{ctl}: {e}"))?;
    let (_, w) = q.wait(0, 0);
    check!(w.state == SVM_ACCEL_QUEUE_SUSPENDED, "state {}", w.state);
    let n = q.submit(&[add(b.addr(), 1)]);
    let (r, w) = q.wait(n, 50_000_000);
    check!(r == Err(libc::ETIME) && w.completed == 1 && b.words()[0].load(Ordering::Relaxed) == 1);
    std::fs::write(&ctl, "resume\n").map_err(|e| format!("{ctl}: {e}"))?;
    q.wait_ok(n)?;
    check!(b.words()[0].load(Ordering::Relaxed) == 2);
    check!(std::fs::write(&ctl, "bogus").is_err());
    d.destroy_queue(q.id).map_err(ename)?;
    Ok(())
}

/// Several queues faulting at once, each on fresh memory, one of them high priority.
pub(crate) fn t_queue_many_faulting(d: &Dev) -> TResult {
    let bufs: Vec<Buf> = (0..4).map(|_| Buf::new(8 << 20)).collect();
    let mut qs = Vec::new();
    for i in 0..4 {
        qs.push(Q::new(d, 64, (i == 0) as u32)?);
    }
    for (q, b) in qs.iter_mut().zip(&bufs) {
        q.fills(b.addr(), 256 << 10, 32, 32, |k| k + 1);
    }
    for q in &qs {
        q.wait_ok(32)?;
    }
    for b in &bufs {
        let want: u64 = (1..=32u64).map(|k| k * (32 << 10)).sum();
        check!(b.sum(0, b.len) == want);
    }
    for q in &qs {
        d.destroy_queue(q.id).map_err(ename)?;
    }
    Ok(())
}

// ---- the process goes away ----------------------------------------------------------------

/// A child with running queues exits, closes its file, or is killed while it waits: it
/// leaves promptly, and its contexts go (kmemleak checks the rest at the end of the run).
pub(crate) fn t_queue_exit_close_kill() -> TResult {
    for how in ["exit", "close", "kill"] {
        let before: Vec<String> = svmstat::snapshot(svmstat::ROOT)?.into_keys().collect();
        // SAFETY: the child only makes syscalls and touches its own memory.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let code = (|| -> Result<(), String> {
                let d: &'static Dev = Box::leak(Box::new(Dev::bound()?));
                let b = Buf::new(32 << 20);
                let mut qs = Vec::new();
                for _ in 0..3 {
                    let mut q = Q::new(d, 64, 0)?;
                    q.fills(b.addr(), 1 << 20, 64, 32, |i| i);
                    qs.push(q);
                }
                match how {
                    "exit" => {}
                    "close" => {
                        // SAFETY: our file; `d` is never used again.
                        unsafe { libc::close(d.fd) };
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    _ => {
                        let (r, _) = qs[0].wait(u64::MAX, u64::MAX);
                        return Err(format!("WAIT returned {r:?}"));
                    }
                }
                std::mem::forget(qs);
                std::mem::forget(b);
                Ok(())
            })();
            // SAFETY: leaving the child.
            unsafe { libc::_exit(if code.is_ok() { 0 } else { 1 }) };
        }
        check!(pid > 0);
        if how == "kill" {
            std::thread::sleep(Duration::from_millis(100));
            // SAFETY: our child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let t = Instant::now();
        let mut st = 0;
        // SAFETY: our child.
        unsafe { libc::waitpid(pid, &mut st, 0) };
        let ok = if how == "kill" {
            libc::WIFSIGNALED(st) && libc::WTERMSIG(st) == libc::SIGKILL
        } else {
            libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0
        };
        check!(ok, "{how}: child status {st:#x}");
        // Its context goes once the release work ran.
        loop {
            let now: Vec<String> = svmstat::snapshot(svmstat::ROOT)?.into_keys().collect();
            if now.iter().all(|n| before.contains(n)) {
                break;
            }
            check!(
                t.elapsed() < Duration::from_secs(10),
                "{how}: the child's context is still there: {now:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    Ok(())
}

/// A WAIT interrupted by a signal returns EINTR.
pub(crate) fn t_queue_wait_signal(d: &Dev) -> TResult {
    extern "C" fn nop(_: i32) {}
    let q = Q::new(d, 16, 0)?;
    // SAFETY: installing a handler that does nothing, without SA_RESTART.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = nop as extern "C" fn(i32) as usize;
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
    }
    // SAFETY: pthread_self of this thread, signalled from another.
    let me = unsafe { libc::pthread_self() } as u64;
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let th = std::thread::spawn(move || {
        while !s2.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
            // SAFETY: the test thread, alive until `stop`.
            unsafe { libc::pthread_kill(me as libc::pthread_t, libc::SIGUSR1) };
        }
    });
    // Nothing completes job 1: only a signal ends the wait before its 5 s (ETIME).
    let (r, _) = q.wait(1, 5 * SEC);
    stop.store(true, Ordering::Relaxed);
    th.join().unwrap();
    check!(r == Err(libc::EINTR), "{:?}", r.map_err(ename));
    d.destroy_queue(q.id).map_err(ename)?;
    Ok(())
}

/// The `svm:svm_queue` and `svm:svm_queue_run` tracepoints.
pub(crate) fn t_queue_tracepoints(d: &Dev) -> TResult {
    let root = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .into_iter()
        .find(|r| std::path::Path::new(&format!("{r}/events/svm/svm_queue")).exists())
        .ok_or("no events/svm/svm_queue in tracefs")?;
    let put = |f: &str, v: &str| {
        std::fs::write(format!("{root}/{f}"), v).map_err(|e| format!("{root}/{f}: {e}"))
    };
    put("events/svm/svm_queue/enable", "1")?;
    put("events/svm/svm_queue_run/enable", "1")?;
    put("trace", "")?;
    let b = Buf::new(PAGE);
    let h = HOLE;
    let r = (|| -> TResult {
        let mut q = Q::new(d, 16, 0)?;
        let n = q.submit(&[add(b.addr(), 1), add(b.addr(), 1)]);
        q.wait_ok(n)?;
        let n = q.submit(&[add(h, 1)]);
        q.wait_error(n)?;
        d.destroy_queue(q.id).map_err(ename)?;
        Ok(())
    })();
    let t = std::fs::read_to_string(format!("{root}/trace")).map_err(|e| e.to_string());
    put("events/svm/svm_queue/enable", "0")?;
    put("events/svm/svm_queue_run/enable", "0")?;
    r?;
    let t = t?;
    let has = |ev: &str, parts: &[&str]| {
        t.lines()
            .any(|l| l.contains(ev) && parts.iter().all(|p| l.contains(p)))
    };
    check!(has("svm_queue:", &["created"]), "no created event:\n{t}");
    check!(has("svm_queue_run:", &["completed="]), "no run event:\n{t}");
    check!(
        has("svm_queue:", &["error", "err=-14", &format!("addr={h:#x}")]),
        "no error event:\n{t}"
    );
    check!(
        has("svm_queue:", &["destroyed"]),
        "no destroyed event:\n{t}"
    );
    Ok(())
}

// ---- the storm ---------------------------------------------------------------------------

/// Errnos a queue may fail with in the storm (WAIT's `error`, negated).
const STORM_QERR: &[i32] = &[
    libc::EFAULT,
    libc::EPERM,
    libc::EINVAL,
    libc::EOVERFLOW,
    libc::EBUSY,
    libc::ENOMEM,
];

/// Queues under churn for `secs` seconds, on a file of their own: 4 threads each run a queue
/// of ADDs to a counter of their own (and FILLs into a spare buffer), WAITing with short
/// timeouts or polling the fence, destroying and re-creating their queue now and then, while
/// a churn thread unmaps and remaps the spare buffers, write-protects them, forks, drops the
/// rings with `MADV_DONTNEED` and suspends and resumes the queues through debugfs. Every call
/// must return a documented result; a WAIT that returns 0 must find its fence written; a
/// queue's counter must hold one ADD per completed ADD job until the queue fails (then the
/// thread re-creates it and counts afresh). The kernel's reports are the harness's.
pub(crate) fn t_queue_storm(secs: u64) -> TResult {
    use crate::storm::Rng;
    const THREADS: usize = 4;
    const SPARE: usize = 256 << 10;
    let d = Arc::new(Dev::bound()?);
    let stop = Arc::new(AtomicBool::new(false));
    // The spare buffers, remapped by the churn: their addresses stay (MAP_FIXED).
    let spares: Arc<Vec<u64>> = Arc::new(
        (0..THREADS)
            .map(|_| {
                let b = Buf::new(SPARE);
                let a = b.addr();
                std::mem::forget(b);
                a
            })
            .collect(),
    );
    let seed = 0x5107_0000 ^ std::process::id() as u64;
    let worker = |t: usize| {
        let (d, stop, spares) = (d.clone(), stop.clone(), spares.clone());
        std::thread::spawn(move || -> Result<[u64; 4], String> {
            let mut r = Rng::new(seed, t as u64);
            let counter = Buf::new(PAGE);
            let spare = spares[t];
            // jobs done, WAITs, queue errors, re-creations
            let mut st = [0u64; 4];
            while !stop.load(Ordering::Relaxed) {
                let mut q = Q::new(&d, 1 << (1 + r.below(6)), 0)?;
                let base = counter.words()[0].load(Ordering::Relaxed);
                let mut adds = 0u64;
                st[3] += 1;
                'queue: for _ in 0..(1 + r.below(40)) {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let room = q.entries - (q.next - q.wait(0, 0).1.completed);
                    let k = 1 + r.below(room.max(1));
                    for _ in 0..k.min(room) {
                        if r.chance(80) {
                            q.push(add(counter.addr(), 1));
                            adds += 1;
                        } else {
                            let off = 8 * r.below(SPARE as u64 / 8 - 512);
                            q.push(fill(spare + off, 8 * (1 + r.below(512)), r.below(1000)));
                        }
                    }
                    q.ring_doorbell();
                    let n = q.next;
                    let (res, w) = if r.chance(50) {
                        q.wait(n, r.below(3_000_000))
                    } else {
                        let t0 = Instant::now();
                        while q.fence() < n && t0.elapsed() < Duration::from_millis(3) {
                            std::hint::spin_loop();
                        }
                        q.wait(n, 0)
                    };
                    st[1] += 1;
                    match res {
                        Ok(()) => {
                            check!(
                                q.fence() >= n,
                                "WAIT returned with the fence at {}",
                                q.fence()
                            );
                        }
                        Err(libc::ETIME) => {}
                        Err(libc::EIO) => {
                            st[2] += 1;
                            check!(
                                w.state == SVM_ACCEL_QUEUE_ERROR && STORM_QERR.contains(&-w.error),
                                "queue error {} state {}",
                                ename(-w.error),
                                w.state
                            );
                            break 'queue;
                        }
                        Err(e) => return Err(format!("WAIT: {}", ename(e))),
                    }
                }
                // Quiesce: let it finish what it can (a suspended queue does nothing).
                let (_, w) = q.wait(q.next, 20_000_000);
                st[0] += w.completed;
                d.destroy_queue(q.id)
                    .map_err(|e| format!("DESTROY: {}", ename(e)))?;
                if w.state == SVM_ACCEL_QUEUE_ACTIVE && w.completed == q.next {
                    let c = counter.words()[0].load(Ordering::Relaxed);
                    check!(c == base + adds, "counter {c}, want {} + {adds}", base);
                }
            }
            Ok(st)
        })
    };
    let workers: Vec<_> = (0..THREADS).map(worker).collect();
    let churn = {
        let (stop, spares) = (stop.clone(), spares.clone());
        std::thread::spawn(move || -> Result<[u64; 5], String> {
            let mut r = Rng::new(seed, 99);
            let mut n = [0u64; 5];
            while !stop.load(Ordering::Relaxed) {
                let s = spares[r.below(THREADS as u64) as usize];
                match r.below(10) {
                    0..=2 => {
                        // SAFETY: remapping our own spare buffer in place.
                        let p = unsafe {
                            libc::mmap(
                                s as *mut _,
                                SPARE,
                                libc::PROT_READ | libc::PROT_WRITE,
                                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                                -1,
                                0,
                            )
                        };
                        check!(p as u64 == s, "remap: {}", ename(crate::errno()));
                        n[0] += 1;
                    }
                    3..=4 => {
                        let prot = if r.chance(50) {
                            libc::PROT_READ
                        } else {
                            libc::PROT_READ | libc::PROT_WRITE
                        };
                        // SAFETY: our own spare buffer.
                        unsafe { libc::mprotect(s as *mut _, SPARE, prot) };
                        n[1] += 1;
                    }
                    5 => {
                        // SAFETY: the child only exits.
                        let pid = unsafe { libc::fork() };
                        if pid == 0 {
                            // SAFETY: leaving the child.
                            unsafe { libc::_exit(0) };
                        }
                        let mut st = 0;
                        // SAFETY: our child.
                        unsafe { libc::waitpid(pid, &mut st, 0) };
                        n[2] += 1;
                    }
                    6..=7 => {
                        for e in std::fs::read_dir(svmstat::ROOT).map_err(|e| e.to_string())? {
                            let f = e.map_err(|e| e.to_string())?.path().join("queues");
                            if std::fs::read_to_string(&f).is_ok_and(|t| !t.is_empty()) {
                                let _ = std::fs::write(&f, "suspend");
                                std::thread::sleep(Duration::from_micros(r.below(2000)));
                                std::fs::write(&f, "resume")
                                    .map_err(|e| format!("{}: {e}", f.display()))?;
                                n[3] += 1;
                            }
                        }
                    }
                    _ => {
                        // SAFETY: our own spare buffer.
                        unsafe { libc::madvise(s as *mut _, SPARE, libc::MADV_DONTNEED) };
                        n[4] += 1;
                    }
                }
                std::thread::sleep(Duration::from_micros(200 + r.below(2000)));
            }
            Ok(n)
        })
    };
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    let mut tot = [0u64; 4];
    let mut first_err = None;
    for w in workers {
        match w.join().map_err(|_| "worker panicked".to_string())? {
            Ok(st) => (0..4).for_each(|i| tot[i] += st[i]),
            Err(e) => first_err = first_err.or(Some(e)),
        }
    }
    let n = churn.join().map_err(|_| "churn panicked".to_string())??;
    println!(
        "    (jobs {} WAITs {} queue errors {} queues {}; remaps {} mprotects {} forks {} \
         suspend/resumes {} DONTNEEDs {})",
        tot[0], tot[1], tot[2], tot[3], n[0], n[1], n[2], n[3], n[4]
    );
    first_err.map_or(Ok(()), Err)
}

// ---- the benchmark -----------------------------------------------------------------------

/// `--qbench`: small jobs (one ADD each) through a queue against the same jobs through
/// SUBMIT, and several queues faulting at once. Throughputs are medians (with min and max) of
/// `trials` runs after a warm-up run; latencies are pooled over 2000 jobs. Prints tables;
/// asserts nothing.
pub(crate) fn qbench(jobs: u64, trials: usize) -> TResult {
    let d = Dev::bound()?;
    let b = Buf::new(PAGE);
    d.run(&mut [fill(b.addr(), 8, 0)])?;
    let pct = |v: &mut Vec<u64>, p: usize| {
        v.sort_unstable();
        v[(v.len() - 1) * p / 100]
    };
    let spread = |v: &mut Vec<f64>| {
        v.sort_unstable_by(|a, b| a.total_cmp(b));
        (v[v.len() / 2], v[0], v[v.len() - 1])
    };
    // One untimed run first, then `trials` timed ones: rates.
    let rates = |f: &mut dyn FnMut() -> TResult| -> Result<Vec<f64>, String> {
        f()?;
        let mut r = Vec::new();
        for _ in 0..trials {
            let t = Instant::now();
            f()?;
            r.push(jobs as f64 / t.elapsed().as_secs_f64());
        }
        Ok(r)
    };
    println!("qbench: {jobs} one-ADD jobs each way, {trials} trials");
    println!(
        "| path | jobs/s (median) | min | max | latency p50 (us) | p99 (us) |\n\
         |---|--:|--:|--:|--:|--:|"
    );
    // SUBMIT: one ioctl per job.
    let mut sr = rates(&mut || {
        for _ in 0..jobs {
            d.run(&mut [add(b.addr(), 1)])?;
        }
        Ok(())
    })?;
    let mut lat = Vec::new();
    for _ in 0..2000 {
        let t = Instant::now();
        d.run(&mut [add(b.addr(), 1)])?;
        lat.push(t.elapsed().as_nanos() as u64);
    }
    let (submit_rate, lo, hi) = spread(&mut sr);
    println!(
        "| SUBMIT ioctl | {submit_rate:.0} | {lo:.0} | {hi:.0} | {:.1} | {:.1} |",
        pct(&mut lat, 50) as f64 / 1e3,
        pct(&mut lat, 99) as f64 / 1e3
    );
    // Queue, throughput: bursts of up to a ring's worth, the process polling the fence word.
    let mut q = Q::new(&d, 256, 0)?;
    let mut qr = rates(&mut || {
        let end = q.next + jobs;
        while q.next < end {
            let k = (end - q.next).min(256 - (q.next - q.fence()));
            for _ in 0..k {
                q.push(add(b.addr(), 1));
            }
            q.ring_doorbell();
            while q.next - q.fence() > 128 {
                std::hint::spin_loop();
            }
        }
        while q.fence() < q.next {
            std::hint::spin_loop();
        }
        Ok(())
    })?;
    // Queue, latency of one job: polled (no system call), and with WAIT.
    let mut lat = Vec::new();
    let mut latw = Vec::new();
    for i in 0..4000 {
        let t = Instant::now();
        let n = q.submit(&[add(b.addr(), 1)]);
        if i % 2 == 0 {
            while q.fence() < n {
                std::hint::spin_loop();
            }
            lat.push(t.elapsed().as_nanos() as u64);
        } else {
            q.wait_ok(n)?;
            latw.push(t.elapsed().as_nanos() as u64);
        }
    }
    let (queue_rate, lo, hi) = spread(&mut qr);
    println!(
        "| queue, fence polled | {queue_rate:.0} | {lo:.0} | {hi:.0} | {:.1} | {:.1} |",
        pct(&mut lat, 50) as f64 / 1e3,
        pct(&mut lat, 99) as f64 / 1e3
    );
    println!(
        "| queue, WAIT | - | - | - | {:.1} | {:.1} |",
        pct(&mut latw, 50) as f64 / 1e3,
        pct(&mut latw, 99) as f64 / 1e3
    );
    println!(
        "speed-up, queue over SUBMIT (medians): {:.2}x",
        queue_rate / submit_rate
    );
    d.destroy_queue(q.id).map_err(ename)?;
    // Fault service with 1, 2 and 4 queues each filling fresh memory (first touch).
    println!(
        "\n| queues faulting at once | MiB | MiB/s (median) | min | max |\n|--:|--:|--:|--:|--:|"
    );
    for nq in [1usize, 2, 4] {
        let per = 32usize << 20;
        let mut r = Vec::new();
        for trial in 0..=trials {
            let bufs: Vec<Buf> = (0..nq).map(|_| Buf::new(per)).collect();
            let mut qs = Vec::new();
            for _ in 0..nq {
                qs.push(Q::new(&d, 64, 0)?);
            }
            let mib = (per >> 20) as u64;
            let t = Instant::now();
            for (q, b) in qs.iter_mut().zip(&bufs) {
                q.fills(b.addr(), 1 << 20, mib, mib, |_| 1);
            }
            for q in &qs {
                q.wait_ok(q.next)?;
            }
            if trial > 0 {
                r.push((nq * per) as f64 / (1 << 20) as f64 / t.elapsed().as_secs_f64());
            }
        }
        let (m, lo, hi) = spread(&mut r);
        println!(
            "| {nq} | {} | {m:.0} | {lo:.0} | {hi:.0} |",
            (nq * per) >> 20
        );
    }
    Ok(())
}

pub(crate) fn t_queue_bench_short(_d: &Dev) -> TResult {
    qbench(2000, 3)
}
