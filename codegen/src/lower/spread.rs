//! The GPU vector path's "spread" decode: byte-lane `dp4a` operands for units of 5 to
//! 8 bits (the 3.5-bit stream, its one-pair-per-byte form, 5- to 8-bit codes) in
//! about one integer instruction per weight.
//!
//! Four consecutive units are taken as one 32-bit window with unit 0 at bit
//! `o = 8 - top` (`top`: the unit's highest used bit + 1) and spread so that unit `i`
//! sits at bit `8i + o`, i.e. with its top bit at the top of byte lane `i`. For a
//! stream of `s`-bit units (`d = 8 - s`), two masked shift-adds do it:
//!
//! ```text
//! y = (x & units01) + (x & units23) << 2d     // units 2, 3 move by 2d
//! z = y + (y & units13) * (2^d - 1)           // units 1, 3 move by d
//! ```
//!
//! Where units fill their bits (`o == d`, the 3.5-bit stream) the first step is one
//! mask and one multiply-add, `y = x + (x & from unit 2 up) * (2^2d - 1)`: the
//! window's bits past unit 3 move out of the word, and those below unit 0 stay below
//! every field's lane bits (the "add form", [`SpreadPlan::with_add_form`]; ptxas
//! makes it a `lop3` and an `imad` instead of two `lop3` and a shift).
//!
//! (byte storage needs none: its units already sit in byte lanes). Each field then
//! takes one mask, plus a shift unless it is the top field of its unit:
//!
//! * a **signed** field is moved to the top of its byte lane, low bits zero: the byte
//!   *is* the two's-complement code times `2^(8 - bits)`, with no sign extension and
//!   no bias correction, so `dp4a` sums `2^(8 - bits)` times the products. Sums of
//!   fields of different widths go to separate accumulators, combined exactly by
//!   [`SpreadPlan::combine`] (a shift-add and an arithmetic shift per group step);
//! * an **unsigned** field (at most 7 bits) is moved to the bottom of its lane.
//!
//! A quad holds one field of four consecutive units, so with two fields per unit the
//! quad's activations are every other byte of two activation words: one byte
//! permutation (`prmt`) per quad and activation row, shared by all weight rows of the
//! warp.

use qkc_dsl::layout::{LayoutDesc, Storage};

use super::unpack::unit_stride_bits;
use crate::loop_ir::build::*;
use crate::loop_ir::{BinOp, Expr, Func, Stmt, Ty, Var};

/// How one field of the unit becomes a byte lane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LaneField {
    /// Shift of the spread word: left when positive, right when negative.
    shift: i32,
    /// Mask of the four byte lanes after the shift.
    mask: u32,
    /// `log2` of the factor the lane value carries (`2^(8 - bits)` for signed fields).
    log2: u32,
}

/// The spread decode of a layout (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpreadPlan {
    stride: usize,
    /// Bit of unit 0 in a window (`8 - top`).
    o: usize,
    /// Fields in weight order.
    fields: Vec<LaneField>,
    /// The distinct `log2` factors of the fields, ascending.
    factors: Vec<u32>,
    /// Move units 2 and 3 by a mask and a multiply-add where units fill their bits
    /// (see [`SpreadPlan::quads`]); off: by a shift and a masked `or`.
    add_form: bool,
}

impl SpreadPlan {
    /// The plan for a layout, or `None` when it does not apply: units of 5 to 8 bits
    /// in memory, one or two fields, every field `dp4a`-able (signed, or unsigned of at
    /// most 7 bits).
    pub fn for_layout(l: &LayoutDesc) -> Option<SpreadPlan> {
        let stride = unit_stride_bits(l);
        let fs = l.fields();
        if !(5..=8).contains(&stride) || !(1..=2).contains(&fs.len()) {
            return None;
        }
        if matches!(l.storage, Storage::Byte) && stride != 8 {
            return None;
        }
        let top = fs
            .iter()
            .map(|f| (f.shift + f.bits) as usize)
            .max()
            .unwrap_or(0);
        if top == 0 || top > stride {
            return None;
        }
        let o = 8 - top;
        let mut fields = Vec::with_capacity(fs.len());
        for f in fs {
            let (bits, lo) = (f.bits as u32, o as u32 + f.shift as u32);
            let lane = (1u32 << bits) - 1;
            let field = if f.signed {
                let shift = 8 - (lo + bits);
                LaneField {
                    shift: shift as i32,
                    mask: ((lane << (8 - bits)) & 0xff) * 0x0101_0101,
                    log2: 8 - bits,
                }
            } else if bits <= 7 {
                LaneField {
                    shift: -(lo as i32),
                    mask: lane * 0x0101_0101,
                    log2: 0,
                }
            } else {
                return None;
            };
            fields.push(field);
        }
        let mut factors: Vec<u32> = fields.iter().map(|f| f.log2).collect();
        factors.sort_unstable();
        factors.dedup();
        Some(SpreadPlan {
            stride,
            o,
            fields,
            factors,
            add_form: true,
        })
    }

    /// This plan with units 2 and 3 moved by a mask and a multiply-add (`true`, the
    /// default: one `lop3` fewer per window where units fill their bits) or by a
    /// shift and a masked `or`.
    pub fn with_add_form(self, add_form: bool) -> SpreadPlan {
        SpreadPlan { add_form, ..self }
    }

    /// Weights of one group of four units (the quads of one window).
    pub fn group_weights(&self) -> usize {
        4 * self.fields.len()
    }

    /// Fields per unit: quads per group.
    pub fn n_fields(&self) -> usize {
        self.fields.len()
    }

    /// The distinct `log2` factors of the quads, ascending (an accumulator each).
    pub fn factors(&self) -> &[u32] {
        &self.factors
    }

    /// Index into [`SpreadPlan::factors`] of field `q`'s accumulator.
    pub fn factor_of(&self, q: usize) -> usize {
        let l = self.fields[q].log2;
        self.factors.iter().position(|&x| x == l).unwrap_or(0)
    }

    /// Emits the quads of group `g` (units `4g .. 4g + 4`) of a chunk held in words
    /// `w` (little-endian, from the chunk's first bit): one `I32` per field, in weight
    /// order.
    pub fn quads(
        &self,
        f: &mut Func,
        b: &mut Vec<Stmt>,
        w: &[Var],
        g: usize,
        tag: &str,
    ) -> Vec<Var> {
        let start = (4 * g * self.stride) as isize - self.o as isize;
        let x = window(w, start);
        let unit = |i: usize| -> u32 {
            let m = ((1u64 << (8 - self.o)) - 1) as u32;
            m << (self.o + i * self.stride)
        };
        let d = 8 - self.stride;
        let spread = if d == 0 {
            x
        } else {
            let xv = f.var(format!("sx{tag}"), Ty::I32);
            b.push(Stmt::Let(xv, x));
            // Units 2 and 3 move by 2d.
            let y = f.var(format!("sy{tag}"), Ty::I32);
            // Units that fill their bits (`o == d`) leave no gaps, so the window's
            // bits past unit 3 can ride along and leave the word at the top: one mask
            // and one multiply-add, `x + (x & from unit 2) * (2^2d - 1)`. The bits
            // below unit 0 (the previous unit's) stay below every field's lane bits.
            let fills = self.add_form && self.o == d;
            let moved = if fills {
                let m23 = u32::MAX << (self.o + 2 * self.stride);
                add(var(xv), mul(and(var(xv), m23), i32c((1i64 << (2 * d)) - 1)))
            } else {
                bin(
                    BinOp::Or,
                    bin(
                        BinOp::Shl,
                        and(var(xv), unit(2) | unit(3)),
                        i32c(2 * d as i64),
                    ),
                    and(var(xv), unit(0) | unit(1)),
                )
            };
            b.push(Stmt::Let(y, moved));
            // Units 1 and 3 move by d (unit 3 is now 2d higher; with `fills`, what
            // rode along above it moves out of the word).
            let u3 = if fills {
                u32::MAX << (self.o + 3 * self.stride + 2 * d)
            } else {
                unit(3) << (2 * d)
            };
            let u13 = unit(1) | u3;
            add(var(y), mul(and(var(y), u13), i32c((1i64 << d) - 1)))
        };
        let z = f.var(format!("sz{tag}"), Ty::I32);
        b.push(Stmt::Let(z, spread));
        self.fields
            .iter()
            .enumerate()
            .map(|(q, lf)| {
                let moved = match lf.shift {
                    0 => var(z),
                    s if s > 0 => bin(BinOp::Shl, var(z), i32c(s as i64)),
                    s => bin(BinOp::Shr, var(z), i32c(-s as i64)),
                };
                let e = if lf.mask == u32::MAX {
                    moved
                } else {
                    and(moved, lf.mask)
                };
                let v = f.var(format!("sq{tag}_{q}"), Ty::I32);
                b.push(Stmt::Let(v, e));
                v
            })
            .collect()
    }

    /// The activation word of field `q`'s quad of a group whose activations are the
    /// words `xs` (`n_fields` consecutive words, four activations each).
    pub fn act_word(&self, q: usize, xs: &[Var]) -> Expr {
        match self.fields.len() {
            1 => var(xs[0]),
            _ => Expr::BytePerm {
                a: Box::new(var(xs[0])),
                b: Box::new(var(xs[1])),
                sel: if q == 0 { 0x6420 } else { 0x7531 },
            },
        }
    }

    /// The exact sum of the accumulators (one per [`SpreadPlan::factors`] entry, each
    /// a multiple of its factor): `(Σ acc_i << (max - log2_i)) >> max` (arithmetic).
    pub fn combine(&self, accs: &[Var]) -> Expr {
        let max = self.factors.last().copied().unwrap_or(0);
        let mut sum: Option<Expr> = None;
        for (&a, &l) in accs.iter().zip(&self.factors) {
            let t = if l == max {
                var(a)
            } else {
                bin(BinOp::Shl, var(a), i32c((max - l) as i64))
            };
            sum = Some(match sum {
                None => t,
                Some(s) => add(s, t),
            });
        }
        let sum = sum.unwrap_or(i32c(0));
        if max == 0 {
            sum
        } else {
            bin(BinOp::Sar, sum, i32c(max as i64))
        }
    }
}

fn and(e: Expr, m: u32) -> Expr {
    bin(BinOp::And, e, i32c(m as i32 as i64))
}

/// The 32 bits of the chunk from bit `start` (which may be negative: zeros shifted
/// in below bit 0); bits past the chunk's last word read as zero. Also the tensor-core
/// path's f16 windows.
pub(super) fn window(w: &[Var], start: isize) -> Expr {
    if start < 0 {
        return bin(BinOp::Shl, var(w[0]), i32c(-start as i64));
    }
    let (a, s) = ((start / 32) as usize, (start % 32) as usize);
    if s == 0 {
        var(w[a])
    } else if a + 1 < w.len() {
        bin(
            BinOp::Or,
            bin(BinOp::Shr, var(w[a]), i32c(s as i64)),
            bin(BinOp::Shl, var(w[a + 1]), i32c(32 - s as i64)),
        )
    } else {
        bin(BinOp::Shr, var(w[a]), i32c(s as i64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qkc_dsl::layout::{builtin, BUILTIN_NAMES};

    #[test]
    fn applies_to_the_wide_unit_layouts_only() {
        let applies: Vec<&str> = BUILTIN_NAMES
            .iter()
            .copied()
            .filter(|n| {
                builtin(n)
                    .and_then(|l| SpreadPlan::for_layout(&l))
                    .is_some()
            })
            .collect();
        assert_eq!(applies, ["s8", "q3p5", "q3p5b"]);
    }

    /// Evaluates the integer expressions the decode emits (32-bit wrapping).
    fn eval(e: &Expr, env: &[u32]) -> u32 {
        match e {
            Expr::Int(v, _) => *v as u32,
            Expr::Var(v) => env[v.0 as usize],
            Expr::Bin(op, a, b) => {
                let (x, y) = (eval(a, env), eval(b, env));
                match op {
                    BinOp::Add => x.wrapping_add(y),
                    BinOp::Mul => x.wrapping_mul(y),
                    BinOp::And => x & y,
                    BinOp::Or => x | y,
                    BinOp::Shl => x << (y & 31),
                    BinOp::Shr => x >> (y & 31),
                    _ => panic!("unexpected {op:?}"),
                }
            }
            _ => panic!("unexpected {e:?}"),
        }
    }

    /// Every group of a chunk of every spread layout, on every code of every unit
    /// (round r gives unit u code (r + 37u) mod 2^stride), with pseudo-random words:
    /// each quad lane is exactly the field times `2^log2` (signed) or the field
    /// (unsigned), whatever the bits around the window.
    #[test]
    fn quads_decode_every_code_exactly() {
        for (name, add_form) in ["s8", "q3p5", "q3p5b"]
            .into_iter()
            .flat_map(|n| [(n, true), (n, false)])
        {
            let l = builtin(name).unwrap();
            let p = SpreadPlan::for_layout(&l).unwrap().with_add_form(add_form);
            let units = 32usize;
            let n_words = (units * p.stride).div_ceil(32);
            let mut state = 0x2545_f491_4f6c_dd1du64;
            for round in 0..(1usize << p.stride) {
                let mut words = vec![0u32; n_words];
                for w in words.iter_mut() {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    *w = state as u32;
                }
                let mut raw = vec![0u32; units];
                for (u, r) in raw.iter_mut().enumerate() {
                    *r = ((round + 37 * u) % (1 << p.stride)) as u32;
                    for i in 0..p.stride {
                        let bit = u * p.stride + i;
                        let (w, b) = (bit / 32, bit % 32);
                        words[w] = (words[w] & !(1 << b)) | ((*r >> i & 1) << b);
                    }
                }
                let mut f = Func::new("t", Vec::new(), Vec::new(), crate::loop_ir::Launch::Cpu);
                let wv: Vec<Var> = (0..n_words)
                    .map(|i| f.var(format!("w{i}"), Ty::I32))
                    .collect();
                let mut body = Vec::new();
                let quads: Vec<Vec<Var>> = (0..units / 4)
                    .map(|g| p.quads(&mut f, &mut body, &wv, g, &g.to_string()))
                    .collect();
                let mut env = vec![0u32; f.vars.len()];
                env[..n_words].copy_from_slice(&words);
                for st in &body {
                    let Stmt::Let(v, e) = st else {
                        panic!("unexpected {st:?}")
                    };
                    env[v.0 as usize] = eval(e, &env);
                }
                for (g, qs) in quads.iter().enumerate() {
                    for (q, (&qv, fd)) in qs.iter().zip(l.fields()).enumerate() {
                        for lane in 0..4 {
                            let unit = 4 * g + lane;
                            let code = raw[unit] >> fd.shift & ((1 << fd.bits) - 1);
                            let want = if fd.signed && code >> (fd.bits - 1) & 1 == 1 {
                                code as i32 - (1 << fd.bits)
                            } else {
                                code as i32
                            } << p.fields[q].log2;
                            let got = (env[qv.0 as usize] >> (8 * lane)) as u8;
                            let got = if fd.signed {
                                got as i8 as i32
                            } else {
                                got as i32
                            };
                            assert_eq!(
                                got, want,
                                "{name} (add form {add_form}): round {round}, unit {unit}, field {q}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn q3p5_fields_are_top_aligned() {
        let p = SpreadPlan::for_layout(&builtin("q3p5").unwrap()).unwrap();
        assert_eq!(p.o, 1);
        // hi (bits 6..3) is already at the top of its lane; lo (2..0) moves up by 4.
        assert_eq!(p.fields[0].shift, 0);
        assert_eq!(p.fields[0].mask, 0xf0f0_f0f0);
        assert_eq!(p.fields[1].shift, 4);
        assert_eq!(p.fields[1].mask, 0xe0e0_e0e0);
        assert_eq!(p.factors(), [4, 5]);
    }
}
