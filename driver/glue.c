// SPDX-License-Identifier: GPL-2.0
/*
 * svm_accel C glue: the kernel structs 6.12's Rust bindings don't cover
 * (locks with try-lock, mm, mmu_interval_notifier, hmm, DMA, pages, work
 * items, wait queues) behind functions on opaque pointers, plus the DRM accel
 * + platform driver boilerplate.  All logic lives in Rust (driver/ *.rs and the
 * shared svm/ and pgtable/ sources); see Documentation/kernel.rst.
 */
#include <linux/dma-map-ops.h>
#include <linux/dma-mapping.h>
#include <linux/delay.h>
#include <linux/highmem.h>
#include <linux/huge_mm.h>
#include <linux/hmm.h>
#include <linux/magic.h>
#include <linux/memcontrol.h>
#include <linux/memremap.h>
#include <linux/migrate.h>
#include <linux/rmap.h>
#include <linux/mm.h>
#include <linux/mmu_notifier.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/platform_device.h>
#include <linux/rwsem.h>
#include <linux/sched/mm.h>
#include <linux/sched/signal.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/srcu.h>
#include <linux/timekeeping.h>
#include <linux/userfaultfd_k.h>
#include <linux/wait.h>
#include <linux/workqueue.h>

#include <drm/drm_accel.h>
#include <drm/drm_drv.h>
#include <drm/drm_file.h>
#include <drm/drm_gem.h>
#include <drm/drm_ioctl.h>

#include "../include/uapi/drm/svm_accel.h"
#include "glue.h"
/* hmm-tests' uAPI, from the kernel tree we build against (Kbuild adds $(srctree)/lib). */
#include "test_hmm_uapi.h"

/* ---- ABI the Rust side hard-codes ---------------------------------------- */

/*
 * uAPI layout: fixed sizes and offsets, so 32- and 64-bit userspace agree.  driver/uapi.rs
 * const-asserts the same numbers against its mirror (compile time on both sides).
 */
#define SVM_OFF(s, f, n) static_assert(offsetof(struct s, f) == (n))
static_assert(sizeof(struct drm_svm_accel_bind) == 8);
SVM_OFF(drm_svm_accel_bind, flags, 0);
SVM_OFF(drm_svm_accel_bind, pad, 4);
static_assert(sizeof(struct drm_svm_accel_op) == 48);
SVM_OFF(drm_svm_accel_op, kind, 0);
SVM_OFF(drm_svm_accel_op, flags, 4);
SVM_OFF(drm_svm_accel_op, src, 8);
SVM_OFF(drm_svm_accel_op, dst, 16);
SVM_OFF(drm_svm_accel_op, len, 24);
SVM_OFF(drm_svm_accel_op, value, 32);
SVM_OFF(drm_svm_accel_op, result, 40);
static_assert(sizeof(struct drm_svm_accel_submit) == 32);
SVM_OFF(drm_svm_accel_submit, ops_ptr, 0);
SVM_OFF(drm_svm_accel_submit, op_count, 8);
SVM_OFF(drm_svm_accel_submit, flags, 12);
SVM_OFF(drm_svm_accel_submit, error, 16);
SVM_OFF(drm_svm_accel_submit, failed_op, 20);
SVM_OFF(drm_svm_accel_submit, fault_addr, 24);
static_assert(sizeof(struct drm_svm_accel_prefetch) == 32);
SVM_OFF(drm_svm_accel_prefetch, start, 0);
SVM_OFF(drm_svm_accel_prefetch, len, 8);
SVM_OFF(drm_svm_accel_prefetch, flags, 16);
SVM_OFF(drm_svm_accel_prefetch, pad, 20);
SVM_OFF(drm_svm_accel_prefetch, done, 24);
static_assert(sizeof(struct drm_svm_accel_query) == 384);
SVM_OFF(drm_svm_accel_query, pt_local, 368);
SVM_OFF(drm_svm_accel_query, flags, 0);
SVM_OFF(drm_svm_accel_query, range_shift, 4);
SVM_OFF(drm_svm_accel_query, fault_around_pages, 8);
SVM_OFF(drm_svm_accel_query, pte_format, 12);
SVM_OFF(drm_svm_accel_query, page_sizes, 16);
SVM_OFF(drm_svm_accel_query, fault_queue_depth, 24);
SVM_OFF(drm_svm_accel_query, tlb_entries, 28);
SVM_OFF(drm_svm_accel_query, pte_format_name, 32);
SVM_OFF(drm_svm_accel_query, pt_tables, 48);
SVM_OFF(drm_svm_accel_query, dma_live, 88);
SVM_OFF(drm_svm_accel_query, jobs, 96);
SVM_OFF(drm_svm_accel_query, gc_removed, 136);
SVM_OFF(drm_svm_accel_query, faults, 144);
SVM_OFF(drm_svm_accel_query, batch_duplicates, 264);
SVM_OFF(drm_svm_accel_query, accounting_errors, 296);
SVM_OFF(drm_svm_accel_query, devmem_pages, 304);
SVM_OFF(drm_svm_accel_query, atomic_mapped, 360);
SVM_OFF(drm_svm_accel_query, peer_mapped, 376);
static_assert(sizeof(struct drm_svm_accel_madvise) == 40);
SVM_OFF(drm_svm_accel_madvise, start, 0);
SVM_OFF(drm_svm_accel_madvise, len, 8);
SVM_OFF(drm_svm_accel_madvise, location, 16);
SVM_OFF(drm_svm_accel_madvise, atomic, 20);
SVM_OFF(drm_svm_accel_madvise, flags, 24);
SVM_OFF(drm_svm_accel_madvise, device, 28);
SVM_OFF(drm_svm_accel_madvise, done, 32);
static_assert(sizeof(struct drm_svm_accel_qentry) == 64);
SVM_OFF(drm_svm_accel_qentry, op, 0);
SVM_OFF(drm_svm_accel_qentry, user, 48);
static_assert(sizeof(struct drm_svm_accel_create_queue) == 40);
SVM_OFF(drm_svm_accel_create_queue, ring, 0);
SVM_OFF(drm_svm_accel_create_queue, doorbell, 8);
SVM_OFF(drm_svm_accel_create_queue, fence, 16);
SVM_OFF(drm_svm_accel_create_queue, ring_entries, 24);
SVM_OFF(drm_svm_accel_create_queue, priority, 28);
SVM_OFF(drm_svm_accel_create_queue, flags, 32);
SVM_OFF(drm_svm_accel_create_queue, queue_id, 36);
static_assert(sizeof(struct drm_svm_accel_destroy_queue) == 8);
SVM_OFF(drm_svm_accel_destroy_queue, queue_id, 0);
SVM_OFF(drm_svm_accel_destroy_queue, pad, 4);
static_assert(sizeof(struct drm_svm_accel_wait) == 48);
SVM_OFF(drm_svm_accel_wait, queue_id, 0);
SVM_OFF(drm_svm_accel_wait, flags, 4);
SVM_OFF(drm_svm_accel_wait, value, 8);
SVM_OFF(drm_svm_accel_wait, timeout_ns, 16);
SVM_OFF(drm_svm_accel_wait, completed, 24);
SVM_OFF(drm_svm_accel_wait, fault_addr, 32);
SVM_OFF(drm_svm_accel_wait, error, 40);
SVM_OFF(drm_svm_accel_wait, state, 44);

/* test_hmm's uAPI, which driver/dmirror.rs speaks. */
static_assert(sizeof(struct hmm_dmirror_cmd) == 40);
SVM_OFF(hmm_dmirror_cmd, addr, 0);
SVM_OFF(hmm_dmirror_cmd, ptr, 8);
SVM_OFF(hmm_dmirror_cmd, npages, 16);
SVM_OFF(hmm_dmirror_cmd, cpages, 24);
SVM_OFF(hmm_dmirror_cmd, faults, 32);
/* glue.c's ioctl switch checks the full command words, Rust dispatches on _IOC_NR. */
static_assert(_IOC_NR(HMM_DMIRROR_READ) == 0 && _IOC_NR(HMM_DMIRROR_WRITE) == 1 &&
	      _IOC_NR(HMM_DMIRROR_MIGRATE_TO_DEV) == 2 && _IOC_NR(HMM_DMIRROR_MIGRATE_TO_SYS) == 3 &&
	      _IOC_NR(HMM_DMIRROR_SNAPSHOT) == 4 && _IOC_NR(HMM_DMIRROR_EXCLUSIVE) == 5 &&
	      _IOC_NR(HMM_DMIRROR_CHECK_EXCLUSIVE) == 6 && _IOC_NR(HMM_DMIRROR_RELEASE) == 7);
static_assert(HMM_DMIRROR_PROT_ERROR == 0xff && HMM_DMIRROR_PROT_NONE == 0 &&
	      HMM_DMIRROR_PROT_READ == 1 && HMM_DMIRROR_PROT_WRITE == 2 &&
	      HMM_DMIRROR_PROT_PMD == 4 && HMM_DMIRROR_PROT_PUD == 8 && HMM_DMIRROR_PROT_ZERO == 0x10);

/*
 * hmm's pfn encoding, as svm/src/platform.rs writes it (a later kernel moved ORDER_SHIFT and
 * added flags below it: this is where a port finds out).
 */
static_assert(HMM_PFN_VALID == 1UL << 63);
static_assert(HMM_PFN_WRITE == 1UL << 62);
static_assert(HMM_PFN_ERROR == 1UL << 61);
static_assert(HMM_PFN_ORDER_SHIFT == 56);
static_assert(HMM_PFN_FLAGS == 0xffUL << 56);
static_assert(HMM_PFN_REQ_FAULT == HMM_PFN_VALID && HMM_PFN_REQ_WRITE == HMM_PFN_WRITE);

/* The headers' values, for module init to compare with the Rust constants (glue.h). */
static_assert(SVM_ABI_NR == 39);
const u64 svm_abi[SVM_ABI_NR] = {
	[SVM_ABI_HMM_PFN_VALID] = HMM_PFN_VALID,
	[SVM_ABI_HMM_PFN_WRITE] = HMM_PFN_WRITE,
	[SVM_ABI_HMM_PFN_ERROR] = HMM_PFN_ERROR,
	[SVM_ABI_HMM_PFN_ORDER_SHIFT] = HMM_PFN_ORDER_SHIFT,
	[SVM_ABI_HMM_PFN_FLAGS] = HMM_PFN_FLAGS,
	[SVM_ABI_HMM_PFN_REQ_FAULT] = HMM_PFN_REQ_FAULT,
	[SVM_ABI_HMM_PFN_REQ_WRITE] = HMM_PFN_REQ_WRITE,
	[SVM_ABI_SIZE_BIND] = sizeof(struct drm_svm_accel_bind),
	[SVM_ABI_SIZE_OP] = sizeof(struct drm_svm_accel_op),
	[SVM_ABI_SIZE_SUBMIT] = sizeof(struct drm_svm_accel_submit),
	[SVM_ABI_SIZE_PREFETCH] = sizeof(struct drm_svm_accel_prefetch),
	[SVM_ABI_SIZE_QUERY] = sizeof(struct drm_svm_accel_query),
	[SVM_ABI_OP_RESULT_OFFSET] = offsetof(struct drm_svm_accel_op, result),
	[SVM_ABI_MAX_OPS] = SVM_ACCEL_MAX_OPS,
	[SVM_ABI_DMIRROR_CMD_SIZE] = sizeof(struct hmm_dmirror_cmd),
	[SVM_ABI_DMIRROR_NR_READ] = _IOC_NR(HMM_DMIRROR_READ),
	[SVM_ABI_DMIRROR_NR_WRITE] = _IOC_NR(HMM_DMIRROR_WRITE),
	[SVM_ABI_DMIRROR_NR_MIGRATE_TO_DEV] = _IOC_NR(HMM_DMIRROR_MIGRATE_TO_DEV),
	[SVM_ABI_DMIRROR_NR_MIGRATE_TO_SYS] = _IOC_NR(HMM_DMIRROR_MIGRATE_TO_SYS),
	[SVM_ABI_DMIRROR_NR_SNAPSHOT] = _IOC_NR(HMM_DMIRROR_SNAPSHOT),
	[SVM_ABI_DMIRROR_NR_EXCLUSIVE] = _IOC_NR(HMM_DMIRROR_EXCLUSIVE),
	[SVM_ABI_DMIRROR_NR_CHECK_EXCLUSIVE] = _IOC_NR(HMM_DMIRROR_CHECK_EXCLUSIVE),
	[SVM_ABI_DMIRROR_NR_RELEASE] = _IOC_NR(HMM_DMIRROR_RELEASE),
	[SVM_ABI_DMIRROR_PROT_ERROR] = HMM_DMIRROR_PROT_ERROR,
	[SVM_ABI_DMIRROR_PROT_NONE] = HMM_DMIRROR_PROT_NONE,
	[SVM_ABI_DMIRROR_PROT_READ] = HMM_DMIRROR_PROT_READ,
	[SVM_ABI_DMIRROR_PROT_WRITE] = HMM_DMIRROR_PROT_WRITE,
	[SVM_ABI_DMIRROR_PROT_PMD] = HMM_DMIRROR_PROT_PMD,
	[SVM_ABI_DMIRROR_PROT_PUD] = HMM_DMIRROR_PROT_PUD,
	[SVM_ABI_DMIRROR_PROT_ZERO] = HMM_DMIRROR_PROT_ZERO,
	[SVM_ABI_SIZE_QENTRY] = sizeof(struct drm_svm_accel_qentry),
	[SVM_ABI_SIZE_CREATE_QUEUE] = sizeof(struct drm_svm_accel_create_queue),
	[SVM_ABI_SIZE_DESTROY_QUEUE] = sizeof(struct drm_svm_accel_destroy_queue),
	[SVM_ABI_SIZE_WAIT] = sizeof(struct drm_svm_accel_wait),
	[SVM_ABI_MAX_QUEUES] = SVM_ACCEL_MAX_QUEUES,
	[SVM_ABI_MAX_RING] = SVM_ACCEL_MAX_RING,
	[SVM_ABI_QUEUE_ACTIVE] = SVM_ACCEL_QUEUE_ACTIVE,
	[SVM_ABI_QUEUE_ERROR] = SVM_ACCEL_QUEUE_ERROR,
	[SVM_ABI_QUEUE_SUSPENDED] = SVM_ACCEL_QUEUE_SUSPENDED,
};

/* ---- memory accounting -------------------------------------------------- */

/*
 * Every allocation made on behalf of a context (its locks, notifiers, page-table pages,
 * work items, wait queues; the Rust side uses the same flags, kplat::GFP) is charged to a
 * memory cgroup, the bound mm's: in the calling task's context that is the task's own, and
 * the fault worker and GC run under svm_memcg_enter().  __GFP_RETRY_MAYFAIL: at the cgroup's
 * limit (or when the system is out of memory) the allocation fails, and the fault or ioctl
 * with it, with -ENOMEM, instead of calling the OOM killer from a device fault (which would
 * kill whatever the worker's cgroup or the system holds most of).  __GFP_NOWARN: the failure
 * is the caller's errno, not a splat.
 */
#define SVM_GFP (GFP_KERNEL_ACCOUNT | __GFP_RETRY_MAYFAIL | __GFP_NOWARN)

u32 svm_gfp(void)
{
	return (__force u32)SVM_GFP;
}

/*
 * Charges the current task's __GFP_ACCOUNT allocations to mm's memory cgroup until
 * svm_memcg_exit(): for the work items, whose current is a kworker.  The owner's cgroup is
 * looked up each time, so a process moved to another cgroup is charged there from then on.
 * An exited mm has no owner: the root cgroup (nothing is charged).
 */
void *svm_memcg_enter(struct mm_struct *mm, void **old)
{
	struct mem_cgroup *memcg = get_mem_cgroup_from_mm(mm);

	*old = set_active_memcg(memcg);
	return memcg;
}

void svm_memcg_exit(void *memcg, void *old)
{
	set_active_memcg(old);
	mem_cgroup_put(memcg);
}

/* ---- locks ------------------------------------------------------------- */

/*
 * One static key per class, so lockdep reports "svm_range_lock" etc. and
 * checks every lock of a class against the same ordering rules.
 */
static struct lock_class_key svm_lock_keys[SVM_LC_NR];
static const char *const svm_lock_names[SVM_LC_NR] = {
	[SVM_LC_TABLE] = "svm_table_lock",
	[SVM_LC_RANGE] = "svm_range_lock",
	[SVM_LC_INDEX] = "svm_index_lock",
	[SVM_LC_CTX] = "svm_ctx_lock",
	[SVM_LC_WORKER] = "svm_worker_lock",
	[SVM_LC_FAULTQ] = "svm_faultq_lock",
	[SVM_LC_TLB] = "svm_tlb_lock",
	[SVM_LC_ENGINE] = "svm_engine_lock",
	[SVM_LC_ENGINE_RW] = "svm_engine_rwsem",
	[SVM_LC_DMA] = "svm_dma_cache_lock",
	[SVM_LC_REGISTRY] = "svm_registry_lock",
	[SVM_LC_QUEUES] = "svm_queues_lock",
	[SVM_LC_QCTL] = "svm_qctl_lock",
	[SVM_LC_POLICY] = "svm_policy_lock",
};

/*
 * Locks live inside the Rust structures they protect (built in place, never
 * moved): the glue only initialises them with their class's key and name.
 */
void svm_spin_init(void *l, unsigned int cls)
{
	if (WARN_ON(cls >= SVM_LC_NR))
		cls = SVM_LC_TABLE;
	spin_lock_init((spinlock_t *)l);
	lockdep_set_class_and_name((spinlock_t *)l, &svm_lock_keys[cls],
				   svm_lock_names[cls]);
}

void svm_spin_lock(void *l)
{
	spin_lock(l);
}

bool svm_spin_trylock(void *l)
{
	return spin_trylock(l);
}

void svm_spin_unlock(void *l)
{
	spin_unlock(l);
}

void svm_mutex_init(void *l, unsigned int cls)
{
	if (WARN_ON(cls >= SVM_LC_NR))
		cls = SVM_LC_RANGE;
	__mutex_init(l, svm_lock_names[cls], &svm_lock_keys[cls]);
}

void svm_mutex_destroy(void *l)
{
	mutex_destroy(l);
}

void svm_mutex_lock(void *l)
{
	mutex_lock(l);
}

bool svm_mutex_trylock(void *l)
{
	return mutex_trylock(l);
}

void svm_mutex_unlock(void *l)
{
	mutex_unlock(l);
}

/*
 * The engine-wide rwsem of LockScope::EngineRwsem (drm_gpusvm's notifier_lock):
 * read side around a fault's commit, write side in the invalidation callback.
 */
void svm_rwsem_init(void *l, unsigned int cls)
{
	if (WARN_ON(cls >= SVM_LC_NR))
		cls = SVM_LC_ENGINE_RW;
	__init_rwsem(l, svm_lock_names[cls], &svm_lock_keys[cls]);
}

void svm_rwsem_down_read(void *l)
{
	down_read(l);
}

void svm_rwsem_up_read(void *l)
{
	up_read(l);
}

void svm_rwsem_down_write(void *l)
{
	down_write(l);
}

bool svm_rwsem_down_write_trylock(void *l)
{
	return down_write_trylock(l);
}

void svm_rwsem_up_write(void *l)
{
	up_write(l);
}

/*
 * Teach lockdep the engine's lock order and its reclaim rule at module load,
 * as dma-resv.c does, so a violation is reported on first use rather than when
 * reclaim happens to hit it: mmap_lock -> range lock -> {table, TLB} lock, and
 * the range lock may be taken from reclaim (the notifier callback runs there),
 * so nothing may allocate with GFP_KERNEL under it.
 */
static int svm_lockdep_prime(void)
{
	struct mutex range_l, engine_l;
	struct rw_semaphore engine_rw_l;
	spinlock_t table_l, tlb_l;
	struct mutex *range = &range_l, *engine = &engine_l;
	struct rw_semaphore *engine_rw = &engine_rw_l;
	spinlock_t *table = &table_l, *tlb = &tlb_l;
	struct mm_struct *mm = current->mm;

	svm_mutex_init(range, SVM_LC_RANGE);
	svm_mutex_init(engine, SVM_LC_ENGINE);
	svm_rwsem_init(engine_rw, SVM_LC_ENGINE_RW);
	svm_spin_init(table, SVM_LC_TABLE);
	svm_spin_init(tlb, SVM_LC_TLB);
	/*
	 * The engine-wide locks of the baseline lock scopes sit between
	 * mmap_lock and the range lock: mmap_lock -> engine -> range.
	 */
	if (mm) {
		mmap_read_lock(mm);
		mutex_lock(engine);
		mutex_lock(range);
		mutex_unlock(range);
		mutex_unlock(engine);
		down_write(engine_rw);
		mutex_lock(range);
		mutex_unlock(range);
		up_write(engine_rw);
		mmap_read_unlock(mm);
	}
	fs_reclaim_acquire(GFP_KERNEL);
	mutex_lock(range);
	spin_lock(table);
	spin_unlock(table);
	spin_lock(tlb);
	spin_unlock(tlb);
	mutex_unlock(range);
	/* One engine uses one of the two kinds: never nest them here. */
	mutex_lock(engine);
	mutex_lock(range);
	mutex_unlock(range);
	mutex_unlock(engine);
	down_write(engine_rw);
	mutex_lock(range);
	mutex_unlock(range);
	up_write(engine_rw);
	fs_reclaim_release(GFP_KERNEL);
	mutex_destroy(range);
	mutex_destroy(engine);
	return 0;
}

/* ---- mm ---------------------------------------------------------------- */

struct mm_struct *svm_current_mm(void)
{
	return current->mm;
}

u64 svm_current_task(void)
{
	return (u64)(uintptr_t)current;
}

/*
 * Pins the mm_struct (not the address space) for the context's lifetime and makes sure
 * the mm is registered with the notifier core, so that the fault path's first
 * mmu_interval_notifier_insert() need not register it (under mmap_write_lock).
 *
 * Registration is per mm, not per file: mmu_notifier_register(NULL, mm) takes
 * mmap_write_lock and mm_take_all_locks(), a walk that locks every VMA's anon_vma and
 * mapping (and, past 4096 of them, overflows lockdep's nest-lock count), so doing it at every
 * BIND or dmirror open would let any user make each one as slow as its VMAs are many.  The
 * engine needs no struct mmu_notifier of its own (only interval notifiers, which also see
 * exit_mmap's invalidation), so the mm's notifier subscriptions existing is enough: once they
 * do they are never freed before the mm, and the registration that created them here set up
 * the interval tree.  If another subsystem created them without one (a plain mmu_notifier),
 * the first interval insert registers the mm, once, as mmu_interval_notifier_insert() does.
 */
int svm_mm_bind(struct mm_struct *mm)
{
	int ret = 0;

	if (!mmget_not_zero(mm))
		return -ESRCH;
	if (!mm_has_notifiers(mm))
		ret = mmu_notifier_register(NULL, mm);
	mmput(mm);
	if (ret)
		return ret;
	mmgrab(mm);
	return 0;
}

void svm_mm_drop(struct mm_struct *mm)
{
	mmdrop(mm);
}

int svm_mmap_read_lock(struct mm_struct *mm)
{
	if (!mmget_not_zero(mm))
		return -ESRCH;
	if (mmap_read_lock_killable(mm)) {
		mmput_async(mm);
		return -EINTR;
	}
	return 0;
}

void svm_mmap_read_unlock(struct mm_struct *mm)
{
	mmap_read_unlock(mm);
	/* May be the last reference, from the fault worker: never exit_mmap here. */
	mmput_async(mm);
}

/*
 * memfd_secret(2) memory.  vma_is_secretmem() and secretmem_aops are not exported; every
 * secretmem file lives on the secretmem pseudo filesystem, whose magic is uAPI.
 */
static bool svm_vma_is_secretmem(struct vm_area_struct *vma)
{
	return IS_ENABLED(CONFIG_SECRETMEM) && vma->vm_file &&
	       file_inode(vma->vm_file)->i_sb->s_magic == SECRETMEM_MAGIC;
}

/*
 * Everything the engine needs to decide whether the device may touch a VMA, before it calls
 * hmm_range_fault() on it: hmm refuses VM_IO/VM_PFNMAP itself, but not secretmem (GUP does)
 * and cannot wait for a userfaultfd handler.
 */
bool svm_vma_lookup(struct mm_struct *mm, u64 addr, struct svm_vma_info *out)
{
	struct vm_area_struct *vma;

	mmap_assert_locked(mm);
	vma = vma_lookup(mm, addr);
	if (!vma)
		return false;
	out->start = vma->vm_start;
	out->end = vma->vm_end;
	out->read = !!(vma->vm_flags & VM_READ);
	out->write = !!(vma->vm_flags & VM_WRITE);
	out->io = !!(vma->vm_flags & (VM_IO | VM_PFNMAP));
	out->refuse = 0;
	if (svm_vma_is_secretmem(vma))
		out->refuse |= SVM_VMA_REFUSE_SECRETMEM;
	if (userfaultfd_armed(vma))
		out->refuse |= SVM_VMA_REFUSE_UFFD;
	return true;
}

/* ---- interval notifiers ------------------------------------------------ */

static struct workqueue_struct *svm_wq;

struct svm_notifier {
	struct mmu_interval_notifier mni;
	const void *cb;		/* the engine's InvalidateFn, opaque here */
	const void *cookie;	/* its range */
	struct svm_work *unmap_work;	/* queued after an MMU_NOTIFY_UNMAP (GC) */
	bool inserted;
};

struct svm_work {
	struct work_struct work;
	struct workqueue_struct *wq;
	void (*fn)(void *data);
	void *data;
};

/*
 * Queue command processors run on workqueues of their own, sized for every queue the device
 * allows (max_queues), so that neither starves the fault workers and GC on svm_wq nor
 * waits behind each other.
 */
static struct workqueue_struct *svm_qwq, *svm_qwq_hi;

static unsigned int svm_event(enum mmu_notifier_event ev)
{
	switch (ev) {
	case MMU_NOTIFY_UNMAP: return SVM_EV_UNMAP;
	case MMU_NOTIFY_CLEAR: return SVM_EV_CLEAR;
	case MMU_NOTIFY_PROTECTION_VMA: return SVM_EV_PROTECTION_VMA;
	case MMU_NOTIFY_PROTECTION_PAGE: return SVM_EV_PROTECTION_PAGE;
	case MMU_NOTIFY_SOFT_DIRTY: return SVM_EV_SOFT_DIRTY;
	case MMU_NOTIFY_RELEASE: return SVM_EV_RELEASE;
	case MMU_NOTIFY_MIGRATE: return SVM_EV_MIGRATE;
	case MMU_NOTIFY_EXCLUSIVE: return SVM_EV_EXCLUSIVE;
	}
	/* Unknown: treat as a clear, which zaps (the safe choice). */
	return SVM_EV_CLEAR;
}

/*
 * The core already brackets a non-blockable call with non_block_start() /
 * non_block_end() (mm/mmu_notifier.c), so sleeping in it is reported by
 * DEBUG_ATOMIC_SLEEP.
 */
static bool svm_mni_invalidate(struct mmu_interval_notifier *mni,
			       const struct mmu_notifier_range *range,
			       unsigned long cur_seq)
{
	struct svm_notifier *n = container_of(mni, struct svm_notifier, mni);
	bool ok;

	ok = svm_rs_invalidate(n->cb, n->cookie, n, range->start, range->end,
			       svm_event(range->event), mmu_notifier_range_blockable(range),
			       cur_seq, (u64)(uintptr_t)range->owner);
	/* GC runs from the worker, never from here (it removes notifiers). */
	if (ok && range->event == MMU_NOTIFY_UNMAP && n->unmap_work)
		queue_work(svm_wq, &n->unmap_work->work);
	return ok;
}

static const struct mmu_interval_notifier_ops svm_mni_ops = {
	.invalidate = svm_mni_invalidate,
};

int svm_notifier_insert(struct mm_struct *mm, u64 start, u64 len, const void *cb,
			const void *cookie, struct svm_work *unmap_work,
			struct svm_notifier **out)
{
	struct svm_notifier *n;
	int ret;

	n = kzalloc(sizeof(*n), SVM_GFP);
	if (!n)
		return -ENOMEM;
	n->cb = cb;
	n->cookie = cookie;
	n->unmap_work = unmap_work;
	if (!mmget_not_zero(mm)) {
		kfree(n);
		return -ESRCH;
	}
	ret = mmu_interval_notifier_insert(&n->mni, mm, start, len, &svm_mni_ops);
	/* Called from the fault worker too: never the exit_mmap of the last ref. */
	mmput_async(mm);
	if (ret) {
		kfree(n);
		return ret;
	}
	n->inserted = true;
	*out = n;
	return 0;
}

void svm_notifier_remove(struct svm_notifier *n)
{
	if (WARN_ON(!n->inserted))
		return;
	mmu_interval_notifier_remove(&n->mni);
	n->inserted = false;
}

void svm_notifier_free(struct svm_notifier *n)
{
	/* Leak rather than free a notifier the core still holds. */
	if (WARN_ON(n->inserted))
		return;
	kfree(n);
}

unsigned long svm_notifier_read_begin(struct svm_notifier *n)
{
	return mmu_interval_read_begin(&n->mni);
}

bool svm_notifier_read_retry(struct svm_notifier *n, unsigned long seq)
{
	return mmu_interval_read_retry(&n->mni, seq);
}

bool svm_notifier_check_retry(struct svm_notifier *n, unsigned long seq)
{
	return mmu_interval_check_retry(&n->mni, seq);
}

void svm_notifier_set_seq(struct svm_notifier *n, unsigned long seq)
{
	mmu_interval_set_seq(&n->mni, seq);
}

int svm_hmm_range_fault(struct svm_notifier *n, unsigned long seq, u64 start, u64 npages,
			u64 *pfns, u64 owner)
{
	struct hmm_range range = {
		.notifier = &n->mni,
		.notifier_seq = seq,
		.start = start,
		.end = start + (npages << PAGE_SHIFT),
		.hmm_pfns = (unsigned long *)pfns,
		.default_flags = 0,
		.pfn_flags_mask = ~0UL,
		.dev_private_owner = (void *)(uintptr_t)owner,
	};

	BUILD_BUG_ON(sizeof(unsigned long) != sizeof(u64));
	return hmm_range_fault(&range);
}

/* ---- DMA and pages ----------------------------------------------------- */

/*
 * DMA_ATTR_SKIP_CPU_SYNC: mirroring an address space maps some pages more than
 * once (the shared zero page behind every untouched anonymous page a read
 * fault sees, memory aliased at two addresses, KSM), and dma-debug refuses
 * overlapping mappings that sync.  The device is cache coherent and never
 * bounces (probe refuses dma_addressing_limited()), so there is nothing to
 * sync on this platform; a non-coherent port would have to sync explicitly.
 */
#define SVM_DMA_ATTRS DMA_ATTR_SKIP_CPU_SYNC

/*
 * The engine picks the direction (svm/src/platform.rs, `Dma`): DMA_BIDIRECTIONAL
 * for a page the CPU may write (a read mapping can then be upgraded to writable
 * in place), DMA_TO_DEVICE for a page it may only read -- the zero pages, KSM
 * pages, COW-shared pages -- which dma-debug exempts from its limit of 7
 * overlapping mappings of one cacheline (a KSM page or the zero page is one
 * page behind many addresses).  Unmap passes the direction of the map.
 */
static enum dma_data_direction svm_dma_dir(bool write)
{
	return write ? DMA_BIDIRECTIONAL : DMA_TO_DEVICE;
}

static struct page *svm_bytes_of(u64 pfn);

/*
 * A peer's device page (a device-private page hmm handed over under our shared owner) is
 * mapped as its backing page: the simulated interconnect's window onto the peer's memory, as
 * a real P2P mapping maps the peer's BAR.  Its leaf is zapped, and this unmapped, before the
 * page is freed (every mapper hears the migration or eviction that frees it).
 */
u64 svm_dma_map(struct device *dev, u64 pfn, unsigned int order, bool write, int *err)
{
	struct page *page = svm_bytes_of(pfn);
	dma_addr_t a;

	if (WARN_ON_ONCE(!page)) {
		*err = -EFAULT;
		return 0;
	}
	a = dma_map_page_attrs(dev, page, 0, PAGE_SIZE << order, svm_dma_dir(write),
			       SVM_DMA_ATTRS);
	if (dma_mapping_error(dev, a)) {
		*err = -ENOMEM;
		return 0;
	}
	*err = 0;
	return a;
}

void svm_dma_unmap(struct device *dev, u64 addr, unsigned int order, bool write)
{
	dma_unmap_page_attrs(dev, addr, PAGE_SIZE << order, svm_dma_dir(write), SVM_DMA_ATTRS);
}

/* As ib_umem_odp_unmap_dma_pages(): the pages are not pinned, so no _lock. */
void svm_set_page_dirty(u64 pfn)
{
	struct page *page = pfn_to_page(pfn);

	/* A peer's device page has no dirty bit: it is the only copy. */
	if (!is_device_private_page(page))
		set_page_dirty(page);
}

/* A device-private page's bytes are its backing page's (see svm_devmem_page_init()). */
static struct page *svm_bytes_of(u64 pfn)
{
	struct page *page = pfn_to_page(pfn);

	return is_device_private_page(page) ? page->zone_device_data : page;
}

void *svm_kmap_pfn(u64 pfn)
{
	return kmap_local_page(svm_bytes_of(pfn));
}

bool svm_is_zero_pfn(u64 pfn)
{
	return is_zero_pfn(pfn);
}

/* Whether pfn (a page hmm just reported) is a KSM page: a racy peek, for a heuristic. */
bool svm_is_ksm_pfn(u64 pfn)
{
	return pfn_valid(pfn) && PageKsm(pfn_to_page(pfn));
}

void svm_kunmap(void *addr)
{
	kunmap_local(addr);
}

struct device *svm_get_device(struct device *dev)
{
	return get_device(dev);
}

void svm_put_device(struct device *dev)
{
	put_device(dev);
}

void *svm_table_alloc(unsigned long size)
{
	return (void *)__get_free_pages(SVM_GFP | __GFP_ZERO, get_order(size));
}

void svm_table_free(void *p, unsigned long size)
{
	free_pages((unsigned long)p, get_order(size));
}

u64 svm_virt_to_phys(const void *p)
{
	return virt_to_phys((void *)p);
}

/* A page-table page's node lives in its struct page, as page tables' ptdesc does. */
void svm_page_set_private(void *p, unsigned long v)
{
	set_page_private(virt_to_page(p), v);
}

unsigned long svm_phys_page_private(u64 pa)
{
	return page_private(pfn_to_page(PHYS_PFN(pa)));
}

/* ---- misc -------------------------------------------------------------- */

u64 svm_now_ns(void)
{
	return ktime_get_ns();
}

void svm_cond_resched(void)
{
	cond_resched();
}

unsigned int svm_nr_cpu_ids(void)
{
	return nr_cpu_ids;
}

unsigned int svm_this_cpu(void)
{
	return raw_smp_processor_id();
}

bool svm_fatal_signal_pending(void)
{
	return fatal_signal_pending(current);
}

u64 svm_task_size(void)
{
	return TASK_SIZE_MAX;
}

static unsigned int max_ranges = 1 << 16;
module_param(max_ranges, uint, 0644);
MODULE_PARM_DESC(max_ranges,
	"most ranges (notifier, lock, index node: 2 MiB of VA each) one context holds in use; "
	"at the limit empty ranges are collected, then faults fail with -ENOSPC (default 65536)");

/* Read once per context, at BIND or open: 1 ..= 2^32 (0 reads as 1). */
unsigned int svm_max_ranges(void)
{
	return max(READ_ONCE(max_ranges), 1U);
}

/*
 * The engine's granularity and lock scope, read once per context (BIND or dmirror open):
 * the baselines of Documentation/design.rst ("Granularity and the baselines") in the kernel.
 * A value the engine refuses (range_shift outside 16..=47, lock_scope above 2) fails BIND
 * and open with -EINVAL.
 */
static unsigned int range_shift = 21;
module_param(range_shift, uint, 0644);
MODULE_PARM_DESC(range_shift,
	"log2 of a range's span (one interval notifier and lock each): 16..47, default 21 "
	"(2 MiB); 29 is drm_gpusvm's 512 MiB notifiers, 47 test_hmm's one notifier per mm");

static unsigned int lock_scope;
module_param(lock_scope, uint, 0644);
MODULE_PARM_DESC(lock_scope,
	"engine-wide lock around range-lock sections: 0 none (default), 1 a mutex (test_hmm), "
	"2 an rwsem, read side for faults (drm_gpusvm)");

/*
 * Whether a context shares one DMA mapping per page among all its aliases on the device
 * (driver/dmacache.rs), read at BIND or dmirror open.  Sharing costs a cache entry per mapped
 * page; it is needed where DMA-API debugging is built in, whose overlap check WARNs past 7
 * device-writable mappings of one cacheline (which a user could then trigger at will).
 * Without it, aliases are harmless: dma-direct mappings cost nothing, and IOMMU mappings one
 * IOVA per device leaf, which the user pays a leaf for anyway (drm_gpusvm and ODP map per
 * range page too).
 */
static int dma_share = -1;
module_param(dma_share, int, 0644);
MODULE_PARM_DESC(dma_share,
	"share one DMA mapping per page among its aliases: -1 when DMA-API debugging is built "
	"in (default), 0 never (one mapping per device leaf), 1 always");

bool svm_dma_share(void)
{
	int v = READ_ONCE(dma_share);

	return v < 0 ? IS_ENABLED(CONFIG_DMA_API_DEBUG) : v != 0;
}

unsigned int svm_range_shift(void)
{
	return READ_ONCE(range_shift);
}

unsigned int svm_lock_scope(void)
{
	return READ_ONCE(lock_scope);
}

/*
 * Measurement: ns the dmirror front end spent in the engine's fault service (the READ and
 * WRITE commands' fault rounds), summed over every mirror since load.  The benchmark
 * (vmtests' dmbench) sets it beside the fault-in time of the same command, to tell the
 * engine's own time from the rest of the first access.
 */
static atomic64_t svm_fault_ns;

static int svm_fault_ns_get(char *buf, const struct kernel_param *kp)
{
	return sysfs_emit(buf, "%lld\n", (long long)atomic64_read(&svm_fault_ns));
}

static const struct kernel_param_ops svm_fault_ns_ops = {
	.get = svm_fault_ns_get,
};
module_param_cb(fault_ns, &svm_fault_ns_ops, NULL, 0444);
MODULE_PARM_DESC(fault_ns, "measurement: ns in the engine's fault service for dmirror commands");

void svm_fault_ns_add(u64 ns)
{
	atomic64_add(ns, &svm_fault_ns);
}

/*
 * A test hook: the accel fault worker stalls this long before servicing each batch, as a
 * fault on slow or stuck backing storage (FUSE, NFS) would, so vmtests can kill a job while
 * its fault is outstanding.  Writing 0 ends a running stall within 10 ms.
 */
static unsigned int fault_delay_ms;
module_param(fault_delay_ms, uint, 0644);
MODULE_PARM_DESC(fault_delay_ms,
		 "testing: the fault worker stalls this many ms before each batch (default 0)");

void svm_fault_delay(void)
{
	unsigned int waited = 0;

	while (waited < READ_ONCE(fault_delay_ms)) {
		msleep(10);
		waited += 10;
	}
}

/* ---- work items and wait queues ---------------------------------------- */

static void svm_work_fn(struct work_struct *work)
{
	struct svm_work *w = container_of(work, struct svm_work, work);

	w->fn(w->data);
}

struct svm_work *svm_work_new(void (*fn)(void *data), void *data)
{
	struct svm_work *w = kzalloc(sizeof(*w), SVM_GFP);

	if (!w)
		return NULL;
	INIT_WORK(&w->work, svm_work_fn);
	w->wq = svm_wq;
	w->fn = fn;
	w->data = data;
	return w;
}

/* A queue's command processor: on the high-priority queue workqueue when `high`. */
struct svm_work *svm_work_new_queue(void (*fn)(void *data), void *data, bool high)
{
	struct svm_work *w = kzalloc(sizeof(*w), SVM_GFP);

	if (!w)
		return NULL;
	INIT_WORK(&w->work, svm_work_fn);
	w->wq = high ? svm_qwq_hi : svm_qwq;
	w->fn = fn;
	w->data = data;
	return w;
}

/*
 * The same, for a work item that tears a context down and so cancels the context's other
 * work items: this INIT_WORK site gives it a lockdep class of its own, without which lockdep
 * takes that cancel for a work item flushing its own class.
 */
struct svm_work *svm_work_new_teardown(void (*fn)(void *data), void *data)
{
	struct svm_work *w = kzalloc(sizeof(*w), SVM_GFP);

	if (!w)
		return NULL;
	INIT_WORK(&w->work, svm_work_fn);
	w->wq = svm_wq;
	w->fn = fn;
	w->data = data;
	return w;
}

void svm_work_queue(struct svm_work *w)
{
	queue_work(w->wq, &w->work);
}

void svm_work_cancel_sync(struct svm_work *w)
{
	cancel_work_sync(&w->work);
}

void svm_work_free(struct svm_work *w)
{
	kfree(w);
}

struct svm_waitq {
	wait_queue_head_t wq;
};

struct svm_waitq *svm_waitq_new(void)
{
	struct svm_waitq *q = kzalloc(sizeof(*q), SVM_GFP);

	if (q)
		init_waitqueue_head(&q->wq);
	return q;
}

void svm_waitq_free(struct svm_waitq *q)
{
	kfree(q);
}

/*
 * Killable: a fault can sit in handle_mm_fault() for as long as its backing store wants
 * (FUSE, NFS), and a killed job must not wait for it.  The waiter's slot is refcounted
 * (driver/device/), so the worker may still answer it after the job left.
 */
int svm_waitq_wait_ne_killable(struct svm_waitq *q, const u32 *p, u32 old)
{
	return wait_event_killable(q->wq, smp_load_acquire(p) != old) ? -EINTR : 0;
}

/*
 * Sleeps until cond(data), for at most timeout_ns (U64_MAX: no timeout).  Interruptible
 * (WAIT, in the caller's task: any signal ends it) or TASK_IDLE (a command processor, which
 * takes no signals and must not count as load): 0, -ETIME or -EINTR.
 */
int svm_waitq_wait_cond(struct svm_waitq *q, bool (*cond)(const void *data), const void *data,
			u64 timeout_ns, bool interruptible)
{
	ktime_t t = timeout_ns >= KTIME_MAX ? KTIME_MAX : ns_to_ktime(timeout_ns);
	int ret = 0;

	might_sleep();
	if (cond(data))
		return 0;
	if (interruptible)
		ret = __wait_event_hrtimeout(q->wq, cond(data), t, TASK_INTERRUPTIBLE);
	else
		ret = __wait_event_hrtimeout(q->wq, cond(data), t, TASK_IDLE);
	return ret == -ERESTARTSYS ? -EINTR : ret;
}

void svm_waitq_wake(struct svm_waitq *q)
{
	wake_up_all(&q->wq);
}

bool svm_capable_sys_nice(void)
{
	return capable(CAP_SYS_NICE);
}

static unsigned int max_queues = 64;
module_param(max_queues, uint, 0444);
MODULE_PARM_DESC(max_queues,
	"user-mode queues the device runs at once, over every file (1..512, default 64); "
	"CREATE_QUEUE fails with -ENOSPC beyond it");

unsigned int svm_max_queues(void)
{
	return clamp(max_queues, 1U, (unsigned int)WQ_MAX_ACTIVE);
}

/* ---- DRM accel driver -------------------------------------------------- */

/*
 * The dmirror files' counterpart of drm_dev_enter(): their open, ioctls and mmap run in an
 * SRCU read section and fail with -ENODEV once svm_remove() set svm_dm_unplugged, which then
 * waits for those still running before tearing their engines down.
 */
DEFINE_STATIC_SRCU(svm_dm_srcu);
static bool svm_dm_unplugged;

static bool svm_dm_enter(int *idx)
{
	*idx = srcu_read_lock(&svm_dm_srcu);
	if (READ_ONCE(svm_dm_unplugged)) {
		srcu_read_unlock(&svm_dm_srcu, *idx);
		return false;
	}
	return true;
}

static void svm_dm_exit_section(int idx)
{
	srcu_read_unlock(&svm_dm_srcu, idx);
}

/*
 * Open and every ioctl run inside drm_dev_enter()/drm_dev_exit(): once svm_remove() has
 * called drm_dev_unplug(), none runs any more (it waits for those that do) and every new
 * one fails with -ENODEV, so the engines can be torn down under open files.  A context
 * registers itself (svm_rs_open) inside the section, so the teardown finds it.
 */
/*
 * The accel devices: one platform device (one DMA device) hosting accel_devices DRM accel
 * devices, each with memory of its own, all on one simulated interconnect (their memories
 * share a pagemap owner; Documentation/kernel.rst, "Peer devices").  Set in probe, cleared in
 * remove after every ioctl left (drm_dev_unplug() waits for all of them).
 */
#define SVM_MAX_ACCEL 4
static struct drm_device *svm_drms[SVM_MAX_ACCEL];
/*
 * The parent of accel device i >= 1: a child of the platform device named svm_accel.<i>
 * (the DRM core names a device's debugfs directory after its parent, which must differ).
 * Every device maps DMA through the platform device (svm_pdev_dev).
 */
static struct device *svm_kids[SVM_MAX_ACCEL];
static struct device *svm_pdev_dev;/* Their accel minors (the N of /dev/accel/accelN), -1 where none. */
static int svm_minors[SVM_MAX_ACCEL] = { -1, -1, -1, -1 };

static unsigned int accel_devices = 2;
module_param(accel_devices, uint, 0444);
MODULE_PARM_DESC(accel_devices,
		 "accel devices, 1 to 4 (default 2): /dev/accel/accelN each, with device memory of its own that the others reach over a simulated interconnect");

u32 svm_accel_devices(void)
{
	return clamp(accel_devices, 1U, (unsigned int)SVM_MAX_ACCEL);
}

/* Which of our accel devices /dev/accel/accel<minor> is (-1: none of ours). */
int svm_accel_by_minor(u32 minor)
{
	int i;

	for (i = 0; i < SVM_MAX_ACCEL; i++)
		if (READ_ONCE(svm_minors[i]) == (int)minor)
			return i;
	return -1;
}

static u32 svm_accel_index(struct drm_device *drm)
{
	u32 i;

	for (i = 0; i < SVM_MAX_ACCEL; i++)
		if (svm_drms[i] == drm)
			return i;
	WARN_ON_ONCE(1);
	return 0;
}

static int svm_drm_open(struct drm_device *drm, struct drm_file *file)
{
	void *ctx;
	int idx;

	if (!drm_dev_enter(drm, &idx))
		return -ENODEV;
	ctx = svm_rs_open(svm_pdev_dev, svm_accel_index(drm));
	drm_dev_exit(idx);
	if (!ctx)
		return -ENOMEM;
	file->driver_priv = ctx;
	return 0;
}

static void svm_drm_postclose(struct drm_device *drm, struct drm_file *file)
{
	svm_rs_postclose(file->driver_priv);
	file->driver_priv = NULL;
}

#define SVM_IOCTL(name)								\
static int svm_ioctl_##name(struct drm_device *drm, void *data, struct drm_file *file)	\
{										\
	int idx, ret;								\
										\
	if (!drm_dev_enter(drm, &idx))						\
		return -ENODEV;							\
	ret = svm_rs_##name(file->driver_priv, data);				\
	drm_dev_exit(idx);							\
	return ret;								\
}
SVM_IOCTL(bind)
SVM_IOCTL(submit)
SVM_IOCTL(prefetch)
SVM_IOCTL(query)
SVM_IOCTL(create_queue)
SVM_IOCTL(destroy_queue)
SVM_IOCTL(wait)
SVM_IOCTL(madvise)

static const struct drm_ioctl_desc svm_ioctls[] = {
	DRM_IOCTL_DEF_DRV(SVM_ACCEL_BIND, svm_ioctl_bind, 0),
	DRM_IOCTL_DEF_DRV(SVM_ACCEL_SUBMIT, svm_ioctl_submit, 0),
	DRM_IOCTL_DEF_DRV(SVM_ACCEL_PREFETCH, svm_ioctl_prefetch, 0),
	DRM_IOCTL_DEF_DRV(SVM_ACCEL_QUERY, svm_ioctl_query, 0),
	DRM_IOCTL_DEF_DRV(SVM_ACCEL_CREATE_QUEUE, svm_ioctl_create_queue, 0),
	DRM_IOCTL_DEF_DRV(SVM_ACCEL_DESTROY_QUEUE, svm_ioctl_destroy_queue, 0),
	DRM_IOCTL_DEF_DRV(SVM_ACCEL_WAIT, svm_ioctl_wait, 0),
	DRM_IOCTL_DEF_DRV(SVM_ACCEL_MADVISE, svm_ioctl_madvise, 0),
};

DEFINE_DRM_ACCEL_FOPS(svm_fops);

static const struct drm_driver svm_drm_driver = {
	.driver_features = DRIVER_COMPUTE_ACCEL,
	.open = svm_drm_open,
	.postclose = svm_drm_postclose,
	.ioctls = svm_ioctls,
	.num_ioctls = ARRAY_SIZE(svm_ioctls),
	.fops = &svm_fops,
	.name = "svm_accel",
	.desc = "svm shared-virtual-memory sample accelerator",
	.date = "20261121",
	.major = 0,
	.minor = 1,
};

/* Address bits of the device's PTE format (svm_glue_init). */
static unsigned int svm_dma_bits;

/* As PCI's attribute of the same name: the DMA mask the driver set, in bits. */
static ssize_t dma_mask_bits_show(struct device *dev, struct device_attribute *attr,
				  char *buf)
{
	return sysfs_emit(buf, "%d\n", fls64(dma_get_mask(dev)));
}
static DEVICE_ATTR_RO(dma_mask_bits);

static struct attribute *svm_dev_attrs[] = {
	&dev_attr_dma_mask_bits.attr,
	NULL,
};
ATTRIBUTE_GROUPS(svm_dev);

static void svm_kid_release(struct device *d)
{
	kfree(d);
}

/* The DRM parent of accel device i (see svm_kids). */
static struct device *svm_parent_of(struct platform_device *pdev, u32 i)
{
	struct device *d;
	int ret;

	if (i == 0)
		return &pdev->dev;
	d = kzalloc(sizeof(*d), GFP_KERNEL);
	if (!d)
		return ERR_PTR(-ENOMEM);
	device_initialize(d);
	d->parent = &pdev->dev;
	d->release = svm_kid_release;
	ret = dev_set_name(d, "svm_accel.%u", i);
	if (!ret)
		ret = device_add(d);
	if (ret) {
		put_device(d);
		return ERR_PTR(ret);
	}
	svm_kids[i] = d;
	return d;
}

/* Unregisters accel device i's parent if it is a child (the DRM device holds a reference). */
static void svm_drop_parent(u32 i)
{
	if (svm_kids[i])
		device_unregister(svm_kids[i]);
	svm_kids[i] = NULL;
}

static int svm_probe(struct platform_device *pdev)
{
	struct device *parent;
	struct drm_device *drm;
	u32 i;
	int ret;

	/*
	 * A device PTE holds svm_dma_bits of address (52 for the x86-64 format): a wider mask
	 * would let dma_map_page() return addresses the PTE truncates.
	 */
	if (WARN_ON(svm_dma_bits < 32 || svm_dma_bits > 64))
		return -EINVAL;
	ret = dma_set_mask_and_coherent(&pdev->dev, DMA_BIT_MASK(svm_dma_bits));
	if (ret)
		return ret;
	/*
	 * The device maps user pages in place: refuse one that would bounce (memory above
	 * the mask), or that needs cache maintenance (see SVM_DMA_ATTRS).
	 */
	if (dma_addressing_limited(&pdev->dev)) {
		dev_err(&pdev->dev, "DMA addressing limited (would bounce), refusing\n");
		return -ENODEV;
	}
	if (!dev_is_dma_coherent(&pdev->dev)) {
		dev_err(&pdev->dev, "not DMA coherent, refusing\n");
		return -ENODEV;
	}
	svm_pdev_dev = &pdev->dev;
	for (i = 0; i < svm_accel_devices(); i++) {
		parent = svm_parent_of(pdev, i);
		if (IS_ERR(parent)) {
			ret = PTR_ERR(parent);
			goto undo;
		}
		drm = drm_dev_alloc(&svm_drm_driver, parent);
		if (IS_ERR(drm)) {
			ret = PTR_ERR(drm);
			svm_drop_parent(i);
			goto undo;
		}
		svm_drms[i] = drm;
		ret = drm_dev_register(drm, 0);
		if (ret) {
			svm_drms[i] = NULL;
			drm_dev_put(drm);
			svm_drop_parent(i);
			goto undo;
		}
		WRITE_ONCE(svm_minors[i], drm->accel->index);
		dev_info(&pdev->dev, "registered accel minor %d, DMA mask %u bits\n",
			 drm->accel->index, svm_dma_bits);
	}
	platform_set_drvdata(pdev, svm_drms);
	/* Bound (again): the dmirror files may open. */
	WRITE_ONCE(svm_dm_unplugged, false);
	return 0;

undo:
	/* No file can be open yet on a device just registered that an ioctl could reach. */
	while (i--) {
		WRITE_ONCE(svm_minors[i], -1);
		drm_dev_unplug(svm_drms[i]);
		drm_dev_put(svm_drms[i]);
		svm_drms[i] = NULL;
		svm_drop_parent(i);
	}
	return ret;
}

/*
 * Unplug (sysfs unbind, or module exit): with files still open, tear every context's engine
 * down (DMA unmapped, notifiers removed, workers stopped) before the device goes.
 */
static void svm_remove(struct platform_device *pdev)
{
	u32 i;

	/* No new dmirror file from now on. */
	WRITE_ONCE(svm_dm_unplugged, true);
	/* Running jobs, prefetches and dmirror copies stop at their next page with -ENODEV. */
	svm_rs_unplug_begin();
	/* Waits for every accel open and ioctl; later ones fail with -ENODEV. */
	for (i = 0; i < SVM_MAX_ACCEL; i++) {
		WRITE_ONCE(svm_minors[i], -1);
		if (svm_drms[i])
			drm_dev_unplug(svm_drms[i]);
	}
	/* The same for the dmirror files. */
	synchronize_srcu(&svm_dm_srcu);
	svm_rs_unplug_finish();
	platform_set_drvdata(pdev, NULL);
	for (i = 0; i < SVM_MAX_ACCEL; i++) {
		if (svm_drms[i])
			drm_dev_put(svm_drms[i]);
		svm_drms[i] = NULL;
		svm_drop_parent(i);
	}
}

static struct platform_driver svm_platform_driver = {
	.probe = svm_probe,
	.remove = svm_remove,
	.driver = {
		.name = "svm_accel",
		.dev_groups = svm_dev_groups,
	},
};

static struct platform_device *svm_pdev;

/* ---- device memory (driver/kplat/devmem.rs) ------------------------------ */

/*
 * A device's own memory: MEMORY_DEVICE_PRIVATE pages over a free physical range, as
 * lib/test_hmm.c makes them; each page in use is backed by a system page (zone_device_data)
 * that holds its bytes.  The allocator, the owner and every decision are Rust's; here are
 * the pagemap, its two callbacks, and one-line wrappers of the migrate_vma/migrate_device
 * calls (whose struct the bindings lack).
 */
struct svm_devmem {
	struct dev_pagemap pgmap;
	struct resource *res;
	void *rs;		/* the Rust KDevmem, which outlives the pagemap */
};

static struct svm_devmem *svm_devmem_of(struct page *page)
{
	return container_of(page->pgmap, struct svm_devmem, pgmap);
}

/* dev_pagemap_ops.page_free: the last reference went (any context). */
static void svm_devmem_page_free(struct page *page)
{
	struct page *backing = page->zone_device_data;

	page->zone_device_data = NULL;
	if (backing)
		__free_page(backing);
	svm_rs_devmem_free(svm_devmem_of(page)->rs, page_to_pfn(page));
}

/* dev_pagemap_ops.migrate_to_ram: a CPU fault on one of our pages, mmap_lock held. */
static vm_fault_t svm_devmem_migrate_to_ram(struct vm_fault *vmf)
{
	int ret = svm_rs_migrate_to_ram(svm_devmem_of(vmf->page)->rs, vmf->vma->vm_mm,
					vmf->address & PAGE_MASK, page_to_pfn(vmf->page));

	if (ret == -ENOMEM)
		return VM_FAULT_OOM;
	return ret ? VM_FAULT_SIGBUS : 0;
}

static const struct dev_pagemap_ops svm_devmem_ops = {
	.page_free = svm_devmem_page_free,
	.migrate_to_ram = svm_devmem_migrate_to_ram,
};

int svm_devmem_create(u64 bytes, u64 owner, u64 *first_pfn, struct svm_devmem **out)
{
	struct svm_devmem *dm;
	void *p;

	dm = kzalloc(sizeof(*dm), GFP_KERNEL);
	if (!dm)
		return -ENOMEM;
	dm->res = request_free_mem_region(&iomem_resource, bytes, "svm_accel");
	if (IS_ERR(dm->res)) {
		p = dm->res;
		goto free;
	}
	dm->pgmap.type = MEMORY_DEVICE_PRIVATE;
	dm->pgmap.range.start = dm->res->start;
	dm->pgmap.range.end = dm->res->end;
	dm->pgmap.nr_range = 1;
	dm->pgmap.ops = &svm_devmem_ops;
	/* Peers (one simulated interconnect) share an owner: hmm hands their pages over as they are. */
	dm->pgmap.owner = owner ? (void *)(uintptr_t)owner : dm;
	p = memremap_pages(&dm->pgmap, numa_node_id());
	if (IS_ERR_OR_NULL(p)) {
		release_mem_region(dm->res->start, resource_size(dm->res));
		p = p ?: ERR_PTR(-EFAULT);
		goto free;
	}
	*first_pfn = dm->res->start >> PAGE_SHIFT;
	*out = dm;
	return 0;
free:
	kfree(dm);
	return PTR_ERR(p);
}

/* Before any page is handed out: the callbacks' Rust object. */
void svm_devmem_set_rs(struct svm_devmem *dm, void *rs)
{
	dm->rs = rs;
}

/* Waits until every page is free: evict them first. */
void svm_devmem_destroy(struct svm_devmem *dm)
{
	memunmap_pages(&dm->pgmap);
	release_mem_region(dm->res->start, resource_size(dm->res));
	kfree(dm);
}

u64 svm_devmem_owner(struct svm_devmem *dm)
{
	return (u64)(uintptr_t)dm->pgmap.owner;
}

/* The pgmap owner of pfn if it is a device-private page (0: any other page). */
u64 svm_pfn_private_owner(u64 pfn)
{
	struct page *page = pfn_to_page(pfn);

	return is_device_private_page(page) ? (u64)(uintptr_t)page->pgmap->owner : 0;
}

/* A free device page for a migration: referenced, locked, with a zeroed-later backing page. */
int svm_devmem_page_init(u64 pfn)
{
	struct page *page = pfn_to_page(pfn);
	struct page *backing = alloc_page(GFP_HIGHUSER);

	if (!backing)
		return -ENOMEM;
	zone_device_page_init(page);
	page->zone_device_data = backing;
	return 0;
}

/* A locked system page to migrate into (0: none; never with nofail, for an eviction). */
u64 svm_alloc_locked_page(bool nofail)
{
	struct page *page = alloc_page(GFP_HIGHUSER_MOVABLE | (nofail ? __GFP_NOFAIL : 0));

	if (!page)
		return 0;
	lock_page(page);
	return page_to_pfn(page);
}

/* Returns a destination page that did not get used (unlock + put). */
void svm_put_locked_page(u64 pfn)
{
	struct page *page = pfn_to_page(pfn);

	unlock_page(page);
	put_page(page);
}

void svm_msleep(u32 ms)
{
	msleep(ms);
}

/* The copy engine: page to page (a device page's bytes are its backing page's); src 0: zero. */
void svm_copy_pfn(u64 dst, u64 src)
{
	if (src)
		copy_highpage(svm_bytes_of(dst), svm_bytes_of(src));
	else
		clear_highpage(svm_bytes_of(dst));
}

long svm_migrate_setup(struct mm_struct *mm, u64 start, u64 npages, u64 *src, u64 *dst,
		       u32 device_private, u64 owner, u64 fault_pfn)
{
	u64 end = start + (npages << PAGE_SHIFT);
	struct migrate_vma args = {
		.vma = vma_lookup(mm, start),
		.src = (unsigned long *)src,
		.dst = (unsigned long *)dst,
		.start = start,
		.end = end,
		.pgmap_owner = (void *)(uintptr_t)owner,
		.flags = device_private ? MIGRATE_VMA_SELECT_DEVICE_PRIVATE :
					  MIGRATE_VMA_SELECT_SYSTEM,
		.fault_page = fault_pfn ? pfn_to_page(fault_pfn) : NULL,
	};
	int ret;

	mmap_assert_locked(mm);
	if (!args.vma || end > args.vma->vm_end)
		return -EINVAL;
	/*
	 * No system page of KSM-mergeable memory moves (refused whole, as hugetlb is: the engine
	 * passes over it).  migrate_vma_collect_pmd() replaces a page's PTE with a migration
	 * entry itself, trusting the rmap walk of finalize to find it again; a KSM page that
	 * ksmd has just made PageKsm, before stable_tree_insert() gave it a stable node, has no
	 * rmap to walk, so finalize leaves the entry behind with the page unlocked, and the next
	 * fork or zap hits the BUG in pfn_swap_entry_folio() (vmtests' peer_ksm_fork, every run).
	 * The mm's read lock, held through finalize, keeps VM_MERGEABLE stable; a VMA without it
	 * holds no KSM page (MADV_UNMERGEABLE unmerges before clearing it).
	 */
	if (!device_private && (args.vma->vm_flags & VM_MERGEABLE))
		return -EINVAL;
	ret = migrate_vma_setup(&args);
	return ret ? ret : (long)args.cpages;
}

/*
 * After a setup for system pages: leave KSM pages where they are (clear MIGRATE: finalize
 * then restores them).  Moving one would move its stable node's pfn to the device page
 * (folio_migrate_ksm()), whose bytes ksmd then memcmp()s through the direct map, where a
 * device-private page has none: an oops found by the fuzzer.  Returns how many stayed.
 */
long svm_migrate_keep_ksm(u64 *src, u64 npages)
{
	long kept = 0;
	u64 i;

	for (i = 0; i < npages; i++) {
		struct page *page = migrate_pfn_to_page(src[i]);

		if (page && (src[i] & MIGRATE_PFN_MIGRATE) && PageKsm(page)) {
			src[i] &= ~MIGRATE_PFN_MIGRATE;
			kept++;
		}
	}
	return kept;
}

/*
 * migrate_vma_pages() and _finalize() need only these fields of the setup's struct; pages
 * needs fault_page too (the extra reference the fault holds), or the page does not move.
 */
static void svm_migrate_args(struct migrate_vma *a, struct mm_struct *mm, u64 start,
			     u64 npages, u64 *src, u64 *dst, u64 owner, u64 fault_pfn)
{
	a->fault_page = fault_pfn ? pfn_to_page(fault_pfn) : NULL;
	a->vma = vma_lookup(mm, start);
	a->src = (unsigned long *)src;
	a->dst = (unsigned long *)dst;
	a->npages = npages;
	a->start = start;
	a->end = start + (npages << PAGE_SHIFT);
	a->pgmap_owner = (void *)(uintptr_t)owner;
}

void svm_migrate_pages(struct mm_struct *mm, u64 start, u64 npages, u64 *src, u64 *dst,
		       u64 owner, u64 fault_pfn)
{
	struct migrate_vma args = {};

	mmap_assert_locked(mm);
	svm_migrate_args(&args, mm, start, npages, src, dst, owner, fault_pfn);
	migrate_vma_pages(&args);
}

void svm_migrate_finalize(struct mm_struct *mm, u64 start, u64 npages, u64 *src, u64 *dst,
			  u64 owner, u64 fault_pfn)
{
	struct migrate_vma args = {};

	svm_migrate_args(&args, mm, start, npages, src, dst, owner, fault_pfn);
	migrate_vma_finalize(&args);
}

/* Whether addr's PMD maps a huge page now (a lockless peek: the caller checks again). */
static bool svm_pmd_huge(struct mm_struct *mm, unsigned long addr)
{
	pgd_t *pgd = pgd_offset(mm, addr);
	p4d_t *p4d;
	pud_t *pud;

	if (pgd_none(*pgd) || pgd_bad(*pgd))
		return false;
	p4d = p4d_offset(pgd, addr);
	if (p4d_none(*p4d) || p4d_bad(*p4d))
		return false;
	pud = pud_offset(p4d, addr);
	if (pud_none(*pud) || pud_bad(*pud))
		return false;
	return pmd_trans_huge(pmdp_get_lockless(pmd_offset(pud, addr)));
}

static void svm_split_range(struct vm_area_struct *vma, unsigned long a, unsigned long e);

/*
 * 6.12's make_device_exclusive_range() hands over no page of a large folio (a tail page comes
 * back NULL), and no split of a THP is exported to modules.  migrate_vma_setup() splits a
 * PMD-mapped THP's folio before it collects the pages, so: collect each PMD-mapped 2 MiB of
 * [a, e) and put every page back (no destination), leaving small pages.  Only those: small
 * pages around could be KSM pages, which a collection may fail to put back (see
 * svm_migrate_setup()).  The MMU_NOTIFY_MIGRATE it sends (no owner) zaps, so the caller's
 * round fails its seq check and goes again, over small pages.
 */
static void svm_split_thp(struct vm_area_struct *vma, unsigned long a, unsigned long e)
{
	unsigned long p;

	for (p = ALIGN_DOWN(a, PMD_SIZE); p < e; p += PMD_SIZE) {
		unsigned long s = max(p, vma->vm_start), t = min(p + PMD_SIZE, vma->vm_end);

		if (s < t && svm_pmd_huge(vma->vm_mm, s))
			svm_split_range(vma, s, t);
	}
}

/* Collects [a, e) and puts every page back: splits a PMD-mapped THP there. */
static void svm_split_range(struct vm_area_struct *vma, unsigned long a, unsigned long e)
{
	unsigned long n = (e - a) >> PAGE_SHIFT;
	unsigned long *src = kcalloc(2 * n, sizeof(*src), GFP_KERNEL);
	struct migrate_vma args = {
		.vma = vma,
		.start = a,
		.end = e,
		.src = src,
		.dst = src + n,
		.flags = MIGRATE_VMA_SELECT_SYSTEM,
	};

	if (!src)
		return;
	if (!migrate_vma_setup(&args)) {
		migrate_vma_pages(&args);
		migrate_vma_finalize(&args);
	}
	kfree(src);
}

/* Whether the page at addr is part of a large folio (a PTE-mapped THP, an mTHP). */
static bool svm_in_large_folio(struct mm_struct *mm, unsigned long addr)
{
	struct page *page;
	bool large;

	if (get_user_pages_remote(mm, addr, 1, 0, &page, NULL) != 1)
		return false;
	large = folio_test_large(page_folio(page));
	put_page(page);
	return large;
}

/*
 * make_device_exclusive_range() over [start, start + npages pages), read lock held.  The
 * pages come back in pfns itself (a struct page pointer per entry, then its pfn): pfns[i] is
 * the pfn handed over, its page locked and referenced until svm_release_exclusive(), or 0.
 * Only a private mapping's anonymous pages can be handed over: -EPERM for a shared one,
 * whose pages the kernel would refuse one by one.  A PMD-mapped THP is split first (every
 * page comes back 0 then: go again); a page of a large folio mapped by PTEs cannot be split
 * from here, and is -EBUSY (the caller still releases what pfns holds).
 */
long svm_make_exclusive(struct mm_struct *mm, u64 start, u64 npages, u64 *pfns, u64 owner)
{
	struct vm_area_struct *vma = vma_lookup(mm, start);
	struct page **pages = (struct page **)pfns;
	u64 end = start + (npages << PAGE_SHIFT);
	long ret, i;

	BUILD_BUG_ON(sizeof(struct page *) != sizeof(u64));
	mmap_assert_locked(mm);
	if (!vma || end > vma->vm_end)
		return -EFAULT;
	if (vma->vm_flags & VM_MAYSHARE)
		return -EPERM;
	if (svm_pmd_huge(mm, start) || svm_pmd_huge(mm, end - 1)) {
		unsigned long a = ALIGN_DOWN(start, PMD_SIZE), e = ALIGN(end, PMD_SIZE);

		svm_split_thp(vma, max(a, vma->vm_start), min(e, vma->vm_end));
		memset(pfns, 0, npages * sizeof(*pfns));
		return npages;
	}
	ret = make_device_exclusive_range(mm, start, end, pages, (void *)(uintptr_t)owner);
	if (ret < 0)
		return ret;
	for (i = 0; i < (long)npages; i++)
		pfns[i] = i < ret && pages[i] ? page_to_pfn(pages[i]) : 0;
	for (i = 0; i < ret; i++)
		if (!pfns[i] && svm_in_large_folio(mm, start + (i << PAGE_SHIFT)))
			return -EBUSY;
	return ret;
}

void svm_release_exclusive(const u64 *pfns, u64 npages)
{
	u64 i;

	for (i = 0; i < npages; i++) {
		if (pfns[i]) {
			struct page *page = pfn_to_page(pfns[i]);

			unlock_page(page);
			put_page(page);
		}
	}
}

/* Eviction by pfn, whatever maps the pages (RELEASE, module exit). */
/*
 * migrate_device_range(), minus any page another migration already moved out.  6.12 takes
 * such a page in migrate_device_finalize()'s window (unlocked, not yet put, its charge gone
 * to the new page: no memcg) and migrates it a second time, warning in mem_cgroup_migrate()
 * and folio_lruvec_lock(); two devices evicting one memory, or an eviction racing a CPU
 * fault's migrate_to_ram, open that window (vmtests' peer_evict_race).  Its memcg is stable
 * under the page lock the collection holds; a page still mapped when collected is charged.
 */
int svm_migrate_device_range(u64 *src, u64 first_pfn, u64 npages)
{
	u64 i;
	int ret = migrate_device_range((unsigned long *)src, first_pfn, npages);

	if (ret || mem_cgroup_disabled())
		return ret;
	for (i = 0; i < npages; i++) {
		struct page *page = migrate_pfn_to_page(src[i]);

		if (page && (src[i] & MIGRATE_PFN_MIGRATE) && !folio_memcg(page_folio(page)))
			src[i] &= ~MIGRATE_PFN_MIGRATE;
	}
	return 0;
}

void svm_migrate_device_pages(u64 *src, u64 *dst, u64 npages)
{
	migrate_device_pages((unsigned long *)src, (unsigned long *)dst, npages);
}

void svm_migrate_device_finalize(u64 *src, u64 *dst, u64 npages)
{
	migrate_device_finalize((unsigned long *)src, (unsigned long *)dst, npages);
}

/* ---- dmirror front end ------------------------------------------------- */

static bool dmirror;
module_param(dmirror, bool, 0444);

static unsigned int dmirror_devmem_mib = 16;
module_param(dmirror_devmem_mib, uint, 0444);
MODULE_PARM_DESC(dmirror_devmem_mib,
		 "device memory of each dmirror device, MiB (device-private pages, the least recently used evicted when full; 0: none; default 16)");

static unsigned int accel_devmem_mib = 16;
module_param(accel_devmem_mib, uint, 0444);
MODULE_PARM_DESC(accel_devmem_mib,
		 "device memory of each accel device, MiB (for MADVISE's SVM_ACCEL_LOC_DEVICE and SVM_ACCEL_LOC_PEER and PREFETCH's TO_DEVICE; 0: none; default 16)");

/* The device memory of each accel device, MiB, at most 65536 (0: none). */
u64 svm_accel_devmem_mib(void)
{
	return min(accel_devmem_mib, 65536U);
}

/* With dmirror=1: the device memory each dmirror device gets, MiB, at most 65536 (0: none). */
u64 svm_dm_devmem_mib(void)
{
	return dmirror ? min(dmirror_devmem_mib, 65536U) : 0;
}
MODULE_PARM_DESC(dmirror,
		 "also register /dev/hmm_dmirror0 and 1 (lib/test_hmm_uapi.h) backed by the svm engine; never load together with test_hmm");

int svm_vm_insert_zeroed_page(struct vm_area_struct *vma, u64 addr)
{
	/* Up to 1 GiB per mmap (dmirror.rs): charged, and -ENOMEM at the limit. */
	struct page *page = alloc_page(SVM_GFP | __GFP_ZERO);
	int ret;

	if (!page)
		return -ENOMEM;
	ret = vm_insert_page(vma, addr, page);
	/* The mapping holds its own reference (or there is none, on failure). */
	put_page(page);
	return ret;
}

static struct miscdevice svm_dm_misc[2];

static int svm_dm_open(struct inode *inode, struct file *filp)
{
	/* misc_open() left the miscdevice here: which of the two devices. */
	unsigned int index = (struct miscdevice *)filp->private_data - svm_dm_misc;
	void *m;
	int idx, ret;

	if (!svm_dm_enter(&idx))
		return -ENODEV;
	ret = svm_rs_dm_open(&svm_pdev->dev, index, &m);
	svm_dm_exit_section(idx);
	if (ret)
		return ret;
	filp->private_data = m;
	return 0;
}

static int svm_dm_release(struct inode *inode, struct file *filp)
{
	svm_rs_dm_release(filp->private_data);
	return 0;
}

static long svm_dm_ioctl(struct file *filp, unsigned int cmd, unsigned long arg)
{
	int idx, ret;

	switch (cmd) {
	case HMM_DMIRROR_READ:
	case HMM_DMIRROR_WRITE:
	case HMM_DMIRROR_MIGRATE_TO_DEV:
	case HMM_DMIRROR_MIGRATE_TO_SYS:
	case HMM_DMIRROR_SNAPSHOT:
	case HMM_DMIRROR_EXCLUSIVE:
	case HMM_DMIRROR_CHECK_EXCLUSIVE:
	case HMM_DMIRROR_RELEASE:
		if (!svm_dm_enter(&idx))
			return -ENODEV;
		ret = svm_rs_dm_ioctl(filp->private_data, _IOC_NR(cmd), arg);
		svm_dm_exit_section(idx);
		return ret;
	}
	return -EINVAL;
}

static int svm_dm_mmap(struct file *filp, struct vm_area_struct *vma)
{
	int idx, ret;

	if (!svm_dm_enter(&idx))
		return -ENODEV;
	ret = svm_rs_dm_mmap(vma, vma->vm_start, vma->vm_end);
	svm_dm_exit_section(idx);
	return ret;
}

static const struct file_operations svm_dm_fops = {
	.owner = THIS_MODULE,
	.open = svm_dm_open,
	.release = svm_dm_release,
	.unlocked_ioctl = svm_dm_ioctl,
	.mmap = svm_dm_mmap,
	.llseek = default_llseek,
};

static struct miscdevice svm_dm_misc[2] = {
	{ .minor = MISC_DYNAMIC_MINOR, .name = "hmm_dmirror0", .fops = &svm_dm_fops },
	{ .minor = MISC_DYNAMIC_MINOR, .name = "hmm_dmirror1", .fops = &svm_dm_fops },
};
static int svm_dm_registered;

static int svm_dm_init(void)
{
	int ret;

	if (!dmirror)
		return 0;
	for (; svm_dm_registered < ARRAY_SIZE(svm_dm_misc); svm_dm_registered++) {
		ret = misc_register(&svm_dm_misc[svm_dm_registered]);
		if (ret)
			return ret;
	}
	pr_info("svm_accel: /dev/hmm_dmirror0 and 1 registered (dmirror=1)\n");
	return 0;
}

static void svm_dm_exit(void)
{
	while (svm_dm_registered > 0)
		misc_deregister(&svm_dm_misc[--svm_dm_registered]);
}

int svm_glue_init(unsigned int dma_bits)
{
	int ret;

	svm_dma_bits = dma_bits;
	ret = svm_lockdep_prime();
	if (ret)
		return ret;
	svm_wq = alloc_workqueue("svm_accel", WQ_UNBOUND, 0);
	if (!svm_wq)
		return -ENOMEM;
	svm_qwq = alloc_workqueue("svm_queue", WQ_UNBOUND, svm_max_queues());
	svm_qwq_hi = alloc_workqueue("svm_queue_hi", WQ_UNBOUND | WQ_HIGHPRI, svm_max_queues());
	if (!svm_qwq || !svm_qwq_hi) {
		ret = -ENOMEM;
		goto err_qwq;
	}
	/* Before the device: a file opened as soon as it registers gets its directory. */
	svm_debugfs_init();
	ret = platform_driver_register(&svm_platform_driver);
	if (ret)
		goto err_wq;
	svm_pdev = platform_device_register_simple("svm_accel", PLATFORM_DEVID_NONE, NULL, 0);
	if (IS_ERR(svm_pdev)) {
		ret = PTR_ERR(svm_pdev);
		goto err_drv;
	}
	if (!platform_get_drvdata(svm_pdev)) {
		/* probe refused the device */
		ret = -ENODEV;
		platform_device_unregister(svm_pdev);
		goto err_drv;
	}
	ret = svm_dm_init();
	if (ret) {
		svm_dm_exit();
		platform_device_unregister(svm_pdev);
		goto err_drv;
	}
	return 0;

err_drv:
	platform_driver_unregister(&svm_platform_driver);
err_wq:
	svm_debugfs_exit();
err_qwq:
	if (svm_qwq_hi)
		destroy_workqueue(svm_qwq_hi);
	if (svm_qwq)
		destroy_workqueue(svm_qwq);
	destroy_workqueue(svm_wq);
	return ret;
}

void svm_glue_exit(void)
{
	/*
	 * Every file is closed (the fops hold a module reference), but the accel contexts'
	 * teardowns run on svm_wq (svm_rs_postclose): let them finish while the device is
	 * still bound, so no DMA mapping outlives the driver.
	 */
	flush_workqueue(svm_wq);
	svm_debugfs_exit();
	svm_dm_exit();
	platform_device_unregister(svm_pdev);
	platform_driver_unregister(&svm_platform_driver);
	destroy_workqueue(svm_qwq_hi);
	destroy_workqueue(svm_qwq);
	destroy_workqueue(svm_wq);
}
