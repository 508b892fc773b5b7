//! svm: the shared-virtual-memory mirroring engine.
//!
//! A device faults on a virtual address; the engine services it with `hmm_range_fault()`,
//! maps each page with `dma_map_page()` and writes the device page table. When the CPU mm
//! changes, the range's `mmu_interval_notifier` callback zaps the device leaves, flushes the
//! device TLB and unmaps the DMA before it returns. See `Documentation/design.rst`.
//!
//! `core` only, no `alloc`: every kernel service comes through [`platform::Platform`]. The
//! files below are also compiled inside the kernel module (pulled in with `#[path]`); they
//! refer to each other and to `pgtable` with `super::`, and hold no crate attributes.
#![no_std]

extern crate pgtable;

pub mod config;
pub mod devtlb;
pub mod engine;
mod exclusive;
mod fault;
mod gc;
mod invalidate;
pub mod migrate;
pub mod platform;
pub mod policy;
mod range;
mod serial;
pub mod stats;
mod sync;
pub mod trace;
pub mod userq;

pub use config::{Config, LockScope};
pub use engine::{leaf_pfn, Access, DeviceFault, Engine, Parts, RangeInfo, Scratch};
pub use migrate::{migrate_to_ram, Place};
pub use platform::Platform;
pub use stats::Stats;
