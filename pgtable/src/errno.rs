//! Kernel error numbers, as the engine reports them to drivers.
//!
//! The values are Linux's (`include/uapi/asm-generic/errno-base.h`), so the kernel platform can
//! hand them to C unchanged (`-(e.0)`), and the model can assert on exactly what a driver sees.

/// A positive Linux errno. Functions return `Err(Errno)`; the kernel glue negates it.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct Errno(pub i32);

impl Errno {
    /// Operation not permitted: a device write to memory the CPU may only read.
    pub const EPERM: Errno = Errno(1);
    /// No such entry.
    pub const ENOENT: Errno = Errno(2);
    /// The bound mm is gone (its process exited).
    pub const ESRCH: Errno = Errno(3);
    /// Interrupted by a fatal signal while waiting for `mmap_lock`.
    pub const EINTR: Errno = Errno(4);
    /// Out of memory.
    pub const ENOMEM: Errno = Errno(12);
    /// Bad address: a hole, PROT_NONE, or VM_IO/VM_PFNMAP memory.
    pub const EFAULT: Errno = Errno(14);
    /// The retry budget ran out while invalidations kept racing the fault.
    pub const EBUSY: Errno = Errno(16);
    /// A request from outside the bound address space.
    pub const EXDEV: Errno = Errno(18);
    /// Misaligned, overflowing or kernel addresses; bad configuration.
    pub const EINVAL: Errno = Errno(22);
    /// A per-context resource limit is reached (ranges in use: `Config::max_ranges`).
    pub const ENOSPC: Errno = Errno(28);
    /// The platform has no such service (a device without device memory).
    pub const EOPNOTSUPP: Errno = Errno(95);

    /// The symbolic name, for logs and test failure messages.
    pub fn name(self) -> &'static str {
        match self.0 {
            1 => "EPERM",
            2 => "ENOENT",
            3 => "ESRCH",
            4 => "EINTR",
            12 => "ENOMEM",
            14 => "EFAULT",
            16 => "EBUSY",
            18 => "EXDEV",
            22 => "EINVAL",
            28 => "ENOSPC",
            95 => "EOPNOTSUPP",
            _ => "E?",
        }
    }
}

impl core::fmt::Display for Errno {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "-{} ({})", self.name(), self.0)
    }
}
