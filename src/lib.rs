//! qkc: a compiler for quantized matrix-multiply kernels.
//!
//! This facade re-exports the stages, one crate each:
//! - [`dsl`]: `.qk` lexer, parser, checks, typed IR, bounds proofs, reference interpreter;
//! - [`codegen`]: loop IR, passes and the backends (PTX, HIP, Cranelift, LLVM);
//! - [`runtime`]: quantizer, packers, CPU JIT execution, CUDA launches;
//! - the proc-macros [`packed`] and [`quant_kernel!`], with [`typed`], the run-time
//!   support of the kernel types that `quant_kernel!` generates.

pub use qkc_codegen as codegen;
pub use qkc_dsl as dsl;
pub use qkc_dsl::layout;
pub use qkc_runtime as runtime;

pub use qkc_macros::{packed, quant_kernel};

/// `f16` and `bf16`, the element types of half-precision kernel arguments.
pub use half;

pub mod typed;

/// The command-line front end (used by the `qkc` binary and its tests).
pub mod cli;
