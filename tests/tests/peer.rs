//! Peer device memory: two devices on one fast interconnect share a pagemap owner, each with
//! memory of its own (`Documentation/design.rst`, "Peer memory"). hmm hands a peer's pages
//! back as they are, the engine maps them through DMA (P2P) instead of faulting them back,
//! and a migration may place pages in a peer's memory. Every device access is checked by the
//! model's device (a DMA leaf may reach a device page only if it is a peer's, and only while
//! the CPU maps it), every free by the DMA-live detector.

use model::{MapFlags, Prot, World, WorldBuilder};
use pgtable::Errno;
use svm::{Config, Place, Scratch};
use svm_tests::{done, quiet};

const PAGE: u64 = 4096;

/// Device A with `a` pages of memory, and device B, a peer with `b` pages, both mirroring
/// A's process.
fn peers(a: usize, b: usize) -> (World, World) {
    let w = WorldBuilder::new()
        .config(Config::default())
        .devmem_pages(a)
        .build()
        .unwrap();
    let v = WorldBuilder::new()
        .share_mm(&w.mm)
        .peer_of(&w.devmem)
        .devmem_pages(b)
        .build()
        .unwrap();
    (w, v)
}

fn migrate_into(
    w: &World,
    mem: &model::ModelDevmem,
    a: u64,
    pages: u64,
    to: Place,
) -> Result<u64, Errno> {
    let _s = w.violations.scope();
    let mut done = 0;
    w.engine
        .migrate_into(&mut Scratch::new(), a, pages * PAGE, to, mem, &mut done)
}

fn resident(w: &World, a: u64, n: u64) -> u64 {
    (0..n)
        .filter(|i| w.mm.device_pte(a + i * PAGE).is_some())
        .count() as u64
}

fn finish(w: World, v: World) {
    quiet(&w);
    quiet(&v);
    v.teardown();
    done(&w);
}

#[test]
fn a_peer_reaches_the_pages_through_dma_and_they_stay() {
    let (w, v) = peers(16, 16);
    let n = 4;
    let a = w.mm.mmap(n * PAGE, Prot::RW, MapFlags::ANON).unwrap();
    let (mut d, mut e) = (w.device(), v.device());
    for i in 0..n {
        w.mm.cpu_write(a + i * PAGE, i + 1).unwrap();
    }
    assert_eq!(
        w.engine
            .migrate(&mut Scratch::new(), a, n * PAGE, Place::Device, &mut 0),
        Ok(n)
    );
    for i in 0..n {
        assert_eq!(e.read(a + i * PAGE).unwrap(), i + 1);
    }
    quiet(&v);
    // Not faulted back: B reaches A's pages where they are.
    assert_eq!(resident(&w, a, n), n);
    assert_eq!(w.devmem.used(), n as usize);
    let s = v.engine.stats();
    assert!(s.peer_mapped >= n, "{s:?}");
    assert_eq!(s.local_mapped, 0, "{s:?}");
    assert!(v.dma.live() > 0, "no P2P mapping");
    e.write(a, 50).unwrap();
    assert_eq!(d.read(a).unwrap(), 50, "A misses B's write to its page");
    d.write(a + PAGE, 60).unwrap();
    assert_eq!(e.read(a + PAGE).unwrap(), 60);
    quiet(&w);
    quiet(&v);
    assert_eq!(w.mm.cpu_read(a).unwrap(), 50);
    finish(w, v);
}

/// A moving its page back (its own migration, with the shared owner) is not B's: B's P2P
/// leaf must go before the page is freed, or the DMA-live detector reports it.
#[test]
fn the_owners_migration_back_zaps_the_peers_leaves() {
    let (w, v) = peers(16, 16);
    let a = w.mm.mmap(2 * PAGE, Prot::RW, MapFlags::ANON).unwrap();
    w.mm.cpu_write(a, 1).unwrap();
    w.mm.cpu_write(a + PAGE, 2).unwrap();
    assert_eq!(
        w.engine
            .migrate(&mut Scratch::new(), a, 2 * PAGE, Place::Device, &mut 0),
        Ok(2)
    );
    let mut e = v.device();
    e.write(a, 10).unwrap();
    e.read(a + PAGE).unwrap();
    assert_eq!(migrate_into(&w, &w.devmem, a, 2, Place::System), Ok(2));
    quiet(&w);
    quiet(&v);
    assert_eq!(v.dma.live(), 0, "P2P mappings of freed device pages");
    assert_eq!(resident(&w, a, 2), 0);
    assert_eq!(e.read(a).unwrap(), 10, "B's write lost");
    assert_eq!(w.mm.cpu_read(a + PAGE).unwrap(), 2);
    finish(w, v);
}

/// A's memory is full of pages B maps; A moves other pages in and evicts B's: every mapper
/// hears the eviction, B's leaves go, nothing is lost.
#[test]
fn eviction_of_the_owners_memory_zaps_the_peers_leaves() {
    let (w, v) = peers(4, 4);
    let a = w.mm.mmap(8 * PAGE, Prot::RW, MapFlags::ANON).unwrap();
    for i in 0..8 {
        w.mm.cpu_write(a + i * PAGE, i + 1).unwrap();
    }
    assert_eq!(
        w.engine
            .migrate(&mut Scratch::new(), a, 4 * PAGE, Place::Device, &mut 0),
        Ok(4)
    );
    let mut e = v.device();
    for i in 0..4 {
        e.write(a + i * PAGE, 100 + i).unwrap();
    }
    assert_eq!(
        w.engine.migrate(
            &mut Scratch::new(),
            a + 4 * PAGE,
            4 * PAGE,
            Place::Device,
            &mut 0
        ),
        Ok(4)
    );
    assert!(w.engine.stats().evicted >= 4);
    quiet(&w);
    quiet(&v);
    assert_eq!(resident(&w, a, 4), 0);
    for i in 0..4 {
        assert_eq!(e.read(a + i * PAGE).unwrap(), 100 + i, "B's write lost");
        assert_eq!(e.read(a + (4 + i) * PAGE).unwrap(), 5 + i);
    }
    finish(w, v);
}

/// B places pages in A's memory (a preferred location on another device): B's own leaves of
/// the old pages go in its migration, A's go as for anyone's migration, and afterwards A
/// reaches them locally, B through DMA, the CPU by faulting them back.
#[test]
fn migration_into_a_peers_memory() {
    let (w, v) = peers(16, 16);
    let n = 8;
    let a = w.mm.mmap(n * PAGE, Prot::RW, MapFlags::ANON).unwrap();
    let (mut d, mut e) = (w.device(), v.device());
    for i in 0..n {
        d.write(a + i * PAGE, i + 1).unwrap();
        e.read(a + i * PAGE).unwrap();
    }
    assert_eq!(migrate_into(&v, &w.devmem, a, n, Place::Device), Ok(n));
    assert_eq!(w.devmem.used(), n as usize);
    assert_eq!(v.devmem.used(), 0);
    assert_eq!(v.engine.stats().migrated_to_device, n);
    quiet(&w);
    quiet(&v);
    for i in 0..n {
        assert_eq!(e.read(a + i * PAGE).unwrap(), i + 1, "data lost moving in");
        assert_eq!(d.read(a + i * PAGE).unwrap(), i + 1);
    }
    assert!(w.engine.stats().local_mapped >= n);
    assert!(v.engine.stats().peer_mapped >= n);
    quiet(&w);
    quiet(&v);
    assert_eq!(w.mm.cpu_read(a).unwrap(), 1);
    assert_eq!(resident(&w, a, n), n - 1);
    // Placement on a fault: B's fault in a span that prefers A's memory.
    let b = w.mm.mmap(4 * PAGE, Prot::RW, MapFlags::ANON).unwrap();
    w.mm.cpu_write(b, 9).unwrap();
    let moved = {
        let _s = v.violations.scope();
        v.engine
            .place_for_fault_in(&mut Scratch::new(), b, b, b + 4 * PAGE, &w.devmem)
    };
    assert_eq!(moved, 4);
    assert_eq!(resident(&w, b, 4), 4);
    assert_eq!(e.read(b).unwrap(), 9);
    // Already there: nothing moves again.
    let again = {
        let _s = v.violations.scope();
        v.engine
            .place_for_fault_in(&mut Scratch::new(), b, b, b + 4 * PAGE, &w.devmem)
    };
    assert_eq!(again, 0);
    finish(w, v);
}

/// A peer's page the CPU maps read-only (shared since a fork): B's write moves it to system
/// memory, where COW breaks, as for B's own page.
#[test]
fn a_write_to_a_peers_page_shared_since_fork_moves_it_back() {
    let (w, v) = peers(16, 16);
    let a = w.mm.mmap(PAGE, Prot::RW, MapFlags::ANON).unwrap();
    w.mm.cpu_write(a, 1).unwrap();
    assert_eq!(
        w.engine
            .migrate(&mut Scratch::new(), a, PAGE, Place::Device, &mut 0),
        Ok(1)
    );
    let child = w.mm.fork().unwrap();
    assert_eq!(w.mm.device_pte(a).map(|p| p.1), Some(false));
    let mut e = v.device();
    assert_eq!(e.read(a).unwrap(), 1);
    e.write(a, 3).unwrap();
    assert_eq!(
        child.cpu_read(a).unwrap(),
        1,
        "device write leaked into the child"
    );
    assert_eq!(w.mm.cpu_read(a).unwrap(), 3);
    child.exit();
    finish(w, v);
}

/// Memory of another owner (no interconnect) is refused: its pages would be faulted back at
/// this device's next access.
#[test]
fn memory_of_another_owner_is_refused() {
    let w = WorldBuilder::new().devmem_pages(4).build().unwrap();
    let v = WorldBuilder::new()
        .share_mm(&w.mm)
        .devmem_pages(4)
        .build()
        .unwrap();
    let a = w.mm.mmap(PAGE, Prot::RW, MapFlags::ANON).unwrap();
    assert_eq!(
        migrate_into(&v, &w.devmem, a, 1, Place::Device),
        Err(Errno::EXDEV)
    );
    let moved = v
        .engine
        .place_for_fault_in(&mut Scratch::new(), a, a, a + PAGE, &w.devmem);
    assert_eq!(moved, 0);
    assert_eq!(w.devmem.used(), 0);
    finish(w, v);
}
