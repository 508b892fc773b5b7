//! The simulated device's TLB (and page-walk cache): `svm::platform::DeviceTlb`. The device
//! ([`crate::device`]) holds its lock across each access's walk and memory access, so a flush
//! (which takes the same lock) waits for in-flight accesses, as a hardware invalidation waits
//! for outstanding translations.

use crate::lockdep;
use crate::mm::state::{huge_down, page_down};
use crate::sync::Mutex;
use pgtable::Perm;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A cached translation: the DMA address of the leaf's first byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) base: u64,
    pub(crate) perm: Perm,
    pub(crate) level: u8,
}

pub(crate) struct TlbState {
    small: BTreeMap<u64, Entry>,
    huge: BTreeMap<u64, Entry>,
    cap: usize,
    rng: u64,
}

impl TlbState {
    pub(crate) fn lookup(&self, va: u64) -> Option<Entry> {
        self.small
            .get(&page_down(va))
            .or_else(|| self.huge.get(&huge_down(va)))
            .copied()
    }

    fn evict_one(&mut self) {
        // xorshift: a deterministic "arbitrary" victim.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let map = if self.huge.is_empty() || (self.rng & 3 != 0 && !self.small.is_empty()) {
            &mut self.small
        } else {
            &mut self.huge
        };
        let k = self.rng & 0x0000_7fff_ffff_f000;
        let victim = map
            .range(k..)
            .next()
            .or_else(|| map.iter().next())
            .map(|(k, _)| *k);
        if let Some(v) = victim {
            map.remove(&v);
        }
    }

    pub(crate) fn insert(&mut self, va: u64, e: Entry) {
        if self.small.len() + self.huge.len() >= self.cap {
            self.evict_one();
        }
        if e.level == 1 {
            self.huge.insert(huge_down(va), e);
        } else {
            self.small.insert(page_down(va), e);
        }
    }

    pub(crate) fn remove(&mut self, va: u64, level: u8) {
        if level == 1 {
            self.huge.remove(&huge_down(va));
        } else {
            self.small.remove(&page_down(va));
        }
    }
}

pub(crate) struct TlbInner {
    pub(crate) st: Mutex<TlbState>,
    may_sleep: bool,
    flushes: AtomicU64,
}

/// The device TLB (and page-walk cache): `svm::platform::DeviceTlb`.
#[derive(Clone)]
pub struct Tlb(pub(crate) Arc<TlbInner>);

impl Tlb {
    /// A TLB of `entries` entries; `flush_may_sleep` is what `flush_may_sleep()` reports.
    pub fn new(entries: usize, flush_may_sleep: bool) -> Self {
        Tlb(Arc::new(TlbInner {
            st: Mutex::new(TlbState {
                small: BTreeMap::new(),
                huge: BTreeMap::new(),
                cap: entries.max(1),
                rng: 0x9e37_79b9_7f4a_7c15,
            }),
            may_sleep: flush_may_sleep,
            flushes: AtomicU64::new(0),
        }))
    }

    /// Cached entries now.
    pub fn len(&self) -> usize {
        let s = self.0.st.lock();
        s.small.len() + s.huge.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Flushes issued.
    pub fn flushes(&self) -> u64 {
        self.0.flushes.load(Ordering::Relaxed)
    }
}

/// Drops every entry whose key lies in `[from, to)`.
fn remove_range<V>(map: &mut std::collections::BTreeMap<u64, V>, from: u64, to: u64) {
    let keys: Vec<u64> = map.range(from..to).map(|(k, _)| *k).collect();
    for k in keys {
        map.remove(&k);
    }
}

impl svm::platform::DeviceTlb for Tlb {
    fn flush(&self, start: u64, end: u64) {
        lockdep::check_flush(self.0.may_sleep);
        self.0.flushes.fetch_add(1, Ordering::Relaxed);
        if start >= end {
            return;
        }
        let mut s = self.0.st.lock();
        remove_range(&mut s.small, page_down(start), end);
        remove_range(&mut s.huge, huge_down(start), end);
    }

    fn flush_may_sleep(&self) -> bool {
        self.0.may_sleep
    }
}
