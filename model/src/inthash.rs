//! A multiplicative hasher for the model's integer-keyed sets (table addresses, pfns). They are
//! consulted on every page-table walk step and every DMA mapping, where SipHash's cost would
//! be most of what the benchmark's instructions per fault count (the kernel's own checks are
//! a bitmap or a tree walk); hash flooding is no concern for a test model.

use core::hash::{BuildHasherDefault, Hasher};

/// Hashes one integer by a multiply and a rotate (the product's well-mixed high half becomes
/// the low bits the table indexes with); other input falls back to a byte-wise mix.
#[derive(Default, Clone, Copy)]
pub struct IntHasher(u64);

const K: u64 = 0x9e37_79b9_7f4a_7c15;

impl Hasher for IntHasher {
    fn finish(&self) -> u64 {
        self.0.rotate_right(32)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(K);
        }
    }

    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0 ^ x).wrapping_mul(K);
    }

    fn write_usize(&mut self, x: usize) {
        self.write_u64(x as u64);
    }
}

/// `BuildHasher` of [`IntHasher`].
pub type IntBuild = BuildHasherDefault<IntHasher>;
