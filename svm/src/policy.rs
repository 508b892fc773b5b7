//! Placement policy per VA span: where a device wants pages (its own memory, a peer's, or
//! system memory) and how its atomics work. The engine only keeps the map; a driver consults it on a
//! device fault (migrate a page to device memory first, hand a page over for an atomic; see
//! `Documentation/kernel.rst`, "Placement policy").
//!
//! The map is bounded (a process cannot make the kernel hold more than `N` spans per
//! context), core only, and allocation free: the driver keeps it under a lock of its own.

use super::pgtable::Errno;

/// Where a device wants the pages of a span.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Location {
    /// System memory: pages stay where the CPU put them (the default).
    System,
    /// The device's own memory: a device fault moves the page there first.
    Device,
    /// A peer's memory (the driver's number for the peer): a device fault moves the page
    /// there first, and the device reaches it over the interconnect (`Engine::place_for_fault_in`).
    Peer(u32),
}

/// How a device's atomic operations on a span work.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AtomicMode {
    /// Over the bus, as any write: the CPU keeps its access (the default).
    Global,
    /// Device-exclusive: an atomic hands the page over to the device first
    /// (`Engine::fault_atomic`), and the CPU takes it back at its next access.
    Device,
}

/// The attributes of a span.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Attr {
    pub location: Location,
    pub atomic: AtomicMode,
}

impl Attr {
    /// What a span nobody advised has.
    pub const DEFAULT: Attr = Attr {
        location: Location::System,
        atomic: AtomicMode::Global,
    };
}

#[derive(Clone, Copy)]
struct Span {
    start: u64,
    end: u64,
    attr: Attr,
}

const EMPTY: Span = Span {
    start: 0,
    end: 0,
    attr: Attr::DEFAULT,
};

/// Disjoint spans with attributes other than [`Attr::DEFAULT`], at most `N`.
///
/// # Invariants
/// `spans[..n]` are sorted, non-empty, disjoint, and never carry `Attr::DEFAULT`; two that
/// touch have different attributes (they are merged otherwise).
pub struct Policy<const N: usize> {
    spans: [Span; N],
    n: usize,
}

impl<const N: usize> Default for Policy<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Policy<N> {
    /// No span advised.
    pub const fn new() -> Self {
        Policy {
            spans: [EMPTY; N],
            n: 0,
        }
    }

    /// How many spans the map holds.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether no span is advised.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The attributes of the page holding `va`.
    pub fn get(&self, va: u64) -> Attr {
        self.span_at(va).map_or(Attr::DEFAULT, |(_, _, a)| a)
    }

    /// The advised span holding `va`, `(start, end, attr)`, if any.
    pub fn span_at(&self, va: u64) -> Option<(u64, u64, Attr)> {
        let s = &self.spans[..self.n];
        let i = s.partition_point(|x| x.end <= va);
        s.get(i)
            .filter(|x| x.start <= va)
            .map(|x| (x.start, x.end, x.attr))
    }

    /// Gives `[start, end)` the attributes `attr` (`Attr::DEFAULT` forgets the span).
    /// `EINVAL` for an empty or reversed span; `ENOSPC` when the map would need more than `N`
    /// spans (nothing changes then).
    pub fn set(&mut self, start: u64, end: u64, attr: Attr) -> Result<(), Errno> {
        if start >= end {
            return Err(Errno::EINVAL);
        }
        // The spans `start..end` overlaps: `i..j`.
        let i = self.spans[..self.n].partition_point(|x| x.end <= start);
        let j = self.spans[..self.n].partition_point(|x| x.start < end);
        let mut new = [EMPTY; 3];
        let mut k = 0;
        if i < j && self.spans[i].start < start {
            new[k] = Span {
                start: self.spans[i].start,
                end: start,
                attr: self.spans[i].attr,
            };
            k += 1;
        }
        if attr != Attr::DEFAULT {
            new[k] = Span { start, end, attr };
            k += 1;
        }
        if i < j && self.spans[j - 1].end > end {
            new[k] = Span {
                start: end,
                end: self.spans[j - 1].end,
                attr: self.spans[j - 1].attr,
            };
            k += 1;
        }
        let n = self.n - (j - i) + k;
        if n > N {
            // Merging could still fit it, but a caller this close to the bound gets a clear
            // answer rather than one that depends on its neighbours.
            return Err(Errno::ENOSPC);
        }
        // Move the tail `j..n` to `i + k..`, then write the new pieces.
        self.spans.copy_within(j..self.n, i + k);
        self.spans[i..i + k].copy_from_slice(&new[..k]);
        self.n = n;
        self.merge();
        Ok(())
    }

    /// Merges touching spans with equal attributes (restores the invariant).
    fn merge(&mut self) {
        let mut w = 0;
        for r in 0..self.n {
            let s = self.spans[r];
            if w > 0 && self.spans[w - 1].end == s.start && self.spans[w - 1].attr == s.attr {
                self.spans[w - 1].end = s.end;
            } else {
                self.spans[w] = s;
                w += 1;
            }
        }
        self.n = w;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV: Attr = Attr {
        location: Location::Device,
        atomic: AtomicMode::Global,
    };
    const ATOM: Attr = Attr {
        location: Location::System,
        atomic: AtomicMode::Device,
    };

    /// A page-by-page oracle over a small space.
    fn check<const N: usize>(p: &Policy<N>, oracle: &[Attr]) {
        for (pg, a) in oracle.iter().enumerate() {
            assert_eq!(p.get(pg as u64 * 4096 + 5), *a, "page {pg}");
        }
        let s = &p.spans[..p.n];
        for w in s.windows(2) {
            assert!(w[0].end <= w[1].start);
            assert!(
                !(w[0].end == w[1].start && w[0].attr == w[1].attr),
                "not merged"
            );
        }
        assert!(s.iter().all(|x| x.start < x.end && x.attr != Attr::DEFAULT));
    }

    #[test]
    fn split_merge_and_forget() {
        let mut p = Policy::<8>::new();
        let mut o = [Attr::DEFAULT; 32];
        let mut set = |p: &mut Policy<8>, a: u64, b: u64, at: Attr| {
            p.set(a * 4096, b * 4096, at).unwrap();
            o[a as usize..b as usize].fill(at);
            check(p, &o);
        };
        set(&mut p, 4, 20, DEV);
        set(&mut p, 8, 12, ATOM);
        assert_eq!(p.len(), 3);
        set(&mut p, 8, 12, DEV);
        assert_eq!(p.len(), 1, "merged back");
        set(&mut p, 0, 6, ATOM);
        set(&mut p, 10, 30, Attr::DEFAULT);
        assert_eq!(p.span_at(7 * 4096), Some((6 * 4096, 10 * 4096, DEV)));
        set(&mut p, 0, 32, Attr::DEFAULT);
        assert!(p.is_empty());
        assert_eq!(p.set(5, 5, DEV), Err(Errno::EINVAL));
    }

    #[test]
    fn bounded() {
        let mut p = Policy::<4>::new();
        for i in 0..4u64 {
            p.set(i * 2 * 4096, (i * 2 + 1) * 4096, DEV).unwrap();
        }
        // A fifth span: refused, nothing changed.
        assert_eq!(p.set(100 * 4096, 101 * 4096, DEV), Err(Errno::ENOSPC));
        assert_eq!(p.len(), 4);
        // Replacing one, or forgetting one, fits.
        assert_eq!(p.set(4096 * 2, 4096 * 3, ATOM), Ok(()));
        assert_eq!(p.set(0, 4096, Attr::DEFAULT), Ok(()));
        assert_eq!(p.len(), 3);
    }

    /// Random operations against the page oracle (a deterministic generator: no deps).
    #[test]
    fn random_against_oracle() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        for _ in 0..200 {
            let mut p = Policy::<6>::new();
            let mut o = [Attr::DEFAULT; 40];
            for _ in 0..40 {
                let a = rnd(40);
                let b = a + 1 + rnd(40 - a);
                let at = [Attr::DEFAULT, DEV, ATOM][rnd(3) as usize];
                match p.set(a * 4096, b * 4096, at) {
                    Ok(()) => o[a as usize..b as usize].fill(at),
                    Err(e) => assert_eq!(e, Errno::ENOSPC),
                }
                check(&p, &o);
            }
        }
    }
}
