//! Address-space semantics: faults, COW, swap, lazyfree, THP, migration, exit.

use super::{Reg, MB2, PG};
use crate::mm::{HUGE_ZERO_PFN, ZERO_PFN};
use crate::{MapFlags, MmHandle, Prot, SwapOutcome};
use pgtable::Errno;
use std::sync::Arc;
use std::time::Duration;
use svm::platform::{Event, Mm};

fn events(mm: &MmHandle) -> Vec<(Event, u64, u64)> {
    mm.take_notifier_trace()
        .into_iter()
        .map(|t| (t.event, t.start, t.end))
        .collect()
}

#[test]
fn mmap_alignment_merge_and_errors() {
    let mm = MmHandle::new();
    assert_eq!(mm.mmap(0, Prot::RW, MapFlags::ANON), Err(Errno::EINVAL));
    let a = mm.mmap(10, Prot::RW, MapFlags::ANON).unwrap();
    assert_eq!(a % PG, 0);
    let b = mm.mmap(PG, Prot::RW, MapFlags::ANON).unwrap();
    assert_eq!(b, a + PG, "first fit, adjacent");
    assert_eq!(mm.vmas().len(), 1, "compatible neighbours merge");
    let t = mm.mmap(PG, Prot::RW, MapFlags::THP).unwrap();
    assert_eq!(t % MB2, 0);
    assert_eq!(mm.munmap(a + 1, PG), Err(Errno::EINVAL));
    assert_eq!(mm.munmap(a, 0), Err(Errno::EINVAL));
    assert_eq!(
        mm.munmap(0x7000_0000_0000, PG),
        Ok(()),
        "unmapping nothing is fine"
    );
    assert_eq!(
        mm.mprotect(a, 64 * PG, Prot::READ),
        Err(Errno::ENOMEM),
        "hole after the VMA"
    );
    mm.violations().assert_none();
}

#[test]
fn zero_page_then_write_replaces_it_with_clear() {
    let mm = MmHandle::new();
    let a = mm.mmap(4 * PG, Prot::RW, MapFlags::ANON).unwrap();
    assert_eq!(mm.cpu_read(a), Ok(0));
    assert_eq!(mm.cpu_pte(a), Some((ZERO_PFN, false)));
    mm.set_notifier_trace(true);
    mm.cpu_write(a, 42).unwrap();
    assert_eq!(
        events(&mm),
        vec![(Event::Clear, a, a + PG)],
        "zero page replaced: wp_page_copy"
    );
    let (pfn, w) = mm.cpu_pte(a).unwrap();
    assert!(w && pfn != ZERO_PFN);
    assert_eq!(mm.frame_data(pfn), Some(42));
    // A first write to an empty PTE needs no notifier.
    mm.cpu_write(a + PG, 1).unwrap();
    assert!(events(&mm).is_empty());
    assert_eq!(mm.live_frames(), 2);
}

#[test]
fn cpu_access_errors() {
    let mm = MmHandle::new();
    let a = mm.mmap(PG, Prot::READ, MapFlags::ANON).unwrap();
    assert_eq!(mm.cpu_write(a, 1), Err(Errno::EFAULT));
    assert_eq!(mm.cpu_read(a + 16 * PG), Err(Errno::EFAULT), "hole");
    let io = mm.mmap(PG, Prot::RW, MapFlags::IO).unwrap();
    assert_eq!(mm.cpu_read(io), Err(Errno::EFAULT));
    let n = mm.mmap(PG, Prot::NONE, MapFlags::ANON).unwrap();
    assert_eq!(mm.cpu_read(n), Err(Errno::EFAULT));
}

#[test]
fn munmap_frees_and_notifies_unmap() {
    let mm = MmHandle::new();
    let a = mm.mmap(8 * PG, Prot::RW, MapFlags::ANON).unwrap();
    for i in 0..8 {
        mm.cpu_write(a + i * PG, i).unwrap();
    }
    let (pfn, _) = mm.cpu_pte(a + 2 * PG).unwrap();
    assert_eq!(mm.live_frames(), 8);
    mm.set_notifier_trace(true);
    mm.munmap(a + 2 * PG, 2 * PG).unwrap();
    assert_eq!(events(&mm), vec![(Event::Unmap, a + 2 * PG, a + 4 * PG)]);
    assert!(!mm.frame_alive(pfn));
    assert_eq!(mm.live_frames(), 6);
    assert_eq!(mm.cpu_read(a + 2 * PG), Err(Errno::EFAULT));
    assert_eq!(mm.cpu_read(a + 4 * PG), Ok(4));
    assert_eq!(mm.vmas().len(), 2);
}

#[test]
fn partial_munmap_of_thp_splits_first() {
    let mm = MmHandle::new();
    let t = mm.mmap(MB2, Prot::RW, MapFlags::THP).unwrap();
    mm.cpu_write(t, 5).unwrap();
    assert!(mm.is_pmd_mapped(t));
    mm.cpu_write(t + 100 * PG, 6).unwrap();
    mm.set_notifier_trace(true);
    mm.munmap(t + MB2 / 2, MB2 / 2).unwrap();
    assert_eq!(
        events(&mm),
        vec![
            (Event::Clear, t, t + MB2),
            (Event::Unmap, t + MB2 / 2, t + MB2)
        ]
    );
    assert!(!mm.is_pmd_mapped(t));
    assert_eq!(mm.cpu_read(t), Ok(5));
    assert_eq!(mm.cpu_read(t + 100 * PG), Ok(6));
    assert_eq!(
        mm.live_frames(),
        256,
        "the unmapped half of the folio is freed"
    );
}

#[test]
fn mprotect_down_and_up() {
    let mm = MmHandle::new();
    let a = mm.mmap(4 * PG, Prot::RW, MapFlags::ANON).unwrap();
    mm.cpu_write(a, 1).unwrap();
    mm.set_notifier_trace(true);
    mm.mprotect(a, 4 * PG, Prot::READ).unwrap();
    assert_eq!(events(&mm), vec![(Event::ProtectionVma, a, a + 4 * PG)]);
    assert_eq!(mm.cpu_pte(a).map(|p| p.1), Some(false));
    assert_eq!(mm.cpu_write(a, 2), Err(Errno::EFAULT));
    assert_eq!(mm.cpu_read(a), Ok(1));
    mm.mprotect(a, PG, Prot::NONE).unwrap();
    assert_eq!(mm.cpu_read(a), Err(Errno::EFAULT));
    assert_eq!(mm.vmas().len(), 2);
    mm.mprotect(a, 4 * PG, Prot::RW).unwrap();
    assert_eq!(mm.vmas().len(), 1, "merged back");
    // An exclusive anonymous page becomes writable at once (MM_CP_TRY_CHANGE_WRITABLE).
    assert_eq!(mm.cpu_pte(a).map(|p| p.1), Some(true));
    mm.cpu_write(a, 3).unwrap();
    assert_eq!(mm.cpu_read(a), Ok(3));
}

#[test]
fn fork_cow() {
    let mm = MmHandle::new();
    let a = mm.mmap(4 * PG, Prot::RW, MapFlags::ANON).unwrap();
    mm.cpu_write(a, 10).unwrap();
    let (pfn, _) = mm.cpu_pte(a).unwrap();
    mm.set_notifier_trace(true);
    let child = mm.fork().unwrap();
    assert_eq!(events(&mm), vec![(Event::ProtectionPage, a, a + 4 * PG)]);
    assert_eq!(mm.cpu_pte(a), Some((pfn, false)));
    assert_eq!(child.cpu_pte(a), Some((pfn, false)));
    assert_eq!(mm.frame_mapcount(pfn), 2);
    child.set_notifier_trace(true);
    child.cpu_write(a, 20).unwrap();
    assert_eq!(
        events(&child),
        vec![(Event::Clear, a, a + PG)],
        "COW break in the child"
    );
    let (cpfn, cw) = child.cpu_pte(a).unwrap();
    assert!(cw && cpfn != pfn);
    assert_eq!(mm.cpu_read(a), Ok(10));
    assert_eq!(child.cpu_read(a), Ok(20));
    // The parent is the only mapper now: its write fault reuses the page, no notifier.
    mm.cpu_write(a, 11).unwrap();
    assert!(events(&mm).is_empty());
    assert_eq!(mm.cpu_pte(a), Some((pfn, true)));
    child.exit();
    assert_eq!(mm.cpu_read(a), Ok(11));
    assert_eq!(mm.live_frames(), 1);
}

#[test]
fn fork_shares_thp_and_cow_splits() {
    let mm = MmHandle::new();
    let t = mm.mmap(MB2, Prot::RW, MapFlags::THP).unwrap();
    mm.cpu_write(t + PG, 1).unwrap();
    let child = mm.fork().unwrap();
    assert!(child.is_pmd_mapped(t));
    child.set_notifier_trace(true);
    child.cpu_write(t + PG, 2).unwrap();
    assert_eq!(
        events(&child),
        vec![
            (Event::Clear, t, t + MB2),
            (Event::Clear, t + PG, t + 2 * PG)
        ]
    );
    assert!(!child.is_pmd_mapped(t) && mm.is_pmd_mapped(t));
    assert_eq!(mm.cpu_read(t + PG), Ok(1));
    assert_eq!(child.cpu_read(t + PG), Ok(2));
}

#[test]
fn swap_out_and_in() {
    let mm = MmHandle::new();
    let a = mm.mmap(4 * PG, Prot::RW, MapFlags::ANON).unwrap();
    mm.cpu_write(a, 77).unwrap();
    mm.set_notifier_trace(true);
    assert_eq!(
        mm.swap_out(a),
        Ok(SwapOutcome::Swapped { written_back: true })
    );
    assert_eq!(events(&mm), vec![(Event::Clear, a, a + PG)]);
    assert!(mm.is_swapped(a));
    assert_eq!(mm.live_frames(), 0);
    // A read swap-in of an exclusive page maps it writable but clean, in the swap cache.
    assert_eq!(mm.cpu_read(a), Ok(77));
    let (pfn, w) = mm.cpu_pte(a).unwrap();
    assert!(w);
    assert!(!mm.frame_dirty(pfn));
    // Clean with a valid swap copy: dropped without writeback.
    assert_eq!(
        mm.swap_out(a),
        Ok(SwapOutcome::Swapped {
            written_back: false
        })
    );
    assert_eq!(mm.cpu_read(a), Ok(77));
    // A CPU write sets the PTE dirty bit: written back next time.
    mm.cpu_write(a, 78).unwrap();
    assert_eq!(
        mm.swap_out(a),
        Ok(SwapOutcome::Swapped { written_back: true })
    );
    assert_eq!(mm.cpu_read(a), Ok(78));
    assert_eq!(mm.swap_out(a + PG), Ok(SwapOutcome::NotPresent));
    mm.munmap(a, 4 * PG).unwrap();
    assert_eq!(mm.swap_slots(), 0);
    assert_eq!(mm.live_frames(), 0);
}

#[test]
fn swap_detects_a_write_that_never_dirtied_the_page() {
    // The hazard the engine's set_page_dirty() exists for: a page mapped writable but clean
    // (swap cache), written without the dirty bit, is dropped by reclaim.
    let mm = MmHandle::new();
    let a = mm.mmap(PG, Prot::RW, MapFlags::ANON).unwrap();
    mm.cpu_write(a, 1).unwrap();
    mm.swap_out(a).unwrap();
    mm.cpu_read(a).unwrap();
    let (pfn, _) = mm.cpu_pte(a).unwrap();
    // A "device" write: data changes, PG_dirty does not.
    mm.0.machine.st.lock().frame(pfn).data = 2;
    assert_eq!(
        mm.swap_out(a),
        Ok(SwapOutcome::Swapped {
            written_back: false
        })
    );
    assert_eq!(mm.cpu_read(a), Ok(1), "the write is lost, as in the kernel");
}

#[test]
fn lazyfree_discard_and_redirty() {
    let mm = MmHandle::new();
    let a = mm.mmap(2 * PG, Prot::RW, MapFlags::ANON).unwrap();
    mm.cpu_write(a, 5).unwrap();
    mm.cpu_write(a + PG, 6).unwrap();
    mm.set_notifier_trace(true);
    mm.madvise_free(a, 2 * PG).unwrap();
    assert_eq!(events(&mm), vec![(Event::Clear, a, a + 2 * PG)]);
    mm.cpu_write(a + PG, 7).unwrap();
    assert_eq!(mm.swap_out(a), Ok(SwapOutcome::Discarded));
    assert_eq!(mm.swap_out(a + PG), Ok(SwapOutcome::KeptDirty));
    assert_eq!(mm.cpu_read(a), Ok(0));
    assert_eq!(mm.cpu_read(a + PG), Ok(7));
    // No longer lazyfree: the next reclaim swaps it.
    assert_eq!(
        mm.swap_out(a + PG),
        Ok(SwapOutcome::Swapped { written_back: true })
    );
    assert_eq!(mm.cpu_read(a + PG), Ok(7));
}

#[test]
fn dontneed_zeroes() {
    let mm = MmHandle::new();
    let a = mm.mmap(4 * PG, Prot::RW, MapFlags::ANON).unwrap();
    mm.cpu_write(a, 5).unwrap();
    mm.set_notifier_trace(true);
    mm.madvise_dontneed(a, 4 * PG).unwrap();
    assert_eq!(events(&mm), vec![(Event::Clear, a, a + 4 * PG)]);
    assert_eq!(mm.cpu_read(a), Ok(0));
    let io = mm.mmap(PG, Prot::RW, MapFlags::IO).unwrap();
    assert_eq!(mm.madvise_dontneed(io, PG), Err(Errno::EINVAL));
    let b = mm.mmap(8 * PG, Prot::READ, MapFlags::ANON).unwrap();
    mm.munmap(b + 4 * PG, 4 * PG).unwrap();
    assert_eq!(
        mm.madvise_dontneed(b, 8 * PG),
        Err(Errno::ENOMEM),
        "applied, then ENOMEM for the hole"
    );
}

#[test]
fn migrate_copies_and_frees() {
    let mm = MmHandle::new();
    let a = mm.mmap(PG, Prot::RW, MapFlags::ANON).unwrap();
    mm.cpu_write(a, 9).unwrap();
    let (old, _) = mm.cpu_pte(a).unwrap();
    let child = mm.fork().unwrap();
    mm.set_notifier_trace(true);
    child.set_notifier_trace(true);
    let new = mm.migrate(a).unwrap();
    assert_ne!(new, old);
    assert!(!mm.frame_alive(old));
    assert_eq!(mm.cpu_pte(a), Some((new, false)));
    assert_eq!(
        child.cpu_pte(a),
        Some((new, false)),
        "every mapper is moved"
    );
    assert_eq!(events(&mm), vec![(Event::Clear, a, a + PG)]);
    assert_eq!(events(&child), vec![(Event::Clear, a, a + PG)]);
    assert_eq!(mm.cpu_read(a), Ok(9));
    assert_eq!(mm.migrate(a + 0x10_0000), Err(Errno::EFAULT));
    // THP migrates whole.
    let t = mm.mmap(MB2, Prot::RW, MapFlags::THP).unwrap();
    mm.cpu_write(t + 3 * PG, 4).unwrap();
    let (o, _) = mm.cpu_pte(t).unwrap();
    let n = mm.migrate(t + 3 * PG).unwrap();
    assert!(mm.is_pmd_mapped(t));
    assert_eq!(mm.cpu_pte(t + 3 * PG).unwrap().0, n);
    assert_ne!(n, o + 3);
    assert_eq!(mm.cpu_read(t + 3 * PG), Ok(4));
}

#[test]
fn thp_and_huge_zero() {
    let mm = MmHandle::new();
    let t = mm.mmap(2 * MB2, Prot::RW, MapFlags::THP).unwrap();
    assert_eq!(mm.cpu_read(t), Ok(0));
    assert!(mm.is_pmd_mapped(t));
    assert_eq!(mm.cpu_pte(t + PG), Some((HUGE_ZERO_PFN + 1, false)));
    assert_eq!(mm.live_frames(), 0);
    // A write on the huge zero folio splits it, then copies one 4 KiB page.
    mm.cpu_write(t + PG, 1).unwrap();
    assert!(!mm.is_pmd_mapped(t));
    assert_eq!(mm.cpu_pte(t), Some((ZERO_PFN, false)));
    assert_eq!(mm.live_frames(), 1);
    // A write first fault allocates a THP.
    mm.cpu_write(t + MB2, 2).unwrap();
    assert!(mm.is_pmd_mapped(t + MB2));
    assert_eq!(mm.live_frames(), 513);
    let (head, _) = mm.cpu_pte(t + MB2).unwrap();
    assert_eq!(head % 512, 0);
    mm.set_notifier_trace(true);
    assert_eq!(mm.split_thp(t + MB2), Ok(true));
    assert_eq!(events(&mm), vec![(Event::Clear, t + MB2, t + 2 * MB2)]);
    assert_eq!(mm.cpu_pte(t + MB2 + 5 * PG), Some((head + 5, true)));
    assert_eq!(mm.cpu_read(t + MB2), Ok(2));
    // Without the huge zero page, a read allocates.
    let mm2 = MmHandle::with_config(
        crate::MmConfig {
            huge_zero_page: false,
            ..Default::default()
        },
        Default::default(),
    );
    let t2 = mm2.mmap(MB2, Prot::RW, MapFlags::THP).unwrap();
    mm2.cpu_read(t2).unwrap();
    assert!(mm2.is_pmd_mapped(t2));
    assert_eq!(mm2.live_frames(), 512);
}

#[test]
fn exit_release_then_unmap() {
    let mm = MmHandle::new();
    mm.mmu_notifier_register().unwrap();
    let a = mm.mmap(4 * PG, Prot::RW, MapFlags::ANON).unwrap();
    mm.cpu_write(a, 1).unwrap();
    let r = Reg::new(&mm, a, MB2);
    mm.set_notifier_trace(true);
    mm.exit();
    assert_eq!(
        events(&mm),
        vec![(Event::Release, 0, u64::MAX), (Event::Unmap, 0, u64::MAX)]
    );
    assert_eq!(r.rec.events(), vec![Event::Release, Event::Unmap]);
    assert_eq!(mm.live_frames(), 0);
    assert!(mm.is_dead());
    assert_eq!(mm.cpu_read(a), Err(Errno::ESRCH));
    assert_eq!(mm.mmap(PG, Prot::RW, MapFlags::ANON), Err(Errno::ESRCH));
    assert!(matches!(mm.mmap_read(), Err(Errno::ESRCH)));
    // The notifier can still be removed after exit.
    drop(r);
    mm.violations().assert_none();
}

#[test]
fn exit_with_a_reference_held_runs_exit_mmap_on_last_put() {
    let mm = MmHandle::new();
    let a = mm.mmap(PG, Prot::RW, MapFlags::ANON).unwrap();
    mm.cpu_write(a, 1).unwrap();
    let g = {
        let _s = mm.violations().scope();
        mm.mmap_read().unwrap()
    };
    assert_eq!(mm.users(), 2);
    let mm2 = mm.clone();
    let t = std::thread::spawn(move || mm2.exit());
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        !mm.is_dead(),
        "the worker's reference keeps the address space"
    );
    assert_eq!(mm.live_frames(), 1);
    drop(g); // mmput_async(): exit_mmap on another thread
    t.join().unwrap();
    assert!(mm.is_dead());
    assert_eq!(mm.live_frames(), 0);
}

#[test]
fn swap_out_shared_page_unmaps_every_mapper() {
    let mm = MmHandle::new();
    let a = mm.mmap(PG, Prot::RW, MapFlags::ANON).unwrap();
    mm.cpu_write(a, 3).unwrap();
    let child = Arc::new(mm.fork().unwrap());
    assert_eq!(
        mm.swap_out(a),
        Ok(SwapOutcome::Swapped { written_back: true })
    );
    assert!(mm.is_swapped(a) && child.is_swapped(a));
    assert_eq!(child.cpu_read(a), Ok(3));
    // The parent swaps in the page the child brought into the swap cache: shared again.
    assert_eq!(mm.cpu_read(a), Ok(3));
    assert_eq!(mm.cpu_pte(a).unwrap().0, child.cpu_pte(a).unwrap().0);
    mm.cpu_write(a, 4).unwrap();
    assert_eq!(child.cpu_read(a), Ok(3));
    assert_eq!(mm.cpu_read(a), Ok(4));
}
