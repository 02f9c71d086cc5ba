//! qkc code generation: the loop IR, the lowering pipeline from the typed IR, and one
//! module per backend.
//!
//! `.qk` → typed IR (`qkc_dsl`) → [`lower`] → [`loop_ir`] → backends.

pub mod cranelift;
pub mod hip;
#[cfg(feature = "llvm")]
pub mod llvm;
pub mod loop_ir;
pub mod lower;
pub mod ptx;
