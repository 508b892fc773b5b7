// SPDX-License-Identifier: GPL-2.0
//! The software device's TLB (`DeviceTlb`) and its access cursor.

use super::{KGuard, KLock, KMem};
use crate::engine::leaf_pfn;
use crate::ffi;
use crate::pgtable::{Errno, PageTable, X86Format};
use crate::platform::DeviceTlb;
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::prelude::*;

/// Entries of the device TLB.
pub const TLB_ENTRIES: usize = 16;

#[derive(Clone, Copy)]
struct TlbEntry {
    /// First VA the entry maps; `shift == 0` marks an empty entry.
    base: u64,
    shift: u32,
    write: bool,
    /// pfn of the first 4 KiB page (the leaf's `aux`: page, or 2 MiB folio head).
    pfn: u64,
}

/// What the TLB lock protects.
pub struct TlbState {
    e: [TlbEntry; TLB_ENTRIES],
    next: usize,
}

/// The device TLB: entries behind a spinlock that the device also holds across every memory
/// access it makes (translation, `kmap_local_page()`, the access, `kunmap_local()`), so
/// [`DeviceTlb::flush`], which takes it, returns only once no access can still use a dropped
/// entry or a page-table page read before the zap. It never sleeps (`flush_may_sleep` is
/// false), so even the OOM reaper's non-blockable callback can flush.
pub struct KTlb {
    inner: KLock<TlbState>,
    /// Translations served from an entry.
    pub hits: AtomicU64,
    /// Translations that walked the page table.
    pub misses: AtomicU64,
}

impl KTlb {
    /// An empty TLB.
    pub fn new() -> Result<Self, Errno> {
        let empty = TlbEntry {
            base: 0,
            shift: 0,
            write: false,
            pfn: 0,
        };
        Ok(KTlb {
            inner: KLock::new_spin(
                TlbState {
                    e: [empty; TLB_ENTRIES],
                    next: 0,
                },
                ffi::LC_TLB,
            )?,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    /// Locks the TLB for one device access (see [`TlbCursor`]).
    pub fn begin(&self) -> TlbCursor<'_> {
        TlbCursor {
            tlb: self,
            g: self.inner.lock(),
        }
    }
}

impl DeviceTlb for KTlb {
    fn flush(&self, start: u64, end: u64) {
        let mut g = self.inner.lock();
        for e in g.e.iter_mut() {
            if e.shift != 0 && e.base < end && start < e.base + (1u64 << e.shift) {
                e.shift = 0;
            }
        }
    }

    fn flush_may_sleep(&self) -> bool {
        false
    }
}

/// The device's view while it holds the TLB lock: translations made through it stay valid
/// until it is dropped (a flush waits for the lock).
pub struct TlbCursor<'a> {
    tlb: &'a KTlb,
    g: KGuard<'a, TlbState>,
}

impl TlbCursor<'_> {
    /// The pfn of the 4 KiB page holding `va`, if the device may access it (`write`: for
    /// writing), by a page-table walk that bypasses and does not fill the TLB: the access
    /// path of a copy engine without a TLB (the dmirror front end). Holding the TLB lock is
    /// what makes it safe: a flush, which follows every zap, waits for the lock, so the leaf
    /// read here cannot be released while the caller still uses the page.
    pub fn walk(&mut self, pt: &PageTable<X86Format, KMem>, va: u64, write: bool) -> Option<u64> {
        let t = pt.translate(va)?;
        if write && !t.perm.write {
            return None;
        }
        let span = if t.level == 1 { 1u64 << 21 } else { 1u64 << 12 };
        Some(leaf_pfn(t.aux) + ((va & (span - 1)) >> 12))
    }

    /// The pfn of the 4 KiB page holding `va`, if the device may access it (`write`: for
    /// writing): from a TLB entry, else by walking `pt` and caching the leaf. `None` is a
    /// device fault (no leaf, or a read-only leaf for a write).
    pub fn translate(
        &mut self,
        pt: &PageTable<X86Format, KMem>,
        va: u64,
        write: bool,
    ) -> Option<u64> {
        for e in self.g.e.iter() {
            if e.shift != 0 && e.base <= va && va < e.base + (1u64 << e.shift) {
                if write && !e.write {
                    // Maybe upgraded since: walk again.
                    break;
                }
                self.tlb.hits.fetch_add(1, Ordering::Relaxed);
                return Some(e.pfn + ((va - e.base) >> 12));
            }
        }
        self.tlb.misses.fetch_add(1, Ordering::Relaxed);
        let t = pt.translate(va)?;
        if write && !t.perm.write {
            return None;
        }
        let shift = if t.level == 1 { 21 } else { 12 };
        let base = va & !((1u64 << shift) - 1);
        let st = &mut *self.g;
        // Replace an entry for the same span, else round-robin.
        let slot =
            st.e.iter()
                .position(|e| e.shift != 0 && e.base <= va && va < e.base + (1u64 << e.shift))
                .unwrap_or_else(|| {
                    let s = st.next;
                    st.next = (s + 1) % TLB_ENTRIES;
                    s
                });
        st.e[slot] = TlbEntry {
            base,
            shift,
            write: t.perm.write,
            pfn: leaf_pfn(t.aux),
        };
        Some(leaf_pfn(t.aux) + ((va - base) >> 12))
    }
}
