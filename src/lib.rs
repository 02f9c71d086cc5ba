//! qkc: a compiler for quantized matrix-multiply kernels.
//!
//! This facade re-exports the stages, one crate each:
//! - [`dsl`]: `.qk` lexer, parser, checks, typed IR, bounds proofs, reference interpreter;
//! - [`codegen`]: loop IR, passes and the backends (PTX, HIP, Cranelift, LLVM);
//! - [`runtime`]: quantizer, packers, CPU JIT execution, CUDA launches;
//! - the proc-macros [`packed`] and `quant_kernel!`.

pub use qkc_codegen as codegen;
pub use qkc_dsl as dsl;
pub use qkc_dsl::layout;
pub use qkc_runtime as runtime;

pub use qkc_macros::packed;

/// The command-line front end (used by the `qkc` binary and its tests).
pub mod cli;
