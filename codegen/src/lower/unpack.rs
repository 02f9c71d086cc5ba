//! Unpack strength reduction: turns "code of weight k" into shift/mask/sign-extend
//! sequences derived from the layout descriptor.
//!
//! A *chunk* is a run of whole units that ends on a byte boundary and fits in 64 bits
//! (for the 7-bit 3.5-bit stream: 8 units = 16 weights = 7 bytes). Inside a chunk every
//! code sits at a constant bit position, so it is one `Bfe` of the loaded word. Weights
//! outside whole chunks (tails, K not a multiple of the chunk) use the generic path:
//! variable bit position, one or two byte loads across a byte boundary, variable shifts.

use qkc_dsl::layout::{LayoutDesc, Storage};

use crate::loop_ir::build::*;
use crate::loop_ir::{BinOp, CmpOp, Expr, Func, Stmt, Ty, Var};

/// A chunk shape for a layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// Units per chunk.
    pub units: usize,
    /// Weights per chunk.
    pub weights: usize,
    /// Bytes per chunk (at most 8).
    pub bytes: usize,
}

/// Bits a unit occupies in memory.
pub use crate::loop_ir::packed_stride_bits as unit_stride_bits;

/// The largest chunk of at most 64 bits that ends on a byte boundary and, if
/// `align_units` is given, divides it (so chunks never straddle a group).
pub fn chunk_for(l: &LayoutDesc, align_units: Option<usize>) -> Option<Chunk> {
    let ub = unit_stride_bits(l);
    let step = 8 / gcd(ub, 8);
    let mut best = None;
    let mut u = step;
    while u * ub <= 64 {
        if align_units.is_none_or(|a| a % u == 0) {
            best = Some(Chunk {
                units: u,
                weights: u * l.per_unit(),
                bytes: u * ub / 8,
            });
        }
        u += step;
    }
    best
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Row stride in bytes of a packed row of `K` weights, as an `I64` expression.
pub fn row_bytes(l: &LayoutDesc, k_dim: usize) -> Expr {
    let units = ceil_div(dim(k_dim), l.per_unit() as i64);
    match l.storage {
        Storage::Byte => units,
        Storage::Stream => ceil_div(mul(units, i64c(l.unit_bits as i64)), 8),
    }
}

/// Emits `let`s decoding one chunk whose first weight is `k_chunk` (a multiple of the
/// chunk's weights) in the row starting at byte `row_base`. Returns one `I32` code
/// variable per weight.
pub fn decode_chunk(
    f: &mut Func,
    out: &mut Vec<Stmt>,
    l: &LayoutDesc,
    c: &Chunk,
    buf: usize,
    row_base: Expr,
    k_chunk: Expr,
) -> Vec<Var> {
    let ub = unit_stride_bits(l);
    let byte_off = add(
        row_base,
        mul(div(k_chunk, i64c(c.weights as i64)), i64c(c.bytes as i64)),
    );
    let wide = c.bytes > 4;
    let word = f.var("word", if wide { Ty::I64 } else { Ty::I32 });
    out.push(Stmt::Let(word, load_bytes(buf, byte_off, c.bytes as u8)));
    let mut codes = Vec::with_capacity(c.weights);
    for j in 0..c.weights {
        let unit = j / l.per_unit();
        let fd = l.field_of(j);
        let pos = (unit * ub) as u8 + fd.shift;
        let v = f.var(format!("c{j}"), Ty::I32);
        let e = bfe(var(word), pos, fd.bits, fd.signed);
        out.push(Stmt::Let(v, if wide { cast(Ty::I32, e) } else { e }));
        codes.push(v);
    }
    codes
}

/// Emits statements computing the code of weight `k` (an `I64` expression, any
/// position) in the row starting at byte `row_base`; returns the `I32` code variable.
pub fn decode_one(
    f: &mut Func,
    out: &mut Vec<Stmt>,
    l: &LayoutDesc,
    buf: usize,
    row_base: Expr,
    k: Expr,
) -> Var {
    let per = l.per_unit() as i64;
    let ub = unit_stride_bits(l) as i64;
    let kv = f.var("kt", Ty::I64);
    out.push(Stmt::Let(kv, k));
    // Field index -> (shift, bits, signed), chosen with selects on k % per.
    let fi = f.var("fi", Ty::I64);
    out.push(Stmt::Let(fi, bin(BinOp::Rem, var(kv), i64c(per))));
    let pick = |sel: &dyn Fn(usize) -> i64| -> Expr {
        let fields = l.fields();
        let mut e = i64c(sel(fields.len() - 1));
        for i in (0..fields.len() - 1).rev() {
            e = Expr::Select(
                Box::new(cmp(CmpOp::Eq, var(fi), i64c(i as i64))),
                Box::new(i64c(sel(i))),
                Box::new(e),
            );
        }
        e
    };
    let fields = l.fields().to_vec();
    let bitpos = f.var("bitpos", Ty::I64);
    out.push(Stmt::Let(
        bitpos,
        add(
            mul(div(var(kv), i64c(per)), i64c(ub)),
            pick(&|i| fields[i].shift as i64),
        ),
    ));
    let len = f.var("len", Ty::I64);
    out.push(Stmt::Let(len, pick(&|i| fields[i].bits as i64)));
    let byte = f.var("byte", Ty::I64);
    out.push(Stmt::Let(
        byte,
        add(row_base, bin(BinOp::Shr, var(bitpos), i64c(3))),
    ));
    let sh = f.var("sh", Ty::I64);
    out.push(Stmt::Let(sh, bin(BinOp::And, var(bitpos), i64c(7))));
    let w = f.var("w16", Ty::I64);
    out.push(Stmt::Let(w, cast(Ty::I64, load_bytes(buf, var(byte), 1))));
    // A field crossing into the next byte needs a second load (never past the row).
    out.push(Stmt::If {
        cond: cmp(CmpOp::Lt, i64c(8), add(var(sh), var(len))),
        then: vec![Stmt::Set(
            w,
            bin(
                BinOp::Or,
                var(w),
                bin(
                    BinOp::Shl,
                    cast(Ty::I64, load_bytes(buf, add(var(byte), i64c(1)), 1)),
                    i64c(8),
                ),
            ),
        )],
    });
    // Move the field to the top of 64 bits, then shift back down (arithmetic when signed).
    let top = bin(BinOp::Shl, var(w), sub(i64c(64), add(var(sh), var(len))));
    let signed_all = fields.iter().all(|f| f.signed);
    let unsigned_all = fields.iter().all(|f| !f.signed);
    let down = |op| bin(op, top.clone(), sub(i64c(64), var(len)));
    let code = if signed_all {
        down(BinOp::Sar)
    } else if unsigned_all {
        down(BinOp::Shr)
    } else {
        let sgn = pick(&|i| fields[i].signed as i64);
        Expr::Select(
            Box::new(cmp(CmpOp::Ne, sgn, i64c(0))),
            Box::new(down(BinOp::Sar)),
            Box::new(down(BinOp::Shr)),
        )
    };
    let cv = f.var("code", Ty::I32);
    out.push(Stmt::Let(cv, cast(Ty::I32, code)));
    cv
}
