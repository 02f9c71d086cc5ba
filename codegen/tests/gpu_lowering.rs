//! The GPU lowering, executed SIMT-style by the loop-IR interpreter (32 lanes per
//! warp, bounds-checked memory, divergence-checked warp sums), equals the reference
//! interpreter on every example kernel and every built-in layout × activation type,
//! on odd shapes (N, K not multiples of anything, K odd, M = 1..9) and on aligned
//! shapes that take the 16-byte vector path.

#[path = "../../tests/gpu_common/mod.rs"]
mod gpu_common;

use gpu_common::*;
use qkc_codegen::loop_ir::{eval, Func};
use qkc_codegen::lower::{lower_gpu, GpuOptions, WeightLoads};
use qkc_dsl::host::random_inputs;
use qkc_dsl::ir::Kernel;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn run_case(k: &Kernel, f: &Func, m: u64, n: u64, kk: u64, seed: u64) -> Result<(), String> {
    let d = dims(k, m, n, kk);
    if !dims_ok(k, &d) {
        return Ok(());
    }
    let inputs = random_inputs(k, &d, seed);
    let mut bufs: Vec<Vec<u8>> = inputs.iter().map(|b| b.as_bytes()).collect();
    // Poison: every output element must be written.
    bufs.push(vec![0xFF; out_bytes(k, &d)]);
    let dv: Vec<i64> = d.values.iter().map(|&v| v as i64).collect();
    eval::run(f, &mut bufs, &dv).map_err(|e| format!("{} {:?}: eval: {e}", k.name, (m, n, kk)))?;
    let got = out_values(k, bufs.last().expect("output"));
    check(k, &d, &inputs, &got).map_err(|e| format!("{} {:?}: {e}", k.name, (m, n, kk)))
}

/// Odd shapes, all M from 1 to 9, and aligned ones for the vector path.
fn shapes() -> Vec<(u64, u64, u64)> {
    let mut s = vec![(1, 1, 2), (3, 17, 33), (2, 5, 1), (1, 3, 7)];
    for m in 1..=9 {
        s.push((m, 3, 67 + 2 * m));
    }
    // 16-byte aligned rows for every layout: K = 512, 768 (q3p5 needs K % 256 == 0),
    // 544 (vector chunks plus a scalar tail for the 4-bit layouts), and long rows where
    // the unrolled loop runs (2048, 2304, 4352) with a remainder.
    for (m, k) in [
        (1, 512),
        (3, 512),
        (8, 768),
        (2, 544),
        (9, 512),
        (1, 2048),
        (2, 2304),
        (1, 4352),
    ] {
        s.push((m, 5, k));
    }
    // The tensor-core path (f16 and i8, K % 128 == 0): partial 16-row tiles, M = 1..8,
    // one chunk, chunk counts that leave a remainder after the loads in flight.
    for (m, n, k) in [(1, 17, 128), (3, 37, 384), (8, 33, 640), (5, 48, 256)] {
        s.push((m, n, k));
    }
    s
}

fn options(k: &Kernel) -> Vec<(&'static str, GpuOptions)> {
    let d = GpuOptions::for_kernel(k);
    // The tensor-core path (f16 and i8, K % 128 == 0, M >= 3 by default) also at M = 1 in the
    // `mma*` variants: 4 warps per tile splitting K (the default, and with the weights
    // copied to shared memory by cp.async), 2 (staged through registers, and with
    // 64-thread blocks), and 1 (each warp its own tile); `mma_off` is the SIMT GEMV.
    let full = GpuOptions {
        mma_min_m: 1,
        ..d.clone()
    };
    // The long-rows function's options, for integer activations (the spread decode's
    // add form in the tensor-core path); for f16 they nearly repeat `mma_async`.
    let long_rows = d
        .mma_long_rows
        .filter(|_| qkc_codegen::lower::Plan::new(k).int)
        .map(|l| ("mma_long_rows", l.apply(&full)));
    let mut v = vec![
        ("default", d.clone()),
        ("mma_all_m", full.clone()),
        (
            "mma_off",
            GpuOptions {
                mma: false,
                ..d.clone()
            },
        ),
        (
            "mma_staged_chunks2",
            GpuOptions {
                mma_loads: WeightLoads::Shared,
                mma_chunks: 2,
                mma_split: 2,
                ..full.clone()
            },
        ),
        (
            "mma_async",
            GpuOptions {
                mma_loads: WeightLoads::Async,
                ..full.clone()
            },
        ),
        (
            "mma_chunks1_block64",
            GpuOptions {
                mma_chunks: 1,
                block: 64,
                mma_split: 2,
                ..full.clone()
            },
        ),
        (
            "mma_chunks3_m1_bucket",
            GpuOptions {
                mma_chunks: 3,
                max_m: Some(1),
                mma_split: 1,
                mma_min_m: 1,
                ..full.clone()
            },
        ),
        (
            "scalar",
            GpuOptions {
                vector: false,
                ..d.clone()
            },
        ),
        (
            "tile8",
            GpuOptions {
                m_tiles: vec![8],
                block: 64,
                ..d.clone()
            },
        ),
        (
            "unmasked_tail",
            GpuOptions {
                masked_tail: false,
                ..d.clone()
            },
        ),
        (
            "chunk32_unroll2",
            GpuOptions {
                chunk_weights: Some(32),
                unroll: 2,
                ..d.clone()
            },
        ),
        (
            "chunk16_unroll2",
            GpuOptions {
                chunk_weights: Some(16),
                unroll: 2,
                ..d.clone()
            },
        ),
        (
            "rows4",
            GpuOptions {
                rows_per_warp: Some(4),
                ..d.clone()
            },
        ),
        (
            "rows3_chunk32_block64",
            GpuOptions {
                rows_per_warp: Some(3),
                chunk_weights: Some(32),
                unroll: 2,
                block: 64,
                ..d.clone()
            },
        ),
        (
            "staged",
            GpuOptions {
                weight_loads: WeightLoads::Shared,
                ..d.clone()
            },
        ),
        (
            "staged_rows3_unroll2_block64",
            GpuOptions {
                weight_loads: WeightLoads::Shared,
                rows_per_warp: Some(3),
                unroll: 2,
                block: 64,
                ..d.clone()
            },
        ),
        (
            "staged_rows2_unmasked_chunk64",
            GpuOptions {
                weight_loads: WeightLoads::Shared,
                rows_per_warp: Some(2),
                masked_tail: false,
                chunk_weights: Some(64),
                ..d.clone()
            },
        ),
        (
            "direct",
            GpuOptions {
                weight_loads: WeightLoads::Direct,
                ..d.clone()
            },
        ),
        (
            "direct_m1_bucket",
            GpuOptions {
                weight_loads: WeightLoads::Direct,
                max_m: Some(1),
                m_tiles: vec![1],
                ..d.clone()
            },
        ),
        (
            "async_rows2_unroll1_chunk64",
            GpuOptions {
                weight_loads: WeightLoads::Async,
                rows_per_warp: Some(2),
                unroll: 1,
                chunk_weights: Some(64),
                ..d.clone()
            },
        ),
        (
            "async3_rows3_unroll1_chunk64",
            GpuOptions {
                weight_loads: WeightLoads::Async,
                copy_stages: 3,
                rows_per_warp: Some(3),
                unroll: 1,
                chunk_weights: Some(64),
                ..d.clone()
            },
        ),
        (
            "m1_bucket",
            GpuOptions {
                max_m: Some(1),
                ..d.clone()
            },
        ),
        (
            "no_fold",
            GpuOptions {
                float_fold: false,
                ..d.clone()
            },
        ),
        (
            "no_spread_no_prefetch_no_magic",
            GpuOptions {
                spread: false,
                prefetch: false,
                float_magic: false,
                ..d.clone()
            },
        ),
        (
            "prefetch_unroll1_rows3",
            GpuOptions {
                prefetch: true,
                unroll: 1,
                rows_per_warp: Some(3),
                ..d.clone()
            },
        ),
        (
            "chunk128_rows2_tile4",
            GpuOptions {
                chunk_weights: Some(128),
                rows_per_warp: Some(2),
                m_tiles: vec![1, 4],
                ..d.clone()
            },
        ),
        (
            "generic",
            GpuOptions {
                gemv: false,
                tile_m: 3,
                ..d
            },
        ),
    ];
    v.extend(long_rows);
    v
}

fn check_kernel(k: &Kernel, seed: u64) -> Vec<String> {
    let mut fails = Vec::new();
    let mut seen = Vec::new();
    // The `mma*` variants equal the default where the tensor-core path does not apply.
    let mma = qkc_codegen::lower::mma::MmaPlan::new(&qkc_codegen::lower::Plan::new(k)).is_some();
    for (name, o) in options(k) {
        if name.starts_with("mma") && !mma {
            continue;
        }
        let f = lower_gpu(k, &o);
        // An option that does not apply to this kernel lowers it as another variant
        // did (same function and M bound): run that once.
        let key = (f.clone(), o.max_m);
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        for (si, &(m, n, kk)) in shapes().iter().enumerate() {
            // A function specialised for M <= max_m is only launched for such M.
            if o.max_m.is_some_and(|b| m > b) {
                continue;
            }
            if let Err(e) = run_case(k, &f, m, n, kk, seed + si as u64) {
                fails.push(format!("[{name}] {e}"));
            }
        }
    }
    fails
}

#[test]
fn gpu_lowering_matches_reference_on_examples() {
    let mut fails = Vec::new();
    for (file, k) in example_kernels(ROOT) {
        for e in check_kernel(&k, 7) {
            fails.push(format!("{file}: {e}"));
        }
    }
    assert!(
        fails.is_empty(),
        "{} failures:\n{}",
        fails.len(),
        fails.join("\n")
    );
}

#[test]
fn gpu_lowering_matches_reference_on_all_layouts_and_activations() {
    let mut fails = Vec::new();
    for k in generated_kernels() {
        fails.extend(check_kernel(&k, 1000));
    }
    assert!(
        fails.is_empty(),
        "{} failures:\n{}",
        fails.len(),
        fails.join("\n")
    );
}

/// The vector path is planned for every example kernel and every layout (i8
/// activations need signed byte codes) and loads whole words.
#[test]
fn vector_path_is_planned() {
    use qkc_codegen::lower::{gpu::lane_chunk, Plan};
    for (file, k) in example_kernels(ROOT) {
        let p = Plan::new(&k);
        let c = lane_chunk(&p, None, 32);
        assert!(c.is_some(), "{file}: no vector lane chunk");
        let f = lower_gpu(&k, &GpuOptions::for_kernel(&k));
        let text = format!("{f}");
        let whole_words =
            text.contains("vec4") || text.contains("bytes4") || text.contains("bytes8");
        assert!(whole_words, "{file}: no whole-word loads in\n{text}");
    }
    for k in generated_kernels() {
        assert!(
            lane_chunk(&Plan::new(&k), None, 32).is_some(),
            "{}: no lane chunk",
            k.name
        );
    }
}

/// Asynchronous weight copies reach the SIMT vector path of the i8 3.5-bit example
/// (lane chunks of whole words, two buffers within 48 KiB) by default in the 1-row
/// bucket, so the default and `async*` variants above test them rather than a
/// direct-load fallback.
#[test]
fn async_weight_loads_apply_to_the_i8_gemv() {
    let k = example_kernel(ROOT, "gemv_w3p5");
    for o in [
        GpuOptions {
            max_m: Some(1),
            m_tiles: vec![1],
            ..GpuOptions::for_kernel(&k)
        },
        GpuOptions {
            weight_loads: WeightLoads::Async,
            rows_per_warp: Some(2),
            unroll: 1,
            chunk_weights: Some(64),
            ..GpuOptions::for_kernel(&k)
        },
    ] {
        let f = lower_gpu(&k, &o);
        let text = format!("{f}");
        assert!(
            text.contains("cp_async16(") && text.contains("cp_async_wait(1)"),
            "no asynchronous weight copies in\n{text}"
        );
        assert!(f.shared_bytes > 0 && f.shared_bytes <= 48 * 1024);
    }
}

/// The tensor-core path with every kind of scale: per weight row and group, per
/// activation row and group, per weight row and per activation row (loads of rows
/// past N or M clamped, stores guarded), for f16 (m16n8k16) and i8 (m16n8k32)
/// activations and every layout with an i8 plan.
#[test]
fn mma_path_applies_every_scale_kind() {
    for (act, layout, shape) in [
        ("f16", "q3p5", "m16n8k16"),
        ("i8", "q3p5", "m16n8k32"),
        ("i8", "q3p5b", "m16n8k32"),
        ("i8", "s8", "m16n8k32"),
    ] {
        mma_scales(act, layout, shape);
    }
}

fn mma_scales(act: &str, layout: &str, shape: &str) {
    let src = format!(
        "kernel k(x: {act}[M, K], xg: f16[M, K / 256], xr: f32[M], w: {layout}[N, K], \
         wg: f16[N, K / 256], wr: f32[N]) -> y: f32[M, N] {{\n    where M <= 8;\n    \
         y[m, n] = sum(k) x[m, k] * xg[m, k / 256] * xr[m] * w[n, k] * wg[n, k / 256] * wr[n];\n}}\n"
    );
    let prog = qkc_dsl::compile("scales.qk", &src).expect("compiles");
    let k = &prog.kernels[0];
    let mut fails = Vec::new();
    for (loads, split, spread_add) in [
        (WeightLoads::Direct, 4, false),
        (WeightLoads::Direct, 1, true),
        (WeightLoads::Shared, 2, false),
        (WeightLoads::Async, 4, true),
    ] {
        let o = GpuOptions {
            mma_min_m: 1,
            mma_int: true,
            mma_loads: loads,
            mma_split: split,
            mma_spread_add: spread_add,
            ..GpuOptions::for_kernel(k)
        };
        let f = lower_gpu(k, &o);
        assert!(
            f.notes
                .iter()
                .any(|n| n.contains("schedule gpu mma") && n.contains(shape)),
            "{act} x {layout}: no {shape} mma path: {:?}",
            f.notes
        );
        for (i, &(m, n, kk)) in [(1, 17, 256), (3, 37, 768), (8, 33, 512), (6, 16, 1280)]
            .iter()
            .enumerate()
        {
            if let Err(e) = run_case(k, &f, m, n, kk, 40 + i as u64) {
                fails.push(format!(
                    "[{act} x {layout}, {loads:?}, split {split}, spread add {spread_add}] {e}"
                ));
            }
        }
    }
    assert!(fails.is_empty(), "{}", fails.join("\n"));
}
