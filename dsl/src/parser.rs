//! Recursive-descent parser from tokens to the [`crate::ast`].
//!
//! The grammar is written down in `docs/language.md`; each `parse_*` method below
//! implements the rule of the same name.

use crate::ast::*;
use crate::diag::Diag;
use crate::layout::Storage;
use crate::lexer::{lex, Tok};

/// Parses a whole `.qk` source.
pub fn parse(src: &str) -> Result<Module, Diag> {
    let toks = lex(src)?;
    let mut p = Parser {
        toks,
        pos: 0,
        end: src.len(),
    };
    p.parse_module()
}

struct Parser {
    toks: Vec<(Tok, Span)>,
    pos: usize,
    end: usize,
}

type PResult<T> = Result<T, Diag>;

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(t, _)| t)
    }

    fn peek_at(&self, n: usize) -> Option<&Tok> {
        self.toks.get(self.pos + n).map(|(t, _)| t)
    }

    fn span(&self) -> Span {
        match self.toks.get(self.pos) {
            Some((_, s)) => s.clone(),
            None => self.end..self.end,
        }
    }

    fn prev_end(&self) -> usize {
        if self.pos == 0 {
            0
        } else {
            self.toks[self.pos - 1].1.end
        }
    }

    fn bump(&mut self) -> Option<(Tok, Span)> {
        let t = self.toks.get(self.pos).cloned();
        if t.is_some() {
            self.pos += 1;
        }
        t
    }

    fn unexpected(&self, expected: &str) -> Diag {
        match self.toks.get(self.pos) {
            Some((t, s)) => Diag::new(
                "parse::unexpected",
                format!("expected {expected}, found {}", t.describe()),
                s.clone(),
                format!("expected {expected}"),
            ),
            // Point just after the last token, where the missing text belongs
            // (the end of the file may be on a later, empty line).
            None => {
                let at = if self.pos == 0 {
                    self.end
                } else {
                    self.prev_end()
                };
                Diag::new(
                    "parse::eof",
                    format!("expected {expected}, found end of file"),
                    at..at,
                    format!("expected {expected}"),
                )
            }
        }
    }

    fn expect(&mut self, tok: Tok) -> PResult<Span> {
        if self.peek() == Some(&tok) {
            Ok(self.bump().map(|(_, s)| s).unwrap_or(0..0))
        } else if tok == Tok::Semi && self.pos > 0 && self.peek().is_some() {
            // A missing `;` belongs right after the previous token, not on the next line.
            let at = self.prev_end();
            let mut d = self.unexpected(&tok.describe());
            d.span = at..at;
            Err(d)
        } else {
            Err(self.unexpected(&tok.describe()))
        }
    }

    fn eat(&mut self, tok: &Tok) -> bool {
        if self.peek() == Some(tok) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn ident(&mut self, what: &str) -> PResult<Ident> {
        match self.peek() {
            Some(Tok::Ident(_)) => match self.bump() {
                Some((Tok::Ident(name), span)) => Ok(Ident { name, span }),
                _ => Err(self.unexpected(what)),
            },
            _ => Err(self.unexpected(what)),
        }
    }

    fn int(&mut self, what: &str) -> PResult<IntLit> {
        match self.peek() {
            Some(Tok::Int(Some(_))) => match self.bump() {
                Some((Tok::Int(Some(value)), span)) => Ok(IntLit { value, span }),
                _ => Err(self.unexpected(what)),
            },
            _ => Err(self.unexpected(what)),
        }
    }

    /// module := item*
    fn parse_module(&mut self) -> PResult<Module> {
        let mut items = Vec::new();
        while let Some(t) = self.peek() {
            match t {
                Tok::Layout => items.push(Item::Layout(self.parse_layout()?)),
                Tok::Kernel => items.push(Item::Kernel(self.parse_kernel()?)),
                _ => {
                    return Err(self
                        .unexpected("`layout` or `kernel`")
                        .with_help("a .qk file is a list of `layout` and `kernel` declarations"))
                }
            }
        }
        Ok(Module { items })
    }

    /// layout := 'layout' IDENT '=' layout_spec storage? ';'
    fn parse_layout(&mut self) -> PResult<LayoutDecl> {
        let start = self.expect(Tok::Layout)?.start;
        let name = self.ident("a layout name")?;
        self.expect(Tok::Eq)?;
        let spec = match self.peek() {
            Some(Tok::LBrace) => {
                let open = self.expect(Tok::LBrace)?.start;
                let mut fields = Vec::new();
                loop {
                    fields.push(self.parse_field()?);
                    if !self.eat(&Tok::Comma) || self.peek() == Some(&Tok::RBrace) {
                        break;
                    }
                }
                let close = self.expect(Tok::RBrace)?.end;
                LayoutSpec::Fields {
                    fields,
                    span: open..close,
                }
            }
            Some(Tok::Ident(_)) => LayoutSpec::Scalar(self.parse_code()?),
            _ => {
                return Err(self
                    .unexpected("a code type like `s3` or a field list like `{ hi: s4, lo: s3 }`"))
            }
        };
        let storage = match self.peek() {
            Some(Tok::Stream) => Some((Storage::Stream, self.bump().map(|t| t.1).unwrap_or(0..0))),
            Some(Tok::Byte) => Some((Storage::Byte, self.bump().map(|t| t.1).unwrap_or(0..0))),
            Some(Tok::Semi) => None,
            _ => {
                return Err(self.unexpected("`stream`, `byte` or `;`").with_help(
                    "the storage mode is `stream` (dense bits) or `byte` (one unit per byte)",
                ))
            }
        };
        let end = self.expect(Tok::Semi)?.end;
        Ok(LayoutDecl {
            name,
            spec,
            storage,
            span: start..end,
        })
    }

    /// field := IDENT ':' code ('@' INT '..' INT)?
    fn parse_field(&mut self) -> PResult<FieldSpec> {
        let name = self.ident("a field name")?;
        self.expect(Tok::Colon)?;
        let code = self.parse_code()?;
        let bits = if self.eat(&Tok::At) {
            let msb = self.int("the field's most significant bit")?;
            self.expect(Tok::DotDot)?;
            let lsb = self.int("the field's least significant bit")?;
            Some((msb, lsb))
        } else {
            None
        };
        let span = name.span.start..self.prev_end();
        Ok(FieldSpec {
            name,
            code,
            bits,
            span,
        })
    }

    /// code := /[su][0-9]+/
    fn parse_code(&mut self) -> PResult<CodeType> {
        let id = self.ident("a code type like `s4` or `u3`")?;
        parse_code_name(&id.name)
            .map(|(signed, bits)| CodeType {
                signed,
                bits,
                span: id.span.clone(),
            })
            .ok_or_else(|| {
                Diag::new(
                    "parse::code-type",
                    format!("`{}` is not a code type", id.name),
                    id.span.clone(),
                    "expected `s` or `u` followed by a bit width",
                )
                .with_help("code types are signed `s2`..`s8` or unsigned `u2`..`u8`")
            })
    }

    /// kernel := 'kernel' IDENT '(' params ')' '->' param '{' stmt* '}'
    fn parse_kernel(&mut self) -> PResult<KernelDecl> {
        let start = self.expect(Tok::Kernel)?.start;
        let name = self.ident("a kernel name")?;
        self.expect(Tok::LParen)?;
        let mut params = Vec::new();
        while self.peek() != Some(&Tok::RParen) {
            params.push(self.parse_param()?);
            if !self.eat(&Tok::Comma) {
                break;
            }
        }
        self.expect(Tok::RParen)?;
        self.expect(Tok::Arrow).map_err(|d| {
            d.with_help("a kernel names its one output after `->`, e.g. `-> y: f32[M, N]`")
        })?;
        let output = self.parse_param()?;
        self.expect(Tok::LBrace)?;
        let mut body = Vec::new();
        while self.peek() != Some(&Tok::RBrace) {
            if self.peek().is_none() {
                return Err(self.unexpected("`}` closing the kernel body"));
            }
            body.push(self.parse_stmt()?);
        }
        let end = self.expect(Tok::RBrace)?.end;
        Ok(KernelDecl {
            name,
            params,
            output,
            body,
            span: start..end,
        })
    }

    /// param := IDENT ':' IDENT '[' dim (',' dim)* ']'
    fn parse_param(&mut self) -> PResult<ParamDecl> {
        let name = self.ident("a parameter name")?;
        self.expect(Tok::Colon)?;
        let ty = self.ident("a type (i8, i32, f16, bf16, f32 or a layout)")?;
        self.expect(Tok::LBracket)
            .map_err(|d| d.with_help("tensor parameters have a shape, e.g. `x: i8[M, K]`"))?;
        let mut shape = Vec::new();
        loop {
            let dim = self.ident("a dimension name like `K`")?;
            let div = if self.eat(&Tok::Slash) {
                Some(self.int("a group size")?)
            } else {
                None
            };
            let span = dim.span.start..self.prev_end();
            shape.push(DimExpr { dim, div, span });
            if !self.eat(&Tok::Comma) {
                break;
            }
        }
        self.expect(Tok::RBracket)?;
        let span = name.span.start..self.prev_end();
        Ok(ParamDecl {
            name,
            ty,
            shape,
            span,
        })
    }

    /// stmt := where | schedule | assign
    fn parse_stmt(&mut self) -> PResult<Stmt> {
        match self.peek() {
            Some(Tok::Where) => {
                self.bump();
                let mut bounds = Vec::new();
                loop {
                    let dim = self.ident("a dimension name")?;
                    self.expect(Tok::Le)
                        .map_err(|d| d.with_help("bounds are written `K <= 65536`"))?;
                    let max = self.int("an upper bound")?;
                    let span = dim.span.start..max.span.end;
                    bounds.push(Bound { dim, max, span });
                    if !self.eat(&Tok::Comma) {
                        break;
                    }
                }
                self.expect(Tok::Semi)?;
                Ok(Stmt::Where(bounds))
            }
            Some(Tok::Schedule) => {
                let start = self.span().start;
                self.bump();
                self.expect(Tok::LBrace)?;
                let mut hints = Vec::new();
                while self.peek() != Some(&Tok::RBrace) {
                    let key = self.ident("a schedule hint name")?;
                    self.expect(Tok::Eq)?;
                    let value = self.int("a hint value")?;
                    let span = key.span.start..value.span.end;
                    hints.push(Hint { key, value, span });
                    if !self.eat(&Tok::Semi) && !self.eat(&Tok::Comma) {
                        break;
                    }
                }
                let end = self.expect(Tok::RBrace)?.end;
                Ok(Stmt::Schedule {
                    hints,
                    span: start..end,
                })
            }
            Some(Tok::Ident(_)) if matches!(self.peek_at(1), Some(Tok::LBracket | Tok::Eq)) => {
                Ok(Stmt::Assign(self.parse_assign()?))
            }
            _ => {
                Err(self
                    .unexpected("`where`, `schedule` or an assignment like `y[m, n] = sum(k) ...`"))
            }
        }
    }

    /// assign := access '=' 'sum' ('<' IDENT '>')? '(' IDENT ')' access ('*' access)* ';'
    fn parse_assign(&mut self) -> PResult<Assign> {
        let target = self.parse_access()?;
        self.expect(Tok::Eq)?;
        self.expect(Tok::Sum).map_err(|d| {
            d.with_help("the kernel body is one reduction: `y[m, n] = sum(k) x[m, k] * w[n, k]`")
        })?;
        let accum = if self.eat(&Tok::Lt) {
            let t = self.ident("an accumulator type (i32, i64 or f32)")?;
            self.expect(Tok::Gt)?;
            Some(t)
        } else {
            None
        };
        self.expect(Tok::LParen)?;
        let red = self.ident("the reduction variable")?;
        self.expect(Tok::RParen)?;
        let mut factors = vec![self.parse_access()?];
        while self.eat(&Tok::Star) {
            factors.push(self.parse_access()?);
        }
        let end = self
            .expect(Tok::Semi)
            .map_err(|d| d.with_help("factors are multiplied with `*`; a statement ends with `;`"))?
            .end;
        Ok(Assign {
            span: target.span.start..end,
            target,
            accum,
            red,
            factors,
        })
    }

    /// access := IDENT '[' index (',' index)* ']'
    fn parse_access(&mut self) -> PResult<Access> {
        let tensor = self.ident("a tensor name")?;
        if self.peek() != Some(&Tok::LBracket) {
            return Err(self
                .unexpected("`[`")
                .with_help(format!("index the tensor, e.g. `{}[n, k]`", tensor.name)));
        }
        self.bump();
        let mut indices = Vec::new();
        loop {
            let var = self.ident("an index variable like `k`")?;
            let div = if self.eat(&Tok::Slash) {
                Some(self.int("a group size")?)
            } else {
                None
            };
            let span = var.span.start..self.prev_end();
            indices.push(IndexExpr { var, div, span });
            if !self.eat(&Tok::Comma) {
                break;
            }
            let _ = self.peek_at(0);
        }
        let end = self.expect(Tok::RBracket)?.end;
        Ok(Access {
            span: tensor.span.start..end,
            tensor,
            indices,
        })
    }
}

/// `s4` -> (true, 4); `u3` -> (false, 3). Widths are not range-checked here.
pub fn parse_code_name(s: &str) -> Option<(bool, u64)> {
    let signed = match s.as_bytes().first()? {
        b's' => true,
        b'u' => false,
        _ => return None,
    };
    let digits = &s[1..];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 3 {
        return None;
    }
    digits.parse().ok().map(|b| (signed, b))
}
