//! A userspace model of the kernel services the `svm` engine relies on (6.12 semantics:
//! `mm/mmu_notifier.c`, `mm/hmm.c`, anonymous faults and COW in `mm/memory.c`, reclaim,
//! migration, THP), plus a simulated device, bundled as `svm::platform::Platform`.
//!
//! It is the engine's test bench: the same engine sources run on it, under `std` threads for
//! fault storms and property tests, and under `--cfg loom` (every lock, condition variable and
//! protocol atomic of the model and the engine is loom's) for exhaustive interleavings.
//! Detectors record into a shared [`Violations`] log: stale device accesses (I1), device
//! privilege above the CPU's (I2), DMA hygiene (I4), notifier-protocol misuse, and lockdep-style
//! locking-rule breaks. See `Documentation/model.rst`.

pub mod device;
pub mod devmem;
pub mod dma;
mod hmm;
mod inthash;
pub mod lockdep;
pub mod locks;
pub mod mm;
pub mod notifier;
pub mod platform;
pub mod sync;
pub mod tablemem;
pub mod tlb;
pub mod violations;
pub mod world;

pub use device::{Device, DeviceStats};
pub use devmem::ModelDevmem;
pub use dma::{DmaMapping, DmaStats, DmaTracker};
pub use mm::{MapFlags, MmConfig, MmHandle, OomReport, Prot, ReadGuard, SwapOutcome};
pub use notifier::{Interval, NotifierStats, TraceEntry};
pub use platform::{ModelArc, ModelLock, ModelLocks, ModelMap, ModelPlatform, ModelRwLock};
pub use tablemem::TableMem;
pub use tlb::Tlb;
pub use violations::Violations;
pub use world::{World, WorldBuilder};

#[cfg(all(test, not(loom)))]
mod tests;
