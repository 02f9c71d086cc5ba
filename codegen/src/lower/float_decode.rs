//! Float decode of packed codes without integer-to-float conversions (the GPU vector
//! path for float activations).
//!
//! A field of `b` bits moved to bits `p .. p + b` of a word, masked, and OR-ed with the
//! bits of the float `2^E` where `E = 23 - p` is, read as an `f32`, exactly
//! `2^E + u` (`u` the field's unsigned value: mantissa bit `p` is worth 1). A signed
//! field has its sign bit flipped by the same operation, so `u = code + 2^(b-1)`.
//! Subtracting the constant `2^E (+ 2^(b-1))` leaves the code, exactly, as an `f32`:
//! one `and`/`xor` (a `lop3` on NVIDIA) and one float subtraction per weight, where
//! `bfe` + `cvt.rn.f32.s32` would take the integer-to-float unit, a quarter-rate
//! pipe on NVIDIA GPUs since Volta (16 per clock and SM on Hopper).
//!
//! Units of at most 8 bits are moved once (the unit's top bit to bit 22) and all their
//! fields decoded from that window; wider units move each field to the top. So `E`
//! is at most 8 and every product with an activation is as exact as the plain path's.

use qkc_dsl::layout::LayoutDesc;

use super::unpack::unit_stride_bits;
use crate::loop_ir::build::*;
use crate::loop_ir::{BinOp, Expr, Var};

/// How one weight of a chunk is decoded: the window that holds it and the constants.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MagicField {
    /// The chunk bit that the window moves to bit `dest` (the unit's or the field's
    /// first bit).
    pub from: usize,
    /// The window bit that chunk bit `from` lands on.
    pub dest: usize,
    /// The last chunk bit the window must hold (the unit's or the field's top bit).
    pub top: usize,
    /// The field's bits in the window.
    pub mask: u32,
    /// XOR-ed after the mask: the exponent bits of `2^E` and, for a signed field,
    /// its sign bit.
    pub xor: u32,
    /// `2^E` plus `2^(b-1)` for a signed field: subtracted to leave the code.
    pub bias: f32,
}

/// The decode of chunk weight `j` (weights in layout order from the chunk's first bit).
pub fn magic_field(l: &LayoutDesc, j: usize) -> MagicField {
    let unit = j / l.per_unit();
    let fd = *l.field_of(j);
    let ub = l.unit_bits as usize;
    let start = unit * unit_stride_bits(l);
    let bits = fd.bits as usize;
    let (from, dest, top, pos) = if ub <= 8 {
        let dest = 23 - ub;
        (start, dest, start + ub - 1, dest + fd.shift as usize)
    } else {
        let from = start + fd.shift as usize;
        let dest = 23 - bits;
        (from, dest, from + bits - 1, dest)
    };
    let e = 23 - pos as u32;
    let mask = (((1u64 << bits) - 1) << pos) as u32;
    let sign = if fd.signed {
        1u32 << (pos + bits - 1)
    } else {
        0
    };
    let bias = (1u32 << e) as f32
        + if fd.signed {
            (1u32 << (bits - 1)) as f32
        } else {
            0.0
        };
    MagicField {
        from,
        dest,
        top,
        mask,
        xor: ((127 + e) << 23) | sign,
        bias,
    }
}

/// The window of a [`MagicField`]: chunk bit `from` of the chunk words `w` moved to
/// bit `dest` (bits outside the field are don't-cares, masked later).
pub fn window(w: &[Var], m: &MagicField) -> Expr {
    if m.from >= m.dest {
        let s = m.from - m.dest;
        let (a, o) = (s / 32, s % 32);
        if o == 0 {
            var(w[a])
        } else if m.top < 32 * (a + 1) {
            bin(BinOp::Shr, var(w[a]), i32c(o as i64))
        } else {
            bin(
                BinOp::Or,
                bin(BinOp::Shr, var(w[a]), i32c(o as i64)),
                bin(BinOp::Shl, var(w[a + 1]), i32c(32 - o as i64)),
            )
        }
    } else {
        // The unit starts below `dest`, so it lies in the first word.
        bin(BinOp::Shl, var(w[0]), i32c((m.dest - m.from) as i64))
    }
}

/// The code of a [`MagicField`] from its window, as an exact `F32`.
pub fn code(win: Expr, m: &MagicField) -> Expr {
    sub(biased(win, m), f32c(m.bias))
}

/// The code plus [`MagicField::bias`] from its window (the masked bits read as an
/// `F32`; exact): for a sum of products whose bias term is removed once.
pub fn biased(win: Expr, m: &MagicField) -> Expr {
    let bits = bin(
        BinOp::Xor,
        bin(BinOp::And, win, i32c(m.mask as i32 as i64)),
        i32c(m.xor as i32 as i64),
    );
    Expr::FromBits(Box::new(bits))
}

#[cfg(test)]
mod tests {
    use super::*;
    use qkc_dsl::layout::{builtin, BUILTIN_NAMES};

    /// Every code of every built-in layout, at every weight position of a chunk of
    /// 64 weights (windows from random-looking neighbour bits), decodes exactly.
    #[test]
    fn decodes_every_code_of_builtin_layouts() {
        for name in BUILTIN_NAMES {
            let l = builtin(name).unwrap();
            let per = l.per_unit();
            let units = 64 / per;
            let stride = unit_stride_bits(&l);
            let nbits = units * stride;
            let words = nbits.div_ceil(32) + 1;
            for j in 0..units * per {
                let fd = *l.field_of(j);
                let m = magic_field(&l, j);
                let pos = (j / per) * stride + fd.shift as usize;
                for raw in 0..(1u64 << fd.bits) {
                    // Neighbour bits all ones or a pattern, the field set to `raw`.
                    for fill in [0u64, !0u64, 0x9e37_79b9_7f4a_7c15] {
                        let mut chunk = vec![0u32; words];
                        for (a, c) in chunk.iter_mut().enumerate() {
                            *c = (fill.rotate_left(a as u32 * 7)) as u32;
                        }
                        for b in 0..fd.bits as usize {
                            let (a, o) = ((pos + b) / 32, (pos + b) % 32);
                            chunk[a] = (chunk[a] & !(1 << o)) | ((((raw >> b) & 1) as u32) << o);
                        }
                        let win = if m.from >= m.dest {
                            let s = m.from - m.dest;
                            let lo = chunk[s / 32] as u64 | (chunk[s / 32 + 1] as u64) << 32;
                            (lo >> (s % 32)) as u32
                        } else {
                            chunk[0] << (m.dest - m.from)
                        };
                        let got = f32::from_bits((win & m.mask) ^ m.xor) - m.bias;
                        let want = if fd.signed && raw >> (fd.bits - 1) == 1 {
                            raw as i64 - (1i64 << fd.bits)
                        } else {
                            raw as i64
                        };
                        assert_eq!(got, want as f32, "{name} weight {j} raw {raw:#x}");
                    }
                }
            }
        }
    }
}
