/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/**
 * DOC: svm_accel uAPI overview
 *
 * The uAPI of the svm sample DRM accel driver (/dev/accel/accelN): a software
 * device that shares the address space of the process that bound it.  Every
 * device access goes through the device page table that the svm engine
 * mirrors from the CPU page tables with hmm_range_fault() and
 * mmu_interval_notifier.  See Documentation/kernel.rst.
 *
 * Conventions: every ioctl is DRM_IOWR with a fixed-size struct of __u64/__u32
 * fields and explicit padding (which must be zero); errors are negative
 * errnos, as the kernel returns them.  DRM copies the struct back on every
 * return, so output fields are valid on error too.  Once the device is
 * unplugged every ioctl fails with -ENODEV.  Memory allocated for a call or a
 * context is charged to the bound mm's memory cgroup: -ENOMEM is what its
 * limit looks like.
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
#define DRM_SVM_ACCEL_CREATE_QUEUE  0x04
#define DRM_SVM_ACCEL_DESTROY_QUEUE 0x05
#define DRM_SVM_ACCEL_WAIT          0x06
#define DRM_SVM_ACCEL_MADVISE       0x07

/**
 * struct drm_svm_accel_bind - DRM_IOCTL_SVM_ACCEL_BIND: bind to this process
 * @flags: must be 0
 * @pad: must be 0
 *
 * Binds the open file (its device context) to the caller's address space
 * (current->mm), once per open file.  Every other ioctl except QUERY then
 * fails with -ENOTCONN on an unbound file and with -EXDEV when called from
 * another address space (a child that inherited the fd across fork, a file
 * passed over a socket).
 *
 * Return: 0, or one of these:
 *
 * * -EBUSY: the file is bound already
 * * -EINVAL: @flags or @pad not 0
 * * -ENOMEM, -ESRCH: no memory; no address space (a kernel thread)
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

/**
 * struct drm_svm_accel_op - one device operation of a SUBMIT job
 * @kind: SVM_ACCEL_OP_FILL, _COPY, _ADD or _READ
 * @flags: must be 0
 * @src: source address (COPY, READ)
 * @dst: destination address (FILL, COPY, ADD)
 * @len: bytes (FILL, COPY, READ), at most 1 GiB
 * @value: the pattern (FILL) or the addend (ADD)
 * @result: out: the old value (ADD) or the wrapping sum of the words (READ),
 *	written back to the user's array
 *
 * Addresses and lengths are user virtual addresses of the bound mm, 8-byte
 * aligned and below TASK_SIZE; otherwise the whole job is refused with
 * -EINVAL before it runs.
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

/**
 * struct drm_svm_accel_submit - DRM_IOCTL_SVM_ACCEL_SUBMIT: run a job
 * @ops_ptr: user address of an array of @op_count struct drm_svm_accel_op
 * @op_count: 1 to SVM_ACCEL_MAX_OPS
 * @flags: must be 0
 * @error: out: 0, or the negative errno of the first device fault that could
 *	not be serviced: -EFAULT (a hole, PROT_NONE, VM_IO/VM_PFNMAP,
 *	memfd_secret or userfaultfd-registered memory), -EPERM (a write to
 *	read-only memory), -EBUSY (invalidations kept racing the fault past its
 *	retry budget), -ENOMEM, -ESRCH (the address space is gone)
 * @failed_op: out: index of the op that failed (when @error is set)
 * @fault_addr: out: the address that faulted (when @error is set)
 *
 * Runs the ops in order on the software device.  A device access that misses
 * in the device TLB and page table (or writes a read-only leaf) raises a device
 * fault; the fault worker services it through the engine and the access is
 * replayed.  Ops before @failed_op completed.
 *
 * Return: 0 when the job ran (see @error), or, with nothing run:
 *
 * * -EINVAL: a bad kind, flags, alignment or length, @op_count 0 or above
 *   SVM_ACCEL_MAX_OPS, a kernel address
 * * -EFAULT: the ops array is unreadable
 * * -ENOTCONN, -EXDEV: not bound; bound to another process
 * * -EINTR: a fatal signal stopped the job, between accesses or while it
 *   waited for a device fault (ops before it may have completed)
 * * -ENOMEM: no memory for the job
 */
struct drm_svm_accel_submit {
	__u64 ops_ptr;
	__u32 op_count;
	__u32 flags;
	__s32 error;
	__u32 failed_op;
	__u64 fault_addr;
};

#define SVM_ACCEL_PREFETCH_WRITE     (1u << 0)
#define SVM_ACCEL_PREFETCH_TO_DEVICE (1u << 1)
#define SVM_ACCEL_PREFETCH_TO_SYSTEM (1u << 2)

/**
 * struct drm_svm_accel_prefetch - DRM_IOCTL_SVM_ACCEL_PREFETCH: populate
 * @start: first byte, page aligned
 * @len: bytes, page aligned, not 0; the span below TASK_SIZE
 * @flags: SVM_ACCEL_PREFETCH_WRITE to populate for writing; at most one of
 *	SVM_ACCEL_PREFETCH_TO_DEVICE and _TO_SYSTEM to move the pages there first
 * @pad: must be 0
 * @done: out: how many bytes from @start are populated, also on error
 *
 * Populates the device page table for [@start, @start + @len) without a
 * device access, 2 MiB at a time; with a destination, each 2 MiB is first
 * moved to the device's own memory (TO_DEVICE) or back to system memory
 * (TO_SYSTEM), as far as its pages can move.  Restartable: resume at
 * @start + @done.
 *
 * Return: 0, or one of these:
 *
 * * -EINVAL: misaligned, empty, overflowing or kernel span, bad @flags or @pad
 * * -EOPNOTSUPP: TO_DEVICE on a device without memory of its own
 * * -ENOMEM: device memory (or, moving back, system memory) ran out
 * * -EINTR: a fatal signal, checked between 2 MiB chunks
 * * -ENOTCONN, -EXDEV: not bound; bound to another process
 * * the first fault's errno, as struct drm_svm_accel_submit's @error lists
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

/**
 * struct drm_svm_accel_query - DRM_IOCTL_SVM_ACCEL_QUERY: describe and count
 *
 * Capabilities, and (when bound) the engine's statistics and a census of the
 * device page table.  Works on an unbound file (@flags lacks
 * SVM_ACCEL_QUERY_BOUND and every counter is 0).  Output only: whatever the
 * caller passes in is ignored and overwritten.  Fields after
 * @batch_duplicates were appended later: DRM zero-extends the struct of an
 * older caller, and copies back only what it passed.  The same counters are in
 * /sys/kernel/debug/svm_accel/ctx-N/stats.
 *
 * Return: 0, or -ENOMEM.
 */
struct drm_svm_accel_query {
	/* capabilities */
	/** @flags: SVM_ACCEL_QUERY_BOUND when bound */
	__u32 flags;
	/** @range_shift: log2 of a range's size (one notifier and lock each) */
	__u32 range_shift;
	/** @fault_around_pages: pages a device fault maps around its own */
	__u32 fault_around_pages;
	/** @pte_format: SVM_ACCEL_PTE_* */
	__u32 pte_format;
	/** @page_sizes: bitmask of device page sizes (4 KiB | 2 MiB) */
	__u64 page_sizes;
	/** @fault_queue_depth: device fault queue entries */
	__u32 fault_queue_depth;
	/** @tlb_entries: device TLB entries per execution unit */
	__u32 tlb_entries;
	/** @pte_format_name: NUL terminated */
	char pte_format_name[16];

	/* device page table census */
	/** @pt_tables: page-table pages */
	__u64 pt_tables;
	/** @pt_pages: valid 4 KiB leaves */
	__u64 pt_pages;
	/** @pt_huge: valid 2 MiB leaves */
	__u64 pt_huge;
	/** @pt_zapped: zapped leaves awaiting reap (0 at rest) */
	__u64 pt_zapped;
	/** @ranges: ranges published now */
	__u64 ranges;
	/** @dma_live: DMA mappings held now */
	__u64 dma_live;

	/* device counters */
	/** @jobs: SUBMIT jobs run */
	__u64 jobs;
	/** @device_faults: faults raised by the device */
	__u64 device_faults;
	/** @fault_batches: batches the fault worker serviced */
	__u64 fault_batches;
	/** @tlb_hits: device TLB hits */
	__u64 tlb_hits;
	/** @tlb_misses: device TLB misses */
	__u64 tlb_misses;
	/** @gc_removed: ranges removed by the GC worker */
	__u64 gc_removed;

	/* engine statistics (svm/src/stats.rs) */
	/** @faults: faults serviced */
	__u64 faults;
	/** @fault_errors: faults that failed with an errno */
	__u64 fault_errors;
	/** @pages_mapped: 4 KiB leaves written */
	__u64 pages_mapped;
	/** @huge_mapped: 2 MiB leaves written */
	__u64 huge_mapped;
	/** @dma_unmapped: DMA mappings released */
	__u64 dma_unmapped;
	/** @retries_own: retries after the fault's own COW break */
	__u64 retries_own;
	/** @retries_foreign: retries after any other invalidation */
	__u64 retries_foreign;
	/** @retry_timeouts: faults out of retry budget (-EBUSY) */
	__u64 retry_timeouts;
	/** @invalidations: invalidation callbacks run */
	__u64 invalidations;
	/** @invalidations_hit: of which found device mappings */
	__u64 invalidations_hit;
	/** @nonblock_refused: non-blockable callbacks refused */
	__u64 nonblock_refused;
	/** @tlb_flushes: device TLB flushes */
	__u64 tlb_flushes;
	/** @ranges_created: ranges created */
	__u64 ranges_created;
	/** @ranges_removed: ranges removed by GC or teardown */
	__u64 ranges_removed;
	/** @range_races: range creations lost to a concurrent creator */
	__u64 range_races;
	/** @batch_duplicates: device faults merged as duplicates */
	__u64 batch_duplicates;
	/* appended later (see above) */
	/** @batch_windows: windows serving several queued faults at once */
	__u64 batch_windows;
	/** @ranges_reaped_empty: ranges removed because they mapped nothing */
	__u64 ranges_reaped_empty;
	/** @range_limit_hits: range creations refused (range budget) */
	__u64 range_limit_hits;
	/** @accounting_errors: engine bookkeeping bugs caught: always 0 */
	__u64 accounting_errors;
	/* device memory (appended later, see above) */
	/** @devmem_pages: pages of the device's own memory (0: none) */
	__u64 devmem_pages;
	/** @devmem_used: of which in use, by every context of the device */
	__u64 devmem_used;
	/** @migrated_to_device: pages this context moved to device memory */
	__u64 migrated_to_device;
	/** @migrated_to_system: pages this context moved back */
	__u64 migrated_to_system;
	/** @migrate_failed: pages a migration could not move */
	__u64 migrate_failed;
	/** @evicted: device pages evicted to make room */
	__u64 evicted;
	/** @local_mapped: leaves written for device memory */
	__u64 local_mapped;
	/** @atomic_mapped: leaves written for pages handed over for atomics */
	__u64 atomic_mapped;
	/** @pt_local: of @pt_pages, leaves of device memory (no DMA mapping) */
	__u64 pt_local;
	/** @peer_mapped: leaves written for a peer's memory (over the interconnect) */
	__u64 peer_mapped;
};

#define SVM_ACCEL_LOC_SYSTEM		0	/* system memory (the default) */
#define SVM_ACCEL_LOC_DEVICE		1	/* this device's own memory */
#define SVM_ACCEL_LOC_PEER		2	/* device @device's memory (a peer) */
#define SVM_ACCEL_ATOMIC_GLOBAL		0	/* over the bus; the CPU keeps access (the default) */
#define SVM_ACCEL_ATOMIC_DEVICE		1	/* device-exclusive: the page is handed over */
#define SVM_ACCEL_MADVISE_MIGRATE	(1u << 0)
#define SVM_ACCEL_MAX_ADVICE		32	/* advised spans per context */

/**
 * struct drm_svm_accel_madvise - DRM_IOCTL_SVM_ACCEL_MADVISE: placement policy
 * @start: first byte, page aligned
 * @len: bytes, page aligned, not 0; the span below TASK_SIZE
 * @location: SVM_ACCEL_LOC_*: where the device wants the span's pages
 * @atomic: SVM_ACCEL_ATOMIC_*: how the device's ADD works on the span
 * @flags: 0, or SVM_ACCEL_MADVISE_MIGRATE to move the span to @location now
 * @device: with SVM_ACCEL_LOC_PEER, which svm_accel device's memory: the N of its
 *	/dev/accel/accelN (this device's own N means SVM_ACCEL_LOC_DEVICE); else 0
 * @done: out: with SVM_ACCEL_MADVISE_MIGRATE, how many bytes from @start were
 *	moved (as far as their pages could), also on error
 *
 * Sets the placement policy of [@start, @start + @len) for this context,
 * replacing what an earlier MADVISE set there; SYSTEM and GLOBAL together
 * forget the span.  The policy belongs to the address range, not to its pages
 * or mapping: it outlives munmap and applies to whatever is mapped there
 * later, until changed.
 *
 * A device fault in a span whose location is the device first moves the
 * 256 KiB-aligned block holding the faulting page, clamped to the span, into
 * the device's memory (the least recently used pages of the device are
 * evicted when it is full); what cannot move (shared memory, no room) is
 * served from system memory.  A CPU access brings a page back to system
 * memory; the next device fault moves it again.
 *
 * The svm_accel devices are peers on one (simulated) interconnect, as devices
 * with a fast link between them: each reaches the others' memory directly.  A
 * device fault in a span whose location is a peer moves the block into the
 * peer's memory (evicting there when it is full), and the faulting device then
 * reaches the pages over the interconnect; the peer reaches them locally.  A
 * page in a peer's memory stays there when this device touches it, wherever the
 * span's policy names; only a CPU access, a migration or an eviction moves it.
 *
 * An ADD in a span whose atomic mode is the device's hands the page over to
 * the device first (make_device_exclusive_range()): until the CPU touches it
 * again, only the device accesses it.  Only private memory can be handed over:
 * ADD on shared memory fails with -EPERM, and on a page of a huge page the
 * kernel split into small mappings earlier, with -EBUSY.
 *
 * Return: 0, or one of these:
 *
 * * -EINVAL: misaligned, empty, overflowing or kernel span; bad @location,
 *   @atomic or @flags; @device not 0 without SVM_ACCEL_LOC_PEER
 * * -ENODEV: SVM_ACCEL_LOC_PEER with a @device that is not an svm_accel device
 * * -EOPNOTSUPP: SVM_ACCEL_LOC_DEVICE or SVM_ACCEL_LOC_PEER naming a device
 *   without memory of its own (module parameter accel_devmem_mib=0)
 * * -ENOSPC: more than SVM_ACCEL_MAX_ADVICE spans would be advised (nothing
 *   changed)
 * * -ENOTCONN, -EXDEV: not bound; bound to another process
 * * with SVM_ACCEL_MADVISE_MIGRATE (the policy is set first): -EFAULT for a
 *   hole or I/O memory, -ENOMEM when memory ran out, -EINTR
 */
struct drm_svm_accel_madvise {
	__u64 start;
	__u64 len;
	__u32 location;
	__u32 atomic;
	__u32 flags;
	__u32 device;
	__u64 done;
};

/**
 * DOC: user-mode queues
 *
 * A queue lets a process submit work without a system call.  Its ring, its
 * doorbell word and its fence word are ordinary memory of the bound address
 * space, named by CREATE_QUEUE; the device reaches them like any other memory,
 * through its page table, so a ring page that is swapped out, migrated or
 * copied on write is faulted back in by the device as a job's data would be.
 *
 * The protocol: the process writes jobs into consecutive ring entries (entry
 * i mod @ring_entries for its i-th job, counting from 0) and then stores the
 * number of jobs written so far into the doorbell word.  The device's command
 * processor polls the doorbell (at once after work, backing off to about a
 * millisecond when idle; a WAIT wakes it), runs each new entry's op, writes
 * ADD's and READ's result into that entry, and then stores the number of jobs
 * completed into the fence word.  All three words are native-endian __u64.
 *
 * A job whose device fault cannot be serviced (the errnos of struct
 * drm_svm_accel_submit's @error), an invalid entry (-EINVAL), a doorbell more
 * than @ring_entries ahead of the fence or behind it (-EOVERFLOW), or a ring,
 * doorbell or fence word the device cannot reach puts the queue into the error
 * state: it stops, keeping the errno and the faulting address, which WAIT
 * reports.  Other queues and the process go on.  A queue in the error state
 * stays so until it is destroyed.
 *
 * The kernel suspends a queue when its address space goes away, and suspends
 * and resumes a context's queues on request through debugfs (ctx-N/queues): a
 * suspended queue finishes the job it runs and stops before the next.  Closing
 * the file, DESTROY_QUEUE and unplugging the device stop a queue within one
 * device access, abandoning the job it runs.
 */

/**
 * struct drm_svm_accel_qentry - one entry of a queue's ring (64 bytes)
 * @op: the job, checked as SUBMIT checks its ops; @op.result is written back
 *	for ADD and READ
 * @user: ignored by the device: free for the submitter (a job id, say)
 */
struct drm_svm_accel_qentry {
	struct drm_svm_accel_op op;
	__u64 user[2];
};

#define SVM_ACCEL_MAX_QUEUES	16	/* per open file */
#define SVM_ACCEL_MAX_RING	4096	/* entries */

#define SVM_ACCEL_QUEUE_PRIORITY_NORMAL	0
#define SVM_ACCEL_QUEUE_PRIORITY_HIGH	1	/* needs CAP_SYS_NICE */

/**
 * struct drm_svm_accel_create_queue - DRM_IOCTL_SVM_ACCEL_CREATE_QUEUE
 * @ring: user address of @ring_entries struct drm_svm_accel_qentry, 64-byte
 *	aligned
 * @doorbell: user address of the doorbell word, 8-byte aligned
 * @fence: user address of the fence word, 8-byte aligned
 * @ring_entries: a power of two, 1 to SVM_ACCEL_MAX_RING
 * @priority: SVM_ACCEL_QUEUE_PRIORITY_NORMAL, or _HIGH: the command processor
 *	runs on a high-priority workqueue
 * @flags: must be 0
 * @queue_id: out: the queue's id, never reused by the file
 *
 * Creates a queue and starts its command processor at job 0: the doorbell word
 * should hold 0 (or the number of jobs already in the ring).  Nothing is read
 * or written by the call itself: the addresses need not be mapped yet.
 *
 * Return: 0, or one of these:
 *
 * * -EINVAL: misaligned or kernel addresses, @ring_entries not a power of two
 *   or too large, bad @priority or @flags
 * * -EACCES: _HIGH priority without CAP_SYS_NICE
 * * -ENOSPC: the file has SVM_ACCEL_MAX_QUEUES queues, or the device its
 *   max_queues (a module parameter, 64 by default)
 * * -ENOTCONN, -EXDEV: not bound; bound to another process
 * * -ENOMEM: no memory
 */
struct drm_svm_accel_create_queue {
	__u64 ring;
	__u64 doorbell;
	__u64 fence;
	__u32 ring_entries;
	__u32 priority;
	__u32 flags;
	__u32 queue_id;
};

/**
 * struct drm_svm_accel_destroy_queue - DRM_IOCTL_SVM_ACCEL_DESTROY_QUEUE
 * @queue_id: the queue
 * @pad: must be 0
 *
 * Stops the queue and frees it.  When the call returns the device neither
 * reads nor writes the ring, doorbell or fence any more: a job it was running
 * is abandoned between two device accesses.
 *
 * Return: 0, or -ENOENT (no such queue), -EINVAL (@pad), -ENOTCONN, -EXDEV.
 */
struct drm_svm_accel_destroy_queue {
	__u32 queue_id;
	__u32 pad;
};

#define SVM_ACCEL_QUEUE_ACTIVE		1
#define SVM_ACCEL_QUEUE_ERROR		2
#define SVM_ACCEL_QUEUE_SUSPENDED	3

/**
 * struct drm_svm_accel_wait - DRM_IOCTL_SVM_ACCEL_WAIT: wait for a queue
 * @queue_id: the queue
 * @flags: must be 0
 * @value: wait until the queue completed at least this many jobs
 * @timeout_ns: relative timeout; 0 only reports the state (a queue query)
 * @completed: out: jobs completed (what the device last wrote to the fence
 *	word)
 * @fault_addr: out: in the error state, the address that could not be
 *	accessed
 * @error: out: in the error state, the negative errno; else 0
 * @state: out: SVM_ACCEL_QUEUE_ACTIVE, _ERROR or _SUSPENDED
 *
 * Sleeps (interruptibly) until @value jobs completed, the queue enters the
 * error state, @timeout_ns passes or a signal arrives.  The count is the
 * kernel's own, not the fence word, which the process can overwrite.  The out
 * fields are filled on every return but -EINVAL.  A WAIT also wakes an idle
 * command processor, so a process that waits need not wait for its poll.
 *
 * Return: 0 when @value was reached, or one of these:
 *
 * * -ETIME: @timeout_ns passed first
 * * -EIO: the queue is in the error state (see @error and @fault_addr)
 * * -EINTR: a signal
 * * -ENOENT: no such queue, or it was destroyed during the wait
 * * -EINVAL, -ENOTCONN, -EXDEV: bad @flags; not bound; bound elsewhere
 */
struct drm_svm_accel_wait {
	__u32 queue_id;
	__u32 flags;
	__u64 value;
	__u64 timeout_ns;
	__u64 completed;
	__u64 fault_addr;
	__s32 error;
	__u32 state;
};

#define DRM_IOCTL_SVM_ACCEL_BIND \
	DRM_IOWR(DRM_COMMAND_BASE + DRM_SVM_ACCEL_BIND, struct drm_svm_accel_bind)
#define DRM_IOCTL_SVM_ACCEL_SUBMIT \
	DRM_IOWR(DRM_COMMAND_BASE + DRM_SVM_ACCEL_SUBMIT, struct drm_svm_accel_submit)
#define DRM_IOCTL_SVM_ACCEL_PREFETCH \
	DRM_IOWR(DRM_COMMAND_BASE + DRM_SVM_ACCEL_PREFETCH, struct drm_svm_accel_prefetch)
#define DRM_IOCTL_SVM_ACCEL_QUERY \
	DRM_IOWR(DRM_COMMAND_BASE + DRM_SVM_ACCEL_QUERY, struct drm_svm_accel_query)
#define DRM_IOCTL_SVM_ACCEL_CREATE_QUEUE \
	DRM_IOWR(DRM_COMMAND_BASE + DRM_SVM_ACCEL_CREATE_QUEUE, \
		 struct drm_svm_accel_create_queue)
#define DRM_IOCTL_SVM_ACCEL_DESTROY_QUEUE \
	DRM_IOWR(DRM_COMMAND_BASE + DRM_SVM_ACCEL_DESTROY_QUEUE, \
		 struct drm_svm_accel_destroy_queue)
#define DRM_IOCTL_SVM_ACCEL_WAIT \
	DRM_IOWR(DRM_COMMAND_BASE + DRM_SVM_ACCEL_WAIT, struct drm_svm_accel_wait)
#define DRM_IOCTL_SVM_ACCEL_MADVISE \
	DRM_IOWR(DRM_COMMAND_BASE + DRM_SVM_ACCEL_MADVISE, struct drm_svm_accel_madvise)

#if defined(__cplusplus)
}
#endif

#endif /* _UAPI_SVM_ACCEL_H_ */
