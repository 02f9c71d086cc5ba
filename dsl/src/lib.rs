//! qkc front end: the `.qk` tensor DSL from text to a checked, typed IR, plus the
//! exact reference interpreter that every backend is tested against.
//!
//! Stages, one module each: [`lexer`] → [`parser`] ([`ast`]) → [`check`] (with
//! [`bounds`]) → [`ir`]; [`interp`] evaluates the IR; [`layout`] is the packed-layout
//! descriptor shared with the packers and backends.

// `Diag` carries a message, spans and a help line; it is only built on the cold error
// path, so returning it by value is simpler than boxing every front-end result.
#![allow(clippy::result_large_err)]

pub mod ast;
pub mod bounds;
pub mod check;
pub mod diag;
pub mod host;
pub mod interp;
pub mod ir;
pub mod layout;
pub mod lexer;
pub mod parser;

pub use check::Program;
pub use diag::Diag;

/// Parses and checks a `.qk` source. Errors carry the source for rendering.
pub fn compile(file: &str, src: &str) -> Result<Program, Diag> {
    parser::parse(src)
        .and_then(|m| check::check_module(&m))
        .map_err(|d| d.with_source(file, src))
}
