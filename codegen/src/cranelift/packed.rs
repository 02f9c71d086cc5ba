//! `DotPacked` on x86-64 with 128-bit vectors (SSSE3 `pshufb` / `pmaddubsw`).
//!
//! A block is 64 units; eight units (one `i16x8`, a unit's 16-bit window per lane)
//! are decoded at a time:
//!
//! ```text
//! raw  = pshufb(16 loaded bytes): lane u ← the 2 bytes holding unit u
//! x    = raw ^ signmask        signed fields become offset binary (code + 2^(bits-1))
//! f0   = (x · 2^(16-p-b)) >> (16-b)          field 0 in the low byte of the lane
//! f1   = (x · 2^(8-p)) & (2^b - 1) << 8       field 1 in the high byte (two fields)
//! w    = f0 | f1   (two fields) or unarrow(f0 of 8 units, f0 of the next 8) (one)
//! d    = pmaddubsw(x[k..k+16], w) - pmaddubsw(x[k..k+16], bias)        i16, exact
//! ```
//!
//! `d` is summed in `i16` over the block when the layout's bound allows it, widened
//! to `i32` once, reduced and added to the accumulator: every step is an exact
//! integer, so the result equals the interpreter's. Layouts whose pair sums could
//! saturate `pmaddubsw` are rejected ([`supported`]); the CPU runtime then lowers
//! without `DotPacked`.

use cranelift_codegen::ir::{types, InstBuilder, Value};

use super::translate::{mem_flags, Tr};
use super::CraneliftError;
use crate::loop_ir::{packed_block_bytes, packed_stride_bits, Elem, Expr, LayoutDesc, Ty};

/// Largest `Σ |field value|` over the weights one `pmaddubsw` lane pairs up, and the
/// same for the biased (unsigned) codes.
fn pair_bounds(l: &LayoutDesc) -> (i64, i64) {
    let f = l.fields();
    let mag = |i: usize| {
        let d = &f[i % f.len()];
        if d.signed {
            1i64 << (d.bits - 1)
        } else {
            (1i64 << d.bits) - 1
        }
    };
    let umax = |i: usize| (1i64 << f[i % f.len()].bits) - 1;
    (mag(0) + mag(1), umax(0) + umax(1))
}

/// Whether this backend compiles `DotPacked` over `l` on this host: x86-64 with
/// SSSE3, one or two fields per unit, and no `pmaddubsw` pair sum that could saturate.
pub fn supported(l: &LayoutDesc) -> bool {
    let (_, usum) = pair_bounds(l);
    super::simd::has_ssse3()
        && (1..=2).contains(&l.per_unit())
        && (1..=8).contains(&packed_stride_bits(l))
        && usum * 128 <= i16::MAX as i64
}

fn vconst(tr: &mut Tr, ty: types::Type, bytes: Vec<u8>) -> Value {
    super::simd::vconst(tr, ty, bytes)
}

fn u16s(v: impl IntoIterator<Item = u16>) -> Vec<u8> {
    v.into_iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Decodes units `8g..8g+8` of the block at `addr` into an `i16x8` per field: field
/// `f` of unit `8g+l` in lane `l`, offset binary, at bits 0.. (field 0) or 8..
/// (field 1).
fn decode8(tr: &mut Tr, l: &LayoutDesc, addr: Value, g: usize) -> Vec<Value> {
    let stride = packed_stride_bits(l);
    let nb = packed_block_bytes(l, 64 * l.per_unit() as u32);
    let fl = mem_flags(false);
    // 16 bytes (or the block's 8) starting at or before the group, inside the block.
    let gbyte = g * stride;
    let (v8, base) = if nb >= 16 {
        let o = gbyte.min(nb - 16);
        (tr.b.ins().load(types::I8X16, fl, addr, o as i32), o)
    } else {
        let w = tr.b.ins().load(types::I64, fl, addr, 0);
        let v = tr.b.ins().scalar_to_vector(types::I64X2, w);
        (tr.b.ins().bitcast(types::I8X16, super::simd::le(), v), 0)
    };
    let mut idx = vec![0x80u8; 16];
    let mut sign = Vec::with_capacity(8);
    let mut pos = Vec::with_capacity(8);
    for u in 0..8 {
        let bit = (8 * g + u) * stride;
        let b = bit / 8 - base;
        idx[2 * u] = b as u8;
        if b + 1 < 16 {
            idx[2 * u + 1] = (b + 1) as u8;
        }
        let p = bit % 8;
        let mut s = 0u16;
        for fd in l.fields() {
            if fd.signed {
                s |= 1 << (p + fd.shift as usize + fd.bits as usize - 1);
            }
        }
        sign.push(s);
        pos.push(p);
    }
    let idx = vconst(tr, types::I8X16, idx);
    let raw = tr.b.ins().x86_pshufb(v8, idx);
    let raw = tr.b.ins().bitcast(types::I16X8, super::simd::le(), raw);
    let sign = vconst(tr, types::I16X8, u16s(sign));
    let x = tr.b.ins().bxor(raw, sign);
    let mut out = Vec::with_capacity(l.per_unit());
    for (fi, fd) in l.fields().iter().enumerate() {
        let (b, sh) = (fd.bits as usize, fd.shift as usize);
        if fi == 0 {
            let m = vconst(
                tr,
                types::I16X8,
                u16s(pos.iter().map(|p| 1 << (16 - p - sh - b))),
            );
            let top = tr.b.ins().imul(x, m);
            out.push(tr.b.ins().ushr_imm_s(top, (16 - b) as i64));
        } else if pos.iter().all(|p| p + sh <= 8) {
            let m = vconst(
                tr,
                types::I16X8,
                u16s(pos.iter().map(|p| 1 << (8 - p - sh))),
            );
            let t = tr.b.ins().imul(x, m);
            let mask = vconst(tr, types::I16X8, u16s([(((1u16 << b) - 1) << 8); 8]));
            out.push(tr.b.ins().band(t, mask));
        } else {
            let m = vconst(
                tr,
                types::I16X8,
                u16s(pos.iter().map(|p| 1 << (16 - p - sh - b))),
            );
            let top = tr.b.ins().imul(x, m);
            let t = tr.b.ins().ushr_imm_s(top, (8 - b) as i64);
            let mask = vconst(tr, types::I16X8, u16s([(((1u16 << b) - 1) << 8); 8]));
            out.push(tr.b.ins().band(t, mask));
        }
    }
    out
}

/// `acc + Σ_j act[act_index + j] · code_j` over one block (see the module docs).
#[allow(clippy::too_many_arguments)]
pub(crate) fn dot_packed(
    tr: &mut Tr,
    act: usize,
    act_index: &Expr,
    wbuf: usize,
    byte_offset: &Expr,
    l: &LayoutDesc,
    count: u32,
    acc: &Expr,
) -> Result<Value, CraneliftError> {
    let per = l.per_unit();
    if !supported(l) || count as usize != 64 * per || tr.f.bufs[act].elem != Elem::I8 {
        return Err(CraneliftError::NotSupported {
            op: "dot_packed",
            why: "needs x86 SSSE3, 1 or 2 fields per unit, 64 units per block, i8 \
                  activations and pair sums that cannot saturate pmaddubsw",
        });
    }
    let nb = packed_block_bytes(l, count);
    let base = tr.expr_i64(act_index)?;
    let off = tr.expr_i64(byte_offset)?;
    tr.check_bounds(wbuf, off, nb as i64);
    tr.check_bounds(act, base, count as i64);
    let waddr = tr.addr(wbuf, off);
    let aaddr = tr.addr(act, base);
    let fl = mem_flags(false);
    let (dmax, _) = pair_bounds(l);
    let steps = count as i64 / 16;
    let i16_sum = dmax * 128 * steps <= i16::MAX as i64;
    let bias: Vec<u8> = (0..16)
        .map(|j| {
            let fd = l.field_of(j);
            if fd.signed {
                1u8 << (fd.bits - 1)
            } else {
                0
            }
        })
        .collect();
    let signed = bias.iter().any(|&b| b != 0);
    let bias = vconst(tr, types::I8X16, bias);
    let mut sum16: Option<Value> = None;
    let mut sum32: Option<Value> = None;
    let widen = |tr: &mut Tr, d: Value| {
        let lo = tr.b.ins().swiden_low(d);
        let hi = tr.b.ins().swiden_high(d);
        tr.b.ins().iadd_pairwise(lo, hi)
    };
    // Weight bytes of 16 weights at a time, in weight order.
    let mut step = 0usize;
    for g in 0..8 {
        let f = decode8(tr, l, waddr, g);
        let words: Vec<Value> = if per == 2 {
            let w = tr.b.ins().bor(f[0], f[1]);
            vec![tr.b.ins().bitcast(types::I8X16, super::simd::le(), w)]
        } else if g % 2 == 0 {
            // One field: pair this group with the next into 16 bytes.
            let next = decode8(tr, l, waddr, g + 1);
            vec![tr.b.ins().unarrow(f[0], next[0])]
        } else {
            continue;
        };
        for w in words {
            let a = tr.b.ins().load(types::I8X16, fl, aaddr, (16 * step) as i32);
            step += 1;
            let mut d = tr.b.ins().x86_pmaddubsw(a, w);
            if signed {
                let c = tr.b.ins().x86_pmaddubsw(a, bias);
                d = tr.b.ins().isub(d, c);
            }
            if i16_sum {
                sum16 = Some(match sum16 {
                    None => d,
                    Some(s) => tr.b.ins().iadd(s, d),
                });
            } else {
                let d32 = widen(tr, d);
                sum32 = Some(match sum32 {
                    None => d32,
                    Some(s) => tr.b.ins().iadd(s, d32),
                });
            }
        }
    }
    let v = match (sum16, sum32) {
        (Some(s), _) => widen(tr, s),
        (None, Some(s)) => s,
        (None, None) => return Err(CraneliftError::Invalid("empty dot_packed".into())),
    };
    let p = tr.b.ins().iadd_pairwise(v, v);
    let p = tr.b.ins().iadd_pairwise(p, p);
    let s = tr.b.ins().extractlane(p, 0);
    let a = tr.expr(acc)?;
    if tr.ty(acc) != Ty::I32 {
        return Err(CraneliftError::Invalid(
            "dot_packed accumulates in i32".into(),
        ));
    }
    Ok(tr.b.ins().iadd(a, s))
}
