//! `qkc check FILE [--bounds]`: parse, check, and print the proof obligations.

use std::path::PathBuf;

use qkc_dsl::bounds::Status;

#[derive(clap::Args)]
pub struct CheckArgs {
    /// The .qk file.
    pub file: PathBuf,
    /// Print every proof obligation (accumulator ranges, overflow, conversions).
    #[arg(long)]
    pub bounds: bool,
}

pub fn run(a: &CheckArgs) -> miette::Result<()> {
    let prog = super::load(&a.file)?;
    for (name, l) in &prog.layouts {
        println!(
            "layout {name} = {l}  ({} bits/weight, {} weights per {}-bit unit)",
            l.bits_per_weight(),
            l.per_unit(),
            l.unit_bits
        );
    }
    for k in &prog.kernels {
        println!("kernel {}: ok", k.name);
        if a.bounds {
            println!("  proof obligations:");
            for o in &k.proofs {
                for line in o.to_string().lines() {
                    println!("    {line}");
                }
            }
            let failed = k
                .proofs
                .iter()
                .filter(|o| o.status == Status::Failed)
                .count();
            let proved = k
                .proofs
                .iter()
                .filter(|o| o.status == Status::Proved)
                .count();
            println!(
                "  summary: {proved} proved, {} widened, {} notes, {failed} failed",
                k.proofs
                    .iter()
                    .filter(|o| o.status == Status::Widened)
                    .count(),
                k.proofs.iter().filter(|o| o.status == Status::Note).count()
            );
        }
    }
    Ok(())
}
