//! The porting guide's worked example (`Documentation/porting.rst`): a third device PTE format,
//! written outside the engine, and the engine mirroring through it on the model. If this file
//! builds and passes, the guide's code does.
//!
//! The format is an AArch64 VMSAv8-64 stage-1 descriptor with a 4 KiB granule (what an Arm
//! SMMUv3 walks for a shared-virtual-memory context descriptor): bit 0 valid; bit 1 table
//! (levels 1-3) or page (level 0) when set, block (a 2 MiB leaf at level 1) when clear;
//! AttrIndx in bits 2-4, SH in 8-9, AP[2] (bit 7) read-only, AF (bit 10) accessed, output
//! address in bits 12-47. Bit 55 is one of the descriptor's software bits: the engine needs a
//! zapped leaf (valid clear) to keep its address, and the hardware ignores every other bit of
//! an invalid descriptor, so the mark costs nothing.

use model::{MapFlags, Prot, World};
use pgtable::{Entry, Perm, PteFormat};
use svm::{Access, Scratch};

const PAGE: u64 = 4096;
const M2: u64 = 2 << 20;

/// An Arm LPAE (VMSAv8-64, 4 KiB granule) stage-1 descriptor.
pub struct LpaeFormat;

impl LpaeFormat {
    const VALID: u64 = 1 << 0;
    /// Table descriptor (levels 1-3) or page descriptor (level 0); clear: block.
    const TABLE_OR_PAGE: u64 = 1 << 1;
    /// AttrIndx 0: the MAIR slot the driver programs with normal write-back memory.
    const ATTR_NORMAL: u64 = 0 << 2;
    /// SH = inner shareable: coherent with the CPUs, as system memory reached through DMA is.
    const SH_INNER: u64 = 0b11 << 8;
    /// AP[2]: read-only.
    const AP_RO: u64 = 1 << 7;
    /// AF: set up front, so the device never takes an access-flag fault.
    const AF: u64 = 1 << 10;
    /// Software bit: "this was a leaf", kept when the valid bit goes.
    const SW_LEAF: u64 = 1 << 55;
    /// Software bit: the leaf maps device memory (AttrIndx would pick its memory type too).
    const SW_LOCAL: u64 = 1 << 56;
    /// Software bit: the device may use atomics on the page.
    const SW_ATOMIC: u64 = 1 << 57;
    const ADDR: u64 = 0x0000_ffff_ffff_f000;
}

impl PteFormat for LpaeFormat {
    const NAME: &'static str = "arm-lpae";
    const HUGE: bool = true;

    fn table(pa: u64) -> u64 {
        (pa & Self::ADDR) | Self::VALID | Self::TABLE_OR_PAGE
    }

    fn leaf(addr: u64, perm: Perm, level: u8) -> u64 {
        let mut pte = (addr & Self::ADDR)
            | Self::VALID
            | Self::ATTR_NORMAL
            | Self::SH_INNER
            | Self::AF
            | Self::SW_LEAF;
        if level == 0 {
            pte |= Self::TABLE_OR_PAGE;
        }
        if !perm.write {
            pte |= Self::AP_RO;
        }
        if perm.local {
            pte |= Self::SW_LOCAL;
        }
        if perm.atomic {
            pte |= Self::SW_ATOMIC;
        }
        pte
    }

    fn zap(pte: u64) -> u64 {
        pte & !Self::VALID
    }

    fn decode(pte: u64, level: u8) -> Entry {
        if pte == 0 {
            return Entry::None;
        }
        let addr = pte & Self::ADDR;
        let perm = Perm {
            write: pte & Self::AP_RO == 0,
            local: pte & Self::SW_LOCAL != 0,
            atomic: pte & Self::SW_ATOMIC != 0,
        };
        let valid = pte & Self::VALID != 0;
        let leaf = level == 0 || pte & Self::TABLE_OR_PAGE == 0;
        match (valid, leaf) {
            (true, true) => Entry::Leaf { addr, perm },
            (true, false) => Entry::Table(addr),
            (false, _) if pte & Self::SW_LEAF != 0 => Entry::Zapped { addr, perm },
            (false, _) => Entry::None,
        }
    }
}

/// Step 1 of the guide: the format round-trips, and its bits are where the architecture
/// puts them.
#[test]
fn lpae_format_round_trips() {
    for (addr, level) in [
        (0x1234_5000u64, 0u8),
        (0x4000_0000, 1),
        (0xfff_ffe0_0000, 1),
    ] {
        for perm in [Perm::RO, Perm::RW, Perm::RO.local(), Perm::RW.local()] {
            let pte = LpaeFormat::leaf(addr, perm, level);
            assert_eq!(LpaeFormat::decode(pte, level), Entry::Leaf { addr, perm });
            assert_eq!(
                LpaeFormat::decode(LpaeFormat::zap(pte), level),
                Entry::Zapped { addr, perm }
            );
        }
    }
    for level in 1..4 {
        let t = LpaeFormat::table(0x7_6543_2000);
        assert_eq!(LpaeFormat::decode(t, level), Entry::Table(0x7_6543_2000));
    }
    // A page (level 0) is 0b11 in bits 1:0, a block (level 1) 0b01; AF always, AP[2] for RO.
    assert_eq!(LpaeFormat::leaf(0x1000, Perm::RW, 0) & 0b11, 0b11);
    assert_eq!(LpaeFormat::leaf(0x20_0000, Perm::RW, 1) & 0b11, 0b01);
    assert_ne!(LpaeFormat::leaf(0x1000, Perm::RO, 0) & (1 << 7), 0);
    assert_ne!(LpaeFormat::leaf(0x1000, Perm::RW, 0) & (1 << 10), 0);
    assert_eq!(LpaeFormat::decode(0, 0), Entry::None);
}

/// Step 2: the engine mirrors through it, on the model, every check of the model's device
/// on (stale translations, rights, DMA use after unmap): device writes and reads, 2 MiB block
/// leaves for THPs, migration, fork's write protection, munmap, GC and teardown.
#[test]
fn engine_mirrors_through_the_lpae_format() {
    let w = World::<LpaeFormat>::builder().build().unwrap();
    let a = w.mm.mmap(4 * M2, Prot::RW, MapFlags::THP).unwrap();
    let mut d = w.device();
    for i in 0..8 {
        d.write(a + i * M2 / 2, 100 + i).unwrap();
    }
    assert!(w.engine.stats().huge_mapped > 0, "2 MiB block descriptors");
    w.mm.split_thp(a & !(M2 - 1)).unwrap();
    w.mm.migrate(a + PAGE).unwrap();
    for i in 0..8 {
        assert_eq!(d.read(a + i * M2 / 2).unwrap(), 100 + i);
    }
    // fork write-protects the parent: the device loses write access until it faults again.
    let child = w.mm.fork().unwrap();
    d.write(a, 7).unwrap();
    assert_eq!(child.cpu_read(a).unwrap(), 100, "the child keeps its copy");
    assert_eq!(w.mm.cpu_read(a).unwrap(), 7);
    child.exit();
    let mut s = Scratch::new();
    w.engine
        .prefetch(&mut s, a, M2, Access::Read, &mut 0)
        .unwrap();
    w.mm.munmap(a, 4 * M2).unwrap();
    assert!(d.read(a).is_err());
    w.gc();
    w.check_quiescent().unwrap();
    w.teardown();
    w.check_quiescent().unwrap();
}

/// The guide quotes this file's `impl PteFormat for LpaeFormat`: the quote must stay the code
/// (compared without comments, whitespace and trailing commas), so the guide cannot drift
/// from what is tested.
#[test]
fn the_guide_quotes_this_code() {
    let norm = |s: &str| -> String {
        s.lines()
            .map(|l| l.split("//").next().unwrap_or(""))
            .collect::<String>()
            .split_whitespace()
            .collect::<String>()
            // rustfmt's trailing commas
            .replace(",}", "}")
            .replace(",)", ")")
    };
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let guide = std::fs::read_to_string(format!("{root}/Documentation/porting.rst")).unwrap();
    let this = std::fs::read_to_string(format!("{root}/tests/tests/porting.rs")).unwrap();
    let start = guide
        .find("    impl PteFormat for LpaeFormat {")
        .expect("the guide quotes the impl");
    // The quote is the indented literal block: up to the first line back at the margin.
    let quote: String = guide[start..]
        .lines()
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .collect::<Vec<_>>()
        .join("\n");
    let q = norm(&quote);
    assert!(q.len() > 200, "quote too short: {q}");
    assert!(
        norm(&this).contains(&q),
        "Documentation/porting.rst's quote differs from the code"
    );
}
