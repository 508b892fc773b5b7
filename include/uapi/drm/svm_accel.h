/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * svm_accel: uAPI of the svm sample DRM accel driver (/dev/accel/accelN).
 *
 * A software device that shares the address space of the process that bound
 * it: every device access goes through the device page table that the svm
 * engine mirrors from the CPU page tables with hmm_range_fault() and
 * mmu_interval_notifier.  See Documentation/kernel.md.
 *
 * Conventions: every ioctl is DRM_IOWR with a fixed-size struct of __u64/__u32
 * fields and explicit padding (which must be zero); errors are negative
 * errnos, as the kernel returns them.
 */
#ifndef _UAPI_SVM_ACCEL_H_
#define _UAPI_SVM_ACCEL_H_

#include "drm.h"

#if defined(__cplusplus)
extern "C" {
#endif

#define DRM_SVM_ACCEL_BIND      0x00
#define DRM_SVM_ACCEL_SUBMIT    0x01
#define DRM_SVM_ACCEL_PREFETCH  0x02
#define DRM_SVM_ACCEL_QUERY     0x03

/*
 * BIND: binds the open file (its device context) to the caller's address
 * space (current->mm).  Once per open file: -EBUSY if already bound.  Every
 * other ioctl except QUERY then fails with -ENOTCONN on an unbound file and
 * with -EXDEV when called from another address space (e.g. a child that
 * inherited the fd across fork).  flags and pad must be 0 (-EINVAL).
 */
struct drm_svm_accel_bind {
	__u32 flags;
	__u32 pad;
};

/* Operation kinds of a SUBMIT job. */
#define SVM_ACCEL_OP_FILL 1 /* write the 64-bit pattern `value` over [dst, dst+len) */
#define SVM_ACCEL_OP_COPY 2 /* copy [src, src+len) to [dst, dst+len) */
#define SVM_ACCEL_OP_ADD  3 /* atomic 64-bit add of `value` at dst; old value -> result */
#define SVM_ACCEL_OP_READ 4 /* read [src, src+len); wrapping sum of its u64 words -> result */

/*
 * One device operation.  Addresses and lengths are user virtual addresses of
 * the bound mm and must be 8-byte aligned (-EINVAL); len <= 1 GiB; flags must
 * be 0.  `result` is written back to the user's array for ADD and READ.
 */
struct drm_svm_accel_op {
	__u32 kind;
	__u32 flags;
	__u64 src;
	__u64 dst;
	__u64 len;
	__u64 value;
	__u64 result;
};

#define SVM_ACCEL_MAX_OPS 4096

/*
 * SUBMIT: runs `op_count` ops from the array at `ops_ptr`, in order, on the
 * software device.  A device access that misses in the device TLB and page
 * table (or writes a read-only leaf) raises a device fault; the fault worker
 * services it through the engine and the access is replayed.
 *
 * Returns 0 when the job ran: `error` is then 0, or the negative errno of the
 * first fault that could not be serviced (-EFAULT hole/PROT_NONE/VM_IO/
 * VM_PFNMAP, memfd_secret or userfaultfd-registered memory, -EPERM write to
 * read-only memory, -EBUSY retry budget, -ENOMEM, -ESRCH mm gone), with the
 * index of the failing op in `failed_op` and the faulting address in
 * `fault_addr`; ops before `failed_op` completed.
 * Returns a negative errno without running anything for a bad request
 * (-EINVAL: bad kind, flags, alignment, op_count 0 or > SVM_ACCEL_MAX_OPS,
 * kernel address; -EFAULT: ops array unreadable), and -EINTR when a fatal
 * signal stopped the job, between accesses or while it waited for a device
 * fault to be serviced.  flags must be 0; error, failed_op and fault_addr
 * are outputs only.
 */
struct drm_svm_accel_submit {
	__u64 ops_ptr;
	__u32 op_count;
	__u32 flags;
	__s32 error;
	__u32 failed_op;
	__u64 fault_addr;
};

#define SVM_ACCEL_PREFETCH_WRITE (1u << 0)

/*
 * PREFETCH: populates the device page table for [start, start+len) (for
 * writing with SVM_ACCEL_PREFETCH_WRITE) without a device access.  start and
 * len must be page aligned, len > 0, the range below TASK_SIZE (-EINVAL).
 * Restartable: `done` always reports how many bytes from `start` are
 * populated, also on error; a fatal signal stops it between 2 MiB chunks with
 * -EINTR.  Other errors as SUBMIT's `error`.
 */
struct drm_svm_accel_prefetch {
	__u64 start;
	__u64 len;
	__u32 flags;
	__u32 pad;
	__u64 done;
};

#define SVM_ACCEL_QUERY_BOUND (1u << 0)

#define SVM_ACCEL_PTE_X86  1
#define SVM_ACCEL_PTE_GFX9 2

/*
 * QUERY: capabilities, and (when bound) the engine's statistics and a census
 * of the device page table.  Works on an unbound file (flags lacks
 * SVM_ACCEL_QUERY_BOUND and every counter is 0).  Output only: whatever the
 * caller passes in is ignored and overwritten.
 */
struct drm_svm_accel_query {
	/* capabilities */
	__u32 flags;               /* out: SVM_ACCEL_QUERY_BOUND */
	__u32 range_shift;         /* log2 of a range (one notifier + lock each) */
	__u32 fault_around_pages;  /* pages serviced per fault */
	__u32 pte_format;          /* SVM_ACCEL_PTE_* */
	__u64 page_sizes;          /* bitmask of device page sizes (4 KiB | 2 MiB) */
	__u32 fault_queue_depth;   /* device fault queue entries */
	__u32 tlb_entries;         /* device TLB entries */
	char pte_format_name[16];  /* NUL terminated */

	/* device page table census */
	__u64 pt_tables;
	__u64 pt_pages;            /* valid 4 KiB leaves */
	__u64 pt_huge;             /* valid 2 MiB leaves */
	__u64 pt_zapped;           /* zapped leaves awaiting reap (0 at rest) */
	__u64 ranges;              /* ranges published now */
	__u64 dma_live;            /* DMA mappings held now */

	/* device counters */
	__u64 jobs;
	__u64 device_faults;       /* faults raised by the device */
	__u64 fault_batches;       /* batches the fault worker serviced */
	__u64 tlb_hits;
	__u64 tlb_misses;
	__u64 gc_removed;          /* ranges removed by the GC worker */

	/* engine statistics (svm/src/stats.rs) */
	__u64 faults;
	__u64 fault_errors;
	__u64 pages_mapped;
	__u64 huge_mapped;
	__u64 dma_unmapped;
	__u64 retries_own;
	__u64 retries_foreign;
	__u64 retry_timeouts;
	__u64 invalidations;
	__u64 invalidations_hit;
	__u64 nonblock_refused;
	__u64 tlb_flushes;
	__u64 ranges_created;
	__u64 ranges_removed;
	__u64 range_races;
	__u64 batch_duplicates;
	/* appended (DRM zero-extends a shorter struct from older userspace) */
	__u64 batch_windows;       /* windows serving several queued faults at once */
	__u64 ranges_reaped_empty;
	__u64 range_limit_hits;
	__u64 accounting_errors;   /* engine bookkeeping bugs caught: always 0 */
};

#define DRM_IOCTL_SVM_ACCEL_BIND \
	DRM_IOWR(DRM_COMMAND_BASE + DRM_SVM_ACCEL_BIND, struct drm_svm_accel_bind)
#define DRM_IOCTL_SVM_ACCEL_SUBMIT \
	DRM_IOWR(DRM_COMMAND_BASE + DRM_SVM_ACCEL_SUBMIT, struct drm_svm_accel_submit)
#define DRM_IOCTL_SVM_ACCEL_PREFETCH \
	DRM_IOWR(DRM_COMMAND_BASE + DRM_SVM_ACCEL_PREFETCH, struct drm_svm_accel_prefetch)
#define DRM_IOCTL_SVM_ACCEL_QUERY \
	DRM_IOWR(DRM_COMMAND_BASE + DRM_SVM_ACCEL_QUERY, struct drm_svm_accel_query)

#if defined(__cplusplus)
}
#endif

#endif /* _UAPI_SVM_ACCEL_H_ */
