//! Host-side plumbing shared by the CPU runtimes (Cranelift and LLVM): raw buffer
//! addresses of one launch, handed to the compiled code, and the default thread count.

use std::num::NonZeroUsize;

use qkc_dsl::host::HostBuf;

/// Raw buffer addresses of one launch, shared by the worker threads.
pub(crate) struct Launch {
    pub(crate) bufs: Vec<*mut u8>,
    pub(crate) lens: Vec<i64>,
    pub(crate) dims: Vec<i64>,
}

// SAFETY: the addresses point into buffers borrowed for the whole launch (inputs
// shared and never written, the output exclusively borrowed); threads write
// disjoint output elements (see the module docs).
unsafe impl Sync for Launch {}

pub(crate) fn input_ptr(b: &HostBuf) -> (*mut u8, usize) {
    let (p, n): (*const u8, usize) = match b {
        HostBuf::I8(v) => (v.as_ptr().cast(), v.len()),
        HostBuf::I32(v) => (v.as_ptr().cast(), v.len() * 4),
        HostBuf::F16(v) => (v.as_ptr().cast(), v.len() * 2),
        HostBuf::BF16(v) => (v.as_ptr().cast(), v.len() * 2),
        HostBuf::F32(v) => (v.as_ptr().cast(), v.len() * 4),
        HostBuf::Packed(v) => (v.as_ptr(), v.len()),
    };
    // Inputs are passed as `*mut` for a uniform ABI; compiled code never writes them.
    (p.cast_mut(), n)
}

pub(crate) fn output_ptr(b: &mut HostBuf) -> (*mut u8, usize) {
    match b {
        HostBuf::I8(v) => (v.as_mut_ptr().cast(), v.len()),
        HostBuf::I32(v) => (v.as_mut_ptr().cast(), v.len() * 4),
        HostBuf::F16(v) => (v.as_mut_ptr().cast(), v.len() * 2),
        HostBuf::BF16(v) => (v.as_mut_ptr().cast(), v.len() * 2),
        HostBuf::F32(v) => (v.as_mut_ptr().cast(), v.len() * 4),
        HostBuf::Packed(v) => (v.as_mut_ptr(), v.len()),
    }
}

pub(crate) fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(NonZeroUsize::get)
        .unwrap_or(1)
}
