//! Typed IR: one checked, resolved description of a quantized matmul kernel.
//!
//! Every kernel has the canonical form
//!
//! ```text
//! y[m, n] = (row/col scales) * Σ_g (group scales of g) * Σ_{k in group g} a[m, k] * w[n, k]
//! ```
//!
//! where `a` is the activation (`[M, K]`, i8/f16/bf16/f32), `w` the weight (`[N, K]`,
//! a packed layout or i8), and the scales are float tensors indexed by `[m]`, `[n]`,
//! `[m, k/G]` or `[n, k/G]`. The inner sum is exact integer arithmetic when the
//! activation is i8 ([`Accum::Int`], range proved by [`crate::bounds`]) and float
//! otherwise. Backends and the interpreter read only this IR (and the loop IR lowered
//! from it), never the AST.

use std::fmt;

use crate::ast::Span;
use crate::bounds::Obligation;
use crate::layout::LayoutDesc;

/// Dimension values default to this bound when no `where` clause gives one
/// (the backends index with 32-bit signed integers).
pub const DIM_MAX_DEFAULT: u64 = i32::MAX as u64;

/// Plain element types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scalar {
    I8,
    I32,
    F16,
    BF16,
    F32,
}

impl Scalar {
    pub fn from_name(s: &str) -> Option<Scalar> {
        Some(match s {
            "i8" => Scalar::I8,
            "i32" => Scalar::I32,
            "f16" => Scalar::F16,
            "bf16" => Scalar::BF16,
            "f32" => Scalar::F32,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Scalar::I8 => "i8",
            Scalar::I32 => "i32",
            Scalar::F16 => "f16",
            Scalar::BF16 => "bf16",
            Scalar::F32 => "f32",
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, Scalar::F16 | Scalar::BF16 | Scalar::F32)
    }

    pub fn bytes(self) -> usize {
        match self {
            Scalar::I8 => 1,
            Scalar::F16 | Scalar::BF16 => 2,
            Scalar::I32 | Scalar::F32 => 4,
        }
    }
}

/// The element type of a tensor parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ElemType {
    Scalar(Scalar),
    /// Packed codes; buffers are raw bytes in the layout's storage order.
    Packed {
        name: String,
        layout: LayoutDesc,
    },
}

impl ElemType {
    pub fn name(&self) -> String {
        match self {
            ElemType::Scalar(s) => s.name().to_string(),
            ElemType::Packed { name, .. } => name.clone(),
        }
    }
}

/// A symbolic dimension with its proven upper bound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DimVar {
    pub name: String,
    pub max: u64,
}

/// One extent of a tensor shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extent {
    /// The dimension itself.
    Dim(usize),
    /// `ceil(dim / g)`: the number of groups of size `g`.
    Groups(usize, u32),
}

/// Where a float scale factor is indexed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScaleIndex {
    /// `[m]`: one per activation row.
    Row,
    /// `[n]`: one per output column / weight row.
    Col,
    /// `[m, k / G]`: activation group scales.
    RowGroup,
    /// `[n, k / G]`: weight group scales.
    ColGroup,
}

impl ScaleIndex {
    pub fn is_grouped(self) -> bool {
        matches!(self, ScaleIndex::RowGroup | ScaleIndex::ColGroup)
    }
}

/// What a parameter is to the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Activation,
    Weight,
    Scale(ScaleIndex),
}

/// A tensor parameter (input or output).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tensor {
    pub name: String,
    pub ty: ElemType,
    pub shape: Vec<Extent>,
    pub span: Span,
}

/// An input parameter, in declaration order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Input {
    pub tensor: Tensor,
    pub role: Role,
}

/// Integer accumulator widths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntTy {
    I32,
    I64,
}

impl IntTy {
    pub fn name(self) -> &'static str {
        match self {
            IntTy::I32 => "i32",
            IntTy::I64 => "i64",
        }
    }
    pub fn min(self) -> i128 {
        match self {
            IntTy::I32 => i32::MIN as i128,
            IntTy::I64 => i64::MIN as i128,
        }
    }
    pub fn max(self) -> i128 {
        match self {
            IntTy::I32 => i32::MAX as i128,
            IntTy::I64 => i64::MAX as i128,
        }
    }
}

/// How the inner sum accumulates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accum {
    /// Exact integer sum of `a * w` over at most `terms` products; its range is
    /// `lo..=hi`, proved to fit `ty`.
    Int {
        ty: IntTy,
        lo: i64,
        hi: i64,
        terms: u64,
        /// The user did not ask for this width: i32 could not be proved and the
        /// accumulator was widened.
        widened: bool,
    },
    /// f32 accumulation of `a * (w as float)`.
    Float,
}

/// Schedule hints; backends may honour them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Schedule {
    pub tile_m: Option<u32>,
    pub tile_n: Option<u32>,
    pub tile_k: Option<u32>,
    pub vector: Option<u32>,
    pub threads: Option<u32>,
}

impl Schedule {
    pub const KEYS: [&'static str; 5] = ["tile_m", "tile_n", "tile_k", "vector", "threads"];
}

/// A checked kernel.
#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    pub name: String,
    /// Dimensions; `m`, `n`, `k` index into this list.
    pub dims: Vec<DimVar>,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// Index variable names as written (`m`, `n`, `k`).
    pub vars: [String; 3],
    /// Inputs in declaration order (the order of buffers at launch).
    pub inputs: Vec<Input>,
    pub output: Tensor,
    /// Index into `inputs` of the activation and the weight.
    pub act: usize,
    pub weight: usize,
    /// Group size of `k / G` indexed scales, if any.
    pub group: Option<u32>,
    pub accum: Accum,
    pub schedule: Schedule,
    /// Proof obligations discharged while checking (see `qkc check --bounds`).
    pub proofs: Vec<Obligation>,
    pub span: Span,
}

/// Concrete values for a kernel's dimensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dims {
    pub values: Vec<u64>,
}

impl Kernel {
    pub fn act_ty(&self) -> Scalar {
        match &self.inputs[self.act].tensor.ty {
            ElemType::Scalar(s) => *s,
            ElemType::Packed { .. } => Scalar::I8,
        }
    }

    /// The weight layout; a plain `i8` weight is the `s8` byte layout.
    pub fn weight_layout(&self) -> LayoutDesc {
        match &self.inputs[self.weight].tensor.ty {
            ElemType::Packed { layout, .. } => *layout,
            _ => LayoutDesc::scalar(true, 8, crate::layout::Storage::Byte),
        }
    }

    pub fn out_ty(&self) -> Scalar {
        match &self.output.ty {
            ElemType::Scalar(s) => *s,
            ElemType::Packed { .. } => Scalar::F32,
        }
    }

    /// Scale inputs with their index kinds.
    pub fn scales(&self) -> impl Iterator<Item = (usize, ScaleIndex)> + '_ {
        self.inputs
            .iter()
            .enumerate()
            .filter_map(|(i, p)| match p.role {
                Role::Scale(s) => Some((i, s)),
                _ => None,
            })
    }

    pub fn is_int(&self) -> bool {
        matches!(self.accum, Accum::Int { .. })
    }

    /// Builds [`Dims`] from `name=value` pairs, checking names and declared bounds.
    pub fn dims_from_pairs(&self, pairs: &[(String, u64)]) -> Result<Dims, String> {
        let mut values = vec![None; self.dims.len()];
        for (name, v) in pairs {
            let Some(i) = self.dims.iter().position(|d| &d.name == name) else {
                let known: Vec<&str> = self.dims.iter().map(|d| d.name.as_str()).collect();
                return Err(format!(
                    "kernel `{}` has no dimension `{name}` (its dimensions are {})",
                    self.name,
                    known.join(", ")
                ));
            };
            values[i] = Some(*v);
        }
        let mut out = Vec::new();
        for (d, v) in self.dims.iter().zip(values) {
            let v = v.ok_or_else(|| format!("missing a value for dimension `{}`", d.name))?;
            out.push(v);
        }
        let dims = Dims { values: out };
        self.validate_dims(&dims)?;
        Ok(dims)
    }

    /// Checks that every dimension is in `1..=max`.
    pub fn validate_dims(&self, dims: &Dims) -> Result<(), String> {
        if dims.values.len() != self.dims.len() {
            return Err(format!(
                "kernel `{}` has {} dimensions, {} values given",
                self.name,
                self.dims.len(),
                dims.values.len()
            ));
        }
        for (d, &v) in self.dims.iter().zip(&dims.values) {
            if v == 0 {
                return Err(format!(
                    "dimension {} = 0: dimensions must be at least 1",
                    d.name
                ));
            }
            if v > d.max {
                return Err(format!(
                    "dimension {} = {v} exceeds its bound {} <= {}",
                    d.name, d.name, d.max
                ));
            }
        }
        Ok(())
    }

    pub fn extent(&self, e: Extent, dims: &Dims) -> usize {
        match e {
            Extent::Dim(d) => dims.values[d] as usize,
            Extent::Groups(d, g) => (dims.values[d] as usize).div_ceil(g as usize),
        }
    }

    /// Number of elements (or bytes, for packed tensors) a buffer must hold.
    pub fn buffer_len(&self, t: &Tensor, dims: &Dims) -> usize {
        match &t.ty {
            ElemType::Packed { layout, .. } => {
                let rows: usize = t.shape[..t.shape.len() - 1]
                    .iter()
                    .map(|&e| self.extent(e, dims))
                    .product();
                let k = self.extent(t.shape[t.shape.len() - 1], dims);
                layout.tensor_bytes(rows, k)
            }
            ElemType::Scalar(_) => t.shape.iter().map(|&e| self.extent(e, dims)).product(),
        }
    }

    /// Bytes read from the weight tensor (packed codes plus weight-indexed scales).
    pub fn weight_bytes(&self, dims: &Dims) -> usize {
        let mut b = self.buffer_len(&self.inputs[self.weight].tensor, dims);
        for (i, s) in self.scales() {
            if matches!(s, ScaleIndex::ColGroup | ScaleIndex::Col) {
                let t = &self.inputs[i].tensor;
                if let ElemType::Scalar(sc) = t.ty {
                    b += self.buffer_len(t, dims) * sc.bytes();
                }
            }
        }
        b
    }

    /// Shape as text: `[N, K / 128]`.
    pub fn shape_str(&self, t: &Tensor) -> String {
        let parts: Vec<String> = t
            .shape
            .iter()
            .map(|e| match *e {
                Extent::Dim(d) => self.dims[d].name.clone(),
                Extent::Groups(d, g) => format!("{} / {g}", self.dims[d].name),
            })
            .collect();
        format!("[{}]", parts.join(", "))
    }
}

impl fmt::Display for Kernel {
    /// Prints the typed IR (`qkc emit --target ir`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "kernel {} {{", self.name)?;
        for d in &self.dims {
            writeln!(f, "  dim {} in 1..={}", d.name, d.max)?;
        }
        for (i, p) in self.inputs.iter().enumerate() {
            let role = match p.role {
                Role::Activation => "activation".to_string(),
                Role::Weight => "weight".to_string(),
                Role::Scale(s) => format!("scale {s:?}"),
            };
            let ty = match &p.tensor.ty {
                ElemType::Packed { name, layout } => format!("{name} = {layout}"),
                ElemType::Scalar(s) => s.name().to_string(),
            };
            writeln!(
                f,
                "  in  %{i} {}: {ty}{}  ; {role}",
                p.tensor.name,
                self.shape_str(&p.tensor)
            )?;
        }
        writeln!(
            f,
            "  out {}: {}{}",
            self.output.name,
            self.output.ty.name(),
            self.shape_str(&self.output)
        )?;
        let [vm, vn, vk] = &self.vars;
        let a = &self.inputs[self.act].tensor.name;
        let w = &self.inputs[self.weight].tensor.name;
        match self.accum {
            Accum::Int {
                ty,
                lo,
                hi,
                terms,
                widened,
            } => writeln!(
                f,
                "  acc {}: {a}[{vm}, {vk}] * {w}[{vn}, {vk}] exact over <= {terms} terms, range [{lo}, {hi}]{}",
                ty.name(),
                if widened { " (widened)" } else { "" }
            )?,
            Accum::Float => writeln!(f, "  acc f32: {a}[{vm}, {vk}] * f32({w}[{vn}, {vk}])")?,
        }
        if let Some(g) = self.group {
            write!(f, "  per group of {g} along {vk}: acc *=")?;
            for (i, s) in self.scales().filter(|(_, s)| s.is_grouped()) {
                let idx = if s == ScaleIndex::RowGroup { vm } else { vn };
                write!(f, " {}[{idx}, {vk} / {g}]", self.inputs[i].tensor.name)?;
            }
            writeln!(f)?;
        }
        write!(f, "  {}[{vm}, {vn}] = sum", self.output.name)?;
        for (i, s) in self.scales().filter(|(_, s)| !s.is_grouped()) {
            let idx = if s == ScaleIndex::Row { vm } else { vn };
            write!(f, " * {}[{idx}]", self.inputs[i].tensor.name)?;
        }
        writeln!(f)?;
        let s = &self.schedule;
        let hints: Vec<String> = [
            ("tile_m", s.tile_m),
            ("tile_n", s.tile_n),
            ("tile_k", s.tile_k),
            ("vector", s.vector),
            ("threads", s.threads),
        ]
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k} = {v}")))
        .collect();
        if !hints.is_empty() {
            writeln!(f, "  schedule {}", hints.join(", "))?;
        }
        write!(f, "}}")
    }
}
