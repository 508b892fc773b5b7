//! The locking-rule checks.

use super::{Reg, MB2};
use crate::{MmHandle, ModelLock, TableMem, Violations};
use pgtable::{Lock, LockClass, PtMem, X86Format};
use svm::platform::{Interval as _, Mm};

#[test]
fn two_range_locks() {
    let v = Violations::new();
    let _s = v.scope();
    let a = ModelLock::new((), LockClass::Range).unwrap();
    let b = ModelLock::new((), LockClass::Range).unwrap();
    let _g = a.lock();
    let _h = b.lock();
    assert_eq!(v.count(), 1);
}

#[test]
fn table_lock_is_innermost() {
    let v = Violations::new();
    let _s = v.scope();
    let t = ModelLock::new((), LockClass::Table).unwrap();
    let r = ModelLock::new((), LockClass::Range).unwrap();
    {
        let _g = r.lock();
        let _h = t.lock();
    }
    assert!(v.is_empty(), "Table under Range is the right order");
    let _h = t.lock();
    let _g = r.lock();
    assert_eq!(v.count(), 1);
}

#[test]
fn sleeping_calls_under_a_range_lock() {
    let mm = MmHandle::new();
    mm.mmu_notifier_register().unwrap();
    let v = mm.violations().clone();
    let _s = v.scope();
    let reg = Reg::new(&mm, 0, MB2);
    let r = ModelLock::new((), LockClass::Range).unwrap();
    let mem = TableMem::new::<X86Format>(v.clone());
    {
        let _g = r.lock();
        reg.iv().read_begin();
        assert_eq!(v.count(), 1, "read_begin under a range lock");
        let _m = mm.mmap_read().unwrap();
        assert_eq!(v.count(), 2, "mmap_lock under a range lock");
        drop(_m);
        let t = mem.alloc().unwrap();
        assert_eq!(v.count(), 3, "GFP_KERNEL under a range lock");
        unsafe { mem.free(t) };
    }
    {
        let _m = mm.mmap_read().unwrap();
        let rec = super::Rec::new();
        let iv = mm
            .interval_insert(0, MB2, rec as *const super::Rec as *const (), super::rec_cb)
            .unwrap();
        assert_eq!(v.count(), 4, "interval insert under mmap_lock");
        drop(_m);
        mm.interval_remove(&iv);
    }
    // read_retry outside the lock the callback takes.
    reg.iv().read_retry(0);
    assert_eq!(v.count(), 5);
    reg.iv().set_seq(3);
    assert_eq!(v.count(), 6, "set_seq outside a callback");
}

#[test]
#[should_panic(expected = "lockdep")]
fn no_scope_panics() {
    let a = ModelLock::new((), LockClass::Range).unwrap();
    let b = ModelLock::new((), LockClass::Range).unwrap();
    let _g = a.lock();
    let _h = b.lock();
}
