// SPDX-License-Identifier: GPL-2.0
//! svm_accel: a sample DRM accel driver (/dev/accel/accelN) whose software device shares the
//! address space of the process that binds it, through the svm engine.
//!
//! This crate root compiles the *same* engine sources as the Cargo workspace (`svm/src`,
//! `pgtable/src`), pulled in with `#[path]` at crate-root level because the shared files name
//! their siblings `super::engine`, `super::pgtable`, ... The kernel platform is
//! `kplat/` over the C glue (`glue.c`); the device and the ioctls are `device/`.
//! See Documentation/kernel.rst.

// The shared files' `pub` items are reachable only inside this crate, and the module uses a
// subset of the engine's API; `cfg(loom)` and the `teeth-*` features are never set here.
#![allow(unreachable_pub, dead_code, unexpected_cfgs, missing_docs)]
#![allow(clippy::all)]

use kernel::prelude::*;

#[path = "../svm/src/config.rs"]
mod config;
#[path = "../svm/src/devtlb.rs"]
mod devtlb;
#[path = "../svm/src/engine.rs"]
mod engine;
#[path = "../svm/src/exclusive.rs"]
mod exclusive;
#[path = "../svm/src/fault.rs"]
mod fault;
#[path = "../svm/src/gc.rs"]
mod gc;
#[path = "../svm/src/invalidate.rs"]
mod invalidate;
#[path = "../svm/src/migrate.rs"]
mod migrate;
#[path = "../svm/src/platform.rs"]
mod platform;
#[path = "../svm/src/policy.rs"]
mod policy;
#[path = "../svm/src/range.rs"]
mod range;
#[path = "../svm/src/serial.rs"]
mod serial;
#[path = "../svm/src/stats.rs"]
mod stats;
#[path = "../svm/src/sync.rs"]
mod sync;
#[path = "../svm/src/trace.rs"]
mod trace;
#[path = "../svm/src/userq.rs"]
mod userq;

mod pgtable;

mod binding;
mod device;
mod dmacache;
mod dmirror;
mod ffi;
mod kplat;
mod uapi;
mod work;

module! {
    type: SvmAccel,
    name: "svm_accel",
    author: "svm",
    description: "svm shared-virtual-memory sample DRM accel driver",
    license: "GPL",
}

struct SvmAccel;

/// What the Rust side hard-codes for each entry of glue.c's `svm_abi` (glue.h's
/// `enum svm_abi_idx` order). glue.c static_asserts the kernel's headers against the same
/// values at compile time; init compares both tables, so a change on either side alone
/// refuses to load instead of misreading hmm's pfns or a user's struct.
const RUST_ABI: [(u64, &str); ffi::ABI_NR] = {
    use core::mem::size_of;
    use platform::*;
    [
        (HMM_PFN_VALID, "HMM_PFN_VALID"),
        (HMM_PFN_WRITE, "HMM_PFN_WRITE"),
        (HMM_PFN_ERROR, "HMM_PFN_ERROR"),
        (HMM_PFN_ORDER_SHIFT as u64, "HMM_PFN_ORDER_SHIFT"),
        (HMM_PFN_FLAGS, "HMM_PFN_FLAGS"),
        (HMM_PFN_REQ_FAULT, "HMM_PFN_REQ_FAULT"),
        (HMM_PFN_REQ_WRITE, "HMM_PFN_REQ_WRITE"),
        (size_of::<uapi::Bind>() as u64, "bind size"),
        (size_of::<uapi::Op>() as u64, "op size"),
        (size_of::<uapi::Submit>() as u64, "submit size"),
        (size_of::<uapi::Prefetch>() as u64, "prefetch size"),
        (size_of::<uapi::Query>() as u64, "query size"),
        (uapi::OP_RESULT_OFFSET as u64, "op result offset"),
        (uapi::MAX_OPS as u64, "SVM_ACCEL_MAX_OPS"),
        (size_of::<dmirror::Cmd>() as u64, "dmirror cmd size"),
        (dmirror::NR_READ as u64, "HMM_DMIRROR_READ"),
        (dmirror::NR_WRITE as u64, "HMM_DMIRROR_WRITE"),
        (dmirror::NR_MIGRATE_TO_DEV as u64, "MIGRATE_TO_DEV"),
        (dmirror::NR_MIGRATE_TO_SYS as u64, "MIGRATE_TO_SYS"),
        (dmirror::NR_SNAPSHOT as u64, "HMM_DMIRROR_SNAPSHOT"),
        (dmirror::NR_EXCLUSIVE as u64, "HMM_DMIRROR_EXCLUSIVE"),
        (dmirror::NR_CHECK_EXCLUSIVE as u64, "CHECK_EXCLUSIVE"),
        (dmirror::NR_RELEASE as u64, "HMM_DMIRROR_RELEASE"),
        (dmirror::PROT_ERROR as u64, "PROT_ERROR"),
        (dmirror::PROT_NONE as u64, "PROT_NONE"),
        (dmirror::PROT_READ as u64, "PROT_READ"),
        (dmirror::PROT_WRITE as u64, "PROT_WRITE"),
        (dmirror::PROT_PMD as u64, "PROT_PMD"),
        (dmirror::PROT_PUD as u64, "PROT_PUD"),
        (dmirror::PROT_ZERO as u64, "PROT_ZERO"),
        (size_of::<uapi::QEntry>() as u64, "qentry size"),
        (size_of::<uapi::CreateQueue>() as u64, "create_queue size"),
        (size_of::<uapi::DestroyQueue>() as u64, "destroy_queue size"),
        (size_of::<uapi::Wait>() as u64, "wait size"),
        (uapi::MAX_QUEUES as u64, "SVM_ACCEL_MAX_QUEUES"),
        (uapi::MAX_RING as u64, "SVM_ACCEL_MAX_RING"),
        (uapi::QUEUE_ACTIVE as u64, "SVM_ACCEL_QUEUE_ACTIVE"),
        (uapi::QUEUE_ERROR as u64, "SVM_ACCEL_QUEUE_ERROR"),
        (uapi::QUEUE_SUSPENDED as u64, "SVM_ACCEL_QUEUE_SUSPENDED"),
    ]
};

/// The address bits a leaf of the device's PTE format holds (52 for x86-64): the widest
/// DMA address the device can be given. Read off the format itself, by encoding an all-ones
/// address and decoding what survived.
fn pte_addr_bits<F: pgtable::PteFormat>() -> u32 {
    match F::decode(F::leaf(!0xfff, pgtable::Perm::RO, 0), 0) {
        pgtable::Entry::Leaf { addr, .. } => 64 - addr.leading_zeros(),
        _ => 0,
    }
}

impl kernel::Module for SvmAccel {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        // SAFETY: a constant array of the glue.
        let c_abi = unsafe { &ffi::svm_abi };
        let mut bad = false;
        for (&c, &(r, what)) in c_abi.iter().zip(RUST_ABI.iter()) {
            if c != r {
                pr_err!(
                    "ABI mismatch: {} is {:#x} in the kernel headers, {:#x} in Rust\n",
                    what,
                    c,
                    r
                );
                bad = true;
            }
        }
        // SAFETY: no preconditions.
        let c_gfp = unsafe { ffi::svm_gfp() };
        if c_gfp != kplat::GFP_RAW {
            pr_err!(
                "ABI mismatch: allocation flags {:#x} in the glue, {:#x} in Rust\n",
                c_gfp,
                kplat::GFP_RAW
            );
            bad = true;
        }
        if bad {
            return Err(EINVAL);
        }
        let dma_bits = pte_addr_bits::<<kplat::KPlat as platform::Platform>::Fmt>();
        // Before any device file can open: the shared DMA mapping table, and the registry of
        // open files, which unplug walks.
        dmacache::init().map_err(|e| Error::from_errno(-e.0))?;
        if let Err(e) = device::registry_init() {
            dmacache::exit();
            return Err(Error::from_errno(-e.0));
        }
        // SAFETY: no preconditions.
        let (dm_mib, accel_mib, accels) = unsafe {
            (
                ffi::svm_dm_devmem_mib(),
                ffi::svm_accel_devmem_mib(),
                ffi::svm_accel_devices(),
            )
        };
        if let Err(e) = device::devmem_init(dm_mib, accel_mib, accels as usize) {
            device::devmem_exit();
            device::registry_free();
            dmacache::exit();
            return Err(Error::from_errno(-e.0));
        }
        // SAFETY: called once, from module init.
        let rc = unsafe { ffi::svm_glue_init(dma_bits) };
        if rc != 0 {
            device::devmem_exit();
            device::registry_free();
            dmacache::exit();
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
        device::devmem_exit();
        device::registry_free();
        dmacache::exit();
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
