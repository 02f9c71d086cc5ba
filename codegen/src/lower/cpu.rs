//! The CPU schedule.
//!
//! ```text
//! parallel for n in 0..N:                     // weight rows split across threads
//!   for m0 in 0..M step TM:                   // TM activation rows share each decoded chunk
//!     facc[i] = 0                             // f32, one per row of the tile
//!     for g in groups of whole blocks:       // only with `packed_dot` (i8 × packed ints)
//!       acc[i] = Σ unrolled dot_packed(x[row i, block], weight block)
//!       facc[i] += f32(acc[i]) * group scales
//!     for g in the other groups:
//!       acc[i] = 0                            // i32/i64 (proved) or f32
//!       for kb in whole 64-unit blocks:       // only with `packed_dot`
//!         acc[i] = dot_packed(x[row i, kb..], weight block, acc[i])
//!       for kc in the rest's whole chunks:    // constant-position unpack
//!         codes = bfe(load chunk bytes)
//!         acc[i] = dot(x[row i, kc..], codes, acc[i])
//!       for k in the group's tail:            // generic unpack
//!         acc[i] += x[row i, k] * code(k)
//!       facc[i] += f32(acc[i]) * group scales
//!     y[m0 + i, n] = facc[i] * row/col scales   (rows past M are computed on row M-1
//!                                                 and not stored)
//! ```

// Loops over the rows of a tile index several parallel per-row arrays at once.
#![allow(clippy::needless_range_loop)]

use super::scales::{group_scale, outer_scale};
use super::unpack::{chunk_for, decode_chunk, decode_one, row_bytes, Chunk};
use super::{CpuOptions, Plan};
use crate::loop_ir::build::*;
use crate::loop_ir::{CmpOp, Expr, Func, Launch, LoopKind, Stmt, Ty, Var};

pub fn lower(p: &Plan, o: &CpuOptions) -> Func {
    let mut f = Func::new(
        p.name.clone(),
        p.bufs.clone(),
        p.dim_names.clone(),
        Launch::Cpu,
    );
    f.notes = p.notes.clone();
    let tm = o.tile_m.max(1) as usize;
    let l = p.layout;
    let align = p.group.map(|g| g as usize / l.per_unit());
    let chunk = if o.chunked_unpack {
        chunk_for(&l, align)
    } else {
        None
    };
    f.notes.push(format!(
        "schedule cpu: parallel over {}, tile_m = {tm}, unpack chunk = {}",
        p.dim_names[p.n],
        match chunk {
            Some(c) => format!("{} weights in {} bytes", c.weights, c.bytes),
            None => "none (generic unpack)".into(),
        }
    ));
    let (dm, dn, dk) = (p.m, p.n, p.k);
    let gsize: Expr = match p.group {
        Some(g) => i64c(g as i64),
        None => dim(dk),
    };
    let groups: Expr = match p.group {
        Some(g) => ceil_div(dim(dk), g as i64),
        None => i64c(1),
    };

    let n = f.var("n", Ty::I64);
    let mut n_body = Vec::new();
    let wrow = f.var("wrow", Ty::I64);
    n_body.push(Stmt::Let(wrow, mul(var(n), row_bytes(&l, dk))));
    let m0 = f.var("m0", Ty::I64);
    let mut m_body = Vec::new();
    let mut rows = Vec::new();
    let mut arow = Vec::new();
    let mut facc = Vec::new();
    for i in 0..tm {
        let r = f.var(format!("row{i}"), Ty::I64);
        m_body.push(Stmt::Let(
            r,
            min(add(var(m0), i64c(i as i64)), sub(dim(dm), i64c(1))),
        ));
        let a = f.var(format!("arow{i}"), Ty::I64);
        m_body.push(Stmt::Let(a, mul(var(r), dim(dk))));
        let fa = f.var(format!("facc{i}"), Ty::F32);
        m_body.push(Stmt::Let(fa, f32c(0.0)));
        rows.push(r);
        arow.push(a);
        facc.push(fa);
    }
    let g = f.var("g", Ty::I64);
    let mut g_body = Vec::new();
    let k0 = f.var("k0", Ty::I64);
    g_body.push(Stmt::Let(k0, mul(var(g), gsize.clone())));
    let k1 = f.var("k1", Ty::I64);
    g_body.push(Stmt::Let(k1, min(add(var(k0), gsize.clone()), dim(dk))));
    let zero = match p.acc {
        Ty::F32 => f32c(0.0),
        t => Expr::Int(0, t),
    };
    let mut acc = Vec::new();
    for i in 0..tm {
        let a = f.var(format!("acc{i}"), p.acc);
        g_body.push(Stmt::Let(a, zero.clone()));
        acc.push(a);
    }
    // Whole 64-unit blocks first, when the target decodes them at once.
    let block = packed_block(p, o, chunk);
    let kc_start = match block {
        Some(bw) => {
            let kb_end = f.var("kb_end", Ty::I64);
            g_body.push(Stmt::Let(
                kb_end,
                add(var(k0), mul(div(sub(var(k1), var(k0)), i64c(bw)), i64c(bw))),
            ));
            let kb = f.var("kb", Ty::I64);
            let kb_body = (0..tm)
                .map(|i| block_dot(p, bw, arow[i], wrow, var(kb), acc[i]))
                .collect();
            g_body.push(Stmt::For {
                var: kb,
                start: var(k0),
                end: var(kb_end),
                step: bw,
                kind: LoopKind::Serial,
                body: kb_body,
            });
            var(kb_end)
        }
        None => var(k0),
    };
    let kc_end = f.var("kc_end", Ty::I64);
    match chunk {
        Some(c) => {
            let cw = c.weights as i64;
            g_body.push(Stmt::Let(
                kc_end,
                add(
                    kc_start.clone(),
                    mul(div(sub(var(k1), kc_start.clone()), i64c(cw)), i64c(cw)),
                ),
            ));
            let kc = f.var("kc", Ty::I64);
            let mut kc_body = vec![Stmt::Comment(format!(
                "unpack {} weights from {} bytes at constant bit positions",
                c.weights, c.bytes
            ))];
            let codes = decode_chunk(&mut f, &mut kc_body, &l, &c, p.weight, var(wrow), var(kc));
            for i in 0..tm {
                kc_body.push(Stmt::Set(
                    acc[i],
                    Expr::DotRun {
                        buf: p.act,
                        index: Box::new(add(var(arow[i]), var(kc))),
                        codes: codes.clone(),
                        acc: Box::new(var(acc[i])),
                    },
                ));
            }
            g_body.push(Stmt::For {
                var: kc,
                start: kc_start,
                end: var(kc_end),
                step: cw,
                kind: LoopKind::Serial,
                body: kc_body,
            });
        }
        None => g_body.push(Stmt::Let(kc_end, kc_start)),
    }
    let kt = f.var("k", Ty::I64);
    let mut tail = vec![Stmt::Comment("tail: generic unpack".into())];
    let code = decode_one(&mut f, &mut tail, &l, p.weight, var(wrow), var(kt));
    for i in 0..tm {
        let a = load(p.act, add(var(arow[i]), var(kt)));
        let prod = if p.acc == Ty::F32 {
            mul(a, cast(Ty::F32, var(code)))
        } else {
            mul(cast(p.acc, a), cast(p.acc, var(code)))
        };
        tail.push(Stmt::Set(acc[i], add(var(acc[i]), prod)));
    }
    g_body.push(Stmt::For {
        var: kt,
        start: var(kc_end),
        end: var(k1),
        step: 1,
        kind: LoopKind::Serial,
        body: tail,
    });
    for i in 0..tm {
        let partial = if p.acc == Ty::F32 {
            var(acc[i])
        } else {
            cast(Ty::F32, var(acc[i]))
        };
        let scaled = match group_scale(p, &var(rows[i]), &var(n), &var(g), &groups) {
            Some(s) => mul(partial, s),
            None => partial,
        };
        g_body.push(Stmt::Set(facc[i], add(var(facc[i]), scaled)));
    }
    let int_out = p.out_elem == crate::loop_ir::Elem::I32;
    if int_out {
        // Exact integer output: one group spanning K, stored without float conversion.
        let mut g_body_int = g_body;
        g_body_int.retain(|s| !matches!(s, Stmt::Set(v, _) if facc.contains(v)));
        for i in 0..tm {
            g_body_int.push(Stmt::If {
                cond: cmp(CmpOp::Lt, add(var(m0), i64c(i as i64)), dim(dm)),
                then: vec![Stmt::Store {
                    buf: p.out,
                    index: add(mul(add(var(m0), i64c(i as i64)), dim(dn)), var(n)),
                    value: cast(Ty::I32, var(acc[i])),
                }],
            });
        }
        g_body = g_body_int;
    }
    // Groups made of whole blocks are peeled into a loop of their own whose body is
    // only the blocks (unrolled) and the scale: no chunk or tail loop to set up.
    let mut first_general = i64c(0);
    if let (Some(bw), Some(gs), false) = (block, p.group, int_out) {
        let full = div(dim(dk), i64c(gs as i64));
        let gf = f.var("gf", Ty::I64);
        let mut body = Vec::new();
        let kf = f.var("kf", Ty::I64);
        body.push(Stmt::Let(kf, mul(var(gf), i64c(gs as i64))));
        let accf: Vec<_> = (0..tm)
            .map(|i| f.var(format!("accf{i}"), Ty::I32))
            .collect();
        for &a in &accf {
            body.push(Stmt::Let(a, Expr::Int(0, Ty::I32)));
        }
        let j = f.var("jb", Ty::I64);
        let kb = add(var(kf), var(j));
        let blocks = (0..tm)
            .map(|i| block_dot(p, bw, arow[i], wrow, kb.clone(), accf[i]))
            .collect();
        body.push(Stmt::For {
            var: j,
            start: i64c(0),
            end: i64c(gs as i64),
            step: bw,
            // Unrolled for the usual groups (≤ 4 blocks); large groups keep a loop.
            kind: if gs as i64 / bw <= 4 {
                LoopKind::Unroll
            } else {
                LoopKind::Serial
            },
            body: blocks,
        });
        for i in 0..tm {
            let partial = cast(Ty::F32, var(accf[i]));
            let scaled = match group_scale(p, &var(rows[i]), &var(n), &var(gf), &groups) {
                Some(sc) => mul(partial, sc),
                None => partial,
            };
            body.push(Stmt::Set(facc[i], add(var(facc[i]), scaled)));
        }
        m_body.push(Stmt::For {
            var: gf,
            start: i64c(0),
            end: full.clone(),
            step: 1,
            kind: LoopKind::Serial,
            body,
        });
        first_general = full;
    }
    m_body.push(Stmt::For {
        var: g,
        start: first_general,
        end: groups.clone(),
        step: 1,
        kind: LoopKind::Serial,
        body: g_body,
    });
    if !int_out {
        for i in 0..tm {
            let v = match outer_scale(p, &var(rows[i]), &var(n)) {
                Some(s) => mul(var(facc[i]), s),
                None => var(facc[i]),
            };
            m_body.push(Stmt::If {
                cond: cmp(CmpOp::Lt, add(var(m0), i64c(i as i64)), dim(dm)),
                then: vec![Stmt::Store {
                    buf: p.out,
                    index: add(mul(var(rows[i]), dim(dn)), var(n)),
                    value: v,
                }],
            });
        }
    }
    n_body.push(Stmt::For {
        var: m0,
        start: i64c(0),
        end: dim(dm),
        step: tm as i64,
        kind: LoopKind::Serial,
        body: m_body,
    });
    f.body.push(Stmt::For {
        var: n,
        start: i64c(0),
        end: dim(dn),
        step: 1,
        kind: LoopKind::Parallel,
        body: n_body,
    });
    f
}

/// `acc = dot_packed(...)` over the `bw`-weight block whose first weight is `k` (a
/// multiple of the block), activations of the row at `arow`, weights of the row
/// starting at byte `wrow`.
fn block_dot(p: &Plan, bw: i64, arow: Var, wrow: Var, k: Expr, acc: Var) -> Stmt {
    let stride = crate::loop_ir::packed_stride_bits(&p.layout) as i64;
    let per = p.layout.per_unit() as i64;
    let byte_offset = add(
        var(wrow),
        div(mul(div(k.clone(), i64c(per)), i64c(stride)), i64c(8)),
    );
    Stmt::Set(
        acc,
        Expr::DotPacked {
            act: p.act,
            act_index: Box::new(add(var(arow), k)),
            wbuf: p.weight,
            byte_offset: Box::new(byte_offset),
            layout: p.layout,
            count: bw as u32,
            acc: Box::new(var(acc)),
        },
    )
}

/// Weights per `DotPacked` block when the schedule uses them: i8 activations, an `I32`
/// accumulator, 1 or 2 fields per unit, and groups (if any) made of whole blocks, so
/// a block never straddles a group and starts on a byte, and the chunks after the
/// blocks still start on a multiple of their size.
fn packed_block(p: &Plan, o: &CpuOptions, chunk: Option<Chunk>) -> Option<i64> {
    let per = p.layout.per_unit();
    let bw = 64 * per as i64;
    let ok = o.packed_dot
        && o.chunked_unpack
        && (1..=2).contains(&per)
        && p.acc == Ty::I32
        && p.bufs[p.act].elem == crate::loop_ir::Elem::I8
        && p.group.is_none_or(|g| g as i64 % bw == 0)
        && chunk.is_none_or(|c| bw % c.weights as i64 == 0);
    ok.then_some(bw)
}
