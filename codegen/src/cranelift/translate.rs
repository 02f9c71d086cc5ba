//! Loop IR → CLIF, one operation at a time, following the interpreter's semantics.
//!
//! - Integers: `I32`/`I64` wrap (Cranelift arithmetic is modular); shift amounts are
//!   masked to the type width (Cranelift's `ishl`/`sshr`/`ushr` do exactly that);
//!   `Min`/`Max` are signed. Division and remainder never trap: a zero divisor returns
//!   [`STATUS_DIV_BY_ZERO`] from the function, and `x / -1` is a wrapping negation.
//! - `f32`: IEEE operations without fusion; `Min`/`Max` return the other operand when
//!   one is NaN (Rust's `f32::min`), bitwise operations on floats give NaN.
//! - `Cast`: int→int sign-extends or truncates, int→f32 rounds to nearest even,
//!   f32→int saturates to `i64` then truncates (Rust's `as i64`, NaN → 0).
//! - Loads: i8 sign-extends, u8 zero-extends, bf16 is `bits << 16` (NaNs quieted),
//!   f16 is widened
//!   exactly with integer arithmetic (normals, subnormals, ±0, ±inf, NaN with the quiet
//!   bit set, as the `half` crate does). `LoadBytes` of `n` bytes reads exactly those
//!   `n` bytes (composed from 1/2/4/8-byte loads), little-endian.
//! - Stores convert to the element type; f32→f16/bf16 calls a helper that rounds to
//!   nearest even (the `half` crate, as the interpreter).
//! - `Select` whose arms may touch memory or divide is compiled as a branch, so the
//!   arm not taken is not evaluated (as in the interpreter).
//! - `For` evaluates its bounds once and tests `var < end` before every iteration;
//!   `Unroll` loops with constant bounds (≤ 64 trips) are unrolled.

use std::collections::HashMap;

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{
    types, AbiParam, Block, BlockArg, Endianness, FuncRef, InstBuilder, MemFlagsData, Type, Value,
};
use cranelift_codegen::Context;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};
use cranelift_jit::JITModule;
use cranelift_module::{Linkage, Module};

use super::simd::{self, Simd};
use super::{
    parallel_loop, CraneliftError, CraneliftOptions, HELPER_BF16, HELPER_F16, STATUS_DIV_BY_ZERO,
    STATUS_OUT_OF_BOUNDS,
};
use crate::loop_ir::{BinOp, CmpOp, Elem, Expr, Func, LoopKind, Stmt, Ty, Var};

/// Which function of a module is being built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The kernel itself (returns a status).
    Main,
    /// Returns the trip count of the parallel loop at this top-level index (or
    /// `-status` when a statement before it fails).
    Trips(usize),
}

/// Most trips of an `Unroll` loop that is unrolled.
const MAX_UNROLL: i64 = 64;

pub(crate) fn cl_ty(t: Ty) -> Type {
    match t {
        Ty::I32 => types::I32,
        Ty::I64 => types::I64,
        Ty::F32 => types::F32,
    }
}

fn invalid(msg: impl Into<String>) -> CraneliftError {
    CraneliftError::Invalid(msg.into())
}

/// Checks every index into the function's tables, so that `Func::ty` cannot panic.
fn check_refs(f: &Func) -> Result<(), CraneliftError> {
    fn expr(f: &Func, e: &Expr) -> Result<(), CraneliftError> {
        let var = |v: &Var| {
            if (v.0 as usize) < f.vars.len() {
                Ok(())
            } else {
                Err(invalid(format!("variable %{} is not declared", v.0)))
            }
        };
        let buf = |b: usize| {
            if b < f.bufs.len() {
                Ok(())
            } else {
                Err(invalid(format!("buffer {b} does not exist")))
            }
        };
        match e {
            Expr::Int(..) | Expr::F32(_) | Expr::Special(_) => Ok(()),
            Expr::Var(v) => var(v),
            Expr::Dim(d) => {
                if *d < f.dims.len() {
                    Ok(())
                } else {
                    Err(invalid(format!("dimension {d} does not exist")))
                }
            }
            Expr::Bin(_, a, b) | Expr::Cmp(_, a, b) => {
                expr(f, a)?;
                expr(f, b)
            }
            Expr::Select(c, a, b) => {
                expr(f, c)?;
                expr(f, a)?;
                expr(f, b)
            }
            Expr::Cast(_, a) => expr(f, a),
            Expr::Load { buf: b, index } => {
                buf(*b)?;
                expr(f, index)
            }
            Expr::LoadBytes { buf: b, offset, .. } => {
                buf(*b)?;
                expr(f, offset)
            }
            Expr::Bfe { value, .. } => expr(f, value),
            Expr::DotRun {
                buf: b,
                index,
                codes,
                acc,
            } => {
                buf(*b)?;
                codes.iter().try_for_each(var)?;
                expr(f, index)?;
                expr(f, acc)
            }
            Expr::LoadShared(_) => Err(CraneliftError::GpuOnly { op: "load_shared" }),
            Expr::HFma2 { .. } => Err(CraneliftError::GpuOnly { op: "hfma2" }),
            Expr::DotPacked {
                act,
                act_index,
                wbuf,
                byte_offset,
                acc,
                ..
            } => {
                buf(*act)?;
                buf(*wbuf)?;
                expr(f, act_index)?;
                expr(f, byte_offset)?;
                expr(f, acc)
            }
            Expr::Dot4 { a, b, acc } => {
                expr(f, a)?;
                expr(f, b)?;
                expr(f, acc)
            }
            Expr::BytePerm { a, b, .. } => {
                expr(f, a)?;
                expr(f, b)
            }
            Expr::FromBits(a) | Expr::F16ToF32(a) => expr(f, a),
        }
    }
    fn stmts(f: &Func, body: &[Stmt]) -> Result<(), CraneliftError> {
        let var = |v: &Var| {
            if (v.0 as usize) < f.vars.len() {
                Ok(())
            } else {
                Err(invalid(format!("variable %{} is not declared", v.0)))
            }
        };
        for s in body {
            match s {
                Stmt::Let(v, e) | Stmt::Set(v, e) => {
                    var(v)?;
                    expr(f, e)?;
                }
                Stmt::For {
                    var: v,
                    start,
                    end,
                    body,
                    ..
                } => {
                    var(v)?;
                    expr(f, start)?;
                    expr(f, end)?;
                    stmts(f, body)?;
                }
                Stmt::If { cond, then } => {
                    expr(f, cond)?;
                    stmts(f, then)?;
                }
                Stmt::Store { buf, index, value } => {
                    if *buf >= f.bufs.len() {
                        return Err(invalid(format!("buffer {buf} does not exist")));
                    }
                    expr(f, index)?;
                    expr(f, value)?;
                }
                Stmt::LoadVec4 { .. }
                | Stmt::WarpSum(_)
                | Stmt::StoreShared4 { .. }
                | Stmt::WarpSync
                | Stmt::BlockSync
                | Stmt::Async(_)
                | Stmt::Mma { .. } => {
                    return Err(CraneliftError::GpuOnly {
                        op: s.gpu_only().unwrap_or("gpu statement"),
                    })
                }
                Stmt::Comment(_) => {}
            }
        }
        Ok(())
    }
    stmts(f, &f.body)
}

/// Builds the CLIF of `f` into `ctx.func` (signature and name already set).
pub(crate) fn build(
    module: &mut JITModule,
    ctx: &mut Context,
    fctx: &mut FunctionBuilderContext,
    f: &Func,
    opts: &CraneliftOptions,
    mode: Mode,
) -> Result<(), CraneliftError> {
    check_refs(f)?;
    let ptr = module.target_config().pointer_type();
    if ptr != types::I64 {
        return Err(CraneliftError::Host(
            "only 64-bit hosts are supported".into(),
        ));
    }
    let frontend_config = module.target_config();
    let mut b = FunctionBuilder::new(&mut ctx.func, fctx);
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let params = b.block_params(entry).to_vec();
    let (bufs_p, lens_p, dims_p, n_lo, n_hi) = match params.as_slice() {
        [a, l, d, lo, hi] => (*a, *l, *d, *lo, *hi),
        _ => return Err(invalid("unexpected function signature")),
    };
    let table = MemFlagsData::new()
        .with_notrap()
        .with_readonly()
        .with_aligned()
        .with_endianness(Endianness::Little);
    let bufs: Vec<Value> = (0..f.bufs.len())
        .map(|i| b.ins().load(types::I64, table, bufs_p, (8 * i) as i32))
        .collect();
    let lens: Vec<Value> = if opts.bounds_checks {
        (0..f.bufs.len())
            .map(|i| b.ins().load(types::I64, table, lens_p, (8 * i) as i32))
            .collect()
    } else {
        Vec::new()
    };
    let dims: Vec<Value> = (0..f.dims.len())
        .map(|i| b.ins().load(types::I64, table, dims_p, (8 * i) as i32))
        .collect();
    let vars: Vec<Variable> = f.vars.iter().map(|v| b.declare_var(cl_ty(v.ty))).collect();
    let mut t = Tr {
        f,
        opts,
        module,
        b,
        vars,
        bufs,
        lens,
        dims,
        n_lo,
        n_hi,
        mode,
        err_block: None,
        helpers: HashMap::new(),
        simd: Simd::new(f.vars.len()),
    };
    t.body(mode)?;
    t.finish_err_block();
    let Tr { mut b, .. } = t;
    b.seal_all_blocks();
    b.finalize(frontend_config);
    Ok(())
}

/// The translator's state for one function.
pub(crate) struct Tr<'a, 'b> {
    pub(crate) f: &'a Func,
    pub(crate) opts: &'a CraneliftOptions,
    module: &'a mut JITModule,
    pub(crate) b: FunctionBuilder<'b>,
    pub(crate) vars: Vec<Variable>,
    bufs: Vec<Value>,
    lens: Vec<Value>,
    dims: Vec<Value>,
    n_lo: Value,
    n_hi: Value,
    mode: Mode,
    err_block: Option<Block>,
    helpers: HashMap<&'static str, FuncRef>,
    pub(crate) simd: Simd,
}

/// Memory flags of loads from input buffers and of accesses to the output.
pub(crate) fn mem_flags(output: bool) -> MemFlagsData {
    let m = MemFlagsData::new()
        .with_notrap()
        .with_endianness(Endianness::Little);
    if output {
        m
    } else {
        m.with_readonly()
    }
}

/// Whether evaluating `e` may touch memory or divide (so it must not be speculated).
fn may_fault(e: &Expr) -> bool {
    match e {
        Expr::Load { .. }
        | Expr::LoadBytes { .. }
        | Expr::DotRun { .. }
        | Expr::DotPacked { .. }
        | Expr::LoadShared(_) => true,
        // A division by anything but a nonzero constant may trap.
        Expr::Bin(BinOp::Div | BinOp::Rem, _, b) if !matches!(**b, Expr::Int(c, _) if c != 0) => {
            true
        }
        _ => e.children().into_iter().any(may_fault),
    }
}

impl Tr<'_, '_> {
    fn body(&mut self, mode: Mode) -> Result<(), CraneliftError> {
        match mode {
            Mode::Main => {
                let par = parallel_loop(self.f);
                for (i, s) in self.f.body.iter().enumerate() {
                    self.stmt(s, par == Some(i))?;
                }
                let zero = self.b.ins().iconst(types::I32, 0);
                self.b.ins().return_(&[zero]);
            }
            Mode::Trips(p) => {
                let (start, end, step) = match self.f.body.get(p) {
                    Some(Stmt::For {
                        start, end, step, ..
                    }) => (start, end, *step),
                    _ => return Err(invalid("the parallel loop is missing")),
                };
                for s in &self.f.body[..p] {
                    self.stmt(s, false)?;
                }
                let s = self.expr_i64(start)?;
                let e = self.expr_i64(end)?;
                let trips = self.trips(s, e, step);
                self.b.ins().return_(&[trips]);
            }
        }
        Ok(())
    }

    /// `max(0, ceil((end - start) / step))` for `step >= 1`.
    fn trips(&mut self, start: Value, end: Value, step: i64) -> Value {
        let ins = self.b.ins();
        let span = ins.isub(end, start);
        let zero = self.b.ins().iconst(types::I64, 0);
        let span = self.b.ins().smax(span, zero);
        let up = self.b.ins().iadd_imm_s(span, step - 1);
        let stepv = self.b.ins().iconst(types::I64, step);
        self.b.ins().sdiv(up, stepv)
    }

    // ---------------------------------------------------------------- errors

    /// The shared error exit (filled in by [`Tr::finish_err_block`]).
    fn err_block(&mut self) -> Block {
        if let Some(b) = self.err_block {
            return b;
        }
        let blk = self.b.create_block();
        self.b.set_cold_block(blk);
        self.b.append_block_param(blk, types::I32);
        self.err_block = Some(blk);
        blk
    }

    /// Emits the error exit: returns its status (main) or `-status` (trips).
    fn finish_err_block(&mut self) {
        let Some(blk) = self.err_block else { return };
        self.b.switch_to_block(blk);
        let code = self.b.block_params(blk)[0];
        match self.mode {
            Mode::Main => {
                self.b.ins().return_(&[code]);
            }
            Mode::Trips(_) => {
                let c = self.b.ins().sextend(types::I64, code);
                let neg = self.b.ins().ineg(c);
                self.b.ins().return_(&[neg]);
            }
        }
    }

    /// Returns `status` from the function when `cond` (an integer) is nonzero.
    fn fail_if(&mut self, cond: Value, status: i32) {
        let err = self.err_block();
        let cont = self.b.create_block();
        let code = self.b.ins().iconst(types::I32, status as i64);
        self.b
            .ins()
            .brif(cond, err, &[BlockArg::Value(code)], cont, &[]);
        self.b.switch_to_block(cont);
    }

    /// With bounds checks on: fails unless bytes `off..off+len` lie in buffer `buf`.
    pub(crate) fn check_bounds(&mut self, buf: usize, off: Value, len: i64) {
        if !self.opts.bounds_checks {
            return;
        }
        let size = self.lens[buf];
        let end = self.b.ins().iadd_imm_s(off, len);
        let past = self.b.ins().icmp(IntCC::UnsignedGreaterThan, end, size);
        let wrapped = self.b.ins().icmp(IntCC::UnsignedGreaterThan, off, end);
        let bad = self.b.ins().bor(past, wrapped);
        self.fail_if(bad, STATUS_OUT_OF_BOUNDS);
    }

    /// Address of byte `off` (`I64`) of buffer `buf`.
    pub(crate) fn addr(&mut self, buf: usize, off: Value) -> Value {
        self.b.ins().iadd(self.bufs[buf], off)
    }

    // ----------------------------------------------------------- conversions

    pub(crate) fn ty(&self, e: &Expr) -> Ty {
        self.f.ty(e)
    }

    /// Converts `v` of type `from` to `to` with the semantics of `Cast`.
    pub(crate) fn convert(&mut self, v: Value, from: Ty, to: Ty) -> Value {
        match (from, to) {
            (a, b) if a == b => v,
            (Ty::I32, Ty::I64) => self.b.ins().sextend(types::I64, v),
            (Ty::I64, Ty::I32) => self.b.ins().ireduce(types::I32, v),
            (_, Ty::F32) => self.b.ins().fcvt_from_sint(types::F32, v),
            (Ty::F32, Ty::I64) => self.b.ins().fcvt_to_sint_sat(types::I64, v),
            (Ty::F32, Ty::I32) => {
                let w = self.b.ins().fcvt_to_sint_sat(types::I64, v);
                self.b.ins().ireduce(types::I32, w)
            }
            // Unreachable: every pair is covered above.
            _ => v,
        }
    }

    /// An integer expression as `I64` (indices, offsets, bounds).
    pub(crate) fn expr_i64(&mut self, e: &Expr) -> Result<Value, CraneliftError> {
        let t = self.ty(e);
        if t == Ty::F32 {
            return Err(invalid("an index, offset or loop bound is f32"));
        }
        let v = self.expr(e)?;
        Ok(self.convert(v, t, Ty::I64))
    }

    /// A condition as an integer (nonzero = true).
    fn cond(&mut self, e: &Expr) -> Result<Value, CraneliftError> {
        let t = self.ty(e);
        let v = self.expr(e)?;
        Ok(if t == Ty::F32 {
            self.convert(v, Ty::F32, Ty::I64)
        } else {
            v
        })
    }

    fn iconst(&mut self, t: Ty, v: i64) -> Value {
        match t {
            Ty::I32 => self.b.ins().iconst(types::I32, v as i32 as u32 as i64),
            Ty::I64 => self.b.ins().iconst(types::I64, v),
            Ty::F32 => self.b.ins().f32const(v as f32),
        }
    }

    // ----------------------------------------------------------- expressions

    pub(crate) fn expr(&mut self, e: &Expr) -> Result<Value, CraneliftError> {
        Ok(match e {
            Expr::Int(v, t) => self.iconst(*t, *v),
            Expr::F32(x) => self.b.ins().f32const(*x),
            Expr::Var(v) => self.b.use_var(self.vars[v.0 as usize]),
            Expr::Dim(d) => self.dims[*d],
            Expr::Special(_) => {
                return Err(CraneliftError::GpuOnly {
                    op: "special register",
                })
            }
            Expr::Bin(op, a, bx) => self.bin(*op, a, bx)?,
            Expr::Cmp(op, a, bx) => {
                let t = self.ty(a);
                if self.ty(bx) != t {
                    return Err(invalid(format!(
                        "comparison of {} with {}",
                        t.name(),
                        self.ty(bx).name()
                    )));
                }
                let x = self.expr(a)?;
                let y = self.expr(bx)?;
                let c = if t == Ty::F32 {
                    let cc = match op {
                        CmpOp::Lt => FloatCC::LessThan,
                        CmpOp::Le => FloatCC::LessThanOrEqual,
                        CmpOp::Eq => FloatCC::Equal,
                        CmpOp::Ne => FloatCC::NotEqual,
                    };
                    self.b.ins().fcmp(cc, x, y)
                } else {
                    let cc = match op {
                        CmpOp::Lt => IntCC::SignedLessThan,
                        CmpOp::Le => IntCC::SignedLessThanOrEqual,
                        CmpOp::Eq => IntCC::Equal,
                        CmpOp::Ne => IntCC::NotEqual,
                    };
                    self.b.ins().icmp(cc, x, y)
                };
                self.b.ins().uextend(types::I32, c)
            }
            Expr::Select(c, a, bx) => {
                let t = self.ty(a);
                if self.ty(bx) != t {
                    return Err(invalid(format!(
                        "select of {} and {}",
                        t.name(),
                        self.ty(bx).name()
                    )));
                }
                let cv = self.cond(c)?;
                if may_fault(a) || may_fault(bx) {
                    let then_b = self.b.create_block();
                    let else_b = self.b.create_block();
                    let join = self.b.create_block();
                    let r = self.b.append_block_param(join, cl_ty(t));
                    self.b.ins().brif(cv, then_b, &[], else_b, &[]);
                    self.b.switch_to_block(then_b);
                    self.simd.enter_block();
                    let va = self.expr(a)?;
                    self.b.ins().jump(join, &[BlockArg::Value(va)]);
                    self.b.switch_to_block(else_b);
                    self.simd.enter_block();
                    let vb = self.expr(bx)?;
                    self.b.ins().jump(join, &[BlockArg::Value(vb)]);
                    self.b.switch_to_block(join);
                    self.simd.enter_block();
                    r
                } else {
                    let va = self.expr(a)?;
                    let vb = self.expr(bx)?;
                    self.b.ins().select(cv, va, vb)
                }
            }
            Expr::Cast(to, a) => {
                let from = self.ty(a);
                let v = self.expr(a)?;
                self.convert(v, from, *to)
            }
            Expr::Load { buf, index } => {
                let i = self.expr_i64(index)?;
                self.load_elem(*buf, i)?
            }
            Expr::LoadBytes { buf, offset, bytes } => {
                let o = self.expr_i64(offset)?;
                self.load_bytes(*buf, o, *bytes)?
            }
            Expr::Bfe {
                value,
                pos,
                len,
                signed,
            } => {
                let t = self.ty(value);
                if t == Ty::F32 {
                    return Err(invalid("bit-field extract of an f32"));
                }
                let v = self.expr(value)?;
                self.bfe(v, t, *pos, *len, *signed)
            }
            Expr::DotRun {
                buf,
                index,
                codes,
                acc,
            } => {
                if let Some(v) = simd::dot_run(self, *buf, index, codes, acc)? {
                    v
                } else {
                    self.dot_run_scalar(*buf, index, codes, acc)?
                }
            }
            Expr::LoadShared(_) => return Err(CraneliftError::GpuOnly { op: "load_shared" }),
            Expr::HFma2 { .. } => return Err(CraneliftError::GpuOnly { op: "hfma2" }),
            Expr::F16ToF32(a) => {
                let x = self.expr(a)?;
                let h = self.b.ins().band_imm_s(x, 0xffff);
                let bits = self.f16_bits_to_f32_bits(h);
                self.b.ins().bitcast(types::F32, super::simd::le(), bits)
            }
            Expr::FromBits(a) => {
                let x = self.expr(a)?;
                self.b.ins().bitcast(types::F32, super::simd::le(), x)
            }
            Expr::BytePerm { a, b: bx, sel } => {
                let src = [self.expr(a)?, self.expr(bx)?];
                let mut r = self.b.ins().iconst(types::I32, 0);
                for i in 0..4 {
                    let from = i64::from((*sel >> (4 * i)) & 7);
                    let x = self
                        .b
                        .ins()
                        .ushr_imm_s(src[(from / 4) as usize], 8 * (from % 4));
                    let x = self.b.ins().band_imm_s(x, 0xff);
                    let x = self.b.ins().ishl_imm_s(x, 8 * i as i64);
                    r = self.b.ins().bor(r, x);
                }
                r
            }
            Expr::DotPacked {
                act,
                act_index,
                wbuf,
                byte_offset,
                layout,
                count,
                acc,
            } => super::packed::dot_packed(
                self,
                *act,
                act_index,
                *wbuf,
                byte_offset,
                layout,
                *count,
                acc,
            )?,
            Expr::Dot4 { a, b: bx, acc } => {
                for x in [a, bx, acc] {
                    if self.ty(x) != Ty::I32 {
                        return Err(invalid("dot4 operands must be i32"));
                    }
                }
                let x = self.expr(a)?;
                let y = self.expr(bx)?;
                let mut s = self.expr(acc)?;
                for i in 0..4 {
                    let xs = self.b.ins().ishl_imm_s(x, 24 - 8 * i);
                    let xs = self.b.ins().sshr_imm_s(xs, 24);
                    let ys = self.b.ins().ishl_imm_s(y, 24 - 8 * i);
                    let ys = self.b.ins().sshr_imm_s(ys, 24);
                    let p = self.b.ins().imul(xs, ys);
                    s = self.b.ins().iadd(s, p);
                }
                s
            }
        })
    }

    fn bin(&mut self, op: BinOp, a: &Expr, bx: &Expr) -> Result<Value, CraneliftError> {
        let t = self.ty(a);
        if self.ty(bx) != t {
            return Err(invalid(format!(
                "{op:?} of {} and {}",
                t.name(),
                self.ty(bx).name()
            )));
        }
        let x = self.expr(a)?;
        let y = self.expr(bx)?;
        Ok(if t == Ty::F32 {
            match op {
                BinOp::Add => self.b.ins().fadd(x, y),
                BinOp::Sub => self.b.ins().fsub(x, y),
                BinOp::Mul => self.b.ins().fmul(x, y),
                BinOp::Div => self.b.ins().fdiv(x, y),
                BinOp::Min | BinOp::Max => {
                    // Rust's f32::min/max: a NaN operand yields the other operand.
                    let cc = if op == BinOp::Min {
                        FloatCC::LessThan
                    } else {
                        FloatCC::GreaterThan
                    };
                    let pick_y = self.b.ins().fcmp(cc, y, x);
                    let r = self.b.ins().select(pick_y, y, x);
                    let x_nan = self.b.ins().fcmp(FloatCC::Unordered, x, x);
                    self.b.ins().select(x_nan, y, r)
                }
                _ => self.b.ins().f32const(f32::NAN),
            }
        } else {
            match op {
                BinOp::Add => self.b.ins().iadd(x, y),
                BinOp::Sub => self.b.ins().isub(x, y),
                BinOp::Mul => self.b.ins().imul(x, y),
                BinOp::Div | BinOp::Rem => {
                    let c = match bx {
                        Expr::Int(c, _) if t == Ty::I32 => Some(*c as i32 as i64),
                        Expr::Int(c, _) => Some(*c),
                        _ => None,
                    };
                    let rem = op == BinOp::Rem;
                    match c {
                        Some(c) if c != 0 && c != -1 => {
                            if rem {
                                self.b.ins().srem(x, y)
                            } else {
                                self.b.ins().sdiv(x, y)
                            }
                        }
                        _ => {
                            let zero = self.b.ins().icmp_imm_s(IntCC::Equal, y, 0);
                            self.fail_if(zero, STATUS_DIV_BY_ZERO);
                            let m1 = self.b.ins().icmp_imm_s(IntCC::Equal, y, -1);
                            let one = self.iconst(t, 1);
                            let ys = self.b.ins().select(m1, one, y);
                            if rem {
                                self.b.ins().srem(x, ys)
                            } else {
                                let q = self.b.ins().sdiv(x, ys);
                                let neg = self.b.ins().ineg(x);
                                self.b.ins().select(m1, neg, q)
                            }
                        }
                    }
                }
                BinOp::Min => self.b.ins().smin(x, y),
                BinOp::Max => self.b.ins().smax(x, y),
                BinOp::And => self.b.ins().band(x, y),
                BinOp::Or => self.b.ins().bor(x, y),
                BinOp::Xor => self.b.ins().bxor(x, y),
                BinOp::Shl => self.b.ins().ishl(x, y),
                BinOp::Sar => self.b.ins().sshr(x, y),
                BinOp::Shr => self.b.ins().ushr(x, y),
            }
        })
    }

    /// Bits `pos..pos+len` of `v` (of int type `t`), sign-extended if `signed`.
    fn bfe(&mut self, v: Value, t: Ty, pos: u8, len: u8, signed: bool) -> Value {
        let w: u32 = if t == Ty::I32 { 32 } else { 64 };
        let (pos, len) = (pos as u32, len as u32);
        if len == 0 || pos >= w {
            return self.iconst(t, 0);
        }
        if pos + len > w {
            // The field runs past the value: its top (sign) bit is 0.
            return self.b.ins().ushr_imm_s(v, pos as i64);
        }
        if pos + len == w {
            return if signed {
                self.b.ins().sshr_imm_s(v, pos as i64)
            } else {
                self.b.ins().ushr_imm_s(v, pos as i64)
            };
        }
        if signed {
            let up = self.b.ins().ishl_imm_s(v, (w - pos - len) as i64);
            self.b.ins().sshr_imm_s(up, (w - len) as i64)
        } else {
            let down = self.b.ins().ushr_imm_s(v, pos as i64);
            let mask = if len >= 64 {
                -1i64
            } else {
                ((1u64 << len) - 1) as i64
            };
            self.b.ins().band_imm_s(down, mask)
        }
    }

    /// Element `index` (`I64`) of `buf`, converted to its register type.
    pub(crate) fn load_elem(&mut self, buf: usize, index: Value) -> Result<Value, CraneliftError> {
        let elem = self.f.bufs[buf].elem;
        let size = elem.bytes() as i64;
        let off = if size == 1 {
            index
        } else {
            self.b.ins().imul_imm_s(index, size)
        };
        self.check_bounds(buf, off, size);
        let addr = self.addr(buf, off);
        let fl = mem_flags(self.f.bufs[buf].output);
        let ins = self.b.ins();
        Ok(match elem {
            Elem::I8 => ins.sload8(types::I32, fl, addr, 0),
            Elem::U8 => ins.uload8(types::I32, fl, addr, 0),
            Elem::I32 => ins.load(types::I32, fl, addr, 0),
            Elem::F32 => ins.load(types::F32, fl, addr, 0),
            Elem::BF16 => {
                // bits << 16; NaNs get the quiet bit (as the `half` crate).
                let h = ins.uload16(types::I32, fl, addr, 0);
                let bits = self.b.ins().ishl_imm_s(h, 16);
                let mag = self.b.ins().band_imm_s(h, 0x7fff);
                let nan = self
                    .b
                    .ins()
                    .icmp_imm_s(IntCC::SignedGreaterThan, mag, 0x7f80);
                let q = self.b.ins().uextend(types::I32, nan);
                let q = self.b.ins().ishl_imm_s(q, 22);
                let bits = self.b.ins().bor(bits, q);
                self.b.ins().bitcast(types::F32, MemFlagsData::new(), bits)
            }
            Elem::F16 => {
                let h = ins.uload16(types::I32, fl, addr, 0);
                let bits = self.f16_bits_to_f32_bits(h);
                self.b.ins().bitcast(types::F32, MemFlagsData::new(), bits)
            }
        })
    }

    /// f16 bits (low 16 bits of an `i32`) to the bits of the equal f32.
    ///
    /// The magnitude bits shifted into place are an f32 with the f16's exponent; a
    /// multiply by 2^112 rebiases it exactly (normals, subnormals and zero alike);
    /// infinities and NaNs (all exponent bits set) get all f32 exponent bits instead,
    /// NaNs also the quiet bit.
    pub(crate) fn f16_bits_to_f32_bits(&mut self, h: Value) -> Value {
        let mag = self.b.ins().band_imm_s(h, 0x7fff);
        let t = self.b.ins().ishl_imm_s(mag, 13);
        let tf = self.b.ins().bitcast(types::F32, MemFlagsData::new(), t);
        let scale = self.b.ins().f32const(f32::from_bits((127 + 112) << 23));
        let f = self.b.ins().fmul(tf, scale);
        let finite = self.b.ins().bitcast(types::I32, MemFlagsData::new(), f);
        let special = self.b.ins().bor_imm_s(t, 0x7f80_0000);
        let is_nan = self
            .b
            .ins()
            .icmp_imm_s(IntCC::SignedGreaterThan, mag, 0x7c00);
        let q = self.b.ins().uextend(types::I32, is_nan);
        let q = self.b.ins().ishl_imm_s(q, 22);
        let special = self.b.ins().bor(special, q);
        let is_special = self
            .b
            .ins()
            .icmp_imm_s(IntCC::SignedGreaterThan, mag, 0x7bff);
        let r = self.b.ins().select(is_special, special, finite);
        let sign = self.b.ins().band_imm_s(h, 0x8000);
        let sign = self.b.ins().ishl_imm_s(sign, 16);
        self.b.ins().bor(r, sign)
    }

    /// `bytes` little-endian bytes at byte `off` of `buf`, zero-extended.
    fn load_bytes(&mut self, buf: usize, off: Value, bytes: u8) -> Result<Value, CraneliftError> {
        if !(1..=8).contains(&bytes) {
            return Err(invalid(format!(
                "byte load of {bytes} bytes (1..=8 allowed)"
            )));
        }
        self.check_bounds(buf, off, bytes as i64);
        let addr = self.addr(buf, off);
        let fl = mem_flags(self.f.bufs[buf].output);
        self.simd.last_load = Some((addr, bytes, fl));
        // Pieces (offset, width in bytes) composing the value, low bytes first.
        let pieces: &[(i32, u8)] = match bytes {
            1 => &[(0, 1)],
            2 => &[(0, 2)],
            3 => &[(0, 2), (2, 1)],
            4 => &[(0, 4)],
            5 => &[(0, 4), (4, 1)],
            6 => &[(0, 4), (4, 2)],
            7 => &[(0, 4), (4, 2), (6, 1)],
            _ => &[(0, 8)],
        };
        let ty = if bytes > 4 { types::I64 } else { types::I32 };
        let mut acc: Option<Value> = None;
        for &(o, w) in pieces {
            let v = match (w, ty == types::I64) {
                (1, _) => self.b.ins().uload8(ty, fl, addr, o),
                (2, _) => self.b.ins().uload16(ty, fl, addr, o),
                (4, false) => self.b.ins().load(types::I32, fl, addr, o),
                (4, true) => self.b.ins().uload32(fl, addr, o),
                _ => self.b.ins().load(types::I64, fl, addr, o),
            };
            acc = Some(match acc {
                None => v,
                Some(a) => {
                    let sh = self.b.ins().ishl_imm_s(v, 8 * o as i64);
                    self.b.ins().bor(a, sh)
                }
            });
        }
        acc.ok_or_else(|| invalid("empty byte load"))
    }

    fn dot_run_scalar(
        &mut self,
        buf: usize,
        index: &Expr,
        codes: &[Var],
        acc: &Expr,
    ) -> Result<Value, CraneliftError> {
        let t = self.ty(acc);
        let base = self.expr_i64(index)?;
        let mut s = self.expr(acc)?;
        self.dot_terms(buf, base, codes, t, &mut s)?;
        Ok(s)
    }

    /// `s += Σ_j load(buf, base + j) * codes[j]` in type `t`, one term at a time.
    pub(crate) fn dot_terms(
        &mut self,
        buf: usize,
        base: Value,
        codes: &[Var],
        t: Ty,
        s: &mut Value,
    ) -> Result<(), CraneliftError> {
        let elem = self.f.bufs[buf].elem;
        if !codes.is_empty() && self.opts.bounds_checks {
            let size = elem.bytes() as i64;
            let off = self.b.ins().imul_imm_s(base, size);
            self.check_bounds(buf, off, size * codes.len() as i64);
        }
        for (j, c) in codes.iter().enumerate() {
            let idx = self.b.ins().iadd_imm_s(base, j as i64);
            let a = self.load_elem(buf, idx)?;
            let a = self.convert(a, elem.reg(), t);
            let w = self.b.use_var(self.vars[c.0 as usize]);
            let w = self.convert(w, self.f.var_ty(*c), t);
            *s = if t == Ty::F32 {
                let p = self.b.ins().fmul(a, w);
                self.b.ins().fadd(*s, p)
            } else {
                let p = self.b.ins().imul(a, w);
                self.b.ins().iadd(*s, p)
            };
        }
        Ok(())
    }

    // ------------------------------------------------------------ statements

    fn stmts(&mut self, body: &[Stmt]) -> Result<(), CraneliftError> {
        for s in body {
            self.stmt(s, false)?;
        }
        Ok(())
    }

    fn stmt(&mut self, s: &Stmt, parallel: bool) -> Result<(), CraneliftError> {
        match s {
            Stmt::Let(v, e) | Stmt::Set(v, e) => {
                let vt = self.f.var_ty(*v);
                if self.ty(e) != vt {
                    return Err(invalid(format!(
                        "%{} ({}) assigned a {} value",
                        self.f.var_name(*v),
                        vt.name(),
                        self.ty(e).name()
                    )));
                }
                self.simd.last_load = None;
                if !simd::assign(self, *v, e)? {
                    let val = self.expr(e)?;
                    self.b.def_var(self.vars[v.0 as usize], val);
                }
                self.simd.assigned(*v, e, self.f);
            }
            Stmt::For {
                var,
                start,
                end,
                step,
                kind,
                body,
            } => self.for_loop(*var, start, end, *step, *kind, body, parallel)?,
            Stmt::If { cond, then } => {
                let c = self.cond(cond)?;
                let then_b = self.b.create_block();
                let merge = self.b.create_block();
                self.b.ins().brif(c, then_b, &[], merge, &[]);
                self.b.switch_to_block(then_b);
                self.simd.enter_block();
                self.stmts(then)?;
                self.b.ins().jump(merge, &[]);
                self.b.switch_to_block(merge);
                self.simd.enter_block();
            }
            Stmt::Store { buf, index, value } => {
                let bd = &self.f.bufs[*buf];
                if !bd.output {
                    return Err(CraneliftError::StoreToInput {
                        buf: bd.name.clone(),
                    });
                }
                let elem = bd.elem;
                let i = self.expr_i64(index)?;
                let vt = self.ty(value);
                let v = self.expr(value)?;
                let size = elem.bytes() as i64;
                let off = if size == 1 {
                    i
                } else {
                    self.b.ins().imul_imm_s(i, size)
                };
                self.check_bounds(*buf, off, size);
                let addr = self.addr(*buf, off);
                let fl = mem_flags(true);
                match elem {
                    Elem::I8 | Elem::U8 => {
                        let x = self.convert(v, vt, Ty::I32);
                        self.b.ins().istore8(fl, x, addr, 0);
                    }
                    Elem::I32 => {
                        let x = self.convert(v, vt, Ty::I32);
                        self.b.ins().store(fl, x, addr, 0);
                    }
                    Elem::F32 => {
                        let x = self.convert(v, vt, Ty::F32);
                        self.b.ins().store(fl, x, addr, 0);
                    }
                    Elem::F16 | Elem::BF16 => {
                        let x = self.convert(v, vt, Ty::F32);
                        let name = if elem == Elem::F16 {
                            HELPER_F16
                        } else {
                            HELPER_BF16
                        };
                        let h = self.helper(name)?;
                        let call = self.b.ins().call(h, &[x]);
                        let bits = self
                            .b
                            .inst_results(call)
                            .first()
                            .copied()
                            .ok_or_else(|| invalid("helper returned nothing"))?;
                        self.b.ins().istore16(fl, bits, addr, 0);
                    }
                }
            }
            Stmt::LoadVec4 { .. }
            | Stmt::WarpSum(_)
            | Stmt::StoreShared4 { .. }
            | Stmt::WarpSync
            | Stmt::BlockSync
            | Stmt::Async(_)
            | Stmt::Mma { .. } => {
                return Err(CraneliftError::GpuOnly {
                    op: s.gpu_only().unwrap_or("gpu statement"),
                })
            }
            Stmt::Comment(_) => {}
        }
        Ok(())
    }

    /// Imports a conversion helper (`fn(f32) -> u32`) into the function.
    fn helper(&mut self, name: &'static str) -> Result<FuncRef, CraneliftError> {
        if let Some(r) = self.helpers.get(name) {
            return Ok(*r);
        }
        let mut sig = self.module.make_signature();
        sig.params.push(AbiParam::new(types::F32));
        sig.returns.push(AbiParam::new(types::I32));
        let id = self
            .module
            .declare_function(name, Linkage::Import, &sig)
            .map_err(|e| CraneliftError::Cranelift(e.to_string()))?;
        let r = self.module.declare_func_in_func(id, self.b.func);
        self.helpers.insert(name, r);
        Ok(r)
    }

    #[allow(clippy::too_many_arguments)]
    fn for_loop(
        &mut self,
        var: Var,
        start: &Expr,
        end: &Expr,
        step: i64,
        kind: LoopKind,
        body: &[Stmt],
        parallel: bool,
    ) -> Result<(), CraneliftError> {
        let vt = self.f.var_ty(var);
        if vt == Ty::F32 || self.ty(start) == Ty::F32 || self.ty(end) == Ty::F32 {
            return Err(invalid("loop variables and bounds are integers"));
        }
        let lv = self.vars[var.0 as usize];
        // Unroll small constant loops.
        if let (LoopKind::Unroll, Expr::Int(s0, _), Expr::Int(e0, _)) = (kind, start, end) {
            let (s0, e0) = match vt {
                Ty::I32 => (*s0 as i32 as i64, *e0 as i32 as i64),
                _ => (*s0, *e0),
            };
            if step >= 1 && !parallel {
                let trips = if e0 > s0 {
                    (e0 - s0 + step - 1) / step
                } else {
                    0
                };
                if trips <= MAX_UNROLL {
                    for i in 0..trips {
                        let v = self.iconst(vt, s0 + i * step);
                        self.b.def_var(lv, v);
                        self.stmts(body)?;
                    }
                    let last = self.iconst(vt, s0 + trips * step);
                    self.b.def_var(lv, last);
                    return Ok(());
                }
            }
        }
        let start_v = self.expr(start)?;
        let start_v = self.convert(start_v, self.ty(start), vt);
        let end_v = self.expr(end)?;
        let end_v = self.convert(end_v, self.ty(end), vt);
        let (first, last) = if parallel && vt == Ty::I64 {
            // Iterations n_lo..n_hi of this call.
            let trips = self.trips(start_v, end_v, step);
            let zero = self.b.ins().iconst(types::I64, 0);
            let lo = self.b.ins().smax(self.n_lo, zero);
            let hi = self.b.ins().smin(self.n_hi, trips);
            let lo_off = self.b.ins().imul_imm_s(lo, step);
            let first = self.b.ins().iadd(start_v, lo_off);
            let hi_off = self.b.ins().imul_imm_s(hi, step);
            let stop = self.b.ins().iadd(start_v, hi_off);
            let last = self.b.ins().smin(end_v, stop);
            (first, last)
        } else {
            (start_v, end_v)
        };
        self.b.def_var(lv, first);
        let promoted = simd::promote(self, body, var)?;
        let body_b = self.b.create_block();
        let exit_b = self.b.create_block();
        let go = self.b.ins().icmp(IntCC::SignedLessThan, first, last);
        self.b.ins().brif(go, body_b, &[], exit_b, &[]);
        self.b.switch_to_block(body_b);
        self.simd.enter_block();
        self.stmts(body)?;
        let v = self.b.use_var(lv);
        let next = self.b.ins().iadd_imm_s(v, step);
        self.b.def_var(lv, next);
        let again = self.b.ins().icmp(IntCC::SignedLessThan, next, last);
        self.b.ins().brif(again, body_b, &[], exit_b, &[]);
        self.b.switch_to_block(exit_b);
        self.simd.enter_block();
        simd::finish(self, promoted)?;
        Ok(())
    }
}
