//! The CPU page-fault handler (`handle_mm_fault()` for private anonymous memory, 6.12
//! `mm/memory.c` and `mm/huge_memory.c`) and CPU loads and stores.

use super::state::{
    huge_down, is_zero_pfn, page_down, MachineState, MmId, Pmd, Present, Pte, HPAGE_SIZE,
    HUGE_ZERO_PFN, PAGE_SIZE, ZERO_PFN,
};
use super::{MmHandle, MmShared};
use pgtable::Errno;
use svm::platform::Event;

/// What a fault pass decided to do outside the machine lock.
enum Step {
    Done,
    /// `__split_huge_pmd()` then retry.
    SplitPmd(u64),
    /// `wp_page_copy()` of `old` (present PTE `pte`), data copied before the notifier.
    Copy {
        pte: Present,
        data: u64,
    },
    /// Loop again (after a swap-in that still needs `do_wp_page()`).
    Again,
    /// A device-private entry: the owner's `migrate_to_ram`, then retry.
    ToRam(u64),
    /// A migration entry: `migration_entry_wait()`, then retry.
    WaitMigration,
    /// A device-exclusive entry: `remove_device_exclusive_entry()`, then retry.
    Restore,
}

/// `wp_can_reuse_anon_folio()` (order-0 pages; a large folio is never reused piecewise).
fn can_reuse(m: &MachineState, pfn: u64) -> bool {
    if m.is_large(pfn) || m.mapcount(pfn) != 1 {
        return false;
    }
    match m.frames.get(&pfn).and_then(|f| f.swapcache) {
        // folio_free_swap() fails while swap PTEs still refer to the slot.
        Some(slot) => m.slots.get(&slot).is_none_or(|s| s.count == 0),
        None => true,
    }
}

/// Marks the page exclusive after a reuse and drops its swap cache (`folio_free_swap()`).
fn reuse(m: &mut MachineState, pfn: u64) {
    if let Some(slot) = m.frame(pfn).swapcache {
        m.uncache(pfn, slot);
    }
    m.frame(pfn).exclusive = true;
}

impl MmShared {
    /// `handle_mm_fault()`: the caller holds `mmap_lock` and checked the VMA allows the access.
    /// `Err(EFAULT)` stands for `VM_FAULT_SIGSEGV`/`VM_FAULT_SIGBUS`.
    pub(crate) fn handle_mm_fault(&self, va: u64, write: bool) -> Result<(), Errno> {
        let va = page_down(va);
        for _ in 0..64 {
            let step = {
                let mut m = self.machine.st.lock();
                self.fault_step(&mut m, va, write)?
            };
            match step {
                Step::Done => return Ok(()),
                Step::Again => {}
                Step::SplitPmd(h) => self.split_huge_pmd(self.id, h),
                Step::ToRam(owner) => self.device_fault(owner, va)?,
                Step::WaitMigration => self.wait_migration(va),
                Step::Restore => self.restore_exclusive(va),
                Step::Copy { pte, data } => {
                    // wp_page_copy(): the notifier covers the page, then pte_same() under the
                    // lock; a changed PTE ends the notifier and retries the fault.
                    let _inv = self.inv(va, va + PAGE_SIZE, Event::Clear);
                    let mut m = self.machine.st.lock();
                    if m.mm_ref(self.id).ptes.get(&va) == Some(&Pte::Present(pte)) {
                        let new = m.alloc_page(data);
                        m.rmap_add(new, self.id, va);
                        let np = Present {
                            pfn: new,
                            writable: true,
                            dirty: true,
                            accessible: true,
                        };
                        m.mm(self.id).ptes.insert(va, Pte::Present(np));
                        m.rmap_del(pte.pfn, self.id, va);
                    }
                }
            }
        }
        self.violations
            .record("mm", format!("fault at {va:#x} did not converge"));
        Err(Errno::EFAULT)
    }

    fn fault_step(&self, m: &mut MachineState, va: u64, write: bool) -> Result<Step, Errno> {
        let id: MmId = self.id;
        let h = huge_down(va);
        let st = m.mm(id);
        let Some((vstart, vma)) = st.vma(va) else {
            return Err(Errno::EFAULT);
        };
        // access_error(): SIGSEGV.
        if vma.io || !vma.read || (write && !vma.write) {
            return Err(Errno::EFAULT);
        }
        if let Some(pmd) = st.pmds.get(&h).copied() {
            if !pmd.accessible {
                return Err(Errno::EFAULT);
            }
            if !write {
                return Ok(Step::Done);
            }
            if pmd.writable {
                st.pmds.get_mut(&h).expect("pmd").dirty = true;
                return Ok(Step::Done);
            }
            // do_huge_pmd_wp_page(): the huge zero folio always splits; a shared THP splits
            // (fallback to a 4 KiB COW); an exclusive one is reused in place.
            if is_zero_pfn(pmd.head) {
                return Ok(Step::SplitPmd(h));
            }
            // PageAnonExclusive, or folio_ref_count() == 1: this PMD is the only reference.
            let f = &m.frames[&pmd.head];
            let sole = f.pmd_maps.len() == 1
                && (pmd.head..pmd.head + 512).all(|p| {
                    m.frames
                        .get(&p)
                        .is_none_or(|f| f.rmap.is_empty() && f.swapcache.is_none())
                });
            let exclusive = f.exclusive || sole;
            if exclusive {
                let p = m.mm(id).pmds.get_mut(&h).expect("pmd");
                p.writable = true;
                p.dirty = true;
                m.frame(pmd.head).exclusive = true;
                return Ok(Step::Done);
            }
            return Ok(Step::SplitPmd(h));
        }
        match st.ptes.get(&va).copied() {
            None => {
                // do_anonymous_page() / do_huge_pmd_anonymous_page()
                if let Some(v) = st.vmas.get_mut(&vstart) {
                    v.anon = true;
                }
                // check_stable_address_space(): the OOM reaper ran.
                if st.unstable {
                    return Err(Errno::EFAULT);
                }
                let thp_ok =
                    vma.thp && h >= vstart && h + HPAGE_SIZE <= vma.end && !st.tables.contains(&h);
                if thp_ok {
                    if !write && self.cfg.huge_zero_page {
                        st.pmds.insert(
                            h,
                            Pmd {
                                head: HUGE_ZERO_PFN,
                                writable: false,
                                dirty: false,
                                accessible: true,
                            },
                        );
                        return Ok(Step::Done);
                    }
                    let head = m.alloc_thp();
                    m.pmd_map_add(head, id, h);
                    let pmd = Pmd {
                        head,
                        writable: vma.write,
                        dirty: write,
                        accessible: true,
                    };
                    m.mm(id).pmds.insert(h, pmd);
                    return Ok(Step::Done);
                }
                if !write {
                    let z = Present {
                        pfn: ZERO_PFN,
                        writable: false,
                        dirty: false,
                        accessible: true,
                    };
                    m.set_pte(id, va, Pte::Present(z));
                    return Ok(Step::Done);
                }
                let pfn = m.alloc_page(0);
                m.rmap_add(pfn, id, va);
                m.set_pte(
                    id,
                    va,
                    Pte::Present(Present {
                        pfn,
                        writable: true,
                        dirty: true,
                        accessible: true,
                    }),
                );
                Ok(Step::Done)
            }
            Some(Pte::Swap { slot, exclusive }) => {
                // do_swap_page()
                let Some(s) = m.slots.get(&slot).cloned() else {
                    self.violations.record(
                        "mm",
                        format!("swap PTE at {va:#x} refers to a free slot {slot}"),
                    );
                    return Err(Errno::EFAULT);
                };
                let cached = s.cache.filter(|p| m.alive(*p));
                let pfn = match cached {
                    Some(p) => p,
                    None => {
                        let p = m.alloc_page(s.data);
                        m.frame(p).swapcache = Some(slot);
                        m.slots.get_mut(&slot).expect("slot").cache = Some(p);
                        p
                    }
                };
                // swap_free()
                let count = {
                    let sl = m.slots.get_mut(&slot).expect("slot");
                    sl.count -= 1;
                    sl.count
                };
                // should_try_to_free_swap(): a write fault and only the swap cache holds it.
                if write && m.mapcount(pfn) == 0 && count == 0 {
                    m.uncache(pfn, slot);
                }
                let sole = m.mapcount(pfn) == 0 && m.frames[&pfn].swapcache.is_none();
                let excl = exclusive || sole;
                let mut pte = Present {
                    pfn,
                    writable: false,
                    dirty: false,
                    accessible: true,
                };
                let mut still_write = write;
                if excl && vma.write {
                    pte.writable = true;
                    if write {
                        pte.dirty = true;
                        still_write = false;
                    }
                }
                m.frame(pfn).exclusive = excl;
                m.rmap_add(pfn, id, va);
                m.set_pte(id, va, Pte::Present(pte));
                Ok(if still_write { Step::Again } else { Step::Done })
            }
            Some(Pte::Device { pfn, .. }) => Ok(Step::ToRam(m.pool_of(pfn))),
            Some(Pte::Migration { .. }) => Ok(Step::WaitMigration),
            Some(Pte::Exclusive { .. }) => Ok(Step::Restore),
            Some(Pte::Present(p)) => {
                if !p.accessible {
                    return Err(Errno::EFAULT);
                }
                if !write || p.writable {
                    if write {
                        if let Some(Pte::Present(q)) = st.ptes.get_mut(&va) {
                            q.dirty = true;
                        }
                    }
                    return Ok(Step::Done);
                }
                // do_wp_page()
                if !is_zero_pfn(p.pfn) && (m.frames[&p.pfn].exclusive || can_reuse(m, p.pfn)) {
                    // wp_page_reuse(): raising permission, no notifier.
                    reuse(m, p.pfn);
                    if let Some(Pte::Present(q)) = m.mm(id).ptes.get_mut(&va) {
                        q.writable = true;
                        q.dirty = true;
                    }
                    return Ok(Step::Done);
                }
                let data = m.data(p.pfn).unwrap_or(0);
                Ok(Step::Copy { pte: p, data })
            }
        }
    }

    /// `__split_huge_pmd()` in mm `id` (this mm or another one mapping the same folio), with its
    /// `MMU_NOTIFY_CLEAR` over the 2 MiB.
    pub(crate) fn split_huge_pmd(&self, id: MmId, h: u64) {
        let other;
        let mm: &MmShared = if id == self.id {
            self
        } else {
            match self.other(id) {
                Some(o) => {
                    other = o;
                    &other
                }
                None => return,
            }
        };
        let _inv = mm.inv(h, h + HPAGE_SIZE, Event::Clear);
        mm.machine.st.lock().split_pmd(id, h);
    }

    /// A CPU load or store (`op` gets the data word and returns the value to store, if any).
    pub(crate) fn cpu_access(
        &self,
        va: u64,
        write: bool,
        op: impl Fn(u64) -> Option<u64>,
    ) -> Result<u64, Errno> {
        if self.gone() {
            return Err(Errno::ESRCH);
        }
        if va >= self.cfg.task_size {
            return Err(Errno::EFAULT);
        }
        let va = page_down(va);
        for _ in 0..64 {
            // The hardware walk: no mmap_lock, just the present PTE.
            {
                let mut m = self.machine.st.lock();
                if let Some(c) = m.cpu_map(self.id, va) {
                    if c.accessible && (!write || c.writable) {
                        let old = m.data(c.pfn).unwrap_or_else(|| {
                            self.violations.record(
                                "mm",
                                format!("CPU PTE at {va:#x} maps freed pfn {:#x}", c.pfn),
                            );
                            super::state::POISON
                        });
                        if write {
                            if let Some(v) = op(old) {
                                if let Some(f) = m.frames.get_mut(&c.pfn) {
                                    f.data = v;
                                }
                            }
                            // The hardware sets the dirty bit of the PTE (or PMD) it wrote through.
                            let st = m.mm(self.id);
                            if c.huge {
                                if let Some(p) = st.pmds.get_mut(&huge_down(va)) {
                                    p.dirty = true;
                                }
                            } else if let Some(Pte::Present(p)) = st.ptes.get_mut(&va) {
                                p.dirty = true;
                            }
                        }
                        return Ok(old);
                    }
                }
            }
            // The page fault: do_user_addr_fault() takes mmap_lock, checks the VMA.
            let _g = self.mmap_read("page fault");
            if self.gone() {
                return Err(Errno::ESRCH);
            }
            {
                let m = self.machine.st.lock();
                let Some((_, v)) = m.mm_ref(self.id).vma(va) else {
                    return Err(Errno::EFAULT);
                };
                if v.io || !v.read || (write && !v.write) {
                    return Err(Errno::EFAULT);
                }
            }
            self.handle_mm_fault(va, write)?;
        }
        Err(Errno::EBUSY)
    }
}

impl MmHandle {
    /// A CPU load of the data word of the page at `addr` (faulting it in like the kernel).
    /// `EFAULT` for holes, PROT_NONE and I/O memory (SIGSEGV), `ESRCH` after exit.
    pub fn cpu_read(&self, addr: u64) -> Result<u64, Errno> {
        let _s = self.0.violations.scope();
        self.0.cpu_access(addr, false, |_| None)
    }

    /// A CPU store to the data word of the page at `addr` (COW break, swap-in, THP as needed).
    pub fn cpu_write(&self, addr: u64, v: u64) -> Result<(), Errno> {
        let _s = self.0.violations.scope();
        self.0.cpu_access(addr, true, |_| Some(v)).map(|_| ())
    }

    /// A CPU atomic add; returns the old value.
    pub fn cpu_add(&self, addr: u64, v: u64) -> Result<u64, Errno> {
        let _s = self.0.violations.scope();
        self.0.cpu_access(addr, true, |o| Some(o.wrapping_add(v)))
    }

    /// What the CPU page table maps at `addr`: (pfn, writable), if a page is present.
    pub fn cpu_pte(&self, addr: u64) -> Option<(u64, bool)> {
        let m = self.0.machine.st.lock();
        m.cpu_map(self.0.id, addr).map(|c| (c.pfn, c.writable))
    }

    /// Whether `addr` is mapped by a PMD (a 2 MiB THP or the huge zero folio).
    pub fn is_pmd_mapped(&self, addr: u64) -> bool {
        let m = self.0.machine.st.lock();
        m.mm_ref(self.0.id).pmds.contains_key(&huge_down(addr))
    }

    /// Whether `addr` holds a swap entry.
    pub fn is_swapped(&self, addr: u64) -> bool {
        let m = self.0.machine.st.lock();
        matches!(
            m.mm_ref(self.0.id).ptes.get(&page_down(addr)),
            Some(Pte::Swap { .. })
        )
    }

    /// Whether the page at `addr` is part of a large folio (a THP, whole or split).
    pub fn in_large_folio(&self, addr: u64) -> bool {
        let m = self.0.machine.st.lock();
        m.cpu_map(self.0.id, addr)
            .is_some_and(|c| m.is_large(c.pfn))
    }

    /// Whether `addr` holds a device-exclusive entry (the page handed over to a device).
    pub fn is_exclusive(&self, addr: u64) -> bool {
        let m = self.0.machine.st.lock();
        matches!(
            m.mm_ref(self.0.id).ptes.get(&page_down(addr)),
            Some(Pte::Exclusive { .. })
        )
    }

    /// The data word of a live frame (`None` if freed). Zero pages read 0.
    pub fn frame_data(&self, pfn: u64) -> Option<u64> {
        self.0.machine.st.lock().data(pfn)
    }

    /// Whether frame `pfn` is alive.
    pub fn frame_alive(&self, pfn: u64) -> bool {
        self.0.machine.st.lock().alive(pfn)
    }

    /// Whether frame `pfn` is dirty (`PG_dirty`).
    pub fn frame_dirty(&self, pfn: u64) -> bool {
        self.0
            .machine
            .st
            .lock()
            .frames
            .get(&pfn)
            .is_some_and(|f| f.alive && f.dirty)
    }

    /// How many PTEs and PMDs map frame `pfn` (`folio_mapcount()` of the page).
    pub fn frame_mapcount(&self, pfn: u64) -> usize {
        self.0.machine.st.lock().mapcount(pfn)
    }

    /// Frames allocated and not freed on this mm's machine (zero pages excluded).
    pub fn live_frames(&self) -> usize {
        self.0.machine.st.lock().live_frames()
    }

    /// Swap slots in use on this mm's machine.
    pub fn swap_slots(&self) -> usize {
        self.0.machine.st.lock().slots.len()
    }
}
