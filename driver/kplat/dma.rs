// SPDX-License-Identifier: GPL-2.0
//! DMA mapping for the device (`Dma`): per device leaf, or through the module's shared DMA
//! cache (`dma_share`).

use super::DMA_LIVE;
use crate::dmacache;
use crate::ffi;
use crate::pgtable::Errno;
use crate::platform::Dma;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicI64, Ordering};
use kernel::prelude::*;

/// DMA against the platform device (`struct device`, referenced for our lifetime).
pub struct KDma {
    dev: NonNull<ffi::Device>,
    live: AtomicI64,
    /// Mappings go through [`dmacache`] (one per page, shared by its aliases); else one per
    /// device leaf. Fixed for the context's life, so every unmap matches its map.
    share: bool,
}

// SAFETY: the DMA API may be used from any thread.
unsafe impl Send for KDma {}
// SAFETY: as above.
unsafe impl Sync for KDma {}

impl KDma {
    /// # Safety
    /// `dev` is a live device.
    pub unsafe fn new(dev: *mut ffi::Device) -> Result<Self, Errno> {
        // SAFETY: live device, per the caller.
        let dev = unsafe { ffi::svm_get_device(dev) };
        Ok(KDma {
            dev: NonNull::new(dev).ok_or(Errno::EINVAL)?,
            live: AtomicI64::new(0),
            // SAFETY: no preconditions.
            share: unsafe { ffi::svm_dma_share() },
        })
    }

    /// Mappings held now.
    pub fn live(&self) -> i64 {
        self.live.load(Ordering::Relaxed)
    }
}

impl Drop for KDma {
    fn drop(&mut self) {
        let live = self.live.load(Ordering::Relaxed);
        if live != 0 {
            pr_err!("BUG: context dropped with {} DMA mappings\n", live);
        }
        // SAFETY: the reference taken in `new`.
        unsafe { ffi::svm_put_device(self.dev.as_ptr()) };
    }
}

impl Dma for KDma {
    fn map(&self, pfn: u64, order: u32, write: bool) -> Result<u64, Errno> {
        let dev = self.dev.as_ptr();
        let a = if self.share {
            // SAFETY: `pfn` is a page hmm just returned, under the range lock (engine
            // contract); the device is live (referenced for our lifetime).
            unsafe { dmacache::get().map(dev, pfn, order, write)? }
        } else {
            let mut err = 0;
            // SAFETY: as above.
            let a = unsafe { ffi::svm_dma_map(dev, pfn, order, write, &mut err) };
            if err != 0 {
                return Err(Errno::ENOMEM);
            }
            a
        };
        self.live.fetch_add(1, Ordering::Relaxed);
        DMA_LIVE.fetch_add(1, Ordering::Relaxed);
        Ok(a)
    }

    fn unmap(&self, addr: u64, pfn: u64, order: u32, write: bool) {
        let dev = self.dev.as_ptr();
        // SAFETY: `addr` came from `map` of `pfn` with this order and direction (in the same
        // mode: `share` never changes), unmapped once, after the flush of its leaf (engine
        // contract).
        unsafe {
            if self.share {
                dmacache::get().unmap(dev, addr, pfn, order, write);
            } else {
                ffi::svm_dma_unmap(dev, addr, order, write);
            }
        }
        self.live.fetch_sub(1, Ordering::Relaxed);
        DMA_LIVE.fetch_sub(1, Ordering::Relaxed);
    }

    fn set_dirty(&self, pfn: u64) {
        // SAFETY: the page is still mapped by the CPU (called from the notifier, before the
        // core frees it).
        unsafe { ffi::svm_set_page_dirty(pfn) };
    }
}
