//! Device atomics, one scenario each: the CPU hands pages over to the device
//! (`make_device_exclusive_range()`), the device maps them with atomic leaves, and every mm
//! operation takes them back. The model's device checks every access through an atomic leaf
//! against the CPU page table (I7: the page must still be handed over), and
//! `check_quiescent` checks every atomic leaf at rest.

use model::{MapFlags, Prot, World, WorldBuilder};
use pgtable::{Errno, Gfx9Format, PteFormat};
use svm::{Config, Scratch};

const PAGE: u64 = 4096;

fn world() -> World {
    WorldBuilder::new()
        .config(Config::default())
        .build()
        .unwrap()
}

use svm_tests::{done, quiet};

fn exclusive<F: PteFormat>(w: &World<F>, a: u64, pages: u64) -> (Result<(), Errno>, u64) {
    let _s = w.violations.scope();
    let mut done = 0;
    let r = w
        .engine
        .make_exclusive(&mut Scratch::new(), a, pages * PAGE, &mut done);
    (r, done)
}

fn hand_over_and_take_back<F: PteFormat>(w: &World<F>) {
    let n = 8;
    let a = w.mm.mmap(n * PAGE, Prot::RW, MapFlags::ANON).unwrap();
    let mut d = w.device();
    for i in 0..n {
        w.mm.cpu_write(a + i * PAGE, i).unwrap();
    }
    // A plain mapping first: the atomic leaf reuses its DMA mapping.
    assert_eq!(d.read(a).unwrap(), 0);
    for i in 0..n {
        assert_eq!(d.exclusive_add(a + i * PAGE, 100).unwrap(), i);
        assert!(w.mm.is_exclusive(a + i * PAGE), "page {i} not handed over");
    }
    assert!(w.engine.has_atomic(a, a + n * PAGE));
    assert_eq!(w.engine.stats().atomic_mapped, n);
    // Atomics again, and plain accesses, need no fault while the device has the pages.
    let faults = d.stats().faults;
    for i in 0..n {
        d.exclusive_add(a + i * PAGE, 1).unwrap();
        assert_eq!(d.read(a + i * PAGE).unwrap(), 101 + i);
    }
    assert_eq!(d.stats().faults, faults);
    quiet(w);
    // The CPU takes each back: the atomic leaf goes (the device's next atomic faults again).
    for i in 0..n {
        assert_eq!(w.mm.cpu_read(a + i * PAGE).unwrap(), 101 + i);
        assert!(!w.mm.is_exclusive(a + i * PAGE));
        assert!(!w.engine.has_atomic(a + i * PAGE, a + (i + 1) * PAGE));
    }
    quiet(w);
    d.exclusive_add(a, 1).unwrap();
    assert_eq!(d.stats().faults, faults + 1);
    w.mm.cpu_add(a, 1).unwrap();
    assert_eq!(d.read(a).unwrap(), 103);
    done(w);
}

#[test]
fn hand_over_and_take_back_x86() {
    hand_over_and_take_back(&world());
}

#[test]
fn hand_over_and_take_back_gfx9() {
    let w = World::<Gfx9Format>::builder()
        .config(Config::default())
        .build()
        .unwrap();
    hand_over_and_take_back(&w);
}

/// Handing over pages the device already has converges: the engine takes its own exclusive
/// entries back before it reads the seq (`make_device_exclusive_range()`'s own
/// `get_user_pages` would take them back after, and every round would fail).
#[test]
fn hand_over_twice_converges() {
    let w = world();
    let n = 16;
    let a = w.mm.mmap(n * PAGE, Prot::RW, MapFlags::ANON).unwrap();
    for _ in 0..3 {
        assert_eq!(exclusive(&w, a, n), (Ok(()), n * PAGE));
        assert!((0..n).all(|i| w.mm.is_exclusive(a + i * PAGE)));
    }
    quiet(&w);
    // Never-touched memory was faulted in, zero-filled.
    let mut d = w.device();
    assert_eq!(d.exclusive_add(a, 5).unwrap(), 0);
    assert_eq!(w.mm.cpu_read(a).unwrap(), 5);
    done(&w);
}

#[test]
fn bad_input_and_protection() {
    let w = world();
    let a = w.mm.mmap(4 * PAGE, Prot::RW, MapFlags::ANON).unwrap();
    assert_eq!(exclusive(&w, a + 1, 1).0, Err(Errno::EINVAL));
    assert_eq!(exclusive(&w, a, 0).0, Err(Errno::EINVAL));
    assert_eq!(
        w.engine
            .make_exclusive(&mut Scratch::new(), !4095, 2 * PAGE, &mut 0),
        Err(Errno::EINVAL)
    );
    w.mm.mprotect(a, PAGE, Prot::READ).unwrap();
    w.mm.mprotect(a + PAGE, PAGE, Prot::NONE).unwrap();
    assert_eq!(exclusive(&w, a, 1).0, Err(Errno::EPERM));
    assert_eq!(exclusive(&w, a + PAGE, 1).0, Err(Errno::EFAULT));
    let mut d = w.device();
    assert_eq!(d.exclusive_add(a, 1), Err(Errno::EPERM));
    // Partial progress: the pages before the read-only one were handed over.
    w.mm.munmap(a + 3 * PAGE, PAGE).unwrap();
    assert_eq!(exclusive(&w, a + 2 * PAGE, 2), (Err(Errno::EFAULT), PAGE));
    quiet(&w);
    done(&w);
}

/// munmap, `MADV_DONTNEED`, mprotect and exit each take handed-over pages back: the atomic
/// leaves go with them.
#[test]
fn mm_operations_take_pages_back() {
    let w = world();
    let n = 8;
    let a = w.mm.mmap(n * PAGE, Prot::RW, MapFlags::ANON).unwrap();
    for i in 0..n {
        w.mm.cpu_write(a + i * PAGE, 1 + i).unwrap();
    }
    assert_eq!(exclusive(&w, a, n), (Ok(()), n * PAGE));
    w.mm.munmap(a, 2 * PAGE).unwrap();
    w.mm.madvise_dontneed(a + 2 * PAGE, 2 * PAGE).unwrap();
    w.mm.mprotect(a + 4 * PAGE, 2 * PAGE, Prot::READ).unwrap();
    assert!(!w.engine.has_atomic(a, a + 6 * PAGE));
    assert!(w.engine.has_atomic(a + 6 * PAGE, a + 8 * PAGE));
    quiet(&w);
    let mut d = w.device();
    assert_eq!(d.read(a + 2 * PAGE).unwrap(), 0);
    assert_eq!(d.read(a + 4 * PAGE).unwrap(), 5);
    assert_eq!(w.mm.cpu_read(a + 5 * PAGE).unwrap(), 6);
    assert_eq!(d.exclusive_add(a + 4 * PAGE, 1), Err(Errno::EPERM));
    quiet(&w);
    w.mm.exit();
    quiet(&w);
    assert_eq!(w.mm.live_frames(), 0, "handed-over pages leaked");
    done(&w);
}

/// fork takes handed-over pages back (and write-protects the parent): the atomic leaves go,
/// the child sees the data, and the next device atomic breaks COW and hands the new page over.
#[test]
fn fork_takes_pages_back() {
    let w = world();
    let a = w.mm.mmap(2 * PAGE, Prot::RW, MapFlags::ANON).unwrap();
    let mut d = w.device();
    d.exclusive_add(a, 7).unwrap();
    d.exclusive_add(a + PAGE, 8).unwrap();
    let child = w.mm.fork().unwrap();
    assert!(!w.engine.has_atomic(a, a + 2 * PAGE));
    quiet(&w);
    assert_eq!(child.cpu_read(a).unwrap(), 7);
    assert_eq!(d.exclusive_add(a, 1).unwrap(), 7);
    assert!(w.mm.is_exclusive(a));
    assert_eq!(
        child.cpu_read(a).unwrap(),
        7,
        "the child sees the parent's atomic"
    );
    assert_eq!(w.mm.cpu_read(a).unwrap(), 8);
    child.exit();
    done(&w);
}

/// A THP is split when one of its pages is handed over; the device's 2 MiB leaf goes.
#[test]
fn thp_is_split() {
    let w = world();
    let a = w.mm.mmap(4 << 20, Prot::RW, MapFlags::THP).unwrap();
    let a = (a + (2 << 20) - 1) & !((2 << 20) - 1);
    w.mm.cpu_write(a, 3).unwrap();
    let mut d = w.device();
    assert_eq!(d.read(a + PAGE).unwrap(), 0);
    assert!(w.mm.is_pmd_mapped(a));
    assert_eq!(d.exclusive_add(a, 1).unwrap(), 3);
    assert!(!w.mm.is_pmd_mapped(a));
    assert_eq!(d.read(a + PAGE).unwrap(), 0);
    quiet(&w);
    assert_eq!(w.mm.cpu_read(a).unwrap(), 4);
    done(&w);
}
