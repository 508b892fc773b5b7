//! `mm/hmm.c` semantics.

use super::{Reg, MB2, PG};
use crate::mm::ZERO_PFN;
use crate::{MapFlags, MmHandle, Prot};
use pgtable::Errno;
use svm::platform::{
    hmm_order, hmm_pfn, Event, HmmRequest, Interval as _, Mm, HMM_PFN_ERROR, HMM_PFN_REQ_FAULT,
    HMM_PFN_REQ_WRITE, HMM_PFN_VALID, HMM_PFN_WRITE,
};

const R: u64 = HMM_PFN_REQ_FAULT;
const W: u64 = HMM_PFN_REQ_FAULT | HMM_PFN_REQ_WRITE;
const FLAGS: u64 = HMM_PFN_VALID | HMM_PFN_WRITE | HMM_PFN_ERROR;

fn setup() -> (MmHandle, Reg) {
    let mm = MmHandle::new();
    mm.mmu_notifier_register().unwrap();
    let r = Reg::new(&mm, 0, 1 << 46);
    (mm, r)
}

fn hmm_seq(mm: &MmHandle, r: &Reg, seq: u64, start: u64, pfns: &mut [u64]) -> Result<(), Errno> {
    let _s = mm.violations().scope();
    let mut g = mm.mmap_read()?;
    let mut req = HmmRequest {
        notifier: r.iv(),
        seq,
        start,
        pfns,
        dev_private_owner: 0,
    };
    mm.hmm_range_fault(&mut g, &mut req)
}

fn hmm(mm: &MmHandle, r: &Reg, start: u64, pfns: &mut [u64]) -> Result<(), Errno> {
    let seq = {
        let _s = mm.violations().scope();
        r.iv().read_begin()
    };
    hmm_seq(mm, r, seq, start, pfns)
}

#[test]
fn present_zero_none_and_swap() {
    let (mm, r) = setup();
    let a = mm.mmap(4 * PG, Prot::RW, MapFlags::ANON).unwrap();
    mm.cpu_write(a, 1).unwrap();
    mm.cpu_read(a + PG).unwrap();
    mm.cpu_write(a + 2 * PG, 3).unwrap();
    mm.swap_out(a + 2 * PG).unwrap();
    let (pfn, _) = mm.cpu_pte(a).unwrap();
    let mut p = [0u64; 4];
    hmm(&mm, &r, a, &mut p).unwrap();
    assert_eq!(p[0], pfn | HMM_PFN_VALID | HMM_PFN_WRITE);
    assert_eq!(
        p[1],
        ZERO_PFN | HMM_PFN_VALID,
        "the zero page reads as a normal read-only page"
    );
    assert_eq!(p[2], 0, "a swap entry not requested");
    assert_eq!(p[3], 0, "pte_none not requested");
    let mut p = [0, 0, R, 0];
    hmm(&mm, &r, a, &mut p).unwrap();
    assert_eq!(
        p[2] & FLAGS,
        HMM_PFN_VALID | HMM_PFN_WRITE,
        "swapped in (exclusive: writable)"
    );
    assert_eq!(mm.frame_data(hmm_pfn(p[2])), Some(3));
    mm.violations().assert_none();
}

#[test]
fn holes_io_and_prot_none() {
    let (mm, r) = setup();
    let a = mm.mmap(4 * PG, Prot::RW, MapFlags::ANON).unwrap();
    let mut p = [0u64; 8];
    hmm(&mm, &r, a, &mut p).unwrap();
    assert!(p[..4].iter().all(|&v| v == 0));
    assert!(
        p[4..].iter().all(|&v| v == HMM_PFN_ERROR),
        "no VMA: HMM_PFN_ERROR"
    );
    let mut p = [0u64; 8];
    p[5] = R;
    assert_eq!(hmm(&mm, &r, a, &mut p), Err(Errno::EFAULT));
    let io = mm
        .mmap_fixed(a + 16 * PG, 4 * PG, Prot::RW, MapFlags::IO)
        .unwrap();
    let mut p = [0u64; 4];
    hmm(&mm, &r, io, &mut p).unwrap();
    assert!(p.iter().all(|&v| v == HMM_PFN_ERROR));
    p[1] = R;
    assert_eq!(hmm(&mm, &r, io, &mut p), Err(Errno::EFAULT));
    let n = mm
        .mmap_fixed(a + 32 * PG, 4 * PG, Prot::NONE, MapFlags::ANON)
        .unwrap();
    let mut p = [0u64; 4];
    hmm(&mm, &r, n, &mut p).unwrap();
    assert!(p.iter().all(|&v| v == HMM_PFN_ERROR));
    p[0] = R;
    assert_eq!(hmm(&mm, &r, n, &mut p), Err(Errno::EFAULT));
}

#[test]
fn write_request_on_read_only_vma_is_eperm() {
    let (mm, r) = setup();
    let a = mm.mmap(4 * PG, Prot::READ, MapFlags::ANON).unwrap();
    mm.cpu_read(a).unwrap();
    let mut p = [W, 0, 0, 0];
    assert_eq!(
        hmm(&mm, &r, a, &mut p),
        Err(Errno::EPERM),
        "present read-only page"
    );
    let mut p = [0, 0, W, 0];
    assert_eq!(hmm(&mm, &r, a, &mut p), Err(Errno::EPERM), "pte_none");
    let mut p = [R, 0, 0, 0];
    hmm(&mm, &r, a, &mut p).unwrap();
    assert_eq!(p[0] & FLAGS, HMM_PFN_VALID);
}

#[test]
fn write_request_breaks_cow_and_reports_ebusy_once() {
    let (mm, r) = setup();
    let a = mm.mmap(PG, Prot::RW, MapFlags::ANON).unwrap();
    mm.cpu_write(a, 8).unwrap();
    let child = mm.fork().unwrap();
    let (old, _) = mm.cpu_pte(a).unwrap();
    r.rec.log.lock().unwrap().clear();
    let mut p = [W];
    assert_eq!(
        hmm(&mm, &r, a, &mut p),
        Err(Errno::EBUSY),
        "our own COW break moved the seq"
    );
    assert_eq!(r.rec.events(), vec![Event::Clear]);
    let mut p = [W];
    hmm(&mm, &r, a, &mut p).unwrap();
    assert_eq!(p[0] & FLAGS, HMM_PFN_VALID | HMM_PFN_WRITE);
    assert_ne!(hmm_pfn(p[0]), old);
    assert_eq!(child.cpu_read(a), Ok(8));
    assert_eq!(mm.frame_data(hmm_pfn(p[0])), Some(8));
}

#[test]
fn thp_reports_order_9() {
    let (mm, r) = setup();
    let t = mm.mmap(MB2, Prot::RW, MapFlags::THP).unwrap();
    mm.cpu_write(t, 1).unwrap();
    let (head, _) = mm.cpu_pte(t).unwrap();
    let mut p = [0u64; 16];
    hmm(&mm, &r, t + 16 * PG, &mut p).unwrap();
    for (i, v) in p.iter().enumerate() {
        assert_eq!(hmm_pfn(*v), head + 16 + i as u64);
        assert_eq!(hmm_order(*v), 9);
        assert_eq!(v & FLAGS, HMM_PFN_VALID | HMM_PFN_WRITE);
    }
    // A read fault on a fresh THP block maps the huge zero folio: order 9, read-only.
    let t2 = mm.mmap(MB2, Prot::RW, MapFlags::THP).unwrap();
    let mut p = [R];
    hmm(&mm, &r, t2, &mut p).unwrap();
    assert_eq!(hmm_order(p[0]), 9);
    assert_eq!(p[0] & FLAGS, HMM_PFN_VALID);
}

#[test]
fn fault_covers_the_rest_of_the_block_or_the_whole_hole() {
    let (mm, r) = setup();
    let a = mm.mmap(16 * PG, Prot::RW, MapFlags::ANON).unwrap();
    // No PTE table yet: hmm_vma_walk_hole() faults the whole hole from its start.
    let mut p = [0u64; 16];
    p[3] = R;
    hmm(&mm, &r, a, &mut p).unwrap();
    assert!((0..16).all(|i| mm.cpu_pte(a + i * PG).is_some()));
    assert!(p.iter().all(|v| v & HMM_PFN_VALID != 0));
    // With a PTE table: hmm_vma_handle_pte() faults from the requesting page to the end.
    let b = mm
        .mmap_fixed(a + MB2, 16 * PG, Prot::RW, MapFlags::ANON)
        .unwrap();
    mm.cpu_write(b, 1).unwrap();
    let mut p = [0u64; 16];
    p[3] = R;
    hmm(&mm, &r, b, &mut p).unwrap();
    assert!(mm.cpu_pte(b + PG).is_none() && mm.cpu_pte(b + 2 * PG).is_none());
    assert!((3..16).all(|i| mm.cpu_pte(b + i * PG).is_some()));
    assert_eq!(p[1], 0);
    assert!(p[3..].iter().all(|v| v & HMM_PFN_VALID != 0));
}

#[test]
fn stale_seq_is_ebusy_before_walking() {
    let (mm, r) = setup();
    let a = mm.mmap(PG, Prot::RW, MapFlags::ANON).unwrap();
    let seq = {
        let _s = mm.violations().scope();
        r.iv().read_begin()
    };
    mm.invalidate(a, a + PG, Event::Clear);
    let mut p = [R];
    assert_eq!(hmm_seq(&mm, &r, seq, a, &mut p), Err(Errno::EBUSY));
    assert_eq!(p[0], R, "untouched");
    assert!(mm.cpu_pte(a).is_none(), "nothing faulted");
}
