//! Simulated device memory: `MEMORY_DEVICE_PRIVATE` pages of one `pgmap->owner`, each a frame
//! of the machine (as `lib/test_hmm.c` backs each device page with a system page it owns),
//! a fixed number of them. The device reaches them through local leaves, never through DMA.
//! Peers (devices with a fast interconnect) share one owner, each with memory of its own:
//! hmm hands a peer's pages back as they are, and the device reaches them through DMA
//! mappings (P2P; `Documentation/design.rst`, "Peer memory").

use crate::mm::state::PAGE_SIZE;
use crate::mm::{Machine, MmHandle};
use pgtable::Errno;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use svm::platform::Devmem;

/// One device's memory (cheap to clone; clones are the same memory).
#[derive(Clone)]
pub struct ModelDevmem {
    machine: Arc<Machine>,
    owner: u64,
    /// This memory's pgmap (`owner` itself for the first device of an owner).
    pool: u64,
}

static NEXT_OWNER: AtomicU64 = AtomicU64::new(0xd0_0000);

impl ModelDevmem {
    /// Gives `mm`'s machine a device memory of `pages` pages, with an owner of its own, whose
    /// `migrate_to_ram` is the engine's ([`svm::migrate_to_ram`]). 0 pages: no device memory
    /// (owner 0).
    pub fn new(mm: &MmHandle, pages: usize) -> Self {
        if pages == 0 {
            return ModelDevmem {
                machine: mm.0.machine.clone(),
                owner: 0,
                pool: 0,
            };
        }
        let owner = NEXT_OWNER.fetch_add(0x1000, Ordering::Relaxed);
        Self::with_owner(mm, pages, owner, owner)
    }

    /// A peer's memory: `pages` pages of a pgmap of its own, under this memory's owner (as
    /// Xe's devices on one fast interconnect share a `drm_pagemap_owner`).
    pub fn peer(&self, mm: &MmHandle, pages: usize) -> Self {
        assert!(
            self.owner != 0 && pages != 0,
            "a peer of device memory, with pages"
        );
        let pool = NEXT_OWNER.fetch_add(0x1000, Ordering::Relaxed);
        Self::with_owner(mm, pages, self.owner, pool)
    }

    fn with_owner(mm: &MmHandle, pages: usize, owner: u64, pool: u64) -> Self {
        let op = Arc::new(move |mm: &MmHandle, va: u64, page: u64| {
            let dm = ModelDevmem {
                machine: mm.0.machine.clone(),
                owner,
                pool,
            };
            svm::migrate_to_ram(mm, &dm, va, page)
        });
        mm.add_devmem(pool, owner, pages, op);
        ModelDevmem {
            machine: mm.0.machine.clone(),
            owner,
            pool,
        }
    }

    /// This memory's pgmap (as the model's machine names it).
    pub fn pool(&self) -> u64 {
        self.pool
    }

    /// Pages in use.
    pub fn used(&self) -> usize {
        self.machine
            .st
            .lock()
            .devpools
            .get(&self.pool)
            .map_or(0, |p| p.used)
    }
}

impl Devmem for ModelDevmem {
    fn owner(&self) -> u64 {
        self.owner
    }

    fn local_addr(&self, pfn: u64) -> Option<u64> {
        let m = self.machine.st.lock();
        // A system page has owner 0: never local, even to a device without memory.
        (self.pool != 0 && m.pool_of(pfn) == self.pool && m.alive(pfn)).then_some(pfn * PAGE_SIZE)
    }

    fn peer_page(&self, pfn: u64) -> bool {
        let m = self.machine.st.lock();
        self.owner != 0 && m.owner_of(pfn) == self.owner && m.pool_of(pfn) != self.pool
    }

    fn alloc_device(&self) -> Option<u64> {
        self.machine.st.lock().alloc_device_page(self.pool)
    }

    fn alloc_system(&self, _va: u64) -> Option<u64> {
        let mut m = self.machine.st.lock();
        let pfn = m.alloc_page(0);
        m.frame(pfn).pins = 1;
        Some(pfn)
    }

    fn free_unused(&self, pfn: u64) {
        let mut m = self.machine.st.lock();
        m.frame(pfn).pins -= 1;
        m.maybe_free(pfn);
    }

    fn touch(&self, pfn: u64) {
        let mut m = self.machine.st.lock();
        if let Some(p) = m.devpools.get_mut(&self.pool) {
            if let Some(i) = p.lru.iter().position(|&x| x == pfn) {
                p.lru.remove(i);
                p.lru.push_back(pfn);
            }
        }
    }

    fn evict(&self, pages: usize) -> usize {
        if self.owner == 0 {
            return 0;
        }
        self.machine.evict(self.pool, pages)
    }

    fn copy(&self, dst: u64, src: Option<u64>) -> Result<(), Errno> {
        let mut m = self.machine.st.lock();
        let data = match src {
            None => 0,
            Some(s) => m.data(s).ok_or(Errno::EFAULT)?,
        };
        m.frame(dst).data = data;
        Ok(())
    }
}
