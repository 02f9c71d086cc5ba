//! The LLVM backend (cargo feature `llvm`, LLVM 19 through `inkwell`): lowers a
//! loop-IR [`Func`] to LLVM IR ([`translate`]) and from there to
//!
//! - **host CPU** machine code: optimized at `O3` for the host CPU and its features,
//!   JIT-compiled with MCJIT ([`compile_cpu`] → [`CpuJit`]); the safe wrapper that
//!   checks buffers and splits the parallel loop across threads is
//!   `qkc_runtime::llvm_cpu::LlvmCpuKernel`;
//! - **AMDGPU** code objects for gfx90a, gfx942 and gfx1100 ([`compile_amdgpu`]): an
//!   ELF relocatable from the target machine, linked to a `.hsaco` with
//!   `ld.lld -shared` when it is installed, with resource usage read from the
//!   assembly ([`AmdgpuResources`]);
//! - **NVPTX** assembly for sm_80 and sm_90 ([`compile_nvptx`]).
//!
//! GPU targets take a GPU function ([`Launch::Gpu`]); a CPU function is first mapped
//! onto a grid, one thread per iteration of its parallel loop ([`gpu_from_cpu`]).
//!
//! # CPU calling convention
//!
//! The same as the Cranelift backend's, so runtimes can drive either:
//!
//! ```text
//! extern "C" fn(bufs: *const *mut u8, lens: *const i64, dims: *const i64,
//!               n_lo: i64, n_hi: i64) -> i32      // status
//! ```
//!
//! `bufs[i]` is buffer `i` (inputs first, output last), `lens[i]` its length in bytes
//! (read only when bounds checks are compiled in), `dims[d]` dimension `d`. The
//! parallel loop (a top-level [`crate::loop_ir::LoopKind::Parallel`] loop that only
//! `let`s precede) runs iterations `n_lo..n_hi` of its trip count, which a companion
//! function returns ([`CpuJit::parallel_trips`]). Status 0 is success, 1 an integer
//! division by zero (the interpreter's error), 2 a failed bounds check.

mod targets;
mod translate;

use inkwell::context::Context;
use inkwell::execution_engine::ExecutionEngine;
use inkwell::module::Module;
use inkwell::passes::PassBuilderOptions;
use inkwell::targets::{FileType, TargetMachine};
use inkwell::OptimizationLevel;

use crate::loop_ir::{Elem, Func, Launch};

pub use targets::{
    find_lld, gpu_from_cpu, link_hsaco, parse_amdgpu_resources, which, AmdgpuArch, AmdgpuResources,
    HostCpu, LlvmTarget, NvptxArch, DEFAULT_BLOCK,
};

use targets::{target_machine, Dot4Impl, Flavor, Lowering};

/// Why a function could not be compiled, or a compiled call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LlvmError {
    #[error("ill-formed loop IR: {0}")]
    Invalid(String),
    #[error("not supported by the LLVM backend: {0}")]
    Unsupported(String),
    #[error("LLVM target: {0}")]
    Target(String),
    #[error("LLVM: {0}")]
    Llvm(String),
    #[error("LLVM rejected the generated module: {0}")]
    Verify(String),
    #[error("linking the code object: {0}")]
    Link(String),
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

fn llvm_err(e: impl std::fmt::Display) -> LlvmError {
    LlvmError::Llvm(e.to_string())
}

/// Knobs of the CPU JIT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JitOptions {
    /// LLVM optimization level, 0..=3 (`default<On>`); the machine-code generator
    /// always runs at `O3`.
    pub opt_level: u8,
    /// Let f32 dot-product runs reduce in tree order (faster; not bit-identical to the
    /// interpreter's sequential sum). Integer runs are exact either way.
    pub reassociate: bool,
    /// Check every memory access against the buffer lengths passed at the call, and
    /// return status 2 instead of touching memory outside them.
    pub bounds_checks: bool,
    /// Use f16 conversion instructions (`None`: when the host has them, e.g. F16C);
    /// otherwise exact integer code.
    pub native_f16: Option<bool>,
    /// Keep the LLVM IR (translated and optimized) and the host assembly.
    pub keep_text: bool,
}

impl Default for JitOptions {
    fn default() -> JitOptions {
        JitOptions {
            opt_level: 3,
            reassociate: false,
            bounds_checks: false,
            native_f16: None,
            keep_text: false,
        }
    }
}

/// Text kept from a compilation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listings {
    /// The module as translated from the loop IR.
    pub ir: String,
    /// The module after the optimization pipeline.
    pub optimized_ir: String,
    /// Target assembly (host assembly, AMDGPU assembly or PTX).
    pub asm: String,
}

/// Signature of compiled CPU functions (see the module documentation).
pub type CpuEntry = unsafe extern "C" fn(*const *mut u8, *const i64, *const i64, i64, i64) -> i32;
/// Signature of the trip-count function of a CPU function's parallel loop.
pub type CpuTrips = unsafe extern "C" fn(*const *mut u8, *const i64, *const i64, i64, i64) -> i64;

/// A JIT-compiled CPU function. Owns the LLVM context and execution engine its code
/// lives in (freed on drop).
pub struct CpuJit {
    entry: CpuEntry,
    trips: Option<CpuTrips>,
    name: String,
    bufs: Vec<Elem>,
    n_dims: usize,
    text: Listings,
    // Drop order matters: the engine (which owns the module and the machine code)
    // must go before the context it was created in.
    engine: ExecutionEngine<'static>,
    _context: Box<Context>,
}

// SAFETY: `engine` and `_context` are touched only by `drop`; no `Rc` clone of the
// engine exists outside this struct (the module that held one is dropped in
// `compile_cpu`), and an LLVM context may move between threads when nothing else
// uses it. Calls go through plain function pointers into finalized, read-only machine
// code, which any number of threads may execute at once.
unsafe impl Send for CpuJit {}
// SAFETY: see `Send`; `&CpuJit` exposes only the function pointers and owned text.
unsafe impl Sync for CpuJit {}

impl std::fmt::Debug for CpuJit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuJit")
            .field("name", &self.name)
            .field("bufs", &self.bufs)
            .field("n_dims", &self.n_dims)
            .field("parallel", &self.trips.is_some())
            .finish()
    }
}

fn pass_options() -> PassBuilderOptions {
    let o = PassBuilderOptions::create();
    o.set_loop_vectorization(true);
    o.set_loop_slp_vectorization(true);
    o.set_loop_interleaving(true);
    o.set_loop_unrolling(true);
    o
}

/// Runs LLVM's `default<On>` pipeline.
fn optimize(module: &Module<'_>, tm: &TargetMachine, level: u8) -> Result<(), LlvmError> {
    let passes = format!("default<O{}>", level.min(3));
    module
        .run_passes(&passes, tm, pass_options())
        .map_err(|e| LlvmError::Llvm(format!("{passes}: {e}")))
}

/// Sets the module's triple and data layout from a target machine.
fn prepare_module(module: &Module<'_>, tm: &TargetMachine) {
    module.set_triple(&tm.get_triple());
    module.set_data_layout(&tm.get_target_data().get_data_layout());
}

fn verify(module: &Module<'_>) -> Result<(), LlvmError> {
    module
        .verify()
        .map_err(|e| LlvmError::Verify(e.to_string()))
}

fn host_lowering(opts: &JitOptions) -> Lowering {
    let host = HostCpu::detect();
    Lowering {
        flavor: Flavor::Cpu,
        addrspace: 0,
        native_f16: opts.native_f16.unwrap_or_else(|| host.native_f16()),
        dot4: Dot4Impl::Vector,
        reassociate: opts.reassociate,
        bounds_checks: opts.bounds_checks,
        packed_dot: host.packed_dot(),
        cpu_attrs: Some((host.cpu, host.features)),
    }
}

/// JIT-compiles a CPU function for the host.
pub fn compile_cpu(f: &Func, opts: &JitOptions) -> Result<CpuJit, LlvmError> {
    if !matches!(f.launch, Launch::Cpu) {
        return Err(LlvmError::Unsupported(format!(
            "`{}` is a GPU kernel; the CPU JIT compiles CPU functions",
            f.name
        )));
    }
    let low = host_lowering(opts);
    let tm = target_machine(LlvmTarget::Host)?;
    let context = Box::new(Context::create());
    // SAFETY: the context lives in a box owned by the returned `CpuJit` (or dropped at
    // the end of this function), and everything borrowing it — the module, the
    // engine — is dropped before it: locals in reverse order of declaration, and the
    // struct's `engine` field before its `_context` field. The box keeps its address
    // stable while the value moves.
    let ctx: &'static Context = unsafe { &*(context.as_ref() as *const Context) };
    let module = ctx.create_module(&f.name);
    prepare_module(&module, &tm);
    let built = translate::translate(ctx, &module, f, &low)?;
    verify(&module)?;
    let mut text = Listings::default();
    if opts.keep_text {
        text.ir = module.print_to_string().to_string();
    }
    optimize(&module, &tm, opts.opt_level)?;
    if opts.keep_text {
        text.optimized_ir = module.print_to_string().to_string();
        let copy = module.clone();
        let asm = tm
            .write_to_memory_buffer(&copy, FileType::Assembly)
            .map_err(llvm_err)?;
        text.asm = String::from_utf8_lossy(asm.as_slice()).into_owned();
    }
    let engine = module
        .create_jit_execution_engine(OptimizationLevel::Aggressive)
        .map_err(|e| LlvmError::Llvm(format!("MCJIT: {e}")))?;
    let main = engine
        .get_function_address(&built.main)
        .map_err(|e| LlvmError::Llvm(format!("{}: {e}", built.main)))?;
    let trips = match &built.trips {
        Some(t) => Some(
            engine
                .get_function_address(t)
                .map_err(|e| LlvmError::Llvm(format!("{t}: {e}")))?,
        ),
        None => None,
    };
    drop(module);
    // SAFETY: both functions were defined by `translate` with exactly these
    // signatures under the C calling convention.
    let entry = unsafe { std::mem::transmute::<usize, CpuEntry>(main) };
    let trips = trips.map(|t| unsafe { std::mem::transmute::<usize, CpuTrips>(t) });
    Ok(CpuJit {
        entry,
        trips,
        name: f.name.clone(),
        bufs: f.bufs.iter().map(|b| b.elem).collect(),
        n_dims: f.dims.len(),
        text,
        engine,
        _context: context,
    })
}

impl CpuJit {
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

    /// IR and assembly (empty unless compiled with [`JitOptions::keep_text`]).
    pub fn listings(&self) -> &Listings {
        &self.text
    }

    /// The execution engine (for inspection; the code is already finalized).
    pub fn engine(&self) -> &ExecutionEngine<'static> {
        &self.engine
    }

    fn check_call(&self, bufs: &[*mut u8], lens: &[i64], dims: &[i64]) -> Result<(), LlvmError> {
        let bad = |what, expected, got| LlvmError::BadCall {
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
    /// As for [`CpuJit::call`].
    pub unsafe fn parallel_trips(
        &self,
        bufs: &[*mut u8],
        lens: &[i64],
        dims: &[i64],
    ) -> Result<Option<i64>, LlvmError> {
        self.check_call(bufs, lens, dims)?;
        match self.trips {
            // SAFETY: forwarded to the caller.
            Some(t) => Ok(Some(unsafe {
                t(bufs.as_ptr(), lens.as_ptr(), dims.as_ptr(), 0, 0)
            })),
            None => Ok(None),
        }
    }

    /// Runs iterations `n_lo..n_hi` of the parallel loop (the whole function when it
    /// has none).
    ///
    /// # Safety
    ///
    /// `bufs[i]` must point to `lens[i]` bytes valid for reads (and for writes, for the
    /// output), aligned for the buffer's element type, holding everything the
    /// function reads for these `dims` (the runtime checks lengths against the
    /// kernel's shapes before calling). Input buffers are never written. Concurrent
    /// calls must write disjoint parts of the output, which holds for disjoint
    /// `n_lo..n_hi` ranges of a lowered kernel.
    pub unsafe fn call(
        &self,
        bufs: &[*mut u8],
        lens: &[i64],
        dims: &[i64],
        n_lo: i64,
        n_hi: i64,
    ) -> Result<(), LlvmError> {
        self.check_call(bufs, lens, dims)?;
        // SAFETY: forwarded to the caller; the arrays have the lengths the code reads.
        let status =
            unsafe { (self.entry)(bufs.as_ptr(), lens.as_ptr(), dims.as_ptr(), n_lo, n_hi) };
        match status as u64 {
            translate::STATUS_OK => Ok(()),
            translate::STATUS_DIV_BY_ZERO => Err(LlvmError::DivByZero {
                func: self.name.clone(),
            }),
            translate::STATUS_OUT_OF_BOUNDS => Err(LlvmError::OutOfBounds {
                func: self.name.clone(),
            }),
            _ => Err(LlvmError::Status {
                func: self.name.clone(),
                status,
            }),
        }
    }
}

/// The function a GPU target compiles: `f` itself if it is a GPU kernel, else `f`
/// mapped onto a grid of [`DEFAULT_BLOCK`]-thread blocks.
pub fn gpu_func(f: &Func) -> Result<Func, LlvmError> {
    gpu_from_cpu(f, DEFAULT_BLOCK)
}

/// Translates `f` for `target` and returns the LLVM module as text, before
/// (`optimized == false`) or after the `O3` pipeline. GPU targets map CPU functions
/// onto a grid first ([`gpu_func`]).
pub fn emit_ir(f: &Func, target: LlvmTarget, optimized: bool) -> Result<String, LlvmError> {
    let tm = target_machine(target)?;
    let context = Context::create();
    let module = context.create_module(&f.name);
    prepare_module(&module, &tm);
    match target {
        LlvmTarget::Host => {
            translate::translate(&context, &module, f, &host_lowering(&JitOptions::default()))?;
        }
        t => {
            let g = gpu_func(f)?;
            translate::translate(&context, &module, &g, &Lowering::gpu(t))?;
        }
    }
    verify(&module)?;
    if optimized {
        optimize(&module, &tm, 3)?;
    }
    Ok(module.print_to_string().to_string())
}

/// Compiles a GPU function: the optimized module, its assembly and (AMDGPU) object.
fn compile_gpu(
    f: &Func,
    target: LlvmTarget,
) -> Result<(Func, Listings, Option<Vec<u8>>), LlvmError> {
    let g = gpu_func(f)?;
    let tm = target_machine(target)?;
    let context = Context::create();
    let module = context.create_module(&g.name);
    prepare_module(&module, &tm);
    translate::translate(&context, &module, &g, &Lowering::gpu(target))?;
    verify(&module)?;
    let mut text = Listings {
        ir: module.print_to_string().to_string(),
        ..Listings::default()
    };
    optimize(&module, &tm, 3)?;
    text.optimized_ir = module.print_to_string().to_string();
    // Code generation rewrites the module, so each output gets its own copy.
    let copy = module.clone();
    let asm = tm
        .write_to_memory_buffer(&copy, FileType::Assembly)
        .map_err(llvm_err)?;
    text.asm = String::from_utf8_lossy(asm.as_slice()).into_owned();
    let object = match target {
        LlvmTarget::Amdgpu(_) => Some(
            tm.write_to_memory_buffer(&module, FileType::Object)
                .map_err(llvm_err)?
                .as_slice()
                .to_vec(),
        ),
        _ => None,
    };
    Ok((g, text, object))
}

/// An AMDGPU code object.
#[derive(Clone, Debug)]
pub struct AmdgpuCode {
    pub arch: AmdgpuArch,
    /// The kernel symbol.
    pub kernel: String,
    /// The GPU function that was compiled (after [`gpu_func`]).
    pub func: Func,
    pub text: Listings,
    /// The ELF relocatable object from the target machine.
    pub object: Vec<u8>,
    /// The linked code object (`ld.lld -shared`), when `ld.lld` was found.
    pub hsaco: Option<Vec<u8>>,
    /// Register, spill and scratch usage of each kernel, from the assembly.
    pub resources: Vec<AmdgpuResources>,
}

/// Compiles `f` to an AMDGPU code object for `arch`.
pub fn compile_amdgpu(f: &Func, arch: AmdgpuArch) -> Result<AmdgpuCode, LlvmError> {
    let (g, text, object) = compile_gpu(f, LlvmTarget::Amdgpu(arch))?;
    let object = object.ok_or_else(|| LlvmError::Llvm("no object emitted".into()))?;
    let kernel = translate::symbol(&g.name);
    let hsaco = match find_lld() {
        Some(lld) => Some(link_hsaco(
            &lld,
            &object,
            &format!("{kernel}-{}", arch.name()),
        )?),
        None => None,
    };
    let resources = parse_amdgpu_resources(&text.asm);
    Ok(AmdgpuCode {
        arch,
        kernel,
        func: g,
        text,
        object,
        hsaco,
        resources,
    })
}

/// PTX for an NVIDIA GPU.
#[derive(Clone, Debug)]
pub struct NvptxCode {
    pub arch: NvptxArch,
    /// The kernel symbol (`.entry`).
    pub kernel: String,
    /// The GPU function that was compiled (after [`gpu_func`]).
    pub func: Func,
    /// `text.asm` is the PTX.
    pub text: Listings,
}

impl NvptxCode {
    pub fn ptx(&self) -> &str {
        &self.text.asm
    }
}

/// Compiles `f` to PTX for `arch`.
pub fn compile_nvptx(f: &Func, arch: NvptxArch) -> Result<NvptxCode, LlvmError> {
    let (g, text, _) = compile_gpu(f, LlvmTarget::Nvptx(arch))?;
    Ok(NvptxCode {
        arch,
        kernel: translate::symbol(&g.name),
        func: g,
        text,
    })
}
