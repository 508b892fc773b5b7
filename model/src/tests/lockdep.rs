//! The locking-rule checks.

use super::{Reg, MB2};
use crate::{MmHandle, ModelLock, ModelRwLock, TableMem, Violations};
use pgtable::{Lock, LockClass, PtMem, RwLock, X86Format};
use svm::platform::{Interval as _, Mm};

#[test]
fn two_range_locks() {
    let v = Violations::new();
    let _s = v.scope();
    let a = ModelLock::new((), LockClass::Range);
    let b = ModelLock::new((), LockClass::Range);
    let _g = a.lock();
    let _h = b.lock();
    assert_eq!(v.count(), 1);
}

#[test]
fn table_lock_is_innermost() {
    let v = Violations::new();
    let _s = v.scope();
    let t = ModelLock::new((), LockClass::Table);
    let r = ModelLock::new((), LockClass::Range);
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
    let r = ModelLock::new((), LockClass::Range);
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
    let a = ModelLock::new((), LockClass::Range);
    let b = ModelLock::new((), LockClass::Range);
    let _g = a.lock();
    let _h = b.lock();
}

/// The engine-wide lock of the baseline lock scopes: outside the range lock, inside
/// `mmap_lock`, never recursive, never blocking in a non-blockable callback, and nothing that
/// may sleep on an invalidation or allocate under it.
#[test]
fn engine_lock_order() {
    let mm = MmHandle::new();
    mm.mmu_notifier_register().unwrap();
    let v = mm.violations().clone();
    let _s = v.scope();
    let reg = Reg::new(&mm, 0, MB2);
    let m = ModelLock::new((), LockClass::Engine);
    let rw = ModelRwLock::new((), LockClass::Engine);
    let r = ModelLock::new((), LockClass::Range);
    let t = ModelLock::new((), LockClass::Table);
    {
        let _m = mm.mmap_read().unwrap();
        let _e = m.lock();
        let _g = r.lock();
        let _h = t.lock();
    }
    {
        let _e = rw.read();
        let _g = r.lock();
    }
    {
        let _e = rw.write();
        let _g = r.lock();
    }
    assert!(
        v.is_empty(),
        "mmap_lock -> engine -> range -> table is the order: {v:?}"
    );
    {
        let _g = r.lock();
        drop(m.lock());
        assert_eq!(v.count(), 1, "engine mutex under a range lock");
        drop(rw.read());
        assert_eq!(v.count(), 2, "engine rwsem under a range lock");
    }
    {
        let _e = rw.read();
        let _f = rw.read();
        assert_eq!(v.count(), 3, "recursive read of the engine rwsem");
        assert!(rw.try_write().is_none(), "read side held: try_write fails");
        assert_eq!(v.count(), 3, "a trylock is never a recursion report");
    }
    {
        let _e = m.lock();
        reg.iv().read_begin();
        assert_eq!(v.count(), 4, "read_begin under the engine lock");
        let _m = mm.mmap_read().unwrap();
        assert_eq!(v.count(), 5, "mmap_lock under the engine lock");
    }
    {
        let mem = TableMem::new::<X86Format>(v.clone());
        let _e = rw.write();
        let tb = mem.alloc().unwrap();
        assert_eq!(v.count(), 6, "GFP_KERNEL under the engine lock");
        // SAFETY: allocated just above and never linked anywhere.
        unsafe { mem.free(tb) };
    }
    {
        let _t = t.lock();
        let _e = m.lock();
        assert_eq!(v.count(), 7, "engine lock under a table lock");
    }
}

#[test]
fn engine_lock_in_a_nonblockable_callback() {
    let v = Violations::new();
    let _s = v.scope();
    let m = ModelLock::new((), LockClass::Engine);
    let rw = ModelRwLock::new((), LockClass::Engine);
    let _cb = crate::lockdep::enter_callback(false);
    assert!(m.try_lock().is_some());
    assert!(rw.try_write().is_some());
    assert!(v.is_empty(), "trylocks are the way: {v:?}");
    drop(m.lock());
    assert_eq!(v.count(), 1);
    drop(rw.write());
    assert_eq!(v.count(), 2);
}
