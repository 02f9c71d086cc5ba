//! CPU execution through LLVM (cargo feature `llvm`): a kernel lowered with the CPU
//! schedule, optimized at `O3` for the host CPU and JIT-compiled by LLVM, validated
//! and run on host buffers across threads.
//!
//! ```no_run
//! # fn demo(k: &qkc_dsl::ir::Kernel, dims: &qkc_dsl::ir::Dims, inputs: &[qkc_dsl::host::HostBuf])
//! # -> Result<(), qkc_runtime::llvm_cpu::LlvmCpuError> {
//! use qkc_runtime::llvm_cpu::{LlvmCpuKernel, LlvmCpuOptions};
//! let kernel = LlvmCpuKernel::new(k, &LlvmCpuOptions::for_kernel(k))?;
//! let y = kernel.run(dims, inputs)?; // checks dims and every buffer first
//! # Ok(()) }
//! ```
//!
//! Safety rests on the same checks as the Cranelift runtime ([`crate::cpu`]): the
//! dimensions and every input buffer's type and length
//! ([`qkc_dsl::host::check_inputs`]) and the output's ([`qkc_dsl::host::check_buffer`])
//! are checked before native code runs; the lowering only accesses memory inside
//! buffers of those lengths (tested against the bounds-checking loop-IR interpreter
//! and the bounds-checked LLVM build, [`JitOptions::bounds_checks`]). Input buffers
//! are `noalias readonly` parameters and never written. Threads run disjoint ranges
//! of the parallel loop over output columns, so they write disjoint output elements.
//!
//! When the kernel's CPU schedule decodes weights for several activation rows at
//! once (`tile_m > 1`), a second function with `tile_m = 1` is compiled for launches
//! with fewer rows than the tile (GEMV), which would otherwise compute the padding
//! rows of the tile and throw them away.

use qkc_codegen::llvm::{self, CpuJit, JitOptions, LlvmError};
use qkc_codegen::loop_ir::Func;
use qkc_codegen::lower::{self, lower_cpu};
use qkc_dsl::host::{check_buffer, check_inputs, BufferError, HostBuf};
use qkc_dsl::ir::{Dims, Kernel};
use rayon::prelude::*;

pub use crate::cpu::Timing;

/// How a kernel is compiled and run through LLVM on the CPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LlvmCpuOptions {
    /// Lowering knobs (activation rows per decoded chunk, chunked unpack).
    pub lower: lower::CpuOptions,
    /// LLVM knobs (optimization level, reassociation, bounds checks).
    pub jit: JitOptions,
    /// Worker threads; 0 means the machine's available parallelism.
    pub threads: usize,
    /// Also compile a `tile_m = 1` variant for launches with fewer rows than the
    /// tile (see the module documentation).
    pub small_m_variant: bool,
}

impl LlvmCpuOptions {
    /// Defaults for a kernel: its schedule hints, `O3`, all available cores, and f32
    /// dot-product runs reassociated as the Cranelift runtime does (integer results
    /// stay exact; set `jit.reassociate = false` for results bit-identical to the
    /// loop-IR interpreter).
    pub fn for_kernel(k: &Kernel) -> LlvmCpuOptions {
        LlvmCpuOptions {
            lower: lower::CpuOptions {
                packed_dot: llvm::HostCpu::detect().packed_dot(),
                ..lower::CpuOptions::for_kernel(k)
            },
            jit: JitOptions {
                reassociate: true,
                ..JitOptions::default()
            },
            threads: 0,
            small_m_variant: true,
        }
    }
}

/// Why a kernel could not be compiled or run.
#[derive(Debug, thiserror::Error)]
pub enum LlvmCpuError {
    #[error(transparent)]
    Buffer(#[from] BufferError),
    #[error("cannot compile kernel `{kernel}` with LLVM: {source}")]
    Compile {
        kernel: String,
        #[source]
        source: LlvmError,
    },
    #[error("kernel `{kernel}` failed on the CPU (LLVM): {source}")]
    Run {
        kernel: String,
        #[source]
        source: LlvmError,
    },
    #[error("cannot start {threads} worker threads: {reason}")]
    Threads { threads: usize, reason: String },
}

/// One compiled schedule of the kernel.
struct Variant {
    func: Func,
    jit: CpuJit,
    tile_m: u32,
}

/// A kernel compiled for this CPU by LLVM. `Send + Sync`: one compiled kernel can
/// serve several threads.
pub struct LlvmCpuKernel {
    kernel: Kernel,
    main: Variant,
    /// `tile_m = 1`, for launches with `M < main.tile_m`.
    small: Option<Variant>,
    threads: usize,
    pool: Option<rayon::ThreadPool>,
}

impl std::fmt::Debug for LlvmCpuKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlvmCpuKernel")
            .field("kernel", &self.kernel.name)
            .field("tile_m", &self.main.tile_m)
            .field("small_m_variant", &self.small.is_some())
            .field("threads", &self.threads)
            .finish()
    }
}

use crate::launch::{default_threads, input_ptr, output_ptr, Launch};

fn compile(
    kernel: &Kernel,
    lower_opts: &lower::CpuOptions,
    jit: &JitOptions,
) -> Result<Variant, LlvmCpuError> {
    let func = lower_cpu(kernel, lower_opts);
    let compiled = llvm::compile_cpu(&func, jit).map_err(|source| LlvmCpuError::Compile {
        kernel: kernel.name.clone(),
        source,
    })?;
    Ok(Variant {
        func,
        jit: compiled,
        tile_m: lower_opts.tile_m.max(1),
    })
}

impl LlvmCpuKernel {
    /// Lowers `kernel` with the CPU schedule and compiles it with LLVM.
    pub fn new(kernel: &Kernel, opts: &LlvmCpuOptions) -> Result<LlvmCpuKernel, LlvmCpuError> {
        let main = compile(kernel, &opts.lower, &opts.jit)?;
        let small = if opts.small_m_variant && main.tile_m > 1 {
            let lo = lower::CpuOptions {
                tile_m: 1,
                ..opts.lower.clone()
            };
            Some(compile(kernel, &lo, &opts.jit)?)
        } else {
            None
        };
        let mut k = LlvmCpuKernel {
            kernel: kernel.clone(),
            main,
            small,
            threads: 1,
            pool: None,
        };
        k.set_threads(opts.threads)?;
        Ok(k)
    }

    /// Sets the number of worker threads (0: available parallelism).
    pub fn set_threads(&mut self, threads: usize) -> Result<(), LlvmCpuError> {
        let n = if threads == 0 {
            default_threads()
        } else {
            threads
        };
        self.pool = if n > 1 {
            Some(
                crate::launch::worker_pool(n, "qkc-llvm")
                    .map_err(|reason| LlvmCpuError::Threads { threads: n, reason })?,
            )
        } else {
            None
        };
        self.threads = n;
        Ok(())
    }

    /// Worker threads used by [`LlvmCpuKernel::run`].
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The kernel this was compiled from.
    pub fn kernel(&self) -> &Kernel {
        &self.kernel
    }

    /// The lowered loop IR (the kernel's own schedule).
    pub fn func(&self) -> &Func {
        &self.main.func
    }

    /// The compiled code (IR and assembly when compiled with `keep_text`).
    pub fn compiled(&self) -> &CpuJit {
        &self.main.jit
    }

    /// The schedule a launch with `m` activation rows runs.
    fn variant(&self, m: u64) -> &Variant {
        match &self.small {
            Some(s) if m < self.main.tile_m as u64 => s,
            _ => &self.main,
        }
    }

    /// A zeroed output buffer of the right type and length for `dims`.
    pub fn output_for(&self, dims: &Dims) -> Result<HostBuf, LlvmCpuError> {
        self.kernel.validate_dims(dims).map_err(BufferError::Dims)?;
        let k = &self.kernel;
        Ok(HostBuf::zeros(&k.output.ty, k.buffer_len(&k.output, dims)))
    }

    /// Runs the kernel: checks `dims` and every input, allocates and returns the output.
    pub fn run(&self, dims: &Dims, inputs: &[HostBuf]) -> Result<HostBuf, LlvmCpuError> {
        check_inputs(&self.kernel, dims, inputs)?;
        let mut out = self.output_for(dims)?;
        self.run_into(dims, inputs, &mut out)?;
        Ok(out)
    }

    /// Runs the kernel into an existing output buffer (checked like the inputs), so
    /// that repeated runs do not allocate.
    pub fn run_into(
        &self,
        dims: &Dims,
        inputs: &[HostBuf],
        out: &mut HostBuf,
    ) -> Result<(), LlvmCpuError> {
        let k = &self.kernel;
        check_inputs(k, dims, inputs)?;
        check_buffer(k, &k.output, dims, out)?;
        let mut bufs = Vec::with_capacity(inputs.len() + 1);
        let mut lens = Vec::with_capacity(inputs.len() + 1);
        for b in inputs {
            let (p, n) = input_ptr(b);
            bufs.push(p);
            lens.push(n as i64);
        }
        let (p, n) = output_ptr(out);
        bufs.push(p);
        lens.push(n as i64);
        let launch = Launch {
            bufs,
            lens,
            dims: dims.values.iter().map(|&v| v as i64).collect(),
        };
        let run_err = |source| LlvmCpuError::Run {
            kernel: k.name.clone(),
            source,
        };
        let jit = &self.variant(dims.values[k.m]).jit;
        // SAFETY (all calls below): every buffer was checked against the kernel's
        // shapes for `dims` above, and the output is exclusively borrowed.
        let trips = unsafe { jit.parallel_trips(&launch.bufs, &launch.lens, &launch.dims) }
            .map_err(run_err)?;
        let launch = &launch;
        let call = move |lo: i64, hi: i64| unsafe {
            jit.call(&launch.bufs, &launch.lens, &launch.dims, lo, hi)
        };
        match (trips, &self.pool) {
            (Some(t), Some(pool)) if t > 1 => {
                // A few chunks per thread balance uneven rows without much overhead.
                let chunks = (self.threads as i64 * 4).min(t);
                let per = (t + chunks - 1) / chunks;
                pool.install(|| {
                    (0..chunks)
                        .into_par_iter()
                        .try_for_each(|c| call(c * per, ((c + 1) * per).min(t)))
                })
                .map_err(run_err)
            }
            _ => call(0, i64::MAX).map_err(run_err),
        }
    }

    /// Runs the kernel once to warm up, then at least `min_reps` times and until
    /// `budget` has passed (at most 1000 runs), into one preallocated output. Returns
    /// the output of the last run and the times.
    pub fn time(
        &self,
        dims: &Dims,
        inputs: &[HostBuf],
        min_reps: usize,
        budget: std::time::Duration,
    ) -> Result<(HostBuf, Timing), LlvmCpuError> {
        let mut out = self.output_for(dims)?;
        self.run_into(dims, inputs, &mut out)?;
        let start = std::time::Instant::now();
        let mut times = Vec::new();
        while times.len() < min_reps.max(1) || (start.elapsed() < budget && times.len() < 1000) {
            let t = std::time::Instant::now();
            self.run_into(dims, inputs, &mut out)?;
            times.push(t.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        let timing = Timing {
            best: times[0],
            median: times[times.len() / 2],
            reps: times.len(),
        };
        Ok((out, timing))
    }
}
