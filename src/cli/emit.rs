//! `qkc emit FILE --target T`: prints (or writes) what a stage or backend produces.

use std::path::PathBuf;

use miette::miette;

#[derive(clap::Args)]
pub struct EmitArgs {
    /// The .qk file.
    pub file: PathBuf,
    /// What to emit: `ir` (typed IR), `loop-ir` (CPU schedule), `clif`, `asm` (Cranelift),
    /// `ptx` (with --arch sm_80|sm_90), `hip` (with --arch gfx90a..), and with
    /// `--features llvm`: `llvm-ir`, `llvm-asm` (host), `amdgpu` (--arch gfx90a|gfx942|gfx1100), `nvptx`.
    #[arg(long, default_value = "ir")]
    pub target: String,
    /// Which kernel of the file (default: the first).
    #[arg(long)]
    pub kernel: Option<String>,
    /// Output folder (`--target hip`: writes NAME.hip, NAME.h and CMakeLists.txt).
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
    /// GPU architecture (`--target hip`: gfx90a, gfx940, gfx942, gfx1030, gfx1100).
    #[arg(long)]
    pub arch: Option<String>,
    /// `--target hip`: compile with hipcc and print registers, spills, occupancy, v_dot4.
    #[arg(long)]
    pub report: bool,
    /// `--target ptx`: the function the CUDA runtime runs for M up to this bound
    /// (1, 2, 4 or 8: its M bucket); default: the kernel's own bound.
    #[arg(long)]
    pub max_m: Option<u64>,
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
            // The CPU schedule `run --target cpu` executes on this host.
            let lo = qkc_runtime::cpu::CpuOptions::for_kernel(k).lower;
            println!("{}", qkc_codegen::lower::lower_cpu(k, &lo));
            Ok(())
        }
        "clif" | "asm" => {
            let o = qkc_runtime::cpu::CpuOptions::for_kernel(k);
            let f = qkc_codegen::lower::lower_cpu(k, &o.lower);
            let o = o.jit;
            let text = if a.target == "clif" {
                qkc_codegen::cranelift::clif(&f, &o)
            } else {
                qkc_codegen::cranelift::disasm(&f, &o)
            };
            println!("{}", text.map_err(|e| miette!("{e}"))?);
            Ok(())
        }
        "hip" => emit_hip(a, k),
        "ptx" => emit_ptx(a, k),
        #[cfg(feature = "llvm")]
        "llvm-ir" | "llvm-asm" | "amdgpu" | "nvptx" => emit_llvm(a, k),
        #[cfg(not(feature = "llvm"))]
        "llvm-ir" | "llvm-asm" | "amdgpu" | "nvptx" => Err(miette!(
            "target `{}` needs the LLVM backend: rebuild with `--features llvm`",
            a.target
        )),
        other => Err(miette!(
            "unsupported target `{other}`; targets: ir, loop-ir, clif, asm, hip, ptx, llvm-ir, amdgpu, nvptx"
        )),
    }
}

/// `--target hip`: HIP C++ for ROCm (GPU schedule), to stdout or `-o DIR`.
fn emit_hip(a: &EmitArgs, k: &qkc_dsl::ir::Kernel) -> miette::Result<()> {
    use qkc_codegen::hip::{self, report, Arch, HipOptions};
    let arch: Arch = a
        .arch
        .as_deref()
        .unwrap_or("gfx90a")
        .parse()
        .map_err(|e| miette!("{e}"))?;
    let m = hip::emit_kernel(k, &HipOptions::new(arch)).map_err(|e| miette!("{e}"))?;
    let dir = match &a.output {
        Some(dir) => {
            let files = hip::build::write_module_files(
                dir,
                std::slice::from_ref(&m),
                &format!("qkc_{}", m.name),
                arch,
            )
            .map_err(|e| miette!("{e}"))?;
            for f in &files {
                println!("wrote {}", f.display());
            }
            dir.clone()
        }
        None if a.report => {
            let dir = std::env::temp_dir().join(format!("qkc-hip-{}", std::process::id()));
            hip::build::write_module_files(
                &dir,
                std::slice::from_ref(&m),
                &format!("qkc_{}", m.name),
                arch,
            )
            .map_err(|e| miette!("{e}"))?;
            dir
        }
        None => {
            println!("{}", m.source);
            println!("// ---- {} ----\n{}", m.header_file(), m.header);
            return Ok(());
        }
    };
    if a.report {
        let tc =
            report::Toolchain::find().ok_or_else(|| miette!("{}", report::ReportError::NoHipcc))?;
        let out = report::compile(&tc, &dir.join(m.source_file()), arch, &dir.join("build"))
            .map_err(|e| miette!("{e}"))?;
        println!("{}", out.command);
        if let Some(s) = &out.device_lib_shim {
            println!(
                "note: device libraries for {arch} synthesized in {}",
                s.display()
            );
        }
        for w in &out.warnings {
            println!("{w}");
        }
        print!("{}", report::format_table(std::slice::from_ref(&out)));
        if out.disasm.is_none() {
            println!("(no clang-offload-bundler/llvm-objdump found: v_dot4 not counted)");
        }
    }
    Ok(())
}

/// `--target ptx`: PTX for CUDA (GPU schedule) for `--arch sm_80|sm_90` (default
/// sm_90), to stdout or `-o FILE`.
fn emit_ptx(a: &EmitArgs, k: &qkc_dsl::ir::Kernel) -> miette::Result<()> {
    use qkc_codegen::ptx::{self, Arch};
    let name = a.arch.as_deref().unwrap_or("sm_90");
    let arch = Arch::parse(name)
        .ok_or_else(|| miette!("unknown PTX arch `{name}`; use sm_80 or sm_90"))?;
    let mut o = qkc_codegen::lower::GpuOptions::for_kernel(k);
    if let Some(m) = a.max_m {
        if !matches!(m, 1 | 2 | 4 | 8) {
            return Err(miette!("--max-m {m}: the M buckets are 1, 2, 4 and 8"));
        }
        o.m_tiles = vec![m as u32];
        o.max_m = Some(m);
    }
    let f = qkc_codegen::lower::lower_gpu(k, &o);
    let text = ptx::emit(&f, arch).map_err(|e| miette!("{e}"))?;
    match &a.output {
        Some(path) => {
            std::fs::write(path, text)
                .map_err(|e| miette!("cannot write {}: {e}", path.display()))?;
            println!("wrote {}", path.display());
        }
        None => print!("{text}"),
    }
    Ok(())
}

/// The CPU schedule the LLVM runtime uses on this host (block decode where the CPU
/// has AVX-512 VBMI + VNNI).
#[cfg(feature = "llvm")]
fn host_cpu_options(k: &qkc_dsl::ir::Kernel) -> qkc_codegen::lower::CpuOptions {
    qkc_runtime::llvm_cpu::LlvmCpuOptions::for_kernel(k).lower
}

/// The LLVM backend (feature `llvm`):
/// - `--target llvm-ir [--arch gfx942|sm_90]`: the translated LLVM module (host CPU
///   schedule by default, the GPU schedule for a GPU architecture);
/// - `--target amdgpu --arch gfx90a|gfx942|gfx1100 [-o DIR] [--report]`: AMDGPU
///   assembly, or `NAME.ARCH.{o,hsaco,s,ll}` in DIR; `--report` prints registers,
///   spills, scratch and occupancy read from the assembly;
/// - `--target nvptx --arch sm_80|sm_90 [-o DIR]`: PTX, or `NAME.ARCH.ptx` in DIR.
#[cfg(feature = "llvm")]
fn emit_llvm(a: &EmitArgs, k: &qkc_dsl::ir::Kernel) -> miette::Result<()> {
    use qkc_codegen::llvm::{self, AmdgpuArch, LlvmTarget, NvptxArch};
    use qkc_codegen::lower::{lower_cpu, lower_gpu, GpuOptions};
    // No `mma.sync` through LLVM: its GPU targets get the SIMT GEMV at every M.
    let gpu = || lower_gpu(k, &GpuOptions::portable(k));
    let write = |dir: &PathBuf, name: String, bytes: &[u8]| -> miette::Result<()> {
        std::fs::create_dir_all(dir)
            .map_err(|e| miette!("cannot create {}: {e}", dir.display()))?;
        let p = dir.join(name);
        std::fs::write(&p, bytes).map_err(|e| miette!("cannot write {}: {e}", p.display()))?;
        println!("wrote {}", p.display());
        Ok(())
    };
    match a.target.as_str() {
        "llvm-asm" => {
            // Host assembly of the O3-optimized CPU kernel, as `llvm-cpu` runs it.
            let f = lower_cpu(k, &host_cpu_options(k));
            let opts = llvm::JitOptions {
                keep_text: true,
                reassociate: true,
                ..llvm::JitOptions::default()
            };
            let jit = llvm::compile_cpu(&f, &opts).map_err(|e| miette!("{e}"))?;
            print!("{}", jit.listings().asm);
        }
        "llvm-ir" => {
            let name = a.arch.as_deref().unwrap_or("host");
            let t = LlvmTarget::parse(name).ok_or_else(|| {
                miette!(
                    "unknown LLVM target `{name}`; use host, gfx90a, gfx942, gfx1100, sm_80, sm_90"
                )
            })?;
            let f = if t.is_gpu() {
                gpu()
            } else {
                lower_cpu(k, &host_cpu_options(k))
            };
            print!(
                "{}",
                llvm::emit_ir(&f, t, false).map_err(|e| miette!("{e}"))?
            );
        }
        "amdgpu" => {
            let name = a.arch.as_deref().unwrap_or("gfx942");
            let arch = AmdgpuArch::parse(name).ok_or_else(|| {
                miette!("unknown AMDGPU arch `{name}`; use gfx90a, gfx942 or gfx1100")
            })?;
            let code = llvm::compile_amdgpu(&gpu(), arch).map_err(|e| miette!("{e}"))?;
            let stem = format!("{}.{}", code.kernel, arch.name());
            match &a.output {
                Some(dir) => {
                    write(dir, format!("{stem}.o"), &code.object)?;
                    write(dir, format!("{stem}.s"), code.text.asm.as_bytes())?;
                    write(dir, format!("{stem}.ll"), code.text.optimized_ir.as_bytes())?;
                    match &code.hsaco {
                        Some(h) => write(dir, format!("{stem}.hsaco"), h)?,
                        None => println!(
                            "ld.lld-19 not found: {stem}.hsaco not linked (apt-get install lld-19)"
                        ),
                    }
                }
                None if a.report => {}
                None => print!("{}", code.text.asm),
            }
            if a.report {
                for r in &code.resources {
                    println!("{r}");
                }
                let dots = code
                    .text
                    .asm
                    .lines()
                    .filter(|l| l.trim_start().starts_with("v_dot4"))
                    .count();
                println!("  v_dot4 instructions: {dots}");
            }
        }
        _ => {
            let name = a.arch.as_deref().unwrap_or("sm_90");
            let arch = NvptxArch::parse(name)
                .ok_or_else(|| miette!("unknown NVPTX arch `{name}`; use sm_80 or sm_90"))?;
            let code = llvm::compile_nvptx(&gpu(), arch).map_err(|e| miette!("{e}"))?;
            match &a.output {
                Some(dir) => write(
                    dir,
                    format!("{}.{}.ptx", code.kernel, arch.name()),
                    code.ptx().as_bytes(),
                )?,
                None => print!("{}", code.ptx()),
            }
        }
    }
    Ok(())
}
