// SPDX-License-Identifier: GPL-2.0
//! The op interpreter: SUBMIT's jobs run in the calling thread as the device's execution
//! engine, a queue's on its command processor (`queue.rs`); every access goes through the
//! device TLB ([`TlbCursor`]). And PREFETCH.

use super::queue::Queue;
use super::*;

/// Who runs a job: an ioctl, in the caller's task, or a queue's command processor.
#[derive(Clone, Copy)]
pub(super) enum Exec<'a> {
    Ioctl,
    Queue(&'a Queue),
}

impl Exec<'_> {
    /// Told to stop: a fatal signal for an ioctl, a halt (DESTROY, teardown) for a queue (a
    /// suspend waits for the job to end).
    pub(super) fn stopped(&self) -> bool {
        match self {
            Exec::Ioctl => fatal_signal_pending(),
            Exec::Queue(q) => q.interrupted(),
        }
    }
}

impl Ctx {
    /// Performs one device access to the pages holding each `(va, access)` of `reqs` (at most
    /// two): translates them under the TLB lock, maps the pages with `kmap_local_page()` and
    /// runs `f` on pointers to the bytes at each va, still under the lock. A miss raises a
    /// device fault, waits for it, and replays.
    pub(super) fn access<R>(
        &self,
        b: &Binding,
        x: Exec<'_>,
        reqs: &[(u64, Access)],
        f: impl FnMut(&[*mut u8; 2]) -> R,
    ) -> Result<R, JobErr> {
        self.access_as(b, x, reqs, false, f)
    }

    /// [`Ctx::access`], for an atomic in device-exclusive mode too (`atomic`): only an atomic
    /// leaf will do, and a miss raises an atomic fault (the page is handed over).
    pub(super) fn access_as<R>(
        &self,
        b: &Binding,
        x: Exec<'_>,
        reqs: &[(u64, Access)],
        atomic: bool,
        mut f: impl FnMut(&[*mut u8; 2]) -> R,
    ) -> Result<R, JobErr> {
        let pt = b.engine().page_table();
        let tlb = b.engine().tlb();
        let mut replays = 0;
        loop {
            if x.stopped() {
                return Err(JobErr::Intr);
            }
            if self.gone.load(Ordering::Relaxed) {
                return Err(JobErr::Gone);
            }
            resched();
            let (va, acc) = {
                let mut cur = tlb.begin(this_unit());
                let mut pfns = [0u64; 2];
                let mut miss = None;
                for (i, &(va, acc)) in reqs.iter().enumerate() {
                    match cur.translate_for(pt, va, acc == Access::Write, atomic) {
                        Some(x) => pfns[i] = x.pfn,
                        None => {
                            miss = Some((va, acc));
                            break;
                        }
                    }
                }
                match miss {
                    Some(m) => m,
                    None => {
                        let mut base = [null_mut::<u8>(); 2];
                        let mut ptrs = [null_mut::<u8>(); 2];
                        for (i, &(va, _)) in reqs.iter().enumerate() {
                            // SAFETY: the pfn is a page the device may access now: its leaf
                            // is valid, and a flush (which precedes any unmap or free of the
                            // page) waits for the TLB lock we hold.
                            base[i] = unsafe { ffi::svm_kmap_pfn(pfns[i]) };
                            // SAFETY: in-page offset.
                            ptrs[i] = unsafe { base[i].add((va & (PAGE - 1)) as usize) };
                        }
                        let r = f(&ptrs);
                        for i in (0..reqs.len()).rev() {
                            // SAFETY: mapped above, unmapped in reverse order.
                            unsafe { ffi::svm_kunmap(base[i]) };
                        }
                        return Ok(r);
                    }
                }
            };
            replays += 1;
            if replays > MAX_REPLAYS {
                return Err(JobErr::Fault(Errno::EBUSY, va));
            }
            self.device_fault(x, va, acc, atomic)?;
        }
    }

    pub(super) fn check_op(op: &uapi::Op, task_size: u64) -> Result<(), Errno> {
        let span = |a: u64, l: u64| -> Result<(), Errno> {
            let end = a.checked_add(l).ok_or(Errno::EINVAL)?;
            if a & 7 != 0 || l & 7 != 0 || l > MAX_LEN || end > task_size {
                return Err(Errno::EINVAL);
            }
            Ok(())
        };
        if op.flags != 0 {
            return Err(Errno::EINVAL);
        }
        match op.kind {
            uapi::OP_FILL => span(op.dst, op.len),
            uapi::OP_COPY => {
                span(op.src, op.len)?;
                span(op.dst, op.len)
            }
            uapi::OP_ADD => span(op.dst, 8),
            uapi::OP_READ => span(op.src, op.len),
            _ => Err(Errno::EINVAL),
        }
    }

    /// Runs one op; returns its result word.
    pub(super) fn run_op(&self, b: &Binding, x: Exec<'_>, op: &uapi::Op) -> Result<u64, JobErr> {
        let mut off = 0u64;
        let in_page = |va: u64| PAGE - (va & (PAGE - 1));
        match op.kind {
            uapi::OP_FILL => {
                while off < op.len {
                    let va = op.dst + off;
                    let n = (op.len - off).min(in_page(va));
                    self.access(b, x, &[(va, Access::Write)], |p| {
                        for k in 0..(n / 8) as usize {
                            // SAFETY: in the mapped page, 8-byte aligned (va and n are).
                            let w = unsafe { AtomicU64::from_ptr(p[0].add(k * 8).cast()) };
                            w.store(op.value, Ordering::Relaxed);
                        }
                    })?;
                    off += n;
                }
                Ok(0)
            }
            uapi::OP_COPY => {
                while off < op.len {
                    let (s, d) = (op.src + off, op.dst + off);
                    let n = (op.len - off).min(in_page(s)).min(in_page(d));
                    self.access(b, x, &[(s, Access::Read), (d, Access::Write)], |p| {
                        for k in 0..(n / 8) as usize {
                            // SAFETY: both in their mapped pages, 8-byte aligned.
                            let (sw, dw) = unsafe {
                                (
                                    AtomicU64::from_ptr(p[0].add(k * 8).cast()),
                                    AtomicU64::from_ptr(p[1].add(k * 8).cast()),
                                )
                            };
                            dw.store(sw.load(Ordering::Relaxed), Ordering::Relaxed);
                        }
                    })?;
                    off += n;
                }
                Ok(0)
            }
            uapi::OP_ADD => {
                let atomic = self.policy.lock().get(op.dst).atomic == AtomicMode::Device;
                self.access_as(b, x, &[(op.dst, Access::Write)], atomic, |p| {
                    // SAFETY: in the mapped page, 8-byte aligned.
                    let w = unsafe { AtomicU64::from_ptr(p[0].cast()) };
                    w.fetch_add(op.value, Ordering::SeqCst)
                })
            }
            uapi::OP_READ => {
                let mut sum = 0u64;
                while off < op.len {
                    let va = op.src + off;
                    let n = (op.len - off).min(in_page(va));
                    sum = self.access(b, x, &[(va, Access::Read)], |p| {
                        let mut s = sum;
                        for k in 0..(n / 8) as usize {
                            // SAFETY: in the mapped page, 8-byte aligned.
                            let w = unsafe { AtomicU64::from_ptr(p[0].add(k * 8).cast()) };
                            s = s.wrapping_add(w.load(Ordering::Relaxed));
                        }
                        s
                    })?;
                    off += n;
                }
                Ok(sum)
            }
            _ => Ok(0),
        }
    }

    pub(super) fn submit(&self, a: &mut uapi::Submit) -> Result<(), Errno> {
        let b = self.bound_here()?;
        a.error = 0;
        a.failed_op = 0;
        a.fault_addr = 0;
        let n = a.op_count;
        if a.flags != 0 || n == 0 || n > uapi::MAX_OPS {
            return Err(Errno::EINVAL);
        }
        let n = n as usize;
        let sz = core::mem::size_of::<uapi::Op>();
        let bytes = n * sz;
        let mut ops: KVVec<uapi::Op> = KVVec::with_capacity(n, GFP).map_err(|_| Errno::ENOMEM)?;
        {
            let spare = ops.spare_capacity_mut();
            // SAFETY: the spare capacity holds `n` ops = `bytes` bytes.
            let raw = unsafe {
                core::slice::from_raw_parts_mut(
                    spare.as_mut_ptr().cast::<core::mem::MaybeUninit<u8>>(),
                    bytes,
                )
            };
            UserSlice::new(a.ops_ptr as usize, bytes)
                .reader()
                .read_raw(raw)
                .map_err(|_| Errno::EFAULT)?;
        }
        // SAFETY: initialised by the copy above; `Op` is plain integers (any bits are valid).
        unsafe { ops.set_len(n) };
        let task_size = b.engine().config().task_size;
        for op in ops.iter() {
            Self::check_op(op, task_size)?;
        }
        self.jobs.fetch_add(1, Ordering::Relaxed);
        for (i, op) in ops.iter().enumerate() {
            // Ops of length 0 make no access: check between ops too.
            if fatal_signal_pending() {
                return Err(Errno::EINTR);
            }
            if self.gone.load(Ordering::Relaxed) {
                return Err(ENODEV);
            }
            resched();
            match self.run_op(b, Exec::Ioctl, op) {
                Ok(r) => {
                    if op.kind == uapi::OP_ADD || op.kind == uapi::OP_READ {
                        // The array was readable, so this cannot wrap; checked all the same,
                        // as everything derived from a user pointer.
                        let at = (a.ops_ptr as usize)
                            .checked_add(i * sz + uapi::OP_RESULT_OFFSET)
                            .ok_or(Errno::EFAULT)?;
                        UserSlice::new(at, 8)
                            .writer()
                            .write_slice(&r.to_ne_bytes())
                            .map_err(|_| Errno::EFAULT)?;
                    }
                }
                Err(JobErr::Intr) => return Err(Errno::EINTR),
                Err(JobErr::Gone) => return Err(ENODEV),
                Err(JobErr::Fault(e, va)) => {
                    a.error = -e.0;
                    a.failed_op = i as u32;
                    a.fault_addr = va;
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    // ---- PREFETCH -----------------------------------------------------------------

    pub(super) fn prefetch(&self, a: &mut uapi::Prefetch) -> Result<(), Errno> {
        // An output, valid on every error (ENOTCONN and EXDEV included).
        a.done = 0;
        let b = self.bound_here()?;
        let known = uapi::PREFETCH_WRITE | uapi::PREFETCH_TO_DEVICE | uapi::PREFETCH_TO_SYSTEM;
        let both = uapi::PREFETCH_TO_DEVICE | uapi::PREFETCH_TO_SYSTEM;
        if a.flags & !known != 0 || a.flags & both == both || a.pad != 0 {
            return Err(Errno::EINVAL);
        }
        b.engine().user_span(a.start, a.len)?;
        let access = if a.flags & uapi::PREFETCH_WRITE != 0 {
            Access::Write
        } else {
            Access::Read
        };
        let to = if a.flags & uapi::PREFETCH_TO_DEVICE != 0 {
            Some(Place::Device)
        } else if a.flags & uapi::PREFETCH_TO_SYSTEM != 0 {
            Some(Place::System)
        } else {
            None
        };
        match to {
            None => prefetch_killable(b.engine(), a.start, a.len, access, &mut a.done, &self.gone),
            Some(to) => self.prefetch_to(b, a, access, to),
        }
    }

    // ---- QUERY ----------------------------------------------------------------------
}
