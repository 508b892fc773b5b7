//! `mm/mmu_notifier.c` rules.

use super::{Reg, MB2, PG};
use crate::{MapFlags, MmHandle, Prot};
use pgtable::Errno;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;
use svm::platform::{Event, Interval as _, Mm};

fn mm() -> MmHandle {
    let mm = MmHandle::new();
    mm.mmu_notifier_register().unwrap();
    mm
}

#[test]
fn insert_idle_seq_is_mm_seq_minus_one_and_read_begin_does_not_wait() {
    let mm = mm();
    let _s = mm.violations().scope();
    assert_eq!(
        mm.notifier_seq(),
        2,
        "__mmu_notifier_register() starts at 2"
    );
    let r = Reg::new(&mm, 0x10_0000, MB2);
    assert_eq!(r.iv().seq(), 1);
    let seq = r.iv().read_begin();
    assert_eq!(seq, 1);
    assert!(!r.rec.read_retry(r.iv(), seq));
    assert!(!r.iv().check_retry(seq));
    assert_eq!(mm.notifier_stats().read_begin_waits, 0);
    mm.violations().assert_none();
}

#[test]
fn overlapping_invalidation_calls_once_with_odd_seq_then_seq_even() {
    let mm = mm();
    let _s = mm.violations().scope();
    let r = Reg::new(&mm, 0x20_0000, MB2);
    let seq = r.iv().read_begin();
    mm.invalidate(0x20_1000, 0x20_3000, Event::Clear);
    let calls = r.rec.calls();
    assert_eq!(calls.len(), 1);
    let (ev, s, e, blockable, cur) = calls[0];
    assert_eq!(
        (ev, s, e, blockable),
        (Event::Clear, 0x20_1000, 0x20_3000, true)
    );
    assert_eq!(cur, 3, "odd seq of the window");
    assert_eq!(mm.notifier_seq(), 4, "even again after inv_end");
    assert!(r.rec.read_retry(r.iv(), seq), "collided");
    // One call per notifier even for a range spanning it several times over.
    mm.invalidate(0, u64::MAX, Event::Release);
    assert_eq!(r.rec.calls().len(), 2);
    mm.violations().assert_none();
}

#[test]
fn non_overlapping_invalidation_leaves_seq_even() {
    let mm = mm();
    let _s = mm.violations().scope();
    let r = Reg::new(&mm, 0x40_0000, MB2);
    mm.set_notifier_trace(true);
    mm.with_invalidation(0x80_0000, 0x80_1000, Event::Clear, || {
        assert_eq!(mm.notifier_seq(), 2, "no interval hit: the seq stays even");
        // read_begin does not wait: this interval is not being invalidated.
        assert_eq!(r.iv().read_begin(), 1);
    });
    assert!(r.rec.calls().is_empty());
    let t = mm.take_notifier_trace();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].callbacks, 0);
    // Boundary: [start, end) with end == interval start does not overlap.
    mm.invalidate(0x30_0000, 0x40_0000, Event::Clear);
    mm.invalidate(0x60_0000, 0x70_0000, Event::Clear);
    assert!(r.rec.calls().is_empty());
    mm.invalidate(0x5f_f000, 0x60_0000, Event::Clear);
    assert_eq!(r.rec.calls().len(), 1);
}

#[test]
fn read_begin_blocks_during_invalidation_of_its_interval_only() {
    let mm = mm();
    let _s = mm.violations().scope();
    let a = Arc::new(Reg::new(&mm, 0, MB2));
    let b = Arc::new(Reg::new(&mm, 4 * MB2, MB2));
    let done = Arc::new(AtomicBool::new(false));
    let t = mm.with_invalidation(0, PG, Event::Clear, || {
        // Interval b was not invalidated in this window: no wait.
        assert_eq!(b.iv().read_begin(), 1);
        let (a2, done2, mm2) = (a.clone(), done.clone(), mm.clone());
        let t = std::thread::spawn(move || {
            let _s = mm2.violations().scope();
            let s = a2.iv().read_begin();
            done2.store(true, Ordering::SeqCst);
            s
        });
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            !done.load(Ordering::SeqCst),
            "read_begin must wait for the invalidation to end"
        );
        t
    });
    assert_eq!(t.join().unwrap(), 3, "the seq set by the callback");
    assert!(done.load(Ordering::SeqCst));
    assert!(mm.notifier_stats().read_begin_waits >= 1);
}

#[test]
fn read_begin_waits_for_every_overlapping_invalidation_of_the_mm() {
    // Two invalidations in one window: A is hit by the first, B by the second. A's reader
    // waits until the second one ends too (the mm-wide seq is what it waits on).
    let mm = mm();
    let _s = mm.violations().scope();
    let a = Arc::new(Reg::new(&mm, 0, MB2));
    let b = Arc::new(Reg::new(&mm, 4 * MB2, MB2));
    let first_open = Arc::new(Barrier::new(2));
    let close_first = Arc::new(Barrier::new(2));
    let (mm1, f1, c1) = (mm.clone(), first_open.clone(), close_first.clone());
    let t1 = std::thread::spawn(move || {
        mm1.with_invalidation(0, PG, Event::Clear, || {
            f1.wait();
            c1.wait();
        })
    });
    first_open.wait();
    let done = Arc::new(AtomicBool::new(false));
    mm.with_invalidation(4 * MB2, 4 * MB2 + PG, Event::Clear, || {
        close_first.wait();
        t1.join().unwrap();
        // A's invalidation has ended, B's is still open.
        let (a2, d2, mm2) = (a.clone(), done.clone(), mm.clone());
        let t = std::thread::spawn(move || {
            let _s = mm2.violations().scope();
            a2.iv().read_begin();
            d2.store(true, Ordering::SeqCst);
        });
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            !done.load(Ordering::SeqCst),
            "A's reader still waits on B's invalidation"
        );
        t
    })
    .join()
    .unwrap();
    assert!(done.load(Ordering::SeqCst));
    assert_eq!(b.rec.calls().len(), 1);
}

#[test]
fn insert_during_invalidation_is_deferred() {
    let mm = mm();
    let _s = mm.violations().scope();
    let a = Reg::new(&mm, 0, MB2);
    let c = mm.with_invalidation(0, MB2, Event::Clear, || {
        let odd = mm.notifier_seq();
        assert_eq!(odd & 1, 1);
        let c = Reg::new(&mm, 0, MB2);
        assert_eq!(
            c.iv().seq(),
            odd,
            "a deferred insert starts at the odd mm seq"
        );
        assert_eq!(mm.notifier_stats().deferred_inserts, 1);
        // The tree is frozen: a nested invalidation does not see the new interval.
        mm.invalidate(0, MB2, Event::Clear);
        assert!(c.rec.calls().is_empty());
        c
    });
    assert_eq!(a.rec.calls().len(), 2);
    // After the window it is in the tree; read_begin returns its (stale) odd seq at once, so a
    // fault started now is forced to retry once the range is invalidated again.
    let seq = c.iv().read_begin();
    assert_eq!(seq & 1, 1);
    mm.invalidate(0, PG, Event::Clear);
    assert_eq!(c.rec.calls().len(), 1);
    assert!(c.rec.read_retry(c.iv(), seq));
}

#[test]
fn insert_while_active_but_even_makes_seq_odd() {
    let mm = mm();
    let _s = mm.violations().scope();
    mm.with_invalidation(0x1000_0000, 0x1000_1000, Event::Clear, || {
        assert_eq!(mm.notifier_seq(), 2);
        let c = Reg::new(&mm, 0, MB2);
        assert_eq!(
            mm.notifier_seq(),
            3,
            "seq |= 1: this inv_end now has to bump it"
        );
        assert_eq!(c.iv().seq(), 3);
        assert_eq!(mm.notifier_stats().deferred_inserts, 0);
        c
    });
    assert_eq!(mm.notifier_seq(), 4);
}

#[test]
fn remove_during_invalidation_waits_and_callback_never_runs_again() {
    let mm = mm();
    let _s = mm.violations().scope();
    let mut a = Reg::new(&mm, 0, MB2);
    let iv = a.iv.take().unwrap();
    let rec = a.rec;
    let done = Arc::new(AtomicBool::new(false));
    let iv = Arc::new(iv);
    mm.with_invalidation(0, PG, Event::Clear, || {
        let (iv2, d2, mm2) = (iv.clone(), done.clone(), mm.clone());
        let t = std::thread::spawn(move || {
            let _s = mm2.violations().scope();
            mm2.interval_remove(&iv2);
            d2.store(true, Ordering::SeqCst);
        });
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            !done.load(Ordering::SeqCst),
            "remove waits for the running invalidation"
        );
        t
    })
    .join()
    .unwrap();
    assert!(iv.is_removed());
    let n = rec.calls().len();
    mm.invalidate(0, MB2, Event::Clear);
    assert_eq!(rec.calls().len(), n);
    assert_eq!(mm.notifier_stats().deferred_removes, 1);
    mm.violations().assert_none();
}

#[test]
fn remove_of_a_deferred_insert_does_not_wait() {
    let mm = mm();
    let _s = mm.violations().scope();
    let _a = Reg::new(&mm, 0, MB2);
    mm.with_invalidation(0, PG, Event::Clear, || {
        let c = Reg::new(&mm, 0, MB2);
        drop(c); // removes: still on the deferred list, so no wait (it would deadlock here)
    });
    assert_eq!(mm.notifier_stats().intervals, 1);
    mm.violations().assert_none();
}

#[test]
fn insert_after_exit_is_esrch_and_bad_lengths_einval() {
    let mm = mm();
    let _s = mm.violations().scope();
    let rec = super::Rec::new();
    let c = rec as *const super::Rec as *const ();
    assert_eq!(
        mm.interval_insert(0, 0, c, super::rec_cb).err(),
        Some(Errno::EINVAL)
    );
    assert_eq!(
        mm.interval_insert(u64::MAX - 10, 4096, c, super::rec_cb)
            .err(),
        Some(Errno::EINVAL)
    );
    mm.exit();
    assert_eq!(
        mm.interval_insert(0, MB2, c, super::rec_cb).err(),
        Some(Errno::ESRCH)
    );
}

#[test]
fn dropping_an_interval_without_remove_is_reported() {
    let mm = mm();
    let _s = mm.violations().scope();
    let mut a = Reg::new(&mm, 0, MB2);
    drop(a.iv.take());
    assert_eq!(mm.violations().count(), 1);
    // And the callback is gone (no use-after-free of the cookie).
    mm.invalidate(0, MB2, Event::Clear);
    assert!(a.rec.calls().is_empty());
}

#[test]
fn callback_without_set_seq_is_reported() {
    let mm = mm();
    let _s = mm.violations().scope();
    let a = Reg::new(&mm, 0, MB2);
    a.rec.skip_set_seq.store(true, Ordering::Relaxed);
    mm.invalidate(0, PG, Event::Clear);
    assert_eq!(mm.violations().count(), 1);
    assert!(mm.violations().messages()[0].contains("set_seq"));
}

#[test]
fn nonblock_refusal_skips_the_vma_and_ends_the_invalidation() {
    let mm = mm();
    let _s = mm.violations().scope();
    let a = mm.mmap(4 * PG, Prot::RW, MapFlags::ANON).unwrap();
    let b = mm.mmap(4 * PG, Prot::READ, MapFlags::ANON).unwrap();
    // Keep the two VMAs apart (different protections, so no merge).
    mm.cpu_write(a, 7).unwrap();
    mm.cpu_read(b).unwrap();
    let r = Reg::new(&mm, a, PG);
    r.rec.refuse_nonblock.store(true, Ordering::Relaxed);
    let rep = mm.oom_reap().unwrap();
    assert_eq!((rep.reaped, rep.skipped, rep.contended), (1, 1, false));
    assert_eq!(
        mm.notifier_seq() & 1,
        0,
        "the refused invalidation ended (inv_end ran)"
    );
    assert!(mm.cpu_pte(a).is_some(), "the refused VMA keeps its pages");
    assert!(mm.cpu_pte(b).is_none(), "the other VMA was reaped");
    assert_eq!(mm.notifier_stats().refused, 1);
    // The mm is unstable now: a fault needing a new page fails.
    assert_eq!(mm.cpu_read(b), Err(Errno::EFAULT));
    assert_eq!(mm.cpu_read(a), Ok(7));
    mm.violations().assert_none();
}
