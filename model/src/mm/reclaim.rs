//! Reclaim, migration, THP split, exit and the OOM reaper (6.12 `mm/vmscan.c` +
//! `mm/rmap.c:try_to_unmap_one()`, `mm/migrate.c` + `try_to_migrate_one()`,
//! `mm/huge_memory.c:__split_huge_pmd()`, `kernel/fork.c:mmput()` + `mm/mmap.c:exit_mmap()`,
//! `mm/oom_kill.c:__oom_reap_task_mm()`).
//!
//! Reclaim and migration walk the reverse map: every mm that maps the page is notified
//! (`MMU_NOTIFY_CLEAR`, as `try_to_unmap_one()` and `try_to_migrate_one()` do), then the
//! mappings are verified unchanged under the machine lock and replaced; if they changed in
//! between, nothing is done (the kernel's rmap walk would find the new state and retry).

use super::state::{huge_down, is_zero_pfn, page_down, MmId, Pte, HPAGE_NR, HPAGE_SIZE, PAGE_SIZE};
use super::{Inv, MmHandle, MmShared};
use pgtable::Errno;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use svm::platform::Event;

/// What [`MmHandle::swap_out`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwapOutcome {
    /// Nothing reclaimable at the address (no page, a swap entry, or a zero page).
    NotPresent,
    /// Unmapped to a swap entry. `written_back`: the page was dirty and was written to its
    /// slot; otherwise a clean swap-cache copy was dropped without writeback.
    Swapped {
        /// The page was written to swap.
        written_back: bool,
    },
    /// A clean lazyfree (`MADV_FREE`) page was discarded: later reads see 0.
    Discarded,
    /// A lazyfree page was dirty: it stays mapped and is no longer lazyfree.
    KeptDirty,
    /// The mappings changed while they were being unmapped; nothing was done.
    Busy,
}

/// What [`MmHandle::oom_reap`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OomReport {
    /// VMAs whose pages were zapped.
    pub reaped: usize,
    /// VMAs skipped because a non-blockable callback refused.
    pub skipped: usize,
    /// `mmap_read_trylock()` failed: nothing was tried (the reaper retries later).
    pub contended: bool,
}

impl MmShared {
    fn resolve(&self, ids: &[(MmId, u64, bool)]) -> Vec<Option<Arc<MmShared>>> {
        ids.iter().map(|(id, _, _)| self.other(*id)).collect()
    }

    /// Splits every PMD mapping the folio of `pfn` and the folio itself, so that `pfn` is an
    /// order-0 page mapped by PTEs (`TTU_SPLIT_HUGE_PMD` + `split_folio()`). `None` if `va`
    /// maps no reclaimable page.
    pub(crate) fn make_small(&self, va: u64) -> Option<u64> {
        for _ in 0..8 {
            let mut m = self.machine.st.lock();
            let h = huge_down(va);
            if m.mm_ref(self.id).pmds.contains_key(&h) {
                drop(m);
                self.split_huge_pmd(self.id, h);
                continue;
            }
            let Some(Pte::Present(p)) = m.mm_ref(self.id).ptes.get(&va).copied() else {
                return None;
            };
            if is_zero_pfn(p.pfn) {
                return None;
            }
            if m.is_large(p.pfn) {
                let head = m.frames[&p.pfn].head;
                let maps = m.frames[&head].pmd_maps.clone();
                if !maps.is_empty() {
                    drop(m);
                    for (id, h) in maps {
                        self.split_huge_pmd(id, h);
                    }
                    continue;
                }
                m.split_folio(p.pfn);
            }
            return Some(p.pfn);
        }
        None
    }

    /// Starts a CLEAR invalidation in every mapper's mm.
    fn notify_mappers<'a>(
        &'a self,
        mappers: &[(MmId, u64, bool)],
        holders: &'a [Option<Arc<MmShared>>],
        size: u64,
    ) -> Vec<Inv<'a>> {
        let mut guards = Vec::new();
        for ((id, va, _), h) in mappers.iter().zip(holders) {
            let mm: &MmShared = match h {
                Some(o) => o,
                None if *id == self.id => self,
                None => continue,
            };
            guards.push(mm.inv(*va, *va + size, Event::Clear));
        }
        guards
    }

    /// Reclaims order-0 page `pfn` from every mapper (`shrink_folio_list()` for one folio).
    fn reclaim_page(&self, pfn: u64) -> SwapOutcome {
        let mut mappers = self.machine.st.lock().mappers(pfn);
        if mappers.is_empty() {
            return SwapOutcome::NotPresent;
        }
        if mappers.iter().any(|m| m.2) {
            return SwapOutcome::Busy;
        }
        mappers.sort_unstable();
        let holders = self.resolve(&mappers);
        let _guards = self.notify_mappers(&mappers, &holders, PAGE_SIZE);
        let mut m = self.machine.st.lock();
        let mut now = m.mappers(pfn);
        now.sort_unstable();
        if now != mappers || !m.alive(pfn) {
            return SwapOutcome::Busy;
        }
        // try_to_unmap_one(): ptep_clear_flush(), a dirty PTE dirties the folio.
        for &(id, va, _) in &mappers {
            if let Some(Pte::Present(p)) = m.mm_ref(id).ptes.get(&va).copied() {
                if p.dirty {
                    m.mark_dirty(pfn);
                }
            }
        }
        let (lazyfree, dirty) = {
            let f = m.frame(pfn);
            (f.lazyfree, f.dirty)
        };
        if lazyfree {
            if !dirty {
                // MADV_FREE page check: clean, discard from every mapper.
                for &(id, va, _) in &mappers {
                    m.mm(id).ptes.remove(&va);
                    m.rmap_del(pfn, id, va);
                }
                return SwapOutcome::Discarded;
            }
            // Redirtied: remap (the PTEs never changed here) and make it swap-backed again.
            m.frame(pfn).lazyfree = false;
            return SwapOutcome::KeptDirty;
        }
        // add_to_swap(): a slot and PG_swapcache, the folio marked dirty.
        let slot = match m.frames[&pfn].swapcache {
            Some(s) if m.slots.contains_key(&s) => s,
            _ => {
                let s = m.alloc_slot(super::state::POISON);
                m.slots.get_mut(&s).expect("slot").cache = Some(pfn);
                let f = m.frame(pfn);
                f.swapcache = Some(s);
                f.dirty = true;
                s
            }
        };
        let exclusive = m.frames[&pfn].exclusive;
        for &(id, va, _) in &mappers {
            m.mm(id).ptes.insert(va, Pte::Swap { slot, exclusive });
            m.slots.get_mut(&slot).expect("slot").count += 1;
            m.frame(pfn).rmap.retain(|e| *e != (id, va));
        }
        // pageout() if dirty; a clean swap-cache page already has a valid copy.
        let written_back = m.frames[&pfn].dirty;
        if written_back {
            let data = m.frames[&pfn].data;
            m.slots.get_mut(&slot).expect("slot").data = data;
            m.frame(pfn).dirty = false;
        }
        // __remove_mapping(): out of the swap cache, freed.
        m.uncache(pfn, slot);
        m.maybe_free(pfn);
        SwapOutcome::Swapped { written_back }
    }

    /// Migrates the page (or the whole PMD-mapped folio) at `va` to new memory.
    fn migrate_at(&self, va: u64) -> Result<u64, Errno> {
        let h = huge_down(va);
        // A folio mapped only by PMDs migrates whole (THP migration).
        let huge = {
            let m = self.machine.st.lock();
            match m.mm_ref(self.id).pmds.get(&h) {
                Some(p) if is_zero_pfn(p.head) => return Err(Errno::ENOENT),
                Some(p) => (p.head..p.head + HPAGE_NR)
                    .all(|q| m.frames.get(&q).is_none_or(|f| f.rmap.is_empty()))
                    .then_some(p.head),
                None => None,
            }
        };
        let (old, size) = match huge {
            Some(head) => (head, HPAGE_SIZE),
            None => (self.make_small(va).ok_or(Errno::ENOENT)?, PAGE_SIZE),
        };
        let mut mappers = self.machine.st.lock().mappers(old);
        if mappers.iter().any(|m| m.2 != huge.is_some()) {
            return Err(Errno::EBUSY);
        }
        mappers.sort_unstable();
        let holders = self.resolve(&mappers);
        let _guards = self.notify_mappers(&mappers, &holders, size);
        let mut m = self.machine.st.lock();
        let mut now = m.mappers(old);
        now.sort_unstable();
        if now != mappers || !m.alive(old) {
            return Err(Errno::EBUSY);
        }
        let n = if huge.is_some() { HPAGE_NR } else { 1 };
        let new = if huge.is_some() {
            m.alloc_thp()
        } else {
            m.alloc_page(0)
        };
        // folio_migrate_copy() + folio_migrate_flags()
        for i in 0..n {
            let o = m.frames[&(old + i)].clone();
            let f = m.frame(new + i);
            f.data = o.data;
            f.dirty = o.dirty;
            f.lazyfree = o.lazyfree;
            f.exclusive = o.exclusive;
        }
        if let Some(slot) = m.frames[&old].swapcache {
            m.frame(old).swapcache = None;
            m.frame(new).swapcache = Some(slot);
            if let Some(s) = m.slots.get_mut(&slot) {
                s.cache = Some(new);
            }
        }
        // remove_migration_ptes(): every mapper now maps the new memory.
        for &(id, a, is_pmd) in &mappers {
            if is_pmd {
                m.mm(id).pmds.get_mut(&a).expect("pmd").head = new;
                m.frame(old).pmd_maps.retain(|e| *e != (id, a));
                m.pmd_map_add(new, id, a);
            } else {
                if let Some(Pte::Present(p)) = m.mm(id).ptes.get_mut(&a) {
                    p.pfn = new;
                }
                m.frame(old).rmap.retain(|e| *e != (id, a));
                m.rmap_add(new, id, a);
            }
        }
        for i in 0..n {
            m.maybe_free(old + i);
        }
        Ok(new
            + if huge.is_some() {
                (page_down(va) - h) / PAGE_SIZE
            } else {
                0
            })
    }

    /// `exit_mmap()`: `mmu_notifier_release()` (`MMU_NOTIFY_RELEASE` over `[0, ULONG_MAX)`),
    /// then under `mmap_read_lock` `unmap_vmas()` (`MMU_NOTIFY_UNMAP` over `[0, ULONG_MAX)`),
    /// then under `mmap_write_lock` the VMAs and page tables go.
    pub(crate) fn exit_mmap(self: &Arc<Self>) {
        let _s = self.violations.scope();
        drop(self.inv(0, u64::MAX, Event::Release));
        {
            let _r = self.mmap_read("exit_mmap");
            let _inv = self.inv(0, u64::MAX, Event::Unmap);
            self.machine.st.lock().zap_range(self.id, 0, u64::MAX);
        }
        {
            let _w = self.mmap_write("exit_mmap");
            let mut m = self.machine.st.lock();
            let st = m.mm(self.id);
            st.vmas.clear();
            st.tables.clear();
            st.dead = true;
        }
        *self.exit_done.lock() = true;
        self.exit_cv.notify_all();
    }
}

impl MmHandle {
    /// Reclaims the page at `addr` like `MADV_PAGEOUT` / kswapd (`mmap_lock` read): a
    /// PMD-mapped THP is split first; every mapper is notified (`MMU_NOTIFY_CLEAR`); a clean
    /// lazyfree page is discarded, a dirty one kept; otherwise the page goes to swap (written
    /// back if dirty, dropped without writeback if clean with a valid swap-cache copy).
    pub fn swap_out(&self, addr: u64) -> Result<SwapOutcome, Errno> {
        let _s = self.0.violations.scope();
        if self.0.gone() {
            return Err(Errno::ESRCH);
        }
        let va = page_down(addr);
        let _r = self.0.mmap_read("madvise(MADV_PAGEOUT)");
        {
            let m = self.0.machine.st.lock();
            match m.mm_ref(self.0.id).vma(va) {
                None => return Err(Errno::ENOMEM),
                Some((_, v)) if v.io => return Err(Errno::EINVAL),
                _ => {}
            }
        }
        let Some(pfn) = self.0.make_small(va) else {
            return Ok(SwapOutcome::NotPresent);
        };
        Ok(self.0.reclaim_page(pfn))
    }

    /// Migrates the page at `addr` (a PMD-mapped THP whole) to a new frame: every mapper is
    /// notified (`MMU_NOTIFY_CLEAR`, as `try_to_migrate_one()`), data and flags are copied,
    /// the PTEs repointed, the old frame freed. Returns the new pfn of `addr`'s page. `ENOENT`
    /// if nothing migratable is mapped there (hole, swap entry, zero page).
    pub fn migrate(&self, addr: u64) -> Result<u64, Errno> {
        let _s = self.0.violations.scope();
        if self.0.gone() {
            return Err(Errno::ESRCH);
        }
        let va = page_down(addr);
        let _r = self.0.mmap_read("migrate_pages");
        {
            let m = self.0.machine.st.lock();
            match m.mm_ref(self.0.id).vma(va) {
                Some((_, v)) if !v.io => {}
                _ => return Err(Errno::EFAULT),
            }
        }
        self.0.migrate_at(va)
    }

    /// Splits the PMD mapping `addr`, if any, into 512 PTEs of the same pages
    /// (`MMU_NOTIFY_CLEAR` over the 2 MiB). Returns whether there was one.
    pub fn split_thp(&self, addr: u64) -> Result<bool, Errno> {
        let _s = self.0.violations.scope();
        if self.0.gone() {
            return Err(Errno::ESRCH);
        }
        let h = huge_down(addr);
        let _r = self.0.mmap_read("split_huge_pmd");
        if !self
            .0
            .machine
            .st
            .lock()
            .mm_ref(self.0.id)
            .pmds
            .contains_key(&h)
        {
            return Ok(false);
        }
        self.0.split_huge_pmd(self.0.id, h);
        Ok(true)
    }

    /// The process exits: drops its `mm_users` reference; whoever drops the last one runs
    /// `exit_mmap()` (a worker's `mmput_async()` does it on another thread). Waits until
    /// `exit_mmap()` has completed. Later operations fail with `ESRCH`; the interval
    /// notifiers stay registered until their owner removes them.
    pub fn exit(&self) {
        let _s = self.0.violations.scope();
        if !self.0.exited.swap(true, Ordering::AcqRel) {
            self.0.mmput(false);
        }
        let mut d = self.0.exit_done.lock();
        while !*d {
            d = self.0.exit_cv.wait(d);
        }
    }

    /// The OOM reaper on this mm (`__oom_reap_task_mm()`): `mmap_read_trylock()`, mark the mm
    /// unstable (later faults that need a new page fail), then per non-I/O VMA a
    /// non-blockable `MMU_NOTIFY_UNMAP`; a VMA whose invalidation a callback refuses is
    /// skipped whole, the others are zapped.
    pub fn oom_reap(&self) -> Result<OomReport, Errno> {
        let _s = self.0.violations.scope();
        if self.is_dead() {
            return Err(Errno::ESRCH);
        }
        let Some(_r) = self.0.mmap_try_read("oom_reaper") else {
            return Ok(OomReport {
                contended: true,
                ..OomReport::default()
            });
        };
        let vmas: Vec<(u64, u64, bool)> = {
            let mut m = self.0.machine.st.lock();
            let st = m.mm(self.0.id);
            st.unstable = true;
            st.vmas.iter().map(|(s, v)| (*s, v.end, v.io)).collect()
        };
        let mut rep = OomReport::default();
        for (s, e, io) in vmas {
            if io {
                continue;
            }
            match self.0.inv_nonblock(s, e, Event::Unmap) {
                None => rep.skipped += 1,
                Some(_inv) => {
                    self.0.machine.st.lock().zap_range(self.0.id, s, e);
                    rep.reaped += 1;
                }
            }
        }
        Ok(rep)
    }
}
