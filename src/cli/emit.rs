//! `qkc emit FILE --target T`: prints (or writes) what a stage or backend produces.

use std::path::PathBuf;

use miette::miette;

#[derive(clap::Args)]
pub struct EmitArgs {
    /// The .qk file.
    pub file: PathBuf,
    /// What to emit: `ir` (typed IR).
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
        other => Err(miette!("unsupported target `{other}`; targets: ir")),
    }
}
