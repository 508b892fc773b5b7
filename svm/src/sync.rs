//! Atomics the protocol depends on: loom's under `--cfg loom` (so loom explores their
//! interleavings), `core`'s otherwise (and always in the kernel). Counters that no protocol
//! reads use `core` atomics directly.

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{
    fence, AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicUsize,
};
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{
    fence, AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicUsize,
};

pub(crate) use core::sync::atomic::Ordering;
