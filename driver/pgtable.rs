// SPDX-License-Identifier: GPL-2.0
//! The page table inside the module: the same files as the `pgtable` crate
//! (pgtable/src/lib.rs), declared here without its crate attributes, because
//! the shared engine files name it `super::pgtable::...`. `#[path]` is
//! relative to this file's directory.

// Re-exported as pgtable/src/lib.rs does, whether or not the module uses them.
#![allow(unused_imports)]

#[path = "../pgtable/src/errno.rs"]
pub mod errno;
#[path = "../pgtable/src/format.rs"]
pub mod format;
#[path = "../pgtable/src/lock.rs"]
pub mod lock;
#[path = "../pgtable/src/table.rs"]
pub mod table;

pub use errno::Errno;
pub use format::{Entry, Gfx9Format, Perm, PteFormat, X86Format};
pub use lock::{Lock, LockClass, LockFamily, RwLock};
pub use table::{
    AuxTable, Census, Conflict, Deferred, Flush, HwTable, Leaf, LeafTable, MapError, NewLeaf,
    PageTable, PtMem, Table, Translation,
};
