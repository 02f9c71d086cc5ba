//! Semantic checks: resolves the AST into the typed IR.
//!
//! Name resolution (layouts, types, tensors, dimensions, index variables), shape and
//! index consistency, type rules (which products accumulate in integers, where scales
//! apply), group divisibility, duplicate and unused parameters, and the accumulator
//! proof (see [`crate::bounds`]). The first error found is returned as a [`Diag`].

use std::collections::HashMap;

use crate::ast::{self, Span};
use crate::bounds::{self, Obligation, Status};
use crate::diag::Diag;
use crate::ir::*;
use crate::layout::{self, FieldDesc, LayoutDesc, LayoutError, Storage};

/// A checked `.qk` module.
#[derive(Clone, Debug)]
pub struct Program {
    /// Declared layouts, in source order.
    pub layouts: Vec<(String, LayoutDesc)>,
    pub kernels: Vec<Kernel>,
}

impl Program {
    pub fn kernel(&self, name: Option<&str>) -> Option<&Kernel> {
        match name {
            Some(n) => self.kernels.iter().find(|k| k.name == n),
            None => self.kernels.first(),
        }
    }
}

/// Checks a parsed module.
pub fn check_module(module: &ast::Module) -> Result<Program, Diag> {
    let mut layouts: Vec<(String, LayoutDesc)> = Vec::new();
    let mut layout_spans: HashMap<String, Span> = HashMap::new();
    let mut kernels: Vec<Kernel> = Vec::new();
    let mut kernel_spans: HashMap<String, Span> = HashMap::new();
    for item in &module.items {
        match item {
            ast::Item::Layout(l) => {
                let name = &l.name.name;
                if let Some(prev) = layout_spans.get(name) {
                    return Err(Diag::new(
                        "check::duplicate-layout",
                        format!("layout `{name}` is declared twice"),
                        l.name.span.clone(),
                        "second declaration",
                    )
                    .with_related(prev.clone(), "first declared here"));
                }
                if Scalar::from_name(name).is_some() {
                    return Err(Diag::new(
                        "check::layout-name",
                        format!("layout name `{name}` is a scalar type"),
                        l.name.span.clone(),
                        "reserved type name",
                    ));
                }
                let desc = check_layout(l)?;
                layout_spans.insert(name.clone(), l.name.span.clone());
                layouts.push((name.clone(), desc));
            }
            ast::Item::Kernel(k) => {
                if let Some(prev) = kernel_spans.get(&k.name.name) {
                    return Err(Diag::new(
                        "check::duplicate-kernel",
                        format!("kernel `{}` is declared twice", k.name.name),
                        k.name.span.clone(),
                        "second declaration",
                    )
                    .with_related(prev.clone(), "first declared here"));
                }
                kernel_spans.insert(k.name.name.clone(), k.name.span.clone());
                kernels.push(check_kernel(k, &layouts)?);
            }
        }
    }
    if kernels.is_empty() && layouts.is_empty() {
        return Err(Diag::new(
            "check::empty",
            "the file declares no layout and no kernel",
            0..0,
            "empty module",
        ));
    }
    Ok(Program { layouts, kernels })
}

fn code_width(c: &ast::CodeType) -> Result<u8, Diag> {
    if !(2..=8).contains(&c.bits) {
        return Err(Diag::new(
            "check::code-width",
            format!(
                "code type `{}{}` has {} bit{}; codes are 2..=8 bits wide",
                if c.signed { 's' } else { 'u' },
                c.bits,
                c.bits,
                if c.bits == 1 { "" } else { "s" }
            ),
            c.span.clone(),
            "unsupported width",
        ));
    }
    Ok(c.bits as u8)
}

/// Builds and checks a layout descriptor from its declaration.
pub fn check_layout(l: &ast::LayoutDecl) -> Result<LayoutDesc, Diag> {
    let storage = l.storage.as_ref().map(|s| s.0).unwrap_or(Storage::Stream);
    match &l.spec {
        ast::LayoutSpec::Scalar(c) => {
            let bits = code_width(c)?;
            Ok(LayoutDesc::scalar(c.signed, bits, storage))
        }
        ast::LayoutSpec::Fields { fields, span } => {
            if fields.len() > layout::MAX_FIELDS {
                return Err(Diag::new(
                    "check::layout-fields",
                    format!(
                        "a unit holds at most {} fields, found {}",
                        layout::MAX_FIELDS,
                        fields.len()
                    ),
                    span.clone(),
                    "too many fields",
                ));
            }
            let mut seen: HashMap<&str, Span> = HashMap::new();
            for f in fields {
                if let Some(prev) = seen.get(f.name.name.as_str()) {
                    return Err(Diag::new(
                        "check::duplicate-field",
                        format!("field `{}` appears twice", f.name.name),
                        f.name.span.clone(),
                        "duplicate field",
                    )
                    .with_related(prev.clone(), "first here"));
                }
                seen.insert(&f.name.name, f.name.span.clone());
            }
            let explicit = fields.iter().filter(|f| f.bits.is_some()).count();
            if explicit != 0 && explicit != fields.len() {
                let f = fields
                    .iter()
                    .find(|f| f.bits.is_none())
                    .unwrap_or(&fields[0]);
                return Err(Diag::new(
                    "check::layout-bits",
                    "give explicit bit ranges for every field or for none",
                    f.span.clone(),
                    "this field has no `@ msb..lsb`",
                ));
            }
            let mut descs = Vec::new();
            let widths: Vec<u8> = fields
                .iter()
                .map(|f| code_width(&f.code))
                .collect::<Result<_, _>>()?;
            let total: u32 = widths.iter().map(|&w| w as u32).sum();
            let unit_bits;
            if explicit == 0 {
                if total > 8 {
                    return Err(Diag::new(
                        "check::layout-width",
                        format!("the fields need {total} bits; a unit holds at most 8"),
                        span.clone(),
                        format!("{total} bits"),
                    )
                    .with_help("use narrower codes or fewer fields"));
                }
                unit_bits = total;
                let mut shift = total;
                for (f, &w) in fields.iter().zip(&widths) {
                    shift -= w as u32;
                    descs.push(FieldDesc {
                        signed: f.code.signed,
                        bits: w,
                        shift: shift as u8,
                    });
                }
            } else {
                let mut top = 0u32;
                for (f, &w) in fields.iter().zip(&widths) {
                    let Some((msb, lsb)) = &f.bits else { continue };
                    if msb.value < lsb.value {
                        return Err(Diag::new(
                            "check::layout-bits",
                            format!(
                                "bit range {}..{} is reversed; write msb..lsb",
                                msb.value, lsb.value
                            ),
                            msb.span.start..lsb.span.end,
                            "reversed range",
                        ));
                    }
                    if msb.value > 7 {
                        return Err(Diag::new(
                            "check::layout-width",
                            format!("bit {} is outside the 8-bit container", msb.value),
                            msb.span.clone(),
                            "out of range",
                        ));
                    }
                    let held = msb.value - lsb.value + 1;
                    if held != w as u64 {
                        return Err(Diag::new(
                            "check::layout-bits",
                            format!(
                                "bits {}..{} hold {held} bits but `{}` needs {w}",
                                msb.value, lsb.value, f.name.name
                            ),
                            msb.span.start..lsb.span.end,
                            "width mismatch",
                        ));
                    }
                    top = top.max(msb.value as u32 + 1);
                    descs.push(FieldDesc {
                        signed: f.code.signed,
                        bits: w,
                        shift: lsb.value as u8,
                    });
                }
                unit_bits = top;
            }
            LayoutDesc::from_fields(unit_bits, &descs, storage).map_err(|e| {
                if let LayoutError::Overlap { a, b } = e {
                    let bits = |f: &FieldDesc| format!("{}..{}", f.shift + f.bits - 1, f.shift);
                    return Diag::new(
                        "check::layout",
                        format!(
                            "field `{}` (bits {}) overlaps field `{}` (bits {})",
                            fields[b].name.name,
                            bits(&descs[b]),
                            fields[a].name.name,
                            bits(&descs[a])
                        ),
                        fields[b].span.clone(),
                        format!("overlaps `{}`", fields[a].name.name),
                    )
                    .with_related(fields[a].span.clone(), "overlapped field");
                }
                let span = match &e {
                    LayoutError::Overlap { b, .. } => fields[*b].span.clone(),
                    LayoutError::BadWidth { field, .. } | LayoutError::OutOfRange { field, .. } => {
                        fields[*field].span.clone()
                    }
                    _ => span.clone(),
                };
                Diag::new("check::layout", e.to_string(), span, "invalid layout")
            })
        }
    }
}

struct KernelCx<'a> {
    dims: Vec<(String, Span)>,
    layouts: &'a [(String, LayoutDesc)],
}

impl KernelCx<'_> {
    fn dim(&mut self, id: &ast::Ident) -> usize {
        if let Some(i) = self.dims.iter().position(|(n, _)| n == &id.name) {
            i
        } else {
            self.dims.push((id.name.clone(), id.span.clone()));
            self.dims.len() - 1
        }
    }

    fn resolve_type(&self, ty: &ast::Ident) -> Result<ElemType, Diag> {
        if let Some(s) = Scalar::from_name(&ty.name) {
            return Ok(ElemType::Scalar(s));
        }
        if let Some((_, d)) = self.layouts.iter().find(|(n, _)| n == &ty.name) {
            return Ok(ElemType::Packed {
                name: ty.name.clone(),
                layout: *d,
            });
        }
        if let Some(d) = layout::builtin(&ty.name) {
            return Ok(ElemType::Packed {
                name: ty.name.clone(),
                layout: d,
            });
        }
        let mut known: Vec<String> = vec!["i8", "i32", "f16", "bf16", "f32"]
            .into_iter()
            .map(String::from)
            .collect();
        known.extend(layout::BUILTIN_NAMES.iter().map(|s| s.to_string()));
        known.extend(self.layouts.iter().map(|(n, _)| n.clone()));
        Err(Diag::new(
            "check::unknown-type",
            format!("unknown type or layout `{}`", ty.name),
            ty.span.clone(),
            "not declared",
        )
        .with_help(format!("known types: {}", known.join(", "))))
    }

    fn tensor(&mut self, p: &ast::ParamDecl) -> Result<Tensor, Diag> {
        let ty = self.resolve_type(&p.ty)?;
        let mut shape = Vec::new();
        for d in &p.shape {
            let dim = self.dim(&d.dim);
            match &d.div {
                None => shape.push(Extent::Dim(dim)),
                Some(g) => {
                    if g.value == 0 || g.value > (1 << 20) {
                        return Err(Diag::new(
                            "check::group-size",
                            format!("group size {} is out of range 1..=1048576", g.value),
                            g.span.clone(),
                            "bad group size",
                        ));
                    }
                    shape.push(Extent::Groups(dim, g.value as u32));
                }
            }
        }
        Ok(Tensor {
            name: p.name.name.clone(),
            ty,
            shape,
            span: p.span.clone(),
        })
    }
}

fn check_kernel(k: &ast::KernelDecl, layouts: &[(String, LayoutDesc)]) -> Result<Kernel, Diag> {
    let mut cx = KernelCx {
        dims: Vec::new(),
        layouts,
    };
    // Parameters: unique names, resolved types and shapes.
    let mut names: HashMap<&str, Span> = HashMap::new();
    let mut tensors = Vec::new();
    for p in k.params.iter().chain(std::iter::once(&k.output)) {
        if let Some(prev) = names.get(p.name.name.as_str()) {
            return Err(Diag::new(
                "check::duplicate-param",
                format!("parameter `{}` is declared twice", p.name.name),
                p.name.span.clone(),
                "second declaration",
            )
            .with_related(prev.clone(), "first declared here"));
        }
        names.insert(&p.name.name, p.name.span.clone());
        tensors.push(cx.tensor(p)?);
    }
    let output = tensors.pop().ok_or_else(|| {
        Diag::new(
            "check::output",
            "kernel has no output",
            k.span.clone(),
            "here",
        )
    })?;
    // Body: bounds, schedule, exactly one reduction.
    let mut bounds: HashMap<String, (u64, Span)> = HashMap::new();
    let mut schedule = Schedule::default();
    let mut assign: Option<&ast::Assign> = None;
    for stmt in &k.body {
        match stmt {
            ast::Stmt::Where(bs) => {
                for b in bs {
                    if !cx.dims.iter().any(|(n, _)| n == &b.dim.name) {
                        return Err(Diag::new(
                            "check::unknown-dim",
                            format!(
                                "`{}` is not a dimension of kernel `{}`",
                                b.dim.name, k.name.name
                            ),
                            b.dim.span.clone(),
                            "unknown dimension",
                        )
                        .with_help(format!(
                            "dimensions: {}",
                            cx.dims
                                .iter()
                                .map(|d| d.0.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )));
                    }
                    if let Some((_, prev)) = bounds.get(&b.dim.name) {
                        return Err(Diag::new(
                            "check::duplicate-bound",
                            format!("dimension `{}` is bounded twice", b.dim.name),
                            b.span.clone(),
                            "second bound",
                        )
                        .with_related(prev.clone(), "first bound"));
                    }
                    if b.max.value == 0 || b.max.value > DIM_MAX_DEFAULT {
                        return Err(Diag::new(
                            "check::bound",
                            format!(
                                "bound {} is out of range 1..={}",
                                b.max.value,
                                bounds::commas(DIM_MAX_DEFAULT as i128)
                            ),
                            b.max.span.clone(),
                            "bad bound",
                        ));
                    }
                    bounds.insert(b.dim.name.clone(), (b.max.value, b.span.clone()));
                }
            }
            ast::Stmt::Schedule { hints, .. } => {
                for h in hints {
                    let v = h.value.value;
                    let slot = match h.key.name.as_str() {
                        "tile_m" => &mut schedule.tile_m,
                        "tile_n" => &mut schedule.tile_n,
                        "tile_k" => &mut schedule.tile_k,
                        "vector" => &mut schedule.vector,
                        "threads" => &mut schedule.threads,
                        other => {
                            return Err(Diag::new(
                                "check::schedule",
                                format!("unknown schedule hint `{other}`"),
                                h.key.span.clone(),
                                "unknown hint",
                            )
                            .with_help(format!("hints: {}", Schedule::KEYS.join(", "))))
                        }
                    };
                    let ok = match h.key.name.as_str() {
                        "vector" => [1, 2, 4, 8, 16].contains(&v),
                        "threads" => (32..=1024).contains(&v) && v.is_multiple_of(32),
                        _ => (1..=65536).contains(&v),
                    };
                    if !ok {
                        return Err(Diag::new(
                            "check::schedule",
                            format!("schedule hint `{}` = {v} is out of range", h.key.name),
                            h.value.span.clone(),
                            "bad value",
                        )
                        .with_help("vector is 1, 2, 4, 8 or 16; threads a multiple of 32 up to 1024; tiles 1..=65536"));
                    }
                    *slot = Some(v as u32);
                }
            }
            ast::Stmt::Assign(a) => {
                if let Some(first) = assign {
                    return Err(Diag::new(
                        "check::second-statement",
                        "a kernel has exactly one reduction statement",
                        a.span.clone(),
                        "second statement",
                    )
                    .with_related(first.span.clone(), "first statement"));
                }
                assign = Some(a);
            }
        }
    }
    let Some(a) = assign else {
        return Err(Diag::new(
            "check::no-statement",
            format!("kernel `{}` has no reduction statement", k.name.name),
            k.name.span.clone(),
            "nothing computes the output",
        )
        .with_help(format!(
            "add e.g. `{}[m, n] = sum(k) x[m, k] * w[n, k];`",
            k.output.name.name
        )));
    };

    // Output and target.
    if a.target.tensor.name != output.name {
        return Err(Diag::new(
            "check::target",
            format!(
                "the statement assigns `{}`, but the kernel's output is `{}`",
                a.target.tensor.name, output.name
            ),
            a.target.tensor.span.clone(),
            "not the output",
        ));
    }
    if output.shape.len() != 2 || output.shape.iter().any(|e| matches!(e, Extent::Groups(..))) {
        return Err(Diag::new(
            "check::output-shape",
            "the output must have shape [M, N]",
            k.output.span.clone(),
            "expected two plain dimensions",
        ));
    }
    if a.target.indices.len() != 2 || a.target.indices.iter().any(|i| i.div.is_some()) {
        return Err(Diag::new(
            "check::target-index",
            "the output is indexed by two plain variables, e.g. `y[m, n]`",
            a.target.span.clone(),
            "expected `[m, n]`",
        ));
    }
    let vm = &a.target.indices[0].var;
    let vn = &a.target.indices[1].var;
    let vk = &a.red;
    if vm.name == vn.name {
        return Err(Diag::new(
            "check::target-index",
            format!("index `{}` is used for both output dimensions", vm.name),
            vn.span.clone(),
            "repeated index",
        ));
    }
    if vk.name == vm.name || vk.name == vn.name {
        return Err(Diag::new(
            "check::reduction-var",
            format!(
                "the reduction variable `{}` is also an output index",
                vk.name
            ),
            vk.span.clone(),
            "must differ from the output indices",
        ));
    }
    let (Extent::Dim(dm), Extent::Dim(dn)) = (output.shape[0], output.shape[1]) else {
        return Err(Diag::new(
            "check::output-shape",
            "bad output shape",
            k.output.span.clone(),
            "here",
        ));
    };
    if dm == dn {
        return Err(Diag::new(
            "check::output-shape",
            "the output's two dimensions must be distinct",
            k.output.span.clone(),
            "same dimension twice",
        ));
    }
    let mut var_dims: HashMap<String, usize> = HashMap::new();
    var_dims.insert(vm.name.clone(), dm);
    var_dims.insert(vn.name.clone(), dn);
    let mut dk: Option<usize> = None;

    // Factors.
    let inputs_t = tensors;
    let mut used: Vec<Option<Span>> = vec![None; inputs_t.len()];
    let mut roles: Vec<Option<Role>> = vec![None; inputs_t.len()];
    let mut group: Option<(u32, Span)> = None;
    for f in &a.factors {
        if f.tensor.name == output.name {
            return Err(Diag::new(
                "check::output-read",
                format!(
                    "the output `{}` cannot be read in its own reduction",
                    output.name
                ),
                f.tensor.span.clone(),
                "output used as an input",
            ));
        }
        let Some(pi) = inputs_t.iter().position(|t| t.name == f.tensor.name) else {
            return Err(Diag::new(
                "check::unknown-tensor",
                format!("unknown tensor `{}`", f.tensor.name),
                f.tensor.span.clone(),
                "not a parameter of this kernel",
            )
            .with_help(format!(
                "parameters: {}",
                inputs_t
                    .iter()
                    .map(|t| t.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        if let Some(prev) = &used[pi] {
            return Err(Diag::new(
                "check::param-reused",
                format!("`{}` appears twice in the product", f.tensor.name),
                f.tensor.span.clone(),
                "second use",
            )
            .with_related(prev.clone(), "first use"));
        }
        used[pi] = Some(f.tensor.span.clone());
        let t = &inputs_t[pi];
        if f.indices.len() != t.shape.len() {
            return Err(Diag::new(
                "check::rank",
                format!(
                    "`{}` has {} dimensions but is indexed with {}",
                    t.name,
                    t.shape.len(),
                    f.indices.len()
                ),
                f.span.clone(),
                format!("expected {} indices", t.shape.len()),
            ));
        }
        // Index consistency.
        let mut pattern: Vec<(char, bool)> = Vec::new();
        for (ix, &ext) in f.indices.iter().zip(&t.shape) {
            let name = &ix.var.name;
            let which = if name == &vm.name {
                'm'
            } else if name == &vn.name {
                'n'
            } else if name == &vk.name {
                'k'
            } else {
                return Err(Diag::new(
                    "check::unknown-index",
                    format!("unknown index variable `{name}`"),
                    ix.var.span.clone(),
                    "not bound",
                )
                .with_help(format!(
                    "the indices in scope are `{}`, `{}` (output) and `{}` (reduction)",
                    vm.name, vn.name, vk.name
                )));
            };
            let (ext_dim, ext_div) = match ext {
                Extent::Dim(d) => (d, None),
                Extent::Groups(d, g) => (d, Some(g)),
            };
            match (&ix.div, ext_div) {
                (None, None) => {}
                (Some(c), Some(g)) => {
                    if which != 'k' {
                        return Err(Diag::new(
                            "check::group-index",
                            format!("only the reduction variable `{}` can be divided into groups", vk.name),
                            ix.span.clone(),
                            "grouped output index",
                        ));
                    }
                    if c.value != g as u64 {
                        return Err(Diag::new(
                            "check::group-mismatch",
                            format!(
                                "index `{} / {}` does not match the shape `{} / {g}` of `{}`",
                                name, c.value, cx.dims[ext_dim].0, t.name
                            ),
                            c.span.clone(),
                            format!("expected {g}"),
                        ));
                    }
                    if let Some((g0, s0)) = &group {
                        if *g0 != g {
                            return Err(Diag::new(
                                "check::group-mismatch",
                                format!("group sizes {g0} and {g} are mixed in one kernel"),
                                c.span.clone(),
                                "different group size",
                            )
                            .with_related(s0.clone(), "first group size"));
                        }
                    } else {
                        group = Some((g, c.span.clone()));
                    }
                }
                (None, Some(g)) => {
                    return Err(Diag::new(
                        "check::group-mismatch",
                        format!(
                            "`{}` has {} / {g} entries along this dimension; index it with `{name} / {g}`",
                            t.name, cx.dims[ext_dim].0
                        ),
                        ix.span.clone(),
                        "missing `/ group`",
                    ))
                }
                (Some(c), None) => {
                    return Err(Diag::new(
                        "check::group-mismatch",
                        format!(
                            "`{}` is not grouped along this dimension; `{name} / {}` does not index it",
                            t.name, c.value
                        ),
                        ix.span.clone(),
                        "unexpected `/`",
                    ))
                }
            }
            let expect = match which {
                'm' => Some(dm),
                'n' => Some(dn),
                _ => dk,
            };
            match expect {
                Some(d) if d != ext_dim => {
                    return Err(Diag::new(
                        "check::index-dim",
                        format!(
                            "index `{name}` ranges over {} but this dimension of `{}` is {}",
                            cx.dims[d].0, t.name, cx.dims[ext_dim].0
                        ),
                        ix.span.clone(),
                        format!("{} here", cx.dims[d].0),
                    ))
                }
                Some(_) => {}
                None => {
                    if ext_dim == dm || ext_dim == dn {
                        return Err(Diag::new(
                            "check::index-dim",
                            format!(
                                "the reduction `{}` cannot range over the output dimension {}",
                                vk.name, cx.dims[ext_dim].0
                            ),
                            ix.span.clone(),
                            "output dimension",
                        ));
                    }
                    dk = Some(ext_dim);
                    var_dims.insert(vk.name.clone(), ext_dim);
                }
            }
            pattern.push((which, ix.div.is_some()));
        }
        let role = match pattern.as_slice() {
            [('m', false), ('k', false)] => Role::Activation,
            [('n', false), ('k', false)] => Role::Weight,
            [('m', false)] => Role::Scale(ScaleIndex::Row),
            [('n', false)] => Role::Scale(ScaleIndex::Col),
            [('m', false), ('k', true)] => Role::Scale(ScaleIndex::RowGroup),
            [('n', false), ('k', true)] => Role::Scale(ScaleIndex::ColGroup),
            _ => {
                return Err(Diag::new(
                    "check::access-pattern",
                    format!("unsupported access pattern for `{}`", t.name),
                    f.span.clone(),
                    "not one of the supported forms",
                )
                .with_help(format!(
                    "supported: activation [{m}, {k}], weight [{n}, {k}] (reduction last), scales [{m}], [{n}], [{m}, {k} / G], [{n}, {k} / G]",
                    m = vm.name,
                    n = vn.name,
                    k = vk.name
                )))
            }
        };
        if let Some((j, _)) = roles.iter().enumerate().find(|(_, r)| **r == Some(role)) {
            if matches!(role, Role::Activation | Role::Weight) {
                return Err(Diag::new(
                    "check::access-pattern",
                    format!(
                        "`{}` and `{}` are both indexed like the {}",
                        inputs_t[j].name,
                        t.name,
                        if role == Role::Activation {
                            "activation"
                        } else {
                            "weight"
                        }
                    ),
                    f.span.clone(),
                    "second operand of the same role",
                )
                .with_related(used[j].clone().unwrap_or(f.span.clone()), "first one"));
            }
        }
        // Types by role.
        match (role, &t.ty) {
            (
                Role::Activation,
                ElemType::Scalar(Scalar::I8 | Scalar::F16 | Scalar::BF16 | Scalar::F32),
            ) => {}
            (Role::Activation, ty) => {
                return Err(Diag::new(
                    "check::type",
                    format!(
                        "activation `{}` has type {}; activations are i8, f16, bf16 or f32",
                        t.name,
                        ty.name()
                    ),
                    f.tensor.span.clone(),
                    "unsupported activation type",
                )
                .with_related(
                    k.params[pi].ty.span.clone(),
                    format!("declared {}", ty.name()),
                ))
            }
            (Role::Weight, ElemType::Packed { .. } | ElemType::Scalar(Scalar::I8)) => {}
            (Role::Weight, ty) => {
                return Err(Diag::new(
                    "check::type",
                    format!(
                        "weight `{}` has type {}; weights are a packed layout or i8",
                        t.name,
                        ty.name()
                    ),
                    f.tensor.span.clone(),
                    "unsupported weight type",
                )
                .with_related(
                    k.params[pi].ty.span.clone(),
                    format!("declared {}", ty.name()),
                )
                .with_help("declare the weight with a layout, e.g. `w: q3p5[N, K]`"))
            }
            (Role::Scale(_), ElemType::Scalar(s)) if s.is_float() => {}
            (Role::Scale(_), ty) => {
                return Err(Diag::new(
                    "check::type",
                    format!(
                        "scale `{}` has type {}; scales are f16, bf16 or f32",
                        t.name,
                        ty.name()
                    ),
                    f.tensor.span.clone(),
                    "not a float type",
                )
                .with_related(
                    k.params[pi].ty.span.clone(),
                    format!("declared {}", ty.name()),
                ))
            }
        }
        roles[pi] = Some(role);
    }
    for (i, u) in used.iter().enumerate() {
        if u.is_none() {
            return Err(Diag::new(
                "check::unused-param",
                format!("parameter `{}` is never used", inputs_t[i].name),
                k.params[i].name.span.clone(),
                "unused",
            )
            .with_help("remove it or use it in the reduction"));
        }
    }
    let act = roles
        .iter()
        .position(|r| *r == Some(Role::Activation))
        .ok_or_else(|| {
            Diag::new(
                "check::no-activation",
                format!(
                    "no activation: one factor must be indexed [{}, {}]",
                    vm.name, vk.name
                ),
                a.span.clone(),
                "missing activation",
            )
        })?;
    let weight = roles
        .iter()
        .position(|r| *r == Some(Role::Weight))
        .ok_or_else(|| {
            Diag::new(
                "check::no-weight",
                format!(
                    "no weight: one factor must be indexed [{}, {}]",
                    vn.name, vk.name
                ),
                a.span.clone(),
                "missing weight",
            )
        })?;
    let Some(dk) = dk else {
        return Err(Diag::new(
            "check::no-reduction",
            "the reduction variable is never used",
            a.red.span.clone(),
            "unused",
        ));
    };
    let wl = match &inputs_t[weight].ty {
        ElemType::Packed { layout, .. } => *layout,
        _ => LayoutDesc::scalar(true, 8, Storage::Byte),
    };
    if let Some((g, gs)) = &group {
        if !(*g as usize).is_multiple_of(wl.per_unit()) {
            return Err(Diag::new(
                "check::group-divisibility",
                format!(
                    "group size {g} splits a unit of the weight layout, which holds {} weights",
                    wl.per_unit()
                ),
                gs.clone(),
                format!("not a multiple of {}", wl.per_unit()),
            )
            .with_help(format!(
                "use a group size that is a multiple of {}",
                wl.per_unit()
            )));
        }
    }

    // Dimensions with bounds.
    let dims: Vec<DimVar> = cx
        .dims
        .iter()
        .map(|(n, _)| DimVar {
            name: n.clone(),
            max: bounds.get(n).map(|b| b.0).unwrap_or(DIM_MAX_DEFAULT),
        })
        .collect();
    if dims.len() != 3 {
        let extra = cx
            .dims
            .iter()
            .find(|(n, _)| ![dm, dn, dk].iter().any(|&d| &cx.dims[d].0 == n));
        let span = extra.map(|e| e.1.clone()).unwrap_or(k.span.clone());
        return Err(Diag::new(
            "check::extra-dim",
            "a kernel has exactly three dimensions: two output dimensions and the reduction",
            span,
            "not an output or reduction dimension",
        ));
    }
    let act_ty = match &inputs_t[act].ty {
        ElemType::Scalar(s) => *s,
        _ => Scalar::I8,
    };
    let has_scales = roles.iter().any(|r| matches!(r, Some(Role::Scale(_))));
    let out_ty = match output.ty {
        ElemType::Scalar(s) => s,
        ElemType::Packed { .. } => {
            return Err(Diag::new(
                "check::type",
                "the output cannot be a packed layout",
                k.output.ty.span.clone(),
                "packed output",
            ))
        }
    };
    match out_ty {
        Scalar::F32 | Scalar::F16 | Scalar::BF16 => {}
        Scalar::I32 if act_ty == Scalar::I8 && !has_scales => {}
        Scalar::I32 => {
            return Err(Diag::new(
                "check::type",
                "an i32 output needs an exact integer result: i8 activations and no float scales",
                k.output.ty.span.clone(),
                "i32 output",
            ))
        }
        Scalar::I8 => {
            return Err(Diag::new(
                "check::type",
                "outputs are f32, f16, bf16 or i32",
                k.output.ty.span.clone(),
                "i8 output",
            ))
        }
    }

    // Accumulator and its proof.
    let mut proofs = Vec::new();
    let kname = &cx.dims[dk].0;
    let kmax = dims[dk].max;
    let requested = a.accum.as_ref();
    let accum = if act_ty == Scalar::I8 {
        let req = match requested.map(|t| t.name.as_str()) {
            None => None,
            Some("i32") => Some(IntTy::I32),
            Some("i64") => Some(IntTy::I64),
            Some(other) => {
                let span = requested.map(|t| t.span.clone()).unwrap_or(a.span.clone());
                return Err(Diag::new(
                    "check::accumulator",
                    format!("i8 × integer products accumulate in i32 or i64, not {other}"),
                    span,
                    "unsupported accumulator",
                ));
            }
        };
        let act_r = bounds::act_range(act_ty).unwrap_or((-128, 127));
        let prods = bounds::product_ranges(act_r, &wl);
        let pname = bounds::product_name(act_ty, &wl);
        let (terms, over) = match &group {
            Some((g, _)) if out_ty != Scalar::I32 => {
                ((*g as u64).min(kmax), format!("a group of {g}"))
            }
            _ => (kmax, format!("{kname} ≤ {}", bounds::commas(kmax as i128))),
        };
        let (lo, hi) = bounds::sum_range(&prods, terms);
        let ranges: Vec<String> = wl
            .fields()
            .iter()
            .zip(&prods)
            .map(|(f, p)| format!("{} × {} ∈ [{}, {}]", act_ty.name(), f.type_name(), p.0, p.1))
            .collect();
        proofs.push(Obligation {
            id: "acc.range",
            claim: format!(
                "Σ {}[{}, {}] * {}[{}, {}] over {over} lies in [{}, {}]",
                inputs_t[act].name,
                vm.name,
                vk.name,
                inputs_t[weight].name,
                vn.name,
                vk.name,
                bounds::commas(lo),
                bounds::commas(hi)
            ),
            evidence: format!(
                "{}; {} terms",
                ranges.join(", "),
                bounds::commas(terms as i128)
            ),
            status: Status::Proved,
        });
        let fits = |ty: IntTy| lo >= ty.min() && hi <= ty.max();
        let limit = |ty: IntTy| bounds::max_terms(&prods, ty);
        let chosen = match req {
            Some(ty) => {
                if !fits(ty) {
                    let span = requested.map(|t| t.span.clone()).unwrap_or(a.span.clone());
                    return Err(Diag::new(
                        "bounds::overflow",
                        format!(
                            "cannot prove the {} accumulator of {pname} products: needs {kname} ≤ {}, but {kname} may be {}",
                            ty.name(),
                            bounds::commas(limit(ty) as i128),
                            bounds::commas(terms as i128)
                        ),
                        span,
                        "may overflow",
                    )
                    .with_help(format!(
                        "add `where {kname} <= {};`, group the scales along {}, or use a wider accumulator",
                        limit(ty),
                        vk.name
                    )));
                }
                (ty, false)
            }
            None if fits(IntTy::I32) => (IntTy::I32, false),
            None if out_ty == Scalar::I32 => {
                return Err(Diag::new(
                    "bounds::overflow",
                    format!(
                        "the i32 output of {pname} products can overflow: needs {kname} ≤ {}, but {kname} may be {}",
                        bounds::commas(limit(IntTy::I32) as i128),
                        bounds::commas(terms as i128)
                    ),
                    k.output.span.clone(),
                    "may overflow",
                )
                .with_help(format!("add `where {kname} <= {};`", limit(IntTy::I32))));
            }
            None if fits(IntTy::I64) => (IntTy::I64, true),
            None => {
                return Err(Diag::new(
                    "bounds::overflow",
                    format!(
                        "no integer accumulator holds the sum of {pname} products: i64 needs {kname} ≤ {}",
                        bounds::commas(limit(IntTy::I64) as i128)
                    ),
                    a.span.clone(),
                    "may overflow",
                ))
            }
        };
        let (ty, widened) = chosen;
        proofs.push(Obligation {
            id: "acc.fits",
            claim: format!("the {} accumulator cannot overflow", ty.name()),
            evidence: if widened {
                format!(
                    "i32 needs {kname} ≤ {} (unproved for {kname} ≤ {}); widened to i64, which holds [{}, {}]",
                    bounds::commas(limit(IntTy::I32) as i128),
                    bounds::commas(terms as i128),
                    bounds::commas(lo),
                    bounds::commas(hi)
                )
            } else {
                format!(
                    "[{}, {}] ⊆ [{}, {}]; holds for up to {} terms",
                    bounds::commas(lo),
                    bounds::commas(hi),
                    bounds::commas(ty.min()),
                    bounds::commas(ty.max()),
                    bounds::commas(limit(ty) as i128)
                )
            },
            status: if widened { Status::Widened } else { Status::Proved },
        });
        if out_ty != Scalar::I32 {
            let exact = lo >= -(1 << 24) && hi <= (1 << 24);
            proofs.push(Obligation {
                id: "acc.to_f32",
                claim: if exact {
                    "converting the integer partial sum to f32 is exact".to_string()
                } else {
                    "converting the integer partial sum to f32 rounds at most once".to_string()
                },
                evidence: if exact {
                    format!("|sum| ≤ {} ≤ 2^24", bounds::commas(lo.abs().max(hi)))
                } else {
                    format!(
                        "|sum| may reach {} > 2^24: one rounding (relative error ≤ 2^-24) per partial sum",
                        bounds::commas(lo.abs().max(hi))
                    )
                },
                status: if exact { Status::Proved } else { Status::Note },
            });
        }
        Accum::Int {
            ty,
            lo: lo as i64,
            hi: hi as i64,
            terms,
            widened,
        }
    } else {
        if let Some(t) = requested {
            if t.name != "f32" {
                return Err(Diag::new(
                    "check::accumulator",
                    format!(
                        "{} activations accumulate in f32, not {}",
                        act_ty.name(),
                        t.name
                    ),
                    t.span.clone(),
                    "unsupported accumulator",
                ));
            }
        }
        proofs.push(Obligation {
            id: "acc.float",
            claim: format!("{} activations × dequantized codes accumulate in f32", act_ty.name()),
            evidence: "no integer accumulator to prove; float results are compared within a stated tolerance".to_string(),
            status: Status::Note,
        });
        Accum::Float
    };
    if let Some((g, _)) = &group {
        proofs.push(Obligation {
            id: "group.units",
            claim: format!("every group of {g} starts on a unit boundary of the weight layout"),
            evidence: format!("{g} is a multiple of {} weights per unit", wl.per_unit()),
            status: Status::Proved,
        });
    }

    let inputs: Vec<Input> = inputs_t
        .into_iter()
        .zip(roles)
        .map(|(tensor, r)| Input {
            tensor,
            role: r.unwrap_or(Role::Activation),
        })
        .collect();
    Ok(Kernel {
        name: k.name.name.clone(),
        dims,
        m: dm,
        n: dn,
        k: dk,
        vars: [vm.name.clone(), vn.name.clone(), vk.name.clone()],
        inputs,
        output,
        act,
        weight,
        group: group.map(|g| g.0),
        accum,
        schedule,
        proofs,
        span: k.span.clone(),
    })
}
