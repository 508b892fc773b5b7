// SPDX-License-Identifier: GPL-2.0
/*
 * Thin C glue for svm_smoke.  6.12's Rust bindings cover no mm API and an
 * out-of-tree module cannot extend bindings_helper.h, so C code owns the
 * kernel structs and hands plain values (or opaque pointers) to Rust.
 */
#include <linux/mm.h>
#include <linux/sched.h>
#include <linux/sched/mm.h>

#include "smoke_glue.h"

unsigned long svm_smoke_page_size(void)
{
	return PAGE_SIZE;
}

/* mm_users of the calling process (insmod), taken under an mm reference. */
int svm_smoke_mm_users(void)
{
	struct mm_struct *mm = current->mm;
	int users;

	if (!mm || !mmget_not_zero(mm))
		return -ESRCH;
	users = atomic_read(&mm->mm_users);
	mmput(mm);
	return users;
}
