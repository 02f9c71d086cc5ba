//! The GPU schedules (CUDA-style SIMT: blocks of warps of 32 lanes).
//!
//! One [`Func`] holds every path; the choice between them is made by uniform
//! branches on the run-time dimensions, so all lanes of a warp always agree.
//!
//! **GEMV** (M ≤ 8 at run time; variants for M tiles of 1, 2, 4, 8 activation rows,
//! each with the rows clamped to `M - 1` and stores guarded by `m < M`):
//!
//! ```text
//! warp w of block b owns weight row n = b * warps_per_block + w   (guard n < N, uniform)
//! if row_bytes % 16 == 0 && act row bytes % 16 == 0:             (uniform)
//!   for c in lane..K / CW step 32:          // lane chunks of CB packed bytes = CW weights
//!     W = 16-byte vector loads (CB / 16 of them)
//!     for each group inside the chunk:      // CW is a multiple of G, or G of CW
//!       acc[i] = 0
//!       for each quad of weights:           // int8 activations
//!         p = 4 codes placed in byte lanes  // constant shifts/masks from the layout
//!         acc[i] = dp4a(x[row i] as one 32-bit word, p, acc[i])
//!       (float activations: acc[i] += x * f32(code), codes by constant bit-field extracts)
//!       facc[i] += f32(acc[i]) * group scales          // scale hoisting
//!   tail_start = (K / CW) * CW
//! for g in groups from tail_start:          // scalar path: tails and unaligned rows
//!   for k in lane + its part of g step 32: generic unpack, acc[i] += x * code
//!   facc[i] += acc[i] * group scales
//! facc[i] = warp_sum(facc[i]); lane 0 stores facc[i] * row/col scales if m < M
//! ```
//!
//! **Generic** (M > 8, when the kernel allows it): one thread per weight row `n` and
//! tile of `tile_m` activation rows, the CPU schedule's loop nest inside
//! (constant-position unpack of whole chunks, generic tail).

use qkc_dsl::ir::Kernel;
use qkc_dsl::layout::{FieldDesc, LayoutDesc};

use super::scales::{group_scale, outer_scale};
use super::unpack::{chunk_for, decode_chunk, decode_one, row_bytes, unit_stride_bits};
use super::Plan;
use crate::loop_ir::build::*;
use crate::loop_ir::{BinOp, CmpOp, Elem, Expr, Func, Launch, LoopKind, Special, Stmt, Ty, Var};

/// Knobs of the GPU lowering.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuOptions {
    /// Threads per block (a multiple of 32, at most 1024).
    pub block: u32,
    /// Use the warp-per-row GEMV schedule when M ≤ 8 at run time.
    pub gemv: bool,
    /// Activation-row tiles of the GEMV variants (each ≤ 8; the smallest tile ≥ M runs).
    pub m_tiles: Vec<u32>,
    /// Use 16-byte vector loads when rows are 16-byte aligned (off: scalar path only).
    pub vector: bool,
    /// Packed bytes per lane chunk of the vector path (a multiple of 16 that holds whole
    /// units); `None` picks one.
    pub lane_bytes: Option<u32>,
    /// Activation rows per thread in the generic (M > 8) schedule.
    pub tile_m: u32,
    /// A tighter bound on M than the kernel declares, promised by the caller (the
    /// runtime compiles one function per M bucket so that the registers of the M = 8
    /// path do not limit the occupancy of M = 1).
    pub max_m: Option<u64>,
}

impl GpuOptions {
    /// Defaults for a kernel, honouring its schedule hints (`threads`, `tile_m`).
    pub fn for_kernel(k: &Kernel) -> GpuOptions {
        let block = k.schedule.threads.unwrap_or(128).clamp(32, 1024) / 32 * 32;
        GpuOptions {
            block,
            gemv: true,
            m_tiles: vec![1, 2, 4, 8],
            vector: true,
            lane_bytes: None,
            tile_m: k.schedule.tile_m.unwrap_or(4).clamp(1, 8),
            max_m: None,
        }
    }
}

/// The vector path's lane chunk: `bytes` packed bytes (16-aligned) hold `weights`
/// weights; `sub` weights share one group (a divisor of `weights`, or `weights`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaneChunk {
    pub bytes: usize,
    pub weights: usize,
    pub sub: usize,
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Whether every code fits a signed byte lane of `dp4a`.
fn fits_dp4a(l: &LayoutDesc) -> bool {
    l.fields().iter().all(|f| f.bits <= 7 || f.signed)
}

/// Picks the vector path's lane chunk for a plan, or `None` when no chunk satisfies
/// the layout, group and activation constraints.
pub fn lane_chunk(p: &Plan, want_bytes: Option<u32>) -> Option<LaneChunk> {
    let l = &p.layout;
    let ub = unit_stride_bits(l);
    let per = l.per_unit();
    if p.int && !fits_dp4a(l) {
        return None;
    }
    let gran = ub / gcd(ub, 8);
    let cb_min = 16 * gran / gcd(16, gran);
    let mut valid = Vec::new();
    let mut cb = cb_min;
    while cb <= 256 {
        let cw = cb * 8 / ub * per;
        let words_ok = !p.int || cw % 16 == 0;
        let sub = match p.group {
            None => Some(cw),
            Some(g) => {
                let g = g as usize;
                if g % cw == 0 {
                    Some(cw)
                } else if cw % g == 0 && (g % 4 == 0 || !p.int) {
                    Some(g)
                } else {
                    None
                }
            }
        };
        if let (true, Some(sub)) = (words_ok, sub) {
            valid.push(LaneChunk {
                bytes: cb,
                weights: cw,
                sub,
            });
        }
        cb += cb_min;
    }
    match want_bytes {
        Some(b) => valid.into_iter().find(|c| c.bytes == b as usize),
        None => valid
            .iter()
            .copied()
            .find(|c| c.bytes >= 64)
            .or_else(|| valid.iter().copied().rev().find(|c| c.bytes <= 128)),
    }
}

/// Bit position (inside a chunk) and field of weight `j` of the chunk.
fn field_pos(l: &LayoutDesc, j: usize) -> (usize, FieldDesc) {
    let unit = j / l.per_unit();
    let fd = *l.field_of(j);
    (unit * unit_stride_bits(l) + fd.shift as usize, fd)
}

/// The 32 bits of the chunk starting at bit `32 * a + s` (`0 < s < 32`): a funnel
/// shift of words `a` and `a + 1`.
fn funnel(w: &[Var], a: usize, s: usize) -> Expr {
    bin(
        BinOp::Or,
        bin(BinOp::Shr, var(w[a]), i32c(s as i64)),
        bin(BinOp::Shl, var(w[a + 1]), i32c(32 - s as i64)),
    )
}

/// The code of chunk weight `j` as an `I32` (sign-extended when its field is signed).
fn code_expr(l: &LayoutDesc, w: &[Var], j: usize) -> Expr {
    let (pos, fd) = field_pos(l, j);
    let (a, o) = (pos / 32, pos % 32);
    if o + fd.bits as usize <= 32 {
        bfe(var(w[a]), o as u8, fd.bits, fd.signed)
    } else {
        bfe(funnel(w, a, o), 0, fd.bits, fd.signed)
    }
}

/// The raw bits of chunk weight `j` moved to bits `8 * lane ..` (other bits zero).
fn positioned(l: &LayoutDesc, w: &[Var], j: usize, lane: usize) -> Expr {
    let (pos, fd) = field_pos(l, j);
    let (a, o) = (pos / 32, pos % 32);
    let t = 8 * lane;
    let mask = ((((1u32 << fd.bits) - 1) << t) as i32) as i64;
    let src = if o + fd.bits as usize <= 32 {
        match o.cmp(&t) {
            std::cmp::Ordering::Equal => var(w[a]),
            std::cmp::Ordering::Greater => bin(BinOp::Shr, var(w[a]), i32c((o - t) as i64)),
            std::cmp::Ordering::Less => bin(BinOp::Shl, var(w[a]), i32c((t - o) as i64)),
        }
    } else {
        // A field crossing a word boundary is wider than the lane offset (o > t).
        funnel(w, a, o - t)
    };
    bin(BinOp::And, src, i32c(mask))
}

/// Sign-bit masks of the chunk's 32-bit words: bit `b` of word `a` is set when it is
/// the sign bit of a signed field narrower than 8 bits. XOR-ing a word with its mask
/// turns every such field `v` into `v ^ 2^(b-1)`, which [`packed_quad`] expects.
fn sign_masks(l: &LayoutDesc, weights: usize, words: usize) -> Vec<u32> {
    let mut m = vec![0u32; words];
    for j in 0..weights {
        let (pos, fd) = field_pos(l, j);
        if fd.signed && fd.bits < 8 {
            let b = pos + fd.bits as usize - 1;
            m[b / 32] |= 1 << (b % 32);
        }
    }
    m
}

/// Codes of chunk weights `4q .. 4q + 4` as four signed bytes (a `dp4a` operand),
/// from words already XOR-ed with [`sign_masks`].
///
/// Fields are placed in their byte lanes with one shift and mask each; signed fields
/// narrower than 8 bits, now `u = v ^ 2^(b-1)` in `0..2^b`, are sign-extended inside
/// their bytes at once: `(u + (128 - 2^(b-1))) ^ 0x80` is `u - 2^(b-1)` as a byte (no
/// carry crosses a byte).
fn packed_quad(l: &LayoutDesc, w: &[Var], q: usize) -> Expr {
    let mut e: Option<Expr> = None;
    let (mut add_k, mut xor_k) = (0u32, 0u32);
    for lane in 0..4 {
        let j = 4 * q + lane;
        let fd = *l.field_of(j);
        let part = positioned(l, w, j, lane);
        e = Some(match e {
            None => part,
            Some(acc) => bin(BinOp::Or, acc, part),
        });
        if fd.signed && fd.bits < 8 {
            add_k |= (128 - (1u32 << (fd.bits - 1))) << (8 * lane);
            xor_k |= 0x80 << (8 * lane);
        }
    }
    let e = e.unwrap_or(i32c(0));
    if xor_k == 0 {
        e
    } else {
        bin(
            BinOp::Xor,
            add(e, i32c(add_k as i32 as i64)),
            i32c(xor_k as i32 as i64),
        )
    }
}

/// Lowers a plan whose M dimension is at most `m_max` for GPU backends (PTX).
pub fn lower(p: &Plan, m_max: u64, o: &GpuOptions) -> Func {
    let block = o.block.clamp(32, 1024) / 32 * 32;
    let mut f = Func::new(
        p.name.clone(),
        p.bufs.clone(),
        p.dim_names.clone(),
        Launch::Gpu {
            grid: i64c(1),
            block,
        },
    );
    f.notes = p.notes.clone();
    let declared = m_max;
    let m_max = o.max_m.map_or(m_max, |b| b.clamp(1, m_max));
    if m_max < declared {
        f.notes.push(format!(
            "specialised for {} <= {m_max} (the launcher guarantees it)",
            p.dim_names[p.m]
        ));
    }
    let gemv = o.gemv;
    let generic = !gemv || m_max > 8;
    let wpb = (block / 32) as i64;
    let chunk = if o.vector { lane_chunk(p, o.lane_bytes) } else { None };
    let mut tiles: Vec<u32> = o.m_tiles.iter().copied().filter(|&t| (1..=8).contains(&t)).collect();
    tiles.sort_unstable();
    tiles.dedup();
    // Only tiles up to the first one covering min(M max, 8) are reachable.
    let cover = m_max.min(8) as u32;
    if let Some(pos) = tiles.iter().position(|&t| t >= cover) {
        tiles.truncate(pos + 1);
    } else {
        tiles.push(8);
    }
    let (dm, dn) = (p.m, p.n);
    let mut body = Vec::new();
    let gemv_grid = ceil_div(dim(dn), wpb);
    let generic_grid = ceil_div(
        mul(dim(dn), ceil_div(dim(dm), o.tile_m.max(1) as i64)),
        block as i64,
    );
    if gemv {
        f.notes.push(format!(
            "schedule gpu gemv (M <= 8): one warp per weight row, {} warps per block, M tiles {:?}, {}",
            wpb,
            tiles,
            match chunk {
                Some(c) => format!(
                    "vector lane chunk = {} bytes ({} x 16-byte loads) = {} weights, {} weights per group step, {}",
                    c.bytes,
                    c.bytes / 16,
                    c.weights,
                    c.sub,
                    if p.int { "dp4a on byte-lane codes" } else { "f32 fma" }
                ),
                None => "no vector path (scalar unpack only)".into(),
            }
        ));
        let g = gemv_body(&mut f, p, wpb, &tiles, chunk);
        if generic {
            body.push(Stmt::If {
                cond: cmp(CmpOp::Le, dim(dm), i64c(8)),
                then: g,
            });
        } else {
            body.extend(g);
        }
    }
    if generic {
        let tm = o.tile_m.max(1) as usize;
        f.notes.push(format!(
            "schedule gpu generic{}: one thread per weight row and tile of {tm} activation rows, {block} threads per block",
            if gemv { " (M > 8)" } else { "" }
        ));
        let g = generic_body(&mut f, p, block, tm);
        if gemv {
            body.push(Stmt::If {
                cond: cmp(CmpOp::Lt, i64c(8), dim(dm)),
                then: g,
            });
        } else {
            body.extend(g);
        }
    }
    let grid = match (gemv, generic) {
        (true, false) => gemv_grid,
        (false, _) => generic_grid,
        (true, true) => Expr::Select(
            Box::new(cmp(CmpOp::Le, dim(dm), i64c(8))),
            Box::new(gemv_grid),
            Box::new(generic_grid),
        ),
    };
    f.launch = Launch::Gpu { grid, block };
    f.body = body;
    f
}

fn zero(t: Ty) -> Expr {
    match t {
        Ty::F32 => f32c(0.0),
        t => Expr::Int(0, t),
    }
}

/// `acc + a * code` in the accumulator type `t` (`a` loaded in its register type).
fn mac(t: Ty, acc: Expr, a: Expr, code: Expr) -> Expr {
    if t == Ty::F32 {
        add(acc, mul(a, cast(Ty::F32, code)))
    } else {
        add(acc, mul(cast(t, a), cast(t, code)))
    }
}

/// Folds a per-group partial sum into the row's total: `f32` totals get the group's
/// scales once; integer totals (exact `i32` output, no scales) add the partial.
fn fold(p: &Plan, total: Var, total_ty: Ty, partial: Var, part_ty: Ty, row: &Expr, n: &Expr, g: &Expr) -> Stmt {
    if total_ty == Ty::F32 {
        let x = if part_ty == Ty::F32 { var(partial) } else { cast(Ty::F32, var(partial)) };
        let groups = match p.group {
            Some(gs) => ceil_div(dim(p.k), gs as i64),
            None => i64c(1),
        };
        let scaled = match group_scale(p, row, n, g, &groups) {
            Some(s) => mul(x, s),
            None => x,
        };
        Stmt::Set(total, add(var(total), scaled))
    } else {
        let x = if part_ty == total_ty { var(partial) } else { cast(total_ty, var(partial)) };
        Stmt::Set(total, add(var(total), x))
    }
}

fn gemv_body(f: &mut Func, p: &Plan, wpb: i64, tiles: &[u32], chunk: Option<LaneChunk>) -> Vec<Stmt> {
    let (dm, dn, dk) = (p.m, p.n, p.k);
    let l = p.layout;
    let mut out = Vec::new();
    let lane = f.var("lane", Ty::I64);
    out.push(Stmt::Let(lane, cast(Ty::I64, Expr::Special(Special::LaneId))));
    let warp = f.var("warp", Ty::I64);
    out.push(Stmt::Let(
        warp,
        cast(Ty::I64, bin(BinOp::Shr, Expr::Special(Special::ThreadIdx), i32c(5))),
    ));
    let n = f.var("n", Ty::I64);
    out.push(Stmt::Let(
        n,
        add(mul(cast(Ty::I64, Expr::Special(Special::BlockIdx)), i64c(wpb)), var(warp)),
    ));
    let mut row = Vec::new();
    let wrow = f.var("wrow", Ty::I64);
    row.push(Stmt::Let(wrow, mul(var(n), row_bytes(&l, dk))));
    let vec_ok = f.var("vec_ok", Ty::I32);
    let act_bytes = p.bufs[p.act].elem.bytes() as i64;
    let aligned = |e: Expr| cmp(CmpOp::Eq, bin(BinOp::Rem, e, i64c(16)), i64c(0));
    let cond = if chunk.is_none() {
        i32c(0)
    } else if p.int {
        bin(
            BinOp::And,
            aligned(row_bytes(&l, dk)),
            aligned(mul(dim(dk), i64c(act_bytes))),
        )
    } else {
        aligned(row_bytes(&l, dk))
    };
    row.push(Stmt::Let(vec_ok, cond));
    let float_out = p.out_elem != Elem::I32;
    let mut prev = 0u32;
    for &t in tiles {
        let cond = if prev == 0 {
            cmp(CmpOp::Le, dim(dm), i64c(t as i64))
        } else {
            bin(
                BinOp::And,
                cmp(CmpOp::Lt, i64c(prev as i64), dim(dm)),
                cmp(CmpOp::Le, dim(dm), i64c(t as i64)),
            )
        };
        let mut v = vec![Stmt::Comment(format!("M tile of {t} rows"))];
        v.extend(gemv_tile(f, p, t as usize, n, wrow, lane, vec_ok, chunk, float_out));
        row.push(Stmt::If { cond, then: v });
        prev = t;
    }
    out.push(Stmt::If {
        cond: cmp(CmpOp::Lt, var(n), dim(dn)),
        then: row,
    });
    out
}

#[allow(clippy::too_many_arguments)]
fn gemv_tile(
    f: &mut Func,
    p: &Plan,
    tm: usize,
    n: Var,
    wrow: Var,
    lane: Var,
    vec_ok: Var,
    chunk: Option<LaneChunk>,
    float_out: bool,
) -> Vec<Stmt> {
    let (dm, dn, dk) = (p.m, p.n, p.k);
    let l = p.layout;
    let mut out = Vec::new();
    let mut rows = Vec::new();
    let mut arow = Vec::new();
    let mut total = Vec::new();
    let total_ty = if float_out { Ty::F32 } else { p.acc };
    for i in 0..tm {
        let r = f.var(format!("row{i}"), Ty::I64);
        out.push(Stmt::Let(r, min(i64c(i as i64), sub(dim(dm), i64c(1)))));
        let a = f.var(format!("arow{i}"), Ty::I64);
        out.push(Stmt::Let(a, mul(var(r), dim(dk))));
        let t = f.var(format!("total{i}"), total_ty);
        out.push(Stmt::Let(t, zero(total_ty)));
        rows.push(r);
        arow.push(a);
        total.push(t);
    }
    let tail_start = f.var("tail_start", Ty::I64);
    out.push(Stmt::Let(tail_start, i64c(0)));
    if let Some(c) = chunk {
        let mut vb = Vec::new();
        let nch = f.var("nchunks", Ty::I64);
        vb.push(Stmt::Let(nch, div(dim(dk), i64c(c.weights as i64))));
        let ci = f.var("c", Ty::I64);
        let mut cbody = Vec::new();
        let k0 = f.var("k0", Ty::I64);
        cbody.push(Stmt::Let(k0, mul(var(ci), i64c(c.weights as i64))));
        let wb = f.var("wb", Ty::I64);
        cbody.push(Stmt::Let(wb, add(var(wrow), mul(var(ci), i64c(c.bytes as i64)))));
        let mut w = Vec::new();
        for v in 0..c.bytes / 16 {
            let d = [0, 1, 2, 3].map(|i| f.var(format!("w{}", 4 * v + i), Ty::I32));
            cbody.push(Stmt::LoadVec4 {
                dst: d,
                buf: p.weight,
                offset: add(var(wb), i64c(16 * v as i64)),
            });
            w.extend(d);
        }
        if p.int {
            // Bias the signed fields once per word (see `packed_quad`).
            for (a, m) in sign_masks(&l, c.weights, w.len()).into_iter().enumerate() {
                if m != 0 {
                    let x = f.var(format!("wx{a}"), Ty::I32);
                    cbody.push(Stmt::Let(x, bin(BinOp::Xor, var(w[a]), i32c(m as i32 as i64))));
                    w[a] = x;
                }
            }
        }
        // Activation words of the int path, loaded once per (row, 16 weights).
        let mut act_words: Vec<Vec<Option<[Var; 4]>>> = vec![vec![None; c.weights / 16 + 1]; tm];
        for s in 0..c.weights / c.sub {
            let j0 = s * c.sub;
            let g = f.var("g", Ty::I64);
            let gexpr = match p.group {
                Some(gs) => div(add(var(k0), i64c(j0 as i64)), i64c(gs as i64)),
                None => i64c(0),
            };
            cbody.push(Stmt::Let(g, gexpr));
            let part_ty = if p.int { Ty::I32 } else { Ty::F32 };
            let parts: Vec<Var> = (0..tm)
                .map(|i| {
                    let v = f.var(format!("part{i}"), part_ty);
                    cbody.push(Stmt::Let(v, zero(part_ty)));
                    v
                })
                .collect();
            if p.int {
                for q in j0 / 4..(j0 + c.sub) / 4 {
                    let pw = f.var(format!("q{q}"), Ty::I32);
                    cbody.push(Stmt::Let(pw, packed_quad(&l, &w, q)));
                    for i in 0..tm {
                        let vi = q / 4;
                        let words = match act_words[i][vi] {
                            Some(ws) => ws,
                            None => {
                                let d = [0, 1, 2, 3].map(|x| f.var(format!("x{i}_{}", 4 * vi + x), Ty::I32));
                                cbody.push(Stmt::LoadVec4 {
                                    dst: d,
                                    buf: p.act,
                                    offset: add(add(var(arow[i]), var(k0)), i64c(16 * vi as i64)),
                                });
                                act_words[i][vi] = Some(d);
                                d
                            }
                        };
                        cbody.push(Stmt::Set(
                            parts[i],
                            Expr::Dot4 {
                                a: Box::new(var(words[q % 4])),
                                b: Box::new(var(pw)),
                                acc: Box::new(var(parts[i])),
                            },
                        ));
                    }
                }
            } else {
                let mut j = j0;
                while j < j0 + c.sub {
                    let run = 16.min(j0 + c.sub - j);
                    let codes: Vec<Var> = (j..j + run)
                        .map(|jj| {
                            let v = f.var(format!("c{jj}"), Ty::I32);
                            cbody.push(Stmt::Let(v, code_expr(&l, &w, jj)));
                            v
                        })
                        .collect();
                    for i in 0..tm {
                        cbody.push(Stmt::Set(
                            parts[i],
                            Expr::DotRun {
                                buf: p.act,
                                index: Box::new(add(add(var(arow[i]), var(k0)), i64c(j as i64))),
                                codes: codes.clone(),
                                acc: Box::new(var(parts[i])),
                            },
                        ));
                    }
                    j += run;
                }
            }
            for i in 0..tm {
                cbody.push(fold(p, total[i], total_ty, parts[i], part_ty, &var(rows[i]), &var(n), &var(g)));
            }
        }
        vb.push(Stmt::For {
            var: ci,
            start: var(lane),
            end: var(nch),
            step: 32,
            kind: LoopKind::Serial,
            body: cbody,
        });
        vb.push(Stmt::Set(tail_start, mul(var(nch), i64c(c.weights as i64))));
        out.push(Stmt::If {
            cond: cmp(CmpOp::Ne, var(vec_ok), i32c(0)),
            then: vb,
        });
    }
    // Scalar path: whatever the vector path left (all of K when it did not run).
    let (gsize, g_start, groups) = match p.group {
        Some(g) => (
            i64c(g as i64),
            div(var(tail_start), i64c(g as i64)),
            ceil_div(dim(dk), g as i64),
        ),
        None => (dim(dk), i64c(0), i64c(1)),
    };
    let g = f.var("gt", Ty::I64);
    let mut gbody = Vec::new();
    let ka = f.var("ka", Ty::I64);
    gbody.push(Stmt::Let(
        ka,
        bin(BinOp::Max, mul(var(g), gsize.clone()), var(tail_start)),
    ));
    let kb = f.var("kb", Ty::I64);
    gbody.push(Stmt::Let(kb, min(add(mul(var(g), gsize.clone()), gsize), dim(dk))));
    let accs: Vec<Var> = (0..tm)
        .map(|i| {
            let v = f.var(format!("acc{i}"), p.acc);
            gbody.push(Stmt::Let(v, zero(p.acc)));
            v
        })
        .collect();
    let k = f.var("k", Ty::I64);
    let mut kbody = vec![Stmt::Comment("scalar path: generic unpack".into())];
    let code = decode_one(f, &mut kbody, &l, p.weight, var(wrow), var(k));
    for i in 0..tm {
        let a = load(p.act, add(var(arow[i]), var(k)));
        kbody.push(Stmt::Set(accs[i], mac(p.acc, var(accs[i]), a, var(code))));
    }
    gbody.push(Stmt::For {
        var: k,
        start: add(var(ka), var(lane)),
        end: var(kb),
        step: 32,
        kind: LoopKind::Serial,
        body: kbody,
    });
    for i in 0..tm {
        gbody.push(fold(p, total[i], total_ty, accs[i], p.acc, &var(rows[i]), &var(n), &var(g)));
    }
    out.push(Stmt::For {
        var: g,
        start: g_start,
        end: groups,
        step: 1,
        kind: LoopKind::Serial,
        body: gbody,
    });
    for &t in &total {
        out.push(Stmt::WarpSum(t));
    }
    let mut stores = Vec::new();
    for i in 0..tm {
        let value = if float_out {
            match outer_scale(p, &var(rows[i]), &var(n)) {
                Some(s) => mul(var(total[i]), s),
                None => var(total[i]),
            }
        } else {
            cast(Ty::I32, var(total[i]))
        };
        stores.push(Stmt::If {
            cond: cmp(CmpOp::Lt, i64c(i as i64), dim(dm)),
            then: vec![Stmt::Store {
                buf: p.out,
                index: add(mul(i64c(i as i64), dim(dn)), var(n)),
                value,
            }],
        });
    }
    out.push(Stmt::If {
        cond: cmp(CmpOp::Eq, var(lane), i64c(0)),
        then: stores,
    });
    out
}

/// One thread per (weight row, tile of `tm` activation rows): the CPU loop nest.
fn generic_body(f: &mut Func, p: &Plan, block: u32, tm: usize) -> Vec<Stmt> {
    let (dm, dn, dk) = (p.m, p.n, p.k);
    let l = p.layout;
    let mut out = Vec::new();
    let t = f.var("t", Ty::I64);
    out.push(Stmt::Let(
        t,
        add(
            mul(cast(Ty::I64, Expr::Special(Special::BlockIdx)), i64c(block as i64)),
            cast(Ty::I64, Expr::Special(Special::ThreadIdx)),
        ),
    ));
    let mut tb = Vec::new();
    let n = f.var("n", Ty::I64);
    tb.push(Stmt::Let(n, bin(BinOp::Rem, var(t), dim(dn))));
    let m0 = f.var("m0", Ty::I64);
    tb.push(Stmt::Let(m0, mul(div(var(t), dim(dn)), i64c(tm as i64))));
    let wrow = f.var("wrow", Ty::I64);
    tb.push(Stmt::Let(wrow, mul(var(n), row_bytes(&l, dk))));
    let float_out = p.out_elem != Elem::I32;
    let total_ty = if float_out { Ty::F32 } else { p.acc };
    let mut rows = Vec::new();
    let mut arow = Vec::new();
    let mut total = Vec::new();
    for i in 0..tm {
        let r = f.var(format!("row{i}"), Ty::I64);
        tb.push(Stmt::Let(r, min(add(var(m0), i64c(i as i64)), sub(dim(dm), i64c(1)))));
        let a = f.var(format!("arow{i}"), Ty::I64);
        tb.push(Stmt::Let(a, mul(var(r), dim(dk))));
        let tt = f.var(format!("total{i}"), total_ty);
        tb.push(Stmt::Let(tt, zero(total_ty)));
        rows.push(r);
        arow.push(a);
        total.push(tt);
    }
    let (gsize, groups) = match p.group {
        Some(g) => (i64c(g as i64), ceil_div(dim(dk), g as i64)),
        None => (dim(dk), i64c(1)),
    };
    let g = f.var("g", Ty::I64);
    let mut gb = Vec::new();
    let k0 = f.var("k0", Ty::I64);
    gb.push(Stmt::Let(k0, mul(var(g), gsize.clone())));
    let k1 = f.var("k1", Ty::I64);
    gb.push(Stmt::Let(k1, min(add(var(k0), gsize), dim(dk))));
    let accs: Vec<Var> = (0..tm)
        .map(|i| {
            let v = f.var(format!("acc{i}"), p.acc);
            gb.push(Stmt::Let(v, zero(p.acc)));
            v
        })
        .collect();
    let align = p.group.map(|g| g as usize / l.per_unit());
    let kc_end = f.var("kc_end", Ty::I64);
    match chunk_for(&l, align).filter(|_| p.group.is_none_or(|g| g as usize % l.per_unit() == 0)) {
        Some(c) => {
            let cw = c.weights as i64;
            gb.push(Stmt::Let(
                kc_end,
                add(var(k0), mul(div(sub(var(k1), var(k0)), i64c(cw)), i64c(cw))),
            ));
            let kc = f.var("kc", Ty::I64);
            let mut kb = Vec::new();
            let codes = decode_chunk(f, &mut kb, &l, &c, p.weight, var(wrow), var(kc));
            for i in 0..tm {
                kb.push(Stmt::Set(
                    accs[i],
                    Expr::DotRun {
                        buf: p.act,
                        index: Box::new(add(var(arow[i]), var(kc))),
                        codes: codes.clone(),
                        acc: Box::new(var(accs[i])),
                    },
                ));
            }
            gb.push(Stmt::For {
                var: kc,
                start: var(k0),
                end: var(kc_end),
                step: cw,
                kind: LoopKind::Serial,
                body: kb,
            });
        }
        None => gb.push(Stmt::Let(kc_end, var(k0))),
    }
    let k = f.var("k", Ty::I64);
    let mut kb = Vec::new();
    let code = decode_one(f, &mut kb, &l, p.weight, var(wrow), var(k));
    for i in 0..tm {
        let a = load(p.act, add(var(arow[i]), var(k)));
        kb.push(Stmt::Set(accs[i], mac(p.acc, var(accs[i]), a, var(code))));
    }
    gb.push(Stmt::For {
        var: k,
        start: var(kc_end),
        end: var(k1),
        step: 1,
        kind: LoopKind::Serial,
        body: kb,
    });
    for i in 0..tm {
        gb.push(fold(p, total[i], total_ty, accs[i], p.acc, &var(rows[i]), &var(n), &var(g)));
    }
    tb.push(Stmt::For {
        var: g,
        start: i64c(0),
        end: groups,
        step: 1,
        kind: LoopKind::Serial,
        body: gb,
    });
    for i in 0..tm {
        let value = if float_out {
            match outer_scale(p, &var(rows[i]), &var(n)) {
                Some(s) => mul(var(total[i]), s),
                None => var(total[i]),
            }
        } else {
            cast(Ty::I32, var(total[i]))
        };
        tb.push(Stmt::If {
            cond: cmp(CmpOp::Lt, add(var(m0), i64c(i as i64)), dim(dm)),
            then: vec![Stmt::Store {
                buf: p.out,
                index: add(mul(add(var(m0), i64c(i as i64)), dim(dn)), var(n)),
                value,
            }],
        });
    }
    out.push(Stmt::If {
        cond: cmp(
            CmpOp::Lt,
            var(t),
            mul(dim(dn), ceil_div(dim(dm), tm as i64)),
        ),
        then: tb,
    });
    out
}
