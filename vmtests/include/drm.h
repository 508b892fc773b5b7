/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * Userspace stand-in for the kernel's include/uapi/drm/drm.h, which this
 * machine's libc headers don't ship (libdrm would): just what
 * include/uapi/drm/svm_accel.h uses, with the kernel's values.
 */
#ifndef _SVM_VMTESTS_DRM_H
#define _SVM_VMTESTS_DRM_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define DRM_IOCTL_BASE 'd'
#define DRM_IOWR(nr, type) _IOWR(DRM_IOCTL_BASE, nr, type)
#define DRM_COMMAND_BASE 0x40

#endif
