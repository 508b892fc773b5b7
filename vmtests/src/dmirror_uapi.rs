//! test_hmm's dmirror uAPI (`lib/test_hmm_uapi.h`), which `/dev/hmm_dmirrorN` speaks whether
//! `test_hmm.ko` or `svm_accel dmirror=1` registered it. Shared by the tests (`main.rs`) and
//! dmbench (`bin/dmbench.rs`).

/// `struct hmm_dmirror_cmd`.
#[repr(C)]
#[derive(Default, Clone, Copy)]
pub struct DmCmd {
    pub addr: u64,
    pub ptr: u64,
    pub npages: u64,
    pub cpages: u64,
    pub faults: u64,
}

/// `_IOWR('H', nr, struct hmm_dmirror_cmd)`.
pub const fn dm_iowr(nr: u64) -> u64 {
    (3 << 30) | ((std::mem::size_of::<DmCmd>() as u64) << 16) | ((b'H' as u64) << 8) | nr
}

/// `HMM_DMIRROR_READ`.
pub const HMM_DMIRROR_READ: u64 = dm_iowr(0);
