//! Loop IR → LLVM IR, one operation at a time, with the semantics of the loop-IR
//! interpreter ([`crate::loop_ir::eval`]).
//!
//! - Every loop-IR variable is an `alloca` (zero-initialised, as in the interpreter);
//!   `mem2reg`/SROA turn them into SSA values.
//! - Integer arithmetic wraps (no `nsw`/`nuw`), shift amounts are masked to the
//!   width, division by zero returns status 1 on the CPU (the interpreter's error)
//!   and `i32::MIN / -1` wraps; f32 `min`/`max` are `minnum`/`maxnum`; f32 → int
//!   casts saturate (`fptosi.sat`), as Rust's `as` does.
//! - `DotRun` is a vector operation: a `<L x T>` load of the activations, widened to
//!   the accumulator type, times a code vector built with `insertelement`, reduced
//!   with `llvm.vector.reduce.add` (exact for integers) or the *ordered*
//!   `llvm.vector.reduce.fadd` (bit-identical to the interpreter's sequential sum
//!   unless reassociation is allowed). On GPUs with 4-way i8 dot instructions an i8
//!   run whose codes are provably 8-bit fields uses them four products at a time.
//!   When a loop body's only use of an accumulator is `acc = dot_run(.., acc)`, the
//!   runs add lane-wise into a vector zeroed before the loop and reduced once after
//!   it (integers always, exact; f32 only when reassociation is allowed).
//! - f16/bf16 loads and stores convert exactly (round to nearest even), with
//!   instructions where the target has them and integer code otherwise, so compiled
//!   code never calls a runtime library.
//! - GPU functions read `Special`s from `llvm.amdgcn.workitem.id.x` /
//!   `llvm.nvvm.read.ptx.sreg.tid.x` and friends; `WarpSum` is a butterfly over the
//!   32 lanes of a loop-IR warp (`ds_bpermute` on AMDGPU, which keeps the exchange
//!   inside each half of a 64-wide wave, `shfl.sync.bfly` on NVPTX).
//!
//! CPU functions follow the Cranelift backend's calling convention
//! ([`super::CpuEntry`]): `i32 (ptr bufs, ptr lens, ptr dims, i64 n_lo, i64 n_hi)`.
//! The body is an internal, always-inlined function taking the buffers as `noalias`
//! pointers, so LLVM knows inputs and output never overlap.

mod packed;

use std::collections::HashMap;

use inkwell::attributes::{Attribute, AttributeLoc};
use inkwell::basic_block::BasicBlock;
use inkwell::builder::{Builder, BuilderError};
use inkwell::context::Context;
use inkwell::intrinsics::Intrinsic;
use inkwell::module::{Linkage, Module};
use inkwell::types::{BasicMetadataTypeEnum, BasicTypeEnum, IntType, VectorType};
use inkwell::values::{
    BasicMetadataValueEnum, BasicValue, BasicValueEnum, FloatValue, FunctionValue, IntValue,
    PointerValue, VectorValue,
};
use inkwell::{AddressSpace, FloatPredicate, IntPredicate};

use super::targets::{Dot4Impl, Flavor, Lowering};
use super::LlvmError;
use crate::loop_ir::{BinOp, CmpOp, Elem, Expr, Func, Launch, LoopKind, Special, Stmt, Ty, Var};

/// Status codes returned by CPU functions (the Cranelift backend's values).
pub(crate) const STATUS_OK: u64 = 0;
pub(crate) const STATUS_DIV_BY_ZERO: u64 = 1;
pub(crate) const STATUS_OUT_OF_BOUNDS: u64 = 2;

impl From<BuilderError> for LlvmError {
    fn from(e: BuilderError) -> LlvmError {
        LlvmError::Llvm(format!("IR builder: {e}"))
    }
}

/// Names of the functions a translation defined.
#[derive(Clone, Debug)]
pub(crate) struct Built {
    /// The entry point (CPU wrapper or GPU kernel).
    pub main: String,
    /// The CPU trip-count function of the parallel loop, if there is one.
    pub trips: Option<String>,
}

/// Symbol-safe spelling of a kernel name.
pub(crate) fn symbol(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Index of the parallel loop the CPU runtime splits: a top-level `Parallel` loop with
/// a positive step that only `let`s and comments precede (as in the Cranelift backend).
pub(crate) fn parallel_loop(f: &Func) -> Option<usize> {
    for (i, s) in f.body.iter().enumerate() {
        match s {
            Stmt::For {
                kind: LoopKind::Parallel,
                step,
                ..
            } if *step >= 1 => return Some(i),
            Stmt::Let(..) | Stmt::Comment(_) => {}
            _ => return None,
        }
    }
    None
}

/// Translates `f` into `module`.
pub(crate) fn translate<'ctx>(
    ctx: &'ctx Context,
    module: &Module<'ctx>,
    f: &Func,
    low: &Lowering,
) -> Result<Built, LlvmError> {
    if f.bufs.is_empty() {
        return Err(LlvmError::Invalid(format!("`{}` has no buffers", f.name)));
    }
    check_func(f)?;
    match (low.flavor, &f.launch) {
        (Flavor::Cpu, Launch::Cpu) => build_cpu(ctx, module, f, low),
        (Flavor::Cpu, Launch::Gpu { .. }) => Err(LlvmError::Unsupported(format!(
            "`{}` is a GPU kernel; the CPU target compiles CPU functions",
            f.name
        ))),
        (_, Launch::Gpu { block, .. }) => build_gpu(ctx, module, f, low, *block),
        (_, Launch::Cpu) => Err(LlvmError::Unsupported(format!(
            "`{}` is a CPU function; map it onto a grid first (llvm::gpu_from_cpu)",
            f.name
        ))),
    }
}

/// Checks variable and buffer references so that translation never indexes out of range.
fn check_func(f: &Func) -> Result<(), LlvmError> {
    fn e(f: &Func, x: &Expr) -> Result<(), LlvmError> {
        let bad = |what: String| Err(LlvmError::Invalid(format!("`{}`: {what}", f.name)));
        match x {
            Expr::Int(..) | Expr::F32(_) | Expr::Special(_) => Ok(()),
            Expr::Var(v) if (v.0 as usize) < f.vars.len() => Ok(()),
            Expr::Var(v) => bad(format!("undeclared variable %{}", v.0)),
            Expr::Dim(d) if *d < f.dims.len() => Ok(()),
            Expr::Dim(d) => bad(format!("dimension {d} out of range")),
            Expr::Bin(_, a, b) | Expr::Cmp(_, a, b) => e(f, a).and(e(f, b)),
            Expr::Select(c, a, b) => e(f, c).and(e(f, a)).and(e(f, b)),
            Expr::Cast(_, a) => e(f, a),
            Expr::Load { buf, index: a } | Expr::LoadBytes { buf, offset: a, .. } => {
                if *buf >= f.bufs.len() {
                    return bad(format!("buffer {buf} out of range"));
                }
                if let Expr::LoadBytes { bytes, .. } = x {
                    if !(1..=8).contains(bytes) {
                        return bad(format!("byte load of {bytes} bytes"));
                    }
                }
                e(f, a)
            }
            Expr::Bfe { value, .. } => e(f, value),
            Expr::DotRun {
                buf,
                index,
                codes,
                acc,
            } => {
                if *buf >= f.bufs.len() {
                    return bad(format!("buffer {buf} out of range"));
                }
                if let Some(c) = codes.iter().find(|c| c.0 as usize >= f.vars.len()) {
                    return bad(format!("undeclared variable %{}", c.0));
                }
                e(f, index).and(e(f, acc))
            }
            Expr::Dot4 { a, b, acc } => e(f, a).and(e(f, b)).and(e(f, acc)),
            Expr::BytePerm { a, b, .. } => e(f, a).and(e(f, b)),
            Expr::FromBits(a) | Expr::F16ToF32(a) => e(f, a),
            Expr::DotPacked {
                act,
                act_index,
                wbuf,
                byte_offset,
                layout,
                count,
                acc,
            } => {
                if *act >= f.bufs.len() || *wbuf >= f.bufs.len() {
                    return bad("dot_packed buffer out of range".into());
                }
                if let Some(why) = packed::unsupported_reason(layout, *count, f.bufs[*act].elem) {
                    return Err(LlvmError::Unsupported(format!("dot_packed over {why}")));
                }
                e(f, act_index).and(e(f, byte_offset)).and(e(f, acc))
            }
            Expr::LoadShared(_) => Err(LlvmError::Unsupported(
                "shared-memory staging (a PTX-backend GEMV option)".into(),
            )),
            Expr::HFma2 { .. } => Err(LlvmError::Unsupported(
                "packed f16 arithmetic (a PTX-backend GEMV path)".into(),
            )),
        }
    }
    fn s(f: &Func, body: &[Stmt]) -> Result<(), LlvmError> {
        let var = |v: &Var| {
            if (v.0 as usize) < f.vars.len() {
                Ok(())
            } else {
                Err(LlvmError::Invalid(format!(
                    "`{}`: undeclared variable %{}",
                    f.name, v.0
                )))
            }
        };
        let buf = |b: usize| {
            if b < f.bufs.len() {
                Ok(())
            } else {
                Err(LlvmError::Invalid(format!(
                    "`{}`: buffer {b} out of range",
                    f.name
                )))
            }
        };
        for st in body {
            match st {
                Stmt::Let(v, x) | Stmt::Set(v, x) => {
                    var(v)?;
                    e(f, x)?
                }
                Stmt::For {
                    var: v,
                    start,
                    end,
                    step,
                    body,
                    ..
                } => {
                    var(v)?;
                    if *step < 1 {
                        return Err(LlvmError::Unsupported(format!(
                            "`{}`: loop step {step} (steps must be positive)",
                            f.name
                        )));
                    }
                    e(f, start)?;
                    e(f, end)?;
                    s(f, body)?
                }
                Stmt::If { cond, then } => {
                    e(f, cond)?;
                    s(f, then)?
                }
                Stmt::Store {
                    buf: b,
                    index,
                    value,
                } => {
                    buf(*b)?;
                    e(f, index)?;
                    e(f, value)?
                }
                Stmt::LoadVec4 {
                    dst,
                    buf: b,
                    offset,
                } => {
                    buf(*b)?;
                    for d in dst {
                        var(d)?;
                    }
                    e(f, offset)?
                }
                Stmt::WarpSum(v) => var(v)?,
                Stmt::StoreShared4 { .. } | Stmt::WarpSync | Stmt::BlockSync | Stmt::Async(_) => {
                    return Err(LlvmError::Unsupported(
                        "shared-memory staging (a PTX-backend GEMV option)".into(),
                    ))
                }
                Stmt::Mma { .. } => {
                    return Err(LlvmError::Unsupported(
                        "tensor-core matrix multiply-accumulate (a PTX-backend GEMV path)".into(),
                    ))
                }
                Stmt::Comment(_) => {}
            }
        }
        Ok(())
    }
    s(f, &f.body)
}

fn enum_attr(ctx: &Context, name: &str) -> Attribute {
    ctx.create_enum_attribute(Attribute::get_named_enum_kind_id(name), 0)
}

/// Adds `noalias nocapture` (and `readonly` for inputs) to buffer parameters.
fn buffer_param_attrs(ctx: &Context, func: FunctionValue<'_>, f: &Func) {
    for (i, b) in f.bufs.iter().enumerate() {
        func.add_attribute(AttributeLoc::Param(i as u32), enum_attr(ctx, "noalias"));
        func.add_attribute(AttributeLoc::Param(i as u32), enum_attr(ctx, "nocapture"));
        if !b.output {
            func.add_attribute(AttributeLoc::Param(i as u32), enum_attr(ctx, "readonly"));
        }
    }
}

fn cpu_attrs(ctx: &Context, func: FunctionValue<'_>, low: &Lowering) {
    if let Some((cpu, features)) = &low.cpu_attrs {
        func.add_attribute(
            AttributeLoc::Function,
            ctx.create_string_attribute("target-cpu", cpu),
        );
        func.add_attribute(
            AttributeLoc::Function,
            ctx.create_string_attribute("target-features", features),
        );
    }
    func.add_attribute(AttributeLoc::Function, enum_attr(ctx, "nounwind"));
}

fn param<'ctx>(func: FunctionValue<'ctx>, i: usize) -> Result<BasicValueEnum<'ctx>, LlvmError> {
    func.get_nth_param(i as u32)
        .ok_or_else(|| LlvmError::Llvm(format!("missing parameter {i}")))
}

/// Buffer pointers, buffer lengths and dimensions of a CPU call.
type CallArgs<'ctx> = (
    Vec<PointerValue<'ctx>>,
    Vec<IntValue<'ctx>>,
    Vec<IntValue<'ctx>>,
);

fn build_cpu<'ctx>(
    ctx: &'ctx Context,
    module: &Module<'ctx>,
    f: &Func,
    low: &Lowering,
) -> Result<Built, LlvmError> {
    let name = format!("qkc_{}", symbol(&f.name));
    let ptr = ctx.ptr_type(AddressSpace::default());
    let i64t = ctx.i64_type();
    let i32t = ctx.i32_type();
    let nb = f.bufs.len();
    let nd = f.dims.len();
    let par = parallel_loop(f);

    // The body: (bufs..., lens..., dims..., n_lo, n_hi) -> status.
    let mut params: Vec<BasicMetadataTypeEnum> = Vec::new();
    params.extend((0..nb).map(|_| BasicMetadataTypeEnum::from(ptr)));
    params.extend((0..nb + nd + 2).map(|_| BasicMetadataTypeEnum::from(i64t)));
    let body_fn = module.add_function(
        &format!("{name}.body"),
        i32t.fn_type(&params, false),
        Some(Linkage::Internal),
    );
    buffer_param_attrs(ctx, body_fn, f);
    body_fn.add_attribute(AttributeLoc::Function, enum_attr(ctx, "alwaysinline"));
    cpu_attrs(ctx, body_fn, low);
    {
        let mut args = Vec::new();
        for i in 0..nb + nb + nd + 2 {
            args.push(param(body_fn, i)?);
        }
        let bufs = args[..nb].iter().map(|v| v.into_pointer_value()).collect();
        let lens = args[nb..2 * nb]
            .iter()
            .map(|v| v.into_int_value())
            .collect();
        let dims = args[2 * nb..2 * nb + nd]
            .iter()
            .map(|v| v.into_int_value())
            .collect();
        let range = Some((
            args[2 * nb + nd].into_int_value(),
            args[2 * nb + nd + 1].into_int_value(),
        ));
        let mut t = Tr::new(ctx, module, f, low, body_fn, bufs, lens, dims, range, par)?;
        t.stmts(&f.body, true)?;
        t.b.build_return(Some(&i32t.const_int(STATUS_OK, false)))?;
    }

    // The entry: unpacks the argument arrays and calls the body.
    let abi = [ptr.into(), ptr.into(), ptr.into(), i64t.into(), i64t.into()];
    let main = module.add_function(&name, i32t.fn_type(&abi, false), None);
    cpu_attrs(ctx, main, low);
    let unpack =
        |func: FunctionValue<'ctx>, b: &Builder<'ctx>| -> Result<CallArgs<'ctx>, LlvmError> {
            let entry = ctx.append_basic_block(func, "entry");
            b.position_at_end(entry);
            let (pb, pl, pd) = (
                param(func, 0)?.into_pointer_value(),
                param(func, 1)?.into_pointer_value(),
                param(func, 2)?.into_pointer_value(),
            );
            let mut bufs = Vec::new();
            let mut lens = Vec::new();
            let mut dims = Vec::new();
            for i in 0..nb {
                let idx = i64t.const_int(i as u64, false);
                // SAFETY (LLVM IR semantics, not Rust): in-bounds of the caller's arrays.
                let p = unsafe { b.build_in_bounds_gep(ptr, pb, &[idx], "bufp")? };
                bufs.push(b.build_load(ptr, p, "buf")?.into_pointer_value());
                let p = unsafe { b.build_in_bounds_gep(i64t, pl, &[idx], "lenp")? };
                lens.push(b.build_load(i64t, p, "len")?.into_int_value());
            }
            for d in 0..nd {
                let idx = i64t.const_int(d as u64, false);
                let p = unsafe { b.build_in_bounds_gep(i64t, pd, &[idx], "dimp")? };
                dims.push(b.build_load(i64t, p, &format!("dim{d}"))?.into_int_value());
            }
            Ok((bufs, lens, dims))
        };
    let b = ctx.create_builder();
    let (bufs, lens, dims) = unpack(main, &b)?;
    let mut call_args: Vec<BasicMetadataValueEnum> = Vec::new();
    call_args.extend(bufs.iter().map(|&p| BasicMetadataValueEnum::from(p)));
    call_args.extend(lens.iter().map(|&v| BasicMetadataValueEnum::from(v)));
    call_args.extend(dims.iter().map(|&v| BasicMetadataValueEnum::from(v)));
    call_args.push(param(main, 3)?.into());
    call_args.push(param(main, 4)?.into());
    let status = b
        .build_call(body_fn, &call_args, "status")?
        .try_as_basic_value()
        .basic()
        .ok_or_else(|| LlvmError::Llvm("body returns no value".into()))?;
    b.build_return(Some(&status))?;

    // The trip count of the parallel loop.
    let trips = match par {
        Some(p) => {
            let tname = format!("{name}__trips");
            let tf = module.add_function(&tname, i64t.fn_type(&abi, false), None);
            cpu_attrs(ctx, tf, low);
            let (bufs, lens, dims) = unpack(tf, &b)?;
            let mut t = Tr::new_at(ctx, module, f, low, tf, bufs, lens, dims, None, None, b)?;
            t.stmts(&f.body[..p], true)?;
            let Stmt::For {
                start, end, step, ..
            } = &f.body[p]
            else {
                return Err(LlvmError::Invalid("parallel loop vanished".into()));
            };
            let s = t.int_of(start, Ty::I64)?;
            let e = t.int_of(end, Ty::I64)?;
            let n = t.trip_count(s, e, *step)?;
            t.b.build_return(Some(&n))?;
            Some(tname)
        }
        None => None,
    };
    Ok(Built { main: name, trips })
}

fn build_gpu<'ctx>(
    ctx: &'ctx Context,
    module: &Module<'ctx>,
    f: &Func,
    low: &Lowering,
    block: u32,
) -> Result<Built, LlvmError> {
    let name = symbol(&f.name);
    let ptr = ctx.ptr_type(AddressSpace::from(low.addrspace));
    let i64t = ctx.i64_type();
    let mut params: Vec<BasicMetadataTypeEnum> = Vec::new();
    params.extend(f.bufs.iter().map(|_| BasicMetadataTypeEnum::from(ptr)));
    params.extend(f.dims.iter().map(|_| BasicMetadataTypeEnum::from(i64t)));
    let func = module.add_function(&name, ctx.void_type().fn_type(&params, false), None);
    buffer_param_attrs(ctx, func, f);
    func.add_attribute(AttributeLoc::Function, enum_attr(ctx, "nounwind"));
    match low.flavor {
        Flavor::Amdgpu => {
            func.set_call_conventions(AMDGPU_KERNEL_CC);
            func.add_attribute(
                AttributeLoc::Function,
                ctx.create_string_attribute("amdgpu-flat-work-group-size", &format!("1,{block}")),
            );
        }
        Flavor::Nvptx => {
            let i32t = ctx.i32_type();
            let fp: BasicMetadataValueEnum = func.as_global_value().as_pointer_value().into();
            for (key, v) in [("kernel", 1u64), ("maxntidx", block as u64)] {
                let md = ctx.metadata_node(&[
                    fp,
                    ctx.metadata_string(key).into(),
                    i32t.const_int(v, false).into(),
                ]);
                module
                    .add_global_metadata("nvvm.annotations", &md)
                    .map_err(|e| LlvmError::Llvm(format!("nvvm.annotations: {e}")))?;
            }
        }
        Flavor::Cpu => {}
    }
    let nb = f.bufs.len();
    let mut args = Vec::new();
    for i in 0..nb + f.dims.len() {
        args.push(param(func, i)?);
    }
    let bufs = args[..nb].iter().map(|v| v.into_pointer_value()).collect();
    let dims = args[nb..].iter().map(|v| v.into_int_value()).collect();
    let mut t = Tr::new(
        ctx,
        module,
        f,
        low,
        func,
        bufs,
        Vec::new(),
        dims,
        None,
        None,
    )?;
    t.block = block;
    t.stmts(&f.body, true)?;
    t.b.build_return(None)?;
    Ok(Built {
        main: name,
        trips: None,
    })
}

/// LLVM's `amdgpu_kernel` calling convention.
const AMDGPU_KERNEL_CC: u32 = 91;

/// Whether evaluating `e` may touch memory (then `Select` must not evaluate both arms).
fn touches_memory(e: &Expr) -> bool {
    match e {
        Expr::Load { .. }
        | Expr::LoadBytes { .. }
        | Expr::DotRun { .. }
        | Expr::DotPacked { .. }
        | Expr::LoadShared(_) => true,
        // A division may reach the division-by-zero exit.
        Expr::Bin(BinOp::Div | BinOp::Rem, ..) => true,
        _ => e.children().into_iter().any(touches_memory),
    }
}

/// Variables that hold a bit field of at most 8 bits (`let c = bfe(..)`, possibly
/// cast to i32, never reassigned): `(len, signed)`.
fn small_fields(f: &Func) -> HashMap<Var, (u8, bool)> {
    fn walk(body: &[Stmt], lets: &mut HashMap<Var, (u8, bool)>, set: &mut Vec<Var>) {
        for s in body {
            match s {
                Stmt::Let(v, e) => {
                    let inner = match e {
                        Expr::Cast(Ty::I32, x) => x.as_ref(),
                        x => x,
                    };
                    if let Expr::Bfe { len, signed, .. } = inner {
                        if *len >= 1 && *len <= 8 {
                            lets.insert(*v, (*len, *signed));
                        }
                    }
                }
                Stmt::Set(v, _) | Stmt::WarpSum(v) => set.push(*v),
                Stmt::LoadVec4 { dst, .. } => set.extend(dst),
                Stmt::Mma { d, .. } => set.extend(d),
                Stmt::For { var, body, .. } => {
                    set.push(*var);
                    walk(body, lets, set)
                }
                Stmt::If { then, .. } => walk(then, lets, set),
                Stmt::Store { .. }
                | Stmt::StoreShared4 { .. }
                | Stmt::WarpSync
                | Stmt::BlockSync
                | Stmt::Async(_)
                | Stmt::Comment(_) => {}
            }
        }
    }
    let mut lets = HashMap::new();
    let mut set = Vec::new();
    walk(&f.body, &mut lets, &mut set);
    for v in set {
        lets.remove(&v);
    }
    lets
}

/// The translator of one function body.
struct Tr<'a, 'ctx> {
    ctx: &'ctx Context,
    module: &'a Module<'ctx>,
    b: Builder<'ctx>,
    f: &'a Func,
    low: &'a Lowering,
    func: FunctionValue<'ctx>,
    vars: Vec<PointerValue<'ctx>>,
    bufs: Vec<PointerValue<'ctx>>,
    lens: Vec<IntValue<'ctx>>,
    dims: Vec<IntValue<'ctx>>,
    /// CPU: the iteration range `n_lo..n_hi` of the parallel loop.
    range: Option<(IntValue<'ctx>, IntValue<'ctx>)>,
    par: Option<usize>,
    small: HashMap<Var, (u8, bool)>,
    fail: HashMap<u64, BasicBlock<'ctx>>,
    /// GPU threads per block (`Special::BlockDim`).
    block: u32,
    /// The entry block, where `alloca`s go.
    entry: BasicBlock<'ctx>,
    /// Accumulators whose dot-product runs are summed lane-wise while the enclosing
    /// loop runs and reduced once after it: variable → `<L x T>` slot.
    vacc: HashMap<Var, (PointerValue<'ctx>, VectorType<'ctx>)>,
}

impl<'a, 'ctx> Tr<'a, 'ctx> {
    #[allow(clippy::too_many_arguments)]
    fn new(
        ctx: &'ctx Context,
        module: &'a Module<'ctx>,
        f: &'a Func,
        low: &'a Lowering,
        func: FunctionValue<'ctx>,
        bufs: Vec<PointerValue<'ctx>>,
        lens: Vec<IntValue<'ctx>>,
        dims: Vec<IntValue<'ctx>>,
        range: Option<(IntValue<'ctx>, IntValue<'ctx>)>,
        par: Option<usize>,
    ) -> Result<Tr<'a, 'ctx>, LlvmError> {
        let b = ctx.create_builder();
        let entry = ctx.append_basic_block(func, "entry");
        b.position_at_end(entry);
        Tr::new_at(ctx, module, f, low, func, bufs, lens, dims, range, par, b)
    }

    /// A translator continuing at the builder's position (in the entry block).
    #[allow(clippy::too_many_arguments)]
    fn new_at(
        ctx: &'ctx Context,
        module: &'a Module<'ctx>,
        f: &'a Func,
        low: &'a Lowering,
        func: FunctionValue<'ctx>,
        bufs: Vec<PointerValue<'ctx>>,
        lens: Vec<IntValue<'ctx>>,
        dims: Vec<IntValue<'ctx>>,
        range: Option<(IntValue<'ctx>, IntValue<'ctx>)>,
        par: Option<usize>,
        b: Builder<'ctx>,
    ) -> Result<Tr<'a, 'ctx>, LlvmError> {
        let entry = b
            .get_insert_block()
            .ok_or_else(|| LlvmError::Llvm("builder not positioned".into()))?;
        let mut t = Tr {
            ctx,
            module,
            b,
            f,
            low,
            func,
            vars: Vec::new(),
            bufs,
            lens,
            dims,
            range,
            par,
            small: small_fields(f),
            fail: HashMap::new(),
            block: 1,
            entry,
            vacc: HashMap::new(),
        };
        for (i, v) in f.vars.iter().enumerate() {
            let ty = t.ty(v.ty);
            let slot = t.b.build_alloca(ty, &format!("{}.{i}", symbol(&v.name)))?;
            t.b.build_store(slot, ty.const_zero())?;
            t.vars.push(slot);
        }
        Ok(t)
    }

    // ---- types and constants ----

    fn ty(&self, t: Ty) -> BasicTypeEnum<'ctx> {
        match t {
            Ty::I32 => self.ctx.i32_type().into(),
            Ty::I64 => self.ctx.i64_type().into(),
            Ty::F32 => self.ctx.f32_type().into(),
        }
    }

    fn ity(&self, t: Ty) -> IntType<'ctx> {
        match t {
            Ty::I64 => self.ctx.i64_type(),
            _ => self.ctx.i32_type(),
        }
    }

    fn i32c(&self, v: i64) -> IntValue<'ctx> {
        self.ctx.i32_type().const_int(v as u64, true)
    }

    fn i64c(&self, v: i64) -> IntValue<'ctx> {
        self.ctx.i64_type().const_int(v as u64, true)
    }

    fn splat(&self, v: IntValue<'ctx>, n: u32) -> VectorValue<'ctx> {
        VectorType::const_vector(&vec![v; n as usize])
    }

    fn intrinsic(
        &self,
        name: &str,
        tys: &[BasicTypeEnum<'ctx>],
    ) -> Result<FunctionValue<'ctx>, LlvmError> {
        Intrinsic::find(name)
            .and_then(|i| i.get_declaration(self.module, tys))
            .ok_or_else(|| LlvmError::Llvm(format!("intrinsic {name} is not available")))
    }

    fn call(
        &self,
        func: FunctionValue<'ctx>,
        args: &[BasicMetadataValueEnum<'ctx>],
    ) -> Result<BasicValueEnum<'ctx>, LlvmError> {
        self.b
            .build_call(func, args, "")?
            .try_as_basic_value()
            .basic()
            .ok_or_else(|| LlvmError::Llvm("call returns no value".into()))
    }

    fn call_intrinsic(
        &self,
        name: &str,
        tys: &[BasicTypeEnum<'ctx>],
        args: &[BasicMetadataValueEnum<'ctx>],
    ) -> Result<BasicValueEnum<'ctx>, LlvmError> {
        let func = self.intrinsic(name, tys)?;
        self.call(func, args)
    }

    // ---- value plumbing ----

    fn int(&self, v: BasicValueEnum<'ctx>) -> Result<IntValue<'ctx>, LlvmError> {
        match v {
            BasicValueEnum::IntValue(i) => Ok(i),
            other => Err(LlvmError::Invalid(format!(
                "expected an integer, got {:?}",
                other.get_type()
            ))),
        }
    }

    /// Converts a value to `t` the way the interpreter reads it (`.i()` / `.f()`):
    /// integers sign-extend or truncate, ints convert to f32 exactly rounded, f32
    /// converts to integers saturating.
    fn coerce(&self, v: BasicValueEnum<'ctx>, t: Ty) -> Result<BasicValueEnum<'ctx>, LlvmError> {
        match (v, t) {
            (BasicValueEnum::IntValue(i), Ty::F32) => Ok(self
                .b
                .build_signed_int_to_float(i, self.ctx.f32_type(), "")?
                .into()),
            (BasicValueEnum::IntValue(i), _) => {
                let want = self.ity(t);
                let have = i.get_type().get_bit_width();
                let w = want.get_bit_width();
                Ok(if have == w {
                    i.into()
                } else if have < w {
                    self.b.build_int_s_extend(i, want, "")?.into()
                } else {
                    self.b.build_int_truncate(i, want, "")?.into()
                })
            }
            (BasicValueEnum::FloatValue(x), Ty::F32) => Ok(x.into()),
            (BasicValueEnum::FloatValue(x), _) => {
                let i64t = self.ctx.i64_type();
                let r = self.call_intrinsic(
                    "llvm.fptosi.sat",
                    &[i64t.into(), self.ctx.f32_type().into()],
                    &[x.into()],
                )?;
                self.coerce(r, t)
            }
            (other, _) => Err(LlvmError::Invalid(format!(
                "cannot convert {:?}",
                other.get_type()
            ))),
        }
    }

    fn int_of(&mut self, e: &Expr, t: Ty) -> Result<IntValue<'ctx>, LlvmError> {
        let v = self.expr(e)?;
        let c = self.coerce(v, t)?;
        self.int(c)
    }

    fn float_of(&mut self, e: &Expr) -> Result<FloatValue<'ctx>, LlvmError> {
        let v = self.expr(e)?;
        match self.coerce(v, Ty::F32)? {
            BasicValueEnum::FloatValue(x) => Ok(x),
            _ => Err(LlvmError::Invalid("expected f32".into())),
        }
    }

    fn truth(&mut self, e: &Expr) -> Result<IntValue<'ctx>, LlvmError> {
        let v = self.expr(e)?;
        let i = match v {
            BasicValueEnum::IntValue(i) => i,
            other => self.int(self.coerce(other, Ty::I64)?)?,
        };
        Ok(self
            .b
            .build_int_compare(IntPredicate::NE, i, i.get_type().const_zero(), "")?)
    }

    fn load_var(&self, v: Var) -> Result<BasicValueEnum<'ctx>, LlvmError> {
        let ty = self.ty(self.f.var_ty(v));
        Ok(self
            .b
            .build_load(ty, self.vars[v.0 as usize], self.f.var_name(v))?)
    }

    fn store_var(&self, v: Var, x: BasicValueEnum<'ctx>) -> Result<(), LlvmError> {
        let x = self.coerce(x, self.f.var_ty(v))?;
        self.b.build_store(self.vars[v.0 as usize], x)?;
        Ok(())
    }

    /// A block that returns `status` (created once per status).
    fn fail_block(&mut self, status: u64) -> Result<BasicBlock<'ctx>, LlvmError> {
        if let Some(bb) = self.fail.get(&status) {
            return Ok(*bb);
        }
        let cur = self
            .b
            .get_insert_block()
            .ok_or_else(|| LlvmError::Llvm("builder not positioned".into()))?;
        let bb = self
            .ctx
            .append_basic_block(self.func, &format!("fail{status}"));
        self.b.position_at_end(bb);
        match self.func.get_type().get_return_type() {
            Some(BasicTypeEnum::IntType(t)) => {
                self.b.build_return(Some(&t.const_int(status, false)))?;
            }
            _ => {
                self.b.build_return(None)?;
            }
        }
        self.b.position_at_end(cur);
        self.fail.insert(status, bb);
        Ok(bb)
    }

    /// Continues in a new block if `bad` is false, returns `status` otherwise.
    fn guard(&mut self, bad: IntValue<'ctx>, status: u64) -> Result<(), LlvmError> {
        let fail = self.fail_block(status)?;
        let ok = self.ctx.append_basic_block(self.func, "ok");
        self.b.build_conditional_branch(bad, fail, ok)?;
        self.b.position_at_end(ok);
        Ok(())
    }

    /// Bounds check of `bytes` bytes at byte offset `off` of buffer `buf` (CPU, when
    /// compiled in).
    fn check_bounds(
        &mut self,
        buf: usize,
        off: IntValue<'ctx>,
        bytes: u64,
    ) -> Result<(), LlvmError> {
        if !self.low.bounds_checks || self.lens.len() <= buf {
            return Ok(());
        }
        let len = self.lens[buf];
        let neg = self
            .b
            .build_int_compare(IntPredicate::SLT, off, self.i64c(0), "")?;
        let end = self.b.build_int_add(off, self.i64c(bytes as i64), "")?;
        let over = self.b.build_int_compare(IntPredicate::SGT, end, len, "")?;
        let bad = self.b.build_or(neg, over, "oob")?;
        self.guard(bad, STATUS_OUT_OF_BOUNDS)
    }

    /// Address of element `index` (`i64`) of buffer `buf`, elements of `elem_bytes`.
    fn addr(
        &mut self,
        buf: usize,
        index: IntValue<'ctx>,
        elem_bytes: u64,
        span: u64,
    ) -> Result<PointerValue<'ctx>, LlvmError> {
        let off = self
            .b
            .build_int_mul(index, self.i64c(elem_bytes as i64), "")?;
        self.check_bounds(buf, off, span)?;
        // SAFETY (LLVM IR semantics, not Rust): a plain (not inbounds) GEP is defined
        // for any offset; the access itself is what must be in bounds.
        Ok(unsafe {
            self.b
                .build_gep(self.ctx.i8_type(), self.bufs[buf], &[off], "")?
        })
    }

    // ---- expressions ----

    fn expr(&mut self, e: &Expr) -> Result<BasicValueEnum<'ctx>, LlvmError> {
        Ok(match e {
            Expr::Int(v, Ty::F32) => self.ctx.f32_type().const_float(*v as f32 as f64).into(),
            Expr::Int(v, t) => self.ity(*t).const_int(*v as u64, true).into(),
            Expr::F32(v) => self.ctx.f32_type().const_float(*v as f64).into(),
            Expr::Var(v) => self.load_var(*v)?,
            Expr::Dim(d) => self.dims[*d].into(),
            Expr::Special(s) => self.special(*s)?.into(),
            Expr::Bin(op, a, b) => self.bin(*op, a, b)?,
            Expr::Cmp(op, a, b) => self.cmp(*op, a, b)?.into(),
            Expr::Select(c, a, b) => self.select(c, a, b)?,
            Expr::Cast(t, a) => {
                let v = self.expr(a)?;
                self.coerce(v, *t)?
            }
            Expr::Load { buf, index } => {
                let i = self.int_of(index, Ty::I64)?;
                self.load(*buf, i)?
            }
            Expr::LoadBytes { buf, offset, bytes } => {
                let o = self.int_of(offset, Ty::I64)?;
                let p = self.addr(*buf, o, 1, *bytes as u64)?;
                let n = std::num::NonZeroU32::new(8 * *bytes as u32)
                    .and_then(|w| self.ctx.custom_width_int_type(w).ok())
                    .ok_or_else(|| LlvmError::Invalid(format!("byte load of {bytes} bytes")))?;
                let v = self.b.build_load(n, p, "bytes")?;
                set_align(v, 1)?;
                let t = if *bytes > 4 { Ty::I64 } else { Ty::I32 };
                let v = self.int(v)?;
                let w = self.ity(t);
                if n.get_bit_width() == w.get_bit_width() {
                    v.into()
                } else {
                    self.b.build_int_z_extend(v, w, "")?.into()
                }
            }
            Expr::Bfe {
                value,
                pos,
                len,
                signed,
            } => self.bfe(value, *pos, *len, *signed)?.into(),
            Expr::DotRun {
                buf,
                index,
                codes,
                acc,
            } => self.dot_run(*buf, index, codes, acc)?,
            Expr::DotPacked {
                act,
                act_index,
                wbuf,
                byte_offset,
                layout,
                count,
                acc,
            } => self
                .dot_packed(*act, act_index, *wbuf, byte_offset, layout, *count, acc)?
                .into(),
            Expr::LoadShared(_) => {
                return Err(LlvmError::Unsupported(
                    "shared-memory staging (a PTX-backend GEMV option)".into(),
                ))
            }
            Expr::HFma2 { .. } => {
                return Err(LlvmError::Unsupported(
                    "packed f16 arithmetic (a PTX-backend GEMV path)".into(),
                ))
            }
            Expr::Dot4 { a, b, acc } => {
                let a = self.int_of(a, Ty::I32)?;
                let b = self.int_of(b, Ty::I32)?;
                let acc = self.int_of(acc, Ty::I32)?;
                self.dot4(a, b, acc)?.into()
            }
            Expr::F16ToF32(a) => {
                let x = self.int_of(a, Ty::I32)?;
                let h = self.b.build_int_truncate(x, self.ctx.i16_type(), "")?;
                self.f16_to_f32(h)?.into()
            }
            Expr::FromBits(a) => {
                let x = self.int_of(a, Ty::I32)?;
                self.b
                    .build_bit_cast(x, self.ctx.f32_type(), "")?
                    .into_float_value()
                    .into()
            }
            Expr::BytePerm { a, b, sel } => {
                let src = [self.int_of(a, Ty::I32)?, self.int_of(b, Ty::I32)?];
                let t = self.ctx.i32_type();
                let mut r = t.const_zero();
                for i in 0..4u64 {
                    let from = u64::from((*sel >> (4 * i)) & 7);
                    let x = self.b.build_right_shift(
                        src[(from / 4) as usize],
                        t.const_int(8 * (from % 4), false),
                        false,
                        "",
                    )?;
                    let x = self.b.build_and(x, t.const_int(0xff, false), "")?;
                    let x = self.b.build_left_shift(x, t.const_int(8 * i, false), "")?;
                    r = self.b.build_or(r, x, "")?;
                }
                r.into()
            }
        })
    }

    fn special(&mut self, s: Special) -> Result<IntValue<'ctx>, LlvmError> {
        let tid = |t: &Self| -> Result<IntValue<'ctx>, LlvmError> {
            match t.low.flavor {
                Flavor::Amdgpu => t.int(t.call_intrinsic("llvm.amdgcn.workitem.id.x", &[], &[])?),
                Flavor::Nvptx => {
                    t.int(t.call_intrinsic("llvm.nvvm.read.ptx.sreg.tid.x", &[], &[])?)
                }
                Flavor::Cpu => Ok(t.i32c(0)),
            }
        };
        match s {
            Special::ThreadIdx => tid(self),
            Special::LaneId => {
                let t = tid(self)?;
                Ok(self.b.build_and(t, self.i32c(31), "lane")?)
            }
            Special::BlockIdx => match self.low.flavor {
                Flavor::Amdgpu => {
                    self.int(self.call_intrinsic("llvm.amdgcn.workgroup.id.x", &[], &[])?)
                }
                Flavor::Nvptx => {
                    self.int(self.call_intrinsic("llvm.nvvm.read.ptx.sreg.ctaid.x", &[], &[])?)
                }
                Flavor::Cpu => Ok(self.i32c(0)),
            },
            Special::BlockDim => Ok(self.i32c(self.block as i64)),
        }
    }

    fn bin(&mut self, op: BinOp, a: &Expr, b: &Expr) -> Result<BasicValueEnum<'ctx>, LlvmError> {
        let t = self.f.ty(a);
        if t == Ty::F32 {
            let x = self.float_of(a)?;
            let y = self.float_of(b)?;
            let f32t = self.ctx.f32_type();
            return Ok(match op {
                BinOp::Add => self.b.build_float_add(x, y, "")?.into(),
                BinOp::Sub => self.b.build_float_sub(x, y, "")?.into(),
                BinOp::Mul => self.b.build_float_mul(x, y, "")?.into(),
                BinOp::Div => self.b.build_float_div(x, y, "")?.into(),
                BinOp::Min => {
                    self.call_intrinsic("llvm.minnum", &[f32t.into()], &[x.into(), y.into()])?
                }
                BinOp::Max => {
                    self.call_intrinsic("llvm.maxnum", &[f32t.into()], &[x.into(), y.into()])?
                }
                // Not defined on floats: the interpreter yields NaN.
                _ => f32t.const_float(f64::NAN).into(),
            });
        }
        let x = self.int_of(a, t)?;
        let y = self.int_of(b, t)?;
        let it = self.ity(t);
        let bits = it.get_bit_width() as u64;
        let mask = |s: &Self| s.b.build_and(y, it.const_int(bits - 1, false), "");
        Ok(match op {
            BinOp::Add => self.b.build_int_add(x, y, "")?.into(),
            BinOp::Sub => self.b.build_int_sub(x, y, "")?.into(),
            BinOp::Mul => self.b.build_int_mul(x, y, "")?.into(),
            BinOp::And => self.b.build_and(x, y, "")?.into(),
            BinOp::Or => self.b.build_or(x, y, "")?.into(),
            BinOp::Xor => self.b.build_xor(x, y, "")?.into(),
            BinOp::Shl => self.b.build_left_shift(x, mask(self)?, "")?.into(),
            BinOp::Sar => self.b.build_right_shift(x, mask(self)?, true, "")?.into(),
            BinOp::Shr => self.b.build_right_shift(x, mask(self)?, false, "")?.into(),
            BinOp::Min => self.call_intrinsic("llvm.smin", &[it.into()], &[x.into(), y.into()])?,
            BinOp::Max => self.call_intrinsic("llvm.smax", &[it.into()], &[x.into(), y.into()])?,
            BinOp::Div | BinOp::Rem => self.div(op == BinOp::Div, x, y)?.into(),
        })
    }

    /// Signed division or remainder with the interpreter's semantics: wrapping
    /// (`MIN / -1 == MIN`, `MIN % -1 == 0`), division by zero an error (CPU status 1;
    /// GPUs, which cannot report it, divide by 1 instead).
    fn div(
        &mut self,
        is_div: bool,
        x: IntValue<'ctx>,
        y: IntValue<'ctx>,
    ) -> Result<IntValue<'ctx>, LlvmError> {
        let it = x.get_type();
        if let Some(c) = y.get_sign_extended_constant() {
            if c != 0 && c != -1 {
                return Ok(if is_div {
                    self.b.build_int_signed_div(x, y, "")?
                } else {
                    self.b.build_int_signed_rem(x, y, "")?
                });
            }
        }
        let zero = self
            .b
            .build_int_compare(IntPredicate::EQ, y, it.const_zero(), "")?;
        if self.low.flavor == Flavor::Cpu {
            self.guard(zero, STATUS_DIV_BY_ZERO)?;
        }
        let minus1 = self
            .b
            .build_int_compare(IntPredicate::EQ, y, it.const_all_ones(), "")?;
        let unsafe_y = self.b.build_or(zero, minus1, "")?;
        let one = it.const_int(1, false);
        let ys = self.int(self.b.build_select(unsafe_y, one, y, "")?)?;
        let (q, special) = if is_div {
            (
                self.b.build_int_signed_div(x, ys, "")?,
                self.b.build_int_neg(x, "")?,
            )
        } else {
            (self.b.build_int_signed_rem(x, ys, "")?, it.const_zero())
        };
        self.int(self.b.build_select(minus1, special, q, "")?)
    }

    fn cmp(&mut self, op: CmpOp, a: &Expr, b: &Expr) -> Result<IntValue<'ctx>, LlvmError> {
        let t = self.f.ty(a);
        let c = if t == Ty::F32 {
            let x = self.float_of(a)?;
            let y = self.float_of(b)?;
            let p = match op {
                CmpOp::Lt => FloatPredicate::OLT,
                CmpOp::Le => FloatPredicate::OLE,
                CmpOp::Eq => FloatPredicate::OEQ,
                CmpOp::Ne => FloatPredicate::UNE,
            };
            self.b.build_float_compare(p, x, y, "")?
        } else {
            let x = self.int_of(a, t)?;
            let y = self.int_of(b, t)?;
            let p = match op {
                CmpOp::Lt => IntPredicate::SLT,
                CmpOp::Le => IntPredicate::SLE,
                CmpOp::Eq => IntPredicate::EQ,
                CmpOp::Ne => IntPredicate::NE,
            };
            self.b.build_int_compare(p, x, y, "")?
        };
        Ok(self.b.build_int_z_extend(c, self.ctx.i32_type(), "")?)
    }

    fn select(&mut self, c: &Expr, a: &Expr, b: &Expr) -> Result<BasicValueEnum<'ctx>, LlvmError> {
        let t = self.f.ty(a);
        let cond = self.truth(c)?;
        if !touches_memory(a) && !touches_memory(b) {
            let x = self.expr(a)?;
            let x = self.coerce(x, t)?;
            let y = self.expr(b)?;
            let y = self.coerce(y, t)?;
            return Ok(self.b.build_select(cond, x, y, "")?);
        }
        // Only the chosen arm is evaluated (its loads may be out of bounds otherwise).
        let then_bb = self.ctx.append_basic_block(self.func, "sel.then");
        let else_bb = self.ctx.append_basic_block(self.func, "sel.else");
        let join = self.ctx.append_basic_block(self.func, "sel.join");
        self.b.build_conditional_branch(cond, then_bb, else_bb)?;
        self.b.position_at_end(then_bb);
        let x = self.expr(a)?;
        let x = self.coerce(x, t)?;
        let x_end = self.current()?;
        self.b.build_unconditional_branch(join)?;
        self.b.position_at_end(else_bb);
        let y = self.expr(b)?;
        let y = self.coerce(y, t)?;
        let y_end = self.current()?;
        self.b.build_unconditional_branch(join)?;
        self.b.position_at_end(join);
        let phi = self.b.build_phi(self.ty(t), "sel")?;
        phi.add_incoming(&[
            (&x as &dyn BasicValue, x_end),
            (&y as &dyn BasicValue, y_end),
        ]);
        Ok(phi.as_basic_value())
    }

    fn current(&self) -> Result<BasicBlock<'ctx>, LlvmError> {
        self.b
            .get_insert_block()
            .ok_or_else(|| LlvmError::Llvm("builder not positioned".into()))
    }

    /// Element `index` of buffer `buf`, converted to its register type.
    fn load(
        &mut self,
        buf: usize,
        index: IntValue<'ctx>,
    ) -> Result<BasicValueEnum<'ctx>, LlvmError> {
        let elem = self.f.bufs[buf].elem;
        let p = self.addr(buf, index, elem.bytes() as u64, elem.bytes() as u64)?;
        let i32t = self.ctx.i32_type();
        let ty: BasicTypeEnum = match elem {
            Elem::I8 | Elem::U8 => self.ctx.i8_type().into(),
            Elem::F16 | Elem::BF16 => self.ctx.i16_type().into(),
            Elem::I32 => i32t.into(),
            Elem::F32 => self.ctx.f32_type().into(),
        };
        let v = self.b.build_load(ty, p, "")?;
        set_align(v, elem.bytes() as u32)?;
        Ok(match elem {
            Elem::I8 => self.b.build_int_s_extend(self.int(v)?, i32t, "")?.into(),
            Elem::U8 => self.b.build_int_z_extend(self.int(v)?, i32t, "")?.into(),
            Elem::I32 | Elem::F32 => v,
            Elem::F16 => self.f16_to_f32(self.int(v)?)?.into(),
            Elem::BF16 => self.bf16_to_f32(self.int(v)?)?.into(),
        })
    }

    /// f16 bits (`i16`) to f32, exactly.
    fn f16_to_f32(&self, h: IntValue<'ctx>) -> Result<FloatValue<'ctx>, LlvmError> {
        let f32t = self.ctx.f32_type();
        if self.low.native_f16 {
            let x = self
                .b
                .build_bit_cast(h, self.ctx.f16_type(), "")?
                .into_float_value();
            return Ok(self.b.build_float_ext(x, f32t, "")?);
        }
        let i32t = self.ctx.i32_type();
        let b = &self.b;
        let h = b.build_int_z_extend(h, i32t, "")?;
        let sign = b.build_left_shift(b.build_and(h, self.i32c(0x8000), "")?, self.i32c(16), "")?;
        let em = b.build_and(h, self.i32c(0x7fff), "")?;
        let shifted = b.build_left_shift(em, self.i32c(13), "")?;
        // Normal numbers: rebias the exponent by 127 - 15.
        let normal = b.build_int_add(shifted, self.i32c(0x3800_0000), "")?;
        // Infinities and NaNs (NaNs quieted, as `half` does).
        let nan = b.build_int_compare(IntPredicate::UGT, em, self.i32c(0x7c00), "")?;
        let quiet = b
            .build_select(nan, self.i32c(0x0040_0000), self.i32c(0), "")?
            .into_int_value();
        let special = b.build_or(b.build_or(shifted, self.i32c(0x7f80_0000), "")?, quiet, "")?;
        // Subnormals and zero: em * 2^-24, exact.
        let sub_f = b.build_float_mul(
            b.build_signed_int_to_float(em, f32t, "")?,
            f32t.const_float(2f64.powi(-24)),
            "",
        )?;
        let sub = b.build_bit_cast(sub_f, i32t, "")?.into_int_value();
        let is_sub = b.build_int_compare(IntPredicate::ULT, em, self.i32c(0x400), "")?;
        let is_special = b.build_int_compare(IntPredicate::UGE, em, self.i32c(0x7c00), "")?;
        let r = b
            .build_select(is_special, special, normal, "")?
            .into_int_value();
        let r = b.build_select(is_sub, sub, r, "")?.into_int_value();
        let r = b.build_or(r, sign, "")?;
        Ok(b.build_bit_cast(r, f32t, "")?.into_float_value())
    }

    /// bf16 bits (`i16`) to f32: the top half of the f32.
    fn bf16_to_f32(&self, h: IntValue<'ctx>) -> Result<FloatValue<'ctx>, LlvmError> {
        let i32t = self.ctx.i32_type();
        let w = self.b.build_int_z_extend(h, i32t, "")?;
        let w = self.b.build_left_shift(w, self.i32c(16), "")?;
        Ok(self
            .b
            .build_bit_cast(w, self.ctx.f32_type(), "")?
            .into_float_value())
    }

    /// f32 to f16 bits (`i16`), rounding to nearest even.
    fn f32_to_f16(&self, x: FloatValue<'ctx>) -> Result<IntValue<'ctx>, LlvmError> {
        let i16t = self.ctx.i16_type();
        if self.low.native_f16 {
            let h = self.b.build_float_trunc(x, self.ctx.f16_type(), "")?;
            return Ok(self.b.build_bit_cast(h, i16t, "")?.into_int_value());
        }
        // F. Giesen's float_to_half_fast3_rtne: exact round-to-nearest-even using one
        // f32 addition for results that are subnormal in f16.
        let i32t = self.ctx.i32_type();
        let f32t = self.ctx.f32_type();
        let b = &self.b;
        let u = b.build_bit_cast(x, i32t, "")?.into_int_value();
        let sign = b.build_and(u, self.i32c(0x8000_0000u32 as i32 as i64), "")?;
        let a = b.build_xor(u, sign, "")?;
        let f16max = self.i32c((127 + 16) << 23);
        let infty = self.i32c(255 << 23);
        let denorm_magic = ((127 - 15) + (23 - 10) + 1) << 23;
        // Overflow: Inf, NaN -> quiet NaN.
        let is_nan = b.build_int_compare(IntPredicate::UGT, a, infty, "")?;
        let big = b
            .build_select(is_nan, self.i32c(0x7e00), self.i32c(0x7c00), "")?
            .into_int_value();
        // Subnormal results: let the FPU round the shifted-out bits.
        let af = b.build_bit_cast(a, f32t, "")?.into_float_value();
        let magic_f = f32t.const_float(f32::from_bits(denorm_magic as u32) as f64);
        let sum = b.build_float_add(af, magic_f, "")?;
        let sum = b.build_bit_cast(sum, i32t, "")?.into_int_value();
        let small = b.build_int_sub(sum, self.i32c(denorm_magic as i64), "")?;
        // Normal results: rebias and round to nearest even by hand.
        let odd = b.build_and(
            b.build_right_shift(a, self.i32c(13), false, "")?,
            self.i32c(1),
            "",
        )?;
        let n = b.build_int_add(a, self.i32c((((15 - 127) << 23) + 0xfff) as i64), "")?;
        let n = b.build_int_add(n, odd, "")?;
        let normal = b.build_right_shift(n, self.i32c(13), false, "")?;
        let is_small = b.build_int_compare(IntPredicate::ULT, a, self.i32c(113 << 23), "")?;
        let r = b
            .build_select(is_small, small, normal, "")?
            .into_int_value();
        let is_big = b.build_int_compare(IntPredicate::UGE, a, f16max, "")?;
        let r = b.build_select(is_big, big, r, "")?.into_int_value();
        let r = b.build_or(r, b.build_right_shift(sign, self.i32c(16), false, "")?, "")?;
        Ok(b.build_int_truncate(r, i16t, "")?)
    }

    /// f32 to bf16 bits (`i16`), rounding to nearest even; NaNs stay NaN (quieted).
    fn f32_to_bf16(&self, x: FloatValue<'ctx>) -> Result<IntValue<'ctx>, LlvmError> {
        let i32t = self.ctx.i32_type();
        let b = &self.b;
        let u = b.build_bit_cast(x, i32t, "")?.into_int_value();
        let hi = b.build_right_shift(u, self.i32c(16), false, "")?;
        let abs = b.build_and(u, self.i32c(0x7fff_ffff), "")?;
        let is_nan = b.build_int_compare(IntPredicate::UGT, abs, self.i32c(0x7f80_0000), "")?;
        let nan = b.build_or(hi, self.i32c(0x40), "")?;
        // Round up when the dropped half is > 0.5 ulp, or exactly 0.5 ulp and odd.
        let round = b.build_int_compare(
            IntPredicate::NE,
            b.build_and(u, self.i32c(0x8000), "")?,
            self.i32c(0),
            "",
        )?;
        let rest = b.build_int_compare(
            IntPredicate::NE,
            b.build_and(u, self.i32c(3 * 0x8000 - 1), "")?,
            self.i32c(0),
            "",
        )?;
        let up = b.build_and(round, rest, "")?;
        let up = b.build_int_z_extend(up, i32t, "")?;
        let r = b.build_int_add(hi, up, "")?;
        let r = b.build_select(is_nan, nan, r, "")?.into_int_value();
        Ok(b.build_int_truncate(r, self.ctx.i16_type(), "")?)
    }

    fn bfe(
        &mut self,
        value: &Expr,
        pos: u8,
        len: u8,
        signed: bool,
    ) -> Result<IntValue<'ctx>, LlvmError> {
        let t = match self.f.ty(value) {
            Ty::I64 => Ty::I64,
            _ => Ty::I32,
        };
        let v = self.int_of(value, t)?;
        let it = self.ity(t);
        let bits = it.get_bit_width();
        let (pos, len) = (pos as u32, len as u32);
        if len == 0 || pos >= 64 {
            return Ok(it.const_zero());
        }
        if pos + len <= bits {
            return Ok(if signed {
                let l = self.b.build_left_shift(
                    v,
                    it.const_int((bits - pos - len) as u64, false),
                    "",
                )?;
                self.b
                    .build_right_shift(l, it.const_int((bits - len) as u64, false), true, "")?
            } else if len == bits {
                v
            } else {
                let r = self
                    .b
                    .build_right_shift(v, it.const_int(pos as u64, false), false, "")?;
                self.b
                    .build_and(r, it.const_int((1u64 << len) - 1, false), "")?
            });
        }
        // A field reaching past the value's top bit: the interpreter zero-extends the
        // value to 64 bits first.
        let i64t = self.ctx.i64_type();
        let w = if bits == 64 {
            v
        } else {
            self.b.build_int_z_extend(v, i64t, "")?
        };
        let raw = self
            .b
            .build_right_shift(w, i64t.const_int(pos as u64, false), false, "")?;
        let r = if len >= 64 {
            raw
        } else {
            let m = self
                .b
                .build_and(raw, i64t.const_int((1u64 << len) - 1, false), "")?;
            if signed {
                let l = self
                    .b
                    .build_left_shift(m, i64t.const_int(64 - len as u64, false), "")?;
                self.b
                    .build_right_shift(l, i64t.const_int(64 - len as u64, false), true, "")?
            } else {
                m
            }
        };
        self.int(self.coerce(r.into(), t)?)
    }

    /// `acc + Σ sext8(a_i) * sext8(b_i)` on `i32`s.
    fn dot4(
        &mut self,
        a: IntValue<'ctx>,
        b: IntValue<'ctx>,
        acc: IntValue<'ctx>,
    ) -> Result<IntValue<'ctx>, LlvmError> {
        let i1 = self.ctx.bool_type();
        let f = i1.const_int(0, false);
        let t = i1.const_int(1, false);
        match self.low.dot4 {
            Dot4Impl::AmdSdot4 => self.int(self.call_intrinsic(
                "llvm.amdgcn.sdot4",
                &[],
                &[a.into(), b.into(), acc.into(), f.into()],
            )?),
            Dot4Impl::AmdSudot4 => self.int(self.call_intrinsic(
                "llvm.amdgcn.sudot4",
                &[],
                &[t.into(), a.into(), t.into(), b.into(), acc.into(), f.into()],
            )?),
            Dot4Impl::PtxDp4a => {
                let i32t = self.ctx.i32_type();
                let fty = i32t.fn_type(&[i32t.into(), i32t.into(), i32t.into()], false);
                let asm = self.ctx.create_inline_asm(
                    fty,
                    "dp4a.s32.s32 $0, $1, $2, $3;".to_string(),
                    "=r,r,r,r".to_string(),
                    false,
                    false,
                    None,
                    false,
                );
                let r = self
                    .b
                    .build_indirect_call(fty, asm, &[a.into(), b.into(), acc.into()], "dp4a")?
                    .try_as_basic_value()
                    .basic()
                    .ok_or_else(|| LlvmError::Llvm("dp4a returns no value".into()))?;
                self.int(r)
            }
            Dot4Impl::Vector => {
                let v4i8 = self.ctx.i8_type().vec_type(4);
                let v4i32 = self.ctx.i32_type().vec_type(4);
                let av = self.b.build_bit_cast(a, v4i8, "")?.into_vector_value();
                let bv = self.b.build_bit_cast(b, v4i8, "")?.into_vector_value();
                let av = self.b.build_int_s_extend(av, v4i32, "")?;
                let bv = self.b.build_int_s_extend(bv, v4i32, "")?;
                let p = self.b.build_int_mul(av, bv, "")?;
                let s = self.int(self.call_intrinsic(
                    "llvm.vector.reduce.add",
                    &[v4i32.into()],
                    &[p.into()],
                )?)?;
                Ok(self.b.build_int_add(acc, s, "")?)
            }
        }
    }

    /// Whether a run of `codes` over `buf` into a `t` accumulator uses 4-way dot
    /// instructions (GPUs; i8 activations, codes that fit a signed byte).
    fn run_uses_dot4(&self, buf: usize, codes: &[Var], t: Ty) -> bool {
        // Codes that fit a signed byte: signed fields of at most 8 bits, unsigned of 7.
        let small = codes.iter().all(|c| match self.small.get(c) {
            Some(&(len, signed)) => len <= 7 || signed,
            None => false,
        });
        t == Ty::I32
            && self.f.bufs[buf].elem == Elem::I8
            && small
            && self.low.dot4 != Dot4Impl::Vector
    }

    /// Whether a run over `buf` into a `t` accumulator is computed with vectors.
    fn run_is_vector(&self, buf: usize, codes: &[Var], t: Ty) -> bool {
        let elem = self.f.bufs[buf].elem;
        !codes.is_empty()
            && !self.run_uses_dot4(buf, codes, t)
            && (matches!(
                (t, elem),
                (Ty::I32 | Ty::I64, Elem::I8 | Elem::U8 | Elem::I32)
                    | (Ty::F32, Elem::F32 | Elem::BF16)
            ) || (t == Ty::F32 && elem == Elem::F16 && self.low.native_f16))
    }

    /// `acc + Σ_j load(buf, index + j) * codes[j]` in the accumulator's type.
    fn dot_run(
        &mut self,
        buf: usize,
        index: &Expr,
        codes: &[Var],
        acc: &Expr,
    ) -> Result<BasicValueEnum<'ctx>, LlvmError> {
        let t = self.f.ty(acc);
        let base = self.int_of(index, Ty::I64)?;
        let accv = self.expr(acc)?;
        let mut accv = self.coerce(accv, t)?;
        if codes.is_empty() {
            return Ok(accv);
        }
        if self.run_uses_dot4(buf, codes, t) {
            return Ok(self.dot_run_dot4(buf, base, codes, self.int(accv)?)?.into());
        }
        if !self.run_is_vector(buf, codes, t) {
            // Mixed int/float runs: one element at a time, as the interpreter does.
            for (j, c) in codes.iter().enumerate() {
                let i = self.b.build_int_add(base, self.i64c(j as i64), "")?;
                let a = self.load(buf, i)?;
                let a = self.coerce(a, t)?;
                let w = self.load_var(*c)?;
                let w = self.coerce(w, t)?;
                accv = if t == Ty::F32 {
                    let p =
                        self.b
                            .build_float_mul(a.into_float_value(), w.into_float_value(), "")?;
                    self.b
                        .build_float_add(accv.into_float_value(), p, "")?
                        .into()
                } else {
                    let p = self.b.build_int_mul(self.int(a)?, self.int(w)?, "")?;
                    self.b.build_int_add(self.int(accv)?, p, "")?.into()
                };
            }
            return Ok(accv);
        }
        let prod = self.run_products(buf, base, codes, t)?;
        self.reduce_into(accv, prod)
    }

    /// `acc + Σ lanes of v`: exact for integers; for f32 the ordered reduction
    /// `((acc + v0) + v1) + ...`, the interpreter's order, unless reassociation is
    /// allowed.
    fn reduce_into(
        &mut self,
        acc: BasicValueEnum<'ctx>,
        v: VectorValue<'ctx>,
    ) -> Result<BasicValueEnum<'ctx>, LlvmError> {
        let vt = v.get_type();
        if let BasicValueEnum::FloatValue(_) = acc {
            let call = self.b.build_call(
                self.intrinsic("llvm.vector.reduce.fadd", &[vt.into()])?,
                &[acc.into(), v.into()],
                "",
            )?;
            let r = call
                .try_as_basic_value()
                .basic()
                .ok_or_else(|| LlvmError::Llvm("reduction returns no value".into()))?;
            if self.low.reassociate {
                if let Some(inst) = r.as_instruction_value() {
                    inst.set_fast_math_flags(inkwell::values::FastMathFlags::AllowReassoc)
                        .map_err(|e| LlvmError::Llvm(format!("fast-math flags: {e:?}")))?;
                }
            }
            return Ok(r);
        }
        let s =
            self.int(self.call_intrinsic("llvm.vector.reduce.add", &[vt.into()], &[v.into()])?)?;
        Ok(self.b.build_int_add(self.int(acc)?, s, "")?.into())
    }

    /// The lane-wise products `load(buf, base + j) * codes[j]` of a vector run, in the
    /// accumulator type `t`: a `<L x T>` load of the activations, widened, times a code
    /// vector built with `insertelement`.
    fn run_products(
        &mut self,
        buf: usize,
        base: IntValue<'ctx>,
        codes: &[Var],
        t: Ty,
    ) -> Result<VectorValue<'ctx>, LlvmError> {
        let elem = self.f.bufs[buf].elem;
        let l = codes.len() as u32;
        let eb = elem.bytes() as u64;
        let p = self.addr(buf, base, eb, eb * l as u64)?;
        let mem_ty = match elem {
            Elem::I8 | Elem::U8 => self.ctx.i8_type().vec_type(l),
            Elem::F16 | Elem::BF16 => self.ctx.i16_type().vec_type(l),
            Elem::I32 => self.ctx.i32_type().vec_type(l),
            Elem::F32 => self.ctx.f32_type().vec_type(l),
        };
        let raw = self.b.build_load(mem_ty, p, "run")?;
        set_align(raw, eb as u32)?;
        let raw = raw.into_vector_value();
        if t == Ty::F32 {
            let vf = self.ctx.f32_type().vec_type(l);
            let a = match elem {
                Elem::F32 => raw,
                Elem::F16 => {
                    let h = self
                        .b
                        .build_bit_cast(raw, self.ctx.f16_type().vec_type(l), "")?;
                    self.b.build_float_ext(h.into_vector_value(), vf, "")?
                }
                _ => {
                    let w = self
                        .b
                        .build_int_z_extend(raw, self.ctx.i32_type().vec_type(l), "")?;
                    let w = self
                        .b
                        .build_left_shift(w, self.splat(self.i32c(16), l), "")?;
                    self.b.build_bit_cast(w, vf, "")?.into_vector_value()
                }
            };
            let mut cv = vf.get_poison();
            for (j, c) in codes.iter().enumerate() {
                let w = self.load_var(*c)?;
                let w = self.coerce(w, Ty::F32)?;
                cv = self
                    .b
                    .build_insert_element(cv, w, self.i32c(j as i64), "")?;
            }
            return Ok(self.b.build_float_mul(a, cv, "")?);
        }
        let it = self.ity(t);
        let vi = it.vec_type(l);
        let a = match elem {
            Elem::U8 => self.b.build_int_z_extend(raw, vi, "")?,
            Elem::I32 if t == Ty::I32 => raw,
            _ => self.b.build_int_s_extend(raw, vi, "")?,
        };
        let mut cv = vi.get_poison();
        for (j, c) in codes.iter().enumerate() {
            let w = self.load_var(*c)?;
            let w = self.coerce(w, t)?;
            cv = self
                .b
                .build_insert_element(cv, w, self.i32c(j as i64), "")?;
        }
        Ok(self.b.build_int_mul(a, cv, "")?)
    }

    /// An i8 run with 8-bit codes on a GPU with 4-way dot instructions: four
    /// activations per (unaligned) `i32` load, four codes packed into an `i32`.
    fn dot_run_dot4(
        &mut self,
        buf: usize,
        base: IntValue<'ctx>,
        codes: &[Var],
        mut acc: IntValue<'ctx>,
    ) -> Result<IntValue<'ctx>, LlvmError> {
        let i32t = self.ctx.i32_type();
        let whole = codes.len() / 4 * 4;
        for j in (0..whole).step_by(4) {
            let i = self.b.build_int_add(base, self.i64c(j as i64), "")?;
            let p = self.addr(buf, i, 1, 4)?;
            let a = self.b.build_load(i32t, p, "a4")?;
            set_align(a, 1)?;
            let mut packed = i32t.const_zero();
            for k in 0..4 {
                let c = self.int(self.load_var(codes[j + k])?)?;
                let c = self.int(self.coerce(c.into(), Ty::I32)?)?;
                let c = self.b.build_and(c, self.i32c(0xff), "")?;
                let c = self.b.build_left_shift(c, self.i32c(8 * k as i64), "")?;
                packed = self.b.build_or(packed, c, "")?;
            }
            acc = self.dot4(self.int(a)?, packed, acc)?;
        }
        for (j, c) in codes.iter().enumerate().skip(whole) {
            let i = self.b.build_int_add(base, self.i64c(j as i64), "")?;
            let a = self.load(buf, i)?;
            let a = self.int(a)?;
            let w = self.int(self.load_var(*c)?)?;
            let w = self.int(self.coerce(w.into(), Ty::I32)?)?;
            let p = self.b.build_int_mul(a, w, "")?;
            acc = self.b.build_int_add(acc, p, "")?;
        }
        Ok(acc)
    }

    // ---- statements ----

    /// Accumulators of a loop body that only a `acc = dot_run(.., acc)` statement of
    /// the body touches: their runs add lane-wise into a vector that is zeroed before
    /// the loop and reduced into the accumulator after it, instead of reducing every
    /// iteration. Exact for integers (wrapping sums do not depend on the order); f32
    /// accumulators only when reassociation is allowed. Returns the hoisted variables
    /// (registered in `vacc`).
    fn hoisted_runs(&mut self, body: &[Stmt]) -> Result<Vec<Var>, LlvmError> {
        let mut out = Vec::new();
        for s in body {
            let Stmt::Set(
                v,
                Expr::DotRun {
                    buf, codes, acc, ..
                },
            ) = s
            else {
                continue;
            };
            let t = self.f.var_ty(*v);
            let ok = matches!(acc.as_ref(), Expr::Var(a) if a == v)
                && (t != Ty::F32 || self.low.reassociate)
                && self.run_is_vector(*buf, codes, t)
                && !self.vacc.contains_key(v)
                && !out.contains(v)
                && body.iter().map(|s| s.mentions(*v)).sum::<usize>() == 2;
            if !ok {
                continue;
            }
            let vt = match t {
                Ty::F32 => self.ctx.f32_type().vec_type(codes.len() as u32),
                t => self.ity(t).vec_type(codes.len() as u32),
            };
            let eb = self.ctx.create_builder();
            match self.entry.get_first_instruction() {
                Some(i) => eb.position_before(&i),
                None => eb.position_at_end(self.entry),
            }
            let slot = eb.build_alloca(vt, &format!("{}.lanes", symbol(self.f.var_name(*v))))?;
            self.b.build_store(slot, vt.const_zero())?;
            self.vacc.insert(*v, (slot, vt));
            out.push(*v);
        }
        Ok(out)
    }

    fn stmts(&mut self, body: &[Stmt], top: bool) -> Result<(), LlvmError> {
        for (i, s) in body.iter().enumerate() {
            let split = top && self.par == Some(i) && self.range.is_some();
            self.stmt(s, split)?;
        }
        Ok(())
    }

    /// `max(0, ceil((end - start) / step))`.
    fn trip_count(
        &mut self,
        start: IntValue<'ctx>,
        end: IntValue<'ctx>,
        step: i64,
    ) -> Result<IntValue<'ctx>, LlvmError> {
        let span = self.b.build_int_sub(end, start, "")?;
        let span = self.b.build_int_add(span, self.i64c(step - 1), "")?;
        let n = self.b.build_int_signed_div(span, self.i64c(step), "")?;
        let pos = self
            .b
            .build_int_compare(IntPredicate::SLT, start, end, "")?;
        self.int(self.b.build_select(pos, n, self.i64c(0), "trips")?)
    }

    fn stmt(&mut self, s: &Stmt, split: bool) -> Result<(), LlvmError> {
        match s {
            Stmt::Set(
                v,
                Expr::DotRun {
                    buf, index, codes, ..
                },
            ) if self.vacc.contains_key(v) => {
                // A hoisted run (see `hoisted_runs`): lane-wise partial sums only.
                let (slot, vt) = self.vacc[v];
                let base = self.int_of(index, Ty::I64)?;
                let prod = self.run_products(*buf, base, codes, self.f.var_ty(*v))?;
                let cur = self.b.build_load(vt, slot, "vacc")?.into_vector_value();
                let sum = if self.f.var_ty(*v) == Ty::F32 {
                    self.b.build_float_add(cur, prod, "")?
                } else {
                    self.b.build_int_add(cur, prod, "")?
                };
                self.b.build_store(slot, sum)?;
            }
            Stmt::Let(v, e) | Stmt::Set(v, e) => {
                let x = self.expr(e)?;
                self.store_var(*v, x)?;
            }
            Stmt::For {
                var,
                start,
                end,
                step,
                body,
                ..
            } => {
                let mut s0 = self.int_of(start, Ty::I64)?;
                let mut e0 = self.int_of(end, Ty::I64)?;
                if let (true, Some((lo, hi))) = (split, self.range) {
                    // Iterations lo..hi of the trip count only.
                    let n = self.trip_count(s0, e0, *step)?;
                    let smax = |t: &Self, a, b| {
                        t.call_intrinsic("llvm.smax", &[t.ctx.i64_type().into()], &[a, b])
                    };
                    let smin = |t: &Self, a, b| {
                        t.call_intrinsic("llvm.smin", &[t.ctx.i64_type().into()], &[a, b])
                    };
                    let lo = self.int(smax(self, lo.into(), self.i64c(0).into())?)?;
                    let lo = self.int(smin(self, lo.into(), n.into())?)?;
                    let hi = self.int(smax(self, hi.into(), lo.into())?)?;
                    let hi = self.int(smin(self, hi.into(), n.into())?)?;
                    let first = self.b.build_int_add(
                        s0,
                        self.b.build_int_mul(lo, self.i64c(*step), "")?,
                        "",
                    )?;
                    let last = self.b.build_int_add(
                        s0,
                        self.b.build_int_mul(hi, self.i64c(*step), "")?,
                        "",
                    )?;
                    s0 = first;
                    e0 = self.int(smin(self, e0.into(), last.into())?)?;
                }
                self.store_var(*var, s0.into())?;
                let hoisted = self.hoisted_runs(body)?;
                let head = self.ctx.append_basic_block(self.func, "loop.head");
                let body_bb = self.ctx.append_basic_block(self.func, "loop.body");
                let exit = self.ctx.append_basic_block(self.func, "loop.exit");
                self.b.build_unconditional_branch(head)?;
                self.b.position_at_end(head);
                let v = self.load_var(*var)?;
                let v = self.int(self.coerce(v, Ty::I64)?)?;
                let c = self.b.build_int_compare(IntPredicate::SLT, v, e0, "")?;
                self.b.build_conditional_branch(c, body_bb, exit)?;
                self.b.position_at_end(body_bb);
                self.stmts(body, false)?;
                let v = self.load_var(*var)?;
                let v = self.int(self.coerce(v, Ty::I64)?)?;
                let next = self.b.build_int_add(v, self.i64c(*step), "")?;
                self.store_var(*var, next.into())?;
                self.b.build_unconditional_branch(head)?;
                self.b.position_at_end(exit);
                for v in hoisted {
                    if let Some((slot, vt)) = self.vacc.remove(&v) {
                        let lanes = self.b.build_load(vt, slot, "vacc")?.into_vector_value();
                        let acc = self.load_var(v)?;
                        let r = self.reduce_into(acc, lanes)?;
                        self.store_var(v, r)?;
                    }
                }
            }
            Stmt::If { cond, then } => {
                let c = self.truth(cond)?;
                let then_bb = self.ctx.append_basic_block(self.func, "if.then");
                let join = self.ctx.append_basic_block(self.func, "if.end");
                self.b.build_conditional_branch(c, then_bb, join)?;
                self.b.position_at_end(then_bb);
                self.stmts(then, false)?;
                self.b.build_unconditional_branch(join)?;
                self.b.position_at_end(join);
            }
            Stmt::Store { buf, index, value } => {
                let elem = self.f.bufs[*buf].elem;
                let i = self.int_of(index, Ty::I64)?;
                let v = self.expr(value)?;
                let bits: BasicValueEnum = match elem {
                    Elem::I8 | Elem::U8 => {
                        let x = self.int(self.coerce(v, Ty::I64)?)?;
                        self.b.build_int_truncate(x, self.ctx.i8_type(), "")?.into()
                    }
                    Elem::I32 => self.coerce(v, Ty::I32)?,
                    Elem::F32 => self.coerce(v, Ty::F32)?,
                    Elem::F16 => self
                        .f32_to_f16(self.coerce(v, Ty::F32)?.into_float_value())?
                        .into(),
                    Elem::BF16 => self
                        .f32_to_bf16(self.coerce(v, Ty::F32)?.into_float_value())?
                        .into(),
                };
                let p = self.addr(*buf, i, elem.bytes() as u64, elem.bytes() as u64)?;
                let st = self.b.build_store(p, bits)?;
                st.set_alignment(elem.bytes() as u32)
                    .map_err(|e| LlvmError::Llvm(format!("alignment: {e:?}")))?;
            }
            Stmt::LoadVec4 { dst, buf, offset } => {
                let o = self.int_of(offset, Ty::I64)?;
                let p = self.addr(*buf, o, 1, 16)?;
                let v4 = self.ctx.i32_type().vec_type(4);
                let v = self.b.build_load(v4, p, "vec4")?;
                set_align(
                    v,
                    if self.low.flavor == Flavor::Cpu {
                        1
                    } else {
                        16
                    },
                )?;
                let v = v.into_vector_value();
                for (k, d) in dst.iter().enumerate() {
                    let x = self.b.build_extract_element(v, self.i32c(k as i64), "")?;
                    self.store_var(*d, x)?;
                }
            }
            Stmt::WarpSum(v) => self.warp_sum(*v)?,
            Stmt::Mma { .. } => {
                return Err(LlvmError::Unsupported(
                    "tensor-core matrix multiply-accumulate (a PTX-backend GEMV path)".into(),
                ))
            }
            Stmt::StoreShared4 { .. } | Stmt::WarpSync | Stmt::BlockSync | Stmt::Async(_) => {
                return Err(LlvmError::Unsupported(
                    "shared-memory staging (a PTX-backend GEMV option)".into(),
                ))
            }
            Stmt::Comment(_) => {}
        }
        Ok(())
    }

    /// Replaces `v` in every lane with the sum over its 32-lane warp: a butterfly
    /// `x = x + x[lane ^ off]` for off = 16, 8, 4, 2, 1 (the interpreter's order for
    /// f32). CPU functions run one lane, where the sum is the value itself.
    fn warp_sum(&mut self, v: Var) -> Result<(), LlvmError> {
        if self.low.flavor == Flavor::Cpu {
            return Ok(());
        }
        let t = self.f.var_ty(v);
        let i32t = self.ctx.i32_type();
        let i64t = self.ctx.i64_type();
        let mut x = self.load_var(v)?;
        let lane = if self.low.flavor == Flavor::Amdgpu {
            // The lane within the hardware wave (wave32 or wave64).
            let lo = self.call_intrinsic(
                "llvm.amdgcn.mbcnt.lo",
                &[],
                &[self.i32c(-1).into(), self.i32c(0).into()],
            )?;
            Some(self.int(self.call_intrinsic(
                "llvm.amdgcn.mbcnt.hi",
                &[],
                &[self.i32c(-1).into(), lo.into()],
            )?)?)
        } else {
            None
        };
        for off in [16, 8, 4, 2, 1] {
            let shfl = |s: &Self, w: IntValue<'ctx>| -> Result<IntValue<'ctx>, LlvmError> {
                match lane {
                    Some(lane) => {
                        let src = s.b.build_xor(lane, s.i32c(off), "")?;
                        let addr = s.b.build_left_shift(src, s.i32c(2), "")?;
                        s.int(s.call_intrinsic(
                            "llvm.amdgcn.ds.bpermute",
                            &[],
                            &[addr.into(), w.into()],
                        )?)
                    }
                    None => s.int(s.call_intrinsic(
                        "llvm.nvvm.shfl.sync.bfly.i32",
                        &[],
                        &[
                            s.i32c(-1).into(),
                            w.into(),
                            s.i32c(off).into(),
                            s.i32c(31).into(),
                        ],
                    )?),
                }
            };
            x = match t {
                Ty::I32 => {
                    let w = self.int(x)?;
                    let o = shfl(self, w)?;
                    self.b.build_int_add(w, o, "")?.into()
                }
                Ty::F32 => {
                    let w = self.b.build_bit_cast(x, i32t, "")?.into_int_value();
                    let o = shfl(self, w)?;
                    let of = self
                        .b
                        .build_bit_cast(o, self.ctx.f32_type(), "")?
                        .into_float_value();
                    self.b.build_float_add(x.into_float_value(), of, "")?.into()
                }
                Ty::I64 => {
                    let w = self.int(x)?;
                    let lo = self.b.build_int_truncate(w, i32t, "")?;
                    let hi = self
                        .b
                        .build_right_shift(w, i64t.const_int(32, false), false, "")?;
                    let hi = self.b.build_int_truncate(hi, i32t, "")?;
                    let lo = shfl(self, lo)?;
                    let hi = shfl(self, hi)?;
                    let lo = self.b.build_int_z_extend(lo, i64t, "")?;
                    let hi = self.b.build_int_z_extend(hi, i64t, "")?;
                    let hi = self.b.build_left_shift(hi, i64t.const_int(32, false), "")?;
                    let o = self.b.build_or(hi, lo, "")?;
                    self.b.build_int_add(w, o, "")?.into()
                }
            };
        }
        self.store_var(v, x)
    }
}

fn set_align(v: BasicValueEnum<'_>, align: u32) -> Result<(), LlvmError> {
    if let Some(i) = v.as_instruction_value() {
        i.set_alignment(align)
            .map_err(|e| LlvmError::Llvm(format!("alignment: {e:?}")))?;
    }
    Ok(())
}
