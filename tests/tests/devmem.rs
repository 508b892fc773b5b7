//! Device memory, one scenario each: migration to the device's own memory and back, the CPU
//! fault that brings a page back (`migrate_to_ram`), a second device's fault on the first's
//! pages, and every mm operation on device-resident pages. Every device access is checked by
//! the model's device (a local leaf must name the device page the CPU's device-private entry
//! names) and every free by the DMA-live detector; `check_quiescent` checks the rest.

use model::{MapFlags, Prot, World, WorldBuilder};
use pgtable::{Errno, Gfx9Format, PteFormat};
use svm::{Config, Place, Scratch};

const PAGE: u64 = 4096;

fn world(pages: usize) -> World {
    WorldBuilder::new()
        .config(Config::default())
        .devmem_pages(pages)
        .build()
        .unwrap()
}

use svm_tests::{done, quiet};

fn migrate<F: PteFormat>(w: &World<F>, a: u64, pages: u64, to: Place) -> (Result<(), Errno>, u64) {
    let _s = w.violations.scope();
    let mut s = Scratch::new();
    let mut done = 0;
    let r = w.engine.migrate(&mut s, a, pages * PAGE, to, &mut done);
    (r.map(|_| ()), done)
}

/// Pages of `[a, a + n pages)` the CPU maps with a device-private entry.
fn resident<F: PteFormat>(w: &World<F>, a: u64, n: u64) -> u64 {
    (0..n)
        .filter(|i| w.mm.device_pte(a + i * PAGE).is_some())
        .count() as u64
}

fn migrate_round_trip<F: PteFormat>(w: &World<F>) {
    let n = 16;
    let a = w.mm.mmap(n * PAGE, Prot::RW, MapFlags::ANON).unwrap();
    let mut d = w.device();
    for i in 0..n {
        w.mm.cpu_write(a + i * PAGE, i + 1).unwrap();
        assert_eq!(d.read(a + i * PAGE).unwrap(), i + 1);
    }
    assert!(w.dma.live() > 0);
    assert_eq!(migrate(w, a, n, Place::Device), (Ok(()), n * PAGE));
    quiet(w);
    assert_eq!(resident(w, a, n), n);
    assert_eq!(w.devmem.used(), n as usize);
    // The migration zapped and unmapped what the device had of the old pages (the DMA-live
    // detector reports any mapping of a page `finalize` freed).
    quiet(w);
    assert_eq!(w.dma.live(), 0, "DMA mappings of migrated pages left");
    for i in 0..n {
        assert_eq!(d.read(a + i * PAGE).unwrap(), i + 1, "data lost moving in");
        d.write(a + i * PAGE, 100 + i).unwrap();
    }
    let s = w.engine.stats();
    assert_eq!(s.migrated_to_device, n);
    assert!(s.local_mapped >= n, "{s:?}");
    assert!(s.migrate_skips >= 1, "own migration not recognised: {s:?}");
    assert_eq!(w.dma.live(), 0, "device pages reached through DMA");
    quiet(w);
    // Half go back through the engine, half through CPU faults.
    assert_eq!(migrate(w, a, n / 2, Place::System), (Ok(()), n / 2 * PAGE));
    assert_eq!(resident(w, a, n), n / 2);
    for i in 0..n {
        assert_eq!(
            w.mm.cpu_read(a + i * PAGE).unwrap(),
            100 + i,
            "data lost moving out"
        );
    }
    assert_eq!(resident(w, a, n), 0);
    assert_eq!(w.devmem.used(), 0);
    assert_eq!(w.engine.stats().migrated_to_system, n / 2);
    for i in 0..n {
        assert_eq!(d.read(a + i * PAGE).unwrap(), 100 + i);
    }
    done(w);
}

#[test]
fn migrate_to_device_and_back_keeps_data() {
    migrate_round_trip(&world(64));
}

#[test]
fn gfx9_local_leaves_too() {
    let w = World::<Gfx9Format>::builder()
        .devmem_pages(64)
        .build()
        .unwrap();
    migrate_round_trip(&w);
}

#[test]
fn holes_and_the_zero_page_migrate_as_zeroes() {
    let w = world(64);
    let a = w.mm.mmap(8 * PAGE, Prot::RW, MapFlags::ANON).unwrap();
    let mut d = w.device();
    // Page 0 maps the zero page (for the device too); the rest are holes.
    assert_eq!(w.mm.cpu_read(a).unwrap(), 0);
    assert_eq!(d.read(a).unwrap(), 0);
    assert_eq!(migrate(&w, a, 8, Place::Device), (Ok(()), 8 * PAGE));
    assert_eq!(resident(&w, a, 8), 8);
    for i in 0..8 {
        assert_eq!(d.read(a + i * PAGE).unwrap(), 0);
    }
    d.write(a, 5).unwrap();
    quiet(&w);
    assert_eq!(w.mm.cpu_read(a).unwrap(), 5);
    done(&w);
}

#[test]
fn full_device_memory_gives_enomem_and_loses_nothing() {
    let w = world(4);
    let a = w.mm.mmap(8 * PAGE, Prot::RW, MapFlags::ANON).unwrap();
    for i in 0..8 {
        w.mm.cpu_write(a + i * PAGE, i + 7).unwrap();
    }
    let (r, _) = migrate(&w, a, 8, Place::Device);
    assert_eq!(r, Err(Errno::ENOMEM));
    assert_eq!(resident(&w, a, 8), 4);
    assert_eq!(w.devmem.used(), 4);
    let mut d = w.device();
    for i in 0..8 {
        assert_eq!(d.read(a + i * PAGE).unwrap(), i + 7);
        assert_eq!(w.mm.cpu_read(a + i * PAGE).unwrap(), i + 7);
    }
    assert_eq!(w.devmem.used(), 0);
    done(&w);
}

#[test]
fn bad_migrations_get_an_errno() {
    let w = world(8);
    let none = World::new(Config::default()).unwrap();
    let a = w.mm.mmap(4 * PAGE, Prot::RW, MapFlags::ANON).unwrap();
    assert_eq!(migrate(&w, a + 1, 1, Place::Device).0, Err(Errno::EINVAL));
    assert_eq!(migrate(&w, a, 0, Place::Device).0, Err(Errno::EINVAL));
    assert_eq!(
        migrate(&w, !(PAGE - 1), 2, Place::Device).0,
        Err(Errno::EINVAL)
    );
    assert_eq!(migrate(&w, 1 << 47, 1, Place::Device).0, Err(Errno::EINVAL));
    // A hole after the mapping: the pages before it are done.
    w.mm.munmap(a + 2 * PAGE, 2 * PAGE).unwrap();
    assert_eq!(
        migrate(&w, a, 4, Place::Device),
        (Err(Errno::EFAULT), 2 * PAGE)
    );
    let b = none.mm.mmap(PAGE, Prot::RW, MapFlags::ANON).unwrap();
    assert_eq!(
        migrate(&none, b, 1, Place::Device).0,
        Err(Errno::EOPNOTSUPP)
    );
    done(&w);
    done(&none);
}

#[test]
fn munmap_dontneed_and_exit_free_device_pages() {
    let w = world(64);
    let a = w.mm.mmap(12 * PAGE, Prot::RW, MapFlags::ANON).unwrap();
    let mut d = w.device();
    for i in 0..12 {
        d.write(a + i * PAGE, i).unwrap();
    }
    assert_eq!(migrate(&w, a, 12, Place::Device).0, Ok(()));
    for i in 0..12 {
        d.read(a + i * PAGE).unwrap();
    }
    w.mm.munmap(a, 4 * PAGE).unwrap();
    assert_eq!(w.devmem.used(), 8);
    w.mm.madvise_dontneed(a + 4 * PAGE, 4 * PAGE).unwrap();
    assert_eq!(w.devmem.used(), 4);
    assert_eq!(w.mm.cpu_read(a + 4 * PAGE).unwrap(), 0);
    assert_eq!(d.read(a + 5 * PAGE).unwrap(), 0);
    quiet(&w);
    w.mm.exit();
    assert_eq!(w.devmem.used(), 0);
    done(&w);
}

#[test]
fn mprotect_read_only_device_pages() {
    let w = world(8);
    let a = w.mm.mmap(2 * PAGE, Prot::RW, MapFlags::ANON).unwrap();
    let mut d = w.device();
    d.write(a, 9).unwrap();
    assert_eq!(migrate(&w, a, 2, Place::Device).0, Ok(()));
    d.write(a, 10).unwrap();
    w.mm.mprotect(a, 2 * PAGE, Prot::READ).unwrap();
    assert_eq!(w.mm.device_pte(a).map(|p| p.1), Some(false));
    assert_eq!(d.read(a).unwrap(), 10);
    assert_eq!(d.write(a, 11), Err(Errno::EPERM));
    quiet(&w);
    w.mm.mprotect(a, 2 * PAGE, Prot::RW).unwrap();
    // Still read-only in the CPU's entry: the write moves the page back, then writes it.
    d.write(a, 12).unwrap();
    assert_eq!(w.mm.cpu_read(a).unwrap(), 12);
    done(&w);
}

#[test]
fn fork_shares_device_pages_and_a_write_moves_them_back() {
    let w = world(8);
    let a = w.mm.mmap(2 * PAGE, Prot::RW, MapFlags::ANON).unwrap();
    let mut d = w.device();
    d.write(a, 1).unwrap();
    d.write(a + PAGE, 2).unwrap();
    assert_eq!(migrate(&w, a, 2, Place::Device).0, Ok(()));
    // A writable local leaf: the fork's write-protect must keep it local.
    d.write(a, 1).unwrap();
    let child = w.mm.fork().unwrap();
    quiet(&w);
    assert_eq!(w.mm.device_pte(a).map(|p| p.1), Some(false));
    assert_eq!(d.read(a).unwrap(), 1);
    // The device writes its own read-only page: back to system memory, then COW.
    d.write(a, 3).unwrap();
    assert_eq!(
        child.cpu_read(a).unwrap(),
        1,
        "device write leaked into the child"
    );
    assert_eq!(w.mm.cpu_read(a).unwrap(), 3);
    // The child touches a shared device page: both see system memory after.
    assert_eq!(child.cpu_read(a + PAGE).unwrap(), 2);
    assert_eq!(w.mm.device_pte(a + PAGE), None);
    assert_eq!(d.read(a + PAGE).unwrap(), 2);
    child.cpu_write(a + PAGE, 20).unwrap();
    assert_eq!(d.read(a + PAGE).unwrap(), 2);
    child.exit();
    assert_eq!(w.devmem.used(), 0);
    done(&w);
}

#[test]
fn cpu_touch_zaps_the_device_leaf() {
    let w = world(8);
    let a = w.mm.mmap(PAGE, Prot::RW, MapFlags::ANON).unwrap();
    let mut d = w.device();
    d.write(a, 1).unwrap();
    assert_eq!(migrate(&w, a, 1, Place::Device).0, Ok(()));
    d.write(a, 2).unwrap();
    // migrate_to_ram carries our owner, but it is not this engine's migration: zapped.
    assert_eq!(w.mm.cpu_read(a).unwrap(), 2);
    quiet(&w);
    assert_eq!(d.read(a).unwrap(), 2);
    done(&w);
}

#[test]
fn second_device_faults_the_first_devices_pages_back() {
    let w = world(16);
    let v: World = WorldBuilder::new()
        .share_mm(&w.mm)
        .devmem_pages(16)
        .build()
        .unwrap();
    let a = w.mm.mmap(4 * PAGE, Prot::RW, MapFlags::ANON).unwrap();
    let (mut d, mut e) = (w.device(), v.device());
    for i in 0..4 {
        d.write(a + i * PAGE, i + 1).unwrap();
    }
    assert_eq!(migrate(&w, a, 4, Place::Device).0, Ok(()));
    d.read(a).unwrap();
    // The second device's fault: hmm finds a foreign device page and faults it back.
    assert_eq!(e.read(a).unwrap(), 1);
    assert_eq!(w.mm.device_pte(a), None);
    quiet(&w);
    quiet(&v);
    // Its migration to its own memory collects system pages only (6.12's
    // MIGRATE_VMA_SELECT_SYSTEM): the first device's pages stay where they are.
    assert_eq!(migrate(&v, a + PAGE, 3, Place::Device).0, Ok(()));
    assert_eq!(w.devmem.used(), 3);
    assert_eq!(v.devmem.used(), 0);
    assert_eq!(e.write(a + PAGE, 50), Ok(()));
    assert_eq!(d.read(a + PAGE).unwrap(), 50);
    assert_eq!(migrate(&v, a, 4, Place::Device).0, Ok(()));
    assert_eq!(v.devmem.used() + w.devmem.used(), 4);
    for i in 0..4 {
        e.read(a + i * PAGE).unwrap();
        d.read(a + i * PAGE).unwrap();
    }
    quiet(&w);
    quiet(&v);
    v.teardown();
    done(&w);
}

#[test]
fn migration_splits_a_thp() {
    let w = world(1024);
    let a = w.mm.mmap(4 << 20, Prot::RW, MapFlags::THP).unwrap();
    let h = (a + (2 << 20) - 1) & !((2 << 20) - 1);
    w.mm.cpu_write(h, 5).unwrap();
    assert!(w.mm.is_pmd_mapped(h));
    let mut d = w.device();
    assert_eq!(d.read(h).unwrap(), 5);
    assert_eq!(migrate(&w, h + PAGE, 2, Place::Device).0, Ok(()));
    assert!(!w.mm.is_pmd_mapped(h));
    assert_eq!(resident(&w, h, 4), 2);
    assert_eq!(d.read(h).unwrap(), 5);
    assert_eq!(d.read(h + PAGE).unwrap(), 0);
    done(&w);
}

#[test]
fn eviction_makes_room_least_recently_used_first() {
    let w = world(4);
    let a = w.mm.mmap(12 * PAGE, Prot::RW, MapFlags::ANON).unwrap();
    let mut d = w.device();
    for i in 0..12 {
        w.mm.cpu_write(a + i * PAGE, 40 + i).unwrap();
    }
    // Pages 0..4 fill device memory; the device maps them.
    assert_eq!(migrate(&w, a, 4, Place::Device), (Ok(()), 4 * PAGE));
    for i in 0..4 {
        d.write(a + i * PAGE, 80 + i).unwrap();
    }
    // Pages 4..6 need room: the two least recently used go back (with the device's writes),
    // zapped. The device's write fault on page 0 used it; its fault-around mapped pages 1..3
    // writable with it, so their writes did not fault: 1 and 2 are the oldest.
    assert_eq!(
        migrate(&w, a + 4 * PAGE, 2, Place::Device),
        (Ok(()), 2 * PAGE)
    );
    assert_eq!(w.devmem.used(), 4);
    assert!(w.mm.device_pte(a).is_some());
    assert_eq!(w.mm.device_pte(a + PAGE), None);
    assert_eq!(w.mm.device_pte(a + 2 * PAGE), None);
    assert!(w.mm.device_pte(a + 3 * PAGE).is_some());
    assert!(w.mm.device_pte(a + 4 * PAGE).is_some());
    assert_eq!(w.engine.stats().evicted, 2);
    quiet(&w);
    // A working set twice device memory, cycled: nothing lost.
    for round in 0..3 {
        for base in [0u64, 4, 8] {
            assert_eq!(
                migrate(&w, a + base * PAGE, 4, Place::Device).0,
                Ok(()),
                "round {round} base {base}"
            );
            for i in base..base + 4 {
                d.atomic_add(a + i * PAGE, 1).unwrap();
            }
        }
    }
    quiet(&w);
    for i in 0..12 {
        let want = if i < 4 { 80 + i } else { 40 + i } + 3;
        assert_eq!(w.mm.cpu_read(a + i * PAGE).unwrap(), want, "page {i}");
    }
    assert_eq!(w.devmem.used(), 0);
    done(&w);
}

#[test]
fn eviction_and_migration_back_keep_prot_none() {
    let w = world(1);
    let a = w.mm.mmap(3 * PAGE, Prot::RW, MapFlags::ANON).unwrap();
    for i in 0..3 {
        w.mm.cpu_write(a + i * PAGE, 9 + i).unwrap();
    }
    assert_eq!(migrate(&w, a, 1, Place::Device).0, Ok(()));
    w.mm.mprotect(a, PAGE, Prot::NONE).unwrap();
    // Evicting the PROT_NONE device page must leave it PROT_NONE in system memory.
    assert_eq!(migrate(&w, a + PAGE, 1, Place::Device).0, Ok(()));
    assert_eq!(w.mm.device_pte(a), None);
    assert_eq!(w.mm.cpu_read(a), Err(Errno::EFAULT));
    // The same for a migration back of a read-only page: no write right from nowhere.
    w.mm.mprotect(a + PAGE, PAGE, Prot::READ).unwrap();
    assert_eq!(migrate(&w, a + PAGE, 1, Place::System).0, Ok(()));
    assert_eq!(
        w.mm.cpu_pte(a + PAGE),
        Some((w.mm.cpu_pte(a + PAGE).unwrap().0, false))
    );
    assert_eq!(w.mm.cpu_read(a + PAGE), Ok(10));
    w.mm.mprotect(a, 2 * PAGE, Prot::RW).unwrap();
    assert_eq!(w.mm.cpu_read(a), Ok(9));
    done(&w);
}

/// A device fault in a span whose preferred location is the device (`Engine::place_for_fault`,
/// as the accel driver calls it): the aligned block around the fault, clamped to the span,
/// moves first; the fault then maps it locally. Without device memory, nothing moves.
#[test]
fn place_for_fault_moves_the_block() {
    let w = world(256);
    let n = 160;
    let a = w.mm.mmap(n * PAGE, Prot::RW, MapFlags::ANON).unwrap();
    for i in 0..n {
        w.mm.cpu_write(a + i * PAGE, i).unwrap();
    }
    let mut s = Scratch::new();
    let blk = 64 * PAGE;
    let b = (a + 70 * PAGE) & !(blk - 1);
    let span_end = a + 100 * PAGE;
    let moved = w
        .engine
        .place_for_fault(&mut s, a + 70 * PAGE, a + 60 * PAGE, span_end);
    let want = (b + blk).min(span_end) - b.max(a + 60 * PAGE);
    assert_eq!(moved, want / PAGE);
    assert!(w.mm.device_pte(a + 70 * PAGE).is_some());
    assert!(w.mm.device_pte(span_end).is_none(), "moved past the span");
    let mut d = w.device();
    assert_eq!(d.read(a + 70 * PAGE).unwrap(), 70);
    assert!(w.engine.stats().local_mapped >= 1);
    // Outside its span, nothing moves.
    assert_eq!(
        w.engine.place_for_fault(&mut s, a, a + PAGE, a + 2 * PAGE),
        0
    );
    quiet(&w);
    let w0: World = WorldBuilder::new().build().unwrap();
    let a0 = w0.mm.mmap(PAGE, Prot::RW, MapFlags::ANON).unwrap();
    assert_eq!(w0.engine.place_for_fault(&mut s, a0, a0, a0 + PAGE), 0);
    done(&w);
}

/// A span that reaches memory `migrate_vma_setup()` refuses whole (hugetlb, a driver's
/// `VM_MIXEDMAP`): the migration passes over it, moving what it can, instead of failing with
/// setup's `EINVAL` (the VM fuzzer's MADVISE found the accel uAPI returning it).
#[test]
fn migration_passes_over_memory_migrate_vma_refuses() {
    let w = world(64);
    let a = w.mm.mmap(8 * PAGE, Prot::RW, MapFlags::ANON).unwrap();
    let b =
        w.mm.mmap_fixed(a + 8 * PAGE, 4 * PAGE, Prot::RW, MapFlags::NO_MIGRATE);
    assert_eq!(b, Ok(a + 8 * PAGE));
    let c =
        w.mm.mmap_fixed(a + 12 * PAGE, 4 * PAGE, Prot::RW, MapFlags::ANON);
    assert_eq!(c, Ok(a + 12 * PAGE));
    for i in 0..16 {
        w.mm.cpu_write(a + i * PAGE, i + 1).unwrap();
    }
    assert_eq!(migrate(&w, a, 16, Place::Device), (Ok(()), 16 * PAGE));
    assert_eq!(resident(&w, a, 8), 8);
    assert_eq!(resident(&w, a + 8 * PAGE, 4), 0);
    assert_eq!(resident(&w, a + 12 * PAGE, 4), 4);
    let mut d = w.device();
    for i in 0..16 {
        assert_eq!(d.read(a + i * PAGE).unwrap(), i + 1);
    }
    quiet(&w);
    assert_eq!(migrate(&w, a, 16, Place::System), (Ok(()), 16 * PAGE));
    assert_eq!(resident(&w, a, 16), 0);
    done(&w);
}

/// Eviction takes the least recently *used* page: a device fault that maps a device page
/// (`Devmem::touch`) makes it young again, so a page moved in first but used since stays.
#[test]
fn eviction_spares_a_page_the_device_used() {
    let w = world(3);
    let a = w.mm.mmap(4 * PAGE, Prot::RW, MapFlags::ANON).unwrap();
    for i in 0..4 {
        w.mm.cpu_write(a + i * PAGE, 10 + i).unwrap();
    }
    for i in 0..3 {
        assert_eq!(migrate(&w, a + i * PAGE, 1, Place::Device), (Ok(()), PAGE));
    }
    // Page 0 moved in first, but the device uses it now.
    let mut d = w.device();
    assert_eq!(d.read(a).unwrap(), 10);
    assert_eq!(migrate(&w, a + 3 * PAGE, 1, Place::Device), (Ok(()), PAGE));
    assert!(
        w.mm.device_pte(a).is_some(),
        "the page the device used was evicted"
    );
    assert_eq!(
        w.mm.device_pte(a + PAGE),
        None,
        "page 1 is the least recently used"
    );
    quiet(&w);
    for i in 0..4 {
        assert_eq!(w.mm.cpu_read(a + i * PAGE).unwrap(), 10 + i);
    }
    done(&w);
}

/// `place_for_fault` on a block already in device memory moves nothing and zaps nothing: a
/// device access that needs two pages of one block (a COPY) must not have the second fault's
/// placement take the first page's leaf away, round after round (found by the VM storm under
/// a placement policy: jobs stuck in `EBUSY`).
#[test]
fn place_for_fault_leaves_a_resident_block_alone() {
    let w = world(64);
    let a = w.mm.mmap(64 * PAGE, Prot::RW, MapFlags::ANON).unwrap();
    let a = (a + 64 * PAGE - 1) & !(64 * PAGE - 1);
    let a =
        w.mm.mmap_fixed(a, 64 * PAGE, Prot::RW, MapFlags::ANON)
            .unwrap();
    let mut s = Scratch::new();
    let mut d = w.device();
    assert_eq!(w.engine.place_for_fault(&mut s, a, a, a + 64 * PAGE), 64);
    d.write(a, 1).unwrap();
    d.write(a + 5 * PAGE, 2).unwrap();
    let faults = d.stats().faults;
    let zaps = w.engine.stats().invalidations_hit;
    assert_eq!(
        w.engine
            .place_for_fault(&mut s, a + 5 * PAGE, a, a + 64 * PAGE),
        0
    );
    assert_eq!(
        w.engine.stats().invalidations_hit,
        zaps,
        "the resident block was zapped"
    );
    d.write(a, 3).unwrap();
    assert_eq!(d.stats().faults, faults, "page 0's leaf went");
    quiet(&w);
    done(&w);
}

/// The same for pages that cannot move (memory `migrate_vma_setup()` refuses): placing for
/// the second page of a two-page access leaves the first page's leaf alone (the step's claim
/// zaps only the pages the device has no leaf for).
#[test]
fn place_for_fault_spares_mapped_pages_that_cannot_move() {
    let cfg = Config {
        fault_around_pages: 1,
        ..Config::default()
    };
    let w: World = WorldBuilder::new()
        .config(cfg)
        .devmem_pages(64)
        .build()
        .unwrap();
    let a = w.mm.mmap(128 * PAGE, Prot::RW, MapFlags::ANON).unwrap();
    let a = (a + 64 * PAGE - 1) & !(64 * PAGE - 1);
    let a =
        w.mm.mmap_fixed(a, 64 * PAGE, Prot::RW, MapFlags::NO_MIGRATE)
            .unwrap();
    let mut s = Scratch::new();
    let mut d = w.device();
    let span = (a, a + 64 * PAGE);
    assert_eq!(w.engine.place_for_fault(&mut s, a, span.0, span.1), 0);
    d.write(a, 1).unwrap();
    assert_eq!(
        w.engine
            .place_for_fault(&mut s, a + 3 * PAGE, span.0, span.1),
        0
    );
    d.write(a + 3 * PAGE, 2).unwrap();
    let faults = d.stats().faults;
    d.write(a, 3).unwrap();
    assert_eq!(d.stats().faults, faults, "page 0's leaf went");
    quiet(&w);
    done(&w);
}
