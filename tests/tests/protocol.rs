//! Deterministic protocol tests: one scenario each, every invariant checked by the model's
//! device on every access and by `check_quiescent` at rest. Four of them are the teeth for
//! steps no loom model needs to see interleaved (see `scripts/teeth.sh`).

use model::{MapFlags, Prot, SwapOutcome, World};
use pgtable::{Errno, Gfx9Format};
use svm::{Access, Config, DeviceFault, LockScope, Scratch};

const PAGE: u64 = 4096;
const M2: u64 = 2 << 20;

fn world() -> World {
    World::new(Config::default()).unwrap()
}

use svm_tests::{done, quiet};

#[test]
fn device_and_cpu_see_each_others_writes() {
    let w = world();
    let a = w.mm.mmap(16 * PAGE, Prot::RW, MapFlags::ANON).unwrap();
    let mut d = w.device();
    w.mm.cpu_write(a, 11).unwrap();
    assert_eq!(d.read(a).unwrap(), 11);
    d.write(a + PAGE, 22).unwrap();
    assert_eq!(w.mm.cpu_read(a + PAGE).unwrap(), 22);
    assert_eq!(d.atomic_add(a + PAGE, 3).unwrap(), 22);
    assert_eq!(w.mm.cpu_read(a + PAGE).unwrap(), 25);
    // A CPU write after the device mapped the page is seen by the device (same frame).
    w.mm.cpu_write(a, 12).unwrap();
    assert_eq!(d.read(a).unwrap(), 12);
    done(&w);
}

#[test]
fn gfx9_format_mirrors_too() {
    let w = World::<Gfx9Format>::builder().build().unwrap();
    let a = w.mm.mmap(4 * M2, Prot::RW, MapFlags::THP).unwrap();
    let mut d = w.device();
    for i in 0..8 {
        d.write(a + i * M2 / 2, i).unwrap();
    }
    for i in 0..8 {
        assert_eq!(w.mm.cpu_read(a + i * M2 / 2).unwrap(), i);
    }
    assert!(w.engine.stats().huge_mapped > 0);
    done(&w);
}

/// A 2 MiB DMA mapping off a 2 MiB boundary cannot back a 2 MiB device leaf: the page table
/// reports the layout conflict (`Conflict::AddrAlign`), the engine unmaps it and maps the
/// block as 4 KiB pages, and every byte still arrives.
#[test]
fn huge_dma_address_off_boundary_maps_small_pages() {
    let w = World::<pgtable::X86Format>::builder().build().unwrap();
    w.dma.set_misalign_huge(true);
    let a = w.mm.mmap(2 * M2, Prot::RW, MapFlags::THP).unwrap();
    for i in 0..4 {
        w.mm.cpu_write(a + i * M2 / 2, 100 + i).unwrap();
    }
    let mut d = w.device();
    for i in 0..4 {
        assert_eq!(d.read(a + i * M2 / 2).unwrap(), 100 + i);
    }
    let s = w.engine.stats();
    assert_eq!(
        s.huge_mapped, 0,
        "no 2 MiB leaf over a misaligned DMA address"
    );
    assert!(s.pages_mapped >= 4);
    done(&w);
}

#[test]
fn tlb_flushed_before_callback_returns() {
    let w = world();
    let a = w.mm.mmap(4 * PAGE, Prot::RW, MapFlags::ANON).unwrap();
    let mut d = w.device();
    d.write(a, 5).unwrap();
    assert_eq!(d.read(a).unwrap(), 5, "served from the TLB");
    w.mm.munmap(a, 4 * PAGE).unwrap();
    // The frame is freed; the device must fault, not read it through a stale TLB entry.
    assert_eq!(d.read(a), Err(Errno::EFAULT));
    assert!(w.tlb.is_empty() || d.engine().page_table().translate(a).is_none());
    done(&w);
}

#[test]
fn device_write_survives_madv_free_and_reclaim() {
    let w = world();
    let a = w.mm.mmap(PAGE, Prot::RW, MapFlags::ANON).unwrap();
    let mut d = w.device();
    w.mm.cpu_write(a, 1).unwrap();
    w.mm.madvise_free(a, PAGE).unwrap();
    // The CPU PTE stays writable but clean: the device write dirties nothing on the CPU side.
    d.write(a, 7).unwrap();
    let out = w.mm.swap_out(a).unwrap();
    assert_ne!(
        out,
        SwapOutcome::Discarded,
        "a page the device wrote was discarded as clean"
    );
    assert_eq!(w.mm.cpu_read(a).unwrap(), 7, "device write lost");
    done(&w);
}

#[test]
fn device_write_survives_swap_of_a_swapcache_page() {
    let w = world();
    let a = w.mm.mmap(PAGE, Prot::RW, MapFlags::ANON).unwrap();
    let mut d = w.device();
    w.mm.cpu_write(a, 1).unwrap();
    assert!(matches!(
        w.mm.swap_out(a).unwrap(),
        SwapOutcome::Swapped { written_back: true }
    ));
    assert_eq!(
        w.mm.cpu_read(a).unwrap(),
        1,
        "swap-in keeps the swap copy (clean swap cache)"
    );
    d.write(a, 9).unwrap();
    w.mm.swap_out(a).unwrap();
    assert_eq!(
        w.mm.cpu_read(a).unwrap(),
        9,
        "device write lost to a stale swap copy"
    );
    done(&w);
}

#[test]
fn device_reads_do_not_dirty_pages() {
    let w = world();
    let a = w.mm.mmap(PAGE, Prot::RW, MapFlags::ANON).unwrap();
    let mut d = w.device();
    w.mm.cpu_write(a, 1).unwrap();
    w.mm.swap_out(a).unwrap();
    assert_eq!(
        w.mm.cpu_read(a).unwrap(),
        1,
        "swapped in: a clean swap-cache page"
    );
    assert_eq!(d.read(a).unwrap(), 1);
    // Only read by the device: reclaim drops it without writeback.
    assert_eq!(
        w.mm.swap_out(a).unwrap(),
        SwapOutcome::Swapped {
            written_back: false
        }
    );
    assert_eq!(w.mm.cpu_read(a).unwrap(), 1);
    done(&w);
}

#[test]
fn device_write_survives_migration() {
    let w = world();
    let a = w.mm.mmap(PAGE, Prot::RW, MapFlags::ANON).unwrap();
    let mut d = w.device();
    d.write(a, 3).unwrap();
    w.mm.migrate(a).unwrap();
    assert_eq!(w.mm.cpu_read(a).unwrap(), 3);
    d.write(a, 4).unwrap();
    assert_eq!(w.mm.cpu_read(a).unwrap(), 4);
    done(&w);
}

#[test]
fn fork_revokes_device_write() {
    let w = world();
    let a = w.mm.mmap(4 * PAGE, Prot::RW, MapFlags::ANON).unwrap();
    let mut d = w.device();
    d.write(a, 1).unwrap();
    d.read(a + PAGE).unwrap();
    let child = w.mm.fork().unwrap();
    // Read mappings survive the fork's write-protect; the write mapping does not.
    let before = w.engine.stats();
    assert_eq!(d.read(a).unwrap(), 1);
    assert_eq!(
        w.engine.stats().faults,
        before.faults,
        "read after fork needed a fault"
    );
    w.mm.set_notifier_trace(true);
    d.write(a, 2).unwrap();
    let trace = w.mm.take_notifier_trace();
    assert_eq!(
        trace.len(),
        1,
        "a write fault COW-breaks its own page only: {trace:?}"
    );
    assert_eq!((trace[0].start, trace[0].end), (a, a + PAGE));
    assert_eq!(
        child.cpu_read(a).unwrap(),
        1,
        "device write leaked into the child"
    );
    assert_eq!(w.mm.cpu_read(a).unwrap(), 2);
    let s = w.engine.stats();
    assert_eq!(s.retries_own, 1, "the COW break is our own: {s:?}");
    assert_eq!(s.retries_foreign, 0, "{s:?}");
    child.exit();
    done(&w);
}

#[test]
fn gc_removes_unmapped_ranges() {
    let w = world();
    let a = w.mm.mmap(2 * M2, Prot::RW, MapFlags::ANON).unwrap();
    let mut d = w.device();
    d.write(a, 1).unwrap();
    d.write(a + M2, 1).unwrap();
    let ranges = w.engine.range_count();
    assert!(ranges >= 2);
    let tables = w.mem.live_tables();
    w.mm.munmap(a, 2 * M2).unwrap();
    assert_eq!(w.gc(), ranges);
    assert_eq!(w.engine.range_count(), 0);
    assert!(
        w.mem.live_tables() < tables,
        "leaf tables of dead ranges are freed"
    );
    assert_eq!(w.gc(), 0);
    done(&w);
}

#[test]
fn gc_spares_a_range_in_use() {
    let w = world();
    let a = w.mm.mmap(M2, Prot::RW, MapFlags::ANON).unwrap();
    let mut d = w.device();
    d.write(a, 1).unwrap();
    w.mm.munmap(a, M2).unwrap();
    w.mm.mmap_fixed(a, M2, Prot::RW, MapFlags::ANON).unwrap();
    d.write(a, 2).unwrap();
    assert_eq!(w.gc(), 0, "GC removed a range with live mappings");
    w.mm.munmap(a, M2).unwrap();
    assert!(
        d.engine().page_table().translate(a).is_none(),
        "munmap did not reach the device"
    );
    assert_eq!(d.read(a), Err(Errno::EFAULT));
    done(&w);
}

#[test]
fn thp_maps_one_huge_leaf_and_split_falls_back() {
    let w = world();
    let a = w.mm.mmap(M2, Prot::RW, MapFlags::THP).unwrap();
    let mut d = w.device();
    d.write(a + 5 * PAGE, 5).unwrap();
    assert!(w.mm.is_pmd_mapped(a));
    let c = w.engine.page_table().census();
    assert_eq!((c.huge, c.pages), (1, 0));
    assert_eq!(w.dma.live(), 1, "one 2 MiB DMA mapping");
    assert_eq!(
        d.read(a + 300 * PAGE).unwrap(),
        0,
        "served by the same huge leaf"
    );
    w.mm.split_thp(a).unwrap();
    assert_eq!(
        w.engine.page_table().census().huge,
        0,
        "split zaps the huge leaf"
    );
    assert_eq!(d.read(a + 5 * PAGE).unwrap(), 5);
    let c = w.engine.page_table().census();
    assert_eq!(c.huge, 0);
    assert!(c.pages >= 1);
    // Partial munmap of a formerly huge block.
    w.mm.munmap(a, 8 * PAGE).unwrap();
    assert_eq!(d.read(a + 5 * PAGE), Err(Errno::EFAULT));
    assert_eq!(d.read(a + 9 * PAGE).unwrap(), 0);
    done(&w);
}

#[test]
fn fault_around_maps_neighbours_within_the_vma() {
    let w = World::new(Config {
        fault_around_pages: 8,
        ..Config::default()
    })
    .unwrap();
    let a = w.mm.mmap(4 * PAGE, Prot::RW, MapFlags::ANON).unwrap();
    for i in 0..4 {
        w.mm.cpu_write(a + i * PAGE, i).unwrap();
    }
    let mut d = w.device();
    assert_eq!(d.read(a + 2 * PAGE).unwrap(), 2);
    assert_eq!(
        w.engine.page_table().census().pages,
        4,
        "whole VMA within the window, nothing past it"
    );
    for i in 0..4 {
        assert_eq!(d.read(a + i * PAGE).unwrap(), i);
    }
    assert_eq!(w.engine.stats().faults, 1);
    done(&w);
}

#[test]
fn bad_input_gets_an_errno() {
    let w = world();
    let mut d = w.device();
    let mut s = Scratch::new();
    let e = &w.engine;
    let hole = w.mm.mmap(PAGE, Prot::RW, MapFlags::ANON).unwrap();
    w.mm.munmap(hole, PAGE).unwrap();
    assert_eq!(e.fault(&mut s, hole, Access::Read), Err(Errno::EFAULT));
    let none = w.mm.mmap(PAGE, Prot::NONE, MapFlags::ANON).unwrap();
    assert_eq!(d.read(none), Err(Errno::EFAULT));
    let io = w.mm.mmap(PAGE, Prot::RW, MapFlags::IO).unwrap();
    assert_eq!(d.read(io), Err(Errno::EFAULT));
    let ro = w.mm.mmap(PAGE, Prot::READ, MapFlags::ANON).unwrap();
    assert_eq!(d.read(ro).unwrap(), 0);
    assert_eq!(d.write(ro, 1), Err(Errno::EPERM));
    assert_eq!(e.fault(&mut s, 1 << 47, Access::Read), Err(Errno::EINVAL));
    assert_eq!(e.fault(&mut s, u64::MAX, Access::Read), Err(Errno::EINVAL));
    let mut done_bytes = 0;
    assert_eq!(
        e.prefetch(&mut s, ro + 1, PAGE, Access::Read, &mut done_bytes),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        e.prefetch(&mut s, ro, 0, Access::Read, &mut done_bytes),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        e.prefetch(&mut s, !(PAGE - 1), 2 * PAGE, Access::Read, &mut done_bytes),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        e.prefetch(&mut s, ro, 2 * PAGE, Access::Read, &mut done_bytes),
        Err(Errno::EFAULT)
    );
    assert_eq!(done_bytes, PAGE, "prefetch reports how far it got");
    // Alignment is to the page, no more and no less; a span may end at TASK_SIZE, not after.
    let a = w.mm.mmap(4 * PAGE, Prot::RW, MapFlags::ANON).unwrap();
    for (start, len) in [(a + 2, PAGE), (a, 2), (a, PAGE + 2048)] {
        assert_eq!(
            e.prefetch(&mut s, start, len, Access::Read, &mut done_bytes),
            Err(Errno::EINVAL),
            "{start:#x} + {len:#x}"
        );
    }
    for (start, len) in [(a + PAGE, PAGE), (a, 2 * PAGE), (a + PAGE, 3 * PAGE)] {
        assert_eq!(
            e.prefetch(&mut s, start, len, Access::Read, &mut done_bytes),
            Ok(()),
            "{start:#x} + {len:#x}"
        );
    }
    let top = Config::default().task_size;
    assert_eq!(
        e.prefetch(&mut s, top - PAGE, PAGE, Access::Read, &mut done_bytes),
        Err(Errno::EFAULT),
        "ends at TASK_SIZE: valid, but nothing is mapped there"
    );
    assert_eq!(
        e.prefetch(&mut s, top, PAGE, Access::Read, &mut done_bytes),
        Err(Errno::EINVAL)
    );
    done(&w);
}

#[test]
fn faults_after_exit_get_esrch_and_teardown_is_clean() {
    let w = world();
    let a = w.mm.mmap(M2, Prot::RW, MapFlags::THP).unwrap();
    let mut d = w.device();
    d.write(a, 1).unwrap();
    w.mm.exit();
    assert_eq!(
        w.engine.page_table().census().huge + w.engine.page_table().census().pages,
        0
    );
    assert_eq!(w.dma.live(), 0, "release unmapped everything");
    assert!(matches!(d.read(a), Err(Errno::ESRCH) | Err(Errno::EFAULT)));
    w.teardown();
    quiet(&w);
}

#[test]
fn batch_service_dedups_and_sorts() {
    let w = World::new(Config {
        fault_around_pages: 1,
        ..Config::default()
    })
    .unwrap();
    let a = w.mm.mmap(8 * PAGE, Prot::RW, MapFlags::ANON).unwrap();
    let mut batch = [
        DeviceFault::new(a + 3 * PAGE + 8, Access::Read),
        DeviceFault::new(a, Access::Read),
        DeviceFault::new(a + 3 * PAGE, Access::Write),
        DeviceFault::new(a + 8, Access::Read),
        DeviceFault::new(a + 100 * PAGE, Access::Read),
    ];
    let mut s = Scratch::new();
    let n = w.engine.fault_batch(&mut s, &mut batch);
    assert_eq!(n, 3);
    assert!(
        batch.windows(2).all(|p| p[0].va >> 12 <= p[1].va >> 12),
        "sorted by page"
    );
    for f in &batch {
        let want = if f.va == a + 100 * PAGE {
            Err(Errno::EFAULT)
        } else {
            Ok(())
        };
        assert_eq!(f.result, Some(want), "{f:?}");
    }
    assert_eq!(w.engine.stats().batch_duplicates, 2);
    assert!(
        w.engine
            .page_table()
            .translate(a + 3 * PAGE)
            .unwrap()
            .perm
            .write,
        "write wins"
    );
    done(&w);
}

/// Queued write faults on neighbouring absent pages are one window: one `hmm_range_fault()`,
/// every fault answered, the pages between them faulted in too, and nothing past the last.
#[test]
fn batch_faults_close_together_share_one_window() {
    let w = world();
    let a = w.mm.mmap(64 * PAGE, Prot::RW, MapFlags::ANON).unwrap();
    // Pages 0, 1, 3, 11 and 27: gaps of at most a fault-around block (16 pages); 44 is 17
    // past 27 and starts a window of its own.
    let mut batch: Vec<DeviceFault> = [27, 11, 0, 44, 3, 1]
        .iter()
        .map(|&i| DeviceFault::new(a + i * PAGE, Access::Write))
        .collect();
    let calls = w.mm.hmm_calls();
    let mut s = Scratch::new();
    assert_eq!(w.engine.fault_batch(&mut s, &mut batch), 2);
    // The window, then 44 alone: a snapshot, its fault and a snapshot of its block.
    assert_eq!(
        w.mm.hmm_calls() - calls,
        1 + 3,
        "one hmm_range_fault() for the window"
    );
    assert_eq!(w.engine.stats().batch_windows, 1);
    assert!(batch.iter().all(|f| f.result == Some(Ok(()))), "{batch:?}");
    for i in 0..=27 {
        let t = w.engine.page_table().translate(a + i * PAGE);
        assert!(t.is_some_and(|t| t.perm.write), "page {i} mapped writable");
        assert!(w.mm.cpu_pte(a + i * PAGE).is_some(), "page {i} faulted in");
    }
    for i in 28..44 {
        assert!(
            w.mm.cpu_pte(a + i * PAGE).is_none(),
            "page {i} past the window"
        );
    }
    done(&w);
}

/// A window never reaches past a gap wider than a fault-around block, across a change of
/// access (a read must not become a write fault, which would break COW), or into another
/// VMA; each fault keeps its own errno.
#[test]
fn batch_windows_stop_at_gaps_access_and_vma() {
    let w = world();
    let a = w.mm.mmap(64 * PAGE, Prot::RW, MapFlags::ANON).unwrap();
    w.mm.mprotect(a + 40 * PAGE, 4 * PAGE, Prot::NONE).unwrap();
    w.mm.cpu_write(a + 21 * PAGE, 5).unwrap();
    let child = w.mm.fork().unwrap();
    let (pfn21, _) = w.mm.cpu_pte(a + 21 * PAGE).unwrap();
    let mut batch: Vec<DeviceFault> = vec![
        DeviceFault::new(a, Access::Write),
        // 19 pages on: past the gap bound.
        DeviceFault::new(a + 19 * PAGE, Access::Write),
        DeviceFault::new(a + 20 * PAGE, Access::Write),
        // A read of a COW-shared page after writes: its own service, no COW break.
        DeviceFault::new(a + 21 * PAGE, Access::Read),
        DeviceFault::new(a + 38 * PAGE, Access::Read),
        DeviceFault::new(a + 39 * PAGE, Access::Read),
        // PROT_NONE, its own VMA.
        DeviceFault::new(a + 40 * PAGE, Access::Read),
    ];
    let mut s = Scratch::new();
    assert_eq!(w.engine.fault_batch(&mut s, &mut batch), 5);
    assert_eq!(w.engine.stats().batch_windows, 2, "19-20 and 38-39");
    for f in &batch {
        let want = if f.va == a + 40 * PAGE {
            Err(Errno::EFAULT)
        } else {
            Ok(())
        };
        assert_eq!(f.result, Some(want), "{f:?}");
    }
    assert!(
        w.mm.cpu_pte(a + 10 * PAGE).is_none(),
        "the gap stays untouched"
    );
    assert_eq!(
        w.mm.cpu_pte(a + 21 * PAGE),
        Some((pfn21, false)),
        "no COW break"
    );
    assert!(
        !w.engine
            .page_table()
            .translate(a + 21 * PAGE)
            .unwrap()
            .perm
            .write
    );
    child.exit();
    done(&w);
}

/// The engine's trace events, as the kernel's `svm` tracepoints report them: a fault's start
/// and end (errno, latency), a retry after a foreign invalidation, every invalidation callback
/// with whether it found mappings, and GC passes; nothing when nobody listens.
#[test]
fn trace_events_follow_faults_invalidations_and_gc() {
    use svm::platform::Event;
    use svm::trace::Trace;
    let w: World = World::builder().trace(true).build().unwrap();
    let a = w.mm.mmap(4 * PAGE, Prot::RW, MapFlags::ANON).unwrap();
    let mut s = Scratch::new();
    w.engine.fault(&mut s, a + 8, Access::Write).unwrap();
    assert_eq!(
        w.engine.fault(&mut s, a + 64 * PAGE, Access::Read),
        Err(Errno::EFAULT)
    );
    w.mm.munmap(a, 4 * PAGE).unwrap();
    assert_eq!(w.gc(), 1);
    let log = w.trace_log();
    let ctx = match log[0] {
        Trace::FaultStart {
            ctx,
            va,
            access,
            pages,
        } => {
            assert_eq!((va, access, pages), (a, Access::Write, 1));
            ctx
        }
        e => panic!("first event {e:?}"),
    };
    assert!(log.iter().all(|e| match *e {
        Trace::FaultStart { ctx: c, .. }
        | Trace::FaultEnd { ctx: c, .. }
        | Trace::Retry { ctx: c, .. }
        | Trace::Invalidate { ctx: c, .. }
        | Trace::Gc { ctx: c, .. } => c == ctx,
    }));
    let ends: Vec<(u64, i32)> = log
        .iter()
        .filter_map(|e| match *e {
            Trace::FaultEnd { va, err, .. } => Some((va, err)),
            _ => None,
        })
        .collect();
    assert_eq!(ends, [(a, 0), (a + 64 * PAGE, Errno::EFAULT.0)]);
    assert!(log.contains(&Trace::Invalidate {
        ctx,
        start: a,
        end: a + 4 * PAGE,
        event: Event::Unmap,
        hit: true
    }));
    assert_eq!(log.last(), Some(&Trace::Gc { ctx, removed: 1 }));
    w.teardown();
    quiet(&w);

    let quiet_world = world();
    let b = quiet_world.mm.mmap(PAGE, Prot::RW, MapFlags::ANON).unwrap();
    quiet_world.engine.fault(&mut s, b, Access::Read).unwrap();
    assert!(
        quiet_world.trace_log().is_empty(),
        "not recording: no events"
    );
    done(&quiet_world);
}

/// What debugfs lists: every range in address order with its mapped leaves and state.
#[test]
fn range_info_lists_ranges_in_order() {
    let w = world();
    let a = w.mm.mmap(2 * M2, Prot::RW, MapFlags::ANON).unwrap();
    let mut s = Scratch::new();
    w.engine.fault(&mut s, a + M2, Access::Write).unwrap();
    w.engine.fault(&mut s, a, Access::Write).unwrap();
    w.engine.fault(&mut s, a + PAGE, Access::Write).unwrap();
    let mut v = Vec::new();
    w.engine.for_each_range_info(|r| v.push(r));
    let base = a & !(M2 - 1);
    assert_eq!(v.len(), 2, "{v:?}");
    assert_eq!(
        (v[0].start, v[0].end, v[1].start),
        (base, base + M2, base + M2)
    );
    assert_eq!((v[0].mapped, v[1].mapped), (2, 1), "{v:?}");
    assert!(v
        .iter()
        .all(|r| r.owner && !r.dead && !r.gc_pending && r.inflight == 0));
    w.mm.munmap(a, PAGE).unwrap();
    let mut v = Vec::new();
    w.engine.for_each_range_info(|r| v.push(r));
    assert!(
        v[0].gc_pending && v[0].mapped == 1 && !v[1].gc_pending,
        "{v:?}"
    );
    // And every statistic by name, as debugfs prints them.
    let mut names = Vec::new();
    w.engine.stats().for_each(|k, v| names.push((k, v)));
    assert_eq!(names[0], ("faults", 3));
    assert!(names.iter().any(|&(k, _)| k == "accounting_errors"));
    done(&w);
}

#[test]
fn nonblockable_invalidation_refuses_without_touching_anything() {
    let w: World = World::builder().flush_may_sleep(true).build().unwrap();
    let a = w.mm.mmap(4 * PAGE, Prot::RW, MapFlags::ANON).unwrap();
    let mut d = w.device();
    d.write(a, 1).unwrap();
    let r = w.mm.oom_reap().unwrap();
    assert!(r.skipped >= 1, "{r:?}");
    assert_eq!(w.engine.stats().nonblock_refused, 1);
    assert_eq!(d.read(a).unwrap(), 1, "refused callback changed nothing");
    quiet(&w);
    w.teardown();
    quiet(&w);
}

#[test]
fn nonblockable_invalidation_with_nothing_mapped_proceeds() {
    let w: World = World::builder().flush_may_sleep(true).build().unwrap();
    let a = w.mm.mmap(4 * PAGE, Prot::RW, MapFlags::ANON).unwrap();
    for i in 0..4 {
        w.mm.cpu_write(a + i * PAGE, i).unwrap();
    }
    let mut d = w.device();
    d.read(a).unwrap();
    w.mm.madvise_dontneed(a, 4 * PAGE).unwrap();
    w.mm.cpu_write(a, 9).unwrap();
    assert_eq!(w.engine.page_table().census().pages, 0);
    // The range still exists but maps nothing: no flush needed, so no refusal.
    let r = w.mm.oom_reap().unwrap();
    assert_eq!(r.skipped, 0, "{r:?}");
    assert_eq!(w.engine.stats().nonblock_refused, 0);
    quiet(&w);
    w.teardown();
    quiet(&w);
}

#[test]
fn mprotect_down_then_up() {
    let w = world();
    let a = w.mm.mmap(4 * PAGE, Prot::RW, MapFlags::ANON).unwrap();
    let mut d = w.device();
    d.write(a, 1).unwrap();
    w.mm.mprotect(a, 4 * PAGE, Prot::READ).unwrap();
    assert_eq!(d.write(a, 2), Err(Errno::EPERM));
    assert_eq!(d.read(a).unwrap(), 1);
    w.mm.mprotect(a, 4 * PAGE, Prot::NONE).unwrap();
    assert_eq!(d.read(a), Err(Errno::EFAULT));
    w.mm.mprotect(a, 4 * PAGE, Prot::RW).unwrap();
    d.write(a, 3).unwrap();
    assert_eq!(w.mm.cpu_read(a).unwrap(), 3);
    done(&w);
}

#[test]
fn config_is_validated() {
    let ok = Config::default();
    assert_eq!(ok.validate(), Ok(()));
    assert_eq!(ok.range_size(), 2 << 20);
    let bad = |c: Config| assert_eq!(c.validate(), Err(Errno::EINVAL), "{c:?}");
    for shift in [15, 48, 0, 64] {
        bad(Config {
            range_shift: shift,
            ..ok
        });
    }
    for shift in [16, 30, 31, 47] {
        assert_eq!(
            Config {
                range_shift: shift,
                ..ok
            }
            .validate(),
            Ok(())
        );
    }
    for fa in [0, 3, 1024] {
        bad(Config {
            fault_around_pages: fa,
            ..ok
        });
    }
    for fa in [1, 512] {
        assert_eq!(
            Config {
                fault_around_pages: fa,
                ..ok
            }
            .validate(),
            Ok(())
        );
    }
    bad(Config {
        task_size: (1 << 48) + 4096,
        ..ok
    });
    bad(Config {
        task_size: (1 << 47) + 1,
        ..ok
    });
    assert_eq!(
        Config {
            task_size: 1 << 48,
            ..ok
        }
        .validate(),
        Ok(())
    );
    assert!(
        World::new(Config {
            range_shift: 12,
            ..ok
        })
        .is_err(),
        "Engine::new validates"
    );
    // A range may cover the whole address space, rounded up to a power of two (the kernel's
    // TASK_SIZE is a page short of 1 << 47), but not more.
    for (shift, task_size) in [
        (47, (1 << 47) - 4096),
        (40, 1 << 40),
        (40, (1 << 39) + 4096),
    ] {
        let c = Config {
            range_shift: shift,
            task_size,
            ..ok
        };
        assert_eq!(c.validate(), Ok(()), "{c:?}");
    }
    for (shift, task_size) in [(47, 1 << 40), (41, (1 << 40) - 4096), (21, 0)] {
        bad(Config {
            range_shift: shift,
            task_size,
            ..ok
        });
    }
    for scope in [LockScope::EngineMutex, LockScope::EngineRwsem] {
        assert_eq!(
            Config {
                lock_scope: scope,
                ..ok
            }
            .validate(),
            Ok(())
        );
    }
    assert_eq!(ok.lock_scope, LockScope::PerRange, "the default scope");
    // The range budget: at least one range, at most 2^32 (a module parameter is hostile).
    for max_ranges in [0, (1 << 32) + 1, usize::MAX] {
        bad(Config { max_ranges, ..ok });
    }
    for max_ranges in [1, 1 << 32] {
        assert_eq!(Config { max_ranges, ..ok }.validate(), Ok(()));
    }
}

#[test]
fn dropping_the_engine_tears_it_down() {
    let w = world();
    let a = w.mm.mmap(2 * M2, Prot::RW, MapFlags::THP).unwrap();
    let mut d = w.device();
    d.write(a, 1).unwrap();
    d.write(a + M2 + PAGE, 2).unwrap();
    assert!(w.dma.live() > 0);
    assert!(w.mm.notifier_stats().intervals > 0);
    let World {
        mm,
        dma,
        engine,
        mem,
        ..
    } = w;
    drop(d);
    drop(engine);
    assert_eq!(dma.live(), 0, "engine drop released every DMA mapping");
    assert_eq!(
        mm.notifier_stats().intervals,
        0,
        "engine drop removed every notifier"
    );
    assert_eq!(mem.live_tables(), 0, "engine drop freed the page table");
    assert_eq!(mm.cpu_read(a + M2 + PAGE).unwrap(), 2);
}

#[test]
fn retry_budget_ends_in_ebusy() {
    // The deterministic clock returns k * 10 ns on its k-th reading: the deadline is taken at
    // 10 + budget and the first check reads 20, so a 9 ns budget is spent before the first
    // attempt and a 10 ns budget is not.
    for (budget, want) in [(9, Err(Errno::EBUSY)), (10, Ok(()))] {
        let cfg = Config {
            retry_timeout_ns: budget,
            ..Config::default()
        };
        let w: World = World::builder().config(cfg).clock_step(10).build().unwrap();
        let a = w.mm.mmap(PAGE, Prot::RW, MapFlags::ANON).unwrap();
        let mut s = Scratch::new();
        assert_eq!(
            w.engine.fault(&mut s, a, Access::Write),
            want,
            "budget {budget}"
        );
        assert_eq!(w.engine.stats().retry_timeouts, u64::from(want.is_err()));
        done(&w);
    }
}

#[test]
fn fault_around_window_is_bounded_by_its_size() {
    let w = World::new(Config {
        fault_around_pages: 8,
        ..Config::default()
    })
    .unwrap();
    let a = w.mm.mmap(64 * PAGE, Prot::RW, MapFlags::ANON).unwrap();
    for i in 0..64 {
        w.mm.cpu_write(a + i * PAGE, i).unwrap();
    }
    let mut d = w.device();
    let p = a + 21 * PAGE;
    assert_eq!(d.read(p).unwrap(), 21);
    assert_eq!(
        w.engine.page_table().census().pages,
        8,
        "exactly one aligned 8-page window"
    );
    let b = p & !(8 * PAGE - 1);
    for i in 0..8 {
        assert!(w.engine.page_table().translate(b + i * PAGE).is_some());
    }
    done(&w);
}

#[test]
fn huge_leaves_can_be_turned_off() {
    let w = World::new(Config {
        huge: false,
        ..Config::default()
    })
    .unwrap();
    let a = w.mm.mmap(M2, Prot::RW, MapFlags::THP).unwrap();
    let mut d = w.device();
    d.write(a, 1).unwrap();
    assert!(w.mm.is_pmd_mapped(a), "the CPU maps a THP");
    let c = w.engine.page_table().census();
    assert_eq!(
        (c.huge, c.pages),
        (0, 16),
        "4 KiB leaves over the fault-around window"
    );
    done(&w);
}

/// PREFETCH skips what the device can already access for the access asked, a 2 MiB leaf
/// whole, and stops skipping at the first page it cannot: a write prefetch over pages mapped
/// read-only upgrades them, and a prefetch over a mapped span faults nothing.
#[test]
fn prefetch_skips_only_what_is_mapped_for_its_access() {
    let w = world();
    let a =
        w.mm.mmap_fixed(64 * M2, M2, Prot::RW, MapFlags::ANON)
            .unwrap();
    let e = &w.engine;
    let mut s = Scratch::new();
    let mut n = 0;
    e.prefetch(&mut s, a, 64 * PAGE, Access::Read, &mut n)
        .unwrap();
    assert_eq!(n, 64 * PAGE);
    let faults = e.stats().faults;
    e.prefetch(&mut s, a, 64 * PAGE, Access::Read, &mut n)
        .unwrap();
    assert_eq!(
        (n, e.stats().faults),
        (64 * PAGE, faults),
        "all mapped: no fault"
    );
    e.prefetch(&mut s, a, 64 * PAGE, Access::Write, &mut n)
        .unwrap();
    assert_eq!(n, 64 * PAGE);
    assert!(
        e.stats().faults > faults,
        "read-only leaves are not mapped for a write"
    );
    let mut d = w.device();
    for i in 0..64 {
        d.write(a + i * PAGE, i).unwrap();
    }
    assert_eq!(
        d.stats().faults,
        0,
        "the write prefetch made every page writable"
    );

    // A 2 MiB leaf: one fault, then a prefetch over it faults nothing.
    let h =
        w.mm.mmap_fixed(66 * M2, M2, Prot::RW, MapFlags::THP)
            .unwrap();
    w.mm.cpu_write(h, 7).unwrap();
    let faults = e.stats().faults;
    e.prefetch(&mut s, h, M2, Access::Read, &mut n).unwrap();
    assert_eq!(n, M2);
    assert_eq!(e.page_table().census().huge, 1);
    e.prefetch(&mut s, h + PAGE, M2 - PAGE, Access::Read, &mut n)
        .unwrap();
    assert_eq!((n, e.stats().faults), (M2 - PAGE, faults + 1));
    done(&w);
}

/// A prefetch asks for every page of its span: one fault (one window, one `hmm_range_fault`
/// with a request on each page) maps all of them, where a device fault maps only its
/// fault-around block. A bad page in the middle stops it exactly there.
#[test]
fn prefetch_faults_its_span_in_one_window() {
    let w = world();
    let a =
        w.mm.mmap_fixed(64 * M2, M2, Prot::RW, MapFlags::ANON)
            .unwrap();
    let e = &w.engine;
    let mut s = Scratch::new();
    let mut done_bytes = 0;
    e.prefetch(&mut s, a, 256 * PAGE, Access::Write, &mut done_bytes)
        .unwrap();
    assert_eq!(done_bytes, 256 * PAGE);
    assert_eq!(e.stats().faults, 1, "one window for the whole span");
    assert_eq!(e.page_table().census().pages, 256, "nothing past the span");
    let mut d = w.device();
    for i in 0..256 {
        d.write(a + i * PAGE, i).unwrap();
    }
    assert_eq!(d.stats().faults, 0, "every page was mapped writable");
    for i in 0..256 {
        assert_eq!(w.mm.cpu_read(a + i * PAGE).unwrap(), i);
    }
    // A PROT_NONE page in the middle: the span call fails, the page-by-page fallback maps
    // everything before it and reports where it stopped.
    w.mm.mprotect(a + 300 * PAGE, PAGE, Prot::NONE).unwrap();
    assert_eq!(
        e.prefetch(
            &mut s,
            a + 256 * PAGE,
            256 * PAGE,
            Access::Read,
            &mut done_bytes
        ),
        Err(Errno::EFAULT)
    );
    assert_eq!(done_bytes, 44 * PAGE);
    for i in 256..300 {
        assert_eq!(d.read(a + i * PAGE).unwrap(), 0);
    }
    done(&w);
}

/// `snapshot` reports what the CPU maps, page by page, and maps nothing for the device.
#[test]
fn snapshot_reports_the_cpu_page_table_without_faulting() {
    use svm::platform::{hmm_order, HMM_PFN_ERROR, HMM_PFN_VALID, HMM_PFN_WRITE};
    let w = world();
    let base = 80 * M2;
    let a =
        w.mm.mmap_fixed(base, 4 * PAGE, Prot::RW, MapFlags::ANON)
            .unwrap();
    w.mm.cpu_write(a, 1).unwrap();
    assert_eq!(w.mm.cpu_read(a + PAGE).unwrap(), 0, "maps the zero page");
    w.mm.mprotect(a + 3 * PAGE, PAGE, Prot::READ).unwrap();
    let thp =
        w.mm.mmap_fixed(base + M2, M2, Prot::RW, MapFlags::THP)
            .unwrap();
    w.mm.cpu_write(thp, 2).unwrap();
    let e = &w.engine;
    // [a, a + 6 pages): written, zero page, untouched, read-only untouched, then a hole.
    let mut out = [0u64; 6];
    e.snapshot(a, &mut out).unwrap();
    assert_eq!(
        out[0] & (HMM_PFN_VALID | HMM_PFN_WRITE),
        HMM_PFN_VALID | HMM_PFN_WRITE
    );
    assert_eq!(out[1] & (HMM_PFN_VALID | HMM_PFN_WRITE), HMM_PFN_VALID);
    assert_eq!(out[2] & HMM_PFN_VALID, 0);
    assert_eq!(out[3] & HMM_PFN_VALID, 0);
    assert_eq!(out[4] & HMM_PFN_ERROR, HMM_PFN_ERROR, "no VMA");
    let mut huge = [0u64; 512];
    e.snapshot(thp, &mut huge).unwrap();
    assert!(huge
        .iter()
        .all(|&v| v & HMM_PFN_VALID != 0 && hmm_order(v) == 9));
    assert_eq!(e.page_table().census().pages, 0, "a snapshot maps nothing");
    assert_eq!(e.page_table().census().huge, 0);
    // One range at a time, at most a window, page aligned, below TASK_SIZE.
    let mut two = [0u64; 2];
    assert_eq!(e.snapshot(base + M2 - PAGE, &mut two), Err(Errno::EINVAL));
    assert_eq!(e.snapshot(a + 1, &mut two), Err(Errno::EINVAL));
    assert_eq!(e.snapshot(a, &mut []), Err(Errno::EINVAL));
    assert_eq!(e.snapshot(a, &mut [0u64; 513]), Err(Errno::EINVAL));
    assert_eq!(e.snapshot(1 << 47, &mut two), Err(Errno::EINVAL));
    assert_eq!(e.snapshot(a + 2, &mut two), Err(Errno::EINVAL));
    assert_eq!(e.snapshot(a + PAGE, &mut []), Err(Errno::EINVAL));
    for at in [a, a + PAGE, (1 << 47) - 2 * PAGE] {
        assert_eq!(
            e.snapshot(at, &mut two),
            Ok(()),
            "{at:#x}: may end at TASK_SIZE"
        );
    }
    // A change after the snapshot shows in the next one.
    w.mm.munmap(a, PAGE).unwrap();
    e.snapshot(a, &mut out).unwrap();
    assert_eq!(out[0] & HMM_PFN_ERROR, HMM_PFN_ERROR);
    done(&w);
}

/// test_hmm's granularity: one range (one notifier, one lock) over the whole address space,
/// and the engine mutex around every range-lock critical section. Far-apart buffers share the
/// range; unmapping one leaves the other mapped; GC keeps the range while anything is mapped
/// and, once nothing is, unlinks the empty leaf tables all over the address space.
#[test]
fn one_range_over_the_whole_address_space() {
    let w = World::new(Config {
        range_shift: 47,
        lock_scope: LockScope::EngineMutex,
        ..Config::default()
    })
    .unwrap();
    let lo =
        w.mm.mmap_fixed(0x1000_0000, M2, Prot::RW, MapFlags::ANON)
            .unwrap();
    let hi =
        w.mm.mmap_fixed(0x7f00_0000_0000, 2 * M2, Prot::RW, MapFlags::THP)
            .unwrap();
    let mut d = w.device();
    d.write(lo, 1).unwrap();
    d.write(hi + PAGE, 2).unwrap();
    d.write(hi + M2, 3).unwrap();
    assert_eq!(w.engine.range_count(), 1, "one range for everything");
    assert_eq!(w.engine.stats().ranges_created, 1);
    assert_eq!(w.mm.notifier_stats().intervals, 1);
    assert!(
        w.engine.stats().huge_mapped > 0,
        "huge leaves inside the big range"
    );
    quiet(&w);
    w.mm.munmap(lo, M2).unwrap();
    assert_eq!(d.read(lo), Err(Errno::EFAULT));
    assert_eq!(
        d.read(hi + PAGE).unwrap(),
        2,
        "the other buffer stays mirrored"
    );
    assert_eq!(w.gc(), 0, "the range is in use");
    let tables = w.mem.live_tables();
    w.mm.munmap(hi, 2 * M2).unwrap();
    assert_eq!(w.gc(), 1, "nothing mapped: the range goes");
    assert_eq!(w.engine.range_count(), 0);
    assert!(
        w.mem.live_tables() < tables,
        "empty leaf tables anywhere in the address space are freed"
    );
    quiet(&w);
    // Faults create it again.
    let a = w.mm.mmap(4 * PAGE, Prot::RW, MapFlags::ANON).unwrap();
    d.write(a, 4).unwrap();
    assert_eq!(w.mm.cpu_read(a).unwrap(), 4);
    assert_eq!(w.engine.range_count(), 1);
    done(&w);
}

/// drm_gpusvm's granularity: 512 MiB ranges and the engine rwsem (read side for fault
/// commits, write side for invalidations). Huge leaves, fork's write-protect, mprotect and GC
/// behave as with the default ranges.
#[test]
fn gpusvm_like_ranges_with_the_engine_rwsem() {
    let w = World::new(Config {
        range_shift: 29,
        lock_scope: LockScope::EngineRwsem,
        ..Config::default()
    })
    .unwrap();
    let a =
        w.mm.mmap_fixed(0x4000_0000, 4 * M2, Prot::RW, MapFlags::THP)
            .unwrap();
    let b =
        w.mm.mmap_fixed(0x6000_0000, M2, Prot::RW, MapFlags::ANON)
            .unwrap();
    let mut d = w.device();
    d.write(a, 1).unwrap();
    d.write(a + 3 * M2, 2).unwrap();
    d.write(b, 3).unwrap();
    assert_eq!(
        w.engine.range_count(),
        2,
        "0x4000_0000 and 0x6000_0000: two 512 MiB ranges"
    );
    assert!(w.engine.stats().huge_mapped >= 2);
    let child = w.mm.fork().unwrap();
    assert!(
        !w.engine.page_table().translate(a).unwrap().perm.write,
        "fork revoked device write"
    );
    assert_eq!(d.read(a).unwrap(), 1, "read mapping survives the fork");
    d.write(a, 5).unwrap();
    assert_eq!(child.cpu_read(a).unwrap(), 1, "COW isolates the child");
    child.exit();
    w.mm.mprotect(b, M2, Prot::READ).unwrap();
    assert_eq!(d.write(b, 4), Err(Errno::EPERM));
    assert_eq!(d.read(b).unwrap(), 3);
    w.mm.munmap(b, M2).unwrap();
    assert_eq!(w.gc(), 1);
    assert_eq!(w.engine.range_count(), 1);
    assert_eq!(w.mm.cpu_read(a).unwrap(), 5);
    done(&w);
}

/// The OOM reaper's non-blockable path under each baseline scope, with nothing contended: it
/// takes the engine lock with a trylock and does the whole job; with a flush that may sleep it
/// refuses having touched nothing, as in the default scope.
#[test]
fn nonblockable_invalidation_under_baseline_scopes() {
    for (shift, scope) in [(47, LockScope::EngineMutex), (29, LockScope::EngineRwsem)] {
        let cfg = Config {
            range_shift: shift,
            lock_scope: scope,
            ..Config::default()
        };
        let w: World = World::builder().config(cfg).build().unwrap();
        let a = w.mm.mmap(4 * PAGE, Prot::RW, MapFlags::ANON).unwrap();
        let mut d = w.device();
        d.write(a, 1).unwrap();
        let r = w.mm.oom_reap().unwrap();
        assert_eq!((r.skipped, r.contended), (0, false), "{scope:?}: {r:?}");
        assert!(w.engine.page_table().translate(a).is_none(), "{scope:?}");
        quiet(&w);
        w.teardown();
        quiet(&w);

        let w: World = World::builder()
            .config(cfg)
            .flush_may_sleep(true)
            .build()
            .unwrap();
        let a = w.mm.mmap(4 * PAGE, Prot::RW, MapFlags::ANON).unwrap();
        let mut d = w.device();
        d.write(a, 1).unwrap();
        let r = w.mm.oom_reap().unwrap();
        assert!(r.skipped >= 1, "{scope:?}: {r:?}");
        assert_eq!(w.engine.stats().nonblock_refused, 1);
        assert_eq!(
            d.read(a).unwrap(),
            1,
            "{scope:?}: refused callback changed nothing"
        );
        quiet(&w);
        w.teardown();
        quiet(&w);
    }
}

/// Issue 9: hostile faults cost no kernel memory. 10^5 device faults on holes, PROT_NONE and
/// read-only memory, and snapshots of holes, leave no range behind: a hole gets none (no VMA),
/// a failed fault or a snapshot removes the range it created.
#[test]
fn hostile_faults_leave_no_ranges() {
    let w = world();
    let mut d = w.device();
    let none = w.mm.mmap(64 * M2, Prot::NONE, MapFlags::ANON).unwrap();
    let ro = w.mm.mmap(64 * M2, Prot::READ, MapFlags::ANON).unwrap();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut out = [0u64; 4];
    for i in 0..100_000u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let off = (x % (64 * M2)) & !(PAGE - 1);
        match i % 4 {
            0 => assert_eq!(
                d.read((x % (1 << 46)) & !(PAGE - 1) | 1 << 45),
                Err(Errno::EFAULT)
            ),
            1 => assert_eq!(d.read(none + off), Err(Errno::EFAULT)),
            2 => assert_eq!(d.write(ro + off, 1), Err(Errno::EPERM)),
            _ => w
                .engine
                .snapshot((1 << 45) + (off & !(4 * PAGE - 1)), &mut out)
                .unwrap(),
        }
        assert!(
            w.engine.range_count() <= 1,
            "ranges pile up: {}",
            w.engine.range_count()
        );
    }
    assert_eq!(w.engine.range_count(), 0);
    let s = w.engine.stats();
    assert!(s.ranges_reaped_empty >= 50_000, "{s:?}");
    assert_eq!(w.mm.notifier_stats().intervals, 0);
    done(&w);
}

/// Issue 9: `Config::max_ranges` bounds the ranges in use; at the limit, ranges that map
/// nothing are collected first, and only then does a fault fail with `ENOSPC`.
#[test]
fn range_budget_collects_empty_ranges_then_refuses() {
    let w = World::new(Config {
        max_ranges: 4,
        ..Config::default()
    })
    .unwrap();
    let mut d = w.device();
    let a = w.mm.mmap(8 * M2, Prot::RW, MapFlags::ANON).unwrap();
    for i in 0..4 {
        d.write(a + i * M2, i).unwrap();
    }
    assert_eq!(d.write(a + 4 * M2, 4), Err(Errno::ENOSPC));
    assert_eq!(w.engine.stats().range_limit_hits, 1);
    // The CPU takes range 1's page away (not an unmap: no GC is queued); the range maps
    // nothing now, so the next creation collects it.
    w.mm.madvise_dontneed(a + M2, M2).unwrap();
    let reaped = w.engine.stats().ranges_reaped_empty;
    d.write(a + 4 * M2, 4).unwrap();
    assert_eq!(w.engine.range_count(), 4);
    assert_eq!(
        w.engine.stats().ranges_reaped_empty,
        reaped + 1,
        "collected one range"
    );
    assert_eq!(d.write(a + 5 * M2, 5), Err(Errno::ENOSPC));
    // Unmapping and GC make room too.
    w.mm.munmap(a, M2).unwrap();
    w.gc();
    d.write(a + 5 * M2, 5).unwrap();
    for i in 2..6 {
        assert_eq!(w.mm.cpu_read(a + i * M2).unwrap(), i);
    }
    done(&w);
}

/// Dropping the engine frees every notifier it made (each range's, the losers' of creation
/// races, the ones GC removed): none is left allocated (mutant survivor: a range that never
/// dropped its notifier leaked it).
#[test]
fn dropping_the_engine_frees_every_notifier() {
    let w = world();
    let a = w.mm.mmap(4 * M2, Prot::RW, MapFlags::ANON).unwrap();
    let mut d = w.device();
    for i in 0..4 {
        d.write(a + i * M2, i).unwrap();
    }
    w.mm.munmap(a, M2).unwrap();
    w.gc();
    let mm = w.mm.clone();
    assert!(mm.notifier_stats().nodes_alive >= 3);
    done(&w);
    drop(d);
    drop(w);
    assert_eq!(mm.notifier_stats().nodes_alive, 0);
}

/// A device fault on an address no VMA covers fails before a range (notifier, lock, index
/// node) is created, not after: a hostile user's hole faults cost no allocation at all.
#[test]
fn a_fault_on_a_hole_creates_no_range() {
    let w = world();
    let mut d = w.device();
    assert_eq!(d.read(1 << 45), Err(Errno::EFAULT));
    assert_eq!(d.write((1 << 45) + M2, 1), Err(Errno::EFAULT));
    let s = w.engine.stats();
    assert_eq!((s.ranges_created, s.ranges_reaped_empty), (0, 0), "{s:?}");
    // A range is at least its bounds, its lock and its notifier (memory accounting).
    assert!(w.engine.range_metadata_bytes() >= 3 * core::mem::size_of::<usize>());
    done(&w);
}

/// `Engine::census` (QUERY, debugfs) counts what the device page table holds. With ranges of
/// 2 MiB or more it enters a leaf table only under the walk guard of the range that owns its
/// block; with smaller ranges (which never free leaf tables) it enters every one, even where
/// no range covers the block's first page.
#[test]
fn census_counts_what_the_device_maps() {
    for range_shift in [21, 16] {
        let w = World::new(Config {
            range_shift,
            fault_around_pages: 1,
            ..Config::default()
        })
        .unwrap();
        let mut d = w.device();
        let a = w.mm.mmap(4 * M2, Prot::RW, MapFlags::ANON).unwrap();
        let b = (a + M2 - 1) & !(M2 - 1);
        for k in 0..3 {
            d.write(b + 0x1_0000 + k * PAGE, k).unwrap();
        }
        let c = w.engine.census();
        assert_eq!(
            (c.pages, c.huge, c.zapped),
            (3, 0, 0),
            "range_shift {range_shift}"
        );
        assert_eq!(
            c,
            w.engine.page_table().census(),
            "range_shift {range_shift}"
        );
        done(&w);
    }
}

/// mprotect of part of a THP block splits the CPU's PMD, which takes the device's 2 MiB leaf
/// away; a device write in the part left writable maps 4 KiB leaves (the VMA no longer covers
/// the block), and the read-only part stays read-only.
#[test]
fn write_beside_a_split_thp_maps_4k() {
    let w = world();
    let a = w.mm.mmap(2 * M2, Prot::RW, MapFlags::THP).unwrap();
    let b = (a + M2 - 1) & !(M2 - 1);
    let mut d = w.device();
    w.mm.cpu_write(b, 1).unwrap();
    w.mm.cpu_write(b + M2 / 2, 2).unwrap();
    assert_eq!(d.read(b).unwrap(), 1);
    assert_eq!(
        w.engine.stats().huge_mapped,
        1,
        "a 2 MiB leaf to start from"
    );
    w.mm.mprotect(b, 16 * PAGE, Prot::READ).unwrap();
    d.write(b + M2 / 2, 7).unwrap();
    let t = d.engine().page_table().translate(b + M2 / 2).unwrap();
    assert_eq!((t.level, t.perm.write), (0, true));
    assert_eq!(w.mm.cpu_read(b + M2 / 2).unwrap(), 7);
    assert_eq!(d.read(b).unwrap(), 1);
    assert_eq!(d.write(b, 3), Err(Errno::EPERM));
    done(&w);
}

/// What one device fault costs in `hmm_range_fault()` calls (the kernel benchmark counts
/// them per 1000 pages): a window of several pages takes one snapshot when the page is there
/// with the rights asked for, and snapshot + fault of the page alone + snapshot when it is
/// not (hmm would fault every page after it otherwise); a one-page window just faults it.
/// A prefetch faults its window in one call.
#[test]
fn a_device_fault_costs_the_fewest_hmm_calls() {
    for fa in [16, 1] {
        let w = World::new(Config {
            fault_around_pages: fa,
            ..Config::default()
        })
        .unwrap();
        let mut s = Scratch::new();
        let e = &w.engine;
        let a = w.mm.mmap(64 * PAGE, Prot::RW, MapFlags::ANON).unwrap();
        let calls = |f: &mut dyn FnMut()| {
            let before = w.mm.hmm_calls();
            f();
            w.mm.hmm_calls() - before
        };
        let absent = calls(&mut || e.fault(&mut s, a, Access::Write).unwrap());
        w.mm.cpu_write(a + 32 * PAGE, 1).unwrap();
        let present = calls(&mut || e.fault(&mut s, a + 32 * PAGE, Access::Write).unwrap());
        let mut got = 0;
        let pf = calls(&mut || {
            e.prefetch(&mut s, a + 48 * PAGE, 8 * PAGE, Access::Read, &mut got)
                .unwrap()
        });
        let want = if fa > 1 { (3, 1) } else { (1, 1) };
        assert_eq!(
            (absent, present, pf),
            (want.0, want.1, 1),
            "fault_around_pages {fa}"
        );
        done(&w);
    }
}

/// A prefetch over more than `MAX_WINDOW_PAGES` pages of one range and one VMA is serviced in
/// windows of at most that many pages (the scratch holds no more).
#[test]
fn a_long_prefetch_goes_window_by_window() {
    let w = World::new(Config {
        range_shift: 30,
        ..Config::default()
    })
    .unwrap();
    let mut s = Scratch::new();
    let len = 3 * svm::config::MAX_WINDOW_PAGES as u64 * PAGE;
    let a = w.mm.mmap(len, Prot::RW, MapFlags::ANON).unwrap();
    let before = w.mm.hmm_calls();
    let mut got = 0;
    w.engine
        .prefetch(&mut s, a, len, Access::Write, &mut got)
        .unwrap();
    assert_eq!(got, len);
    assert_eq!(w.mm.hmm_calls() - before, 3);
    assert_eq!(w.engine.census().pages as u64, len / PAGE);
    done(&w);
}

/// A fault finding a leaf for the same page keeps it: as it is when it grants enough, upgraded
/// in place when its DMA mapping lets the device write, replaced (DMA unmapped, mapped again
/// bidirectional) when the page was mapped `DMA_TO_DEVICE` and the CPU made it writable since
/// without an invalidation (a COW page reused after the child that shared it exited).
#[test]
fn a_leaf_for_the_same_page_is_kept_upgraded_or_replaced() {
    let w = World::new(Config {
        fault_around_pages: 4,
        ..Config::default()
    })
    .unwrap();
    let a = w.mm.mmap(4 * PAGE, Prot::RW, MapFlags::ANON).unwrap();
    for i in 0..4 {
        w.mm.cpu_write(a + i * PAGE, 10 + i).unwrap();
    }
    let mut d = w.device();
    let st = || w.engine.stats();
    // A read fault maps the window read-only, DMA bidirectional (the CPU may write).
    assert_eq!(d.read(a).unwrap(), 10);
    assert_eq!((st().pages_mapped, st().dma_unmapped), (4, 0));
    // A write fault upgrades all four in place.
    d.write(a, 20).unwrap();
    assert_eq!((st().pages_mapped, st().dma_unmapped), (8, 0));
    // Page 0 alone is taken away; faulting it again leaves its writable neighbours as they are.
    w.mm.madvise_dontneed(a, PAGE).unwrap();
    let unmapped = st().dma_unmapped;
    d.write(a, 21).unwrap();
    assert_eq!((st().pages_mapped, st().dma_unmapped), (9, unmapped));
    d.read(a).unwrap();
    assert_eq!(st().pages_mapped, 9, "a read finds what it needs");

    // Shared with a child: the fork write-protects; a device read maps `DMA_TO_DEVICE`.
    let b = w.mm.mmap(4 * PAGE, Prot::RW, MapFlags::ANON).unwrap();
    w.mm.cpu_write(b, 1).unwrap();
    w.mm.cpu_write(b + PAGE, 2).unwrap();
    let child = w.mm.fork().unwrap();
    assert_eq!(d.read(b).unwrap(), 1);
    child.exit();
    let (mapped, unmapped) = (st().pages_mapped, st().dma_unmapped);
    // The write fault reuses the now exclusive page (same pfn, no invalidation): its leaf
    // alone is replaced, since a DMA_TO_DEVICE mapping must not carry device writes; its
    // neighbour (still write-protected on the CPU) keeps its read-only leaf.
    d.write(b, 2).unwrap();
    assert_eq!(
        (st().pages_mapped, st().dma_unmapped),
        (mapped + 1, unmapped + 1)
    );
    assert_eq!(w.mm.cpu_read(b).unwrap(), 2);
    done(&w);
}

/// The retry budget bounds every attempt, the first included: on a clock that moves on every
/// reading, a snapshot with no budget gives up with `EBUSY` before it walks, and one with a
/// budget walks.
#[test]
fn the_retry_budget_is_checked_before_every_walk() {
    for (budget, want) in [(0, Err(Errno::EBUSY)), (1_000, Ok(()))] {
        let w: World = World::builder()
            .config(Config {
                retry_timeout_ns: budget,
                ..Config::default()
            })
            .clock_step(1)
            .build()
            .unwrap();
        let a = w.mm.mmap(4 * PAGE, Prot::RW, MapFlags::ANON).unwrap();
        let mut out = [0u64; 4];
        assert_eq!(w.engine.snapshot(a, &mut out), want, "budget {budget}");
        assert_eq!(w.engine.stats().retry_timeouts, u64::from(want.is_err()));
        done(&w);
    }
}

/// A fault whose range dies before it can enter it looks the range up again only within its
/// retry budget, then gives up with `EBUSY`: a range death is a retry like any other, so GC
/// (or the failed faults of other threads, which reap the empty range they leave behind)
/// killing every range the fault publishes cannot hold it forever. The model's publication
/// hook kills each range the moment it is published, by a failed fault on a hole beside it.
#[test]
#[cfg(not(loom))]
fn a_range_death_is_charged_to_the_retry_budget() {
    use model::platform::publish_hook;
    use std::cell::Cell;
    use std::rc::Rc;
    use std::sync::Arc;

    let w: Arc<World> = Arc::new(
        World::builder()
            .config(Config {
                retry_timeout_ns: 20,
                ..Config::default()
            })
            .clock_step(1)
            .build()
            .unwrap(),
    );
    let a = 0x4000_0000;
    w.mm.mmap_fixed(a, PAGE, Prot::RW, MapFlags::ANON).unwrap();
    let kills = Rc::new(Cell::new(0u32));
    let hook = {
        let (w, kills) = (w.clone(), kills.clone());
        publish_hook::set(move |_| {
            // Bounded, so a fault that ignores its budget ends and fails the count below.
            if kills.get() < 1000 {
                kills.set(kills.get() + 1);
                let r = w.engine.fault(&mut Scratch::new(), a + PAGE, Access::Read);
                assert_eq!(r, Err(Errno::EFAULT));
            }
        })
    };
    let mut s = Scratch::new();
    assert_eq!(w.engine.fault(&mut s, a, Access::Write), Err(Errno::EBUSY));
    // Each attempt advances the clock by at least one step of the budget's 20.
    assert!(
        (1..=20).contains(&kills.get()),
        "{} deaths before giving up",
        kills.get()
    );
    let st = w.engine.stats();
    assert_eq!(st.retry_timeouts, 1);
    assert_eq!(st.ranges_created, u64::from(kills.get()));
    drop(hook);
    w.engine.fault(&mut s, a, Access::Write).unwrap();
    done(&w);
}
