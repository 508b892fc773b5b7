//! Trace events: what a driver author watches with `perf trace` or `trace-cmd` (the kernel
//! module turns each into a tracepoint of the `svm` system; the model records them for tests).
//!
//! The engine reports an event only when [`Platform::tracing`] says someone listens (a
//! tracepoint's static key), so an untraced fault pays one call and no clock reads.
//! Every event carries the engine's address as `ctx`, to tell contexts apart.
//!
//! [`Platform::tracing`]: super::platform::Platform::tracing

use super::engine::{Access, Engine};
use super::pgtable::Errno;
use super::platform::{Event, Platform};

/// One engine event.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Trace {
    /// A fault's service begins (`Engine::fault`, or a window of `fault_batch` or prefetch):
    /// `va` is the faulting page, `pages` what the caller asked for (1 for a device fault).
    FaultStart {
        ctx: usize,
        va: u64,
        access: Access,
        pages: u64,
    },
    /// It ended, with `err` (0 or a positive errno) after `ns` nanoseconds.
    FaultEnd {
        ctx: usize,
        va: u64,
        access: Access,
        err: i32,
        ns: u64,
    },
    /// A fault's snapshot was invalidated: it starts again from `read_begin` (`own`: its own
    /// COW break, else a foreign invalidation).
    Retry { ctx: usize, va: u64, own: bool },
    /// An invalidation callback of the range `[start, end)` ran for `event`; `hit`: it found
    /// device mappings to remove or downgrade.
    Invalidate {
        ctx: usize,
        start: u64,
        end: u64,
        event: Event,
        hit: bool,
    },
    /// A GC pass removed `removed` ranges.
    Gc { ctx: usize, removed: usize },
}

impl Trace {
    /// The errno of a result, as a `FaultEnd` carries it.
    pub(crate) fn err_of(r: &Result<(), Errno>) -> i32 {
        match r {
            Ok(()) => 0,
            Err(e) => e.0,
        }
    }
}

impl<P: Platform> Engine<P> {
    /// The `ctx` of this engine's events.
    pub(crate) fn trace_id(&self) -> usize {
        self as *const Self as usize
    }

    /// Reports `ev(ctx)` if someone listens.
    pub(crate) fn trace(&self, ev: impl FnOnce(usize) -> Trace) {
        if self.plat.tracing() {
            self.plat.trace(&ev(self.trace_id()));
        }
    }

    /// [`Trace::FaultStart`]; returns the start time for [`Engine::trace_end`], if traced.
    pub(crate) fn trace_start(&self, va: u64, access: Access, pages: u64) -> Option<u64> {
        if !self.plat.tracing() {
            return None;
        }
        let ctx = self.trace_id();
        self.plat.trace(&Trace::FaultStart {
            ctx,
            va,
            access,
            pages,
        });
        Some(self.plat.now_ns())
    }

    /// [`Trace::FaultEnd`] of a fault whose [`Engine::trace_start`] returned `t0`.
    pub(crate) fn trace_end(
        &self,
        t0: Option<u64>,
        va: u64,
        access: Access,
        r: &Result<(), Errno>,
    ) {
        let Some(t0) = t0 else {
            return;
        };
        let ns = self.plat.now_ns().saturating_sub(t0);
        self.plat.trace(&Trace::FaultEnd {
            ctx: self.trace_id(),
            va,
            access,
            err: Trace::err_of(r),
            ns,
        });
    }
}
