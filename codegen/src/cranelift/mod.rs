//! The Cranelift backend: compiles a CPU loop-IR [`Func`] to native code in memory
//! (cranelift-jit) for the CPU runtime.
//!
//! # Calling convention
//!
//! Every compiled function has the signature
//!
//! ```text
//! extern "C" fn(bufs: *const *mut u8, lens: *const i64, dims: *const i64,
//!               n_lo: i64, n_hi: i64) -> i32
//! ```
//!
//! `bufs[i]` is the base address of buffer `i` (inputs first, output last, as in
//! [`Func::bufs`]), `lens[i]` its length in bytes (read only when bounds checks are
//! compiled in), `dims[d]` the value of dimension `d`. The function's *parallel loop*
//! (its outermost [`LoopKind::Parallel`] loop, if it is a top-level statement that
//! only `let`s precede) runs iterations `n_lo..n_hi` of its trip count instead of all
//! of them, so the runtime can split it across threads: calls over disjoint ranges
//! that cover `0..trips` do the whole work. A companion function with the same
//! parameters returns `trips` ([`CompiledCpu::parallel_trips`]).
//!
//! The result is a status: 0 on success, [`STATUS_DIV_BY_ZERO`] when an integer
//! division by zero was reached (the interpreter's error; native code never traps),
//! [`STATUS_OUT_OF_BOUNDS`] when a compiled-in bounds check failed.
//!
//! # Semantics
//!
//! Every operation follows the loop-IR interpreter ([`crate::loop_ir::eval`]) bit for
//! bit, with one documented exception: the SIMD paths ([`CraneliftOptions::simd`])
//! reassociate `f32` dot-product runs (integer runs stay exact: wrapping sums do not
//! depend on the order). See the `translate` submodule for the translation of each
//! operation, `simd` for the vector paths and `packed` for whole-block packed dot
//! products (`DotPacked`, 128-bit `pshufb` + `pmaddubsw`).

mod packed;
mod simd;
mod translate;

pub use packed::supported as packed_dot_supported;

use std::sync::Mutex;

use cranelift_codegen::ir::{types, AbiParam, Signature, UserFuncName};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_codegen::Context;
use cranelift_frontend::FunctionBuilderContext;
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{default_libcall_names, FuncId, Linkage, Module};

use crate::loop_ir::{Elem, Func, Launch, LoopKind, Stmt};

/// Status returned by compiled code: success.
pub const STATUS_OK: i32 = 0;
/// Status returned by compiled code: an integer division or remainder by zero.
pub const STATUS_DIV_BY_ZERO: i32 = 1;
/// Status returned by compiled code: a compiled-in bounds check failed.
pub const STATUS_OUT_OF_BOUNDS: i32 = 2;

/// Knobs of the Cranelift backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CraneliftOptions {
    /// Use vector instructions for dot-product runs (`DotRun`) with an `I32`
    /// accumulator over `i8` activations (exact), and with an `F32` accumulator over
    /// float activations (reassociated), when the codes are provably small bit fields.
    pub simd: bool,
    /// Check every memory access against the buffer lengths passed at the call, and
    /// return [`STATUS_OUT_OF_BOUNDS`] instead of touching memory outside them.
    pub bounds_checks: bool,
    /// Run Cranelift's optimizer (`opt_level = speed`); off: `opt_level = none`.
    pub optimize: bool,
    /// Keep the CLIF text of the generated functions and their disassembly
    /// ([`CompiledCpu::clif`], [`CompiledCpu::disasm`]).
    pub keep_text: bool,
}

impl Default for CraneliftOptions {
    fn default() -> CraneliftOptions {
        CraneliftOptions {
            simd: true,
            bounds_checks: false,
            optimize: true,
            keep_text: false,
        }
    }
}

/// Why a function could not be compiled, or a compiled call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CraneliftError {
    #[error(
        "`{func}` is a GPU kernel; the Cranelift backend compiles CPU functions (Launch::Cpu)"
    )]
    NotCpu { func: String },
    #[error("`{op}` is a GPU-only operation and cannot be compiled for the CPU")]
    GpuOnly { op: &'static str },
    #[error("ill-formed loop IR: {0}")]
    Invalid(String),
    #[error("`{op}` is not compiled by the Cranelift backend ({why})")]
    NotSupported { op: &'static str, why: &'static str },
    #[error("`{buf}` is an input buffer; CPU functions only store to the output")]
    StoreToInput { buf: String },
    #[error("the host machine is not supported by Cranelift: {0}")]
    Host(String),
    #[error("Cranelift failed: {0}")]
    Cranelift(String),
    #[error("call of `{func}`: expected {expected} {what}, got {got}")]
    BadCall {
        func: String,
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("`{func}` divided by zero at run time")]
    DivByZero { func: String },
    #[error("`{func}` accessed memory outside a buffer at run time (bounds check)")]
    OutOfBounds { func: String },
    #[error("`{func}` returned unknown status {status}")]
    Status { func: String, status: i32 },
}

type EntryFn = unsafe extern "C" fn(*const *mut u8, *const i64, *const i64, i64, i64) -> i32;
type TripsFn = unsafe extern "C" fn(*const *mut u8, *const i64, *const i64, i64, i64) -> i64;

/// A compiled CPU function. Owns the JIT memory its code lives in (freed on drop).
pub struct CompiledCpu {
    /// Kept only so the code stays mapped; never used after finalization except to
    /// free it (the mutex makes the wrapper `Sync`; `JITModule` itself is `Send`).
    module: Mutex<Option<JITModule>>,
    entry: EntryFn,
    trips: Option<TripsFn>,
    name: String,
    bufs: Vec<Elem>,
    n_dims: usize,
    clif: String,
    disasm: String,
}

impl std::fmt::Debug for CompiledCpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledCpu")
            .field("name", &self.name)
            .field("bufs", &self.bufs)
            .field("n_dims", &self.n_dims)
            .field("parallel", &self.trips.is_some())
            .finish()
    }
}

impl Drop for CompiledCpu {
    fn drop(&mut self) {
        let module = match self.module.get_mut() {
            Ok(m) => m.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(m) = module {
            // SAFETY: the function pointers into this module live in `self` and are
            // only reachable through `&self`, so no call can be running or follow.
            unsafe { m.free_memory() };
        }
    }
}

fn cl_err(e: impl std::fmt::Display) -> CraneliftError {
    CraneliftError::Cranelift(e.to_string())
}

/// Converts an f32 to f16 bits, rounding to nearest even (called by compiled stores).
extern "C" fn qkc_f32_to_f16(x: f32) -> u32 {
    half::f16::from_f32(x).to_bits() as u32
}

/// Converts an f32 to bf16 bits, rounding to nearest even (called by compiled stores).
extern "C" fn qkc_f32_to_bf16(x: f32) -> u32 {
    half::bf16::from_f32(x).to_bits() as u32
}

/// Names of the helper functions compiled code may call.
pub(crate) const HELPER_F16: &str = "qkc_f32_to_f16";
pub(crate) const HELPER_BF16: &str = "qkc_f32_to_bf16";

/// Index of the parallel loop: a top-level `Parallel` loop with a positive step that
/// only `let`s and comments precede.
pub(crate) fn parallel_loop(f: &Func) -> Option<usize> {
    for (i, s) in f.body.iter().enumerate() {
        match s {
            Stmt::For {
                var,
                kind: LoopKind::Parallel,
                step,
                ..
            } if *step >= 1
                && f.vars.get(var.0 as usize).map(|v| v.ty) == Some(crate::loop_ir::Ty::I64) =>
            {
                return Some(i)
            }
            Stmt::Let(..) | Stmt::Comment(_) => {}
            _ => return None,
        }
    }
    None
}

fn make_isa(
    opts: &CraneliftOptions,
) -> Result<cranelift_codegen::isa::OwnedTargetIsa, CraneliftError> {
    let mut flags = settings::builder();
    let set = |flags: &mut settings::Builder, k: &str, v: &str| flags.set(k, v).map_err(cl_err);
    set(&mut flags, "use_colocated_libcalls", "false")?;
    set(&mut flags, "is_pic", "false")?;
    set(
        &mut flags,
        "opt_level",
        if opts.optimize { "speed" } else { "none" },
    )?;
    set(&mut flags, "enable_verifier", "true")?;
    let isa = cranelift_native::builder().map_err(|e| CraneliftError::Host(e.to_string()))?;
    isa.finish(settings::Flags::new(flags)).map_err(cl_err)
}

fn signature(module: &JITModule, ret: types::Type) -> Signature {
    let ptr = module.target_config().pointer_type();
    let mut sig = module.make_signature();
    sig.params.push(AbiParam::new(ptr));
    sig.params.push(AbiParam::new(ptr));
    sig.params.push(AbiParam::new(ptr));
    sig.params.push(AbiParam::new(types::I64));
    sig.params.push(AbiParam::new(types::I64));
    sig.returns.push(AbiParam::new(ret));
    sig
}

/// Checks what the translator relies on before any code is built.
fn validate(f: &Func) -> Result<(), CraneliftError> {
    if !matches!(f.launch, Launch::Cpu) {
        return Err(CraneliftError::NotCpu {
            func: f.name.clone(),
        });
    }
    if f.bufs.is_empty() {
        return Err(CraneliftError::Invalid(format!(
            "`{}` has no buffers",
            f.name
        )));
    }
    Ok(())
}

/// Compiles a CPU function to native code.
pub fn compile(func: &Func, opts: &CraneliftOptions) -> Result<CompiledCpu, CraneliftError> {
    validate(func)?;
    let isa = make_isa(opts)?;
    let mut jb = JITBuilder::with_isa(isa, default_libcall_names());
    jb.symbol(HELPER_F16, qkc_f32_to_f16 as *const u8);
    jb.symbol(HELPER_BF16, qkc_f32_to_bf16 as *const u8);
    let mut module = JITModule::new(jb);
    let par = parallel_loop(func);

    let mut ctx = module.make_context();
    let mut fctx = FunctionBuilderContext::new();
    let mut clif = String::new();
    let mut disasm = String::new();

    let mut define = |module: &mut JITModule,
                      ctx: &mut Context,
                      fctx: &mut FunctionBuilderContext,
                      name: &str,
                      mode: translate::Mode|
     -> Result<FuncId, CraneliftError> {
        let ret = match mode {
            translate::Mode::Main => types::I32,
            translate::Mode::Trips(_) => types::I64,
        };
        let sig = signature(module, ret);
        let id = module
            .declare_function(name, Linkage::Local, &sig)
            .map_err(cl_err)?;
        ctx.func.signature = sig;
        ctx.func.name = UserFuncName::user(0, id.as_u32());
        translate::build(module, ctx, fctx, func, opts, mode)?;
        if opts.keep_text {
            clif.push_str(&ctx.func.display().to_string());
            clif.push('\n');
            ctx.set_disasm(true);
        }
        module.define_function(id, ctx).map_err(|e| match e {
            cranelift_module::ModuleError::Compilation(ce) => CraneliftError::Cranelift(
                cranelift_codegen::print_errors::pretty_error(&ctx.func, ce),
            ),
            other => cl_err(other),
        })?;
        if opts.keep_text {
            if let Some(v) = ctx.compiled_code().and_then(|c| c.vcode.clone()) {
                disasm.push_str(&format!("; {name}\n{v}\n"));
            }
        }
        module.clear_context(ctx);
        Ok(id)
    };

    let main_id = define(
        &mut module,
        &mut ctx,
        &mut fctx,
        &func.name,
        translate::Mode::Main,
    )?;
    let trips_id = match par {
        Some(p) => Some(define(
            &mut module,
            &mut ctx,
            &mut fctx,
            &format!("{}__trips", func.name),
            translate::Mode::Trips(p),
        )?),
        None => None,
    };
    module.finalize_definitions().map_err(cl_err)?;
    let main_ptr = module.get_finalized_function(main_id);
    // SAFETY: the function was declared with exactly this signature (see `signature`)
    // under the platform's default calling convention, which `extern "C"` matches.
    let entry = unsafe { std::mem::transmute::<*const u8, EntryFn>(main_ptr) };
    let trips = trips_id.map(|id| {
        let p = module.get_finalized_function(id);
        // SAFETY: as above, with an i64 result.
        unsafe { std::mem::transmute::<*const u8, TripsFn>(p) }
    });
    Ok(CompiledCpu {
        module: Mutex::new(Some(module)),
        entry,
        trips,
        name: func.name.clone(),
        bufs: func.bufs.iter().map(|b| b.elem).collect(),
        n_dims: func.dims.len(),
        clif,
        disasm,
    })
}

/// The CLIF text of the functions `compile` would generate for `func` (before
/// Cranelift's optimizer), for `qkc emit --target clif`.
pub fn clif(func: &Func, opts: &CraneliftOptions) -> Result<String, CraneliftError> {
    let o = CraneliftOptions {
        keep_text: true,
        ..opts.clone()
    };
    Ok(compile(func, &o)?.clif.clone())
}

/// The disassembly of the machine code `compile` generates for `func`.
pub fn disasm(func: &Func, opts: &CraneliftOptions) -> Result<String, CraneliftError> {
    let o = CraneliftOptions {
        keep_text: true,
        ..opts.clone()
    };
    Ok(compile(func, &o)?.disasm.clone())
}

impl CompiledCpu {
    /// The function's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Element types of the buffers, inputs first, output last.
    pub fn buffer_elems(&self) -> &[Elem] {
        &self.bufs
    }

    /// Whether the function has a parallel loop that calls can split.
    pub fn is_parallel(&self) -> bool {
        self.trips.is_some()
    }

    /// CLIF of the generated functions (empty unless compiled with `keep_text`).
    pub fn clif(&self) -> &str {
        &self.clif
    }

    /// Disassembly of the generated code (empty unless compiled with `keep_text`).
    pub fn disasm(&self) -> &str {
        &self.disasm
    }

    fn check_call(
        &self,
        bufs: &[*mut u8],
        lens: &[i64],
        dims: &[i64],
    ) -> Result<(), CraneliftError> {
        let bad = |what, expected, got| CraneliftError::BadCall {
            func: self.name.clone(),
            what,
            expected,
            got,
        };
        if bufs.len() != self.bufs.len() {
            return Err(bad("buffers", self.bufs.len(), bufs.len()));
        }
        if lens.len() != self.bufs.len() {
            return Err(bad("buffer lengths", self.bufs.len(), lens.len()));
        }
        if dims.len() != self.n_dims {
            return Err(bad("dimensions", self.n_dims, dims.len()));
        }
        Ok(())
    }

    /// Trip count of the parallel loop for these arguments (`None`: no parallel
    /// loop; call with `0..i64::MAX`).
    ///
    /// # Safety
    ///
    /// As for [`CompiledCpu::call`].
    pub unsafe fn parallel_trips(
        &self,
        bufs: &[*mut u8],
        lens: &[i64],
        dims: &[i64],
    ) -> Result<Option<i64>, CraneliftError> {
        self.check_call(bufs, lens, dims)?;
        let Some(t) = self.trips else { return Ok(None) };
        // SAFETY: forwarded to the caller.
        let n = unsafe { t(bufs.as_ptr(), lens.as_ptr(), dims.as_ptr(), 0, 0) };
        if n >= 0 {
            return Ok(Some(n));
        }
        Err(self.status_error(n.unsigned_abs().min(i32::MAX as u64) as i32))
    }

    fn status_error(&self, status: i32) -> CraneliftError {
        let func = self.name.clone();
        match status {
            STATUS_DIV_BY_ZERO => CraneliftError::DivByZero { func },
            STATUS_OUT_OF_BOUNDS => CraneliftError::OutOfBounds { func },
            status => CraneliftError::Status { func, status },
        }
    }

    /// Runs iterations `n_lo..n_hi` of the parallel loop (the whole function when it
    /// has none).
    ///
    /// # Safety
    ///
    /// `bufs[i]` must point to `lens[i]` bytes valid for reads (and for writes, for the
    /// output), holding everything the function reads for these `dims` (the runtime
    /// checks lengths against the kernel's shapes before calling). Input buffers are
    /// never written. Concurrent calls must write disjoint parts of the output, which
    /// holds for disjoint `n_lo..n_hi` ranges of a lowered kernel.
    pub unsafe fn call(
        &self,
        bufs: &[*mut u8],
        lens: &[i64],
        dims: &[i64],
        n_lo: i64,
        n_hi: i64,
    ) -> Result<(), CraneliftError> {
        self.check_call(bufs, lens, dims)?;
        // SAFETY: forwarded to the caller.
        let status =
            unsafe { (self.entry)(bufs.as_ptr(), lens.as_ptr(), dims.as_ptr(), n_lo, n_hi) };
        if status == STATUS_OK {
            Ok(())
        } else {
            Err(self.status_error(status))
        }
    }
}
