//! `World`: one mm, one device context bound to it (engine, TLB, DMA tracker, page-table
//! memory), a shared violation log, and the end-of-test oracle [`World::check_quiescent`].

use crate::device::{Counters, Device, DeviceStats};
use crate::devmem::ModelDevmem;
use crate::dma::DmaTracker;
use crate::mm::state::Pte;
use crate::mm::{MmConfig, MmHandle};
use crate::platform::{ModelArc, ModelPlatform};
use crate::tablemem::TableMem;
use crate::tlb::Tlb;
use crate::violations::Violations;
use core::marker::PhantomData;
use pgtable::table::{level_shift, VA_LIMIT};
use pgtable::{Errno, PteFormat, X86Format};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use svm::platform::Devmem as _;
use svm::{Config, Engine, Parts};

/// Builds a [`World`].
pub struct WorldBuilder<F: PteFormat = X86Format> {
    cfg: Config,
    mm: MmConfig,
    tlb_entries: usize,
    tlb_units: usize,
    flush_may_sleep: bool,
    clock_step: Option<u64>,
    walk_jitter: bool,
    panic_on_violation: bool,
    max_device_faults: u32,
    trace: bool,
    devmem_pages: usize,
    shared_mm: Option<MmHandle>,
    peer_of: Option<ModelDevmem>,
    _fmt: PhantomData<fn() -> F>,
}

impl<F: PteFormat> Default for WorldBuilder<F> {
    fn default() -> Self {
        WorldBuilder {
            cfg: Config::default(),
            mm: MmConfig::default(),
            tlb_entries: svm::devtlb::MAX_ENTRIES,
            tlb_units: 2,
            flush_may_sleep: false,
            clock_step: None,
            walk_jitter: false,
            panic_on_violation: false,
            max_device_faults: 16,
            trace: false,
            devmem_pages: 0,
            shared_mm: None,
            peer_of: None,
            _fmt: PhantomData,
        }
    }
}

impl<F: PteFormat> WorldBuilder<F> {
    /// Defaults: `Config::default()`, a device of two execution units with a 16-entry TLB
    /// each, whose flush does not sleep, the kernel's
    /// default mm options, the real clock.
    pub fn new() -> Self {
        Self::default()
    }

    /// The engine configuration.
    pub fn config(mut self, cfg: Config) -> Self {
        self.cfg = cfg;
        self
    }

    /// The mm options.
    pub fn mm_config(mut self, mm: MmConfig) -> Self {
        self.mm = mm;
        self
    }

    /// Whether a read fault on an empty THP block maps the huge zero folio (kernel default on).
    pub fn huge_zero_page(mut self, on: bool) -> Self {
        self.mm.huge_zero_page = on;
        self
    }

    /// Device TLB entries per execution unit (at most `svm::devtlb::MAX_ENTRIES`).
    pub fn tlb_entries(mut self, n: usize) -> Self {
        self.tlb_entries = n;
        self
    }

    /// Execution units of the device, each with its own TLB; devices (clones) take them round
    /// robin (at most `svm::devtlb::MAX_UNITS`).
    pub fn tlb_units(mut self, n: usize) -> Self {
        self.tlb_units = n;
        self
    }

    /// What the TLB reports from `flush_may_sleep()`.
    pub fn flush_may_sleep(mut self, on: bool) -> Self {
        self.flush_may_sleep = on;
        self
    }

    /// Page-table walks that meet concurrent frees (`TableMem::set_walk_jitter`); also on
    /// whenever the mm's notifier jitter is.
    pub fn walk_jitter(mut self, on: bool) -> Self {
        self.walk_jitter = on;
        self
    }

    /// A deterministic clock advancing `ns` per `now_ns()` call (retry budgets in calls).
    pub fn clock_step(mut self, ns: u64) -> Self {
        self.clock_step = Some(ns);
        self
    }

    /// Record the engine's trace events (`World::trace_log`).
    pub fn trace(mut self, on: bool) -> Self {
        self.trace = on;
        self
    }

    /// Panic on the first violation instead of logging it (proptest shrinking).
    pub fn panic_on_violation(mut self, on: bool) -> Self {
        self.panic_on_violation = on;
        self
    }

    /// Device memory of `pages` device-private pages (0, the default: none, and the device
    /// cannot migrate).
    pub fn devmem_pages(mut self, pages: usize) -> Self {
        self.devmem_pages = pages;
        self
    }

    /// Binds the new world's device to `mm` (another world's process, sharing its violation
    /// log) instead of a new process: a second device mirroring the same address space.
    pub fn share_mm(mut self, mm: &MmHandle) -> Self {
        self.shared_mm = Some(mm.clone());
        self
    }

    /// Makes the new world's device memory (`devmem_pages` pages) a peer of `mem`: a pgmap of
    /// its own under `mem`'s owner, so each device reaches the other's pages through DMA
    /// (P2P) instead of faulting them back. Use with `share_mm`.
    pub fn peer_of(mut self, mem: &ModelDevmem) -> Self {
        self.peer_of = Some(mem.clone());
        self
    }

    /// Most faults one device access may raise before it gives up with `EBUSY`.
    pub fn max_device_faults(mut self, n: u32) -> Self {
        self.max_device_faults = n;
        self
    }

    /// Builds the world: registers the mm's notifier subsystem (as binding a context does,
    /// under `mmap_write_lock`) and creates the engine.
    pub fn build(self) -> Result<World<F>, Errno> {
        let (mm, violations) = match self.shared_mm {
            Some(mm) => {
                let v = mm.violations().clone();
                (mm, v)
            }
            None => {
                let v = Violations::new();
                v.set_panic_on_violation(self.panic_on_violation);
                (MmHandle::with_config(self.mm, v.clone()), v)
            }
        };
        let _s = violations.scope();
        mm.mmu_notifier_register()?;
        let dma = DmaTracker::new(&mm, violations.clone());
        let tlb = Tlb::new(self.tlb_units, self.tlb_entries, self.flush_may_sleep);
        let mem = TableMem::new::<F>(violations.clone());
        mem.set_walk_jitter(self.walk_jitter || self.mm.notifier_jitter_us != 0);
        let plat = match self.clock_step {
            Some(s) => ModelPlatform::<F>::with_clock_step(s),
            None => ModelPlatform::<F>::new(),
        };
        let plat = if self.trace {
            plat.record_trace()
        } else {
            plat
        };
        let devmem = match &self.peer_of {
            Some(p) => p.peer(&mm, self.devmem_pages),
            None => ModelDevmem::new(&mm, self.devmem_pages),
        };
        let parts = Parts {
            mm: mm.clone(),
            dma: dma.clone(),
            tlb: tlb.clone(),
            mem: mem.clone(),
            devmem: devmem.clone(),
        };
        let engine = Engine::new(plat, parts, self.cfg)?;
        Ok(World {
            mm,
            dma,
            tlb,
            mem,
            devmem,
            violations,
            engine,
            torn_down: AtomicBool::new(false),
            max_device_faults: self.max_device_faults,
            device_stats: Default::default(),
        })
    }
}

/// An mm with a device context bound to it.
pub struct World<F: PteFormat = X86Format> {
    /// The process.
    pub mm: MmHandle,
    /// The IOMMU view.
    pub dma: DmaTracker,
    /// The device TLB.
    pub tlb: Tlb,
    /// Page-table memory.
    pub mem: TableMem,
    /// Device memory.
    pub devmem: ModelDevmem,
    /// Every detector's log.
    pub violations: Violations,
    /// The engine.
    pub engine: ModelArc<Engine<ModelPlatform<F>>>,
    torn_down: AtomicBool,
    max_device_faults: u32,
    device_stats: std::sync::Arc<Counters>,
}

impl World<X86Format> {
    /// A world with engine configuration `cfg` and every other default.
    pub fn new(cfg: Config) -> Result<Self, Errno> {
        WorldBuilder::new().config(cfg).build()
    }
}

impl<F: PteFormat> World<F> {
    /// A builder (for another PTE format: `World::<Gfx9Format>::builder()`).
    pub fn builder() -> WorldBuilder<F> {
        WorldBuilder::new()
    }

    /// The engine's trace events so far (recorded only if the builder asked for them).
    pub fn trace_log(&self) -> Vec<svm::trace::Trace> {
        self.engine.platform().trace_log()
    }

    /// A device context (one per thread; all share this world's device counters).
    pub fn device(&self) -> Device<F> {
        Device::with_counters(
            self.engine.clone(),
            self.tlb.clone(),
            self.dma.clone(),
            self.mm.clone(),
            self.violations.clone(),
            self.max_device_faults,
            self.device_stats.clone(),
        )
    }

    /// Counters of every device of this world.
    pub fn device_stats(&self) -> DeviceStats {
        self.device().stats()
    }

    /// `engine.gc()` with lockdep reporting to this world.
    pub fn gc(&self) -> usize {
        let _s = self.violations.scope();
        self.engine.gc()
    }

    /// `engine.teardown()` with lockdep reporting to this world; afterwards
    /// [`World::check_quiescent`] also demands no ranges, notifiers or DMA mappings.
    pub fn teardown(&self) {
        let _s = self.violations.scope();
        self.engine.teardown();
        self.torn_down.store(true, Ordering::Relaxed);
    }

    /// Checks the state at rest (no fault, invalidation or device access running):
    /// - no zapped leaves left in the device page table;
    /// - every valid device leaf uses a live DMA mapping of the page the CPU maps at that VA
    ///   now (I1), writable only where the CPU PTE is (I2);
    /// - every live DMA mapping is used by some device leaf (no leak, I4);
    /// - every page-table page allocated is linked in the tree (none unlinked and not freed);
    /// - after [`World::teardown`]: no range, no interval notifier, no DMA mapping;
    /// - the violation log is empty.
    pub fn check_quiescent(&self) -> Result<(), String> {
        let _s = self.violations.scope();
        let mut p: Vec<String> = Vec::new();
        let pt = self.engine.page_table();
        let census = pt.census();
        if census.zapped != 0 {
            p.push(format!("{} zapped device leaves not reaped", census.zapped));
        }
        let mut leaves = Vec::new();
        pt.for_each_leaf(0, VA_LIMIT, |l| leaves.push(*l));
        let mut used = BTreeSet::new();
        {
            let m = self.mm.0.machine.st.lock();
            if !m.isolated.is_empty() {
                p.push(format!(
                    "{} pages left isolated behind migration entries (a migration never finalized)",
                    m.isolated.len()
                ));
            }
            for l in leaves.iter().filter(|l| l.valid) {
                if l.perm.local {
                    // A device page: the CPU maps it with a device-private entry (I1), writable
                    // if the leaf is (I2), and it is one of this device's live pages.
                    let pfn = svm::leaf_pfn(l.aux);
                    let cpu = m.mm_ref(self.mm.0.id).ptes.get(&l.va).copied();
                    match cpu {
                        Some(Pte::Device { pfn: c, writable }) if c == pfn => {
                            if l.perm.write && !writable {
                                p.push(format!(
                                    "I2: device maps va {:#x} writable, the CPU read-only",
                                    l.va
                                ));
                            }
                        }
                        other => p.push(format!(
                            "I1: device maps va {:#x} to device pfn {pfn:#x}, the CPU maps {other:?}",
                            l.va
                        )),
                    }
                    if !m.alive(pfn) || m.pool_of(pfn) != self.devmem.pool() {
                        p.push(format!(
                            "I1: device maps va {:#x} to device pfn {pfn:#x}, freed or not its own",
                            l.va
                        ));
                    }
                    continue;
                }
                let size = 1u64 << level_shift(l.level);
                let Some(map) = self.dma.lookup(l.addr) else {
                    p.push(format!(
                        "device leaf va {:#x} (level {}) uses DMA address {:#x}, not mapped",
                        l.va, l.level, l.addr
                    ));
                    continue;
                };
                used.insert(map.addr);
                if l.addr + size > map.addr + map.size() {
                    p.push(format!(
                        "device leaf va {:#x} spans beyond its DMA mapping {:#x}",
                        l.va, map.addr
                    ));
                }
                let pages = size / 4096;
                for i in 0..pages {
                    let va = l.va + i * 4096;
                    let pfn = map.pfn + (l.addr - map.addr) / 4096 + i;
                    let pool = m.pool_of(pfn);
                    if pool != 0
                        && (m.owner_of(pfn) != self.devmem.owner() || pool == self.devmem.pool())
                    {
                        p.push(format!(
                            "I1: device maps va {va:#x} to device pfn {pfn:#x} through DMA: not a peer's page"
                        ));
                        break;
                    }
                    match m.device_view(self.mm.0.id, va) {
                        None => {
                            p.push(format!(
                                "I1: device maps va {va:#x} (pfn {pfn:#x}), the CPU maps nothing"
                            ));
                            break;
                        }
                        Some((_, false)) if l.perm.atomic => {
                            p.push(format!(
                                "I7: device maps va {va:#x} for atomics, the CPU has it back"
                            ));
                            break;
                        }
                        Some((c, _)) if c.pfn != pfn => {
                            p.push(format!(
                                "I1: device maps va {va:#x} to pfn {pfn:#x}, the CPU to {:#x}",
                                c.pfn
                            ));
                            break;
                        }
                        Some((c, _)) if l.perm.write && !c.writable => {
                            p.push(format!(
                                "I2: device maps va {va:#x} writable, the CPU read-only"
                            ));
                            break;
                        }
                        Some((c, _)) if !c.accessible => {
                            p.push(format!(
                                "I2: device maps va {va:#x}, the CPU maps it PROT_NONE"
                            ));
                            break;
                        }
                        _ => {}
                    }
                }
            }
        }
        for map in self.dma.leaks() {
            if !used.contains(&map.addr) {
                p.push(format!(
                    "I4: DMA mapping {:#x} (pfn {:#x}, order {}) used by no device leaf",
                    map.addr, map.pfn, map.order
                ));
            }
        }
        let live = self.mem.live_tables();
        if live != census.tables {
            p.push(format!(
                "{live} page-table pages allocated, {} linked",
                census.tables
            ));
        }
        if self.torn_down.load(Ordering::Relaxed) {
            if self.engine.range_count() != 0 {
                p.push(format!(
                    "{} ranges left after teardown",
                    self.engine.range_count()
                ));
            }
            let n = self.mm.notifier_stats().intervals;
            if n != 0 {
                p.push(format!("{n} interval notifiers left after teardown"));
            }
            if self.dma.live() != 0 {
                p.push(format!(
                    "{} DMA mappings left after teardown",
                    self.dma.live()
                ));
            }
        }
        let errs = self.engine.stats().accounting_errors;
        if errs != 0 {
            p.push(format!(
                "{errs} engine accounting errors (leaves reaped that a range did not map)"
            ));
        }
        if let Err(v) = self.violations.check() {
            p.push(v);
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(p.join("\n"))
        }
    }
}
