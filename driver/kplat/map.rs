// SPDX-License-Identifier: GPL-2.0
//! The range index (`RangeMap`): an rbtree under a mutex.

use super::{KMutex, GFP};
use crate::ffi;
use crate::pgtable::Errno;
use crate::platform::RangeMap;
use kernel::prelude::*;
use kernel::rbtree::{RBTree, RBTreeNode};

/// The range index: an rbtree under a mutex of the index class. Nodes are allocated before
/// the lock is taken, values are dropped after it is released, and no other lock is ever
/// taken under it, so a lookup waits only for another short index operation. The lock is in
/// its own allocation: the map is built by value inside the engine, and a lock never moves.
pub struct KMap<V>(KBox<KMutex<RBTree<u64, V>>>);

impl<V: Clone + Send + Sync + 'static> RangeMap<V> for KMap<V> {
    fn new() -> Result<Self, Errno> {
        Ok(KMap(KMutex::boxed(RBTree::new(), ffi::LC_INDEX, GFP)?))
    }

    fn get(&self, key: u64) -> Option<V> {
        self.0.lock().get(&key).cloned()
    }

    fn insert(&self, key: u64, v: V) -> Result<Result<(), V>, Errno> {
        let node = RBTreeNode::new(key, v, GFP).map_err(|_| Errno::ENOMEM)?;
        let mut t = self.0.lock();
        if let Some(old) = t.get(&key) {
            let old = old.clone();
            drop(t);
            drop(node);
            return Ok(Err(old));
        }
        t.insert(node);
        Ok(Ok(()))
    }

    fn remove_if(&self, key: u64, is_it: impl FnOnce(&V) -> bool) -> Option<V> {
        let mut t = self.0.lock();
        if !is_it(t.get(&key)?) {
            return None;
        }
        let v = t.remove(&key);
        drop(t);
        v
    }

    fn next_from(&self, key: u64) -> Option<(u64, V)> {
        let mut t = self.0.lock();
        let c = t.cursor_lower_bound(&key)?;
        let (k, v) = c.current();
        Some((*k, v.clone()))
    }
}
