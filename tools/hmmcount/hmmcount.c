// SPDX-License-Identifier: GPL-2.0
/*
 * hmmcount: counts calls of hmm_range_fault() with a kprobe, for the side-by-side benchmark
 * of the svm engine and test_hmm (vmtests' dmbench). A retry after an invalidation is one
 * more call, whichever driver makes it, so the difference in calls between the same work
 * with and without an unrelated munmap storm is the storm's false retries -- measured the
 * same way for a driver that exports no counter (test_hmm).
 *
 * The time spent inside hmm_range_fault() is summed too, so the benchmark can tell the
 * kernel's page-table walk (the same for both drivers) from each driver's own cost.
 *
 * /sys/module/hmmcount/parameters/calls: read the count; write anything to reset it.
 * /sys/module/hmmcount/parameters/ns: ns inside hmm_range_fault(), over all calls.
 * A measurement tool, not part of the engine.
 */
#include <linux/atomic.h>
#include <linux/kprobes.h>
#include <linux/module.h>
#include <linux/notifier.h>
#include <linux/string.h>
#include <linux/sysfs.h>

static atomic64_t hmmcount_calls;
static atomic64_t hmmcount_ns;

/* A kretprobe: the call is counted on entry, its duration on return. */
static int hmmcount_entry(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	*(u64 *)ri->data = ktime_get_ns();
	atomic64_inc(&hmmcount_calls);
	return 0;
}

static int hmmcount_ret(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	atomic64_add(ktime_get_ns() - *(u64 *)ri->data, &hmmcount_ns);
	return 0;
}

static struct kretprobe hmmcount_krp = {
	.kp.symbol_name = "hmm_range_fault",
	.entry_handler = hmmcount_entry,
	.handler = hmmcount_ret,
	.data_size = sizeof(u64),
	/* Every faulting thread of a benchmark at once, with room to spare. */
	.maxactive = 64,
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

static int hmmcount_ns_get(char *buf, const struct kernel_param *kp)
{
	return sysfs_emit(buf, "%lld\n", (long long)atomic64_read(&hmmcount_ns));
}

static const struct kernel_param_ops hmmcount_ns_ops = {
	.get = hmmcount_ns_get,
};
module_param_cb(ns, &hmmcount_ns_ops, NULL, 0444);
MODULE_PARM_DESC(ns, "ns spent inside hmm_range_fault() since load, over all calls");

/*
 * test_hmm's whole fault service, dmirror_fault() (hmm_range_fault() and its xarray stores,
 * chunk by chunk), timed the same way, so the benchmark compares it with the time svm_accel
 * reports for its own (its fault_ns parameter). test_hmm comes and goes between benchmark
 * rounds: a module notifier arms the probe each time it loads and disarms it as it goes.
 */
static atomic64_t dmirror_ns;

static int dmirror_entry(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	*(u64 *)ri->data = ktime_get_ns();
	return 0;
}

static int dmirror_ret(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	atomic64_add(ktime_get_ns() - *(u64 *)ri->data, &dmirror_ns);
	return 0;
}

static struct kretprobe dmirror_krp;
static bool dmirror_armed;

static int hmmcount_module_event(struct notifier_block *nb, unsigned long state, void *data)
{
	struct module *mod = data;

	if (strcmp(mod->name, "test_hmm"))
		return NOTIFY_DONE;
	if (state == MODULE_STATE_LIVE && !dmirror_armed) {
		memset(&dmirror_krp, 0, sizeof(dmirror_krp));
		dmirror_krp.kp.symbol_name = "test_hmm:dmirror_fault";
		dmirror_krp.entry_handler = dmirror_entry;
		dmirror_krp.handler = dmirror_ret;
		dmirror_krp.data_size = sizeof(u64);
		dmirror_krp.maxactive = 64;
		dmirror_armed = register_kretprobe(&dmirror_krp) == 0;
		if (!dmirror_armed)
			pr_warn("hmmcount: no probe on test_hmm's dmirror_fault\n");
	} else if (state == MODULE_STATE_GOING && dmirror_armed) {
		unregister_kretprobe(&dmirror_krp);
		dmirror_armed = false;
	}
	return NOTIFY_DONE;
}

static struct notifier_block hmmcount_module_nb = {
	.notifier_call = hmmcount_module_event,
};

static int dmirror_ns_get(char *buf, const struct kernel_param *kp)
{
	return sysfs_emit(buf, "%lld\n", (long long)atomic64_read(&dmirror_ns));
}

static const struct kernel_param_ops dmirror_ns_ops = {
	.get = dmirror_ns_get,
};
module_param_cb(dmirror_fault_ns, &dmirror_ns_ops, NULL, 0444);
MODULE_PARM_DESC(dmirror_fault_ns, "ns inside test_hmm's dmirror_fault() since load");

static int __init hmmcount_init(void)
{
	int ret = register_kretprobe(&hmmcount_krp);

	if (ret)
		return ret;
	ret = register_module_notifier(&hmmcount_module_nb);
	if (ret)
		unregister_kretprobe(&hmmcount_krp);
	return ret;
}

static void __exit hmmcount_exit(void)
{
	unregister_module_notifier(&hmmcount_module_nb);
	if (dmirror_armed)
		unregister_kretprobe(&dmirror_krp);
	unregister_kretprobe(&hmmcount_krp);
}

module_init(hmmcount_init);
module_exit(hmmcount_exit);
MODULE_DESCRIPTION("count hmm_range_fault() calls (svm benchmark tool)");
MODULE_LICENSE("GPL");
