//! The LLVM backend (feature `llvm`):
//!
//! - **CPU** (`LlvmCpuKernel`): every built-in layout × activation type × with and
//!   without group scales × M bounded or not, on odd shapes (K not a multiple of any
//!   chunk), against the reference interpreter (exact for integer outputs, within
//!   float tolerance otherwise) *and* bit for bit against the loop-IR interpreter
//!   (the translation is exact: ordered f32 reductions, exact f16/bf16 conversions),
//!   across thread counts, with bounds checks compiled in, and with integer-only f16
//!   conversions; errors for bad buffers and division by zero.
//! - **AMDGPU**: every GPU-lowered kernel compiles for gfx90a, gfx942 and gfx1100;
//!   each object disassembles with `llvm-objdump-19`; i8 kernels use `v_dot4*_i32_i8`
//!   (gfx90a/gfx942) or `v_dot4_i32_iu8` (gfx1100); code objects link with `ld.lld`;
//!   resource usage is read from the assembly.
//! - **NVPTX**: every GPU-lowered kernel assembles with `ptxas` for sm_80 and sm_90.
//!
//! The external tools are found on `PATH` (or `QKC_PTXAS`, the `nvidia-cuda-nvcc-cu12`
//! wheel); without them those tests print `SKIP: ...`, except under CI (`CI` set).

#![cfg(feature = "llvm")]

mod gpu_common;

use std::path::{Path, PathBuf};
use std::process::Command;

use gpu_common::*;
use qkc::codegen::llvm::{self, AmdgpuArch, JitOptions, LlvmError, LlvmTarget, NvptxArch};
use qkc::codegen::loop_ir::{self, build::*, eval, Buf, Elem, Func, Launch, LoopKind, Stmt, Ty};
use qkc::codegen::lower::{lower_cpu, lower_gpu, CpuOptions, GpuOptions};
use qkc::runtime::llvm_cpu::{LlvmCpuError, LlvmCpuKernel, LlvmCpuOptions};
use qkc_dsl::host::{random_inputs, BufferError, HostBuf};
use qkc_dsl::ir::{Dims, Kernel};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Odd shapes (M, N, K): single elements, K not a multiple of any chunk or group.
const SHAPES: [(u64, u64, u64); 5] = [
    (1, 1, 2),
    (3, 17, 33),
    (2, 5, 130),
    (1, 4, 129),
    (9, 6, 200),
];

fn all_kernels() -> Vec<Kernel> {
    let mut ks = generated_kernels();
    ks.extend(example_kernels(ROOT).into_iter().map(|(_, k)| k));
    ks
}

fn ci() -> bool {
    std::env::var_os("CI").is_some()
}

fn skip(why: &str) {
    assert!(!ci(), "CI: {why}");
    eprintln!("SKIP: {why}");
}

/// Runs the loop-IR interpreter on `f` and returns the raw output bytes.
fn loop_ir_output(f: &Func, k: &Kernel, d: &Dims, inputs: &[HostBuf]) -> Vec<u8> {
    let mut bufs: Vec<Vec<u8>> = inputs.iter().map(|b| b.as_bytes()).collect();
    bufs.push(vec![0xAB; out_bytes(k, d)]);
    let dv: Vec<i64> = d.values.iter().map(|&v| v as i64).collect();
    eval::run(f, &mut bufs, &dv).unwrap_or_else(|e| panic!("{}: loop-IR interpreter: {e}", k.name));
    bufs.pop().unwrap_or_default()
}

fn opts(k: &Kernel, jit: JitOptions, threads: usize) -> LlvmCpuOptions {
    LlvmCpuOptions {
        jit,
        threads,
        ..LlvmCpuOptions::for_kernel(k)
    }
}

/// One configuration of the CPU differential test.
struct Config {
    name: &'static str,
    jit: JitOptions,
    threads: usize,
    /// Bit-identical to the loop-IR interpreter (false when f32 sums reassociate).
    exact_loop_ir: bool,
}

fn cpu_configs() -> Vec<Config> {
    vec![
        Config {
            name: "O3",
            jit: JitOptions::default(),
            threads: 1,
            exact_loop_ir: true,
        },
        Config {
            name: "O3 bounds-checked, 3 threads",
            jit: JitOptions {
                bounds_checks: true,
                ..JitOptions::default()
            },
            threads: 3,
            exact_loop_ir: true,
        },
        Config {
            name: "O1 integer f16 conversions",
            jit: JitOptions {
                opt_level: 1,
                native_f16: Some(false),
                ..JitOptions::default()
            },
            threads: 2,
            exact_loop_ir: true,
        },
        Config {
            name: "O3 reassociated",
            jit: JitOptions {
                reassociate: true,
                ..JitOptions::default()
            },
            threads: 2,
            exact_loop_ir: false,
        },
    ]
}

fn cpu_check(k: &Kernel, cfg: &Config) -> usize {
    let kernel = LlvmCpuKernel::new(k, &opts(k, cfg.jit.clone(), cfg.threads))
        .unwrap_or_else(|e| panic!("{} [{}]: {e}", k.name, cfg.name));
    // The variant a launch runs: tile_m = 1 below the tile, the kernel's own above.
    let tile = CpuOptions::for_kernel(k).tile_m as u64;
    let mut runs = 0;
    for (si, &(m, n, kk)) in SHAPES.iter().enumerate() {
        let d = dims(k, m, n, kk);
        if !dims_ok(k, &d) {
            continue;
        }
        let inputs = random_inputs(k, &d, 1000 + si as u64);
        let got = kernel
            .run(&d, &inputs)
            .unwrap_or_else(|e| panic!("{} [{}] {:?}: {e}", k.name, cfg.name, (m, n, kk)));
        let got_bytes = got.as_bytes();
        check(k, &d, &inputs, &got.to_f64())
            .unwrap_or_else(|e| panic!("{} [{}] {:?}: {e}", k.name, cfg.name, (m, n, kk)));
        if cfg.exact_loop_ir {
            let lo = CpuOptions {
                tile_m: if m < tile { 1 } else { tile as u32 },
                ..CpuOptions::for_kernel(k)
            };
            let want = loop_ir_output(&lower_cpu(k, &lo), k, &d, &inputs);
            assert!(
                got_bytes == want,
                "{} [{}] {:?}: not bit-identical to the loop-IR interpreter",
                k.name,
                cfg.name,
                (m, n, kk)
            );
        }
        runs += 1;
    }
    runs
}

#[test]
fn cpu_matches_reference_on_every_layout_activation_and_group() {
    let kernels = all_kernels();
    assert!(kernels.len() >= 112, "generated matrix plus examples");
    let mut runs = 0;
    let configs = cpu_configs();
    for (i, k) in kernels.iter().enumerate() {
        // The full matrix under the default build; the other builds on a rotating share.
        runs += cpu_check(k, &configs[0]);
        runs += cpu_check(k, &configs[1 + i % (configs.len() - 1)]);
    }
    eprintln!("llvm-cpu: {runs} runs over {} kernels", kernels.len());
    assert!(runs > kernels.len() * 5);
}

#[test]
fn cpu_tile_m_variants_and_unchunked_unpack_match() {
    // Every tile size with and without the constant-position unpack, on the flagship
    // kernels and an exact integer kernel.
    let ks: Vec<Kernel> = example_kernels(ROOT).into_iter().map(|(_, k)| k).collect();
    let packed = llvm::HostCpu::detect().packed_dot();
    for k in &ks {
        for tile_m in [1, 2, 3, 8] {
            for (chunked_unpack, packed_dot) in [(true, false), (false, false), (true, packed)] {
                let lo = CpuOptions {
                    tile_m,
                    chunked_unpack,
                    packed_dot,
                };
                let o = LlvmCpuOptions {
                    lower: lo.clone(),
                    small_m_variant: false,
                    ..opts(k, JitOptions::default(), 2)
                };
                let kernel =
                    LlvmCpuKernel::new(k, &o).unwrap_or_else(|e| panic!("{}: {e}", k.name));
                for (si, &(m, n, kk)) in SHAPES.iter().enumerate() {
                    let d = dims(k, m, n, kk);
                    if !dims_ok(k, &d) {
                        continue;
                    }
                    let inputs = random_inputs(k, &d, 77 + si as u64);
                    let got = kernel
                        .run(&d, &inputs)
                        .unwrap_or_else(|e| panic!("{}: {e}", k.name));
                    let want = loop_ir_output(&lower_cpu(k, &lo), k, &d, &inputs);
                    assert_eq!(
                        got.as_bytes(),
                        want,
                        "{} tile_m={tile_m} chunked={chunked_unpack} packed={packed_dot}",
                        k.name
                    );
                    check(k, &d, &inputs, &got.to_f64())
                        .unwrap_or_else(|e| panic!("{}: {e}", k.name));
                }
            }
        }
    }
}

#[test]
fn cpu_rejects_bad_buffers() {
    let k = example_kernel(ROOT, "gemv_w3p5");
    let kernel = LlvmCpuKernel::new(&k, &LlvmCpuOptions::for_kernel(&k)).expect("compiles");
    let d = dims(&k, 2, 8, 256);
    let mut inputs = random_inputs(&k, &d, 3);
    // Too few buffers.
    let err = kernel.run(&d, &inputs[..2]).expect_err("missing buffer");
    assert!(
        matches!(err, LlvmCpuError::Buffer(BufferError::Count { .. })),
        "{err}"
    );
    // A weight buffer one byte short.
    if let HostBuf::Packed(w) = &mut inputs[k.weight] {
        w.pop();
    }
    let err = kernel.run(&d, &inputs).expect_err("short weight");
    assert!(
        matches!(err, LlvmCpuError::Buffer(BufferError::Length { .. })),
        "{err}"
    );
    // Dimensions out of range.
    let err = kernel
        .run(&dims(&k, 9, 8, 256), &inputs)
        .expect_err("M > 8");
    assert!(
        matches!(err, LlvmCpuError::Buffer(BufferError::Dims(_))),
        "{err}"
    );
    // The wrong element type for the output of `run_into`.
    let inputs = random_inputs(&k, &d, 3);
    let mut out = HostBuf::I32(vec![0; 16]);
    let err = kernel
        .run_into(&d, &inputs, &mut out)
        .expect_err("wrong output type");
    assert!(
        matches!(err, LlvmCpuError::Buffer(BufferError::Type { .. })),
        "{err}"
    );
}

/// A hand-written CPU function: `y[i] = x[i] / d[i]` (i32), `y[i] = i32::MIN / -1`
/// semantics included; the parallel loop over `i` in `0..N`.
fn div_func() -> Func {
    let mut f = Func::new(
        "divide",
        vec![
            Buf {
                name: "x".into(),
                elem: Elem::I32,
                output: false,
            },
            Buf {
                name: "d".into(),
                elem: Elem::I32,
                output: false,
            },
            Buf {
                name: "y".into(),
                elem: Elem::I32,
                output: true,
            },
        ],
        vec!["N".into()],
        Launch::Cpu,
    );
    let i = f.var("i", Ty::I64);
    f.body.push(Stmt::For {
        var: i,
        start: i64c(0),
        end: dim(0),
        step: 1,
        kind: LoopKind::Parallel,
        body: vec![Stmt::Store {
            buf: 2,
            index: var(i),
            value: bin(
                loop_ir::BinOp::Add,
                div(load(0, var(i)), load(1, var(i))),
                bin(loop_ir::BinOp::Rem, load(0, var(i)), load(1, var(i))),
            ),
        }],
    });
    f
}

fn i32_bytes(v: &[i32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn cpu_division_wraps_and_reports_division_by_zero() {
    let f = div_func();
    let jit = llvm::compile_cpu(&f, &JitOptions::default()).expect("compiles");
    assert!(jit.is_parallel());
    let x = [7, -7, i32::MIN, 5, i32::MIN, 100];
    let d = [2, 2, -1, -1, 7, -3];
    let run = |x: &[i32], dv: &[i32]| -> Result<Vec<u8>, LlvmError> {
        let mut bufs = vec![i32_bytes(x), i32_bytes(dv), vec![0u8; 4 * x.len()]];
        let ptrs: Vec<*mut u8> = bufs.iter_mut().map(|b| b.as_mut_ptr()).collect();
        let lens: Vec<i64> = bufs.iter().map(|b| b.len() as i64).collect();
        let dims = [x.len() as i64];
        // SAFETY: three buffers of N i32s, as the function reads and writes them.
        unsafe { jit.call(&ptrs, &lens, &dims, 0, i64::MAX) }?;
        Ok(bufs.pop().unwrap_or_default())
    };
    let got = run(&x, &d).expect("no division by zero");
    let mut want = vec![i32_bytes(&x), i32_bytes(&d), vec![0u8; 24]];
    eval::run(&f, &mut want, &[6]).expect("interpreter");
    assert_eq!(
        got, want[2],
        "i32::MIN / -1 wraps, remainders as in the interpreter"
    );
    let err = run(&[1, 2], &[1, 0]).expect_err("division by zero");
    assert!(matches!(err, LlvmError::DivByZero { .. }), "{err}");
    // The interpreter agrees that it is an error.
    let mut bufs = vec![i32_bytes(&[1, 2]), i32_bytes(&[1, 0]), vec![0u8; 8]];
    assert!(eval::run(&f, &mut bufs, &[2]).is_err());
    // Calls check their argument counts.
    let err = unsafe { jit.call(&[], &[], &[2], 0, 1) }.expect_err("no buffers");
    assert!(matches!(err, LlvmError::BadCall { .. }), "{err}");
}

#[test]
fn cpu_bounds_checks_catch_short_buffers() {
    let f = div_func();
    let jit = llvm::compile_cpu(
        &f,
        &JitOptions {
            bounds_checks: true,
            ..JitOptions::default()
        },
    )
    .expect("compiles");
    // N = 4 but `d` holds 3 elements: the fourth load must be caught, not performed.
    let mut bufs = [
        i32_bytes(&[1, 2, 3, 4]),
        i32_bytes(&[1, 1, 1]),
        vec![0u8; 16],
    ];
    let ptrs: Vec<*mut u8> = bufs.iter_mut().map(|b| b.as_mut_ptr()).collect();
    let lens: Vec<i64> = bufs.iter().map(|b| b.len() as i64).collect();
    // SAFETY: the bounds checks compiled in stop every access outside `lens`.
    let err = unsafe { jit.call(&ptrs, &lens, &[4], 0, i64::MAX) }.expect_err("out of bounds");
    assert!(matches!(err, LlvmError::OutOfBounds { .. }), "{err}");
}

#[test]
fn llvm_ir_is_vectorized_where_natural() {
    let k = example_kernel(ROOT, "gemv_w3p5");
    let f = lower_cpu(&k, &CpuOptions::for_kernel(&k));
    let ir = llvm::emit_ir(&f, LlvmTarget::Host, false).expect("emits");
    // DotRun over i8 activations: a <16 x i8> load, widened, multiplied, reduced.
    assert!(ir.contains("load <16 x i8>"), "{ir}");
    assert!(ir.contains("sext <16 x i8>"), "{ir}");
    assert!(ir.contains("@llvm.vector.reduce.add.v16i32"), "{ir}");
    assert!(ir.contains("define i32 @qkc_gemv_w3p5("), "{ir}");
    assert!(ir.contains("define i64 @qkc_gemv_w3p5__trips("), "{ir}");
    let opt = llvm::emit_ir(&f, LlvmTarget::Host, true).expect("optimizes");
    assert!(
        opt.contains("<16 x i32>") || opt.contains("<8 x i32>"),
        "vector code survives O3"
    );
    // f16 activations: ordered f32 reductions.
    let k = example_kernel(ROOT, "gemv_f16_w3p5");
    let ir = llvm::emit_ir(
        &lower_cpu(&k, &CpuOptions::for_kernel(&k)),
        LlvmTarget::Host,
        false,
    )
    .expect("emits");
    assert!(ir.contains("@llvm.vector.reduce.fadd.v16f32"), "{ir}");
}

/// The GPU float decode's bit operations (`FromBits`, `F16ToF32` of a word's low and
/// high half) through LLVM agree bit for bit with the interpreter, NaNs included.
#[test]
fn cpu_bit_reinterpretations_match_the_interpreter() {
    let a: Vec<i32> = (0..4099i64)
        .map(|i| (i.wrapping_mul(0x9e37_79b9) ^ (i << 7)) as i32)
        .chain([0x7fc0_0001, 0x7c01_fc00, 0x3c00_bc00, 0x0001_8001, -1, 0])
        .collect();
    for (what, op) in [("from_bits", 0), ("f16_low", 1), ("f16_high", 2)] {
        let mut f = Func::new(
            what,
            vec![
                Buf {
                    name: "a".into(),
                    elem: Elem::I32,
                    output: false,
                },
                Buf {
                    name: "y".into(),
                    elem: Elem::F32,
                    output: true,
                },
            ],
            vec!["N".into()],
            Launch::Cpu,
        );
        let i = f.var("i", Ty::I64);
        let x = load(0, var(i));
        let value = match op {
            0 => loop_ir::Expr::FromBits(Box::new(x)),
            1 => loop_ir::Expr::F16ToF32(Box::new(x)),
            _ => loop_ir::Expr::F16ToF32(Box::new(bin(loop_ir::BinOp::Shr, x, i32c(16)))),
        };
        f.body.push(Stmt::For {
            var: i,
            start: i64c(0),
            end: dim(0),
            step: 1,
            kind: LoopKind::Serial,
            body: vec![Stmt::Store {
                buf: 1,
                index: var(i),
                value,
            }],
        });
        let jit = llvm::compile_cpu(&f, &JitOptions::default()).expect("compiles");
        let mut bufs = [i32_bytes(&a), vec![0u8; 4 * a.len()]];
        let ptrs: Vec<*mut u8> = bufs.iter_mut().map(|b| b.as_mut_ptr()).collect();
        let lens: Vec<i64> = bufs.iter().map(|b| b.len() as i64).collect();
        let dims = [a.len() as i64];
        // SAFETY: one buffer of N i32s in, one of N f32s out, as the function uses them.
        unsafe { jit.call(&ptrs, &lens, &dims, 0, i64::MAX) }.expect("runs");
        let mut want = vec![i32_bytes(&a), vec![0u8; 4 * a.len()]];
        eval::run(&f, &mut want, &dims).expect("interpreter");
        assert_f32_bits_match(&bufs[1], &want[1], what);
        assert!(
            bufs[1].chunks(4).any(|c| c != [0, 0, 0, 0]),
            "{what}: all-zero output"
        );
    }
}

// ---------------------------------------------------------------- GPU targets

/// GPU-lowered kernels: the generated matrix with M unbounded (its functions hold
/// both the GEMV schedule, which is all that M-bounded kernels get, and the generic
/// one) plus the examples.
fn gpu_funcs() -> Vec<(Kernel, Func)> {
    all_kernels()
        .into_iter()
        .filter(|k| !k.name.ends_with("_m8"))
        .map(|k| {
            let f = lower_gpu(&k, &GpuOptions::portable(&k));
            (k, f)
        })
        .collect()
}

fn tool(names: &[&str]) -> Option<PathBuf> {
    names.iter().find_map(|n| llvm::which(n)).or_else(|| {
        names
            .iter()
            .map(|n| Path::new("/usr/lib/llvm-19/bin").join(n.trim_end_matches("-19")))
            .find(|p| p.is_file())
    })
}

fn scratch_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("qkc-llvm-test-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// Compiles every GPU function on two threads (CI has two cores).
fn par_map<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let half = items.len().div_ceil(2);
    let mut items = items;
    let second = items.split_off(half);
    std::thread::scope(|s| {
        let h = s.spawn(|| second.into_iter().map(&f).collect::<Vec<_>>());
        let mut out: Vec<R> = items.into_iter().map(&f).collect();
        out.extend(h.join().expect("worker thread"));
        out
    })
}

#[test]
fn amdgpu_code_objects_disassemble_and_use_dot4() {
    let Some(objdump) = tool(&["llvm-objdump-19"]) else {
        return skip("llvm-objdump-19 not found (apt-get install llvm-19)");
    };
    let lld = llvm::find_lld();
    if lld.is_none() {
        skip("ld.lld-19 not found (apt-get install lld-19): code objects are not linked");
    }
    let dir = scratch_dir("amdgpu");
    let funcs = gpu_funcs();
    let jobs: Vec<(Kernel, Func, AmdgpuArch)> = funcs
        .iter()
        .flat_map(|(k, f)| AmdgpuArch::ALL.map(|a| (k.clone(), f.clone(), a)))
        .collect();
    let n = jobs.len();
    let results = par_map(jobs, |(k, f, arch)| {
        let code = llvm::compile_amdgpu(&f, arch)
            .unwrap_or_else(|e| panic!("{} {}: {e}", k.name, arch.name()));
        let obj = dir.join(format!("{}.{}.o", k.name, arch.name()));
        std::fs::write(&obj, &code.object).expect("write object");
        let o = Command::new(&objdump)
            .args(["-d", &format!("--mcpu={}", arch.name())])
            .arg(&obj)
            .output()
            .expect("run llvm-objdump");
        assert!(
            o.status.success(),
            "{}: {}",
            k.name,
            String::from_utf8_lossy(&o.stderr)
        );
        let dis = String::from_utf8_lossy(&o.stdout).into_owned();
        (k, arch, code, dis)
    });
    let mut dot4_kernels = 0;
    let mut max_vgpr = 0;
    let mut spilling = Vec::new();
    for (k, arch, code, dis) in &results {
        let ctx = format!("{} {}", k.name, arch.name());
        assert_eq!(&code.object[..4], b"\x7fELF", "{ctx}: an ELF object");
        assert!(
            dis.contains(&format!("<{}>:", code.kernel)),
            "{ctx}: kernel symbol in\n{dis}"
        );
        assert!(dis.contains("s_endpgm"), "{ctx}: a complete kernel");
        let uses_dot4 = code.func.body.iter().any(has_dot4);
        if uses_dot4 {
            let want = match arch {
                AmdgpuArch::Gfx90a | AmdgpuArch::Gfx942 => {
                    ["v_dot4_i32_i8", "v_dot4c_i32_i8"].as_slice()
                }
                AmdgpuArch::Gfx1100 => ["v_dot4_i32_iu8"].as_slice(),
            };
            assert!(
                want.iter().any(|w| dis.contains(w)),
                "{ctx}: expected {want:?} in\n{dis}"
            );
            dot4_kernels += 1;
        }
        if k.act_ty() == qkc_dsl::ir::Scalar::I8 {
            assert!(
                uses_dot4,
                "{ctx}: the GEMV schedule of an i8 kernel uses Dot4"
            );
        }
        let r = code
            .resources
            .iter()
            .find(|r| r.kernel == code.kernel)
            .unwrap_or_else(|| panic!("{ctx}: no resource usage in\n{}", code.text.asm));
        let vgpr = r.next_free_vgpr.expect("next_free_vgpr");
        assert!(vgpr >= 1 && r.next_free_sgpr.is_some(), "{ctx}: {r}");
        assert_eq!(r.wavefront_size, Some(arch.wave_size()), "{ctx}: {r}");
        assert!(
            r.vgpr_spill_count.is_some() && r.sgpr_spill_count.is_some(),
            "{ctx}: {r}"
        );
        assert!(r.occupancy.is_some_and(|o| o >= 1), "{ctx}: {r}");
        max_vgpr = max_vgpr.max(vgpr);
        if r.vgpr_spill_count.unwrap_or(0) + r.sgpr_spill_count.unwrap_or(0) > 0 {
            spilling.push(ctx.clone());
        }
        if lld.is_some() {
            let h = code.hsaco.as_ref().expect("linked code object");
            assert_eq!(&h[..4], b"\x7fELF", "{ctx}: hsaco is an ELF shared object");
            assert_eq!(h[16], 3, "{ctx}: ET_DYN");
        }
    }
    eprintln!(
        "amdgpu: {n} code objects, {dot4_kernels} with dot4, max next_free_vgpr {max_vgpr}, \
         spills in {} ({spilling:?})",
        spilling.len()
    );
    assert!(
        dot4_kernels >= 3 * 14,
        "every i8 kernel on every architecture"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn has_dot4(s: &Stmt) -> bool {
    fn e(x: &loop_ir::Expr) -> bool {
        use loop_ir::Expr as E;
        match x {
            E::Dot4 { .. } => true,
            E::Bin(_, a, b) | E::Cmp(_, a, b) => e(a) || e(b),
            E::Select(c, a, b) => e(c) || e(a) || e(b),
            E::Cast(_, a) => e(a),
            _ => false,
        }
    }
    match s {
        Stmt::Let(_, x) | Stmt::Set(_, x) => e(x),
        Stmt::For { body, .. } => body.iter().any(has_dot4),
        Stmt::If { then, .. } => then.iter().any(has_dot4),
        _ => false,
    }
}

/// Locates `ptxas`: `QKC_PTXAS`, `PATH`, then the `nvidia-cuda-nvcc-cu12` wheel.
fn find_ptxas() -> Option<PathBuf> {
    let works = |p: &Path| {
        Command::new(p)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if let Some(p) = std::env::var_os("QKC_PTXAS") {
        let p = PathBuf::from(p);
        return works(&p).then_some(p);
    }
    if let Some(p) = llvm::which("ptxas").filter(|p| works(p)) {
        return Some(p);
    }
    let py = "import nvidia.cuda_nvcc as m; print(list(m.__path__)[0])";
    let o = Command::new("python3").args(["-c", py]).output().ok()?;
    let p = Path::new(String::from_utf8_lossy(&o.stdout).trim()).join("bin/ptxas");
    works(&p).then_some(p)
}

#[test]
fn nvptx_assembles_with_ptxas_for_sm80_and_sm90() {
    let Some(ptxas) = find_ptxas() else {
        return skip(
            "ptxas not found (set QKC_PTXAS or pip install nvidia-cuda-nvcc-cu12==12.9.*)",
        );
    };
    let dir = scratch_dir("nvptx");
    let jobs: Vec<(Kernel, Func, NvptxArch)> = gpu_funcs()
        .into_iter()
        .flat_map(|(k, f)| NvptxArch::ALL.map(|a| (k.clone(), f.clone(), a)))
        .collect();
    let n = jobs.len();
    let dp4a = par_map(jobs, |(k, f, arch)| {
        let code = llvm::compile_nvptx(&f, arch)
            .unwrap_or_else(|e| panic!("{} {}: {e}", k.name, arch.name()));
        let ptx = code.ptx();
        let ctx = format!("{} {}", k.name, arch.name());
        assert!(
            ptx.contains(&format!(".target {}", arch.name())),
            "{ctx}\n{ptx}"
        );
        assert!(
            ptx.contains(&format!(".entry {}", code.kernel)),
            "{ctx}\n{ptx}"
        );
        let src = dir.join(format!("{}.{}.ptx", k.name, arch.name()));
        std::fs::write(&src, ptx).expect("write ptx");
        let o = Command::new(&ptxas)
            .arg(format!("-arch={}", arch.name()))
            .arg("-o")
            .arg(src.with_extension("cubin"))
            .arg(&src)
            .output()
            .expect("run ptxas");
        assert!(
            o.status.success(),
            "{ctx}: ptxas failed:\n{}\n{ptx}",
            String::from_utf8_lossy(&o.stderr)
        );
        let uses = code.func.body.iter().any(has_dot4);
        assert_eq!(
            uses,
            ptx.contains("dp4a.s32.s32"),
            "{ctx}: dp4a iff the function has Dot4"
        );
        uses
    });
    eprintln!(
        "nvptx: {n} modules assembled, {} with dp4a",
        dp4a.iter().filter(|&&u| u).count()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn gpu_mapping_of_cpu_functions_matches_the_interpreter() {
    // The fallback for CPU functions: one GPU thread per parallel-loop iteration.
    let k = example_kernel(ROOT, "matmul_i8_s3");
    let f = lower_cpu(&k, &CpuOptions::for_kernel(&k));
    let g = llvm::gpu_from_cpu(&f, 32).expect("maps");
    assert!(matches!(g.launch, Launch::Gpu { block: 32, .. }));
    for &(m, n, kk) in &SHAPES {
        let d = dims(&k, m, n, kk);
        let inputs = random_inputs(&k, &d, 5);
        assert_eq!(
            loop_ir_output(&g, &k, &d, &inputs),
            loop_ir_output(&f, &k, &d, &inputs)
        );
    }
    let ptx = llvm::compile_nvptx(&f, NvptxArch::Sm80).expect("compiles mapped function");
    assert!(ptx.ptx().contains("%ctaid.x"), "uses the block index");
    let amd = llvm::compile_amdgpu(&f, AmdgpuArch::Gfx942).expect("compiles mapped function");
    assert!(amd.text.ir.contains("llvm.amdgcn.workitem.id.x"));
    // i8 runs of 8-bit codes use the 4-way dot instruction even without a Dot4 in the IR.
    assert!(amd.text.asm.contains("v_dot4"), "{}", amd.text.asm);
}

#[test]
fn cpu_packed_blocks_match_the_interpreters_bit_for_bit() {
    // Whole blocks, a block plus a chunk tail, a generic tail, several groups, M past
    // the tile: LLVM's AVX-512 block decode against the loop-IR interpreter running
    // the same lowering (bit for bit) and the reference interpreter.
    if !llvm::HostCpu::detect().packed_dot() {
        eprintln!("SKIP: this CPU lacks AVX-512 VBMI/VNNI; dot_packed is checked by the loop-IR interpreter only (codegen/tests/loop_eval.rs)");
        return;
    }
    let mut used = 0;
    for k in packed_block_kernels() {
        for tile_m in [1, 4] {
            let lo = CpuOptions {
                tile_m,
                chunked_unpack: true,
                packed_dot: true,
            };
            let f = lower_cpu(&k, &lo);
            used += f.to_string().contains("dot_packed") as usize;
            let o = LlvmCpuOptions {
                lower: lo.clone(),
                small_m_variant: false,
                ..opts(
                    &k,
                    JitOptions {
                        bounds_checks: tile_m == 4,
                        ..JitOptions::default()
                    },
                    2,
                )
            };
            let kernel = LlvmCpuKernel::new(&k, &o).unwrap_or_else(|e| panic!("{f}\n{e}"));
            for (si, &(m, n, kk)) in PACKED_SHAPES.iter().enumerate() {
                let d = dims(&k, m, n, kk);
                assert!(
                    dims_ok(&k, &d),
                    "{:?} within the kernel's bounds",
                    (m, n, kk)
                );
                let inputs = random_inputs(&k, &d, 500 + si as u64);
                let got = kernel.run(&d, &inputs).unwrap_or_else(|e| panic!("{e}"));
                let want = loop_ir_output(&f, &k, &d, &inputs);
                assert!(
                    got.as_bytes() == want,
                    "{f}\n{:?}: not bit-identical",
                    (m, n, kk)
                );
                check(&k, &d, &inputs, &got.to_f64())
                    .unwrap_or_else(|e| panic!("{f}\n{:?}: {e}", (m, n, kk)));
            }
        }
    }
    assert_eq!(used, 48, "every kernel × tile lowers to dot_packed");
    // And the machine code is the block decode, not a scalar fallback.
    let k = &packed_block_kernels()[0];
    let f = lower_cpu(
        k,
        &CpuOptions {
            tile_m: 1,
            chunked_unpack: true,
            packed_dot: true,
        },
    );
    let jit = llvm::compile_cpu(
        &f,
        &JitOptions {
            keep_text: true,
            ..JitOptions::default()
        },
    )
    .expect("compiles");
    for ins in ["vpermb", "vpmultishiftqb", "vpdpbusd"] {
        assert!(
            jit.listings().asm.contains(ins),
            "no {ins} in the block decode"
        );
    }
}
