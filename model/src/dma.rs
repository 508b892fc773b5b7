//! The DMA tracker: the IOMMU's view of `dma_map_page()` / `dma_unmap_page()`.
//!
//! Addresses come from a bump allocator above `1 << 40`, aligned to the mapping size and never
//! reused, so a device access through a stale address can always be told from a live one.
//! Every misuse (mapping a freed page, unmapping twice, unmapping with another size or page,
//! `set_page_dirty()` of a freed page) is recorded in the [`Violations`] log.
//!
//! The tracker's own lock is a `std` mutex (an IOMMU update is atomic for the device); it is
//! taken after the machine lock when both are needed, never before.

use crate::lockdep;
use crate::mm::state::{HPAGE_NR, PAGE_SIZE};
use crate::mm::{Machine, MmHandle};
use crate::tablemem::POISON_DMA;
use crate::violations::Violations;
use pgtable::Errno;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// First DMA address handed out.
pub const DMA_BASE: u64 = 1 << 40;

/// A live DMA mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DmaMapping {
    /// The DMA address (aligned to the size).
    pub addr: u64,
    /// First page.
    pub pfn: u64,
    /// `PAGE_SIZE << order` bytes.
    pub order: u32,
    /// `DMA_BIDIRECTIONAL` (the device may write); else `DMA_TO_DEVICE` (it only reads).
    pub write: bool,
}

impl DmaMapping {
    /// Size in bytes.
    pub fn size(&self) -> u64 {
        PAGE_SIZE << self.order
    }
}

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DmaStats {
    /// `dma_map_page()` calls.
    pub maps: u64,
    /// Successful `dma_unmap_page()` calls.
    pub unmaps: u64,
    /// Live mappings now.
    pub live: u64,
    /// `set_page_dirty()` calls.
    pub dirtied: u64,
}

pub(crate) struct State {
    next: u64,
    live: BTreeMap<u64, DmaMapping>,
    /// Live device-writable mappings per first pfn: `CONFIG_DMA_API_DEBUG`'s active-cacheline
    /// overlap count (it tracks the mapping's first cacheline, and skips `DMA_TO_DEVICE`).
    writable_overlap: std::collections::HashMap<u64, u32, crate::inthash::IntBuild>,
    /// Live 4 KiB mappings per page, and 2 MiB mappings per head page ([`DmaWatch`]; a
    /// 2 MiB mapping of an unaligned pfn is a violation of its own).
    pages: std::collections::HashMap<u64, u32, crate::inthash::IntBuild>,
    huge: std::collections::HashMap<u64, u32, crate::inthash::IntBuild>,
}

impl State {
    /// The live mapping containing `addr`.
    pub fn find(&self, addr: u64) -> Option<DmaMapping> {
        let (_, m) = self.live.range(..=addr).next_back()?;
        (addr < m.addr + m.size()).then_some(*m)
    }
}

/// A machine's handle on one of its DMA trackers, to check each page it frees. DMA mappings
/// hold no page reference (hmm does not pin), so a page freed while one exists is one the
/// device can still reach: the invalidation before the free returned without releasing it.
/// Reported when the page is freed, long before a device access or a `set_page_dirty()`
/// could notice.
pub(crate) struct DmaWatch(std::sync::Weak<Inner>);

impl DmaWatch {
    /// Called by the machine (its lock held) as it frees `pfn`. Returns whether the tracker
    /// still exists.
    pub(crate) fn check_free(&self, pfn: u64) -> bool {
        let Some(t) = self.0.upgrade() else {
            return false;
        };
        let n = {
            let st = t.st.lock().unwrap_or_else(|e| e.into_inner());
            st.pages.get(&pfn).copied().unwrap_or(0)
                + st.huge.get(&(pfn & !(HPAGE_NR - 1))).copied().unwrap_or(0)
        };
        if n > 0 {
            t.violations.record(
                "I4",
                format!("pfn {pfn:#x} freed with {n} DMA mapping(s) of it live: its invalidation returned without releasing them"),
            );
        }
        true
    }
}

struct Inner {
    st: Mutex<State>,
    /// Place 2 MiB mappings off a 2 MiB boundary, as swiotlb bouncing or an IOMMU with a
    /// smaller IOVA alignment may.
    misalign_huge: std::sync::atomic::AtomicBool,
    machine: Arc<Machine>,
    violations: Violations,
    maps: AtomicU64,
    unmaps: AtomicU64,
    dirtied: AtomicU64,
}

/// The DMA tracker (cloneable handle).
#[derive(Clone)]
pub struct DmaTracker(Arc<Inner>);

impl DmaTracker {
    /// A tracker for the device that mirrors `mm` (it checks pages on `mm`'s machine).
    pub fn new(mm: &MmHandle, violations: Violations) -> Self {
        let t = DmaTracker(Arc::new(Inner {
            st: Mutex::new(State {
                next: DMA_BASE,
                live: BTreeMap::new(),
                writable_overlap: Default::default(),
                pages: Default::default(),
                huge: Default::default(),
            }),
            misalign_huge: std::sync::atomic::AtomicBool::new(false),
            machine: mm.0.machine.clone(),
            violations,
            maps: AtomicU64::new(0),
            unmaps: AtomicU64::new(0),
            dirtied: AtomicU64::new(0),
        }));
        mm.0.machine
            .st
            .lock()
            .dma_watch
            .push(DmaWatch(Arc::downgrade(&t.0)));
        t
    }

    /// From now on, place 2 MiB mappings 4 KiB off a 2 MiB boundary (`on`), or aligned.
    pub fn set_misalign_huge(&self, on: bool) {
        self.0.misalign_huge.store(on, Ordering::Relaxed);
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.0.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The IOMMU view: the page `addr` reaches through a live mapping.
    pub fn resolve(&self, addr: u64) -> Option<u64> {
        let m = self.lock().find(addr)?;
        Some(m.pfn + (addr - m.addr) / PAGE_SIZE)
    }

    /// The live mapping containing `addr`.
    pub fn lookup(&self, addr: u64) -> Option<DmaMapping> {
        self.lock().find(addr)
    }

    /// Live mappings now.
    pub fn live(&self) -> usize {
        self.lock().live.len()
    }

    /// Every live mapping (after teardown: leaks).
    pub fn leaks(&self) -> Vec<DmaMapping> {
        self.lock().live.values().copied().collect()
    }

    /// Counters.
    pub fn stats(&self) -> DmaStats {
        DmaStats {
            maps: self.0.maps.load(Ordering::Relaxed),
            unmaps: self.0.unmaps.load(Ordering::Relaxed),
            live: self.live() as u64,
            dirtied: self.0.dirtied.load(Ordering::Relaxed),
        }
    }

    /// The violation log.
    pub fn violations(&self) -> &Violations {
        &self.0.violations
    }
}

impl svm::platform::Dma for DmaTracker {
    fn map(&self, pfn: u64, order: u32, write: bool) -> Result<u64, Errno> {
        lockdep::check_dma_map();
        if order != 0 && order != 9 {
            self.0.violations.record(
                "I4",
                format!("dma_map_page() of order {order} (only 0 and 9 exist here)"),
            );
            return Err(Errno::EINVAL);
        }
        let n = 1u64 << order;
        {
            let m = self.0.machine.st.lock();
            if order == 9 && !pfn.is_multiple_of(HPAGE_NR) {
                self.0.violations.record(
                    "I4",
                    format!("2 MiB dma_map_page() of unaligned pfn {pfn:#x}"),
                );
            }
            if let Some(dead) = (pfn..pfn + n).find(|p| !m.alive(*p)) {
                self.0.violations.record("I4", format!("dma_map_page() of pfn {pfn:#x} order {order}: pfn {dead:#x} is not a live page"));
            }
        }
        self.0.maps.fetch_add(1, Ordering::Relaxed);
        let size = PAGE_SIZE << order;
        let mut st = self.lock();
        let mut addr = (st.next + size - 1) & !(size - 1);
        if order != 0 && self.0.misalign_huge.load(Ordering::Relaxed) {
            addr += PAGE_SIZE;
        }
        // Never collide with the poison address of freed page tables.
        debug_assert!(addr > POISON_DMA);
        st.next = addr + size;
        let per = if order == 0 {
            &mut st.pages
        } else {
            &mut st.huge
        };
        *per.entry(pfn).or_insert(0) += 1;
        st.live.insert(
            addr,
            DmaMapping {
                addr,
                pfn,
                order,
                write,
            },
        );
        if write {
            // dma-debug's ACTIVE_CACHELINE_MAX_OVERLAP: more than 7 device-writable mappings of
            // one cacheline at once WARNs ("potentially leaking dma-mappings"): a page the
            // device may only read (the zero page, a KSM page) must be mapped DMA_TO_DEVICE.
            let n = st.writable_overlap.entry(pfn).or_insert(0);
            *n += 1;
            if *n > 8 {
                let n = *n;
                drop(st);
                self.0.violations.record(
                    "I4",
                    format!("DMA-API: exceeded 7 overlapping mappings of pfn {pfn:#x} ({n} device-writable mappings)"),
                );
            }
        }
        Ok(addr)
    }

    fn unmap(&self, addr: u64, pfn: u64, order: u32, write: bool) {
        let mut st = self.lock();
        match st.live.get(&addr).copied() {
            None => {
                drop(st);
                self.0.violations.record(
                    "I4",
                    format!("dma_unmap_page({addr:#x}, pfn {pfn:#x}, order {order}) of an address not mapped (double unmap?)"),
                );
            }
            Some(m) if m.pfn != pfn || m.order != order || m.write != write => {
                drop(st);
                self.0.violations.record(
                    "I4",
                    format!(
                        "dma_unmap_page({addr:#x}) with pfn {pfn:#x} order {order} write {write}, mapped as pfn {:#x} order {} write {}",
                        m.pfn, m.order, m.write
                    ),
                );
            }
            Some(m) => {
                st.live.remove(&addr);
                let per = if m.order == 0 {
                    &mut st.pages
                } else {
                    &mut st.huge
                };
                if let Some(k) = per.get_mut(&m.pfn) {
                    *k -= 1;
                    if *k == 0 {
                        per.remove(&m.pfn);
                    }
                }
                if m.write {
                    if let Some(n) = st.writable_overlap.get_mut(&m.pfn) {
                        *n -= 1;
                        if *n == 0 {
                            st.writable_overlap.remove(&m.pfn);
                        }
                    }
                }
                self.0.unmaps.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn set_dirty(&self, pfn: u64) {
        self.0.dirtied.fetch_add(1, Ordering::Relaxed);
        let mut m = self.0.machine.st.lock();
        if !m.alive(pfn) {
            drop(m);
            self.0.violations.record(
                "I3",
                format!("set_page_dirty() of pfn {pfn:#x}, already freed"),
            );
            return;
        }
        m.mark_dirty(pfn);
    }
}
