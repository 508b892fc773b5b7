//! The shared log of invariant violations.
//!
//! Detectors (the device's per-access checks, the DMA tracker, the page-table memory, the
//! notifier core, lockdep) record here instead of panicking, so a test can run to the end,
//! assert the log is empty, and print everything that went wrong. `panic_on_violation` turns
//! the first record into a panic instead (for proptest shrinking, where the failing step should
//! be the one that reports).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Most messages kept (all are counted).
const KEEP: usize = 256;

struct Inner {
    log: Mutex<Vec<String>>,
    count: AtomicUsize,
    panic: AtomicBool,
}

/// A shared, cloneable violation log.
#[derive(Clone)]
pub struct Violations(Arc<Inner>);

impl Default for Violations {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for Violations {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Violations")
            .field("count", &self.count())
            .finish()
    }
}

impl Violations {
    /// An empty log.
    pub fn new() -> Self {
        Violations(Arc::new(Inner {
            log: Mutex::new(Vec::new()),
            count: AtomicUsize::new(0),
            panic: AtomicBool::new(false),
        }))
    }

    /// Records a violation of invariant `tag` ("I1", "I2", "I4", "lockdep", "notifier", ...).
    pub fn record(&self, tag: &str, msg: impl Into<String>) {
        let mut msg = format!("[{tag}] {}", msg.into());
        if std::env::var_os("SVM_VIOLATION_BACKTRACE").is_some() {
            // Debugging aid: where the detector fired (the thread that saw it).
            msg.push_str(&format!("\n{}", std::backtrace::Backtrace::force_capture()));
        }
        let n = self.0.count.fetch_add(1, Ordering::Relaxed);
        if self.0.panic.load(Ordering::Relaxed) {
            panic!("violation: {msg}");
        }
        if n < KEEP {
            self.0
                .log
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(msg);
        }
    }

    /// Makes every later [`Violations::record`] panic (proptest, debugging).
    pub fn set_panic_on_violation(&self, on: bool) {
        self.0.panic.store(on, Ordering::Relaxed);
    }

    /// How many violations were recorded (including those not kept).
    pub fn count(&self) -> usize {
        self.0.count.load(Ordering::Relaxed)
    }

    /// Whether none was recorded.
    pub fn is_empty(&self) -> bool {
        self.count() == 0
    }

    /// The kept messages (the first 256).
    pub fn messages(&self) -> Vec<String> {
        self.0.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// `Err` listing the violations, if any.
    pub fn check(&self) -> Result<(), String> {
        if self.is_empty() {
            return Ok(());
        }
        let mut s = format!("{} violation(s):\n", self.count());
        for m in self.messages() {
            s.push_str("  ");
            s.push_str(&m);
            s.push('\n');
        }
        Err(s)
    }

    /// Panics with the list of violations, if any.
    #[track_caller]
    pub fn assert_none(&self) {
        if let Err(s) = self.check() {
            panic!("{s}");
        }
    }

    /// Routes lockdep reports of the current thread here until the guard is dropped (threads
    /// without a scope panic on a lockdep report, like `panic_on_warn`).
    pub fn scope(&self) -> crate::lockdep::Scope {
        crate::lockdep::Scope::enter(self)
    }

    /// Whether two handles share one log.
    pub fn same(a: &Self, b: &Self) -> bool {
        Arc::ptr_eq(&a.0, &b.0)
    }
}
