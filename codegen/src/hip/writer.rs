//! The HIP C++ writer: translates loop-IR statements and expressions one by one.
//!
//! Conventions of the generated code:
//!
//! - `I32` is `int`, `I64` is `long long`, `F32` is `float`; buffers are `signed char`
//!   (i8), `unsigned char` (packed bytes), `int`, `unsigned short` (f16/bf16 bit
//!   patterns) or `float`;
//! - variables are `v{index}_{name}` (loop-IR names repeat), buffers and dimensions keep
//!   their names (with a `_` appended when that would clash with C++ or a helper);
//! - operations without a one-token C++ equivalent (shifts with the IR's masked
//!   amounts, bit-field extracts, unaligned byte loads, f16/bf16 conversions, min/max,
//!   dot products) are small `static __device__ __forceinline__` helpers named `qk_*`,
//!   emitted once per module and only when used;
//! - every binary operation is parenthesised, so the C++ reads like the loop IR.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Write;

use super::{Dot4Kind, HipError, HipOptions, KernelSpec};
use crate::loop_ir::{BinOp, CmpOp, Elem, Expr, Func, Launch, LoopKind, Special, Stmt, Ty, Var};

/// Helpers, in the order they are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Helper {
    MinI32,
    MinI64,
    MaxI32,
    MaxI64,
    ShlI32,
    ShlI64,
    SarI32,
    SarI64,
    ShrI32,
    ShrI64,
    SbfeI32,
    UbfeI32,
    SbfeI64,
    UbfeI64,
    LoadBytes,
    LoadI8x4,
    PackI8x4,
    Dot4,
    F16ToF32,
    F32ToF16,
    Bf16ToF32,
    F32ToBf16,
}

const CXX_RESERVED: &[&str] = &[
    "alignas",
    "alignof",
    "and",
    "asm",
    "auto",
    "bool",
    "break",
    "case",
    "catch",
    "char",
    "class",
    "const",
    "constexpr",
    "continue",
    "decltype",
    "default",
    "delete",
    "do",
    "double",
    "else",
    "enum",
    "explicit",
    "export",
    "extern",
    "false",
    "float",
    "for",
    "friend",
    "goto",
    "if",
    "inline",
    "int",
    "long",
    "mutable",
    "namespace",
    "new",
    "noexcept",
    "not",
    "nullptr",
    "operator",
    "or",
    "private",
    "protected",
    "public",
    "register",
    "return",
    "short",
    "signed",
    "sizeof",
    "static",
    "struct",
    "switch",
    "template",
    "this",
    "throw",
    "true",
    "try",
    "typedef",
    "typeid",
    "typename",
    "union",
    "unsigned",
    "using",
    "virtual",
    "void",
    "volatile",
    "while",
    "xor",
    "threadIdx",
    "blockIdx",
    "blockDim",
    "gridDim",
    "warpSize",
    "stream",
    "dim3",
    "min",
    "max",
    "fminf",
    "fmaxf",
    "main",
    "uint4",
];

pub(crate) fn is_c_ident(s: &str) -> bool {
    let mut cs = s.chars();
    matches!(cs.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Names the generated code keeps for itself (keywords, HIP built-ins, `qk_*`, `v0_*`).
pub(crate) fn is_reserved(s: &str) -> bool {
    if CXX_RESERVED.contains(&s) || s.starts_with("qk_") || s.starts_with("__") {
        return true;
    }
    // v{digits}_...: the variables' spelling.
    let b = s.as_bytes();
    if b.first() == Some(&b'v') {
        let digits = b[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits > 0 && b.get(1 + digits) == Some(&b'_') {
            return true;
        }
    }
    false
}

/// C spelling of a register type.
fn cty(t: Ty) -> &'static str {
    match t {
        Ty::I32 => "int",
        Ty::I64 => "long long",
        Ty::F32 => "float",
    }
}

/// C element type of a buffer.
fn elem_cty(e: Elem) -> &'static str {
    match e {
        Elem::I8 => "signed char",
        Elem::U8 => "unsigned char",
        Elem::I32 => "int",
        Elem::F16 | Elem::BF16 => "unsigned short",
        Elem::F32 => "float",
    }
}

/// Removes one pair of parentheses enclosing the whole string.
fn strip(s: &str) -> &str {
    let b = s.as_bytes();
    if b.first() != Some(&b'(') || b.last() != Some(&b')') {
        return s;
    }
    let mut depth = 0i32;
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 && i != b.len() - 1 {
                    return s;
                }
            }
            _ => {}
        }
    }
    &s[1..s.len() - 1]
}

fn int_lit(v: i64, t: Ty, plain: bool) -> String {
    match t {
        Ty::I32 => {
            let v = v as i32;
            if v == i32::MIN {
                "(-2147483647 - 1)".into()
            } else if v < 0 {
                format!("({v})")
            } else {
                format!("{v}")
            }
        }
        _ => {
            let fits = i32::try_from(v).is_ok();
            if v == i64::MIN {
                "(-9223372036854775807LL - 1)".into()
            } else if plain && fits {
                if v < 0 {
                    format!("({v})")
                } else {
                    format!("{v}")
                }
            } else if v < 0 {
                format!("({v}LL)")
            } else {
                format!("{v}LL")
            }
        }
    }
}

/// A bit mask in hexadecimal, of the C type of `t`.
fn hex_lit(v: i64, t: Ty) -> String {
    match t {
        Ty::I32 => {
            let u = v as i32 as u32;
            if (u as i32) >= 0 {
                format!("0x{u:x}")
            } else {
                format!("(int)0x{u:x}u")
            }
        }
        _ => {
            if v >= 0 {
                format!("0x{v:x}LL")
            } else {
                format!("(long long)0x{:x}ULL", v as u64)
            }
        }
    }
}

fn f32_lit(x: f32) -> String {
    if x.is_nan() {
        "__uint_as_float(0x7fc00000u)".into()
    } else if x.is_infinite() {
        if x > 0.0 {
            "__uint_as_float(0x7f800000u)".into()
        } else {
            "__uint_as_float(0xff800000u)".into()
        }
    } else {
        let s = format!("{x:?}");
        let s = if s.contains('.') || s.contains('e') {
            s
        } else {
            format!("{s}.0")
        };
        if x.is_sign_negative() {
            format!("({s}f)")
        } else {
            format!("{s}f")
        }
    }
}

/// Variable facts collected before writing: which variables need a function-scope
/// declaration, which are reassigned, which are never read.
#[derive(Default)]
struct Scan {
    next_block: usize,
    defs: HashMap<Var, Vec<Vec<usize>>>,
    uses: HashMap<Var, Vec<Vec<usize>>>,
    reads: HashMap<Var, usize>,
    assigned: HashSet<Var>,
    def_expr: HashMap<Var, Expr>,
}

impl Scan {
    fn expr(&mut self, e: &Expr, path: &[usize]) {
        let mut read = |v: Var| {
            self.uses.entry(v).or_default().push(path.to_vec());
            *self.reads.entry(v).or_default() += 1;
        };
        match e {
            Expr::Var(v) => read(*v),
            Expr::DotRun { codes, .. } => codes.iter().for_each(|c| read(*c)),
            _ => {}
        }
        for c in e.children() {
            self.expr(c, path);
        }
    }

    fn def(&mut self, v: Var, path: &[usize]) {
        self.defs.entry(v).or_default().push(path.to_vec());
    }

    fn block(&mut self, body: &[Stmt], path: &mut Vec<usize>) {
        for s in body {
            match s {
                Stmt::Let(v, e) => {
                    self.expr(e, path);
                    self.def(*v, path);
                    self.def_expr.insert(*v, e.clone());
                }
                Stmt::Set(v, e) => {
                    self.expr(e, path);
                    self.uses.entry(*v).or_default().push(path.clone());
                    self.assigned.insert(*v);
                }
                Stmt::For {
                    var,
                    start,
                    end,
                    body,
                    ..
                } => {
                    self.expr(start, path);
                    self.expr(end, path);
                    self.next_block += 1;
                    path.push(self.next_block);
                    self.def(*var, path);
                    self.assigned.insert(*var);
                    self.block(body, path);
                    path.pop();
                }
                Stmt::If { cond, then } => {
                    self.expr(cond, path);
                    self.next_block += 1;
                    path.push(self.next_block);
                    self.block(then, path);
                    path.pop();
                }
                Stmt::Store { index, value, .. } => {
                    self.expr(index, path);
                    self.expr(value, path);
                }
                Stmt::LoadVec4 { dst, offset, .. } => {
                    self.expr(offset, path);
                    for d in dst {
                        self.def(*d, path);
                    }
                }
                Stmt::WarpSum(v) => {
                    self.uses.entry(*v).or_default().push(path.clone());
                    *self.reads.entry(*v).or_default() += 1;
                    self.assigned.insert(*v);
                }
                Stmt::StoreShared4 { offset, src } => {
                    self.expr(offset, path);
                    for v in src {
                        self.uses.entry(*v).or_default().push(path.clone());
                        *self.reads.entry(*v).or_default() += 1;
                    }
                }
                Stmt::Mma { d, a, b, c, .. } => {
                    for v in a.iter().chain(b).chain(c) {
                        self.uses.entry(*v).or_default().push(path.clone());
                        *self.reads.entry(*v).or_default() += 1;
                    }
                    self.assigned.extend(d);
                }
                Stmt::WarpSync | Stmt::BlockSync | Stmt::Async(_) | Stmt::Comment(_) => {}
            }
        }
    }

    /// Variables that cannot be declared where they are defined: defined more than
    /// once, never defined, or used outside the block of their definition.
    fn hoisted(&self) -> BTreeSet<Var> {
        let mut out = BTreeSet::new();
        for (v, uses) in &self.uses {
            match self.defs.get(v).map(Vec::as_slice) {
                Some([d]) => {
                    if uses.iter().any(|u| !u.starts_with(d)) {
                        out.insert(*v);
                    }
                }
                _ => {
                    out.insert(*v);
                }
            }
        }
        for (v, defs) in &self.defs {
            if defs.len() > 1 {
                out.insert(*v);
            }
        }
        out
    }
}

/// Writes one function (kernel + launch wrapper) at a time.
struct FnWriter<'a> {
    f: &'a Func,
    spec: &'a KernelSpec,
    opts: &'a HipOptions,
    helpers: &'a mut BTreeSet<Helper>,
    vars: Vec<String>,
    bufs: Vec<String>,
    dims: Vec<String>,
    scan: Scan,
    hoisted: BTreeSet<Var>,
    out: String,
    depth: usize,
    tmp: usize,
}

type R<T> = Result<T, HipError>;

impl<'a> FnWriter<'a> {
    fn new(
        spec: &'a KernelSpec,
        opts: &'a HipOptions,
        helpers: &'a mut BTreeSet<Helper>,
    ) -> FnWriter<'a> {
        let f = &spec.func;
        let mut taken: HashSet<String> = HashSet::new();
        taken.insert(spec.symbol.clone());
        let mut unique = |n: &str| {
            let mut s = if is_c_ident(n) {
                n.to_string()
            } else {
                n.chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                    .collect()
            };
            if s.is_empty() || s.as_bytes()[0].is_ascii_digit() {
                s.insert(0, '_');
            }
            while is_reserved(&s) || taken.contains(&s) {
                s.push('_');
            }
            taken.insert(s.clone());
            s
        };
        let bufs = f.bufs.iter().map(|b| unique(&b.name)).collect();
        let dims = f.dims.iter().map(|d| unique(d)).collect();
        let vars = f
            .vars
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let clean: String = v
                    .name
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                    .collect();
                format!("v{i}_{clean}")
            })
            .collect();
        let mut scan = Scan::default();
        scan.block(&f.body, &mut Vec::new());
        let hoisted = scan.hoisted();
        FnWriter {
            f,
            spec,
            opts,
            helpers,
            vars,
            bufs,
            dims,
            scan,
            hoisted,
            out: String::new(),
            depth: 1,
            tmp: 0,
        }
    }

    fn unsupported<T>(&self, what: impl Into<String>) -> R<T> {
        Err(HipError::Unsupported {
            kernel: self.f.name.clone(),
            what: what.into(),
        })
    }

    fn line(&mut self, s: &str) {
        for _ in 0..self.depth {
            self.out.push_str("    ");
        }
        self.out.push_str(s);
        self.out.push('\n');
    }

    fn fresh(&mut self, base: &str) -> String {
        self.tmp += 1;
        format!("qk_{base}{}", self.tmp)
    }

    fn var(&self, v: Var) -> &str {
        &self.vars[v.0 as usize]
    }

    fn use_helper(&mut self, h: Helper) {
        self.helpers.insert(h);
    }

    /// Whether `e` (of type `I64`) is certainly a `long long` in C (so a constant
    /// beside it may be written without `LL`).
    fn wide(&self, e: &Expr) -> bool {
        match e {
            Expr::Var(v) => self.f.var_ty(*v) == Ty::I64,
            Expr::Dim(_) => true,
            Expr::Cast(t, _) => *t == Ty::I64,
            Expr::Bin(_, a, b) => {
                self.f.ty(a) == Ty::I64 && (self.wide(a) || self.wide(b) || self.is_call_op(e))
            }
            Expr::Select(_, a, b) => self.wide(a) || self.wide(b),
            Expr::LoadBytes { bytes, .. } => *bytes > 4,
            Expr::Bfe { value, .. } => self.f.ty(value) == Ty::I64,
            Expr::DotRun { acc, .. } => self.f.ty(acc) == Ty::I64 && self.wide(acc),
            _ => false,
        }
    }

    /// Binary operations written as helper calls (their result has the helper's type).
    fn is_call_op(&self, e: &Expr) -> bool {
        matches!(
            e,
            Expr::Bin(
                BinOp::Min | BinOp::Max | BinOp::Shl | BinOp::Sar | BinOp::Shr,
                _,
                _
            )
        )
    }

    fn cond(&mut self, c: &Expr) -> R<String> {
        Ok(match c {
            Expr::Cmp(..) => self.expr(c, true)?,
            _ => format!("({} != 0)", self.expr(c, true)?),
        })
    }

    /// `plain`: an `I64` constant here may be written as a plain (int) literal because
    /// the context converts it to `long long` before any arithmetic.
    fn expr(&mut self, e: &Expr, plain: bool) -> R<String> {
        Ok(match e {
            Expr::Int(v, t) => int_lit(*v, *t, plain),
            Expr::F32(x) => f32_lit(*x),
            Expr::Var(v) => self.var(*v).to_string(),
            Expr::Dim(d) => self.dims[*d].clone(),
            Expr::Special(s) => match s {
                Special::ThreadIdx => "(int)threadIdx.x".into(),
                Special::BlockIdx => "(int)blockIdx.x".into(),
                Special::BlockDim => "(int)blockDim.x".into(),
                Special::LaneId => "(int)(threadIdx.x & 31u)".into(),
            },
            Expr::Bin(op, a, b) => self.bin(*op, a, b)?,
            Expr::Cmp(op, a, b) => {
                let sym = match op {
                    CmpOp::Lt => "<",
                    CmpOp::Le => "<=",
                    CmpOp::Eq => "==",
                    CmpOp::Ne => "!=",
                };
                let (pa, pb) = (self.wide(b), self.wide(a));
                format!("({} {sym} {})", self.expr(a, pa)?, self.expr(b, pb)?)
            }
            Expr::Select(c, a, b) => {
                let c = self.cond(c)?;
                format!(
                    "({c} ? {} : {})",
                    self.expr(a, plain)?,
                    self.expr(b, plain)?
                )
            }
            Expr::Cast(t, a) => {
                let from = self.f.ty(a);
                let inner = self.expr(a, true)?;
                if from == *t {
                    inner
                } else {
                    format!("({}){inner}", cty(*t))
                }
            }
            Expr::Load { buf, index } => self.load(*buf, index, "")?,
            Expr::LoadBytes { buf, offset, bytes } => {
                if !(1..=8).contains(bytes) {
                    return self.unsupported(format!("a {bytes}-byte load"));
                }
                self.use_helper(Helper::LoadBytes);
                let off = self.expr(offset, true)?;
                let call = format!(
                    "qk_load_bytes<{bytes}>({}, {})",
                    self.bufs[*buf],
                    strip(&off)
                );
                if *bytes > 4 {
                    format!("(long long){call}")
                } else {
                    format!("(int){call}")
                }
            }
            Expr::Bfe {
                value,
                pos,
                len,
                signed,
            } => {
                let t = self.f.ty(value);
                let bits = if t == Ty::I64 { 64 } else { 32 };
                if *len == 0 || *pos as u32 + *len as u32 > bits || t == Ty::F32 {
                    return self.unsupported(format!(
                        "bit-field extract of bits {pos}..{} of a {}",
                        pos + len,
                        t.name()
                    ));
                }
                let h = match (t, signed) {
                    (Ty::I64, true) => Helper::SbfeI64,
                    (Ty::I64, false) => Helper::UbfeI64,
                    (_, true) => Helper::SbfeI32,
                    (_, false) => Helper::UbfeI32,
                };
                self.use_helper(h);
                let v = self.expr(value, true)?;
                format!(
                    "qk_{}bfe_{}({}, {pos}, {len})",
                    if *signed { "s" } else { "u" },
                    if t == Ty::I64 { "i64" } else { "i32" },
                    strip(&v)
                )
            }
            Expr::DotRun {
                buf,
                index,
                codes,
                acc,
            } => {
                let t = self.f.ty(acc);
                let idx = self.expr(index, true)?;
                let mut s = format!("({}", strip(&self.expr(acc, plain)?));
                for (j, c) in codes.iter().enumerate() {
                    let a = self.load(
                        *buf,
                        &Expr::Int(0, Ty::I64),
                        &format!("{} + {j}", strip(&idx)),
                    )?;
                    let a = self.convert(a, self.f.bufs[*buf].elem.reg(), t);
                    let c = self.convert(self.var(*c).to_string(), Ty::I32, t);
                    write!(s, " + {a} * {c}").ok();
                }
                s.push(')');
                s
            }
            Expr::Dot4 { a, b, acc } => {
                self.use_helper(Helper::Dot4);
                let (a, b, acc) = (
                    self.expr(a, true)?,
                    self.expr(b, true)?,
                    self.expr(acc, true)?,
                );
                format!("qk_dot4({}, {}, {})", strip(&a), strip(&b), strip(&acc))
            }
            Expr::BytePerm { a, b, sel } => {
                let (a, b) = (self.expr(a, true)?, self.expr(b, true)?);
                format!(
                    "(int)__byte_perm((unsigned)({}), (unsigned)({}), {sel:#06x}u)",
                    strip(&a),
                    strip(&b)
                )
            }
            Expr::F16ToF32(a) => {
                self.use_helper(Helper::F16ToF32);
                let a = self.expr(a, true)?;
                format!("qk_f16_to_f32((unsigned short)({}))", strip(&a))
            }
            Expr::FromBits(a) => {
                let a = self.expr(a, true)?;
                format!("__int_as_float({})", strip(&a))
            }
            Expr::LoadShared(_) => {
                return self.unsupported("shared-memory staging (a PTX-only GEMV option)")
            }
            Expr::HFma2 { .. } => {
                return self.unsupported("packed f16 arithmetic (the PTX-only tensor-core GEMV)")
            }
            Expr::DotPacked { .. } => {
                return self.unsupported("block-wide packed dot products (a CPU lowering option)")
            }
        })
    }

    /// `value` (a C expression of IR type `from`) converted to `to`.
    fn convert(&self, value: String, from: Ty, to: Ty) -> String {
        if from == to {
            value
        } else {
            format!("({}){value}", cty(to))
        }
    }

    /// An element load converted to its register type. With a non-empty
    /// `index_text`, that text is the index (used by dot runs).
    fn load(&mut self, buf: usize, index: &Expr, index_text: &str) -> R<String> {
        let idx = if index_text.is_empty() {
            strip(&self.expr(index, true)?).to_string()
        } else {
            index_text.to_string()
        };
        let access = format!("{}[{idx}]", self.bufs[buf]);
        Ok(match self.f.bufs[buf].elem {
            Elem::I8 | Elem::U8 => format!("(int){access}"),
            Elem::I32 | Elem::F32 => access,
            Elem::F16 => {
                self.use_helper(Helper::F16ToF32);
                format!("qk_f16_to_f32({access})")
            }
            Elem::BF16 => {
                self.use_helper(Helper::Bf16ToF32);
                format!("qk_bf16_to_f32({access})")
            }
        })
    }

    fn bin(&mut self, op: BinOp, a: &Expr, b: &Expr) -> R<String> {
        let t = self.f.ty(a);
        if t == Ty::F32 {
            let (x, y) = (self.expr(a, true)?, self.expr(b, true)?);
            let sym = match op {
                BinOp::Add => "+",
                BinOp::Sub => "-",
                BinOp::Mul => "*",
                BinOp::Div => "/",
                BinOp::Min => return Ok(format!("fminf({}, {})", strip(&x), strip(&y))),
                BinOp::Max => return Ok(format!("fmaxf({}, {})", strip(&x), strip(&y))),
                other => return self.unsupported(format!("{other:?} on f32 values")),
            };
            return Ok(format!("({x} {sym} {y})"));
        }
        let w64 = t == Ty::I64;
        let sfx = if w64 { "i64" } else { "i32" };
        let call = |this: &mut Self, h32: Helper, h64: Helper, name: &str| -> R<String> {
            this.use_helper(if w64 { h64 } else { h32 });
            let (x, y) = (this.expr(a, true)?, this.expr(b, true)?);
            Ok(format!("qk_{name}_{sfx}({}, {})", strip(&x), strip(&y)))
        };
        let sym = match op {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Rem => "%",
            BinOp::And => "&",
            BinOp::Or => "|",
            BinOp::Xor => "^",
            BinOp::Min => return call(self, Helper::MinI32, Helper::MinI64, "min"),
            BinOp::Max => return call(self, Helper::MaxI32, Helper::MaxI64, "max"),
            BinOp::Shl => return call(self, Helper::ShlI32, Helper::ShlI64, "shl"),
            BinOp::Sar => return call(self, Helper::SarI32, Helper::SarI64, "sar"),
            BinOp::Shr => return call(self, Helper::ShrI32, Helper::ShrI64, "shr"),
        };
        let (pa, pb) = (self.wide(b), self.wide(a));
        let bitwise = matches!(op, BinOp::And | BinOp::Or | BinOp::Xor);
        let operand = |this: &mut Self, e: &Expr, plain: bool| -> R<String> {
            match e {
                Expr::Int(v, t) if bitwise && v.unsigned_abs() > 255 => Ok(hex_lit(*v, *t)),
                _ => this.expr(e, plain),
            }
        };
        Ok(format!(
            "({} {sym} {})",
            operand(self, a, pa)?,
            operand(self, b, pb)?
        ))
    }

    /// Whether code variable `c` certainly fits a signed byte (for `v_dot4`).
    fn code_fits_i8(&self, c: Var) -> bool {
        let mut e = match self.scan.def_expr.get(&c) {
            Some(e) => e,
            None => return false,
        };
        if let Expr::Cast(Ty::I32, inner) = e {
            e = inner;
        }
        if self.scan.assigned.contains(&c) {
            return false;
        }
        match e {
            Expr::Bfe {
                len, signed: true, ..
            } => *len <= 8,
            Expr::Bfe {
                len, signed: false, ..
            } => *len <= 7,
            _ => false,
        }
    }

    /// A dot run assigned to `target` as statements: `v_dot4` on groups of four codes
    /// when the accumulator is `i32`, the activations `i8` and the codes fit a byte.
    /// Returns false when the general expression form must be used.
    fn dot_run_stmt(&mut self, target: Var, declare: bool, e: &Expr) -> R<bool> {
        let Expr::DotRun {
            buf,
            index,
            codes,
            acc,
        } = e
        else {
            return Ok(false);
        };
        let t = self.f.ty(acc);
        if codes.contains(&target) || self.f.var_ty(target) != t {
            return Ok(false);
        }
        let elem = self.f.bufs[*buf].elem;
        let dot4 = t == Ty::I32 && elem == Elem::I8 && self.opts.native_dot4;
        let name = self.var(target).to_string();
        let acc_is_target = matches!(**acc, Expr::Var(v) if v == target);
        let ptr = self.fresh("p");
        let idx = self.expr(index, true)?;
        let acc_text = self.expr(acc, true)?;
        let cs: Vec<&str> = codes.iter().map(|c| self.var(*c)).collect();
        let code_list = if cs.len() > 1 {
            format!("{}..{}", cs[0], cs[cs.len() - 1])
        } else {
            cs.join("")
        };
        self.line(&format!(
            "// {name} {}= dot({}[{} ..+{}], {code_list})",
            if acc_is_target { "+" } else { "" },
            self.bufs[*buf],
            strip(&idx),
            codes.len(),
        ));
        if declare {
            self.line(&format!("{} {name} = {};", cty(t), strip(&acc_text)));
        } else if !acc_is_target {
            // The index may read `target`: take the pointer first.
            self.line("{");
            self.depth += 1;
            self.line(&format!(
                "const {}* {ptr} = {} + ({});",
                elem_cty(elem),
                self.bufs[*buf],
                strip(&idx)
            ));
            self.line(&format!("{name} = {};", strip(&acc_text)));
            self.dot_terms(&name, &ptr, *buf, codes, t, dot4)?;
            self.depth -= 1;
            self.line("}");
            return Ok(true);
        }
        self.line("{");
        self.depth += 1;
        self.line(&format!(
            "const {}* {ptr} = {} + ({});",
            elem_cty(elem),
            self.bufs[*buf],
            strip(&idx)
        ));
        self.dot_terms(&name, &ptr, *buf, codes, t, dot4)?;
        self.depth -= 1;
        self.line("}");
        Ok(true)
    }

    fn dot_terms(
        &mut self,
        name: &str,
        ptr: &str,
        buf: usize,
        codes: &[Var],
        t: Ty,
        dot4: bool,
    ) -> R<()> {
        let mut j = 0;
        let mut scalar = Vec::new();
        while j < codes.len() {
            let quad =
                j + 4 <= codes.len() && codes[j..j + 4].iter().all(|&c| self.code_fits_i8(c));
            if dot4 && quad {
                self.use_helper(Helper::Dot4);
                self.use_helper(Helper::LoadI8x4);
                self.use_helper(Helper::PackI8x4);
                let c: Vec<&str> = codes[j..j + 4].iter().map(|&c| self.var(c)).collect();
                let off = if j == 0 {
                    ptr.to_string()
                } else {
                    format!("{ptr} + {j}")
                };
                self.line(&format!(
                    "{name} = qk_dot4(qk_load_i8x4({off}), qk_pack_i8x4({}), {name});",
                    c.join(", ")
                ));
                j += 4;
            } else {
                scalar.push(j);
                j += 1;
            }
        }
        if scalar.is_empty() {
            return Ok(());
        }
        let reg = self.f.bufs[buf].elem.reg();
        let mut terms = Vec::new();
        for j in scalar {
            let a = match self.f.bufs[buf].elem {
                Elem::I8 | Elem::U8 => format!("(int){ptr}[{j}]"),
                Elem::I32 | Elem::F32 => format!("{ptr}[{j}]"),
                Elem::F16 => {
                    self.use_helper(Helper::F16ToF32);
                    format!("qk_f16_to_f32({ptr}[{j}])")
                }
                Elem::BF16 => {
                    self.use_helper(Helper::Bf16ToF32);
                    format!("qk_bf16_to_f32({ptr}[{j}])")
                }
            };
            let a = self.convert(a, reg, t);
            let c = self.convert(self.var(codes[j]).to_string(), Ty::I32, t);
            terms.push(format!("{a} * {c}"));
        }
        if terms.len() == 1 {
            self.line(&format!("{name} = {name} + {};", terms[0]));
        } else {
            // One statement, summed left to right as the loop IR defines it.
            self.line(&format!("{name} = {name}"));
            self.depth += 2;
            let n = terms.len();
            for (i, term) in terms.into_iter().enumerate() {
                self.line(&format!("+ {term}{}", if i + 1 == n { ";" } else { "" }));
            }
            self.depth -= 2;
        }
        Ok(())
    }

    fn declare_or_assign(&mut self, v: Var, value: &str) {
        let name = self.var(v).to_string();
        if self.hoisted.contains(&v) {
            self.line(&format!("{name} = {value};"));
        } else if self.scan.reads.get(&v).copied().unwrap_or(0) == 0
            && !self.scan.assigned.contains(&v)
        {
            // A pure definition nobody reads: kept as a comment (no unused-variable warnings).
            self.line(&format!(
                "// never read: {} {name} = {value};",
                cty(self.f.var_ty(v))
            ));
        } else {
            self.line(&format!("{} {name} = {value};", cty(self.f.var_ty(v))));
            if self.scan.reads.get(&v).copied().unwrap_or(0) == 0 {
                self.line(&format!("(void){name}; // never read"));
            }
        }
    }

    /// Whether `end` can be re-evaluated every iteration (it reads nothing reassigned).
    fn invariant(&self, e: &Expr) -> bool {
        match e {
            Expr::Var(v) => !self.scan.assigned.contains(v),
            Expr::Int(..) | Expr::F32(_) | Expr::Dim(_) | Expr::Special(_) => true,
            Expr::Bin(_, a, b) | Expr::Cmp(_, a, b) => self.invariant(a) && self.invariant(b),
            Expr::Select(c, a, b) => self.invariant(c) && self.invariant(a) && self.invariant(b),
            Expr::Cast(_, a) => self.invariant(a),
            _ => false,
        }
    }

    fn stmts(&mut self, body: &[Stmt]) -> R<()> {
        for s in body {
            self.stmt(s)?;
        }
        Ok(())
    }

    fn stmt(&mut self, s: &Stmt) -> R<()> {
        match s {
            Stmt::Let(v, e) => {
                if matches!(e, Expr::DotRun { .. })
                    && !self.hoisted.contains(v)
                    && self.dot_run_stmt(*v, true, e)?
                {
                    return Ok(());
                }
                let plain = true;
                let x = self.expr(e, plain)?;
                self.declare_or_assign(*v, strip(&x));
            }
            Stmt::Set(v, e) => {
                if matches!(e, Expr::DotRun { .. }) && self.dot_run_stmt(*v, false, e)? {
                    return Ok(());
                }
                let x = self.expr(e, true)?;
                let name = self.var(*v).to_string();
                self.line(&format!("{name} = {};", strip(&x)));
            }
            Stmt::For {
                var,
                start,
                end,
                step,
                kind,
                body,
            } => {
                if *step <= 0 {
                    return self.unsupported(format!("a loop with step {step}"));
                }
                let name = self.var(*var).to_string();
                let decl = if self.hoisted.contains(var) {
                    name.clone()
                } else {
                    format!("{} {name}", cty(self.f.var_ty(*var)))
                };
                let start = self.expr(start, true)?;
                let end_text = self.expr(end, true)?;
                let end_c = if self.invariant(end) {
                    strip(&end_text).to_string()
                } else {
                    let t = self.fresh("end");
                    self.line(&format!("const long long {t} = {};", strip(&end_text)));
                    t
                };
                let inc = if *step == 1 {
                    format!("++{name}")
                } else {
                    format!("{name} += {step}")
                };
                match kind {
                    LoopKind::Unroll => self.line("#pragma unroll"),
                    LoopKind::Parallel => {
                        self.line("// parallel loop (not outermost: runs serially in each thread)")
                    }
                    LoopKind::Serial => {}
                }
                self.line(&format!(
                    "for ({decl} = {}; {name} < {end_c}; {inc}) {{",
                    strip(&start)
                ));
                self.depth += 1;
                self.stmts(body)?;
                self.depth -= 1;
                self.line("}");
            }
            Stmt::If { cond, then } => {
                let c = self.cond(cond)?;
                self.line(&format!("if ({}) {{", strip(&c)));
                self.depth += 1;
                self.stmts(then)?;
                self.depth -= 1;
                self.line("}");
            }
            Stmt::Store { buf, index, value } => {
                let elem = self.f.bufs[*buf].elem;
                let vt = self.f.ty(value);
                let idx = self.expr(index, true)?;
                let v = self.expr(value, true)?;
                let v = match (elem, vt) {
                    (Elem::F16, _) => {
                        self.use_helper(Helper::F32ToF16);
                        format!("qk_f32_to_f16({})", strip(&self.convert(v, vt, Ty::F32)))
                    }
                    (Elem::BF16, _) => {
                        self.use_helper(Helper::F32ToBf16);
                        format!("qk_f32_to_bf16({})", strip(&self.convert(v, vt, Ty::F32)))
                    }
                    (Elem::F32, _) => strip(&self.convert(v, vt, Ty::F32)).to_string(),
                    (Elem::I32, Ty::I32) => strip(&v).to_string(),
                    (Elem::I32, _) => format!("(int){v}"),
                    (Elem::I8 | Elem::U8, Ty::F32) => format!("({})(long long){v}", elem_cty(elem)),
                    (Elem::I8 | Elem::U8, _) => format!("({}){v}", elem_cty(elem)),
                };
                let b = self.bufs[*buf].clone();
                self.line(&format!("{b}[{}] = {v};", strip(&idx)));
            }
            Stmt::LoadVec4 { dst, buf, offset } => {
                let off = self.expr(offset, true)?;
                let t = self.fresh("vec");
                let b = self.bufs[*buf].clone();
                self.line(&format!(
                    "const uint4 {t} = *(const uint4*)((const unsigned char*){b} + ({})); // 16-byte aligned",
                    strip(&off)
                ));
                for (d, lane) in dst.iter().zip(["x", "y", "z", "w"]) {
                    self.declare_or_assign(*d, &format!("(int){t}.{lane}"));
                }
            }
            Stmt::WarpSum(v) => {
                let name = self.var(*v).to_string();
                self.line(&format!(
                    "// warp_sum({name}): butterfly over the 32 lanes of a loop-IR warp (width 32{})",
                    if self.opts.arch.wave_size() == 64 {
                        ": each half of a wave64 reduces on its own"
                    } else {
                        ""
                    }
                ));
                self.line("#pragma unroll");
                self.line(&format!(
                    "for (int qk_off = 16; qk_off > 0; qk_off >>= 1) {name} = {name} + __shfl_xor({name}, qk_off, 32);"
                ));
            }
            Stmt::StoreShared4 { .. } | Stmt::WarpSync | Stmt::BlockSync | Stmt::Async(_) => {
                return self.unsupported("shared-memory staging (a PTX-only GEMV option)")
            }
            Stmt::Mma { .. } => {
                return self.unsupported(
                    "tensor-core matrix multiply-accumulate (the PTX-only tensor-core GEMV)",
                )
            }
            Stmt::Comment(c) => {
                for l in c.lines() {
                    self.line(&format!("// {l}"));
                }
            }
        }
        Ok(())
    }

    /// Declarations of variables that live across blocks, at the top of the kernel.
    fn hoisted_decls(&mut self) {
        let hs: Vec<Var> = self.hoisted.iter().copied().collect();
        for v in hs {
            let t = self.f.var_ty(v);
            let zero = if t == Ty::F32 { "0.0f" } else { "0" };
            let name = self.var(v).to_string();
            self.line(&format!(
                "{} {name} = {zero}; // used across blocks",
                cty(t)
            ));
        }
    }

    fn params(&self, with_restrict: bool) -> Vec<String> {
        let mut ps = Vec::new();
        for (i, b) in self.f.bufs.iter().enumerate() {
            let c = if b.output { "" } else { "const " };
            let r = if with_restrict { " __restrict__" } else { "" };
            ps.push(format!("{c}{}*{r} {}", elem_cty(b.elem), self.bufs[i]));
        }
        for d in &self.dims {
            ps.push(format!("long long {d}"));
        }
        ps
    }

    fn uses_dim(&self, d: usize) -> bool {
        fn expr(e: &Expr, d: usize) -> bool {
            matches!(e, Expr::Dim(x) if *x == d) || e.children().into_iter().any(|c| expr(c, d))
        }
        fn stmts(ss: &[Stmt], d: usize) -> bool {
            ss.iter().any(|s| {
                s.exprs().into_iter().any(|e| expr(e, d))
                    || s.bodies().into_iter().any(|b| stmts(b, d))
            })
        }
        stmts(&self.f.body, d)
    }

    fn uses_buf(&self, b: usize) -> bool {
        fn expr(e: &Expr, b: usize) -> bool {
            let own = match e {
                Expr::Load { buf, .. } | Expr::LoadBytes { buf, .. } | Expr::DotRun { buf, .. } => {
                    *buf == b
                }
                Expr::DotPacked { act, wbuf, .. } => *act == b || *wbuf == b,
                _ => false,
            };
            own || e.children().into_iter().any(|c| expr(c, b))
        }
        fn stmts(ss: &[Stmt], b: usize) -> bool {
            ss.iter().any(|s| {
                s.buf() == Some(b)
                    || s.exprs().into_iter().any(|e| expr(e, b))
                    || s.bodies().into_iter().any(|x| stmts(x, b))
            })
        }
        stmts(&self.f.body, b)
    }

    fn unused_params(&mut self) {
        for b in 0..self.f.bufs.len() {
            if !self.uses_buf(b) {
                let n = self.bufs[b].clone();
                self.line(&format!("(void){n}; // not read by this schedule"));
            }
        }
        for d in 0..self.dims.len() {
            if !self.uses_dim(d) {
                let n = self.dims[d].clone();
                self.line(&format!("(void){n}; // not read by this schedule"));
            }
        }
    }

    /// The kernel body; returns the launch plan for the wrapper.
    fn kernel(&mut self) -> R<LaunchPlan> {
        self.hoisted_decls();
        self.unused_params();
        match &self.f.launch {
            Launch::Gpu { grid, block } => {
                let f = self.f;
                self.stmts(&f.body)?;
                Ok(LaunchPlan::Gpu {
                    grid: grid.clone(),
                    block: *block,
                })
            }
            Launch::Cpu => self.portable(),
        }
    }

    fn portable(&mut self) -> R<LaunchPlan> {
        let f = self.f;
        let body = &f.body;
        let par: Vec<usize> = body
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                matches!(
                    s,
                    Stmt::For {
                        kind: LoopKind::Parallel,
                        ..
                    }
                )
            })
            .map(|(i, _)| i)
            .collect();
        if par.len() > 1 {
            return self
                .unsupported("more than one top-level parallel loop (no grid-wide barrier)");
        }
        let Some(&pi) = par.first() else {
            self.line("// no parallel loop: the whole function runs on one thread");
            self.line("if (blockIdx.x != 0 || threadIdx.x != 0) return;");
            self.stmts(body)?;
            return Ok(LaunchPlan::Single);
        };
        for (i, s) in body.iter().enumerate() {
            if i != pi && !matches!(s, Stmt::Let(..) | Stmt::Set(..) | Stmt::Comment(_)) {
                return self.unsupported("statements with effects beside the parallel loop");
            }
        }
        self.stmts(&body[..pi])?;
        let Stmt::For {
            var,
            start,
            end,
            step,
            body: inner,
            ..
        } = &body[pi]
        else {
            return self.unsupported("a malformed parallel loop");
        };
        if *step <= 0 {
            return self.unsupported(format!("a parallel loop with step {step}"));
        }
        let name = self.var(*var).to_string();
        let decl = if self.hoisted.contains(var) {
            name.clone()
        } else {
            format!("long long {name}")
        };
        let s = self.expr(start, true)?;
        let e = self.expr(end, true)?;
        let end_c = if self.invariant(end) {
            strip(&e).to_string()
        } else {
            self.line(&format!("const long long qk_end = {};", strip(&e)));
            "qk_end".to_string()
        };
        self.line(&format!(
            "// parallel for {} in {}..{}{}: a grid-stride loop over global thread ids",
            self.f.var_name(*var),
            strip(&s),
            strip(&e),
            if *step == 1 {
                String::new()
            } else {
                format!(" step {step}")
            }
        ));
        self.line("const long long qk_tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;");
        self.line("const long long qk_nthreads = (long long)gridDim.x * blockDim.x;");
        let (first, inc) = match (strip(&s), *step) {
            ("0", 1) => ("qk_tid".to_string(), "qk_nthreads".to_string()),
            (st, 1) => (format!("{st} + qk_tid"), "qk_nthreads".to_string()),
            ("0", k) => (format!("qk_tid * {k}"), format!("qk_nthreads * {k}")),
            (st, k) => (format!("{st} + qk_tid * {k}"), format!("qk_nthreads * {k}")),
        };
        self.line(&format!(
            "for ({decl} = {first}; {name} < {end_c}; {name} += {inc}) {{"
        ));
        self.depth += 1;
        self.stmts(inner)?;
        self.depth -= 1;
        self.line("}");
        self.stmts(&body[pi + 1..])?;
        Ok(LaunchPlan::Grid {
            start: start.clone(),
            end: end.clone(),
            step: *step,
        })
    }

    /// A host-side expression over dimensions (for grids and trip counts).
    fn host(&self, e: &Expr) -> Option<String> {
        Some(match e {
            Expr::Int(v, t) => int_lit(*v, if *t == Ty::I32 { Ty::I32 } else { Ty::I64 }, false),
            Expr::Dim(d) => self.dims[*d].clone(),
            Expr::Bin(op, a, b) => {
                let (x, y) = (self.host(a)?, self.host(b)?);
                let sym = match op {
                    BinOp::Add => "+",
                    BinOp::Sub => "-",
                    BinOp::Mul => "*",
                    BinOp::Div => "/",
                    BinOp::Rem => "%",
                    BinOp::And => "&",
                    BinOp::Or => "|",
                    BinOp::Xor => "^",
                    BinOp::Min => return Some(format!("({x} < {y} ? {x} : {y})")),
                    BinOp::Max => return Some(format!("({x} > {y} ? {x} : {y})")),
                    _ => return None,
                };
                format!("({x} {sym} {y})")
            }
            Expr::Cmp(op, a, b) => {
                let sym = match op {
                    CmpOp::Lt => "<",
                    CmpOp::Le => "<=",
                    CmpOp::Eq => "==",
                    CmpOp::Ne => "!=",
                };
                format!("({} {sym} {})", self.host(a)?, self.host(b)?)
            }
            Expr::Select(c, a, b) => format!(
                "({} ? {} : {})",
                self.host(c)?,
                self.host(a)?,
                self.host(b)?
            ),
            Expr::Cast(t, a) if *t != Ty::F32 && self.f.ty(a) != Ty::F32 => {
                format!("({}){}", cty(*t), self.host(a)?)
            }
            _ => return None,
        })
    }

    fn wrapper(&mut self, plan: &LaunchPlan) -> R<String> {
        let sym = self.spec.symbol.clone();
        let mut w = String::new();
        let params = self.params(false);
        writeln!(
            w,
            "extern \"C\" hipError_t {sym}_launch({}, hipStream_t stream)",
            params.join(", ")
        )
        .ok();
        w.push_str("{\n");
        w.push_str("    // Dimensions must lie in 1..=bound: the proofs above assume it.\n");
        for (i, d) in self.dims.iter().enumerate() {
            let max = self
                .spec
                .dim_max
                .get(i)
                .copied()
                .unwrap_or(qkc_dsl::ir::DIM_MAX_DEFAULT);
            writeln!(
                w,
                "    if ({d} < 1 || {d} > {max}LL) return hipErrorInvalidValue;"
            )
            .ok();
        }
        let args: Vec<String> = self.bufs.iter().chain(self.dims.iter()).cloned().collect();
        let args = args.join(", ");
        match plan {
            LaunchPlan::Gpu { grid, block } => {
                let g = self.host(grid).ok_or_else(|| HipError::Unsupported {
                    kernel: self.f.name.clone(),
                    what: "a grid size that is not a function of the dimensions".into(),
                })?;
                writeln!(w, "    const long long qk_blocks = {};", strip(&g)).ok();
                w.push_str("    if (qk_blocks <= 0) return hipSuccess;\n");
                w.push_str("    if (qk_blocks > 2147483647LL) return hipErrorInvalidValue;\n");
                writeln!(
                    w,
                    "    hipLaunchKernelGGL({sym}, dim3((unsigned)qk_blocks), dim3({block}), 0, stream, {args});"
                )
                .ok();
            }
            LaunchPlan::Grid { start, end, step } => {
                let block = self.opts.block;
                let max = self.opts.max_blocks.max(1);
                match (self.host(start), self.host(end)) {
                    (Some(s), Some(e)) => {
                        let trips = if *step == 1 {
                            format!("{} - {}", e, s)
                        } else {
                            format!("({e} - {s} + {}) / {step}", step - 1)
                        };
                        let trips = trips.replace(" - 0LL", "");
                        writeln!(w, "    const long long qk_trips = {trips}; // iterations of the parallel loop").ok();
                        w.push_str("    if (qk_trips <= 0) return hipSuccess;\n");
                        writeln!(
                            w,
                            "    long long qk_blocks = (qk_trips + {}) / {block};",
                            block - 1
                        )
                        .ok();
                        writeln!(w, "    if (qk_blocks > {max}) qk_blocks = {max}; // threads stride over the rest").ok();
                    }
                    _ => {
                        writeln!(w, "    const long long qk_blocks = {max}; // loop bounds unknown on the host").ok();
                    }
                }
                writeln!(
                    w,
                    "    hipLaunchKernelGGL({sym}, dim3((unsigned)qk_blocks), dim3({block}), 0, stream, {args});"
                )
                .ok();
            }
            LaunchPlan::Single => {
                writeln!(
                    w,
                    "    hipLaunchKernelGGL({sym}, dim3(1), dim3(1), 0, stream, {args});"
                )
                .ok();
            }
        }
        w.push_str("    return hipGetLastError();\n}\n");
        Ok(w)
    }

    fn header_decl(&self) -> String {
        let mut h = String::new();
        if self.spec.symbol == self.f.name {
            writeln!(h, "/* {}", self.spec.symbol).ok();
        } else {
            writeln!(h, "/* {} (kernel {})", self.spec.symbol, self.f.name).ok();
        }
        for d in &self.spec.docs {
            writeln!(h, " *   {d}").ok();
        }
        let bounds: Vec<String> = self
            .dims
            .iter()
            .zip(&self.spec.dim_max)
            .map(|(d, m)| format!("{d} <= {m}"))
            .collect();
        writeln!(
            h,
            " * Pointers are device memory. Dims: {}.",
            bounds.join(", ")
        )
        .ok();
        writeln!(
            h,
            " * Returns hipErrorInvalidValue (nothing launched) when a dimension is outside\n * 1..=its bound, else the launch status.\n */"
        )
        .ok();
        writeln!(
            h,
            "hipError_t {}_launch({}, hipStream_t stream);",
            self.spec.symbol,
            self.params(false).join(", ")
        )
        .ok();
        h
    }

    fn schedule_note(&self, plan: &LaunchPlan) -> String {
        let arch = self.opts.arch;
        let dot = if !self.out.contains("qk_dot4(") {
            "no dot4"
        } else {
            match self.opts.dot4() {
                Dot4Kind::Sdot4 => "dot4 = __builtin_amdgcn_sdot4",
                Dot4Kind::Sudot4 => "dot4 = __builtin_amdgcn_sudot4 (signed x signed)",
                Dot4Kind::Portable => "dot4 = portable byte products",
            }
        };
        match plan {
            LaunchPlan::Gpu { block, .. } => format!(
                "schedule hip: GPU launch of {block} threads per block on {arch} (wave{}); lane = threadIdx.x & 31, warp_sum = width-32 __shfl_xor butterfly{}; {dot}",
                arch.wave_size(),
                if arch.wave_size() == 64 { " (two loop-IR warps per wavefront)" } else { "" }
            ),
            LaunchPlan::Grid { .. } => format!(
                "schedule hip: portable path on {arch}: the parallel loop is a grid-stride loop over global thread ids, {} threads per block, at most {} blocks; {dot}",
                self.opts.block, self.opts.max_blocks
            ),
            LaunchPlan::Single => format!("schedule hip: portable path on {arch}: no parallel loop, one thread"),
        }
    }
}

enum LaunchPlan {
    Gpu { grid: Expr, block: u32 },
    Grid { start: Expr, end: Expr, step: i64 },
    Single,
}

/// Writes a module: `(source, header)`.
pub(crate) fn write_module(
    name: &str,
    kernels: &[KernelSpec],
    opts: &HipOptions,
) -> Result<(String, String), HipError> {
    let mut helpers = BTreeSet::new();
    let mut bodies = String::new();
    let mut notes = String::new();
    let mut decls = String::new();
    for spec in kernels {
        let mut w = FnWriter::new(spec, opts, &mut helpers);
        let plan = w.kernel()?;
        let wrapper = w.wrapper(&plan)?;
        let f = &spec.func;
        writeln!(
            notes,
            "//\n// Kernel `{}` (host API: {}_launch in {name}.h):",
            spec.symbol, spec.symbol
        )
        .ok();
        for n in &f.notes {
            writeln!(notes, "//   {n}").ok();
        }
        writeln!(notes, "//   {}", w.schedule_note(&plan)).ok();
        let bounds = match &f.launch {
            Launch::Gpu { block, .. } => *block,
            Launch::Cpu => opts.block,
        };
        let bounds = if matches!(plan, LaunchPlan::Single) {
            1
        } else {
            bounds
        };
        writeln!(bodies, "// ---- kernel {} ----\n", spec.symbol).ok();
        writeln!(
            bodies,
            "extern \"C\" __global__ void __launch_bounds__({bounds}) {}(",
            spec.symbol
        )
        .ok();
        let ps = w.params(true);
        let n = ps.len();
        for (i, p) in ps.iter().enumerate() {
            writeln!(bodies, "    {p}{}", if i + 1 == n { ")" } else { "," }).ok();
        }
        bodies.push_str("{\n");
        bodies.push_str(&w.out);
        bodies.push_str("}\n\n");
        bodies.push_str(&wrapper);
        bodies.push('\n');
        decls.push_str(&w.header_decl());
        decls.push('\n');
    }
    let mut src = String::new();
    let arch = opts.arch;
    writeln!(
        src,
        "// {name}.hip: generated by qkc {}; do not edit.\n// HIP C++ for {} ({}, wave{}). Regenerate with `qkc emit FILE --target hip --arch {} -o DIR`.",
        env!("CARGO_PKG_VERSION"),
        arch,
        arch.family(),
        arch.wave_size(),
        arch
    )
    .ok();
    src.push_str(&notes);
    src.push_str(
        "//\n// Integers are two's complement (i64 = long long); the proofs above bound every\n\
         // accumulator, and shift amounts are taken modulo the width as in the loop IR.\n\
         // f16/bf16 buffers hold raw 16-bit patterns (unsigned short); conversions are exact\n\
         // widening and round-to-nearest-even narrowing.\n\n#include <hip/hip_runtime.h>\n\n",
    );
    if !helpers.is_empty() {
        src.push_str(
            "// ---- helpers: loop-IR operations without a one-token C++ spelling ----\n\n",
        );
        for h in &helpers {
            src.push_str(&helper_text(*h, opts.dot4()));
            src.push('\n');
        }
    }
    src.push_str(&bodies);
    let guard: String = format!("QKC_{}_H", name.to_ascii_uppercase());
    let mut hdr = String::new();
    writeln!(
        hdr,
        "/* {name}.h: host API of {name}.hip ({arch}), generated by qkc {}; do not edit.\n * Include from C or C++; link the object built from {name}.hip. */",
        env!("CARGO_PKG_VERSION")
    )
    .ok();
    writeln!(
        hdr,
        "#ifndef {guard}\n#define {guard}\n\n#include <hip/hip_runtime_api.h>\n"
    )
    .ok();
    hdr.push_str("#ifdef __cplusplus\nextern \"C\" {\n#endif\n\n");
    hdr.push_str(&decls);
    hdr.push_str("#ifdef __cplusplus\n}\n#endif\n\n");
    writeln!(hdr, "#endif /* {guard} */").ok();
    Ok((src, hdr))
}

fn helper_text(h: Helper, dot4: Dot4Kind) -> String {
    const P: &str = "static __device__ __forceinline__";
    match h {
        Helper::MinI32 => format!("{P} int qk_min_i32(int a, int b) {{ return a < b ? a : b; }}\n"),
        Helper::MinI64 => format!("{P} long long qk_min_i64(long long a, long long b) {{ return a < b ? a : b; }}\n"),
        Helper::MaxI32 => format!("{P} int qk_max_i32(int a, int b) {{ return a > b ? a : b; }}\n"),
        Helper::MaxI64 => format!("{P} long long qk_max_i64(long long a, long long b) {{ return a > b ? a : b; }}\n"),
        Helper::ShlI32 => format!("// Shifts take the amount modulo the width.\n{P} int qk_shl_i32(int a, int s) {{ return (int)((unsigned)a << (s & 31)); }}\n"),
        Helper::ShlI64 => format!("{P} long long qk_shl_i64(long long a, long long s) {{ return (long long)((unsigned long long)a << (s & 63)); }}\n"),
        Helper::SarI32 => format!("{P} int qk_sar_i32(int a, int s) {{ return a >> (s & 31); }}\n"),
        Helper::SarI64 => format!("{P} long long qk_sar_i64(long long a, long long s) {{ return a >> (s & 63); }}\n"),
        Helper::ShrI32 => format!("{P} int qk_shr_i32(int a, int s) {{ return (int)((unsigned)a >> (s & 31)); }}\n"),
        Helper::ShrI64 => format!("{P} long long qk_shr_i64(long long a, long long s) {{ return (long long)((unsigned long long)a >> (s & 63)); }}\n"),
        Helper::SbfeI32 => format!("// Bits pos..pos+len of v, sign-extended (v_bfe_i32).\n{P} int qk_sbfe_i32(int v, int pos, int len) {{ return (int)((unsigned)v << (32 - pos - len)) >> (32 - len); }}\n"),
        Helper::UbfeI32 => format!("// Bits pos..pos+len of v, zero-extended (v_bfe_u32).\n{P} int qk_ubfe_i32(int v, int pos, int len) {{ return (int)(((unsigned)v >> pos) & (0xffffffffu >> (32 - len))); }}\n"),
        Helper::SbfeI64 => format!("// Bits pos..pos+len of v, sign-extended.\n{P} long long qk_sbfe_i64(long long v, int pos, int len) {{ return (long long)((unsigned long long)v << (64 - pos - len)) >> (64 - len); }}\n"),
        Helper::UbfeI64 => format!("// Bits pos..pos+len of v, zero-extended.\n{P} long long qk_ubfe_i64(long long v, int pos, int len) {{ return (long long)(((unsigned long long)v >> pos) & (~0ull >> (64 - len))); }}\n"),
        Helper::LoadBytes => format!(
            "// N little-endian bytes at byte offset off, any alignment, zero-extended.\n\
             template <int N>\n{P} unsigned long long qk_load_bytes(const void* p, long long off)\n{{\n\
             \x20   const unsigned char* b = (const unsigned char*)p + off;\n\
             \x20   unsigned long long v = 0;\n\
             #pragma unroll\n\
             \x20   for (int i = 0; i < N; ++i) v |= (unsigned long long)b[i] << (8 * i);\n\
             \x20   return v;\n}}\n"
        ),
        Helper::LoadI8x4 => format!(
            "// Four consecutive i8 values as the byte lanes of one word, any alignment.\n\
             {P} int qk_load_i8x4(const signed char* p)\n{{\n\
             \x20   const unsigned char* b = (const unsigned char*)p;\n\
             \x20   return (int)((unsigned)b[0] | ((unsigned)b[1] << 8) | ((unsigned)b[2] << 16) | ((unsigned)b[3] << 24));\n}}\n"
        ),
        Helper::PackI8x4 => format!(
            "// Four codes that fit a signed byte, packed into byte lanes.\n\
             {P} int qk_pack_i8x4(int c0, int c1, int c2, int c3)\n{{\n\
             \x20   return (int)(((unsigned)c0 & 0xffu) | (((unsigned)c1 & 0xffu) << 8) | (((unsigned)c2 & 0xffu) << 16) | ((unsigned)c3 << 24));\n}}\n"
        ),
        Helper::Dot4 => {
            let body = match dot4 {
                Dot4Kind::Sdot4 => "    return __builtin_amdgcn_sdot4(a, b, acc, false); // v_dot4_i32_i8 / v_dot4c_i32_i8\n".to_string(),
                Dot4Kind::Sudot4 => "    return __builtin_amdgcn_sudot4(true, a, true, b, acc, false); // v_dot4_i32_iu8, both signed\n".to_string(),
                Dot4Kind::Portable => "    return acc + (int)(signed char)a * (int)(signed char)b\n\
                     \x20              + (int)(signed char)(a >> 8) * (int)(signed char)(b >> 8)\n\
                     \x20              + (int)(signed char)(a >> 16) * (int)(signed char)(b >> 16)\n\
                     \x20              + (a >> 24) * (b >> 24);\n"
                    .to_string(),
            };
            format!("// acc + the sum of the four signed byte products of a and b (dp4a).\n{P} int qk_dot4(int a, int b, int acc)\n{{\n{body}}}\n")
        }
        Helper::F16ToF32 => format!(
            "// IEEE binary16 bits to f32, exact (hardware conversion on AMD GPUs).\n\
             {P} float qk_f16_to_f32(unsigned short h)\n{{\n\
             #if defined(__HIP_DEVICE_COMPILE__) && defined(__clang__)\n\
             \x20   _Float16 v;\n\
             \x20   __builtin_memcpy(&v, &h, 2);\n\
             \x20   return (float)v;\n\
             #else\n\
             \x20   const unsigned sign = (unsigned)(h & 0x8000u) << 16;\n\
             \x20   const unsigned exp = (h >> 10) & 0x1fu;\n\
             \x20   const unsigned man = h & 0x3ffu;\n\
             \x20   if (exp == 0x1fu) return __uint_as_float(sign | 0x7f800000u | (man ? 0x400000u | (man << 13) : 0u));\n\
             \x20   if (exp == 0u) {{\n\
             \x20       const float m = (float)man * 5.9604644775390625e-8f; // zero or subnormal: man * 2^-24\n\
             \x20       return sign ? -m : m;\n\
             \x20   }}\n\
             \x20   return __uint_as_float(sign | ((exp + 112u) << 23) | (man << 13));\n\
             #endif\n}}\n"
        ),
        Helper::F32ToF16 => format!(
            "// f32 to IEEE binary16 bits, round to nearest even (hardware conversion on AMD GPUs).\n\
             {P} unsigned short qk_f32_to_f16(float f)\n{{\n\
             #if defined(__HIP_DEVICE_COMPILE__) && defined(__clang__)\n\
             \x20   const _Float16 v = (_Float16)f;\n\
             \x20   unsigned short h;\n\
             \x20   __builtin_memcpy(&h, &v, 2);\n\
             \x20   return h;\n\
             #else\n\
             \x20   const unsigned x = __float_as_uint(f);\n\
             \x20   const unsigned sign = (x >> 16) & 0x8000u;\n\
             \x20   const unsigned a = x & 0x7fffffffu;\n\
             \x20   if (a >= 0x7f800000u) // inf, or NaN kept quiet\n\
             \x20       return (unsigned short)(sign | 0x7c00u | (a > 0x7f800000u ? 0x200u | ((a >> 13) & 0x3ffu) : 0u));\n\
             \x20   if (a >= 0x477ff000u) return (unsigned short)(sign | 0x7c00u); // rounds past 65504\n\
             \x20   if (a < 0x38800000u) {{ // below 2^-14: a multiple of 2^-24 (subnormal) or zero\n\
             \x20       const unsigned shift = 126u - (a >> 23);\n\
             \x20       if ((a >> 23) == 0u || shift > 24u) return (unsigned short)sign;\n\
             \x20       const unsigned m = (a & 0x7fffffu) | 0x800000u;\n\
             \x20       unsigned q = m >> shift;\n\
             \x20       const unsigned rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);\n\
             \x20       if (rem > half || (rem == half && (q & 1u))) q += 1u;\n\
             \x20       return (unsigned short)(sign | q);\n\
             \x20   }}\n\
             \x20   return (unsigned short)(sign | ((a + 0xc8000fffu + ((a >> 13) & 1u)) >> 13));\n\
             #endif\n}}\n"
        ),
        Helper::Bf16ToF32 => format!(
            "// bfloat16 bits to f32, exact.\n{P} float qk_bf16_to_f32(unsigned short h) {{ return __uint_as_float((unsigned)h << 16); }}\n"
        ),
        Helper::F32ToBf16 => format!(
            "// f32 to bfloat16 bits, round to nearest even (NaN kept quiet).\n\
             {P} unsigned short qk_f32_to_bf16(float f)\n{{\n\
             \x20   const unsigned x = __float_as_uint(f);\n\
             \x20   if ((x & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((x >> 16) | 0x40u);\n\
             \x20   return (unsigned short)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);\n}}\n"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_only_removes_enclosing_parens() {
        assert_eq!(strip("(a + b)"), "a + b");
        assert_eq!(strip("(a) + (b)"), "(a) + (b)");
        assert_eq!(strip("x"), "x");
    }

    #[test]
    fn literals() {
        assert_eq!(int_lit(5, Ty::I64, true), "5");
        assert_eq!(int_lit(5, Ty::I64, false), "5LL");
        assert_eq!(int_lit(1 << 40, Ty::I64, true), "1099511627776LL");
        assert_eq!(int_lit(-3, Ty::I32, true), "(-3)");
        assert_eq!(int_lit(i32::MIN as i64, Ty::I32, true), "(-2147483647 - 1)");
        assert_eq!(hex_lit(1792, Ty::I32), "0x700");
        assert_eq!(hex_lit(-2139062144, Ty::I32), "(int)0x80808080u");
        assert_eq!(hex_lit(-1, Ty::I64), "(long long)0xffffffffffffffffULL");
        assert_eq!(f32_lit(0.0), "0.0f");
        assert_eq!(f32_lit(1e-7), "1e-7f");
        assert_eq!(f32_lit(-2.5), "(-2.5f)");
        assert_eq!(f32_lit(f32::INFINITY), "__uint_as_float(0x7f800000u)");
    }

    #[test]
    fn reserved_names() {
        assert!(is_reserved("int"));
        assert!(is_reserved("v12_x"));
        assert!(is_reserved("qk_tid"));
        assert!(!is_reserved("v"));
        assert!(!is_reserved("vx_1"));
        assert!(!is_reserved("x"));
    }
}
