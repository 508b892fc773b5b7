//! Device memory on the CPU side (6.12 `mm/migrate_device.c`, `do_swap_page()`): the
//! three-step `migrate_vma_*()` protocol, device-private entries, and the CPU fault that calls
//! a device's `migrate_to_ram`.
//!
//! `setup` collects the pages of the span under one `MMU_NOTIFY_MIGRATE` invalidation
//! carrying the caller's owner: each collected page is isolated (pinned) and every CPU mapping
//! of it becomes a migration entry; the mappings in other mms are notified (`MMU_NOTIFY_CLEAR`)
//! first, as `try_to_migrate()` would. Holes (and the zero page) are collected without a pfn
//! and filled by `pages` under a second `MMU_NOTIFY_MIGRATE`, as `migrate_vma_insert_page()`
//! does. `finalize` puts the new page (or the old one, if it did not move) behind every
//! migration entry still there, and frees what is no longer used; the DMA-live detector runs
//! at that free.
//!
//! Approximations: a large folio is split before it is collected (the kernel may migrate it
//! whole); a page whose mappings change between the notification and the collection is not
//! collected (the kernel's rmap walk would retry).

use super::state::{huge_down, is_zero_pfn, MmId, Present, Pte, HPAGE_SIZE, PAGE_SIZE};
use super::{MmHandle, MmShared};
use pgtable::Errno;
use std::sync::Arc;
use svm::platform::{
    migrate_pfn, migrate_pfn_pfn, Event, MigrateReq, Select, MIGRATE_PFN_MIGRATE,
    MIGRATE_PFN_VALID, MIGRATE_PFN_WRITE,
};

/// A device's `migrate_to_ram`: called with the faulting mm, the address and the device page
/// the fault holds (pinned, as the kernel's fault holds it locked and referenced).
pub(crate) type MigrateToRam = Arc<dyn Fn(&MmHandle, u64, u64) -> Result<(), Errno> + Send + Sync>;

struct Candidate {
    i: usize,
    pfn: u64,
    mappers: Vec<(MmId, u64, bool)>,
}

impl MmShared {
    pub(crate) fn migrate_setup(&self, req: &mut MigrateReq<'_>) -> Result<usize, Errno> {
        let n = req.src.len();
        if n == 0 || req.dst.len() != n || req.start & (PAGE_SIZE - 1) != 0 {
            self.violations
                .record("mm", "migrate_vma_setup() with a malformed request");
            return Err(Errno::EINVAL);
        }
        let end = req.start + n as u64 * PAGE_SIZE;
        {
            let m = self.machine.st.lock();
            match m.mm_ref(self.id).vma(req.start) {
                Some((_, v)) if !v.io && !v.no_migrate && v.end >= end => {}
                _ => return Err(Errno::EINVAL),
            }
        }
        req.src.fill(0);
        if req.select == Select::System {
            // migrate_vma_collect_pmd(): PMD mappings are split, large folios too.
            let mut h = huge_down(req.start);
            while h < end {
                let has = self.machine.st.lock().mm_ref(self.id).pmds.contains_key(&h);
                if has {
                    let _ = self.make_small(h.max(req.start));
                }
                h += HPAGE_SIZE;
            }
        }
        let (cands, holes) = self.migrate_candidates(req, end);
        // Other mms sharing a collected page (after fork) are notified as try_to_migrate()
        // notifies them; this mm's span once, with the owner.
        let others: Vec<(Arc<MmShared>, u64)> = cands
            .iter()
            .flat_map(|c| c.mappers.iter())
            .filter_map(|&(id, va, _)| self.other(id).map(|o| (o, va)))
            .collect();
        let _ours = self.inv_owner(req.start, end, Event::Migrate, req.owner);
        let _theirs: Vec<_> = others
            .iter()
            .map(|(o, va)| o.inv(*va, *va + PAGE_SIZE, Event::Clear))
            .collect();
        let mut m = self.machine.st.lock();
        let mut count = 0;
        for c in cands {
            let mut now = m.mappers(c.pfn);
            now.sort_unstable();
            // A page someone holds (another migration, a fault) is not collected, except the
            // page of the fault that runs this migration (`args->fault_page`).
            let held = m.frames[&c.pfn].pins - u32::from(c.pfn == req.fault_page);
            if now != c.mappers || !m.alive(c.pfn) || held != 0 {
                continue;
            }
            let mut recs = Vec::with_capacity(now.len());
            let mut ours_w = false;
            for &(id, va, _) in &now {
                let w = match m.mm_ref(id).ptes.get(&va).copied() {
                    Some(Pte::Present(p)) => {
                        if p.dirty {
                            m.mark_dirty(c.pfn);
                        }
                        p.writable
                    }
                    Some(Pte::Device { writable, .. }) => writable,
                    _ => unreachable!("rmap names a mapping the page table lacks"),
                };
                if id == self.id && va == req.start + c.i as u64 * PAGE_SIZE {
                    ours_w = w;
                }
                m.mm(id).ptes.insert(
                    va,
                    Pte::Migration {
                        pfn: c.pfn,
                        writable: w,
                    },
                );
                m.frame(c.pfn).rmap.retain(|e| *e != (id, va));
                recs.push((id, va, w));
            }
            m.frame(c.pfn).pins += 1;
            m.isolated
                .insert(c.pfn, super::state::Isolated { mappers: recs });
            req.src[c.i] = migrate_pfn(c.pfn)
                | MIGRATE_PFN_MIGRATE
                | if ours_w { MIGRATE_PFN_WRITE } else { 0 };
            count += 1;
        }
        for i in holes {
            let va = req.start + i as u64 * PAGE_SIZE;
            if Self::is_hole(&m, self.id, va) {
                req.src[i] = MIGRATE_PFN_MIGRATE;
                count += 1;
            }
        }
        Ok(count)
    }

    /// What `setup` may collect: pages (with their mappers, sorted) and holes.
    fn migrate_candidates(&self, req: &MigrateReq<'_>, end: u64) -> (Vec<Candidate>, Vec<usize>) {
        let m = self.machine.st.lock();
        let st = m.mm_ref(self.id);
        let (mut cands, mut holes) = (Vec::new(), Vec::new());
        let mut va = req.start;
        let mut i = 0;
        while va < end {
            let pfn = match (req.select, st.ptes.get(&va).copied()) {
                _ if st.pmds.contains_key(&huge_down(va)) => None,
                (Select::System, None) => {
                    holes.push(i);
                    None
                }
                (Select::System, Some(Pte::Present(p))) if is_zero_pfn(p.pfn) => {
                    holes.push(i);
                    None
                }
                (Select::System, Some(Pte::Present(p)))
                    if p.accessible && m.owner_of(p.pfn) == 0 && !m.is_large(p.pfn) =>
                {
                    Some(p.pfn)
                }
                (Select::DevicePrivate, Some(Pte::Device { pfn, .. }))
                    if m.owner_of(pfn) == req.owner =>
                {
                    Some(pfn)
                }
                _ => None,
            };
            if let Some(pfn) = pfn {
                let mut mappers = m.mappers(pfn);
                mappers.sort_unstable();
                if mappers.iter().all(|x| !x.2) {
                    cands.push(Candidate { i, pfn, mappers });
                }
            }
            va += PAGE_SIZE;
            i += 1;
        }
        (cands, holes)
    }

    fn is_hole(m: &super::state::MachineState, id: MmId, va: u64) -> bool {
        let st = m.mm_ref(id);
        !st.pmds.contains_key(&huge_down(va))
            && match st.ptes.get(&va) {
                None => true,
                Some(Pte::Present(p)) => is_zero_pfn(p.pfn),
                _ => false,
            }
    }

    pub(crate) fn migrate_pages(&self, req: &mut MigrateReq<'_>) {
        let n = req.src.len();
        let end = req.start + n as u64 * PAGE_SIZE;
        let fills =
            |s: u64, d: u64| s & MIGRATE_PFN_MIGRATE != 0 && s & MIGRATE_PFN_VALID == 0 && d != 0;
        let first = (0..n).find(|&i| fills(req.src[i], req.dst[i]));
        // migrate_vma_insert_page()'s notifier, once from the first hole to the end.
        let _inv = first.map(|i| {
            self.inv_owner(
                req.start + i as u64 * PAGE_SIZE,
                end,
                Event::Migrate,
                req.owner,
            )
        });
        let mut m = self.machine.st.lock();
        for i in 0..n {
            let s = req.src[i];
            if s & MIGRATE_PFN_MIGRATE == 0 {
                continue;
            }
            let Some(d) = migrate_pfn_pfn(req.dst[i]) else {
                req.src[i] &= !MIGRATE_PFN_MIGRATE;
                continue;
            };
            if let Some(old) = migrate_pfn_pfn(s) {
                // An isolated page: its mappings move in `finalize`, if no reference beyond
                // the isolation's and (named in `fault_page`) the fault's holds it
                // (`folio_migrate_mapping()`'s refcount check).
                let extra = u32::from(old == req.fault_page);
                if m.frames.get(&old).is_none_or(|f| f.pins > 1 + extra) {
                    req.src[i] &= !MIGRATE_PFN_MIGRATE;
                }
                continue;
            }
            let va = req.start + i as u64 * PAGE_SIZE;
            let vma = m.mm_ref(self.id).vma(va);
            let ok = vma.is_some_and(|(_, v)| !v.io)
                && !m.mm_ref(self.id).unstable
                && Self::is_hole(&m, self.id, va);
            let Some((vs, v)) = vma.filter(|_| ok) else {
                req.src[i] &= !MIGRATE_PFN_MIGRATE;
                continue;
            };
            m.mm(self.id).ptes.remove(&va);
            if let Some(x) = m.mm(self.id).vmas.get_mut(&vs) {
                x.anon = true;
            }
            let pte = Self::new_pte(&m, self.id, va, d, v.write);
            m.set_pte(self.id, va, pte);
            m.rmap_add(d, self.id, va);
            m.frame(d).exclusive = true;
        }
    }

    /// The entry that maps `pfn` at `va` of mm `id` once a migration entry goes
    /// (`remove_migration_pte()`): with the VMA's protection (`vm_page_prot`, so `PROT_NONE`
    /// stays inaccessible), writable only if the entry was and the VMA is.
    pub(crate) fn new_pte(
        m: &super::state::MachineState,
        id: MmId,
        va: u64,
        pfn: u64,
        writable: bool,
    ) -> Pte {
        let (read, write) = m
            .mm_ref(id)
            .vma(va)
            .map_or((false, false), |(_, v)| (v.read, v.write));
        let writable = writable && write;
        if m.owner_of(pfn) != 0 {
            Pte::Device { pfn, writable }
        } else {
            Pte::Present(Present {
                pfn,
                writable,
                dirty: false,
                accessible: read,
            })
        }
    }

    pub(crate) fn migrate_finalize(&self, req: &mut MigrateReq<'_>) {
        let mut m = self.machine.st.lock();
        for i in 0..req.src.len() {
            let s = req.src[i];
            let dst = migrate_pfn_pfn(req.dst[i]);
            let moved = s & MIGRATE_PFN_MIGRATE != 0 && dst.is_some();
            if let Some(old) = migrate_pfn_pfn(s) {
                if let Some(iso) = m.isolated.remove(&old) {
                    let target = match dst {
                        Some(d) if moved => d,
                        _ => old,
                    };
                    let shared = iso.mappers.len() > 1;
                    for (id, va, _) in iso.mappers {
                        if !m.mms.contains_key(&id) {
                            continue;
                        }
                        // remove_migration_ptes(): only entries still there (a zap since
                        // dropped the mapping).
                        let Some(Pte::Migration { pfn, writable }) =
                            m.mm_ref(id).ptes.get(&va).copied()
                        else {
                            continue;
                        };
                        if pfn != old {
                            continue;
                        }
                        let pte = Self::new_pte(&m, id, va, target, writable);
                        m.mm(id).ptes.insert(va, pte);
                        m.rmap_add(target, id, va);
                    }
                    if moved {
                        // folio_migrate_flags(): the data came from elsewhere.
                        let f = m.frame(target);
                        f.dirty = f.owner == 0;
                        f.exclusive = !shared;
                    }
                    m.frame(old).pins -= 1;
                    m.maybe_free(old);
                }
            }
            if let Some(d) = dst {
                // The new page's lock (and reference) goes; unused, it is freed.
                m.frame(d).pins -= 1;
                m.maybe_free(d);
            }
        }
        drop(m);
        self.machine.migr_cv.notify_all();
    }

    /// `migration_entry_wait()`: until the migration entry at `va` is gone.
    pub(crate) fn wait_migration(&self, va: u64) {
        let mut m = self.machine.st.lock();
        while matches!(m.mm_ref(self.id).ptes.get(&va), Some(Pte::Migration { .. })) {
            m = self.machine.migr_cv.wait(m);
        }
    }

    /// `do_swap_page()` on a device-private entry: `pgmap->ops->migrate_to_ram()`, the page
    /// held (pinned) meanwhile as the kernel holds it locked and referenced.
    pub(crate) fn device_fault(&self, pool: u64, va: u64) -> Result<(), Errno> {
        let owner = pool;
        let op = self
            .machine
            .devmem_ops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&owner)
            .cloned();
        let Some(op) = op else {
            self.violations.record(
                "mm",
                format!("device-private page of owner {owner:#x} with no migrate_to_ram"),
            );
            return Err(Errno::EFAULT);
        };
        let Some(me) = self.machine.mm(self.id) else {
            return Err(Errno::EFAULT);
        };
        let page = {
            let mut m = self.machine.st.lock();
            let Some(Pte::Device { pfn, .. }) = m.mm_ref(self.id).ptes.get(&va).copied() else {
                // Gone meanwhile: retry the fault.
                return Ok(());
            };
            m.frame(pfn).pins += 1;
            pfn
        };
        // VM_FAULT_SIGBUS for any error.
        let r = op(&MmHandle(me), va, page).map_err(|_| Errno::EFAULT);
        let mut m = self.machine.st.lock();
        m.frame(page).pins -= 1;
        m.maybe_free(page);
        r
    }
}

impl super::Machine {
    /// Moves up to `want` of `owner`'s device pages back to system memory, least recently used first,
    /// whatever maps them (`migrate_device_range()` + `migrate_device_pages()` +
    /// `migrate_device_finalize()`): a page someone holds (a migration, a fault) is skipped,
    /// as the kernel's `folio_trylock()` skips it. Every mapper is notified
    /// (`MMU_NOTIFY_CLEAR`, as `try_to_migrate()` does) before its entry becomes a migration
    /// entry. Returns how many pages were freed.
    pub(crate) fn evict(self: &Arc<Self>, owner: u64, want: usize) -> usize {
        let victims: Vec<u64> = {
            let mut m = self.st.lock();
            let Some(pool) = m.devpools.get(&owner) else {
                return 0;
            };
            let lru: Vec<u64> = pool.lru.iter().copied().collect();
            let live: Vec<u64> = lru
                .into_iter()
                .filter(|&p| m.alive(p) && m.pool_of(p) == owner)
                .collect();
            if let Some(pool) = m.devpools.get_mut(&owner) {
                pool.lru = live.iter().copied().collect();
            }
            live.into_iter()
                .filter(|p| m.frames[p].pins == 0)
                .take(want)
                .collect()
        };
        victims.into_iter().filter(|&p| self.evict_page(p)).count()
    }

    fn evict_page(self: &Arc<Self>, pfn: u64) -> bool {
        let mut mappers = self.st.lock().mappers(pfn);
        mappers.sort_unstable();
        let holders: Vec<Arc<MmShared>> = mappers.iter().filter_map(|m| self.mm(m.0)).collect();
        if holders.len() != mappers.len() {
            return false;
        }
        let recs = {
            let _guards: Vec<_> = holders
                .iter()
                .zip(&mappers)
                .map(|(mm, &(_, va, _))| mm.inv(va, va + PAGE_SIZE, Event::Clear))
                .collect();
            let mut m = self.st.lock();
            let mut now = m.mappers(pfn);
            now.sort_unstable();
            if now != mappers || !m.alive(pfn) || m.frames[&pfn].pins != 0 {
                return false;
            }
            let mut recs = Vec::with_capacity(now.len());
            for &(id, va, _) in &now {
                let Some(Pte::Device { writable, .. }) = m.mm_ref(id).ptes.get(&va).copied() else {
                    unreachable!("rmap names a mapping the page table lacks");
                };
                m.mm(id).ptes.insert(va, Pte::Migration { pfn, writable });
                m.frame(pfn).rmap.retain(|e| *e != (id, va));
                recs.push((id, va, writable));
            }
            m.frame(pfn).pins += 1;
            recs
        };
        // The copy and `finalize`: every migration entry still there maps the new page.
        let mut m = self.st.lock();
        let data = m.data(pfn).unwrap_or(super::state::POISON);
        let new = m.alloc_page(data);
        m.frame(new).dirty = true;
        m.frame(new).exclusive = recs.len() == 1;
        for (id, va, _) in recs {
            if let Some(Pte::Migration { pfn: p, writable }) = m.mm_ref(id).ptes.get(&va).copied() {
                if p == pfn {
                    let pte = MmShared::new_pte(&m, id, va, new, writable);
                    m.mm(id).ptes.insert(va, pte);
                    m.rmap_add(new, id, va);
                }
            }
        }
        m.frame(pfn).pins -= 1;
        m.maybe_free(pfn);
        m.maybe_free(new);
        drop(m);
        self.migr_cv.notify_all();
        true
    }
}

impl MmHandle {
    /// Gives this machine a device memory (pgmap `pool`) of `pages` device-private pages
    /// owned by `owner`, whose `migrate_to_ram` is `op`.
    pub(crate) fn add_devmem(&self, pool: u64, owner: u64, pages: usize, op: MigrateToRam) {
        self.0.machine.st.lock().devpools.insert(
            pool,
            super::state::DevPool {
                owner,
                cap: pages,
                ..Default::default()
            },
        );
        self.0
            .machine
            .devmem_ops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pool, op);
    }

    /// Device pages of pgmap `owner` (a device memory's key, its owner unless it has peers)
    /// in use.
    pub fn devmem_used(&self, owner: u64) -> usize {
        self.0
            .machine
            .st
            .lock()
            .devpools
            .get(&owner)
            .map_or(0, |p| p.used)
    }

    /// The device-private page the CPU maps at `addr`, if any: (pfn, writable).
    pub fn device_pte(&self, addr: u64) -> Option<(u64, bool)> {
        let m = self.0.machine.st.lock();
        match m.mm_ref(self.0.id).ptes.get(&super::state::page_down(addr)) {
            Some(Pte::Device { pfn, writable }) => Some((*pfn, *writable)),
            _ => None,
        }
    }
}
