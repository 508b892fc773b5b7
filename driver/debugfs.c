// SPDX-License-Identifier: GPL-2.0
/*
 * debugfs: /sys/kernel/debug/svm_accel/: `device`, and one directory per open accel file
 * (ctx-N) and dmirror file (dm-N) with `stats` and `ranges`, whose text Rust writes
 * (svm_rs_debugfs_show); an accel context's `queues` also takes `suspend` and `resume`
 * (svm_rs_debugfs_write). debugfs removal waits for running readers, so a file removes its
 * directory before its engine goes.
 */
#include <linux/debugfs.h>
#include <linux/seq_file.h>

#include "glue.h"

static struct dentry *svm_debugfs_root;

#define SVM_DBG_FILE(name, what)						\
static int svm_dbg_##name##_show(struct seq_file *m, void *unused)		\
{										\
	return svm_rs_debugfs_show(m->private, what, m);			\
}										\
DEFINE_SHOW_ATTRIBUTE(svm_dbg_##name)

SVM_DBG_FILE(stats, SVM_DBG_STATS);
SVM_DBG_FILE(ranges, SVM_DBG_RANGES);
SVM_DBG_FILE(dm_stats, SVM_DBG_DM_STATS);
SVM_DBG_FILE(dm_ranges, SVM_DBG_DM_RANGES);
SVM_DBG_FILE(device, SVM_DBG_DEVICE);

static int svm_dbg_queues_show(struct seq_file *m, void *unused)
{
	return svm_rs_debugfs_show(m->private, SVM_DBG_QUEUES, m);
}

static int svm_dbg_queues_open(struct inode *inode, struct file *file)
{
	return single_open(file, svm_dbg_queues_show, inode->i_private);
}

static ssize_t svm_dbg_queues_write(struct file *file, const char __user *ubuf, size_t len,
				    loff_t *ppos)
{
	struct seq_file *m = file->private_data;
	char buf[16];
	int ret;

	if (len == 0 || len >= sizeof(buf))
		return -EINVAL;
	if (copy_from_user(buf, ubuf, len))
		return -EFAULT;
	buf[len] = 0;
	ret = svm_rs_debugfs_write(m->private, SVM_DBG_QUEUES, buf, len);
	return ret ? ret : len;
}

static const struct file_operations svm_dbg_queues_fops = {
	.owner = THIS_MODULE,
	.open = svm_dbg_queues_open,
	.read = seq_read,
	.llseek = seq_lseek,
	.release = single_release,
	.write = svm_dbg_queues_write,
};

void svm_debugfs_init(void)
{
	/* debugfs errors are not fatal: the files are a diagnostic. */
	svm_debugfs_root = debugfs_create_dir("svm_accel", NULL);
	debugfs_create_file("device", 0400, svm_debugfs_root, NULL, &svm_dbg_device_fops);
}

void svm_debugfs_exit(void)
{
	debugfs_remove_recursive(svm_debugfs_root);
	svm_debugfs_root = NULL;
}

void *svm_debugfs_ctx_add(void *obj, u64 id, bool mirror)
{
	char name[32];
	struct dentry *d;

	snprintf(name, sizeof(name), "%s-%llu", mirror ? "dm" : "ctx", id);
	d = debugfs_create_dir(name, svm_debugfs_root);
	debugfs_create_file("stats", 0400, d, obj,
			    mirror ? &svm_dbg_dm_stats_fops : &svm_dbg_stats_fops);
	debugfs_create_file("ranges", 0400, d, obj,
			    mirror ? &svm_dbg_dm_ranges_fops : &svm_dbg_ranges_fops);
	if (!mirror)
		debugfs_create_file("queues", 0600, d, obj, &svm_dbg_queues_fops);
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
