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

/// `MADV_DONTNEED` of one page of an empty THP-eligible 2 MiB block, racing a CPU store
/// elsewhere in the block that faults a THP in (both under `mmap_read_lock`): the zap must
/// split a PMD that appeared after its first look, as `zap_pmd_range()` does under the PMD
/// lock, instead of zapping it whole (which freed pages outside the advised span behind
/// their notifiers' backs: the storm's `set_page_dirty()` of a freed page).
#[test]
fn madvise_splits_a_thp_faulted_in_during_it() {
    use model::{MapFlags, Prot};
    const M2: u64 = 2 << 20;
    loom::model(|| {
        let mm = MmHandle::new();
        let _s = mm.violations().scope();
        let h = mm.mmap(M2, Prot::RW, MapFlags::THP).unwrap();
        assert_eq!(h % M2, 0);
        let mm2 = mm.clone();
        let cpu = loom::thread::spawn(move || {
            let _s = mm2.violations().scope();
            mm2.cpu_write(h + M2 / 2, 7).unwrap();
        });
        mm.madvise_dontneed(h + 4096, 4096).unwrap();
        cpu.join().unwrap();
        assert_eq!(
            mm.cpu_read(h + M2 / 2).unwrap(),
            7,
            "a store outside the span was lost"
        );
        mm.violations().assert_none();
    });
}
