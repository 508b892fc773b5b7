//! The device against the engine, and the detectors' self-tests.

use super::{MB2, PG};
use crate::{MapFlags, Prot, SwapOutcome, World};
use pgtable::Errno;
use svm::platform::Dma;
use svm::Config;

fn world() -> World {
    World::new(Config::default()).unwrap()
}

#[test]
fn device_and_cpu_see_each_others_writes() {
    let w = world();
    let mut d = w.device();
    let a = w.mm.mmap(64 * PG, Prot::RW, MapFlags::ANON).unwrap();
    w.mm.cpu_write(a, 5).unwrap();
    assert_eq!(d.read(a), Ok(5));
    d.write(a + PG, 6).unwrap();
    assert_eq!(w.mm.cpu_read(a + PG), Ok(6));
    assert_eq!(d.atomic_add(a + PG, 1), Ok(6));
    assert_eq!(w.mm.cpu_read(a + PG), Ok(7));
    assert_eq!(d.read(a), Ok(5), "TLB hit");
    assert!(d.stats().tlb_hits >= 1);
    w.check_quiescent().unwrap();
    w.teardown();
    w.check_quiescent().unwrap();
}

#[test]
fn device_errors() {
    let w = world();
    let mut d = w.device();
    let ro = w.mm.mmap(4 * PG, Prot::READ, MapFlags::ANON).unwrap();
    assert_eq!(d.read(ro), Ok(0));
    assert_eq!(d.write(ro, 1), Err(Errno::EPERM));
    assert_eq!(d.read(ro + 64 * PG), Err(Errno::EFAULT));
    let io = w.mm.mmap(4 * PG, Prot::RW, MapFlags::IO).unwrap();
    assert_eq!(d.read(io), Err(Errno::EFAULT));
    let none = w.mm.mmap(4 * PG, Prot::NONE, MapFlags::ANON).unwrap();
    assert_eq!(d.read(none), Err(Errno::EFAULT));
    assert_eq!(d.read(1 << 50), Err(Errno::EINVAL));
    w.check_quiescent().unwrap();
}

#[test]
fn munmap_then_gc() {
    let w = world();
    let mut d = w.device();
    let a = w.mm.mmap(16 * PG, Prot::RW, MapFlags::ANON).unwrap();
    d.write(a, 1).unwrap();
    assert!(w.dma.live() > 0);
    w.mm.munmap(a, 16 * PG).unwrap();
    assert_eq!(w.dma.live(), 0);
    w.check_quiescent().unwrap();
    assert_eq!(w.gc(), 1);
    assert_eq!(w.engine.range_count(), 0);
    // A fault on the hole creates no range.
    assert_eq!(d.read(a), Err(Errno::EFAULT));
    assert_eq!(w.engine.range_count(), 0);
    w.check_quiescent().unwrap();
}

#[test]
fn cow_after_fork() {
    let w = world();
    let mut d = w.device();
    let a = w.mm.mmap(4 * PG, Prot::RW, MapFlags::ANON).unwrap();
    d.write(a, 1).unwrap();
    let child = w.mm.fork().unwrap();
    assert_eq!(d.read(a), Ok(1));
    d.write(a, 2).unwrap();
    assert_eq!(child.cpu_read(a), Ok(1));
    assert_eq!(w.mm.cpu_read(a), Ok(2));
    w.check_quiescent().unwrap();
}

#[test]
fn device_write_survives_lazyfree_and_clean_swapcache() {
    let w = world();
    let mut d = w.device();
    let a = w.mm.mmap(4 * PG, Prot::RW, MapFlags::ANON).unwrap();
    w.mm.cpu_write(a, 1).unwrap();
    w.mm.madvise_free(a, 4 * PG).unwrap();
    d.write(a, 2).unwrap();
    assert_eq!(
        w.mm.swap_out(a),
        Ok(SwapOutcome::KeptDirty),
        "the engine dirtied the page"
    );
    assert_eq!(w.mm.cpu_read(a), Ok(2));
    // Writable but clean after a read swap-in.
    w.mm.cpu_write(a + PG, 3).unwrap();
    w.mm.swap_out(a + PG).unwrap();
    assert_eq!(w.mm.cpu_read(a + PG), Ok(3));
    d.write(a + PG, 4).unwrap();
    assert_eq!(
        w.mm.swap_out(a + PG),
        Ok(SwapOutcome::Swapped { written_back: true })
    );
    assert_eq!(w.mm.cpu_read(a + PG), Ok(4));
    w.check_quiescent().unwrap();
}

#[test]
fn migrate_and_mprotect_under_device_use() {
    let w = world();
    let mut d = w.device();
    let a = w.mm.mmap(4 * PG, Prot::RW, MapFlags::ANON).unwrap();
    d.write(a, 1).unwrap();
    w.mm.migrate(a).unwrap();
    assert_eq!(d.read(a), Ok(1));
    d.write(a, 2).unwrap();
    assert_eq!(w.mm.cpu_read(a), Ok(2));
    w.mm.mprotect(a, 4 * PG, Prot::READ).unwrap();
    assert_eq!(d.write(a, 3), Err(Errno::EPERM));
    assert_eq!(d.read(a), Ok(2));
    w.check_quiescent().unwrap();
}

#[test]
fn thp_maps_a_huge_leaf() {
    let w = world();
    let mut d = w.device();
    let t = w.mm.mmap(MB2, Prot::RW, MapFlags::THP).unwrap();
    d.write(t + 5 * PG, 9).unwrap();
    assert!(w.mm.is_pmd_mapped(t));
    assert_eq!(w.engine.page_table().census().huge, 1);
    assert_eq!(d.read(t + 5 * PG), Ok(9));
    assert_eq!(d.read(t + 100 * PG), Ok(0));
    w.mm.split_thp(t).unwrap();
    assert_eq!(d.read(t + 5 * PG), Ok(9));
    w.check_quiescent().unwrap();
}

#[test]
fn exit_then_teardown() {
    let w = world();
    let mut d = w.device();
    let a = w.mm.mmap(4 * PG, Prot::RW, MapFlags::ANON).unwrap();
    d.write(a, 1).unwrap();
    w.mm.exit();
    assert_eq!(w.dma.live(), 0, "RELEASE released everything");
    assert_eq!(d.read(a), Err(Errno::ESRCH));
    w.check_quiescent().unwrap();
    w.teardown();
    w.check_quiescent().unwrap();
}

#[test]
fn oom_reap_with_an_idle_engine() {
    let w = world();
    let mut d = w.device();
    let a = w.mm.mmap(4 * PG, Prot::RW, MapFlags::ANON).unwrap();
    d.write(a, 1).unwrap();
    let rep = w.mm.oom_reap().unwrap();
    assert_eq!((rep.reaped, rep.skipped), (1, 0));
    assert_eq!(w.dma.live(), 0);
    w.check_quiescent().unwrap();
}

#[test]
fn detector_stale_access_after_a_missed_invalidation() {
    // Fault injection: the mm forgets the callbacks, so the device keeps a TLB entry and a
    // leaf to a freed page. The checks must say so.
    let w = world();
    let mut d = w.device();
    let a = w.mm.mmap(4 * PG, Prot::RW, MapFlags::ANON).unwrap();
    d.write(a, 1).unwrap();
    w.mm.inject_skip_callbacks(true);
    w.mm.madvise_dontneed(a, PG).unwrap();
    let _ = d.read(a);
    assert!(w.violations.count() >= 1);
    let m = w.violations.messages();
    assert!(m.iter().any(|m| m.starts_with("[I1]")), "{m:?}");
    assert!(w.check_quiescent().is_err());
}

#[test]
fn detector_use_after_dma_unmap() {
    let w = world();
    let mut d = w.device();
    let a = w.mm.mmap(4 * PG, Prot::RW, MapFlags::ANON).unwrap();
    d.write(a, 1).unwrap();
    // Behind the engine's back: unmap the live mapping while the TLB still holds it.
    let m = w
        .dma
        .leaks()
        .into_iter()
        .find(|m| Some(m.pfn) == w.mm.cpu_pte(a).map(|p| p.0))
        .unwrap();
    w.dma.unmap(m.addr, m.pfn, m.order, m.write);
    assert_eq!(d.read(a), Err(Errno::EFAULT));
    assert!(w
        .violations
        .messages()
        .iter()
        .any(|m| m.starts_with("[I4]")));
}

#[test]
fn concurrent_smoke() {
    let w = std::sync::Arc::new(world());
    let a = w.mm.mmap(64 * PG, Prot::RW, MapFlags::ANON).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut ts = Vec::new();
    for t in 0..3u64 {
        let (w, stop) = (w.clone(), stop.clone());
        ts.push(std::thread::spawn(move || {
            let mut d = w.device();
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let va = a + ((i * 7 + t) % 64) * PG;
                let r = if i.is_multiple_of(3) {
                    d.write(va, i).map(|_| 0)
                } else {
                    d.read(va)
                };
                match r {
                    Ok(_) | Err(Errno::EFAULT) | Err(Errno::EPERM) | Err(Errno::EBUSY) => {}
                    Err(e) => panic!("unexpected {e}"),
                }
                i += 1;
            }
        }));
    }
    for i in 0..200u64 {
        let va = a + (i % 64) * PG;
        let _ = match i % 6 {
            0 => w.mm.swap_out(va).map(|_| ()),
            1 => w.mm.migrate(va).map(|_| ()),
            2 => w.mm.madvise_dontneed(va, 2 * PG),
            3 => {
                w.mm.mprotect(va, PG, Prot::READ)
                    .and_then(|_| w.mm.mprotect(va, PG, Prot::RW))
            }
            4 => w.mm.cpu_write(va, i),
            _ => w.mm.madvise_free(va, PG),
        };
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in ts {
        t.join().unwrap();
    }
    w.check_quiescent().unwrap();
    w.teardown();
    w.check_quiescent().unwrap();
}

/// Throughput probe (run: `cargo test -p model --release --lib -- --ignored storm_throughput --nocapture`).
#[test]
#[ignore]
fn storm_throughput() {
    let w = std::sync::Arc::new(world());
    let a = w.mm.mmap(4096 * PG, Prot::RW, MapFlags::ANON).unwrap();
    let n = 1_000_000u64;
    let t0 = std::time::Instant::now();
    let threads: u64 = std::env::var("STORM_THREADS").map_or(4, |v| v.parse().unwrap());
    let ts: Vec<_> = (0..threads)
        .map(|t| {
            let w = w.clone();
            std::thread::spawn(move || {
                let mut d = w.device();
                let mut x = t * 0x9e37_79b9 + 1;
                for _ in 0..n {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let va = a + (x % 4096) * PG;
                    if x & 1 == 0 {
                        d.write(va, x).unwrap();
                    } else {
                        d.read(va).unwrap();
                    }
                }
            })
        })
        .collect();
    for t in ts {
        t.join().unwrap();
    }
    let dt = t0.elapsed();
    let s = w.device().stats();
    println!(
        "{} accesses in {:?}: {:.0} ns/access/thread; {:?}",
        threads * n,
        dt,
        dt.as_nanos() as f64 / n as f64,
        s
    );
    w.check_quiescent().unwrap();
}
