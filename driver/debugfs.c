// SPDX-License-Identifier: GPL-2.0
/*
 * debugfs: /sys/kernel/debug/svm_accel/, one directory per open accel file (ctx-N) with
 * `stats` and `ranges`, whose text Rust writes (svm_rs_debugfs_show). debugfs removal waits
 * for running readers, so a context removes its directory before its engine goes.
 */
#include <linux/debugfs.h>
#include <linux/seq_file.h>

#include "glue.h"

static struct dentry *svm_debugfs_root;

void svm_debugfs_init(void)
{
	/* debugfs errors are not fatal: the files are a diagnostic. */
	svm_debugfs_root = debugfs_create_dir("svm_accel", NULL);
}

void svm_debugfs_exit(void)
{
	debugfs_remove_recursive(svm_debugfs_root);
	svm_debugfs_root = NULL;
}

static int svm_dbg_stats_show(struct seq_file *m, void *unused)
{
	return svm_rs_debugfs_show(m->private, SVM_DBG_STATS, m);
}
DEFINE_SHOW_ATTRIBUTE(svm_dbg_stats);

static int svm_dbg_ranges_show(struct seq_file *m, void *unused)
{
	return svm_rs_debugfs_show(m->private, SVM_DBG_RANGES, m);
}
DEFINE_SHOW_ATTRIBUTE(svm_dbg_ranges);

void *svm_debugfs_ctx_add(void *ctx, u64 id)
{
	char name[32];
	struct dentry *d;

	snprintf(name, sizeof(name), "ctx-%llu", id);
	d = debugfs_create_dir(name, svm_debugfs_root);
	debugfs_create_file("stats", 0400, d, ctx, &svm_dbg_stats_fops);
	debugfs_create_file("ranges", 0400, d, ctx, &svm_dbg_ranges_fops);
	return d;
}

void svm_debugfs_remove(void *d)
{
	debugfs_remove_recursive(d);
}

void svm_seq_write(void *m, const char *buf, size_t len)
{
	seq_write(m, buf, len);
}
