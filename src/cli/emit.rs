//! `qkc emit FILE --target T`: prints (or writes) what a stage or backend produces.

use std::path::PathBuf;

use miette::miette;

#[derive(clap::Args)]
pub struct EmitArgs {
    /// The .qk file.
    pub file: PathBuf,
    /// What to emit: `ir` (typed IR), `loop-ir` (CPU schedule).
    #[arg(long, default_value = "ir")]
    pub target: String,
    /// Which kernel of the file (default: the first).
    #[arg(long)]
    pub kernel: Option<String>,
}

pub fn run(a: &EmitArgs) -> miette::Result<()> {
    let prog = super::load(&a.file)?;
    let k = super::pick(&prog, a.kernel.as_deref())?;
    match a.target.as_str() {
        "ir" => {
            println!("{k}");
            Ok(())
        }
        "loop-ir" => {
            let f = qkc_codegen::lower::lower_cpu(k, &qkc_codegen::lower::CpuOptions::for_kernel(k));
            println!("{f}");
            Ok(())
        }
        other => Err(miette!("unsupported target `{other}`; targets: ir, loop-ir")),
    }
}
