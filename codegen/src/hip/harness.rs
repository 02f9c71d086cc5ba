//! A device test harness for the generated HIP: it writes, into one folder, the
//! generated `.hip`/`.h` modules, random inputs and reference outputs of many kernels
//! and shapes, a `main.cu` that launches every kernel through its generated host
//! wrapper and compares, `hip_on_cuda.h` with the `hip/*.h` shims, and `run.sh`, which
//! builds everything with `nvcc` and runs it. So the HIP that ROCm builds compile also
//! runs, unmodified, on an NVIDIA GPU.
//!
//! References come from the exact reference interpreter ([`qkc_dsl::interp`]):
//! integer outputs must match exactly; float outputs within
//! `2 (K + 64) 2^-24 Σ|terms| + u_out |ref|` (+ 2^-24 for f16 subnormals), where
//! `u_out` is the output type's unit roundoff (2^-24 f32, 2^-11 f16, 2^-8 bf16): a
//! worst-case bound for f32 accumulation plus the output rounding. Conversion kernels
//! (every f16/bf16 bit pattern, f32 values around every f16/bf16 rounding boundary)
//! must match the loop-IR interpreter bit for bit (NaNs: NaN).
//!
//! Every lowered function is also run by the loop-IR interpreter here, against the
//! same references, so a device failure can be told apart from a lowering bug.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use qkc_dsl::host::{random_inputs, HostBuf};
use qkc_dsl::interp;
use qkc_dsl::ir::{Dims, Kernel, Scalar};
use qkc_dsl::layout::BUILTIN_NAMES;

use super::build::write_if_changed;
use super::{
    emit_module, lower_kernel, Arch, HipError, HipOptions, KernelSpec, Schedule, HIP_ON_CUDA_H,
};
use crate::loop_ir::build::*;
use crate::loop_ir::{eval, Buf, Elem, Func, Launch, LoopKind, Stmt, Ty};

/// A harness failure.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("{name}: the .qk source does not compile:\n{diag}")]
    Source { name: String, diag: String },
    #[error(transparent)]
    Hip(#[from] HipError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reference interpreter: {0}")]
    Reference(String),
    #[error("loop-IR interpreter on `{kernel}`: {err}")]
    Eval {
        kernel: String,
        err: eval::EvalError,
    },
}

/// The kernel of the layout × activation matrix for one layout and activation type.
///
/// i8 activations: f16 group scales of 128 along K, an f32 scale per row, f32 output,
/// `M <= 8` (the GEMV case). Float activations: group scales of the activation type,
/// output of the activation type, M unbounded.
pub fn matrix_source(layout: &str, act: &str) -> String {
    if act == "i8" {
        format!(
            "kernel m_{layout}_{act}(x: i8[M, K], xs: f32[M], w: {layout}[N, K], ws: f16[N, K / 128]) -> y: f32[M, N] {{\n\
             \x20   where M <= 8;\n\
             \x20   y[m, n] = sum(k) x[m, k] * w[n, k] * ws[n, k / 128] * xs[m];\n}}\n"
        )
    } else {
        format!(
            "kernel m_{layout}_{act}(x: {act}[M, K], w: {layout}[N, K], ws: {act}[N, K / 128]) -> y: {act}[M, N] {{\n\
             \x20   y[m, n] = sum(k) x[m, k] * w[n, k] * ws[n, k / 128];\n}}\n"
        )
    }
}

/// Activation types of the matrix.
pub const MATRIX_ACTS: [&str; 4] = ["i8", "f16", "bf16", "f32"];

/// Every built-in layout × activation type: `(kernel name, .qk source)`.
pub fn matrix_sources() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for l in BUILTIN_NAMES {
        for a in MATRIX_ACTS {
            out.push((format!("m_{l}_{a}"), matrix_source(l, a)));
        }
    }
    out
}

/// The `.qk` files of a folder, sorted: `(file stem, source)`.
pub fn qk_files(dir: &Path) -> Result<Vec<(String, String)>, HarnessError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| HarnessError::Io { path, source }
    };
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io(dir))? {
        let p = e.map_err(io(dir))?.path();
        if p.extension().is_some_and(|x| x == "qk") {
            let src = std::fs::read_to_string(&p).map_err(io(&p))?;
            let stem = p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            out.push((stem, src));
        }
    }
    out.sort();
    Ok(out)
}

/// One way of generating code: one module (`src/{name}_{kernel}.hip`) per kernel,
/// kernel symbols suffixed `_{name}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Variant {
    pub name: String,
    pub opts: HipOptions,
    /// Only integer (i8-activation) kernels: the variant differs from another one
    /// only in its dot products.
    pub ints_only: bool,
}

impl Variant {
    pub fn new(name: &str, arch: Arch, schedule: Schedule, native_dot4: bool) -> Variant {
        let mut opts = HipOptions::new(arch);
        opts.schedule = schedule;
        opts.native_dot4 = native_dot4;
        Variant {
            name: name.to_string(),
            opts,
            ints_only: false,
        }
    }

    pub fn ints_only(mut self) -> Variant {
        self.ints_only = true;
        self
    }
}

/// GPU and portable schedules; `sdot4` (gfx90a), `sudot4` (gfx1100) and portable dot
/// products (the last two on integer kernels only). On NVIDIA both builtins become
/// `__dp4a`.
pub fn default_variants() -> Vec<Variant> {
    vec![
        Variant::new("gpu_gfx90a", Arch::Gfx90a, Schedule::Gpu, true),
        Variant::new("gpu_gfx1100", Arch::Gfx1100, Schedule::Gpu, true).ints_only(),
        Variant::new("gpu_nodot", Arch::Gfx90a, Schedule::Gpu, false).ints_only(),
        Variant::new("portable_gfx90a", Arch::Gfx90a, Schedule::Portable, true),
        Variant::new("portable_nodot", Arch::Gfx1030, Schedule::Portable, false).ints_only(),
    ]
}

/// `(M, N, K)` shapes: tiny, odd, K not a multiple of the chunks or groups, vector
/// path sizes, and M > 8 (the GPU lowering's generic schedule) where the kernel allows.
pub const DEFAULT_SHAPES: [(u64, u64, u64); 7] = [
    (1, 1, 2),
    (3, 17, 33),
    (2, 5, 130),
    (1, 4, 129),
    (8, 33, 512),
    (4, 96, 1024),
    (13, 33, 260),
];

/// What was written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HarnessSummary {
    pub dir: PathBuf,
    pub kernels: usize,
    pub cases: usize,
    /// Kernel launches that are compared with a reference.
    pub checks: usize,
    pub modules: Vec<String>,
    /// Bytes of input and reference data.
    pub data_bytes: u64,
    /// Functions that the loop-IR interpreter already finds wrong (lowering bugs).
    pub eval_failures: Vec<String>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> HarnessError {
    let path = path.to_path_buf();
    move |source| HarnessError::Io { path, source }
}

fn write_bin(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    total: &mut u64,
) -> Result<String, HarnessError> {
    let p = dir.join("data").join(name);
    if std::fs::read(&p).ok().as_deref() != Some(bytes) {
        std::fs::write(&p, bytes).map_err(io_err(&p))?;
    }
    *total += bytes.len() as u64;
    Ok(format!("data/{name}"))
}

fn f64_bytes(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Output type code shared with `main.cu`.
fn out_code(e: Elem) -> u32 {
    match e {
        Elem::I32 => 0,
        Elem::F32 => 1,
        Elem::F16 => 2,
        Elem::BF16 => 3,
        Elem::I8 | Elem::U8 => 4,
    }
}

fn elem_cty(e: Elem) -> &'static str {
    match e {
        Elem::I8 => "signed char",
        Elem::U8 => "unsigned char",
        Elem::I32 => "int",
        Elem::F16 | Elem::BF16 => "unsigned short",
        Elem::F32 => "float",
    }
}

fn out_values(e: Elem, b: &[u8]) -> Vec<f64> {
    match e {
        Elem::I32 => b
            .chunks(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
            .collect(),
        Elem::F32 => b
            .chunks(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
            .collect(),
        Elem::F16 => b
            .chunks(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f64())
            .collect(),
        Elem::BF16 => b
            .chunks(2)
            .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f64())
            .collect(),
        Elem::I8 | Elem::U8 => b.iter().map(|&x| x as i8 as f64).collect(),
    }
}

/// Tolerances of a float kernel's outputs (see the module docs); zero for integers.
pub fn tolerances(
    k: &Kernel,
    dims: &Dims,
    inputs: &[HostBuf],
    reference: &[f64],
) -> Result<Vec<f64>, HarnessError> {
    let out = k.out_ty();
    if !out.is_float() {
        return Ok(vec![0.0; reference.len()]);
    }
    let mag =
        interp::magnitude(k, dims, inputs).map_err(|e| HarnessError::Reference(e.to_string()))?;
    let kk = dims.values[k.k] as f64;
    let (u, floor) = match out {
        Scalar::F16 => (2f64.powi(-11), 2f64.powi(-24)),
        Scalar::BF16 => (2f64.powi(-8), 0.0),
        _ => (2f64.powi(-24), 0.0),
    };
    Ok(reference
        .iter()
        .zip(&mag)
        .map(|(r, m)| 2.0 * (kk + 64.0) * 2f64.powi(-24) * m + u * r.abs() + floor + 1e-30)
        .collect())
}

/// A hand-written conversion function: `out[i] = in[i]` with the load's widening and
/// the store's narrowing (exercises the f16/bf16 helpers bit for bit).
pub fn convert_func(name: &str, from: Elem, to: Elem) -> Func {
    let mut f = Func::new(
        name,
        vec![
            Buf {
                name: "src".into(),
                elem: from,
                output: false,
            },
            Buf {
                name: "dst".into(),
                elem: to,
                output: true,
            },
        ],
        vec!["N".into()],
        Launch::Cpu,
    );
    f.notes.push(format!(
        "conversion test: dst[i] = {}(src[i]) through f32",
        to.name()
    ));
    let i = f.var("i", Ty::I64);
    f.body.push(Stmt::For {
        var: i,
        start: i64c(0),
        end: dim(0),
        step: 1,
        kind: LoopKind::Parallel,
        body: vec![Stmt::Store {
            buf: 1,
            index: var(i),
            value: load(0, var(i)),
        }],
    });
    f
}

/// f32 values around every f16 and bf16 rounding boundary, plus specials.
pub fn conversion_probe_f32() -> Vec<f32> {
    let mut v: Vec<f32> = Vec::new();
    let around = |x: f32, v: &mut Vec<f32>| {
        if x.is_finite() {
            let b = x.to_bits();
            v.push(x);
            v.push(f32::from_bits(b.wrapping_add(1)));
            if b & 0x7fff_ffff != 0 {
                v.push(f32::from_bits(b - 1));
            }
        }
    };
    for h in 0..=u16::MAX {
        let a = f16::from_bits(h);
        let b = f16::from_bits(h.wrapping_add(1));
        if a.is_finite() && b.is_finite() && (h & 0x7fff) != 0x7bff {
            around(a.to_f32(), &mut v);
            around(((a.to_f64() + b.to_f64()) / 2.0) as f32, &mut v);
        }
        let a = bf16::from_bits(h);
        let b = bf16::from_bits(h.wrapping_add(1));
        if a.is_finite() && b.is_finite() && (h & 0x7fff) != 0x7f7f {
            around(((a.to_f64() + b.to_f64()) / 2.0) as f32, &mut v);
        }
    }
    for x in [
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::MAX,
        f32::MIN,
        f32::MIN_POSITIVE,
        1e-45,
        65504.0,
        65519.996,
        65520.0,
        -65520.0,
        5.960_464_5e-8,
        2.980_232_2e-8,
        2.980_232_5e-8,
        3.389_531_4e38,
    ] {
        v.push(x);
    }
    v
}

struct Case {
    label: String,
    /// C expression per input pointer, output pointer, dims.
    inputs: Vec<String>,
    in_types: Vec<Elem>,
    out_elem: Elem,
    out_len: usize,
    dims: Vec<u64>,
    ref_path: String,
    tol_path: Option<String>,
    /// `(variant label, wrapper symbol)`.
    calls: Vec<(String, String)>,
    /// Dims that exceed a bound: the wrapper must refuse them.
    reject_dims: Option<Vec<u64>>,
}

struct Bench {
    label: String,
    symbol: String,
    in_types: Vec<Elem>,
    in_bytes: Vec<usize>,
    out_bytes: usize,
    out_elem: Elem,
    dims: Vec<u64>,
    weight_bytes: u64,
}

/// Writes the harness for `sources` (`(name, .qk source)`) × `shapes` × `variants`,
/// plus the conversion tests, into `dir`.
pub fn write_harness(
    dir: &Path,
    sources: &[(String, String)],
    shapes: &[(u64, u64, u64)],
    variants: &[Variant],
) -> Result<HarnessSummary, HarnessError> {
    for sub in ["data", "src", "include/hip"] {
        let p = dir.join(sub);
        std::fs::create_dir_all(&p).map_err(io_err(&p))?;
    }
    let mut summary = HarnessSummary {
        dir: dir.to_path_buf(),
        ..HarnessSummary::default()
    };
    let mut kernels: Vec<Kernel> = Vec::new();
    for (name, src) in sources {
        let prog = qkc_dsl::compile(name, src).map_err(|d| HarnessError::Source {
            name: name.clone(),
            diag: d.render(),
        })?;
        kernels.extend(prog.kernels);
    }
    summary.kernels = kernels.len();
    // Lower every kernel once per variant (None: not in that variant), one module each.
    let mut specs: Vec<Vec<Option<KernelSpec>>> = Vec::new();
    let mut headers = Vec::new();
    for v in variants {
        let mut s = Vec::new();
        for k in &kernels {
            if v.ints_only && !k.is_int() {
                s.push(None);
                continue;
            }
            let spec = lower_kernel(k, &v.opts).with_symbol(format!("{}_{}", k.name, v.name));
            let m = emit_module(
                &format!("{}_{}", v.name, k.name),
                std::slice::from_ref(&spec),
                &v.opts,
            )?;
            write_if_changed(&dir.join("src").join(m.source_file()), &m.source)
                .map_err(build_err)?;
            write_if_changed(&dir.join("src").join(m.header_file()), &m.header)
                .map_err(build_err)?;
            headers.push(m.header_file());
            summary.modules.push(m.source_file());
            s.push(Some(spec));
        }
        specs.push(s);
    }
    let mut cases: Vec<Case> = Vec::new();
    let mut total = 0u64;
    for (ki, k) in kernels.iter().enumerate() {
        for (si, &(m, n, kk)) in shapes.iter().enumerate() {
            let mut values = vec![0u64; k.dims.len()];
            values[k.m] = m;
            values[k.n] = n;
            values[k.k] = kk;
            let dims = Dims { values };
            if k.validate_dims(&dims).is_err() {
                continue;
            }
            let seed = 1000 + (ki * 100 + si) as u64;
            let inputs = random_inputs(k, &dims, seed);
            let reference = interp::run_f64(k, &dims, &inputs)
                .map_err(|e| HarnessError::Reference(e.to_string()))?;
            let tol = tolerances(k, &dims, &inputs, &reference)?;
            let c = cases.len();
            let mut in_paths = Vec::new();
            for (j, b) in inputs.iter().enumerate() {
                in_paths.push(write_bin(
                    dir,
                    &format!("c{c}_in{j}.bin"),
                    &b.as_bytes(),
                    &mut total,
                )?);
            }
            let ref_path = write_bin(
                dir,
                &format!("c{c}_ref.bin"),
                &f64_bytes(&reference),
                &mut total,
            )?;
            let tol_path = write_bin(dir, &format!("c{c}_tol.bin"), &f64_bytes(&tol), &mut total)?;
            let Some(func0) = specs.iter().find_map(|s| s[ki].as_ref()).map(|s| &s.func) else {
                continue;
            };
            let out_elem = func0.bufs[func0.output()].elem;
            // The loop-IR interpreter on every variant: lowering bugs show up here.
            let d: Vec<i64> = dims.values.iter().map(|&x| x as i64).collect();
            let mut calls = Vec::new();
            for (vi, v) in variants.iter().enumerate() {
                let Some(spec) = &specs[vi][ki] else { continue };
                let mut bufs: Vec<Vec<u8>> = inputs.iter().map(|b| b.as_bytes()).collect();
                bufs.push(vec![0xAB; reference.len() * out_elem.bytes()]);
                let label = format!("{} {} [M={m},N={n},K={kk}]", k.name, v.name);
                match eval::run(&spec.func, &mut bufs, &d) {
                    Ok(()) => {
                        let got =
                            out_values(out_elem, bufs.last().map(Vec::as_slice).unwrap_or(&[]));
                        if let Some(i) = (0..got.len())
                            .find(|&i| (got[i] - reference[i]).abs() > tol[i] || got[i].is_nan())
                        {
                            summary.eval_failures.push(format!(
                                "{label}: [{i}] {} vs {} (tol {:e})",
                                got[i], reference[i], tol[i]
                            ));
                        }
                    }
                    Err(e) => summary.eval_failures.push(format!("{label}: {e}")),
                }
                calls.push((v.name.clone(), format!("{}_launch", spec.symbol)));
            }
            summary.checks += calls.len();
            let reject_dims = (si == 0 && k.dims[k.m].max < 64).then(|| {
                let mut r = dims.values.clone();
                r[k.m] = k.dims[k.m].max + 1;
                r
            });
            cases.push(Case {
                label: format!("{} [M={m},N={n},K={kk}]", k.name),
                inputs: in_paths,
                in_types: func0.bufs[..func0.output()]
                    .iter()
                    .map(|b| b.elem)
                    .collect(),
                out_elem,
                out_len: reference.len(),
                dims: dims.values.clone(),
                ref_path,
                tol_path: Some(tol_path),
                calls,
                reject_dims,
            });
        }
    }
    // Conversion kernels (portable path), compared bit for bit with the interpreter.
    let conv = [
        ("cvt_f16_f32", Elem::F16, Elem::F32),
        ("cvt_bf16_f32", Elem::BF16, Elem::F32),
        ("cvt_f32_f16", Elem::F32, Elem::F16),
        ("cvt_f32_bf16", Elem::F32, Elem::BF16),
    ];
    let conv_opts = HipOptions::new(Arch::Gfx90a);
    let conv_specs: Vec<KernelSpec> = conv
        .iter()
        .map(|&(n, a, b)| KernelSpec::from_func(convert_func(n, a, b)))
        .collect();
    let m = emit_module("convert", &conv_specs, &conv_opts)?;
    write_if_changed(&dir.join("src").join(m.source_file()), &m.source).map_err(build_err)?;
    write_if_changed(&dir.join("src").join(m.header_file()), &m.header).map_err(build_err)?;
    headers.push(m.header_file());
    summary.modules.push(m.source_file());
    let all16: Vec<u8> = (0..=u16::MAX).flat_map(|h| h.to_le_bytes()).collect();
    let probe: Vec<u8> = conversion_probe_f32()
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    for (spec, &(name, from, to)) in conv_specs.iter().zip(&conv) {
        let input = if from == Elem::F32 {
            probe.clone()
        } else {
            all16.clone()
        };
        let len = input.len() / from.bytes();
        let mut bufs = vec![input.clone(), vec![0u8; len * to.bytes()]];
        eval::run(&spec.func, &mut bufs, &[len as i64]).map_err(|err| HarnessError::Eval {
            kernel: name.to_string(),
            err,
        })?;
        let c = cases.len();
        let in_path = write_bin(dir, &format!("c{c}_in0.bin"), &input, &mut total)?;
        let ref_path = write_bin(dir, &format!("c{c}_ref.bin"), &bufs[1], &mut total)?;
        cases.push(Case {
            label: format!("{name} [N={len}]"),
            inputs: vec![in_path],
            in_types: vec![from],
            out_elem: to,
            out_len: len,
            dims: vec![len as u64],
            ref_path,
            tol_path: None,
            calls: vec![("convert".into(), format!("{name}_launch"))],
            reject_dims: None,
        });
        summary.checks += 1;
    }
    // Timing of the flagship kernels (no check): M=1, N=K=8192.
    let mut benches = Vec::new();
    for k in kernels
        .iter()
        .filter(|k| k.name == "gemv_w3p5" || k.name == "gemv_f16_w3p5")
    {
        let mut values = vec![0u64; k.dims.len()];
        values[k.m] = 1;
        values[k.n] = 8192;
        values[k.k] = 8192;
        let dims = Dims { values };
        for (vi, v) in variants.iter().enumerate() {
            let Some(spec) = specs[vi].iter().flatten().find(|s| s.func.name == k.name) else {
                continue;
            };
            benches.push(Bench {
                label: format!("{} {} [M=1,N=8192,K=8192]", k.name, v.name),
                symbol: format!("{}_launch", spec.symbol),
                in_types: spec.func.bufs[..spec.func.output()]
                    .iter()
                    .map(|b| b.elem)
                    .collect(),
                in_bytes: k
                    .inputs
                    .iter()
                    .map(|p| {
                        let n = k.buffer_len(&p.tensor, &dims);
                        match &p.tensor.ty {
                            qkc_dsl::ir::ElemType::Scalar(s) => n * s.bytes(),
                            _ => n,
                        }
                    })
                    .collect(),
                out_bytes: k.buffer_len(&k.output, &dims) * k.out_ty().bytes(),
                out_elem: spec.func.bufs[spec.func.output()].elem,
                dims: dims.values.clone(),
                weight_bytes: k.weight_bytes(&dims) as u64,
            });
        }
    }
    summary.cases = cases.len();
    summary.data_bytes = total;
    let main = main_cu(&headers, &cases, &benches);
    write_if_changed(&dir.join("main.cu"), &main).map_err(build_err)?;
    write_if_changed(&dir.join("hip_on_cuda.h"), HIP_ON_CUDA_H).map_err(build_err)?;
    let shim = "/* Routes HIP includes to hip_on_cuda.h (qkc's HIP-on-CUDA harness). */\n#include \"hip_on_cuda.h\"\n";
    write_if_changed(&dir.join("include/hip/hip_runtime.h"), shim).map_err(build_err)?;
    write_if_changed(&dir.join("include/hip/hip_runtime_api.h"), shim).map_err(build_err)?;
    let run = dir.join("run.sh");
    write_if_changed(&run, RUN_SH).map_err(build_err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755))
            .map_err(io_err(&run))?;
    }
    let mut manifest = String::new();
    writeln!(
        manifest,
        "kernels {}\ncases {}\nchecks {}\ndata_bytes {}",
        summary.kernels, summary.cases, summary.checks, total
    )
    .ok();
    for f in &summary.eval_failures {
        writeln!(manifest, "eval_failure {f}").ok();
    }
    write_if_changed(&dir.join("MANIFEST.txt"), &manifest).map_err(build_err)?;
    Ok(summary)
}

fn build_err(e: super::build::BuildError) -> HarnessError {
    match e {
        super::build::BuildError::Io { path, source } => HarnessError::Io { path, source },
        super::build::BuildError::Hip(h) => HarnessError::Hip(h),
        other => HarnessError::Reference(other.to_string()),
    }
}

const RUN_SH: &str = r#"#!/usr/bin/env bash
# Builds qkc's HIP-on-CUDA harness with nvcc and runs it. Generated by qkc.
#   ./run.sh            # build, run all checks and the timings
#   ./run.sh --quick    # build, run the checks only
set -euo pipefail
cd "$(dirname "$0")"
ARCH=${CUDA_ARCH:-sm_90}
FLAGS=(-O2 -arch="$ARCH" -Iinclude -Isrc -I. -include hip_on_cuda.h -x cu)
mkdir -p obj
t0=$(date +%s)
ls src/*.hip main.cu | xargs -P "$(nproc)" -I{} bash -c \
  'o=obj/$(basename {}).o; [ -f "$o" ] && [ "$o" -nt {} ] && exit 0;
   nvcc "$@" -c {} -o "$o" > "$o.log" 2>&1 || { echo "nvcc FAILED: {}"; cat "$o.log"; rm -f "$o"; exit 1; }' \
  _ "${FLAGS[@]}"
echo "nvcc: $(ls obj/*.o | wc -l) objects in $(( $(date +%s) - t0 )) s, $(cat obj/*.log | grep -c 'warning' || true) warning lines"
cat obj/*.log | grep -A3 'warning' | head -40 || true
nvcc -arch="$ARCH" obj/*.o -o harness
./harness "$@"
"#;

fn cast_ptr(e: Elem, output: bool, name: &str) -> String {
    format!(
        "({}{}*){name}",
        if output { "" } else { "const " },
        elem_cty(e)
    )
}

fn main_cu(headers: &[String], cases: &[Case], benches: &[Bench]) -> String {
    let mut s = String::new();
    s.push_str(
        "// main.cu: qkc's HIP-on-CUDA harness, generated; do not edit. Launches every\n\
         // generated kernel through its generated host wrapper and compares with the\n\
         // reference interpreter's outputs (data/*.bin). Exit status 1 on any mismatch.\n\
         #include <hip/hip_runtime.h>\n#include <math.h>\n#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n#include <vector>\n",
    );
    for h in headers {
        writeln!(s, "#include \"{h}\"").ok();
    }
    s.push_str(MAIN_PRELUDE);
    for (ci, c) in cases.iter().enumerate() {
        writeln!(s, "static void case_{ci}(void)\n{{").ok();
        writeln!(s, "    // {}", c.label).ok();
        for (j, p) in c.inputs.iter().enumerate() {
            writeln!(s, "    DevBuf in{j} = upload(\"{p}\");").ok();
        }
        let out_bytes = c.out_len * c.out_elem.bytes();
        writeln!(
            s,
            "    void* out = NULL;\n    CHECK(hipMalloc(&out, {out_bytes}));"
        )
        .ok();
        let dims: Vec<String> = c.dims.iter().map(|d| format!("{d}LL")).collect();
        let ins: Vec<String> = c
            .in_types
            .iter()
            .enumerate()
            .map(|(j, &t)| cast_ptr(t, false, &format!("in{j}.p")))
            .collect();
        for (vname, sym) in &c.calls {
            writeln!(s, "    CHECK(hipMemset(out, 0xAB, {out_bytes}));").ok();
            writeln!(
                s,
                "    finish(\"{} {vname}\", {sym}({}, {}, {}, 0), out, {}, {}, \"{}\", {});",
                c.label,
                ins.join(", "),
                cast_ptr(c.out_elem, true, "out"),
                dims.join(", "),
                c.out_len,
                out_code(c.out_elem),
                c.ref_path,
                match &c.tol_path {
                    Some(t) => format!("\"{t}\""),
                    None => "NULL".into(),
                }
            )
            .ok();
        }
        if let Some(r) = &c.reject_dims {
            let rd: Vec<String> = r.iter().map(|d| format!("{d}LL")).collect();
            for (vname, sym) in &c.calls {
                writeln!(
                    s,
                    "    expect_reject(\"{} {vname} dims {:?}\", {sym}({}, {}, {}, 0));",
                    c.label,
                    r,
                    ins.join(", "),
                    cast_ptr(c.out_elem, true, "out"),
                    rd.join(", ")
                )
                .ok();
            }
        }
        writeln!(s, "    CHECK(hipFree(out));").ok();
        for j in 0..c.inputs.len() {
            writeln!(s, "    CHECK(hipFree(in{j}.p));").ok();
        }
        s.push_str("}\n\n");
    }
    for (bi, b) in benches.iter().enumerate() {
        writeln!(s, "static void bench_{bi}(void)\n{{").ok();
        let mut ins = Vec::new();
        for (j, (&t, &n)) in b.in_types.iter().zip(&b.in_bytes).enumerate() {
            // Fill bytes: 0x11 keeps f16/bf16/f32 values small and finite.
            writeln!(s, "    void* in{j} = NULL;\n    CHECK(hipMalloc(&in{j}, {n}));\n    CHECK(hipMemset(in{j}, 0x11, {n}));").ok();
            ins.push(cast_ptr(t, false, &format!("in{j}")));
        }
        writeln!(
            s,
            "    void* out = NULL;\n    CHECK(hipMalloc(&out, {}));",
            b.out_bytes
        )
        .ok();
        let dims: Vec<String> = b.dims.iter().map(|d| format!("{d}LL")).collect();
        let call = format!(
            "{}({}, {}, {}, 0)",
            b.symbol,
            ins.join(", "),
            cast_ptr(b.out_elem, true, "out"),
            dims.join(", ")
        );
        writeln!(
            s,
            "    time_launches(\"{}\", {}.0, [&]() {{ return {call}; }});",
            b.label, b.weight_bytes
        )
        .ok();
        writeln!(s, "    CHECK(hipFree(out));").ok();
        for j in 0..b.in_types.len() {
            writeln!(s, "    CHECK(hipFree(in{j}));").ok();
        }
        s.push_str("}\n\n");
    }
    s.push_str("int main(int argc, char** argv)\n{\n    bool quick = argc > 1 && strcmp(argv[1], \"--quick\") == 0;\n    hipDeviceProp_t prop;\n    CHECK(hipGetDeviceProperties(&prop, 0));\n    printf(\"device: %s\\n\", prop.name);\n");
    for ci in 0..cases.len() {
        writeln!(s, "    case_{ci}();").ok();
    }
    s.push_str("    if (!quick) {\n");
    for bi in 0..benches.len() {
        writeln!(s, "        bench_{bi}();").ok();
    }
    s.push_str(
        "    }\n    printf(\"largest err/tol among passing float checks: %.3f (%s)\\n\", g_worst, g_worst_label);\n    printf(\"SUMMARY: %d checks passed, %d failed, %d rejections ok\\n\", g_pass, g_fail, g_reject_ok);\n    return g_fail ? 1 : 0;\n}\n",
    );
    s
}

const MAIN_PRELUDE: &str = r#"
#define CHECK(call)                                                                   \
    do {                                                                              \
        hipError_t e_ = (call);                                                       \
        if (e_ != hipSuccess) {                                                       \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, hipGetErrorString(e_)); \
            exit(2);                                                                  \
        }                                                                             \
    } while (0)

static int g_pass = 0, g_fail = 0, g_reject_ok = 0;
static double g_worst = 0;
static const char* g_worst_label = "";

struct DevBuf {
    void* p;
    size_t n;
};

static std::vector<unsigned char> read_file(const char* path)
{
    FILE* f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path);
        exit(2);
    }
    std::vector<unsigned char> v;
    unsigned char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) v.insert(v.end(), buf, buf + n);
    fclose(f);
    return v;
}

static DevBuf upload(const char* path)
{
    std::vector<unsigned char> v = read_file(path);
    DevBuf b = {NULL, v.size()};
    CHECK(hipMalloc(&b.p, v.size() ? v.size() : 1));
    if (v.size()) CHECK(hipMemcpy(b.p, v.data(), v.size(), hipMemcpyHostToDevice));
    return b;
}

static double f16_to_double(unsigned short h)
{
    int e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp((double)m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp((double)(m + 1024), e - 25);
    return (h & 0x8000) ? -v : v;
}

static double bf16_to_double(unsigned short h)
{
    unsigned u = (unsigned)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Output type codes: 0 i32, 1 f32, 2 f16, 3 bf16. */
static size_t elem_bytes(int ty) { return ty == 0 || ty == 1 ? 4 : 2; }

static double value_at(const unsigned char* p, size_t i, int ty)
{
    switch (ty) {
    case 0: { int v; memcpy(&v, p + 4 * i, 4); return v; }
    case 1: { float v; memcpy(&v, p + 4 * i, 4); return v; }
    case 2: { unsigned short v; memcpy(&v, p + 2 * i, 2); return f16_to_double(v); }
    default: { unsigned short v; memcpy(&v, p + 2 * i, 2); return bf16_to_double(v); }
    }
}

/* Compares the device output with data/<ref>: within data/<tol> (f64 values), or,
   without a tolerance file, bit for bit (NaN matches NaN). */
static void finish(const char* label, hipError_t launch, void* out, size_t n, int ty, const char* ref_path, const char* tol_path)
{
    if (launch != hipSuccess) {
        printf("FAIL %s: launch returned %s\n", label, hipGetErrorString(launch));
        ++g_fail;
        return;
    }
    hipError_t e = hipDeviceSynchronize();
    if (e != hipSuccess) {
        printf("FAIL %s: kernel failed: %s\n", label, hipGetErrorString(e));
        ++g_fail;
        exit(1);
    }
    std::vector<unsigned char> got(n * elem_bytes(ty));
    CHECK(hipMemcpy(got.data(), out, got.size(), hipMemcpyDeviceToHost));
    std::vector<unsigned char> ref = read_file(ref_path);
    size_t bad = 0, first = 0;
    double worst = 0;
    if (tol_path) {
        std::vector<unsigned char> tol = read_file(tol_path);
        for (size_t i = 0; i < n; ++i) {
            double r, t;
            memcpy(&r, ref.data() + 8 * i, 8);
            memcpy(&t, tol.data() + 8 * i, 8);
            double g = value_at(got.data(), i, ty);
            double err = fabs(g - r);
            if (!(err <= t)) {
                if (!bad) first = i;
                ++bad;
            }
            if (t > 0 && err / t > worst) worst = err / t;
        }
        if (bad) {
            double r, t;
            memcpy(&r, ref.data() + 8 * first, 8);
            memcpy(&t, tol.data() + 8 * first, 8);
            printf("FAIL %s: %zu of %zu outside tolerance; first [%zu] got %.9g want %.9g tol %.3g\n", label, bad, n, first,
                   value_at(got.data(), first, ty), r, t);
        }
    } else {
        for (size_t i = 0; i < n; ++i) {
            double g = value_at(got.data(), i, ty), r = value_at(ref.data(), i, ty);
            bool same = memcmp(got.data() + i * elem_bytes(ty), ref.data() + i * elem_bytes(ty), elem_bytes(ty)) == 0;
            if (!same && !(isnan(g) && isnan(r))) {
                if (!bad) first = i;
                ++bad;
            }
        }
        if (bad) printf("FAIL %s: %zu of %zu differ bitwise; first [%zu] got %.9g want %.9g\n", label, bad, n, first,
                        value_at(got.data(), first, ty), value_at(ref.data(), first, ty));
    }
    if (bad) {
        ++g_fail;
    } else {
        ++g_pass;
        if (worst > g_worst) {
            g_worst = worst;
            g_worst_label = label;
        }
        printf("ok   %s (%zu values, worst err/tol %.3f)\n", label, n, worst);
    }
}

static void expect_reject(const char* label, hipError_t e)
{
    if (e == hipErrorInvalidValue) {
        ++g_reject_ok;
    } else {
        printf("FAIL %s: out-of-bound dims were not rejected (%s)\n", label, hipGetErrorString(e));
        ++g_fail;
    }
}

template <typename F>
static void time_launches(const char* label, double weight_bytes, F launch)
{
    CHECK(launch());
    CHECK(hipDeviceSynchronize());
    hipEvent_t a, b;
    CHECK(hipEventCreate(&a));
    CHECK(hipEventCreate(&b));
    const int iters = 50;
    CHECK(hipEventRecord(a, 0));
    for (int i = 0; i < iters; ++i) CHECK(launch());
    CHECK(hipEventRecord(b, 0));
    CHECK(hipEventSynchronize(b));
    float ms = 0;
    CHECK(hipEventElapsedTime(&ms, a, b));
    double us = 1000.0 * ms / iters;
    printf("time %s: %.2f us, weights %.2f GB/s\n", label, us, weight_bytes / (us * 1e3));
    CHECK(hipEventDestroy(a));
    CHECK(hipEventDestroy(b));
}

"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix_kernels_compile() {
        let srcs = matrix_sources();
        assert_eq!(srcs.len(), 28);
        for (name, src) in &srcs {
            let p =
                qkc_dsl::compile(name, src).unwrap_or_else(|d| panic!("{name}: {}", d.render()));
            assert_eq!(&p.kernels[0].name, name);
        }
    }

    #[test]
    fn conversion_funcs_match_half() {
        let probe = conversion_probe_f32();
        assert!(probe.len() > 300_000);
        let f = convert_func("c", Elem::F32, Elem::F16);
        let input: Vec<u8> = probe.iter().flat_map(|x| x.to_le_bytes()).collect();
        let mut bufs = vec![input, vec![0; probe.len() * 2]];
        eval::run(&f, &mut bufs, &[probe.len() as i64]).unwrap();
        for (i, x) in probe.iter().enumerate() {
            let h = u16::from_le_bytes([bufs[1][2 * i], bufs[1][2 * i + 1]]);
            let want = f16::from_f32(*x).to_bits();
            assert!(
                h == want || (x.is_nan() && f16::from_bits(h).is_nan()),
                "{x:e}: {h:#x} vs {want:#x}"
            );
        }
    }
}
