//! Compiling generated HIP with a real `hipcc` and reading what the AMDGPU backend
//! reports: registers (VGPR/AGPR/SGPR), spills, scratch, occupancy and LDS per kernel
//! (from `-Rpass-analysis=kernel-resource-usage`), plus the disassembly (to check that
//! the dot-product path became `v_dot4*` instructions).
//!
//! Used by `qkc emit --target hip --report` and the `hipcc` test suite. Tools are found
//! through `HIPCC` / `PATH` / `/opt/rocm/bin` (hipcc) and `QKC_LLVM_BIN`,
//! `HIP_CLANG_PATH`, `$ROCM_PATH/llvm/bin`, `/opt/rocm/llvm/bin`, `/usr/lib/llvm-*/bin`
//! (`clang-offload-bundler`, `llvm-objdump`, `llvm-dis`, `llvm-as`).
//!
//! **Device-library shim.** Some ROCm packagings (Debian's ROCm 5.2 on clang 15) ship a
//! compiler that knows an arch (gfx1100) but no `oclc_isa_version_<arch>.bc` for it.
//! The ISA-version library holds a single constant, so when it is missing and
//! `llvm-dis`/`llvm-as` are available, [`compile`] writes one (from another arch's
//! file, with the constant changed) into a private copy of the device-library folder
//! and says so in [`CompileOutput::device_lib_shim`].

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::Arch;

/// Resources of one kernel as the AMDGPU backend reports them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelResources {
    pub kernel: String,
    pub sgprs: u32,
    pub vgprs: u32,
    /// Accumulation registers (CDNA only).
    pub agprs: Option<u32>,
    pub scratch_bytes: u32,
    /// Waves per SIMD.
    pub occupancy: u32,
    pub sgpr_spill: u32,
    pub vgpr_spill: u32,
    pub lds_bytes: u32,
}

/// Reads `-Rpass-analysis=kernel-resource-usage` remarks (any order of kernels).
pub fn parse_resource_usage(text: &str) -> Vec<KernelResources> {
    let mut out: Vec<KernelResources> = Vec::new();
    for line in text.lines() {
        let Some(pos) = line.find("remark:") else {
            continue;
        };
        let rest = line[pos + "remark:".len()..].trim();
        let rest = match rest.rfind(" [-R") {
            Some(p) => &rest[..p],
            None => rest,
        };
        let Some((key, value)) = rest.split_once(": ") else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        if key == "Function Name" {
            out.push(KernelResources {
                kernel: value.to_string(),
                ..KernelResources::default()
            });
            continue;
        }
        let Some(k) = out.last_mut() else { continue };
        let Ok(n) = value.parse::<u32>() else {
            continue;
        };
        match key {
            "SGPRs" => k.sgprs = n,
            "VGPRs" => k.vgprs = n,
            "AGPRs" => k.agprs = Some(n),
            "ScratchSize [bytes/lane]" => k.scratch_bytes = n,
            "Occupancy [waves/SIMD]" => k.occupancy = n,
            "SGPRs Spill" => k.sgpr_spill = n,
            "VGPRs Spill" => k.vgpr_spill = n,
            "LDS Size [bytes/block]" => k.lds_bytes = n,
            _ => {}
        }
    }
    out
}

/// Counts, per kernel of an `llvm-objdump -d` listing, the instructions whose mnemonic
/// starts with `prefix` (e.g. `v_dot4`).
pub fn count_per_kernel(disasm: &str, prefix: &str) -> Vec<(String, usize)> {
    let mut out: Vec<(String, usize)> = Vec::new();
    for line in disasm.lines() {
        let t = line.trim();
        if t.ends_with(">:") {
            if let Some(start) = t.find('<') {
                out.push((t[start + 1..t.len() - 2].to_string(), 0));
                continue;
            }
        }
        if t.starts_with(prefix) {
            if let Some(last) = out.last_mut() {
                last.1 += 1;
            }
        }
    }
    out
}

/// A failure to run the toolchain.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("hipcc not found (set HIPCC, put hipcc on PATH, or install ROCm)")]
    NoHipcc,
    #[error("`{tool}` not found next to hipcc's clang (set QKC_LLVM_BIN)")]
    NoTool { tool: &'static str },
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("this hipcc cannot compile for {arch}: {detail}")]
    ArchUnsupported { arch: Arch, detail: String },
    #[error("hipcc failed for {arch}:\n{stderr}")]
    Failed { arch: Arch, stderr: String },
    #[error("{what} failed:\n{stderr}")]
    Tool { what: String, stderr: String },
}

/// The ROCm tools found on this machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Toolchain {
    pub hipcc: PathBuf,
    /// Folder with `clang-offload-bundler` and `llvm-objdump`.
    pub llvm_bin: Option<PathBuf>,
    /// Folder with the ROCm device libraries (`oclc_*.bc`).
    pub device_libs: Option<PathBuf>,
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn env_dir(var: &str) -> Option<PathBuf> {
    std::env::var_os(var).map(PathBuf::from)
}

impl Toolchain {
    /// Finds hipcc and its tools; `None` when hipcc is not installed.
    pub fn find() -> Option<Toolchain> {
        let hipcc = env_dir("HIPCC")
            .filter(|p| p.is_file())
            .or_else(|| on_path("hipcc"))
            .or_else(|| Some(PathBuf::from("/opt/rocm/bin/hipcc")).filter(|p| p.is_file()))?;
        let rocm = env_dir("ROCM_PATH");
        let mut bins: Vec<PathBuf> = Vec::new();
        bins.extend(env_dir("QKC_LLVM_BIN"));
        bins.extend(env_dir("HIP_CLANG_PATH"));
        bins.extend(rocm.as_ref().map(|r| r.join("llvm/bin")));
        bins.push(PathBuf::from("/opt/rocm/llvm/bin"));
        for v in [15, 16, 17, 18, 19, 20, 14] {
            bins.push(PathBuf::from(format!("/usr/lib/llvm-{v}/bin")));
        }
        let llvm_bin = bins.into_iter().find(|d| {
            d.join("clang-offload-bundler").is_file() && d.join("llvm-objdump").is_file()
        });
        let mut libs: Vec<PathBuf> = Vec::new();
        libs.extend(rocm.as_ref().map(|r| r.join("amdgcn/bitcode")));
        libs.push(PathBuf::from("/opt/rocm/amdgcn/bitcode"));
        libs.push(PathBuf::from("/usr/lib/x86_64-linux-gnu/amdgcn/bitcode"));
        libs.push(PathBuf::from("/usr/lib/amdgcn/bitcode"));
        let device_libs = libs.into_iter().find(|d| d.join("ockl.bc").is_file());
        Some(Toolchain {
            hipcc,
            llvm_bin,
            device_libs,
        })
    }

    fn tool(&self, name: &'static str) -> Result<PathBuf, ReportError> {
        self.llvm_bin
            .as_ref()
            .map(|d| d.join(name))
            .filter(|p| p.is_file())
            .ok_or(ReportError::NoTool { tool: name })
    }
}

/// What one `hipcc --genco` run produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompileOutput {
    pub arch: Arch,
    pub command: String,
    pub code_object: PathBuf,
    pub kernels: Vec<KernelResources>,
    /// Compiler warnings (the generated code is expected to have none).
    pub warnings: Vec<String>,
    /// `v_dot4*` instructions per kernel (empty when the disassembler is missing).
    pub dot4: Vec<(String, usize)>,
    /// The disassembly, when the LLVM tools were found.
    pub disasm: Option<String>,
    /// The folder of synthesized device libraries, if this arch needed one.
    pub device_lib_shim: Option<PathBuf>,
}

/// The `__oclc_ISA_version` constant of an arch.
fn isa_version(arch: Arch) -> u32 {
    match arch {
        Arch::Gfx90a => 9010,
        Arch::Gfx940 => 9400,
        Arch::Gfx942 => 9402,
        Arch::Gfx1030 => 10300,
        Arch::Gfx1100 => 11000,
    }
}

fn run(cmd: &mut Command, what: &str) -> Result<std::process::Output, ReportError> {
    cmd.output().map_err(|source| ReportError::Spawn {
        program: what.to_string(),
        source,
    })
}

/// Builds a device-library folder for `arch` when the installed one lacks its ISA
/// library; `None` when none is needed (or none can be made).
fn device_lib_shim(
    tc: &Toolchain,
    arch: Arch,
    out_dir: &Path,
) -> Result<Option<PathBuf>, ReportError> {
    let Some(libs) = &tc.device_libs else {
        return Ok(None);
    };
    let want = format!("oclc_isa_version_{}.bc", arch.isa_code());
    if libs.join(&want).is_file() {
        return Ok(None);
    }
    let (Ok(dis), Ok(asm)) = (tc.tool("llvm-dis"), tc.tool("llvm-as")) else {
        return Ok(None);
    };
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ReportError::Io { path, source }
    };
    let shim = out_dir.join(format!("devlibs-{}", arch.name()));
    std::fs::create_dir_all(&shim).map_err(io(&shim))?;
    let mut template = None;
    for e in std::fs::read_dir(libs).map_err(io(libs))? {
        let p = e.map_err(io(libs))?.path();
        let Some(name) = p.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue;
        };
        if !name.ends_with(".bc") {
            continue;
        }
        if name.starts_with("oclc_isa_version_") && template.is_none() {
            template = Some(p.clone());
        }
        let dst = shim.join(&name);
        if !dst.exists() {
            std::fs::copy(&p, &dst).map_err(io(&dst))?;
        }
    }
    let Some(template) = template else {
        return Ok(None);
    };
    let o = run(
        Command::new(&dis).arg(&template).arg("-o").arg("-"),
        "llvm-dis",
    )?;
    if !o.status.success() {
        return Err(ReportError::Tool {
            what: "llvm-dis".into(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        });
    }
    let text = String::from_utf8_lossy(&o.stdout);
    let mut ll = String::new();
    for line in text.lines() {
        if line.starts_with("@__oclc_ISA_version") {
            if let Some(p) = line.find("constant i32 ") {
                let tail = &line[p + "constant i32 ".len()..];
                let digits = tail.chars().take_while(|c| c.is_ascii_digit()).count();
                writeln!(
                    ll,
                    "{}constant i32 {}{}",
                    &line[..p],
                    isa_version(arch),
                    &tail[digits..]
                )
                .ok();
                continue;
            }
        }
        writeln!(ll, "{line}").ok();
    }
    let ll_path = shim.join(format!("oclc_isa_version_{}.ll", arch.isa_code()));
    std::fs::write(&ll_path, ll).map_err(io(&ll_path))?;
    let bc = shim.join(&want);
    let o = run(
        Command::new(&asm).arg(&ll_path).arg("-o").arg(&bc),
        "llvm-as",
    )?;
    if !o.status.success() {
        return Err(ReportError::Tool {
            what: "llvm-as".into(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        });
    }
    Ok(Some(shim))
}

/// Compiles `hip` for `arch` with `hipcc --genco -O3 -Wall -Wextra` and the resource
/// remarks; disassembles the result when the LLVM tools are there. Outputs go to
/// `out_dir`.
pub fn compile(
    tc: &Toolchain,
    hip: &Path,
    arch: Arch,
    out_dir: &Path,
) -> Result<CompileOutput, ReportError> {
    std::fs::create_dir_all(out_dir).map_err(|source| ReportError::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let stem = hip
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let co = out_dir.join(format!("{stem}-{}.co", arch.name()));
    let shim = device_lib_shim(tc, arch, out_dir)?;
    let mut cmd = Command::new(&tc.hipcc);
    cmd.arg("-x")
        .arg("hip")
        .arg(format!("--offload-arch={}", arch.name()))
        .arg("--genco")
        .arg("-O3")
        .arg("-Wall")
        .arg("-Wextra")
        .arg("-Rpass-analysis=kernel-resource-usage");
    if let Some(s) = &shim {
        cmd.arg(format!("--rocm-device-lib-path={}", s.display()));
    }
    cmd.arg("-o").arg(&co).arg(hip);
    let command = format!("{cmd:?}").replace('"', "");
    let o = run(&mut cmd, "hipcc")?;
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    if !o.status.success() {
        if stderr.contains("invalid target ID")
            || stderr.contains("unsupported CUDA gpu architecture")
        {
            return Err(ReportError::ArchUnsupported {
                arch,
                detail: stderr
                    .lines()
                    .find(|l| l.contains("error"))
                    .unwrap_or("")
                    .trim()
                    .to_string(),
            });
        }
        return Err(ReportError::Failed { arch, stderr });
    }
    let warnings: Vec<String> = stderr
        .lines()
        .filter(|l| l.contains("warning:"))
        .map(str::to_string)
        .collect();
    let kernels = parse_resource_usage(&stderr);
    let (disasm, dot4) = match disassemble(tc, &co, arch, out_dir) {
        Ok(d) => {
            let dot4 = count_per_kernel(&d, "v_dot4");
            (Some(d), dot4)
        }
        Err(ReportError::NoTool { .. }) => (None, Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(CompileOutput {
        arch,
        command,
        code_object: co,
        kernels,
        warnings,
        dot4,
        disasm,
        device_lib_shim: shim,
    })
}

/// Unbundles a `--genco` code object and disassembles it for `arch`.
pub fn disassemble(
    tc: &Toolchain,
    code_object: &Path,
    arch: Arch,
    out_dir: &Path,
) -> Result<String, ReportError> {
    let bundler = tc.tool("clang-offload-bundler")?;
    let objdump = tc.tool("llvm-objdump")?;
    let elf = out_dir.join(format!(
        "{}.elf",
        code_object
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    let o = run(
        Command::new(&bundler)
            .arg("--unbundle")
            .arg("--type=o")
            .arg(format!(
                "--targets=hipv4-amdgcn-amd-amdhsa--{}",
                arch.name()
            ))
            .arg(format!("--input={}", code_object.display()))
            .arg(format!("--output={}", elf.display())),
        "clang-offload-bundler",
    )?;
    if !o.status.success() {
        return Err(ReportError::Tool {
            what: "clang-offload-bundler --unbundle".into(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        });
    }
    let o = run(
        Command::new(&objdump)
            .arg("-d")
            .arg(format!("--mcpu={}", arch.name()))
            .arg(&elf),
        "llvm-objdump",
    )?;
    if !o.status.success() {
        return Err(ReportError::Tool {
            what: "llvm-objdump -d".into(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// A text table of every kernel of every output.
pub fn format_table(outputs: &[CompileOutput]) -> String {
    let width = outputs
        .iter()
        .flat_map(|o| o.kernels.iter().map(|k| k.kernel.len()))
        .max()
        .unwrap_or(6)
        .max(6);
    let mut s = String::new();
    writeln!(
        s,
        "{:<8} {:<width$} {:>5} {:>5} {:>5} {:>6} {:>6} {:>7} {:>4} {:>5} {:>6}",
        "arch",
        "kernel",
        "VGPR",
        "AGPR",
        "SGPR",
        "vspill",
        "sspill",
        "scratch",
        "occ",
        "LDS",
        "v_dot4"
    )
    .ok();
    for o in outputs {
        for k in &o.kernels {
            let dots = o
                .dot4
                .iter()
                .find(|(n, _)| n == &k.kernel)
                .map(|(_, c)| c.to_string())
                .unwrap_or_else(|| "-".into());
            writeln!(
                s,
                "{:<8} {:<width$} {:>5} {:>5} {:>5} {:>6} {:>6} {:>7} {:>4} {:>5} {:>6}",
                o.arch.name(),
                k.kernel,
                k.vgprs,
                k.agprs.map(|a| a.to_string()).unwrap_or_else(|| "-".into()),
                k.sgprs,
                k.vgpr_spill,
                k.sgpr_spill,
                k.scratch_bytes,
                k.occupancy,
                k.lds_bytes,
                dots
            )
            .ok();
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const REMARKS: &str = "\
t.hip:2:1: remark: Function Name: k [-Rpass-analysis=kernel-resource-usage]
extern \"C\" __global__ void k(const int* a, const int* b, int* c) {
^
t.hip:2:1: remark:     SGPRs: 10 [-Rpass-analysis=kernel-resource-usage]
t.hip:2:1: remark:     VGPRs: 7 [-Rpass-analysis=kernel-resource-usage]
t.hip:2:1: remark:     AGPRs: 0 [-Rpass-analysis=kernel-resource-usage]
t.hip:2:1: remark:     ScratchSize [bytes/lane]: 16 [-Rpass-analysis=kernel-resource-usage]
t.hip:2:1: remark:     Occupancy [waves/SIMD]: 8 [-Rpass-analysis=kernel-resource-usage]
t.hip:2:1: remark:     SGPRs Spill: 1 [-Rpass-analysis=kernel-resource-usage]
t.hip:2:1: remark:     VGPRs Spill: 2 [-Rpass-analysis=kernel-resource-usage]
t.hip:2:1: remark:     LDS Size [bytes/block]: 64 [-Rpass-analysis=kernel-resource-usage]
t.hip:9:1: remark: Function Name: other [-Rpass-analysis=kernel-resource-usage]
t.hip:9:1: remark:     VGPRs: 40 [-Rpass-analysis=kernel-resource-usage]
";

    #[test]
    fn parses_remarks() {
        let r = parse_resource_usage(REMARKS);
        assert_eq!(r.len(), 2);
        assert_eq!(
            r[0],
            KernelResources {
                kernel: "k".into(),
                sgprs: 10,
                vgprs: 7,
                agprs: Some(0),
                scratch_bytes: 16,
                occupancy: 8,
                sgpr_spill: 1,
                vgpr_spill: 2,
                lds_bytes: 64,
            }
        );
        assert_eq!(r[1].kernel, "other");
        assert_eq!(r[1].vgprs, 40);
        assert_eq!(r[1].agprs, None);
    }

    #[test]
    fn counts_dot4_per_kernel() {
        let d = "\n0000000000001600 <a>:\n\tv_dot4c_i32_i8_e32 v3, v1, v2 // 1\n\ts_endpgm\n\n0000000000001700 <b>:\n\tv_add_u32 v1, v2, v3\n";
        assert_eq!(
            count_per_kernel(d, "v_dot4"),
            vec![("a".to_string(), 1), ("b".to_string(), 0)]
        );
    }

    #[test]
    fn table_has_a_row_per_kernel() {
        let o = CompileOutput {
            arch: Arch::Gfx90a,
            command: String::new(),
            code_object: PathBuf::new(),
            kernels: parse_resource_usage(REMARKS),
            warnings: Vec::new(),
            dot4: vec![("k".into(), 3)],
            disasm: None,
            device_lib_shim: None,
        };
        let t = format_table(&[o]);
        assert_eq!(t.lines().count(), 3, "{t}");
        assert!(t.lines().nth(1).unwrap().trim_end().ends_with('3'), "{t}");
    }
}
