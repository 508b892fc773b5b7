// SPDX-License-Identifier: GPL-2.0
/*
 * hmmcount: counts calls of hmm_range_fault() with a kprobe, for the side-by-side benchmark
 * of the svm engine and test_hmm (vmtests' dmbench). A retry after an invalidation is one
 * more call, whichever driver makes it, so the difference in calls between the same work
 * with and without an unrelated munmap storm is the storm's false retries -- measured the
 * same way for a driver that exports no counter (test_hmm).
 *
 * /sys/module/hmmcount/parameters/calls: read the count; write anything to reset it.
 * A measurement tool, not part of the engine.
 */
#include <linux/atomic.h>
#include <linux/kprobes.h>
#include <linux/module.h>
#include <linux/sysfs.h>

static atomic64_t hmmcount_calls;

static int hmmcount_pre(struct kprobe *p, struct pt_regs *regs)
{
	atomic64_inc(&hmmcount_calls);
	return 0;
}

static struct kprobe hmmcount_kp = {
	.symbol_name = "hmm_range_fault",
	.pre_handler = hmmcount_pre,
};

static int hmmcount_get(char *buf, const struct kernel_param *kp)
{
	return sysfs_emit(buf, "%lld\n", (long long)atomic64_read(&hmmcount_calls));
}

static int hmmcount_set(const char *val, const struct kernel_param *kp)
{
	atomic64_set(&hmmcount_calls, 0);
	return 0;
}

static const struct kernel_param_ops hmmcount_ops = {
	.get = hmmcount_get,
	.set = hmmcount_set,
};
module_param_cb(calls, &hmmcount_ops, NULL, 0644);
MODULE_PARM_DESC(calls, "hmm_range_fault() calls since load or the last write");

static int __init hmmcount_init(void)
{
	return register_kprobe(&hmmcount_kp);
}

static void __exit hmmcount_exit(void)
{
	unregister_kprobe(&hmmcount_kp);
}

module_init(hmmcount_init);
module_exit(hmmcount_exit);
MODULE_DESCRIPTION("count hmm_range_fault() calls (svm benchmark tool)");
MODULE_LICENSE("GPL");
