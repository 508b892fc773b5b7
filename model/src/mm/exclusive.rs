//! Device-exclusive entries (6.12 `make_device_exclusive_range()` in `mm/rmap.c`,
//! `remove_device_exclusive_entry()` in `mm/memory.c`): the CPU hands an anonymous page over
//! to a device for atomics, and takes it back on its next access.
//!
//! `make_exclusive` faults each page in for writing (a huge PMD split first, as
//! `FOLL_SPLIT_PMD` does), locks it (`pins`), and under an `MMU_NOTIFY_EXCLUSIVE`
//! invalidation carrying the caller's owner replaces its PTE with an exclusive entry naming
//! the same page. The page stays locked and referenced until `release_exclusive`. A CPU
//! access to an exclusive entry waits for the page lock, then restores the PTE under an
//! `MMU_NOTIFY_EXCLUSIVE` with no owner. fork restores the entry (under its own
//! `MMU_NOTIFY_PROTECTION_PAGE`) and copies it as a present page; mprotect makes a writable
//! entry readable; munmap and `MADV_DONTNEED` drop it.
//!
//! 6.12 hands over no page of a large folio, and the engine's kernel glue cannot split one
//! that PTEs map: so `make_exclusive` first splits every PMD-mapped THP of the span (page
//! and folio, as the glue's `migrate_vma_setup()` does) and hands nothing over in that call
//! (the caller's seq check fails and it goes again), and a page of a large folio mapped by
//! PTEs is `EBUSY`, as the glue reports it.
//!
//! Approximations: only a page this mm alone maps is handed over (the kernel converts every
//! mapping, but `FOLL_WRITE` has just broken COW, so there is one); the entry stays in the
//! page's rmap (the kernel removes it and holds a reference instead): either keeps the page
//! alive, and nothing but the entry's own address reaches it.

use super::state::{huge_down, Present, Pte, PAGE_SIZE};
use super::MmShared;
use crate::lockdep;
use pgtable::Errno;
use svm::platform::Event;

impl MmShared {
    pub(crate) fn make_exclusive(
        &self,
        start: u64,
        pages: &mut [u64],
        owner: u64,
    ) -> Result<usize, Errno> {
        if lockdep::holds_range() || lockdep::holds_engine() {
            lockdep::report(
                "make_device_exclusive_range() under an engine lock (its callbacks take it)".into(),
            );
        }
        if start & (PAGE_SIZE - 1) != 0 {
            self.violations.record(
                "mm",
                "make_device_exclusive_range() with a start that is not page aligned",
            );
            return Err(Errno::EINVAL);
        }
        pages.fill(0);
        let end = start + pages.len() as u64 * PAGE_SIZE;
        let mut h = huge_down(start);
        let mut split = false;
        while h < end {
            let has = self.machine.st.lock().mm_ref(self.id).pmds.contains_key(&h);
            if has {
                let _ = self.make_small(h.max(start));
                split = true;
            }
            h += super::state::HPAGE_SIZE;
        }
        if split {
            return Ok(pages.len());
        }
        let mut va = start;
        for (i, slot) in pages.iter_mut().enumerate() {
            // get_user_pages_remote(FOLL_GET | FOLL_WRITE | FOLL_SPLIT_PMD): what it could
            // not fault ends the walk (an error only for the first page).
            if let Err(e) = self.gup_write(va) {
                return if i == 0 { Err(e) } else { Ok(i) };
            }
            *slot = match self.hand_over(va, owner) {
                Ok(p) => p,
                Err(()) => return Err(Errno::EBUSY),
            };
            va += PAGE_SIZE;
        }
        Ok(pages.len())
    }

    /// The `get_user_pages_remote()` part for one page.
    fn gup_write(&self, va: u64) -> Result<(), Errno> {
        {
            let m = self.machine.st.lock();
            match m.mm_ref(self.id).vma(va) {
                Some((_, v)) if !v.io && v.read && v.write => {}
                _ => return Err(Errno::EFAULT),
            }
        }
        let h = huge_down(va);
        if self.machine.st.lock().mm_ref(self.id).pmds.contains_key(&h) {
            self.split_huge_pmd(self.id, h);
        }
        self.handle_mm_fault(va, true)
    }

    /// `folio_trylock()` + `folio_make_device_exclusive()` for the page at `va`: its pfn,
    /// left locked, or 0; `Err` for a page of a large folio.
    fn hand_over(&self, va: u64, owner: u64) -> Result<u64, ()> {
        let pfn = {
            let mut m = self.machine.st.lock();
            let Some(Pte::Present(p)) = m.mm_ref(self.id).ptes.get(&va).copied() else {
                return Ok(0);
            };
            if m.is_large(p.pfn) {
                return Err(());
            }
            if !p.writable || m.frames[&p.pfn].pins != 0 || m.mappers(p.pfn).len() != 1 {
                return Ok(0);
            }
            m.frame(p.pfn).pins += 1;
            p.pfn
        };
        let _inv = self.inv_owner(va, va + PAGE_SIZE, Event::Exclusive, owner);
        let mut m = self.machine.st.lock();
        match m.mm_ref(self.id).ptes.get(&va).copied() {
            Some(Pte::Present(p)) if p.pfn == pfn && p.writable => {
                if p.dirty {
                    m.mark_dirty(pfn);
                }
                m.mm(self.id).ptes.insert(
                    va,
                    Pte::Exclusive {
                        pfn,
                        writable: true,
                    },
                );
                Ok(pfn)
            }
            _ => {
                m.frame(pfn).pins -= 1;
                m.maybe_free(pfn);
                drop(m);
                self.machine.migr_cv.notify_all();
                Ok(0)
            }
        }
    }

    pub(crate) fn release_exclusive(&self, pages: &[u64]) {
        let mut m = self.machine.st.lock();
        for &pfn in pages.iter().filter(|&&p| p != 0) {
            match m.frames.get_mut(&pfn) {
                Some(f) if f.pins > 0 => f.pins -= 1,
                _ => {
                    self.violations.record(
                        "mm",
                        format!("release of exclusive page {pfn:#x} that was not handed over"),
                    );
                    continue;
                }
            }
            m.maybe_free(pfn);
        }
        drop(m);
        self.machine.migr_cv.notify_all();
    }

    /// `remove_device_exclusive_entry()`: waits for the page lock, then restores the PTE at
    /// `va` under an ownerless `MMU_NOTIFY_EXCLUSIVE`.
    pub(crate) fn restore_exclusive(&self, va: u64) {
        let pfn = {
            let mut m = self.machine.st.lock();
            loop {
                match m.mm_ref(self.id).ptes.get(&va).copied() {
                    Some(Pte::Exclusive { pfn, .. }) if m.frames[&pfn].pins != 0 => {
                        m = self.machine.migr_cv.wait(m);
                    }
                    Some(Pte::Exclusive { pfn, .. }) => {
                        m.frame(pfn).pins += 1;
                        break pfn;
                    }
                    _ => return,
                }
            }
        };
        {
            let _inv = self.inv_owner(va, va + PAGE_SIZE, Event::Exclusive, 0);
            let mut m = self.machine.st.lock();
            if let Some(Pte::Exclusive { pfn: p, writable }) =
                m.mm_ref(self.id).ptes.get(&va).copied()
            {
                if p == pfn {
                    // The fault checked the VMA allows access.
                    m.mm(self.id).ptes.insert(va, restored(pfn, writable, true));
                }
            }
            m.frame(pfn).pins -= 1;
            m.maybe_free(pfn);
        }
        self.machine.migr_cv.notify_all();
    }
}

/// The present PTE an exclusive entry of `pfn` goes back to (`restore_exclusive_pte()`: the
/// dirty bit went to the page when it was handed over; `accessible` per the VMA's
/// protection, as `vm_page_prot` gives it).
pub(crate) fn restored(pfn: u64, writable: bool, accessible: bool) -> Pte {
    Pte::Present(Present {
        pfn,
        writable: writable && accessible,
        dirty: false,
        accessible,
    })
}
