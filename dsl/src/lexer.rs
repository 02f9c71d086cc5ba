//! Tokens of the `.qk` language, lexed with `logos`.

use logos::Logos;

use crate::ast::Span;
use crate::diag::Diag;

#[derive(Logos, Clone, Debug, PartialEq, Eq)]
#[logos(skip r"[ \t\r\n\f]+")]
#[logos(skip r"//[^\n]*")]
pub enum Tok {
    #[token("layout")]
    Layout,
    #[token("kernel")]
    Kernel,
    #[token("sum")]
    Sum,
    #[token("where")]
    Where,
    #[token("schedule")]
    Schedule,
    #[token("stream")]
    Stream,
    #[token("byte")]
    Byte,
    #[regex(r"[A-Za-z_][A-Za-z0-9_]*", |lex| lex.slice().to_string())]
    Ident(String),
    /// Decimal integer; `None` when it does not fit in 64 bits.
    #[regex(r"[0-9][0-9_]*", |lex| lex.slice().replace('_', "").parse::<u64>().ok())]
    Int(Option<u64>),
    #[token("->")]
    Arrow,
    #[token("<=")]
    Le,
    #[token("..")]
    DotDot,
    #[token("=")]
    Eq,
    #[token(";")]
    Semi,
    #[token(":")]
    Colon,
    #[token(",")]
    Comma,
    #[token("{")]
    LBrace,
    #[token("}")]
    RBrace,
    #[token("[")]
    LBracket,
    #[token("]")]
    RBracket,
    #[token("(")]
    LParen,
    #[token(")")]
    RParen,
    #[token("/")]
    Slash,
    #[token("*")]
    Star,
    #[token("<")]
    Lt,
    #[token(">")]
    Gt,
    #[token("@")]
    At,
}

impl Tok {
    /// How the token is named in "expected ..." messages.
    pub fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("identifier `{s}`"),
            Tok::Int(Some(v)) => format!("integer `{v}`"),
            Tok::Int(None) => "integer".to_string(),
            Tok::Layout => "`layout`".into(),
            Tok::Kernel => "`kernel`".into(),
            Tok::Sum => "`sum`".into(),
            Tok::Where => "`where`".into(),
            Tok::Schedule => "`schedule`".into(),
            Tok::Stream => "`stream`".into(),
            Tok::Byte => "`byte`".into(),
            Tok::Arrow => "`->`".into(),
            Tok::Le => "`<=`".into(),
            Tok::DotDot => "`..`".into(),
            Tok::Eq => "`=`".into(),
            Tok::Semi => "`;`".into(),
            Tok::Colon => "`:`".into(),
            Tok::Comma => "`,`".into(),
            Tok::LBrace => "`{`".into(),
            Tok::RBrace => "`}`".into(),
            Tok::LBracket => "`[`".into(),
            Tok::RBracket => "`]`".into(),
            Tok::LParen => "`(`".into(),
            Tok::RParen => "`)`".into(),
            Tok::Slash => "`/`".into(),
            Tok::Star => "`*`".into(),
            Tok::Lt => "`<`".into(),
            Tok::Gt => "`>`".into(),
            Tok::At => "`@`".into(),
        }
    }
}

/// Splits `src` into tokens with their spans; the first unknown character is an error.
pub fn lex(src: &str) -> Result<Vec<(Tok, Span)>, Diag> {
    let mut out = Vec::new();
    let mut lexer = Tok::lexer(src);
    while let Some(tok) = lexer.next() {
        let span = lexer.span();
        match tok {
            Ok(Tok::Int(None)) => {
                return Err(Diag::new(
                    "lex::int",
                    "integer literal does not fit in 64 bits",
                    span,
                    "too large",
                ))
            }
            Ok(t) => out.push((t, span)),
            Err(()) => {
                let ch = src[span.clone()].chars().next().unwrap_or('?');
                let help = match ch {
                    '#' => "comments start with `//`",
                    '×' | '·' | '+' | '-' => {
                        "the body is one product: factors are multiplied with `*`"
                    }
                    _ => "see docs/language.md for the grammar",
                };
                return Err(Diag::new(
                    "lex::char",
                    format!("unexpected character `{}`", ch.escape_debug()),
                    span,
                    "not part of the qkc language",
                )
                .with_help(help));
            }
        }
    }
    Ok(out)
}
