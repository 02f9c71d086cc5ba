//! The HIP C++ backend (ROCm): readable, self-contained HIP source for AMD GPUs,
//! written from a loop-IR [`Func`].
//!
//! One *module* is one `.hip` translation unit plus its host header (`.h`):
//!
//! - the `.hip` file holds `extern "C" __global__` kernels and, next to each, an
//!   `extern "C"` host launch wrapper (`NAME_launch`) that checks the dimensions against
//!   their proved bounds, computes the grid and launches with `hipLaunchKernelGGL`;
//!   it includes only `<hip/hip_runtime.h>` (f16/bf16 conversions are inline helpers);
//! - the `.h` header declares the wrappers with plain C types (`hip_runtime_api.h`
//!   only), so host code compiled by any C or C++ compiler can call them.
//!
//! Two mappings, chosen by the function's [`Launch`]:
//!
//! - **portable path** ([`Launch::Cpu`], any function from
//!   [`crate::lower::lower_cpu`]): the outermost [`LoopKind::Parallel`] loop becomes a
//!   grid-stride loop over global thread ids, everything inside runs per thread as
//!   written (a function without a parallel loop runs on one thread);
//! - **GPU path** ([`Launch::Gpu`], from [`crate::lower::lower_gpu`]): `Special` ids map
//!   to `threadIdx.x`/`blockIdx.x`/`blockDim.x` (`LaneId` is `threadIdx.x & 31`, the loop
//!   IR's 32-lane warp, on every arch), `WarpSum` to a `__shfl_xor` butterfly of width
//!   32, `LoadVec4` to a `uint4` load and `Dot4` to the arch's dot-product builtin.
//!
//! **Wave size.** The loop IR's warps have 32 lanes. On wave32 archs (RDNA) a warp is
//! a wavefront. On wave64 archs (CDNA) a wavefront holds two loop-IR warps: every
//! shuffle passes width 32, so each half-wave reduces on its own and lanes never read
//! the other half, and `LaneId` stays `threadIdx.x & 31`. This is the schedule for
//! every arch; the generated comments say so.
//!
//! **Dot products.** `Dot4` (and, on the portable path, i8 × code runs whose codes fit
//! a signed byte) use `__builtin_amdgcn_sdot4` (`v_dot4_i32_i8` / `v_dot4c_i32_i8`) on
//! gfx90a, gfx940/942 and gfx1030, and `__builtin_amdgcn_sudot4` (`v_dot4_i32_iu8`,
//! both operands signed) on gfx1100, which has no `sdot4`. With
//! [`HipOptions::native_dot4`] off, a portable byte-wise expression is used instead.
//!
//! [`build`] writes the sources for `build.rs` scripts and `qkc emit --target hip`;
//! [`report`] compiles them with `hipcc` and reads registers, spills and occupancy;
//! [`harness`] writes a test program that runs the generated code on NVIDIA GPUs
//! through `hip_on_cuda.h` (a HIP-to-CUDA compatibility header).

pub mod build;
pub mod harness;
pub mod report;
mod writer;

use std::fmt;
use std::str::FromStr;

use qkc_dsl::ir::{ElemType, Kernel, Role};

use crate::loop_ir::{Func, Launch, LoopKind};
use crate::lower::{lower_cpu, lower_gpu, CpuOptions, GpuOptions};

/// The HIP-to-CUDA compatibility header used to run generated HIP code with `nvcc`.
pub const HIP_ON_CUDA_H: &str = include_str!("hip_on_cuda.h");

/// An AMD GPU architecture the backend can target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Arch {
    /// CDNA2 (MI200): wave64, `v_dot4_i32_i8`.
    Gfx90a,
    /// CDNA3 (MI300 engineering samples): wave64, `v_dot4c_i32_i8`.
    Gfx940,
    /// CDNA3 (MI300X/A): wave64, `v_dot4c_i32_i8`.
    Gfx942,
    /// RDNA2 (RX 6800/6900, W6800): wave32, `v_dot4_i32_i8`.
    Gfx1030,
    /// RDNA3 (RX 7900): wave32, no `sdot4`; `v_dot4_i32_iu8` via `sudot4`.
    Gfx1100,
}

/// How an arch computes a 4-way signed byte dot product.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dot4Kind {
    /// `__builtin_amdgcn_sdot4(a, b, acc, false)`.
    Sdot4,
    /// `__builtin_amdgcn_sudot4(true, a, true, b, acc, false)` (gfx11).
    Sudot4,
    /// Four sign-extended byte products in plain C++.
    Portable,
}

impl Arch {
    /// Every arch, in a stable order.
    pub const ALL: [Arch; 5] = [
        Arch::Gfx90a,
        Arch::Gfx940,
        Arch::Gfx942,
        Arch::Gfx1030,
        Arch::Gfx1100,
    ];

    /// The `--offload-arch` name.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Gfx90a => "gfx90a",
            Arch::Gfx940 => "gfx940",
            Arch::Gfx942 => "gfx942",
            Arch::Gfx1030 => "gfx1030",
            Arch::Gfx1100 => "gfx1100",
        }
    }

    /// The product family.
    pub fn family(self) -> &'static str {
        match self {
            Arch::Gfx90a => "CDNA2",
            Arch::Gfx940 | Arch::Gfx942 => "CDNA3",
            Arch::Gfx1030 => "RDNA2",
            Arch::Gfx1100 => "RDNA3",
        }
    }

    /// Lanes of a wavefront (64 on CDNA, 32 on RDNA as HIP compiles by default).
    pub fn wave_size(self) -> u32 {
        match self {
            Arch::Gfx90a | Arch::Gfx940 | Arch::Gfx942 => 64,
            Arch::Gfx1030 | Arch::Gfx1100 => 32,
        }
    }

    /// Whether the arch has `__builtin_amdgcn_sdot4` (`dot1-insts` or `dot6`'s `dot4c`).
    pub fn has_sdot4(self) -> bool {
        !matches!(self, Arch::Gfx1100)
    }

    /// The arch's signed 4-way byte dot product.
    pub fn dot4(self) -> Dot4Kind {
        if self.has_sdot4() {
            Dot4Kind::Sdot4
        } else {
            Dot4Kind::Sudot4
        }
    }

    /// The name the ROCm device libraries use (`oclc_isa_version_<code>.bc`).
    pub fn isa_code(self) -> &'static str {
        match self {
            Arch::Gfx90a => "90a",
            Arch::Gfx940 => "940",
            Arch::Gfx942 => "942",
            Arch::Gfx1030 => "1030",
            Arch::Gfx1100 => "1100",
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Arch {
    type Err = HipError;

    fn from_str(s: &str) -> Result<Arch, HipError> {
        Arch::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| HipError::UnknownArch(s.to_string()))
    }
}

/// Which lowering [`emit_kernel`] uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Schedule {
    /// [`lower_gpu`]: warp-per-row GEMV and thread-per-row generic schedules.
    Gpu,
    /// [`lower_cpu`] through the portable grid-stride mapping.
    Portable,
}

/// Options of the HIP backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HipOptions {
    pub arch: Arch,
    /// Threads per block of the portable (grid-stride) path.
    pub block: u32,
    /// Most blocks a portable launch uses; threads loop over the rest.
    pub max_blocks: u32,
    /// Use the arch's dot-product builtin (off: a portable byte-wise expression).
    pub native_dot4: bool,
    /// Lowering used by [`emit_kernel`].
    pub schedule: Schedule,
}

impl HipOptions {
    /// Defaults for an arch: GPU schedule, native dot products, 256-thread portable blocks.
    pub fn new(arch: Arch) -> HipOptions {
        HipOptions {
            arch,
            block: 256,
            max_blocks: 65536,
            native_dot4: true,
            schedule: Schedule::Gpu,
        }
    }

    /// How `Dot4` is written under these options.
    pub fn dot4(&self) -> Dot4Kind {
        if self.native_dot4 {
            self.arch.dot4()
        } else {
            Dot4Kind::Portable
        }
    }
}

impl Default for HipOptions {
    fn default() -> HipOptions {
        HipOptions::new(Arch::Gfx90a)
    }
}

/// A HIP backend failure.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HipError {
    #[error("unknown AMD GPU arch `{0}` (known: gfx90a, gfx940, gfx942, gfx1030, gfx1100)")]
    UnknownArch(String),
    #[error("kernel `{kernel}`: {what}")]
    Unsupported { kernel: String, what: String },
    #[error("`{0}` is not a valid C identifier for a kernel symbol")]
    BadName(String),
    #[error("module `{module}` defines the symbol `{symbol}` twice")]
    DuplicateSymbol { module: String, symbol: String },
    #[error("module `{0}` has no kernels")]
    Empty(String),
}

/// A function to emit with what the host side should know about it.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelSpec {
    pub func: Func,
    /// The kernel's C symbol; its wrapper is `{symbol}_launch`.
    pub symbol: String,
    /// Upper bound of each dimension (the launch wrapper rejects larger values; the
    /// proofs in the notes assume them).
    pub dim_max: Vec<u64>,
    /// Lines for the header's comment (what the kernel computes, its buffers).
    pub docs: Vec<String>,
}

impl KernelSpec {
    /// A function with default dimension bounds (`1..=i32::MAX`) and no docs.
    pub fn from_func(func: Func) -> KernelSpec {
        KernelSpec {
            symbol: func.name.clone(),
            dim_max: vec![qkc_dsl::ir::DIM_MAX_DEFAULT; func.dims.len()],
            docs: Vec::new(),
            func,
        }
    }

    /// A function lowered from `k`: its dimension bounds and buffer shapes.
    pub fn from_kernel(k: &Kernel, func: Func) -> KernelSpec {
        let mut docs = Vec::new();
        for line in k.to_string().lines() {
            let t = line.trim();
            if t.starts_with(&format!("{}[", k.output.name))
                || t.starts_with("acc ")
                || t.starts_with("per group")
            {
                docs.push(t.to_string());
            }
        }
        for p in &k.inputs {
            let role = match p.role {
                Role::Activation => "activation".to_string(),
                Role::Weight => "weight".to_string(),
                Role::Scale(s) => format!("scale {s:?}"),
            };
            docs.push(format!(
                "{}: {}{} ({role}{})",
                p.tensor.name,
                p.tensor.ty.name(),
                k.shape_str(&p.tensor),
                elem_note(&p.tensor.ty)
            ));
        }
        docs.push(format!(
            "{}: {}{} (output{})",
            k.output.name,
            k.output.ty.name(),
            k.shape_str(&k.output),
            elem_note(&k.output.ty)
        ));
        KernelSpec {
            symbol: func.name.clone(),
            dim_max: k.dims.iter().map(|d| d.max).collect(),
            docs,
            func,
        }
    }

    /// Renames the kernel symbol (to put several variants of a kernel in one program).
    pub fn with_symbol(mut self, symbol: impl Into<String>) -> KernelSpec {
        self.symbol = symbol.into();
        self
    }
}

fn elem_note(t: &ElemType) -> String {
    match t {
        ElemType::Packed { layout, .. } => {
            format!(", packed `{layout}`, rows start on byte boundaries")
        }
        ElemType::Scalar(qkc_dsl::ir::Scalar::F16) => ", IEEE binary16 bit patterns".into(),
        ElemType::Scalar(qkc_dsl::ir::Scalar::BF16) => ", bfloat16 bit patterns".into(),
        _ => String::new(),
    }
}

/// One generated translation unit and its header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HipModule {
    /// File stem: `{name}.hip` and `{name}.h`.
    pub name: String,
    pub source: String,
    pub header: String,
    /// Kernel symbols, in order.
    pub symbols: Vec<String>,
}

impl HipModule {
    pub fn source_file(&self) -> String {
        format!("{}.hip", self.name)
    }

    pub fn header_file(&self) -> String {
        format!("{}.h", self.name)
    }
}

/// Emits a module holding every kernel of `kernels`.
pub fn emit_module(
    name: &str,
    kernels: &[KernelSpec],
    opts: &HipOptions,
) -> Result<HipModule, HipError> {
    if kernels.is_empty() {
        return Err(HipError::Empty(name.to_string()));
    }
    if !writer::is_c_ident(name) {
        return Err(HipError::BadName(name.to_string()));
    }
    let mut seen = std::collections::HashSet::new();
    for k in kernels {
        if !writer::is_c_ident(&k.symbol) || writer::is_reserved(&k.symbol) {
            return Err(HipError::BadName(k.symbol.clone()));
        }
        for s in [k.symbol.clone(), format!("{}_launch", k.symbol)] {
            if !seen.insert(s.clone()) {
                return Err(HipError::DuplicateSymbol {
                    module: name.to_string(),
                    symbol: s,
                });
            }
        }
    }
    let (source, header) = writer::write_module(name, kernels, opts)?;
    Ok(HipModule {
        name: name.to_string(),
        source,
        header,
        symbols: kernels.iter().map(|k| k.symbol.clone()).collect(),
    })
}

/// Lowers `k` with the schedule of `opts` (and its defaults) into a [`KernelSpec`].
pub fn lower_kernel(k: &Kernel, opts: &HipOptions) -> KernelSpec {
    let func = match opts.schedule {
        // No `mma.sync` on AMD: the SIMT GEMV serves every shape.
        Schedule::Gpu => lower_gpu(k, &GpuOptions::portable(k)),
        Schedule::Portable => lower_cpu(k, &CpuOptions::for_kernel(k)),
    };
    KernelSpec::from_kernel(k, func)
}

/// Lowers and emits one kernel as a module named after it.
pub fn emit_kernel(k: &Kernel, opts: &HipOptions) -> Result<HipModule, HipError> {
    emit_module(&k.name, &[lower_kernel(k, opts)], opts)
}

/// A CMake snippet building `modules` (file stems) as a static library `lib` for `arch`.
///
/// Use it from a parent project with `add_subdirectory(DIR)` and
/// `target_link_libraries(app PRIVATE LIB)`; needs CMake ≥ 3.21 (HIP language) and a
/// ROCm install that provides `find_package(hip)`.
pub fn cmake_snippet(lib: &str, modules: &[String], arch: Arch) -> String {
    let files: Vec<String> = modules.iter().map(|m| format!("{m}.hip")).collect();
    format!(
        "# Generated by qkc {ver}: HIP kernels for {arch}. Do not edit; regenerate with\n\
         #   qkc emit FILE --target hip --arch {arch} -o DIR\n\
         # Use from a parent project:\n\
         #   add_subdirectory(DIR)\n\
         #   target_link_libraries(app PRIVATE {lib})\n\
         cmake_minimum_required(VERSION 3.21)\n\
         project({lib} LANGUAGES CXX HIP)\n\
         find_package(hip REQUIRED)\n\
         set_source_files_properties({files} PROPERTIES LANGUAGE HIP)\n\
         add_library({lib} STATIC {files})\n\
         set_target_properties({lib} PROPERTIES HIP_ARCHITECTURES {arch} POSITION_INDEPENDENT_CODE ON)\n\
         target_include_directories({lib} PUBLIC ${{CMAKE_CURRENT_SOURCE_DIR}})\n\
         target_link_libraries({lib} PUBLIC hip::host)\n",
        ver = env!("CARGO_PKG_VERSION"),
        files = files.join(" "),
    )
}

/// Whether a function is emitted on the portable path (it has no GPU launch).
pub fn is_portable(f: &Func) -> bool {
    matches!(f.launch, Launch::Cpu)
}

/// Whether the top level of `f` has a parallel loop (the portable path's grid).
pub fn has_parallel_loop(f: &Func) -> bool {
    f.body.iter().any(|s| {
        matches!(
            s,
            crate::loop_ir::Stmt::For {
                kind: LoopKind::Parallel,
                ..
            }
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_names_round_trip() {
        for a in Arch::ALL {
            assert_eq!(a.name().parse::<Arch>(), Ok(a));
        }
        assert!(matches!(
            "gfx1200".parse::<Arch>(),
            Err(HipError::UnknownArch(_))
        ));
    }

    #[test]
    fn wave_sizes_and_dot4() {
        assert_eq!(Arch::Gfx90a.wave_size(), 64);
        assert_eq!(Arch::Gfx942.wave_size(), 64);
        assert_eq!(Arch::Gfx1030.wave_size(), 32);
        assert_eq!(Arch::Gfx1100.wave_size(), 32);
        assert_eq!(Arch::Gfx1100.dot4(), Dot4Kind::Sudot4);
        assert_eq!(Arch::Gfx1030.dot4(), Dot4Kind::Sdot4);
        let mut o = HipOptions::new(Arch::Gfx940);
        o.native_dot4 = false;
        assert_eq!(o.dot4(), Dot4Kind::Portable);
    }
}
