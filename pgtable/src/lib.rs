//! A page-centric multi-level GPU page table: pluggable PTE formats, per-table locks, 2 MiB
//! leaves, a lock-free device walk, and two-phase leaf release for DMA safety.
//!
//! `core` only, no `alloc`: memory and locks come from the platform through [`table::PtMem`] and
//! [`lock::LockFamily`]. The files below are also compiled inside the kernel module (pulled in
//! with `#[path]`), so they refer to each other with `super::` and hold no crate attributes.
#![no_std]

pub mod errno;
pub mod format;
pub mod lock;
pub mod table;

pub use errno::Errno;
pub use format::{Entry, Gfx9Format, Perm, PteFormat, X86Format};
pub use lock::{Lock, LockClass, LockFamily, RwLock};
pub use table::{
    AuxTable, Census, Conflict, Deferred, Flush, HwTable, Leaf, LeafTable, MapError, NewLeaf,
    PageTable, PtMem, Table, Translation,
};

#[cfg(test)]
mod tests;
