// SPDX-License-Identifier: GPL-2.0
//! svm_smoke: proves the out-of-tree module layout — a Rust crate root, a C
//! glue file linked into the same .ko, and a shared source file pulled in
//! with `#[path]` from elsewhere in the repository.

use core::ffi::{c_int, c_ulong};
use kernel::prelude::*;

// The path goes up to the repository root on purpose: the engine's shared
// sources (svm/, pgtable/) are included the same way.
#[path = "../../kernel/smoke/shared.rs"]
mod shared;

/// Range granularity the shared code sees through `super::`.
const RANGE_SIZE: usize = 2 << 20;

extern "C" {
    fn svm_smoke_page_size() -> c_ulong;
    fn svm_smoke_mm_users() -> c_int;
}

module! {
    type: SvmSmoke,
    name: "svm_smoke",
    author: "svm",
    description: "svm out-of-tree Rust + C module layout smoke test",
    license: "GPL",
}

struct SvmSmoke;

impl kernel::Module for SvmSmoke {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        // SAFETY: plain C functions without preconditions, in this module.
        let page_size = unsafe { svm_smoke_page_size() } as usize;
        // SAFETY: as above; runs in insmod's process context.
        let mm_users = unsafe { svm_smoke_mm_users() };
        let pages = shared::default_range_pages(page_size);

        pr_info!(
            "PAGE_SIZE={} range pages={} mm_users={}\n",
            page_size,
            pages,
            mm_users
        );
        if page_size != 4096 || pages != 512 || mm_users < 1 {
            pr_err!("FAIL\n");
            return Err(EINVAL);
        }
        pr_info!("OK\n");
        Ok(SvmSmoke)
    }
}

impl Drop for SvmSmoke {
    fn drop(&mut self) {
        pr_info!("unloaded\n");
    }
}
