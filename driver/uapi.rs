// SPDX-License-Identifier: GPL-2.0
//! Rust mirror of include/uapi/drm/svm_accel.h. The module checks at load time that each
//! struct has the size the C compiler gave the header's (`svm_uapi_sizes` in glue.c).

/// `struct drm_svm_accel_bind`.
#[repr(C)]
pub struct Bind {
    pub flags: u32,
    pub pad: u32,
}

pub const OP_FILL: u32 = 1;
pub const OP_COPY: u32 = 2;
pub const OP_ADD: u32 = 3;
pub const OP_READ: u32 = 4;

/// `struct drm_svm_accel_op`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Op {
    pub kind: u32,
    pub flags: u32,
    pub src: u64,
    pub dst: u64,
    pub len: u64,
    pub value: u64,
    pub result: u64,
}

/// Byte offset of `Op::result` (written back for ADD and READ).
pub const OP_RESULT_OFFSET: usize = 40;

pub const MAX_OPS: u32 = 4096;

/// `struct drm_svm_accel_submit`.
#[repr(C)]
pub struct Submit {
    pub ops_ptr: u64,
    pub op_count: u32,
    pub flags: u32,
    pub error: i32,
    pub failed_op: u32,
    pub fault_addr: u64,
}

pub const PREFETCH_WRITE: u32 = 1;
pub const PREFETCH_TO_DEVICE: u32 = 2;
pub const PREFETCH_TO_SYSTEM: u32 = 4;

/// `struct drm_svm_accel_prefetch`.
#[repr(C)]
pub struct Prefetch {
    pub start: u64,
    pub len: u64,
    pub flags: u32,
    pub pad: u32,
    pub done: u64,
}

pub const QUERY_BOUND: u32 = 1;
pub const PTE_X86: u32 = 1;

/// `struct drm_svm_accel_query`.
#[repr(C)]
pub struct Query {
    pub flags: u32,
    pub range_shift: u32,
    pub fault_around_pages: u32,
    pub pte_format: u32,
    pub page_sizes: u64,
    pub fault_queue_depth: u32,
    pub tlb_entries: u32,
    pub pte_format_name: [u8; 16],

    pub pt_tables: u64,
    pub pt_pages: u64,
    pub pt_huge: u64,
    pub pt_zapped: u64,
    pub ranges: u64,
    pub dma_live: u64,

    pub jobs: u64,
    pub device_faults: u64,
    pub fault_batches: u64,
    pub tlb_hits: u64,
    pub tlb_misses: u64,
    pub gc_removed: u64,

    pub faults: u64,
    pub fault_errors: u64,
    pub pages_mapped: u64,
    pub huge_mapped: u64,
    pub dma_unmapped: u64,
    pub retries_own: u64,
    pub retries_foreign: u64,
    pub retry_timeouts: u64,
    pub invalidations: u64,
    pub invalidations_hit: u64,
    pub nonblock_refused: u64,
    pub tlb_flushes: u64,
    pub ranges_created: u64,
    pub ranges_removed: u64,
    pub range_races: u64,
    pub batch_duplicates: u64,
    pub batch_windows: u64,
    pub ranges_reaped_empty: u64,
    pub range_limit_hits: u64,
    pub accounting_errors: u64,

    pub devmem_pages: u64,
    pub devmem_used: u64,
    pub migrated_to_device: u64,
    pub migrated_to_system: u64,
    pub migrate_failed: u64,
    pub evicted: u64,
    pub local_mapped: u64,
    pub atomic_mapped: u64,
    pub pt_local: u64,
    pub peer_mapped: u64,
}

pub const LOC_SYSTEM: u32 = 0;
pub const LOC_DEVICE: u32 = 1;
pub const LOC_PEER: u32 = 2;
pub const ATOMIC_GLOBAL: u32 = 0;
pub const ATOMIC_DEVICE: u32 = 1;
pub const MADVISE_MIGRATE: u32 = 1;
pub const MAX_ADVICE: usize = 32;

/// `struct drm_svm_accel_madvise`.
#[repr(C)]
pub struct Madvise {
    pub start: u64,
    pub len: u64,
    pub location: u32,
    pub atomic: u32,
    pub flags: u32,
    pub device: u32,
    pub done: u64,
}

/// `struct drm_svm_accel_qentry`: one ring entry.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct QEntry {
    pub op: Op,
    pub user: [u64; 2],
}

pub const MAX_QUEUES: u32 = 16;
pub const MAX_RING: u32 = 4096;
pub const QUEUE_PRIORITY_NORMAL: u32 = 0;
pub const QUEUE_PRIORITY_HIGH: u32 = 1;
pub const QUEUE_ACTIVE: u32 = 1;
pub const QUEUE_ERROR: u32 = 2;
pub const QUEUE_SUSPENDED: u32 = 3;

/// `struct drm_svm_accel_create_queue`.
#[repr(C)]
pub struct CreateQueue {
    pub ring: u64,
    pub doorbell: u64,
    pub fence: u64,
    pub ring_entries: u32,
    pub priority: u32,
    pub flags: u32,
    pub queue_id: u32,
}

/// `struct drm_svm_accel_destroy_queue`.
#[repr(C)]
pub struct DestroyQueue {
    pub queue_id: u32,
    pub pad: u32,
}

/// `struct drm_svm_accel_wait`.
#[repr(C)]
pub struct Wait {
    pub queue_id: u32,
    pub flags: u32,
    pub value: u64,
    pub timeout_ns: u64,
    pub completed: u64,
    pub fault_addr: u64,
    pub error: i32,
    pub state: u32,
}

// The layout glue.c static_asserts for the C header (same numbers): checked at compile time
// on both sides, and the sizes once more against C's at load time (`svm_abi`).
macro_rules! off {
    ($t:ty, $f:ident, $n:expr) => {
        const _: () = assert!(core::mem::offset_of!($t, $f) == $n);
    };
}
const _: () = assert!(core::mem::size_of::<Bind>() == 8);
off!(Bind, flags, 0);
off!(Bind, pad, 4);
const _: () = assert!(core::mem::size_of::<Op>() == 48);
off!(Op, kind, 0);
off!(Op, flags, 4);
off!(Op, src, 8);
off!(Op, dst, 16);
off!(Op, len, 24);
off!(Op, value, 32);
off!(Op, result, 40);
const _: () = assert!(core::mem::offset_of!(Op, result) == OP_RESULT_OFFSET);
const _: () = assert!(core::mem::size_of::<Submit>() == 32);
off!(Submit, ops_ptr, 0);
off!(Submit, op_count, 8);
off!(Submit, flags, 12);
off!(Submit, error, 16);
off!(Submit, failed_op, 20);
off!(Submit, fault_addr, 24);
const _: () = assert!(core::mem::size_of::<Prefetch>() == 32);
off!(Prefetch, start, 0);
off!(Prefetch, len, 8);
off!(Prefetch, flags, 16);
off!(Prefetch, pad, 20);
off!(Prefetch, done, 24);
const _: () = assert!(core::mem::size_of::<Query>() == 384);
off!(Query, pt_local, 368);
off!(Query, peer_mapped, 376);
off!(Query, devmem_pages, 304);
off!(Query, atomic_mapped, 360);
const _: () = assert!(core::mem::size_of::<Madvise>() == 40);
off!(Madvise, start, 0);
off!(Madvise, len, 8);
off!(Madvise, location, 16);
off!(Madvise, atomic, 20);
off!(Madvise, flags, 24);
off!(Madvise, device, 28);
off!(Madvise, done, 32);
off!(Query, flags, 0);
off!(Query, range_shift, 4);
off!(Query, fault_around_pages, 8);
off!(Query, pte_format, 12);
off!(Query, page_sizes, 16);
off!(Query, fault_queue_depth, 24);
off!(Query, tlb_entries, 28);
off!(Query, pte_format_name, 32);
off!(Query, pt_tables, 48);
off!(Query, dma_live, 88);
off!(Query, jobs, 96);
off!(Query, gc_removed, 136);
off!(Query, faults, 144);
off!(Query, batch_duplicates, 264);
off!(Query, accounting_errors, 296);
const _: () = assert!(core::mem::size_of::<QEntry>() == 64);
off!(QEntry, op, 0);
off!(QEntry, user, 48);
const _: () = assert!(core::mem::size_of::<CreateQueue>() == 40);
off!(CreateQueue, ring, 0);
off!(CreateQueue, doorbell, 8);
off!(CreateQueue, fence, 16);
off!(CreateQueue, ring_entries, 24);
off!(CreateQueue, priority, 28);
off!(CreateQueue, flags, 32);
off!(CreateQueue, queue_id, 36);
const _: () = assert!(core::mem::size_of::<DestroyQueue>() == 8);
off!(DestroyQueue, queue_id, 0);
off!(DestroyQueue, pad, 4);
const _: () = assert!(core::mem::size_of::<Wait>() == 48);
off!(Wait, queue_id, 0);
off!(Wait, flags, 4);
off!(Wait, value, 8);
off!(Wait, timeout_ns, 16);
off!(Wait, completed, 24);
off!(Wait, fault_addr, 32);
off!(Wait, error, 40);
off!(Wait, state, 44);
