//! CPU execution: a kernel lowered with the CPU schedule, compiled by the Cranelift
//! JIT, validated and run on host buffers across threads.
//!
//! ```no_run
//! # fn demo(k: &qkc_dsl::ir::Kernel, dims: &qkc_dsl::ir::Dims, inputs: &[qkc_dsl::host::HostBuf])
//! # -> Result<(), qkc_runtime::cpu::CpuError> {
//! use qkc_runtime::cpu::{CpuKernel, CpuOptions};
//! let kernel = CpuKernel::new(k, &CpuOptions::for_kernel(k))?;
//! let y = kernel.run(dims, inputs)?; // checks dims and every buffer first
//! # Ok(()) }
//! ```
//!
//! Safety rests on two checks made before native code runs: the dimensions and every
//! input buffer's type and length ([`qkc_dsl::host::check_inputs`]) and the output's
//! ([`qkc_dsl::host::check_buffer`]); the lowering only accesses memory inside
//! buffers of those lengths (the loop-IR interpreter, which bounds-checks every
//! access, and the bounds-checked JIT build, [`CraneliftOptions::bounds_checks`],
//! are tested against it). Compiled code never writes input buffers (the backend
//! rejects stores to them). Threads run disjoint ranges of the parallel loop over
//! output columns, so they write disjoint output elements.

use qkc_codegen::cranelift::{self, CompiledCpu, CraneliftError, CraneliftOptions};
use qkc_codegen::loop_ir::Func;
use qkc_codegen::lower::{self, lower_cpu};
use qkc_dsl::host::{check_buffer, check_inputs, BufferError, HostBuf};
use qkc_dsl::interp;
use qkc_dsl::ir::{Dims, Kernel, Scalar};
use rayon::prelude::*;

/// How a kernel is compiled and run on the CPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuOptions {
    /// Lowering knobs (activation rows per decoded chunk, chunked unpack).
    pub lower: lower::CpuOptions,
    /// Cranelift knobs (SIMD, bounds checks, optimizer).
    pub jit: CraneliftOptions,
    /// Worker threads; 0 means the machine's available parallelism.
    pub threads: usize,
    /// Also compile the power-of-two tiles below `lower.tile_m`, and run launches
    /// with fewer activation rows than a tile on the largest tile that fits (a GEMV
    /// with `M = 1` then decodes each weight once instead of `tile_m` times).
    pub adapt_tile: bool,
}

impl CpuOptions {
    /// Defaults for a kernel: its schedule hints, SIMD on (with whole-block packed dot
    /// products where this host and the layout allow them), all available cores.
    pub fn for_kernel(k: &Kernel) -> CpuOptions {
        let layout = lower::Plan::new(k).layout;
        CpuOptions {
            lower: lower::CpuOptions {
                packed_dot: cranelift::packed_dot_supported(&layout),
                ..lower::CpuOptions::for_kernel(k)
            },
            jit: CraneliftOptions::default(),
            threads: 0,
            adapt_tile: true,
        }
    }
}

/// Why a kernel could not be compiled or run.
#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    #[error(transparent)]
    Buffer(#[from] BufferError),
    #[error("cannot compile kernel `{kernel}` for the CPU: {source}")]
    Compile {
        kernel: String,
        #[source]
        source: CraneliftError,
    },
    #[error("kernel `{kernel}` failed on the CPU: {source}")]
    Run {
        kernel: String,
        #[source]
        source: CraneliftError,
    },
    #[error("cannot start {threads} worker threads: {reason}")]
    Threads { threads: usize, reason: String },
}

/// A kernel compiled for this CPU. `Send + Sync`: one compiled kernel can serve
/// several threads.
pub struct CpuKernel {
    kernel: Kernel,
    /// Compiled tiles, by increasing `tile_m`; the last is the configured one.
    variants: Vec<Variant>,
    threads: usize,
    pool: Option<rayon::ThreadPool>,
}

struct Variant {
    tile_m: u32,
    func: Func,
    compiled: CompiledCpu,
}

impl std::fmt::Debug for CpuKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuKernel")
            .field("kernel", &self.kernel.name)
            .field("threads", &self.threads)
            .finish()
    }
}

use crate::launch::{default_threads, input_ptr, output_ptr, Launch};

impl CpuKernel {
    /// Lowers `kernel` with the CPU schedule and compiles it.
    pub fn new(kernel: &Kernel, opts: &CpuOptions) -> Result<CpuKernel, CpuError> {
        let top = opts.lower.tile_m.max(1);
        let mut tiles: Vec<u32> = Vec::new();
        if opts.adapt_tile {
            let max_m = kernel.dims[kernel.m].max;
            tiles.extend(
                (0..)
                    .map(|i| 1u32 << i)
                    .take_while(|&t| t < top && u64::from(t) <= max_m),
            );
        }
        tiles.push(top);
        let mut variants = Vec::with_capacity(tiles.len());
        for tile_m in tiles {
            let lo = lower::CpuOptions {
                tile_m,
                // Block decode is a vector path: off with SIMD off.
                packed_dot: opts.lower.packed_dot && opts.jit.simd,
                ..opts.lower.clone()
            };
            let func = lower_cpu(kernel, &lo);
            let compiled =
                cranelift::compile(&func, &opts.jit).map_err(|source| CpuError::Compile {
                    kernel: kernel.name.clone(),
                    source,
                })?;
            variants.push(Variant {
                tile_m,
                func,
                compiled,
            });
        }
        let mut k = CpuKernel {
            kernel: kernel.clone(),
            variants,
            threads: 1,
            pool: None,
        };
        k.set_threads(opts.threads)?;
        Ok(k)
    }

    /// Sets the number of worker threads (0: available parallelism).
    pub fn set_threads(&mut self, threads: usize) -> Result<(), CpuError> {
        let n = if threads == 0 {
            default_threads()
        } else {
            threads
        };
        self.pool = if n > 1 {
            Some(
                crate::launch::worker_pool(n, "qkc-cpu")
                    .map_err(|reason| CpuError::Threads { threads: n, reason })?,
            )
        } else {
            None
        };
        self.threads = n;
        Ok(())
    }

    /// Worker threads used by [`CpuKernel::run`].
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The kernel this was compiled from.
    pub fn kernel(&self) -> &Kernel {
        &self.kernel
    }

    fn main(&self) -> &Variant {
        // `new` always compiles at least the configured tile.
        &self.variants[self.variants.len() - 1]
    }

    /// The variant a launch with `m` activation rows runs: the largest tile ≤ `m`.
    fn variant_for(&self, m: u64) -> &Variant {
        self.variants
            .iter()
            .rev()
            .find(|v| u64::from(v.tile_m) <= m)
            .unwrap_or_else(|| self.main())
    }

    /// The lowered loop IR (of the configured tile).
    pub fn func(&self) -> &Func {
        &self.main().func
    }

    /// The compiled code of the configured tile (CLIF and disassembly when compiled
    /// with `keep_text`).
    pub fn compiled(&self) -> &CompiledCpu {
        &self.main().compiled
    }

    /// `tile_m` of the code that runs a launch with `m` activation rows.
    pub fn tile_for(&self, m: u64) -> u32 {
        self.variant_for(m).tile_m
    }

    /// The lowered loop IR that runs a launch with `m` activation rows.
    pub fn func_for(&self, m: u64) -> &Func {
        &self.variant_for(m).func
    }

    /// A zeroed output buffer of the right type and length for `dims`.
    pub fn output_for(&self, dims: &Dims) -> Result<HostBuf, CpuError> {
        self.kernel.validate_dims(dims).map_err(BufferError::Dims)?;
        let k = &self.kernel;
        Ok(HostBuf::zeros(&k.output.ty, k.buffer_len(&k.output, dims)))
    }

    /// Runs the kernel: checks `dims` and every input, allocates and returns the output.
    pub fn run(&self, dims: &Dims, inputs: &[HostBuf]) -> Result<HostBuf, CpuError> {
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
    ) -> Result<(), CpuError> {
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
        let run_err = |source| CpuError::Run {
            kernel: k.name.clone(),
            source,
        };
        // SAFETY (all calls below): every buffer was checked against the kernel's
        // shapes for `dims` above, and the output is exclusively borrowed.
        let launch = &launch;
        let compiled = &self.variant_for(dims.values[k.m]).compiled;
        let trips = unsafe { compiled.parallel_trips(&launch.bufs, &launch.lens, &launch.dims) }
            .map_err(run_err)?;
        let call = move |lo: i64, hi: i64| unsafe {
            compiled.call(&launch.bufs, &launch.lens, &launch.dims, lo, hi)
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
}

/// Wall-clock times of repeated runs ([`CpuKernel::time`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Timing {
    /// Fastest run, seconds.
    pub best: f64,
    /// Median run, seconds.
    pub median: f64,
    /// Timed runs (after one warm-up run).
    pub reps: usize,
}

impl CpuKernel {
    /// Runs the kernel once to warm up, then at least `min_reps` times and until
    /// `budget` has passed (at most 1000 runs), into one preallocated output. Returns
    /// the output of the last run and the times.
    pub fn time(
        &self,
        dims: &Dims,
        inputs: &[HostBuf],
        min_reps: usize,
        budget: std::time::Duration,
    ) -> Result<(HostBuf, Timing), CpuError> {
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

/// How a backend's output compares with the reference interpreter.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    /// Largest |got − exact|.
    pub max_abs: f64,
    /// Largest |got − exact| / Σ|terms| (the scale float errors are judged on).
    pub max_rel: f64,
    /// Element with the largest error relative to its tolerance.
    pub worst: usize,
    /// Elements outside their tolerance.
    pub failures: usize,
    /// Elements compared.
    pub count: usize,
}

impl Comparison {
    pub fn passed(&self) -> bool {
        self.failures == 0
    }
}

/// One unit in the last place of `x` in the output type (at least the smallest
/// subnormal).
pub fn ulp(ty: Scalar, x: f64) -> f64 {
    let (mant_bits, min_exp) = match ty {
        Scalar::F16 => (10, -14),
        Scalar::BF16 => (7, -126),
        Scalar::F32 => (23, -126),
        Scalar::I32 | Scalar::I8 => return 0.0,
    };
    let e = if x == 0.0 {
        min_exp
    } else {
        (x.abs().log2().floor() as i32).max(min_exp)
    };
    2f64.powi(e - mant_bits)
}

/// Compares `got` with the exact reference result. Tolerance per element:
/// exact for `i32` outputs; otherwise `(T + G + 4) · 2⁻²⁴ · Σ|terms| + 1 ulp` of the
/// output type, where `G` is the number of groups along K, `T` the terms of one float
/// partial sum (0 for integer accumulation, which is exact), and the ulp covers the
/// final rounding to f16/bf16/f32 on both sides.
pub fn compare_with_reference(
    k: &Kernel,
    dims: &Dims,
    inputs: &[HostBuf],
    got: &HostBuf,
) -> Result<Comparison, CpuError> {
    check_buffer(k, &k.output, dims, got)?;
    let want = interp::run_f64(k, dims, inputs)?;
    let mag = interp::magnitude(k, dims, inputs)?;
    let kk = dims.values[k.k];
    let g = k.group.map(u64::from).unwrap_or(kk);
    let groups = kk.div_ceil(g) as f64;
    let terms = if k.is_int() { 0.0 } else { g.min(kk) as f64 };
    let out_ty = k.out_ty();
    let exact = out_ty == Scalar::I32;
    let got = got.to_f64();
    let mut c = Comparison {
        max_abs: 0.0,
        max_rel: 0.0,
        worst: 0,
        failures: 0,
        count: got.len(),
    };
    let mut worst_ratio = -1.0;
    for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
        let w = if exact { w.round() } else { w };
        let err = (g - w).abs();
        let err = if err.is_nan() { f64::INFINITY } else { err };
        let tol = if exact {
            0.0
        } else {
            (terms + groups + 4.0) * 2f64.powi(-24) * mag[i] + ulp(out_ty, w)
        };
        c.max_abs = c.max_abs.max(err);
        if mag[i] > 0.0 {
            c.max_rel = c.max_rel.max(err / mag[i]);
        } else if err > 0.0 {
            c.max_rel = f64::INFINITY;
        }
        if err > tol {
            c.failures += 1;
        }
        let ratio = if tol > 0.0 {
            err / tol
        } else if err > 0.0 {
            f64::INFINITY
        } else {
            0.0
        };
        if ratio > worst_ratio {
            worst_ratio = ratio;
            c.worst = i;
        }
    }
    Ok(c)
}
