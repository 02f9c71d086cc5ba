//! Shared by the GPU tests (`codegen/tests/gpu_lowering.rs`, `codegen/tests/ptx_golden.rs`,
//! `tests/ptxas.rs`, `tests/gpu.rs`) and the CPU backends' block-decode tests
//! (`tests/cpu_backend.rs`, `tests/llvm_backend.rs`): `.qk` sources for every built-in layout ×
//! activation type × with/without group scales, the example kernels, and the
//! comparison of an output against the reference interpreter.

#![allow(dead_code)]

use qkc_dsl::host::HostBuf;
use qkc_dsl::interp;
use qkc_dsl::ir::{Dims, Kernel, Scalar};

/// Asserts that two little-endian f32 buffers hold the same bits, any NaN matching any
/// NaN (backends may differ in NaN payloads).
pub fn assert_f32_bits_match(got: &[u8], want: &[u8], ctx: &str) {
    assert_eq!(got.len(), want.len(), "{ctx}: output length");
    for (i, (g, w)) in got.chunks(4).zip(want.chunks(4)).enumerate() {
        let g = f32::from_le_bytes(g.try_into().unwrap());
        let w = f32::from_le_bytes(w.try_into().unwrap());
        assert!(
            g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
            "{ctx}: element {i}: {g:e} ({:#x}) vs {w:e} ({:#x})",
            g.to_bits(),
            w.to_bits()
        );
    }
}

/// Built-in layouts.
pub const LAYOUTS: [&str; 7] = ["s2", "s3", "s4", "u4", "s8", "q3p5", "q3p5b"];
/// Activation types.
pub const ACTS: [&str; 4] = ["i8", "f16", "bf16", "f32"];

/// A generated kernel: i8 activations get an f32 row scale and, with groups, f16
/// group scales and an f32 output; without groups an exact i32 output. Float
/// activations produce their own type (f32, f16, bf16).
pub fn kernel_src(layout: &str, act: &str, group: Option<u32>, bounded_m: bool) -> String {
    let name = format!(
        "k_{layout}_{act}_{}{}",
        group.map_or("nog".to_string(), |g| format!("g{g}")),
        if bounded_m { "_m8" } else { "" }
    );
    let int = act == "i8";
    let mut params = vec![format!("x: {act}[M, K]")];
    let mut terms = vec!["x[m, k]".to_string(), "w[n, k]".to_string()];
    if int && group.is_some() {
        params.push("xs: f32[M]".into());
    }
    params.push(format!("w: {layout}[N, K]"));
    if let Some(g) = group {
        params.push(format!("ws: f16[N, K / {g}]"));
        terms.push(format!("ws[n, k / {g}]"));
    }
    if int && group.is_some() {
        terms.push("xs[m]".into());
    }
    let out = match (int, group) {
        (true, None) => "i32",
        (true, Some(_)) => "f32",
        (false, _) => act,
    };
    let mut wheres = Vec::new();
    if bounded_m {
        wheres.push("M <= 8".to_string());
    }
    if int && group.is_none() {
        wheres.push("K <= 65536".to_string());
    }
    let wh = if wheres.is_empty() {
        String::new()
    } else {
        format!("    where {};\n", wheres.join(", "))
    };
    format!(
        "kernel {name}({}) -> y: {out}[M, N] {{\n{wh}    y[m, n] = sum(k) {};\n}}\n",
        params.join(", "),
        terms.join(" * ")
    )
}

/// Every generated kernel, compiled.
pub fn generated_kernels() -> Vec<Kernel> {
    let mut out = Vec::new();
    for l in LAYOUTS {
        for a in ACTS {
            for g in [None, Some(64)] {
                for bounded in [true, false] {
                    let src = kernel_src(l, a, g, bounded);
                    let prog = qkc_dsl::compile("generated.qk", &src)
                        .unwrap_or_else(|e| panic!("{src}\n{:?}", miette_free(&e)));
                    out.extend(prog.kernels);
                }
            }
        }
    }
    out
}

fn miette_free(e: &qkc_dsl::Diag) -> String {
    format!("{e}")
}

/// The bundled example kernel of file `examples/kernels/{name}.qk` (see
/// [`example_kernels`]).
pub fn example_kernel(root: &str, name: &str) -> Kernel {
    example_kernels(root)
        .into_iter()
        .find(|(f, _)| f == name)
        .map(|(_, k)| k)
        .unwrap_or_else(|| panic!("no example kernel {name}"))
}

/// The bundled example kernels (`examples/kernels/*.qk`), sorted by file name.
/// Falls back to `./examples/kernels` when `root` (a build-time path) is not there,
/// so test binaries copied to another machine still find them.
pub fn example_kernels(root: &str) -> Vec<(String, Kernel)> {
    let mut dir = format!("{root}/examples/kernels");
    if !std::path::Path::new(&dir).is_dir() {
        dir = "examples/kernels".to_string();
    }
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "qk"))
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        let src = std::fs::read_to_string(&p).expect("read example");
        let prog = qkc_dsl::compile(&p.display().to_string(), &src).expect("example compiles");
        let stem = p.file_stem().expect("stem").to_string_lossy().to_string();
        for k in prog.kernels {
            out.push((stem.clone(), k));
        }
    }
    out
}

/// Dims for (M, N, K).
pub fn dims(k: &Kernel, m: u64, n: u64, kk: u64) -> Dims {
    let mut d = Dims {
        values: vec![0; k.dims.len()],
    };
    d.values[k.m] = m;
    d.values[k.n] = n;
    d.values[k.k] = kk;
    d
}

/// Whether the kernel accepts these dims.
pub fn dims_ok(k: &Kernel, d: &Dims) -> bool {
    k.validate_dims(d).is_ok()
}

/// Output bytes decoded to f64 in the output's element type.
pub fn out_values(k: &Kernel, b: &[u8]) -> Vec<f64> {
    match k.out_ty() {
        Scalar::F32 => b
            .chunks(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
            .collect(),
        Scalar::I32 | Scalar::I8 => b
            .chunks(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
            .collect(),
        Scalar::F16 => b
            .chunks(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f64())
            .collect(),
        Scalar::BF16 => b
            .chunks(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f64())
            .collect(),
    }
}

/// Output length in bytes.
pub fn out_bytes(k: &Kernel, d: &Dims) -> usize {
    k.buffer_len(&k.output, d) * k.out_ty().bytes()
}

/// Compares an output with the reference interpreter. Integer outputs must be exact;
/// float outputs must be within `(K + 64) * 2^-24` of the sum of |terms| (f32
/// accumulation in another order) plus one rounding of the output type.
pub fn check(k: &Kernel, d: &Dims, inputs: &[HostBuf], got: &[f64]) -> Result<(), String> {
    let exact = interp::run_f64(k, d, inputs).map_err(|e| e.to_string())?;
    let want = interp::run(k, d, inputs)
        .map_err(|e| e.to_string())?
        .to_f64();
    let mag = interp::magnitude(k, d, inputs).map_err(|e| e.to_string())?;
    if got.len() != want.len() {
        return Err(format!(
            "output has {} elements, expected {}",
            got.len(),
            want.len()
        ));
    }
    let ulp = match k.out_ty() {
        Scalar::F16 => 2f64.powi(-10),
        Scalar::BF16 => 2f64.powi(-7),
        _ => 2f64.powi(-23),
    };
    let kk = d.values[k.k] as f64;
    for i in 0..got.len() {
        let (g, w) = (got[i], want[i]);
        let ok = if k.out_ty() == Scalar::I32 {
            g == w
        } else {
            let tol = mag[i] * (kk + 64.0) * 2f64.powi(-24) + exact[i].abs() * ulp + 1e-30;
            g.is_finite() && (g - exact[i]).abs() <= tol + (w - exact[i]).abs()
        };
        if !ok {
            return Err(format!(
                "element {i} (m={}, n={}): got {g}, want {w} (exact {}, magnitude {})",
                i / d.values[k.n] as usize,
                i % d.values[k.n] as usize,
                exact[i],
                mag[i]
            ));
        }
    }
    Ok(())
}

/// Shapes (M, N, K) for [`packed_block_kernels`]: one block, two, blocks plus a chunk
/// and a generic tail, several groups, M past the 4-row tile (all within the kernels'
/// bounds, so none is skipped).
pub const PACKED_SHAPES: [(u64, u64, u64); 5] = [
    (1, 3, 128),
    (2, 5, 256),
    (1, 4, 400),
    (5, 3, 1000),
    (7, 2, 4096),
];

/// i8 kernels whose CPU schedule decodes whole 64-unit blocks (`dot_packed`): 1 and 2
/// fields per unit, byte and stream storage, groups of 128, 256 and 1024 (a loop of
/// blocks rather than unrolled ones) and none.
pub fn packed_block_kernels() -> Vec<Kernel> {
    let layouts = [
        "layout L = { hi: s4 @ 6..3, lo: s3 @ 2..0 } stream;",
        "layout L = { hi: s4 @ 6..3, lo: s3 @ 2..0 };",
        "layout L = { hi: s4 @ 7..4, lo: u4 @ 3..0 };",
        "layout L = { v: s3 @ 2..0 } stream;",
        "layout L = { v: u5 @ 4..0 } stream;",
        "layout L = { v: s8 @ 7..0 };",
    ];
    let mut out = Vec::new();
    for l in layouts {
        for g in [Some(128), Some(256), Some(1024), None] {
            let (ws, term) = match g {
                Some(g) => (
                    format!(", ws: f16[N, K / {g}]"),
                    format!(" * ws[n, k / {g}]"),
                ),
                None => (String::new(), String::new()),
            };
            let out_ty = if g.is_some() { "f32" } else { "i32" };
            let src = format!(
                "{l}\nkernel packed(x: i8[M, K], w: L[N, K]{ws}) -> y: {out_ty}[M, N] {{\n    \
                 where M <= 8, K <= 4096;\n    y[m, n] = sum(k) x[m, k] * w[n, k]{term};\n}}\n"
            );
            let prog = qkc_dsl::compile("packed.qk", &src)
                .unwrap_or_else(|e| panic!("{src}\n{}", miette_free(&e)));
            out.extend(prog.kernels);
        }
    }
    out
}
