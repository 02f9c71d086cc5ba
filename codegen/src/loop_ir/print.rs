//! Readable text form of the loop IR (`qkc emit --target loop-ir`).

use std::fmt::{self, Write};

use super::*;

impl Func {
    fn expr_str(&self, e: &Expr) -> String {
        match e {
            Expr::Int(v, Ty::I64) => format!("{v}"),
            Expr::Int(v, t) => format!("{v}:{}", t.name()),
            Expr::F32(v) => format!("{v:?}f"),
            Expr::Var(v) => format!("%{}", self.var_name(*v)),
            Expr::Dim(d) => self.dims[*d].clone(),
            Expr::Special(s) => format!("{s:?}").to_lowercase(),
            Expr::Bin(op, a, b) => {
                let sym = match op {
                    BinOp::Add => "+",
                    BinOp::Sub => "-",
                    BinOp::Mul => "*",
                    BinOp::Div => "/",
                    BinOp::Rem => "%",
                    BinOp::And => "&",
                    BinOp::Or => "|",
                    BinOp::Xor => "^",
                    BinOp::Shl => "<<",
                    BinOp::Sar => ">>",
                    BinOp::Shr => ">>>",
                    BinOp::Min => {
                        return format!("min({}, {})", self.expr_str(a), self.expr_str(b))
                    }
                    BinOp::Max => {
                        return format!("max({}, {})", self.expr_str(a), self.expr_str(b))
                    }
                };
                format!("({} {sym} {})", self.expr_str(a), self.expr_str(b))
            }
            Expr::Cmp(op, a, b) => {
                let sym = match op {
                    CmpOp::Lt => "<",
                    CmpOp::Le => "<=",
                    CmpOp::Eq => "==",
                    CmpOp::Ne => "!=",
                };
                format!("({} {sym} {})", self.expr_str(a), self.expr_str(b))
            }
            Expr::Select(c, a, b) => format!(
                "select({}, {}, {})",
                self.expr_str(c),
                self.expr_str(a),
                self.expr_str(b)
            ),
            Expr::Cast(t, a) => format!("{}({})", t.name(), self.expr_str(a)),
            Expr::Load { buf, index } => {
                format!("{}[{}]", self.bufs[*buf].name, self.expr_str(index))
            }
            Expr::LoadBytes { buf, offset, bytes } => {
                format!(
                    "bytes{}({} + {})",
                    bytes,
                    self.bufs[*buf].name,
                    self.expr_str(offset)
                )
            }
            Expr::Bfe {
                value,
                pos,
                len,
                signed,
            } => format!(
                "{}bfe({}, {pos}, {len})",
                if *signed { "s" } else { "u" },
                self.expr_str(value)
            ),
            Expr::DotRun {
                buf,
                index,
                codes,
                acc,
            } => {
                let cs: Vec<String> = codes
                    .iter()
                    .map(|c| format!("%{}", self.var_name(*c)))
                    .collect();
                format!(
                    "dot({}[{} ..+{}], [{}], {})",
                    self.bufs[*buf].name,
                    self.expr_str(index),
                    codes.len(),
                    cs.join(", "),
                    self.expr_str(acc)
                )
            }
            Expr::Dot4 { a, b, acc } => format!(
                "dot4({}, {}, {})",
                self.expr_str(a),
                self.expr_str(b),
                self.expr_str(acc)
            ),
            Expr::LoadShared(o) => format!("shared_i32({})", self.expr_str(o)),
            Expr::FromBits(a) => format!("f32_from_bits({})", self.expr_str(a)),
            Expr::F16ToF32(a) => format!("f16_bits_to_f32({})", self.expr_str(a)),
            Expr::HFma2 { a, b, c } => format!(
                "hfma2({}, {}, {})",
                self.expr_str(a),
                self.expr_str(b),
                self.expr_str(c)
            ),
            Expr::BytePerm { a, b, sel } => format!(
                "byte_perm({}, {}, {sel:#06x})",
                self.expr_str(a),
                self.expr_str(b)
            ),
            Expr::DotPacked {
                act,
                act_index,
                wbuf,
                byte_offset,
                layout,
                count,
                acc,
            } => format!(
                "dot_packed({}[{} ..+{count}], {}[byte {} ..+{}] as {layout}, {})",
                self.bufs[*act].name,
                self.expr_str(act_index),
                self.bufs[*wbuf].name,
                self.expr_str(byte_offset),
                super::packed_block_bytes(layout, *count),
                self.expr_str(acc)
            ),
        }
    }

    fn stmts(&self, out: &mut String, body: &[Stmt], depth: usize) -> fmt::Result {
        let pad = "  ".repeat(depth);
        for s in body {
            match s {
                Stmt::Let(v, e) => writeln!(
                    out,
                    "{pad}let %{}: {} = {}",
                    self.var_name(*v),
                    self.var_ty(*v).name(),
                    self.expr_str(e)
                )?,
                Stmt::Set(v, e) => {
                    writeln!(out, "{pad}%{} = {}", self.var_name(*v), self.expr_str(e))?
                }
                Stmt::For {
                    var,
                    start,
                    end,
                    step,
                    kind,
                    body,
                } => {
                    let k = match kind {
                        LoopKind::Serial => "for",
                        LoopKind::Unroll => "unroll for",
                        LoopKind::Parallel => "parallel for",
                    };
                    let st = if *step == 1 {
                        String::new()
                    } else {
                        format!(" step {step}")
                    };
                    writeln!(
                        out,
                        "{pad}{k} %{} in {}..{}{st} {{",
                        self.var_name(*var),
                        self.expr_str(start),
                        self.expr_str(end)
                    )?;
                    self.stmts(out, body, depth + 1)?;
                    writeln!(out, "{pad}}}")?;
                }
                Stmt::If { cond, then } => {
                    writeln!(out, "{pad}if {} {{", self.expr_str(cond))?;
                    self.stmts(out, then, depth + 1)?;
                    writeln!(out, "{pad}}}")?;
                }
                Stmt::Store { buf, index, value } => writeln!(
                    out,
                    "{pad}{}[{}] = {}({})",
                    self.bufs[*buf].name,
                    self.expr_str(index),
                    self.bufs[*buf].elem.name(),
                    self.expr_str(value)
                )?,
                Stmt::LoadVec4 { dst, buf, offset } => writeln!(
                    out,
                    "{pad}%{}, %{}, %{}, %{} = vec4({} + {})",
                    self.var_name(dst[0]),
                    self.var_name(dst[1]),
                    self.var_name(dst[2]),
                    self.var_name(dst[3]),
                    self.bufs[*buf].name,
                    self.expr_str(offset)
                )?,
                Stmt::WarpSum(v) => writeln!(out, "{pad}%{0} = warp_sum(%{0})", self.var_name(*v))?,
                Stmt::StoreShared4 { offset, src } => writeln!(
                    out,
                    "{pad}shared_vec4({}) = %{}, %{}, %{}, %{}",
                    self.expr_str(offset),
                    self.var_name(src[0]),
                    self.var_name(src[1]),
                    self.var_name(src[2]),
                    self.var_name(src[3])
                )?,
                Stmt::WarpSync => writeln!(out, "{pad}warp_sync")?,
                Stmt::BlockSync => writeln!(out, "{pad}block_sync")?,
                Stmt::Async(AsyncOp::Copy16 {
                    shared,
                    buf,
                    offset,
                }) => writeln!(
                    out,
                    "{pad}cp_async16(shared {}, {} + {})",
                    self.expr_str(shared),
                    self.bufs[*buf].name,
                    self.expr_str(offset)
                )?,
                Stmt::Async(AsyncOp::Commit) => writeln!(out, "{pad}cp_async_commit")?,
                Stmt::Async(AsyncOp::Wait(n)) => writeln!(out, "{pad}cp_async_wait({n})")?,
                Stmt::Mma { shape, d, a, b, c } => {
                    let names = |v: &[Var]| {
                        v.iter()
                            .map(|v| format!("%{}", self.var_name(*v)))
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    writeln!(
                        out,
                        "{pad}{} = {}([{}], [{}], [{}])",
                        names(d),
                        match shape {
                            MmaShape::F16F32 => "mma_m16n8k16_f16_f32",
                            MmaShape::S8S32 => "mma_m16n8k32_s8_s32",
                        },
                        names(a),
                        names(b),
                        names(c)
                    )?
                }
                Stmt::Comment(c) => writeln!(out, "{pad}// {c}")?,
            }
        }
        Ok(())
    }
}

impl fmt::Display for Func {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        for n in &self.notes {
            writeln!(out, "// {n}")?;
        }
        let bufs: Vec<String> = self
            .bufs
            .iter()
            .map(|b| {
                format!(
                    "{}{}: *{}",
                    if b.output { "out " } else { "" },
                    b.name,
                    b.elem.name()
                )
            })
            .collect();
        writeln!(
            out,
            "func {}({}; dims {}) {{",
            self.name,
            bufs.join(", "),
            self.dims.join(", ")
        )?;
        match &self.launch {
            Launch::Cpu => writeln!(out, "  launch cpu")?,
            Launch::Gpu { grid, block } => writeln!(
                out,
                "  launch gpu grid {} block {block}",
                self.expr_str(grid)
            )?,
        }
        self.stmts(&mut out, &self.body, 1)?;
        write!(out, "}}")?;
        f.write_str(&out)
    }
}
