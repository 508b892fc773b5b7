// SPDX-License-Identifier: GPL-2.0
//! The bound mm (`Mm`), its interval notifiers (`Interval`) and `hmm_range_fault()`.

use super::MemcgScope;
use crate::ffi;
use crate::pgtable::Errno;
use crate::platform::{
    Event, HmmRequest, Interval, InvalidateFn, Invalidation, MigrateReq, Mm, Select, Vma,
};
use core::ffi::c_void;
use core::mem::ManuallyDrop;
use core::ptr::NonNull;
use kernel::prelude::*;

/// The bound `struct mm_struct`, pinned with `mmgrab()` (the struct, not the address space)
/// for the context's lifetime.
///
/// # Invariants
/// `mm` holds an `mm_count` reference owned by this value; `unmap_work` (may be null) is the
/// context's work item, alive while any notifier inserted through this value is.
pub struct KMm {
    mm: NonNull<ffi::MmStruct>,
    unmap_work: *mut ffi::Work,
}

// SAFETY: an mm_struct pointer may be used from any thread; the glue serialises what needs it.
unsafe impl Send for KMm {}
// SAFETY: as above.
unsafe impl Sync for KMm {}

impl KMm {
    /// Binds `mm` (takes the `mmgrab` reference and registers the mm with the notifier core).
    /// `unmap_work` is queued after every `MMU_NOTIFY_UNMAP` callback (the GC trigger).
    ///
    /// # Safety
    /// `mm` is a live mm (the caller's `current->mm`); `unmap_work` outlives every notifier.
    pub unsafe fn bind(mm: *mut ffi::MmStruct, unmap_work: *mut ffi::Work) -> Result<Self, Errno> {
        let mm = NonNull::new(mm).ok_or(Errno::ESRCH)?;
        // SAFETY: live mm, per the caller.
        let rc = unsafe { ffi::svm_mm_bind(mm.as_ptr()) };
        if rc != 0 {
            return Err(Errno(-rc));
        }
        Ok(KMm { mm, unmap_work })
    }

    /// `mm` without a reference of its own, for a callback that runs while the caller holds
    /// one (`migrate_to_ram`). Never drop it: wrap it in `ManuallyDrop`.
    ///
    /// # Safety
    /// `mm` is live for as long as the value is used.
    pub unsafe fn borrowed(mm: *mut ffi::MmStruct) -> Self {
        KMm {
            // SAFETY: live, per the caller.
            mm: unsafe { NonNull::new_unchecked(mm) },
            unmap_work: core::ptr::null_mut(),
        }
    }

    /// The raw mm, for identity checks.
    pub fn raw(&self) -> *mut ffi::MmStruct {
        self.mm.as_ptr()
    }

    /// Charges what the current task allocates with [`GFP`] to this mm's memory cgroup (its
    /// owner's, looked up now) until the returned scope drops.
    pub fn charge_scope(&self) -> MemcgScope {
        let mut old = core::ptr::null_mut();
        // SAFETY: live mm_struct (mmgrab); `old` is written before the call returns.
        let memcg = unsafe { ffi::svm_memcg_enter(self.raw(), &mut old) };
        MemcgScope { memcg, old }
    }
}

impl Drop for KMm {
    fn drop(&mut self) {
        // SAFETY: the reference taken by `bind`, dropped once.
        unsafe { ffi::svm_mm_drop(self.mm.as_ptr()) };
    }
}

/// A registered `struct mmu_interval_notifier` (inside the glue's `struct svm_notifier`).
///
/// # Invariants
/// `n` is a live notifier; the owning value frees it on drop, after `interval_remove`.
pub struct KInterval {
    n: NonNull<ffi::Notifier>,
}

// SAFETY: the notifier functions may be called from any thread.
unsafe impl Send for KInterval {}
// SAFETY: as above.
unsafe impl Sync for KInterval {}

impl Interval for KInterval {
    fn read_begin(&self) -> u64 {
        // SAFETY: live notifier.
        unsafe { ffi::svm_notifier_read_begin(self.n.as_ptr()) }
    }

    fn read_retry(&self, seq: u64) -> bool {
        // SAFETY: live notifier.
        unsafe { ffi::svm_notifier_read_retry(self.n.as_ptr(), seq) }
    }

    fn check_retry(&self, seq: u64) -> bool {
        // SAFETY: live notifier.
        unsafe { ffi::svm_notifier_check_retry(self.n.as_ptr(), seq) }
    }

    fn set_seq(&self, cur_seq: u64) {
        // SAFETY: live notifier.
        unsafe { ffi::svm_notifier_set_seq(self.n.as_ptr(), cur_seq) }
    }
}

impl Drop for KInterval {
    fn drop(&mut self) {
        // SAFETY: the owner frees its notifier once; the glue WARNs (and leaks) if it is
        // still inserted.
        unsafe { ffi::svm_notifier_free(self.n.as_ptr()) };
    }
}

/// The C notifier's `invalidate` op lands here: rebuild the engine's callback, a borrowed
/// [`KInterval`] and the [`Invalidation`], and run it.
///
/// # Safety
/// Called only by glue.c's `svm_mni_invalidate` with the values `interval_insert` stored.
#[no_mangle]
pub unsafe extern "C" fn svm_rs_invalidate(
    cb: *const c_void,
    cookie: *const c_void,
    n: *mut ffi::Notifier,
    start: u64,
    end: u64,
    event: u32,
    blockable: bool,
    cur_seq: u64,
    owner: u64,
) -> bool {
    // SAFETY: `cb` was made from an `InvalidateFn<KInterval>` in `interval_insert`.
    let f: InvalidateFn<KInterval> = unsafe { core::mem::transmute(cb) };
    // Borrowed: the owner (the range) frees the notifier, never this copy.
    let iv = ManuallyDrop::new(KInterval {
        // SAFETY: the core passes its live notifier.
        n: unsafe { NonNull::new_unchecked(n) },
    });
    let event = match event {
        0 => Event::Unmap,
        1 => Event::Clear,
        2 => Event::ProtectionVma,
        3 => Event::ProtectionPage,
        4 => Event::SoftDirty,
        5 => Event::Release,
        6 => Event::Migrate,
        7 => Event::Exclusive,
        _ => Event::Clear,
    };
    let inv = Invalidation {
        start,
        end,
        event,
        blockable,
        cur_seq,
        owner,
    };
    // SAFETY: the notifier is registered (the core is calling it), so its cookie is live.
    unsafe { f(cookie as *const (), &iv, &inv) }
}

/// `mmap_read_lock` held plus the `mmget_not_zero()` reference taken for it.
pub struct KReadGuard<'a> {
    mm: &'a KMm,
}

impl Drop for KReadGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: taken by `mmap_read`; released once (mmput_async: may be the last user).
        unsafe { ffi::svm_mmap_read_unlock(self.mm.raw()) };
    }
}

impl Mm for KMm {
    type Interval = KInterval;
    type ReadGuard<'a> = KReadGuard<'a>;

    fn interval_insert(
        &self,
        start: u64,
        len: u64,
        cookie: *const (),
        ops: InvalidateFn<KInterval>,
    ) -> Result<KInterval, Errno> {
        let mut out: *mut ffi::Notifier = core::ptr::null_mut();
        // SAFETY: live mm; `ops` and `cookie` come back to `svm_rs_invalidate` unchanged.
        let rc = unsafe {
            ffi::svm_notifier_insert(
                self.raw(),
                start,
                len,
                ops as *const c_void,
                cookie as *const c_void,
                self.unmap_work,
                &mut out,
            )
        };
        if rc != 0 {
            return Err(Errno(-rc));
        }
        Ok(KInterval {
            n: NonNull::new(out).ok_or(Errno::ENOMEM)?,
        })
    }

    fn interval_remove(&self, interval: &KInterval) {
        // SAFETY: live, inserted notifier; we hold no engine lock (engine contract).
        unsafe { ffi::svm_notifier_remove(interval.n.as_ptr()) }
    }

    fn mmap_read(&self) -> Result<KReadGuard<'_>, Errno> {
        // SAFETY: live mm_struct (mmgrab).
        let rc = unsafe { ffi::svm_mmap_read_lock(self.raw()) };
        if rc != 0 {
            return Err(Errno(-rc));
        }
        Ok(KReadGuard { mm: self })
    }

    fn vma(&self, _guard: &KReadGuard<'_>, va: u64) -> Option<Vma> {
        let mut v = ffi::VmaInfo::default();
        // SAFETY: the read lock is held (the guard proves it).
        if !unsafe { ffi::svm_vma_lookup(self.raw(), va, &mut v) } {
            return None;
        }
        Some(Vma {
            start: v.start,
            end: v.end,
            read: v.read != 0,
            write: v.write != 0,
            // The engine refuses `io` VMAs with `EFAULT` before calling hmm on them: so must
            // it refuse memfd_secret memory (not in the direct map: the device's kmap would
            // oops) and userfaultfd-armed memory (hmm cannot wait for the handler; see glue.h).
            io: v.io != 0 || v.refuse != 0,
        })
    }

    fn hmm_range_fault(
        &self,
        _guard: &mut KReadGuard<'_>,
        req: &mut HmmRequest<'_, KInterval>,
    ) -> Result<(), Errno> {
        // SAFETY: read lock held; `pfns` is valid for its length; the notifier is live.
        let rc = unsafe {
            ffi::svm_hmm_range_fault(
                req.notifier.n.as_ptr(),
                req.seq,
                req.start,
                req.pfns.len() as u64,
                req.pfns.as_mut_ptr(),
                req.dev_private_owner,
            )
        };
        if rc != 0 {
            return Err(Errno(-rc));
        }
        Ok(())
    }

    fn migrate_setup(&self, req: &mut MigrateReq<'_>) -> Result<usize, Errno> {
        let n = req.src.len();
        if n == 0 || req.dst.len() != n {
            return Err(Errno::EINVAL);
        }
        // SAFETY: the caller holds the read lock; both arrays hold `n` entries.
        let rc = unsafe {
            ffi::svm_migrate_setup(
                self.raw(),
                req.start,
                n as u64,
                req.src.as_mut_ptr(),
                req.dst.as_mut_ptr(),
                u32::from(req.select == Select::DevicePrivate),
                req.owner,
                req.fault_page,
            )
        };
        if rc < 0 {
            return Err(Errno(-rc as i32));
        }
        if req.select == Select::System {
            // SAFETY: `src` holds `n` entries, as setup filled them. The pages it keeps are
            // still collected (locked, behind migration entries): `cpages` stays as the
            // kernel counted them, and `finalize` puts them back.
            unsafe { ffi::svm_migrate_keep_ksm(req.src.as_mut_ptr(), n as u64) };
        }
        Ok(rc as usize)
    }

    fn migrate_pages(&self, req: &mut MigrateReq<'_>) {
        // SAFETY: as `migrate_setup`, which succeeded on these arrays.
        unsafe {
            ffi::svm_migrate_pages(
                self.raw(),
                req.start,
                req.src.len() as u64,
                req.src.as_mut_ptr(),
                req.dst.as_mut_ptr(),
                req.owner,
                req.fault_page,
            )
        }
    }

    fn make_exclusive(
        &self,
        _guard: &mut KReadGuard<'_>,
        start: u64,
        pages: &mut [u64],
        owner: u64,
    ) -> Result<usize, Errno> {
        // SAFETY: the caller holds the read lock (the guard); `pages` holds `len` entries.
        let rc = unsafe {
            ffi::svm_make_exclusive(
                self.raw(),
                start,
                pages.len() as u64,
                pages.as_mut_ptr(),
                owner,
            )
        };
        if rc < 0 {
            return Err(Errno(-rc as i32));
        }
        Ok(rc as usize)
    }

    fn release_exclusive(&self, pages: &[u64]) {
        // SAFETY: the non-zero entries are the pages `make_exclusive` handed over, each
        // still locked and referenced; the caller releases them once.
        unsafe { ffi::svm_release_exclusive(pages.as_ptr(), pages.len() as u64) }
    }

    fn migrate_finalize(&self, req: &mut MigrateReq<'_>) {
        // SAFETY: as `migrate_pages`.
        unsafe {
            ffi::svm_migrate_finalize(
                self.raw(),
                req.start,
                req.src.len() as u64,
                req.src.as_mut_ptr(),
                req.dst.as_mut_ptr(),
                req.owner,
                req.fault_page,
            )
        }
    }
}

/// The glue's `SVM_EV_*` code of `e` (the inverse of the callback's decoding above).
pub(crate) fn event_code(e: Event) -> u32 {
    match e {
        Event::Unmap => 0,
        Event::Clear => 1,
        Event::ProtectionVma => 2,
        Event::ProtectionPage => 3,
        Event::SoftDirty => 4,
        Event::Release => 5,
        Event::Migrate => 6,
        Event::Exclusive => 7,
    }
}
