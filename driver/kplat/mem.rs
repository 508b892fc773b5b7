// SPDX-License-Identifier: GPL-2.0
//! Page-table memory (`PtMem`).

use super::{KSpin, GFP, TABLES_LIVE};
use crate::ffi;
use crate::pgtable::{AuxTable, Errno, HwTable, PtMem, Table};
use core::ptr::NonNull;
use core::sync::atomic::Ordering;
use kernel::prelude::*;

/// The page table's lock type (a spinlock: `LockClass::Table`).
pub type TableLock = KSpin<()>;

/// Page-table memory: each table is an order-0 page of hardware entries (what the device
/// walks, by physical address), an order-0 page of software words, and a small kmalloc'd node
/// holding the lock and both pages' addresses. The hardware page's `struct page` keeps the
/// node's address in `private`, so a walk goes from a link (a physical address) to the node.
/// About 8.1 KiB per table, 4.05 MiB per mirrored GiB at 4 KiB pages.
pub struct KMem;

impl KMem {
    /// Bytes one table costs in page allocations (its node is counted by the slab).
    pub const PAGE_BYTES: usize = 2 * PAGE_SIZE;
}

const PAGE_SIZE: usize = 4096;

fn free_pages_of(hw: NonNull<HwTable>, aux: NonNull<AuxTable>) {
    // SAFETY: both came from `svm_table_alloc(PAGE_SIZE)` and nothing uses them any more.
    unsafe {
        ffi::svm_page_set_private(hw.as_ptr().cast(), 0);
        ffi::svm_table_free(hw.as_ptr().cast(), PAGE_SIZE);
        ffi::svm_table_free(aux.as_ptr().cast(), PAGE_SIZE);
    }
}

// SAFETY: tables stay valid until `free`; `pa` is the hardware page's physical address and
// `va` reads the node from that page's `struct page`, where `alloc` stored it.
unsafe impl PtMem for KMem {
    type Lock = TableLock;

    fn alloc(&self) -> Result<NonNull<Table<TableLock>>, Errno> {
        // SAFETY: plain page allocations (may sleep: never called under an engine lock).
        let (hw, aux) = unsafe {
            (
                ffi::svm_table_alloc(PAGE_SIZE) as *mut HwTable,
                ffi::svm_table_alloc(PAGE_SIZE) as *mut AuxTable,
            )
        };
        let (hw, aux) = match (NonNull::new(hw), NonNull::new(aux)) {
            (Some(hw), Some(aux)) => (hw, aux),
            (hw, aux) => {
                for p in [hw.map(NonNull::cast), aux.map(NonNull::cast)]
                    .into_iter()
                    .flatten()
                {
                    // SAFETY: allocated above, never shared.
                    unsafe { ffi::svm_table_free(p.as_ptr(), PAGE_SIZE) };
                }
                return Err(Errno::ENOMEM);
            }
        };
        let mut slot = match KBox::<Table<TableLock>>::new_uninit(GFP) {
            Ok(b) => b,
            Err(_) => {
                free_pages_of(hw, aux);
                return Err(Errno::ENOMEM);
            }
        };
        // SAFETY: a fresh node the box keeps in place; two fresh pages, ours alone until
        // `free`.
        if let Err(e) = unsafe { Table::init(slot.as_mut_ptr(), hw, aux) } {
            free_pages_of(hw, aux);
            return Err(e);
        }
        // SAFETY: initialised just above.
        let node = KBox::into_raw(unsafe { slot.assume_init() });
        // SAFETY: `hw` is a page of ours; its `private` is ours to use until it is freed.
        unsafe { ffi::svm_page_set_private(hw.as_ptr().cast(), node as usize) };
        TABLES_LIVE.fetch_add(1, Ordering::Relaxed);
        // SAFETY: `into_raw` never returns null.
        Ok(unsafe { NonNull::new_unchecked(node) })
    }

    unsafe fn free(&self, t: NonNull<Table<TableLock>>) {
        // SAFETY: `t` came from `alloc` (a `KBox`) and is unreachable (caller contract): drop
        // the node (frees its lock), then its pages.
        let node = unsafe { KBox::from_raw(t.as_ptr()) };
        let (hw, aux) = (node.hw_page(), node.aux_page());
        drop(node);
        free_pages_of(hw, aux);
        TABLES_LIVE.fetch_sub(1, Ordering::Relaxed);
    }

    fn pa(&self, t: NonNull<Table<TableLock>>) -> u64 {
        // SAFETY: `t` is live (trait contract); its hardware page is in the direct map.
        unsafe { ffi::svm_virt_to_phys(t.as_ref().hw_page().as_ptr().cast()) }
    }

    unsafe fn va(&self, pa: u64) -> NonNull<Table<TableLock>> {
        // SAFETY: `pa` is the hardware page of a live table (caller contract), whose
        // `private` holds its node.
        let p = unsafe { ffi::svm_phys_page_private(pa) } as *mut Table<TableLock>;
        // SAFETY: set to the node (non-null) by `alloc` and kept until `free`.
        unsafe { NonNull::new_unchecked(p) }
    }
}
