// SPDX-License-Identifier: GPL-2.0
//! The registry of open files, for unplug.

use super::*;
use crate::platform::Devmem;

/// Every open file's state. Entries are added when a file is opened, before the glue
/// publishes it, and removed at its release, before it is freed, both under the registry
/// lock, so a pointer found under the lock is live.
pub(crate) struct Registry {
    pub(super) ctxs: KVec<*const Ctx>,
    pub(crate) mirrors: KVec<*const Mirror>,
    /// The device memory of `/dev/hmm_dmirror0` and `1` (module init to exit).
    pub(crate) dm_devmem: [Option<KArc<KDevmem>>; 2],
    /// The device memory of each accel device (module init to exit: a page a process still
    /// maps after an unplug is brought back by a CPU fault, or at exit). Peers: one owner.
    pub(crate) accel_devmem: [Option<KArc<KDevmem>>; MAX_ACCEL],
}

// SAFETY: the pointers are dereferenced only under the registry lock (see `Registry`), from
// whichever task holds it; what they point to is used from any thread anyway.
unsafe impl Send for Registry {}

/// Removes `p` from a registry list (order is not kept; 6.12's `KVec` has no `swap_remove`).
pub(crate) fn unregister<T>(v: &mut KVec<*const T>, p: *const T) {
    if let Some(i) = v.iter().position(|&x| x == p) {
        let last = v.len() - 1;
        v.as_mut_slice().swap(i, last);
        // SAFETY: drops the last element from the length; a raw pointer needs no drop.
        unsafe { v.set_len(last) };
    }
}

/// The registry (a module-lifetime allocation: `registry_init` .. `registry_free`).
static REGISTRY: AtomicPtr<KMutex<Registry>> = AtomicPtr::new(null_mut());

/// Module init, before the glue registers the device (and so before any file opens).
pub(crate) fn registry_init() -> Result<(), Errno> {
    let r = Registry {
        ctxs: KVec::new(),
        mirrors: KVec::new(),
        dm_devmem: [None, None],
        accel_devmem: [const { None }; MAX_ACCEL],
    };
    // Shared by every process: not charged to any one's cgroup.
    let l = KMutex::boxed(r, ffi::LC_REGISTRY, GFP_KERNEL)?;
    REGISTRY.store(KBox::into_raw(l), Ordering::Release);
    Ok(())
}

/// The most accel devices the glue registers (its `SVM_MAX_ACCEL`).
pub(crate) const MAX_ACCEL: usize = 4;

/// Module init: device memory of `dm_mib` MiB for each dmirror device (with `dmirror=1`),
/// each with an owner of its own (as test_hmm's), and of `accel_mib` MiB for each of the
/// `accels` accel devices (0: none), all under the first one's owner: peers.
pub(crate) fn devmem_init(dm_mib: u64, accel_mib: u64, accels: usize) -> Result<(), Errno> {
    if dm_mib != 0 {
        for i in 0..2 {
            let d = KDevmem::new(dm_mib, 0)?;
            registry().lock().dm_devmem[i] = Some(d);
        }
    }
    if accel_mib != 0 {
        let mut owner = 0;
        for i in 0..accels.min(MAX_ACCEL) {
            let d = KDevmem::new(accel_mib, owner)?;
            owner = d.owner();
            registry().lock().accel_devmem[i] = Some(d);
        }
    }
    Ok(())
}

/// The memory of accel device `i`, if it has some.
pub(crate) fn accel_devmem(i: usize) -> Option<KArc<KDevmem>> {
    registry().lock().accel_devmem.get(i)?.clone()
}

/// Module exit, after the glue unregistered everything (no file is open): every device
/// page goes back to system memory, then the pagemaps go.
pub(crate) fn devmem_exit() {
    let taken = {
        let mut r = registry().lock();
        (
            core::mem::take(&mut r.dm_devmem),
            core::mem::take(&mut r.accel_devmem),
        )
    };
    drop(taken);
}

/// Module exit, after `devmem_exit`.
pub(crate) fn registry_free() {
    let p = REGISTRY.swap(null_mut(), Ordering::AcqRel);
    if !p.is_null() {
        // SAFETY: made by `registry_init`, freed once; no user is left.
        drop(unsafe { KBox::from_raw(p) });
    }
}

/// The registry lock. Callers run between `registry_init` and `registry_free`.
pub(crate) fn registry() -> &'static KMutex<Registry> {
    // SAFETY: set by module init before any file, probe or unplug, freed after all of them.
    unsafe { &*REGISTRY.load(Ordering::Acquire) }
}
