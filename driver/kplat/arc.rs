// SPDX-License-Identifier: GPL-2.0
//! `SharedPtr` over `kernel::sync::Arc`.

use super::GFP;
use crate::pgtable::Errno;
use crate::platform::SharedPtr;
use core::ops::Deref;
use kernel::prelude::*;

/// `kernel::sync::Arc`.
pub struct KArc<T>(kernel::sync::Arc<T>);

impl<T> Clone for KArc<T> {
    fn clone(&self) -> Self {
        KArc(self.0.clone())
    }
}

impl<T> Deref for KArc<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: Send + Sync> SharedPtr<T> for KArc<T> {
    fn new(v: T) -> Result<Self, Errno> {
        kernel::sync::Arc::new(v, GFP)
            .map(KArc)
            .map_err(|_| Errno::ENOMEM)
    }

    fn new_init(init: impl FnOnce(*mut T) -> Result<(), Errno>) -> Result<Self, Errno> {
        let mut u = kernel::sync::UniqueArc::<T>::new_uninit(GFP).map_err(|_| Errno::ENOMEM)?;
        init(u.as_mut_ptr())?;
        // SAFETY: `init` succeeded, so the allocation holds a valid `T`; an `Arc` never moves
        // its value.
        Ok(KArc(unsafe { u.assume_init() }.into()))
    }

    fn ptr_eq(a: &Self, b: &Self) -> bool {
        core::ptr::eq(&*a.0 as *const T, &*b.0 as *const T)
    }
}
