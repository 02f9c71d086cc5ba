//! The Cranelift JIT and the CPU runtime against the reference interpreter and the
//! loop-IR interpreter.
//!
//! - **Kernels**: `.qk` sources generated here over every built-in layout plus an
//!   explicit mixed-sign bit-range pair, every activation type, group sizes (none,
//!   2/4, 32, 128 where the layout allows), every output type, with odd shapes (K not
//!   a multiple of any chunk), `tile_m` 1/3/4, SIMD on/off, 1/2/3 threads, chunked
//!   unpack on/off. Tolerances (against the exact f64 reference, `u = 2⁻²⁴`):
//!   - `i32` outputs: exact;
//!   - float outputs with integer accumulation (i8 activations):
//!     `|err| ≤ (G + 4)·u·Σ|terms| + 1 ulp(out)` — the integer partial sums are exact,
//!     each of the `G` group partials and the scale products round once in f32;
//!   - float accumulation: `|err| ≤ (T + G + 4)·u·Σ|terms| + 1 ulp(out)` with `T` the
//!     terms of one group's f32 sum (the textbook bound for recursive summation);
//!   - the `1 ulp(out)` covers the final rounding to f16/bf16/f32 on both sides.
//!
//!   Integer paths are also checked bit for bit between SIMD and scalar code, and the
//!   scalar JIT bit for bit against the loop-IR interpreter (it follows it op by op).
//! - **Operations**: hand-built loop-IR functions for every operation, compared bit
//!   for bit with the loop-IR interpreter on edge values (shifts past the width,
//!   `MIN / -1`, NaN, saturating casts, every f16/bf16 bit pattern, byte loads at
//!   the very end of a buffer under bounds checks).
//! - **Errors**: wrong buffer length/type/count, dimensions over their bound or zero,
//!   division by zero, out-of-bounds accesses under bounds checks, GPU-only
//!   operations: each is an `Err` naming what is wrong, never a panic or a crash.

use half::{bf16, f16};
use qkc::codegen::cranelift::{compile, CraneliftError, CraneliftOptions};
use qkc::codegen::loop_ir::build::*;
use qkc::codegen::loop_ir::{
    eval, BinOp, Buf, CmpOp, Elem, Expr, Func, Launch, LoopKind, Stmt, Ty, Var,
};
use qkc::codegen::lower;
use qkc::dsl::host::{random_inputs, HostBuf, Rng};
use qkc::dsl::interp;
use qkc::dsl::ir::{Dims, Kernel, Scalar};
use qkc::runtime::cpu::{compare_with_reference, CpuError, CpuKernel, CpuOptions};

mod gpu_common;

const U: f64 = 1.0 / (1u64 << 24) as f64;

// ------------------------------------------------------------------ kernels

/// (name in sources, weights per unit, declaration if not built in)
const LAYOUTS: &[(&str, usize, Option<&str>)] = &[
    ("s2", 1, None),
    ("s3", 1, None),
    ("s4", 1, None),
    ("u4", 1, None),
    ("s8", 1, None),
    ("q3p5", 2, None),
    ("q3p5b", 2, None),
    (
        "mix",
        2,
        Some("layout mix = { lo: u3 @ 2..0, hi: s5 @ 7..3 } byte;\n"),
    ),
];

const ACTS: [&str; 4] = ["i8", "f16", "bf16", "f32"];

/// Shapes (M, N, K): K is never a multiple of every chunk.
const SHAPES: &[(u64, u64, u64)] = &[
    (1, 1, 2),
    (3, 17, 33),
    (2, 5, 129),
    (9, 3, 250),
    (4, 6, 64),
    (1, 9, 256),
    (7, 2, 130),
    (6, 4, 45),
    (8, 3, 17),
];

struct Spec {
    layout: usize,
    act: &'static str,
    group: Option<u32>,
    out: &'static str,
    /// `where K <= 4096` (an i32 accumulator without groups; otherwise widened to i64).
    k_bound: bool,
    /// Scale variant (which scale tensors and element types).
    scales: u64,
}

fn source(s: &Spec) -> String {
    let (lname, _, decl) = LAYOUTS[s.layout];
    let mut params = vec![format!("x: {}[M, K]", s.act), format!("w: {lname}[N, K]")];
    let mut factors = vec!["x[m, k]".to_string(), "w[n, k]".to_string()];
    if s.out != "i32" {
        let sty = ["f16", "bf16", "f32"][(s.scales % 3) as usize];
        if let Some(g) = s.group {
            params.push(format!("ws: {sty}[N, K / {g}]"));
            factors.push(format!("ws[n, k / {g}]"));
            if s.scales % 4 == 1 {
                params.push(format!("xg: f32[M, K / {g}]"));
                factors.push(format!("xg[m, k / {g}]"));
            }
        } else if s.scales.is_multiple_of(2) {
            params.push(format!("wc: {sty}[N]"));
            factors.push("wc[n]".into());
        }
        if s.act == "i8" || s.scales % 5 == 2 {
            params.push("xs: f32[M]".into());
            factors.push("xs[m]".into());
        }
    }
    let bound = if s.k_bound || s.out == "i32" {
        "    where K <= 4096;\n"
    } else {
        ""
    };
    format!(
        "{}kernel t({}) -> y: {}[M, N] {{\n{bound}    y[m, n] = sum(k) {};\n}}\n",
        decl.unwrap_or(""),
        params.join(", "),
        s.out,
        factors.join(" * ")
    )
}

fn kernel_of(src: &str) -> Kernel {
    let prog = qkc::dsl::compile("t.qk", src).unwrap_or_else(|d| panic!("{src}\n{d:?}"));
    prog.kernels.into_iter().next().expect("one kernel")
}

fn dims_of(k: &Kernel, (m, n, kk): (u64, u64, u64)) -> Dims {
    let mut values = vec![0; k.dims.len()];
    values[k.m] = m;
    values[k.n] = n;
    values[k.k] = kk;
    Dims { values }
}

fn ulp(ty: Scalar, x: f64) -> f64 {
    let (mant, min_exp) = match ty {
        Scalar::F16 => (10, -14),
        Scalar::BF16 => (7, -126),
        Scalar::F32 => (23, -126),
        _ => return 0.0,
    };
    let e = if x == 0.0 {
        min_exp
    } else {
        (x.abs().log2().floor() as i32).max(min_exp)
    };
    2f64.powi(e - mant)
}

/// Checks `got` against the reference with the tolerances of the module docs.
fn assert_matches_reference(k: &Kernel, dims: &Dims, inputs: &[HostBuf], got: &HostBuf, ctx: &str) {
    if k.out_ty() == Scalar::I32 {
        let want = interp::run(k, dims, inputs).unwrap();
        assert_eq!(got, &want, "{ctx}: i32 output differs");
        return;
    }
    let want = interp::run_f64(k, dims, inputs).unwrap();
    let mag = interp::magnitude(k, dims, inputs).unwrap();
    let kk = dims.values[k.k];
    let g = k.group.map(u64::from).unwrap_or(kk);
    let groups = kk.div_ceil(g) as f64;
    let terms = if k.is_int() { 0.0 } else { g.min(kk) as f64 };
    let got = got.to_f64();
    assert_eq!(got.len(), want.len(), "{ctx}: output length");
    assert!(mag.iter().any(|&m| m > 0.0), "{ctx}: all-zero test data");
    for i in 0..got.len() {
        let tol = (terms + groups + 4.0) * U * mag[i] + ulp(k.out_ty(), want[i]);
        let err = (got[i] - want[i]).abs();
        assert!(
            err <= tol,
            "{ctx}: y[{i}] = {} vs exact {} (err {err:e} > tol {tol:e}, Σ|terms| {})",
            got[i],
            want[i],
            mag[i]
        );
    }
}

/// Random inputs whose products are not all zero (tiny shapes with 2-bit codes can
/// draw only zero codes).
fn nonzero_inputs(k: &Kernel, dims: &Dims, seed: u64) -> Vec<HostBuf> {
    for s in seed..seed + 100 {
        let inputs = random_inputs(k, dims, s);
        if interp::magnitude(k, dims, &inputs)
            .unwrap()
            .iter()
            .any(|&m| m > 0.0)
        {
            return inputs;
        }
    }
    panic!("no nonzero inputs for {}", k.name);
}

/// Options with an exact tile (no smaller tiles for small M, so `tile_m > M` is run).
fn opts(tile_m: u32, chunked: bool, simd: bool, threads: usize, bounds_checks: bool) -> CpuOptions {
    CpuOptions {
        lower: lower::CpuOptions {
            tile_m,
            chunked_unpack: chunked,
            packed_dot: false,
        },
        jit: CraneliftOptions {
            simd,
            bounds_checks,
            ..CraneliftOptions::default()
        },
        threads,
        adapt_tile: false,
    }
}

/// Runs the lowered function in the loop-IR interpreter: the raw output bytes.
fn eval_output(f: &Func, dims: &Dims, inputs: &[HostBuf], out_bytes: usize) -> Vec<u8> {
    let mut bufs: Vec<Vec<u8>> = inputs.iter().map(|b| b.as_bytes()).collect();
    bufs.push(vec![0xAB; out_bytes]);
    let d: Vec<i64> = dims.values.iter().map(|&v| v as i64).collect();
    eval::run(f, &mut bufs, &d).unwrap_or_else(|e| panic!("loop-IR interpreter: {e}"));
    bufs.pop().unwrap()
}

#[test]
fn jit_matches_reference_on_generated_kernels() {
    let mut rng = Rng::new(2024);
    let mut runs = 0;
    let mut simd_runs = 0;
    let mut kernels = 0;
    for (layout, &(_, per_unit, _)) in LAYOUTS.iter().enumerate() {
        for act in ACTS {
            let small = if rng.next_u64().is_multiple_of(2) {
                2
            } else {
                4
            };
            for group in [None, Some(small), Some(32), Some(128)] {
                if group.is_some_and(|g| !(g as usize).is_multiple_of(per_unit)) {
                    continue;
                }
                let mut outs = vec!["f32", "f16", "bf16"];
                if act == "i8" && group.is_none() {
                    outs.push("i32");
                }
                for out in outs {
                    let spec = Spec {
                        layout,
                        act,
                        group,
                        out,
                        k_bound: rng.next_u64().is_multiple_of(2),
                        scales: rng.next_u64() % 60,
                    };
                    let src = source(&spec);
                    let k = kernel_of(&src);
                    kernels += 1;
                    // Two configurations per kernel; the first on a small shape is also
                    // checked against the loop-IR interpreter and the other code path.
                    for cfg in 0..2 {
                        let shape = if cfg == 0 {
                            SHAPES[(rng.next_u64() % 3) as usize]
                        } else {
                            SHAPES[(rng.next_u64() % SHAPES.len() as u64) as usize]
                        };
                        let tile_m = [1, 4, 3][(rng.next_u64() % 3) as usize];
                        let simd = !rng.next_u64().is_multiple_of(4);
                        let threads = 1 + (rng.next_u64() % 2) as usize;
                        let chunked = !rng.next_u64().is_multiple_of(8);
                        let mut o = opts(tile_m, chunked, simd, threads, false);
                        o.adapt_tile = cfg == 1;
                        let ctx = format!(
                            "{src}shape {shape:?} tile_m {tile_m} simd {simd} threads {threads} chunked {chunked}"
                        );
                        let cpu = CpuKernel::new(&k, &o).unwrap_or_else(|e| panic!("{ctx}: {e}"));
                        let dims = dims_of(&k, shape);
                        let inputs = nonzero_inputs(&k, &dims, rng.next_u64());
                        let got = cpu
                            .run(&dims, &inputs)
                            .unwrap_or_else(|e| panic!("{ctx}: {e}"));
                        assert_matches_reference(&k, &dims, &inputs, &got, &ctx);
                        runs += 1;
                        simd_runs += simd as usize;
                        if cfg == 0 {
                            // The other code path (SIMD <-> scalar), bounds-checked.
                            let o2 = opts(tile_m, chunked, !simd, 3 - threads, true);
                            let other = CpuKernel::new(&k, &o2)
                                .unwrap()
                                .run(&dims, &inputs)
                                .unwrap();
                            if act == "i8" {
                                assert_eq!(
                                    got.as_bytes(),
                                    other.as_bytes(),
                                    "{ctx}: SIMD and scalar differ"
                                );
                            } else {
                                assert_matches_reference(&k, &dims, &inputs, &other, &ctx);
                            }
                            let scalar = if simd { &other } else { &got };
                            let ev = eval_output(
                                cpu.func_for(shape.0),
                                &dims,
                                &inputs,
                                got.as_bytes().len(),
                            );
                            assert_eq!(
                                scalar.as_bytes(),
                                ev,
                                "{ctx}: scalar JIT differs from the loop-IR interpreter"
                            );
                        }
                    }
                }
            }
        }
    }
    assert!(kernels > 300, "{kernels} kernels");
    assert!(
        runs > 600 && simd_runs > 300,
        "{runs} runs, {simd_runs} with SIMD"
    );
}

/// The bundled examples, every option combination, shapes past every chunk, under
/// compiled-in bounds checks (a lowering that strays outside a buffer fails here).
#[test]
fn bundled_examples_under_bounds_checks() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/kernels");
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "qk"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 5);
    let shapes: &[(u64, u64, u64)] = &[(1, 1, 2), (3, 17, 33), (8, 5, 257), (1, 7, 1000)];
    for p in paths {
        let src = std::fs::read_to_string(&p).unwrap();
        let prog = qkc::dsl::compile(&p.display().to_string(), &src).unwrap();
        for k in &prog.kernels {
            for (i, &shape) in shapes.iter().enumerate() {
                if shape.0 > k.dims[k.m].max {
                    continue;
                }
                let dims = dims_of(k, shape);
                let inputs = nonzero_inputs(k, &dims, 7 + i as u64);
                let mut first: Option<HostBuf> = None;
                for (simd, tile_m, threads, adapt) in [
                    (true, 4, 2, true),
                    (false, 1, 1, false),
                    (true, 1, 3, false),
                    (false, 4, 2, true),
                    (true, 4, 1, false),
                ] {
                    let mut o = opts(tile_m, true, simd, threads, true);
                    o.adapt_tile = adapt;
                    let ctx = format!(
                        "{} {shape:?} simd {simd} tile_m {tile_m} threads {threads} adapt {adapt}",
                        k.name
                    );
                    let got = CpuKernel::new(k, &o)
                        .unwrap()
                        .run(&dims, &inputs)
                        .unwrap_or_else(|e| panic!("{ctx}: {e}"));
                    assert_matches_reference(k, &dims, &inputs, &got, &ctx);
                    let c = compare_with_reference(k, &dims, &inputs, &got).unwrap();
                    assert!(c.passed(), "{ctx}: {c:?}");
                    if k.is_int() {
                        if let Some(f) = &first {
                            assert_eq!(
                                f.as_bytes(),
                                got.as_bytes(),
                                "{ctx}: integer paths must agree bit for bit"
                            );
                        }
                        first = Some(got);
                    }
                }
            }
        }
    }
}

#[test]
fn comparison_detects_a_wrong_output() {
    let src = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/kernels/gemv_w3p5.qk"
    ))
    .unwrap();
    let k = kernel_of(&src);
    let dims = dims_of(&k, (2, 8, 300));
    let inputs = nonzero_inputs(&k, &dims, 5);
    let cpu = CpuKernel::new(&k, &CpuOptions::for_kernel(&k)).unwrap();
    let got = cpu.run(&dims, &inputs).unwrap();
    assert!(compare_with_reference(&k, &dims, &inputs, &got)
        .unwrap()
        .passed());
    let HostBuf::F32(mut v) = got else {
        panic!("f32 output")
    };
    v[3] += 1e-3 * v[3].abs().max(1.0);
    let c = compare_with_reference(&k, &dims, &inputs, &HostBuf::F32(v)).unwrap();
    assert_eq!(c.failures, 1, "{c:?}");
    assert_eq!(c.worst, 3);
}

// --------------------------------------------------------------- errors

fn err_text(e: CpuError) -> String {
    e.to_string()
}

#[test]
fn bad_inputs_are_errors_naming_the_tensor() {
    let src =
        "kernel e(x: i8[M, K], xs: f32[M], w: q3p5[N, K], ws: f16[N, K / 32]) -> y: f32[M, N] {\n\
               where M <= 8;\n\
               y[m, n] = sum(k) x[m, k] * w[n, k] * ws[n, k / 32] * xs[m];\n}\n";
    let k = kernel_of(src);
    let cpu = CpuKernel::new(&k, &opts(4, true, true, 2, false)).unwrap();
    let dims = dims_of(&k, (3, 5, 70));
    let good = random_inputs(&k, &dims, 1);
    assert!(cpu.run(&dims, &good).is_ok());

    // Wrong length, for every input.
    for i in 0..good.len() {
        let mut bad = good.clone();
        bad[i] = match &bad[i] {
            HostBuf::I8(v) => HostBuf::I8(v[1..].to_vec()),
            HostBuf::F32(v) => HostBuf::F32([v.as_slice(), &[1.0]].concat()),
            HostBuf::F16(v) => HostBuf::F16(v[..v.len() - 1].to_vec()),
            HostBuf::Packed(v) => HostBuf::Packed(v[..v.len() - 1].to_vec()),
            other => panic!("unexpected {other:?}"),
        };
        let name = &k.inputs[i].tensor.name;
        let e = err_text(cpu.run(&dims, &bad).unwrap_err());
        assert!(e.contains(&format!("`{name}`")), "length of {name}: {e}");
    }
    // Wrong type.
    let mut bad = good.clone();
    bad[3] = HostBuf::F32(vec![1.0; good[3].len()]);
    let e = err_text(cpu.run(&dims, &bad).unwrap_err());
    assert!(e.contains("`ws`") && e.contains("f16"), "{e}");
    let mut bad = good.clone();
    bad[0] = HostBuf::Packed(vec![1; good[0].len()]);
    let e = err_text(cpu.run(&dims, &bad).unwrap_err());
    assert!(e.contains("`x`"), "{e}");
    // Wrong count.
    let e = err_text(cpu.run(&dims, &good[..3]).unwrap_err());
    assert!(
        e.contains("4 input buffers") && e.contains("3 given"),
        "{e}"
    );
    let mut more = good.clone();
    more.push(HostBuf::F32(vec![1.0]));
    assert!(cpu.run(&dims, &more).is_err());
    // Dimensions over the declared bound, zero, or missing.
    let over = dims_of(&k, (9, 5, 70));
    let e = err_text(cpu.run(&over, &good).unwrap_err());
    assert!(e.contains("M = 9") && e.contains("8"), "{e}");
    let zero = dims_of(&k, (3, 0, 70));
    assert!(err_text(cpu.run(&zero, &good).unwrap_err()).contains("N = 0"));
    let short = Dims { values: vec![3, 5] };
    assert!(cpu.run(&short, &good).is_err());
    // Dims that disagree with the buffers.
    let other = dims_of(&k, (3, 5, 71));
    let e = err_text(cpu.run(&other, &good).unwrap_err());
    assert!(e.contains("`x`"), "{e}");
    // A wrong output buffer for run_into.
    let mut out = HostBuf::F32(vec![0.0; 14]);
    let e = err_text(cpu.run_into(&dims, &good, &mut out).unwrap_err());
    assert!(e.contains("`y`"), "{e}");
    let mut out = HostBuf::F16(vec![f16::ZERO; 15]);
    assert!(err_text(cpu.run_into(&dims, &good, &mut out).unwrap_err()).contains("`y`"));
    let mut out = cpu.output_for(&dims).unwrap();
    cpu.run_into(&dims, &good, &mut out).unwrap();
    assert_eq!(out, cpu.run(&dims, &good).unwrap());
}

// ------------------------------------------------------ operation-level tests

/// A CPU function with buffers `(name, elem)` (the last is the output) and dims.
fn func(bufs: &[(&str, Elem)], dims: &[&str]) -> Func {
    let n = bufs.len();
    Func::new(
        "t",
        bufs.iter()
            .enumerate()
            .map(|(i, (name, elem))| Buf {
                name: name.to_string(),
                elem: *elem,
                output: i == n - 1,
            })
            .collect(),
        dims.iter().map(|s| s.to_string()).collect(),
        Launch::Cpu,
    )
}

fn checked() -> CraneliftOptions {
    CraneliftOptions {
        bounds_checks: true,
        ..CraneliftOptions::default()
    }
}

/// Runs `f` natively: the buffers after the call.
fn jit(
    f: &Func,
    bufs: &[Vec<u8>],
    dims: &[i64],
    o: &CraneliftOptions,
) -> Result<Vec<Vec<u8>>, CraneliftError> {
    let c = compile(f, o)?;
    let mut b = bufs.to_vec();
    let lens: Vec<i64> = b.iter().map(|x| x.len() as i64).collect();
    let ptrs: Vec<*mut u8> = b.iter_mut().map(|x| x.as_mut_ptr()).collect();
    // SAFETY: test functions only access their buffers (checked: bounds checks are on
    // whenever a test could stray outside them).
    unsafe { c.call(&ptrs, &lens, dims, 0, i64::MAX)? };
    Ok(b)
}

fn interp_run(f: &Func, bufs: &[Vec<u8>], dims: &[i64]) -> Result<Vec<Vec<u8>>, eval::EvalError> {
    let mut b = bufs.to_vec();
    eval::run(f, &mut b, dims)?;
    Ok(b)
}

/// Asserts that the JIT (with and without the optimizer and SIMD) and the loop-IR
/// interpreter leave identical output bytes (NaNs compared as NaN for f32 outputs).
fn assert_same(f: &Func, bufs: &[Vec<u8>], dims: &[i64], what: &str) -> Vec<u8> {
    let want =
        interp_run(f, bufs, dims).unwrap_or_else(|e| panic!("{what}: interpreter: {e}\n{f}"));
    let want = want.last().unwrap().clone();
    for o in [
        checked(),
        CraneliftOptions::default(),
        CraneliftOptions {
            optimize: false,
            simd: false,
            bounds_checks: true,
            keep_text: false,
        },
    ] {
        let got = jit(f, bufs, dims, &o).unwrap_or_else(|e| panic!("{what} {o:?}: {e}\n{f}"));
        let got = got.last().unwrap();
        if f.bufs.last().unwrap().elem == Elem::F32 {
            gpu_common::assert_f32_bits_match(got, &want, &format!("{what} {o:?}"));
        } else {
            assert_eq!(got, &want, "{what} {o:?}");
        }
    }
    want
}

fn i32_bytes(v: &[i32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

const INT_EDGES: [i32; 14] = [
    0,
    1,
    -1,
    2,
    7,
    31,
    32,
    33,
    63,
    64,
    -64,
    i32::MIN,
    i32::MAX,
    -2,
];

fn int_data(rng: &mut Rng, n: usize) -> Vec<i32> {
    let mut v: Vec<i32> = INT_EDGES.to_vec();
    while v.len() < n {
        v.push(rng.next_u64() as i32 >> (rng.next_u64() % 32));
    }
    v
}

/// A serial loop `for i in 0..D0 { body }` with `i: I64`.
fn over_i(f: &mut Func, body: impl FnOnce(&mut Func, Var) -> Vec<Stmt>) {
    let i = f.var("i", Ty::I64);
    let b = body(f, i);
    f.body.push(Stmt::For {
        var: i,
        start: i64c(0),
        end: dim(0),
        step: 1,
        kind: LoopKind::Serial,
        body: b,
    });
}

#[test]
fn integer_operations_match_the_interpreter() {
    let mut rng = Rng::new(11);
    let n = 48usize;
    let a = int_data(&mut rng, n);
    let mut b = int_data(&mut rng, n);
    b.rotate_left(5);
    let ah: Vec<i32> = (0..n)
        .map(|i| a[(i * 7) % n] ^ (i as i32 * 0x1234567))
        .collect();
    let ops = [
        BinOp::Add,
        BinOp::Sub,
        BinOp::Mul,
        BinOp::Div,
        BinOp::Rem,
        BinOp::Min,
        BinOp::Max,
        BinOp::And,
        BinOp::Or,
        BinOp::Xor,
        BinOp::Shl,
        BinOp::Sar,
        BinOp::Shr,
    ];
    // Divisors without zero (division by zero is tested separately).
    let b_nz: Vec<i32> = b.iter().map(|&x| if x == 0 { -1 } else { x }).collect();
    for ty in [Ty::I32, Ty::I64] {
        for op in ops {
            let mut f = func(
                &[
                    ("a", Elem::I32),
                    ("ah", Elem::I32),
                    ("b", Elem::I32),
                    ("y", Elem::I32),
                ],
                &["n"],
            );
            over_i(&mut f, |_, i| {
                let val = |buf: usize| -> Expr {
                    match ty {
                        Ty::I32 => load(buf, var(i)),
                        _ => bin(
                            BinOp::Or,
                            bin(BinOp::Shl, cast(Ty::I64, load(1, var(i))), i64c(32)),
                            bin(
                                BinOp::And,
                                cast(Ty::I64, load(buf, var(i))),
                                i64c(0xffff_ffff),
                            ),
                        ),
                    }
                };
                let r = bin(op, val(0), val(2));
                let hi = match ty {
                    Ty::I32 => r.clone(),
                    _ => cast(Ty::I32, bin(BinOp::Sar, r.clone(), i64c(32))),
                };
                vec![
                    Stmt::Store {
                        buf: 3,
                        index: mul(var(i), i64c(2)),
                        value: cast(Ty::I32, r),
                    },
                    Stmt::Store {
                        buf: 3,
                        index: add(mul(var(i), i64c(2)), i64c(1)),
                        value: hi,
                    },
                ]
            });
            let bb = if matches!(op, BinOp::Div | BinOp::Rem) {
                &b_nz
            } else {
                &b
            };
            let bufs = vec![i32_bytes(&a), i32_bytes(&ah), i32_bytes(bb), vec![0; 8 * n]];
            let out = assert_same(&f, &bufs, &[n as i64], &format!("{ty:?} {op:?}"));
            assert!(out.iter().any(|&x| x != 0));
        }
        // Constant divisors (strength-reduced by Cranelift) including -1 and MIN.
        for c in [1i64, -1, 2, 3, 16, -16, 7, 1 << 20, i32::MIN as i64] {
            for op in [BinOp::Div, BinOp::Rem] {
                let mut f = func(&[("a", Elem::I32), ("y", Elem::I32)], &["n"]);
                over_i(&mut f, |_, i| {
                    let x = match ty {
                        Ty::I32 => load(0, var(i)),
                        _ => mul(cast(Ty::I64, load(0, var(i))), i64c(3)),
                    };
                    vec![Stmt::Store {
                        buf: 1,
                        index: var(i),
                        value: cast(Ty::I32, bin(op, x, Expr::Int(c, ty))),
                    }]
                });
                assert_same(
                    &f,
                    &[i32_bytes(&a), vec![0; 4 * n]],
                    &[n as i64],
                    &format!("{ty:?} {op:?} {c}"),
                );
            }
        }
    }
}

#[test]
fn comparisons_selects_casts_and_dot4_match_the_interpreter() {
    let mut rng = Rng::new(12);
    let n = 40usize;
    let a = int_data(&mut rng, n);
    let mut b = int_data(&mut rng, n);
    b.rotate_left(3);
    let fa: Vec<f32> = vec![
        0.0,
        -0.0,
        1.0,
        -1.5,
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        1e-40,
        -3e38,
        3e38,
        2.5,
        -2.5,
        1e10,
        -1e19,
        9.3e18,
        4294967296.5,
        2147483648.0,
        -2147483649.0,
        0.49999997,
        16777217.0,
    ]
    .into_iter()
    .chain((0..20).map(|_| rng.range_f32(-1e6, 1e6)))
    .collect();
    let mut fb = fa.clone();
    fb.rotate_left(7);
    for op in [CmpOp::Lt, CmpOp::Le, CmpOp::Eq, CmpOp::Ne] {
        for ty in [Ty::I32, Ty::I64, Ty::F32] {
            let mut f = func(
                &[
                    ("a", Elem::I32),
                    ("b", Elem::I32),
                    ("fa", Elem::F32),
                    ("fb", Elem::F32),
                    ("y", Elem::I32),
                ],
                &["n"],
            );
            over_i(&mut f, |_, i| {
                let (x, y) = match ty {
                    Ty::I32 => (load(0, var(i)), load(1, var(i))),
                    Ty::I64 => (
                        mul(cast(Ty::I64, load(0, var(i))), i64c(1 << 33)),
                        mul(cast(Ty::I64, load(1, var(i))), i64c(1 << 33)),
                    ),
                    Ty::F32 => (load(2, var(i)), load(3, var(i))),
                };
                vec![Stmt::Store {
                    buf: 4,
                    index: var(i),
                    value: Expr::Select(
                        Box::new(cmp(op, x, y)),
                        Box::new(add(load(0, var(i)), i32c(5))),
                        Box::new(i32c(-9)),
                    ),
                }]
            });
            let bufs = vec![
                i32_bytes(&a),
                i32_bytes(&b),
                f32_bytes(&fa),
                f32_bytes(&fb),
                vec![0; 4 * n],
            ];
            assert_same(&f, &bufs, &[n as i64], &format!("cmp {op:?} {ty:?}"));
        }
    }
    // Float arithmetic, min/max with NaN, and casts both ways.
    for (k, what) in [
        "add",
        "sub",
        "mul",
        "div",
        "min",
        "max",
        "and",
        "i2f",
        "l2f",
        "f2i",
        "f2l",
        "neg0",
        "from_bits",
        "f16_bits",
        "f16_bits_hi",
    ]
    .iter()
    .enumerate()
    {
        let mut f = func(
            &[
                ("fa", Elem::F32),
                ("fb", Elem::F32),
                ("a", Elem::I32),
                ("y", Elem::F32),
            ],
            &["n"],
        );
        over_i(&mut f, |_, i| {
            let (x, y) = (load(0, var(i)), load(1, var(i)));
            let v = match k {
                0 => add(x, y),
                1 => sub(x, y),
                2 => mul(x, y),
                3 => div(x, y),
                4 => bin(BinOp::Min, x, y),
                5 => bin(BinOp::Max, x, y),
                6 => bin(BinOp::And, x, y),
                7 => cast(Ty::F32, load(2, var(i))),
                8 => cast(
                    Ty::F32,
                    mul(cast(Ty::I64, load(2, var(i))), i64c(0x1_0000_0001)),
                ),
                9 => cast(Ty::F32, cast(Ty::I32, mul(x, f32c(1000.0)))),
                10 => cast(Ty::F32, bin(BinOp::Sar, cast(Ty::I64, x), i64c(20))),
                11 => mul(x, f32c(-0.0)),
                // Bit reinterpretation and f16 widening (the GPU float decode's ops).
                12 => Expr::FromBits(Box::new(load(2, var(i)))),
                13 => Expr::F16ToF32(Box::new(load(2, var(i)))),
                _ => Expr::F16ToF32(Box::new(bin(BinOp::Shr, load(2, var(i)), i32c(16)))),
            };
            vec![Stmt::Store {
                buf: 3,
                index: var(i),
                value: v,
            }]
        });
        let bufs = vec![
            f32_bytes(&fa),
            f32_bytes(&fb),
            i32_bytes(&a),
            vec![0; 4 * n],
        ];
        assert_same(&f, &bufs, &[n as i64], what);
    }
    // Two i32 inputs, one i32 output: `y[i] = value(i)`, run by every backend.
    let two_ints = |what: &str, value: &dyn Fn(Var) -> Expr| -> Vec<u8> {
        let mut f = func(
            &[("a", Elem::I32), ("b", Elem::I32), ("y", Elem::I32)],
            &["n"],
        );
        over_i(&mut f, |_, i| {
            vec![Stmt::Store {
                buf: 2,
                index: var(i),
                value: value(i),
            }]
        });
        let bufs = [i32_bytes(&a), i32_bytes(&b), vec![0; 4 * n]];
        assert_same(&f, &bufs, &[n as i64], what)
    };
    // dp4a.
    let out = two_ints("dot4", &|i| Expr::Dot4 {
        a: Box::new(load(0, var(i))),
        b: Box::new(load(1, var(i))),
        acc: Box::new(load(0, sub(i64c(n as i64 - 1), var(i)))),
    });
    assert!(out.iter().any(|&x| x != 0));
    // prmt-style byte permutations (the GPU spread decode's activation pairing).
    for sel in [0x6420u16, 0x7531, 0x3715, 0x0000] {
        let out = two_ints("byte_perm", &|i| Expr::BytePerm {
            a: Box::new(load(0, var(i))),
            b: Box::new(load(1, var(i))),
            sel,
        });
        for (j, c) in out.chunks(4).enumerate() {
            let got = u32::from_le_bytes(c.try_into().unwrap());
            let src = (a[j] as u32 as u64) | (b[j] as u32 as u64) << 32;
            let want = (0..4).fold(0u32, |r, i| {
                let from = (sel >> (4 * i)) & 7;
                r | ((src >> (8 * from)) as u32 & 0xff) << (8 * i)
            });
            assert_eq!(got, want, "byte_perm {sel:#x} lane {j}");
        }
    }
}

#[test]
fn every_f16_and_bf16_pattern_loads_exactly() {
    for elem in [Elem::F16, Elem::BF16] {
        let mut f = func(&[("x", elem), ("y", Elem::F32)], &["n"]);
        over_i(&mut f, |_, i| {
            vec![Stmt::Store {
                buf: 1,
                index: var(i),
                value: load(0, var(i)),
            }]
        });
        let bits: Vec<u8> = (0..=u16::MAX).flat_map(|h| h.to_le_bytes()).collect();
        let out = jit(&f, &[bits, vec![0; 4 * 65536]], &[65536], &checked()).unwrap();
        for (h, c) in out[1].chunks(4).enumerate() {
            let got = u32::from_le_bytes(c.try_into().unwrap());
            let want = match elem {
                Elem::F16 => f16::from_bits(h as u16).to_f32().to_bits(),
                _ => bf16::from_bits(h as u16).to_f32().to_bits(),
            };
            assert_eq!(got, want, "{elem:?} {h:#06x}");
        }
    }
    // The vector f16/bf16 conversions (f32 dot runs with one nonzero code), again on
    // every bit pattern: the result is the converted activation plus zeros.
    let all: Vec<u16> = (0..=u16::MAX).collect();
    for elem in [Elem::F16, Elem::BF16] {
        let (f, bufs, n) = dot_run_func(elem, &all);
        let got = jit(&f, &bufs, &[n], &checked()).unwrap();
        let g = got.last().unwrap();
        for (h, c) in g.chunks(4).enumerate() {
            let got = f32::from_le_bytes(c.try_into().unwrap());
            let want = match elem {
                Elem::F16 => f16::from_bits(h as u16).to_f32(),
                _ => bf16::from_bits(h as u16).to_f32(),
            } + 0.0;
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "{elem:?} {h:#06x}: {got:e} vs {want:e}"
            );
        }
    }
}

/// `y[i] = dot(x[8i..8i+8], codes, 0.0)` with codes `[1, 0, 0, 0, 0, 0, 0, 0]` decoded
/// from a constant word, so each output is exactly the converted activation.
fn dot_run_func(elem: Elem, acts: &[u16]) -> (Func, Vec<Vec<u8>>, i64) {
    let mut f = func(&[("x", elem), ("y", Elem::F32)], &["n"]);
    over_i(&mut f, |f, i| {
        let word = f.var("word", Ty::I64);
        let mut body = vec![Stmt::Let(word, i64c(1))];
        let mut codes = Vec::new();
        for j in 0..8 {
            let c = f.var(format!("c{j}"), Ty::I32);
            body.push(Stmt::Let(
                c,
                cast(Ty::I32, bfe(var(word), 8 * j as u8, 8, true)),
            ));
            codes.push(c);
        }
        body.push(Stmt::Store {
            buf: 1,
            index: var(i),
            value: Expr::DotRun {
                buf: 0,
                index: Box::new(mul(var(i), i64c(8))),
                codes,
                acc: Box::new(f32c(0.0)),
            },
        });
        body
    });
    let mut x = Vec::new();
    for &h in acts {
        x.extend(h.to_le_bytes());
        x.extend([0x11u8, 0x3c].repeat(7));
    }
    (f, vec![x, vec![0; 4 * acts.len()]], acts.len() as i64)
}

#[test]
fn f16_and_bf16_stores_round_to_nearest_even() {
    let mut rng = Rng::new(13);
    let mut vals: Vec<f32> = vec![
        0.0,
        -0.0,
        1.0,
        65504.0,
        65519.99,
        65520.0,
        1e9,
        -1e9,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::from_bits(0x7f80_0001),
        5.96e-8,
        2.98e-8,
        2.99e-8,
        1e-10,
        6.1e-5,
        1.0 + 1.0 / 1024.0,
        1.0 + 1.0 / 2048.0, // a tie: to even
        1.0 + 3.0 / 2048.0, // a tie: to even (up)
        3.4e38,
        f32::from_bits(0x3f80_8000),
        f32::from_bits(0x3f81_8000),
        f32::from_bits(0x0000_0001),
    ];
    vals.extend((0..200).map(|_| f32::from_bits(rng.next_u64() as u32)));
    let n = vals.len();
    for elem in [Elem::F16, Elem::BF16] {
        let mut f = func(&[("x", Elem::F32), ("y", elem)], &["n"]);
        over_i(&mut f, |_, i| {
            vec![Stmt::Store {
                buf: 1,
                index: var(i),
                value: load(0, var(i)),
            }]
        });
        let out = jit(
            &f,
            &[f32_bytes(&vals), vec![0; 2 * n]],
            &[n as i64],
            &checked(),
        )
        .unwrap();
        for (i, c) in out[1].chunks(2).enumerate() {
            let got = u16::from_le_bytes([c[0], c[1]]);
            let want = match elem {
                Elem::F16 => f16::from_f32(vals[i]).to_bits(),
                _ => bf16::from_f32(vals[i]).to_bits(),
            };
            assert_eq!(
                got,
                want,
                "{elem:?} of {:e} ({:#x})",
                vals[i],
                vals[i].to_bits()
            );
        }
        assert_same(
            &f,
            &[f32_bytes(&vals), vec![0; 2 * n]],
            &[n as i64],
            &format!("store {elem:?}"),
        );
    }
}

#[test]
fn bit_fields_and_byte_loads_match_the_interpreter() {
    let mut rng = Rng::new(14);
    let n = 13usize;
    let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8 | 0x81).collect();
    // Every byte load width at every offset up to the end of the buffer (bounds checks
    // are on in `assert_same`: a load past the end would fail).
    for nb in 1u8..=8 {
        let mut f = func(&[("w", Elem::U8), ("y", Elem::I32)], &["n"]);
        over_i(&mut f, |_, i| {
            let v = load_bytes(0, var(i), nb);
            let (lo, hi) = if nb > 4 {
                (
                    cast(Ty::I32, v.clone()),
                    cast(Ty::I32, bin(BinOp::Shr, v, i64c(32))),
                )
            } else {
                (v, i32c(0))
            };
            vec![
                Stmt::Store {
                    buf: 1,
                    index: mul(var(i), i64c(2)),
                    value: lo,
                },
                Stmt::Store {
                    buf: 1,
                    index: add(mul(var(i), i64c(2)), i64c(1)),
                    value: hi,
                },
            ]
        });
        let m = n - nb as usize + 1;
        let out = assert_same(
            &f,
            &[bytes.clone(), vec![0; 8 * m]],
            &[m as i64],
            &format!("bytes{nb}"),
        );
        let last = u64::from_le_bytes({
            let mut w = [0u8; 8];
            w[..nb as usize].copy_from_slice(&bytes[n - nb as usize..]);
            w
        });
        let got = u32::from_le_bytes(out[8 * (m - 1)..8 * (m - 1) + 4].try_into().unwrap());
        assert_eq!(got, last as u32, "bytes{nb} at the end");
        // One byte further is out of bounds: an error, not a read.
        let e = jit(
            &f,
            &[bytes.clone(), vec![0; 8 * (m + 1)]],
            &[m as i64 + 1],
            &checked(),
        )
        .unwrap_err();
        assert!(matches!(e, CraneliftError::OutOfBounds { .. }), "{e}");
        assert!(interp_run(&f, &[bytes.clone(), vec![0; 8 * (m + 1)]], &[m as i64 + 1]).is_err());
    }
    // Bit-field extracts at many positions and widths, signed and unsigned.
    let vals: Vec<i32> = int_data(&mut rng, 24);
    for ty in [Ty::I32, Ty::I64] {
        let w: u8 = if ty == Ty::I32 { 32 } else { 64 };
        let mut fields = Vec::new();
        for pos in (0..w + 2).step_by(3) {
            // (signed fields of 63+ bits are left out: the interpreter's `r - 2^len`
            // overflows there)
            for len in [0u8, 1, 2, 3, 4, 5, 7, 8, 13, 31, 32, 33, 62] {
                fields.push((pos, len));
            }
        }
        let mut f = func(&[("a", Elem::I32), ("y", Elem::I32)], &["n"]);
        let nf = fields.len() as i64;
        over_i(&mut f, |_, i| {
            let v = match ty {
                Ty::I32 => load(0, var(i)),
                _ => bin(
                    BinOp::Xor,
                    bin(BinOp::Shl, cast(Ty::I64, load(0, var(i))), i64c(29)),
                    cast(Ty::I64, load(0, sub(i64c(23), var(i)))),
                ),
            };
            let mut out = Vec::new();
            for (j, &(pos, len)) in fields.iter().enumerate() {
                if pos >= w {
                    continue;
                }
                for signed in [false, true] {
                    let e = bfe(v.clone(), pos, len, signed);
                    let e = if ty == Ty::I64 {
                        cast(
                            Ty::I32,
                            bin(BinOp::Xor, e.clone(), bin(BinOp::Sar, e, i64c(32))),
                        )
                    } else {
                        e
                    };
                    out.push(Stmt::Store {
                        buf: 1,
                        index: add(
                            mul(var(i), i64c(2 * nf)),
                            i64c(2 * j as i64 + signed as i64),
                        ),
                        value: e,
                    });
                }
            }
            out
        });
        let bufs = vec![i32_bytes(&vals), vec![0; 4 * 24 * 2 * nf as usize]];
        let out = assert_same(&f, &bufs, &[24], &format!("bfe {ty:?}"));
        assert!(out.iter().any(|&x| x != 0));
    }
}

/// Dot-product runs over i8 and float activations, with codes decoded from one word
/// (the SIMD decode), from two words (lane gathering), or loaded (no vector form);
/// accumulators updated in a loop (vector accumulators) or once.
#[test]
fn dot_runs_match_the_interpreter() {
    let mut rng = Rng::new(15);
    for (elem, acc_ty) in [
        (Elem::I8, Ty::I32),
        (Elem::I8, Ty::I64),
        (Elem::F32, Ty::F32),
        (Elem::F16, Ty::F32),
        (Elem::BF16, Ty::F32),
    ] {
        for ncodes in [8usize, 16, 24, 32, 4] {
            for variant in 0..3 {
                let k = 4 * ncodes as i64; // activations per row
                let mut f = func(
                    &[
                        ("x", elem),
                        ("w", Elem::U8),
                        ("ci", Elem::I32),
                        ("y", Elem::F32),
                    ],
                    &["n"],
                );
                let acc = f.var("acc", acc_ty);
                over_i(&mut f, |f, i| {
                    let mut body = vec![Stmt::Let(acc, Expr::Int(3, acc_ty))];
                    let kc = f.var("kc", Ty::I64);
                    let word = f.var("word", Ty::I64);
                    let word2 = f.var("word2", Ty::I32);
                    let mut kb = vec![
                        Stmt::Let(word, load_bytes(1, add(mul(var(i), i64c(256)), var(kc)), 8)),
                        Stmt::Let(
                            word2,
                            load_bytes(1, add(mul(var(i), i64c(256)), add(var(kc), i64c(8))), 4),
                        ),
                    ];
                    let mut codes = Vec::new();
                    for j in 0..ncodes {
                        let c = f.var(format!("c{j}"), Ty::I32);
                        let len = [4u8, 3, 8, 1, 5, 2, 7, 6][j % 8];
                        let signed = (j % 3) != 1;
                        let e = match variant {
                            0 => cast(
                                Ty::I32,
                                bfe(var(word), (j * 7 % (64 - len as usize)) as u8, len, signed),
                            ),
                            1 if j % 2 == 1 => bfe(var(word2), (j * 3 % 24) as u8, len, signed),
                            1 => cast(Ty::I32, bfe(var(word), (j * 5 % 56) as u8, len, signed)),
                            _ => load(2, add(mul(var(i), i64c(32)), i64c(j as i64))),
                        };
                        kb.push(Stmt::Let(c, e));
                        codes.push(c);
                    }
                    kb.push(Stmt::Set(
                        acc,
                        Expr::DotRun {
                            buf: 0,
                            index: Box::new(add(mul(var(i), i64c(k)), var(kc))),
                            codes,
                            acc: Box::new(var(acc)),
                        },
                    ));
                    body.push(Stmt::For {
                        var: kc,
                        start: i64c(0),
                        end: i64c(k),
                        step: ncodes as i64,
                        kind: LoopKind::Serial,
                        body: kb,
                    });
                    let out = if acc_ty == Ty::F32 {
                        var(acc)
                    } else {
                        cast(Ty::F32, var(acc))
                    };
                    body.push(Stmt::Store {
                        buf: 3,
                        index: var(i),
                        value: out,
                    });
                    body
                });
                let rows = 5usize;
                let x: Vec<u8> = match elem {
                    Elem::I8 => (0..rows * k as usize)
                        .map(|_| rng.next_u64() as u8)
                        .collect(),
                    Elem::F32 => f32_bytes(
                        &(0..rows * k as usize)
                            .map(|_| rng.range_f32(-2.0, 2.0))
                            .collect::<Vec<_>>(),
                    ),
                    Elem::F16 => (0..rows * k as usize)
                        .flat_map(|_| f16::from_f32(rng.range_f32(-2.0, 2.0)).to_le_bytes())
                        .collect(),
                    _ => (0..rows * k as usize)
                        .flat_map(|_| bf16::from_f32(rng.range_f32(-2.0, 2.0)).to_le_bytes())
                        .collect(),
                };
                let w: Vec<u8> = (0..rows * 256).map(|_| rng.next_u64() as u8).collect();
                let ci: Vec<i32> = (0..rows * 32)
                    .map(|_| rng.range_i32(-100_000, 100_000))
                    .collect();
                let bufs = vec![x, w, i32_bytes(&ci), vec![0; 4 * rows]];
                let what = format!("{elem:?} {acc_ty:?} {ncodes} codes, variant {variant}");
                if acc_ty == Ty::F32 {
                    // Reassociated in the SIMD path: compare within the summation bound.
                    let want = interp_run(&f, &bufs, &[rows as i64]).unwrap();
                    let no_simd = CraneliftOptions {
                        simd: false,
                        bounds_checks: true,
                        ..CraneliftOptions::default()
                    };
                    let exact = jit(&f, &bufs, &[rows as i64], &no_simd).unwrap();
                    assert_eq!(exact.last(), want.last(), "{what}: scalar path");
                    let got = jit(&f, &bufs, &[rows as i64], &checked()).unwrap();
                    let (g, w) = (got.last().unwrap(), want.last().unwrap());
                    for r in 0..rows {
                        let gv = f32::from_le_bytes(g[4 * r..4 * r + 4].try_into().unwrap()) as f64;
                        let wv = f32::from_le_bytes(w[4 * r..4 * r + 4].try_into().unwrap()) as f64;
                        // Σ|terms| ≤ k · 2 · 2^7 (|x| ≤ 2, |code| ≤ 128 or |ci| ≤ 1e5).
                        let bound = (2 * k) as f64
                            * U
                            * k as f64
                            * 2.0
                            * if variant == 2 { 1e5 } else { 128.0 };
                        assert!((gv - wv).abs() <= bound, "{what}: row {r}: {gv} vs {wv}");
                    }
                } else {
                    let out = assert_same(&f, &bufs, &[rows as i64], &what);
                    assert!(out.iter().any(|&x| x != 0));
                }
            }
        }
    }
}

#[test]
fn selects_do_not_evaluate_the_arm_not_taken() {
    // y[i] = select(i < 4, x[i], -1) for i in 0..8 with x of 4 elements: the load of
    // x[4..8] must not happen (bounds checks would report it).
    let mut f = func(&[("x", Elem::I32), ("y", Elem::I32)], &["n"]);
    over_i(&mut f, |_, i| {
        vec![Stmt::Store {
            buf: 1,
            index: var(i),
            value: Expr::Select(
                Box::new(cmp(CmpOp::Lt, var(i), i64c(4))),
                Box::new(load(0, var(i))),
                Box::new(i32c(-1)),
            ),
        }]
    });
    let out = assert_same(&f, &[i32_bytes(&[5, 6, 7, 8]), vec![0; 32]], &[8], "select");
    assert_eq!(out, i32_bytes(&[5, 6, 7, 8, -1, -1, -1, -1]));
}

#[test]
fn runtime_faults_are_errors() {
    // Division by zero: the interpreter's error, a status from native code.
    let mut f = func(&[("a", Elem::I32), ("y", Elem::I32)], &["n"]);
    over_i(&mut f, |_, i| {
        vec![Stmt::Store {
            buf: 1,
            index: var(i),
            value: div(i32c(100), load(0, var(i))),
        }]
    });
    let bufs = vec![i32_bytes(&[5, 0, 2]), vec![0; 12]];
    assert!(interp_run(&f, &bufs, &[3]).is_err());
    for o in [checked(), CraneliftOptions::default()] {
        let e = jit(&f, &bufs, &[3], &o).unwrap_err();
        assert!(matches!(e, CraneliftError::DivByZero { .. }), "{e}");
        assert!(e.to_string().contains("divided by zero"));
    }
    let ok = jit(&f, &[i32_bytes(&[5, -1, 2]), vec![0; 12]], &[3], &checked()).unwrap();
    assert_eq!(ok[1], i32_bytes(&[20, -100, 50]));
    // i32::MIN / -1 wraps, as in the interpreter.
    assert_same(
        &f,
        &[i32_bytes(&[i32::MIN, -1, 1]), vec![0; 12]],
        &[3],
        "min/-1",
    );

    // Out of bounds under bounds checks: an error instead of a stray access.
    let mut f = func(&[("x", Elem::F16), ("y", Elem::F32)], &["n"]);
    over_i(&mut f, |_, i| {
        vec![Stmt::Store {
            buf: 1,
            index: var(i),
            value: load(0, add(var(i), i64c(1))),
        }]
    });
    let bufs = vec![vec![0x3c; 8], vec![0; 16]];
    assert!(interp_run(&f, &bufs, &[4]).is_err());
    let e = jit(&f, &bufs, &[4], &checked()).unwrap_err();
    assert!(matches!(e, CraneliftError::OutOfBounds { .. }), "{e}");
    assert!(jit(&f, &bufs, &[3], &checked()).is_ok());
    // Negative offsets, stores past the end.
    let mut f = func(&[("x", Elem::I8), ("y", Elem::I32)], &["n"]);
    over_i(&mut f, |_, i| {
        vec![Stmt::Store {
            buf: 1,
            index: var(i),
            value: load(0, sub(var(i), i64c(1))),
        }]
    });
    assert!(matches!(
        jit(&f, &[vec![1; 4], vec![0; 16]], &[4], &checked()),
        Err(CraneliftError::OutOfBounds { .. })
    ));
    let mut f = func(&[("x", Elem::I8), ("y", Elem::I32)], &["n"]);
    over_i(&mut f, |_, i| {
        vec![Stmt::Store {
            buf: 1,
            index: add(var(i), i64c(1)),
            value: load(0, var(i)),
        }]
    });
    assert!(matches!(
        jit(&f, &[vec![1; 4], vec![0; 16]], &[4], &checked()),
        Err(CraneliftError::OutOfBounds { .. })
    ));
}

#[test]
fn unsupported_or_ill_formed_functions_are_errors() {
    let base = || func(&[("x", Elem::I32), ("y", Elem::I32)], &["n"]);
    let o = CraneliftOptions::default();
    // GPU-only operations.
    let mut f = base();
    let v = f.var("v", Ty::I32);
    f.body = vec![Stmt::Let(v, i32c(1)), Stmt::WarpSum(v)];
    assert!(matches!(
        compile(&f, &o),
        Err(CraneliftError::GpuOnly { .. })
    ));
    let mut f = base();
    let v: Vec<Var> = (0..4).map(|i| f.var(format!("v{i}"), Ty::I32)).collect();
    f.body = vec![Stmt::LoadVec4 {
        dst: [v[0], v[1], v[2], v[3]],
        buf: 0,
        offset: i64c(0),
    }];
    assert!(matches!(
        compile(&f, &o),
        Err(CraneliftError::GpuOnly { .. })
    ));
    let mut f = base();
    f.body = vec![Stmt::Store {
        buf: 1,
        index: i64c(0),
        value: Expr::Special(qkc::codegen::loop_ir::Special::ThreadIdx),
    }];
    assert!(matches!(
        compile(&f, &o),
        Err(CraneliftError::GpuOnly { .. })
    ));
    let mut f = base();
    f.launch = Launch::Gpu {
        grid: i64c(1),
        block: 32,
    };
    assert!(matches!(
        compile(&f, &o),
        Err(CraneliftError::NotCpu { .. })
    ));
    // Stores to inputs, undeclared variables, bad buffers, type errors.
    let mut f = base();
    f.body = vec![Stmt::Store {
        buf: 0,
        index: i64c(0),
        value: i32c(1),
    }];
    assert!(matches!(
        compile(&f, &o),
        Err(CraneliftError::StoreToInput { .. })
    ));
    let mut f = base();
    f.body = vec![Stmt::Set(Var(7), i32c(1))];
    assert!(matches!(compile(&f, &o), Err(CraneliftError::Invalid(_))));
    let mut f = base();
    f.body = vec![Stmt::Store {
        buf: 1,
        index: i64c(0),
        value: load(5, i64c(0)),
    }];
    assert!(matches!(compile(&f, &o), Err(CraneliftError::Invalid(_))));
    let mut f = base();
    let v = f.var("v", Ty::I32);
    f.body = vec![Stmt::Let(v, add(i32c(1), i64c(2)))];
    assert!(matches!(compile(&f, &o), Err(CraneliftError::Invalid(_))));
    let mut f = base();
    let v = f.var("v", Ty::I32);
    f.body = vec![Stmt::Let(v, i64c(2))];
    assert!(matches!(compile(&f, &o), Err(CraneliftError::Invalid(_))));
    let mut f = base();
    let v = f.var("v", Ty::I64);
    f.body = vec![Stmt::Let(v, load_bytes(0, i64c(0), 9))];
    assert!(matches!(compile(&f, &o), Err(CraneliftError::Invalid(_))));
    // Calls with the wrong number of buffers or dims.
    let mut f = base();
    f.body = vec![Stmt::Store {
        buf: 1,
        index: i64c(0),
        value: i32c(1),
    }];
    let c = compile(&f, &o).unwrap();
    let mut y = vec![0u8; 4];
    // SAFETY: the call is rejected before any native code runs.
    let e = unsafe { c.call(&[y.as_mut_ptr()], &[4], &[1], 0, 1) }.unwrap_err();
    assert!(matches!(e, CraneliftError::BadCall { .. }), "{e}");
    let mut x = vec![0u8; 4];
    // SAFETY: as above (wrong dimension count).
    let e = unsafe { c.call(&[x.as_mut_ptr(), y.as_mut_ptr()], &[4, 4], &[], 0, 1) }.unwrap_err();
    assert!(matches!(e, CraneliftError::BadCall { .. }), "{e}");
}

/// The parallel loop split into ranges does exactly the work of one call.
#[test]
fn parallel_loop_ranges_cover_the_loop() {
    let mut f = func(&[("x", Elem::I32), ("y", Elem::I32)], &["n"]);
    let base = f.var("base", Ty::I64);
    let i = f.var("i", Ty::I64);
    f.body = vec![
        Stmt::Let(base, i64c(2)),
        Stmt::For {
            var: i,
            start: var(base),
            end: dim(0),
            step: 3,
            kind: LoopKind::Parallel,
            body: vec![Stmt::Store {
                buf: 1,
                index: var(i),
                value: add(load(0, var(i)), i32c(1000)),
            }],
        },
    ];
    let n = 40usize;
    let x: Vec<i32> = (0..n as i32).map(|v| v * 3 - 7).collect();
    let c = compile(&f, &checked()).unwrap();
    assert!(c.is_parallel());
    let whole = assert_same(
        &f,
        &[i32_bytes(&x), vec![0; 4 * n]],
        &[n as i64],
        "parallel",
    );
    let mut xb = i32_bytes(&x);
    let mut y = vec![0u8; 4 * n];
    let lens = [xb.len() as i64, y.len() as i64];
    let ptrs = [xb.as_mut_ptr(), y.as_mut_ptr()];
    // SAFETY: bounds checks are compiled in; the buffers outlive the calls.
    let trips = unsafe { c.parallel_trips(&ptrs, &lens, &[n as i64]) }.unwrap();
    assert_eq!(trips, Some(13)); // 2, 5, ..., 38
    for (lo, hi) in [(0, 4), (4, 5), (5, 5), (5, 13), (13, 99), (-5, 0)] {
        // SAFETY: as above.
        unsafe { c.call(&ptrs, &lens, &[n as i64], lo, hi) }.unwrap();
    }
    assert_eq!(y, whole);
}

/// Text outputs for `qkc emit`: CLIF of the kernel and its trip function, and the
/// machine code, with the SIMD dot product visible.
#[test]
fn clif_and_disassembly_are_available() {
    let src = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/kernels/gemv_w3p5.qk"
    ))
    .unwrap();
    let k = kernel_of(&src);
    let f = lower::lower_cpu(&k, &lower::CpuOptions::for_kernel(&k));
    let clif = qkc::codegen::cranelift::clif(&f, &CraneliftOptions::default()).unwrap();
    assert!(
        clif.contains("function")
            && clif.contains("iadd_pairwise")
            && (clif.contains("swizzle") || clif.contains("pshufb")),
        "{clif}"
    );
    let scalar = qkc::codegen::cranelift::clif(
        &f,
        &CraneliftOptions {
            simd: false,
            ..CraneliftOptions::default()
        },
    )
    .unwrap();
    assert!(!scalar.contains("iadd_pairwise"));
    let asm = qkc::codegen::cranelift::disasm(&f, &CraneliftOptions::default()).unwrap();
    assert!(!asm.trim().is_empty());
}

// ------------------------------------------------------------------- demo

#[path = "../src/cli/demo.rs"]
#[allow(dead_code)]
mod demo;

/// `qkc demo` checks the flagship GEMV on the JIT and writes every backend's output.
#[test]
fn demo_runs_and_writes_the_generated_sources() {
    let dir = std::env::temp_dir().join(format!("qkc-demo-test-{}", std::process::id()));
    let args = demo::DemoArgs {
        out: dir.clone(),
        threads: 2,
        seed: Some(3),
    };
    demo::run(&args).unwrap();
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for want in [
        "gemv_w3p5.qk",
        "gemv_w3p5.cpu.loop-ir.txt",
        "gemv_w3p5.clif",
        "gemv_w3p5.gpu.loop-ir.txt",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
    let clif = std::fs::read_to_string(dir.join("gemv_w3p5.clif")).unwrap();
    assert!(clif.contains("function"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A compiled kernel can be shared by threads (benches, servers).
#[test]
fn compiled_kernels_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<CpuKernel>();
    check::<qkc::codegen::cranelift::CompiledCpu>();
    let src = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/kernels/gemv_w4.qk"
    ))
    .unwrap();
    let k = kernel_of(&src);
    let cpu = CpuKernel::new(&k, &opts(4, true, true, 1, false)).unwrap();
    let dims = dims_of(&k, (2, 6, 96));
    let inputs = nonzero_inputs(&k, &dims, 9);
    let want = cpu.run(&dims, &inputs).unwrap();
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..3)
            .map(|_| s.spawn(|| cpu.run(&dims, &inputs).unwrap()))
            .collect();
        for h in hs {
            assert_eq!(h.join().unwrap(), want);
        }
    });
}

#[test]
fn packed_blocks_match_the_interpreters_bit_for_bit() {
    // Whole 64-unit blocks decoded with pshufb + pmaddubsw (`DotPacked`), on layouts
    // with 1 and 2 fields, byte and stream storage, groups of 128/256 and none, with
    // chunk and generic tails after the blocks, M past the tile: bit for bit against
    // the loop-IR interpreter running the same lowering, and against the reference.
    if !cfg!(target_arch = "x86_64") || !std::is_x86_feature_detected!("ssse3") {
        eprintln!("SKIP: Cranelift's block decode needs x86-64 SSSE3; dot_packed is checked by the loop-IR interpreter (codegen/tests/loop_eval.rs)");
        return;
    }
    let (mut used, mut refused) = (0, 0);
    for k in gpu_common::packed_block_kernels() {
        let layout = lower::Plan::new(&k).layout;
        if !qkc::codegen::cranelift::packed_dot_supported(&layout) {
            // pmaddubsw could saturate: the runtime must not pick the block decode.
            assert!(!CpuOptions::for_kernel(&k).lower.packed_dot, "{layout}");
            refused += 1;
            continue;
        }
        assert!(CpuOptions::for_kernel(&k).lower.packed_dot, "{layout}");
        for (tile_m, bounds_checks) in [(1, false), (4, true)] {
            let mut o = opts(tile_m, true, true, 2, bounds_checks);
            o.lower.packed_dot = true;
            let f = lower::lower_cpu(&k, &o.lower);
            assert!(f.to_string().contains("dot_packed"), "{f}");
            used += 1;
            let kernel = CpuKernel::new(&k, &o).unwrap_or_else(|e| panic!("{f}\n{e}"));
            for (si, &(m, n, kk)) in gpu_common::PACKED_SHAPES.iter().enumerate() {
                let mut dims = Dims { values: vec![0; 3] };
                dims.values[k.m] = m;
                dims.values[k.n] = n;
                dims.values[k.k] = kk;
                let inputs = random_inputs(&k, &dims, 900 + si as u64);
                let got = kernel.run(&dims, &inputs).unwrap_or_else(|e| panic!("{e}"));
                let want = eval_output(&f, &dims, &inputs, got.as_bytes().len());
                assert!(
                    got.as_bytes() == want,
                    "{layout} {:?}: not bit-identical",
                    (m, n, kk)
                );
                let c = compare_with_reference(&k, &dims, &inputs, &got).unwrap();
                assert!(c.passed(), "{layout} {:?}: {c:?}", (m, n, kk));
            }
        }
    }
    assert_eq!(
        (used, refused),
        (40, 4),
        "five layouts run, the 8-bit one is refused"
    );
}
