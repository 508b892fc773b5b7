//! PTE formats: how a device encodes table pointers and leaves.
//!
//! The walk logic never looks at bits; it asks the format. Two real layouts are provided so the
//! abstraction is honest: an x86-64-like one (P/RW/PS bits, as `arch/x86` page tables and many
//! IOMMUs) and an AMD GFX9-like one (V/S/R/W bits, huge leaves flagged in the PDE with
//! `PDE_PTE`, as `amdgpu_vm` writes them).
//!
//! A *zapped* leaf keeps its address and write bit but loses its valid bit: the device no longer
//! walks it, while the engine can still read back the DMA address it must unmap once the TLB
//! flush has completed (see `table::PageTable::zap` and `table::PageTable::reap`).

/// Access rights of a device mapping.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Perm {
    /// The device may write.
    pub write: bool,
    /// The address is in the device's own memory (a device-private page), reached without
    /// DMA; otherwise it is a DMA address of system memory.
    pub local: bool,
    /// The device may use atomic operations on the page: the CPU has handed it over
    /// (`make_device_exclusive_range()`) and cannot access it until it takes it back. Only
    /// with `write`, and never `local` (a device's own page needs no handing over).
    pub atomic: bool,
}

impl Perm {
    /// Read-only, system memory.
    pub const RO: Perm = Perm {
        write: false,
        local: false,
        atomic: false,
    };
    /// Read and write, system memory.
    pub const RW: Perm = Perm {
        write: true,
        local: false,
        atomic: false,
    };
    /// Read, write and atomics, system memory the CPU handed over.
    pub const ATOMIC: Perm = Perm {
        write: true,
        local: false,
        atomic: true,
    };

    /// `self` in device memory.
    pub const fn local(self) -> Perm {
        Perm {
            write: self.write,
            local: true,
            atomic: false,
        }
    }
}

/// What a raw entry means at a given level.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Entry {
    /// Nothing here (all bits zero).
    None,
    /// A pointer to the next-level table at this physical address.
    Table(u64),
    /// A valid leaf: `addr` is the DMA address of a 4 KiB page (level 0) or a 2 MiB block
    /// (level 1).
    Leaf { addr: u64, perm: Perm },
    /// A zapped leaf: invisible to the device, kept until its DMA mapping is released.
    Zapped { addr: u64, perm: Perm },
}

/// A device page-table entry format.
///
/// Level 0 entries map 4 KiB pages; level 1 entries point to level-0 tables or map 2 MiB;
/// levels 2 and 3 only point to tables.
pub trait PteFormat: Send + Sync + 'static {
    /// Human-readable name (benchmarks and test output).
    const NAME: &'static str;
    /// Whether the format can map 2 MiB at level 1.
    const HUGE: bool;

    /// Encodes a pointer to a table at physical address `pa` (4 KiB aligned).
    fn table(pa: u64) -> u64;
    /// Encodes a valid leaf at `level` (0, or 1 for a 2 MiB leaf).
    fn leaf(addr: u64, perm: Perm, level: u8) -> u64;
    /// Returns `pte` with the hardware-valid bit(s) cleared and everything else kept.
    fn zap(pte: u64) -> u64;
    /// Decodes a raw entry found at `level`.
    fn decode(pte: u64, level: u8) -> Entry;
}

const ADDR_MASK_52: u64 = 0x000f_ffff_ffff_f000;

/// An x86-64-like layout: bit 0 present, bit 1 writable, bit 7 page size (huge leaf), bits
/// 12..52 the address. Table pointers are `P | RW` (rights are decided at the leaf).
pub struct X86Format;

impl X86Format {
    const P: u64 = 1 << 0;
    const RW: u64 = 1 << 1;
    const PS: u64 = 1 << 7;
    /// Software bit 9 ("available"): marks a leaf, so a zapped leaf (P clear) still decodes.
    const SW_LEAF: u64 = 1 << 9;
    /// Software bit 10 ("available"): the leaf maps device memory.
    const LOCAL: u64 = 1 << 10;
    /// Software bit 11 ("available"): the device may use atomics on the page.
    const ATOMIC: u64 = 1 << 11;
}

impl PteFormat for X86Format {
    const NAME: &'static str = "x86-64";
    const HUGE: bool = true;

    fn table(pa: u64) -> u64 {
        (pa & ADDR_MASK_52) | Self::P | Self::RW
    }

    fn leaf(addr: u64, perm: Perm, level: u8) -> u64 {
        let mut pte = (addr & ADDR_MASK_52) | Self::P | Self::SW_LEAF;
        if perm.write {
            pte |= Self::RW;
        }
        if perm.local {
            pte |= Self::LOCAL;
        }
        if perm.atomic {
            pte |= Self::ATOMIC;
        }
        if level == 1 {
            pte |= Self::PS;
        }
        pte
    }

    fn zap(pte: u64) -> u64 {
        pte & !Self::P
    }

    fn decode(pte: u64, level: u8) -> Entry {
        if pte == 0 {
            return Entry::None;
        }
        let addr = pte & ADDR_MASK_52;
        let perm = Perm {
            write: pte & Self::RW != 0,
            local: pte & Self::LOCAL != 0,
            atomic: pte & Self::ATOMIC != 0,
        };
        let leaf = level == 0 || pte & Self::PS != 0;
        match (pte & Self::P != 0, leaf) {
            (true, true) => Entry::Leaf { addr, perm },
            (true, false) => Entry::Table(addr),
            (false, _) if pte & Self::SW_LEAF != 0 => Entry::Zapped { addr, perm },
            (false, _) => Entry::None,
        }
    }
}

/// An AMD GFX9-like layout: bit 0 valid, bit 1 system (memory is system RAM, reached through
/// DMA), bit 2 snooped, bit 5 readable, bit 6 writeable, bits 12..48 the address, and bit 54
/// (`PDE_PTE`) on a level-1 entry that is itself a 2 MiB leaf.
pub struct Gfx9Format;

impl Gfx9Format {
    const V: u64 = 1 << 0;
    const S: u64 = 1 << 1;
    const SNOOP: u64 = 1 << 2;
    const R: u64 = 1 << 5;
    const W: u64 = 1 << 6;
    const PDE_PTE: u64 = 1 << 54;
    /// Bit 55, free in the layout: the device may use atomics on the page (what the
    /// hardware's own system-scope atomics setting stands for here).
    const ATOMIC: u64 = 1 << 55;
    const ADDR: u64 = 0x0000_ffff_ffff_f000;
}

impl PteFormat for Gfx9Format {
    const NAME: &'static str = "gfx9";
    const HUGE: bool = true;

    fn table(pa: u64) -> u64 {
        (pa & Self::ADDR) | Self::V
    }

    fn leaf(addr: u64, perm: Perm, level: u8) -> u64 {
        // Device memory (VRAM) is neither system nor snooped.
        let mut pte = (addr & Self::ADDR) | Self::V | Self::R;
        if !perm.local {
            pte |= Self::S | Self::SNOOP;
        }
        if perm.write {
            pte |= Self::W;
        }
        if perm.atomic {
            pte |= Self::ATOMIC;
        }
        if level == 1 {
            pte |= Self::PDE_PTE;
        }
        pte
    }

    fn zap(pte: u64) -> u64 {
        pte & !Self::V
    }

    fn decode(pte: u64, level: u8) -> Entry {
        if pte == 0 {
            return Entry::None;
        }
        let addr = pte & Self::ADDR;
        let perm = Perm {
            write: pte & Self::W != 0,
            local: pte & Self::S == 0,
            atomic: pte & Self::ATOMIC != 0,
        };
        // A leaf always carries R (S for system memory); a table pointer carries only V.
        let leaf = (level == 0 || pte & Self::PDE_PTE != 0) && pte & Self::R != 0;
        match (pte & Self::V != 0, leaf) {
            (true, true) => Entry::Leaf { addr, perm },
            (true, false) => Entry::Table(addr),
            (false, true) => Entry::Zapped { addr, perm },
            (false, false) => Entry::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip<F: PteFormat>() {
        for &(addr, level) in &[
            (0x1234_5000u64, 0u8),
            (0x4000_0000, 1),
            (0xfff_ffe0_0000, 1),
        ] {
            for perm in [
                Perm::RO,
                Perm::RW,
                Perm::RO.local(),
                Perm::RW.local(),
                Perm::ATOMIC,
            ] {
                let pte = F::leaf(addr, perm, level);
                assert_eq!(
                    F::decode(pte, level),
                    Entry::Leaf { addr, perm },
                    "{}",
                    F::NAME
                );
                assert_eq!(F::decode(F::zap(pte), level), Entry::Zapped { addr, perm });
            }
        }
        for level in 1..4 {
            let t = F::table(0x7_6543_2000);
            assert_eq!(F::decode(t, level), Entry::Table(0x7_6543_2000));
        }
        assert_eq!(F::decode(0, 0), Entry::None);
        // A level-0 leaf must not look like a table, and a level-1 4K-style leaf is not huge.
        assert!(matches!(
            F::decode(F::leaf(0x1000, Perm::RW, 0), 0),
            Entry::Leaf { .. }
        ));
    }

    #[test]
    fn x86_roundtrip() {
        roundtrip::<X86Format>();
        // Layout spot checks: the bits really are where the format says.
        assert_eq!(X86Format::leaf(0x1000, Perm::RW, 0), 0x1000 | 0b11 | 1 << 9);
        assert_eq!(
            X86Format::leaf(0x20_0000, Perm::RO, 1),
            0x20_0000 | 1 | 1 << 7 | 1 << 9
        );
    }

    #[test]
    fn gfx9_roundtrip() {
        roundtrip::<Gfx9Format>();
        assert_eq!(
            Gfx9Format::leaf(0x1000, Perm::RO, 0),
            0x1000 | 0b111 | 1 << 5
        );
        assert_ne!(Gfx9Format::leaf(0x20_0000, Perm::RW, 1) & (1 << 54), 0);
    }
}
