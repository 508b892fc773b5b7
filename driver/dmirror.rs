// SPDX-License-Identifier: GPL-2.0
//! A dmirror-compatible front end: `/dev/hmm_dmirror0` and `1`, speaking the uAPI of the
//! kernel's own HMM test driver (`lib/test_hmm_uapi.h`, `lib/test_hmm.c`) so the upstream
//! `hmm-tests` binary runs unchanged against the svm engine. Registered only with the module
//! parameter `dmirror=1`, and never to be loaded together with `test_hmm.ko` (both want the
//! same device names).
//!
//! Everything behind it is the engine's: one engine per open file, bound to the opener's mm
//! (as test_hmm inserts its whole-mm notifier at open), per-range notifiers, the engine's page
//! table, `dma_map_page()` per page. The "device" of a READ or WRITE command is the calling
//! thread, a copy engine without a TLB: it walks the engine's page table holding its CPU's
//! device TLB unit ([`TlbCursor::walk`]), 16 pages per hold, so a flush waits for its copies.
//!
//! Semantics follow test_hmm's, counter for counter:
//! - READ/WRITE copy `npages` pages between `addr` and the user buffer `ptr`. A page the
//!   device cannot access (no leaf, or read-only for WRITE) ends the pass: the rest of the
//!   command, from that page on, is faulted in (`Engine::prefetch`) and `faults` counts one;
//!   then the pass resumes. A pass that stops at a page an earlier round of the same command
//!   already brought in (an invalidation from outside, such as compaction migrating the
//!   fresh page, took it away before the copy got there) is faulted in again without being
//!   counted: `faults` counts rounds over new pages, so a command over present memory is
//!   exactly 1, whatever the rest of the system does (issue 9: hmm-tests'
//!   `anon_write_child` saw 2). Such rounds still count
//!   against the command's bound of rounds (`EBUSY` past it). `cpages` is the number of pages copied. On success the command
//!   struct is written back; on error only the errno is returned (as test_hmm).
//! - SNAPSHOT writes one `HMM_DMIRROR_PROT_*` byte per page from `Engine::snapshot` (the CPU
//!   page table as `hmm_range_fault()` reports it, no faulting), in 64-page chunks.
//! - RELEASE (drop the device's private memory) succeeds: there is none.
//! - EXCLUSIVE hands the span over to the device (`Engine::make_exclusive`, 2 MiB at a
//!   time), then reads it back as READ does; any failure to hand a page over is `EBUSY`, as
//!   test_hmm's. CHECK_EXCLUSIVE is `EPERM` while any page of the span has an atomic leaf.
//!   test_hmm hands over no page of a large folio (6.12's `make_device_exclusive_range()`
//!   refuses them); the engine's glue splits the folio and goes round again.
//! - `mmap` of the device file inserts zeroed pages (`vm_insert_page()`, a mixed map), as
//!   test_hmm's does, for hmm-tests' `mixedmap`.
//!
//! Differences, on purpose: a command from another mm than the opener's is refused with
//! `EXDEV` (test_hmm would operate on the opener's mm); a command longer than 1 GiB, or whose
//! span reaches past `TASK_SIZE`, is `EINVAL`, and one whose user buffer does, `EFAULT`, before
//! anything is allocated; READ and WRITE go through a 64 KiB bounce buffer, chunk by chunk,
//! where test_hmm allocates one as large as the command (so a WRITE whose user buffer has a
//! hole part way may have written the chunks before it); an `mmap` of the device is limited
//! to 1 GiB. Every value of a command is checked before it is shifted or added to.

use crate::binding::Binding;
use crate::device::debugfs::{show_engine, show_ranges, DebugfsDir, Seq};
use crate::device::{
    between_chunks, migrate_killable, prefetch_killable, registry, resched, unregister,
    zeroed_scratch, ENODEV,
};
use crate::engine::Access;
use crate::ffi;
use crate::kplat::{this_unit, KArc, KDevRef, KDevmem, KEngine, TlbCursor, GFP};
use crate::migrate::Place;
use crate::platform::Devmem;
use crate::pgtable::table::PAGE_SHIFT;
use crate::pgtable::Errno;
use crate::platform::{hmm_order, HMM_PFN_ERROR, HMM_PFN_VALID, HMM_PFN_WRITE};
use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::mem::{size_of, MaybeUninit};
use core::sync::atomic::{AtomicBool, Ordering};
use kernel::prelude::*;
use kernel::types::{AsBytes, FromBytes};
use kernel::uaccess::UserSlice;

const PAGE: u64 = 1 << PAGE_SHIFT;
/// Largest command, and largest `mmap` of the device.
const MAX_BYTES: u64 = 1 << 30;
const MAX_PAGES: u64 = MAX_BYTES >> PAGE_SHIFT;
/// test_hmm's SNAPSHOT chunk (its on-stack pfn array).
const SNAPSHOT_CHUNK: usize = 64;
/// Pages copied per hold of the TLB lock, and the bounce buffer (64 KiB).
const COPY_BATCH: usize = 16;
/// Fault-in rounds of one READ or WRITE before it gives up with `EBUSY`.
const MAX_ROUNDS: u64 = 1000;


// `_IOC_NR` of the `HMM_DMIRROR_*` commands; glue.c checks the full command word.
pub(crate) const NR_READ: u32 = 0;
pub(crate) const NR_WRITE: u32 = 1;
pub(crate) const NR_MIGRATE_TO_DEV: u32 = 2;
pub(crate) const NR_MIGRATE_TO_SYS: u32 = 3;
pub(crate) const NR_SNAPSHOT: u32 = 4;
pub(crate) const NR_EXCLUSIVE: u32 = 5;
pub(crate) const NR_CHECK_EXCLUSIVE: u32 = 6;
pub(crate) const NR_RELEASE: u32 = 7;

// `HMM_DMIRROR_PROT_*`.
pub(crate) const PROT_ERROR: u8 = 0xff;
pub(crate) const PROT_NONE: u8 = 0x00;
pub(crate) const PROT_READ: u8 = 0x01;
pub(crate) const PROT_WRITE: u8 = 0x02;
pub(crate) const PROT_PMD: u8 = 0x04;
pub(crate) const PROT_PUD: u8 = 0x08;
pub(crate) const PROT_ZERO: u8 = 0x10;
pub(crate) const PROT_DEV_PRIVATE_LOCAL: u8 = 0x20;

/// `struct hmm_dmirror_cmd` (5 × `__u64`; glue.c asserts the size).
#[repr(C)]
#[derive(Default)]
pub(crate) struct Cmd {
    addr: u64,
    ptr: u64,
    npages: u64,
    cpages: u64,
    faults: u64,
}

// SAFETY: five `u64`s and no padding: every bit pattern is a valid `Cmd`.
unsafe impl FromBytes for Cmd {}
// SAFETY: five `u64`s and no padding: no uninitialised bytes.
unsafe impl AsBytes for Cmd {}

impl Cmd {
    fn read(uarg: usize) -> Result<Self, Errno> {
        UserSlice::new(uarg, size_of::<Cmd>())
            .reader()
            .read::<Cmd>()
            .map_err(|_| Errno::EFAULT)
    }

    fn write(&self, uarg: usize) -> Result<(), Errno> {
        UserSlice::new(uarg, size_of::<Cmd>())
            .writer()
            .write(self)
            .map_err(|_| Errno::EFAULT)
    }
}

/// One open `/dev/hmm_dmirrorN`.
///
/// # Invariants
/// `binding` is set before the file is published and written again only by
/// [`Mirror::shutdown`] (at release, or at unplug once the glue waited for every command to
/// leave), when no command runs: everything else only reads it. A mirror published to the
/// glue is in the registry until [`Mirror::release`].
pub struct Mirror {
    /// Its debugfs directory (`dm-<id>`): removed before the binding goes, since its files
    /// read the binding (declared first, so also dropped first).
    dbg: DebugfsDir,
    /// The engine bound to the opener's mm, and its GC.
    binding: UnsafeCell<Option<KBox<Binding>>>,
    /// The device is being unplugged: running commands stop with `ENODEV`.
    gone: AtomicBool,
    /// The device's own memory (`RELEASE` evicts it), if it has any.
    devmem: Option<KArc<KDevmem>>,
}

// SAFETY: `binding` is written only when nothing else can reach the mirror (invariant); the
// rest is `Send + Sync`.
unsafe impl Send for Mirror {}
// SAFETY: as above.
unsafe impl Sync for Mirror {}

impl Mirror {
    fn open(dev: *mut ffi::Device, index: u32) -> Result<KBox<Mirror>, Errno> {
        // SAFETY: no preconditions.
        let mm = unsafe { ffi::svm_current_mm() };
        if mm.is_null() {
            return Err(Errno::EINVAL);
        }
        let devmem = match index {
            0 | 1 => registry().lock().dm_devmem[index as usize].clone(),
            _ => return Err(Errno::EINVAL),
        };
        // SAFETY: `dev` is the module's platform device, registered while any file is open.
        let binding = unsafe { Binding::new(dev, KDevRef(devmem.clone()))? };
        let m = KBox::new(
            Mirror {
                dbg: DebugfsDir::none(),
                binding: UnsafeCell::new(Some(binding)),
                gone: AtomicBool::new(false),
                devmem,
            },
            GFP,
        )
        .map_err(|_| Errno::ENOMEM)?;
        // Registered before the glue publishes it, so an unplug finds it from now on.
        registry()
            .lock()
            .mirrors
            .push(&*m as *const Mirror, GFP_KERNEL)
            .map_err(|_| Errno::ENOMEM)?;
        let obj = &*m as *const Mirror as *mut c_void;
        // SAFETY: the mirror is fully built, in its box, and lives until `release`, whose
        // `shutdown` removes the directory (waiting for its readers) first.
        unsafe { m.dbg.create(obj, true) };
        Ok(m)
    }

    /// The binding; `None` once shut down (unplug).
    fn binding(&self) -> Option<&Binding> {
        // SAFETY: only `shutdown` writes it, when nothing else reads it (invariant).
        unsafe { (*self.binding.get()).as_deref() }
    }

    /// Its debugfs files: `ranges`, or `stats` (the engine's, and its GC's removals).
    pub(crate) fn debugfs_show(&self, ranges: bool, w: &mut Seq) -> core::fmt::Result {
        use core::fmt::Write;
        let Some(b) = self.binding() else {
            return writeln!(w, "unplugged");
        };
        if ranges {
            return show_ranges(b.engine(), w);
        }
        writeln!(w, "gc_removed {}", b.gc_removed())?;
        show_engine(b.engine(), w)
    }

    /// Unplug begins: running commands stop at their next chunk.
    pub(crate) fn set_gone(&self) {
        self.gone.store(true, Ordering::Relaxed);
    }

    fn ioctl(&self, nr: u32, uarg: usize) -> Result<(), Errno> {
        let mut cmd = Cmd::read(uarg)?;
        // Every field is hostile: bound `npages` before shifting it (2^52 + 1 pages would
        // shift to 4 KiB), and refuse a span that wraps or leaves user space, before any work.
        if cmd.addr & (PAGE - 1) != 0 || cmd.npages == 0 || cmd.npages > MAX_PAGES {
            return Err(Errno::EINVAL);
        }
        let end = cmd
            .addr
            .checked_add(cmd.npages << PAGE_SHIFT)
            .ok_or(Errno::EINVAL)?;
        // SAFETY: no preconditions.
        let task_size = unsafe { ffi::svm_task_size() };
        if end > task_size {
            return Err(Errno::EINVAL);
        }
        // The user buffer, as access_ok() would judge it: READ/WRITE copy a page per page,
        // SNAPSHOT writes a byte per page.
        let ubytes = match nr {
            NR_READ | NR_WRITE | NR_MIGRATE_TO_DEV | NR_EXCLUSIVE => cmd.npages << PAGE_SHIFT,
            NR_SNAPSHOT => cmd.npages,
            _ => 0,
        };
        if ubytes != 0 && !matches!(cmd.ptr.checked_add(ubytes), Some(u) if u <= task_size) {
            return Err(Errno::EFAULT);
        }
        // Set by `open` before publication, gone only after an unplug (invariant), when the
        // glue no longer lets commands through.
        let b = self.binding().ok_or(ENODEV)?;
        if !b.is_current() {
            return Err(Errno::EXDEV);
        }
        let e = b.engine();
        cmd.cpages = 0;
        cmd.faults = 0;
        match nr {
            NR_READ | NR_WRITE => copy(e, &mut cmd, nr == NR_WRITE, &self.gone)?,
            NR_SNAPSHOT => snapshot(e, &mut cmd, &self.gone)?,
            NR_MIGRATE_TO_DEV => {
                migrate(e, &mut cmd, Place::Device, &self.gone)?;
                // 6.12's `migrate_vma_setup()` passes over a THP whose split fails on a
                // transient extra reference (the folio still in a per-CPU LRU batch, which a
                // module cannot drain; the kernel's own long-term GUP drains and goes again):
                // go again over a span with pages left behind, a bounded number of times.
                // test_hmm does not, and fails now and then with `ENOENT` (its hmm-tests runs
                // list those cases as flaky); the engine did once too (`migrate_multiple`).
                // Not for KSM pages, which stay on purpose (mergeable memory is never
                // collected: see the glue's `svm_migrate_setup()`).
                // A round right after another met the same holder once (vmtests'
                // `devmem_evict`, one full VM run in three): each waits a little longer.
                let mut again = 0;
                while again < MIGRATE_AGAIN && worth_again(e, &cmd, &self.gone)? {
                    again += 1;
                    // SAFETY: may sleep; no lock is held.
                    unsafe { ffi::svm_msleep(1 << again) };
                    migrate(e, &mut cmd, Place::Device, &self.gone)?;
                }
                resident(e, &cmd, &self.gone)?;
                copy(e, &mut cmd, false, &self.gone)?;
            }
            NR_MIGRATE_TO_SYS => migrate(e, &mut cmd, Place::System, &self.gone)?,
            NR_RELEASE => {
                if let Some(d) = &self.devmem {
                    d.evict_all()?;
                }
            }
            NR_EXCLUSIVE => {
                exclusive(e, &cmd, &self.gone)?;
                copy(e, &mut cmd, false, &self.gone)?;
            }
            NR_CHECK_EXCLUSIVE => {
                if e.has_atomic(cmd.addr, end_of(&cmd)) {
                    return Err(Errno::EPERM);
                }
            }
            _ => return Err(Errno::EINVAL),
        }
        cmd.write(uarg)
    }

    fn release(self: KBox<Self>) {
        // Out of the registry first: an unplug running now finishes with this mirror before
        // it is freed, and none can start on it any more.
        unregister(&mut registry().lock().mirrors, &*self);
        self.shutdown();
        // `Drop` frees the work item.
    }

    /// Tears the engine down and drops it (DMA mappings, notifiers, page table, the device
    /// and mm references; `Binding` knows the order): at release, or at unplug once no
    /// command can run. Idempotent; never concurrent with itself (release and unplug
    /// serialise on the registry).
    pub(crate) fn shutdown(&self) {
        // First the debugfs files, which read the binding: this waits for running readers.
        self.dbg.remove();
        // SAFETY: no command runs (release, or unplug after the glue's wait): nothing reads
        // `binding` now (invariant).
        drop(unsafe { (*self.binding.get()).take() });
    }
}

/// READ (`write` false) or WRITE: see the module documentation. `ioctl` checked the command:
/// `npages` in `1..=MAX_PAGES`, both spans below `TASK_SIZE`, so nothing here can overflow.
fn copy(e: &KEngine, cmd: &mut Cmd, write: bool, gone: &AtomicBool) -> Result<(), Errno> {
    let n = cmd.npages;
    let end = end_of(cmd);
    let access = if write { Access::Write } else { Access::Read };
    let mut bounce: KVVec<u8> =
        KVVec::with_capacity(COPY_BATCH << PAGE_SHIFT, GFP).map_err(|_| Errno::ENOMEM)?;
    let buf: *mut MaybeUninit<u8> = bounce.spare_capacity_mut().as_mut_ptr();
    let mut done = 0u64;
    // The end of what the last fault round brought in, and the rounds that only had to bring
    // back pages it had already brought in (see the module documentation).
    let mut covered = cmd.addr;
    let mut refaults = 0u64;
    while done < n {
        between_chunks(gone)?;
        let k = (n - done).min(COPY_BATCH as u64) as usize;
        let bytes = k << PAGE_SHIFT;
        let uptr = (cmd.ptr + (done << PAGE_SHIFT)) as usize;
        // SAFETY: the bounce buffer's capacity holds `COPY_BATCH` pages.
        let chunk = unsafe { core::slice::from_raw_parts_mut(buf, bytes) };
        if write {
            UserSlice::new(uptr, bytes)
                .reader()
                .read_raw(chunk)
                .map_err(|_| Errno::EFAULT)?;
        }
        // The chunk's pages, one TLB-lock hold per pass: a flush waits for at most a chunk
        // of copies. A page the device cannot access ends the pass.
        let mut i = 0usize;
        loop {
            let mut cur = e.tlb().begin(this_unit());
            while i < k {
                let va = cmd.addr + ((done + i as u64) << PAGE_SHIFT);
                // SAFETY: page `i` of the chunk.
                let p = unsafe { buf.add(i << PAGE_SHIFT).cast::<u8>() };
                if !device_copy(e, &mut cur, va, p, write) {
                    break;
                }
                i += 1;
            }
            drop(cur);
            if i == k {
                break;
            }
            if cmd.faults + refaults >= MAX_ROUNDS {
                // Every round ends with the rest faulted in; only an invalidation storm
                // on these very pages gets here.
                return Err(Errno::EBUSY);
            }
            // One "device fault" of test_hmm's counting: the rest of the command faulted in.
            // A stop below `covered` is a page the last round mapped and an invalidation
            // from outside took away again (compaction, khugepaged, NUMA migration), after
            // the round and before the copy reached it: a retry, as test_hmm's fault loop
            // absorbs one inside `dmirror_range_fault`, not a new device fault.
            let start = cmd.addr + ((done + i as u64) << PAGE_SHIFT);
            // SAFETY: no preconditions.
            let t0 = unsafe { ffi::svm_now_ns() };
            let r = prefetch_killable(e, start, end - start, access, &mut 0, gone);
            // SAFETY: no preconditions.
            unsafe { ffi::svm_fault_ns_add(ffi::svm_now_ns().wrapping_sub(t0)) };
            r?;
            if start < covered {
                refaults += 1;
            } else {
                cmd.faults += 1;
            }
            covered = end;
        }
        if !write {
            // SAFETY: `device_copy` wrote every page of the chunk.
            let data = unsafe { core::slice::from_raw_parts(buf.cast::<u8>(), bytes) };
            UserSlice::new(uptr, bytes)
                .writer()
                .write_slice(data)
                .map_err(|_| Errno::EFAULT)?;
        }
        done += k as u64;
    }
    cmd.cpages = n;
    Ok(())
}

/// One device access of the page at `va` through `cur` (the TLB lock held): copies it to
/// `buf` (or from `buf` for a write). False: the device faulted (no access).
fn device_copy(e: &KEngine, cur: &mut TlbCursor<'_>, va: u64, buf: *mut u8, write: bool) -> bool {
    let Some(x) = cur.walk(e.page_table(), va, write) else {
        return false;
    };
    let pfn = x.pfn;
    // SAFETY: the pfn is a page the device may access now: its leaf is valid, and a flush
    // (which precedes any unmap or free of the page) waits for the TLB lock `cur` holds.
    // `buf` is a whole page of the bounce buffer, which nothing else touches.
    unsafe {
        let p = ffi::svm_kmap_pfn(pfn);
        if write {
            core::ptr::copy_nonoverlapping(buf, p, PAGE as usize);
        } else {
            core::ptr::copy_nonoverlapping(p, buf, PAGE as usize);
        }
        ffi::svm_kunmap(p);
    }
    true
}

/// Extra rounds of MIGRATE_TO_DEV over pages a round left behind (see `ioctl`), the k-th
/// after a pause of 2^k ms (62 ms in all at most).
const MIGRATE_AGAIN: u32 = 5;

/// MIGRATE_TO_DEV (the pages, before `resident` and the read back) and MIGRATE_TO_SYS
/// (`cpages`: the pages that moved). test_hmm's errors: a span without a readable VMA
/// throughout is `EINVAL`. 2 MiB at a time, with a fatal-signal check and `cond_resched()`
/// between.
fn migrate(e: &KEngine, cmd: &mut Cmd, to: Place, gone: &AtomicBool) -> Result<(), Errno> {
    let mut done = 0;
    let mem = e.devmem();
    match migrate_killable(e, cmd.addr, end_of(cmd), to, mem, &mut done, gone, |_, _, _| Ok(())) {
        Ok(moved) => cmd.cpages = moved,
        Err(Errno::EFAULT) => return Err(Errno::EINVAL),
        Err(e) => return Err(e),
    }
    Ok(())
}

/// EXCLUSIVE before its read back: the span handed over to the device, 2 MiB at a time.
/// test_hmm's errors: a page it could not hand over (a hole, read-only or shared memory, a
/// page taken back faster than it can map it) is `EBUSY`.
fn exclusive(e: &KEngine, cmd: &Cmd, gone: &AtomicBool) -> Result<(), Errno> {
    const STEP: u64 = 2 << 20;
    let mut s = zeroed_scratch()?;
    let end = end_of(cmd);
    let mut va = cmd.addr;
    while va < end {
        between_chunks(gone)?;
        let len = (end - va).min(STEP);
        match e.make_exclusive(&mut s, va, len, &mut 0) {
            Ok(()) => {}
            Err(e @ (Errno::ENOMEM | Errno::EINTR | Errno::ESRCH)) => return Err(e),
            Err(_) => return Err(Errno::EBUSY),
        }
        va += len;
    }
    Ok(())
}

/// After MIGRATE_TO_DEV: test_hmm reads the span back through its mirror, which holds only
/// the pages that moved to this device, so a page that did not (shared memory, another
/// device's page) fails the command with `ENOENT`.
fn resident(e: &KEngine, cmd: &Cmd, gone: &AtomicBool) -> Result<(), Errno> {
    let local = |v: &u64| {
        v & HMM_PFN_VALID != 0 && e.devmem().local_addr(crate::platform::hmm_pfn(*v)).is_some()
    };
    snapshot_chunks(e, cmd, gone, |pfns| {
        if pfns.iter().all(local) {
            Ok(())
        } else {
            Err(Errno::ENOENT)
        }
    })
}

/// After a MIGRATE_TO_DEV round: whether a page of the span that stayed in system memory
/// might move on another round (any but a KSM page, which stays on purpose).
fn worth_again(e: &KEngine, cmd: &Cmd, gone: &AtomicBool) -> Result<bool, Errno> {
    let mut any = false;
    snapshot_chunks(e, cmd, gone, |pfns| {
        any |= pfns.iter().any(|&v| {
            let pfn = crate::platform::hmm_pfn(v);
            // SAFETY: no preconditions (a racy peek at a page hmm just reported).
            v & HMM_PFN_VALID != 0
                && e.devmem().local_addr(pfn).is_none()
                && !unsafe { ffi::svm_is_ksm_pfn(pfn) }
        });
        Ok(())
    })?;
    Ok(any)
}

/// `Engine::snapshot` of the command's span, [`SNAPSHOT_CHUNK`] pages at a time, each chunk
/// handed to `f`. A chunk never crosses a range (the engine snapshots one range at a time).
fn snapshot_chunks(
    e: &KEngine,
    cmd: &Cmd,
    gone: &AtomicBool,
    mut f: impl FnMut(&[u64]) -> Result<(), Errno>,
) -> Result<(), Errno> {
    let end = end_of(cmd);
    let range = 1u64 << e.config().range_shift;
    let mut pfns = [0u64; SNAPSHOT_CHUNK];
    let mut va = cmd.addr;
    while va < end {
        between_chunks(gone)?;
        let next = end
            .min(va + ((SNAPSHOT_CHUNK as u64) << PAGE_SHIFT))
            .min((va | (range - 1)).saturating_add(1));
        let k = ((next - va) >> PAGE_SHIFT) as usize;
        e.snapshot(va, &mut pfns[..k])?;
        f(&pfns[..k])?;
        va = next;
    }
    Ok(())
}

/// SNAPSHOT: one `HMM_DMIRROR_PROT_*` byte per page.
fn snapshot(e: &KEngine, cmd: &mut Cmd, gone: &AtomicBool) -> Result<(), Errno> {
    let mut perm = [0u8; SNAPSHOT_CHUNK];
    let mut done = 0u64;
    snapshot_chunks(e, cmd, gone, |pfns| {
        let k = pfns.len();
        for (p, &v) in perm.iter_mut().zip(pfns.iter()) {
            *p = prot_of(e, v);
        }
        UserSlice::new((cmd.ptr + done) as usize, k)
            .writer()
            .write_slice(&perm[..k])
            .map_err(|_| Errno::EFAULT)?;
        done += k as u64;
        Ok(())
    })?;
    cmd.cpages = done;
    Ok(())
}

fn end_of(cmd: &Cmd) -> u64 {
    cmd.addr + (cmd.npages << PAGE_SHIFT)
}

/// test_hmm's `dmirror_mkentry()` for device-private memory: hmm (with our owner) hands back
/// our own device pages only, so another device's page reads as absent (`PROT_NONE`), as in
/// test_hmm.
fn prot_of(e: &KEngine, v: u64) -> u8 {
    if v & HMM_PFN_ERROR != 0 {
        return PROT_ERROR;
    }
    if v & HMM_PFN_VALID == 0 {
        return PROT_NONE;
    }
    let pfn = crate::platform::hmm_pfn(v);
    let mut p = if e.devmem().local_addr(pfn).is_some() {
        PROT_DEV_PRIVATE_LOCAL
    // SAFETY: no preconditions.
    } else if unsafe { ffi::svm_is_zero_pfn(pfn) } {
        PROT_ZERO
    } else {
        PROT_NONE
    };
    p |= if v & HMM_PFN_WRITE != 0 {
        PROT_WRITE
    } else {
        PROT_READ
    };
    match hmm_order(v) {
        9 => p | PROT_PMD,
        18 => p | PROT_PUD,
        _ => p,
    }
}

// ---- entry points called by glue.c --------------------------------------------------------

/// `open` of `/dev/hmm_dmirrorN`: a mirror of the caller's mm in `*out`; 0 or -errno.
///
/// # Safety
/// `dev` is the module's live platform device; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn svm_rs_dm_open(
    dev: *mut ffi::Device,
    index: u32,
    out: *mut *mut c_void,
) -> i32 {
    match Mirror::open(dev, index) {
        Ok(m) => {
            // SAFETY: per the contract.
            unsafe { *out = KBox::into_raw(m).cast() };
            0
        }
        Err(e) => -e.0,
    }
}

/// `release`.
///
/// # Safety
/// `m` came from `svm_rs_dm_open`, and no ioctl or mmap on it runs or will run.
#[no_mangle]
pub unsafe extern "C" fn svm_rs_dm_release(m: *mut c_void) {
    // SAFETY: per the contract.
    unsafe { KBox::from_raw(m.cast::<Mirror>()) }.release();
}

/// `unlocked_ioctl`, with the command's `_IOC_NR` (glue.c checked the rest of it).
///
/// # Safety
/// `m` came from `svm_rs_dm_open` and is not released.
#[no_mangle]
pub unsafe extern "C" fn svm_rs_dm_ioctl(m: *mut c_void, nr: u32, uarg: usize) -> i32 {
    // SAFETY: per the contract.
    let m = unsafe { &*m.cast::<Mirror>() };
    match m.ioctl(nr, uarg) {
        Ok(()) => 0,
        Err(e) => -e.0,
    }
}

/// `mmap`: a zeroed page at each page of `[start, end)` of `vma`, which is at most 1 GiB
/// (each page is kernel memory allocated now); a fatal signal (the OOM killer's) ends it.
///
/// # Safety
/// `vma` is the VMA being mapped, its `mmap_lock` held for write by the caller.
#[no_mangle]
pub unsafe extern "C" fn svm_rs_dm_mmap(vma: *mut c_void, start: u64, end: u64) -> i32 {
    if end.wrapping_sub(start) > MAX_BYTES {
        return -Errno::ENOMEM.0;
    }
    let mut va = start;
    while va < end {
        // SAFETY: no preconditions.
        if unsafe { ffi::svm_fatal_signal_pending() } {
            return -Errno::EINTR.0;
        }
        resched();
        // SAFETY: per the contract.
        let rc = unsafe { ffi::svm_vm_insert_zeroed_page(vma, va) };
        if rc != 0 {
            return rc;
        }
        va += PAGE;
    }
    0
}
