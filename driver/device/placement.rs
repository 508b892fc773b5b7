// SPDX-License-Identifier: GPL-2.0
//! Placement policy: MADVISE (where the device wants a span's pages, how its atomics work),
//! PREFETCH with a destination, and what the fault worker does with the policy before a
//! batch (moves the pages a device-preferred span faults on into device memory). The map
//! itself is the engine's (`svm/src/policy.rs`); `Documentation/kernel.rst`, "Placement
//! policy".

use super::*;
use crate::engine::MIGRATE_CHUNK;
use crate::platform::Devmem;
use crate::policy::Attr;

impl Ctx {
    pub(super) fn madvise(&self, a: &mut uapi::Madvise) -> Result<(), Errno> {
        // An output, valid on every error (ENOTCONN and EXDEV included).
        a.done = 0;
        let b = self.bound_here()?;
        let location = match a.location {
            uapi::LOC_SYSTEM => Location::System,
            uapi::LOC_DEVICE => Location::Device,
            _ => return Err(Errno::EINVAL),
        };
        let atomic = match a.atomic {
            uapi::ATOMIC_GLOBAL => AtomicMode::Global,
            uapi::ATOMIC_DEVICE => AtomicMode::Device,
            _ => return Err(Errno::EINVAL),
        };
        if a.flags & !uapi::MADVISE_MIGRATE != 0 || a.pad != 0 {
            return Err(Errno::EINVAL);
        }
        let e = b.engine();
        let end = e.user_span(a.start, a.len)?;
        if location == Location::Device && e.devmem().owner() == 0 {
            return Err(Errno::EOPNOTSUPP);
        }
        self.policy
            .lock()
            .set(a.start, end, Attr { location, atomic })?;
        if a.flags & uapi::MADVISE_MIGRATE == 0 {
            return Ok(());
        }
        let to = match location {
            Location::Device => Place::Device,
            Location::System => Place::System,
        };
        migrate_killable(b.engine(), a.start, end, to, &mut a.done, &self.gone, |_, _, _| {
            Ok(())
        })
        .map(|_| ())
    }

    /// PREFETCH with a destination: each 2 MiB is moved to `to` (as far as its pages can
    /// move), then populated; `done` counts what is populated.
    pub(super) fn prefetch_to(
        &self,
        b: &Binding,
        a: &mut uapi::Prefetch,
        access: Access,
        to: Place,
    ) -> Result<(), Errno> {
        if to == Place::Device && b.engine().devmem().owner() == 0 {
            return Err(Errno::EOPNOTSUPP);
        }
        let (e, end) = (b.engine(), a.start + a.len);
        let mut moved = 0;
        migrate_killable(e, a.start, end, to, &mut moved, &self.gone, |s, va, l| {
            let mut d = 0;
            let r = e.prefetch(s, va, l, access, &mut d);
            a.done += d;
            r
        })
        .map(|_| ())
    }

    /// Before a batch: each fault (not an atomic one) in a span whose preferred location is
    /// the device moves the block around it into device memory first (once per block).
    pub(super) fn place_batch(&self, b: &Binding, ws: &mut WorkerState) {
        const BLOCK: u64 = (MIGRATE_CHUNK as u64) << PAGE_SHIFT;
        if b.engine().devmem().owner() == 0 {
            return;
        }
        let mut last = u64::MAX;
        for i in 0..ws.waiters.len() {
            let (va, atomic) = (ws.waiters[i].va, ws.waiters[i].atomic);
            if atomic || va & !(BLOCK - 1) == last {
                continue;
            }
            let span = self.policy.lock().span_at(va);
            if let Some((s, e, attr)) = span {
                if attr.location == Location::Device {
                    last = va & !(BLOCK - 1);
                    b.engine().place_for_fault(&mut ws.scratch, va, s, e);
                }
            }
        }
    }
}
