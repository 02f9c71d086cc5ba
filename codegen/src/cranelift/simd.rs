//! Vector paths of the Cranelift backend ([`super::CraneliftOptions::simd`]).
//!
//! **Codes.** A dot-product run's codes are usually `let c_j = [i32(]bfe(word, pos_j,
//! len_j)[)]` of one loaded word, in the same straight-line block. The translator
//! records that provenance (versioned, so a later reassignment of the word or a code
//! invalidates it) and decodes eight codes at once into an `i16x8`: the word's bytes
//! are shuffled so that lane `j` holds the 16-bit window starting at byte `pos_j / 8`,
//! a lane-wise multiply by `2^(16 - pos_j % 8 - len_j)` moves each field to the top of
//! its lane, and an arithmetic (signed) or logical (unsigned) right shift by
//! `16 - len_j` brings it down, one shift per distinct field width, blended with
//! constant lane masks. Codes of several words are gathered lane by lane instead.
//!
//! **Integer runs** (`I32`/`I64` accumulator, `i8` activations): eight activations are
//! sign-extended to `i16x8` straight from memory, and `Σ a_j c_j` over pairs of lanes
//! is the `i16x8 → i32x4` widening dot product (x86 `pmaddwd`). Codes are at most 8-bit
//! fields, so every product and pair sum is exact, and integer sums do not depend on
//! the order: the result equals the scalar path bit for bit.
//!
//! **Float runs** (`F32` accumulator over f32/f16/bf16 activations): activations are
//! widened to `f32x4` (bf16: `bits << 16`; f16: the scalar path's exact integer
//! conversion, lane-wise), codes converted to `f32x4`, multiplied and added. This
//! reassociates the sum; each partial sum is still an f32 sum of exact products.
//!
//! **Vector accumulators.** In a loop whose body updates an accumulator only as
//! `acc = dot(..., acc)`, the accumulator is kept as a vector (`i32x4`, `i64x2` or
//! `f32x4`) for the whole loop and reduced once after it.

use std::collections::HashMap;

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{
    types, ConstantData, Endianness, InstBuilder, MemFlagsData, Type, Value,
};
use cranelift_frontend::Variable;

use super::translate::{mem_flags, Tr};
use super::CraneliftError;
use crate::loop_ir::{Elem, Expr, Func, Stmt, Ty, Var};

/// Where a code variable's value came from: a constant-position bit field of `word`.
#[derive(Clone, Copy, Debug)]
struct Prov {
    word: Var,
    word_ver: u32,
    own_ver: u32,
    pos: u8,
    len: u8,
    signed: bool,
}

/// Per-function SIMD state.
pub(crate) struct Simd {
    version: Vec<u32>,
    prov: HashMap<Var, Prov>,
    /// Decoded `i16x8` code vectors of the current straight-line region.
    cache: HashMap<Vec<(Var, u32)>, Vec<Value>>,
    /// Accumulators kept in vectors in the loop being translated.
    promoted: HashMap<Var, (Variable, Ty)>,
    /// The last `LoadBytes` translated: address, bytes, flags.
    pub(crate) last_load: Option<(Value, u8, MemFlagsData)>,
    /// Words assigned straight from a byte load in this region: version, load.
    loads: HashMap<Var, (u32, Value, u8, MemFlagsData)>,
}

/// Accumulators promoted by one loop, reduced by [`finish`].
pub(crate) struct Promoted(Vec<(Var, Variable, Ty)>);

pub(crate) fn le() -> MemFlagsData {
    MemFlagsData::new().with_endianness(Endianness::Little)
}

/// `bfe(Var(w), ...)`, possibly under `cast(i32, ...)`: `(w, pos, len, signed)`.
fn bfe_of_var(f: &Func, e: &Expr) -> Option<(Var, u8, u8, bool)> {
    let inner = match e {
        Expr::Cast(Ty::I32, x) => x.as_ref(),
        other => other,
    };
    match inner {
        Expr::Bfe {
            value,
            pos,
            len,
            signed,
        } => match value.as_ref() {
            Expr::Var(w) => {
                let bits = match f.var_ty(*w) {
                    Ty::I32 => 32,
                    Ty::I64 => 64,
                    Ty::F32 => return None,
                };
                let ok = (1..=8).contains(len) && (*pos as u32 + *len as u32) <= bits;
                ok.then_some((*w, *pos, *len, *signed))
            }
            _ => None,
        },
        _ => None,
    }
}

impl Simd {
    pub(crate) fn new(n_vars: usize) -> Simd {
        Simd {
            version: vec![0; n_vars],
            prov: HashMap::new(),
            cache: HashMap::new(),
            promoted: HashMap::new(),
            last_load: None,
            loads: HashMap::new(),
        }
    }

    /// A new block starts: values and provenance of the previous one are forgotten.
    pub(crate) fn enter_block(&mut self) {
        self.cache.clear();
        self.prov.clear();
        self.loads.clear();
    }

    /// Records the assignment `v = e`.
    pub(crate) fn assigned(&mut self, v: Var, e: &Expr, f: &Func) {
        let i = v.0 as usize;
        if let Some(x) = self.version.get_mut(i) {
            *x += 1;
        }
        self.loads.remove(&v);
        if let (Expr::LoadBytes { .. }, Some((addr, bytes, fl))) = (e, self.last_load.take()) {
            self.loads.insert(v, (self.version[i], addr, bytes, fl));
        }
        match bfe_of_var(f, e) {
            Some((w, pos, len, signed)) if w != v && f.var_ty(v) == Ty::I32 => {
                let p = Prov {
                    word: w,
                    word_ver: self.version[w.0 as usize],
                    own_ver: self.version[i],
                    pos,
                    len,
                    signed,
                };
                self.prov.insert(v, p);
            }
            _ => {
                self.prov.remove(&v);
            }
        }
    }

    /// Current provenance of `c`, if still valid.
    fn valid(&self, c: Var) -> Option<Prov> {
        let p = *self.prov.get(&c)?;
        let ok = self.version[c.0 as usize] == p.own_ver
            && self.version[p.word.0 as usize] == p.word_ver;
        ok.then_some(p)
    }
}

/// The vector type of a promoted accumulator of type `t`.
fn acc_vec(t: Ty) -> Type {
    match t {
        Ty::I32 => types::I32X4,
        Ty::I64 => types::I64X2,
        Ty::F32 => types::F32X4,
    }
}

/// Whether a run over `buf` into an accumulator of type `t` has a vector path.
fn eligible(tr: &Tr, buf: usize, codes: &[Var], t: Ty) -> bool {
    if !tr.opts.simd || codes.is_empty() || !codes.len().is_multiple_of(8) {
        return false;
    }
    let elem = tr.f.bufs[buf].elem;
    match t {
        Ty::I32 | Ty::I64 => elem == Elem::I8,
        Ty::F32 => matches!(elem, Elem::F32 | Elem::F16 | Elem::BF16),
    }
}

pub(crate) fn vconst(tr: &mut Tr, ty: Type, bytes: Vec<u8>) -> Value {
    let c = tr.b.func.dfg.constants.insert(ConstantData::from(bytes));
    tr.b.ins().vconst(ty, c)
}

fn splat_i32(tr: &mut Tr, v: i32) -> Value {
    vconst(
        tr,
        types::I32X4,
        [v; 4].iter().flat_map(|x| x.to_le_bytes()).collect(),
    )
}

fn zero_vec(tr: &mut Tr, ty: Type) -> Value {
    vconst(tr, ty, vec![0; 16])
}

/// Whether the host has x86 SSSE3 (`pshufb`); cranelift-native compiles for the host.
pub(crate) fn has_ssse3() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("ssse3")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The bytes of word `w` in an `i8x16`, and where word byte `b` (0..=8) sits in it
/// (`0x80`: a zero byte for both `pshufb` and `swizzle`).
///
/// A word loaded by a 5..7-byte `LoadBytes` in this region is reloaded as two
/// overlapping 4-byte loads inside the same bytes (cheaper than composing the scalar
/// word and moving it over; the scalar load then usually dies).
fn word_bytes(tr: &mut Tr, w: Var) -> (Value, [u8; 9]) {
    let ver = tr.simd.version[w.0 as usize];
    if let Some(&(v, addr, bytes, fl)) = tr.simd.loads.get(&w) {
        if v == ver && (5..=7).contains(&bytes) {
            let lo = tr.b.ins().load(types::I32, fl, addr, 0);
            let hi = tr.b.ins().load(types::I32, fl, addr, bytes as i32 - 4);
            let v = tr.b.ins().scalar_to_vector(types::I32X4, lo);
            let v = tr.b.ins().insertlane(v, hi, 1);
            let v8 = tr.b.ins().bitcast(types::I8X16, le(), v);
            let mut map = [0x80u8; 9];
            for (b, m) in map.iter_mut().enumerate().take(bytes as usize) {
                *m = if b < 4 {
                    b as u8
                } else {
                    (b + 8 - bytes as usize) as u8
                };
            }
            return (v8, map);
        }
    }
    let word = tr.b.use_var(tr.vars[w.0 as usize]);
    let w64 = if tr.f.var_ty(w) == Ty::I32 {
        tr.b.ins().uextend(types::I64, word)
    } else {
        word
    };
    let v = tr.b.ins().scalar_to_vector(types::I64X2, w64);
    let v8 = tr.b.ins().bitcast(types::I8X16, le(), v);
    // Lane 8 of the vector is zero (scalar_to_vector zeroes the other lanes).
    (v8, [0, 1, 2, 3, 4, 5, 6, 7, 8])
}

/// Decodes eight codes of one word into an `i16x8`.
fn decode8(tr: &mut Tr, word: Var, lanes: &[Prov]) -> Value {
    let (v8, map) = word_bytes(tr, word);
    let mut idx = vec![0u8; 16];
    let mut mul = Vec::with_capacity(16);
    for (l, p) in lanes.iter().enumerate() {
        let byte = (p.pos / 8) as usize;
        idx[2 * l] = map[byte];
        idx[2 * l + 1] = map[byte + 1];
        let s = p.pos % 8;
        let m: u16 = 1 << (16 - s - p.len);
        mul.extend(m.to_le_bytes());
    }
    let idx = vconst(tr, types::I8X16, idx);
    // Every index is below 16, where `pshufb` and `swizzle` agree; `swizzle` on x86
    // adds a saturating add to force out-of-range indices to zero.
    let sw = if has_ssse3() {
        tr.b.ins().x86_pshufb(v8, idx)
    } else {
        tr.b.ins().swizzle(v8, idx)
    };
    let w16 = tr.b.ins().bitcast(types::I16X8, le(), sw);
    let mul = vconst(tr, types::I16X8, mul);
    let top = tr.b.ins().imul(w16, mul);
    let mut classes: Vec<(u8, bool)> = Vec::new();
    for p in lanes {
        if !classes.contains(&(p.len, p.signed)) {
            classes.push((p.len, p.signed));
        }
    }
    let mut out: Option<Value> = None;
    for (len, signed) in classes {
        let sh = (16 - len) as i64;
        let r = if signed {
            tr.b.ins().sshr_imm_s(top, sh)
        } else {
            tr.b.ins().ushr_imm_s(top, sh)
        };
        out = Some(match out {
            None => r,
            Some(prev) => {
                let mask: Vec<u8> = lanes
                    .iter()
                    .flat_map(|p| {
                        let m: u16 = if (p.len, p.signed) == (len, signed) {
                            0xffff
                        } else {
                            0
                        };
                        m.to_le_bytes()
                    })
                    .collect();
                let mask = vconst(tr, types::I16X8, mask);
                tr.b.ins().bitselect(mask, r, prev)
            }
        });
    }
    out.unwrap_or(top)
}

/// The codes as `i16x8` vectors (eight per vector), or `None` when they are not
/// provably small bit fields.
fn code_vectors(tr: &mut Tr, codes: &[Var]) -> Option<Vec<Value>> {
    let provs: Vec<Prov> = codes
        .iter()
        .map(|c| tr.simd.valid(*c))
        .collect::<Option<_>>()?;
    let key: Vec<(Var, u32)> = codes
        .iter()
        .map(|c| (*c, tr.simd.version[c.0 as usize]))
        .collect();
    if let Some(v) = tr.simd.cache.get(&key) {
        return Some(v.clone());
    }
    let mut out = Vec::with_capacity(codes.len() / 8);
    for (ci, chunk) in provs.chunks(8).enumerate() {
        let word = chunk[0].word;
        let v = if chunk.iter().all(|p| p.word == word) {
            decode8(tr, word, chunk)
        } else {
            let mut v = zero_vec(tr, types::I16X8);
            for l in 0..8 {
                let c = codes[ci * 8 + l];
                let s = tr.b.use_var(tr.vars[c.0 as usize]);
                let s = tr.b.ins().ireduce(types::I16, s);
                v = tr.b.ins().insertlane(v, s, l as u8);
            }
            v
        };
        out.push(v);
    }
    tr.simd.cache.insert(key, out.clone());
    Some(out)
}

/// Adds vectors pairwise (a balanced tree keeps dependency chains short).
fn tree_sum(tr: &mut Tr, mut parts: Vec<Value>, float: bool) -> Option<Value> {
    while parts.len() > 1 {
        let mut next = Vec::with_capacity(parts.len().div_ceil(2));
        for pair in parts.chunks(2) {
            next.push(match pair {
                [a, b] => {
                    if float {
                        tr.b.ins().fadd(*a, *b)
                    } else {
                        tr.b.ins().iadd(*a, *b)
                    }
                }
                [a] => *a,
                _ => continue,
            });
        }
        parts = next;
    }
    parts.pop()
}

/// Lane-wise bf16 bits (low 16 bits of each `i32` lane) to f32: `bits << 16`, NaNs
/// quieted.
fn bf16x4_to_f32x4(tr: &mut Tr, h: Value) -> Value {
    let bits = tr.b.ins().ishl_imm_s(h, 16);
    let c7fff = splat_i32(tr, 0x7fff);
    let mag = tr.b.ins().band(h, c7fff);
    let inf = splat_i32(tr, 0x7f80);
    let nan = tr.b.ins().icmp(IntCC::SignedGreaterThan, mag, inf);
    let quiet = splat_i32(tr, 0x0040_0000);
    let q = tr.b.ins().band(nan, quiet);
    let bits = tr.b.ins().bor(bits, q);
    tr.b.ins().bitcast(types::F32X4, le(), bits)
}

/// Lane-wise f16 bits (low 16 bits of each `i32` lane) to f32, exactly (the scalar
/// path's conversion, [`Tr::f16_bits_to_f32_bits`], lane by lane).
fn f16x4_to_f32x4(tr: &mut Tr, h: Value) -> Value {
    // `mag` is 0..=0x7fff: signed lane compares are exact (and one instruction on x86).
    let c7fff = splat_i32(tr, 0x7fff);
    let mag = tr.b.ins().band(h, c7fff);
    let t = tr.b.ins().ishl_imm_s(mag, 13);
    let tf = tr.b.ins().bitcast(types::F32X4, le(), t);
    let scale = vconst(
        tr,
        types::F32X4,
        [f32::from_bits((127 + 112) << 23); 4]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
    );
    let f = tr.b.ins().fmul(tf, scale);
    let finite = tr.b.ins().bitcast(types::I32X4, le(), f);
    let cexp = splat_i32(tr, 0x7f80_0000);
    let special = tr.b.ins().bor(t, cexp);
    let c7c00 = splat_i32(tr, 0x7c00);
    let is_nan = tr.b.ins().icmp(IntCC::SignedGreaterThan, mag, c7c00);
    let quiet = splat_i32(tr, 0x0040_0000);
    let q = tr.b.ins().band(is_nan, quiet);
    let special = tr.b.ins().bor(special, q);
    let c7bff = splat_i32(tr, 0x7bff);
    let is_special = tr.b.ins().icmp(IntCC::SignedGreaterThan, mag, c7bff);
    let r = tr.b.ins().bitselect(is_special, special, finite);
    let c8000 = splat_i32(tr, 0x8000);
    let sign = tr.b.ins().band(h, c8000);
    let sign = tr.b.ins().ishl_imm_s(sign, 16);
    let r = tr.b.ins().bor(r, sign);
    tr.b.ins().bitcast(types::F32X4, le(), r)
}

/// The vector partial sum `Σ_j load(buf, index + j) * codes[j]`: `i32x4` for integer
/// accumulators, `f32x4` for `F32`. `None` when the codes have no vector form.
fn partial(
    tr: &mut Tr,
    buf: usize,
    index: &Expr,
    codes: &[Var],
    t: Ty,
) -> Result<Option<Value>, CraneliftError> {
    let Some(cv) = code_vectors(tr, codes) else {
        return Ok(None);
    };
    let elem = tr.f.bufs[buf].elem;
    let size = elem.bytes() as i64;
    let base = tr.expr_i64(index)?;
    let off = if size == 1 {
        base
    } else {
        tr.b.ins().imul_imm_s(base, size)
    };
    tr.check_bounds(buf, off, size * codes.len() as i64);
    let addr = tr.addr(buf, off);
    let fl = mem_flags(tr.f.bufs[buf].output);
    let mut parts = Vec::new();
    for (q, c16) in cv.iter().enumerate() {
        let o = (q * 8) as i32 * size as i32;
        if t == Ty::F32 {
            let c_lo = tr.b.ins().swiden_low(*c16);
            let c_hi = tr.b.ins().swiden_high(*c16);
            for (h, ci) in [c_lo, c_hi].into_iter().enumerate() {
                let cf = tr.b.ins().fcvt_from_sint(types::F32X4, ci);
                let oh = o + (h as i32) * 4 * size as i32;
                let a = match elem {
                    Elem::F32 => tr.b.ins().load(types::F32X4, fl, addr, oh),
                    Elem::BF16 => {
                        let w = tr.b.ins().uload16x4(fl, addr, oh);
                        bf16x4_to_f32x4(tr, w)
                    }
                    _ => {
                        let w = tr.b.ins().uload16x4(fl, addr, oh);
                        f16x4_to_f32x4(tr, w)
                    }
                };
                parts.push(tr.b.ins().fmul(a, cf));
            }
        } else {
            let a16 = tr.b.ins().sload8x8(fl, addr, o);
            let a_lo = tr.b.ins().swiden_low(a16);
            let c_lo = tr.b.ins().swiden_low(*c16);
            let p_lo = tr.b.ins().imul(a_lo, c_lo);
            let a_hi = tr.b.ins().swiden_high(a16);
            let c_hi = tr.b.ins().swiden_high(*c16);
            let p_hi = tr.b.ins().imul(a_hi, c_hi);
            // (x64: one pmaddwd)
            parts.push(tr.b.ins().iadd_pairwise(p_lo, p_hi));
        }
    }
    Ok(tree_sum(tr, parts, t == Ty::F32))
}

/// Horizontal sum of a vector accumulator, as a scalar of type `t`.
fn hsum(tr: &mut Tr, v: Value, t: Ty) -> Value {
    match t {
        Ty::I32 => {
            let p = tr.b.ins().iadd_pairwise(v, v);
            let p = tr.b.ins().iadd_pairwise(p, p);
            tr.b.ins().extractlane(p, 0)
        }
        Ty::I64 => {
            let a = tr.b.ins().extractlane(v, 0);
            let b = tr.b.ins().extractlane(v, 1);
            tr.b.ins().iadd(a, b)
        }
        Ty::F32 => {
            let l: Vec<Value> = (0..4).map(|i| tr.b.ins().extractlane(v, i)).collect();
            let a = tr.b.ins().fadd(l[0], l[1]);
            let b = tr.b.ins().fadd(l[2], l[3]);
            tr.b.ins().fadd(a, b)
        }
    }
}

/// The vector path of a `DotRun` whose result is a scalar; `None`: use the scalar path.
pub(crate) fn dot_run(
    tr: &mut Tr,
    buf: usize,
    index: &Expr,
    codes: &[Var],
    acc: &Expr,
) -> Result<Option<Value>, CraneliftError> {
    let t = tr.ty(acc);
    if !eligible(tr, buf, codes, t) {
        return Ok(None);
    }
    let Some(p) = partial(tr, buf, index, codes, t)? else {
        return Ok(None);
    };
    let a = tr.expr(acc)?;
    Ok(Some(match t {
        Ty::I32 => {
            let s = hsum(tr, p, Ty::I32);
            tr.b.ins().iadd(a, s)
        }
        Ty::I64 => {
            let s = hsum(tr, p, Ty::I32);
            let s = tr.b.ins().sextend(types::I64, s);
            tr.b.ins().iadd(a, s)
        }
        Ty::F32 => {
            let s = hsum(tr, p, Ty::F32);
            tr.b.ins().fadd(a, s)
        }
    }))
}

/// Translates `v = e` when `v` is a promoted accumulator and `e` its update; returns
/// whether it did.
pub(crate) fn assign(tr: &mut Tr, v: Var, e: &Expr) -> Result<bool, CraneliftError> {
    let Some(&(vec_var, t)) = tr.simd.promoted.get(&v) else {
        return Ok(false);
    };
    let Expr::DotRun {
        buf,
        index,
        codes,
        acc,
    } = e
    else {
        return Ok(false);
    };
    if !matches!(acc.as_ref(), Expr::Var(a) if *a == v) {
        return Ok(false);
    }
    let p = match partial(tr, *buf, index, codes, t)? {
        Some(p) => p,
        None => {
            // Scalar partial sum, added to lane 0.
            let mut s = match t {
                Ty::F32 => tr.b.ins().f32const(0.0),
                Ty::I32 => tr.b.ins().iconst(types::I32, 0),
                Ty::I64 => tr.b.ins().iconst(types::I64, 0),
            };
            let base = tr.expr_i64(index)?;
            tr.dot_terms(*buf, base, codes, t, &mut s)?;
            let vt = acc_vec(t);
            let z = zero_vec(tr, vt);
            let lane = tr.b.ins().insertlane(z, s, 0);
            let cur = tr.b.use_var(vec_var);
            let next = if t == Ty::F32 {
                tr.b.ins().fadd(cur, lane)
            } else {
                tr.b.ins().iadd(cur, lane)
            };
            tr.b.def_var(vec_var, next);
            return Ok(true);
        }
    };
    let cur = tr.b.use_var(vec_var);
    let next = match t {
        Ty::I32 => tr.b.ins().iadd(cur, p),
        Ty::I64 => {
            let lo = tr.b.ins().swiden_low(p);
            let hi = tr.b.ins().swiden_high(p);
            let w = tr.b.ins().iadd(lo, hi);
            tr.b.ins().iadd(cur, w)
        }
        Ty::F32 => tr.b.ins().fadd(cur, p),
    };
    tr.b.def_var(vec_var, next);
    Ok(true)
}

/// Before a loop over `body`: promotes the accumulators that `body` only updates as
/// `acc = dot(..., acc)` (top level, vector-eligible) to vector variables set to zero.
pub(crate) fn promote(
    tr: &mut Tr,
    body: &[Stmt],
    loop_var: Var,
) -> Result<Promoted, CraneliftError> {
    let mut out = Vec::new();
    if !tr.opts.simd {
        return Ok(Promoted(out));
    }
    let mut cands: Vec<(Var, usize)> = Vec::new();
    for s in body {
        if let Stmt::Set(
            a,
            Expr::DotRun {
                buf, codes, acc, ..
            },
        ) = s
        {
            let t = tr.f.var_ty(*a);
            let self_acc = matches!(acc.as_ref(), Expr::Var(x) if x == a);
            if self_acc
                && *a != loop_var
                && eligible(tr, *buf, codes, t)
                && !tr.simd.promoted.contains_key(a)
            {
                match cands.iter_mut().find(|(v, _)| v == a) {
                    Some((_, n)) => *n += 1,
                    None => cands.push((*a, 1)),
                }
            }
        }
    }
    for (a, n) in cands {
        if body.iter().map(|s| s.mentions(a)).sum::<usize>() != 2 * n {
            continue;
        }
        let t = tr.f.var_ty(a);
        let vt = acc_vec(t);
        let vv = tr.b.declare_var(vt);
        let z = zero_vec(tr, vt);
        tr.b.def_var(vv, z);
        tr.simd.promoted.insert(a, (vv, t));
        out.push((a, vv, t));
    }
    Ok(Promoted(out))
}

/// After the loop: `acc += reduce(vector)` for every promoted accumulator.
pub(crate) fn finish(tr: &mut Tr, p: Promoted) -> Result<(), CraneliftError> {
    for (a, vv, t) in p.0 {
        tr.simd.promoted.remove(&a);
        let v = tr.b.use_var(vv);
        let s = hsum(tr, v, t);
        let cur = tr.b.use_var(tr.vars[a.0 as usize]);
        let next = if t == Ty::F32 {
            tr.b.ins().fadd(cur, s)
        } else {
            tr.b.ins().iadd(cur, s)
        };
        tr.b.def_var(tr.vars[a.0 as usize], next);
    }
    Ok(())
}
