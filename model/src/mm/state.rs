//! The simulated machine: physical frames (with refcounts through a reverse map), swap slots,
//! and every mm's VMAs and CPU page table. One mutex protects all of it (the model's stand-in
//! for the page-table locks, the LRU and the swap-cache locks): one loom sync point per
//! operation, and a single place where a device access can compare what it reached with what
//! the CPU maps.
//!
//! Everything here runs with that mutex held and never calls out.

use crate::dma::DmaWatch;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::hash::BuildHasherDefault;

/// A deterministic hash map (loom replays need a stable iteration order) with a fast hash for
/// the integer keys the model uses.
pub(crate) type DetMap<K, V> = HashMap<K, V, BuildHasherDefault<U64Hasher>>;

/// Fibonacci hashing of integer keys (deterministic, no per-process seed).
#[derive(Default, Clone, Copy)]
pub(crate) struct U64Hasher(u64);

impl std::hash::Hasher for U64Hasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(*b as u64);
        }
    }

    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// Base page size.
pub const PAGE_SIZE: u64 = 4096;
/// PMD-mapped THP size.
pub const HPAGE_SIZE: u64 = 2 << 20;
/// Pages per THP.
pub const HPAGE_NR: u64 = HPAGE_SIZE / PAGE_SIZE;
/// The shared zero page (`ZERO_PAGE(0)`): read-only, data 0, never freed.
pub const ZERO_PFN: u64 = 0x10;
/// First pfn of the huge zero folio (`huge_zero_folio`, 512 pages, order 9).
pub const HUGE_ZERO_PFN: u64 = 0x200;
/// First pfn handed out by the frame allocator.
pub const FIRST_PFN: u64 = 0x1000;
/// The data word of a freed frame.
pub const POISON: u64 = 0xdead_dead_dead_dead;
/// Dead frame records kept before their slot in the frame map is dropped (pfns are never
/// reused, so a dropped record still reads as "freed").
const FRAME_QUARANTINE: usize = 1 << 16;

/// An mm's identity within the machine.
pub(crate) type MmId = u64;

/// Whether `pfn` is the zero page or part of the huge zero folio.
pub fn is_zero_pfn(pfn: u64) -> bool {
    pfn == ZERO_PFN || (HUGE_ZERO_PFN..HUGE_ZERO_PFN + HPAGE_NR).contains(&pfn)
}

pub(crate) fn page_down(a: u64) -> u64 {
    a & !(PAGE_SIZE - 1)
}

pub(crate) fn huge_down(a: u64) -> u64 {
    a & !(HPAGE_SIZE - 1)
}

/// A VMA (`struct vm_area_struct`, private anonymous or `VM_IO | VM_PFNMAP`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Vma {
    pub end: u64,
    pub read: bool,
    pub write: bool,
    /// `VM_IO | VM_PFNMAP`: no `struct page` behind it.
    pub io: bool,
    /// `VM_HUGEPAGE`: THP on fault.
    pub thp: bool,
    /// `vma->anon_vma != NULL`: something was faulted in once (fork skips VMAs without).
    pub anon: bool,
    /// `migrate_vma_setup()` refuses it (`MapFlags::no_migrate`).
    pub no_migrate: bool,
}

impl Vma {
    fn same_flags(&self, o: &Vma) -> bool {
        self.read == o.read
            && self.write == o.write
            && self.io == o.io
            && self.thp == o.thp
            && self.no_migrate == o.no_migrate
    }
}

/// A present CPU PTE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Present {
    pub pfn: u64,
    pub writable: bool,
    /// Hardware dirty bit: set by CPU writes, never by the device.
    pub dirty: bool,
    /// false: `pte_protnone()` (PROT_NONE): mapped, but no access.
    pub accessible: bool,
}

/// A CPU PTE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pte {
    Present(Present),
    /// A swap entry; `exclusive` is `pte_swp_exclusive()`.
    Swap {
        slot: u64,
        exclusive: bool,
    },
    /// A device-private entry (`make_{readable,writable}_device_private_entry()`): the page
    /// is in a device's memory; a CPU access calls its owner's `migrate_to_ram`.
    Device {
        pfn: u64,
        writable: bool,
    },
    /// A migration entry `migrate_vma_setup()` left (`make_*_migration_entry()`): accesses
    /// wait until `migrate_vma_finalize()` puts a page back.
    Migration {
        pfn: u64,
        writable: bool,
    },
    /// A device-exclusive entry (`make_{readable,writable}_device_exclusive_entry()`): the
    /// page is handed over to a device for atomics; a CPU access takes it back.
    Exclusive {
        pfn: u64,
        writable: bool,
    },
}

/// A PMD mapping a whole 2 MiB folio (a THP, or the huge zero folio).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pmd {
    pub head: u64,
    pub writable: bool,
    pub dirty: bool,
    pub accessible: bool,
}

/// A physical page (`struct page` + the folio fields the model needs).
#[derive(Clone, Debug)]
pub(crate) struct Frame {
    pub data: u64,
    /// `PG_dirty` (set by `set_page_dirty()`, by PTE dirty bits transferred at unmap, by swap).
    pub dirty: bool,
    /// MADV_FREE'd (`!PG_swapbacked`).
    pub lazyfree: bool,
    pub alive: bool,
    /// `PageAnonExclusive`.
    pub exclusive: bool,
    /// Folio head pfn (== own pfn for an order-0 page).
    pub head: u64,
    /// Folio order (on the head: 0 or 9).
    pub order: u8,
    /// PTE mappings of this page: (mm, va).
    pub rmap: Vec<(MmId, u64)>,
    /// PMD mappings of the folio (head only): (mm, 2 MiB-aligned va).
    pub pmd_maps: Vec<(MmId, u64)>,
    /// The swap slot this page caches (`PG_swapcache`).
    pub swapcache: Option<u64>,
    /// A device-private page of this pgmap (a key of `MachineState::devpools`; 0: system
    /// memory). Its `pgmap->owner` is the pool's ([`MachineState::owner_of`]).
    pub owner: u64,
    /// References held besides the mappings (a migration's isolation, a new page's lock):
    /// the page is not freed while any is held.
    pub pins: u32,
}

/// A device's memory: a fixed number of device-private pages.
#[derive(Clone, Debug, Default)]
pub(crate) struct DevPool {
    /// `pgmap->owner`: shared by peers (devices whose memories reach each other).
    pub owner: u64,
    pub cap: usize,
    pub used: usize,
    /// Pages least recently used first (freed ones are dropped lazily): a page goes to the
    /// back when it is allocated and when a device fault maps it (`Devmem::touch`).
    pub lru: VecDeque<u64>,
}

/// A page a migration collected: every CPU mapping of it now holds a migration entry.
#[derive(Clone, Debug)]
pub(crate) struct Isolated {
    /// (mm, va, writable) of each mapping the migration replaced.
    pub mappers: Vec<(MmId, u64, bool)>,
}

/// A swap slot.
#[derive(Clone, Debug)]
pub(crate) struct Slot {
    pub data: u64,
    /// Swap PTEs referring to it (`swap_count()`).
    pub count: u64,
    /// The page caching it, if any.
    pub cache: Option<u64>,
}

/// One mm's VMAs and CPU page table.
#[derive(Default, Debug)]
pub(crate) struct MmState {
    pub vmas: BTreeMap<u64, Vma>,
    pub ptes: BTreeMap<u64, Pte>,
    pub pmds: BTreeMap<u64, Pmd>,
    /// 2 MiB blocks that have a PTE table (the kernel keeps them until `free_pgtables()`).
    pub tables: BTreeSet<u64>,
    /// `MMF_UNSTABLE`: the OOM reaper ran; new pages cannot be faulted in.
    pub unstable: bool,
    /// `exit_mmap()` finished.
    pub dead: bool,
}

impl MmState {
    /// `vma_lookup()`: the VMA containing `va`, with its start.
    pub fn vma(&self, va: u64) -> Option<(u64, Vma)> {
        let (s, v) = self.vmas.range(..=va).next_back()?;
        (va < v.end).then_some((*s, *v))
    }

    /// `find_vma()`: the first VMA ending above `va`.
    pub fn find_vma(&self, va: u64) -> Option<(u64, Vma)> {
        if let Some(v) = self.vma(va) {
            return Some(v);
        }
        self.vmas.range(va..).next().map(|(s, v)| (*s, *v))
    }

    /// VMAs intersecting `[start, end)`, clipped to it.
    pub fn vmas_in(&self, start: u64, end: u64) -> Vec<(u64, u64, Vma)> {
        let mut out = Vec::new();
        let mut a = start;
        while a < end {
            let Some((s, v)) = self.find_vma(a) else {
                break;
            };
            if s >= end {
                break;
            }
            out.push((s.max(start), v.end.min(end), v));
            a = v.end;
        }
        out
    }

    /// Splits the VMA containing `at` so that a VMA starts at `at` (`__split_vma()`); the PMD
    /// straddling `at`, if any, must already be split.
    pub fn split_vma(&mut self, at: u64) {
        if let Some((s, v)) = self.vma(at) {
            if s < at {
                self.vmas.insert(s, Vma { end: at, ..v });
                self.vmas.insert(at, v);
            }
        }
    }

    /// Merges VMAs meeting at `at` when their flags agree (`vma_merge()`).
    pub fn merge_at(&mut self, at: u64) {
        let Some((ps, pv)) = self.vmas.range(..at).next_back().map(|(s, v)| (*s, *v)) else {
            return;
        };
        if pv.end != at {
            return;
        }
        let Some(nv) = self.vmas.get(&at).copied() else {
            return;
        };
        if pv.same_flags(&nv) {
            self.vmas.remove(&at);
            self.vmas.insert(
                ps,
                Vma {
                    end: nv.end,
                    anon: pv.anon || nv.anon,
                    ..pv
                },
            );
        }
    }

    /// Whether any PTE table, PMD or PTE exists in `[start, end)`.
    pub fn has_entries(&self, start: u64, end: u64) -> bool {
        self.tables.range(huge_down(start)..end).next().is_some()
            || self.pmds.range(huge_down(start)..end).next().is_some()
            || self.ptes.range(start..end).next().is_some()
    }

    /// 2 MiB-aligned addresses of PMDs that `[start, end)` covers only partly.
    pub fn straddling_pmds(&self, start: u64, end: u64) -> Vec<u64> {
        let mut v = Vec::new();
        for a in [start, end] {
            let h = huge_down(a);
            if a != h && self.pmds.contains_key(&h) && !v.contains(&h) {
                v.push(h);
            }
        }
        v
    }
}

/// Result of looking up what the CPU maps at a VA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CpuMap {
    pub pfn: u64,
    pub writable: bool,
    pub accessible: bool,
    pub huge: bool,
}

/// The machine.
pub(crate) struct MachineState {
    pub frames: DetMap<u64, Frame>,
    next_pfn: u64,
    quarantine: VecDeque<u64>,
    pub slots: DetMap<u64, Slot>,
    next_slot: u64,
    pub mms: DetMap<MmId, MmState>,
    live: usize,
    /// The DMA trackers of this machine: a page must not be freed while one maps it.
    pub dma_watch: Vec<DmaWatch>,
    /// Device memories, by pgmap (a device's memory; peers' pgmaps share an owner).
    pub devpools: DetMap<u64, DevPool>,
    /// Pages collected by a running migration, by pfn.
    pub isolated: DetMap<u64, Isolated>,
}

impl MachineState {
    pub fn new() -> Self {
        MachineState {
            frames: DetMap::default(),
            next_pfn: FIRST_PFN,
            quarantine: VecDeque::new(),
            slots: DetMap::default(),
            next_slot: 1,
            mms: DetMap::default(),
            live: 0,
            dma_watch: Vec::new(),
            devpools: DetMap::default(),
            isolated: DetMap::default(),
        }
    }

    /// Frames allocated and not freed (zero pages excluded).
    pub fn live_frames(&self) -> usize {
        self.live
    }

    pub fn mm(&mut self, id: MmId) -> &mut MmState {
        self.mms
            .get_mut(&id)
            .expect("mm registered with its machine")
    }

    pub fn mm_ref(&self, id: MmId) -> &MmState {
        self.mms.get(&id).expect("mm registered with its machine")
    }

    fn new_frame(&mut self, pfn: u64, data: u64, head: u64, order: u8) {
        self.frames.insert(
            pfn,
            Frame {
                data,
                dirty: false,
                lazyfree: false,
                alive: true,
                exclusive: true,
                head,
                order,
                rmap: Vec::new(),
                pmd_maps: Vec::new(),
                swapcache: None,
                owner: 0,
                pins: 0,
            },
        );
        self.live += 1;
    }

    /// Allocates a device-private page of pgmap `pool` (locked: pinned once), if its memory
    /// has room.
    pub fn alloc_device_page(&mut self, pool: u64) -> Option<u64> {
        let owner = pool;
        let pool = self.devpools.get_mut(&owner)?;
        if pool.used >= pool.cap {
            return None;
        }
        pool.used += 1;
        let pfn = self.alloc_page(0);
        if let Some(p) = self.devpools.get_mut(&owner) {
            p.lru.push_back(pfn);
        }
        let f = self.frame(pfn);
        f.owner = owner;
        f.pins = 1;
        Some(pfn)
    }

    /// The `pgmap->owner` of device-private page `pfn` (0: a system page, or no page).
    pub fn owner_of(&self, pfn: u64) -> u64 {
        let pool = self.pool_of(pfn);
        self.devpools.get(&pool).map_or(0, |p| p.owner)
    }

    /// The pgmap (device memory) of device-private page `pfn` (0: a system page, or no page).
    pub fn pool_of(&self, pfn: u64) -> u64 {
        self.frames.get(&pfn).map_or(0, |f| f.owner)
    }

    /// Allocates an order-0 anonymous page holding `data` (exclusive, clean).
    pub fn alloc_page(&mut self, data: u64) -> u64 {
        let pfn = self.next_pfn;
        self.next_pfn += 1;
        self.new_frame(pfn, data, pfn, 0);
        pfn
    }

    /// Allocates a zeroed order-9 folio; returns its head pfn (512-aligned).
    pub fn alloc_thp(&mut self) -> u64 {
        let head = (self.next_pfn + HPAGE_NR - 1) & !(HPAGE_NR - 1);
        self.next_pfn = head + HPAGE_NR;
        for i in 0..HPAGE_NR {
            self.new_frame(head + i, 0, head, if i == 0 { 9 } else { 0 });
        }
        head
    }

    /// Whether `pfn` is a live page (the zero pages always are).
    pub fn alive(&self, pfn: u64) -> bool {
        is_zero_pfn(pfn) || self.frames.get(&pfn).is_some_and(|f| f.alive)
    }

    /// Whether `pfn` was ever handed out (so a dead one was freed, not invented).
    pub fn ever_allocated(&self, pfn: u64) -> bool {
        is_zero_pfn(pfn) || (FIRST_PFN..self.next_pfn).contains(&pfn)
    }

    /// The data word of a live page.
    pub fn data(&self, pfn: u64) -> Option<u64> {
        if is_zero_pfn(pfn) {
            return Some(0);
        }
        self.frames.get(&pfn).filter(|f| f.alive).map(|f| f.data)
    }

    pub fn frame(&mut self, pfn: u64) -> &mut Frame {
        self.frames.get_mut(&pfn).expect("live frame")
    }

    /// Whether `pfn` belongs to a large folio (order 9 head still in place).
    pub fn is_large(&self, pfn: u64) -> bool {
        let Some(f) = self.frames.get(&pfn) else {
            return false;
        };
        self.frames.get(&f.head).is_some_and(|h| h.order > 0)
    }

    /// `folio_mapcount()` of the page `pfn`: its PTE mappings plus the folio's PMD mappings.
    pub fn mapcount(&self, pfn: u64) -> usize {
        let Some(f) = self.frames.get(&pfn) else {
            return 0;
        };
        f.rmap.len() + self.frames.get(&f.head).map_or(0, |h| h.pmd_maps.len())
    }

    /// Every (mm, va) that maps `pfn`, PMD mappings reported at their 2 MiB base.
    pub fn mappers(&self, pfn: u64) -> Vec<(MmId, u64, bool)> {
        let Some(f) = self.frames.get(&pfn) else {
            return Vec::new();
        };
        let mut v: Vec<_> = f.rmap.iter().map(|&(m, a)| (m, a, false)).collect();
        if let Some(h) = self.frames.get(&f.head) {
            v.extend(h.pmd_maps.iter().map(|&(m, a)| (m, a, true)));
        }
        v
    }

    pub fn rmap_add(&mut self, pfn: u64, mm: MmId, va: u64) {
        if !is_zero_pfn(pfn) {
            self.frame(pfn).rmap.push((mm, va));
        }
    }

    /// Drops one PTE mapping of `pfn` and frees the page if nothing maps it any more.
    pub fn rmap_del(&mut self, pfn: u64, mm: MmId, va: u64) {
        if is_zero_pfn(pfn) {
            return;
        }
        let f = self.frame(pfn);
        if let Some(i) = f.rmap.iter().position(|&e| e == (mm, va)) {
            f.rmap.swap_remove(i);
        }
        self.maybe_free(pfn);
    }

    pub fn pmd_map_add(&mut self, head: u64, mm: MmId, va: u64) {
        if !is_zero_pfn(head) {
            self.frame(head).pmd_maps.push((mm, va));
        }
    }

    /// Drops one PMD mapping of the folio at `head`, freeing unmapped pages.
    pub fn pmd_map_del(&mut self, head: u64, mm: MmId, va: u64) {
        if is_zero_pfn(head) {
            return;
        }
        let f = self.frame(head);
        if let Some(i) = f.pmd_maps.iter().position(|&e| e == (mm, va)) {
            f.pmd_maps.swap_remove(i);
        }
        for p in head..head + HPAGE_NR {
            self.maybe_free(p);
        }
    }

    /// Frees `pfn` if no PTE or PMD maps it (the model has no other references: hmm does not
    /// pin, DMA mappings hold none). An unmapped swap-cache page leaves the cache at once
    /// (approximation: the kernel keeps it until reclaim finds it).
    pub fn maybe_free(&mut self, pfn: u64) {
        let Some(f) = self.frames.get(&pfn) else {
            return;
        };
        if !f.alive || f.pins != 0 || self.mapcount(pfn) != 0 {
            return;
        }
        if f.owner != 0 {
            // dev_pagemap_ops.page_free: back to the device's free list.
            let owner = f.owner;
            if let Some(p) = self.devpools.get_mut(&owner) {
                p.used = p.used.saturating_sub(1);
            }
        }
        if let Some(slot) = self.frames.get(&pfn).and_then(|f| f.swapcache) {
            self.uncache(pfn, slot);
        }
        self.dma_watch.retain(|w| w.check_free(pfn));
        let f = self.frame(pfn);
        f.alive = false;
        f.data = POISON;
        f.dirty = false;
        self.live -= 1;
        self.quarantine.push_back(pfn);
        if self.quarantine.len() > FRAME_QUARANTINE {
            if let Some(old) = self.quarantine.pop_front() {
                // Still reads as freed: pfns are never reused (`ever_allocated()`).
                self.frames.remove(&old);
            }
        }
    }

    /// Removes `pfn` from the swap cache of `slot` (writing it back first if it is dirty and
    /// swap PTEs still need the slot), freeing the slot if nothing refers to it.
    pub fn uncache(&mut self, pfn: u64, slot: u64) {
        let (data, dirty) = {
            let f = self.frame(pfn);
            f.swapcache = None;
            (f.data, f.dirty)
        };
        if let Some(s) = self.slots.get_mut(&slot) {
            s.cache = None;
            if dirty && s.count > 0 {
                s.data = data;
            }
            if s.count == 0 {
                self.slots.remove(&slot);
            }
        }
    }

    /// Allocates a swap slot holding `data`.
    pub fn alloc_slot(&mut self, data: u64) -> u64 {
        let s = self.next_slot;
        self.next_slot += 1;
        self.slots.insert(
            s,
            Slot {
                data,
                count: 0,
                cache: None,
            },
        );
        s
    }

    /// Drops one swap PTE reference to `slot` (`free_swap_and_cache()`).
    pub fn swap_put(&mut self, slot: u64) {
        let Some(s) = self.slots.get_mut(&slot) else {
            return;
        };
        s.count = s.count.saturating_sub(1);
        if s.count == 0 {
            match s.cache {
                None => {
                    self.slots.remove(&slot);
                }
                Some(pfn) => {
                    // The cached page no longer needs its slot if nothing maps it either.
                    if self.mapcount(pfn) == 0 {
                        self.uncache(pfn, slot);
                    }
                }
            }
        }
    }

    /// `folio_mark_dirty()`: marks the folio containing `pfn` dirty.
    pub fn mark_dirty(&mut self, pfn: u64) {
        if is_zero_pfn(pfn) {
            return;
        }
        let Some(head) = self.frames.get(&pfn).map(|f| f.head) else {
            return;
        };
        if self.frames.get(&head).is_some_and(|h| h.order > 0) {
            for p in head..head + HPAGE_NR {
                if let Some(f) = self.frames.get_mut(&p) {
                    if f.alive && f.head == head {
                        f.dirty = true;
                    }
                }
            }
        } else if let Some(f) = self.frames.get_mut(&pfn) {
            f.dirty = true;
        }
    }

    /// Splits the large folio containing `pfn` into order-0 pages (`split_folio()`); the
    /// folio must not be PMD-mapped.
    pub fn split_folio(&mut self, pfn: u64) {
        let Some(head) = self.frames.get(&pfn).map(|f| f.head) else {
            return;
        };
        if self.frames.get(&head).is_none_or(|h| h.order == 0) {
            return;
        }
        debug_assert!(self.frames[&head].pmd_maps.is_empty());
        for p in head..head + HPAGE_NR {
            if let Some(f) = self.frames.get_mut(&p) {
                if f.head == head {
                    f.head = p;
                    f.order = 0;
                }
            }
        }
    }

    /// What a device leaf at `va` of `mm` may map: the present page, a device-private page
    /// (a peer's, for a DMA leaf: the caller checks whose), or the page handed over to a
    /// device (a device-exclusive entry, `true`), which is the same page to the device.
    pub fn device_view(&self, mm: MmId, va: u64) -> Option<(CpuMap, bool)> {
        if let Some(c) = self.cpu_map(mm, va) {
            return Some((c, false));
        }
        match self.mms.get(&mm)?.ptes.get(&page_down(va))? {
            Pte::Exclusive { pfn, writable } => Some((
                CpuMap {
                    pfn: *pfn,
                    writable: *writable,
                    accessible: true,
                    huge: false,
                },
                true,
            )),
            // A peer's device page: another device reaches it through a DMA mapping (P2P).
            Pte::Device { pfn, writable } => Some((
                CpuMap {
                    pfn: *pfn,
                    writable: *writable,
                    accessible: true,
                    huge: false,
                },
                false,
            )),
            _ => None,
        }
    }

    /// What `mm` maps at `va`, if a page is present.
    pub fn cpu_map(&self, mm: MmId, va: u64) -> Option<CpuMap> {
        let st = self.mms.get(&mm)?;
        let va = page_down(va);
        if let Some(p) = st.pmds.get(&huge_down(va)) {
            return Some(CpuMap {
                pfn: p.head + (va - huge_down(va)) / PAGE_SIZE,
                writable: p.writable,
                accessible: p.accessible,
                huge: true,
            });
        }
        match st.ptes.get(&va)? {
            Pte::Present(p) => Some(CpuMap {
                pfn: p.pfn,
                writable: p.writable,
                accessible: p.accessible,
                huge: false,
            }),
            Pte::Swap { .. }
            | Pte::Device { .. }
            | Pte::Migration { .. }
            | Pte::Exclusive { .. } => None,
        }
    }

    /// Installs a PTE for `va` (creating its PTE table).
    pub fn set_pte(&mut self, mm: MmId, va: u64, pte: Pte) {
        let st = self.mm(mm);
        st.tables.insert(huge_down(va));
        st.ptes.insert(va, pte);
    }

    /// Clears the PTE at `va`, dropping what it referred to. A dirty bit moves to the page.
    pub fn zap_pte(&mut self, mm: MmId, va: u64) {
        match self.mm(mm).ptes.remove(&va) {
            Some(Pte::Present(p)) => {
                if p.dirty {
                    self.mark_dirty(p.pfn);
                }
                self.rmap_del(p.pfn, mm, va);
            }
            Some(Pte::Swap { slot, .. }) => self.swap_put(slot),
            Some(Pte::Device { pfn, .. } | Pte::Exclusive { pfn, .. }) => {
                self.rmap_del(pfn, mm, va)
            }
            // The isolated page stays pinned; `finalize` finds the entry gone.
            Some(Pte::Migration { .. }) | None => {}
        }
    }

    /// Clears the PMD at `haddr`.
    pub fn zap_pmd(&mut self, mm: MmId, haddr: u64) {
        if let Some(p) = self.mm(mm).pmds.remove(&haddr) {
            if p.dirty {
                self.mark_dirty(p.head);
            }
            self.pmd_map_del(p.head, mm, haddr);
        }
    }

    /// Zaps every PTE and whole PMD in `[start, end)` (PMDs straddling the bounds must have been
    /// split by the caller, with their own notifier).
    pub fn zap_range(&mut self, mm: MmId, start: u64, end: u64) {
        let pmds: Vec<u64> = self
            .mm_ref(mm)
            .pmds
            .range(huge_down(start)..end)
            .map(|(a, _)| *a)
            .collect();
        for h in pmds {
            // A model bug, not the engine's: it would free pages outside the notified span.
            assert!(
                h >= start && h + HPAGE_SIZE <= end,
                "straddling PMD not split"
            );
            self.zap_pmd(mm, h);
        }
        let ptes: Vec<u64> = self
            .mm_ref(mm)
            .ptes
            .range(start..end)
            .map(|(a, _)| *a)
            .collect();
        for a in ptes {
            self.zap_pte(mm, a);
        }
    }

    /// Splits the PMD at `haddr` into 512 PTEs mapping the same pages (`__split_huge_pmd()`);
    /// the folio stays large. Returns whether there was one.
    pub fn split_pmd(&mut self, mm: MmId, haddr: u64) -> bool {
        let Some(p) = self.mm(mm).pmds.remove(&haddr) else {
            return false;
        };
        let huge_zero = is_zero_pfn(p.head);
        // __split_huge_pmd_locked(): the PMD's PageAnonExclusive (kept on the head page)
        // carries over to every subpage PTE.
        let mut exclusive = false;
        if !huge_zero {
            let f = self.frame(p.head);
            exclusive = f.exclusive;
            if let Some(i) = f.pmd_maps.iter().position(|&e| e == (mm, haddr)) {
                f.pmd_maps.swap_remove(i);
            }
        }
        for i in 0..HPAGE_NR {
            let va = haddr + i * PAGE_SIZE;
            // The huge zero folio splits into PTEs of the small zero page.
            let pfn = if huge_zero { ZERO_PFN } else { p.head + i };
            if !huge_zero {
                let f = self.frame(pfn);
                f.rmap.push((mm, va));
                f.exclusive = exclusive;
            }
            let pte = Present {
                pfn,
                writable: p.writable && !huge_zero,
                dirty: p.dirty,
                accessible: p.accessible,
            };
            self.set_pte(mm, va, Pte::Present(pte));
        }
        true
    }

    /// Frees PTE tables of `[start, end)` that no VMA overlaps any more (`free_pgtables()`).
    pub fn free_tables(&mut self, mm: MmId, start: u64, end: u64) {
        let st = self.mm(mm);
        let blocks: Vec<u64> = st.tables.range(huge_down(start)..end).copied().collect();
        for b in blocks {
            if st.vmas_in(b, b + HPAGE_SIZE).is_empty() {
                debug_assert!(st.ptes.range(b..b + HPAGE_SIZE).next().is_none());
                st.tables.remove(&b);
            }
        }
    }
}
