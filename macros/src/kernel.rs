//! `quant_kernel!`: declares quantized matmul kernels in the `.qk` language inside
//! Rust, checks them at compile time with the same front end as `qkc check`
//! (`qkc_dsl::compile`), and generates a zero-sized type per kernel with the
//! source, the PTX and HIP code emitted while expanding, and typed CPU and CUDA
//! entry points (see the docs of `quant_kernel!` in `lib.rs`).
//!
//! # Where errors point
//!
//! The kernel can be written as **tokens** (`pub Gemv = kernel gemv(..) -> .. { .. }`)
//! or as a **string literal** (`pub Gemv = r#"kernel gemv(..) .."#;`).
//!
//! * Tokens: the macro prints the tokens back to `.qk` text ([`Printer`]),
//!   remembering the byte range of every token. A front-end error's byte span is
//!   mapped back to the tokens it covers, and the error is reported from the first
//!   to the last of them (`syn::Error::new_spanned` on a two-token stream carrying
//!   their spans), so the caret sits on the offending token on stable Rust.
//! * String literal: the span is a sub-span of the literal when the compiler can
//!   make one (`Literal::subspan`, nightly only); on stable the error covers the
//!   whole literal and the message carries the line, column and a caret excerpt
//!   of the kernel source.
//!
//! Rust's tokenizer agrees with the `.qk` lexer on everything the language uses
//! (`->`, `<=`, `..` and `@` arrive as joint punctuation and are printed back
//! without spaces; `//` comments are dropped by rustc; `///` doc comments inside the
//! kernel become `#[doc]` attributes, which the macro drops too).

use std::collections::HashMap;
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};

use proc_macro2::{Delimiter, Ident, Literal, Span, TokenStream, TokenTree};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::parse::{Parse, ParseStream};
use syn::{Attribute, Error, LitStr, Token, Visibility};

use qkc_dsl::ir::{Accum, ElemType, Extent, Kernel, Role, Scalar, ScaleIndex};
use qkc_dsl::layout::{self, LayoutDesc, Storage};
use qkc_dsl::{Diag, Program};

/// The AMD arch of the generated `HIP_SOURCE`.
const HIP_ARCH: qkc_codegen::hip::Arch = qkc_codegen::hip::Arch::Gfx90a;

// ---------------------------------------------------------------------------
// Input
// ---------------------------------------------------------------------------

/// The whole macro input: `use layout` bindings and kernel items, in any order.
struct Input {
    bindings: Vec<Binding>,
    items: Vec<Item>,
}

/// `use layout path::Q3p5 as q3p5;`: the `#[qkc::packed]` type `Q3p5` is the
/// `.qk` layout `q3p5`.
struct Binding {
    ty: syn::Path,
    name: Ident,
}

/// `#[attrs] vis Name = <kernel>`.
struct Item {
    attrs: Vec<Attribute>,
    vis: Visibility,
    name: Ident,
    body: Body,
}

enum Body {
    /// `r#"kernel .."#`.
    Lit(LitStr),
    /// `layout ..; kernel .. { .. }` as tokens.
    Tokens(TokenStream),
}

impl Parse for Input {
    fn parse(input: ParseStream) -> syn::Result<Input> {
        let mut bindings = Vec::new();
        let mut items = Vec::new();
        while !input.is_empty() {
            if input.peek(Token![use]) {
                bindings.push(input.parse()?);
            } else {
                items.push(input.parse()?);
            }
        }
        Ok(Input { bindings, items })
    }
}

impl Parse for Binding {
    fn parse(input: ParseStream) -> syn::Result<Binding> {
        input.parse::<Token![use]>()?;
        let kw: Ident = input.parse()?;
        if kw != "layout" {
            return Err(Error::new(
                kw.span(),
                "expected `use layout RustType as qk_name;` (binds a `#[qkc::packed]` type \
                 to a layout of the kernels)",
            ));
        }
        let ty: syn::Path = input.parse()?;
        input.parse::<Token![as]>()?;
        let name: Ident = input.parse()?;
        input.parse::<Token![;]>()?;
        Ok(Binding { ty, name })
    }
}

impl Parse for Item {
    fn parse(input: ParseStream) -> syn::Result<Item> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis: Visibility = input.parse()?;
        let name: Ident = input.parse().map_err(|e| {
            Error::new(
                e.span(),
                "expected a kernel item `pub Name = kernel name(..) -> .. { .. }` \
                 or `use layout RustType as qk_name;`",
            )
        })?;
        if name == "kernel" || name == "layout" {
            return Err(Error::new(
                name.span(),
                format!(
                    "`{name}` after a kernel: each item of `quant_kernel!` holds one kernel, \
                     after the `layout` declarations it uses; start a new item with \
                     `Name = {name} ..`"
                ),
            ));
        }
        input.parse::<Token![=]>().map_err(|e| {
            Error::new(
                e.span(),
                format!("expected `=` after `{name}`: write `{name} = kernel ..` or `{name} = r#\"kernel ..\"#;`"),
            )
        })?;
        let body = if input.peek(LitStr) {
            Body::Lit(input.parse()?)
        } else {
            // Layouts end with `;`, the kernel with its `{ .. }` body: the item ends
            // at the first brace group after the `kernel` keyword.
            let mut tokens = TokenStream::new();
            let mut seen_kernel = false;
            while !input.is_empty() {
                let tt: TokenTree = input.parse()?;
                let end = matches!(&tt, TokenTree::Group(g) if seen_kernel && g.delimiter() == Delimiter::Brace);
                if matches!(&tt, TokenTree::Ident(i) if i == "kernel") {
                    seen_kernel = true;
                }
                tokens.extend([tt]);
                if end {
                    break;
                }
            }
            if tokens.is_empty() {
                return Err(Error::new(
                    name.span(),
                    format!("`{name} =` needs a kernel: `{name} = kernel name(..) -> .. {{ .. }}`"),
                ));
            }
            Body::Tokens(tokens)
        };
        if input.peek(Token![;]) {
            input.parse::<Token![;]>()?;
        }
        Ok(Item {
            attrs,
            vis,
            name,
            body,
        })
    }
}

// ---------------------------------------------------------------------------
// Tokens → `.qk` text, with a map from byte ranges back to spans
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Word,
    /// A run of joint punctuation (`->`, `<=`, `..`) or one punct.
    Op,
    Open(Delimiter),
    Close(Delimiter),
}

/// One printed token: its text and, per character run, its span.
struct Tok {
    kind: Kind,
    text: String,
    /// One span per char for `Op` (each punct has its own), one otherwise.
    spans: Vec<Span>,
}

/// Flattens token trees, merging joint punctuation and dropping `#[doc]`
/// attributes (doc comments written inside the kernel).
fn flatten(ts: TokenStream, out: &mut Vec<Tok>) {
    let tts: Vec<TokenTree> = ts.into_iter().collect();
    let mut i = 0;
    while i < tts.len() {
        if let Some(skip) = doc_attr_len(&tts[i..]) {
            i += skip;
            continue;
        }
        match &tts[i] {
            TokenTree::Group(g) => {
                let d = g.delimiter();
                if d != Delimiter::None {
                    out.push(Tok {
                        kind: Kind::Open(d),
                        text: open_text(d).into(),
                        spans: vec![g.span_open()],
                    });
                }
                flatten(g.stream(), out);
                if d != Delimiter::None {
                    out.push(Tok {
                        kind: Kind::Close(d),
                        text: close_text(d).into(),
                        spans: vec![g.span_close()],
                    });
                }
            }
            TokenTree::Punct(p) => {
                let joined = matches!(out.last(), Some(Tok { kind: Kind::Op, .. }))
                    && matches!(tts.get(i.wrapping_sub(1)), Some(TokenTree::Punct(q)) if i > 0 && q.spacing() == proc_macro2::Spacing::Joint);
                if joined {
                    if let Some(last) = out.last_mut() {
                        last.text.push(p.as_char());
                        last.spans.push(p.span());
                    }
                } else {
                    out.push(Tok {
                        kind: Kind::Op,
                        text: p.as_char().to_string(),
                        spans: vec![p.span()],
                    });
                }
            }
            TokenTree::Ident(id) => out.push(Tok {
                kind: Kind::Word,
                text: id.to_string(),
                spans: vec![id.span()],
            }),
            TokenTree::Literal(l) => out.push(Tok {
                kind: Kind::Word,
                text: l.to_string(),
                spans: vec![l.span()],
            }),
        }
        i += 1;
    }
}

/// `# [doc ..]` or `# ! [doc ..]` at the start of `tts`: its length.
fn doc_attr_len(tts: &[TokenTree]) -> Option<usize> {
    let TokenTree::Punct(hash) = tts.first()? else {
        return None;
    };
    if hash.as_char() != '#' {
        return None;
    }
    let mut j = 1;
    if matches!(tts.get(1), Some(TokenTree::Punct(p)) if p.as_char() == '!') {
        j = 2;
    }
    let TokenTree::Group(g) = tts.get(j)? else {
        return None;
    };
    let is_doc = g.delimiter() == Delimiter::Bracket
        && matches!(g.stream().into_iter().next(), Some(TokenTree::Ident(i)) if i == "doc");
    is_doc.then_some(j + 1)
}

fn open_text(d: Delimiter) -> &'static str {
    match d {
        Delimiter::Parenthesis => "(",
        Delimiter::Bracket => "[",
        Delimiter::Brace => "{",
        Delimiter::None => "",
    }
}

fn close_text(d: Delimiter) -> &'static str {
    match d {
        Delimiter::Parenthesis => ")",
        Delimiter::Bracket => "]",
        Delimiter::Brace => "}",
        Delimiter::None => "",
    }
}

/// `.qk` text printed from tokens, with each token's byte range and span.
struct Printed {
    text: String,
    /// Sorted by range start.
    map: Vec<(Range<usize>, Span)>,
}

/// Prints tokens as conventionally formatted `.qk` source: the kernel body and
/// top-level declarations one statement per line, everything else on one line
/// with the spacing of `docs/language.md`.
struct Printer {
    out: Printed,
    indent: usize,
    /// Open braces: `true` for a block (the kernel body).
    braces: Vec<bool>,
    /// Depth of open parentheses and brackets.
    nest: usize,
    line_start: bool,
}

impl Printer {
    fn print(toks: &[Tok]) -> Printed {
        let mut p = Printer {
            out: Printed {
                text: String::new(),
                map: Vec::new(),
            },
            indent: 0,
            braces: Vec::new(),
            nest: 0,
            line_start: true,
        };
        let mut prev: Option<&Tok> = None;
        for t in toks {
            p.token(prev, t);
            prev = Some(t);
        }
        if !p.line_start {
            p.out.text.push('\n');
        }
        p.out
    }

    /// Statements end lines at top level and directly inside a block.
    fn in_block(&self) -> bool {
        self.nest == 0 && self.braces.last().copied().unwrap_or(true)
    }

    fn newline(&mut self) {
        if !self.line_start {
            self.out.text.push('\n');
            self.line_start = true;
        }
    }

    fn token(&mut self, prev: Option<&Tok>, t: &Tok) {
        let block_close =
            t.kind == Kind::Close(Delimiter::Brace) && self.braces.last() == Some(&true);
        if block_close {
            self.newline();
            self.indent = self.indent.saturating_sub(1);
        }
        if self.line_start {
            for _ in 0..self.indent {
                self.out.text.push_str("    ");
            }
        } else if let Some(prev) = prev {
            if space_between(prev, t) {
                self.out.text.push(' ');
            }
        }
        self.line_start = false;
        let start = self.out.text.len();
        self.out.text.push_str(&t.text);
        if t.kind == Kind::Op && t.spans.len() == t.text.chars().count() {
            let mut at = start;
            for (c, s) in t.text.chars().zip(&t.spans) {
                self.out.map.push((at..at + c.len_utf8(), *s));
                at += c.len_utf8();
            }
        } else if let Some(s) = t.spans.first() {
            self.out.map.push((start..self.out.text.len(), *s));
        }
        match t.kind {
            Kind::Open(Delimiter::Brace) => {
                let block = matches!(
                    prev,
                    Some(Tok {
                        kind: Kind::Close(_),
                        ..
                    })
                );
                self.braces.push(block);
                if block {
                    self.indent += 1;
                    self.newline();
                }
            }
            Kind::Close(Delimiter::Brace) => {
                self.braces.pop();
                // After the kernel body, and after a `schedule { .. }` statement.
                let statement = !block_close && self.nest == 0 && self.braces.last() == Some(&true);
                if (block_close && self.braces.is_empty()) || statement {
                    self.newline();
                }
            }
            Kind::Open(_) => self.nest += 1,
            Kind::Close(_) => self.nest = self.nest.saturating_sub(1),
            Kind::Op if t.text == ";" && self.in_block() => self.newline(),
            _ => {}
        }
    }
}

/// Whether a space separates `a` and `b` (`b` not at a line start).
fn space_between(a: &Tok, b: &Tok) -> bool {
    let tight_op =
        |t: &Tok| t.kind == Kind::Op && matches!(t.text.as_str(), "<" | ">" | "." | "..");
    match (a.kind, b.kind) {
        (_, Kind::Op) if matches!(b.text.as_str(), "," | ";" | ":") => false,
        // `{ a, b }` inline (a block's braces end and start lines).
        (Kind::Open(Delimiter::Brace), _) | (_, Kind::Close(Delimiter::Brace)) => true,
        (Kind::Open(_), _) | (_, Kind::Close(_)) => false,
        (Kind::Word | Kind::Close(_), Kind::Open(Delimiter::Parenthesis | Delimiter::Bracket)) => {
            false
        }
        (Kind::Op, Kind::Open(Delimiter::Parenthesis | Delimiter::Bracket)) => !tight_op(a),
        _ if tight_op(a) || tight_op(b) => false,
        _ => true,
    }
}

impl Printed {
    /// The spans of the first and last tokens that `r` covers (or the nearest token
    /// when `r` covers none, e.g. an empty range at the end of the text).
    fn locate(&self, r: &Range<usize>) -> Option<(Span, Span)> {
        let hit: Vec<&(Range<usize>, Span)> = self
            .map
            .iter()
            .filter(|(t, _)| {
                if r.is_empty() {
                    t.contains(&r.start)
                } else {
                    t.start < r.end && r.start < t.end
                }
            })
            .collect();
        if let (Some(first), Some(last)) = (hit.first(), hit.last()) {
            return Some((first.1, last.1));
        }
        let next = self
            .map
            .iter()
            .find(|(t, _)| t.start >= r.start)
            .or(self.map.last())?;
        Some((next.1, next.1))
    }
}

// ---------------------------------------------------------------------------
// Compiling one item
// ---------------------------------------------------------------------------

/// A kernel item's source, ready to compile, and how to point into it.
struct Source {
    text: String,
    origin: Origin,
}

enum Origin {
    Tokens(Printed),
    Lit(LitStr),
}

impl Source {
    fn of(body: &Body) -> Source {
        match body {
            Body::Tokens(ts) => {
                let mut toks = Vec::new();
                flatten(ts.clone(), &mut toks);
                let printed = Printer::print(&toks);
                Source {
                    text: printed.text.clone(),
                    origin: Origin::Tokens(printed),
                }
            }
            Body::Lit(lit) => Source {
                text: lit.value(),
                origin: Origin::Lit(lit.clone()),
            },
        }
    }

    /// Start and end spans for a byte range of the source.
    fn spans(&self, r: &Range<usize>) -> (Span, Span) {
        match &self.origin {
            Origin::Tokens(p) => p
                .locate(r)
                .unwrap_or((Span::call_site(), Span::call_site())),
            Origin::Lit(lit) => {
                let s = literal_subspan(lit, r).unwrap_or_else(|| lit.span());
                (s, s)
            }
        }
    }

    /// An error on a byte range of the source; for a string literal, the message
    /// quotes the line with a caret under the range, labelled `label`.
    fn error(&self, r: &Range<usize>, message: String, label: &str) -> Error {
        let (a, b) = self.spans(r);
        let message = match self.origin {
            Origin::Lit(_) => format!("{message}\n{}", excerpt(&self.text, r, label)),
            Origin::Tokens(_) => message,
        };
        spanned_error(a, b, message)
    }

    /// Where a byte range is, for messages: `line 3, column 9` of the user's file
    /// (tokens) or of the kernel source (literal).
    fn describe_at(&self, r: &Range<usize>) -> Option<String> {
        match &self.origin {
            Origin::Tokens(_) => {
                let (a, _) = self.spans(r);
                let lc = a.start();
                (lc.line > 0).then(|| format!("line {}, column {}", lc.line, lc.column + 1))
            }
            Origin::Lit(_) => {
                let (line, col) = line_col(&self.text, r.start);
                Some(format!("line {line}, column {col} of the kernel source"))
            }
        }
    }

    /// A front-end error as a Rust compile error.
    fn diag_error(&self, d: &Diag, extra_help: Option<String>) -> Error {
        let mut msg = String::new();
        let lit = matches!(self.origin, Origin::Lit(_));
        // A literal's excerpt carries the label; tokens show it unless the message
        // already says it.
        if !lit && !d.label.is_empty() && !d.message.contains(&d.label) {
            msg.push_str(&format!("\n  = {}", d.label));
        }
        for (span, label) in &d.related {
            match self.describe_at(span) {
                Some(at) => msg.push_str(&format!("\n  = note: {label} (at {at})")),
                None => msg.push_str(&format!("\n  = note: {label}")),
            }
        }
        if let Some(h) = &d.help {
            msg.push_str(&format!("\n  = help: {h}"));
        }
        if let Some(h) = extra_help {
            msg.push_str(&format!("\n  = help: {h}"));
        }
        msg.push_str(&format!("\n  = qkc::{}", d.code));
        let (a, b) = self.spans(&d.span);
        let message = match self.origin {
            Origin::Lit(_) => format!(
                "{}\n{}{msg}",
                d.message,
                excerpt(&self.text, &d.span, &d.label)
            ),
            Origin::Tokens(_) => format!("{}{msg}", d.message),
        };
        spanned_error(a, b, message)
    }
}

/// An error reported from `start` to `end` (a range on stable Rust).
fn spanned_error(start: Span, end: Span, message: String) -> Error {
    let pair: TokenStream = [
        TokenTree::Ident(Ident::new("start", start)),
        TokenTree::Ident(Ident::new("end", end)),
    ]
    .into_iter()
    .collect();
    Error::new_spanned(pair, message)
}

/// A sub-span of a string literal holding `.qk` text verbatim (raw, or without
/// escapes). `None` on stable Rust, where `Literal::subspan` is not available.
fn literal_subspan(lit: &LitStr, r: &Range<usize>) -> Option<Span> {
    let token: Literal = lit.token();
    let repr = token.to_string();
    let value = lit.value();
    let offset = repr.find('"')? + 1;
    if repr.get(offset..offset + value.len())? != value {
        return None;
    }
    token.subspan(offset + r.start..offset + r.end.max(r.start + 1).min(value.len()))
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(src: &str, at: usize) -> (usize, usize) {
    let at = at.min(src.len());
    let before = &src[..at];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// `  --> line 3, column 19 of the kernel source` and the line with a caret.
fn excerpt(src: &str, r: &Range<usize>, label: &str) -> String {
    let (line, col) = line_col(src, r.start);
    // One column per char: tabs print as one space so that the caret lines up.
    let text = src.lines().nth(line - 1).unwrap_or("").replace('\t', " ");
    let width = src
        .get(r.start.min(src.len())..r.end.min(src.len()))
        .map_or(1, |s| s.lines().next().unwrap_or("").chars().count().max(1));
    let gutter = line.to_string().len();
    format!(
        "  --> line {line}, column {col} of the kernel source\n  {pad} |\n  {line} | {text}\n  {pad} | {spaces}{carets} {label}",
        pad = " ".repeat(gutter),
        spaces = " ".repeat(col - 1),
        carets = "^".repeat(width),
    )
}

/// The checked kernel of an item with everything the generated code needs.
struct Compiled {
    source: Source,
    program: Program,
    kernel: Kernel,
}

/// Compiles an item's source with `qkc_dsl::compile`; errors point into the input.
fn compile_item(item: &Item, bindings: &[Binding]) -> syn::Result<Compiled> {
    let source = Source::of(&item.body);
    let program = match qkc_dsl::compile(&item.name.to_string(), &source.text) {
        Ok(p) => p,
        Err(d) => return Err(source.diag_error(&d, binding_help(&d, &source.text, bindings))),
    };
    let mut kernels = program.kernels.iter();
    let Some(kernel) = kernels.next().cloned() else {
        return Err(Error::new(
            item.name.span(),
            format!(
                "`{}` declares no kernel; write `{} = kernel name(..) -> y: f32[M, N] {{ .. }}`",
                item.name, item.name
            ),
        ));
    };
    if let Some(second) = kernels.next() {
        let at = kernel_name_range(&source, second);
        return Err(source.error(
            &at,
            format!(
                "`{}` declares a second kernel, `{}`; each item of `quant_kernel!` holds one \
                 kernel: declare it as its own item, `Other = kernel {} ..`",
                item.name, second.name, second.name
            ),
            "second kernel",
        ));
    }
    Ok(Compiled {
        source,
        program,
        kernel,
    })
}

/// The range of `kernel NAME` of a kernel declaration.
fn kernel_name_range(source: &Source, k: &Kernel) -> Range<usize> {
    let start = k.span.start;
    let rest = &source.text[start.min(source.text.len())..];
    let name_end = rest
        .find(&k.name)
        .map_or(start + 6, |i| start + i + k.name.len());
    start..name_end
}

/// Extra help for an unknown type that is bound by `use layout`, or that looks
/// like a Rust type.
fn binding_help(d: &Diag, src: &str, bindings: &[Binding]) -> Option<String> {
    if d.code != "check::unknown-type" {
        return None;
    }
    let name = src.get(d.span.clone())?;
    if let Some(b) = bindings.iter().find(|b| b.name == name) {
        let ty = path_text(&b.ty);
        return Some(format!(
            "`{name}` is bound to `{ty}` by `use layout`, but the macro cannot read \
             `{ty}::LAYOUT` while expanding: declare the layout in the kernel too \
             (`layout {name} = {{ .. }} stream;`); the macro then checks at compile time \
             that both agree"
        ));
    }
    if name.starts_with(|c: char| c.is_ascii_uppercase()) {
        return Some(format!(
            "to use a `#[qkc::packed]` type, declare its layout in the kernel \
             (`layout {lower} = {{ .. }} stream;`) and bind the type to it with \
             `use layout {name} as {lower};`",
            lower = name.to_ascii_lowercase()
        ));
    }
    None
}

fn path_text(p: &syn::Path) -> String {
    p.to_token_stream().to_string().replace(' ', "")
}

// ---------------------------------------------------------------------------
// Expansion
// ---------------------------------------------------------------------------

/// Entry point of `quant_kernel!`.
pub(crate) fn expand(input: TokenStream) -> syn::Result<TokenStream> {
    let input: Input = syn::parse2(input)?;
    let mut out = TokenStream::new();
    let mut errors: Option<Error> = None;
    let push_err = |e: Error, errors: &mut Option<Error>| match errors {
        Some(all) => all.combine(e),
        None => *errors = Some(e),
    };
    check_binding_names(&input.bindings).unwrap_or_else(|e| push_err(e, &mut errors));

    let mut resolved: Vec<bool> = vec![false; input.bindings.len()];
    for item in &input.items {
        match compile_item(item, &input.bindings) {
            Ok(c) => {
                for (i, b) in input.bindings.iter().enumerate() {
                    if let Some(desc) = bound_layout(&c.program, &c.kernel, &b.name.to_string()) {
                        resolved[i] = true;
                        let cfgs = cfg_attrs(item);
                        let check = layout_assertion(b, &b.name.to_string(), &desc, &c.kernel);
                        out.extend(quote!(#(#cfgs)* #check));
                    }
                }
                out.extend(generate(item, &c));
            }
            Err(e) => {
                // Bindings may be meant for a kernel that failed: do not report them too.
                resolved.iter_mut().for_each(|r| *r = true);
                push_err(e, &mut errors);
            }
        }
    }
    for (b, ok) in input.bindings.iter().zip(resolved) {
        if !ok {
            push_err(
                Error::new(
                    b.name.span(),
                    format!(
                        "no kernel of this macro declares or uses the layout `{name}`, so \
                         `{ty}` cannot be checked against it; declare it in a kernel \
                         (`layout {name} = {{ .. }} stream;`) or use a built-in layout ({})",
                        layout::BUILTIN_NAMES.join(", "),
                        name = b.name,
                        ty = path_text(&b.ty),
                    ),
                ),
                &mut errors,
            );
        }
    }
    if let Some(e) = errors {
        out.extend(e.into_compile_error());
    }
    Ok(out)
}

/// A `.qk` name bound twice is an error.
fn check_binding_names(bindings: &[Binding]) -> syn::Result<()> {
    let mut seen: HashMap<String, &Binding> = HashMap::new();
    for b in bindings {
        let name = b.name.to_string();
        if let Some(first) = seen.get(&name) {
            return Err(Error::new(
                b.name.span(),
                format!(
                    "layout `{name}` is already bound to `{}`; a layout binds to one Rust type",
                    path_text(&first.ty)
                ),
            ));
        }
        seen.insert(name, b);
    }
    Ok(())
}

/// The descriptor of layout `name` as this item sees it: declared in its source,
/// or built in and used by its kernel.
fn bound_layout(p: &Program, k: &Kernel, name: &str) -> Option<LayoutDesc> {
    if let Some((_, d)) = p.layouts.iter().find(|(n, _)| n == name) {
        return Some(*d);
    }
    k.inputs.iter().find_map(|i| match &i.tensor.ty {
        ElemType::Packed { name: n, layout } if n == name => Some(*layout),
        _ => None,
    })
}

/// `const _` block checking `<Type>::LAYOUT` against the kernel's descriptor by
/// const evaluation; its errors point at the type in `use layout`.
fn layout_assertion(b: &Binding, name: &str, d: &LayoutDesc, k: &Kernel) -> TokenStream {
    let ty = &b.ty;
    let span = ty
        .segments
        .last()
        .map_or_else(Span::call_site, |s| s.ident.span());
    let ty_text = path_text(ty);
    // The messages are format strings of `assert!`: braces are escaped.
    let head = format!(
        "qkc::quant_kernel!: `{ty_text}::LAYOUT` does not match layout `{name}` of kernel \
         `{}`, which is `{}`",
        k.name,
        d.describe().replace('{', "{{").replace('}', "}}")
    );
    let unit_bits = d.unit_bits;
    let n_fields = d.n_fields;
    let unit_msg =
        format!("{head}: the unit widths differ (the kernel's unit is {unit_bits} bits)");
    let count_msg = format!("{head}: the field counts differ (the kernel's layout has {n_fields})");
    let storage = match d.storage {
        Storage::Byte => quote_spanned!(span=> ::qkc::layout::Storage::Byte),
        Storage::Stream => quote_spanned!(span=> ::qkc::layout::Storage::Stream),
    };
    let storage_msg = format!(
        "{head}: the storage differs (the kernel's is `{}`)",
        d.storage.name()
    );
    let fields = d.fields().iter().enumerate().map(|(i, f)| {
        let (signed, bits, shift) = (f.signed, f.bits, f.shift);
        let msg = format!(
            "{head}: field {i} differs (the kernel's is {} @ {}..{})",
            f.type_name(),
            f.shift + f.bits - 1,
            f.shift
        );
        quote_spanned! {span=>
            ::core::assert!(
                __qkc_rust.fields[#i].signed == #signed
                    && __qkc_rust.fields[#i].bits == #bits
                    && __qkc_rust.fields[#i].shift == #shift,
                #msg
            );
        }
    });
    quote_spanned! {span=>
        const _: () = {
            let __qkc_rust: ::qkc::layout::LayoutDesc = <#ty>::LAYOUT;
            ::core::assert!(__qkc_rust.unit_bits == #unit_bits, #unit_msg);
            ::core::assert!(__qkc_rust.n_fields == #n_fields, #count_msg);
            ::core::assert!(
                ::core::matches!(__qkc_rust.storage, #storage),
                #storage_msg
            );
            #(#fields)*
        };
    }
}

/// How `run` infers the dimensions from slice lengths: `(dim, input)` steps, each
/// dividing the input's length by its other (known) extents; plus the dims left
/// unknown (then no `run` is generated).
fn dims_plan(k: &Kernel) -> (Vec<(usize, usize)>, Vec<usize>) {
    let mut known = vec![false; k.dims.len()];
    let mut plan = Vec::new();
    loop {
        let mut progress = false;
        for (i, inp) in k.inputs.iter().enumerate() {
            let t = &inp.tensor;
            let packed = matches!(t.ty, ElemType::Packed { .. });
            let unknown: Vec<(usize, usize, bool)> = t
                .shape
                .iter()
                .enumerate()
                .filter_map(|(pos, e)| match *e {
                    Extent::Dim(d) if !known[d] => Some((d, pos, false)),
                    Extent::Groups(d, _) if !known[d] => Some((d, pos, true)),
                    _ => None,
                })
                .collect();
            if let [(d, pos, grouped)] = unknown[..] {
                // A grouped extent or a packed row's K gives only a range.
                let packed_k = packed && pos + 1 == t.shape.len();
                if !grouped && !packed_k {
                    known[d] = true;
                    plan.push((d, i));
                    progress = true;
                }
            }
        }
        if !progress {
            break;
        }
    }
    let missing = (0..k.dims.len()).filter(|&d| !known[d]).collect();
    (plan, missing)
}

/// Rust type of one element of a tensor, as the typed API takes it.
fn elem_type(t: &ElemType) -> TokenStream {
    match t {
        ElemType::Packed { .. } => quote!(u8),
        ElemType::Scalar(Scalar::I8) => quote!(i8),
        ElemType::Scalar(Scalar::I32) => quote!(i32),
        ElemType::Scalar(Scalar::F16) => quote!(::qkc::half::f16),
        ElemType::Scalar(Scalar::BF16) => quote!(::qkc::half::bf16),
        ElemType::Scalar(Scalar::F32) => quote!(f32),
    }
}

fn elem_name(t: &ElemType) -> &'static str {
    match t {
        ElemType::Packed { .. } => "u8",
        ElemType::Scalar(Scalar::I8) => "i8",
        ElemType::Scalar(Scalar::I32) => "i32",
        ElemType::Scalar(Scalar::F16) => "half::f16",
        ElemType::Scalar(Scalar::BF16) => "half::bf16",
        ElemType::Scalar(Scalar::F32) => "f32",
    }
}

/// A Rust parameter name for a `.qk` parameter (raw identifiers for keywords).
fn param_ident(name: &str) -> Ident {
    const KEYWORDS: [&str; 47] = [
        "as", "break", "const", "continue", "else", "enum", "extern", "false", "fn", "for", "if",
        "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref", "return",
        "static", "struct", "trait", "true", "type", "unsafe", "use", "where", "while", "async",
        "await", "dyn", "abstract", "become", "box", "do", "final", "macro", "override", "priv",
        "typeof", "unsized", "virtual", "yield", "try",
    ];
    match name {
        "self" | "Self" | "super" | "crate" | "_" | "dims" => format_ident!("{}_", name),
        n if n.starts_with("__qkc") => format_ident!("{}_", name),
        n if KEYWORDS.contains(&n) || n == "gen" => Ident::new_raw(n, Span::call_site()),
        n => Ident::new(n, Span::call_site()),
    }
}

/// Runs an emitter, turning a panic into an error message.
fn guarded(what: &str, f: impl FnOnce() -> Result<String, String>) -> Result<String, String> {
    catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err(format!("the {what} backend panicked (a qkc bug)")))
}

/// PTX for one arch from the default GPU lowering.
fn emit_ptx(k: &Kernel, arch: qkc_codegen::ptx::Arch) -> Result<String, String> {
    guarded("PTX", || {
        let f = qkc_codegen::lower::lower_gpu(k, &qkc_codegen::lower::GpuOptions::for_kernel(k));
        qkc_codegen::ptx::emit(&f, arch).map_err(|e| e.to_string())
    })
}

/// HIP source and header for [`HIP_ARCH`].
fn emit_hip(k: &Kernel) -> Result<(String, String), String> {
    let mut header = String::new();
    let source = guarded("HIP", || {
        let m = qkc_codegen::hip::emit_kernel(k, &qkc_codegen::hip::HipOptions::new(HIP_ARCH))
            .map_err(|e| e.to_string())?;
        header = m.header;
        Ok(m.source)
    })?;
    Ok((source, header))
}

fn layout_tokens(d: &LayoutDesc) -> TokenStream {
    let unit_bits = d.unit_bits;
    let n_fields = d.n_fields;
    let fields = d.fields.iter().map(|f| {
        let (signed, bits, shift) = (f.signed, f.bits, f.shift);
        quote!(::qkc::layout::FieldDesc { signed: #signed, bits: #bits, shift: #shift })
    });
    let storage = match d.storage {
        Storage::Byte => quote!(::qkc::layout::Storage::Byte),
        Storage::Stream => quote!(::qkc::layout::Storage::Stream),
    };
    quote! {
        ::qkc::layout::LayoutDesc {
            unit_bits: #unit_bits,
            n_fields: #n_fields,
            fields: [#(#fields),*],
            storage: #storage,
        }
    }
}

fn role_text(r: Role) -> &'static str {
    match r {
        Role::Activation => "activation",
        Role::Weight => "weights",
        Role::Scale(ScaleIndex::Row) => "row scale",
        Role::Scale(ScaleIndex::Col) => "column scale",
        Role::Scale(ScaleIndex::RowGroup) => "activation group scales",
        Role::Scale(ScaleIndex::ColGroup) => "weight group scales",
    }
}

/// `/// ..` lines documenting the generated type.
fn struct_docs(item: &Item, c: &Compiled, plan_text: &str) -> Vec<String> {
    let k = &c.kernel;
    let mut d = Vec::new();
    if item.attrs.iter().any(|a| a.path().is_ident("doc")) {
        d.push(String::new());
    }
    d.push(format!(
        " Kernel `{}`, checked at compile time by `qkc::quant_kernel!`:",
        k.name
    ));
    d.push(String::new());
    d.push(" ```text".into());
    let lines: Vec<&str> = c.source.text.lines().collect();
    let first = lines.iter().position(|l| !l.trim().is_empty()).unwrap_or(0);
    let last = lines
        .iter()
        .rposition(|l| !l.trim().is_empty())
        .map_or(0, |i| i + 1);
    let lines = lines.get(first..last.max(first)).unwrap_or(&[]);
    let indent = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    for line in lines {
        d.push(format!(" {}", line.get(indent..).unwrap_or("").trim_end()));
    }
    d.push(" ```".into());
    d.push(String::new());
    d.push(" | parameter | `.qk` type | Rust slice | role |".into());
    d.push(" |---|---|---|---|".into());
    for p in &k.inputs {
        d.push(format!(
            " | `{}` | `{}{}` | `&[{}]` | {} |",
            p.tensor.name,
            p.tensor.ty.name(),
            k.shape_str(&p.tensor),
            elem_name(&p.tensor.ty),
            role_text(p.role)
        ));
    }
    d.push(format!(
        " | `{}` (output) | `{}{}` | `Vec<{}>` | row-major `[{}, {}]` |",
        k.output.name,
        k.output.ty.name(),
        k.shape_str(&k.output),
        elem_name(&k.output.ty),
        k.dims[k.m].name,
        k.dims[k.n].name
    ));
    d.push(String::new());
    let bounds: Vec<String> = k
        .dims
        .iter()
        .map(|x| format!("{} ≤ {}", x.name, x.max))
        .collect();
    d.push(format!(
        " Dimensions (the order of `run_dims`): {}.",
        bounds.join(", ")
    ));
    let accum = match k.accum {
        Accum::Int {
            ty, lo, hi, terms, ..
        } => format!(
            " Accumulator: exact `{}` over at most {terms} terms, proved to stay in [{lo}, {hi}].",
            ty.name()
        ),
        Accum::Float => " Accumulator: `f32`.".into(),
    };
    d.push(accum);
    d.push(String::new());
    d.push(plan_text.to_string());
    d
}

/// The generated items of one kernel.
fn generate(item: &Item, c: &Compiled) -> TokenStream {
    let k = &c.kernel;
    let name = &item.name;
    let vis = &item.vis;
    let attrs = &item.attrs;
    // `#[cfg]` applies to every generated item; derives the user wrote are kept.
    let cfgs = cfg_attrs(item);
    let derives = missing_derives(attrs);
    let derive = if derives.is_empty() {
        TokenStream::new()
    } else {
        quote!(#[derive(#(#derives),*)])
    };
    let cpu_name = format_ident!("{}Cpu", name);
    let cuda_name = format_ident!("{}Cuda", name);
    let kname = &k.name;
    let source = &c.source.text;

    let (plan, missing) = dims_plan(k);
    let plan_steps = plan.iter().map(|&(d, i)| quote!((#d, #i)));
    let n_dims = k.dims.len();
    let dim_names = k.dims.iter().map(|d| d.name.as_str());
    let dim_max = k.dims.iter().map(|d| d.max);
    let n_inputs = k.inputs.len();
    let input_names = k.inputs.iter().map(|p| p.tensor.name.as_str());
    let out_name = &k.output.name;
    let weight_layout = layout_tokens(&k.weight_layout());
    let group = match k.group {
        Some(g) => quote!(::core::option::Option::Some(#g)),
        None => quote!(::core::option::Option::None),
    };

    let (ptx80, ptx80_err) = split(emit_ptx(k, qkc_codegen::ptx::Arch::Sm80));
    let (ptx90, ptx90_err) = split(emit_ptx(k, qkc_codegen::ptx::Arch::Sm90));
    let ptx_err = opt_str(ptx80_err.or(ptx90_err));
    let hip = emit_hip(k);
    let (hip_source, hip_header, hip_err) = match hip {
        Ok((s, h)) => (s, h, None),
        Err(e) => (String::new(), String::new(), Some(e)),
    };
    let hip_err = opt_str(hip_err);
    let hip_arch = HIP_ARCH.name();

    let plan_text = if missing.is_empty() {
        let how: Vec<String> = plan
            .iter()
            .map(|&(d, i)| format!("{} from `{}`", k.dims[d].name, k.inputs[i].tensor.name))
            .collect();
        format!(
            " `run` infers the dimensions from the slice lengths ({}), then checks every slice.",
            how.join(", ")
        )
    } else {
        let names: Vec<String> = missing
            .iter()
            .map(|&d| format!("`{}`", k.dims[d].name))
            .collect();
        format!(
            " The slice lengths do not determine {} (a product of dimensions or a packed row \
             only bounds them), so there is no `run`: use `run_dims`.",
            names.join(" and ")
        )
    };
    let docs = struct_docs(item, c, &plan_text);

    // Typed parameters.
    let params: Vec<Ident> = k
        .inputs
        .iter()
        .map(|p| param_ident(&p.tensor.name))
        .collect();
    let types: Vec<TokenStream> = k.inputs.iter().map(|p| elem_type(&p.tensor.ty)).collect();
    let out_ty = elem_type(&k.output.ty);
    let args = quote!(#(#params: &[#types]),*);
    let lens = quote!([#(#params.len()),*]);
    let bufs = quote!(::std::vec![#(::qkc::typed::Elem::host(#params)),*]);
    let dims_arg = format_ident!("dims");
    let dim_list = k
        .dims
        .iter()
        .map(|d| d.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let arg_docs: Vec<String> = k
        .inputs
        .iter()
        .map(|p| {
            let extra = match &p.tensor.ty {
                ElemType::Packed { layout, .. } => format!(
                    ", packed `{}`: each row starts on a byte boundary",
                    layout.describe()
                ),
                _ => String::new(),
            };
            format!(
                "`{}: {}{}` ({}{extra})",
                p.tensor.name,
                p.tensor.ty.name(),
                k.shape_str(&p.tensor),
                role_text(p.role)
            )
        })
        .collect();
    let out_doc = format!(
        "`{}: {}{}`, row-major",
        k.output.name,
        k.output.ty.name(),
        k.shape_str(&k.output)
    );
    let run_doc = format!(
        " Runs `{kname}` on {{dev}}: {}; returns {out_doc}.\n\n{}",
        arg_docs.join(", "),
        plan_text.trim_start()
    );
    let run_dims_doc = format!(
        " Runs `{kname}` on {{dev}} with explicit dimensions `[{dim_list}]` (the order of \
         `{name}::DIMS`), checking every slice against them; returns {out_doc}."
    );

    let typed_runs = |dev: &str, runner: TokenStream| -> TokenStream {
        let run_doc = run_doc.replace("{dev}", dev);
        let run_dims_doc = run_dims_doc.replace("{dev}", dev);
        let run = if missing.is_empty() {
            quote! {
                #[doc = #run_doc]
                pub fn run(&self, #args) -> ::core::result::Result<::std::vec::Vec<#out_ty>, ::qkc::typed::Error> {
                    let __qkc_kernel = self.inner.kernel();
                    let __qkc_dims = ::qkc::typed::infer_dims(__qkc_kernel, #name::DIMS_PLAN, &#lens)?;
                    let __qkc_out = #runner(&self.inner, &__qkc_dims, #bufs)?;
                    ::qkc::typed::output(__qkc_kernel, __qkc_out)
                }
            }
        } else {
            TokenStream::new()
        };
        quote! {
            #run

            #[doc = #run_dims_doc]
            pub fn run_dims(&self, #dims_arg: [usize; #n_dims], #args) -> ::core::result::Result<::std::vec::Vec<#out_ty>, ::qkc::typed::Error> {
                let __qkc_kernel = self.inner.kernel();
                let __qkc_dims = ::qkc::typed::explicit_dims(&#dims_arg);
                let __qkc_out = #runner(&self.inner, &__qkc_dims, #bufs)?;
                ::qkc::typed::output(__qkc_kernel, __qkc_out)
            }
        }
    };
    let cpu_runs = typed_runs("the CPU (Cranelift JIT)", quote!(::qkc::typed::run_cpu));
    let cuda_runs = typed_runs("the GPU (CUDA)", quote!(::qkc::typed::run_cuda));
    let upload = if missing.is_empty() {
        quote! {
            /// Checks the slices like `run` and copies them to new device buffers
            /// (for repeated launches with [`Self::launch`]).
            pub fn upload(&self, #args) -> ::core::result::Result<::qkc::runtime::cuda::DeviceArgs, ::qkc::typed::Error> {
                let __qkc_dims = ::qkc::typed::infer_dims(self.inner.kernel(), #name::DIMS_PLAN, &#lens)?;
                ::qkc::typed::upload_cuda(&self.inner, &__qkc_dims, #bufs)
            }
        }
    } else {
        TokenStream::new()
    };

    let cpu_doc =
        format!(" `{name}` compiled for this CPU by the Cranelift JIT ([`{name}::cpu`]).");
    let cuda_doc = format!(" `{name}` compiled for a CUDA device ([`{name}::cuda`]).");
    let dims_plan_doc = " How `run` infers dimensions: `(dimension, input)` steps, each dividing \
                         the input's length by its other extents.";

    quote! {
        #(#attrs)*
        #(#[doc = #docs])*
        #derive
        #vis struct #name;

        #(#cfgs)*
        #[allow(dead_code)]
        impl #name {
            /// The kernel's name in the `.qk` source.
            pub const NAME: &'static str = #kname;
            /// The `.qk` source checked at compile time (and compiled again by
            /// [`Self::kernel`]).
            pub const SOURCE: &'static str = #source;
            /// Dimension names, in the order of `run_dims` and of `qkc::dsl::ir::Dims`.
            pub const DIMS: [&'static str; #n_dims] = [#(#dim_names),*];
            /// Upper bound of each dimension (`where` clauses, else `i32::MAX`).
            pub const DIM_MAX: [u64; #n_dims] = [#(#dim_max),*];
            /// Input parameter names, in the order of the typed `run` arguments.
            pub const INPUTS: [&'static str; #n_inputs] = [#(#input_names),*];
            /// The output's name.
            pub const OUTPUT: &'static str = #out_name;
            /// The weights' packed layout (`i8` weights are `s8` bytes); quantize with it.
            pub const WEIGHT_LAYOUT: ::qkc::layout::LayoutDesc = #weight_layout;
            /// The group size of the `k / G` scales, if any.
            pub const GROUP: ::core::option::Option<u32> = #group;
            #[doc = #dims_plan_doc]
            pub const DIMS_PLAN: &'static [(usize, usize)] = &[#(#plan_steps),*];
            /// PTX for `sm_80` (Ampere), emitted while expanding from the default GPU
            /// lowering (every M path in one entry). Empty if `PTX_ERROR` is set.
            pub const PTX_SM80: &'static str = #ptx80;
            /// PTX for `sm_90` (Hopper). Empty if `PTX_ERROR` is set.
            pub const PTX_SM90: &'static str = #ptx90;
            /// Why the PTX backend could not emit this kernel, if it could not.
            pub const PTX_ERROR: ::core::option::Option<&'static str> = #ptx_err;
            /// The AMD arch of `HIP_SOURCE`.
            pub const HIP_ARCH: &'static str = #hip_arch;
            /// HIP C++ source (kernel and `extern "C"` launch wrapper), emitted while
            /// expanding. Empty if `HIP_ERROR` is set.
            pub const HIP_SOURCE: &'static str = #hip_source;
            /// The C header declaring the HIP launch wrapper.
            pub const HIP_HEADER: &'static str = #hip_header;
            /// Why the HIP backend could not emit this kernel, if it could not.
            pub const HIP_ERROR: ::core::option::Option<&'static str> = #hip_err;

            /// The checked kernel, compiled again from [`Self::SOURCE`]. It compiled
            /// while expanding the macro, so this only fails if the `qkc` front end
            /// linked at run time differs from the one the macro used.
            pub fn kernel() -> ::core::result::Result<::qkc::dsl::ir::Kernel, ::qkc::typed::Error> {
                ::qkc::typed::compile_embedded(Self::NAME, Self::SOURCE)
            }

            /// Compiles the kernel for this CPU (Cranelift JIT, default options:
            /// schedule hints, SIMD, all cores).
            pub fn cpu() -> ::core::result::Result<#cpu_name, ::qkc::typed::Error> {
                let __qkc_kernel = Self::kernel()?;
                let __qkc_opts = ::qkc::runtime::cpu::CpuOptions::for_kernel(&__qkc_kernel);
                Self::cpu_with(&__qkc_opts)
            }

            /// Compiles the kernel for this CPU with explicit options.
            pub fn cpu_with(opts: &::qkc::runtime::cpu::CpuOptions) -> ::core::result::Result<#cpu_name, ::qkc::typed::Error> {
                let __qkc_kernel = Self::kernel()?;
                ::core::result::Result::Ok(#cpu_name {
                    inner: ::qkc::runtime::cpu::CpuKernel::new(&__qkc_kernel, opts)?,
                })
            }

            /// Compiles the kernel for a CUDA device (open one with
            /// `qkc::runtime::cuda::CudaDevice::new(0)`, which fails cleanly without a
            /// driver or a GPU).
            pub fn cuda(dev: &::std::sync::Arc<::qkc::runtime::cuda::CudaDevice>) -> ::core::result::Result<#cuda_name, ::qkc::typed::Error> {
                let __qkc_kernel = Self::kernel()?;
                let __qkc_opts = ::qkc::runtime::cuda::CudaOptions::default();
                ::core::result::Result::Ok(#cuda_name {
                    inner: ::qkc::runtime::cuda::CudaKernel::new(dev, &__qkc_kernel, &__qkc_opts)?,
                })
            }
        }

        #(#cfgs)*
        #[doc = #cpu_doc]
        #[derive(Debug)]
        #vis struct #cpu_name {
            inner: ::qkc::runtime::cpu::CpuKernel,
        }

        #(#cfgs)*
        #[allow(dead_code, non_snake_case, clippy::too_many_arguments)]
        impl #cpu_name {
            #cpu_runs

            /// The compiled kernel (for `run_into`, `time` and host buffers).
            pub fn inner(&self) -> &::qkc::runtime::cpu::CpuKernel {
                &self.inner
            }

            /// The checked kernel.
            pub fn kernel(&self) -> &::qkc::dsl::ir::Kernel {
                self.inner.kernel()
            }
        }

        #(#cfgs)*
        #[doc = #cuda_doc]
        #vis struct #cuda_name {
            inner: ::qkc::runtime::cuda::CudaKernel,
        }

        #(#cfgs)*
        impl ::core::fmt::Debug for #cuda_name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.debug_struct(::core::stringify!(#cuda_name))
                    .field("kernel", &self.inner.kernel().name)
                    .field("device", &self.inner.device().name())
                    .finish()
            }
        }

        #(#cfgs)*
        #[allow(dead_code, non_snake_case, clippy::too_many_arguments)]
        impl #cuda_name {
            #cuda_runs

            #upload

            /// Launches on device-resident buffers (asynchronously).
            pub fn launch(&self, args: &mut ::qkc::runtime::cuda::DeviceArgs) -> ::core::result::Result<(), ::qkc::typed::Error> {
                ::core::result::Result::Ok(self.inner.launch(args)?)
            }

            /// Waits for the launch and copies the output back.
            pub fn download(&self, args: &::qkc::runtime::cuda::DeviceArgs) -> ::core::result::Result<::std::vec::Vec<#out_ty>, ::qkc::typed::Error> {
                let __qkc_out = self.inner.download(args)?;
                ::qkc::typed::output(self.inner.kernel(), __qkc_out)
            }

            /// The compiled kernel.
            pub fn inner(&self) -> &::qkc::runtime::cuda::CudaKernel {
                &self.inner
            }

            /// The checked kernel.
            pub fn kernel(&self) -> &::qkc::dsl::ir::Kernel {
                self.inner.kernel()
            }
        }
    }
}

/// The item's `#[cfg(..)]` attributes.
fn cfg_attrs(item: &Item) -> Vec<&Attribute> {
    item.attrs
        .iter()
        .filter(|a| a.path().is_ident("cfg"))
        .collect()
}

/// `Clone, Copy, Debug, Default, PartialEq, Eq, Hash`, minus what the item derives.
fn missing_derives(attrs: &[Attribute]) -> Vec<TokenStream> {
    let mut have = Vec::new();
    for a in attrs.iter().filter(|a| a.path().is_ident("derive")) {
        let parsed = a
            .parse_args_with(syn::punctuated::Punctuated::<syn::Path, Token![,]>::parse_terminated);
        if let Ok(paths) = parsed {
            have.extend(
                paths
                    .iter()
                    .filter_map(|p| p.segments.last().map(|s| s.ident.to_string())),
            );
        }
    }
    [
        ("Clone", quote!(::core::clone::Clone)),
        ("Copy", quote!(::core::marker::Copy)),
        ("Debug", quote!(::core::fmt::Debug)),
        ("Default", quote!(::core::default::Default)),
        ("PartialEq", quote!(::core::cmp::PartialEq)),
        ("Eq", quote!(::core::cmp::Eq)),
        ("Hash", quote!(::core::hash::Hash)),
    ]
    .into_iter()
    .filter(|(n, _)| !have.iter().any(|h| h == n))
    .map(|(_, t)| t)
    .collect()
}

fn split(r: Result<String, String>) -> (String, Option<String>) {
    match r {
        Ok(s) => (s, None),
        Err(e) => (String::new(), Some(e)),
    }
}

fn opt_str(s: Option<String>) -> TokenStream {
    match s {
        Some(s) => quote!(::core::option::Option::Some(#s)),
        None => quote!(::core::option::Option::None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::str::FromStr;

    fn root() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    fn qk_files(dir: &str) -> Vec<(String, String)> {
        let mut files: Vec<(String, String)> = std::fs::read_dir(root().join(dir))
            .unwrap()
            .filter_map(|e| {
                let p = e.ok()?.path();
                (p.extension()? == "qk").then(|| {
                    let name = p.file_name().unwrap().to_string_lossy().into_owned();
                    (name, std::fs::read_to_string(&p).unwrap())
                })
            })
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no .qk files in {dir}");
        files
    }

    fn printed(src: &str) -> Option<Printed> {
        let ts = TokenStream::from_str(src).ok()?;
        let mut toks = Vec::new();
        flatten(ts, &mut toks);
        Some(Printer::print(&toks))
    }

    #[test]
    fn printing_keeps_every_example_kernel_and_is_idempotent() {
        for (name, src) in qk_files("examples/kernels") {
            let p = printed(&src).unwrap();
            let a = qkc_dsl::compile(&name, &src).unwrap();
            let b = qkc_dsl::compile(&name, &p.text)
                .unwrap_or_else(|d| panic!("{name}:\n{}\n{}", p.text, d.render()));
            let show = |p: &Program| p.kernels.iter().map(|k| k.to_string()).collect::<Vec<_>>();
            assert_eq!(show(&a), show(&b), "{name}");
            assert_eq!(a.layouts, b.layouts, "{name}");
            assert_eq!(
                printed(&p.text).unwrap().text,
                p.text,
                "{name}: not idempotent"
            );
        }
    }

    #[test]
    fn gemv_prints_conventionally() {
        let p = printed(
            "kernel gemv(x: i8[M, K], xs: f32[M], w: q3p5[N, K], ws: f16[N, K / 128]) -> y: f32[M, N] { \
             where M <= 8; schedule { tile_n = 4; threads = 128; } \
             y[m, n] = sum<i32>(k) x[m, k] * w[n, k] * ws[n, k / 128] * xs[m]; }",
        )
        .unwrap();
        assert_eq!(
            p.text,
            "kernel gemv(x: i8[M, K], xs: f32[M], w: q3p5[N, K], ws: f16[N, K / 128]) -> y: f32[M, N] {\n    \
             where M <= 8;\n    \
             schedule { tile_n = 4; threads = 128; }\n    \
             y[m, n] = sum<i32>(k) x[m, k] * w[n, k] * ws[n, k / 128] * xs[m];\n}\n"
        );
        let p = printed(
            "layout q = { hi: s4 @ 6..3, lo: s3 @ 2..0 } stream; /// doc\n layout r = s3 byte;",
        )
        .unwrap();
        assert_eq!(
            p.text,
            "layout q = { hi: s4 @ 6..3, lo: s3 @ 2..0 } stream;\nlayout r = s3 byte;\n"
        );
    }

    /// Every diagnostic of the front end's test corpus, compiled from tokens, has
    /// the same code and message and maps back onto the token it points at.
    #[test]
    fn diagnostics_map_back_to_their_tokens() {
        let mut checked = 0;
        for (name, src) in qk_files("tests/diagnostics") {
            let Some(p) = printed(&src) else { continue };
            let Err(want) = qkc_dsl::compile(&name, &src) else {
                panic!("{name} compiles")
            };
            let got = match qkc_dsl::compile(&name, &p.text) {
                Err(d) => d,
                Ok(_) => panic!("{name}: the printed text compiles:\n{}", p.text),
            };
            assert_eq!(
                (got.code, &got.message),
                (want.code, &want.message),
                "{name}:\n{}",
                p.text
            );
            let at = want.span.start;
            let in_token = src[at.min(src.len())..]
                .chars()
                .next()
                .is_some_and(|c| !c.is_whitespace());
            if !in_token || src[..at].lines().last().is_some_and(|l| l.contains("//")) {
                continue;
            }
            let (line, col) = want.line_col(&src);
            let Some((a, _)) = p.locate(&got.span) else {
                continue;
            };
            let (s, e) = (a.start(), a.end());
            let pos = (line, col - 1);
            assert!(
                (s.line, s.column) <= pos && pos < (e.line, e.column),
                "{name}: error at {line}:{col}, mapped to {}:{}..{}:{}\n{}",
                s.line,
                s.column + 1,
                e.line,
                e.column + 1,
                p.text
            );
            checked += 1;
        }
        assert!(checked >= 50, "only {checked} diagnostics checked");
    }

    #[test]
    fn dims_plans() {
        let plan = |src: &str| {
            let k = qkc_dsl::compile("t", src).unwrap().kernels.remove(0);
            dims_plan(&k)
        };
        // M from xs, K from x, N from w.
        let (p, missing) = plan("kernel g(x: i8[M, K], xs: f32[M], w: q3p5[N, K], ws: f16[N, K / 128]) -> y: f32[M, N] { y[m, n] = sum(k) x[m, k] * w[n, k] * ws[n, k / 128] * xs[m]; }");
        assert_eq!((p, missing), (vec![(0, 1), (1, 0), (2, 2)], vec![]));
        // i8 weights give K; a column scale gives N.
        let (p, missing) = plan("kernel g(x: f32[M, K], w: i8[N, K], s: f32[N]) -> y: f32[M, N] { y[m, n] = sum(k) x[m, k] * w[n, k] * s[n]; }");
        assert_eq!((p, missing), (vec![(2, 2), (1, 1), (0, 0)], vec![]));
        // Only M * K and packed rows: nothing is determined.
        let (p, missing) = plan("kernel g(x: i8[M, K], w: s4[N, K]) -> y: i32[M, N] { where K <= 4096; y[m, n] = sum(k) x[m, k] * w[n, k]; }");
        assert_eq!((p, missing), (vec![], vec![0, 1, 2]));
    }

    #[test]
    fn literal_excerpt_points_at_the_column() {
        let src = "\n  kernel k(\tx: i8[M, K]) ->\n";
        let at = src.find("x:").unwrap();
        let e = excerpt(src, &(at..at + 1), "here");
        assert_eq!(
            e,
            "  --> line 2, column 13 of the kernel source\n    |\n  2 |   kernel k( x: i8[M, K]) ->\n    |             ^ here"
        );
    }
}
