/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Tracepoints of the svm engine (system "svm"), one per svm::trace::Trace event: enable with
 * `perf trace -e 'svm:*'`, `trace-cmd record -e svm` or events/svm/enable in tracefs. `ctx`
 * is the engine (hashed like every %p); errno values are positive; event names follow
 * enum mmu_notifier_event.
 */
#undef TRACE_SYSTEM
#define TRACE_SYSTEM svm

#if !defined(_SVM_TRACE_H) || defined(TRACE_HEADER_MULTI_READ)
#define _SVM_TRACE_H

#include <linux/tracepoint.h>

#define svm_show_event(e)						\
	__print_symbolic(e, { 0, "unmap" }, { 1, "clear" },		\
			 { 2, "protection_vma" }, { 3, "protection_page" }, \
			 { 4, "soft_dirty" }, { 5, "release" },		\
			 { 6, "migrate" }, { 7, "exclusive" })

TRACE_EVENT(svm_fault_start,
	TP_PROTO(const void *ctx, u64 va, bool write, u64 pages),
	TP_ARGS(ctx, va, write, pages),
	TP_STRUCT__entry(
		__field(const void *, ctx)
		__field(u64, va)
		__field(bool, write)
		__field(u64, pages)
	),
	TP_fast_assign(
		__entry->ctx = ctx;
		__entry->va = va;
		__entry->write = write;
		__entry->pages = pages;
	),
	TP_printk("ctx=%p va=0x%llx %s pages=%llu", __entry->ctx, __entry->va,
		  __entry->write ? "write" : "read", __entry->pages)
);

TRACE_EVENT(svm_fault_end,
	TP_PROTO(const void *ctx, u64 va, bool write, int err, u64 ns),
	TP_ARGS(ctx, va, write, err, ns),
	TP_STRUCT__entry(
		__field(const void *, ctx)
		__field(u64, va)
		__field(bool, write)
		__field(int, err)
		__field(u64, ns)
	),
	TP_fast_assign(
		__entry->ctx = ctx;
		__entry->va = va;
		__entry->write = write;
		__entry->err = err;
		__entry->ns = ns;
	),
	TP_printk("ctx=%p va=0x%llx %s err=%d ns=%llu", __entry->ctx, __entry->va,
		  __entry->write ? "write" : "read", __entry->err, __entry->ns)
);

TRACE_EVENT(svm_retry,
	TP_PROTO(const void *ctx, u64 va, bool own),
	TP_ARGS(ctx, va, own),
	TP_STRUCT__entry(
		__field(const void *, ctx)
		__field(u64, va)
		__field(bool, own)
	),
	TP_fast_assign(
		__entry->ctx = ctx;
		__entry->va = va;
		__entry->own = own;
	),
	TP_printk("ctx=%p va=0x%llx %s", __entry->ctx, __entry->va,
		  __entry->own ? "own_cow_break" : "foreign")
);

TRACE_EVENT(svm_invalidate,
	TP_PROTO(const void *ctx, u64 start, u64 end, unsigned int event, bool hit),
	TP_ARGS(ctx, start, end, event, hit),
	TP_STRUCT__entry(
		__field(const void *, ctx)
		__field(u64, start)
		__field(u64, end)
		__field(unsigned int, event)
		__field(bool, hit)
	),
	TP_fast_assign(
		__entry->ctx = ctx;
		__entry->start = start;
		__entry->end = end;
		__entry->event = event;
		__entry->hit = hit;
	),
	TP_printk("ctx=%p 0x%llx-0x%llx %s hit=%d", __entry->ctx, __entry->start,
		  __entry->end, svm_show_event(__entry->event), __entry->hit)
);

TRACE_EVENT(svm_gc,
	TP_PROTO(const void *ctx, u64 removed),
	TP_ARGS(ctx, removed),
	TP_STRUCT__entry(
		__field(const void *, ctx)
		__field(u64, removed)
	),
	TP_fast_assign(
		__entry->ctx = ctx;
		__entry->removed = removed;
	),
	TP_printk("ctx=%p removed=%llu", __entry->ctx, __entry->removed)
);

/* SVM_ACCEL_QUEUE_* states, and the lifecycle events that are not states. */
#define svm_show_qstate(s)						\
	__print_symbolic(s, { 1, "active" }, { 2, "error" },		\
			 { 3, "suspended" }, { 4, "created" }, { 5, "destroyed" })

/* A queue changed state: created, destroyed, error (err, addr), suspended, resumed (active). */
TRACE_EVENT(svm_queue,
	TP_PROTO(const void *ctx, u32 id, unsigned int state, int err, u64 addr, u64 completed),
	TP_ARGS(ctx, id, state, err, addr, completed),
	TP_STRUCT__entry(
		__field(const void *, ctx)
		__field(u32, id)
		__field(unsigned int, state)
		__field(int, err)
		__field(u64, addr)
		__field(u64, completed)
	),
	TP_fast_assign(
		__entry->ctx = ctx;
		__entry->id = id;
		__entry->state = state;
		__entry->err = err;
		__entry->addr = addr;
		__entry->completed = completed;
	),
	TP_printk("ctx=%p queue=%u %s err=%d addr=0x%llx completed=%llu", __entry->ctx,
		  __entry->id, svm_show_qstate(__entry->state), __entry->err, __entry->addr,
		  __entry->completed)
);

/* A command processor ran `jobs` jobs seen at one doorbell read. */
TRACE_EVENT(svm_queue_run,
	TP_PROTO(const void *ctx, u32 id, u64 jobs, u64 completed),
	TP_ARGS(ctx, id, jobs, completed),
	TP_STRUCT__entry(
		__field(const void *, ctx)
		__field(u32, id)
		__field(u64, jobs)
		__field(u64, completed)
	),
	TP_fast_assign(
		__entry->ctx = ctx;
		__entry->id = id;
		__entry->jobs = jobs;
		__entry->completed = completed;
	),
	TP_printk("ctx=%p queue=%u jobs=%llu completed=%llu", __entry->ctx, __entry->id,
		  __entry->jobs, __entry->completed)
);

#endif /* _SVM_TRACE_H */

#undef TRACE_INCLUDE_PATH
#define TRACE_INCLUDE_PATH .
#undef TRACE_INCLUDE_FILE
#define TRACE_INCLUDE_FILE svm_trace
#include <trace/define_trace.h>
