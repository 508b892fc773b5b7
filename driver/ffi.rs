// SPDX-License-Identifier: GPL-2.0
//! The C glue's functions (driver/glue.h), as Rust sees them. Every pointer type is opaque
//! here: C owns the structs.

use core::ffi::c_void;

/// `struct mm_struct`.
#[repr(C)]
pub struct MmStruct {
    _p: [u8; 0],
}
/// `struct device`.
#[repr(C)]
pub struct Device {
    _p: [u8; 0],
}
/// `struct svm_notifier` (glue.c).
#[repr(C)]
pub struct Notifier {
    _p: [u8; 0],
}
/// `struct svm_devmem` (glue.c).
#[repr(C)]
pub struct Devmem {
    _p: [u8; 0],
}
/// `struct svm_work` (glue.c).
#[repr(C)]
pub struct Work {
    _p: [u8; 0],
}
/// `struct svm_waitq` (glue.c).
#[repr(C)]
pub struct Waitq {
    _p: [u8; 0],
}

/// `struct svm_vma_info`.
#[repr(C)]
#[derive(Default)]
pub struct VmaInfo {
    pub start: u64,
    pub end: u64,
    pub read: u32,
    pub write: u32,
    pub io: u32,
    pub refuse: u32,
}

/// `enum svm_lock_class`.
pub const LC_TABLE: u32 = 0;
pub const LC_RANGE: u32 = 1;
pub const LC_INDEX: u32 = 2;
pub const LC_CTX: u32 = 3;
pub const LC_WORKER: u32 = 4;
pub const LC_FAULTQ: u32 = 5;
pub const LC_TLB: u32 = 6;
pub const LC_ENGINE: u32 = 7;
pub const LC_ENGINE_RW: u32 = 8;
pub const LC_DMA: u32 = 9;
pub const LC_REGISTRY: u32 = 10;
pub const LC_QUEUES: u32 = 11;
pub const LC_QCTL: u32 = 12;
pub const LC_POLICY: u32 = 13;

/// Entries of `svm_abi` (glue.h `SVM_ABI_NR`; glue.c asserts the same number).
pub const ABI_NR: usize = 39;

extern "C" {
    pub fn svm_spin_init(l: *mut c_void, cls: u32);
    pub fn svm_spin_lock(l: *mut c_void);
    pub fn svm_spin_trylock(l: *mut c_void) -> bool;
    pub fn svm_spin_unlock(l: *mut c_void);
    pub fn svm_mutex_init(l: *mut c_void, cls: u32);
    pub fn svm_mutex_destroy(l: *mut c_void);
    pub fn svm_mutex_lock(l: *mut c_void);
    pub fn svm_mutex_trylock(l: *mut c_void) -> bool;
    pub fn svm_mutex_unlock(l: *mut c_void);
    pub fn svm_rwsem_init(l: *mut c_void, cls: u32);
    pub fn svm_rwsem_down_read(l: *mut c_void);
    pub fn svm_rwsem_up_read(l: *mut c_void);
    pub fn svm_rwsem_down_write(l: *mut c_void);
    pub fn svm_rwsem_down_write_trylock(l: *mut c_void) -> bool;
    pub fn svm_rwsem_up_write(l: *mut c_void);

    pub fn svm_gfp() -> u32;
    pub fn svm_memcg_enter(mm: *mut MmStruct, old: *mut *mut c_void) -> *mut c_void;
    pub fn svm_memcg_exit(memcg: *mut c_void, old: *mut c_void);

    pub fn svm_current_mm() -> *mut MmStruct;
    pub fn svm_current_task() -> u64;
    pub fn svm_mm_bind(mm: *mut MmStruct) -> i32;
    pub fn svm_mm_drop(mm: *mut MmStruct);
    pub fn svm_mmap_read_lock(mm: *mut MmStruct) -> i32;
    pub fn svm_mmap_read_unlock(mm: *mut MmStruct);
    pub fn svm_vma_lookup(mm: *mut MmStruct, addr: u64, out: *mut VmaInfo) -> bool;

    pub fn svm_notifier_insert(
        mm: *mut MmStruct,
        start: u64,
        len: u64,
        cb: *const c_void,
        cookie: *const c_void,
        unmap_work: *mut Work,
        out: *mut *mut Notifier,
    ) -> i32;
    pub fn svm_notifier_remove(n: *mut Notifier);
    pub fn svm_notifier_free(n: *mut Notifier);
    pub fn svm_notifier_read_begin(n: *mut Notifier) -> u64;
    pub fn svm_notifier_read_retry(n: *mut Notifier, seq: u64) -> bool;
    pub fn svm_notifier_check_retry(n: *mut Notifier, seq: u64) -> bool;
    pub fn svm_notifier_set_seq(n: *mut Notifier, seq: u64);
    pub fn svm_hmm_range_fault(
        n: *mut Notifier,
        seq: u64,
        start: u64,
        npages: u64,
        pfns: *mut u64,
        owner: u64,
    ) -> i32;

    pub fn svm_dma_map(dev: *mut Device, pfn: u64, order: u32, write: bool, err: *mut i32) -> u64;
    pub fn svm_dma_unmap(dev: *mut Device, addr: u64, order: u32, write: bool);
    pub fn svm_set_page_dirty(pfn: u64);
    pub fn svm_kmap_pfn(pfn: u64) -> *mut u8;

    pub fn svm_dm_devmem_mib() -> u64;
    pub fn svm_accel_devmem_mib() -> u64;
    pub fn svm_accel_devices() -> u32;
    pub fn svm_msleep(ms: u32);
    pub fn svm_accel_by_minor(minor: u32) -> i32;
    pub fn svm_devmem_create(
        bytes: u64,
        owner: u64,
        first_pfn: *mut u64,
        out: *mut *mut Devmem,
    ) -> i32;
    pub fn svm_devmem_set_rs(dm: *mut Devmem, rs: *mut c_void);
    pub fn svm_devmem_destroy(dm: *mut Devmem);
    pub fn svm_devmem_owner(dm: *mut Devmem) -> u64;
    pub fn svm_pfn_private_owner(pfn: u64) -> u64;
    pub fn svm_devmem_page_init(pfn: u64) -> i32;
    pub fn svm_alloc_locked_page(nofail: bool) -> u64;
    pub fn svm_put_locked_page(pfn: u64);
    pub fn svm_copy_pfn(dst: u64, src: u64);
    pub fn svm_migrate_setup(
        mm: *mut MmStruct,
        start: u64,
        npages: u64,
        src: *mut u64,
        dst: *mut u64,
        device_private: u32,
        owner: u64,
        fault_pfn: u64,
    ) -> i64;
    pub fn svm_migrate_keep_ksm(src: *mut u64, npages: u64) -> i64;
    pub fn svm_make_exclusive(
        mm: *mut MmStruct,
        start: u64,
        npages: u64,
        pfns: *mut u64,
        owner: u64,
    ) -> i64;
    pub fn svm_release_exclusive(pfns: *const u64, npages: u64);
    pub fn svm_migrate_pages(
        mm: *mut MmStruct,
        start: u64,
        npages: u64,
        src: *mut u64,
        dst: *mut u64,
        owner: u64,
        fault_pfn: u64,
    );
    pub fn svm_migrate_finalize(
        mm: *mut MmStruct,
        start: u64,
        npages: u64,
        src: *mut u64,
        dst: *mut u64,
        owner: u64,
        fault_pfn: u64,
    );
    pub fn svm_migrate_device_range(src: *mut u64, first_pfn: u64, npages: u64) -> i32;
    pub fn svm_migrate_device_pages(src: *mut u64, dst: *mut u64, npages: u64);
    pub fn svm_migrate_device_finalize(src: *mut u64, dst: *mut u64, npages: u64);
    pub fn svm_kunmap(addr: *mut u8);
    pub fn svm_is_zero_pfn(pfn: u64) -> bool;
    pub fn svm_is_ksm_pfn(pfn: u64) -> bool;
    pub fn svm_vm_insert_zeroed_page(vma: *mut c_void, addr: u64) -> i32;
    pub fn svm_get_device(dev: *mut Device) -> *mut Device;
    pub fn svm_put_device(dev: *mut Device);

    pub fn svm_table_alloc(size: usize) -> *mut c_void;
    pub fn svm_table_free(p: *mut c_void, size: usize);
    pub fn svm_virt_to_phys(p: *const c_void) -> u64;
    pub fn svm_page_set_private(p: *mut c_void, v: usize);
    pub fn svm_phys_page_private(pa: u64) -> usize;

    pub fn svm_debugfs_ctx_add(obj: *mut c_void, id: u64, mirror: bool) -> *mut c_void;
    pub fn svm_debugfs_remove(d: *mut c_void);
    pub fn svm_seq_write(m: *mut c_void, buf: *const u8, len: usize);
}

/// `SVM_DBG_*` (glue.h): which debugfs file a show is for.
pub const SVM_DBG_STATS: u32 = 0;
pub const SVM_DBG_RANGES: u32 = 1;
pub const SVM_DBG_DM_STATS: u32 = 2;
pub const SVM_DBG_DM_RANGES: u32 = 3;
pub const SVM_DBG_DEVICE: u32 = 4;
pub const SVM_DBG_QUEUES: u32 = 5;

extern "C" {

    pub fn svm_tracing() -> bool;
    pub fn svm_trace_fault_start(ctx: *const c_void, va: u64, write: bool, pages: u64);
    pub fn svm_trace_fault_end(ctx: *const c_void, va: u64, write: bool, err: i32, ns: u64);
    pub fn svm_trace_retry(ctx: *const c_void, va: u64, own: bool);
    pub fn svm_trace_invalidate(ctx: *const c_void, start: u64, end: u64, event: u32, hit: bool);
    pub fn svm_trace_gc(ctx: *const c_void, removed: u64);
    pub fn svm_trace_queue(
        ctx: *const c_void,
        id: u32,
        state: u32,
        err: i32,
        addr: u64,
        completed: u64,
    );
    pub fn svm_trace_queue_run(ctx: *const c_void, id: u32, jobs: u64, completed: u64);

    pub fn svm_now_ns() -> u64;
    pub fn svm_cond_resched();
    pub fn svm_fault_ns_add(ns: u64);
    pub fn svm_nr_cpu_ids() -> u32;
    pub fn svm_this_cpu() -> u32;
    pub fn svm_fatal_signal_pending() -> bool;
    pub fn svm_task_size() -> u64;
    pub fn svm_max_ranges() -> u32;
    pub fn svm_range_shift() -> u32;
    pub fn svm_lock_scope() -> u32;
    pub fn svm_dma_share() -> bool;
    pub fn svm_fault_delay();

    pub fn svm_work_new(f: unsafe extern "C" fn(*mut c_void), data: *mut c_void) -> *mut Work;
    pub fn svm_work_new_teardown(
        f: unsafe extern "C" fn(*mut c_void),
        data: *mut c_void,
    ) -> *mut Work;
    pub fn svm_work_new_queue(
        f: unsafe extern "C" fn(*mut c_void),
        data: *mut c_void,
        high: bool,
    ) -> *mut Work;
    pub fn svm_work_queue(w: *mut Work);
    pub fn svm_work_cancel_sync(w: *mut Work);
    pub fn svm_work_free(w: *mut Work);

    pub fn svm_waitq_new() -> *mut Waitq;
    pub fn svm_waitq_free(q: *mut Waitq);
    pub fn svm_waitq_wait_ne_killable(q: *mut Waitq, p: *const u32, old: u32) -> i32;
    pub fn svm_waitq_wait_cond(
        q: *mut Waitq,
        cond: unsafe extern "C" fn(*const c_void) -> bool,
        data: *const c_void,
        timeout_ns: u64,
        interruptible: bool,
    ) -> i32;
    pub fn svm_waitq_wake(q: *mut Waitq);
    pub fn svm_capable_sys_nice() -> bool;
    pub fn svm_max_queues() -> u32;

    pub static svm_abi: [u64; ABI_NR];

    pub fn svm_glue_init(dma_bits: u32) -> i32;
    pub fn svm_glue_exit();
}
