//! qkc runtime: everything that touches real weights and devices.
//!
//! - [`quantize`]: f32 weights → codes + per-group scales (absmax or MSE-searched),
//!   dequantization and error metrics, [`quantize::QuantizedTensor`];
//! - [`pack`]: codes ↔ packed bytes for any [`qkc_dsl::layout::LayoutDesc`], with
//!   length and layout checks.

pub mod cpu;
pub mod cuda;
mod launch;
pub use launch::worker_pool;
#[cfg(feature = "llvm")]
pub mod llvm_cpu;
pub mod pack;
pub mod quantize;
