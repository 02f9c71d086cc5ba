//! The `qkc` command line: check, run, emit, quantize and the demo.

use clap::{Parser, Subcommand};

use qkc::cli;

#[derive(Parser)]
#[command(
    name = "qkc",
    version,
    about = "A compiler for quantized matrix-multiply kernels"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Parse and check a .qk file; with --bounds, print the proof obligations.
    Check(cli::check::CheckArgs),
    /// Run a kernel on random or given inputs and check it against the reference.
    Run(cli::run::RunArgs),
    /// Print or write the code a stage or backend produces for a kernel.
    Emit(cli::emit::EmitArgs),
    /// Run the flagship 3.5-bit GEMV on the CPU JIT, check it, and write every backend's output.
    Demo(cli::demo::DemoArgs),
    /// Quantize the 2-D float tensors of a .safetensors file into a packed layout.
    Quantize(cli::quantize::QuantizeArgs),
}

fn main() -> miette::Result<()> {
    // Like other Unix filters, end quietly when the reader of stdout goes away
    // (`qkc emit ... | head`) instead of panicking on a broken pipe.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let args = Cli::parse();
    match args.cmd {
        Cmd::Check(a) => cli::check::run(&a),
        Cmd::Run(a) => cli::run::run(&a),
        Cmd::Emit(a) => cli::emit::run(&a),
        Cmd::Demo(a) => cli::demo::run(&a),
        Cmd::Quantize(a) => cli::quantize::run(&a),
    }
}
