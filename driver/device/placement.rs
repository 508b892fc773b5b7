// SPDX-License-Identifier: GPL-2.0
//! Placement policy: MADVISE (where the device wants a span's pages, how its atomics work),
//! PREFETCH with a destination, and what the fault worker does with the policy before a
//! batch (moves the pages a device-preferred span faults on into that device memory, its own
//! or a peer's). The map
//! itself is the engine's (`svm/src/policy.rs`); `Documentation/kernel.rst`, "Placement
//! policy".

use super::*;
use crate::engine::MIGRATE_CHUNK;
use crate::platform::Devmem;
use crate::policy::Attr;

/// The memory a span's `location` names, for `Place::Device`: this device's or a peer's
/// (`None` for system memory, or a peer without memory).
fn memory_of(e: &KEngine, location: Location) -> Option<KDevRef> {
    match location {
        Location::System => None,
        Location::Device => e.devmem().0.clone().map(|d| KDevRef(Some(d))),
        Location::Peer(i) => accel_devmem(i as usize).map(|d| KDevRef(Some(d))),
    }
}

impl Ctx {
    pub(super) fn madvise(&self, a: &mut uapi::Madvise) -> Result<(), Errno> {
        // An output, valid on every error (ENOTCONN and EXDEV included).
        a.done = 0;
        let b = self.bound_here()?;
        if a.location != uapi::LOC_PEER && a.device != 0 {
            return Err(Errno::EINVAL);
        }
        let location = match a.location {
            uapi::LOC_SYSTEM => Location::System,
            uapi::LOC_DEVICE => Location::Device,
            uapi::LOC_PEER => {
                // SAFETY: no preconditions (reads the glue's table of minors).
                let i = unsafe { ffi::svm_accel_by_minor(a.device) };
                match usize::try_from(i) {
                    Err(_) => return Err(ENODEV),
                    Ok(i) if i == self.index => Location::Device,
                    Ok(i) => Location::Peer(i as u32),
                }
            }
            _ => return Err(Errno::EINVAL),
        };
        let atomic = match a.atomic {
            uapi::ATOMIC_GLOBAL => AtomicMode::Global,
            uapi::ATOMIC_DEVICE => AtomicMode::Device,
            _ => return Err(Errno::EINVAL),
        };
        if a.flags & !uapi::MADVISE_MIGRATE != 0 {
            return Err(Errno::EINVAL);
        }
        let e = b.engine();
        let end = e.user_span(a.start, a.len)?;
        let mem = memory_of(e, location);
        // Device memory (ours or a peer's) exists only under the one owner all accel
        // devices share: if this device has none, neither has the peer.
        if location != Location::System && (mem.is_none() || e.devmem().owner() == 0) {
            return Err(Errno::EOPNOTSUPP);
        }
        self.policy
            .lock()
            .set(a.start, end, Attr { location, atomic })?;
        if a.flags & uapi::MADVISE_MIGRATE == 0 {
            return Ok(());
        }
        let (to, mem) = match mem {
            Some(m) => (Place::Device, m),
            None => (Place::System, KDevRef(e.devmem().0.clone())),
        };
        migrate_killable(e, a.start, end, to, &mem, &mut a.done, &self.gone, |_, _, _| {
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
        migrate_killable(e, a.start, end, to, e.devmem(), &mut moved, &self.gone, |s, va, l| {
            let mut d = 0;
            let r = e.prefetch(s, va, l, access, &mut d);
            a.done += d;
            r
        })
        .map(|_| ())
    }

    /// Before a batch: each fault (not an atomic one) in a span whose preferred location is
    /// the device's memory or a peer's moves the block around it there first (once per
    /// block).
    pub(super) fn place_batch(&self, b: &Binding, ws: &mut WorkerState) {
        const BLOCK: u64 = (MIGRATE_CHUNK as u64) << PAGE_SHIFT;
        let e = b.engine();
        if e.devmem().owner() == 0 {
            return;
        }
        let mut last = u64::MAX;
        for i in 0..ws.waiters.len() {
            let (va, atomic) = (ws.waiters[i].va, ws.waiters[i].atomic);
            if atomic || va & !(BLOCK - 1) == last {
                continue;
            }
            let span = self.policy.lock().span_at(va);
            let Some((s, end, attr)) = span else {
                continue;
            };
            let Some(mem) = memory_of(e, attr.location) else {
                continue;
            };
            last = va & !(BLOCK - 1);
            e.place_for_fault_in(&mut ws.scratch, va, s, end, &mem);
        }
    }
}
