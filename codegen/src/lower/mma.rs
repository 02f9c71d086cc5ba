//! The tensor-core GEMV path, M ≤ 8: f16 activations on PTX `mma.sync` m16n8k16 (below),
//! and i8 activations on m16n8k32 s8 -> s32 with the same tiles, pieces and loads, each
//! piece decoded by the spread decode into byte-lane quads instead of f16 pairs
//! (`Decode::I8`).
//!
//! The weights are the `A` operand (16 weight rows per tile), the activations the `B`
//! operand (its 8 columns are the 8 activation rows: M = 1..8 cost one `mma` alike),
//! and the f32 accumulators `C` hold 16 rows x 8 activation rows. Per step the warp
//! covers 128 weights of each of its 16 rows ("a chunk", inside one scale group):
//!
//! ```text
//! lane (g = lane / 4, t = lane % 4) of a warp of tile w owns weight rows n0 = 16 w + g,
//! n0 + 8 and, in every chunk of its part of K, its "piece": weights 32 t .. 32 t + 32
//!   words  = the piece's 32-bit words (aligned loads; a funnel shift by the piece's
//!            bit offset in its first word when pieces do not start on words)
//!   window = 32 bits of the piece holding two codes 14..18 bits apart
//!   A pair = (window & mask) ^ (0x6400 6400 | sign bits)   // f16 1024 + u * 2^p
//!            hfma2(pair, 2^-p, -(1024 * 2^-p + bias))      // exactly the two codes
//!   B pair = the two activations of the same weights (prmt of 16-byte loads of
//!            activation row min(g, M - 1))
//!   8 x mma(A pairs of rows n0 and n0 + 8, B pairs) into a zeroed C: the chunk's sums
//!   acc += C * group scale (per weight row, per activation row)
//! lane stores acc for rows n0, n0 + 8 and activation rows 2t, 2t + 1 (when < N, < M)
//! ```
//!
//! With split K (`split` warps per tile; by default 4 for f16, 2 for i8) each warp covers a part of the
//! chunks and writes `acc` to shared memory instead; after a top-level block barrier the
//! block's threads add the parts of each output and store it ([`MmaBody::after_sync`]).
//!
//! Each lane supplies different weights to the same logical `k` slots of `A` and `B`
//! (pairs of weights of its own piece), which the dot product does not see: slot order
//! is free as long as `A` and `B` agree. The code decode is exact (the magic constant
//! `1024 = 2^10` puts a field of at most 10 bits in the f16 mantissa; the fused
//! multiply-add removes it without rounding); products and sums are f32 in the tensor
//! core, and the group scales multiply f32 partial sums as in the other schedules.
//!
//! Applies when [`MmaPlan::new`] finds pairs and windows for the layout (every
//! built-in layout has them) and at run time K is a multiple of 128 (the caller's
//! branch); other shapes take the SIMT GEMV. HIP and the CPU backends have no `mma`:
//! their lowerings turn this path off.

use half::f16;
use qkc_dsl::layout::{FieldDesc, LayoutDesc};

use super::scales::{group_scale, outer_scale};
use super::spread::{window, SpreadPlan};
use super::unpack::unit_stride_bits;
use super::{Plan, WeightLoads};
use crate::loop_ir::build::*;
use crate::loop_ir::{
    AsyncOp, BinOp, CmpOp, Elem, Expr, Func, LoopKind, MmaShape, Special, Stmt, Ty, Var,
};

/// Weights of a row per warp step (4 lanes of a quad x [`PIECE`]).
pub const CHUNK: usize = 128;
/// Weights of a row per lane and step.
const PIECE: usize = 32;
/// Weight rows per warp (the `mma` M dimension).
pub const ROWS: usize = 16;

/// Two codes decoded into one packed f16 pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pair {
    /// Piece weights in the low and the high half.
    ka: usize,
    kb: usize,
    window: usize,
    mask: u32,
    xor: u32,
    /// `hfma2` operands (two f16 each).
    mul: u32,
    add: u32,
}

/// How one lane's piece is decoded (compile-time constants of the layout).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MmaPlan {
    /// Bits of one lane's piece and of a whole chunk of a row.
    pub piece_bits: usize,
    pub chunk_bits: usize,
    /// 32-bit words loaded per piece.
    pub words: usize,
    /// Whether some lane's piece starts inside a word (then all funnel-shift).
    shifted: bool,
    decode: Decode,
}

/// How a piece's codes become `A` operands.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Decode {
    /// f16 activations (m16n8k16): sixteen pairs of codes in f16 halves, in `mma` slot
    /// order, read from the 32-bit `windows` (bit offsets in the aligned piece).
    F16 { windows: Vec<i64>, pairs: Vec<Pair> },
    /// i8 activations (m16n8k32): the spread decode's byte-lane quads, two quads of
    /// one factor per `mma` (a zeroed `s32` accumulator per factor and chunk, combined
    /// exactly as in the SIMT path before the group scale).
    I8(SpreadPlan),
}

fn f16_bits(v: f64) -> u32 {
    u32::from(f16::from_f64(v).to_bits())
}

impl MmaPlan {
    /// The decode plan of an integer-activation kernel ([`Self::new_i8`]), or for f16
    /// activations; `None` when the kernel is not f16 x packed codes with f32
    /// accumulation and groups of a multiple of [`CHUNK`] weights, or the layout's
    /// codes cannot be paired (a field wider than 10 bits, pieces not on whole units).
    pub fn new(p: &Plan) -> Option<MmaPlan> {
        if p.int {
            return MmaPlan::new_i8(p);
        }
        if p.bufs[p.act].elem != Elem::F16 || p.acc != Ty::F32 {
            return None;
        }
        if p.group.is_some_and(|g| !(g as usize).is_multiple_of(CHUNK)) {
            return None;
        }
        let l = &p.layout;
        let (piece_bits, chunk_bits, words, shifted) = geometry(l)?;
        let per = l.per_unit();
        let stride = unit_stride_bits(l);
        let field = |j: usize| -> (i64, FieldDesc) {
            let fd = *l.field_of(j);
            (((j / per) * stride + fd.shift as usize) as i64, fd)
        };
        // (A window past the last word reads zeros above the piece.)
        let max_s = 32 * words as i64 - 1;
        // Window starts that put weight `a` in the low half and `b` in the high half,
        // each field inside its half's 10 mantissa bits.
        let range = |a: usize, b: usize| -> Option<(i64, i64)> {
            let ((qa, fa), (qb, fb)) = (field(a), field(b));
            let lo = (qa + fa.bits as i64 - 10)
                .max(qb + fb.bits as i64 - 26)
                .max(-31);
            let hi = qa.min(qb - 16).min(max_s);
            (lo <= hi).then_some((lo, hi))
        };
        // Pair each field of unit i with the same field of unit i + d, for the units
        // i with (i / d) even: the distance d whose bit distance is nearest 16 among
        // those that tile the piece and give every pair a window.
        let units = PIECE / per;
        let mut ds: Vec<usize> = (1..units).filter(|d| units.is_multiple_of(2 * d)).collect();
        ds.sort_by_key(|&d| ((d * stride) as i64 - 16).abs());
        let found = ds.into_iter().find_map(|d| {
            (0..units)
                .filter(|i| (i / d).is_multiple_of(2))
                .flat_map(|i| (0..per).map(move |fi| (i * per + fi, (i + d) * per + fi)))
                .map(|(a, b)| Some((a, b, range(a, b)?)))
                .collect::<Option<Vec<_>>>()
        })?;
        // Fewest windows: stab the intervals in order of their right ends.
        let mut order: Vec<usize> = (0..found.len()).collect();
        order.sort_by_key(|&i| (found[i].2 .1, found[i].0));
        let mut windows: Vec<i64> = Vec::new();
        let mut win_of = vec![0; found.len()];
        for i in order {
            let (lo, hi) = found[i].2;
            match windows.last() {
                Some(&s) if s >= lo => {}
                _ => windows.push(hi),
            }
            win_of[i] = windows.len() - 1;
        }
        let pairs = found
            .iter()
            .zip(win_of)
            .map(|(&(a, b, _), w)| {
                let s = windows[w];
                let ((qa, fa), (qb, fb)) = (field(a), field(b));
                let (pa, pb) = ((qa - s) as u32, (qb - s - 16) as u32);
                let ones = |f: &FieldDesc| (1u32 << f.bits) - 1;
                let sign = |f: &FieldDesc, at: u32| {
                    if f.signed {
                        1u32 << (at + f.bits as u32 - 1)
                    } else {
                        0
                    }
                };
                let bias = |f: &FieldDesc| {
                    if f.signed {
                        f64::from(1u32 << (f.bits - 1))
                    } else {
                        0.0
                    }
                };
                let scale = |p: u32| 2f64.powi(-(p as i32));
                Pair {
                    ka: a,
                    kb: b,
                    window: w,
                    mask: ones(&fa) << pa | ones(&fb) << (16 + pb),
                    xor: 0x6400_6400 | sign(&fa, pa) | sign(&fb, 16 + pb),
                    mul: f16_bits(scale(pa)) | f16_bits(scale(pb)) << 16,
                    add: f16_bits(-(1024.0 * scale(pa) + bias(&fa)))
                        | f16_bits(-(1024.0 * scale(pb) + bias(&fb))) << 16,
                }
            })
            .collect();
        Some(MmaPlan {
            piece_bits,
            chunk_bits,
            words,
            shifted,
            decode: Decode::F16 { windows, pairs },
        })
    }

    /// This plan with the i8 decode's spread in its add form or not
    /// ([`SpreadPlan::with_add_form`]; no effect on the f16 decode).
    pub fn with_spread_add(self, on: bool) -> MmaPlan {
        let decode = match self.decode {
            Decode::I8(sp) => Decode::I8(sp.with_add_form(on)),
            d => d,
        };
        MmaPlan { decode, ..self }
    }

    /// The plan for i8 activations: packed codes with a spread decode
    /// ([`SpreadPlan`]) whose factors each have an even number of quads per piece,
    /// `i32` group sums, groups of a multiple of [`CHUNK`] weights with scales, and
    /// an f32 output (the chunks' exact sums meet in f32 after their group scale, as
    /// in the SIMT GEMV). `None` otherwise.
    fn new_i8(p: &Plan) -> Option<MmaPlan> {
        if p.bufs[p.act].elem != Elem::I8 || p.acc != Ty::I32 || p.out_elem != Elem::F32 {
            return None;
        }
        if !p.group.is_some_and(|g| (g as usize).is_multiple_of(CHUNK)) {
            return None;
        }
        let l = &p.layout;
        let sp = SpreadPlan::for_layout(l)?;
        if !PIECE.is_multiple_of(sp.group_weights()) {
            return None;
        }
        let groups = PIECE / sp.group_weights();
        let even = (0..sp.factors().len()).all(|fi| {
            let quads = (0..sp.n_fields())
                .filter(|&q| sp.factor_of(q) == fi)
                .count();
            (quads * groups).is_multiple_of(2)
        });
        if !even {
            return None;
        }
        let (piece_bits, chunk_bits, words, shifted) = geometry(l)?;
        Some(MmaPlan {
            piece_bits,
            chunk_bits,
            words,
            shifted,
            decode: Decode::I8(sp),
        })
    }

    /// Whether the plan is the i8 one (`mma` m16n8k32 on s8 codes and activations).
    pub fn is_int(&self) -> bool {
        matches!(self.decode, Decode::I8(_))
    }

    /// Bytes of one activation.
    fn act_bytes(&self) -> i64 {
        match self.decode {
            Decode::F16 { .. } => 2,
            Decode::I8(_) => 1,
        }
    }

    /// Bytes of one chunk of a row.
    pub fn chunk_bytes(&self) -> i64 {
        (self.chunk_bits / 8) as i64
    }

    /// A one-line description for the function's notes.
    pub fn describe(&self, chunks: usize, wpb: i64, split: i64, loads: WeightLoads) -> String {
        let (op, decode) = match &self.decode {
            Decode::F16 { windows, .. } => (
                "mma.sync m16n8k16 f16 -> f32",
                format!(
                    "in {} windows, codes to f16 pairs by exponent magic and hfma2",
                    windows.len()
                ),
            ),
            Decode::I8(sp) => (
                "mma.sync m16n8k32 s8 -> s32",
                format!(
                    "by the spread decode into byte-lane quads ({} s32 accumulator(s) per chunk, combined exactly, then the group scale in f32)",
                    sp.factors().len()
                ),
            ),
        };
        format!(
            "schedule gpu mma (M <= 8, K % {CHUNK} == 0): {op}, {ROWS} weight rows per tile, {wpb} warps per block, {split} warp(s) per tile splitting K (partials added in shared memory after a block barrier), weights as A and activation rows as B columns; each lane decodes {PIECE} weights ({} bits, {} words{}) of 2 rows per chunk of {CHUNK} {decode}, {chunks} chunks in flight{}",
            self.piece_bits,
            self.words,
            if self.shifted { ", funnel-aligned" } else { "" },
            match loads {
                WeightLoads::Direct => "",
                WeightLoads::Shared => ", weights staged through shared memory (16-byte loads)",
                WeightLoads::Async =>
                    ", weights copied to shared memory by cp.async (16-byte copies, double-buffered)",
            }
        )
    }
}

/// A lane's piece of [`PIECE`] weights in layout `l`: its bits, the chunk's bits, the
/// 32-bit words that cover any lane's piece, and whether some piece starts inside a
/// word. `None` when pieces are not whole units or a chunk not whole words.
fn geometry(l: &LayoutDesc) -> Option<(usize, usize, usize, bool)> {
    let per = l.per_unit();
    if !PIECE.is_multiple_of(per) {
        return None;
    }
    let stride = unit_stride_bits(l);
    let piece_bits = PIECE / per * stride;
    let chunk_bits = 4 * piece_bits;
    if !chunk_bits.is_multiple_of(32) {
        return None;
    }
    let words = (0..4)
        .map(|t| (t * piece_bits % 32 + piece_bits).div_ceil(32))
        .max()
        .unwrap_or(1);
    if (0..4).any(|t| t * piece_bits / 32 + words > chunk_bits / 32) {
        return None;
    }
    let shifted = (0..4).any(|t| !(t * piece_bits).is_multiple_of(32));
    Some((piece_bits, chunk_bits, words, shifted))
}

fn i32v(f: &mut Func, name: &str) -> Var {
    f.var(name, Ty::I32)
}

/// Letting `name` be `e` (a fresh variable of type `t`).
fn let_var(f: &mut Func, out: &mut Vec<Stmt>, name: &str, t: Ty, e: Expr) -> Var {
    let v = f.var(name, t);
    out.push(Stmt::Let(v, e));
    v
}

/// Per-lane values shared by every chunk.
struct Lane {
    /// Byte offsets of the first word of the lane's piece in rows n0 and n0 + 8.
    wbase: [Var; 2],
    /// Bit offset of the piece in its first word (`I32`), when pieces are shifted.
    shift: Option<Var>,
    /// Byte offset of the lane's activations (`32 t` of row `min(g, M - 1)`).
    xbase: Var,
    /// Weight rows n0 and n0 + 8, clamped to N - 1 (for loads).
    rows: [Var; 2],
    /// Activation rows of the lane's accumulators (`2t`, `2t + 1`, clamped to M - 1).
    ms: [Var; 2],
    /// Staging (full iterations only): per vector, the byte offset of the lane's
    /// 16-byte load in its row span and of its shared-memory slot; the lane's first
    /// word of row n0 in the warp's shared region.
    stage: Option<Stage>,
}

/// The warp's 16 rows x `span` bytes per iteration go through shared memory: lane `l`
/// loads vectors `l, l + 32, ...` (row-major over the rows' spans, so a warp
/// instruction reads 512 contiguous-by-row bytes), stores them to the warp's region
/// (rows `pitch` bytes apart), and then reads its pieces' words from there.
struct Stage {
    pitch: i64,
    /// Byte offset of the tile's first row.
    tile: Var,
    /// Per vector (`I32`): global byte offset from `tile` (row start + vector, chunk 0)
    /// and shared offset.
    vecs: Vec<(Var, Var)>,
    /// Shared byte offset of the lane's piece in row n0 (chunk 0).
    read: Var,
}

/// The statements of one step over `count` consecutive chunks starting at chunk `c`.
#[allow(clippy::too_many_arguments)]
fn step(
    f: &mut Func,
    p: &Plan,
    mp: &MmaPlan,
    lane: &Lane,
    c: Var,
    count: usize,
    staged: bool,
    buf_off: Option<Var>,
    groups: Var,
    acc: &[Var; 4],
) -> Vec<Stmt> {
    let mut out = Vec::new();
    let cb = mp.chunk_bytes();
    // All loads first: the words of both rows and the activations of every chunk.
    let mut words = Vec::new();
    let mut xs = Vec::new();
    let staged = lane.stage.as_ref().filter(|_| staged);
    let mut reads: Vec<Vec<Stmt>> = vec![Vec::new(); count];
    let mut vregs = Vec::new();
    // Staged: 16-byte loads of the warp's row spans (read back from shared memory
    // below; with asynchronous copies the caller started them an iteration ahead);
    // direct: each lane loads its pieces' words.
    if let Some(st) = staged.filter(|_| buf_off.is_none()) {
        for (j, &(g, _)) in st.vecs.iter().enumerate() {
            let dst = [0, 1, 2, 3].map(|i| i32v(f, &format!("mv{j}_{i}")));
            out.push(Stmt::LoadVec4 {
                dst,
                buf: p.weight,
                offset: add(
                    add(var(st.tile), cast(Ty::I64, var(g))),
                    mul(var(c), i64c(cb)),
                ),
            });
            vregs.push(dst);
        }
    }
    for u in (0..count).filter(|_| staged.is_none()) {
        let mut rw = Vec::new();
        for (r, &base) in lane.wbase.iter().enumerate() {
            let mut ws = Vec::new();
            for i in 0..mp.words {
                let off = add(
                    add(var(base), mul(var(c), i64c(cb))),
                    i64c(u as i64 * cb + 4 * i as i64),
                );
                ws.push(let_var(
                    f,
                    &mut out,
                    &format!("mw{u}_{r}_{i}"),
                    Ty::I32,
                    load_bytes(p.weight, off, 4),
                ));
            }
            rw.push(ws);
        }
        words.push(rw);
    }
    // Activation bytes, and 16-byte vectors of a lane's piece.
    let eb = mp.act_bytes();
    for u in 0..count {
        let mut x = Vec::new();
        for q in 0..eb as usize * PIECE / 16 {
            let dst = [0, 1, 2, 3].map(|i| i32v(f, &format!("mx{u}_{}", 4 * q + i)));
            out.push(Stmt::LoadVec4 {
                dst,
                buf: p.act,
                offset: add(
                    add(var(lane.xbase), mul(var(c), i64c(eb * CHUNK as i64))),
                    i64c(eb * (u * CHUNK) as i64 + 16 * q as i64),
                ),
            });
            x.extend(dst);
        }
        xs.push(x);
    }
    if let Some(st) = staged {
        if buf_off.is_some() {
            // This iteration's copies (the older of the two groups in flight) have
            // landed, for every lane.
            out.push(Stmt::Async(AsyncOp::Wait(1)));
        } else {
            // Every lane has read the previous iteration's words before they are
            // replaced.
            out.push(Stmt::WarpSync);
            for (j, &(_, sh)) in st.vecs.iter().enumerate() {
                out.push(Stmt::StoreShared4 {
                    offset: var(sh),
                    src: vregs[j],
                });
            }
        }
        out.push(Stmt::WarpSync);
        let read = match buf_off {
            Some(b) => add(var(st.read), cast(Ty::I64, var(b))),
            None => var(st.read),
        };
        // Each chunk's words are read just before its decode (short-lived registers).
        for (u, pre) in reads.iter_mut().enumerate() {
            let mut rw = Vec::new();
            for r in 0..2 {
                let ws = (0..mp.words)
                    .map(|i| {
                        let off = add(
                            read.clone(),
                            i64c(8 * r as i64 * st.pitch + u as i64 * cb + 4 * i as i64),
                        );
                        let e = Expr::LoadShared(Box::new(cast(Ty::I32, off)));
                        let_var(f, pre, &format!("mw{u}_{r}_{i}"), Ty::I32, e)
                    })
                    .collect::<Vec<_>>();
                rw.push(ws);
            }
            words.push(rw);
        }
    }
    for (u, pre) in reads.into_iter().enumerate() {
        out.extend(pre);
        // Each row's piece words, shifted to start at the piece's first bit.
        let aligned: Vec<Vec<Var>> = words[u]
            .iter()
            .enumerate()
            .map(|(r, ws)| match lane.shift {
                Some(s) => (0..mp.words)
                    .map(|i| {
                        let hi = ws[(i + 1).min(mp.words - 1)];
                        let e = bin(
                            BinOp::Or,
                            bin(BinOp::Shr, var(ws[i]), var(s)),
                            bin(
                                BinOp::Shl,
                                bin(BinOp::Shl, var(hi), sub(i32c(31), var(s))),
                                i32c(1),
                            ),
                        );
                        let_var(f, &mut out, &format!("ma{u}_{r}_{i}"), Ty::I32, e)
                    })
                    .collect(),
                None => ws.clone(),
            })
            .collect();
        // The chunk's sums of the lane's four accumulator elements (`F32`).
        let sums: Vec<Expr> = match &mp.decode {
            Decode::F16 { windows, pairs } => {
                let ct = f16_chunk(f, &mut out, windows, pairs, &aligned, &xs[u], u);
                ct.iter().map(|&v| var(v)).collect()
            }
            Decode::I8(sp) => i8_chunk(f, &mut out, sp, &aligned, &xs[u], u),
        };
        // Group scales: the chunk lies in one group.
        let chunk = add(var(c), i64c(u as i64));
        let gi = match p.group.map(|g| g as i64 / CHUNK as i64) {
            Some(per) if per > 1 => div(chunk, i64c(per)),
            _ => chunk,
        };
        let gv = let_var(f, &mut out, &format!("mg{u}"), Ty::I64, gi);
        for (i, &a) in acc.iter().enumerate() {
            let (row, m) = (lane.rows[i / 2], lane.ms[i % 2]);
            let part = match group_scale(p, &var(m), &var(row), &var(gv), &var(groups)) {
                Some(s) => mul(sums[i].clone(), s),
                None => sums[i].clone(),
            };
            out.push(Stmt::Set(a, add(var(a), part)));
        }
    }
    out
}

/// The f16 decode of one chunk: both rows' pairs as `A`, the same weights'
/// activations as `B` (two f16 per register), `mma`s into zeroed f32 accumulators.
fn f16_chunk(
    f: &mut Func,
    out: &mut Vec<Stmt>,
    windows: &[i64],
    pairs: &[Pair],
    aligned: &[Vec<Var>],
    xs: &[Var],
    u: usize,
) -> [Var; 4] {
    let mut apairs = Vec::new();
    for (r, words) in aligned.iter().enumerate() {
        let wins: Vec<Var> = windows
            .iter()
            .enumerate()
            .map(|(i, &s)| {
                let e = window(words, s as isize);
                let_var(f, out, &format!("mwin{u}_{r}_{i}"), Ty::I32, e)
            })
            .collect();
        let regs: Vec<Var> = pairs
            .iter()
            .enumerate()
            .map(|(i, pr)| {
                let magic = bin(
                    BinOp::Xor,
                    bin(
                        BinOp::And,
                        var(wins[pr.window]),
                        i32c(pr.mask as i32 as i64),
                    ),
                    i32c(pr.xor as i32 as i64),
                );
                let e = Expr::HFma2 {
                    a: Box::new(magic),
                    b: Box::new(i32c(pr.mul as i32 as i64)),
                    c: Box::new(i32c(pr.add as i32 as i64)),
                };
                let_var(f, out, &format!("mh{u}_{r}_{i}"), Ty::I32, e)
            })
            .collect();
        apairs.push(regs);
    }
    let bregs: Vec<Var> = pairs
        .iter()
        .enumerate()
        .map(|(i, pr)| {
            let (wa, wb) = (xs[pr.ka / 2], xs[pr.kb / 2]);
            let e = if wa == wb && pr.ka % 2 == 0 && pr.kb % 2 == 1 {
                var(wa)
            } else {
                let lo = if pr.ka % 2 == 0 { 0x10 } else { 0x32 };
                let hi = if pr.kb % 2 == 0 { 0x54 } else { 0x76 };
                Expr::BytePerm {
                    a: Box::new(var(wa)),
                    b: Box::new(var(wb)),
                    sel: lo | hi << 8,
                }
            };
            let_var(f, out, &format!("mb{u}_{i}"), Ty::I32, e)
        })
        .collect();
    let ct = [0, 1, 2, 3].map(|i| f.var(format!("mc{u}_{i}"), Ty::F32));
    for &v in &ct {
        out.push(Stmt::Let(v, f32c(0.0)));
    }
    for m in 0..pairs.len() / 2 {
        out.push(Stmt::Mma {
            shape: MmaShape::F16F32,
            d: ct,
            a: [
                apairs[0][2 * m],
                apairs[1][2 * m],
                apairs[0][2 * m + 1],
                apairs[1][2 * m + 1],
            ],
            b: [bregs[2 * m], bregs[2 * m + 1]],
            c: ct,
        });
    }
    ct
}

/// The i8 decode of one chunk: both rows' spread quads as `A` (four signed byte
/// lanes, each the code times its field's factor), the quads' activations as `B`
/// (one `prmt` per quad for two-field units), two quads of one factor per `mma` into
/// that factor's zeroed `s32` accumulators; the exact combination of the factors'
/// accumulators, as `F32`, for each of the lane's four output elements. The piece's
/// slot order differs from `K`'s, which the dot product does not see.
fn i8_chunk(
    f: &mut Func,
    out: &mut Vec<Stmt>,
    sp: &SpreadPlan,
    aligned: &[Vec<Var>],
    xs: &[Var],
    u: usize,
) -> Vec<Expr> {
    let nf = sp.n_fields();
    let groups = PIECE / sp.group_weights();
    // quads[r][group * nf + field], in weight order.
    let quads: Vec<Vec<Var>> = aligned
        .iter()
        .enumerate()
        .map(|(r, words)| {
            (0..groups)
                .flat_map(|gi| sp.quads(f, out, words, gi, &format!("m{u}_{r}_{gi}")))
                .collect()
        })
        .collect();
    let acts: Vec<Var> = (0..groups * nf)
        .map(|j| {
            let (gi, q) = (j / nf, j % nf);
            let e = sp.act_word(q, &xs[gi * nf..gi * nf + nf]);
            let_var(f, out, &format!("mb{u}_{j}"), Ty::I32, e)
        })
        .collect();
    let cts: Vec<[Var; 4]> = (0..sp.factors().len())
        .map(|fi| {
            let ct = [0, 1, 2, 3].map(|i| f.var(format!("mc{u}_{fi}_{i}"), Ty::I32));
            for &v in &ct {
                out.push(Stmt::Let(v, i32c(0)));
            }
            let of: Vec<usize> = (0..groups * nf)
                .filter(|j| sp.factor_of(j % nf) == fi)
                .collect();
            for two in of.chunks(2) {
                let (j0, j1) = (two[0], two[1]);
                out.push(Stmt::Mma {
                    shape: MmaShape::S8S32,
                    d: ct,
                    a: [quads[0][j0], quads[1][j0], quads[0][j1], quads[1][j1]],
                    b: [acts[j0], acts[j1]],
                    c: ct,
                });
            }
            ct
        })
        .collect();
    (0..4)
        .map(|i| {
            let accs: Vec<Var> = cts.iter().map(|ct| ct[i]).collect();
            cast(Ty::F32, sp.combine(&accs))
        })
        .collect()
}

/// The mma path's statements: what each warp runs, and (when the warps of a tile
/// split K) what runs after a block barrier to add their partial sums.
pub struct MmaBody {
    pub warps: Vec<Stmt>,
    /// Empty when every warp owns its tile (`split` 1).
    pub after_sync: Vec<Stmt>,
}

/// The body of the mma path (all lanes of a warp take the same branches), with
/// `in_flight` chunks per iteration and `loads` as [`loads_and_chunks`] resolved them. `split`
/// warps share each tile of [`ROWS`] rows (a divisor of `wpb`, see [`split_of`]): warp `q` of a tile
/// covers chunks `q * C / split .. (q + 1) * C / split` of the `C` chunks and leaves
/// its accumulators in shared memory; after the barrier the block's threads add the
/// `split` partials of each output and store it.
pub fn body(
    f: &mut Func,
    p: &Plan,
    mp: &MmaPlan,
    wpb: i64,
    split: i64,
    in_flight: usize,
    loads: WeightLoads,
) -> MmaBody {
    let (dm, dn, dk) = (p.m, p.n, p.k);
    let tpb = wpb / split;
    let mut out = Vec::new();
    let o = &mut out;
    let lane32 = let_var(f, o, "mlane", Ty::I32, Expr::Special(Special::LaneId));
    let g = let_var(f, o, "mgq", Ty::I32, bin(BinOp::Shr, var(lane32), i32c(2)));
    let t = let_var(f, o, "mtq", Ty::I32, bin(BinOp::And, var(lane32), i32c(3)));
    let warp = let_var(
        f,
        o,
        "mwi",
        Ty::I64,
        cast(
            Ty::I64,
            bin(BinOp::Shr, Expr::Special(Special::ThreadIdx), i32c(5)),
        ),
    );
    let tile = add(
        mul(cast(Ty::I64, Expr::Special(Special::BlockIdx)), i64c(tpb)),
        div(var(warp), i64c(split)),
    );
    let n0v = let_var(f, o, "mn0", Ty::I64, mul(tile, i64c(ROWS as i64)));
    let mut inner = Vec::new();
    let o = &mut inner;
    let rows = [0, 8].map(|d| {
        let n = add(add(var(n0v), cast(Ty::I64, var(g))), i64c(d));
        let_var(f, o, &format!("mrow{d}"), Ty::I64, n)
    });
    let chunks = let_var(f, o, "mchunks", Ty::I64, div(dim(dk), i64c(CHUNK as i64)));
    let groups = let_var(
        f,
        o,
        "mgroups",
        Ty::I64,
        match p.group {
            Some(gs) => div(dim(dk), i64c(gs as i64)),
            None => var(chunks),
        },
    );
    let row_bytes = let_var(
        f,
        o,
        "mrowb",
        Ty::I64,
        mul(var(chunks), i64c(mp.chunk_bytes())),
    );
    let bits = let_var(
        f,
        o,
        "mbits",
        Ty::I32,
        mul(var(t), i32c(mp.piece_bits as i64)),
    );
    let first = cast(
        Ty::I64,
        bin(BinOp::Shl, bin(BinOp::Shr, var(bits), i32c(5)), i32c(2)),
    );
    // Rows past N (a partial tile) load row N - 1 and store nothing.
    let loaded = [0, 1].map(|r| {
        let e = bin(BinOp::Min, var(rows[r]), sub(dim(dn), i64c(1)));
        let_var(f, o, &format!("mrowc{r}"), Ty::I64, e)
    });
    let wbase = [0, 1].map(|r| {
        let e = add(mul(var(loaded[r]), var(row_bytes)), first.clone());
        let_var(f, o, &format!("mwb{r}"), Ty::I64, e)
    });
    let shift = mp.shifted.then(|| {
        let_var(
            f,
            o,
            "mshift",
            Ty::I32,
            bin(BinOp::And, var(bits), i32c(31)),
        )
    });
    let tok = bin(BinOp::Min, cast(Ty::I64, var(g)), sub(dim(dm), i64c(1)));
    let xbase = let_var(
        f,
        o,
        "mxb",
        Ty::I64,
        mul(
            add(
                mul(tok, dim(dk)),
                cast(Ty::I64, mul(var(t), i32c(PIECE as i64))),
            ),
            i64c(mp.act_bytes()),
        ),
    );
    let ms = [0, 1].map(|i| {
        let e = add(cast(Ty::I64, mul(var(t), i32c(2))), i64c(i));
        let_var(f, o, &format!("mm{i}"), Ty::I64, e)
    });
    // (Clamped to M - 1 for loads of per-activation-row scales.)
    let ms_loaded = [0, 1].map(|i| {
        let e = bin(BinOp::Min, var(ms[i]), sub(dim(dm), i64c(1)));
        let_var(f, o, &format!("mmc{i}"), Ty::I64, e)
    });
    let acc = [0, 1, 2, 3].map(|i| let_var(f, o, &format!("macc{i}"), Ty::F32, f32c(0.0)));
    let cb = mp.chunk_bytes();
    let u = in_flight.max(1);
    // Asynchronous copies: two buffers per warp, one being filled while the other is
    // read.
    let buffers = if loads == WeightLoads::Async { 2 } else { 1 };
    let stage = loads.staged().then(|| {
        let span = u as i64 * cb;
        let pitch = span + 16;
        let per_row = span / 16;
        let region = let_var(
            f,
            o,
            "mregion",
            Ty::I64,
            mul(var(warp), i64c(buffers * 16 * pitch)),
        );
        let vecs = (0..span / 32)
            .map(|j| {
                let v = add(cast(Ty::I64, var(lane32)), i64c(32 * j));
                let row = let_var(
                    f,
                    o,
                    &format!("mvrow{j}"),
                    Ty::I64,
                    div(v.clone(), i64c(per_row)),
                );
                let q = let_var(
                    f,
                    o,
                    &format!("mvq{j}"),
                    Ty::I64,
                    sub(v, mul(var(row), i64c(per_row))),
                );
                // Rows past N load row N - 1 (at or after the tile's first row).
                let grow = bin(BinOp::Min, add(var(n0v), var(row)), sub(dim(dn), i64c(1)));
                let rel = add(
                    mul(sub(grow, var(n0v)), var(row_bytes)),
                    mul(var(q), i64c(16)),
                );
                let g = let_var(f, o, &format!("mvg{j}"), Ty::I32, cast(Ty::I32, rel));
                let sh = add(
                    var(region),
                    add(mul(var(row), i64c(pitch)), mul(var(q), i64c(16))),
                );
                let sh = let_var(f, o, &format!("mvs{j}"), Ty::I32, cast(Ty::I32, sh));
                (g, sh)
            })
            .collect();
        let read = let_var(
            f,
            o,
            "mread",
            Ty::I64,
            add(
                var(region),
                add(mul(cast(Ty::I64, var(g)), i64c(pitch)), first.clone()),
            ),
        );
        f.shared_bytes = f.shared_bytes.max((wpb * buffers * 16 * pitch) as usize);
        let tile = let_var(f, o, "mtile", Ty::I64, mul(var(n0v), var(row_bytes)));
        Stage {
            pitch,
            tile,
            vecs,
            read,
        }
    });
    let lane = Lane {
        wbase,
        shift,
        xbase,
        rows: loaded,
        ms: ms_loaded,
        stage,
    };
    // This warp's chunks: all of them, or its part of the tile's (parts begin at
    // multiples of the `u` chunks per iteration, which keeps staged loads aligned; the
    // last part also takes the remainder).
    let (first_c, end_c) = if split > 1 {
        let part = sub(var(warp), mul(div(var(warp), i64c(split)), i64c(split)));
        let q = let_var(f, o, "mpart", Ty::I64, part);
        let steps = div(var(chunks), i64c(u as i64));
        let at = |q: Expr| mul(div(mul(q, steps.clone()), i64c(split)), i64c(u as i64));
        let lo = let_var(f, o, "mclo", Ty::I64, at(var(q)));
        let hi = Expr::Select(
            Box::new(cmp(CmpOp::Eq, var(q), i64c(split - 1))),
            Box::new(var(chunks)),
            Box::new(at(add(var(q), i64c(1)))),
        );
        let hi = let_var(f, o, "mchi", Ty::I64, hi);
        (lo, hi)
    } else {
        (let_var(f, o, "mclo", Ty::I64, i64c(0)), chunks)
    };
    let c = f.var("mc", Ty::I64);
    let main_end = let_var(
        f,
        o,
        "mmain",
        Ty::I64,
        add(
            var(first_c),
            mul(
                div(sub(var(end_c), var(first_c)), i64c(u as i64)),
                i64c(u as i64),
            ),
        ),
    );
    let main = if loads == WeightLoads::Async {
        // Copies of the first iteration's rows into buffer 0; each iteration then
        // starts the next one's into the other buffer before decoding its own.
        let st = lane.stage.as_ref().expect("staged");
        let half = 16 * st.pitch;
        let first = copies(p, st, var(first_c), i32c(0), cb);
        o.push(Stmt::If {
            cond: cmp(CmpOp::Lt, var(first_c), var(main_end)),
            then: first,
        });
        o.push(Stmt::Async(AsyncOp::Commit));
        let off = f.var("mbuf", Ty::I32);
        let parity = bin(
            BinOp::And,
            div(sub(var(c), var(first_c)), i64c(u as i64)),
            i64c(1),
        );
        let mut main = vec![Stmt::Let(off, mul(cast(Ty::I32, parity), i32c(half)))];
        // Every lane has read the other buffer (the previous iteration's) before it
        // is refilled.
        main.push(Stmt::WarpSync);
        let next = add(var(c), i64c(u as i64));
        main.push(Stmt::If {
            cond: cmp(CmpOp::Lt, next.clone(), var(main_end)),
            then: copies(p, st, next, sub(i32c(half), var(off)), cb),
        });
        main.push(Stmt::Async(AsyncOp::Commit));
        main.extend(step(f, p, mp, &lane, c, u, true, Some(off), groups, &acc));
        main
    } else {
        step(f, p, mp, &lane, c, u, true, None, groups, &acc)
    };
    o.push(Stmt::For {
        var: c,
        start: var(first_c),
        end: var(main_end),
        step: u as i64,
        kind: LoopKind::Serial,
        body: main,
    });
    if loads == WeightLoads::Async {
        // The last iteration's group is empty; nothing is left in flight.
        o.push(Stmt::Async(AsyncOp::Wait(0)));
    }
    if u > 1 {
        let c1 = f.var("mct", Ty::I64);
        let tail = step(f, p, mp, &lane, c1, 1, false, None, groups, &acc);
        o.push(Stmt::For {
            var: c1,
            start: var(main_end),
            end: var(end_c),
            step: 1,
            kind: LoopKind::Serial,
            body: tail,
        });
    }
    if split > 1 {
        // Partials: lane l of warp w at shared bytes base + 16 (32 w + l).
        let base = f.shared_bytes.next_multiple_of(16) as i64;
        f.shared_bytes = (base + wpb * 32 * 16) as usize;
        let at = add(
            i32c(base),
            mul(
                add(mul(cast(Ty::I32, var(warp)), i32c(32)), var(lane32)),
                i32c(16),
            ),
        );
        o.push(Stmt::StoreShared4 {
            offset: at,
            src: acc,
        });
        out.push(Stmt::If {
            cond: cmp(CmpOp::Lt, var(n0v), dim(dn)),
            then: inner,
        });
        let after_sync = reduce_partials(f, p, base, tpb, split, wpb);
        return MmaBody {
            warps: out,
            after_sync,
        };
    }
    for (i, &a) in acc.iter().enumerate() {
        let (row, m) = (rows[i / 2], ms[i % 2]);
        let value = match outer_scale(p, &var(m), &var(row)) {
            Some(s) => mul(var(a), s),
            None => var(a),
        };
        let ok = bin(
            BinOp::And,
            cmp(CmpOp::Lt, var(row), dim(dn)),
            cmp(CmpOp::Lt, var(m), dim(dm)),
        );
        o.push(Stmt::If {
            cond: ok,
            then: vec![Stmt::Store {
                buf: p.out,
                index: add(mul(var(m), dim(dn)), var(row)),
                value,
            }],
        });
    }
    out.push(Stmt::If {
        cond: cmp(CmpOp::Lt, var(n0v), dim(dn)),
        then: inner,
    });
    MmaBody {
        warps: out,
        after_sync: Vec::new(),
    }
}

/// The asynchronous copies of the warp's 16 rows x `u` chunks from chunk `c` into the
/// buffer at shared byte `dst` past the lane's slots.
fn copies(p: &Plan, st: &Stage, c: Expr, dst: Expr, cb: i64) -> Vec<Stmt> {
    let base = add(var(st.tile), mul(c, i64c(cb)));
    st.vecs
        .iter()
        .map(|&(g, sh)| {
            Stmt::Async(AsyncOp::Copy16 {
                shared: add(var(sh), dst.clone()),
                buf: p.weight,
                offset: add(base.clone(), cast(Ty::I64, var(g))),
            })
        })
        .collect()
}

/// After the barrier: thread `e` of the block (and `e + block`, ...) adds the `split`
/// partials of output `e` (tile `e / 128`, row `e % 128 / 8`, activation row `e % 8`:
/// accumulator `2 (r / 8) + m % 2` of lane `4 (r % 8) + m / 2` in the `mma` layout)
/// and stores it with the outer scales.
fn reduce_partials(f: &mut Func, p: &Plan, base: i64, tpb: i64, split: i64, wpb: i64) -> Vec<Stmt> {
    let (dm, dn) = (p.m, p.n);
    let mut out = Vec::new();
    let e64 = f.var("mre", Ty::I64);
    let mut body = Vec::new();
    let b = &mut body;
    let e = let_var(f, b, "mre32", Ty::I32, cast(Ty::I32, var(e64)));
    let tl = let_var(f, b, "mrtile", Ty::I32, bin(BinOp::Shr, var(e), i32c(7)));
    let r = let_var(
        f,
        b,
        "mrrow",
        Ty::I32,
        bin(BinOp::And, bin(BinOp::Shr, var(e), i32c(3)), i32c(15)),
    );
    let m = let_var(f, b, "mrm", Ty::I32, bin(BinOp::And, var(e), i32c(7)));
    let slot = let_var(
        f,
        b,
        "mrslot",
        Ty::I32,
        add(
            i32c(base),
            add(
                mul(
                    add(
                        mul(bin(BinOp::And, var(r), i32c(7)), i32c(4)),
                        bin(BinOp::Shr, var(m), i32c(1)),
                    ),
                    i32c(16),
                ),
                mul(
                    add(
                        mul(bin(BinOp::Shr, var(r), i32c(3)), i32c(2)),
                        bin(BinOp::And, var(m), i32c(1)),
                    ),
                    i32c(4),
                ),
            ),
        ),
    );
    let n = let_var(
        f,
        b,
        "mrn",
        Ty::I64,
        add(
            mul(
                add(
                    mul(cast(Ty::I64, Expr::Special(Special::BlockIdx)), i64c(tpb)),
                    cast(Ty::I64, var(tl)),
                ),
                i64c(ROWS as i64),
            ),
            cast(Ty::I64, var(r)),
        ),
    );
    let m64 = let_var(f, b, "mrm64", Ty::I64, cast(Ty::I64, var(m)));
    let mut then = Vec::new();
    let sum = (0..split).fold(None, |acc: Option<Expr>, q| {
        let warp = mul(var(tl), i32c(split));
        let at = add(var(slot), mul(add(warp, i32c(q)), i32c(32 * 16)));
        let v = Expr::FromBits(Box::new(Expr::LoadShared(Box::new(at))));
        Some(match acc {
            Some(a) => add(a, v),
            None => v,
        })
    });
    let sum = let_var(f, &mut then, "mrsum", Ty::F32, sum.unwrap_or(f32c(0.0)));
    let value = match outer_scale(p, &var(m64), &var(n)) {
        Some(s) => mul(var(sum), s),
        None => var(sum),
    };
    then.push(Stmt::Store {
        buf: p.out,
        index: add(mul(var(m64), dim(dn)), var(n)),
        value,
    });
    b.push(Stmt::If {
        cond: bin(
            BinOp::And,
            cmp(CmpOp::Lt, var(n), dim(dn)),
            cmp(CmpOp::Lt, var(m64), dim(dm)),
        ),
        then,
    });
    out.push(Stmt::For {
        var: e64,
        start: cast(Ty::I64, Expr::Special(Special::ThreadIdx)),
        end: i64c(tpb * ROWS as i64 * 8),
        step: wpb * 32,
        kind: LoopKind::Serial,
        body,
    });
    out
}

/// Static shared memory a PTX function may declare (48 KiB).
const SHARED_LIMIT: i64 = 48 * 1024;

/// The loads and chunks per iteration the path uses for `want` chunks and `loads`
/// with `wpb` warps per block: staged, the chunks are rounded so that the 16 rows'
/// spans split into 16-byte vectors evenly over the 32 lanes (up from `want`, else
/// down) and the warps' buffers (with the split-K partials) fit the static shared
/// memory; when no count does, the lanes load directly.
pub fn loads_and_chunks(
    mp: &MmaPlan,
    want: usize,
    loads: WeightLoads,
    wpb: i64,
) -> (WeightLoads, usize) {
    let want = want.max(1);
    if !loads.staged() {
        return (loads, want);
    }
    let buffers = if loads == WeightLoads::Async { 2 } else { 1 };
    let fits = |u: usize| {
        let span = u as i64 * mp.chunk_bytes();
        span % 32 == 0 && wpb * buffers * 16 * (span + 16) + wpb * 32 * 16 <= SHARED_LIMIT
    };
    let up = (want..4 * want).find(|&u| fits(u));
    match up.or_else(|| (1..want).rev().find(|&u| fits(u))) {
        Some(u) => (loads, u),
        None => (WeightLoads::Direct, want),
    }
}

/// The run-time condition of the path (`I32`): K a multiple of [`CHUNK`], M at least
/// `min_m` and, when staging, rows of a multiple of 16 bytes (16-byte vector loads).
pub fn applies(p: &Plan, mp: &MmaPlan, stage: bool, min_m: u32) -> Expr {
    let mut k_ok = cmp(
        CmpOp::Eq,
        bin(BinOp::And, dim(p.k), i64c(CHUNK as i64 - 1)),
        i64c(0),
    );
    if min_m > 1 {
        k_ok = bin(
            BinOp::And,
            k_ok,
            cmp(CmpOp::Le, i64c(i64::from(min_m)), dim(p.m)),
        );
    }
    if !stage || mp.chunk_bytes() % 16 == 0 {
        return k_ok;
    }
    let row_bytes = mul(div(dim(p.k), i64c(CHUNK as i64)), i64c(mp.chunk_bytes()));
    bin(
        BinOp::And,
        k_ok,
        cmp(CmpOp::Eq, bin(BinOp::And, row_bytes, i64c(15)), i64c(0)),
    )
}

/// The warps per tile that `want` asks for with `wpb` warps per block: `want` when it
/// divides `wpb`, else 1.
pub fn split_of(want: u32, wpb: i64) -> i64 {
    let s = i64::from(want.max(1));
    if wpb % s == 0 {
        s
    } else {
        1
    }
}

/// Blocks of the path's grid: `split` warps per [`ROWS`] weight rows.
pub fn grid(p: &Plan, wpb: i64, split: i64) -> Expr {
    ceil_div(dim(p.n), ROWS as i64 * (wpb / split))
}

#[cfg(test)]
mod tests {
    use super::*;
    use qkc_dsl::layout::{builtin, BUILTIN_NAMES};

    /// Decodes every pair of every built-in layout's plan on all codes: the hfma2 of
    /// the magic word must give the two codes exactly.
    #[test]
    fn pairs_decode_every_code_exactly() {
        for name in BUILTIN_NAMES {
            let l = builtin(name).unwrap();
            let src = format!(
                "kernel k(x: f16[M, K], w: {name}[N, K], s: f16[N, K / 128]) -> y: f32[M, N] {{ y[m, n] = sum(k) x[m, k] * w[n, k] * s[n, k / 128]; }}"
            );
            let prog = qkc_dsl::compile("t.qk", &src).unwrap();
            let p = Plan::new(&prog.kernels[0]);
            let mp = MmaPlan::new(&p).unwrap_or_else(|| panic!("{name}: no mma plan"));
            let Decode::F16 { windows, pairs } = &mp.decode else {
                panic!("{name}: not the f16 decode");
            };
            assert_eq!(pairs.len(), PIECE / 2, "{name}");
            let mut seen = [false; PIECE];
            for pr in pairs {
                assert!(!seen[pr.ka] && !seen[pr.kb], "{name}: weight paired twice");
                seen[pr.ka] = true;
                seen[pr.kb] = true;
            }
            let per = l.per_unit();
            let stride = unit_stride_bits(&l);
            // Round r gives weight j the raw code (r + 7j) mod 2^bits, so 256 rounds sweep
            // every code of every weight; the bits past the piece are pseudo-random.
            let mut state = 0x9e37_79b9_7f4a_7c15u64;
            for round in 0..256usize {
                let mut bits = vec![0u8; mp.words * 32 + 64];
                for b in bits.iter_mut() {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    *b = (state & 1) as u8;
                }
                for j in 0..PIECE {
                    let fd = *l.field_of(j);
                    let pos = (j / per) * stride + fd.shift as usize;
                    let raw = (round + 7 * j) % (1 << fd.bits);
                    for i in 0..fd.bits as usize {
                        bits[pos + i] = (raw >> i & 1) as u8;
                    }
                }
                let codes: Vec<i64> = (0..PIECE)
                    .map(|j| {
                        let fd = *l.field_of(j);
                        let pos = (j / per) * stride + fd.shift as usize;
                        let raw = (0..fd.bits as usize)
                            .fold(0i64, |r, i| r | i64::from(bits[pos + i]) << i);
                        if fd.signed && raw >> (fd.bits - 1) & 1 == 1 {
                            raw - (1 << fd.bits)
                        } else {
                            raw
                        }
                    })
                    .collect();
                let word = |w: usize| -> u32 {
                    (0..32).fold(0u32, |r, i| r | u32::from(bits[32 * w + i]) << i)
                };
                for pr in pairs {
                    let s = windows[pr.window];
                    let win = if s < 0 {
                        word(0) << (-s)
                    } else if s % 32 == 0 {
                        word(s as usize / 32)
                    } else {
                        let w = s as usize / 32;
                        let up = if w + 1 < mp.words { word(w + 1) } else { 0 };
                        (word(w) >> (s % 32)) | (up << (32 - s % 32))
                    };
                    let h = crate::loop_ir::eval::hfma2((win & pr.mask) ^ pr.xor, pr.mul, pr.add);
                    let lo = f16::from_bits(h as u16).to_f64();
                    let hi = f16::from_bits((h >> 16) as u16).to_f64();
                    assert_eq!(lo, codes[pr.ka] as f64, "{name}: weight {}", pr.ka);
                    assert_eq!(hi, codes[pr.kb] as f64, "{name}: weight {}", pr.kb);
                }
            }
        }
    }
}
