//! `qkc run FILE --target T`: runs a kernel on fresh random inputs (or `--inputs`),
//! checks it against the reference interpreter, prints a checksum, time and bandwidth.

use std::path::PathBuf;
use std::time::Instant;

use miette::miette;
use qkc_dsl::host::{random_inputs, HostBuf};
use qkc_dsl::interp;
use qkc_dsl::ir::{Dims, Kernel};
use safetensors::SafeTensors;

use super::tensors;

#[derive(clap::Args)]
pub struct RunArgs {
    /// The .qk file.
    pub file: PathBuf,
    /// Where to run: `ref` (reference interpreter), `cpu` (Cranelift JIT), `cuda` (PTX on GPU 0),
    /// `llvm-cpu` (LLVM O3 JIT, with `--features llvm`).
    #[arg(long, default_value = "ref")]
    pub target: String,
    /// Dimension values, e.g. M=1,N=4096,K=4096 (inferred from --inputs when omitted).
    #[arg(long)]
    pub dims: Option<String>,
    /// Seed of the random inputs.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Which kernel of the file (default: the first).
    #[arg(long)]
    pub kernel: Option<String>,
    /// Read inputs from a safetensors file: one tensor per parameter, named as it.
    #[arg(long)]
    pub inputs: Option<PathBuf>,
    /// Write the output tensor to a safetensors file.
    #[arg(long)]
    pub save: Option<PathBuf>,
    /// Write the inputs used (random or given) to a safetensors file.
    #[arg(long)]
    pub dump_inputs: Option<PathBuf>,
}

/// FNV-1a over the output bytes: equal hashes mean bit-identical outputs.
pub fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

pub fn checksum(out: &HostBuf) -> (f64, u64) {
    (out.to_f64().iter().sum(), fnv(&out.as_bytes()))
}

pub fn prepare(a: &RunArgs, k: &Kernel) -> miette::Result<(Dims, Vec<HostBuf>)> {
    match &a.inputs {
        Some(path) => {
            let bytes = tensors::read_file(path)?;
            let st = SafeTensors::deserialize(&bytes)
                .map_err(|e| miette!("{}: not a safetensors file: {e}", path.display()))?;
            let pairs = match &a.dims {
                Some(d) => super::parse_dims(d)?,
                None => tensors::infer_dims(k, &st)?,
            };
            let dims = k.dims_from_pairs(&pairs).map_err(|e| miette!("{e}"))?;
            let inputs = tensors::load_inputs(k, &dims, &st, path)?;
            Ok((dims, inputs))
        }
        None => {
            let d = a.dims.as_deref().ok_or_else(|| {
                miette!("pass --dims (e.g. --dims M=1,N=4096,K=4096) or --inputs FILE")
            })?;
            let dims = k
                .dims_from_pairs(&super::parse_dims(d)?)
                .map_err(|e| miette!("{e}"))?;
            let inputs = random_inputs(k, &dims, a.seed);
            Ok((dims, inputs))
        }
    }
}

pub fn run(a: &RunArgs) -> miette::Result<()> {
    let prog = super::load(&a.file)?;
    let k = super::pick(&prog, a.kernel.as_deref())?;
    let (dims, inputs) = prepare(a, k)?;
    if let Some(p) = &a.dump_inputs {
        tensors::save(p, &tensors::input_entries(k, &dims, &inputs))?;
    }
    let t0 = Instant::now();
    let (out, secs) = match a.target.as_str() {
        "ref" => {
            let out = interp::run(k, &dims, &inputs).map_err(|e| miette!("{e}"))?;
            (out, t0.elapsed().as_secs_f64())
        }
        "cpu" => {
            // Cranelift JIT: compile, time repeated runs, check against the reference.
            use qkc_runtime::cpu::{compare_with_reference, CpuKernel, CpuOptions};
            let cpu = CpuKernel::new(k, &CpuOptions::for_kernel(k)).map_err(|e| miette!("{e}"))?;
            let compile_ms = t0.elapsed().as_secs_f64() * 1e3;
            let (out, t) = cpu
                .time(&dims, &inputs, 10, std::time::Duration::from_millis(500))
                .map_err(|e| miette!("{e}"))?;
            let c = compare_with_reference(k, &dims, &inputs, &out).map_err(|e| miette!("{e}"))?;
            println!(
                "cpu jit: compiled in {compile_ms:.1} ms, {} threads; {} runs, median {:.3} ms",
                cpu.threads(),
                t.reps,
                t.median * 1e3
            );
            println!(
                "reference check: max abs error {:.3e}, max rel error {:.3e} (of Σ|terms|), {}/{} outside tolerance: {}",
                c.max_abs,
                c.max_rel,
                c.failures,
                c.count,
                if c.passed() { "pass" } else { "FAIL" }
            );
            if !c.passed() {
                return Err(miette!(
                    "the CPU JIT result differs from the reference interpreter (worst element {})",
                    c.worst
                ));
            }
            (out, t.best)
        }
        "cuda" => run_cuda(k, &dims, &inputs)?,
        #[cfg(feature = "llvm")]
        "llvm-cpu" => run_llvm_cpu(k, &dims, &inputs, t0)?,
        #[cfg(not(feature = "llvm"))]
        "llvm-cpu" => {
            return Err(miette!(
                "target `llvm-cpu` needs the LLVM backend: rebuild with `--features llvm`"
            ))
        }
        other => {
            return Err(miette!(
                "unsupported target `{other}`; targets: ref, cpu, cuda, llvm-cpu"
            ))
        }
    };
    let (sum, hash) = checksum(&out);
    println!(
        "kernel {} on {} [{}]",
        k.name,
        a.target,
        tensors::dims_str(k, &dims)
    );
    println!("checksum: sum = {sum:.9e}, fnv64 = {hash:016x}");
    let wb = k.weight_bytes(&dims) as f64;
    println!(
        "time: {:.3} ms, weight bytes {:.0}, {:.3} GB/s",
        secs * 1e3,
        wb,
        wb / secs / 1e9
    );
    if let Some(p) = &a.save {
        tensors::save(p, &[tensors::output_entry(k, &dims, &out)])?;
        println!("saved `{}` to {}", k.output.name, p.display());
    }
    Ok(())
}

/// `--target cuda`: PTX through the CUDA driver; checks the output against the
/// reference interpreter and times launches with CUDA events (median).
fn run_cuda(k: &Kernel, dims: &Dims, inputs: &[HostBuf]) -> miette::Result<(HostBuf, f64)> {
    use qkc_runtime::cpu::compare_with_reference;
    use qkc_runtime::cuda::{CudaDevice, CudaKernel, CudaOptions};
    let dev = CudaDevice::new(0).map_err(|e| miette!("{e}"))?;
    let ck = CudaKernel::new(&dev, k, &CudaOptions::default()).map_err(|e| miette!("{e}"))?;
    let out = ck.run(dims, inputs).map_err(|e| miette!("{e}"))?;
    let c = compare_with_reference(k, dims, inputs, &out).map_err(|e| miette!("{e}"))?;
    let mut sets = vec![ck.upload(dims, inputs).map_err(|e| miette!("{e}"))?];
    let mut t = ck.time(&mut sets, 10, 100).map_err(|e| miette!("{e}"))?;
    t.sort_by(f64::total_cmp);
    let med = t[t.len() / 2];
    println!(
        "cuda: {} ({}); 100 launches, median {med:.2} us (one weight copy: L2 may hold it)",
        dev.name(),
        dev.arch().name()
    );
    println!(
        "reference check: max abs error {:.3e}, max rel error {:.3e} (of sum |terms|), {}/{} outside tolerance: {}",
        c.max_abs,
        c.max_rel,
        c.failures,
        c.count,
        if c.passed() { "pass" } else { "FAIL" }
    );
    if !c.passed() {
        return Err(miette!(
            "the CUDA result differs from the reference interpreter (worst element {})",
            c.worst
        ));
    }
    Ok((out, med * 1e-6))
}

/// `--target llvm-cpu` (feature `llvm`): LLVM O3 JIT for the host; compile, time
/// repeated runs, check against the reference. Returns the output and the best time.
#[cfg(feature = "llvm")]
fn run_llvm_cpu(
    k: &Kernel,
    dims: &Dims,
    inputs: &[HostBuf],
    t0: Instant,
) -> miette::Result<(HostBuf, f64)> {
    use qkc_runtime::cpu::compare_with_reference;
    use qkc_runtime::llvm_cpu::{LlvmCpuKernel, LlvmCpuOptions};
    let cpu = LlvmCpuKernel::new(k, &LlvmCpuOptions::for_kernel(k)).map_err(|e| miette!("{e}"))?;
    let compile_ms = t0.elapsed().as_secs_f64() * 1e3;
    let (out, t) = cpu
        .time(dims, inputs, 10, std::time::Duration::from_millis(500))
        .map_err(|e| miette!("{e}"))?;
    let c = compare_with_reference(k, dims, inputs, &out).map_err(|e| miette!("{e}"))?;
    println!(
        "llvm-cpu jit: compiled in {compile_ms:.1} ms, {} threads; {} runs, median {:.3} ms",
        cpu.threads(),
        t.reps,
        t.median * 1e3
    );
    println!(
        "reference check: max abs error {:.3e}, max rel error {:.3e} (of Σ|terms|), {}/{} outside tolerance: {}",
        c.max_abs,
        c.max_rel,
        c.failures,
        c.count,
        if c.passed() { "pass" } else { "FAIL" }
    );
    if !c.passed() {
        return Err(miette!(
            "the LLVM CPU result differs from the reference interpreter (worst element {})",
            c.worst
        ));
    }
    Ok((out, t.best))
}
