//! Loop-IR interpreter: the executable definition of every loop-IR operation.
//!
//! GPU functions run SIMT-style: each warp executes its 32 lanes in lockstep with an
//! active mask, so `WarpSum` sees real lane values and divergent lanes are caught.
//! Every memory access is bounds-checked, so an out-of-bounds load or store produced
//! by a lowering is an error here (a CPU-side memcheck), not silent corruption.
//! CPU functions run as a single lane.

use half::{bf16, f16};

use super::*;

/// An interpreter failure: a lowering bug, reported with what went wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    #[error("{what} of `{buf}` at byte {offset} (+{len}) is out of bounds ({size} bytes)")]
    OutOfBounds {
        what: &'static str,
        buf: String,
        offset: i64,
        len: usize,
        size: usize,
    },
    #[error("warp_sum of %{var} executed with inactive lanes (mask {mask:#010x})")]
    DivergentWarpSum { var: String, mask: u32 },
    #[error("mma into %{var} executed with inactive lanes (mask {mask:#010x})")]
    DivergentMma { var: String, mask: u32 },
    #[error("unaligned 16-byte vector load of `{buf}` at byte {offset}")]
    Unaligned { buf: String, offset: i64 },
    #[error("block_sync inside a loop or branch (it must be at the top level of the body)")]
    NestedBlockSync,
    #[error("lane {lane} reached a block barrier or the end with asynchronous copies in flight (no cp_async_wait covers them)")]
    AsyncInFlight { lane: usize },
    #[error("division by zero")]
    DivByZero,
    #[error("expected {expected} buffers, got {got}")]
    BufCount { expected: usize, got: usize },
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum V {
    I(i64),
    F(f32),
}

impl V {
    fn i(self) -> i64 {
        match self {
            V::I(v) => v,
            V::F(f) => f as i64,
        }
    }
    fn f(self) -> f32 {
        match self {
            V::F(f) => f,
            V::I(v) => v as f32,
        }
    }
}

fn wrap(v: i64, t: Ty) -> i64 {
    match t {
        Ty::I32 => v as i32 as i64,
        _ => v,
    }
}

struct Machine<'a> {
    f: &'a Func,
    bufs: &'a mut [Vec<u8>],
    dims: &'a [i64],
    /// vars[var][lane]
    vars: Vec<Vec<V>>,
    lanes: usize,
    /// The block's shared memory (shared by its warps), poisoned at the start.
    shared: Vec<u8>,
    thread_base: i64,
    block: i64,
    block_dim: i64,
    /// Per lane: asynchronous copies not yet committed, then committed groups in
    /// order (shared offset and bytes), held back until a wait covers them.
    copies: Vec<LaneCopies>,
}

/// A lane's asynchronous copies in flight (see [`AsyncOp`]).
#[derive(Clone, Debug, Default)]
struct LaneCopies {
    open: Vec<(usize, [u8; 16])>,
    groups: std::collections::VecDeque<Vec<(usize, [u8; 16])>>,
}

impl LaneCopies {
    fn in_flight(&self) -> bool {
        !self.open.is_empty() || self.groups.iter().any(|g| !g.is_empty())
    }
}

const FULL: u32 = u32::MAX;

impl Machine<'_> {
    fn bytes(
        &self,
        buf: usize,
        offset: i64,
        len: usize,
        what: &'static str,
    ) -> Result<&[u8], EvalError> {
        let b = &self.bufs[buf];
        if offset < 0 || offset as usize + len > b.len() {
            return Err(EvalError::OutOfBounds {
                what,
                buf: self.f.bufs[buf].name.clone(),
                offset,
                len,
                size: b.len(),
            });
        }
        Ok(&b[offset as usize..offset as usize + len])
    }

    fn eval(&self, e: &Expr, lane: usize) -> Result<V, EvalError> {
        Ok(match e {
            Expr::Int(v, t) => V::I(wrap(*v, *t)),
            Expr::F32(v) => V::F(*v),
            Expr::Var(v) => self.vars[v.0 as usize][lane],
            Expr::Dim(d) => V::I(self.dims[*d]),
            Expr::Special(s) => {
                let tid = self.thread_base + lane as i64;
                V::I(match s {
                    Special::ThreadIdx => tid,
                    Special::BlockIdx => self.block,
                    Special::BlockDim => self.block_dim,
                    Special::LaneId => tid % 32,
                })
            }
            Expr::Bin(op, a, b) => {
                let t = self.f.ty(a);
                let x = self.eval(a, lane)?;
                let y = self.eval(b, lane)?;
                if t == Ty::F32 {
                    let (x, y) = (x.f(), y.f());
                    V::F(match op {
                        BinOp::Add => x + y,
                        BinOp::Sub => x - y,
                        BinOp::Mul => x * y,
                        BinOp::Div => x / y,
                        BinOp::Min => x.min(y),
                        BinOp::Max => x.max(y),
                        _ => f32::NAN,
                    })
                } else {
                    let (x, y) = (x.i(), y.i());
                    let bits = if t == Ty::I32 { 32 } else { 64 };
                    let r = match op {
                        BinOp::Add => x.wrapping_add(y),
                        BinOp::Sub => x.wrapping_sub(y),
                        BinOp::Mul => x.wrapping_mul(y),
                        BinOp::Div => {
                            if y == 0 {
                                return Err(EvalError::DivByZero);
                            }
                            x.wrapping_div(y)
                        }
                        BinOp::Rem => {
                            if y == 0 {
                                return Err(EvalError::DivByZero);
                            }
                            x.wrapping_rem(y)
                        }
                        BinOp::Min => x.min(y),
                        BinOp::Max => x.max(y),
                        BinOp::And => x & y,
                        BinOp::Or => x | y,
                        BinOp::Xor => x ^ y,
                        BinOp::Shl => x.wrapping_shl((y & (bits - 1)) as u32),
                        BinOp::Sar => x >> (y & (bits - 1)),
                        BinOp::Shr => {
                            let s = (y & (bits - 1)) as u32;
                            if bits == 32 {
                                ((x as u32) >> s) as i64
                            } else {
                                ((x as u64) >> s) as i64
                            }
                        }
                    };
                    V::I(wrap(r, t))
                }
            }
            Expr::Cmp(op, a, b) => {
                let t = self.f.ty(a);
                let x = self.eval(a, lane)?;
                let y = self.eval(b, lane)?;
                let r = if t == Ty::F32 {
                    let (x, y) = (x.f(), y.f());
                    match op {
                        CmpOp::Lt => x < y,
                        CmpOp::Le => x <= y,
                        CmpOp::Eq => x == y,
                        CmpOp::Ne => x != y,
                    }
                } else {
                    let (x, y) = (x.i(), y.i());
                    match op {
                        CmpOp::Lt => x < y,
                        CmpOp::Le => x <= y,
                        CmpOp::Eq => x == y,
                        CmpOp::Ne => x != y,
                    }
                };
                V::I(r as i64)
            }
            Expr::Select(c, a, b) => {
                if self.eval(c, lane)?.i() != 0 {
                    self.eval(a, lane)?
                } else {
                    self.eval(b, lane)?
                }
            }
            Expr::Cast(t, a) => {
                let from = self.f.ty(a);
                let v = self.eval(a, lane)?;
                match (from, t) {
                    (Ty::F32, Ty::F32) => v,
                    (_, Ty::F32) => V::F(v.i() as f32),
                    (Ty::F32, _) => V::I(wrap(v.f() as i64, *t)),
                    (_, _) => V::I(wrap(v.i(), *t)),
                }
            }
            Expr::Load { buf, index } => {
                let elem = self.f.bufs[*buf].elem;
                let i = self.eval(index, lane)?.i();
                let sz = elem.bytes();
                let b = self.bytes(*buf, i.wrapping_mul(sz as i64), sz, "load")?;
                match elem {
                    Elem::I8 => V::I(b[0] as i8 as i64),
                    Elem::U8 => V::I(b[0] as i64),
                    Elem::I32 => V::I(i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64),
                    Elem::F16 => V::F(f16::from_le_bytes([b[0], b[1]]).to_f32()),
                    Elem::BF16 => V::F(bf16::from_le_bytes([b[0], b[1]]).to_f32()),
                    Elem::F32 => V::F(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                }
            }
            Expr::LoadBytes { buf, offset, bytes } => {
                let o = self.eval(offset, lane)?.i();
                let b = self.bytes(*buf, o, *bytes as usize, "byte load")?;
                let mut v = 0u64;
                for (i, &x) in b.iter().enumerate() {
                    v |= (x as u64) << (8 * i);
                }
                V::I(if *bytes > 4 {
                    v as i64
                } else {
                    v as u32 as i32 as i64
                })
            }
            Expr::Bfe {
                value,
                pos,
                len,
                signed,
            } => {
                let t = self.f.ty(value);
                let bits = if t == Ty::I32 { 32 } else { 64 };
                let v = self.eval(value, lane)?.i();
                let raw = if bits == 32 {
                    (v as u32 as u64) >> pos
                } else {
                    (v as u64) >> pos
                };
                let mask = if *len >= 64 {
                    u64::MAX
                } else {
                    (1u64 << len) - 1
                };
                let mut r = (raw & mask) as i64;
                if *signed && *len > 0 && *len < 64 && (r >> (len - 1)) & 1 == 1 {
                    // Sign-extend by shifting the field to the top and back (no overflow at 63 bits).
                    r = (r << (64 - len)) >> (64 - len);
                }
                V::I(wrap(r, t))
            }
            Expr::DotRun {
                buf,
                index,
                codes,
                acc,
            } => {
                let t = self.f.ty(acc);
                let base = self.eval(index, lane)?.i();
                let mut s = self.eval(acc, lane)?;
                for (j, c) in codes.iter().enumerate() {
                    let a = self.eval(
                        &Expr::Load {
                            buf: *buf,
                            index: Box::new(Expr::Int(base + j as i64, Ty::I64)),
                        },
                        lane,
                    )?;
                    let w = self.vars[c.0 as usize][lane];
                    s = if t == Ty::F32 {
                        V::F(s.f() + a.f() * w.f())
                    } else {
                        V::I(wrap(s.i().wrapping_add(a.i().wrapping_mul(w.i())), t))
                    };
                }
                s
            }
            Expr::DotPacked {
                act,
                act_index,
                wbuf,
                byte_offset,
                layout,
                count,
                acc,
            } => {
                let base = self.eval(act_index, lane)?.i();
                let off = self.eval(byte_offset, lane)?.i();
                let per = layout.per_unit();
                let stride = super::packed_stride_bits(layout);
                let nbytes = super::packed_block_bytes(layout, *count);
                let w = self.bytes(*wbuf, off, nbytes, "packed weight block")?;
                let mut s = self.eval(acc, lane)?.i();
                for j in 0..*count as usize {
                    let fd = layout.field_of(j);
                    let bit = (j / per) * stride + fd.shift as usize;
                    let mut raw = 0u32;
                    for b in 0..fd.bits as usize {
                        let p = bit + b;
                        raw |= (((w[p / 8] >> (p % 8)) & 1) as u32) << b;
                    }
                    let code = if fd.signed && raw >> (fd.bits - 1) & 1 == 1 {
                        raw as i64 - (1i64 << fd.bits)
                    } else {
                        raw as i64
                    };
                    let a = self.eval(
                        &Expr::Load {
                            buf: *act,
                            index: Box::new(Expr::Int(base + j as i64, Ty::I64)),
                        },
                        lane,
                    )?;
                    s = wrap(s.wrapping_add(a.i().wrapping_mul(code)), Ty::I32);
                }
                V::I(s)
            }
            Expr::Dot4 { a, b, acc } => {
                let x = self.eval(a, lane)?.i() as u32;
                let y = self.eval(b, lane)?.i() as u32;
                let mut s = self.eval(acc, lane)?.i();
                for i in 0..4 {
                    s += ((x >> (8 * i)) as u8 as i8 as i64) * ((y >> (8 * i)) as u8 as i8 as i64);
                }
                V::I(wrap(s, Ty::I32))
            }
            Expr::BytePerm { a, b, sel } => {
                let x = self.eval(a, lane)?.i() as u32 as u64;
                let y = self.eval(b, lane)?.i() as u32 as u64;
                V::I(byte_perm(x | y << 32, *sel) as i32 as i64)
            }
            Expr::FromBits(a) => V::F(f32::from_bits(self.eval(a, lane)?.i() as u32)),
            Expr::HFma2 { a, b, c } => {
                let (x, y, z) = (
                    self.eval(a, lane)?.i() as u32,
                    self.eval(b, lane)?.i() as u32,
                    self.eval(c, lane)?.i() as u32,
                );
                V::I(hfma2(x, y, z) as i32 as i64)
            }
            Expr::F16ToF32(a) => V::F(f16::from_bits(self.eval(a, lane)?.i() as u16).to_f32()),
            Expr::LoadShared(o) => {
                let o = self.eval(o, lane)?.i();
                let b = self.shared_bytes(o, 4, "shared load")?;
                V::I(i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64)
            }
        })
    }

    /// `len` bytes of shared memory at `offset` (aligned to `len`), bounds-checked.
    fn shared_bytes(
        &self,
        offset: i64,
        len: usize,
        what: &'static str,
    ) -> Result<&[u8], EvalError> {
        let size = self.shared.len();
        if offset < 0 || offset as usize + len > size {
            return Err(EvalError::OutOfBounds {
                what,
                buf: "shared".into(),
                offset,
                len,
                size,
            });
        }
        if offset % len as i64 != 0 {
            return Err(EvalError::Unaligned {
                buf: "shared".into(),
                offset,
            });
        }
        Ok(&self.shared[offset as usize..offset as usize + len])
    }

    fn active(&self, mask: u32) -> impl Iterator<Item = usize> {
        let lanes = self.lanes;
        (0..lanes).filter(move |l| mask >> l & 1 == 1)
    }

    /// One asynchronous-copy operation on the active lanes: a copy reads its source
    /// now (the weights are read-only) and writes shared memory at the wait that
    /// covers its group.
    fn exec_async(&mut self, op: &AsyncOp, mask: u32) -> Result<(), EvalError> {
        if self.copies.len() < self.lanes {
            self.copies.resize(self.lanes, LaneCopies::default());
        }
        for l in self.active(mask).collect::<Vec<_>>() {
            match op {
                AsyncOp::Copy16 {
                    shared,
                    buf,
                    offset,
                } => {
                    let sh = self.eval(shared, l)?.i();
                    self.shared_bytes(sh, 16, "cp_async16 destination")?;
                    let o = self.eval(offset, l)?.i();
                    if o % 16 != 0 {
                        return Err(EvalError::Unaligned {
                            buf: self.f.bufs[*buf].name.clone(),
                            offset: o,
                        });
                    }
                    let mut b = [0u8; 16];
                    b.copy_from_slice(self.bytes(*buf, o, 16, "cp_async16 source")?);
                    self.copies[l].open.push((sh as usize, b));
                }
                AsyncOp::Commit => {
                    let c = &mut self.copies[l];
                    let g = std::mem::take(&mut c.open);
                    c.groups.push_back(g);
                }
                AsyncOp::Wait(n) => {
                    while self.copies[l].groups.len() > *n as usize {
                        let g = self.copies[l].groups.pop_front().unwrap_or_default();
                        for (at, b) in g {
                            self.shared[at..at + 16].copy_from_slice(&b);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn exec(&mut self, body: &[Stmt], mask: u32) -> Result<(), EvalError> {
        if mask == 0 {
            return Ok(());
        }
        for s in body {
            match s {
                Stmt::Let(v, e) | Stmt::Set(v, e) => {
                    for l in self.active(mask).collect::<Vec<_>>() {
                        let x = self.eval(e, l)?;
                        self.vars[v.0 as usize][l] = x;
                    }
                }
                Stmt::For {
                    var,
                    start,
                    end,
                    step,
                    body,
                    ..
                } => {
                    let lanes: Vec<usize> = self.active(mask).collect();
                    let mut ends = vec![0i64; self.lanes];
                    for &l in &lanes {
                        let s0 = self.eval(start, l)?;
                        self.vars[var.0 as usize][l] = s0;
                        ends[l] = self.eval(end, l)?.i();
                    }
                    loop {
                        let mut m = 0u32;
                        for &l in &lanes {
                            if self.vars[var.0 as usize][l].i() < ends[l] {
                                m |= 1 << l;
                            }
                        }
                        if m == 0 {
                            break;
                        }
                        self.exec(body, m)?;
                        for &l in &lanes {
                            if m >> l & 1 == 1 {
                                let v = self.vars[var.0 as usize][l].i();
                                self.vars[var.0 as usize][l] = V::I(v + step);
                            }
                        }
                    }
                }
                Stmt::If { cond, then } => {
                    let mut m = 0u32;
                    for l in self.active(mask).collect::<Vec<_>>() {
                        if self.eval(cond, l)?.i() != 0 {
                            m |= 1 << l;
                        }
                    }
                    self.exec(then, m)?;
                }
                Stmt::Store { buf, index, value } => {
                    let elem = self.f.bufs[*buf].elem;
                    for l in self.active(mask).collect::<Vec<_>>() {
                        let i = self.eval(index, l)?.i();
                        let v = self.eval(value, l)?;
                        let bytes: Vec<u8> = match elem {
                            Elem::I8 | Elem::U8 => vec![v.i() as u8],
                            Elem::I32 => (v.i() as i32).to_le_bytes().to_vec(),
                            Elem::F16 => f16::from_f32(v.f()).to_le_bytes().to_vec(),
                            Elem::BF16 => bf16::from_f32(v.f()).to_le_bytes().to_vec(),
                            Elem::F32 => v.f().to_le_bytes().to_vec(),
                        };
                        let off = i.wrapping_mul(elem.bytes() as i64);
                        self.bytes(*buf, off, bytes.len(), "store")?;
                        let o = off as usize;
                        self.bufs[*buf][o..o + bytes.len()].copy_from_slice(&bytes);
                    }
                }
                Stmt::LoadVec4 { dst, buf, offset } => {
                    for l in self.active(mask).collect::<Vec<_>>() {
                        let o = self.eval(offset, l)?.i();
                        if o % 16 != 0 {
                            return Err(EvalError::Unaligned {
                                buf: self.f.bufs[*buf].name.clone(),
                                offset: o,
                            });
                        }
                        let b = self.bytes(*buf, o, 16, "vector load")?.to_vec();
                        for (i, d) in dst.iter().enumerate() {
                            let w = i32::from_le_bytes([
                                b[4 * i],
                                b[4 * i + 1],
                                b[4 * i + 2],
                                b[4 * i + 3],
                            ]);
                            self.vars[d.0 as usize][l] = V::I(w as i64);
                        }
                    }
                }
                Stmt::WarpSum(v) => {
                    let full = if self.lanes >= 32 {
                        FULL
                    } else {
                        (1u32 << self.lanes) - 1
                    };
                    if mask != full {
                        return Err(EvalError::DivergentWarpSum {
                            var: self.f.var_name(*v).to_string(),
                            mask,
                        });
                    }
                    let t = self.f.var_ty(*v);
                    let vals = &self.vars[v.0 as usize];
                    let s = if t == Ty::F32 {
                        // Butterfly order, as a shuffle reduction computes it.
                        let mut cur: Vec<f32> = vals.iter().map(|x| x.f()).collect();
                        let mut off = self.lanes / 2;
                        while off > 0 {
                            let prev = cur.clone();
                            for (l, c) in cur.iter_mut().enumerate() {
                                *c = prev[l] + prev[l ^ off];
                            }
                            off /= 2;
                        }
                        cur.into_iter().map(V::F).collect::<Vec<_>>()
                    } else {
                        let s: i64 = vals.iter().map(|x| x.i()).sum();
                        vec![V::I(wrap(s, t)); self.lanes]
                    };
                    self.vars[v.0 as usize] = s;
                }
                Stmt::StoreShared4 { offset, src } => {
                    for l in self.active(mask).collect::<Vec<_>>() {
                        let o = self.eval(offset, l)?.i();
                        self.shared_bytes(o, 16, "shared store")?;
                        for (i, s) in src.iter().enumerate() {
                            let w = match self.vars[s.0 as usize][l] {
                                V::F(x) => x.to_bits().to_le_bytes(),
                                V::I(x) => (x as i32).to_le_bytes(),
                            };
                            let at = o as usize + 4 * i;
                            self.shared[at..at + 4].copy_from_slice(&w);
                        }
                    }
                }
                // Lanes run in lockstep here: every store before the barrier is done.
                Stmt::WarpSync => {}
                Stmt::Async(op) => self.exec_async(op, mask)?,
                // Top-level barriers split the body in `run`; one reached here is nested.
                Stmt::BlockSync => return Err(EvalError::NestedBlockSync),
                Stmt::Mma { shape, d, a, b, c } => {
                    if mask != FULL || self.lanes != 32 {
                        return Err(EvalError::DivergentMma {
                            var: self.f.var_name(d[0]).to_string(),
                            mask,
                        });
                    }
                    let reg = |v: Var, l: usize| self.vars[v.0 as usize][l].i() as u32;
                    // Elements per register and their decoding.
                    let (e, kk) = match shape {
                        MmaShape::F16F32 => (2, 16),
                        MmaShape::S8S32 => (4, 32),
                    };
                    let elem = |w: u32, i: usize| -> f64 {
                        match shape {
                            MmaShape::F16F32 => f16::from_bits((w >> (16 * i)) as u16).to_f64(),
                            MmaShape::S8S32 => f64::from((w >> (8 * i)) as u8 as i8),
                        }
                    };
                    let mut am = [[0f64; 32]; 16];
                    let mut bm = [[0f64; 8]; 32];
                    for l in 0..32 {
                        let (g, t) = (l / 4, l % 4);
                        for (i, &v) in a.iter().enumerate() {
                            let (r, k) = (g + 8 * (i % 2), e * t + kk / 2 * (i / 2));
                            for h in 0..e {
                                am[r][k + h] = elem(reg(v, l), h);
                            }
                        }
                        for (i, &v) in b.iter().enumerate() {
                            for h in 0..e {
                                bm[e * t + kk / 2 * i + h][g] = elem(reg(v, l), h);
                            }
                        }
                    }
                    let mut out = vec![[V::I(0); 4]; 32];
                    for (l, o) in out.iter_mut().enumerate() {
                        let (g, t) = (l / 4, l % 4);
                        for (i, x) in o.iter_mut().enumerate() {
                            let (r, n) = (g + 8 * (i / 2), 2 * t + i % 2);
                            let cv = self.vars[c[i].0 as usize][l];
                            *x = match shape {
                                MmaShape::F16F32 => {
                                    let s: f64 = (0..kk).map(|k| am[r][k] * bm[k][n]).sum();
                                    V::F((s + f64::from(cv.f())) as f32)
                                }
                                MmaShape::S8S32 => {
                                    // Products of s8 values: every partial sum is exact in f64.
                                    let s: f64 = (0..kk).map(|k| am[r][k] * bm[k][n]).sum();
                                    V::I(i64::from((cv.i() as i32).wrapping_add(s as i32)))
                                }
                            };
                        }
                    }
                    for (l, o) in out.iter().enumerate() {
                        for (i, &v) in d.iter().enumerate() {
                            self.vars[v.0 as usize][l] = o[i];
                        }
                    }
                }
                Stmt::Comment(_) => {}
            }
        }
        Ok(())
    }
}

/// Runs `f` on raw little-endian buffers (inputs then output) and `I64` dims.
pub fn run(f: &Func, bufs: &mut [Vec<u8>], dims: &[i64]) -> Result<(), EvalError> {
    if bufs.len() != f.bufs.len() {
        return Err(EvalError::BufCount {
            expected: f.bufs.len(),
            got: bufs.len(),
        });
    }
    match &f.launch {
        Launch::Cpu => {
            let mut m = Machine {
                f,
                bufs,
                dims,
                vars: vec![vec![V::I(0); 1]; f.vars.len()],
                lanes: 1,
                shared: Vec::new(),
                thread_base: 0,
                block: 0,
                block_dim: 1,
                copies: Vec::new(),
            };
            m.exec(&f.body, 1)
        }
        Launch::Gpu { grid, block } => {
            let probe = Machine {
                f,
                bufs,
                dims,
                vars: Vec::new(),
                lanes: 1,
                shared: Vec::new(),
                thread_base: 0,
                block: 0,
                block_dim: *block as i64,
                copies: Vec::new(),
            };
            let blocks = probe.eval(grid, 0)?.i();
            let warps = (*block as usize).div_ceil(32);
            // The body between top-level barriers: every warp of a block runs one
            // segment before any runs the next (each keeps its own variables).
            let segments: Vec<&[Stmt]> = f.body.split(|s| matches!(s, Stmt::BlockSync)).collect();
            let mut m = Machine {
                f,
                bufs,
                dims,
                vars: Vec::new(),
                lanes: 32,
                shared: Vec::new(),
                thread_base: 0,
                block: 0,
                block_dim: *block as i64,
                copies: Vec::new(),
            };
            for b in 0..blocks {
                m.block = b;
                m.shared = vec![0xA5; f.shared_bytes];
                let mut state: Vec<Vec<Vec<V>>> = (0..warps)
                    .map(|w| vec![vec![V::I(0); 32.min(*block as usize - w * 32)]; f.vars.len()])
                    .collect();
                for seg in &segments {
                    for (w, vars) in state.iter_mut().enumerate() {
                        let lanes = 32.min(*block as usize - w * 32);
                        m.lanes = lanes;
                        m.thread_base = (w * 32) as i64;
                        m.vars = std::mem::take(vars);
                        let mask = if lanes >= 32 {
                            FULL
                        } else {
                            (1u32 << lanes) - 1
                        };
                        let r = m.exec(seg, mask);
                        *vars = std::mem::take(&mut m.vars);
                        r?;
                        // Copies may not outlive a barrier or the kernel.
                        if let Some(lane) = m.copies.iter().position(LaneCopies::in_flight) {
                            return Err(EvalError::AsyncInFlight { lane });
                        }
                        m.copies.clear();
                    }
                }
            }
            Ok(())
        }
    }
}

/// [`Expr::HFma2`] on raw words: each f16 half of the result is `a * b + c` of the
/// halves, computed exactly in f64 and rounded once to the nearest f16 (ties to even).
/// (f64 holds every product of two f16 values exactly; a sum is exact unless the
/// exponents of `a * b` and `c` differ by more than about 30, far past any tie.)
pub fn hfma2(a: u32, b: u32, c: u32) -> u32 {
    (0..2).fold(0u32, |r, h| {
        let x = |w: u32| f16::from_bits((w >> (16 * h)) as u16).to_f64();
        let v = f16::from_f64(x(a).mul_add(x(b), x(c)));
        r | u32::from(v.to_bits()) << (16 * h)
    })
}

/// [`Expr::BytePerm`] on the eight bytes `src` (byte 0 least significant).
pub fn byte_perm(src: u64, sel: u16) -> u32 {
    (0..4).fold(0u32, |r, i| {
        let from = u32::from(sel >> (4 * i)) & 7;
        r | (((src >> (8 * from)) as u32 & 0xff) << (8 * i))
    })
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;

    /// A one-warp kernel: lane `l` copies bytes `16 l ..` of `src` to shared byte
    /// `16 l`, runs `between`, then stores the first word of lane `31 - l`'s slot to
    /// `out[l]` (after a warp barrier), then runs `after`.
    fn copy_kernel(between: Vec<Stmt>, after: Vec<Stmt>) -> Func {
        let bufs = vec![
            Buf {
                name: "src".into(),
                elem: Elem::I32,
                output: false,
            },
            Buf {
                name: "out".into(),
                elem: Elem::I32,
                output: true,
            },
        ];
        let mut f = Func::new(
            "copies",
            bufs,
            Vec::new(),
            Launch::Gpu {
                grid: i64c(1),
                block: 32,
            },
        );
        f.shared_bytes = 512;
        let lane = f.var("lane", Ty::I32);
        f.body.push(Stmt::Let(lane, Expr::Special(Special::LaneId)));
        f.body.push(Stmt::Async(AsyncOp::Copy16 {
            shared: mul(var(lane), i32c(16)),
            buf: 0,
            offset: cast(Ty::I64, mul(var(lane), i32c(16))),
        }));
        f.body.extend(between);
        f.body.push(Stmt::WarpSync);
        f.body.push(Stmt::Store {
            buf: 1,
            index: cast(Ty::I64, var(lane)),
            value: Expr::LoadShared(Box::new(mul(sub(i32c(31), var(lane)), i32c(16)))),
        });
        f.body.extend(after);
        f
    }

    fn run_copies(f: &Func) -> Result<Vec<i32>, EvalError> {
        let src: Vec<u8> = (0..128i32)
            .flat_map(|i| (i * 7 + 1).to_le_bytes())
            .collect();
        let mut bufs = vec![src, vec![0u8; 128]];
        run(f, &mut bufs, &[])?;
        Ok(bufs[1]
            .chunks(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    /// Copies land at the wait that covers their group (and other lanes see them
    /// after a warp barrier); before it, shared memory holds its old bytes.
    #[test]
    fn async_copies_land_at_their_wait() {
        let waited = copy_kernel(
            vec![Stmt::Async(AsyncOp::Commit), Stmt::Async(AsyncOp::Wait(0))],
            Vec::new(),
        );
        let got = run_copies(&waited).unwrap();
        let want: Vec<i32> = (0..32).map(|l| (4 * (31 - l)) * 7 + 1).collect();
        assert_eq!(got, want);

        // Waiting for all but one group leaves the only group in flight: the read sees
        // the poison, and the copy is still in flight at the end.
        let early = copy_kernel(
            vec![Stmt::Async(AsyncOp::Commit), Stmt::Async(AsyncOp::Wait(1))],
            vec![Stmt::Async(AsyncOp::Wait(0))],
        );
        let got = run_copies(&early).unwrap();
        assert!(got.iter().all(|&v| v == 0xA5A5_A5A5u32 as i32), "{got:?}");
    }

    /// A copy never waited for (or never committed) is an error, as is a misaligned
    /// or out-of-bounds one.
    #[test]
    fn async_copies_in_flight_or_out_of_bounds_are_errors() {
        let never = copy_kernel(vec![Stmt::Async(AsyncOp::Commit)], Vec::new());
        assert_eq!(
            run_copies(&never),
            Err(EvalError::AsyncInFlight { lane: 0 })
        );
        let uncommitted = copy_kernel(vec![Stmt::Async(AsyncOp::Wait(0))], Vec::new());
        assert_eq!(
            run_copies(&uncommitted),
            Err(EvalError::AsyncInFlight { lane: 0 })
        );
        let mut past = copy_kernel(Vec::new(), Vec::new());
        past.shared_bytes = 256;
        assert!(matches!(
            run_copies(&past),
            Err(EvalError::OutOfBounds { .. })
        ));
    }
}
