// SPDX-License-Identifier: GPL-2.0
//! Entry points called by glue.c.

use super::*;

/// DRM `open`: a new context, not bound yet, in the registry. NULL on allocation failure.
#[no_mangle]
pub extern "C" fn svm_rs_open(dev: *mut ffi::Device, index: u32) -> *mut c_void {
    Ctx::new(dev, index as usize)
        .map(|p| p.cast())
        .unwrap_or(null_mut())
}

/// First half of unplug: every running job, prefetch and dmirror copy stops at its next page
/// with `ENODEV`, so the glue's wait for the ioctls to leave is short.
#[no_mangle]
pub extern "C" fn svm_rs_unplug_begin() {
    let r = registry().lock();
    for &c in r.ctxs.iter() {
        // SAFETY: registered, hence live (see `Registry`).
        unsafe { &*c }.gone.store(true, Ordering::Relaxed);
    }
    for &m in r.mirrors.iter() {
        // SAFETY: as above.
        unsafe { &*m }.set_gone();
    }
}

/// Second half: no ioctl, open or mmap runs or will run on any file of the device (the glue
/// waited for them), so every engine is torn down, the files staying open: DMA mappings
/// unmapped, notifiers removed, workers stopped, device and mm references dropped.
#[no_mangle]
pub extern "C" fn svm_rs_unplug_finish() {
    let r = registry().lock();
    for &c in r.ctxs.iter() {
        // SAFETY: registered, hence live; no ioctl runs on it.
        let c = unsafe { &*c };
        c.gone.store(true, Ordering::Relaxed);
        c.shutdown();
    }
    for &m in r.mirrors.iter() {
        // SAFETY: as above.
        let m = unsafe { &*m };
        m.set_gone();
        m.shutdown();
    }
}

/// DRM `postclose`: queues the teardown. Tearing down waits for the fault worker, which may
/// be stuck on a fault of a job that was killed; the task releasing the file (often an exiting
/// one) must not wait for it. Module exit flushes the workqueue.
///
/// # Safety
/// `ctx` came from `svm_rs_open`, and no ioctl on it runs or will run.
#[no_mangle]
pub unsafe extern "C" fn svm_rs_postclose(ctx: *mut c_void) {
    if !ctx.is_null() {
        // SAFETY: per the contract; the context lives until `release_work` frees it.
        let c = unsafe { &*ctx.cast::<Ctx>() };
        // GC stops now; the worker, if running, finishes its batch.
        if let Some(b) = c.bound() {
            b.stop_gc();
        }
        // Queued once: the file is released once.
        c.release_work.queue();
    }
}

/// The release work item's function: the context's teardown.
///
/// # Safety
/// `data` is the context the work item was created for, released (`svm_rs_postclose`).
#[no_mangle]
pub unsafe extern "C" fn svm_rs_release(data: *mut c_void) {
    // SAFETY: per the contract; nothing else frees it.
    unsafe { KBox::from_raw(data.cast::<Ctx>()) }.close();
}

/// # Safety
/// `ctx` from `svm_rs_open`; `data` the DRM core's kernel copy of the ioctl struct.
#[no_mangle]
pub unsafe extern "C" fn svm_rs_bind(ctx: *mut c_void, data: *mut c_void) -> i32 {
    // SAFETY: per the contract.
    let (c, a) = unsafe { (&*ctx.cast::<Ctx>(), &*data.cast::<uapi::Bind>()) };
    ret(c.bind(a))
}

/// # Safety
/// As [`svm_rs_bind`].
#[no_mangle]
pub unsafe extern "C" fn svm_rs_submit(ctx: *mut c_void, data: *mut c_void) -> i32 {
    // SAFETY: per the contract.
    let (c, a) = unsafe { (&*ctx.cast::<Ctx>(), &mut *data.cast::<uapi::Submit>()) };
    ret(c.submit(a))
}

/// # Safety
/// As [`svm_rs_bind`].
#[no_mangle]
pub unsafe extern "C" fn svm_rs_prefetch(ctx: *mut c_void, data: *mut c_void) -> i32 {
    // SAFETY: per the contract.
    let (c, a) = unsafe { (&*ctx.cast::<Ctx>(), &mut *data.cast::<uapi::Prefetch>()) };
    ret(c.prefetch(a))
}

/// # Safety
/// As [`svm_rs_bind`].
#[no_mangle]
pub unsafe extern "C" fn svm_rs_madvise(ctx: *mut c_void, data: *mut c_void) -> i32 {
    // SAFETY: per the contract.
    let (c, a) = unsafe { (&*ctx.cast::<Ctx>(), &mut *data.cast::<uapi::Madvise>()) };
    ret(c.madvise(a))
}

/// # Safety
/// As [`svm_rs_bind`].
#[no_mangle]
pub unsafe extern "C" fn svm_rs_query(ctx: *mut c_void, data: *mut c_void) -> i32 {
    // SAFETY: per the contract.
    let (c, a) = unsafe { (&*ctx.cast::<Ctx>(), &mut *data.cast::<uapi::Query>()) };
    ret(c.query(a))
}

/// # Safety
/// As [`svm_rs_bind`].
#[no_mangle]
pub unsafe extern "C" fn svm_rs_create_queue(ctx: *mut c_void, data: *mut c_void) -> i32 {
    // SAFETY: per the contract.
    let (c, a) = unsafe { (&*ctx.cast::<Ctx>(), &mut *data.cast::<uapi::CreateQueue>()) };
    ret(c.create_queue(a))
}

/// # Safety
/// As [`svm_rs_bind`].
#[no_mangle]
pub unsafe extern "C" fn svm_rs_destroy_queue(ctx: *mut c_void, data: *mut c_void) -> i32 {
    // SAFETY: per the contract.
    let (c, a) = unsafe { (&*ctx.cast::<Ctx>(), &*data.cast::<uapi::DestroyQueue>()) };
    ret(c.destroy_queue(a))
}

/// # Safety
/// As [`svm_rs_bind`].
#[no_mangle]
pub unsafe extern "C" fn svm_rs_wait(ctx: *mut c_void, data: *mut c_void) -> i32 {
    // SAFETY: per the contract.
    let (c, a) = unsafe { (&*ctx.cast::<Ctx>(), &mut *data.cast::<uapi::Wait>()) };
    ret(c.wait(a))
}

/// debugfs: a write to a context's `queues` file: `suspend` or `resume` (what the kernel
/// does at teardown and when the address space goes, on demand). 0 or `-EINVAL`.
///
/// # Safety
/// `obj` is the context the file was made for, whose directory is still there; `buf` holds
/// `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn svm_rs_debugfs_write(
    obj: *mut c_void,
    what: u32,
    buf: *const u8,
    len: usize,
) -> i32 {
    if what != ffi::SVM_DBG_QUEUES {
        return -Errno::EINVAL.0;
    }
    // SAFETY: per the contract.
    let (c, b) = unsafe { (&*obj.cast::<Ctx>(), core::slice::from_raw_parts(buf, len)) };
    match b.strip_suffix(b"\n").unwrap_or(b) {
        b"suspend" => c.suspend_queues(),
        b"resume" => c.resume_queues(),
        _ => return -Errno::EINVAL.0,
    }
    0
}

/// debugfs: the text of a file (`what`: `SVM_DBG_*`) into the `seq_file` `m`. 0, or
/// `-ENOMEM` if writing failed.
///
/// # Safety
/// `obj` is what the file was made for: a context (`SVM_DBG_STATS`, `_RANGES`, `_QUEUES`) or a mirror
/// (`SVM_DBG_DM_*`) whose directory is still there (their `shutdown` removes it, waiting for
/// running readers, before anything the files read goes), or null for `SVM_DBG_DEVICE` (the
/// module's, removed at module exit); `m` is the show's `seq_file`.
#[no_mangle]
pub unsafe extern "C" fn svm_rs_debugfs_show(obj: *mut c_void, what: u32, m: *mut c_void) -> i32 {
    let mut w = debugfs::Seq(m);
    let r = match what {
        ffi::SVM_DBG_QUEUES => {
            // SAFETY: per the contract.
            unsafe { &*obj.cast::<Ctx>() }.show_queues(&mut w)
        }
        ffi::SVM_DBG_STATS | ffi::SVM_DBG_RANGES => {
            // SAFETY: per the contract.
            unsafe { &*obj.cast::<Ctx>() }.debugfs_show(what, &mut w)
        }
        ffi::SVM_DBG_DM_STATS | ffi::SVM_DBG_DM_RANGES => {
            // SAFETY: per the contract.
            unsafe { &*obj.cast::<Mirror>() }.debugfs_show(what == ffi::SVM_DBG_DM_RANGES, &mut w)
        }
        _ => debugfs::show_device(&mut w),
    };
    match r {
        Ok(()) => 0,
        Err(_) => -Errno::ENOMEM.0,
    }
}

/// The fault worker's function.
///
/// # Safety
/// `data` is the live context the work item was created for.
#[no_mangle]
pub unsafe extern "C" fn svm_rs_work(data: *mut c_void) {
    // SAFETY: per the contract (close cancels the work before freeing the context).
    unsafe { &*data.cast::<Ctx>() }.work();
}
