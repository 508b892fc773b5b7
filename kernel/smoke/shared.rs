// SPDX-License-Identifier: GPL-2.0
//! Stand-in for the shared `no_std` engine sources (svm/, pgtable/): pulled
//! into the kernel crate with `#[path]`, so it may use `core` only, must name
//! its siblings through `super::`, and carries no crate-level attributes.

/// Number of pages of `page_size` bytes (a power of two) needed to cover
/// `bytes`.  A shift, not `div_ceil`: a division by a runtime value emits a
/// call to `panic_const_div_by_zero`, which 6.12's objtool doesn't know is
/// noreturn ("falls through to next function" warning).
pub(crate) const fn pages_for(bytes: usize, page_size: usize) -> usize {
    (bytes + page_size - 1) >> page_size.trailing_zeros()
}

/// Uses an item of the including crate root via `super::`, as shared code
/// must (the crate root differs between the kernel module and the model).
pub(crate) fn default_range_pages(page_size: usize) -> usize {
    pages_for(super::RANGE_SIZE, page_size)
}
