//! Golden snapshots of the HIP backend's output for the example kernels (portable
//! path, GPU path with one M tile), plus structural checks of the mapping: includes,
//! dot-product builtins per arch, shuffle widths, grid-stride loops, declarations of
//! variables that live across blocks, and the errors.

use qkc_codegen::hip::{self, Arch, HipError, HipOptions, KernelSpec, Schedule};
use qkc_codegen::loop_ir::build::*;
use qkc_codegen::loop_ir::{Buf, Elem, Expr, Func, Launch, LoopKind, Special, Stmt, Ty};
use qkc_dsl::ir::Kernel;

fn examples() -> Vec<Kernel> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/kernels");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut out = Vec::new();
    for p in files
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "qk"))
    {
        let src = std::fs::read_to_string(p).unwrap();
        out.extend(
            qkc_dsl::compile(&p.display().to_string(), &src)
                .unwrap()
                .kernels,
        );
    }
    assert_eq!(
        out.len(),
        5,
        "the example kernels changed: update the snapshots"
    );
    out
}

fn portable(arch: Arch) -> HipOptions {
    let mut o = HipOptions::new(arch);
    o.schedule = Schedule::Portable;
    o
}

/// Decode GEMVs (`M <= 1`): the GPU schedule has one M tile, which keeps the
/// snapshots readable. i8 activations take the `dp4a` path, f16 ones the float path.
const DECODE_GEMVS: &str = "\
kernel decode_w3p5(x: i8[M, K], xs: f32[M], w: q3p5[N, K], ws: f16[N, K / 128]) -> y: f32[M, N] {
    where M <= 1;
    y[m, n] = sum(k) x[m, k] * w[n, k] * ws[n, k / 128] * xs[m];
}
kernel decode_f16_s4(x: f16[M, K], w: s4[N, K], ws: f16[N, K / 64]) -> y: f16[M, N] {
    where M <= 1;
    y[m, n] = sum(k) x[m, k] * w[n, k] * ws[n, k / 64];
}
";

#[test]
fn golden_portable_gfx1100() {
    for k in examples() {
        let m = hip::emit_kernel(&k, &portable(Arch::Gfx1100)).unwrap();
        insta::assert_snapshot!(format!("portable_gfx1100_{}", k.name), m.source);
    }
}

#[test]
fn golden_gpu_decode_gemv() {
    let prog = qkc_dsl::compile("decode.qk", DECODE_GEMVS).unwrap();
    for (k, arch) in prog.kernels.iter().zip([Arch::Gfx90a, Arch::Gfx1100]) {
        let m = hip::emit_kernel(k, &HipOptions::new(arch)).unwrap();
        insta::assert_snapshot!(format!("gpu_{arch}_{}", k.name), m.source);
    }
}

#[test]
fn golden_header_and_cmake() {
    let k = examples()
        .into_iter()
        .find(|k| k.name == "gemv_w3p5")
        .unwrap();
    let m = hip::emit_kernel(&k, &HipOptions::new(Arch::Gfx90a)).unwrap();
    insta::assert_snapshot!("header_gemv_w3p5", m.header);
    insta::assert_snapshot!(
        "cmake_gemv_w3p5",
        hip::cmake_snippet("qkc_gemv_w3p5", std::slice::from_ref(&m.name), Arch::Gfx90a)
    );
}

#[test]
fn every_module_includes_only_the_hip_runtime() {
    for k in examples() {
        for o in [HipOptions::new(Arch::Gfx942), portable(Arch::Gfx1030)] {
            let m = hip::emit_kernel(&k, &o).unwrap();
            let includes: Vec<&str> = m
                .source
                .lines()
                .filter(|l| l.starts_with("#include"))
                .collect();
            assert_eq!(includes, ["#include <hip/hip_runtime.h>"], "{}", k.name);
            let h: Vec<&str> = m
                .header
                .lines()
                .filter(|l| l.starts_with("#include"))
                .collect();
            assert_eq!(h, ["#include <hip/hip_runtime_api.h>"]);
            assert!(m
                .source
                .contains("extern \"C\" __global__ void __launch_bounds__("));
            assert!(m
                .source
                .contains(&format!("extern \"C\" hipError_t {}_launch(", k.name)));
            assert!(m.header.contains(&format!("hipError_t {}_launch(", k.name)));
            // The notes (layout, proofs, schedule) head the file.
            assert!(m.source.contains("//   weight w: layout"), "{}", k.name);
            assert!(m.source.contains("//   schedule hip:"), "{}", k.name);
        }
    }
}

#[test]
fn dot4_builtin_follows_the_arch() {
    let k = examples()
        .into_iter()
        .find(|k| k.name == "gemv_w3p5")
        .unwrap();
    for (arch, native, want, not) in [
        (
            Arch::Gfx90a,
            true,
            "__builtin_amdgcn_sdot4(a, b, acc, false)",
            "sudot4",
        ),
        (
            Arch::Gfx940,
            true,
            "__builtin_amdgcn_sdot4(a, b, acc, false)",
            "sudot4",
        ),
        (
            Arch::Gfx1030,
            true,
            "__builtin_amdgcn_sdot4(a, b, acc, false)",
            "sudot4",
        ),
        (
            Arch::Gfx1100,
            true,
            "__builtin_amdgcn_sudot4(true, a, true, b, acc, false)",
            "amdgcn_sdot4",
        ),
        (
            Arch::Gfx90a,
            false,
            "(int)(signed char)a * (int)(signed char)b",
            "__builtin_amdgcn",
        ),
    ] {
        for schedule in [Schedule::Gpu, Schedule::Portable] {
            if !native && schedule == Schedule::Portable {
                continue; // scalar sums, checked below
            }
            let mut o = HipOptions::new(arch);
            o.native_dot4 = native;
            o.schedule = schedule;
            let m = hip::emit_kernel(&k, &o).unwrap();
            assert!(
                m.source.contains(want),
                "{arch} {schedule:?}: missing {want}"
            );
            assert!(!m.source.contains(not), "{arch} {schedule:?}: has {not}");
            let uses = m.source.matches("qk_dot4(").count();
            assert!(
                uses > 4,
                "{arch} {schedule:?}: the dot products do not use qk_dot4"
            );
        }
    }
    // The portable path without native dot products expands the runs as scalar sums.
    let m = hip::emit_kernel(&k, &{
        let mut o = portable(Arch::Gfx90a);
        o.native_dot4 = false;
        o
    })
    .unwrap();
    assert!(!m.source.contains("qk_dot4("));
    assert!(
        m.source.contains("+ (int)qk_p1[15] * v40_c15;"),
        "{}",
        m.source
    );
}

#[test]
fn float_kernels_use_no_dot4_and_convert_f16_exactly() {
    let k = examples()
        .into_iter()
        .find(|k| k.name == "gemv_f16_w3p5")
        .unwrap();
    for o in [HipOptions::new(Arch::Gfx90a), portable(Arch::Gfx90a)] {
        let m = hip::emit_kernel(&k, &o).unwrap();
        assert!(!m.source.contains("qk_dot4"));
        assert!(m.source.contains("qk_f16_to_f32("));
        assert!(
            m.source.contains("= qk_f32_to_f16("),
            "f16 output is narrowed by the helper"
        );
        assert!(m.source.contains("const unsigned short* __restrict__ x"));
    }
}

#[test]
fn warp_sum_is_a_width_32_butterfly_on_every_arch() {
    let k = examples()
        .into_iter()
        .find(|k| k.name == "gemv_w4")
        .unwrap();
    for arch in Arch::ALL {
        let m = hip::emit_kernel(&k, &HipOptions::new(arch)).unwrap();
        let sums = m.source.matches("__shfl_xor(").count();
        assert!(sums > 0, "{arch}");
        assert_eq!(
            sums,
            m.source.matches(", qk_off, 32);").count(),
            "{arch}: every shuffle has width 32"
        );
        assert!(
            m.source.contains("(int)(threadIdx.x & 31u)"),
            "{arch}: lane = threadIdx.x & 31"
        );
        let wave64 = m
            .source
            .contains("each half of a wave64 reduces on its own");
        assert_eq!(wave64, arch.wave_size() == 64, "{arch}");
    }
}

#[test]
fn portable_path_is_a_grid_stride_loop() {
    let k = examples()
        .into_iter()
        .find(|k| k.name == "matmul_i8_s3")
        .unwrap();
    let m = hip::emit_kernel(&k, &portable(Arch::Gfx90a)).unwrap();
    assert!(
        m.source
            .contains("for (long long v0_n = qk_tid; v0_n < N; v0_n += qk_nthreads) {"),
        "{}",
        m.source
    );
    assert!(m.source.contains("const long long qk_trips = N;"));
    assert!(
        m.source
            .contains("if (K < 1 || K > 65536LL) return hipErrorInvalidValue;"),
        "proved bound K <= 65536"
    );
    assert!(m.source.contains("__launch_bounds__(256)"));
}

fn toy(launch: Launch) -> Func {
    Func::new(
        "toy",
        vec![
            Buf {
                name: "a".into(),
                elem: Elem::I8,
                output: false,
            },
            Buf {
                name: "out".into(),
                elem: Elem::I32,
                output: true,
            },
        ],
        vec!["N".into()],
        launch,
    )
}

#[test]
fn variables_used_across_blocks_are_declared_at_the_top() {
    // `t` is defined inside an `if` and read after it: C++ needs it declared outside.
    let mut f = toy(Launch::Gpu {
        grid: i64c(1),
        block: 32,
    });
    let t = f.var("t", Ty::I32);
    let lane = f.var("lane", Ty::I32);
    f.body = vec![
        Stmt::Let(lane, Expr::Special(Special::LaneId)),
        Stmt::If {
            cond: cmp(qkc_codegen::loop_ir::CmpOp::Lt, var(lane), i32c(16)),
            then: vec![Stmt::Let(t, load(0, cast(Ty::I64, var(lane))))],
        },
        Stmt::WarpSum(t),
        Stmt::Store {
            buf: 1,
            index: cast(Ty::I64, var(lane)),
            value: var(t),
        },
    ];
    let m = hip::emit_module(
        "toy",
        &[KernelSpec::from_func(f)],
        &HipOptions::new(Arch::Gfx1030),
    )
    .unwrap();
    assert!(
        m.source
            .contains("    int v0_t = 0; // used across blocks\n"),
        "{}",
        m.source
    );
    assert!(
        m.source
            .contains("        v0_t = (int)a[(long long)v1_lane];\n"),
        "{}",
        m.source
    );
    assert!(
        m.source
            .contains("    int v1_lane = (int)(threadIdx.x & 31u);\n"),
        "{}",
        m.source
    );
    assert!(
        m.source.contains("(void)N; // not read by this schedule"),
        "{}",
        m.source
    );
}

#[test]
fn errors() {
    // Two parallel loops would need a grid-wide barrier.
    let mut f = toy(Launch::Cpu);
    let i = f.var("i", Ty::I64);
    let j = f.var("j", Ty::I64);
    let par = |v| Stmt::For {
        var: v,
        start: i64c(0),
        end: dim(0),
        step: 1,
        kind: LoopKind::Parallel,
        body: vec![],
    };
    f.body = vec![par(i), par(j)];
    let e = hip::emit_module(
        "m",
        &[KernelSpec::from_func(f.clone())],
        &HipOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(e, HipError::Unsupported { .. }), "{e}");
    let e = hip::emit_module(
        "m",
        &[KernelSpec::from_func(toy(Launch::Cpu)).with_symbol("int")],
        &HipOptions::default(),
    )
    .unwrap_err();
    assert_eq!(e, HipError::BadName("int".into()));
    let s = KernelSpec::from_func(toy(Launch::Cpu));
    let e = hip::emit_module("m", &[s.clone(), s], &HipOptions::default()).unwrap_err();
    assert!(matches!(e, HipError::DuplicateSymbol { .. }), "{e}");
    assert_eq!(
        hip::emit_module("m", &[], &HipOptions::default()).unwrap_err(),
        HipError::Empty("m".into())
    );
    // A function without a parallel loop runs on one thread.
    let mut f = toy(Launch::Cpu);
    f.body = vec![Stmt::Store {
        buf: 1,
        index: i64c(0),
        value: i32c(7),
    }];
    let m = hip::emit_module("m", &[KernelSpec::from_func(f)], &HipOptions::default()).unwrap();
    assert!(m
        .source
        .contains("if (blockIdx.x != 0 || threadIdx.x != 0) return;"));
    assert!(m.source.contains("dim3(1), dim3(1)"));
}
