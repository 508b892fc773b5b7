/* SPDX-License-Identifier: GPL-2.0 */
/* C side of svm_smoke: functions the Rust crate root calls via extern "C". */
#ifndef SVM_SMOKE_GLUE_H
#define SVM_SMOKE_GLUE_H

unsigned long svm_smoke_page_size(void);
int svm_smoke_mm_users(void);

#endif
