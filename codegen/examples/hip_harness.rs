//! Writes the HIP-on-CUDA device harness (see `qkc_codegen::hip::harness`):
//!
//! ```text
//! cargo run -p qkc-codegen --example hip_harness -- [DIR]     # default: .device-hip
//! DIR/run.sh                                                   # on a machine with nvcc
//! ```
//!
//! `--print-portable FILE.qk` prints the portable-path HIP of a kernel instead.

use std::path::PathBuf;

use qkc_codegen::hip::{self, harness, HipOptions, Schedule};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--print-portable") {
        let path = args.get(1).ok_or("--print-portable needs a .qk file")?;
        let src = std::fs::read_to_string(path)?;
        let prog = qkc_dsl::compile(path, &src).map_err(|d| d.render())?;
        let o = HipOptions {
            schedule: Schedule::Portable,
            ..Default::default()
        };
        for k in &prog.kernels {
            println!("{}", hip::emit_kernel(k, &o)?.source);
        }
        return Ok(());
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = args
        .first()
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".device-hip"));
    let mut sources = harness::qk_files(&root.join("examples/kernels"))?;
    sources.extend(harness::matrix_sources());
    let s = harness::write_harness(
        &dir,
        &sources,
        &harness::DEFAULT_SHAPES,
        &harness::default_variants(),
    )?;
    println!(
        "wrote {}: {} kernels, {} cases, {} checks, {} modules, {:.1} MB of data",
        s.dir.display(),
        s.kernels,
        s.cases,
        s.checks,
        s.modules.len(),
        s.data_bytes as f64 / 1e6
    );
    for f in &s.eval_failures {
        println!("loop-IR interpreter already disagrees with the reference: {f}");
    }
    Ok(())
}
