/* SPDX-License-Identifier: GPL-2.0 */
/*
 * C side of svm_accel.  6.12's Rust bindings cover no mm, hmm, mmu_notifier,
 * DMA or DRM API and an out-of-tree module cannot extend bindings_helper.h,
 * so this glue owns those kernel structs and exports small functions on
 * opaque pointers; driver/ffi.rs declares the same functions for Rust.
 * Keep the two in sync.
 */
#ifndef SVM_ACCEL_GLUE_H
#define SVM_ACCEL_GLUE_H

#include <linux/types.h>

struct mm_struct;
struct device;
struct svm_notifier;
struct svm_work;
struct svm_waitq;

/* Lock classes: one static lock_class_key and lockdep name each. */
enum svm_lock_class {
	SVM_LC_TABLE = 0,  /* spinlock: page-table page (innermost) */
	SVM_LC_RANGE = 1,  /* mutex: a range */
	SVM_LC_INDEX = 2,  /* mutex: the engine's range index */
	SVM_LC_CTX = 3,    /* mutex: a file's context state (bind) */
	SVM_LC_WORKER = 4, /* mutex: the fault worker's scratch */
	SVM_LC_FAULTQ = 5, /* spinlock: the device fault queue */
	SVM_LC_TLB = 6,    /* spinlock: the device TLB, held across each device access */
	SVM_LC_ENGINE = 7, /* mutex: engine-wide lock of LockScope::EngineMutex (baseline) */
	SVM_LC_ENGINE_RW = 8, /* rwsem: engine-wide lock of LockScope::EngineRwsem (baseline) */
	SVM_LC_DMA = 9,    /* spinlock: a bucket of the shared DMA mapping table (innermost) */
	SVM_LC_REGISTRY = 10, /* mutex: every open file's context, for unplug (device.rs) */
	SVM_LC_QUEUES = 11, /* mutex: a context's queue table (never held while waiting) */
	SVM_LC_QCTL = 12,   /* mutex: a context's queue suspend/resume (outside QUEUES) */
	SVM_LC_POLICY = 13, /* spinlock: a context's placement policy (held only to read or set it) */
	SVM_LC_NR
};

/* locks: initialised in place inside Rust structures, never moved */
void svm_spin_init(void *l, unsigned int cls);
void svm_spin_lock(void *l);
bool svm_spin_trylock(void *l);
void svm_spin_unlock(void *l);
void svm_mutex_init(void *l, unsigned int cls);
void svm_mutex_destroy(void *l);
void svm_mutex_lock(void *l);
bool svm_mutex_trylock(void *l);
void svm_mutex_unlock(void *l);
void svm_rwsem_init(void *l, unsigned int cls);
void svm_rwsem_down_read(void *l);
void svm_rwsem_up_read(void *l);
void svm_rwsem_down_write(void *l);
bool svm_rwsem_down_write_trylock(void *l);
void svm_rwsem_up_write(void *l);

/* memory accounting: the flags of every allocation for a context, and the kworkers' scope */
u32 svm_gfp(void);
void *svm_memcg_enter(struct mm_struct *mm, void **old);
void svm_memcg_exit(void *memcg, void *old);

/* mm */
struct mm_struct *svm_current_mm(void);
u64 svm_current_task(void);	/* current, as a number (compared, never dereferenced) */
int svm_mm_bind(struct mm_struct *mm);	/* mmgrab + register the mm with mmu_notifier */
void svm_mm_drop(struct mm_struct *mm);	/* mmdrop */
int svm_mmap_read_lock(struct mm_struct *mm);	/* mmget_not_zero + mmap_read_lock_killable */
void svm_mmap_read_unlock(struct mm_struct *mm);	/* mmap_read_unlock + mmput_async */

struct svm_vma_info {
	u64 start;
	u64 end;
	u32 read;
	u32 write;
	u32 io;		/* VM_IO | VM_PFNMAP */
	u32 refuse;	/* SVM_VMA_REFUSE_*: memory the device must not touch */
};
/* memfd_secret: its pages are not in the direct map (the device would oops kmapping them). */
#define SVM_VMA_REFUSE_SECRETMEM	(1u << 0)
/*
 * userfaultfd-armed: 6.12's hmm_vma_fault() faults without FAULT_FLAG_ALLOW_RETRY, so a
 * missing page gets SIGBUS (and a DEBUG_VM stack dump) instead of waiting for the handler.
 */
#define SVM_VMA_REFUSE_UFFD		(1u << 1)
bool svm_vma_lookup(struct mm_struct *mm, u64 addr, struct svm_vma_info *out);

/* Event numbers passed to svm_rs_invalidate (platform::Event order). */
enum svm_event {
	SVM_EV_UNMAP = 0,
	SVM_EV_CLEAR,
	SVM_EV_PROTECTION_VMA,
	SVM_EV_PROTECTION_PAGE,
	SVM_EV_SOFT_DIRTY,
	SVM_EV_RELEASE,
	SVM_EV_MIGRATE,
	SVM_EV_EXCLUSIVE,
};

/* interval notifiers */
int svm_notifier_insert(struct mm_struct *mm, u64 start, u64 len, const void *cb,
			const void *cookie, struct svm_work *unmap_work,
			struct svm_notifier **out);
void svm_notifier_remove(struct svm_notifier *n);
void svm_notifier_free(struct svm_notifier *n);
unsigned long svm_notifier_read_begin(struct svm_notifier *n);
bool svm_notifier_read_retry(struct svm_notifier *n, unsigned long seq);
bool svm_notifier_check_retry(struct svm_notifier *n, unsigned long seq);
void svm_notifier_set_seq(struct svm_notifier *n, unsigned long seq);
int svm_hmm_range_fault(struct svm_notifier *n, unsigned long seq, u64 start, u64 npages,
			u64 *pfns, u64 owner);

/* Rust: runs the engine's callback (platform::InvalidateFn). */
bool svm_rs_invalidate(const void *cb, const void *cookie, struct svm_notifier *n, u64 start,
		       u64 end, unsigned int event, bool blockable, unsigned long cur_seq,
		       u64 owner);

/* DMA + pages */
u64 svm_dma_map(struct device *dev, u64 pfn, unsigned int order, bool write, int *err);
void svm_dma_unmap(struct device *dev, u64 addr, unsigned int order, bool write);
void svm_set_page_dirty(u64 pfn);
void *svm_kmap_pfn(u64 pfn);
bool svm_is_zero_pfn(u64 pfn);
bool svm_is_ksm_pfn(u64 pfn);
void svm_kunmap(void *addr);
struct device *svm_get_device(struct device *dev);
void svm_put_device(struct device *dev);

/* page-table pages */
void *svm_table_alloc(unsigned long size);
void svm_table_free(void *p, unsigned long size);
u64 svm_virt_to_phys(const void *p);
void svm_page_set_private(void *p, unsigned long v);
unsigned long svm_phys_page_private(u64 pa);

/* debugfs (debugfs.c): a context's directory; its files' text comes from Rust */
enum {
	SVM_DBG_STATS = 0, SVM_DBG_RANGES = 1,		/* an accel context */
	SVM_DBG_DM_STATS = 2, SVM_DBG_DM_RANGES = 3,	/* a dmirror file */
	SVM_DBG_DEVICE = 4,				/* the module (obj NULL) */
	SVM_DBG_QUEUES = 5,				/* an accel context's queues */
};
void svm_debugfs_init(void);
void svm_debugfs_exit(void);
void *svm_debugfs_ctx_add(void *obj, u64 id, bool mirror);	/* NULL/ERR_PTR: none */
void svm_debugfs_remove(void *d);		/* waits for running readers */
void svm_seq_write(void *m, const char *buf, size_t len);
int svm_rs_debugfs_show(void *obj, unsigned int what, void *m);	/* Rust */
int svm_rs_debugfs_write(void *obj, unsigned int what, const char *buf, size_t len);

/* tracepoints (trace.c, svm_trace.h): events use the SVM_EV_* numbering */
bool svm_tracing(void);
void svm_trace_fault_start(const void *ctx, u64 va, bool write, u64 pages);
void svm_trace_fault_end(const void *ctx, u64 va, bool write, int err, u64 ns);
void svm_trace_retry(const void *ctx, u64 va, bool own);
void svm_trace_invalidate(const void *ctx, u64 start, u64 end, unsigned int event, bool hit);
void svm_trace_gc(const void *ctx, u64 removed);
void svm_trace_queue(const void *ctx, u32 id, unsigned int state, int err, u64 addr,
		     u64 completed);
void svm_trace_queue_run(const void *ctx, u32 id, u64 jobs, u64 completed);

/* misc */
u64 svm_now_ns(void);
void svm_cond_resched(void);
void svm_fault_ns_add(u64 ns);	/* the fault_ns module parameter */
unsigned int svm_nr_cpu_ids(void);
unsigned int svm_this_cpu(void);	/* a hint: the caller may migrate right after */
bool svm_fatal_signal_pending(void);
u64 svm_task_size(void);
unsigned int svm_max_ranges(void);	/* the max_ranges module parameter */
unsigned int svm_range_shift(void);	/* the range_shift module parameter */
unsigned int svm_lock_scope(void);	/* the lock_scope module parameter */
bool svm_dma_share(void);		/* the dma_share module parameter, resolved */
void svm_fault_delay(void);	/* the fault_delay_ms module parameter (tests) */

/* work items (on the module's workqueue) + wait queues */
struct svm_work *svm_work_new(void (*fn)(void *data), void *data);
struct svm_work *svm_work_new_teardown(void (*fn)(void *data), void *data);
struct svm_work *svm_work_new_queue(void (*fn)(void *data), void *data, bool high);
void svm_work_queue(struct svm_work *w);
void svm_work_cancel_sync(struct svm_work *w);
void svm_work_free(struct svm_work *w);
void svm_rs_work(void *data);	/* Rust: the accel context's fault worker */

struct svm_waitq *svm_waitq_new(void);
void svm_waitq_free(struct svm_waitq *q);
int svm_waitq_wait_ne_killable(struct svm_waitq *q, const u32 *p, u32 old);
int svm_waitq_wait_cond(struct svm_waitq *q, bool (*cond)(const void *data), const void *data,
			u64 timeout_ns, bool interruptible);
void svm_waitq_wake(struct svm_waitq *q);
bool svm_capable_sys_nice(void);
unsigned int svm_max_queues(void);
void svm_rs_queue_work(void *data);	/* Rust: a queue's command processor */

/*
 * Kernel ABI values the Rust side hard-codes (svm/src/platform.rs, driver/uapi.rs,
 * driver/dmirror.rs).  glue.c static_asserts each against the kernel's (and our uAPI's)
 * headers at compile time, and exports the headers' values in svm_abi[] in this order;
 * module init compares them with the Rust constants (driver/svm_accel.rs), so neither side
 * can drift alone.  Keep SVM_ABI_NR equal to ffi::ABI_NR.
 */
enum svm_abi_idx {
	SVM_ABI_HMM_PFN_VALID,
	SVM_ABI_HMM_PFN_WRITE,
	SVM_ABI_HMM_PFN_ERROR,
	SVM_ABI_HMM_PFN_ORDER_SHIFT,
	SVM_ABI_HMM_PFN_FLAGS,
	SVM_ABI_HMM_PFN_REQ_FAULT,
	SVM_ABI_HMM_PFN_REQ_WRITE,
	SVM_ABI_SIZE_BIND,
	SVM_ABI_SIZE_OP,
	SVM_ABI_SIZE_SUBMIT,
	SVM_ABI_SIZE_PREFETCH,
	SVM_ABI_SIZE_QUERY,
	SVM_ABI_OP_RESULT_OFFSET,
	SVM_ABI_MAX_OPS,
	SVM_ABI_DMIRROR_CMD_SIZE,
	SVM_ABI_DMIRROR_NR_READ,
	SVM_ABI_DMIRROR_NR_WRITE,
	SVM_ABI_DMIRROR_NR_MIGRATE_TO_DEV,
	SVM_ABI_DMIRROR_NR_MIGRATE_TO_SYS,
	SVM_ABI_DMIRROR_NR_SNAPSHOT,
	SVM_ABI_DMIRROR_NR_EXCLUSIVE,
	SVM_ABI_DMIRROR_NR_CHECK_EXCLUSIVE,
	SVM_ABI_DMIRROR_NR_RELEASE,
	SVM_ABI_DMIRROR_PROT_ERROR,
	SVM_ABI_DMIRROR_PROT_NONE,
	SVM_ABI_DMIRROR_PROT_READ,
	SVM_ABI_DMIRROR_PROT_WRITE,
	SVM_ABI_DMIRROR_PROT_PMD,
	SVM_ABI_DMIRROR_PROT_PUD,
	SVM_ABI_DMIRROR_PROT_ZERO,
	SVM_ABI_SIZE_QENTRY,
	SVM_ABI_SIZE_CREATE_QUEUE,
	SVM_ABI_SIZE_DESTROY_QUEUE,
	SVM_ABI_SIZE_WAIT,
	SVM_ABI_MAX_QUEUES,
	SVM_ABI_MAX_RING,
	SVM_ABI_QUEUE_ACTIVE,
	SVM_ABI_QUEUE_ERROR,
	SVM_ABI_QUEUE_SUSPENDED,
	SVM_ABI_NR
};
extern const u64 svm_abi[SVM_ABI_NR];

/*
 * driver boilerplate: called by the Rust module init/exit.  dma_bits: the address bits the
 * device's PTE format holds; probe sets the DMA mask to exactly that.
 */
int svm_glue_init(unsigned int dma_bits);
void svm_glue_exit(void);

/* Rust: per-file context and ioctls */
void *svm_rs_open(struct device *dev, u32 index);
void svm_rs_postclose(void *ctx);	/* defers the teardown to a work item */
int svm_rs_bind(void *ctx, void *data);
int svm_rs_submit(void *ctx, void *data);
int svm_rs_prefetch(void *ctx, void *data);
int svm_rs_madvise(void *ctx, void *data);
int svm_rs_query(void *ctx, void *data);
int svm_rs_create_queue(void *ctx, void *data);
int svm_rs_destroy_queue(void *ctx, void *data);
int svm_rs_wait(void *ctx, void *data);
/* Rust: unplug (svm_remove): stop every job, then tear every engine down */
void svm_rs_unplug_begin(void);
void svm_rs_unplug_finish(void);

/* device memory (driver/kplat/devmem.rs) */
struct svm_devmem;
int svm_devmem_create(u64 bytes, u64 owner, u64 *first_pfn, struct svm_devmem **out);
void svm_devmem_set_rs(struct svm_devmem *dm, void *rs);
void svm_devmem_destroy(struct svm_devmem *dm);	/* every page free (evicted) first */
u64 svm_devmem_owner(struct svm_devmem *dm);
u64 svm_pfn_private_owner(u64 pfn);
int svm_devmem_page_init(u64 pfn);
u64 svm_alloc_locked_page(bool nofail);
void svm_put_locked_page(u64 pfn);
void svm_copy_pfn(u64 dst, u64 src);
long svm_migrate_setup(struct mm_struct *mm, u64 start, u64 npages, u64 *src, u64 *dst,
		       u32 device_private, u64 owner, u64 fault_pfn);
long svm_migrate_keep_ksm(u64 *src, u64 npages);
long svm_make_exclusive(struct mm_struct *mm, u64 start, u64 npages, u64 *pfns, u64 owner);
void svm_release_exclusive(const u64 *pfns, u64 npages);
void svm_migrate_pages(struct mm_struct *mm, u64 start, u64 npages, u64 *src, u64 *dst,
		       u64 owner, u64 fault_pfn);
void svm_migrate_finalize(struct mm_struct *mm, u64 start, u64 npages, u64 *src, u64 *dst,
			  u64 owner, u64 fault_pfn);
int svm_migrate_device_range(u64 *src, u64 first_pfn, u64 npages);
void svm_migrate_device_pages(u64 *src, u64 *dst, u64 npages);
void svm_migrate_device_finalize(u64 *src, u64 *dst, u64 npages);
/* Rust: the pagemap's callbacks */
void svm_rs_devmem_free(void *rs, u64 pfn);
int svm_rs_migrate_to_ram(void *rs, struct mm_struct *mm, u64 addr, u64 fault_pfn);

/* dmirror front end (driver/dmirror.rs), with the module parameter dmirror=1 */
struct vm_area_struct;
int svm_vm_insert_zeroed_page(struct vm_area_struct *vma, u64 addr);
int svm_rs_dm_open(struct device *dev, unsigned int index, void **out);
u64 svm_dm_devmem_mib(void);
u64 svm_accel_devmem_mib(void);
u32 svm_accel_devices(void);
void svm_msleep(u32 ms);
int svm_accel_by_minor(u32 minor);
void svm_rs_dm_release(void *m);
int svm_rs_dm_ioctl(void *m, unsigned int nr, unsigned long uarg);
int svm_rs_dm_mmap(struct vm_area_struct *vma, u64 start, u64 end);

#endif
