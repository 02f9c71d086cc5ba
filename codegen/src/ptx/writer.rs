//! Low-level PTX text assembly: virtual-register pools, labels, instruction lines and
//! the final module layout (header, `.entry`, register declarations, body).

use std::fmt::Write;

use crate::loop_ir::Ty;

/// A PTX register class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    Pred,
    B16,
    B32,
    B64,
    F32,
}

impl Class {
    pub fn of(t: Ty) -> Class {
        match t {
            Ty::I32 => Class::B32,
            Ty::I64 => Class::B64,
            Ty::F32 => Class::F32,
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Class::Pred => "%p",
            Class::B16 => "%h",
            Class::B32 => "%r",
            Class::B64 => "%rd",
            Class::F32 => "%f",
        }
    }

    fn decl(self) -> &'static str {
        match self {
            Class::Pred => ".pred",
            Class::B16 => ".b16",
            Class::B32 => ".b32",
            Class::B64 => ".b64",
            Class::F32 => ".f32",
        }
    }
}

const CLASSES: [Class; 5] = [Class::Pred, Class::B16, Class::B32, Class::B64, Class::F32];

/// Collects the body of one `.entry` and hands out registers and labels.
#[derive(Default)]
pub struct Writer {
    counts: [u32; 5],
    labels: u32,
    named: Vec<(Class, String)>,
    body: String,
}

impl Writer {
    /// A fresh temporary register of class `c`.
    pub fn reg(&mut self, c: Class) -> String {
        let i = CLASSES.iter().position(|&x| x == c).unwrap_or(0);
        let n = self.counts[i];
        self.counts[i] += 1;
        format!("{}{n}", c.prefix())
    }

    /// Declares a named register (a loop-IR variable).
    pub fn named(&mut self, c: Class, name: String) -> String {
        self.named.push((c, name.clone()));
        name
    }

    /// A fresh label.
    pub fn label(&mut self) -> String {
        self.labels += 1;
        format!("$L{}", self.labels)
    }

    /// Emits one instruction (without the trailing `;`).
    pub fn ins(&mut self, text: impl AsRef<str>) {
        let _ = writeln!(self.body, "\t{};", text.as_ref());
    }

    /// Emits a label line.
    pub fn place(&mut self, label: &str) {
        let _ = writeln!(self.body, "{label}:");
    }

    /// Emits a comment line (newlines are flattened).
    pub fn comment(&mut self, text: &str) {
        let _ = writeln!(self.body, "\t// {}", ascii(text));
    }

    /// The finished module text.
    pub fn finish(self, header: &str, entry: &str, params: &[String], directives: &str) -> String {
        let mut out = String::new();
        out.push_str(header);
        let _ = writeln!(out, ".visible .entry {entry}(");
        for (i, p) in params.iter().enumerate() {
            let sep = if i + 1 < params.len() { "," } else { "" };
            let _ = writeln!(out, "\t{p}{sep}");
        }
        let _ = writeln!(out, ")");
        out.push_str(directives);
        let _ = writeln!(out, "{{");
        for (i, c) in CLASSES.iter().enumerate() {
            if self.counts[i] > 0 {
                let _ = writeln!(
                    out,
                    "\t.reg {} {}<{}>;",
                    c.decl(),
                    c.prefix(),
                    self.counts[i]
                );
            }
        }
        for (c, name) in &self.named {
            let _ = writeln!(out, "\t.reg {} {name};", c.decl());
        }
        out.push('\n');
        out.push_str(&self.body);
        let _ = writeln!(out, "\tret;");
        let _ = writeln!(out, "}}");
        out
    }
}

/// A PTX immediate for an `f32` constant (`0fXXXXXXXX`, exact bits).
pub fn f32_imm(v: f32) -> String {
    format!("0f{:08X}", v.to_bits())
}

/// `name` reduced to PTX identifier characters.
pub fn ident(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        s.insert(0, '_');
    }
    s
}

/// `text` on one line in ASCII (`ptxas` rejects other bytes, comments included).
pub fn ascii(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' | '\r' | '\t' => out.push(' '),
            c if c.is_ascii() => out.push(c),
            '≤' => out.push_str("<="),
            '≥' => out.push_str(">="),
            '≠' => out.push_str("!="),
            '×' | '·' => out.push('*'),
            '→' => out.push_str("->"),
            '←' => out.push_str("<-"),
            '∈' => out.push_str(" in "),
            '…' => out.push_str("..."),
            '–' | '—' | '−' => out.push('-'),
            'Σ' => out.push_str("sum"),
            _ => out.push('?'),
        }
    }
    out
}
