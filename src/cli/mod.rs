//! Subcommands of the `qkc` binary, one module each, plus shared helpers.

pub mod check;
pub mod demo;
pub mod emit;
pub mod quantize;
pub mod run;
pub mod tensors;

use std::path::Path;

use miette::{miette, IntoDiagnostic, WrapErr};
use qkc_dsl::ir::Kernel;
use qkc_dsl::Program;

/// Reads and checks a `.qk` file; diagnostics carry the file's text for rendering.
pub fn load(path: &Path) -> miette::Result<Program> {
    let src = std::fs::read_to_string(path)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot read {}", path.display()))?;
    qkc_dsl::compile(&path.display().to_string(), &src).map_err(miette::Report::new)
}

/// Picks the kernel named `name`, or the file's first kernel.
pub fn pick<'a>(prog: &'a Program, name: Option<&str>) -> miette::Result<&'a Kernel> {
    prog.kernel(name).ok_or_else(|| match name {
        Some(n) => miette!(
            "no kernel named `{n}` (kernels: {})",
            prog.kernels
                .iter()
                .map(|k| k.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => miette!("the file declares no kernel"),
    })
}

/// Parses `M=1,N=4096,K=4096` into name/value pairs.
pub fn parse_dims(s: &str) -> miette::Result<Vec<(String, u64)>> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let (n, v) = p.split_once('=').ok_or_else(|| {
                miette!("bad dimension `{p}`: write NAME=VALUE, e.g. M=1,N=4096,K=4096")
            })?;
            let v: u64 = v.trim().replace('_', "").parse().map_err(|_| {
                miette!("bad value `{v}` for dimension `{n}`: expected a positive integer")
            })?;
            Ok((n.trim().to_string(), v))
        })
        .collect()
}
