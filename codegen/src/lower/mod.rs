//! Lowering from the typed IR to the loop IR, one module per stage:
//!
//! - [`plan`]: reads the typed IR once into a [`plan::Plan`] (buffers, roles, layout,
//!   accumulator, group size) so later stages never look at the AST;
//! - [`unpack`]: strength-reduced unpack: constant-position bit-field extracts for a
//!   chunk of whole bytes, and the generic variable-shift path for tails (dense
//!   streams included, across byte boundaries);
//! - [`scales`]: scale hoisting: integer products are summed within a group, each group
//!   scale is applied once per group, row/column scales once per output;
//! - [`float_decode`]: codes as exact `f32` by exponent magic (no int-to-float
//!   conversions) for the GPU float-activation path;
//! - [`mma`]: the tensor-core GEMV path (f16 activations, PTX `mma.sync`);
//! - [`cpu`]: the CPU schedule (parallel weight rows, `tile_m` activation rows per
//!   decoded chunk); GPU schedules live next to their backends' needs in `gpu_*`.

pub mod cpu;
pub mod float_decode;
pub mod gpu;
pub mod mma;
pub mod plan;
pub mod scales;
pub mod spread;
pub mod unpack;

pub use gpu::{GpuOptions, LongRows};
pub use plan::Plan;

use crate::loop_ir::Func;
use qkc_dsl::ir::Kernel;

/// How a GPU GEMV's lanes get their weight words (the SIMT vector path's lane chunks,
/// the tensor-core path's pieces).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WeightLoads {
    /// Each lane loads its own words from global memory.
    #[default]
    Direct,
    /// The warp loads its rows' spans as adjacent 16-byte vectors into registers,
    /// stores them to shared memory and each lane reads its own words back.
    Shared,
    /// As `Shared`, but the vectors go straight to shared memory by asynchronous copies
    /// (`cp.async`, no staging registers) into rotating buffers (two for the tensor-core
    /// path, [`GpuOptions::copy_stages`] for the SIMT path): later iterations' copies
    /// are in flight while one iteration's words are decoded.
    Async,
}

impl WeightLoads {
    /// Whether the weights go through shared memory.
    pub fn staged(self) -> bool {
        self != WeightLoads::Direct
    }
}

/// Knobs of the lowering pipeline (each stage can be turned off to test the others).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuOptions {
    /// Activation rows sharing one decoded chunk of weights.
    pub tile_m: u32,
    /// Use constant-position unpack of whole-byte chunks (off: generic path only).
    pub chunked_unpack: bool,
    /// Emit [`crate::loop_ir::Expr::DotPacked`] for whole 64-unit blocks of i8 × packed
    /// integer dot products (1 or 2 fields per unit, blocks inside one group). Only for
    /// backends that compile it: LLVM on x86 with AVX-512 VBMI + VNNI
    /// (`qkc_codegen::llvm::HostCpu::packed_dot`).
    pub packed_dot: bool,
}

impl CpuOptions {
    /// Defaults for a kernel, honouring its schedule hints.
    pub fn for_kernel(k: &Kernel) -> CpuOptions {
        CpuOptions {
            tile_m: k.schedule.tile_m.unwrap_or(4).clamp(1, 8),
            chunked_unpack: true,
            packed_dot: false,
        }
    }
}

/// Lowers a kernel for CPU backends (Cranelift, LLVM CPU).
pub fn lower_cpu(k: &Kernel, opts: &CpuOptions) -> Func {
    cpu::lower(&Plan::new(k), opts)
}

/// Lowers a kernel for GPU backends (PTX): see [`gpu`] for the schedules.
pub fn lower_gpu(k: &Kernel, opts: &GpuOptions) -> Func {
    gpu::lower(&Plan::new(k), k.dims[k.m].max, opts)
}
