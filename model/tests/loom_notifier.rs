//! Loom checks of the model's notifier core (run with
//! `RUSTFLAGS="--cfg loom" cargo test -p model --release --test loom_notifier`).
//!
//! A minimal mirror driven by the seq protocol: whatever it has installed when both sides are
//! done must match the CPU's final state, in every interleaving loom finds.
#![cfg(loom)]

use loom::sync::atomic::{AtomicU64, Ordering};
use loom::sync::Arc;
use model::{Interval, MmHandle, ModelLock};
use pgtable::{Lock, LockClass};
use svm::platform::{Event, Interval as _, Invalidation, Mm};

struct Mirror {
    /// The installed translation (a "device PTE"), under the range lock.
    lock: ModelLock<Option<u64>>,
}

unsafe fn invalidate(cookie: *const (), iv: &Interval, inv: &Invalidation) -> bool {
    // SAFETY: the cookie is the `Mirror` kept alive until after `interval_remove`.
    let m = unsafe { &*(cookie as *const Mirror) };
    let mut g = m.lock.lock();
    iv.set_seq(inv.cur_seq);
    *g = None;
    true
}

#[test]
fn read_begin_and_retry_keep_a_mirror_coherent() {
    loom::model(|| {
        let mm = MmHandle::new();
        let _s = mm.violations().scope();
        let mirror = Arc::new(Mirror {
            lock: ModelLock::new(None, LockClass::Range),
        });
        let cpu_pte = Arc::new(AtomicU64::new(1));
        let cookie = &*mirror as *const Mirror as *const ();
        let iv = mm.interval_insert(0, 4096, cookie, invalidate).unwrap();

        let (mm2, pte2) = (mm.clone(), cpu_pte.clone());
        let cpu = loom::thread::spawn(move || {
            let _s = mm2.violations().scope();
            // invalidate_range_start, the PTE change, invalidate_range_end.
            mm2.with_invalidation(0, 4096, Event::Clear, || pte2.store(2, Ordering::SeqCst));
        });

        // The fault: read_begin, read the CPU PTE, lock, read_retry, install.
        loop {
            let seq = iv.read_begin();
            let v = cpu_pte.load(Ordering::SeqCst);
            let mut g = mirror.lock.lock();
            if iv.read_retry(seq) {
                continue;
            }
            *g = Some(v);
            break;
        }
        cpu.join().unwrap();
        if let Some(v) = *mirror.lock.lock() {
            assert_eq!(
                v,
                cpu_pte.load(Ordering::SeqCst),
                "stale translation survived"
            );
        }
        mm.interval_remove(&iv);
        mm.violations().assert_none();
    });
}
