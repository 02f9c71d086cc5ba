//! The CPU schedule.
//!
//! ```text
//! parallel for n in 0..N:                     // weight rows split across threads
//!   for m0 in 0..M step TM:                   // TM activation rows share each decoded chunk
//!     facc[i] = 0                             // f32, one per row of the tile
//!     for g in 0..groups:
//!       acc[i] = 0                            // i32/i64 (proved) or f32
//!       for kc in whole chunks of the group:  // constant-position unpack
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
use super::unpack::{chunk_for, decode_chunk, decode_one, row_bytes};
use super::{CpuOptions, Plan};
use crate::loop_ir::build::*;
use crate::loop_ir::{CmpOp, Expr, Func, Launch, LoopKind, Stmt, Ty};

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
    let kc_end = f.var("kc_end", Ty::I64);
    match chunk {
        Some(c) => {
            let cw = c.weights as i64;
            g_body.push(Stmt::Let(
                kc_end,
                add(var(k0), mul(div(sub(var(k1), var(k0)), i64c(cw)), i64c(cw))),
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
                start: var(k0),
                end: var(kc_end),
                step: cw,
                kind: LoopKind::Serial,
                body: kc_body,
            });
        }
        None => g_body.push(Stmt::Let(kc_end, var(k0))),
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
    m_body.push(Stmt::For {
        var: g,
        start: i64c(0),
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
