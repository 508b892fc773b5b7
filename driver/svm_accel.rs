// SPDX-License-Identifier: GPL-2.0
//! svm_accel: a sample DRM accel driver (/dev/accel/accelN) whose software device shares the
//! address space of the process that binds it, through the svm engine.
//!
//! This crate root compiles the *same* engine sources as the Cargo workspace (`svm/src`,
//! `pgtable/src`), pulled in with `#[path]` at crate-root level because the shared files name
//! their siblings `super::engine`, `super::pgtable`, ... The kernel platform is
//! `kplat.rs` over the C glue (`glue.c`); the device and the ioctls are `device.rs`.
//! See Documentation/kernel.md.

// The shared files' `pub` items are reachable only inside this crate, and the module uses a
// subset of the engine's API; `cfg(loom)` and the `teeth-*` features are never set here.
#![allow(unreachable_pub, dead_code, unexpected_cfgs, missing_docs)]
#![allow(clippy::all)]

use kernel::prelude::*;

#[path = "../svm/src/config.rs"]
mod config;
#[path = "../svm/src/engine.rs"]
mod engine;
#[path = "../svm/src/fault.rs"]
mod fault;
#[path = "../svm/src/gc.rs"]
mod gc;
#[path = "../svm/src/invalidate.rs"]
mod invalidate;
#[path = "../svm/src/platform.rs"]
mod platform;
#[path = "../svm/src/range.rs"]
mod range;
#[path = "../svm/src/serial.rs"]
mod serial;
#[path = "../svm/src/stats.rs"]
mod stats;
#[path = "../svm/src/sync.rs"]
mod sync;

mod pgtable;

mod device;
mod dmirror;
mod ffi;
mod kplat;
mod uapi;

module! {
    type: SvmAccel,
    name: "svm_accel",
    author: "svm",
    description: "svm shared-virtual-memory sample DRM accel driver",
    license: "GPL",
}

struct SvmAccel;

impl kernel::Module for SvmAccel {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        // SAFETY: a constant array of the glue.
        let c_sizes = unsafe { ffi::svm_uapi_sizes };
        for (i, (&c, &r)) in c_sizes.iter().zip(uapi::SIZES.iter()).enumerate() {
            if c as usize != r {
                pr_err!("uAPI struct {} is {} bytes in C, {} in Rust\n", i, c, r);
                return Err(EINVAL);
            }
        }
        // SAFETY: called once, from module init.
        let rc = unsafe { ffi::svm_glue_init() };
        if rc != 0 {
            return Err(Error::from_errno(rc));
        }
        pr_info!("loaded\n");
        Ok(SvmAccel)
    }
}

impl Drop for SvmAccel {
    fn drop(&mut self) {
        // SAFETY: init succeeded; no file is open (the fops hold a module reference).
        unsafe { ffi::svm_glue_exit() };
        let t = kplat::TABLES_LIVE.load(core::sync::atomic::Ordering::Relaxed);
        let d = kplat::DMA_LIVE.load(core::sync::atomic::Ordering::Relaxed);
        if t != 0 || d != 0 {
            pr_err!(
                "BUG: unloaded with {} page-table pages and {} DMA mappings live\n",
                t,
                d
            );
        } else {
            pr_info!("unloaded, no page-table page or DMA mapping left\n");
        }
    }
}
