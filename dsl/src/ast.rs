//! Abstract syntax tree of a `.qk` file, every node carrying its byte span.
//!
//! The AST is what the parser saw, unresolved: names are strings and types are
//! identifiers. [`crate::check`] resolves it into the typed IR ([`crate::ir`]).

use crate::layout::Storage;

/// Byte range in the source text.
pub type Span = std::ops::Range<usize>;

/// A name and where it was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// An integer literal and where it was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntLit {
    pub value: u64,
    pub span: Span,
}

/// A whole source file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    pub items: Vec<Item>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    Layout(LayoutDecl),
    Kernel(KernelDecl),
}

/// `layout q3p5 = { hi: s4, lo: s3 } stream;`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayoutDecl {
    pub name: Ident,
    pub spec: LayoutSpec,
    /// Storage mode; `stream` when omitted.
    pub storage: Option<(Storage, Span)>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayoutSpec {
    /// A single code per unit: `s3`.
    Scalar(CodeType),
    /// Several named codes sharing one unit: `{ hi: s4, lo: s3 }`.
    Fields { fields: Vec<FieldSpec>, span: Span },
}

/// A code type such as `s4` or `u3`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeType {
    pub signed: bool,
    pub bits: u64,
    pub span: Span,
}

/// `hi: s4` or `hi: s4 @ 6..3`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldSpec {
    pub name: Ident,
    pub code: CodeType,
    /// Explicit bit range `msb..lsb`, inclusive at both ends.
    pub bits: Option<(IntLit, IntLit)>,
    pub span: Span,
}

/// `kernel name(params) -> out: f32[M, N] { body }`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelDecl {
    pub name: Ident,
    pub params: Vec<ParamDecl>,
    pub output: ParamDecl,
    pub body: Vec<Stmt>,
    pub span: Span,
}

/// `w: q3p5[N, K]`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamDecl {
    pub name: Ident,
    pub ty: Ident,
    pub shape: Vec<DimExpr>,
    pub span: Span,
}

/// A shape extent: `K` or `K / 128` (ceiling division).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DimExpr {
    pub dim: Ident,
    pub div: Option<IntLit>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stmt {
    /// `where K <= 65536, M <= 8;`
    Where(Vec<Bound>),
    /// `schedule { tile_n = 4; threads = 128; }`
    Schedule { hints: Vec<Hint>, span: Span },
    /// `y[m, n] = sum(k) x[m, k] * w[n, k] * ...;`
    Assign(Assign),
}

/// `K <= 65536`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bound {
    pub dim: Ident,
    pub max: IntLit,
    pub span: Span,
}

/// `tile_n = 4`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hint {
    pub key: Ident,
    pub value: IntLit,
    pub span: Span,
}

/// The reduction statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assign {
    pub target: Access,
    /// Accumulator type requested with `sum<i32>(k)`.
    pub accum: Option<Ident>,
    /// The reduction variable.
    pub red: Ident,
    pub factors: Vec<Access>,
    pub span: Span,
}

/// `ws[n, k / 128]`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    pub tensor: Ident,
    pub indices: Vec<IndexExpr>,
    pub span: Span,
}

/// `k` or `k / 128`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexExpr {
    pub var: Ident,
    pub div: Option<IntLit>,
    pub span: Span,
}
