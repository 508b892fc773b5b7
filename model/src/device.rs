//! The simulated device: a TLB over the engine's page table, and an executor that performs
//! reads, writes and atomics the way a device would, checking the invariants on every access.
//!
//! Each device context (a clone) is an execution unit of the shared device TLB
//! (`svm::devtlb`, the code the kernel's software device runs), round robin over its units.
//! Lock order: TLB unit lock → machine lock → DMA-tracker lock. A device access holds its
//! unit's lock across its walk and its memory access, so the flush (which takes every unit's
//! lock in turn) waits for in-flight accesses, as a hardware invalidation waits for outstanding
//! translations. The lock is dropped before a fault is serviced.

use crate::dma::DmaTracker;
use crate::lockdep;
use crate::mm::state::{HPAGE_SIZE, PAGE_SIZE};
use crate::mm::MmHandle;
use crate::platform::{ModelArc, ModelPlatform};
use crate::tablemem::POISON_DMA;
use crate::tlb::Tlb;
use crate::violations::Violations;
use pgtable::{Errno, PteFormat, X86Format};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use svm::devtlb::Xlate;
use svm::platform::Devmem as _;
use svm::{Access, Engine, Scratch};

/// Device counters (shared by all clones of a [`Device`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceStats {
    /// Accesses started.
    pub accesses: u64,
    /// TLB hits (of every unit of the TLB this device uses).
    pub tlb_hits: u64,
    /// TLB misses (each followed by a walk).
    pub tlb_misses: u64,
    /// Faults raised to the engine.
    pub faults: u64,
    /// Faults the engine failed.
    pub fault_errors: u64,
    /// Accesses abandoned after too many faults in a row.
    pub gave_up: u64,
    /// Accesses on which a check failed.
    pub violations: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    accesses: AtomicU64,
    faults: AtomicU64,
    fault_errors: AtomicU64,
    gave_up: AtomicU64,
    violations: AtomicU64,
}

#[derive(Clone, Copy)]
enum Op {
    Read,
    Write(u64),
    /// An atomic add over the bus (PCIe atomics): a plain write to the mapping.
    Add(u64),
    /// An atomic add in device-exclusive mode: needs an atomic leaf, the page handed over.
    XAdd(u64),
}

impl Op {
    fn is_write(self) -> bool {
        !matches!(self, Op::Read)
    }
}

/// A device execution context bound to one engine (clone per thread: each clone has its own
/// fault scratch buffer).
pub struct Device<F: PteFormat = X86Format> {
    engine: ModelArc<Engine<ModelPlatform<F>>>,
    tlb: Tlb,
    dma: DmaTracker,
    mm: MmHandle,
    violations: Violations,
    scratch: Box<Scratch>,
    stats: Arc<Counters>,
    max_faults: u32,
    /// The execution unit whose TLB this device context uses.
    unit: usize,
}

impl<F: PteFormat> Clone for Device<F> {
    fn clone(&self) -> Self {
        Device {
            engine: self.engine.clone(),
            tlb: self.tlb.clone(),
            dma: self.dma.clone(),
            mm: self.mm.clone(),
            violations: self.violations.clone(),
            scratch: Box::new(Scratch::new()),
            stats: self.stats.clone(),
            max_faults: self.max_faults,
            unit: self.tlb.take_unit(),
        }
    }
}

impl<F: PteFormat> Device<F> {
    /// A device using `engine`'s page table through `tlb`, whose DMA goes through `dma`, and
    /// whose memory is `mm`'s machine. At most `max_faults` faults per access.
    pub fn new(
        engine: ModelArc<Engine<ModelPlatform<F>>>,
        tlb: Tlb,
        dma: DmaTracker,
        mm: MmHandle,
        violations: Violations,
        max_faults: u32,
    ) -> Self {
        Self::with_counters(engine, tlb, dma, mm, violations, max_faults, Arc::default())
    }

    pub(crate) fn with_counters(
        engine: ModelArc<Engine<ModelPlatform<F>>>,
        tlb: Tlb,
        dma: DmaTracker,
        mm: MmHandle,
        violations: Violations,
        max_faults: u32,
        stats: Arc<Counters>,
    ) -> Self {
        Device {
            engine,
            unit: tlb.take_unit(),
            tlb,
            dma,
            mm,
            violations,
            scratch: Box::new(Scratch::new()),
            stats,
            max_faults,
        }
    }

    /// Counters of this device (all clones).
    pub fn stats(&self) -> DeviceStats {
        let c = &self.stats;
        DeviceStats {
            accesses: c.accesses.load(Ordering::Relaxed),
            tlb_hits: self.tlb.0.dev.hits(),
            tlb_misses: self.tlb.0.dev.misses(),
            faults: c.faults.load(Ordering::Relaxed),
            fault_errors: c.fault_errors.load(Ordering::Relaxed),
            gave_up: c.gave_up.load(Ordering::Relaxed),
            violations: c.violations.load(Ordering::Relaxed),
        }
    }

    /// The engine.
    pub fn engine(&self) -> &ModelArc<Engine<ModelPlatform<F>>> {
        &self.engine
    }

    /// A device load of the data word of the page at `va`.
    pub fn read(&mut self, va: u64) -> Result<u64, Errno> {
        self.access(va, Op::Read)
    }

    /// A device store.
    pub fn write(&mut self, va: u64, v: u64) -> Result<(), Errno> {
        self.access(va, Op::Write(v)).map(|_| ())
    }

    /// A device atomic add; returns the old value.
    pub fn atomic_add(&mut self, va: u64, v: u64) -> Result<u64, Errno> {
        self.access(va, Op::Add(v))
    }

    /// A device atomic add in device-exclusive mode (the range's atomics are the device's):
    /// the page is handed over to the device first (`Engine::fault_atomic`); returns the old
    /// value.
    pub fn exclusive_add(&mut self, va: u64, v: u64) -> Result<u64, Errno> {
        self.access(va, Op::XAdd(v))
    }

    /// Services a fault at `va` directly (as a prefetch-on-fault would).
    pub fn fault(&mut self, va: u64, access: Access) -> Result<(), Errno> {
        let _s = self.violations.scope();
        self.engine.fault(&mut self.scratch, va, access)
    }

    fn access(&mut self, va: u64, op: Op) -> Result<u64, Errno> {
        // From its first access on, this thread's lockdep reports go to this device's log.
        lockdep::adopt(&self.violations);
        self.stats.accesses.fetch_add(1, Ordering::Relaxed);
        let need = if op.is_write() {
            Access::Write
        } else {
            Access::Read
        };
        for _ in 0..=self.max_faults {
            {
                let mut cur = self.tlb.0.dev.begin(self.unit);
                let atomic = matches!(op, Op::XAdd(_));
                let pt = self.engine.page_table();
                if let Some(x) = cur.translate_for(pt, va, op.is_write(), atomic) {
                    return self.perform(va, x, op);
                }
            }
            self.stats.faults.fetch_add(1, Ordering::Relaxed);
            let r = if matches!(op, Op::XAdd(_)) {
                self.engine.fault_atomic(&mut self.scratch, va)
            } else {
                self.engine.fault(&mut self.scratch, va, need)
            };
            if let Err(e) = r {
                self.stats.fault_errors.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        }
        self.stats.gave_up.fetch_add(1, Ordering::Relaxed);
        Err(Errno::EBUSY)
    }

    /// The access itself, with the TLB lock held: every invariant is checked against the CPU's
    /// page table and the IOMMU, under the machine lock.
    fn perform(&self, va: u64, x: Xlate, op: Op) -> Result<u64, Errno> {
        let addr = x.addr;
        let mut m = self.mm.0.machine.st.lock();
        let bad = |tag: &str, what: String| {
            self.stats.violations.fetch_add(1, Ordering::Relaxed);
            self.violations.record(tag, what);
        };
        if (POISON_DMA..POISON_DMA + HPAGE_SIZE).contains(&addr) {
            bad(
                "I1",
                format!("device walk at va {va:#x} went through a freed page-table page"),
            );
            return Err(Errno::EFAULT);
        }
        if x.local {
            return self.perform_local(&mut m, va, x, op);
        }
        let Some(map) = self.dma.lookup(addr) else {
            bad("I4", format!("device access at va {va:#x} through DMA address {addr:#x}, which is not mapped (use after dma_unmap)"));
            return Err(Errno::EFAULT);
        };
        let pfn = map.pfn + (addr - map.addr) / PAGE_SIZE;
        if op.is_write() && !map.write {
            bad(
                "I4",
                format!(
                    "device write at va {va:#x} through a DMA_TO_DEVICE mapping of pfn {pfn:#x}"
                ),
            );
        }
        if !m.alive(pfn) {
            let what = if m.ever_allocated(pfn) {
                "freed"
            } else {
                "never allocated"
            };
            bad(
                "I1",
                format!("device access at va {va:#x} reached {what} pfn {pfn:#x}"),
            );
        }
        let dm = self.engine.devmem();
        if m.pool_of(pfn) != 0 && (m.owner_of(pfn) != dm.owner() || m.pool_of(pfn) == dm.pool()) {
            bad(
                "I1",
                format!("device access at va {va:#x} reached device pfn {pfn:#x} through DMA: not a peer's page"),
            );
        }
        match m.device_view(self.mm.0.id, va) {
            None => {
                bad("I1", format!("device access at va {va:#x} reached pfn {pfn:#x}, the CPU maps no page there"));
            }
            Some((_, false)) if x.atomic => {
                bad(
                    "I7",
                    format!("device access at va {va:#x} through an atomic leaf, the CPU has the page back"),
                );
            }
            Some((c, _)) if c.pfn != pfn => {
                bad(
                    "I1",
                    format!(
                        "device access at va {va:#x} reached pfn {pfn:#x}, the CPU maps pfn {:#x}",
                        c.pfn
                    ),
                );
            }
            Some((c, _)) => {
                if !c.accessible {
                    bad(
                        "I2",
                        format!("device access at va {va:#x}, which the CPU maps PROT_NONE"),
                    );
                }
                if op.is_write() && !c.writable {
                    bad("I2", format!("device write at va {va:#x}, which the CPU maps read-only (pfn {pfn:#x})"));
                }
            }
        }
        Ok(Self::apply(&mut m, pfn, op))
    }

    /// An access through a local leaf: the device's own page, which the CPU must map with a
    /// device-private entry at `va` (I1; writable for a write, I2), and which must be one of
    /// this device's live pages.
    fn perform_local(
        &self,
        m: &mut crate::mm::state::MachineState,
        va: u64,
        x: Xlate,
        op: Op,
    ) -> Result<u64, Errno> {
        let pfn = x.pfn;
        let bad = |tag: &str, what: String| {
            self.stats.violations.fetch_add(1, Ordering::Relaxed);
            self.violations.record(tag, what);
        };
        let pool = self.engine.devmem().pool();
        if !m.alive(pfn) || m.pool_of(pfn) != pool {
            bad(
                "I1",
                format!(
                    "device access at va {va:#x} reached device pfn {pfn:#x}, freed or not its own"
                ),
            );
        }
        let id = self.mm.0.id;
        match m.mm_ref(id).ptes.get(&crate::mm::state::page_down(va)).copied() {
            Some(crate::mm::state::Pte::Device { pfn: p, writable }) if p == pfn => {
                if op.is_write() && !writable {
                    bad("I2", format!("device write at va {va:#x}, whose device page the CPU maps read-only"));
                }
            }
            other => bad(
                "I1",
                format!("device access at va {va:#x} reached device pfn {pfn:#x}, the CPU maps {other:?}"),
            ),
        }
        Ok(Self::apply(m, pfn, op))
    }

    /// Performs `op` on the data word of `pfn`; returns the old value.
    fn apply(m: &mut crate::mm::state::MachineState, pfn: u64, op: Op) -> u64 {
        let old = m.data(pfn).unwrap_or(crate::mm::POISON);
        // Memory is what the device reaches, checks or not; only live, non-zero pages change.
        // A device write never sets PG_dirty: only set_page_dirty() does.
        let new = match op {
            Op::Read => None,
            Op::Write(v) => Some(v),
            Op::Add(v) | Op::XAdd(v) => Some(old.wrapping_add(v)),
        };
        if let Some(v) = new {
            if m.alive(pfn) && !crate::mm::is_zero_pfn(pfn) {
                m.frame(pfn).data = v;
            }
        }
        old
    }
}
