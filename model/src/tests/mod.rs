//! Unit tests of the model's own semantics (mm, notifiers, hmm, DMA, lockdep), and of the
//! device against the engine.

mod device;
mod dma;
mod hmm;
mod lockdep;
mod mm;
mod notifier;

use crate::{Interval, MmHandle, ModelLock};
use pgtable::{Lock, LockClass};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use svm::platform::{Event, Interval as _, Invalidation, Mm};

/// One recorded callback: (event, start, end, blockable, cur_seq).
pub(crate) type Call = (Event, u64, u64, bool, u64);

/// A test "driver" behind an interval: records callbacks, takes its own range-class lock for
/// `set_seq` as a real one must, and can be told to misbehave.
pub(crate) struct Rec {
    pub log: Mutex<Vec<Call>>,
    pub refuse_nonblock: AtomicBool,
    pub skip_set_seq: AtomicBool,
    /// Callbacks wait here while non-zero (to hold an invalidation open from a callback).
    pub hold: AtomicUsize,
    pub lock: ModelLock<()>,
}

impl Rec {
    pub fn new() -> &'static Rec {
        Box::leak(Box::new(Rec {
            log: Mutex::new(Vec::new()),
            refuse_nonblock: AtomicBool::new(false),
            skip_set_seq: AtomicBool::new(false),
            hold: AtomicUsize::new(0),
            lock: ModelLock::new((), LockClass::Range),
        }))
    }

    pub fn calls(&self) -> Vec<Call> {
        self.log.lock().unwrap().clone()
    }

    pub fn events(&self) -> Vec<Event> {
        self.calls().into_iter().map(|c| c.0).collect()
    }

    /// `read_retry` under the lock the callback takes, as the protocol demands.
    pub fn read_retry(&self, iv: &Interval, seq: u64) -> bool {
        let _g = self.lock.lock();
        iv.read_retry(seq)
    }
}

/// The recording callback.
///
/// # Safety
/// `cookie` is a `&'static Rec`.
pub(crate) unsafe fn rec_cb(cookie: *const (), iv: &Interval, inv: &Invalidation) -> bool {
    // SAFETY: per the contract.
    let r = unsafe { &*(cookie as *const Rec) };
    while r.hold.load(Ordering::Acquire) != 0 {
        std::thread::yield_now();
    }
    let g = if inv.blockable {
        r.lock.lock()
    } else {
        match r.lock.try_lock() {
            Some(g) => g,
            None => return false,
        }
    };
    if !inv.blockable && r.refuse_nonblock.load(Ordering::Relaxed) {
        return false;
    }
    if !r.skip_set_seq.load(Ordering::Relaxed) {
        iv.set_seq(inv.cur_seq);
    }
    r.log
        .lock()
        .unwrap()
        .push((inv.event, inv.start, inv.end, inv.blockable, inv.cur_seq));
    drop(g);
    true
}

/// An interval registered for a test, removed when dropped.
pub(crate) struct Reg {
    pub mm: MmHandle,
    pub iv: Option<Interval>,
    pub rec: &'static Rec,
}

impl Reg {
    pub fn new(mm: &MmHandle, start: u64, len: u64) -> Reg {
        let rec = Rec::new();
        let iv = mm
            .interval_insert(start, len, rec as *const Rec as *const (), rec_cb)
            .expect("insert");
        Reg {
            mm: mm.clone(),
            iv: Some(iv),
            rec,
        }
    }

    pub fn iv(&self) -> &Interval {
        self.iv.as_ref().unwrap()
    }
}

impl Drop for Reg {
    fn drop(&mut self) {
        if let Some(iv) = self.iv.take() {
            let _s = self.mm.violations().scope();
            if !iv.is_removed() {
                self.mm.interval_remove(&iv);
            }
        }
    }
}

pub(crate) const MB2: u64 = 2 << 20;
pub(crate) const PG: u64 = 4096;
