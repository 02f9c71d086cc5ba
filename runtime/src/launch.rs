//! Host-side plumbing shared by the CPU runtimes (Cranelift and LLVM): raw buffer
//! addresses of one launch, handed to the compiled code, the default thread count, and
//! the worker pool (one thread per CPU, each pinned to its own).

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

/// A pool of `n` worker threads named `{name}-{i}`. On Linux, worker `i` is pinned to
/// the `i`-th CPU this process may run on (round robin): unpinned, both workers of a
/// 2-CPU machine were seen to share one CPU for a whole process, halving a
/// bandwidth-bound GEMV in about half of the benchmark runs. Pinning is a hint: if the
/// affinity calls fail, the workers run unpinned.
pub fn worker_pool(n: usize, name: &'static str) -> Result<rayon::ThreadPool, String> {
    let cpus = allowed_cpus();
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(move |i| format!("{name}-{i}"))
        .start_handler(move |i| {
            if !cpus.is_empty() {
                pin_current_thread(cpus[i % cpus.len()]);
            }
        })
        .build()
        .map_err(|e| e.to_string())
}

/// The CPUs in this process's affinity mask (empty where unknown).
#[cfg(target_os = "linux")]
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: `cpu_set_t` is plain data (all-zero is the empty set), and
    // `sched_getaffinity` writes at most `size_of::<cpu_set_t>()` bytes into it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

#[cfg(not(target_os = "linux"))]
fn allowed_cpus() -> Vec<usize> {
    Vec::new()
}

#[cfg(target_os = "linux")]
fn pin_current_thread(cpu: usize) {
    // SAFETY: as above; `CPU_SET` only writes inside the set for `cpu < CPU_SETSIZE`,
    // which `allowed_cpus` guarantees.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        // A failure leaves the thread unpinned, which is correct, only slower.
        let _ = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

#[cfg(not(target_os = "linux"))]
fn pin_current_thread(_cpu: usize) {}
