//! Mapping system calls and fork: `mmap`, `munmap`, `mprotect`, `madvise(MADV_DONTNEED /
//! MADV_FREE)`, `fork()` (6.12 `mm/mmap.c`, `mm/vma.c`, `mm/mprotect.c`, `mm/madvise.c`,
//! `kernel/fork.c` + `copy_page_range()`).

use super::state::MachineState;
use super::state::{huge_down, is_zero_pfn, Pte, Vma, HPAGE_NR, HPAGE_SIZE, PAGE_SIZE};
use super::{MmHandle, MmShared};
use crate::sync::MutexGuard;
use pgtable::Errno;
use svm::platform::Event;

/// Page protection (`PROT_READ`, `PROT_WRITE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Prot {
    /// `PROT_READ`.
    pub read: bool,
    /// `PROT_WRITE`.
    pub write: bool,
}

impl Prot {
    /// `PROT_NONE`.
    pub const NONE: Prot = Prot {
        read: false,
        write: false,
    };
    /// `PROT_READ`.
    pub const READ: Prot = Prot {
        read: true,
        write: false,
    };
    /// `PROT_READ | PROT_WRITE`.
    pub const RW: Prot = Prot {
        read: true,
        write: true,
    };
}

/// Mapping kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MapFlags {
    /// `MADV_HUGEPAGE` (`VM_HUGEPAGE`): 2 MiB-aligned, THP on first fault.
    pub thp: bool,
    /// `VM_IO | VM_PFNMAP` (a driver's `remap_pfn_range()` mapping): no `struct page`.
    pub io: bool,
    /// Ordinary pages that `migrate_vma_setup()` refuses whole (a `VM_MIXEDMAP` driver
    /// mapping, hugetlb): the CPU and hmm see them as any page.
    pub no_migrate: bool,
}

impl MapFlags {
    /// Plain private anonymous memory.
    pub const ANON: MapFlags = MapFlags {
        thp: false,
        io: false,
        no_migrate: false,
    };
    /// THP-eligible anonymous memory.
    pub const THP: MapFlags = MapFlags {
        thp: true,
        io: false,
        no_migrate: false,
    };
    /// I/O memory.
    pub const IO: MapFlags = MapFlags {
        thp: false,
        io: true,
        no_migrate: false,
    };
    /// Memory `migrate_vma_setup()` refuses.
    pub const NO_MIGRATE: MapFlags = MapFlags {
        thp: false,
        io: false,
        no_migrate: true,
    };
}

fn page_up(len: u64) -> Option<u64> {
    len.checked_add(PAGE_SIZE - 1).map(|l| l & !(PAGE_SIZE - 1))
}

impl MmShared {
    /// `[start, end)` of an `addr, len` system-call argument: `EINVAL` if misaligned or beyond
    /// `TASK_SIZE`; `None` for an empty length.
    fn span(&self, addr: u64, len: u64) -> Result<Option<(u64, u64)>, Errno> {
        if addr & (PAGE_SIZE - 1) != 0 {
            return Err(Errno::EINVAL);
        }
        if len == 0 {
            return Ok(None);
        }
        let len = page_up(len).ok_or(Errno::EINVAL)?;
        let end = addr.checked_add(len).ok_or(Errno::EINVAL)?;
        if end > self.cfg.task_size {
            return Err(Errno::EINVAL);
        }
        Ok(Some((addr, end)))
    }

    /// Splits VMAs at `start` and `end` and takes those in between out of the tree (the first
    /// half of `do_vmi_align_munmap()`: `vms_gather_munmap_vmas()` + `vma_iter_clear()`).
    /// PMDs straddling a split point are split first (`vma_adjust_trans_huge()`). Returns
    /// whether any VMA was there.
    fn detach_vmas(&self, start: u64, end: u64) -> bool {
        let straddling = {
            let m = self.machine.st.lock();
            let st = m.mm_ref(self.id);
            if st.vmas_in(start, end).is_empty() {
                return false;
            }
            st.straddling_pmds(start, end)
        };
        for h in straddling {
            self.split_huge_pmd(self.id, h);
        }
        let mut m = self.machine.st.lock();
        let st = m.mm(self.id);
        st.split_vma(start);
        st.split_vma(end);
        let gone: Vec<u64> = st.vmas.range(start..end).map(|(s, _)| *s).collect();
        for s in gone {
            st.vmas.remove(&s);
        }
        true
    }

    /// The machine lock, taken when no PMD straddles `start` or `end` any more: those that do
    /// are split first (each with its nested `MMU_NOTIFY_CLEAR`), and the check is repeated
    /// under the lock returned, as `zap_pmd_range()` splits under the PMD lock in the walk
    /// itself. Under `mmap_read_lock` a fault may install a THP in an empty 2 MiB block at any
    /// time until then; zapping it whole would free pages outside `[start, end)` that no
    /// notifier of theirs was told about.
    pub(crate) fn lock_split(&self, start: u64, end: u64) -> MutexGuard<'_, MachineState> {
        loop {
            let m = self.machine.st.lock();
            let straddling = m.mm_ref(self.id).straddling_pmds(start, end);
            if straddling.is_empty() {
                return m;
            }
            drop(m);
            for h in straddling {
                self.split_huge_pmd(self.id, h);
            }
        }
    }

    /// `unmap_region()`: `MMU_NOTIFY_UNMAP` over `[start, end)`, zap, `free_pgtables()`.
    fn unmap_region(&self, start: u64, end: u64) {
        let _inv = self.inv(start, end, Event::Unmap);
        let mut m = self.machine.st.lock();
        m.zap_range(self.id, start, end);
        m.free_tables(self.id, start, end);
    }

    fn insert_vma(&self, start: u64, end: u64, prot: Prot, flags: MapFlags) {
        let mut m = self.machine.st.lock();
        let st = m.mm(self.id);
        let v = Vma {
            end,
            read: prot.read,
            write: prot.write,
            io: flags.io,
            thp: flags.thp && !flags.io,
            anon: false,
            no_migrate: flags.no_migrate,
        };
        st.vmas.insert(start, v);
        st.merge_at(start);
        st.merge_at(end);
    }

    /// `get_unmapped_area()`: first fit from `mmap_base`, 2 MiB-aligned for THP.
    fn unmapped_area(&self, len: u64, align: u64) -> Result<u64, Errno> {
        let m = self.machine.st.lock();
        let st = m.mm_ref(self.id);
        let up = |a: u64| a.checked_add(align - 1).map(|x| x & !(align - 1));
        let mut cand = up(self.cfg.mmap_base).ok_or(Errno::ENOMEM)?;
        for (s, v) in st.vmas.range(..) {
            if v.end <= cand {
                continue;
            }
            if *s >= cand.checked_add(len).ok_or(Errno::ENOMEM)? {
                break;
            }
            cand = up(v.end).ok_or(Errno::ENOMEM)?;
        }
        match cand.checked_add(len) {
            Some(e) if e <= self.cfg.task_size => Ok(cand),
            _ => Err(Errno::ENOMEM),
        }
    }

    fn copy_to(&self, child: &MmShared) {
        // copy_page_range() per VMA, PROTECTION_PAGE on the parent for COW mappings.
        let vmas: Vec<(u64, Vma)> = {
            let mut m = self.machine.st.lock();
            let vmas = m.mm_ref(self.id).vmas.clone();
            m.mm(child.id).vmas = vmas.clone();
            vmas.into_iter().collect()
        };
        for (s, v) in vmas {
            // VM_PFNMAP: nothing of ours to copy; no anon_vma: copy_page_range() returns early.
            if v.io || !v.anon {
                continue;
            }
            let _inv = self.inv(s, v.end, Event::ProtectionPage);
            let mut m = self.machine.st.lock();
            let pmds: Vec<u64> = m
                .mm_ref(self.id)
                .pmds
                .range(s..v.end)
                .map(|(a, _)| *a)
                .collect();
            for h in pmds {
                // copy_huge_pmd(): share the folio, write-protect both.
                let p = {
                    let p = m.mm(self.id).pmds.get_mut(&h).expect("pmd");
                    p.writable = false;
                    *p
                };
                if !is_zero_pfn(p.head) {
                    m.frame(p.head).exclusive = false;
                    m.pmd_map_add(p.head, child.id, h);
                }
                m.mm(child.id).pmds.insert(h, p);
            }
            let ptes: Vec<(u64, Pte)> = m
                .mm_ref(self.id)
                .ptes
                .range(s..v.end)
                .map(|(a, p)| (*a, *p))
                .collect();
            for (a, pte) in ptes {
                // copy_nonpresent_pte(): a device-exclusive entry is restored (under this
                // notification) and copied as the present page it was.
                let pte = match pte {
                    Pte::Exclusive { pfn, writable } => {
                        let p = super::exclusive::restored(pfn, writable, v.read);
                        m.mm(self.id).ptes.insert(a, p);
                        p
                    }
                    p => p,
                };
                match pte {
                    // copy_present_pte(): ptep_set_wrprotect() on the parent, child read-only,
                    // dirty bit kept, the page no longer exclusive.
                    Pte::Present(mut p) => {
                        p.writable = false;
                        m.mm(self.id).ptes.insert(a, Pte::Present(p));
                        if !is_zero_pfn(p.pfn) {
                            m.frame(p.pfn).exclusive = false;
                            m.rmap_add(p.pfn, child.id, a);
                        }
                        m.set_pte(child.id, a, Pte::Present(p));
                    }
                    // copy_nonpresent_pte(): swap_duplicate(), exclusivity lost.
                    Pte::Swap { slot, .. } => {
                        if let Some(sl) = m.slots.get_mut(&slot) {
                            sl.count += 1;
                        }
                        m.mm(self.id).ptes.insert(
                            a,
                            Pte::Swap {
                                slot,
                                exclusive: false,
                            },
                        );
                        m.set_pte(
                            child.id,
                            a,
                            Pte::Swap {
                                slot,
                                exclusive: false,
                            },
                        );
                    }
                    // copy_nonpresent_pte(): a device-private entry is shared read-only, as
                    // a present page is (a CPU write migrates it back, then breaks COW).
                    Pte::Device { pfn, .. } => {
                        let e = Pte::Device {
                            pfn,
                            writable: false,
                        };
                        m.mm(self.id).ptes.insert(a, e);
                        m.frame(pfn).exclusive = false;
                        m.rmap_add(pfn, child.id, a);
                        m.set_pte(child.id, a, e);
                    }
                    // A migration entry (another mm's migration of a page we share) is copied
                    // read-only; `remove_migration_ptes()` finds the child too.
                    Pte::Migration { pfn, .. } => {
                        let e = Pte::Migration {
                            pfn,
                            writable: false,
                        };
                        m.mm(self.id).ptes.insert(a, e);
                        m.set_pte(child.id, a, e);
                        if let Some(iso) = m.isolated.get_mut(&pfn) {
                            iso.mappers.push((child.id, a, false));
                        }
                    }
                    Pte::Exclusive { .. } => unreachable!("restored above"),
                }
            }
            let tables: Vec<u64> = m
                .mm_ref(self.id)
                .tables
                .range(huge_down(s)..v.end)
                .copied()
                .collect();
            m.mm(child.id).tables.extend(tables);
        }
    }
}

impl MmHandle {
    /// `mmap(NULL, len, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)` (+ `MADV_HUGEPAGE` for
    /// `flags.thp`, 2 MiB-aligned; `flags.io` builds a `VM_IO | VM_PFNMAP` VMA).
    pub fn mmap(&self, len: u64, prot: Prot, flags: MapFlags) -> Result<u64, Errno> {
        let _s = self.0.violations.scope();
        if self.0.gone() {
            return Err(Errno::ESRCH);
        }
        if len == 0 {
            return Err(Errno::EINVAL);
        }
        let len = page_up(len).ok_or(Errno::ENOMEM)?;
        let _w = self.0.mmap_write("mmap");
        let align = if flags.thp { HPAGE_SIZE } else { PAGE_SIZE };
        let start = self.0.unmapped_area(len, align)?;
        self.0.insert_vma(start, start + len, prot, flags);
        Ok(start)
    }

    /// `mmap(addr, len, prot, MAP_FIXED | ...)`: replaces whatever was there (an implicit
    /// munmap, with its `MMU_NOTIFY_UNMAP`).
    pub fn mmap_fixed(
        &self,
        addr: u64,
        len: u64,
        prot: Prot,
        flags: MapFlags,
    ) -> Result<u64, Errno> {
        let _s = self.0.violations.scope();
        if self.0.gone() {
            return Err(Errno::ESRCH);
        }
        let Some((start, end)) = self.0.span(addr, len)? else {
            return Err(Errno::EINVAL);
        };
        let _w = self.0.mmap_write("mmap");
        if self.0.detach_vmas(start, end) {
            self.0.unmap_region(start, end);
        }
        self.0.insert_vma(start, end, prot, flags);
        Ok(start)
    }

    /// `munmap(addr, len)`: partial unmaps split VMAs (and a PMD-mapped THP first, with
    /// `MMU_NOTIFY_CLEAR`); then, with `mmap_lock` downgraded to read, `MMU_NOTIFY_UNMAP` over
    /// `[addr, addr + len)` and the zap. Unmapping nothing is not an error.
    pub fn munmap(&self, addr: u64, len: u64) -> Result<(), Errno> {
        let _s = self.0.violations.scope();
        if self.0.gone() {
            return Err(Errno::ESRCH);
        }
        let Some((start, end)) = self.0.span(addr, len)? else {
            return Err(Errno::EINVAL);
        };
        let w = self.0.mmap_write("munmap");
        if !self.0.detach_vmas(start, end) {
            return Ok(());
        }
        let _r = w.downgrade();
        self.0.unmap_region(start, end);
        Ok(())
    }

    /// `mprotect(addr, len, prot)`: VMAs split and updated, then per VMA piece with page
    /// tables, `MMU_NOTIFY_PROTECTION_VMA` and the PTE update (`change_protection()`).
    /// Upgrading makes exclusive anonymous pages writable at once
    /// (`MM_CP_TRY_CHANGE_WRITABLE`), others on their next write fault. `ENOMEM` at the first
    /// hole, after the VMAs before it were changed.
    pub fn mprotect(&self, addr: u64, len: u64, prot: Prot) -> Result<(), Errno> {
        let _s = self.0.violations.scope();
        let mm = &self.0;
        if mm.gone() {
            return Err(Errno::ESRCH);
        }
        let Some((start, end)) = mm.span(addr, len)? else {
            return Ok(());
        };
        let _w = mm.mmap_write("mprotect");
        let pieces = mm.machine.st.lock().mm_ref(mm.id).vmas_in(start, end);
        let mut a = start;
        let mut result = Ok(());
        for (s, e, _) in pieces {
            if s != a {
                result = Err(Errno::ENOMEM);
                break;
            }
            let straddling = mm.machine.st.lock().mm_ref(mm.id).straddling_pmds(s, e);
            for h in straddling {
                mm.split_huge_pmd(mm.id, h);
            }
            let has_entries = {
                let mut m = mm.machine.st.lock();
                let st = m.mm(mm.id);
                st.split_vma(s);
                st.split_vma(e);
                let v = st.vmas.get_mut(&s).expect("vma after split");
                v.read = prot.read;
                v.write = prot.write;
                st.has_entries(s, e)
            };
            if has_entries {
                let _inv = mm.inv(s, e, Event::ProtectionVma);
                let mut m = mm.machine.st.lock();
                let pmds: Vec<u64> = m.mm_ref(mm.id).pmds.range(s..e).map(|(h, _)| *h).collect();
                for h in pmds {
                    let head = m.mm_ref(mm.id).pmds[&h].head;
                    let excl =
                        !is_zero_pfn(head) && m.frames.get(&head).is_some_and(|f| f.exclusive);
                    let p = m.mm(mm.id).pmds.get_mut(&h).expect("pmd");
                    p.accessible = prot.read;
                    p.writable = prot.write && (p.writable || excl);
                }
                let ptes: Vec<u64> = m.mm_ref(mm.id).ptes.range(s..e).map(|(a, _)| *a).collect();
                for va in ptes {
                    let p = match m.mm_ref(mm.id).ptes.get(&va).copied() {
                        Some(Pte::Present(p)) => p,
                        // change_pte_range(): writable device-private and migration entries
                        // become readable; nothing is ever made writable here.
                        Some(Pte::Device { pfn, writable }) if writable && !prot.write => {
                            let e = Pte::Device {
                                pfn,
                                writable: false,
                            };
                            m.mm(mm.id).ptes.insert(va, e);
                            continue;
                        }
                        Some(Pte::Migration { pfn, writable }) if writable && !prot.write => {
                            let e = Pte::Migration {
                                pfn,
                                writable: false,
                            };
                            m.mm(mm.id).ptes.insert(va, e);
                            continue;
                        }
                        Some(Pte::Exclusive { pfn, writable }) if writable && !prot.write => {
                            let e = Pte::Exclusive {
                                pfn,
                                writable: false,
                            };
                            m.mm(mm.id).ptes.insert(va, e);
                            continue;
                        }
                        _ => continue,
                    };
                    let excl =
                        !is_zero_pfn(p.pfn) && m.frames.get(&p.pfn).is_some_and(|f| f.exclusive);
                    if let Some(Pte::Present(q)) = m.mm(mm.id).ptes.get_mut(&va) {
                        q.accessible = prot.read;
                        q.writable = prot.write && (q.writable || excl);
                    }
                }
            }
            a = e;
        }
        if result.is_ok() && a < end {
            result = Err(Errno::ENOMEM);
        }
        let mut m = mm.machine.st.lock();
        let st = m.mm(mm.id);
        let bounds: Vec<u64> = st
            .vmas
            .range(start.saturating_sub(1)..=end)
            .map(|(s, _)| *s)
            .collect();
        for b in bounds.into_iter().chain([end]) {
            st.merge_at(b);
        }
        result
    }

    fn madvise(&self, addr: u64, len: u64, free: bool) -> Result<(), Errno> {
        let mm = &self.0;
        if mm.gone() {
            return Err(Errno::ESRCH);
        }
        let Some((start, end)) = mm.span(addr, len)? else {
            return Ok(());
        };
        // MADV_DONTNEED and MADV_FREE take mmap_lock for read.
        let _r = mm.mmap_read("madvise");
        let pieces = mm.machine.st.lock().mm_ref(mm.id).vmas_in(start, end);
        let mut covered = start;
        let mut hole = false;
        for (s, e, v) in pieces {
            hole |= s != covered;
            covered = e;
            // madvise_dontneed_free_valid_vma(): VM_PFNMAP (and VM_LOCKED, VM_HUGETLB) refused.
            if v.io {
                return Err(Errno::EINVAL);
            }
            // zap_page_range_single() / madvise_free_single_vma(): MMU_NOTIFY_CLEAR around the
            // walk; a PMD only partly covered is split inside it (a nested CLEAR).
            let _inv = mm.inv(s, e, Event::Clear);
            let mut m = mm.lock_split(s, e);
            if !free {
                m.zap_range(mm.id, s, e);
                continue;
            }
            // madvise_free_huge_pmd(): whole exclusive PMDs become clean and lazyfree.
            let pmds: Vec<u64> = m.mm_ref(mm.id).pmds.range(s..e).map(|(h, _)| *h).collect();
            for h in pmds {
                let head = m.mm_ref(mm.id).pmds[&h].head;
                if is_zero_pfn(head) || m.mapcount(head) != 1 {
                    continue;
                }
                m.mm(mm.id).pmds.get_mut(&h).expect("pmd").dirty = false;
                for p in head..head + HPAGE_NR {
                    if let Some(f) = m.frames.get_mut(&p) {
                        f.dirty = false;
                        f.lazyfree = true;
                    }
                }
            }
            // madvise_free_pte_range()
            let ptes: Vec<(u64, Pte)> = m
                .mm_ref(mm.id)
                .ptes
                .range(s..e)
                .map(|(a, p)| (*a, *p))
                .collect();
            for (a, pte) in ptes {
                match pte {
                    Pte::Swap { .. } => m.zap_pte(mm.id, a),
                    Pte::Present(p) if !is_zero_pfn(p.pfn) => {
                        if m.is_large(p.pfn) {
                            let head = m.frames[&p.pfn].head;
                            if !m.frames[&head].pmd_maps.is_empty() {
                                continue;
                            }
                            m.split_folio(p.pfn);
                        }
                        if m.mapcount(p.pfn) != 1 {
                            continue;
                        }
                        if let Some(slot) = m.frames[&p.pfn].swapcache {
                            if m.slots.get(&slot).is_some_and(|s| s.count > 0) {
                                continue;
                            }
                            m.uncache(p.pfn, slot);
                        }
                        let f = m.frame(p.pfn);
                        f.dirty = false;
                        f.lazyfree = true;
                        if let Some(Pte::Present(q)) = m.mm(mm.id).ptes.get_mut(&a) {
                            q.dirty = false;
                        }
                    }
                    // Device-private, migration and device-exclusive entries are left alone.
                    Pte::Present(_)
                    | Pte::Device { .. }
                    | Pte::Migration { .. }
                    | Pte::Exclusive { .. } => {}
                }
            }
        }
        if hole || covered < end {
            return Err(Errno::ENOMEM);
        }
        Ok(())
    }

    /// `madvise(addr, len, MADV_DONTNEED)`: zaps the range (`MMU_NOTIFY_CLEAR`); later reads
    /// see zeroes. `EINVAL` on I/O memory, `ENOMEM` if part of the range is unmapped.
    pub fn madvise_dontneed(&self, addr: u64, len: u64) -> Result<(), Errno> {
        let _s = self.0.violations.scope();
        self.madvise(addr, len, false)
    }

    /// `madvise(addr, len, MADV_FREE)`: exclusive pages become clean and lazyfree
    /// (`MMU_NOTIFY_CLEAR`); reclaim then discards them unless redirtied. Swap entries in the
    /// range are freed.
    pub fn madvise_free(&self, addr: u64, len: u64) -> Result<(), Errno> {
        let _s = self.0.violations.scope();
        self.madvise(addr, len, true)
    }

    /// `fork()`: a child mm with the same VMAs; private pages shared copy-on-write (both PTEs
    /// read-only, `MMU_NOTIFY_PROTECTION_PAGE` on the parent for every VMA that has pages),
    /// THPs shared by PMD, swap entries duplicated. The child has no notifiers.
    pub fn fork(&self) -> Result<MmHandle, Errno> {
        let _s = self.0.violations.scope();
        if self.0.gone() {
            return Err(Errno::ESRCH);
        }
        let _w = self.0.mmap_write("fork");
        let child = MmHandle::on_machine(
            self.0.machine.clone(),
            self.0.cfg,
            self.0.violations.clone(),
        );
        self.0.copy_to(&child.0);
        Ok(child)
    }

    /// The VMAs now: (start, end, prot, flags).
    pub fn vmas(&self) -> Vec<(u64, u64, Prot, MapFlags)> {
        let m = self.0.machine.st.lock();
        m.mm_ref(self.0.id)
            .vmas
            .iter()
            .map(|(s, v)| {
                (
                    *s,
                    v.end,
                    Prot {
                        read: v.read,
                        write: v.write,
                    },
                    MapFlags {
                        thp: v.thp,
                        io: v.io,
                        no_migrate: v.no_migrate,
                    },
                )
            })
            .collect()
    }
}
