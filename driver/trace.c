// SPDX-License-Identifier: GPL-2.0
/*
 * The svm tracepoints (svm_trace.h) and the calls Rust makes to fire them: tracepoints are
 * macros, which Rust-for-Linux 6.12 cannot expand.
 */
#define CREATE_TRACE_POINTS
#include "svm_trace.h"

#include "glue.h"

bool svm_tracing(void)
{
	return trace_svm_fault_start_enabled() || trace_svm_fault_end_enabled() ||
	       trace_svm_retry_enabled() || trace_svm_invalidate_enabled() ||
	       trace_svm_gc_enabled();
}

void svm_trace_fault_start(const void *ctx, u64 va, bool write, u64 pages)
{
	trace_svm_fault_start(ctx, va, write, pages);
}

void svm_trace_fault_end(const void *ctx, u64 va, bool write, int err, u64 ns)
{
	trace_svm_fault_end(ctx, va, write, err, ns);
}

void svm_trace_retry(const void *ctx, u64 va, bool own)
{
	trace_svm_retry(ctx, va, own);
}

void svm_trace_invalidate(const void *ctx, u64 start, u64 end, unsigned int event, bool hit)
{
	trace_svm_invalidate(ctx, start, end, event, hit);
}

void svm_trace_gc(const void *ctx, u64 removed)
{
	trace_svm_gc(ctx, removed);
}

void svm_trace_queue(const void *ctx, u32 id, unsigned int state, int err, u64 addr,
		     u64 completed)
{
	trace_svm_queue(ctx, id, state, err, addr, completed);
}

void svm_trace_queue_run(const void *ctx, u32 id, u64 jobs, u64 completed)
{
	trace_svm_queue_run(ctx, id, jobs, completed);
}
