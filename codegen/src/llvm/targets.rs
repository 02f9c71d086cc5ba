//! Targets of the LLVM backend: the host CPU, AMDGPU (gfx90a, gfx942, gfx1100) and
//! NVPTX (sm_80, sm_90).
//!
//! Each target decides what the translator ([`super::translate`]) may use: the
//! address space of buffers, whether f16 conversions are native, how a `Dot4` is
//! computed (`v_dot4`, `dp4a`, or portable vector code), how a `WarpSum` exchanges
//! lanes. This module also creates the target machines, maps a CPU function onto a
//! GPU grid when no GPU schedule is given ([`gpu_from_cpu`]), links AMDGPU objects
//! with `ld.lld` and reads resource usage from the assembly LLVM prints.

use std::path::{Path, PathBuf};
use std::sync::Once;

use inkwell::targets::{
    CodeModel, InitializationConfig, RelocMode, Target, TargetMachine, TargetTriple,
};
use inkwell::OptimizationLevel;

use super::LlvmError;
use crate::loop_ir::build::*;
use crate::loop_ir::{CmpOp, Expr, Func, Launch, LoopKind, Special, Stmt, Ty};

/// An AMD GPU architecture the backend emits code objects for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AmdgpuArch {
    /// MI200 (CDNA2), wave64, `v_dot4_i32_i8`.
    Gfx90a,
    /// MI300 (CDNA3), wave64, `v_dot4_i32_i8`.
    Gfx942,
    /// RDNA3, wave32, `v_dot4_i32_iu8`.
    Gfx1100,
}

impl AmdgpuArch {
    pub const ALL: [AmdgpuArch; 3] = [AmdgpuArch::Gfx90a, AmdgpuArch::Gfx942, AmdgpuArch::Gfx1100];

    pub fn name(self) -> &'static str {
        match self {
            AmdgpuArch::Gfx90a => "gfx90a",
            AmdgpuArch::Gfx942 => "gfx942",
            AmdgpuArch::Gfx1100 => "gfx1100",
        }
    }

    pub fn parse(s: &str) -> Option<AmdgpuArch> {
        AmdgpuArch::ALL.into_iter().find(|a| a.name() == s)
    }

    /// Hardware wavefront size LLVM compiles for by default.
    pub fn wave_size(self) -> u32 {
        match self {
            AmdgpuArch::Gfx90a | AmdgpuArch::Gfx942 => 64,
            AmdgpuArch::Gfx1100 => 32,
        }
    }

    fn dot4(self) -> Dot4Impl {
        match self {
            // dot1-insts: llvm.amdgcn.sdot4 (v_dot4_i32_i8 / v_dot4c_i32_i8).
            AmdgpuArch::Gfx90a | AmdgpuArch::Gfx942 => Dot4Impl::AmdSdot4,
            // dot8-insts: llvm.amdgcn.sudot4 with both operands signed (v_dot4_i32_iu8).
            AmdgpuArch::Gfx1100 => Dot4Impl::AmdSudot4,
        }
    }
}

/// An NVIDIA GPU architecture the backend emits PTX for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NvptxArch {
    Sm80,
    Sm90,
}

impl NvptxArch {
    pub const ALL: [NvptxArch; 2] = [NvptxArch::Sm80, NvptxArch::Sm90];

    pub fn name(self) -> &'static str {
        match self {
            NvptxArch::Sm80 => "sm_80",
            NvptxArch::Sm90 => "sm_90",
        }
    }

    pub fn parse(s: &str) -> Option<NvptxArch> {
        NvptxArch::ALL.into_iter().find(|a| a.name() == s)
    }
}

/// The machine a module is compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LlvmTarget {
    /// The host CPU (JIT).
    Host,
    Amdgpu(AmdgpuArch),
    Nvptx(NvptxArch),
}

impl LlvmTarget {
    /// Parses `host`, an AMDGPU (`gfx942`) or an NVPTX (`sm_90`) architecture name.
    pub fn parse(s: &str) -> Option<LlvmTarget> {
        if s == "host" || s == "cpu" {
            return Some(LlvmTarget::Host);
        }
        AmdgpuArch::parse(s)
            .map(LlvmTarget::Amdgpu)
            .or_else(|| NvptxArch::parse(s).map(LlvmTarget::Nvptx))
    }

    pub fn name(self) -> &'static str {
        match self {
            LlvmTarget::Host => "host",
            LlvmTarget::Amdgpu(a) => a.name(),
            LlvmTarget::Nvptx(a) => a.name(),
        }
    }

    pub fn is_gpu(self) -> bool {
        !matches!(self, LlvmTarget::Host)
    }
}

/// How the translator computes `Dot4` (and i8 `DotRun`s, four products at a time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dot4Impl {
    /// Portable: `<4 x i8>` sign-extended, multiplied, reduced.
    Vector,
    /// `llvm.amdgcn.sdot4` (gfx90a, gfx942).
    AmdSdot4,
    /// `llvm.amdgcn.sudot4` with both operands signed (gfx11).
    AmdSudot4,
    /// PTX `dp4a.s32.s32` (inline assembly: LLVM 19 has no NVVM intrinsic for it).
    PtxDp4a,
}

/// Which kind of function the translator builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flavor {
    Cpu,
    Amdgpu,
    Nvptx,
}

/// Everything the translator needs to know about the target.
#[derive(Clone, Debug)]
pub(crate) struct Lowering {
    pub flavor: Flavor,
    /// Address space of buffer pointers (0 on the CPU, 1 = global on GPUs).
    pub addrspace: u16,
    /// f16 ⇄ f32 conversions are instructions (`fpext`/`fptrunc half`); otherwise
    /// they are expanded to exact integer code (no runtime library calls).
    pub native_f16: bool,
    pub dot4: Dot4Impl,
    /// Allow reassociating f32 dot-product runs (vector reductions in tree order).
    pub reassociate: bool,
    /// Compile in bounds checks of every memory access against the buffer lengths.
    pub bounds_checks: bool,
    /// `target-cpu` / `target-features` function attributes (the CPU JIT uses them so
    /// that machine code uses the host's vector extensions).
    pub cpu_attrs: Option<(String, String)>,
    /// `DotPacked` is compiled (x86 with AVX-512 BW, VBMI and VNNI).
    pub packed_dot: bool,
}

impl Lowering {
    pub(crate) fn gpu(t: LlvmTarget) -> Lowering {
        let (flavor, dot4) = match t {
            LlvmTarget::Amdgpu(a) => (Flavor::Amdgpu, a.dot4()),
            LlvmTarget::Nvptx(_) => (Flavor::Nvptx, Dot4Impl::PtxDp4a),
            LlvmTarget::Host => (Flavor::Cpu, Dot4Impl::Vector),
        };
        Lowering {
            flavor,
            addrspace: if flavor == Flavor::Cpu { 0 } else { 1 },
            native_f16: true,
            dot4,
            reassociate: false,
            bounds_checks: false,
            cpu_attrs: None,
            packed_dot: false,
        }
    }
}

static INIT: Once = Once::new();

/// Registers the LLVM targets this backend uses (once per process).
pub(crate) fn init() {
    INIT.call_once(|| {
        let cfg = InitializationConfig::default();
        #[cfg(target_arch = "x86_64")]
        Target::initialize_x86(&cfg);
        #[cfg(target_arch = "aarch64")]
        Target::initialize_aarch64(&cfg);
        Target::initialize_amd_gpu(&cfg);
        Target::initialize_nvptx(&cfg);
    });
}

/// The host CPU as LLVM sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostCpu {
    pub triple: String,
    pub cpu: String,
    pub features: String,
}

impl HostCpu {
    pub fn detect() -> HostCpu {
        init();
        HostCpu {
            triple: TargetMachine::get_default_triple()
                .as_str()
                .to_string_lossy()
                .into_owned(),
            cpu: TargetMachine::get_host_cpu_name().to_string(),
            features: TargetMachine::get_host_cpu_features().to_string(),
        }
    }

    /// Whether this CPU runs the AVX-512 block decode of `DotPacked` (BW, VBMI, VNNI).
    pub fn packed_dot(&self) -> bool {
        let has = |f: &str| self.features.split(',').any(|x| x == f);
        self.triple.starts_with("x86_64")
            && ["+avx512f", "+avx512bw", "+avx512vbmi", "+avx512vnni"]
                .iter()
                .all(|f| has(f))
    }

    /// Whether f16 ⇄ f32 conversions are single instructions on this CPU.
    pub fn native_f16(&self) -> bool {
        self.triple.starts_with("aarch64") || self.features.split(',').any(|f| f == "+f16c")
    }
}

fn machine(
    triple: &str,
    cpu: &str,
    features: &str,
    reloc: RelocMode,
) -> Result<TargetMachine, LlvmError> {
    init();
    let tt = TargetTriple::create(triple);
    let target =
        Target::from_triple(&tt).map_err(|e| LlvmError::Target(format!("{triple}: {e}")))?;
    target
        .create_target_machine(
            &tt,
            cpu,
            features,
            OptimizationLevel::Aggressive,
            reloc,
            CodeModel::Default,
        )
        .ok_or_else(|| {
            LlvmError::Target(format!(
                "LLVM cannot create a target machine for {triple} / {cpu}"
            ))
        })
}

/// The target machine of a target (host: the JIT's CPU and features).
pub(crate) fn target_machine(t: LlvmTarget) -> Result<TargetMachine, LlvmError> {
    match t {
        LlvmTarget::Host => {
            let h = HostCpu::detect();
            machine(&h.triple, &h.cpu, &h.features, RelocMode::Default)
        }
        LlvmTarget::Amdgpu(a) => {
            let tm = machine("amdgcn-amd-amdhsa", a.name(), "", RelocMode::PIC)?;
            // Verbose assembly carries the `; Occupancy` and register comments.
            tm.set_asm_verbosity(true);
            Ok(tm)
        }
        LlvmTarget::Nvptx(a) => machine("nvptx64-nvidia-cuda", a.name(), "", RelocMode::Default),
    }
}

/// Threads per block of GPU kernels mapped from CPU functions.
pub const DEFAULT_BLOCK: u32 = 128;

/// Maps a CPU function onto a GPU grid: its parallel loop (a top-level
/// [`LoopKind::Parallel`] loop whose bounds depend only on dimensions) becomes one
/// GPU thread per iteration, `block` threads per block, the tail guarded by an `if`.
/// GPU functions are returned unchanged. The result runs under the loop-IR
/// interpreter exactly as the CPU function does.
pub fn gpu_from_cpu(f: &Func, block: u32) -> Result<Func, LlvmError> {
    if matches!(f.launch, Launch::Gpu { .. }) {
        return Ok(f.clone());
    }
    if block == 0 || block > 1024 {
        return Err(LlvmError::Unsupported(format!(
            "block size {block} (1..=1024)"
        )));
    }
    let pos = f
        .body
        .iter()
        .position(|s| {
            matches!(
                s,
                Stmt::For {
                    kind: LoopKind::Parallel,
                    ..
                }
            )
        })
        .ok_or_else(|| {
            LlvmError::Unsupported(format!(
                "`{}` has no top-level parallel loop to map onto a GPU grid",
                f.name
            ))
        })?;
    let Stmt::For {
        var,
        start,
        end,
        step,
        body,
        ..
    } = &f.body[pos]
    else {
        return Err(LlvmError::Invalid("parallel loop vanished".into()));
    };
    if *step < 1 {
        return Err(LlvmError::Unsupported(format!("parallel loop step {step}")));
    }
    if !dims_only(start) || !dims_only(end) {
        return Err(LlvmError::Unsupported(
            "parallel loop bounds must depend only on dimensions to size the grid".into(),
        ));
    }
    let mut g = f.clone();
    g.launch = Launch::Gpu {
        grid: ceil_div(sub(end.clone(), start.clone()), *step * block as i64),
        block,
    };
    // Trip counts are rounded up to blocks; empty loops (end <= start) give no blocks
    // because the division rounds toward zero for non-positive numerators.
    let gid = g.var("gid", Ty::I64);
    let mut stmts = vec![
        Stmt::Comment(format!(
            "one thread per iteration of `{}`",
            f.var_name(*var)
        )),
        Stmt::Let(
            gid,
            add(
                mul(
                    cast(Ty::I64, Expr::Special(Special::BlockIdx)),
                    i64c(block as i64),
                ),
                cast(Ty::I64, Expr::Special(Special::ThreadIdx)),
            ),
        ),
        Stmt::Let(*var, add(start.clone(), mul(Expr::Var(gid), i64c(*step)))),
    ];
    stmts.push(Stmt::If {
        cond: cmp(CmpOp::Lt, Expr::Var(*var), end.clone()),
        then: body.clone(),
    });
    g.body.splice(pos..=pos, stmts);
    g.notes.push(format!(
        "gpu mapping: parallel loop over `{}` -> one thread per iteration, {block} threads per block",
        f.var_name(*var)
    ));
    Ok(g)
}

fn dims_only(e: &Expr) -> bool {
    match e {
        Expr::Int(..) | Expr::Dim(_) => true,
        Expr::Bin(_, a, b) | Expr::Cmp(_, a, b) => dims_only(a) && dims_only(b),
        Expr::Select(c, a, b) => dims_only(c) && dims_only(a) && dims_only(b),
        Expr::Cast(_, a) => dims_only(a),
        _ => false,
    }
}

/// Resource usage of one AMDGPU kernel, read from the assembly LLVM emits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AmdgpuResources {
    pub kernel: String,
    pub next_free_vgpr: Option<u32>,
    pub next_free_sgpr: Option<u32>,
    pub vgpr_count: Option<u32>,
    pub sgpr_count: Option<u32>,
    pub agpr_count: Option<u32>,
    pub vgpr_spill_count: Option<u32>,
    pub sgpr_spill_count: Option<u32>,
    /// Private (scratch) bytes per work-item.
    pub scratch_bytes: Option<u32>,
    pub occupancy: Option<u32>,
    pub wavefront_size: Option<u32>,
    /// Machine code bytes.
    pub code_bytes: Option<u32>,
    /// LDS bytes per workgroup.
    pub lds_bytes: Option<u32>,
}

impl std::fmt::Display for AmdgpuResources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = |x: Option<u32>| x.map_or("?".to_string(), |x| x.to_string());
        writeln!(f, "kernel {}", self.kernel)?;
        writeln!(
            f,
            "  vgprs: {} (next free {}), agprs: {}, sgprs: {} (next free {})",
            v(self.vgpr_count),
            v(self.next_free_vgpr),
            v(self.agpr_count),
            v(self.sgpr_count),
            v(self.next_free_sgpr)
        )?;
        writeln!(
            f,
            "  spills: {} vgpr, {} sgpr; scratch {} bytes/lane",
            v(self.vgpr_spill_count),
            v(self.sgpr_spill_count),
            v(self.scratch_bytes)
        )?;
        write!(
            f,
            "  occupancy: {} waves/SIMD, wavefront size {}, LDS {} bytes, code {} bytes",
            v(self.occupancy),
            v(self.wavefront_size),
            v(self.lds_bytes),
            v(self.code_bytes)
        )
    }
}

/// Reads resource usage from AMDGPU assembly: the `.amdhsa_next_free_*` directives of
/// each kernel descriptor, the `; Occupancy` comment and the `amdhsa.kernels`
/// metadata (register, spill and scratch counts, wavefront size).
pub fn parse_amdgpu_resources(asm: &str) -> Vec<AmdgpuResources> {
    fn num(rest: &str) -> Option<u32> {
        rest.split_whitespace().next()?.parse().ok()
    }
    fn entry<'a>(out: &'a mut Vec<AmdgpuResources>, name: &str) -> &'a mut AmdgpuResources {
        let i = match out.iter().position(|r| r.kernel == name) {
            Some(i) => i,
            None => {
                out.push(AmdgpuResources {
                    kernel: name.to_string(),
                    ..Default::default()
                });
                out.len() - 1
            }
        };
        &mut out[i]
    }
    let mut out: Vec<AmdgpuResources> = Vec::new();
    // Kernel descriptors: `.amdhsa_kernel NAME` ... `.end_amdhsa_kernel`, then the
    // verbose `; Kernel info` comments of the same kernel.
    let mut current: Option<String> = None;
    for line in asm.lines() {
        let t = line.trim();
        if let Some(name) = t.strip_prefix(".amdhsa_kernel ") {
            current = Some(name.trim().to_string());
            entry(&mut out, name.trim());
            continue;
        }
        let Some(name) = &current else { continue };
        let r = entry(&mut out, name);
        if let Some(v) = t.strip_prefix(".amdhsa_next_free_vgpr ") {
            r.next_free_vgpr = num(v);
        } else if let Some(v) = t.strip_prefix(".amdhsa_next_free_sgpr ") {
            r.next_free_sgpr = num(v);
        } else if let Some(v) = t.strip_prefix(".amdhsa_private_segment_fixed_size ") {
            r.scratch_bytes = num(v);
        } else if let Some(v) = t.strip_prefix("; Occupancy: ") {
            r.occupancy = num(v);
        } else if let Some(v) = t.strip_prefix("; codeLenInByte = ") {
            r.code_bytes = num(v);
        } else if let Some(v) = t.strip_prefix("; LDSByteSize: ") {
            r.lds_bytes = num(v);
        } else if t.starts_with(".amdgpu_metadata") {
            current = None;
        }
    }
    // Metadata (YAML): kernels are the items of `amdhsa.kernels`; their own fields are
    // indented two columns past the item's dash (arguments are nested deeper).
    let Some(meta) = asm.split(".amdgpu_metadata").nth(1) else {
        return out;
    };
    let meta = meta.split(".end_amdgpu_metadata").next().unwrap_or(meta);
    let mut item_indent: Option<usize> = None;
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut items: Vec<Vec<(String, String)>> = Vec::new();
    let mut in_kernels = false;
    for line in meta.lines() {
        let indent = line.len() - line.trim_start().len();
        let t = line.trim();
        if t.starts_with("amdhsa.kernels:") {
            in_kernels = true;
            continue;
        }
        if !in_kernels || t.is_empty() {
            continue;
        }
        if indent == 0 {
            in_kernels = false;
            continue;
        }
        let field = if let Some(rest) = t.strip_prefix("- ") {
            if item_indent.is_none() {
                item_indent = Some(indent);
            }
            if Some(indent) == item_indent {
                if !fields.is_empty() {
                    items.push(std::mem::take(&mut fields));
                }
                Some(rest)
            } else {
                None
            }
        } else if item_indent.is_some_and(|i| indent == i + 2) {
            Some(t)
        } else {
            None
        };
        if let Some((k, v)) = field.and_then(|f| f.split_once(':')) {
            fields.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    if !fields.is_empty() {
        items.push(fields);
    }
    for item in items {
        let Some((_, name)) = item.iter().find(|(k, _)| k == ".name") else {
            continue;
        };
        let r = entry(&mut out, name);
        for (k, v) in &item {
            let n = v.parse::<u32>().ok();
            match k.as_str() {
                ".vgpr_count" => r.vgpr_count = n,
                ".sgpr_count" => r.sgpr_count = n,
                ".agpr_count" => r.agpr_count = n,
                ".vgpr_spill_count" => r.vgpr_spill_count = n,
                ".sgpr_spill_count" => r.sgpr_spill_count = n,
                ".private_segment_fixed_size" => r.scratch_bytes = r.scratch_bytes.or(n),
                ".wavefront_size" => r.wavefront_size = n,
                _ => {}
            }
        }
    }
    out
}

/// Path of `ld.lld` (19) to link AMDGPU objects: `QKC_LLD`, else `ld.lld-19` or
/// `ld.lld` on `PATH`, else LLVM 19's own directory.
pub fn find_lld() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("QKC_LLD") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    for name in ["ld.lld-19", "ld.lld"] {
        if let Some(p) = which(name) {
            return Some(p);
        }
    }
    let p = Path::new("/usr/lib/llvm-19/bin/ld.lld");
    p.is_file().then(|| p.to_path_buf())
}

/// Finds an executable on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Links an AMDGPU relocatable object into a code object (`.hsaco`) with
/// `ld.lld -shared`.
pub fn link_hsaco(lld: &Path, object: &[u8], name: &str) -> Result<Vec<u8>, LlvmError> {
    let dir = std::env::temp_dir().join(format!(
        "qkc-llvm-{}-{}-{}",
        std::process::id(),
        name,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    let io = |e: std::io::Error| LlvmError::Link(format!("{}: {e}", dir.display()));
    std::fs::create_dir_all(&dir).map_err(io)?;
    let obj = dir.join(format!("{name}.o"));
    let out = dir.join(format!("{name}.hsaco"));
    let res = (|| {
        std::fs::write(&obj, object).map_err(io)?;
        let o = std::process::Command::new(lld)
            .arg("-shared")
            .arg(&obj)
            .arg("-o")
            .arg(&out)
            .output()
            .map_err(|e| LlvmError::Link(format!("cannot run {}: {e}", lld.display())))?;
        if !o.status.success() {
            return Err(LlvmError::Link(format!(
                "{} failed: {}",
                lld.display(),
                String::from_utf8_lossy(&o.stderr)
            )));
        }
        std::fs::read(&out).map_err(io)
    })();
    // Best effort: a leftover temporary directory is not an error.
    let _ = std::fs::remove_dir_all(&dir);
    res
}
