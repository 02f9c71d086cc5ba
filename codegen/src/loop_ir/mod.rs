//! The loop IR: an explicit, typed, structured program that every backend consumes.
//!
//! Lowering ([`crate::lower`]) turns a typed-IR kernel into a [`Func`] for a target
//! profile: loops with their schedule (serial, unrolled, split across CPU threads),
//! explicit byte loads of packed weights, constant-position bit-field extracts for the
//! unpack, typed accumulators (i32/i64/f32), scale multiplies placed once per group,
//! and stores with the output conversion. GPU profiles add thread/block indices,
//! 16-byte vector loads, `dp4a`-style dot products and warp reductions.
//!
//! Backends translate these operations one by one; none re-derives the kernel's
//! semantics from the AST or the typed IR. The semantics of every operation are
//! given by the loop-IR interpreter ([`crate::loop_ir::eval`]).

pub mod eval;
mod print;

pub use qkc_dsl::layout::LayoutDesc;

/// Bits between consecutive units of a packed layout in memory (a stream packs
/// units back to back; byte storage gives each unit a byte).
pub fn packed_stride_bits(l: &LayoutDesc) -> usize {
    match l.storage {
        qkc_dsl::layout::Storage::Byte => 8,
        qkc_dsl::layout::Storage::Stream => l.unit_bits as usize,
    }
}

/// Bytes of packed weights a [`Expr::DotPacked`] of `count` weights reads.
pub fn packed_block_bytes(l: &LayoutDesc, count: u32) -> usize {
    (count as usize / l.per_unit() * packed_stride_bits(l)).div_ceil(8)
}

/// A value type. Integers are two's complement; indices and byte offsets are `I64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ty {
    I32,
    I64,
    F32,
}

impl Ty {
    pub fn name(self) -> &'static str {
        match self {
            Ty::I32 => "i32",
            Ty::I64 => "i64",
            Ty::F32 => "f32",
        }
    }
}

/// Element type of a buffer in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Elem {
    I8,
    /// Packed bytes (weights in a layout's storage order).
    U8,
    I32,
    F16,
    BF16,
    F32,
}

impl Elem {
    pub fn name(self) -> &'static str {
        match self {
            Elem::I8 => "i8",
            Elem::U8 => "u8",
            Elem::I32 => "i32",
            Elem::F16 => "f16",
            Elem::BF16 => "bf16",
            Elem::F32 => "f32",
        }
    }

    pub fn bytes(self) -> usize {
        match self {
            Elem::I8 | Elem::U8 => 1,
            Elem::F16 | Elem::BF16 => 2,
            Elem::I32 | Elem::F32 => 4,
        }
    }

    /// The register type an element is loaded into.
    pub fn reg(self) -> Ty {
        match self {
            Elem::I8 | Elem::U8 | Elem::I32 => Ty::I32,
            Elem::F16 | Elem::BF16 | Elem::F32 => Ty::F32,
        }
    }
}

/// A buffer parameter. Inputs come first (typed-IR order), the output last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Buf {
    pub name: String,
    pub elem: Elem,
    pub output: bool,
}

/// A local variable (an SSA-like name that may be reassigned with [`Stmt::Set`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Var(pub u32);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VarInfo {
    pub name: String,
    pub ty: Ty,
}

/// Per-thread values of a GPU launch (all `I32`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Special {
    ThreadIdx,
    BlockIdx,
    BlockDim,
    /// `ThreadIdx % 32`.
    LaneId,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    /// Signed division (integers) or IEEE division (f32).
    Div,
    /// Signed remainder (integers only).
    Rem,
    Min,
    Max,
    And,
    Or,
    Xor,
    Shl,
    /// Arithmetic shift right.
    Sar,
    /// Logical shift right.
    Shr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CmpOp {
    Lt,
    Le,
    Eq,
    Ne,
}

/// An expression tree. Operands of a binary op have the same type.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Int(i64, Ty),
    F32(f32),
    Var(Var),
    /// A runtime dimension value (`I64`), by typed-IR dimension index.
    Dim(usize),
    Special(Special),
    Bin(BinOp, Box<Expr>, Box<Expr>),
    /// A comparison: `I32` 1 or 0.
    Cmp(CmpOp, Box<Expr>, Box<Expr>),
    /// `if c != 0 { a } else { b }`.
    Select(Box<Expr>, Box<Expr>, Box<Expr>),
    /// Conversion: integer widening (sign-extending) or narrowing (truncating),
    /// integer to f32 (round to nearest even).
    Cast(Ty, Box<Expr>),
    /// Loads element `index` (`I64`) of buffer `buf`, converted to its register type:
    /// i8 sign-extended, u8 zero-extended, f16/bf16 widened exactly to f32.
    Load {
        buf: usize,
        index: Box<Expr>,
    },
    /// Loads `bytes` (1..=8) little-endian bytes at byte offset `offset` (`I64`)
    /// of buffer `buf`, zero-extended to `I32` (1..=4 bytes) or `I64` (8 bytes).
    /// CPU targets allow any alignment; GPU lowerings only emit aligned loads.
    LoadBytes {
        buf: usize,
        offset: Box<Expr>,
        bytes: u8,
    },
    /// Bit-field extract at a constant position: bits `pos..pos+len` of `value`,
    /// sign-extended if `signed`, in the type of `value`.
    Bfe {
        value: Box<Expr>,
        pos: u8,
        len: u8,
        signed: bool,
    },
    /// A run of multiply-adds over contiguous activations:
    /// `acc + Σ_j load(buf, index + j) * codes[j]`, in the type of `acc` (`I32`, `I64`
    /// or `F32`; loaded values and codes are converted to it first). Scalar backends
    /// expand it; SIMD backends use vector loads and lane-wise multiplies.
    DotRun {
        buf: usize,
        index: Box<Expr>,
        codes: Vec<Var>,
        acc: Box<Expr>,
    },
    /// A dot product over a whole block of packed weights, unpacked by its layout
    /// descriptor: `acc + Σ_{j<count} load(act, act_index + j) * code_j`, where
    /// `code_j` is field `j % n_fields` (in weight order) of unit `j / n_fields`,
    /// and unit `u` sits at bit `u * stride` of the little-endian bytes starting at
    /// byte `byte_offset` of buffer `wbuf` (stride: the unit's bits for a stream, 8
    /// for byte storage). Reads `count / n_fields * stride / 8` weight bytes. The
    /// accumulator is `I32`, activations `i8`. CPU backends with wide vector units
    /// decode the block at once (LLVM on x86: AVX-512 VBMI + VNNI); a lowering emits
    /// it only for targets that declare support ([`crate::lower::CpuOptions`]).
    DotPacked {
        act: usize,
        act_index: Box<Expr>,
        wbuf: usize,
        byte_offset: Box<Expr>,
        layout: LayoutDesc,
        count: u32,
        acc: Box<Expr>,
    },
    /// `acc + Σ_{i<4} sext8(a >> 8i) * sext8(b >> 8i)` on `I32` operands (dp4a).
    Dot4 {
        a: Box<Expr>,
        b: Box<Expr>,
        acc: Box<Expr>,
    },
    /// GPU: the `I32` word at a 4-aligned byte offset (`I32`) of the block's shared
    /// memory ([`Func::shared_bytes`]).
    LoadShared(Box<Expr>),
    /// A byte permutation of two `I32` words (PTX `prmt`, HIP `__byte_perm`): byte
    /// `i` of the result is byte `(sel >> 4i) & 7` of the eight bytes `b:a` (`a`
    /// holds bytes 0..4). Every nibble of `sel` is below 8.
    BytePerm {
        a: Box<Expr>,
        b: Box<Expr>,
        sel: u16,
    },
    /// The `F32` whose IEEE-754 bits are the `I32` operand (a reinterpretation, no
    /// conversion: PTX `mov.b32`, HIP `__int_as_float`).
    FromBits(Box<Expr>),
    /// The f16 whose bits are the low 16 bits of the `I32` operand, widened exactly
    /// to `F32` (the upper bits are ignored).
    F16ToF32(Box<Expr>),
    /// Packed half-precision fused multiply-add on `I32` operands that each hold two
    /// f16 values (low half first): each half of the result is `a * b + c` of the
    /// corresponding halves, rounded once to the nearest f16 (PTX `fma.rn.f16x2`).
    HFma2 {
        a: Box<Expr>,
        b: Box<Expr>,
        c: Box<Expr>,
    },
}

/// How a loop is run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LoopKind {
    Serial,
    /// The trip count is a compile-time constant; backends may unroll it.
    Unroll,
    /// Iterations are independent; the CPU runtime splits them across threads
    /// (only the outermost loop of a CPU function).
    Parallel,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Stmt {
    /// Defines `var` (each variable is defined once, before its uses).
    Let(Var, Expr),
    /// Reassigns a defined variable.
    Set(Var, Expr),
    /// `for var in (start..end).step_by(step)` with `I64` bounds.
    For {
        var: Var,
        start: Expr,
        end: Expr,
        step: i64,
        kind: LoopKind,
        body: Vec<Stmt>,
    },
    If {
        cond: Expr,
        then: Vec<Stmt>,
    },
    /// Stores `value` to element `index` of buffer `buf`, converting it to the
    /// buffer's element type (f32 to f16/bf16 rounds to nearest even).
    Store {
        buf: usize,
        index: Expr,
        value: Expr,
    },
    /// GPU: loads 16 bytes at a 16-aligned byte offset into four `I32` variables.
    LoadVec4 {
        dst: [Var; 4],
        buf: usize,
        offset: Expr,
    },
    /// GPU: replaces `var` in every lane of the warp with the sum over the warp's
    /// 32 lanes (all lanes must execute it).
    WarpSum(Var),
    /// GPU: stores four 32-bit variables (16 bytes; `I32` values or the bits of `F32`
    /// ones) at a 16-aligned byte offset (`I32`) of the block's shared memory.
    StoreShared4 {
        offset: Expr,
        src: [Var; 4],
    },
    /// GPU: every lane of the warp waits here, and the shared-memory writes of each
    /// are visible to all after it (`bar.warp.sync`).
    WarpSync,
    /// GPU: every thread of the block waits here, and the shared-memory writes of each
    /// are visible to all after it (`bar.sync 0`). Only at the top level of a
    /// function's body (never inside a loop or branch), so that every thread reaches
    /// it; the interpreter runs each block's warps up to it in turn.
    BlockSync,
    /// GPU: an asynchronous copy from global to shared memory or its bookkeeping
    /// (PTX `cp.async`, sm_80 and later).
    Async(AsyncOp),
    /// GPU: the warp-wide matrix multiply-accumulate `D = A * B + C` (16 x 8 `C`, `D`)
    /// in the fragment layout of PTX `mma.sync.aligned.row.col` for `shape`
    /// ([`MmaShape`]): lane `l` (`g = l / 4`, `t = l % 4`) holds in its `I32`
    /// operands `a[0]` of row `g`, `a[1]` of row `g + 8`, `a[2]` of row `g` and `a[3]`
    /// of row `g + 8` of `A` (the first `e` elements of its `K` columns from `e t`,
    /// then from `e t + K / 2`; `e` per register: two f16 or four s8, low bits first),
    /// `b[0]`/`b[1]` the same columns' `K` rows of `B` column `g`, and
    /// `c`/`d[0..2] = C[g][2t..2t+2]`, `c`/`d[2..4] = C[g+8][2t..2t+2]`. All 32 lanes
    /// must execute it.
    Mma {
        shape: MmaShape,
        d: [Var; 4],
        a: [Var; 4],
        b: [Var; 2],
        c: [Var; 4],
    },
    Comment(String),
}

/// The element types and shape of a [`Stmt::Mma`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmaShape {
    /// m16n8k16, f16 `A` and `B`, f32 `C` and `D`: products are exact; the sum is
    /// rounded to f32 once per element (the hardware's order may differ in the last
    /// bits).
    F16F32,
    /// m16n8k32, s8 `A` and `B`, s32 `C` and `D` (`I32` variables): exact, wrapping.
    S8S32,
}

impl MmaShape {
    /// The `K` of the shape (columns of `A`).
    pub fn k(self) -> usize {
        match self {
            MmaShape::F16F32 => 16,
            MmaShape::S8S32 => 32,
        }
    }

    /// The PTX instruction (without operands).
    pub fn ptx(self) -> &'static str {
        match self {
            MmaShape::F16F32 => "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32",
            MmaShape::S8S32 => "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32",
        }
    }
}

/// The operations of asynchronous global-to-shared copies, per lane (PTX
/// `cp.async.cg`, `cp.async.commit_group`, `cp.async.wait_group`). A lane's copies
/// land in shared memory only by a `Wait` that covers their group; other lanes see
/// them after a later [`Stmt::WarpSync`] (or [`Stmt::BlockSync`]). The interpreter
/// holds the bytes back until then, so a read before the wait sees the old contents,
/// and a lane that reaches a barrier or the end with copies in flight is an error.
#[derive(Clone, Debug, PartialEq)]
pub enum AsyncOp {
    /// Starts a copy of the 16 bytes at a 16-aligned byte offset (`I64`) of `buf` to a
    /// 16-aligned byte offset (`I32`) of the block's shared memory.
    Copy16 {
        shared: Expr,
        buf: usize,
        offset: Expr,
    },
    /// Closes the lane's copies started since the last commit into a group.
    Commit,
    /// Waits until at most this many of the lane's committed groups are in flight.
    Wait(u32),
}

/// How a function is launched.
#[derive(Clone, Debug, PartialEq)]
pub enum Launch {
    /// A CPU function; its outermost [`LoopKind::Parallel`] loop may be split.
    Cpu,
    /// A GPU kernel: `grid` blocks (an `I64` expression over dims) of `block` threads.
    Gpu { grid: Expr, block: u32 },
}

/// A lowered kernel.
#[derive(Clone, Debug, PartialEq)]
pub struct Func {
    pub name: String,
    pub bufs: Vec<Buf>,
    /// Names of the runtime dimensions, in typed-IR order (passed as `I64`).
    pub dims: Vec<String>,
    pub vars: Vec<VarInfo>,
    pub body: Vec<Stmt>,
    pub launch: Launch,
    /// Provenance: which layout, proof and schedule produced this function.
    pub notes: Vec<String>,
    /// GPU: bytes of shared memory per block (0: none).
    pub shared_bytes: usize,
}

impl Expr {
    /// How many times the expression reads `v` (a `DotRun` code list counts each
    /// mention).
    pub fn mentions(&self, v: Var) -> usize {
        let own = match self {
            Expr::Var(x) => (*x == v) as usize,
            Expr::DotRun { codes, .. } => codes.iter().filter(|c| **c == v).count(),
            _ => 0,
        };
        own + self.children().iter().map(|c| c.mentions(v)).sum::<usize>()
    }

    /// The operand expressions of `self`, in order (variables named by a `DotRun`'s
    /// code list and buffer indices are not expressions and are not included). Walkers
    /// that treat most operations alike recurse through this instead of listing every
    /// variant.
    pub fn children(&self) -> Vec<&Expr> {
        match self {
            Expr::Int(..) | Expr::F32(_) | Expr::Var(_) | Expr::Dim(_) | Expr::Special(_) => {
                Vec::new()
            }
            Expr::Bin(_, a, b) | Expr::Cmp(_, a, b) => vec![a, b],
            Expr::Select(c, a, b) => vec![c, a, b],
            Expr::Cast(_, a) | Expr::LoadShared(a) => vec![a],
            Expr::Load { index, .. } => vec![index],
            Expr::LoadBytes { offset, .. } => vec![offset],
            Expr::Bfe { value, .. } => vec![value],
            Expr::DotRun { index, acc, .. } => vec![index, acc],
            Expr::DotPacked {
                act_index,
                byte_offset,
                acc,
                ..
            } => vec![act_index, byte_offset, acc],
            Expr::Dot4 { a, b, acc } => vec![a, b, acc],
            Expr::BytePerm { a, b, .. } => vec![a, b],
            Expr::FromBits(a) | Expr::F16ToF32(a) => vec![a],
            Expr::HFma2 { a, b, c } => vec![a, b, c],
        }
    }
}

impl Stmt {
    /// The expressions a statement holds directly (not those of nested bodies), in
    /// order: walkers recurse through these and [`Stmt::bodies`] instead of listing
    /// every variant.
    pub fn exprs(&self) -> Vec<&Expr> {
        match self {
            Stmt::Let(_, e) | Stmt::Set(_, e) => vec![e],
            Stmt::For { start, end, .. } => vec![start, end],
            Stmt::If { cond, .. } => vec![cond],
            Stmt::Store { index, value, .. } => vec![index, value],
            Stmt::LoadVec4 { offset, .. } | Stmt::StoreShared4 { offset, .. } => vec![offset],
            Stmt::Async(AsyncOp::Copy16 { shared, offset, .. }) => vec![shared, offset],
            Stmt::Async(_)
            | Stmt::WarpSum(_)
            | Stmt::WarpSync
            | Stmt::BlockSync
            | Stmt::Mma { .. }
            | Stmt::Comment(_) => Vec::new(),
        }
    }

    /// The statement lists nested in a statement (a loop's or a branch's body).
    pub fn bodies(&self) -> Vec<&[Stmt]> {
        match self {
            Stmt::For { body, .. } => vec![body],
            Stmt::If { then, .. } => vec![then],
            _ => Vec::new(),
        }
    }

    /// The buffer a statement accesses directly (not through an expression).
    pub fn buf(&self) -> Option<usize> {
        match self {
            Stmt::Store { buf, .. }
            | Stmt::LoadVec4 { buf, .. }
            | Stmt::Async(AsyncOp::Copy16 { buf, .. }) => Some(*buf),
            _ => None,
        }
    }

    /// Every mention of `v` in the statement: reads, assignments, loop variables,
    /// named operands ([`Self::named_vars`]) and the nested bodies.
    pub fn mentions(&self, v: Var) -> usize {
        let own = match self {
            Stmt::Let(x, _) | Stmt::Set(x, _) | Stmt::For { var: x, .. } => (*x == v) as usize,
            _ => 0,
        };
        own + self.named_vars().iter().filter(|x| **x == v).count()
            + self
                .exprs()
                .into_iter()
                .map(|e| e.mentions(v))
                .sum::<usize>()
            + self
                .bodies()
                .into_iter()
                .flatten()
                .map(|s| s.mentions(v))
                .sum::<usize>()
    }

    /// Variables a warp-level statement names directly (not inside expressions):
    /// `LoadVec4` destinations, `WarpSum`'s variable, `StoreShared4` sources, every
    /// `Mma` operand; empty for the others.
    pub fn named_vars(&self) -> Vec<Var> {
        match self {
            Stmt::LoadVec4 { dst, .. } => dst.to_vec(),
            Stmt::WarpSum(v) => vec![*v],
            Stmt::StoreShared4 { src, .. } => src.to_vec(),
            Stmt::Mma { d, a, b, c, .. } => d.iter().chain(a).chain(b).chain(c).copied().collect(),
            _ => Vec::new(),
        }
    }

    /// The name of a GPU-only statement (warp-level or shared-memory), `None` for the
    /// statements every backend runs.
    pub fn gpu_only(&self) -> Option<&'static str> {
        match self {
            Stmt::LoadVec4 { .. } => Some("load_vec4"),
            Stmt::WarpSum(_) => Some("warp_sum"),
            Stmt::StoreShared4 { .. } => Some("store_shared4"),
            Stmt::WarpSync => Some("warp_sync"),
            Stmt::BlockSync => Some("block_sync"),
            Stmt::Mma { .. } => Some("mma"),
            Stmt::Async(_) => Some("cp_async"),
            _ => None,
        }
    }
}

impl Func {
    pub fn new(name: impl Into<String>, bufs: Vec<Buf>, dims: Vec<String>, launch: Launch) -> Func {
        Func {
            name: name.into(),
            bufs,
            dims,
            vars: Vec::new(),
            body: Vec::new(),
            launch,
            notes: Vec::new(),
            shared_bytes: 0,
        }
    }

    /// Declares a new variable.
    pub fn var(&mut self, name: impl Into<String>, ty: Ty) -> Var {
        self.vars.push(VarInfo {
            name: name.into(),
            ty,
        });
        Var(self.vars.len() as u32 - 1)
    }

    pub fn var_ty(&self, v: Var) -> Ty {
        self.vars[v.0 as usize].ty
    }

    pub fn var_name(&self, v: Var) -> &str {
        &self.vars[v.0 as usize].name
    }

    /// Type of an expression (assuming it is well-typed).
    pub fn ty(&self, e: &Expr) -> Ty {
        match e {
            Expr::Int(_, t) => *t,
            Expr::F32(_) => Ty::F32,
            Expr::Var(v) => self.var_ty(*v),
            Expr::Dim(_) => Ty::I64,
            Expr::Special(_) => Ty::I32,
            Expr::Bin(_, a, _) => self.ty(a),
            Expr::Cmp(..) => Ty::I32,
            Expr::Select(_, a, _) => self.ty(a),
            Expr::Cast(t, _) => *t,
            Expr::Load { buf, .. } => self.bufs[*buf].elem.reg(),
            Expr::LoadBytes { bytes, .. } => {
                if *bytes > 4 {
                    Ty::I64
                } else {
                    Ty::I32
                }
            }
            Expr::Bfe { value, .. } => self.ty(value),
            Expr::Dot4 { .. }
            | Expr::LoadShared(_)
            | Expr::DotPacked { .. }
            | Expr::BytePerm { .. }
            | Expr::HFma2 { .. } => Ty::I32,
            Expr::DotRun { acc, .. } => self.ty(acc),
            Expr::FromBits(_) | Expr::F16ToF32(_) => Ty::F32,
        }
    }

    /// Index of the output buffer.
    pub fn output(&self) -> usize {
        self.bufs.len() - 1
    }
}

/// Small constructors that keep lowering code readable.
pub mod build {
    use super::*;

    pub fn i64c(v: i64) -> Expr {
        Expr::Int(v, Ty::I64)
    }
    pub fn i32c(v: i64) -> Expr {
        Expr::Int(v, Ty::I32)
    }
    pub fn f32c(v: f32) -> Expr {
        Expr::F32(v)
    }
    pub fn var(v: Var) -> Expr {
        Expr::Var(v)
    }
    pub fn dim(d: usize) -> Expr {
        Expr::Dim(d)
    }
    pub fn bin(op: BinOp, a: Expr, b: Expr) -> Expr {
        Expr::Bin(op, Box::new(a), Box::new(b))
    }
    pub fn add(a: Expr, b: Expr) -> Expr {
        bin(BinOp::Add, a, b)
    }
    pub fn sub(a: Expr, b: Expr) -> Expr {
        bin(BinOp::Sub, a, b)
    }
    pub fn mul(a: Expr, b: Expr) -> Expr {
        bin(BinOp::Mul, a, b)
    }
    pub fn div(a: Expr, b: Expr) -> Expr {
        bin(BinOp::Div, a, b)
    }
    pub fn min(a: Expr, b: Expr) -> Expr {
        bin(BinOp::Min, a, b)
    }
    pub fn cmp(op: CmpOp, a: Expr, b: Expr) -> Expr {
        Expr::Cmp(op, Box::new(a), Box::new(b))
    }
    pub fn cast(t: Ty, e: Expr) -> Expr {
        Expr::Cast(t, Box::new(e))
    }
    pub fn load(buf: usize, index: Expr) -> Expr {
        Expr::Load {
            buf,
            index: Box::new(index),
        }
    }
    pub fn load_bytes(buf: usize, offset: Expr, bytes: u8) -> Expr {
        Expr::LoadBytes {
            buf,
            offset: Box::new(offset),
            bytes,
        }
    }
    pub fn bfe(value: Expr, pos: u8, len: u8, signed: bool) -> Expr {
        Expr::Bfe {
            value: Box::new(value),
            pos,
            len,
            signed,
        }
    }
    /// `(a + b - 1) / b` for positive `I64` values.
    pub fn ceil_div(a: Expr, b: i64) -> Expr {
        div(add(a, i64c(b - 1)), i64c(b))
    }
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;

    /// `mentions` counts assignments, loop variables, reads in every expression, named
    /// operands and nested bodies; a variable that appears nowhere counts zero.
    #[test]
    fn mentions_count_every_kind_of_use() {
        let mut f = Func::new("t", Vec::new(), Vec::new(), Launch::Cpu);
        let (x, a, i, z) = (
            f.var("x", Ty::I32),
            f.var("a", Ty::I32),
            f.var("i", Ty::I64),
            f.var("z", Ty::I32),
        );
        let body = [
            Stmt::Let(x, add(var(a), var(a))),
            Stmt::For {
                var: i,
                start: i64c(0),
                end: i64c(4),
                step: 1,
                kind: LoopKind::Serial,
                body: vec![
                    Stmt::Set(x, mul(var(x), var(a))),
                    Stmt::If {
                        cond: cmp(CmpOp::Lt, var(x), var(a)),
                        then: vec![Stmt::WarpSum(x)],
                    },
                ],
            },
            Stmt::LoadVec4 {
                dst: [a, x, x, a],
                buf: 0,
                offset: cast(Ty::I64, var(x)),
            },
        ];
        let count = |v: Var| body.iter().map(|s| s.mentions(v)).sum::<usize>();
        // x: let, set + read, compare, warp sum, two destinations, offset.
        assert_eq!(count(x), 1 + 2 + 1 + 1 + 2 + 1);
        // a: two reads, one read, compare, two destinations.
        assert_eq!(count(a), 2 + 1 + 1 + 2);
        assert_eq!(count(i), 1);
        assert_eq!(count(z), 0);
    }
}
