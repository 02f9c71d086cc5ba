//! `qkc demo`: the flagship 3.5-bit GEMV end to end on this machine.
//!
//! Compiles the bundled `examples/kernels/gemv_w3p5.qk` (embedded in the binary),
//! runs it with the Cranelift JIT at `M=1, N=4096, K=4096` on fresh random inputs,
//! checks the result against the reference interpreter (an error if it differs),
//! prints time and weight bandwidth, and writes what every backend generates for it
//! (typed IR, CPU and GPU loop IR, CLIF, x86/aarch64 disassembly, PTX, HIP) to
//! `./qkc-out/` or `-o DIR`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use miette::{miette, IntoDiagnostic, WrapErr};
use qkc_codegen::cranelift::{self, CraneliftOptions};
use qkc_codegen::lower::{lower_cpu, lower_gpu, GpuOptions};
use qkc_dsl::host::random_inputs;
use qkc_runtime::cpu::{compare_with_reference, CpuKernel, CpuOptions};

/// The flagship kernel, as shipped in `examples/kernels/`.
pub const GEMV_W3P5: &str = include_str!("../../examples/kernels/gemv_w3p5.qk");

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Directory for the generated sources.
    #[arg(short = 'o', long = "out", default_value = "qkc-out")]
    pub out: PathBuf,
    /// Worker threads (0: all available cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Seed of the random inputs (default: a fresh one from the clock).
    #[arg(long)]
    pub seed: Option<u64>,
}

fn write(dir: &Path, name: &str, text: &str) -> miette::Result<PathBuf> {
    let p = dir.join(name);
    std::fs::write(&p, text)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot write {}", p.display()))?;
    Ok(p)
}

pub fn run(a: &DemoArgs) -> miette::Result<()> {
    let prog = qkc_dsl::compile("gemv_w3p5.qk", GEMV_W3P5).map_err(miette::Report::new)?;
    let k = prog
        .kernels
        .first()
        .ok_or_else(|| miette!("the bundled example declares no kernel"))?;
    let pairs: Vec<(String, u64)> = [("M", 1), ("N", 4096), ("K", 4096)]
        .iter()
        .map(|(n, v)| (n.to_string(), *v))
        .collect();
    let dims = k.dims_from_pairs(&pairs).map_err(|e| miette!("{e}"))?;
    let seed = a.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let inputs = random_inputs(k, &dims, seed);

    // CPU JIT: compile, time, check.
    let mut opts = CpuOptions::for_kernel(k);
    opts.threads = a.threads;
    let t0 = std::time::Instant::now();
    let cpu = CpuKernel::new(k, &opts).map_err(|e| miette!("{e}"))?;
    let compile_ms = t0.elapsed().as_secs_f64() * 1e3;
    let (out, t) = cpu
        .time(&dims, &inputs, 20, Duration::from_millis(1000))
        .map_err(|e| miette!("{e}"))?;
    let c = compare_with_reference(k, &dims, &inputs, &out).map_err(|e| miette!("{e}"))?;
    let wb = k.weight_bytes(&dims) as f64;
    println!(
        "qkc demo: {} (3.5-bit weights, i8 activations) at M=1, N=4096, K=4096",
        k.name
    );
    println!("  inputs: random, seed {seed}");
    println!(
        "  cranelift jit: compiled in {compile_ms:.1} ms; {} threads; tile_m {}",
        cpu.threads(),
        cpu.tile_for(1)
    );
    println!(
        "  reference check: max abs error {:.3e}, max rel error {:.3e} (of Σ|terms|): {}",
        c.max_abs,
        c.max_rel,
        if c.passed() { "pass" } else { "FAIL" }
    );
    if !c.passed() {
        return Err(miette!(
            "the CPU JIT result differs from the reference interpreter: {} of {} outputs outside tolerance (worst: y[{}])",
            c.failures,
            c.count,
            c.worst
        ));
    }
    println!(
        "  time: best {:.3} ms, median {:.3} ms over {} runs; {:.2} MB of weights at {:.2} GB/s",
        t.best * 1e3,
        t.median * 1e3,
        t.reps,
        wb / 1e6,
        wb / t.best / 1e9
    );

    // Generated sources of every backend.
    std::fs::create_dir_all(&a.out)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot create {}", a.out.display()))?;
    let dir = a.out.as_path();
    let name = &k.name;
    let mut written = vec![
        write(dir, &format!("{name}.qk"), GEMV_W3P5)?,
        write(dir, &format!("{name}.ir.txt"), &format!("{k}\n"))?,
    ];
    let f_cpu = lower_cpu(k, &opts.lower);
    written.push(write(
        dir,
        &format!("{name}.cpu.loop-ir.txt"),
        &format!("{f_cpu}\n"),
    )?);
    let jit = CraneliftOptions::default();
    match cranelift::clif(&f_cpu, &jit) {
        Ok(t) => written.push(write(dir, &format!("{name}.clif"), &t)?),
        Err(e) => println!("  clif: skipped ({e})"),
    }
    match cranelift::disasm(&f_cpu, &jit) {
        Ok(t) => written.push(write(
            dir,
            &format!("{name}.{}.s", std::env::consts::ARCH),
            &t,
        )?),
        Err(e) => println!("  disassembly: skipped ({e})"),
    }
    let f_gpu = lower_gpu(k, &GpuOptions::for_kernel(k));
    written.push(write(
        dir,
        &format!("{name}.gpu.loop-ir.txt"),
        &format!("{f_gpu}\n"),
    )?);
    match qkc_codegen::ptx::emit(&f_gpu, qkc_codegen::ptx::Arch::Sm90) {
        Ok(t) => written.push(write(dir, &format!("{name}.sm_90.ptx"), &t)?),
        Err(e) => println!("  ptx: skipped ({e})"),
    }
    let hip_opts = qkc_codegen::hip::HipOptions::new(qkc_codegen::hip::Arch::Gfx90a);
    match qkc_codegen::hip::emit_kernel(k, &hip_opts) {
        Ok(m) => {
            written.push(write(dir, &m.source_file(), &m.source)?);
            written.push(write(dir, &m.header_file(), &m.header)?);
        }
        Err(e) => println!("  hip: skipped ({e})"),
    }
    println!("  generated sources in {}:", dir.display());
    for p in &written {
        println!("    {}", p.display());
    }
    Ok(())
}
