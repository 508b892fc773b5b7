//! Property test: random operation sequences (CPU and device accesses, mapping system calls,
//! madvise, fork, swap, migration, THP split, batched device faults, GC, the OOM reaper,
//! teardown) run against the real engine on the model, and every result is compared with a
//! reference oracle of what the process must observe. After every step the model's detectors
//! (I1/I2/I4, lockdep) and `World::check_quiescent` must be clean; at the end of a case the
//! world is torn down and must hold no range, notifier or DMA mapping.
//!
//! The universe is small on purpose, so operations collide: two 2 MiB regions at fixed,
//! adjacent, 2 MiB-aligned addresses (one THP-eligible, one not), page indices drawn from a
//! handful of values at both ends and in the middle of each region, and three times out of
//! four one of the last pages an operation named (so that chains such as "write, MADV_FREE,
//! device write, swap out" on one page are common).
//!
//! Four machines: x86 PTEs with 2 MiB ranges, GFX9 PTEs with 64 KiB ranges, and the two
//! baseline granularities of `Documentation/design.rst` ("Granularity and the baselines"): x86
//! PTEs with one range over the whole address space and the engine mutex (test_hmm-like), and
//! with 512 MiB ranges and the engine rwsem (drm_gpusvm-like). All use a fault-around window
//! of 4 pages. Each case is 10 to 40 steps; a case costs well under a
//! millisecond in release, so the default is 1024 cases per machine in release and 512 in
//! debug (about 1 s and 8 s per machine). `PROPTEST_CASES` overrides it.
//!
//! The oracle's rules, where the kernel allows more than one outcome:
//! - A page `MADV_FREE` left in place reads its value or 0 (reclaim may discard it while it is
//!   clean). Reading 0 makes it definitely 0; reading the value does not make it definite (a
//!   read does not redirty it); a write does. Reclaim may discard only such a page. A swap
//!   entry under `MADV_FREE` is freed at once: that page reads 0.
//! - The OOM reaper zaps every anonymous VMA and marks the mm unstable: from then on every
//!   access that needs a page fails with `EFAULT` (a forked child is not affected).
//! - Mid-sequence teardown is `engine.teardown()` itself: the engine is used again after it
//!   (faults create ranges anew), which `World::teardown` would not allow.
//!
//! Failures are not persisted to files: a real bug found here becomes an explicit test.

use model::{MapFlags, MmHandle, Prot, SwapOutcome, World};
use pgtable::{Errno, Gfx9Format, PteFormat, X86Format};
use proptest::prelude::*;
use proptest::strategy::Union;
use proptest::test_runner::Config as PtConfig;
use proptest_state_machine::{prop_state_machine, ReferenceStateMachine, StateMachineTest};
use std::fmt;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use svm::{Access, Config, DeviceFault, LockScope, Place, Scratch};

const PAGE: u64 = 4096;
const REGION: u64 = 2 << 20;
/// Pages per region.
const NPAGES: u16 = 512;
/// Region 0 (THP) at `BASE`, region 1 (plain anonymous) right after it.
const BASE: u64 = 0x4000_0000;
const NREGIONS: u8 = 2;
/// Page indices operations pick from: both ends of a region (and of its first and last
/// 64 KiB range), both sides of the 1 MiB midpoint (a 64 KiB range boundary), and one more.
const IDX: [u16; 15] = [0, 1, 2, 3, 4, 5, 6, 7, 255, 256, 300, 508, 509, 510, 511];
/// Span lengths (pages) for the range operations.
const LENS: [u16; 8] = [1, 2, 3, 4, 8, 16, 64, 512];

fn region_base(r: u8) -> u64 {
    BASE + u64::from(r) * REGION
}

fn region_flags(r: u8) -> MapFlags {
    if r == 0 {
        MapFlags::THP
    } else {
        MapFlags::ANON
    }
}

// ---------------------------------------------------------------------------------------------
// Transitions.

/// A page: region and index.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Pg {
    r: u8,
    i: u16,
}

impl Pg {
    fn va(self) -> u64 {
        region_base(self.r) + u64::from(self.i) * PAGE
    }
    fn slot(self) -> usize {
        usize::from(self.r) * usize::from(NPAGES) + usize::from(self.i)
    }
}

impl fmt::Debug for Pg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "R{}:{}", self.r, self.i)
    }
}

/// `n` pages from `first` in region `r` (never past the region's end).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Span {
    r: u8,
    first: u16,
    n: u16,
    /// The page the generator built the span around (it covers it); generation only.
    anchor: u16,
}

impl Span {
    fn pages(self) -> impl Iterator<Item = Pg> {
        (self.first..self.first + self.n).map(move |i| Pg { r: self.r, i })
    }
    fn va(self) -> u64 {
        Pg {
            r: self.r,
            i: self.first,
        }
        .va()
    }
    fn len(self) -> u64 {
        u64::from(self.n) * PAGE
    }
}

impl fmt::Debug for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "R{}:{}+{}", self.r, self.first, self.n)
    }
}

/// One entry of a device fault batch.
#[derive(Clone, Copy, PartialEq, Eq)]
struct BatchEntry {
    pg: Pg,
    write: bool,
    /// Byte offset inside the page (a fault names any byte of it).
    off: u16,
}

impl fmt::Debug for BatchEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rw = if self.write { "W" } else { "R" };
        write!(f, "{:?}+{:#x}{}", self.pg, self.off, rw)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    CpuRead(Pg),
    CpuWrite(Pg, u64),
    DevRead(Pg),
    DevWrite(Pg, u64),
    DevAtomicAdd(Pg, u64),
    /// A device atomic in device-exclusive mode: the page is handed over to the device.
    DevExclusiveAdd(Pg, u64),
    /// A device read in a region whose preferred location is the device: the fault moves the
    /// block around the page first (`Engine::place_for_fault`, as the accel driver does).
    PlacedRead(Pg),
    /// `mmap(MAP_FIXED)` of the whole region, RW, fresh zero content.
    Mmap(u8),
    Munmap(u8),
    MunmapPartial(Span),
    /// To `READ` (`read_only`) or `NONE`.
    MprotectDown(Span, bool),
    MprotectUp(Span),
    /// Forks a child (the previous child, if any, exits first).
    Fork,
    ChildRead(Pg),
    ChildWrite(Pg, u64),
    MadvDontneed(Span),
    MadvFree(Span),
    Migrate(Pg),
    /// The engine moves the span to device memory.
    ToDevice(Span),
    /// The engine moves the span back to system memory.
    ToSystem(Span),
    /// A second device, with memory of its own, on the same mm: a read (faulting the first
    /// device's pages back), a write, and a move into its own memory.
    Dev2Read(Pg),
    Dev2Write(Pg, u64),
    Dev2ToDevice(Span),
    /// The second device moves the span into the first device's memory: a peer's placement
    /// (`Engine::migrate_into`), `EXDEV` where the two are not peers.
    Dev2ToPeer(Span),
    SwapOut(Pg),
    SplitThp(u8),
    DevFaultBatch(Vec<BatchEntry>),
    Gc,
    OomReap,
    /// `engine.teardown()`, then keep going (later faults create ranges anew).
    Teardown,
}

/// What the generator needs to know: whether a child exists (for the child operations), and
/// the pages the last few operations named, which later ones pick again three times out of
/// four, so that chains like "write, MADV_FREE, device write, swap out" on one page are likely.
#[derive(Clone, Debug, Default)]
struct RefState {
    has_child: bool,
    recent: Vec<Pg>,
}

/// How many recently named pages the generator remembers.
const RECENT: usize = 3;

impl RefState {
    fn touch(&mut self, p: Pg) {
        self.recent.retain(|q| *q != p);
        if self.recent.len() == RECENT {
            self.recent.remove(0);
        }
        self.recent.push(p);
    }
}

struct Ops;

fn any_pg() -> BoxedStrategy<Pg> {
    (0..NREGIONS, prop::sample::select(&IDX[..]))
        .prop_map(|(r, i)| Pg { r, i })
        .boxed()
}

/// A page: one of the recently named ones three times out of four (the last one half of
/// the time).
fn pg(st: &RefState) -> BoxedStrategy<Pg> {
    if st.recent.is_empty() {
        return any_pg();
    }
    let last = *st.recent.last().expect("not empty");
    prop_oneof![
        1 => any_pg(),
        2 => Just(last),
        1 => prop::sample::select(st.recent.clone())
    ]
    .boxed()
}

/// A span starting at a page from [`pg`], or just below it (so it covers it).
fn span(st: &RefState) -> BoxedStrategy<Span> {
    (pg(st), any::<bool>(), prop::sample::select(&LENS[..]))
        .prop_map(|(p, below, n)| {
            let first = if below {
                p.i.saturating_sub(n / 2)
            } else {
                p.i
            };
            Span {
                r: p.r,
                first,
                n: n.min(NPAGES - first),
                anchor: p.i,
            }
        })
        .boxed()
}

fn val() -> impl Strategy<Value = u64> {
    1u64..1000
}

fn region() -> impl Strategy<Value = u8> {
    0..NREGIONS
}

fn batch(st: &RefState) -> impl Strategy<Value = Vec<BatchEntry>> {
    prop::collection::vec(
        (
            pg(st),
            any::<bool>(),
            prop::sample::select(&[0u16, 8, 4088][..]),
        )
            .prop_map(|(pg, write, off)| BatchEntry { pg, write, off }),
        1..6,
    )
}

impl ReferenceStateMachine for Ops {
    type State = RefState;
    type Transition = Op;

    fn init_state() -> BoxedStrategy<RefState> {
        Just(RefState::default()).boxed()
    }

    fn transitions(state: &RefState) -> BoxedStrategy<Op> {
        let mut arms: Vec<(u32, BoxedStrategy<Op>)> = vec![
            (12, pg(state).prop_map(Op::CpuRead).boxed()),
            (
                12,
                (pg(state), val())
                    .prop_map(|(p, v)| Op::CpuWrite(p, v))
                    .boxed(),
            ),
            (16, pg(state).prop_map(Op::DevRead).boxed()),
            (
                16,
                (pg(state), val())
                    .prop_map(|(p, v)| Op::DevWrite(p, v))
                    .boxed(),
            ),
            (
                8,
                (pg(state), val())
                    .prop_map(|(p, v)| Op::DevAtomicAdd(p, v))
                    .boxed(),
            ),
            (
                6,
                (pg(state), val())
                    .prop_map(|(p, v)| Op::DevExclusiveAdd(p, v))
                    .boxed(),
            ),
            (4, pg(state).prop_map(Op::PlacedRead).boxed()),
            (4, region().prop_map(Op::Mmap).boxed()),
            (2, region().prop_map(Op::Munmap).boxed()),
            (4, span(state).prop_map(Op::MunmapPartial).boxed()),
            (
                6,
                (span(state), any::<bool>())
                    .prop_map(|(s, ro)| Op::MprotectDown(s, ro))
                    .boxed(),
            ),
            (6, span(state).prop_map(Op::MprotectUp).boxed()),
            (4, Just(Op::Fork).boxed()),
            (4, span(state).prop_map(Op::MadvDontneed).boxed()),
            (8, span(state).prop_map(Op::MadvFree).boxed()),
            (6, pg(state).prop_map(Op::Migrate).boxed()),
            (6, span(state).prop_map(Op::ToDevice).boxed()),
            (3, span(state).prop_map(Op::ToSystem).boxed()),
            (4, pg(state).prop_map(Op::Dev2Read).boxed()),
            (
                3,
                (pg(state), val())
                    .prop_map(|(p, v)| Op::Dev2Write(p, v))
                    .boxed(),
            ),
            (3, span(state).prop_map(Op::Dev2ToDevice).boxed()),
            (3, span(state).prop_map(Op::Dev2ToPeer).boxed()),
            (10, pg(state).prop_map(Op::SwapOut).boxed()),
            (4, region().prop_map(Op::SplitThp).boxed()),
            (8, batch(state).prop_map(Op::DevFaultBatch).boxed()),
            (4, Just(Op::Gc).boxed()),
            // Rare: after it the mm can fault in no new page, ever (MMF_UNSTABLE).
            (1, Just(Op::OomReap).boxed()),
            (3, Just(Op::Teardown).boxed()),
        ];
        if state.has_child {
            arms.push((6, pg(state).prop_map(Op::ChildRead).boxed()));
            arms.push((
                6,
                (pg(state), val())
                    .prop_map(|(p, v)| Op::ChildWrite(p, v))
                    .boxed(),
            ));
        }
        Union::new_weighted(arms).boxed()
    }

    fn apply(mut state: RefState, op: &Op) -> RefState {
        match *op {
            Op::Fork => state.has_child = true,
            Op::CpuRead(p)
            | Op::CpuWrite(p, _)
            | Op::DevRead(p)
            | Op::DevWrite(p, _)
            | Op::DevAtomicAdd(p, _)
            | Op::DevExclusiveAdd(p, _)
            | Op::PlacedRead(p)
            | Op::ChildRead(p)
            | Op::ChildWrite(p, _)
            | Op::Migrate(p)
            | Op::Dev2Read(p)
            | Op::Dev2Write(p, _)
            | Op::SwapOut(p) => state.touch(p),
            Op::MunmapPartial(s)
            | Op::MprotectDown(s, _)
            | Op::MprotectUp(s)
            | Op::MadvDontneed(s)
            | Op::ToDevice(s)
            | Op::ToSystem(s)
            | Op::Dev2ToDevice(s)
            | Op::Dev2ToPeer(s)
            | Op::MadvFree(s) => state.touch(Pg {
                r: s.r,
                i: s.anchor,
            }),
            Op::DevFaultBatch(ref b) => b.iter().for_each(|e| state.touch(e.pg)),
            _ => {}
        }
        state
    }

    fn preconditions(state: &RefState, op: &Op) -> bool {
        match op {
            Op::ChildRead(_) | Op::ChildWrite(..) => state.has_child,
            _ => true,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The oracle: what each page must hold, in the parent and in the child.

/// The data word a page must read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Val {
    /// Exactly this (0 after a fresh mapping, MADV_DONTNEED, the OOM reaper).
    Def(u64),
    /// `MADV_FREE`d: `v`, or 0 once reclaim discarded the clean page. Reading `v` does not
    /// make it definite (a read does not redirty the page; reclaim may still discard it);
    /// reading 0 does (a discarded page stays zero); any write does. So does nothing else:
    /// not even reclaim keeping the page, since a swap entry `MADV_FREE` freed reads 0 too.
    MaybeZero(u64),
}

impl Val {
    fn fits(self, got: u64) -> bool {
        match self {
            Val::Def(v) => got == v,
            Val::MaybeZero(v) => got == v || got == 0,
        }
    }

    /// After an observation `got` (which [`Val::fits`]).
    fn observed(self, got: u64) -> Val {
        match self {
            Val::MaybeZero(_) if got == 0 => Val::Def(0),
            v => v,
        }
    }

    fn freed(self) -> Val {
        match self {
            Val::Def(0) => Val::Def(0),
            Val::Def(v) | Val::MaybeZero(v) => Val::MaybeZero(v),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct PageState {
    /// `None`: no VMA.
    prot: Option<Prot>,
    val: Val,
}

const UNMAPPED: PageState = PageState {
    prot: None,
    val: Val::Def(0),
};

/// One address space's view of the universe.
#[derive(Clone)]
struct Space {
    pages: Vec<PageState>,
    /// The OOM reaper ran: every page is gone and none can be faulted in again.
    reaped: bool,
}

impl Space {
    fn new() -> Self {
        Space {
            pages: vec![UNMAPPED; usize::from(NREGIONS) * usize::from(NPAGES)],
            reaped: false,
        }
    }

    fn at(&mut self, p: Pg) -> &mut PageState {
        &mut self.pages[p.slot()]
    }

    fn get(&self, p: Pg) -> PageState {
        self.pages[p.slot()]
    }

    /// What a CPU access must return (SIGSEGV is `EFAULT`).
    fn cpu_expect(&self, p: Pg, write: bool) -> Result<(), Errno> {
        match self.get(p).prot {
            Some(pr) if pr.read && (!write || pr.write) => {
                if self.reaped {
                    Err(Errno::EFAULT)
                } else {
                    Ok(())
                }
            }
            _ => Err(Errno::EFAULT),
        }
    }

    /// What a device access (or fault) must return.
    fn dev_expect(&self, p: Pg, write: bool) -> Result<(), Errno> {
        match self.get(p).prot {
            Some(pr) if !pr.read => Err(Errno::EFAULT),
            Some(pr) if write && !pr.write => Err(Errno::EPERM),
            Some(_) if self.reaped => Err(Errno::EFAULT),
            Some(_) => Ok(()),
            None => Err(Errno::EFAULT),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The system under test.

/// A machine to test: a PTE format, a range size and a lock scope.
trait Flavor: 'static {
    type Fmt: PteFormat;
    const RANGE_SHIFT: u32;
    const LOCK_SCOPE: LockScope = LockScope::PerRange;
    /// Whether the second device is a peer of the first (their memories share an owner: each
    /// maps the other's pages through DMA instead of faulting them back).
    const PEER: bool = false;
}

/// x86-64 PTEs, 2 MiB ranges (huge device leaves possible).
struct X86Ranges2M;
impl Flavor for X86Ranges2M {
    type Fmt = X86Format;
    const RANGE_SHIFT: u32 = 21;
}

/// x86-64 PTEs, 2 MiB ranges, and the second device a peer of the first.
struct X86Ranges2MPeer;
impl Flavor for X86Ranges2MPeer {
    type Fmt = X86Format;
    const RANGE_SHIFT: u32 = 21;
    const PEER: bool = true;
}

/// GFX9 PTEs, 64 KiB ranges (32 ranges per region, sharing leaf tables).
struct Gfx9Ranges64K;
impl Flavor for Gfx9Ranges64K {
    type Fmt = Gfx9Format;
    const RANGE_SHIFT: u32 = 16;
}

/// test_hmm's granularity: one range over the whole address space (both regions in it), and
/// the engine mutex around every range-lock critical section.
struct X86WholeAsMutex;
impl Flavor for X86WholeAsMutex {
    type Fmt = X86Format;
    const RANGE_SHIFT: u32 = 47;
    const LOCK_SCOPE: LockScope = LockScope::EngineMutex;
}

/// drm_gpusvm's granularity: 512 MiB ranges (both regions in one) and the engine rwsem.
struct X86Ranges512MRwsem;
impl Flavor for X86Ranges512MRwsem {
    type Fmt = X86Format;
    const RANGE_SHIFT: u32 = 29;
    const LOCK_SCOPE: LockScope = LockScope::EngineRwsem;
}

struct Sut<F: PteFormat> {
    // Leaked instead of dropped when a step panicked (see `Drop`).
    w: ManuallyDrop<World<F>>,
    dev: ManuallyDrop<model::Device<F>>,
    /// The second device, on `w`'s mm.
    v: ManuallyDrop<World<F>>,
    dev2: ManuallyDrop<model::Device<F>>,
    child: ManuallyDrop<Option<MmHandle>>,
    scratch: Box<Scratch>,
    parent: Space,
    /// The child's view (its own copy from the fork: COW isolation both ways).
    kid: Option<Space>,
    /// The second device is a peer of the first (`Flavor::PEER`).
    peer: bool,
}

impl<F: PteFormat> Sut<F> {
    fn new(range_shift: u32, lock_scope: LockScope, peer: bool) -> Self {
        let cfg = Config {
            fault_around_pages: 4,
            range_shift,
            lock_scope,
            ..Config::default()
        };
        // Device memory for a third of what the regions hold: migrations run out of it.
        let w = World::<F>::builder()
            .config(cfg)
            .devmem_pages(usize::from(NPAGES) * usize::from(NREGIONS) / 3)
            .build()
            .expect("world");
        let mut parent = Space::new();
        for r in 0..NREGIONS {
            w.mm.mmap_fixed(region_base(r), REGION, Prot::RW, region_flags(r))
                .expect("mmap_fixed");
            for i in 0..NPAGES {
                *parent.at(Pg { r, i }) = PageState {
                    prot: Some(Prot::RW),
                    val: Val::Def(0),
                };
            }
        }
        let dev = ManuallyDrop::new(w.device());
        let mut b = World::<F>::builder().config(cfg).share_mm(&w.mm);
        if peer {
            b = b.peer_of(&w.devmem);
        }
        let v = b
            .devmem_pages(usize::from(NPAGES))
            .build()
            .expect("second world");
        let dev2 = ManuallyDrop::new(v.device());
        Sut {
            w: ManuallyDrop::new(w),
            dev,
            v: ManuallyDrop::new(v),
            dev2,
            child: ManuallyDrop::new(None),
            scratch: Box::new(Scratch::new()),
            parent,
            kid: None,
            peer,
        }
    }

    /// Fails the case on any recorded violation (before comparing results, so the report
    /// names the detector rather than a symptom).
    fn detectors(&self, op: &Op) {
        if let Err(e) = self.w.violations.check() {
            panic!("after {op:?}: {e}");
        }
    }

    fn check_read(space: &mut Space, p: Pg, got: u64, who: &str) {
        let st = space.at(p);
        assert!(
            st.val.fits(got),
            "{who} read {got} at {p:?}, expected {:?}",
            st.val
        );
        st.val = st.val.observed(got);
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::CpuRead(p) => {
                let r = self.w.mm.cpu_read(p.va());
                self.detectors(op);
                let want = self.parent.cpu_expect(p, false);
                assert_eq!(r.map(|_| ()), want, "CPU read at {p:?}");
                if let Ok(got) = r {
                    Self::check_read(&mut self.parent, p, got, "CPU");
                }
            }
            Op::CpuWrite(p, v) => {
                let r = self.w.mm.cpu_write(p.va(), v);
                self.detectors(op);
                assert_eq!(r, self.parent.cpu_expect(p, true), "CPU write at {p:?}");
                if r.is_ok() {
                    self.parent.at(p).val = Val::Def(v);
                }
            }
            Op::DevRead(p) | Op::Dev2Read(p) => {
                let (second, who) = Self::which(op);
                let r = self.dev_of(second).read(p.va());
                self.detectors(op);
                let want = self.parent.dev_expect(p, false);
                assert_eq!(r.map(|_| ()), want, "{who} read at {p:?}");
                if let Ok(got) = r {
                    Self::check_read(&mut self.parent, p, got, who);
                }
            }
            Op::PlacedRead(p) => {
                let base = region_base(p.r);
                {
                    let _s = self.w.violations.scope();
                    self.w
                        .engine
                        .place_for_fault(&mut self.scratch, p.va(), base, base + REGION);
                }
                let r = self.dev.read(p.va());
                self.detectors(op);
                let want = self.parent.dev_expect(p, false);
                assert_eq!(r.map(|_| ()), want, "placed read at {p:?}");
                if let Ok(got) = r {
                    Self::check_read(&mut self.parent, p, got, "placed device");
                }
            }
            Op::DevWrite(p, v) | Op::Dev2Write(p, v) => {
                let (second, who) = Self::which(op);
                let r = self.dev_of(second).write(p.va(), v);
                self.detectors(op);
                assert_eq!(r, self.parent.dev_expect(p, true), "{who} write at {p:?}");
                if r.is_ok() {
                    self.parent.at(p).val = Val::Def(v);
                }
            }
            Op::DevAtomicAdd(p, v) | Op::DevExclusiveAdd(p, v) => {
                let excl = matches!(op, Op::DevExclusiveAdd(..));
                // 6.12 hands over no page of a large folio the glue cannot split (one PTEs
                // map): `EBUSY`, as the kernel's glue reports it.
                let large = excl && self.w.mm.in_large_folio(p.va());
                let r = if excl {
                    self.dev.exclusive_add(p.va(), v)
                } else {
                    self.dev.atomic_add(p.va(), v)
                };
                self.detectors(op);
                if large && r == Err(Errno::EBUSY) {
                    return;
                }
                let want = self.parent.dev_expect(p, true);
                assert_eq!(r.map(|_| ()), want, "device atomic add at {p:?}");
                if let Ok(old) = r {
                    Self::check_read(&mut self.parent, p, old, "device atomic");
                    self.parent.at(p).val = Val::Def(old.wrapping_add(v));
                }
            }
            Op::Mmap(r) => {
                let a = region_base(r);
                let got = self.w.mm.mmap_fixed(a, REGION, Prot::RW, region_flags(r));
                self.detectors(op);
                assert_eq!(got, Ok(a), "mmap_fixed of region {r}");
                for i in 0..NPAGES {
                    *self.parent.at(Pg { r, i }) = PageState {
                        prot: Some(Prot::RW),
                        val: Val::Def(0),
                    };
                }
            }
            Op::Munmap(r) => {
                let got = self.w.mm.munmap(region_base(r), REGION);
                self.detectors(op);
                assert_eq!(got, Ok(()), "munmap of region {r}");
                for i in 0..NPAGES {
                    *self.parent.at(Pg { r, i }) = UNMAPPED;
                }
            }
            Op::MunmapPartial(s) => {
                let got = self.w.mm.munmap(s.va(), s.len());
                self.detectors(op);
                assert_eq!(got, Ok(()), "munmap {s:?}");
                for p in s.pages() {
                    *self.parent.at(p) = UNMAPPED;
                }
            }
            Op::MprotectDown(s, read_only) => {
                let prot = if read_only { Prot::READ } else { Prot::NONE };
                self.mprotect(op, s, prot);
            }
            Op::MprotectUp(s) => self.mprotect(op, s, Prot::RW),
            Op::Fork => {
                if let Some(c) = self.child.take() {
                    c.exit();
                }
                let c = self.w.mm.fork();
                self.detectors(op);
                *self.child = Some(c.expect("fork"));
                // The child copies the VMAs and the memory, but not MMF_UNSTABLE: it can fault.
                let mut kid = self.parent.clone();
                kid.reaped = false;
                self.kid = Some(kid);
            }
            Op::ChildRead(p) => {
                let (Some(c), Some(kid)) = (&*self.child, &mut self.kid) else {
                    return;
                };
                let r = c.cpu_read(p.va());
                if let Err(e) = self.w.violations.check() {
                    panic!("after {op:?}: {e}");
                }
                assert_eq!(r.map(|_| ()), kid.cpu_expect(p, false), "child read {p:?}");
                if let Ok(got) = r {
                    Self::check_read(kid, p, got, "child");
                }
            }
            Op::ChildWrite(p, v) => {
                let (Some(c), Some(kid)) = (&*self.child, &mut self.kid) else {
                    return;
                };
                let r = c.cpu_write(p.va(), v);
                if let Err(e) = self.w.violations.check() {
                    panic!("after {op:?}: {e}");
                }
                assert_eq!(r, kid.cpu_expect(p, true), "child write {p:?}");
                if r.is_ok() {
                    kid.at(p).val = Val::Def(v);
                }
            }
            Op::MadvDontneed(s) | Op::MadvFree(s) => {
                let free = matches!(op, Op::MadvFree(_));
                // MADV_FREE frees swap entries outright (`free_swap_and_cache()`): those
                // pages read 0 from now on, whatever they held.
                let swapped: Vec<bool> = s.pages().map(|p| self.w.mm.is_swapped(p.va())).collect();
                let r = if free {
                    self.w.mm.madvise_free(s.va(), s.len())
                } else {
                    self.w.mm.madvise_dontneed(s.va(), s.len())
                };
                self.detectors(op);
                let mut hole = false;
                for (p, swapped) in s.pages().zip(swapped) {
                    let st = self.parent.at(p);
                    if st.prot.is_none() {
                        hole = true;
                    } else if free && !swapped {
                        st.val = st.val.freed();
                    } else {
                        st.val = Val::Def(0);
                    }
                }
                let want = if hole { Err(Errno::ENOMEM) } else { Ok(()) };
                assert_eq!(r, want, "madvise {s:?}");
            }
            Op::Migrate(p) => {
                let r = self.w.mm.migrate(p.va());
                self.detectors(op);
                if self.parent.get(p).prot.is_none() {
                    assert_eq!(r, Err(Errno::EFAULT), "migrate of a hole at {p:?}");
                } else {
                    assert!(
                        matches!(r, Ok(_) | Err(Errno::ENOENT) | Err(Errno::EBUSY)),
                        "migrate at {p:?}: {r:?}"
                    );
                }
            }
            Op::ToDevice(s) | Op::ToSystem(s) | Op::Dev2ToDevice(s) | Op::Dev2ToPeer(s) => {
                let to = if matches!(op, Op::ToSystem(_)) {
                    Place::System
                } else {
                    Place::Device
                };
                let w = if matches!(op, Op::Dev2ToDevice(_) | Op::Dev2ToPeer(_)) {
                    &self.v
                } else {
                    &self.w
                };
                let mem = if matches!(op, Op::Dev2ToPeer(_)) {
                    &self.w.devmem
                } else {
                    &w.devmem
                };
                let mut done = 0;
                let r = {
                    let _s = w.violations.scope();
                    w.engine
                        .migrate_into(&mut self.scratch, s.va(), s.len(), to, mem, &mut done)
                };
                self.detectors(op);
                // Data never changes (the oracle stands); only the errno is checked here.
                let bad = s
                    .pages()
                    .any(|p| self.parent.get(p).prot.is_none_or(|q| !q.read));
                match r {
                    Ok(_) => assert_eq!(done, s.len(), "{op:?}"),
                    Err(Errno::EFAULT) => assert!(bad, "{op:?}: EFAULT over readable memory"),
                    Err(Errno::ENOMEM) => assert_eq!(to, Place::Device, "{op:?}"),
                    Err(Errno::EXDEV) => assert!(
                        matches!(op, Op::Dev2ToPeer(_)) && !self.peer,
                        "{op:?}: EXDEV"
                    ),
                    Err(e) => panic!("{op:?}: {e}"),
                }
            }
            Op::SwapOut(p) => {
                let r = self.w.mm.swap_out(p.va());
                self.detectors(op);
                if self.parent.get(p).prot.is_none() {
                    assert_eq!(r, Err(Errno::ENOMEM), "swap-out of a hole at {p:?}");
                    return;
                }
                let st = self.parent.at(p);
                match r {
                    Ok(SwapOutcome::Discarded) => {
                        assert!(
                            matches!(st.val, Val::MaybeZero(_) | Val::Def(0)),
                            "reclaim discarded {p:?}, which must hold {:?}",
                            st.val
                        );
                        st.val = Val::Def(0);
                    }
                    // Not discarded now; a MaybeZero page stays so (it may have been a swap
                    // entry that MADV_FREE freed, which reads 0 without any discard).
                    Ok(SwapOutcome::Swapped { .. })
                    | Ok(SwapOutcome::KeptDirty)
                    | Ok(SwapOutcome::NotPresent)
                    | Ok(SwapOutcome::Busy) => {}
                    Err(e) => panic!("swap-out at {p:?}: {e:?}"),
                }
            }
            Op::SplitThp(r) => {
                let got = self.w.mm.split_thp(region_base(r));
                self.detectors(op);
                assert!(got.is_ok(), "split_thp of region {r}: {got:?}");
            }
            Op::DevFaultBatch(ref entries) => {
                let mut batch: Vec<DeviceFault> = entries
                    .iter()
                    .map(|e| {
                        let access = if e.write { Access::Write } else { Access::Read };
                        DeviceFault::new(e.pg.va() + u64::from(e.off), access)
                    })
                    .collect();
                {
                    let _s = self.w.violations.scope();
                    self.w.engine.fault_batch(&mut self.scratch, &mut batch);
                }
                self.detectors(op);
                for f in &batch {
                    let p = Pg {
                        r: ((f.va - BASE) / REGION) as u8,
                        i: ((f.va - BASE) % REGION / PAGE) as u16,
                    };
                    // Entries for one page are merged: the strongest access decides.
                    let write = entries.iter().any(|e| e.pg == p && e.write);
                    let want = self.parent.dev_expect(p, write);
                    assert_eq!(f.result, Some(want), "batch entry {f:?} ({p:?})");
                }
            }
            Op::Gc => {
                self.w.gc();
                self.detectors(op);
            }
            Op::OomReap => {
                let rep = self.w.mm.oom_reap();
                self.detectors(op);
                let rep = rep.expect("oom_reap");
                assert!(
                    !rep.contended && rep.skipped == 0,
                    "nothing blocks the reaper here: {rep:?}"
                );
                self.parent.reaped = true;
                for st in &mut self.parent.pages {
                    st.val = Val::Def(0);
                }
            }
            Op::Teardown => {
                // Not `World::teardown`: that marks the world as finished for good, and the
                // engine is used again after this.
                let _s = self.w.violations.scope();
                self.w.engine.teardown();
                assert_eq!(self.w.engine.range_count(), 0, "ranges left after teardown");
                assert_eq!(self.w.dma.live(), 0, "DMA mappings left after teardown");
                drop(_s);
                self.detectors(op);
            }
        }
    }

    /// `mprotect` over `s`: VMAs are changed from the start up to the first hole (`ENOMEM`).
    fn mprotect(&mut self, op: &Op, s: Span, prot: Prot) {
        let r = self.w.mm.mprotect(s.va(), s.len(), prot);
        self.detectors(op);
        let mut want = Ok(());
        for p in s.pages() {
            let st = self.parent.at(p);
            if st.prot.is_none() {
                want = Err(Errno::ENOMEM);
                break;
            }
            st.prot = Some(prot);
        }
        assert_eq!(r, want, "mprotect {s:?} to {prot:?}");
    }

    /// Whether a device op is the second device's, and how a message names its device.
    fn which(op: &Op) -> (bool, &'static str) {
        if matches!(op, Op::Dev2Read(_) | Op::Dev2Write(..)) {
            (true, "second device")
        } else {
            (false, "device")
        }
    }

    fn dev_of(&mut self, second: bool) -> &mut model::Device<F> {
        if second {
            &mut self.dev2
        } else {
            &mut self.dev
        }
    }

    fn quiescent(&self, when: &str) {
        if let Err(e) = self.w.check_quiescent() {
            panic!("not quiescent {when}:\n{e}");
        }
        if let Err(e) = self.v.check_quiescent() {
            panic!("second device not quiescent {when}:\n{e}");
        }
    }

    fn finish(mut self) {
        if let Some(c) = self.child.take() {
            c.exit();
        }
        self.quiescent("at the end");
        self.w.teardown();
        self.v.teardown();
        self.quiescent("after teardown");
        assert_eq!(self.w.dma.live(), 0, "DMA mappings left after teardown");
        assert_eq!(
            self.v.dma.live(),
            0,
            "second device: DMA mappings left after teardown"
        );
    }
}

impl<F: PteFormat> Drop for Sut<F> {
    fn drop(&mut self) {
        // A step that panicked may have left the model mid-operation (an invalidation that
        // never ended, a lock never released): dropping the engine would then run its
        // teardown and wait forever in `interval_remove`. Leak the world instead, so the case
        // fails and shrinking goes on.
        if std::thread::panicking() {
            return;
        }
        // SAFETY: each field is dropped once, here, and never used again.
        unsafe {
            ManuallyDrop::drop(&mut self.child);
            ManuallyDrop::drop(&mut self.dev2);
            ManuallyDrop::drop(&mut self.v);
            ManuallyDrop::drop(&mut self.dev);
            ManuallyDrop::drop(&mut self.w);
        }
    }
}

struct SmTest<Fl>(PhantomData<Fl>);

impl<Fl: Flavor> StateMachineTest for SmTest<Fl> {
    type SystemUnderTest = Sut<Fl::Fmt>;
    type Reference = Ops;

    fn init_test(_: &RefState) -> Self::SystemUnderTest {
        Sut::new(Fl::RANGE_SHIFT, Fl::LOCK_SCOPE, Fl::PEER)
    }

    fn apply(mut sut: Self::SystemUnderTest, _: &RefState, op: Op) -> Self::SystemUnderTest {
        sut.apply(&op);
        sut
    }

    fn check_invariants(sut: &Self::SystemUnderTest, _: &RefState) {
        sut.quiescent("after the step");
    }

    fn teardown(sut: Self::SystemUnderTest, _: RefState) {
        sut.finish();
    }
}

fn config() -> PtConfig {
    let mut c = PtConfig {
        // A real bug found here becomes an explicit test, not a regressions file.
        failure_persistence: None,
        ..PtConfig::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = if cfg!(debug_assertions) { 512 } else { 1024 };
    }
    c
}

prop_state_machine! {
    #![proptest_config(config())]

    /// x86 PTE format, 2 MiB ranges.
    #[test]
    fn x86_2m_ranges(sequential 10..=40 => SmTest<X86Ranges2M>);

    /// x86 PTE format, 2 MiB ranges, the second device a peer of the first (P2P).
    #[test]
    fn x86_2m_ranges_peer(sequential 10..=40 => SmTest<X86Ranges2MPeer>);

    /// GFX9 PTE format, 64 KiB ranges.
    #[test]
    fn gfx9_64k_ranges(sequential 10..=40 => SmTest<Gfx9Ranges64K>);

    /// x86 PTE format, one range over the whole address space, engine mutex (test_hmm-like).
    #[test]
    fn x86_whole_as_range_engine_mutex(sequential 10..=40 => SmTest<X86WholeAsMutex>);

    /// x86 PTE format, 512 MiB ranges, engine rwsem (drm_gpusvm-like).
    #[test]
    fn x86_512m_ranges_engine_rwsem(sequential 10..=40 => SmTest<X86Ranges512MRwsem>);
}
